//! Node-level modules: `sysctl`, `kernel_module`, `swap`, `selinux`, `hostname`.
//!
//! Each checks with one remote command. `sysctl` writes through `/proc/sys` (no dependency on
//! procps) and keeps its values in a sysctl.d file so they survive a reboot. `kernel_module`
//! treats a module built into the kernel as present, recognised by evidence in /proc and /sys
//! (`/proc/sys/net/bridge` for br_netfilter, `/proc/filesystems` for overlay, `/proc/net/ip_vs`
//! for ip_vs) or by `modules.builtin`; only loadable modules are persisted in modules-load.d.
//! `swap` turns swap off now and comments the swap lines of /etc/fstab (a backup of the
//! original is kept next to it) so it stays off after a reboot. `selinux` skips hosts without
//! SELinux.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{flex, sh_quote, ArgsError, ModuleError, Outcome, TaskCx};
use crate::exec::UploadOptions;
use crate::playbook::diff;

/// Arguments of `sysctl`: one `name`/`value`, or many `values`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlArgs {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_scalar_string")]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "flex::scalar_map")]
    pub values: BTreeMap<String, String>,
    /// Where the values persist.
    #[serde(default = "default_sysctl_file")]
    pub file: String,
    /// Also set the live value (default true).
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub apply: Option<bool>,
}

fn default_sysctl_file() -> String {
    "/etc/sysctl.d/90-clusterkit.conf".to_string()
}

impl SysctlArgs {
    /// All wanted values, by name.
    pub fn wanted(&self) -> Result<BTreeMap<String, String>, ArgsError> {
        let mut all = self.values.clone();
        match (&self.name, &self.value) {
            (Some(n), Some(v)) => {
                all.insert(n.clone(), v.clone());
            }
            (None, None) => {}
            _ => return Err(ArgsError::Invalid("`name` and `value` go together".into())),
        }
        if all.is_empty() {
            return Err(ArgsError::Invalid(
                "give `name` + `value` or `values`".into(),
            ));
        }
        Ok(all)
    }

    /// Load-time check of names (templated names are checked after rendering).
    pub fn check(&self) -> Result<(), ArgsError> {
        for name in self.wanted()?.keys() {
            if !crate::playbook::render::is_template(name) {
                check_sysctl_name(name)?;
            }
        }
        Ok(())
    }
}

fn check_sysctl_name(name: &str) -> Result<(), ArgsError> {
    let ok = !name.is_empty()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ArgsError::Invalid(format!("`{name}` is not a sysctl name")))
    }
}

fn proc_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Values compare with whitespace collapsed (`32768\t60999` equals `32768 60999`).
fn norm(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The sysctl.d text with each wanted `name = value` line set (pure, unit-tested).
pub fn edit_sysctl_file(text: &str, wanted: &BTreeMap<String, String>) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (name, value) in wanted {
        let want = format!("{name} = {value}");
        let key_of = |l: &str| -> Option<String> {
            let l = l.trim_start();
            if l.starts_with('#') || l.starts_with(';') {
                return None;
            }
            l.split_once('=')
                .map(|(k, _)| k.trim().trim_start_matches('-').to_string())
        };
        match lines
            .iter()
            .rposition(|l| key_of(l).as_deref() == Some(name))
        {
            Some(i) => {
                let current = lines[i]
                    .split_once('=')
                    .map(|(_, v)| norm(v))
                    .unwrap_or_default();
                if current != norm(value) {
                    lines[i] = want;
                }
            }
            None => lines.push(want),
        }
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

pub async fn sysctl(args: SysctlArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let wanted = args.wanted()?;
    for name in wanted.keys() {
        check_sysctl_name(name)?;
    }
    let apply = args.apply.unwrap_or(true);
    // One command: the file, then each live value.
    let mut line = format!(
        "cat {f} 2>/dev/null; echo; echo CK_SEP\n",
        f = sh_quote(&args.file)
    );
    for name in wanted.keys() {
        let p = proc_path(name);
        line.push_str(&format!(
            "if [ -r {p} ]; then printf '%s=' {name}; tr '\\n' ' ' < {p}; echo; else echo {name}=CK_MISSING; fi\n"
        ));
    }
    let out = cx.sh(&line).await?;
    let (file_part, live_part) = out.rsplit_once("CK_SEP\n").unwrap_or((out.as_str(), ""));
    // `cat; echo` added one newline so an empty or unterminated file still splits cleanly.
    let old_file = file_part
        .strip_suffix('\n')
        .unwrap_or(file_part)
        .to_string();
    let mut live = BTreeMap::new();
    for l in live_part.lines() {
        if let Some((k, v)) = l.split_once('=') {
            live.insert(k.to_string(), v.to_string());
        }
    }
    let mut changes = Vec::new();
    let mut to_apply = Vec::new();
    for (name, value) in &wanted {
        match live.get(name).map(String::as_str) {
            Some("CK_MISSING") | None => {
                let hint = if name.starts_with("net.bridge.") {
                    " (the br_netfilter kernel module must be loaded first)"
                } else {
                    ""
                };
                return Err(ModuleError::Failed(format!(
                    "sysctl {name} does not exist on this host: no {}{hint}",
                    proc_path(name)
                )));
            }
            Some(current) if apply && norm(current) != norm(value) => {
                changes.push(format!("{name}: {} → {}", norm(current), norm(value)));
                to_apply.push((name.clone(), value.clone()));
            }
            _ => {}
        }
    }
    let new_file = edit_sysctl_file(&old_file, &wanted);
    let file_changes = new_file != old_file;
    if file_changes {
        changes.push(format!("persist in {}", args.file));
    }
    if changes.is_empty() {
        return Ok(Outcome::ok(format!("{} value(s) as wanted", wanted.len())));
    }
    let d = if file_changes {
        diff::unified(&args.file, &old_file, &new_file)
    } else {
        None
    };
    if cx.check {
        return Ok(Outcome::changed(format!("would set {}", changes.join("; "))).with_diff(d));
    }
    if file_changes {
        cx.exec
            .upload(new_file.as_bytes(), &args.file, &UploadOptions::default())
            .await?;
    }
    if !to_apply.is_empty() {
        let mut line = String::from("set -e\n");
        for (name, value) in &to_apply {
            line.push_str(&format!(
                "printf '%s\\n' {} > {}\n",
                sh_quote(value),
                proc_path(name)
            ));
        }
        cx.sh(&line).await?;
    }
    Ok(Outcome::changed(format!("set {}", changes.join("; "))).with_diff(d))
}

/// Arguments of `kernel_module`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelModuleArgs {
    #[serde(deserialize_with = "flex::strings")]
    pub names: Vec<String>,
    /// The modules-load.d file loadable modules are persisted in.
    #[serde(default = "default_modules_file")]
    pub persist_file: String,
}

fn default_modules_file() -> String {
    "/etc/modules-load.d/clusterkit.conf".to_string()
}

/// Shell test that is true when a module is built into the running kernel, by evidence that
/// exists even where /sys/module and modules.builtin do not (containers, minimal kernels).
fn builtin_evidence(module: &str) -> Option<&'static str> {
    Some(match module {
        "br_netfilter" => "[ -d /proc/sys/net/bridge ]",
        "overlay" => "grep -qw overlay /proc/filesystems",
        "ip_vs" => "[ -e /proc/net/ip_vs ]",
        "nf_conntrack" => "[ -e /proc/sys/net/netfilter/nf_conntrack_max ]",
        "ip_tables" => "[ -e /proc/net/ip_tables_names ]",
        _ => return None,
    })
}

/// Where to look for a module's evidence, for error messages.
fn evidence_hint(module: &str) -> String {
    match module {
        "ip_vs" | "ip_vs_rr" | "ip_vs_wrr" | "ip_vs_sh" => {
            " — this kernel has no IPVS support (no /proc/net/ip_vs); use kubernetes.proxy_mode: iptables".to_string()
        }
        _ => String::new(),
    }
}

pub async fn kernel_module(
    args: KernelModuleArgs,
    cx: &TaskCx<'_>,
) -> Result<Outcome, ModuleError> {
    let file = sh_quote(&args.persist_file);
    let mut script = String::from("kver=$(uname -r)\n");
    for m in &args.names {
        if !m
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ArgsError::Invalid(format!("`{m}` is not a kernel module name")).into());
        }
        let evidence = builtin_evidence(m).unwrap_or("false");
        let hint = evidence_hint(m);
        script.push_str(&format!(
            "if [ -d /sys/module/{m} ] && ! grep -qs '/{m}.ko' /lib/modules/$kver/modules.builtin; then state=loaded\n\
             elif {evidence} || grep -qs '/{m}.ko' /lib/modules/$kver/modules.builtin; then state=builtin\n\
             else state=loaded; changed 'load {m}'\n\
               if [ $CK_CHECK = 0 ] && ! err=$(modprobe {m} 2>&1); then\n\
                 echo \"kernel module {m} is not available: not loaded, not built in, and modprobe {m} failed: $err{hint}\" >&2; exit 1\n\
               fi\n\
             fi\n\
             if [ $state = loaded ] && ! grep -qsx '{m}' {file}; then changed 'persist {m} in {pf}'\n\
               [ $CK_CHECK = 1 ] || {{ mkdir -p \"$(dirname {file})\" && echo {m} >> {file}; }}\n\
             fi\n",
            pf = args.persist_file
        ));
    }
    Ok(cx
        .script(&script)
        .await?
        .outcome(&format!("{} present", args.names.join(", "))))
}

/// Arguments of `swap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapArgs {
    #[serde(default = "default_fstab")]
    pub fstab: String,
}

fn default_fstab() -> String {
    "/etc/fstab".to_string()
}

/// Prefix put before fstab swap lines we disable, so an operator sees who did it.
pub const SWAP_COMMENT: &str = "# disabled by clusterkit (kubelet needs swap off): ";

/// fstab text with every active swap line commented (pure, unit-tested).
pub fn comment_swap_lines(fstab: &str) -> String {
    let mut out = String::new();
    for line in fstab.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !line.trim_start().starts_with('#') && fields.len() >= 3 && fields[2] == "swap" {
            out.push_str(SWAP_COMMENT);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub async fn swap(args: SwapArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let fstab = args.fstab.clone();
    let f = sh_quote(&fstab);
    // One command: active swaps, then the fstab (mode + text).
    let out = cx
        .sh(&format!(
            "tail -n +2 /proc/swaps 2>/dev/null; echo CK_SEP; if [ -f {f} ]; then stat -c %a {f}; cat {f}; else echo CK_ABSENT; fi"
        ))
        .await?;
    let (swaps, rest) = out.split_once("CK_SEP\n").unwrap_or((out.as_str(), ""));
    let active: Vec<String> = swaps
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let (mode_line, old) = rest.split_once('\n').unwrap_or((rest, ""));
    let fstab_state = if mode_line.trim() == "CK_ABSENT" {
        None
    } else {
        let mode = u32::from_str_radix(mode_line.trim(), 8).map_err(|_| {
            ModuleError::Failed(format!("cannot read the mode of {fstab}: `{mode_line}`"))
        })?;
        Some((old.to_string(), mode))
    };
    let mut changes: Vec<String> = active.iter().map(|s| format!("swapoff {s}")).collect();
    let backup = format!("{fstab}.clusterkit-backup");
    let mut new_fstab = None;
    if let Some((old, mode)) = &fstab_state {
        let new = comment_swap_lines(old);
        if &new != old {
            changes.push(format!(
                "comment swap lines in {fstab} (original kept as {backup})"
            ));
            new_fstab = Some((
                new,
                *mode,
                diff::unified(&fstab, old, &comment_swap_lines(old)),
            ));
        }
    }
    if changes.is_empty() {
        return Ok(Outcome::ok("swap is off and stays off"));
    }
    let d = new_fstab.as_ref().and_then(|(_, _, d)| d.clone());
    if cx.check {
        return Ok(Outcome::changed(format!("would {}", changes.join("; "))).with_diff(d));
    }
    let mut line = String::from("set -e\n");
    for s in &active {
        line.push_str(&format!("swapoff {}\n", sh_quote(s)));
    }
    if new_fstab.is_some() {
        line.push_str(&format!(
            "[ -e {b} ] || cp -p {f} {b}\n",
            b = sh_quote(&backup)
        ));
    }
    cx.sh(&line).await?;
    if let Some((new, mode, _)) = &new_fstab {
        let options = UploadOptions {
            mode: *mode,
            owner: None,
            create_parents: false,
        };
        cx.exec.upload(new.as_bytes(), &fstab, &options).await?;
    }
    Ok(Outcome::changed(changes.join("; ")).with_diff(d))
}

/// SELinux mode wanted.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SelinuxState {
    Permissive,
    Disabled,
}

/// Arguments of `selinux`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelinuxArgs {
    pub state: SelinuxState,
}

pub async fn selinux(args: SelinuxArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let want = match args.state {
        SelinuxState::Permissive => "permissive",
        SelinuxState::Disabled => "disabled",
    };
    let script = format!(
        "if [ ! -f /etc/selinux/config ] && [ ! -d /sys/fs/selinux ]; then skip 'SELinux is not present on this host'; fi\n\
         if [ -f /sys/fs/selinux/enforce ] && [ \"$(cat /sys/fs/selinux/enforce)\" = 1 ]; then\n\
           changed 'enforcing → permissive now'\n\
           [ $CK_CHECK = 1 ] || setenforce 0 2>/dev/null || echo 0 > /sys/fs/selinux/enforce\n\
         fi\n\
         if [ -f /etc/selinux/config ]; then\n\
           cur=$(sed -n 's/^SELINUX=//p' /etc/selinux/config)\n\
           if [ \"$cur\" != {want} ]; then\n\
             changed \"SELINUX=$cur → {want} in /etc/selinux/config\"\n\
             if [ $CK_CHECK = 0 ]; then\n\
               if grep -q '^SELINUX=' /etc/selinux/config; then sed -i 's/^SELINUX=.*/SELINUX={want}/' /etc/selinux/config\n\
               else echo SELINUX={want} >> /etc/selinux/config; fi\n\
             fi\n\
           fi\n\
         fi\n"
    );
    Ok(cx
        .script(&script)
        .await?
        .outcome(&format!("SELinux is {want}")))
}

/// Arguments of `hostname`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameArgs {
    pub name: String,
}

pub async fn hostname(args: HostnameArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let n = &args.name;
    if n.is_empty()
        || n.len() > 63
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ArgsError::Invalid(format!("`{n}` is not a valid hostname")).into());
    }
    let script = format!(
        "cur=$(hostname); file=$(cat /etc/hostname 2>/dev/null || true)\n\
         if [ \"$cur\" != {n} ]; then changed \"hostname $cur → {n}\"; [ $CK_CHECK = 1 ] || hostname {n}; fi\n\
         if [ \"$file\" != {n} ]; then changed '/etc/hostname → {n}'; [ $CK_CHECK = 1 ] || echo {n} > /etc/hostname; fi\n"
    );
    Ok(cx
        .script(&script)
        .await?
        .outcome(&format!("hostname is {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_file_edits() {
        let mut w = BTreeMap::new();
        w.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
        w.insert("net.core.somaxconn".to_string(), "1024".to_string());
        let t = edit_sysctl_file("# comment\nnet.ipv4.ip_forward=0\n", &w);
        assert_eq!(
            t,
            "# comment\nnet.ipv4.ip_forward = 1\nnet.core.somaxconn = 1024\n"
        );
        assert_eq!(edit_sysctl_file(&t, &w), t);
        // An equal value written differently is left alone.
        let t2 = "net.ipv4.ip_forward=1\nnet.core.somaxconn =  1024\n";
        assert_eq!(edit_sysctl_file(t2, &w), t2);
    }

    #[test]
    fn swap_lines_are_commented_once() {
        let fstab =
            "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n# /old none swap sw 0 0\n";
        let t = comment_swap_lines(fstab);
        assert!(
            t.contains(&format!("{SWAP_COMMENT}/swapfile none swap")),
            "{t}"
        );
        assert!(t.contains("UUID=1 / ext4"));
        assert_eq!(comment_swap_lines(&t), t);
    }

    #[test]
    fn sysctl_names_are_checked() {
        assert!(check_sysctl_name("net.ipv4.ip_forward").is_ok());
        assert!(check_sysctl_name("net/../x").is_err());
        assert!(check_sysctl_name("a b").is_err());
    }
}
