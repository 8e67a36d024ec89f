//! Validation: raw file types in, the resolved [`Cluster`] (or every problem found) out.
//!
//! Each check records a [`Diagnostic`] and carries on, so one run reports every error in the
//! file. A section with errors still resolves to *something* so later checks (duplicates,
//! CIDR overlaps) can run; the cluster is only handed out when no error was recorded.
//!
//! Defaults live here, next to the check of the value they replace; the resolved types
//! document them. Relative paths are joined to the directory of the cluster file.
//!
//! Limits: only the local file system is consulted (key files must exist and be private);
//! nothing is resolved over the network and environment variables are not read here (secrets
//! are read at use time, see `secret.rs`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::error::{Diagnostic, Severity};
use super::grammar::{self, Range};
use super::raw::*;
use super::resolved::*;
use super::secret::SecretEnv;
use crate::release::KubeVersion;

mod backup;
mod hosts;
mod kubernetes;
mod monitor;
mod runtime;

use backup::*;
use hosts::*;
use kubernetes::*;
use monitor::*;
use runtime::*;

/// A line and column in the file.
type Pos = (u64, u64);

/// The top of the file, for problems with no better place (a missing section).
const TOP: Pos = (1, 1);

fn pos<T>(s: &S<T>) -> Pos {
    (s.referenced.line(), s.referenced.column())
}

/// Where validation is, and what it found so far.
struct Ctx<'a> {
    /// The file as the operator named it, for messages.
    file: &'a Path,
    /// Absolute directory of the file, for relative paths.
    dir: &'a Path,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn push(&mut self, severity: Severity, at: Pos, field: &str, message: String) {
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line: at.0,
            column: at.1,
            field: field.to_string(),
            message,
        });
    }

    fn error(&mut self, at: Pos, field: &str, message: impl Into<String>) {
        self.push(Severity::Error, at, field, message.into());
    }

    fn warn(&mut self, at: Pos, field: &str, message: impl Into<String>) {
        self.push(Severity::Warning, at, field, message.into());
    }

    /// The field's value, or an error at `parent` when it is absent.
    fn required<'r, T>(
        &mut self,
        v: &'r Option<S<T>>,
        parent: Pos,
        field: &str,
    ) -> Option<&'r S<T>> {
        if v.is_none() {
            self.error(parent, field, "is required but missing");
        }
        v.as_ref()
    }

    /// A required, non-blank string.
    fn required_str(&mut self, v: &Option<S<String>>, parent: Pos, field: &str) -> Option<String> {
        let s = self.required(v, parent, field)?;
        self.non_blank(s, field)
    }

    /// An optional string that must not be blank when given.
    fn optional_str(&mut self, v: &Option<S<String>>, field: &str) -> Option<String> {
        v.as_ref().and_then(|s| self.non_blank(s, field))
    }

    fn non_blank(&mut self, s: &S<String>, field: &str) -> Option<String> {
        let v = s.value.trim();
        if v.is_empty() {
            self.error(pos(s), field, "must not be empty");
            return None;
        }
        Some(v.to_string())
    }

    /// A path from the file, absolute (relative ones joined to the file's directory).
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        };
        // Collecting components drops the `.` in `dir/./key`, so messages show clean paths.
        joined.components().collect()
    }

    fn optional_path(&mut self, v: &Option<S<String>>, field: &str) -> Option<PathBuf> {
        let s = self.optional_str(v, field)?;
        Some(self.path(&s))
    }

    /// The name of an environment variable holding a secret.
    fn env(&mut self, s: &S<String>, field: &str, what: &str) -> Option<SecretEnv> {
        let v = s.value.trim();
        let valid = !v.is_empty()
            && !v.starts_with(|c: char| c.is_ascii_digit())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            self.error(
                pos(s),
                field,
                // The value is not echoed: someone may have pasted the secret itself here.
                "is not an environment variable name (letters, digits, _): write the NAME of \
                 a variable holding the secret, never the secret itself",
            );
            return None;
        }
        Some(SecretEnv::new(v, what))
    }

    fn optional_env(
        &mut self,
        v: &Option<S<String>>,
        field: &str,
        what: &str,
    ) -> Option<SecretEnv> {
        v.as_ref().and_then(|s| self.env(s, field, what))
    }

    /// A number inside `range`, or `default` when absent. Out of range is an error naming the
    /// range (and then `default` stands in, so later checks still run).
    fn ranged(&mut self, v: &Option<S<u64>>, field: &str, range: &Range, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => match range.check(s.value) {
                Ok(v) => v,
                Err(e) => {
                    self.error(pos(s), field, e.to_string());
                    default
                }
            },
        }
    }

    /// An `http://` or `https://` URL.
    fn url(&mut self, s: &S<String>, field: &str) -> Option<String> {
        let v = self.non_blank(s, field)?;
        let rest = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') && v.bytes().all(is_url_byte) => {
                Some(v)
            }
            _ => {
                self.error(
                    pos(s),
                    field,
                    format!("{v:?} is not an http:// or https:// URL"),
                );
                None
            }
        }
    }

    /// A private key file: must exist and must not be readable by group or others.
    fn key_file(&mut self, s: &S<String>, field: &str) -> Option<PathBuf> {
        let v = self.non_blank(s, field)?;
        let path = self.path(&v);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.error(
                    pos(s),
                    field,
                    format!("key file {} does not exist", path.display()),
                );
                None
            }
            Err(e) => {
                self.error(
                    pos(s),
                    field,
                    format!("cannot read key file {}: {e}", path.display()),
                );
                None
            }
            Ok(m) if !m.is_file() => {
                self.error(
                    pos(s),
                    field,
                    format!("key file {} is not a regular file", path.display()),
                );
                None
            }
            Ok(m) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    self.error(
                        pos(s),
                        field,
                        format!(
                            "key file {} has mode {mode:04o}: it must not be readable by group or \
                             others (chmod 600 {})",
                            path.display(),
                            path.display()
                        ),
                    );
                    return None;
                }
                Some(path)
            }
        }
    }

    /// A file the cluster file names and clusterkit reads later: it must exist and be a
    /// readable regular file now, so the mistake shows here rather than mid-operation.
    fn readable_file(&mut self, s: &S<String>, field: &str) -> Option<PathBuf> {
        let v = self.non_blank(s, field)?;
        let path = self.path(&v);
        match std::fs::File::open(&path).and_then(|f| f.metadata()) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.error(
                    pos(s),
                    field,
                    format!("{} is not a regular file", path.display()),
                );
                None
            }
            Err(e) => {
                self.error(
                    pos(s),
                    field,
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(
        &mut self,
        v: &Option<S<String>>,
        field: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = v else { return default };
        match options.iter().find(|(w, _)| *w == s.value.trim()) {
            Some((_, t)) => *t,
            None => {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                self.error(
                    pos(s),
                    field,
                    format!(
                        "unknown value {:?} (expected {})",
                        s.value,
                        words.join(" or ")
                    ),
                );
                default
            }
        }
    }
}

/// A character RFC 3986 allows in a URL (unreserved, reserved, `%`). Quotes, backslashes,
/// spaces and control characters are not among them: a URL reaches TOML and YAML files.
fn is_url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&()*+,;=%".contains(&b)
}

/// Resolves a parsed file. `file` is the path as the operator wrote it (for messages),
/// `abs_file` the absolute path. Returns the cluster only when no error was found; the
/// diagnostics (errors and warnings) come back either way, in file order.
pub(crate) fn resolve(
    raw: RawCluster,
    file: &Path,
    abs_file: &Path,
) -> (Option<Cluster>, Vec<Diagnostic>) {
    let dir = abs_file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut cx = Ctx {
        file,
        dir: &dir,
        diags: Vec::new(),
    };
    let cluster = resolve_cluster(&mut cx, &raw, abs_file);
    let mut diags = cx.diags;
    // Stable: problems on the same line keep the order they were found in.
    diags.sort_by_key(|d| (d.line, d.column));
    let ok = !diags.iter().any(Diagnostic::is_error);
    (cluster.filter(|_| ok), diags)
}

/// Longest cluster name: a DNS label's length, so it fits wherever it is used.
const NAME_MAX: usize = 63;

fn resolve_cluster(cx: &mut Ctx<'_>, raw: &RawCluster, abs_file: &Path) -> Option<Cluster> {
    let name = cx.required_str(&raw.name, TOP, "name").and_then(|n| {
        let at = raw.name.as_ref().map_or(TOP, pos);
        if n.len() > NAME_MAX {
            cx.error(
                at,
                "name",
                format!(
                    "is {} bytes long; at most {NAME_MAX} (it names the state directory, \
                     metrics labels and backups)",
                    n.len()
                ),
            );
            return None;
        }
        let ok = n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !n.starts_with(['.', '-']);
        if !ok {
            cx.error(
                at,
                "name",
                format!("{n:?} may only hold letters, digits, '.', '_' and '-' (it names the state directory)"),
            );
            return None;
        }
        Some(n)
    });

    let profile = cx.choice(
        &raw.profile,
        "profile",
        &[
            ("production", Profile::Production),
            ("sandbox", Profile::Sandbox),
        ],
        Profile::Production,
    );

    let ssh = resolve_ssh(cx, raw.ssh.as_ref(), profile);
    let hosts = resolve_hosts(cx, raw.hosts.as_ref(), profile);
    let kubernetes = resolve_kubernetes(cx, raw, &hosts, profile);
    let runtime = resolve_runtime(cx, raw.runtime.as_ref(), kubernetes.as_ref());
    let packages = resolve_packages(cx, raw.packages.as_ref());
    let sysctls = resolve_sysctls(cx, &raw.sysctls);
    let backup = resolve_backup(cx, raw.backup.as_ref());
    let monitor = resolve_monitor(cx, raw.monitor.as_ref());
    let pki = resolve_pki(cx, raw.pki.as_ref());

    let state_dir = match &raw.state_dir {
        Some(s) => cx.non_blank(s, "state_dir").map(|p| cx.path(&p)),
        None => name
            .as_ref()
            .map(|n| crate::layout::StateLayout::default_root(cx.dir, n)),
    };

    Some(Cluster {
        name: name?,
        path: abs_file.to_path_buf(),
        dir: cx.dir.to_path_buf(),
        state_dir: state_dir?,
        ssh: ssh?,
        hosts: hosts.into_iter().map(|h| h.host).collect(),
        kubernetes: kubernetes?,
        runtime: runtime?,
        packages: packages?,
        profile,
        sysctls,
        backup: backup?,
        monitor: monitor?,
        pki: pki?,
    })
}

/// `pki:` — certificate lifetimes, kubeadm's by default; a leaf may not outlive its CA and
/// the renewal window must be shorter than a leaf's life.
fn resolve_pki(cx: &mut Ctx<'_>, raw: Option<&S<RawPki>>) -> Option<Pki> {
    let d = Pki::default();
    let Some(raw) = raw else {
        return Some(d);
    };
    let r = &raw.value;
    let ca = cx.ranged(
        &r.ca_validity_days,
        "pki.ca_validity_days",
        &grammar::CA_VALIDITY_DAYS,
        d.ca_validity_days,
    );
    let leaf = cx.ranged(
        &r.cert_validity_days,
        "pki.cert_validity_days",
        &grammar::CERT_VALIDITY_DAYS,
        d.cert_validity_days,
    );
    let renew = cx.ranged(
        &r.renew_before_days,
        "pki.renew_before_days",
        &grammar::CERT_VALIDITY_DAYS,
        d.renew_before_days.min(leaf.saturating_sub(1)).max(1),
    );
    let mut ok = true;
    if leaf > ca {
        let at = r.cert_validity_days.as_ref().map_or(pos(raw), pos);
        cx.error(
            at,
            "pki.cert_validity_days",
            format!("{leaf} days is longer than the CAs' {ca} (pki.ca_validity_days): certificates cannot outlive their CA"),
        );
        ok = false;
    }
    if renew >= leaf {
        let at = r.renew_before_days.as_ref().map_or(pos(raw), pos);
        cx.error(
            at,
            "pki.renew_before_days",
            format!("{renew} days is not shorter than a certificate's life ({leaf} days): every run would re-issue every certificate"),
        );
        ok = false;
    }
    ok.then_some(Pki {
        ca_validity_days: ca,
        cert_validity_days: leaf,
        renew_before_days: renew,
    })
}

fn resolve_ssh(cx: &mut Ctx<'_>, raw: Option<&S<RawSsh>>, profile: Profile) -> Option<Ssh> {
    let Some(raw) = raw else {
        return Some(Ssh {
            known_hosts: cx.dir.join("known_hosts"),
            trust_on_first_use: false,
            concurrency: 16,
            connect_timeout_secs: 10,
            command_timeout_secs: 600,
            jump_host: None,
        });
    };
    let at = pos(raw);
    let r = &raw.value;
    let known_hosts = cx
        .optional_path(&r.known_hosts, "ssh.known_hosts")
        .unwrap_or_else(|| cx.dir.join("known_hosts"));
    let trust_on_first_use = r.trust_on_first_use.as_ref().is_some_and(|b| b.value);
    if trust_on_first_use && profile == Profile::Production {
        let at = r.trust_on_first_use.as_ref().map_or(at, pos);
        cx.warn(
            at,
            "ssh.trust_on_first_use",
            "unknown host keys will be accepted and recorded without verification; \
             prefer filling known_hosts from a trusted source",
        );
    }
    let concurrency = cx.ranged(&r.concurrency, "ssh.concurrency", &grammar::CONCURRENCY, 16);
    // The range keeps it far below usize::MAX on every target.
    let concurrency = usize::try_from(concurrency).unwrap_or(16);
    let connect_timeout_secs = cx.ranged(
        &r.connect_timeout_secs,
        "ssh.connect_timeout_secs",
        &grammar::CONNECT_TIMEOUT_SECS,
        10,
    );
    let command_timeout_secs = cx.ranged(
        &r.command_timeout_secs,
        "ssh.command_timeout_secs",
        &grammar::COMMAND_TIMEOUT_SECS,
        600,
    );
    let mut jump_ok = true;
    let jump_host = r.jump_host.as_ref().and_then(|j| {
        let jat = pos(j);
        let address = cx.required_str(&j.value.address, jat, "ssh.jump_host.address");
        let address = address.filter(|a| {
            let ok = host_is_valid(a);
            if !ok {
                let at = j.value.address.as_ref().map_or(jat, pos);
                cx.error(
                    at,
                    "ssh.jump_host.address",
                    format!("{a:?} is not an IP address or DNS name"),
                );
            }
            ok
        });
        let port = port(cx, &j.value.port, "ssh.jump_host.port");
        let user = user(cx, &j.value.user, "ssh.jump_host.user");
        let auth = resolve_auth(cx, j.value.auth.as_ref(), jat, "ssh.jump_host", "jump host");
        match (address, port, auth) {
            (Some(address), Some(port), Some(auth)) => Some(JumpHost {
                address,
                port,
                user,
                auth,
            }),
            _ => {
                jump_ok = false;
                None
            }
        }
    });
    if !jump_ok {
        return None;
    }
    Some(Ssh {
        known_hosts,
        trust_on_first_use,
        concurrency,
        connect_timeout_secs,
        command_timeout_secs,
        jump_host,
    })
}

/// A login user, `root` when absent. A bad name is reported and `root` stands in (the
/// error keeps the cluster from resolving).
fn user(cx: &mut Ctx<'_>, v: &Option<S<String>>, field: &str) -> String {
    let Some(s) = v else {
        return "root".into();
    };
    match grammar::user_name(&s.value) {
        Ok(()) => s.value.clone(),
        Err(e) => {
            cx.error(pos(s), field, e.to_string());
            "root".into()
        }
    }
}

fn port(cx: &mut Ctx<'_>, v: &Option<S<u16>>, field: &str) -> Option<u16> {
    match v {
        None => Some(22),
        Some(s) if s.value == 0 => {
            cx.error(pos(s), field, "port 0 is not a valid port");
            None
        }
        Some(s) => Some(s.value),
    }
}
