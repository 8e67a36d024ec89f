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
                    self.error(pos(s), field, e);
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
            cx.error(pos(s), field, e);
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

/// Resolves `auth`; `prefix` is the field path of its parent (`hosts[1]`), `who` names the
/// host for secret error messages.
fn resolve_auth(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawAuth>>,
    parent: Pos,
    prefix: &str,
    who: &str,
) -> Option<Auth> {
    let field = format!("{prefix}.auth");
    let Some(raw) = raw else {
        cx.error(
            parent,
            &field,
            "is required but missing: give key_file (optionally with passphrase_env), password_env, or agent: true",
        );
        return None;
    };
    let at = pos(raw);
    let r = &raw.value;
    let agent = r.agent.as_ref().is_some_and(|a| a.value);
    let chosen = [r.key_file.is_some(), r.password_env.is_some(), agent]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        let msg = if chosen == 0 {
            "no authentication method: give key_file, password_env, or agent: true"
        } else {
            "give only one of key_file, password_env and agent: true"
        };
        cx.error(at, &field, msg);
        return None;
    }
    if let Some(p) = &r.passphrase_env {
        if r.key_file.is_none() {
            cx.error(
                pos(p),
                &format!("{field}.passphrase_env"),
                "only makes sense with key_file",
            );
            return None;
        }
    }
    if let Some(k) = &r.key_file {
        let file = cx.key_file(k, &format!("{field}.key_file"));
        let passphrase = match &r.passphrase_env {
            Some(p) => {
                let f = format!("{field}.passphrase_env");
                Some(cx.env(p, &f, &format!("{who} {f}"))?)
            }
            None => None,
        };
        return Some(Auth::Key {
            file: file?,
            passphrase,
        });
    }
    if let Some(p) = &r.password_env {
        let f = format!("{field}.password_env");
        let password = cx.env(p, &f, &format!("{who} {f}"))?;
        return Some(Auth::Password { password });
    }
    Some(Auth::Agent)
}

/// A resolved host and where it came from, for checks that span sections.
struct HostAt {
    host: Host,
    /// Index in the file's `hosts` list.
    index: usize,
    /// Position of its `address` value.
    address_at: Pos,
}

/// Resolves every host. Hosts with errors are left out, so the result may be shorter than the
/// file's list.
fn resolve_hosts(
    cx: &mut Ctx<'_>,
    raw: Option<&S<Vec<S<RawHost>>>>,
    profile: Profile,
) -> Vec<HostAt> {
    let Some(list) = raw else {
        cx.error(
            TOP,
            "hosts",
            "is required but missing: list at least one host",
        );
        return Vec::new();
    };
    let list_at = pos(list);
    let mut out = Vec::new();
    let mut names: HashMap<String, (usize, Pos)> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (usize, Pos)> = HashMap::new();
    for (i, h) in list.value.iter().enumerate() {
        let prefix = format!("hosts[{i}]");
        let at = pos(h);
        let r = &h.value;

        let name = cx.required_str(&r.name, at, &format!("{prefix}.name"));
        let name = name.filter(|n| {
            let name_at = r.name.as_ref().map_or(at, pos);
            if !is_node_name(n) {
                cx.error(
                    name_at,
                    &format!("{prefix}.name"),
                    format!("{n:?} is not a valid node name (lowercase letters, digits, '-' and '.'; it becomes the hostname)"),
                );
                return false;
            }
            if let Some((j, first)) = names.get(n) {
                cx.error(
                    name_at,
                    &format!("{prefix}.name"),
                    format!("duplicate host name {n:?} (first used by hosts[{j}] at line {})", first.0),
                );
                return false;
            }
            names.insert(n.clone(), (i, name_at));
            true
        });
        let who = match &name {
            Some(n) => format!("host {n}"),
            None => format!("host {prefix}"),
        };

        let address_at = r.address.as_ref().map_or(at, pos);
        let address = cx
            .required_str(&r.address, at, &format!("{prefix}.address"))
            .and_then(|a| match a.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    cx.error(
                        address_at,
                        &format!("{prefix}.address"),
                        format!("{a:?} is not an IP address"),
                    );
                    None
                }
            });
        let address = address.filter(|ip| {
            if let Some(why) = not_a_node_address(ip, profile) {
                cx.error(
                    address_at,
                    &format!("{prefix}.address"),
                    format!("{ip} cannot be a node's address: it is {why}"),
                );
                return false;
            }
            if let Some((j, first)) = addresses.get(ip) {
                cx.error(
                    address_at,
                    &format!("{prefix}.address"),
                    format!(
                        "duplicate address {ip} (first used by hosts[{j}] at line {})",
                        first.0
                    ),
                );
                return false;
            }
            addresses.insert(*ip, (i, address_at));
            true
        });

        let port = port(cx, &r.port, &format!("{prefix}.port"));
        let user = user(cx, &r.user, &format!("{prefix}.user"));
        let auth = resolve_auth(cx, r.auth.as_ref(), at, &prefix, &who);
        let become_ = resolve_become(cx, r.become_.as_ref(), &user, &prefix, &who);
        let roles = resolve_roles(cx, &r.roles, at, &prefix);
        let labels = resolve_labels(cx, &r.labels, &prefix);
        let taints = resolve_taints(cx, &r.taints, &prefix);

        if let (
            Some(name),
            Some(address),
            Some(port),
            Some(auth),
            Some(become_),
            Some(roles),
            Some(labels),
            Some(taints),
        ) = (name, address, port, auth, become_, roles, labels, taints)
        {
            out.push(HostAt {
                host: Host {
                    name,
                    address,
                    port,
                    user,
                    auth,
                    become_,
                    roles,
                    labels,
                    taints,
                },
                index: i,
                address_at,
            });
        }
    }

    // Role counts are judged on the file's roles, including hosts that had other errors, so an
    // unrelated typo does not also produce a misleading "no etcd host".
    let has_role = |role: Role| {
        list.value
            .iter()
            .filter(|h| {
                h.value
                    .roles
                    .iter()
                    .any(|r| r.value.trim() == role.as_str())
            })
            .count()
    };
    for role in [Role::ControlPlane, Role::Etcd] {
        if has_role(role) == 0 {
            cx.error(
                list_at,
                "hosts",
                format!("no host has the role {role}; at least one is needed"),
            );
        }
    }
    let etcd = has_role(Role::Etcd);
    if etcd > 0 && etcd % 2 == 0 {
        cx.warn(
            list_at,
            "hosts",
            format!(
                "{etcd} etcd members tolerate no more failures than {}: use an odd number",
                etcd - 1
            ),
        );
    }
    out
}

/// Why `ip` cannot be a node's address (other machines must reach it at it, and Kubernetes
/// advertises it), or `None` when it can. Loopback addresses are every machine itself, so
/// only the sandbox profile, where everything runs on this one machine, may use them.
fn not_a_node_address(ip: &IpAddr, profile: Profile) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() && profile != Profile::Sandbox {
        return Some(
            "a loopback address, which is every machine itself (only profile: sandbox, where \
             everything runs on this machine, may use one)",
        );
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address; write the IPv4 address")
        }
        _ => None,
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of node names.
fn is_node_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `Some(None)`: valid, no escalation. `None`: an error was recorded.
fn resolve_become(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawBecome>>,
    user: &str,
    prefix: &str,
    who: &str,
) -> Option<Option<Become>> {
    let Some(raw) = raw else {
        // A non-root login needs root for nearly everything the installer does; passwordless
        // sudo is the common setup, so it is the default.
        return Some((user != "root").then_some(Become {
            method: BecomeMethod::Sudo,
            password: None,
        }));
    };
    let r = &raw.value;
    let field = format!("{prefix}.become.method");
    let method = match &r.method {
        None => "sudo".to_string(),
        Some(m) => m.value.trim().to_string(),
    };
    match method.as_str() {
        "sudo" => {
            let f = format!("{prefix}.become.password_env");
            let password = match &r.password_env {
                Some(p) => Some(cx.env(p, &f, &format!("{who} {f}"))?),
                None => None,
            };
            Some(Some(Become {
                method: BecomeMethod::Sudo,
                password,
            }))
        }
        "none" => {
            if let Some(p) = &r.password_env {
                cx.error(
                    pos(p),
                    &format!("{prefix}.become.password_env"),
                    "is only used with method: sudo (method here is none)",
                );
                return None;
            }
            Some(None)
        }
        other => {
            let at = r.method.as_ref().map_or(pos(raw), pos);
            cx.error(
                at,
                &field,
                format!("unknown become method {other:?} (expected sudo or none)"),
            );
            None
        }
    }
}

fn resolve_roles(cx: &mut Ctx<'_>, raw: &[S<String>], at: Pos, prefix: &str) -> Option<Vec<Role>> {
    if raw.is_empty() {
        cx.error(
            at,
            &format!("{prefix}.roles"),
            "a host needs at least one role (etcd, control-plane, worker, monitor)",
        );
        return None;
    }
    let mut roles = Vec::new();
    let mut ok = true;
    for (j, r) in raw.iter().enumerate() {
        let field = format!("{prefix}.roles[{j}]");
        match r.value.trim().parse::<Role>() {
            Ok(role) if roles.contains(&role) => {
                cx.warn(pos(r), &field, format!("role {role} is listed twice"));
            }
            Ok(role) => roles.push(role),
            Err(_) => {
                cx.error(
                    pos(r),
                    &field,
                    format!(
                        "unknown role {:?} (expected etcd, control-plane, worker or monitor)",
                        r.value
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(roles)
}

fn resolve_labels(
    cx: &mut Ctx<'_>,
    raw: &BTreeMap<String, S<String>>,
    prefix: &str,
) -> Option<BTreeMap<String, String>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let field = format!("{prefix}.labels.{k}");
        if !is_label_key(k) {
            cx.error(
                pos(v),
                &field,
                format!("{k:?} is not a valid Kubernetes label key"),
            );
            ok = false;
        } else if !is_label_value(&v.value) {
            cx.error(
                pos(v),
                &field,
                format!("{:?} is not a valid Kubernetes label value (≤63 of letters, digits, '-', '_', '.')", v.value),
            );
            ok = false;
        } else {
            out.insert(k.clone(), v.value.clone());
        }
    }
    ok.then_some(out)
}

/// `[prefix/]name` where prefix is a DNS subdomain and name a label value that is not empty.
fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    // Kubernetes wants the prefix to be a lowercase DNS subdomain, as node names are.
    prefix.is_none_or(is_node_name) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn resolve_taints(cx: &mut Ctx<'_>, raw: &[S<String>], prefix: &str) -> Option<Vec<Taint>> {
    let mut ok = true;
    let mut out = Vec::new();
    for (j, t) in raw.iter().enumerate() {
        match parse_taint(t.value.trim()) {
            Some(taint) => out.push(taint),
            None => {
                cx.error(
                    pos(t),
                    &format!("{prefix}.taints[{j}]"),
                    format!(
                        "{:?} is not a taint like key=value:NoSchedule (effects: NoSchedule, PreferNoSchedule, NoExecute)",
                        t.value
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn parse_taint(s: &str) -> Option<Taint> {
    let (kv, effect) = s.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    if !is_label_key(key) || value.is_some_and(|v| !is_label_value(v)) {
        return None;
    }
    Some(Taint {
        key: key.to_string(),
        value: value.map(str::to_string),
        effect: effect.to_string(),
    })
}

/// A CIDR field, `default` when absent (a built-in constant the tests resolve).
#[allow(
    clippy::expect_used,
    reason = "`default` is a built-in constant, never user input"
)]
fn cidr(
    cx: &mut Ctx<'_>,
    v: &Option<S<String>>,
    field: &str,
    default: &str,
) -> Option<(IpNet, Option<Pos>)> {
    let Some(s) = v else {
        return Some((default.parse().expect("built-in default CIDR"), None));
    };
    let text = s.value.trim();
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            cx.error(
                pos(s),
                field,
                format!("{text:?} has host bits set (did you mean {}?)", net.trunc()),
            );
            None
        }
        Ok(net) => Some((net, Some(pos(s)))),
        Err(_) => {
            cx.error(
                pos(s),
                field,
                format!("{text:?} is not a CIDR like 10.244.0.0/16"),
            );
            None
        }
    }
}

/// A pod network must hold one node-sized slice per host (and, for IPv6,
/// kube-controller-manager allows at most 16 bits between the two masks).
fn pod_cidr_fits(net: &IpNet, hosts: usize) -> Result<(), String> {
    let (node, min) = match net {
        IpNet::V4(_) => (Kubernetes::NODE_POD_PREFIX_V4, 0),
        IpNet::V6(_) => (
            Kubernetes::NODE_POD_PREFIX_V6,
            Kubernetes::NODE_POD_PREFIX_V6 - 16,
        ),
    };
    let prefix = net.prefix_len();
    if prefix > node {
        return Err(format!(
            "{net} is smaller than one node's /{node}: use a /{node} or larger"
        ));
    }
    if prefix < min {
        return Err(format!(
            "{net} is larger than kube-controller-manager allows with /{node} node slices: use \
             a /{min} to /{node}"
        ));
    }
    let slices = 1u128
        .checked_shl(u32::from(node - prefix))
        .unwrap_or(u128::MAX);
    if slices < u128::try_from(hosts).unwrap_or(u128::MAX) {
        return Err(format!(
            "{net} has {slices} /{node} node slices for {hosts} hosts: use a larger pod_cidr"
        ));
    }
    Ok(())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn resolve_kubernetes(
    cx: &mut Ctx<'_>,
    raw: &RawCluster,
    hosts: &[HostAt],
    profile: Profile,
) -> Option<Kubernetes> {
    let Some(kraw) = &raw.kubernetes else {
        cx.error(
            TOP,
            "kubernetes",
            "is required but missing (at least kubernetes.version)",
        );
        return None;
    };
    let at = pos(kraw);
    let r = &kraw.value;
    let sandbox = profile == Profile::Sandbox;

    let version = cx
        .required_str(&r.version, at, "kubernetes.version")
        .and_then(|v| {
            match v
                .parse::<KubeVersion>()
                .and_then(|v| v.check_supported().map(|()| v))
            {
                Ok(v) => Some(v),
                Err(e) => {
                    let vat = r.version.as_ref().map_or(at, pos);
                    cx.error(vat, "kubernetes.version", e.to_string());
                    None
                }
            }
        });

    let pod = cidr(cx, &r.pod_cidr, "kubernetes.pod_cidr", "10.244.0.0/16");
    let svc = cidr(
        cx,
        &r.service_cidr,
        "kubernetes.service_cidr",
        "10.96.0.0/12",
    );
    let mut cidrs_ok = pod.is_some() && svc.is_some();
    if let Some((p, p_at)) = &pod {
        let hosts_in_file = raw.hosts.as_ref().map_or(0, |h| h.value.len());
        if let Err(e) = pod_cidr_fits(p, hosts_in_file) {
            cx.error(p_at.unwrap_or(at), "kubernetes.pod_cidr", e);
            cidrs_ok = false;
        }
    }
    if let Some((s, s_at)) = &svc {
        // kube-apiserver takes at most 20 bits of service addresses; the cluster DNS Service
        // takes the range's tenth address, so it needs at least 16.
        let (lo, hi) = if s.addr().is_ipv4() {
            (12, 28)
        } else {
            (108, 124)
        };
        if !(lo..=hi).contains(&s.prefix_len()) {
            cx.error(
                s_at.unwrap_or(at),
                "kubernetes.service_cidr",
                format!(
                    "{s} has a /{} prefix; a service network is /{lo} to /{hi} (at most 20 bits \
                     for kube-apiserver, room for the DNS Service's tenth address)",
                    s.prefix_len()
                ),
            );
            cidrs_ok = false;
        }
    }
    if let (Some((p, p_at)), Some((s, s_at))) = (&pod, &svc) {
        if overlaps(p, s) {
            cx.error(
                s_at.or(*p_at).unwrap_or(at),
                "kubernetes.service_cidr",
                format!("service CIDR {s} overlaps the pod CIDR {p}"),
            );
            cidrs_ok = false;
        }
    }
    for (field, net) in [("pod_cidr", &pod), ("service_cidr", &svc)] {
        let Some((net, _)) = net else { continue };
        for HostAt {
            host: h,
            index,
            address_at,
        } in hosts
        {
            if net.contains(&h.address) {
                cx.error(
                    *address_at,
                    &format!("hosts[{index}].address"),
                    format!(
                        "{} (host {}) lies inside kubernetes.{field} {net}",
                        h.address, h.name
                    ),
                );
                cidrs_ok = false;
            }
        }
    }

    let dns_domain = cx
        .optional_str(&r.dns_domain, "kubernetes.dns_domain")
        .unwrap_or_else(|| "cluster.local".into());
    if !host_is_valid(&dns_domain) || dns_domain.parse::<IpAddr>().is_ok() {
        let dat = r.dns_domain.as_ref().map_or(at, pos);
        cx.error(
            dat,
            "kubernetes.dns_domain",
            format!("{dns_domain:?} is not a DNS domain"),
        );
    }

    let proxy_mode = cx.choice(
        &r.proxy_mode,
        "kubernetes.proxy_mode",
        &[("ipvs", ProxyMode::Ipvs), ("iptables", ProxyMode::Iptables)],
        if sandbox {
            ProxyMode::Iptables
        } else {
            ProxyMode::Ipvs
        },
    );
    if sandbox && proxy_mode == ProxyMode::Ipvs {
        let pat = r.proxy_mode.as_ref().map_or(at, pos);
        cx.warn(
            pat,
            "kubernetes.proxy_mode",
            "the sandbox kernel has no IPVS; use iptables",
        );
    }

    let control_plane_endpoint = match &r.control_plane_endpoint {
        Some(s) => match s.value.trim().parse::<Endpoint>() {
            // Every node and the operator reach the API server there: the same addresses a
            // node cannot have, it cannot have either.
            Ok(e) => match e
                .host
                .parse::<IpAddr>()
                .ok()
                .and_then(|ip| not_a_node_address(&ip, profile))
            {
                Some(why) => {
                    cx.error(
                        pos(s),
                        "kubernetes.control_plane_endpoint",
                        format!("{e} cannot be the API server's address: it is {why}"),
                    );
                    None
                }
                None => Some(e),
            },
            Err(e) => {
                cx.error(pos(s), "kubernetes.control_plane_endpoint", e);
                None
            }
        },
        // No host may be resolved when the hosts had errors; those are reported already.
        None => hosts
            .iter()
            .map(|h| &h.host)
            .find(|h| h.has_role(Role::ControlPlane))
            .map(|h| Endpoint {
                host: h.address.to_string(),
                port: crate::layout::Ports::DEFAULT.apiserver,
            }),
    };

    let control_plane_mode = cx.choice(
        &r.control_plane_mode,
        "kubernetes.control_plane_mode",
        &[
            ("static-pod", ControlPlaneMode::StaticPod),
            ("systemd", ControlPlaneMode::Systemd),
        ],
        if sandbox {
            ControlPlaneMode::Systemd
        } else {
            ControlPlaneMode::StaticPod
        },
    );
    let image_repository = match &r.image_repository {
        Some(s) => image_ref(
            cx,
            s,
            "kubernetes.image_repository",
            grammar::image_repository,
        )?,
        None => "registry.k8s.io".into(),
    };
    let network = cx.choice(
        &r.network,
        "kubernetes.network",
        &[
            ("calico", Network::Calico),
            ("flannel", Network::Flannel),
            ("host-gw", Network::HostGw),
        ],
        if sandbox {
            Network::HostGw
        } else {
            Network::Calico
        },
    );

    if network == Network::HostGw {
        // host-gw routes each node's IPv4 slice via the node's IPv4 address.
        let nat = r.network.as_ref().map_or(at, pos);
        if let Some((p, _)) = pod.as_ref().filter(|(p, _)| !p.addr().is_ipv4()) {
            cx.error(
                nat,
                "kubernetes.network",
                format!("host-gw needs an IPv4 pod_cidr; {p} is IPv6"),
            );
        }
        for h in hosts.iter().filter(|h| !h.host.address.is_ipv4()) {
            cx.error(
                h.address_at,
                &format!("hosts[{}].address", h.index),
                format!(
                    "{} is IPv6; kubernetes.network host-gw routes over IPv4 node addresses",
                    h.host.address
                ),
            );
        }
    }

    let load_balancer = resolve_load_balancer(cx, r.load_balancer.as_ref(), hosts);

    if !cidrs_ok {
        return None;
    }
    Some(Kubernetes {
        version: version?,
        pod_cidr: pod?.0,
        service_cidr: svc?.0,
        dns_domain,
        proxy_mode,
        control_plane_endpoint: control_plane_endpoint?,
        control_plane_mode,
        image_repository,
        network,
        load_balancer,
    })
}

/// Ports clusterkit's own services listen on on nodes; the local load balancer must not take
/// one of them (it binds 127.0.0.1 on every node, control-plane hosts included).
fn node_ports() -> impl Iterator<Item = (u16, &'static str)> {
    std::iter::once((22, "sshd")).chain(crate::layout::Ports::DEFAULT.reserved())
}

/// `kubernetes.load_balancer`: off unless `local: true`; the port must be free on every node.
fn resolve_load_balancer(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawLoadBalancer>>,
    hosts: &[HostAt],
) -> LoadBalancer {
    let Some(raw) = raw else {
        return LoadBalancer::default();
    };
    let mut lb = LoadBalancer::default();
    if let Some(local) = &raw.value.local {
        lb.local = local.value;
    }
    if let Some(p) = &raw.value.port {
        let field = "kubernetes.load_balancer.port";
        if p.value == 0 {
            cx.error(pos(p), field, "port 0 is not a valid port");
        } else if let Some((_, who)) = node_ports().find(|(n, _)| *n == p.value) {
            cx.error(
                pos(p),
                field,
                format!(
                    "port {} is taken by {who} on the nodes; pick a free one (default {})",
                    p.value,
                    LoadBalancer::DEFAULT_PORT
                ),
            );
        } else {
            lb.port = p.value;
        }
    }
    let control_planes = hosts
        .iter()
        .filter(|h| h.host.has_role(Role::ControlPlane))
        .count();
    if lb.local && control_planes == 1 {
        cx.warn(
            pos(raw),
            "kubernetes.load_balancer.local",
            "with one control-plane host the local load balancer only adds a hop; it pays off \
             with two or more",
        );
    }
    lb
}

/// An image reference or repository, checked by `grammar` (the OCI reference grammar).
fn image_ref(
    cx: &mut Ctx<'_>,
    s: &S<String>,
    field: &str,
    grammar: fn(&str) -> Result<(), String>,
) -> Option<String> {
    let v = cx.non_blank(s, field)?;
    match grammar(&v) {
        Ok(()) => Some(v),
        Err(e) => {
            cx.error(pos(s), field, e);
            None
        }
    }
}

fn resolve_runtime(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawRuntime>>,
    k8s: Option<&Kubernetes>,
) -> Option<Runtime> {
    let default_image = |k: &Kubernetes| {
        format!(
            "{}/pause:{}",
            k.image_repository,
            default_pause_tag(&k.version)
        )
    };
    let Some(raw) = raw else {
        return Some(Runtime {
            registry_mirrors: BTreeMap::new(),
            insecure_registries: Vec::new(),
            sandbox_image: default_image(k8s?),
        });
    };
    let r = &raw.value;
    let mut ok = true;
    let mut registry_mirrors = BTreeMap::new();
    for (registry, urls) in &r.registry_mirrors {
        let field = format!("runtime.registry_mirrors.{registry}");
        if !is_registry(registry) {
            cx.error(
                pos(urls),
                &field,
                format!("{registry:?} is not a registry host[:port]"),
            );
            ok = false;
        }
        let mut list = Vec::new();
        for (j, u) in urls.value.iter().enumerate() {
            match cx.url(u, &format!("{field}[{j}]")) {
                Some(u) => list.push(u),
                None => ok = false,
            }
        }
        registry_mirrors.insert(registry.clone(), list);
    }
    let mut insecure_registries = Vec::new();
    for (j, reg) in r.insecure_registries.iter().enumerate() {
        let v = reg.value.trim();
        if is_registry(v) {
            insecure_registries.push(v.to_string());
        } else {
            cx.error(
                pos(reg),
                &format!("runtime.insecure_registries[{j}]"),
                format!("{v:?} is not a registry host[:port] (no scheme)"),
            );
            ok = false;
        }
    }
    let sandbox_image = match &r.sandbox_image {
        Some(s) => image_ref(cx, s, "runtime.sandbox_image", grammar::image_reference),
        None => k8s.map(default_image),
    };
    if !ok {
        return None;
    }
    Some(Runtime {
        registry_mirrors,
        insecure_registries,
        sandbox_image: sandbox_image?,
    })
}

/// `host[:port]` as containerd names registries (`docker.io`, `10.0.0.1:5000`, `_default`).
fn is_registry(s: &str) -> bool {
    if s == "_default" {
        return true;
    }
    let host = match s.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => s,
    };
    host_is_valid(host)
}

fn resolve_packages(cx: &mut Ctx<'_>, raw: Option<&S<RawPackages>>) -> Option<Packages> {
    let Some(raw) = raw else {
        return Some(Packages::Online {
            repositories: BTreeMap::new(),
            mirror: None,
        });
    };
    let r = &raw.value;
    if let Some(b) = &r.bundle {
        if r.repositories.is_some() || r.mirror.is_some() {
            cx.error(
                pos(b),
                "packages.bundle",
                "an offline bundle excludes repositories and mirror: give one or the other",
            );
            return None;
        }
        let dir = cx.non_blank(b, "packages.bundle")?;
        return Some(Packages::Bundle { dir: cx.path(&dir) });
    }
    let mut ok = true;
    let mut repositories = BTreeMap::new();
    if let Some(repos) = &r.repositories {
        for (name, url) in &repos.value {
            match cx.url(url, &format!("packages.repositories.{name}")) {
                Some(u) => {
                    repositories.insert(name.clone(), u);
                }
                None => ok = false,
            }
        }
    }
    let mirror = match &r.mirror {
        Some(m) => {
            let u = cx.url(m, "packages.mirror");
            ok &= u.is_some();
            u
        }
        None => None,
    };
    ok.then_some(Packages::Online {
        repositories,
        mirror,
    })
}

fn resolve_sysctls(
    cx: &mut Ctx<'_>,
    raw: &BTreeMap<String, S<String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let field = format!("sysctls.{k}");
        // What the sysctl module writes under /proc/sys: dotted names, no path tricks.
        let key_ok = k.contains('.')
            && !k.contains("..")
            && !k.starts_with('.')
            && !k.ends_with('.')
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            cx.error(
                pos(v),
                &field,
                format!("{k:?} is not a sysctl name like net.core.somaxconn"),
            );
        } else if v.value.trim().is_empty() || v.value.contains(|c: char| c.is_control()) {
            cx.error(
                pos(v),
                &field,
                "needs a one-line, non-empty value without control characters",
            );
        } else {
            out.insert(k.clone(), v.value.trim().to_string());
        }
    }
    out
}

fn resolve_backup(cx: &mut Ctx<'_>, raw: Option<&S<RawBackup>>) -> Option<Backup> {
    let default_s3 = || S3 {
        endpoint: None,
        region: None,
        path_style: None,
        access_key_id: None,
        secret_access_key: None,
        ca_file: None,
        checksums: Checksums::WhenRequired,
        part_size_mib: 5,
        parts_in_flight: 2,
    };
    let Some(raw) = raw else {
        return Some(Backup {
            store: None,
            s3: default_s3(),
            encryption: Encryption::default(),
            retention: Retention::default(),
            schedule: None,
            compression_level: 3,
        });
    };
    let r = &raw.value;
    let mut ok = true;

    let store = match &r.store {
        Some(s) => {
            let st = parse_store(cx, s);
            ok &= st.is_some();
            st
        }
        None => None,
    };

    let s3 = match &r.s3 {
        None => Some(default_s3()),
        Some(s3raw) => resolve_s3(cx, s3raw),
    };

    let encryption = match &r.encryption {
        None => Some(Encryption::default()),
        Some(e) => {
            let mut eok = true;
            let mut age_recipients = Vec::new();
            for (j, rcp) in e.value.age_recipients.iter().enumerate() {
                let v = rcp.value.trim();
                if v.starts_with("age1")
                    && v.len() > 10
                    && v.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    age_recipients.push(v.to_string());
                } else {
                    cx.error(
                        pos(rcp),
                        &format!("backup.encryption.age_recipients[{j}]"),
                        format!("{v:?} is not an age public key (age1…)"),
                    );
                    eok = false;
                }
            }
            let age_identity_file = e.value.age_identity_file.as_ref().and_then(|f| {
                let p = cx.readable_file(f, "backup.encryption.age_identity_file");
                eok &= p.is_some();
                p
            });
            if let (false, Some(p)) = (e.value.age_recipients.is_empty(), &e.value.passphrase_env) {
                cx.error(
                    pos(p),
                    "backup.encryption.passphrase_env",
                    "give age_recipients or passphrase_env, not both: a backup is encrypted one \
                     way",
                );
                eok = false;
            }
            let passphrase = match &e.value.passphrase_env {
                Some(p) => {
                    let f = "backup.encryption.passphrase_env";
                    let s = cx.env(p, f, f);
                    eok &= s.is_some();
                    s
                }
                None => None,
            };
            eok.then_some(Encryption {
                age_recipients,
                age_identity_file,
                passphrase,
            })
        }
    };

    let retention = match &r.retention {
        None => Some(Retention::default()),
        Some(rt) => {
            let rr = &rt.value;
            let mut rok = true;
            let mut get = |v: &Option<S<u32>>, name: &str| -> Option<u32> {
                let s = v.as_ref()?;
                if let Err(e) = grammar::RETENTION_COUNT.check(u64::from(s.value)) {
                    cx.error(
                        pos(s),
                        &format!("backup.retention.{name}"),
                        format!("{e}; leave it out to not use this rule"),
                    );
                    rok = false;
                    return None;
                }
                Some(s.value)
            };
            let retention = Retention {
                keep_last: get(&rr.keep_last, "keep_last"),
                hourly: get(&rr.hourly, "hourly"),
                daily: get(&rr.daily, "daily"),
                weekly: get(&rr.weekly, "weekly"),
                monthly: get(&rr.monthly, "monthly"),
            };
            rok.then_some(retention)
        }
    };

    let schedule = match &r.schedule {
        None => None,
        Some(s) => {
            let v = s.value.trim();
            match grammar::parse_cron(v) {
                Ok(_) => Some(v.to_string()),
                Err(e) => {
                    cx.error(
                        pos(s),
                        "backup.schedule",
                        format!("{e} (like \"0 */6 * * *\" or @daily)"),
                    );
                    ok = false;
                    None
                }
            }
        }
    };

    let compression_level = match &r.compression_level {
        None => 3,
        Some(c) => {
            // A negative level is reported like any other value outside the range.
            let level = u64::try_from(c.value).unwrap_or(0);
            match grammar::COMPRESSION_LEVEL
                .check(level)
                .map(|v| i32::try_from(v).unwrap_or(3))
            {
                Ok(v) => v,
                Err(_) => {
                    let r = &grammar::COMPRESSION_LEVEL;
                    cx.error(
                        pos(c),
                        "backup.compression_level",
                        format!(
                            "{} is outside {}..={} ({})",
                            c.value,
                            r.bounds.start(),
                            r.bounds.end(),
                            r.why
                        ),
                    );
                    ok = false;
                    3
                }
            }
        }
    };

    if !ok {
        return None;
    }
    Some(Backup {
        store,
        s3: s3?,
        encryption: encryption?,
        retention: retention?,
        schedule,
        compression_level,
    })
}

fn parse_store(cx: &mut Ctx<'_>, s: &S<String>) -> Option<Store> {
    let v = s.value.trim();
    if let Some(rest) = v.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            cx.error(
                pos(s),
                "backup.store",
                format!("{bucket:?} is not an S3 bucket name (3-63 of lowercase letters, digits, '.', '-')"),
            );
            return None;
        }
        return Some(Store::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    if let Some(rest) = v.strip_prefix("file://") {
        if rest.is_empty() {
            cx.error(
                pos(s),
                "backup.store",
                "file:// needs a directory, e.g. file:///var/backups/k8s",
            );
            return None;
        }
        return Some(Store::File {
            path: cx.path(rest),
        });
    }
    cx.error(
        pos(s),
        "backup.store",
        format!("{v:?} is not a store URL: use s3://bucket/prefix or file:///path"),
    );
    None
}

fn resolve_s3(cx: &mut Ctx<'_>, raw: &S<RawS3>) -> Option<S3> {
    let r = &raw.value;
    let mut ok = true;
    let endpoint = match &r.endpoint {
        Some(e) => {
            let u = cx.url(e, "backup.s3.endpoint");
            ok &= u.is_some();
            u
        }
        None => None,
    };
    let region = cx.optional_str(&r.region, "backup.s3.region");
    let path_style = r.path_style.as_ref().map(|b| b.value);
    let access_key_id = cx.optional_env(
        &r.access_key_id_env,
        "backup.s3.access_key_id_env",
        "backup.s3.access_key_id_env",
    );
    let secret_access_key = cx.optional_env(
        &r.secret_access_key_env,
        "backup.s3.secret_access_key_env",
        "backup.s3.secret_access_key_env",
    );
    ok &= r.access_key_id_env.is_none() || access_key_id.is_some();
    ok &= r.secret_access_key_env.is_none() || secret_access_key.is_some();
    if r.access_key_id_env.is_some() != r.secret_access_key_env.is_some() {
        cx.error(
            pos(raw),
            "backup.s3",
            "give both access_key_id_env and secret_access_key_env, or neither (SDK default credentials)",
        );
        ok = false;
    }
    let ca_file = r.ca_file.as_ref().and_then(|f| {
        let p = cx.readable_file(f, "backup.s3.ca_file");
        ok &= p.is_some();
        p
    });
    let checksums = cx.choice(
        &r.checksums,
        "backup.s3.checksums",
        &[
            ("when_required", Checksums::WhenRequired),
            ("when_supported", Checksums::WhenSupported),
        ],
        Checksums::WhenRequired,
    );
    // 5 MiB x 2 in flight: the streamed etcd backup's peak RSS stays near 50 MiB and upload
    // waits are negligible (bench/backup); bigger parts only cost memory.
    let part_size_mib = cx.ranged(
        &r.part_size_mib,
        "backup.s3.part_size_mib",
        &grammar::PART_SIZE_MIB,
        5,
    );
    let parts_in_flight = cx.ranged(
        &r.parts_in_flight,
        "backup.s3.parts_in_flight",
        &grammar::PARTS_IN_FLIGHT,
        2,
    );
    let parts_in_flight = usize::try_from(parts_in_flight).unwrap_or(2);
    ok.then_some(S3 {
        endpoint,
        region,
        path_style,
        access_key_id,
        secret_access_key,
        ca_file,
        checksums,
        part_size_mib,
        parts_in_flight,
    })
}

fn resolve_monitor(cx: &mut Ctx<'_>, raw: Option<&S<RawMonitor>>) -> Option<Monitor> {
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 9842));
    let default_intervals = Intervals {
        scrape_secs: 15,
        evaluation_secs: 15,
        etcd_secs: 15,
        control_plane_secs: 15,
        nodes_secs: 30,
        certificates_secs: 3600,
        backups_secs: 300,
    };
    let Some(raw) = raw else {
        return Some(Monitor {
            listen: default_listen,
            intervals: default_intervals,
            alertmanager: Alertmanager::default(),
            tls: true,
            web_auth: WebAuth::default(),
            basic_auth: None,
            ports: MonitorPorts::default(),
            etcd_quota_bytes: DEFAULT_ETCD_QUOTA_BYTES,
            backup_max_age_secs: DEFAULT_BACKUP_MAX_AGE_SECS,
        });
    };
    let r = &raw.value;
    let mut ok = true;

    let listen = match &r.listen {
        None => default_listen,
        Some(l) => match l.value.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                cx.error(
                    pos(l),
                    "monitor.listen",
                    "port 0 is not a port to listen on",
                );
                ok = false;
                default_listen
            }
            Ok(a) => a,
            Err(_) => {
                cx.error(
                    pos(l),
                    "monitor.listen",
                    format!(
                        "{:?} is not an IP:port address like 127.0.0.1:9842",
                        l.value
                    ),
                );
                ok = false;
                default_listen
            }
        },
    };

    let intervals = match &r.intervals {
        None => default_intervals,
        Some(i) => {
            let i = &i.value;
            let d = &default_intervals;
            Intervals {
                scrape_secs: cx.ranged(
                    &i.scrape_secs,
                    "monitor.intervals.scrape_secs",
                    &grammar::INTERVAL_SECS,
                    d.scrape_secs,
                ),
                evaluation_secs: cx.ranged(
                    &i.evaluation_secs,
                    "monitor.intervals.evaluation_secs",
                    &grammar::INTERVAL_SECS,
                    d.evaluation_secs,
                ),
                etcd_secs: cx.ranged(
                    &i.etcd_secs,
                    "monitor.intervals.etcd_secs",
                    &grammar::INTERVAL_SECS,
                    d.etcd_secs,
                ),
                control_plane_secs: cx.ranged(
                    &i.control_plane_secs,
                    "monitor.intervals.control_plane_secs",
                    &grammar::INTERVAL_SECS,
                    d.control_plane_secs,
                ),
                nodes_secs: cx.ranged(
                    &i.nodes_secs,
                    "monitor.intervals.nodes_secs",
                    &grammar::INTERVAL_SECS,
                    d.nodes_secs,
                ),
                certificates_secs: cx.ranged(
                    &i.certificates_secs,
                    "monitor.intervals.certificates_secs",
                    &grammar::INTERVAL_SECS,
                    d.certificates_secs,
                ),
                backups_secs: cx.ranged(
                    &i.backups_secs,
                    "monitor.intervals.backups_secs",
                    &grammar::INTERVAL_SECS,
                    d.backups_secs,
                ),
            }
        }
    };

    let alertmanager = match &r.alertmanager {
        None => Some(Alertmanager::default()),
        Some(a) => resolve_alertmanager(cx, a),
    };

    let (tls, web_auth) = resolve_monitor_security(cx, r);

    let basic_auth = match &r.basic_auth {
        None => None,
        Some(b) => {
            let bat = pos(b);
            let username = cx
                .required_str(&b.value.username, bat, "monitor.basic_auth.username")
                .filter(|u| {
                    let ok = u.len() <= 128 && u.chars().all(|c| !c.is_control() && c != ':');
                    if !ok {
                        let uat = b.value.username.as_ref().map_or(bat, pos);
                        cx.error(
                            uat,
                            "monitor.basic_auth.username",
                            "at most 128 characters, no ':' (it ends an HTTP basic-auth user) \
                             and no control characters",
                        );
                    }
                    ok
                });
            let f = "monitor.basic_auth.password_env";
            let password = cx
                .required(&b.value.password_env, bat, f)
                .and_then(|p| cx.env(p, f, f));
            match (username, password) {
                (Some(username), Some(password)) => Some(BasicAuth { username, password }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let ports = match &r.ports {
        None => MonitorPorts::default(),
        Some(p) => {
            let p = &p.value;
            let d = MonitorPorts::default();
            let mut port = |v: &Option<S<u16>>, field: &str, default: u16| match v {
                None => default,
                Some(s) if s.value == 0 => {
                    cx.error(pos(s), field, "must be a port from 1 to 65535");
                    ok = false;
                    default
                }
                Some(s) => s.value,
            };
            MonitorPorts {
                node_exporter: port(
                    &p.node_exporter,
                    "monitor.ports.node_exporter",
                    d.node_exporter,
                ),
                etcd: port(&p.etcd, "monitor.ports.etcd", d.etcd),
                apiserver: port(&p.apiserver, "monitor.ports.apiserver", d.apiserver),
                scheduler: port(&p.scheduler, "monitor.ports.scheduler", d.scheduler),
                controller_manager: port(
                    &p.controller_manager,
                    "monitor.ports.controller_manager",
                    d.controller_manager,
                ),
                kubelet: port(&p.kubelet, "monitor.ports.kubelet", d.kubelet),
                prometheus: port(&p.prometheus, "monitor.ports.prometheus", d.prometheus),
                alertmanager: port(
                    &p.alertmanager,
                    "monitor.ports.alertmanager",
                    d.alertmanager,
                ),
            }
        }
    };
    let etcd_quota_bytes = cx.ranged(
        &r.etcd_quota_bytes,
        "monitor.etcd_quota_bytes",
        &grammar::ETCD_QUOTA_BYTES,
        DEFAULT_ETCD_QUOTA_BYTES,
    );
    let backup_max_age_secs = cx.ranged(
        &r.backup_max_age_secs,
        "monitor.backup_max_age_secs",
        &grammar::BACKUP_MAX_AGE_SECS,
        DEFAULT_BACKUP_MAX_AGE_SECS,
    );
    if !ok {
        return None;
    }
    Some(Monitor {
        listen,
        intervals,
        alertmanager: alertmanager?,
        tls,
        web_auth: web_auth?,
        basic_auth,
        ports,
        etcd_quota_bytes,
        backup_max_age_secs,
    })
}

/// `monitor.tls` (default on; off warns) and `monitor.web_auth`; `None` for web_auth after an
/// error.
fn resolve_monitor_security(cx: &mut Ctx<'_>, r: &RawMonitor) -> (bool, Option<WebAuth>) {
    let tls = match &r.tls {
        None => true,
        Some(t) if t.value => true,
        Some(t) => {
            cx.warn(
                pos(t),
                "monitor.tls",
                "false: node-exporter, Prometheus, Alertmanager and the exporter serve plain \
                 HTTP without authentication; only for a closed lab network",
            );
            false
        }
    };
    let Some(w) = &r.web_auth else {
        return (tls, Some(WebAuth::default()));
    };
    let username = match &w.value.username {
        None => Some(WebAuth::default().username),
        Some(u) => cx.non_blank(u, "monitor.web_auth.username"),
    };
    let username = username.filter(|u| {
        // A quoted YAML key in the web config files, and the user part of `user:password`.
        let ok = !u.contains([':', '"', '\\']) && u.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            if let Some(at) = w.value.username.as_ref() {
                cx.error(
                    pos(at),
                    "monitor.web_auth.username",
                    "must be printable ASCII without spaces, ':', '\"' or '\\'",
                );
            }
        }
        ok
    });
    let field = "monitor.web_auth.password_env";
    let password = match &w.value.password_env {
        None => Some(None),
        Some(p) => cx.env(p, field, field).map(Some),
    };
    match (username, password) {
        (Some(username), Some(password)) => (tls, Some(WebAuth { username, password })),
        _ => (tls, None),
    }
}

/// etcd's own default backend quota (the installer sets no `--quota-backend-bytes`).
const DEFAULT_ETCD_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A daily backup plus two hours of slack.
const DEFAULT_BACKUP_MAX_AGE_SECS: u64 = 26 * 3600;

fn resolve_alertmanager(cx: &mut Ctx<'_>, raw: &S<RawAlertmanager>) -> Option<Alertmanager> {
    let r = &raw.value;
    let mut ok = true;
    let mut receivers = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, rcv) in r.receivers.iter().enumerate() {
        let prefix = format!("monitor.alertmanager.receivers[{i}]");
        let at = pos(rcv);
        let rr = &rcv.value;
        let name = cx.required_str(&rr.name, at, &format!("{prefix}.name"));
        if let Some(n) = &name {
            if let Some(j) = names.get(n) {
                let nat = rr.name.as_ref().map_or(at, pos);
                cx.error(
                    nat,
                    &format!("{prefix}.name"),
                    format!("duplicate receiver name {n:?} (also receivers[{j}])"),
                );
                ok = false;
            }
            names.insert(n.clone(), i);
        }
        let kinds = [
            rr.webhook.is_some(),
            rr.email.is_some(),
            rr.wecom.is_some(),
            rr.dingtalk.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds != 1 {
            cx.error(
                at,
                &prefix,
                "give exactly one of webhook, email, wecom, dingtalk",
            );
            ok = false;
            continue;
        }
        let kind = if let Some(w) = &rr.webhook {
            let f = format!("{prefix}.webhook.url");
            cx.required(&w.value.url, pos(w), &f)
                .and_then(|u| cx.url(u, &f))
                .map(|url| ReceiverKind::Webhook { url })
        } else if let Some(e) = &rr.email {
            let eat = pos(e);
            let er = &e.value;
            let to = cx.required_str(&er.to, eat, &format!("{prefix}.email.to"));
            let from = cx.required_str(&er.from, eat, &format!("{prefix}.email.from"));
            let smarthost = cx
                .required(&er.smarthost, eat, &format!("{prefix}.email.smarthost"))
                .and_then(|s| match s.value.trim().parse::<Endpoint>() {
                    Ok(_) => Some(s.value.trim().to_string()),
                    Err(e) => {
                        cx.error(pos(s), &format!("{prefix}.email.smarthost"), e);
                        None
                    }
                });
            let auth_username =
                cx.optional_str(&er.auth_username, &format!("{prefix}.email.auth_username"));
            let f = format!("{prefix}.email.auth_password_env");
            let auth_password = cx.optional_env(&er.auth_password_env, &f, &f);
            let pw_ok = er.auth_password_env.is_none() || auth_password.is_some();
            match (to, from, smarthost, pw_ok) {
                (Some(to), Some(from), Some(smarthost), true) => Some(ReceiverKind::Email {
                    to,
                    from,
                    smarthost,
                    auth_username,
                    auth_password,
                }),
                _ => None,
            }
        } else if let Some(w) = &rr.wecom {
            let wat = pos(w);
            let wr = &w.value;
            let api_url = match &wr.api_url {
                Some(u) => cx.url(u, &format!("{prefix}.wecom.api_url")).map(Some),
                None => Some(None),
            };
            let corp_id = cx.required_str(&wr.corp_id, wat, &format!("{prefix}.wecom.corp_id"));
            let agent_id = cx.required_str(&wr.agent_id, wat, &format!("{prefix}.wecom.agent_id"));
            let to_party = cx.required_str(&wr.to_party, wat, &format!("{prefix}.wecom.to_party"));
            let f = format!("{prefix}.wecom.api_secret_env");
            let api_secret = cx
                .required(&wr.api_secret_env, wat, &f)
                .and_then(|s| cx.env(s, &f, &f));
            match (api_url, corp_id, agent_id, to_party, api_secret) {
                (
                    Some(api_url),
                    Some(corp_id),
                    Some(agent_id),
                    Some(to_party),
                    Some(api_secret),
                ) => Some(ReceiverKind::Wecom {
                    api_url,
                    corp_id,
                    agent_id,
                    to_party,
                    api_secret,
                }),
                _ => None,
            }
        } else if let Some(d) = &rr.dingtalk {
            let f = format!("{prefix}.dingtalk.webhook_url");
            cx.required(&d.value.webhook_url, pos(d), &f)
                .and_then(|u| cx.url(u, &f))
                .map(|webhook_url| ReceiverKind::Dingtalk { webhook_url })
        } else {
            None
        };
        match (name, kind) {
            (Some(name), Some(kind)) => receivers.push(Receiver { name, kind }),
            _ => ok = false,
        }
    }
    let mut route = |v: &Option<S<String>>, field: &str| -> Option<String> {
        let s = v.as_ref()?;
        let n = s.value.trim().to_string();
        if !names.contains_key(&n) {
            let mut known: Vec<&str> = Vec::new();
            for x in &r.receivers {
                if let Some(n) = &x.value.name {
                    if !known.contains(&n.value.trim()) {
                        known.push(n.value.trim());
                    }
                }
            }
            cx.error(
                pos(s),
                field,
                format!(
                    "no receiver is named {n:?} (receivers: {})",
                    known.join(", ")
                ),
            );
            ok = false;
            return None;
        }
        Some(n)
    };
    let critical_receiver = route(
        &r.critical_receiver,
        "monitor.alertmanager.critical_receiver",
    );
    let warning_receiver = route(&r.warning_receiver, "monitor.alertmanager.warning_receiver");
    ok.then_some(Alertmanager {
        receivers,
        critical_receiver,
        warning_receiver,
    })
}
