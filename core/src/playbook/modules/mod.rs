//! Built-in modules: each one checks the host's state first, acts only when it differs, and
//! reports `ok | changed | failed | skipped`.
//!
//! Round trips are what a run costs (the benchmark goal is an idempotent rerun of a whole phase
//! on 6 nodes in under 2 s), so every module checks its state with ONE remote command, and
//! most also act in that same command: the check-then-act script runs remotely with
//! `CK_CHECK=1` in check mode, where it only reports. Modules that need local computation on
//! the remote state (line edits, fstab, sysctl files) read it with one command, decide here,
//! and write back only when something changes.
//!
//! Arguments arrive as JSON after tera rendering and are parsed into a typed struct per module
//! (`deny_unknown_fields`), once at load time for validation and again per host after
//! rendering. Booleans and numbers also accept their string forms, because a rendered template
//! is always a string.

pub mod command;
pub mod facts;
pub mod files;
pub mod package;
pub mod service;
pub mod system;
pub mod transfer;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::exec::{Command, ExecError, Executor};

use super::library::Library;
use super::render::RenderError;
use super::PlaybookError;
pub use package::{Bundle, BundleError, BundleManifest, BundlePackage};

/// Every module name the engine knows.
pub const NAMES: &[&str] = &[
    "command",
    "shell",
    "assert",
    "template",
    "copy",
    "file",
    "line_in_file",
    "block_in_file",
    "hosts_file",
    "sysctl",
    "kernel_module",
    "swap",
    "selinux",
    "hostname",
    "package",
    "systemd",
    "wait_for",
    "gather_facts",
];

/// A task's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What a module reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// One line for the operator ("set net.ipv4.ip_forward 0 → 1").
    pub message: String,
    /// What changed or would change in a file, in check mode.
    pub diff: Option<String>,
    /// What `register` stores (`rc`, `stdout`, `stderr` for commands; module-specific else).
    pub result: Value,
}

impl Outcome {
    pub fn ok(message: impl Into<String>) -> Self {
        Self::new(Status::Ok, message)
    }
    pub fn changed(message: impl Into<String>) -> Self {
        Self::new(Status::Changed, message)
    }
    pub fn skipped(message: impl Into<String>) -> Self {
        Self::new(Status::Skipped, message)
    }
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Outcome {
            status,
            message: message.into(),
            diff: None,
            result: json!({}),
        }
    }
    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }
    pub fn with_result(mut self, result: Value) -> Self {
        self.result = result;
        self
    }
    /// Changed when `changed` is true, else ok.
    pub fn from_changed(changed: bool, message: impl Into<String>) -> Self {
        Self::new(if changed { Status::Changed } else { Status::Ok }, message)
    }
}

/// Why a module failed on a host.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// What the host's state or output says is wrong, in words.
    #[error("{0}")]
    Failed(String),
    #[error("bad arguments: {0}")]
    Args(#[from] ArgsError),
    /// A template or file the task names is not in the library.
    #[error(transparent)]
    Library(#[from] PlaybookError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A condition or message of `assert` that does not render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A local file the task sends cannot be read (shared by the hosts that send it, hence
    /// the `Arc`).
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

impl ModuleError {
    /// A local file that cannot be read.
    pub fn read(path: &std::path::Path, source: std::io::Error) -> Self {
        ModuleError::Read {
            path: path.to_path_buf(),
            source: std::sync::Arc::new(source),
        }
    }
}

/// A template of the library that does not compile or render.
#[derive(Debug, thiserror::Error)]
#[error("template {origin}: {source}")]
pub struct TemplateError {
    /// Where the template comes from (`embedded:…` or its path).
    pub origin: String,
    #[source]
    pub source: RenderError,
}

/// Arguments that do not fit a module: found at load time, or on a host once rendered.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("arguments are missing")]
    Missing,

    #[error("arguments must be a mapping, not {0}")]
    NotAMapping(&'static str),

    #[error("unknown module `{0}`")]
    UnknownModule(String),

    /// The arguments do not deserialize into the module's argument type (unknown or missing
    /// field, wrong type).
    #[error("{0}")]
    Parse(#[source] serde_json::Error),

    /// A regular expression argument (`regexp`, `insert_after`) that does not compile.
    #[error("{field}: {source}")]
    Regex {
        field: &'static str,
        #[source]
        source: regex::Error,
    },

    /// The template or file named does not exist.
    #[error(transparent)]
    Library(#[from] PlaybookError),

    /// The template named does not compile.
    #[error(transparent)]
    Template(#[from] TemplateError),

    /// Arguments that parse but do not make sense together, in words.
    #[error("{0}")]
    Invalid(String),
}

/// Everything a module may use while running on one host.
pub struct TaskCx<'a> {
    pub exec: &'a dyn Executor,
    /// Check mode: look, report, change nothing.
    pub check: bool,
    /// The task said `check_mode: false`: run it even in check mode (read-only commands).
    pub run_in_check: bool,
    /// This host's facts (`os.family`, …).
    pub facts: &'a Value,
    /// The full tera context (cluster, host, facts, vars) for the `template` module.
    pub context: &'a tera::Context,
    pub library: &'a Library,
    /// `(name, address)` of every host in the cluster, for `hosts_file`.
    pub cluster_hosts: &'a [(String, String)],
    /// The offline bundle, when packages come from one.
    pub bundle: Option<&'a Bundle>,
    /// Hide contents (no diff) for secrets.
    pub no_log: bool,
    /// Hash every large file on the host, whatever its stamp says (`install --verify-all`).
    pub verify_all: bool,
    /// Large files prepared for upload, shared by the hosts of the run.
    pub transfers: &'a transfer::Transfers,
}

/// What a module needs besides the host, for callers that use a module outside a playbook run
/// (e.g. `backup install-timer` writing its units and secrets): no facts, an empty template
/// context and library, no bundle, no other hosts. Create one per command.
#[derive(Default)]
pub struct Standalone {
    facts: Value,
    context: tera::Context,
    library: Library,
    transfers: transfer::Transfers,
}

impl Standalone {
    /// A task context on `exec`: `check` reports what would change without changing it;
    /// `no_log` keeps contents out of the outcome (no diff: secrets).
    pub fn cx<'a>(&'a self, exec: &'a dyn Executor, check: bool, no_log: bool) -> TaskCx<'a> {
        TaskCx {
            exec,
            check,
            run_in_check: false,
            facts: &self.facts,
            context: &self.context,
            library: &self.library,
            cluster_hosts: &[],
            bundle: None,
            no_log,
            verify_all: false,
            transfers: &self.transfers,
        }
    }
}

impl TaskCx<'_> {
    /// Runs a shell command; a non-zero exit becomes a failure with the stderr tail.
    pub async fn sh(&self, line: &str) -> Result<String, ModuleError> {
        Ok(self.exec.sh(line).await?)
    }

    /// Runs a check-then-act script (see [`run_script`]).
    pub async fn script(&self, body: &str) -> Result<ScriptResult, ModuleError> {
        run_script(self.exec, self.check, body, None).await
    }
}

/// Turns the free forms (`shell: "echo hi"`, `command: [a, b]`, `hostname: n1`) into an
/// argument object.
pub fn normalize(module: &str, args: Value) -> Result<Value, ArgsError> {
    Ok(match (module, args) {
        ("command" | "shell", Value::String(s)) => json!({ "cmd": s }),
        ("command", Value::Array(a)) => json!({ "argv": a }),
        ("hostname", Value::String(s)) => json!({ "name": s }),
        ("kernel_module", Value::String(s)) => json!({ "names": [s] }),
        ("kernel_module", Value::Array(a)) => json!({ "names": a }),
        ("package", Value::String(s)) => json!({ "names": [s] }),
        ("package", Value::Array(a)) => json!({ "names": a }),
        ("assert", Value::String(s)) => json!({ "that": [s] }),
        ("gather_facts" | "swap" | "hosts_file", Value::Null) => json!({}),
        (_, Value::Null) => return Err(ArgsError::Missing),
        (_, v @ Value::Object(_)) => v,
        (_, other) => {
            return Err(ArgsError::NotAMapping(match other {
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                _ => "a scalar",
            }))
        }
    })
}

/// Load-time validation: the arguments must fit the module. Where a value is templated its
/// type is only known after rendering, so then only unknown keys are reported here.
pub fn validate(module: &str, args: &Value, library: &Library) -> Result<(), ArgsError> {
    let templated = super::render::has_template(args);
    let result =
        match module {
            "command" | "shell" => parse::<command::CommandArgs>(args).map(|_| ()),
            "assert" => parse::<command::AssertArgs>(args).map(|_| ()),
            "template" => parse::<files::TemplateArgs>(args).and_then(|a| {
                if super::render::is_template(&a.src) {
                    return Ok(());
                }
                let source = library.template(&a.src)?;
                super::render::check_syntax(&source.text).map_err(|e| {
                    ArgsError::from(TemplateError {
                        origin: source.origin.clone(),
                        source: e,
                    })
                })
            }),
            "copy" => parse::<files::CopyArgs>(args).and_then(|a| match &a.src {
                Some(src) if !super::render::is_template(src) => {
                    library.file_path(src).map(|_| ()).map_err(ArgsError::from)
                }
                _ => Ok(()),
            }),
            "file" => parse::<files::FileArgs>(args).map(|_| ()),
            "line_in_file" => parse::<files::LineArgs>(args).and_then(|a| match &a.regexp {
                Some(r) if !super::render::is_template(r) => regex::Regex::new(r)
                    .map(|_| ())
                    .map_err(|source| ArgsError::Regex {
                        field: "regexp",
                        source,
                    }),
                _ => Ok(()),
            }),
            "block_in_file" => parse::<files::BlockArgs>(args).map(|_| ()),
            "hosts_file" => parse::<files::HostsFileArgs>(args).map(|_| ()),
            "sysctl" => parse::<system::SysctlArgs>(args).and_then(|a| a.check()),
            "kernel_module" => parse::<system::KernelModuleArgs>(args).map(|_| ()),
            "swap" => parse::<system::SwapArgs>(args).map(|_| ()),
            "selinux" => parse::<system::SelinuxArgs>(args).map(|_| ()),
            "hostname" => parse::<system::HostnameArgs>(args).map(|_| ()),
            "package" => parse::<package::PackageArgs>(args).map(|_| ()),
            "systemd" => parse::<service::SystemdArgs>(args).map(|_| ()),
            "wait_for" => parse::<service::WaitForArgs>(args).and_then(|a| a.check()),
            "gather_facts" => parse::<facts::GatherArgs>(args).map(|_| ()),
            other => Err(ArgsError::UnknownModule(other.to_string())),
        };
    match result {
        Err(e) if templated && !names_a_field(&e) => Ok(()),
        other => other,
    }
}

/// An unknown or missing field is wrong whatever the templated values render to.
fn names_a_field(e: &ArgsError) -> bool {
    let text = e.to_string();
    text.contains("unknown field") || text.contains("missing field")
}

/// Runs one module on one host with rendered arguments.
pub async fn run(module: &str, args: &Value, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let a = ModuleError::Args;
    match module {
        "command" | "shell" => command::run(parse(args).map_err(a)?, module == "shell", cx).await,
        "assert" => command::assert(parse(args).map_err(a)?, cx).await,
        "template" => files::template(parse(args).map_err(a)?, cx).await,
        "copy" => files::copy(parse(args).map_err(a)?, cx).await,
        "file" => files::file(parse(args).map_err(a)?, cx).await,
        "line_in_file" => files::line_in_file(parse(args).map_err(a)?, cx).await,
        "block_in_file" => files::block_in_file(parse(args).map_err(a)?, cx).await,
        "hosts_file" => files::hosts_file(parse(args).map_err(a)?, cx).await,
        "sysctl" => system::sysctl(parse(args).map_err(a)?, cx).await,
        "kernel_module" => system::kernel_module(parse(args).map_err(a)?, cx).await,
        "swap" => system::swap(parse(args).map_err(a)?, cx).await,
        "selinux" => system::selinux(parse(args).map_err(a)?, cx).await,
        "hostname" => system::hostname(parse(args).map_err(a)?, cx).await,
        "package" => package::run(parse(args).map_err(a)?, cx).await,
        "systemd" => service::systemd(parse(args).map_err(a)?, cx).await,
        "wait_for" => service::wait_for(parse(args).map_err(a)?, cx).await,
        "gather_facts" => facts::run(parse(args).map_err(a)?, cx).await,
        other => Err(ArgsError::UnknownModule(other.to_string()).into()),
    }
}

fn parse<T: DeserializeOwned>(args: &Value) -> Result<T, ArgsError> {
    serde_json::from_value(args.clone()).map_err(ArgsError::Parse)
}

/// Single-quotes a string for `sh`.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a check-then-act script reported.
#[derive(Debug, Default)]
pub struct ScriptResult {
    /// Lines the script marked with `CK_CHANGED <what>`.
    pub changes: Vec<String>,
    /// `CK_SKIP <why>`: the module does not apply on this host.
    pub skip: Option<String>,
    /// Everything else the script printed.
    pub stdout: String,
}

impl ScriptResult {
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The outcome: skipped, changed (listing the changes) or ok with `ok_message`.
    pub fn outcome(&self, ok_message: &str) -> Outcome {
        if let Some(why) = &self.skip {
            Outcome::skipped(why.clone())
        } else if self.changed() {
            Outcome::changed(self.changes.join("; "))
        } else {
            Outcome::ok(ok_message)
        }
    }
}

/// Runs a POSIX sh script that checks and, unless `CK_CHECK=1`, acts. It reports with lines
/// `CK_CHANGED what` (in check mode: what would change) and `CK_SKIP why`; `changed` is a
/// shell function defined for it. A non-zero exit is a failure carrying stderr.
pub async fn run_script(
    exec: &dyn Executor,
    check: bool,
    body: &str,
    timeout: Option<Duration>,
) -> Result<ScriptResult, ModuleError> {
    let line = format!(
        "CK_CHECK={}\nchanged() {{ echo \"CK_CHANGED $*\"; }}\nskip() {{ echo \"CK_SKIP $*\"; exit 0; }}\n{body}",
        if check { 1 } else { 0 }
    );
    let mut cmd = Command::new(line);
    cmd.timeout = timeout;
    let out = exec.run_checked(&cmd).await?;
    let mut result = ScriptResult::default();
    for l in out.stdout_str().lines() {
        if let Some(rest) = l.strip_prefix("CK_CHANGED ") {
            result.changes.push(rest.to_string());
        } else if let Some(rest) = l.strip_prefix("CK_SKIP ") {
            result.skip = Some(rest.to_string());
        } else {
            result.stdout.push_str(l);
            result.stdout.push('\n');
        }
    }
    Ok(result)
}

/// Lenient scalar deserializers: rendered templates are strings, YAML literals are not.
pub mod flex {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(u64),
        Str(String),
    }

    fn to_bool<E: serde::de::Error>(s: Scalar) -> Result<bool, E> {
        match s {
            Scalar::Bool(b) => Ok(b),
            Scalar::Int(i) => Ok(i != 0),
            Scalar::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" | "" => Ok(false),
                other => Err(E::custom(format!("expected true or false, got `{other}`"))),
            },
        }
    }

    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        to_bool(Scalar::deserialize(d)?)
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(s) => to_bool(s).map(Some),
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(Scalar::Int(i)) => Ok(Some(i)),
            Some(Scalar::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("expected a number, got `{s}`"))),
            Some(Scalar::Bool(_)) => Err(serde::de::Error::custom("expected a number")),
        }
    }

    /// A file mode: `"0644"`/`"644"` (octal digits as a string, the safe form) or an integer
    /// whose decimal digits are read as octal (YAML `644`).
    pub fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let text = match Option::<Scalar>::deserialize(d)? {
            None => return Ok(None),
            Some(Scalar::Int(i)) => i.to_string(),
            Some(Scalar::Str(s)) => s.trim().to_string(),
            Some(Scalar::Bool(_)) => return Err(serde::de::Error::custom("expected a file mode")),
        };
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not an octal file mode like \"0644\""
                ))
            })
    }

    /// A scalar as text (`1`, `true`, `"x"` → `"1"`, `"true"`, `"x"`).
    pub fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Scalar::deserialize(d)? {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Str(s) => s,
        })
    }

    /// Like [`scalar_string`], optional.
    pub fn opt_scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match Option::<Scalar>::deserialize(d)? {
            None => None,
            Some(Scalar::Bool(b)) => Some(b.to_string()),
            Some(Scalar::Int(i)) => Some(i.to_string()),
            Some(Scalar::Str(s)) => Some(s),
        })
    }

    /// A map of names to scalars, values as text.
    pub fn scalar_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
        let raw = std::collections::BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Scalar::Bool(b) => b.to_string(),
                    Scalar::Int(i) => i.to_string(),
                    Scalar::Str(s) => s,
                };
                (k, v)
            })
            .collect())
    }

    /// One string or a list of strings.
    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/etc/x.conf"), "/etc/x.conf");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn modes_parse_as_octal() {
        #[derive(serde::Deserialize)]
        struct M {
            #[serde(default, deserialize_with = "flex::opt_mode")]
            mode: Option<u32>,
        }
        let m: M = serde_json::from_value(json!({"mode": "0644"})).unwrap();
        assert_eq!(m.mode, Some(0o644));
        let m: M = serde_json::from_value(json!({"mode": 600})).unwrap();
        assert_eq!(m.mode, Some(0o600));
        assert!(serde_json::from_value::<M>(json!({"mode": "0999"})).is_err());
    }
}
