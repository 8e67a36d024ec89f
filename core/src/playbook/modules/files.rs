//! File modules: `template`, `copy`, `file`, `line_in_file`, `block_in_file`, `hosts_file`.
//!
//! Whole files (`template`, `copy`) are compared by sha256 with one remote command (`stat` +
//! `sha256sum`) and uploaded only when the content differs; mode and owner are fixed in place
//! when only they differ. Large `copy` sources (bundle files, 1 MiB and more) take
//! [`super::transfer`]'s way instead: a stamp on the host rather than hashing, zstd on the
//! wire. In check mode the remote file is downloaded to show a diff (only then, and never for
//! `no_log` tasks). Line and block edits read the file once, edit it here and
//! upload it only when the text changes, keeping the file's mode.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{flex, sh_quote, transfer, ArgsError, ModuleError, Outcome, TaskCx};
use crate::exec::{Command, Executor, UploadOptions};
use crate::playbook::diff;
use crate::playbook::render;

/// Arguments of `template`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateArgs {
    /// Template name under `templates/` (`containerd/config.toml`).
    pub src: String,
    /// Path on the host.
    pub dest: String,
    #[serde(default, deserialize_with = "flex::opt_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

/// Arguments of `copy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyArgs {
    /// A local file (absolute, or under an override directory's `files/`).
    #[serde(default)]
    pub src: Option<String>,
    /// Literal content instead of `src`.
    #[serde(default)]
    pub content: Option<String>,
    pub dest: String,
    #[serde(default, deserialize_with = "flex::opt_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

/// The state the `file` module enforces.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    Directory,
    Absent,
    Symlink,
    /// Create empty if missing.
    Touch,
    /// Must exist; only mode/owner are enforced.
    File,
}

/// Arguments of `file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    pub path: String,
    pub state: FileState,
    /// Link target for `state: symlink`.
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

/// present/absent, for line and block edits.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// Arguments of `line_in_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineArgs {
    pub path: String,
    /// The line wanted (required for `present`).
    #[serde(default)]
    pub line: Option<String>,
    /// Lines matching this regex are replaced (the last one) or removed (all, when absent).
    #[serde(default)]
    pub regexp: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// Create the file when missing (default false: a missing file is an error).
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub create: Option<bool>,
    /// Insert after the last line matching this regex (default: at the end).
    #[serde(default)]
    pub insert_after: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_mode")]
    pub mode: Option<u32>,
}

/// Arguments of `block_in_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockArgs {
    pub path: String,
    /// The block's lines (without markers).
    #[serde(default)]
    pub block: String,
    /// Marker line; `{mark}` becomes BEGIN or END.
    #[serde(default = "default_marker")]
    pub marker: String,
    #[serde(default)]
    pub state: Presence,
    /// Create the file when missing (default true).
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub create: Option<bool>,
    #[serde(default, deserialize_with = "flex::opt_mode")]
    pub mode: Option<u32>,
}

fn default_marker() -> String {
    "# {mark} CLUSTERKIT MANAGED BLOCK".to_string()
}

/// One extra /etc/hosts entry.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HostsEntry {
    pub address: String,
    #[serde(deserialize_with = "flex::strings")]
    pub names: Vec<String>,
}

/// Arguments of `hosts_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFileArgs {
    #[serde(default = "default_hosts_path")]
    pub path: String,
    /// List every cluster host (`address name`); default true.
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub cluster_hosts: Option<bool>,
    /// More entries (e.g. the control-plane endpoint's name).
    #[serde(default)]
    pub entries: Vec<HostsEntry>,
}

fn default_hosts_path() -> String {
    "/etc/hosts".to_string()
}

/// What `stat` + `sha256sum` said about a remote file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub sha256: String,
}

/// One remote command: the file's mode, owner, group and sha256, or `None` when absent.
pub async fn stat_file(cx: &TaskCx<'_>, path: &str) -> Result<Option<RemoteFile>, ModuleError> {
    Ok(stat_files(cx.exec, &[path]).await?.pop().flatten())
}

/// [`stat_file`] for many files in one remote command (one round trip whatever their number),
/// in the order of `paths`.
pub async fn stat_files(
    exec: &dyn Executor,
    paths: &[&str],
) -> Result<Vec<Option<RemoteFile>>, ModuleError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let script: Vec<String> = paths
        .iter()
        .map(|path| {
            let p = sh_quote(path);
            format!(
                "echo {FILE_MARK}; if [ -f {p} ]; then stat -L -c '%a %U %G' {p} && sha256sum < {p}; \
                 elif [ -e {p} ]; then echo 'CK_NOT_A_FILE'; else echo CK_ABSENT; fi"
            )
        })
        .collect();
    let out = exec.sh(&script.join("\n")).await?;
    let sections: Vec<&str> = out.split(&format!("{FILE_MARK}\n")).skip(1).collect();
    if sections.len() != paths.len() {
        return Err(ModuleError::Failed(format!(
            "cannot read the state of {} files: unexpected `{out}`",
            paths.len()
        )));
    }
    paths
        .iter()
        .zip(sections)
        .map(|(path, section)| parse_stat(path, section))
        .collect()
}

/// Starts each file's part of [`stat_files`]' output.
const FILE_MARK: &str = "CK_FILE";

fn parse_stat(path: &str, out: &str) -> Result<Option<RemoteFile>, ModuleError> {
    let mut lines = out.lines();
    let first = lines.next().unwrap_or("");
    if first == "CK_ABSENT" {
        return Ok(None);
    }
    if first == "CK_NOT_A_FILE" {
        return Err(ModuleError::Failed(format!(
            "{path} exists and is not a regular file"
        )));
    }
    let bad = || {
        ModuleError::Failed(format!(
            "cannot read the state of {path}: unexpected `{out}`"
        ))
    };
    let mut f = first.split_whitespace();
    let mode = u32::from_str_radix(f.next().ok_or_else(bad)?, 8).map_err(|_| bad())?;
    let owner = f.next().ok_or_else(bad)?.to_string();
    let group = f.next().ok_or_else(bad)?.to_string();
    let sha256 = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(bad)?
        .to_string();
    Ok(Some(RemoteFile {
        mode,
        owner,
        group,
        sha256,
    }))
}

/// sha256 of local bytes, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// How a file's mode/owner/group differ from the wanted ones: one entry per change for the
/// task's message, and the shell lines that fix them.
#[derive(Debug, Default)]
pub(super) struct AttrDiff {
    pub changes: Vec<String>,
    pub fix: String,
}

/// Compares `current` (mode, owner, group) of `path` with what is wanted (`None`: any).
pub(super) fn attr_diff(
    path: &str,
    current: (u32, &str, &str),
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> AttrDiff {
    let (cur_mode, cur_owner, cur_group) = current;
    let p = sh_quote(path);
    let mut d = AttrDiff::default();
    if let Some(m) = mode.filter(|m| *m != cur_mode) {
        d.changes.push(format!("mode {cur_mode:o} → {m:o}"));
        d.fix.push_str(&format!("chmod {m:o} {p}\n"));
    }
    if let Some(o) = owner.filter(|o| *o != cur_owner) {
        d.changes.push(format!("owner {cur_owner} → {o}"));
        d.fix.push_str(&format!("chown {} {p}\n", sh_quote(o)));
    }
    if let Some(g) = group.filter(|g| *g != cur_group) {
        d.changes.push(format!("group {cur_group} → {g}"));
        d.fix.push_str(&format!("chgrp {} {p}\n", sh_quote(g)));
    }
    d
}

/// The task's message for a file that is created, updated (`why` appended) or only gets
/// new attributes.
pub(super) fn change_message(
    path: &str,
    exists: bool,
    content_differs: bool,
    why: &str,
    attr_changes: &[String],
) -> String {
    let attrs = attr_changes.join(", ");
    match (exists, content_differs) {
        (false, _) if attrs.is_empty() => format!("create {path}"),
        (false, _) => format!("create {path} ({attrs})"),
        (true, true) if attrs.is_empty() => format!("update {path}{why}"),
        (true, true) => format!("update {path}{why} ({attrs})"),
        (true, false) => format!("{path}: {attrs}"),
    }
}

/// `chown`'s argument for the wanted owner and/or group.
pub(super) fn chown_spec(owner: Option<&str>, group: Option<&str>) -> Option<String> {
    match (owner, group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

/// Makes `path` hold exactly `data` with the wanted mode/owner/group: one command when
/// nothing differs, one more to upload or fix attributes otherwise.
pub async fn ensure_content(
    cx: &TaskCx<'_>,
    path: &str,
    data: &[u8],
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<Outcome, ModuleError> {
    let current = stat_file(cx, path).await?;
    let wanted_sha = sha256_hex(data);
    let content_differs = current
        .as_ref()
        .map(|c| c.sha256 != wanted_sha)
        .unwrap_or(true);
    let attrs = current
        .as_ref()
        .map(|c| attr_diff(path, (c.mode, &c.owner, &c.group), mode, owner, group))
        .unwrap_or_default();
    if !content_differs && attrs.changes.is_empty() {
        return Ok(Outcome::ok(format!("{path} is up to date")));
    }
    let message = change_message(path, current.is_some(), content_differs, "", &attrs.changes);
    if cx.check {
        let mut outcome = Outcome::changed(format!("would {message}"));
        if content_differs && !cx.no_log {
            let old = match &current {
                Some(_) => cx.exec.download(path).await?,
                None => Vec::new(),
            };
            outcome.diff = match (std::str::from_utf8(&old), std::str::from_utf8(data)) {
                (Ok(o), Ok(n)) => diff::unified(path, o, n),
                _ => Some(format!("binary content of {path} differs\n")),
            };
        }
        return Ok(outcome);
    }
    if content_differs {
        let options = UploadOptions {
            mode: mode.or(current.as_ref().map(|c| c.mode)).unwrap_or(0o644),
            owner: chown_spec(owner, group),
            create_parents: true,
        };
        cx.exec.upload(data, path, &options).await?;
    } else {
        cx.sh(&format!("set -e\n{}", attrs.fix)).await?;
    }
    Ok(Outcome::changed(message))
}

/// Renders a template with the task's context (strict: undefined variables fail).
pub fn render_template(cx: &TaskCx<'_>, src: &str) -> Result<String, ModuleError> {
    let source = cx.library.template(src)?;
    render::render_with(&source.text, cx.context).map_err(|e| {
        ModuleError::from(super::TemplateError {
            origin: source.origin.to_string(),
            source: e,
        })
    })
}

pub async fn template(args: TemplateArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let text = render_template(cx, &args.src)?;
    ensure_content(
        cx,
        &args.dest,
        text.as_bytes(),
        args.mode,
        args.owner.as_deref(),
        args.group.as_deref(),
    )
    .await
}

pub async fn copy(args: CopyArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let data = match (&args.src, &args.content) {
        (Some(src), None) => {
            let path = cx.library.file_path(src)?;
            if transfer::is_large(cx, &path) {
                return transfer::ensure_file(
                    cx,
                    &path,
                    &args.dest,
                    args.mode,
                    args.owner.as_deref(),
                    args.group.as_deref(),
                )
                .await;
            }
            std::fs::read(&path).map_err(|e| ModuleError::read(&path, e))?
        }
        (None, Some(c)) => c.clone().into_bytes(),
        _ => {
            return Err(ArgsError::Invalid("give exactly one of `src` or `content`".into()).into())
        }
    };
    ensure_content(
        cx,
        &args.dest,
        &data,
        args.mode,
        args.owner.as_deref(),
        args.group.as_deref(),
    )
    .await
}

/// Shell lines that fix mode/owner/group of an existing path, reporting each change.
fn attr_script(p: &str, mode: Option<u32>, owner: Option<&str>, group: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(m) = mode {
        s.push_str(&format!(
            "if [ -e {p} ] && [ \"$(stat -c %a {p})\" != {m:o} ]; then changed \"mode of {p} → {m:o}\"; [ $CK_CHECK = 1 ] || chmod {m:o} {p}; fi\n"
        ));
    }
    if let Some(o) = owner {
        let o = sh_quote(o);
        s.push_str(&format!(
            "if [ -e {p} ] && [ \"$(stat -c %U {p})\" != {o} ]; then changed \"owner of {p} → {o}\"; [ $CK_CHECK = 1 ] || chown {o} {p}; fi\n"
        ));
    }
    if let Some(g) = group {
        let g = sh_quote(g);
        s.push_str(&format!(
            "if [ -e {p} ] && [ \"$(stat -c %G {p})\" != {g} ]; then changed \"group of {p} → {g}\"; [ $CK_CHECK = 1 ] || chgrp {g} {p}; fi\n"
        ));
    }
    s
}

pub async fn file(args: FileArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let p = sh_quote(&args.path);
    let attrs = attr_script(&p, args.mode, args.owner.as_deref(), args.group.as_deref());
    let script = match args.state {
        FileState::Directory => format!(
            "if [ -d {p} ]; then :; elif [ -e {p} ]; then echo '{path} exists and is not a directory' >&2; exit 1; \
             else changed 'create directory {path}'; [ $CK_CHECK = 1 ] || mkdir -p {p}; fi\n{attrs}",
            path = args.path
        ),
        FileState::Absent => format!(
            "if [ -e {p} ] || [ -L {p} ]; then changed 'remove {path}'; [ $CK_CHECK = 1 ] || rm -rf {p}; fi\n",
            path = args.path
        ),
        FileState::Symlink => {
            let src = args
                .src
                .as_deref()
                .ok_or_else(|| {
                    ArgsError::Invalid("`state: symlink` needs `src` (the link target)".into())
                })?;
            let s = sh_quote(src);
            format!(
                "if [ -L {p} ] && [ \"$(readlink {p})\" = {s} ]; then :; \
                 elif [ -e {p} ] && [ ! -L {p} ]; then echo '{path} exists and is not a symlink' >&2; exit 1; \
                 else changed 'link {path} → {src}'; [ $CK_CHECK = 1 ] || ln -sfn {s} {p}; fi\n",
                path = args.path
            )
        }
        FileState::Touch => format!(
            "if [ ! -e {p} ]; then changed 'create {path}'; [ $CK_CHECK = 1 ] || {{ mkdir -p \"$(dirname {p})\" && : > {p}; }}; fi\n{attrs}",
            path = args.path
        ),
        FileState::File => format!(
            "if [ ! -f {p} ]; then echo '{path} does not exist or is not a regular file' >&2; exit 1; fi\n{attrs}",
            path = args.path
        ),
    };
    Ok(cx
        .script(&script)
        .await?
        .outcome(&format!("{} is as wanted", args.path)))
}

/// The text of a remote file and its mode, or `None` when it does not exist. One command.
pub async fn read_text(cx: &TaskCx<'_>, path: &str) -> Result<Option<(String, u32)>, ModuleError> {
    let p = sh_quote(path);
    let out = cx
        .exec
        .run_checked(&Command::new(format!(
            "if [ -f {p} ]; then stat -L -c '%a' {p} && cat {p}; elif [ -e {p} ]; then echo CK_NOT_A_FILE; else echo CK_ABSENT; fi"
        )))
        .await?;
    let text = String::from_utf8(out.stdout)
        .map_err(|_| ModuleError::Failed(format!("{path} is not UTF-8 text")))?;
    let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    match first {
        "CK_ABSENT" => Ok(None),
        "CK_NOT_A_FILE" => Err(ModuleError::Failed(format!(
            "{path} exists and is not a regular file"
        ))),
        mode => {
            let mode = u32::from_str_radix(mode.trim(), 8).map_err(|_| {
                ModuleError::Failed(format!("cannot read the mode of {path}: `{mode}`"))
            })?;
            Ok(Some((rest.to_string(), mode)))
        }
    }
}

/// Reads a text file, applies `edit`, and writes it back only if the text changed.
pub async fn edit_text(
    cx: &TaskCx<'_>,
    path: &str,
    create: bool,
    mode: Option<u32>,
    edit: impl FnOnce(&str) -> Result<String, ModuleError>,
) -> Result<Outcome, ModuleError> {
    let current = read_text(cx, path).await?;
    let (old, old_mode) = match current {
        Some((t, m)) => (t, Some(m)),
        None if create => (String::new(), None),
        None => {
            return Err(ModuleError::Failed(format!(
                "{path} does not exist (set `create: true` to create it)"
            )))
        }
    };
    let new = edit(&old)?;
    let mode_change = match (mode, old_mode) {
        (Some(m), Some(o)) => m != o,
        _ => false,
    };
    if new == old && old_mode.is_some() {
        if mode_change {
            return ensure_content(cx, path, new.as_bytes(), mode, None, None).await;
        }
        return Ok(Outcome::ok(format!("{path} is up to date")));
    }
    let verb = if old_mode.is_none() {
        "create"
    } else {
        "update"
    };
    if cx.check {
        let d = if cx.no_log {
            None
        } else {
            diff::unified(path, &old, &new)
        };
        return Ok(Outcome::changed(format!("would {verb} {path}")).with_diff(d));
    }
    let options = UploadOptions {
        mode: mode.or(old_mode).unwrap_or(0o644),
        owner: None,
        create_parents: true,
    };
    cx.exec.upload(new.as_bytes(), path, &options).await?;
    let d = if cx.no_log {
        None
    } else {
        diff::unified(path, &old, &new)
    };
    Ok(Outcome::changed(format!("{verb} {path}")).with_diff(d))
}

/// The text with `line` present/absent per `args` (pure, unit-tested).
pub fn edit_line(text: &str, args: &LineArgs) -> Result<String, ArgsError> {
    let regexp = args
        .regexp
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|source| ArgsError::Regex {
            field: "regexp",
            source,
        })?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let matches = |l: &str| match (&regexp, &args.line) {
        (Some(r), _) => r.is_match(l),
        (None, Some(want)) => l == want,
        (None, None) => false,
    };
    match args.state {
        Presence::Absent => {
            if regexp.is_none() && args.line.is_none() {
                return Err(ArgsError::Invalid(
                    "`state: absent` needs `regexp` or `line`".into(),
                ));
            }
            lines.retain(|l| !matches(l));
        }
        Presence::Present => {
            let want = args
                .line
                .as_deref()
                .ok_or_else(|| ArgsError::Invalid("`state: present` needs `line`".into()))?;
            if let Some(i) = lines.iter().rposition(|l| matches(l)) {
                lines[i] = want.to_string();
            } else if !lines.iter().any(|l| l == want) {
                let at = match &args.insert_after {
                    None => lines.len(),
                    Some(s) if s == "EOF" => lines.len(),
                    Some(s) => {
                        let r = regex::Regex::new(s).map_err(|source| ArgsError::Regex {
                            field: "insert_after",
                            source,
                        })?;
                        lines
                            .iter()
                            .rposition(|l| r.is_match(l))
                            .map(|i| i + 1)
                            .unwrap_or(lines.len())
                    }
                };
                lines.insert(at, want.to_string());
            }
        }
    }
    Ok(join_lines(&lines))
}

/// Joins lines with a final newline (every file we write ends with one, as tools expect).
fn join_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

pub async fn line_in_file(args: LineArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    edit_text(
        cx,
        &args.path.clone(),
        args.create.unwrap_or(false),
        args.mode,
        |old| Ok(edit_line(old, &args)?),
    )
    .await
}

/// The text with a marked block set to `block` (or removed).
pub fn edit_block(text: &str, marker: &str, block: &str, state: Presence) -> String {
    let begin = marker.replace("{mark}", "BEGIN");
    let end = marker.replace("{mark}", "END");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == begin);
    let stop = start.and_then(|s| {
        lines[s..]
            .iter()
            .position(|l| l.trim_end() == end)
            .map(|e| s + e)
    });
    let mut out: Vec<String> = Vec::new();
    let new_block = || {
        let mut b = vec![begin.clone()];
        b.extend(block.lines().map(str::to_string));
        b.push(end.clone());
        b
    };
    match (start, stop) {
        (Some(s), Some(e)) => {
            out.extend(lines[..s].iter().map(|l| l.to_string()));
            if state == Presence::Present {
                out.extend(new_block());
            }
            out.extend(lines[e + 1..].iter().map(|l| l.to_string()));
        }
        _ => {
            out.extend(lines.iter().map(|l| l.to_string()));
            if state == Presence::Present {
                out.extend(new_block());
            }
        }
    }
    join_lines(&out)
}

pub async fn block_in_file(args: BlockArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let BlockArgs {
        path,
        block,
        marker,
        state,
        create,
        mode,
    } = args;
    edit_text(cx, &path, create.unwrap_or(true), mode, |old| {
        Ok(edit_block(old, &marker, &block, state))
    })
    .await
}

/// The managed /etc/hosts block: every cluster host, then the extra entries.
pub fn hosts_block(
    cluster_hosts: &[(String, String)],
    include_cluster: bool,
    extra: &[HostsEntry],
) -> String {
    let mut out = String::new();
    if include_cluster {
        for (name, address) in cluster_hosts {
            out.push_str(&format!("{address} {name}\n"));
        }
    }
    for e in extra {
        out.push_str(&format!("{} {}\n", e.address, e.names.join(" ")));
    }
    out
}

pub async fn hosts_file(args: HostsFileArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let block = hosts_block(
        cx.cluster_hosts,
        args.cluster_hosts.unwrap_or(true),
        &args.entries,
    );
    let marker = "# {mark} clusterkit cluster hosts";
    edit_text(cx, &args.path, true, None, |old| {
        Ok(edit_block(old, marker, &block, Presence::Present))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_args(line: Option<&str>, regexp: Option<&str>, state: Presence) -> LineArgs {
        LineArgs {
            path: "/x".into(),
            line: line.map(str::to_string),
            regexp: regexp.map(str::to_string),
            state,
            create: None,
            insert_after: None,
            mode: None,
        }
    }

    #[test]
    fn line_replace_append_remove() {
        let text = "a=1\nb=2\n";
        let args = line_args(Some("b=3"), Some("^b="), Presence::Present);
        assert_eq!(edit_line(text, &args).unwrap(), "a=1\nb=3\n");
        let args = line_args(Some("c=1"), Some("^c="), Presence::Present);
        assert_eq!(edit_line(text, &args).unwrap(), "a=1\nb=2\nc=1\n");
        let args = line_args(Some("a=1"), None, Presence::Present);
        assert_eq!(edit_line(text, &args).unwrap(), text);
        let args = line_args(None, Some("^a="), Presence::Absent);
        assert_eq!(edit_line(text, &args).unwrap(), "b=2\n");
        assert_eq!(
            edit_line("", &line_args(Some("x"), None, Presence::Present)).unwrap(),
            "x\n"
        );
    }

    #[test]
    fn block_insert_replace_remove() {
        let m = "# {mark} M";
        let t = edit_block(
            "127.0.0.1 localhost\n",
            m,
            "10.0.0.1 n1\n",
            Presence::Present,
        );
        assert_eq!(t, "127.0.0.1 localhost\n# BEGIN M\n10.0.0.1 n1\n# END M\n");
        let t2 = edit_block(&t, m, "10.0.0.2 n2\n", Presence::Present);
        assert_eq!(t2, "127.0.0.1 localhost\n# BEGIN M\n10.0.0.2 n2\n# END M\n");
        assert_eq!(edit_block(&t2, m, "10.0.0.2 n2\n", Presence::Present), t2);
        assert_eq!(
            edit_block(&t2, m, "", Presence::Absent),
            "127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn stat_output_parses() {
        let f = parse_stat("/x", "644 root root\nabc123  -\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.mode, f.owner.as_str(), f.sha256.as_str()),
            (0o644, "root", "abc123")
        );
        assert!(parse_stat("/x", "CK_ABSENT\n").unwrap().is_none());
        assert!(parse_stat("/x", "CK_NOT_A_FILE\n").is_err());
    }

    #[tokio::test]
    async fn stat_files_reads_many_files_in_order_with_one_command() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b b");
        std::fs::write(&a, b"one").unwrap();
        std::fs::write(&b, b"two").unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o600)).unwrap();
        let absent = dir.path().join("absent");
        let exec =
            crate::exec::local::LocalExecutor::new("here", std::time::Duration::from_secs(10));
        let paths = [&a, &absent, &b].map(|p| p.to_str().unwrap().to_string());
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let got = stat_files(&exec, &refs).await.unwrap();
        assert_eq!(got.len(), 3);
        let (first, third) = (got[0].as_ref().unwrap(), got[2].as_ref().unwrap());
        assert_eq!(first.sha256, sha256_hex(b"one"));
        assert!(got[1].is_none(), "absent: {:?}", got[1]);
        assert_eq!(
            (third.sha256.as_str(), third.mode),
            (sha256_hex(b"two").as_str(), 0o600)
        );
        // A directory where a file should be is an error naming it.
        let dir_path = dir.path().to_str().unwrap();
        let err = stat_files(&exec, &[dir_path])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a regular file"), "{err}");
    }
}
