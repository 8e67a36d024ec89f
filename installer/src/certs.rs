//! Day 2: expiry checks and renewal of every certificate and kubeconfig clusterkit issued.
//!
//! - [`node_files`] lists what each node should hold (the same rules as
//!   [`pki::host_files`], but also for files missing locally) and [`read_node`] reads
//!   them **live**, in one SSH round trip per host: certificates whole, kubeconfigs reduced on
//!   the node to their `client-certificate(-data)` line and key files to their mode (private
//!   keys never travel). [`node_rows`] and [`local_rows`] turn that into [`ExpiryRow`]s: subject,
//!   issuing CA, serial, expiry, days left, residual lifetime fraction, key presence and mode,
//!   and whether the node's copy is the state directory's.
//! - [`renew_local`] re-issues leaf certificates and kubeconfig client certificates in the state
//!   directory with new keys and serials, signed by the existing CAs ([`crate::pki`]'s issuer),
//!   and rewrites the operator's `admin.conf` next to cluster.yaml when `admin.conf` is renewed.
//!   [`sync_node`] uploads to a node only the files whose checksum or mode differ, and
//!   [`units_for`] / [`restart_unit`] say and do what must restart; [`distribute`] does that on
//!   every node: uploads in parallel, etcd members one at a time with the whole cluster
//!   checked healthy before and after each, then the other components, nodes in parallel
//!   (kube-apiserver first, waited for until `/readyz` answers 200, then its clients).
//!
//! Limits: the CAs are never renewed (rotating a CA means re-trusting it everywhere: not
//! supported; a CA is re-created only by the pki phase when it is missing or expired, and that
//! re-issues everything). The service-account key pair is not a certificate and is left alone.
//! Kubelets rotate their own client certificate (`rotateCertificates: true`, through CSRs), so
//! `kubelet.conf` is left out of `--all`, like kubeadm does; it can still be renewed by name.
//! Control-plane components are restarted through systemd (systemd mode); in static-pod mode
//! their containers are stopped with crictl and the kubelet starts them again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clusterkit_core::config::{Cluster, Host, Role};
use clusterkit_core::exec::ssh::shell_quote;
use clusterkit_core::exec::{Command, ExecError, Executor, UploadOptions};
use clusterkit_core::fanout::{Fanout, HostResult};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use clusterkit_core::layout::{operator_admin_conf, NodeLayout, StateLayout};

use crate::kubeconfig::{self, Kubeconfig, KubeconfigError, KubeconfigSpec, UserEntry};
use crate::pki::{
    self, monitoring, CaName, CertSpec, FileMapping, LoadedCa, MonitoringInput, PkiError, PkiInput,
    Usage,
};

/// Errors of `certs check-expiration`, `renew` and `distribute`. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// From the PKI (loading a CA, issuing, writing files).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// From building or reading a kubeconfig.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// Reaching a host failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A name given to `renew` is not a certificate clusterkit issues.
    #[error("unknown certificate {name:?}; renewable: {known}")]
    UnknownName {
        /// The name given.
        name: String,
        /// Every renewable name, comma-separated.
        known: String,
    },
    /// `renew` without names and without `--all`.
    #[error("nothing to renew: name certificates (see `certs check-expiration`) or pass --all")]
    NothingSelected,
    /// The node's answer to the read command was not what it prints.
    #[error("{host}: unexpected output reading certificates: {message}")]
    Protocol {
        /// The host.
        host: String,
        /// What was wrong.
        message: String,
    },
    /// A component did not come back after its restart.
    #[error("{host}: {unit} is not running after the restart: {message}")]
    Restart {
        /// The host.
        host: String,
        /// The systemd unit (or static pod).
        unit: String,
        /// What systemd or the health check said.
        message: String,
    },
    /// etcd was not healthy (before a rolling restart, or after one member's restart).
    #[error("etcd {when}: {message}")]
    EtcdHealth {
        /// `before restarting node1`, `after restarting node1`.
        when: String,
        /// The health check's findings.
        message: String,
    },
}

/// How a node file holds its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A PEM certificate file (`.crt`).
    Cert,
    /// A kubeconfig with an embedded client certificate (or a path to one).
    Kubeconfig,
    /// A PEM file holding a certificate and its key (the kubelet's rotated client pair): only
    /// the certificate block is read.
    CertAndKey,
}

/// A file a node should (or may) hold, as `check-expiration` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFile {
    /// kubeadm's name (`apiserver`, `etcd-server`, `admin.conf`…).
    pub name: String,
    /// Its path on the node.
    pub remote: String,
    /// How the certificate is stored.
    pub kind: FileKind,
    /// The private key next to it on the node (`.key`), checked for presence and mode 0600.
    pub key: Option<String>,
    /// The state directory's copy, when clusterkit issues it.
    pub local: Option<PathBuf>,
    /// Present only on some nodes (kube-proxy before the addons phase, rotated kubelet
    /// certificates): no row when absent.
    pub optional: bool,
}

/// Every certificate file `host` should hold, in a stable order. The rules are those of
/// [`pki::host_files`], applied whether or not the state directory has the file, so a
/// file missing everywhere still shows as missing.
pub fn node_files(cluster: &Cluster, layout: &StateLayout, host: &Host) -> Vec<NodeFile> {
    let node = NodeLayout::from_cluster(cluster);
    let cp = host.has_role(Role::ControlPlane);
    let etcd = host.has_role(Role::Etcd);
    let pki = layout.pki_dir();
    let host_dir = layout.host_dir(&host.name);
    let mut out = Vec::new();
    let mut cert = |name: &str, rel: &str, local_root: &Path, key: bool| {
        out.push(NodeFile {
            name: name.to_string(),
            remote: node.pki(&format!("{rel}.crt")),
            kind: FileKind::Cert,
            key: key.then(|| node.pki(&format!("{rel}.key"))),
            local: Some(local_root.join(format!("{rel}.crt"))),
            optional: false,
        })
    };
    if cp {
        for (name, rel) in [
            ("ca", "ca"),
            ("apiserver", "apiserver"),
            ("apiserver-kubelet-client", "apiserver-kubelet-client"),
            ("front-proxy-ca", "front-proxy-ca"),
            ("front-proxy-client", "front-proxy-client"),
            ("apiserver-etcd-client", "apiserver-etcd-client"),
            ("etcd-ca", "etcd/ca"),
            ("etcd-healthcheck-client", "etcd/healthcheck-client"),
        ] {
            cert(name, rel, &pki, true);
        }
    } else {
        cert("ca", "ca", &pki, false);
    }
    if etcd {
        if !cp {
            cert("etcd-ca", "etcd/ca", &pki, false);
        }
        let host_pki = host_dir.join(StateLayout::PKI);
        cert("etcd-server", "etcd/server", &host_pki, true);
        cert("etcd-peer", "etcd/peer", &host_pki, true);
    }
    let mut conf = |name: &str, local: Option<PathBuf>, optional: bool| {
        out.push(NodeFile {
            name: name.to_string(),
            remote: node.kubeconfig(name),
            kind: FileKind::Kubeconfig,
            key: None,
            local,
            optional,
        })
    };
    if cp {
        conf(
            "controller-manager.conf",
            Some(host_dir.join("controller-manager.conf")),
            false,
        );
        conf(
            "scheduler.conf",
            Some(host_dir.join("scheduler.conf")),
            false,
        );
    }
    // Control-plane hosts get a kubelet.conf from clusterkit; other nodes' kubelets write
    // theirs during TLS bootstrap.
    if cp {
        conf("kubelet.conf", Some(host_dir.join("kubelet.conf")), false);
    } else {
        conf("kubelet.conf", None, true);
    }
    // The addons phase puts kube-proxy's kubeconfig on every node once it has run.
    let proxy = layout.kubeconfig_dir().join("kube-proxy.conf");
    let proxy_issued = proxy.is_file();
    conf(
        "kube-proxy.conf",
        proxy_issued.then_some(proxy),
        !proxy_issued,
    );
    let _ = cluster;
    // The monitoring stack's certificates, once the monitor has issued them.
    if pki::has_monitoring(layout) {
        for f in pki::monitoring_files(layout, &host.name) {
            let remote = f.remote.to_string_lossy().into_owned();
            let Some(base) = remote.strip_suffix(".crt") else {
                continue;
            };
            let file = base.rsplit('/').next().unwrap_or(base);
            let ca = remote.ends_with(monitoring::CA);
            out.push(NodeFile {
                name: if ca {
                    CaName::Monitoring.name().to_string()
                } else {
                    format!("monitoring-{file}")
                },
                key: (!ca).then(|| format!("{base}.key")),
                remote,
                kind: FileKind::Cert,
                local: Some(f.local),
                optional: false,
            });
        }
    }
    out.push(NodeFile {
        name: "kubelet-client-current".into(),
        remote: node.kubelet_client_pem.into(),
        kind: FileKind::CertAndKey,
        key: None,
        local: None,
        optional: true,
    });
    out
}

/// What a node has at one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteFile {
    /// Whether the file exists.
    pub present: bool,
    /// Its permission bits.
    pub mode: Option<u32>,
    /// What was read: the certificate PEM, or a kubeconfig's client-certificate line(s).
    pub data: Vec<u8>,
}

/// awk program printing a kubeconfig's `client-certificate(-data)` line and its continuation
/// lines (a YAML block or folded scalar carries the value on the next, deeper-indented lines).
/// (No single quote in it: it is passed single-quoted.)
const KUBECONFIG_CERT_AWK: &str = "/^[[:space:]]*client-certificate(-data)?:/ { p = 1; match($0, /^[[:space:]]*/); ind = RLENGTH; print; next } p { match($0, /^[[:space:]]*/); if (RLENGTH > ind && NF) { print; next } p = 0 }";

/// The one command that reads every file of `files` on a node: for each path a header line
/// `@@ <kind> <mode|-> <path>` and, for certificates and kubeconfigs, one line of base64.
pub fn read_command(files: &[NodeFile]) -> Command {
    // c: whole file; k: only the client-certificate lines of a kubeconfig; p: only the
    // certificate block of a cert+key PEM; x: mode only (private keys never leave the node).
    let script = String::from(
        "r(){ if [ -e \"$2\" ]; then printf '@@ %s %s %s\\n' \"$1\" \"$(stat -c %a \"$2\")\" \"$2\"; \
         case $1 in c) base64 -w0 <\"$2\";; \
         k) awk '{KEY_AWK}' \"$2\" | base64 -w0;; \
         p) sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' \"$2\" | base64 -w0;; \
         esac; echo; else printf '@@ %s - %s\\n' \"$1\" \"$2\"; fi; }\n",
    );
    let mut script = script.replace("{KEY_AWK}", KUBECONFIG_CERT_AWK);
    for f in files {
        let kind = match f.kind {
            FileKind::Cert => "c",
            FileKind::Kubeconfig => "k",
            FileKind::CertAndKey => "p",
        };
        script.push_str(&format!("r {kind} {}\n", shell_quote(&f.remote)));
        if let Some(key) = &f.key {
            script.push_str(&format!("r x {}\n", shell_quote(key)));
        }
    }
    Command::new(script)
}

/// Parses the output of [`read_command`] into path → file.
pub fn parse_read_output(
    host: &str,
    text: &str,
) -> Result<BTreeMap<String, RemoteFile>, CertsError> {
    let bad = |message: String| CertsError::Protocol {
        host: host.to_string(),
        message,
    };
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("@@ ") else {
            return Err(bad(format!(
                "expected a header line, got {:?}",
                truncate(line)
            )));
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(kind), Some(mode), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!("bad header {:?}", truncate(line))));
        };
        let mut file = RemoteFile::default();
        if mode != "-" {
            file.present = true;
            file.mode = Some(
                u32::from_str_radix(mode, 8).map_err(|_| bad(format!("bad mode in {line:?}")))?,
            );
            let body = lines
                .next()
                .ok_or_else(|| bad(format!("no content line after {line:?}")))?;
            if kind != "x" {
                file.data = B64
                    .decode(body.trim())
                    .map_err(|e| bad(format!("{path}: bad base64: {e}")))?;
            }
        }
        out.insert(path.to_string(), file);
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads `files` on a node in one round trip.
pub async fn read_node(
    exec: &dyn Executor,
    files: &[NodeFile],
) -> Result<BTreeMap<String, RemoteFile>, CertsError> {
    let out = exec.run_checked(&read_command(files)).await?;
    parse_read_output(exec.host(), &out.stdout_str())
}

/// The facts of one certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct CertInfo {
    /// Subject CN.
    pub subject: String,
    /// Issuer CN.
    pub issuer: String,
    /// Serial, uppercase hex (as `openssl x509 -serial` prints it).
    pub serial: String,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// A CA certificate.
    pub is_ca: bool,
    /// The DER, to compare copies.
    pub der: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a readable certificate: {e}"))?;
        let cn = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Ok(Self {
            subject: cn(cert.subject()),
            issuer: cn(cert.issuer()),
            serial: hex::encode_upper(trim_serial(cert.raw_serial())),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            der: der.to_vec(),
        })
    }

    /// Parses the first certificate of a PEM text.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem_text).map_err(|_| "not text".to_string())?;
        Self::from_der(&pki::pem_to_der(text)?)
    }

    /// Whole days until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now.unix_timestamp()).div_euclid(86_400)
    }

    /// The fraction of the lifetime still ahead, 0..=1.
    pub fn residual(&self, now: OffsetDateTime) -> f64 {
        let total = (self.not_after - self.not_before).max(1) as f64;
        ((self.not_after - now.unix_timestamp()) as f64 / total).clamp(0.0, 1.0)
    }
}

/// Serials are DER integers: a leading zero byte only keeps them positive.
fn trim_serial(raw: &[u8]) -> &[u8] {
    match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => raw,
    }
}

/// kubeadm's name of the CA that issued a certificate, from the issuer CN.
pub fn ca_name(info: &CertInfo) -> String {
    if info.is_ca && info.issuer == info.subject {
        return "-".into();
    }
    for ca in CaName::EVERY {
        if info.issuer == ca.common_name() {
            return ca.name().into();
        }
    }
    info.issuer.clone()
}

/// The state of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Present, readable, valid, key in place, same as the state directory's copy.
    Ok,
    /// Should be there and is not.
    Missing,
    /// Present but unreadable (or a kubeconfig without a client certificate).
    Invalid,
    /// Past its end of validity.
    Expired,
    /// Its private key is missing.
    KeyMissing,
    /// Its private key is readable by others than its owner.
    KeyMode,
    /// Differs from the state directory's copy (renewed but not distributed, or replaced on
    /// the node).
    Stale,
}

impl Status {
    /// The word shown in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Invalid => "invalid",
            Status::Expired => "expired",
            Status::KeyMissing => "key-missing",
            Status::KeyMode => "key-mode",
            Status::Stale => "stale",
        }
    }
}

/// One certificate (or kubeconfig) on one host, as `check-expiration` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ExpiryRow {
    /// The node, or `local` for the state directory.
    pub host: String,
    /// kubeadm's name.
    pub name: String,
    /// The file.
    pub path: String,
    /// Overall verdict.
    pub status: Status,
    /// Subject CN.
    pub subject: Option<String>,
    /// kubeadm's name of the issuing CA (`-` for a CA itself).
    pub ca: Option<String>,
    /// Serial, uppercase hex.
    pub serial: Option<String>,
    /// End of validity, RFC 3339 UTC.
    pub expires: Option<String>,
    /// Whole days left (negative once expired).
    pub days_left: Option<i64>,
    /// Fraction of the lifetime left, 0..=1.
    pub residual: Option<f64>,
    /// Lifetime in days (not_after − not_before).
    pub validity_days: Option<i64>,
    /// Whether the node's copy equals the state directory's (nodes only).
    pub in_sync: Option<bool>,
    /// More detail (why invalid, where a referenced certificate is).
    pub note: Option<String>,
}

impl ExpiryRow {
    fn bare(host: &str, name: &str, path: &str, status: Status) -> Self {
        Self {
            host: host.into(),
            name: name.into(),
            path: path.into(),
            status,
            subject: None,
            ca: None,
            serial: None,
            expires: None,
            days_left: None,
            residual: None,
            validity_days: None,
            in_sync: None,
            note: None,
        }
    }

    fn with_cert(mut self, info: &CertInfo, now: OffsetDateTime) -> Self {
        self.subject = Some(info.subject.clone());
        self.ca = Some(ca_name(info));
        self.serial = Some(info.serial.clone());
        self.expires = chrono::DateTime::from_timestamp(info.not_after, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        self.days_left = Some(info.days_left(now));
        self.residual = Some((info.residual(now) * 1000.0).round() / 1000.0);
        self.validity_days = Some((info.not_after - info.not_before + 43_200).div_euclid(86_400));
        if info.not_after <= now.unix_timestamp() {
            self.status = Status::Expired;
        }
        self
    }

    /// Whether this row fails a `--fail-within DAYS` check: anything not ok but "stale", or
    /// expiring within `days`.
    pub fn fails_within(&self, days: i64) -> bool {
        !matches!(self.status, Status::Ok | Status::Stale)
            || self.days_left.is_some_and(|d| d < days)
    }
}

/// The client certificate of a kubeconfig's client-certificate line(s): `Ok(Some)` for
/// embedded data, `Ok(None)` with a note for a file reference.
fn kubeconfig_client_cert(lines: &[u8]) -> Result<Result<CertInfo, String>, String> {
    let text = String::from_utf8_lossy(lines);
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        // The value may be inline, or (block/folded scalar) on the following deeper lines.
        let mut value = value.trim().to_string();
        if value.is_empty() || value.starts_with('>') || value.starts_with('|') {
            value.clear();
            while let Some(next) = lines.peek() {
                if next.trim_start().starts_with("client-certificate") {
                    break;
                }
                value.push_str(next.trim());
                lines.next();
            }
        }
        let value: String = value
            .trim_matches(|c| c == '"' || c == '\'')
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        match key.trim() {
            "client-certificate-data" => {
                let pem = B64
                    .decode(&value)
                    .map_err(|_| "client-certificate-data is not base64".to_string())?;
                return Ok(CertInfo::from_pem(&pem));
            }
            "client-certificate" => return Ok(Err(format!("client certificate in {value}"))),
            _ => {}
        }
    }
    Err("no client certificate".into())
}

/// The certificate of the state directory's copy of `file`, if any.
fn local_cert(file: &NodeFile) -> Option<CertInfo> {
    let path = file.local.as_ref()?;
    match file.kind {
        FileKind::Kubeconfig => {
            let k = Kubeconfig::load(path).ok()?;
            CertInfo::from_pem(k.client_cert_pem()?.as_bytes()).ok()
        }
        _ => CertInfo::from_pem(&std::fs::read(path).ok()?).ok(),
    }
}

/// The rows of one node from what [`read_node`] returned.
pub fn node_rows(
    host: &str,
    files: &[NodeFile],
    remote: &BTreeMap<String, RemoteFile>,
    now: OffsetDateTime,
) -> Vec<ExpiryRow> {
    let mut rows = Vec::new();
    for f in files {
        let got = remote.get(&f.remote).cloned().unwrap_or_default();
        if !got.present {
            if !f.optional {
                rows.push(ExpiryRow::bare(host, &f.name, &f.remote, Status::Missing));
            }
            continue;
        }
        let parsed = match f.kind {
            FileKind::Cert | FileKind::CertAndKey => Ok(CertInfo::from_pem(&got.data)),
            FileKind::Kubeconfig => kubeconfig_client_cert(&got.data),
        };
        let mut row = ExpiryRow::bare(host, &f.name, &f.remote, Status::Ok);
        let info = match parsed {
            Ok(Ok(info)) => info,
            Ok(Err(note))
                if f.kind == FileKind::Kubeconfig && note.starts_with("client certificate in") =>
            {
                // The kubelet's own rotated pair: reported on its own row.
                row.note = Some(note);
                rows.push(row);
                continue;
            }
            Ok(Err(note)) | Err(note) => {
                row.status = Status::Invalid;
                row.note = Some(note);
                rows.push(row);
                continue;
            }
        };
        row = row.with_cert(&info, now);
        if row.status == Status::Ok {
            if let Some(key) = &f.key {
                match remote.get(key) {
                    Some(k) if k.present && k.mode.is_some_and(|m| m & 0o077 != 0) => {
                        row.status = Status::KeyMode;
                        row.note = Some(format!("{key} has mode {:o}", k.mode.unwrap_or(0)));
                    }
                    Some(k) if k.present => {}
                    _ => {
                        row.status = Status::KeyMissing;
                        row.note = Some(format!("{key} missing"));
                    }
                }
            }
        }
        if let Some(local) = local_cert(f) {
            let same = local.der == info.der;
            row.in_sync = Some(same);
            if !same && row.status == Status::Ok {
                row.status = Status::Stale;
                row.note = Some(format!(
                    "the state directory has serial {} (run `certs distribute`)",
                    local.serial
                ));
            }
        }
        rows.push(row);
    }
    rows
}

/// The rows of the state directory: the CAs, every leaf of [`pki::cert_specs`], every
/// kubeconfig of [`kubeconfig::kubeconfig_specs`], kube-proxy's, and the operator's admin.conf.
pub fn local_rows(
    cluster: &Cluster,
    input: &PkiInput,
    layout: &StateLayout,
    now: OffsetDateTime,
) -> Result<Vec<ExpiryRow>, CertsError> {
    let mut rows = Vec::new();
    let mut cert_row = |name: &str, path: &Path, key: Option<PathBuf>| {
        let shown = path.display().to_string();
        let row = match std::fs::read(path) {
            Err(_) => ExpiryRow::bare("local", name, &shown, Status::Missing),
            Ok(data) => match CertInfo::from_pem(&data) {
                Err(e) => {
                    let mut r = ExpiryRow::bare("local", name, &shown, Status::Invalid);
                    r.note = Some(e);
                    r
                }
                Ok(info) => {
                    let mut r =
                        ExpiryRow::bare("local", name, &shown, Status::Ok).with_cert(&info, now);
                    if let (Some(key), Status::Ok) = (key, r.status) {
                        match mode_of(&key) {
                            None => {
                                r.status = Status::KeyMissing;
                                r.note = Some(format!("{} missing", key.display()));
                            }
                            Some(m) if m & 0o077 != 0 => {
                                r.status = Status::KeyMode;
                                r.note = Some(format!("{} has mode {m:o}", key.display()));
                            }
                            Some(_) => {}
                        }
                    }
                    r
                }
            },
        };
        rows.push(row);
    };
    for ca in CaName::ALL {
        let base = layout.pki_dir().join(ca.base());
        cert_row(
            ca.name(),
            &base.with_extension("crt"),
            Some(base.with_extension("key")),
        );
    }
    for spec in pki::cert_specs(input) {
        cert_row(
            &spec.name,
            &spec.cert_path(layout),
            Some(spec.key_path(layout)),
        );
    }
    if pki::has_monitoring(layout) {
        let base = layout.pki_dir().join(CaName::Monitoring.base());
        cert_row(
            CaName::Monitoring.name(),
            &base.with_extension("crt"),
            Some(base.with_extension("key")),
        );
        for spec in pki::monitoring_cert_specs(&MonitoringInput::from_cluster(cluster)) {
            cert_row(
                &spec.name,
                &spec.cert_path(layout),
                Some(spec.key_path(layout)),
            );
        }
    }
    let mut confs: Vec<(String, PathBuf)> = kubeconfig::kubeconfig_specs(input)
        .into_iter()
        .map(|s| (s.name, layout.root.join(s.path)))
        .collect();
    let proxy = layout.kubeconfig_dir().join("kube-proxy.conf");
    if proxy.is_file() {
        confs.push(("kube-proxy.conf".into(), proxy));
    }
    let operator = operator_admin_conf(cluster);
    if operator.is_file() {
        confs.push(("admin.conf (operator copy)".into(), operator));
    }
    for (name, path) in confs {
        let shown = path.display().to_string();
        let row = if !path.exists() {
            ExpiryRow::bare("local", &name, &shown, Status::Missing)
        } else {
            let cert = Kubeconfig::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|k| {
                    k.client_cert_pem()
                        .ok_or_else(|| "no client certificate".to_string())
                })
                .and_then(|pem| CertInfo::from_pem(pem.as_bytes()));
            match cert {
                Ok(info) => {
                    let mut r =
                        ExpiryRow::bare("local", &name, &shown, Status::Ok).with_cert(&info, now);
                    if r.status == Status::Ok && mode_of(&path).is_some_and(|m| m & 0o077 != 0) {
                        r.status = Status::KeyMode;
                        r.note = Some("kubeconfig readable by others (holds a key)".into());
                    }
                    r
                }
                Err(e) => {
                    let mut r = ExpiryRow::bare("local", &name, &shown, Status::Invalid);
                    r.note = Some(e);
                    r
                }
            }
        };
        rows.push(row);
    }
    Ok(rows)
}

fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// The current time, for the functions that take one.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The PKI input clusterkit uses for a cluster (the pki phase's: kubelet credentials for the
/// control-plane hosts).
pub fn pki_input(cluster: &Cluster) -> PkiInput {
    let mut input = PkiInput::from_cluster(cluster);
    input.kubelet_nodes = input.control_plane.clone();
    input
}

/// The table `check-expiration` prints (kubeadm's columns, one line per host and file).
pub fn expiry_table(rows: &[ExpiryRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            vec![
                r.host.clone(),
                r.name.clone(),
                opt(&r.subject),
                r.expires.clone().unwrap_or_else(|| "-".into()),
                r.days_left
                    .map(|d| format!("{d}d"))
                    .unwrap_or_else(|| "-".into()),
                r.residual
                    .map(|f| format!("{:.0}%", f * 100.0))
                    .unwrap_or_else(|| "-".into()),
                opt(&r.ca),
                r.status.as_str().to_string(),
                opt(&r.note),
            ]
        })
        .collect();
    clusterkit_core::fanout::table(
        &[
            "HOST", "NAME", "SUBJECT", "EXPIRES", "LEFT", "RESIDUAL", "CA", "STATUS", "NOTE",
        ],
        &cells,
    )
}

// ---------------------------------------------------------------------------------------
// Renewal

/// Something `renew` can re-issue.
#[derive(Clone, Debug)]
pub enum Renewable {
    /// A leaf certificate of [`pki::cert_specs`].
    Cert(CertSpec),
    /// A kubeconfig of [`kubeconfig::kubeconfig_specs`].
    Kubeconfig(KubeconfigSpec),
    /// kube-proxy's kubeconfig (written by the addons phase): renewed with the identity and
    /// server it already has.
    ExistingKubeconfig {
        /// Its name.
        name: String,
        /// Path relative to the state directory.
        path: PathBuf,
    },
}

impl Renewable {
    /// Its name (what `renew NAME` takes).
    pub fn name(&self) -> &str {
        match self {
            Renewable::Cert(s) => &s.name,
            Renewable::Kubeconfig(s) => &s.name,
            Renewable::ExistingKubeconfig { name, .. } => name,
        }
    }

    /// Its file relative to the state directory (the `.crt` for certificates).
    pub fn rel_path(&self) -> PathBuf {
        match self {
            Renewable::Cert(s) => s.base.with_extension("crt"),
            Renewable::Kubeconfig(s) => s.path.clone(),
            Renewable::ExistingKubeconfig { path, .. } => path.clone(),
        }
    }

    /// Whether `--all` includes it (not the kubelets' own credentials: they rotate).
    pub fn in_all(&self) -> bool {
        !self.name().starts_with("kubelet.conf")
    }
}

/// Every renewable certificate of the cluster, in issue order; the monitoring certificates
/// when `monitoring` is given and the monitoring CA exists.
pub fn renewables(
    input: &PkiInput,
    layout: &StateLayout,
    monitoring: Option<&MonitoringInput>,
) -> Result<Vec<Renewable>, CertsError> {
    let mut out: Vec<Renewable> = pki::cert_specs(input)
        .into_iter()
        .map(Renewable::Cert)
        .collect();
    if let Some(m) = monitoring.filter(|_| pki::has_monitoring(layout)) {
        out.extend(
            pki::monitoring_cert_specs(m)
                .into_iter()
                .map(Renewable::Cert),
        );
    }
    out.extend(
        kubeconfig::kubeconfig_specs(input)
            .into_iter()
            .map(Renewable::Kubeconfig),
    );
    if layout.kubeconfig_dir().join("kube-proxy.conf").is_file() {
        out.push(Renewable::ExistingKubeconfig {
            name: "kube-proxy.conf".into(),
            path: Path::new(StateLayout::KUBECONFIG).join("kube-proxy.conf"),
        });
    }
    Ok(out)
}

/// Picks what to renew: `--all`, or names; a name matches exactly or as a group
/// (`etcd-server` is every `etcd-server/<member>`). CA names are refused: CA rotation is not
/// supported.
pub fn select(
    all: &[Renewable],
    every: bool,
    names: &[String],
) -> Result<Vec<Renewable>, CertsError> {
    if every {
        return Ok(all.iter().filter(|r| r.in_all()).cloned().collect());
    }
    if names.is_empty() {
        return Err(CertsError::NothingSelected);
    }
    let known = || {
        all.iter()
            .map(|r| r.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut picked: Vec<Renewable> = Vec::new();
    for name in names {
        if CaName::EVERY.iter().any(|ca| ca.name() == name) {
            return Err(CertsError::UnknownName {
                name: format!("{name} (a CA: CA rotation is not supported)"),
                known: known(),
            });
        }
        let group = format!("{name}/");
        let matched: Vec<&Renewable> = all
            .iter()
            .filter(|r| r.name() == name || r.name().starts_with(&group))
            .collect();
        if matched.is_empty() {
            return Err(CertsError::UnknownName {
                name: name.clone(),
                known: known(),
            });
        }
        for m in matched {
            if !picked.iter().any(|p| p.name() == m.name()) {
                picked.push(m.clone());
            }
        }
    }
    Ok(picked)
}

/// One re-issued certificate.
#[derive(Clone, Debug, Serialize)]
pub struct Renewed {
    /// Its name.
    pub name: String,
    /// The file in the state directory.
    pub path: PathBuf,
    /// The serial it had (none if it did not exist or was unreadable).
    pub old_serial: Option<String>,
    /// The new serial.
    pub new_serial: String,
    /// The new end of validity, RFC 3339.
    pub expires: String,
    /// Every file written in the state directory (certificate and key, or the kubeconfig).
    pub files: Vec<PathBuf>,
}

fn serial_of_file(path: &Path, kubeconfig: bool) -> Option<String> {
    let info = if kubeconfig {
        let k = Kubeconfig::load(path).ok()?;
        CertInfo::from_pem(k.client_cert_pem()?.as_bytes()).ok()?
    } else {
        CertInfo::from_pem(&std::fs::read(path).ok()?).ok()?
    };
    Some(info.serial)
}

/// The subject (CN, O) of a kubeconfig's client certificate.
fn kubeconfig_identity(k: &Kubeconfig) -> Option<(String, Vec<String>)> {
    let pem = k.client_cert_pem()?;
    let der = pki::pem_to_der(&pem).ok()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let orgs = cert
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(String::from))
        .collect();
    Some((cn, orgs))
}

fn write_kubeconfig(
    path: &Path,
    cluster_name: &str,
    server: &str,
    user: &str,
    ca: &LoadedCa,
    cert_pem: String,
    key_pem: String,
) -> Result<(), CertsError> {
    let config = Kubeconfig::new(
        cluster_name,
        server,
        &ca.cert_pem,
        user,
        UserEntry {
            client_certificate_data: Some(B64.encode(cert_pem)),
            client_key_data: Some(B64.encode(key_pem)),
            token: None,
        },
    );
    pki::write_file(path, config.to_yaml()?.as_bytes(), 0o600)?;
    Ok(())
}

/// The CA `name`, loaded once per renewal.
fn ca_for<'c>(
    cas: &'c mut BTreeMap<&'static str, LoadedCa>,
    layout: &StateLayout,
    name: CaName,
) -> Result<&'c LoadedCa, CertsError> {
    if !cas.contains_key(name.name()) {
        cas.insert(name.name(), LoadedCa::load(layout, name)?);
    }
    Ok(&cas[name.name()])
}

/// Re-issues `items` in the state directory: a new key and serial each, the current lifetime
/// from `input.validity.leaf`, signed by the existing CA (never re-created here). A renewed
/// `admin.conf` is also copied next to cluster.yaml. Writes go through temporary files.
pub fn renew_local(
    cluster: &Cluster,
    input: &PkiInput,
    layout: &StateLayout,
    items: &[Renewable],
    now: OffsetDateTime,
) -> Result<Vec<Renewed>, CertsError> {
    let mut cas: BTreeMap<&'static str, LoadedCa> = BTreeMap::new();
    let lifetime = input.validity.leaf;
    let mut out = Vec::new();
    for item in items {
        let path = layout.root.join(item.rel_path());
        let is_conf = !matches!(item, Renewable::Cert(_));
        let mut files = vec![path.clone()];
        if let Renewable::Cert(spec) = item {
            files.push(spec.key_path(layout));
        }
        let old_serial = serial_of_file(&path, is_conf);
        let cert_pem = match item {
            Renewable::Cert(spec) => {
                let ca = ca_for(&mut cas, layout, spec.ca)?;
                let (cert_pem, key_pem) = pki::issue_leaf(spec, ca, now, lifetime)?;
                // Key first: a crash in between leaves a pair the pki phase sees as mismatched
                // and re-issues, never a certificate without its key.
                pki::write_file(&spec.key_path(layout), key_pem.as_bytes(), 0o600)?;
                pki::write_file(&spec.cert_path(layout), cert_pem.as_bytes(), 0o644)?;
                cert_pem
            }
            Renewable::Kubeconfig(spec) => {
                let ca = ca_for(&mut cas, layout, CaName::Kubernetes)?;
                let cert_spec = CertSpec {
                    name: spec.name.clone(),
                    base: spec.path.clone(),
                    ca: CaName::Kubernetes,
                    common_name: spec.user.clone(),
                    organization: spec.groups.clone(),
                    usages: vec![Usage::ClientAuth],
                    dns_names: vec![],
                    ips: vec![],
                };
                let (cert_pem, key_pem) = pki::issue_leaf(&cert_spec, ca, now, lifetime)?;
                write_kubeconfig(
                    &path,
                    &input.cluster_name,
                    &spec.server,
                    &spec.user,
                    ca,
                    cert_pem.clone(),
                    key_pem,
                )?;
                cert_pem
            }
            Renewable::ExistingKubeconfig { name, .. } => {
                let existing = Kubeconfig::load(&path)?;
                let (cn, orgs) = kubeconfig_identity(&existing).ok_or_else(|| PkiError::Load {
                    path: path.clone(),
                    message: "no readable client certificate to renew".into(),
                })?;
                let server = existing.server().unwrap_or_default().to_string();
                let user = existing
                    .users
                    .first()
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| cn.clone());
                let ca = ca_for(&mut cas, layout, CaName::Kubernetes)?;
                let cert_spec = CertSpec {
                    name: name.clone(),
                    base: item.rel_path(),
                    ca: CaName::Kubernetes,
                    common_name: cn,
                    organization: orgs,
                    usages: vec![Usage::ClientAuth],
                    dns_names: vec![],
                    ips: vec![],
                };
                let (cert_pem, key_pem) = pki::issue_leaf(&cert_spec, ca, now, lifetime)?;
                write_kubeconfig(
                    &path,
                    &input.cluster_name,
                    &server,
                    &user,
                    ca,
                    cert_pem.clone(),
                    key_pem,
                )?;
                cert_pem
            }
        };
        if item.name() == "admin.conf" {
            let data = std::fs::read(&path).map_err(|source| PkiError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            pki::write_file(&operator_admin_conf(cluster), &data, 0o600)?;
        }
        let info = CertInfo::from_pem(cert_pem.as_bytes()).map_err(|message| PkiError::Load {
            path: path.clone(),
            message,
        })?;
        tracing::info!(name = item.name(), serial = %info.serial, "renewed");
        out.push(Renewed {
            name: item.name().to_string(),
            path,
            old_serial,
            new_serial: info.serial,
            expires: chrono::DateTime::from_timestamp(info.not_after, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            files,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Distribution and restarts

/// The files a node gets from the state directory: [`pki::host_files`], plus kube-proxy's
/// kubeconfig once the addons phase has issued it, plus the monitoring files
/// ([`pki::monitoring_files`]).
pub fn node_mappings(layout: &StateLayout, host: &Host) -> Vec<FileMapping> {
    let mut files = pki::host_files(
        layout,
        &host.name,
        host.has_role(Role::ControlPlane),
        host.has_role(Role::Etcd),
    );
    let proxy = layout.kubeconfig_dir().join("kube-proxy.conf");
    if proxy.is_file() {
        files.push(FileMapping {
            local: proxy,
            remote: NodeLayout::DEFAULT.kubeconfig("kube-proxy.conf").into(),
            mode: 0o600,
            owner: None,
        });
    }
    files.extend(pki::monitoring_files(layout, &host.name));
    files
}

/// Brings a node's copies of `files` in line with the state directory: one command reads
/// every checksum and mode, then only the files that differ are uploaded (atomically, with
/// their mode: 0600 for keys and kubeconfigs). Returns the remote paths uploaded.
pub async fn sync_node(
    exec: &dyn Executor,
    files: &[FileMapping],
) -> Result<Vec<String>, CertsError> {
    if files.is_empty() {
        return Ok(vec![]);
    }
    let mut script = String::from("for f in");
    for f in files {
        script.push(' ');
        script.push_str(&shell_quote(&f.remote.to_string_lossy()));
    }
    script.push_str(
        "; do if [ -e \"$f\" ]; then printf '%s %s %s\\n' \"$(sha256sum <\"$f\" | cut -d' ' -f1)\" \"$(stat -c %a \"$f\")\" \"$f\"; fi; done",
    );
    let out = exec.run_checked(&Command::new(script)).await?;
    let mut have: BTreeMap<String, (String, u32)> = BTreeMap::new();
    for line in out.stdout_str().lines() {
        let mut p = line.splitn(3, ' ');
        if let (Some(sum), Some(mode), Some(path)) = (p.next(), p.next(), p.next()) {
            have.insert(
                path.to_string(),
                (sum.to_string(), u32::from_str_radix(mode, 8).unwrap_or(0)),
            );
        }
    }
    let mut changed = Vec::new();
    for f in files {
        let data = std::fs::read(&f.local).map_err(|source| PkiError::Io {
            op: "read",
            path: f.local.clone(),
            source,
        })?;
        let sum = hex::encode(Sha256::digest(&data));
        let remote = f.remote.to_string_lossy().to_string();
        if have.get(&remote) == Some(&(sum, f.mode)) {
            continue;
        }
        exec.upload(
            &data,
            &remote,
            &UploadOptions {
                mode: f.mode,
                owner: f.owner.map(String::from),
                create_parents: true,
            },
        )
        .await?;
        changed.push(remote);
    }
    Ok(changed)
}

/// The units that must restart after `changed` (remote paths) were replaced on a node.
/// Clients the operator or the monitor use (healthcheck, metrics) restart nothing.
pub fn units_for(changed: &[String]) -> BTreeSet<&'static str> {
    let node = NodeLayout::DEFAULT;
    let u = node.units;
    let mut units = BTreeSet::new();
    for path in changed {
        let p = path.as_str();
        let file = p.rsplit('/').next().unwrap_or(p);
        if let Some(rel) = p
            .strip_prefix(monitoring::DIR)
            .and_then(|r| r.strip_prefix('/'))
        {
            units.extend(monitoring::units_reading(rel));
            continue;
        }
        if p.strip_prefix(node.etcd_pki_dir)
            .is_some_and(|r| r.starts_with('/'))
        {
            if ["server.crt", "server.key", "peer.crt", "peer.key", "ca.crt"].contains(&file) {
                units.insert(u.etcd);
            }
            if file == "ca.crt" {
                units.insert(u.kube_apiserver);
            }
            continue;
        }
        match file {
            // Also the controller manager's and scheduler's serving certificate.
            "apiserver.crt" | "apiserver.key" => {
                units.insert(u.kube_apiserver);
                units.insert(u.kube_controller_manager);
                units.insert(u.kube_scheduler);
            }
            "apiserver-kubelet-client.crt"
            | "apiserver-kubelet-client.key"
            | "front-proxy-client.crt"
            | "front-proxy-client.key"
            | "front-proxy-ca.crt"
            | "apiserver-etcd-client.crt"
            | "apiserver-etcd-client.key"
            | "sa.pub" => {
                units.insert(u.kube_apiserver);
            }
            "ca.crt" => {
                units.insert(u.kube_apiserver);
                units.insert(u.kube_controller_manager);
                units.insert(u.kubelet);
            }
            "ca.key" | "sa.key" => {
                units.insert(u.kube_controller_manager);
            }
            "controller-manager.conf" => {
                units.insert(u.kube_controller_manager);
            }
            "scheduler.conf" => {
                units.insert(u.kube_scheduler);
            }
            "kubelet.conf" => {
                units.insert(u.kubelet);
            }
            "kube-proxy.conf" => {
                units.insert(u.kube_proxy);
            }
            _ => {}
        }
    }
    units
}

/// What [`restart_unit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restarted {
    /// The systemd unit was running and was restarted.
    Unit,
    /// The static pod's containers were stopped; the kubelet starts them again.
    StaticPod,
    /// Installed but not running: left stopped (it reads the new files when started).
    Inactive,
    /// Not on this node.
    Absent,
}

/// Restarts `unit` on a node if it runs there: a running systemd unit is restarted and must
/// be active a few seconds later; a static pod (no unit, a manifest, crictl present) has its
/// containers stopped so the kubelet recreates them.
pub async fn restart_unit(
    exec: &dyn Executor,
    unit: &str,
    timeout: Duration,
) -> Result<Restarted, CertsError> {
    let u = shell_quote(unit);
    let manifest = shell_quote(&NodeLayout::DEFAULT.manifest(unit));
    let script = format!(
        "if systemctl cat {u}.service >/dev/null 2>&1; then \
           if systemctl is-active -q {u}; then systemctl restart {u} || exit 1; sleep 2; \
             if systemctl is-active -q {u}; then echo unit; else systemctl status --no-pager -n 5 {u} >&2; exit 1; fi; \
           else echo inactive; fi; \
         elif [ -f {manifest} ] && command -v crictl >/dev/null 2>&1; then \
           ids=$(crictl ps -q --name '^{unit}$'); if [ -n \"$ids\" ]; then crictl stop $ids >/dev/null && echo static-pod; else echo inactive; fi; \
         else echo absent; fi"
    );
    let out = exec.run(&Command::new(script).timeout(timeout)).await?;
    if !out.success() {
        return Err(CertsError::Restart {
            host: exec.host().to_string(),
            unit: unit.to_string(),
            message: clusterkit_core::exec::tail(&out.stderr_str()).to_string(),
        });
    }
    Ok(match out.stdout_str().trim() {
        "unit" => Restarted::Unit,
        "static-pod" => Restarted::StaticPod,
        "inactive" => Restarted::Inactive,
        _ => Restarted::Absent,
    })
}

/// How long a restarted kube-apiserver may take to answer `/readyz` with 200.
pub const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Waits on the node until its kube-apiserver answers `/readyz` with 200 (anonymous, as
/// kubeadm's probes do), asked with `openssl s_client` (nodes need no curl); without openssl
/// it only checks that the unit stays active.
pub async fn wait_apiserver_ready(
    exec: &dyn Executor,
    timeout: Duration,
) -> Result<(), CertsError> {
    let secs = timeout.as_secs().max(1);
    let node = NodeLayout::DEFAULT;
    let (unit, port) = (node.units.kube_apiserver, node.ports.apiserver);
    let script = format!(
        "command -v openssl >/dev/null 2>&1 || {{ sleep 5; systemctl is-active -q {unit}; exit; }}; \
         i=0; while [ $i -lt {secs} ]; do \
           if printf 'GET /readyz HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -quiet -connect 127.0.0.1:{port} 2>/dev/null | head -n 1 | grep -q ' 200 '; then exit 0; fi; \
           sleep 2; i=$((i+2)); done; echo 'no 200 from /readyz' >&2; exit 1"
    );
    let out = exec
        .run(&Command::new(script).timeout(timeout + Duration::from_secs(30)))
        .await?;
    if out.success() {
        Ok(())
    } else {
        Err(CertsError::Restart {
            host: exec.host().to_string(),
            unit: unit.into(),
            message: format!(
                "not ready after {secs}s: {}",
                clusterkit_core::exec::tail(&out.stderr_str())
            ),
        })
    }
}

/// What distribution did on one node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeOutcome {
    /// Remote paths uploaded.
    pub uploaded: Vec<String>,
    /// Units restarted (or static pods recycled).
    pub restarted: Vec<String>,
}

/// Checks the etcd cluster once (every member answers, all started, a leader); `Ok` text on
/// success. Supplied by the caller so this module does not depend on how etcd is reached.
pub type EtcdHealth<'a> = &'a dyn Fn() -> HealthFuture<'a>;

/// The future an [`EtcdHealth`] check returns.
pub type HealthFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

/// A node to distribute to: its cluster.yaml entry and a connected executor.
type NodeItem<'a> = (&'a Host, Arc<dyn Executor>);

/// Restarts to do on a node: its index in the input, its executor, the units.
type RestartItem = (usize, Arc<dyn Executor>, Vec<&'static str>);

/// How long one etcd member may take to rejoin a healthy cluster after its restart.
pub const ETCD_REJOIN_TIMEOUT: Duration = Duration::from_secs(120);

async fn wait_healthy(health: EtcdHealth<'_>, timeout: Duration) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        let err = match health().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Distributes the state directory's files to `nodes` and restarts what uses them:
///
/// 1. every node in parallel (`fan`): upload what differs among its files (all of them, or
///    only those whose local path is in `only`);
/// 2. etcd members whose files changed, **one at a time**: the cluster must be healthy first,
///    then the member restarts and the whole cluster must be healthy again (within
///    [`ETCD_REJOIN_TIMEOUT`]) before the next; a failure stops the roll, so quorum holds;
/// 3. every other component whose files changed, nodes in parallel.
///
/// `restart: false` uploads only. Returns one result per node, in input order.
pub async fn distribute(
    layout: &StateLayout,
    nodes: &[(&Host, Arc<dyn Executor>)],
    only: Option<&HashSet<PathBuf>>,
    restart: bool,
    etcd_health: EtcdHealth<'_>,
    fan: &Fanout,
) -> Vec<HostResult<NodeOutcome, CertsError>> {
    let items: Vec<(String, NodeItem<'_>)> = nodes
        .iter()
        .map(|(h, e)| (h.name.clone(), (*h, e.clone())))
        .collect();
    let mut results = fan
        .run(items, |(host, exec)| async move {
            let files: Vec<FileMapping> = node_mappings(layout, host)
                .into_iter()
                .filter(|f| only.is_none_or(|o| o.contains(&f.local)))
                .collect();
            let uploaded = sync_node(exec.as_ref(), &files).await?;
            Ok::<_, CertsError>(NodeOutcome {
                uploaded,
                restarted: vec![],
            })
        })
        .await;
    if !restart {
        return results;
    }
    const ETCD: &str = NodeLayout::DEFAULT.units.etcd;
    // 2. etcd, one member at a time.
    let mut etcd_stopped: Option<String> = None;
    for (i, (host, exec)) in nodes.iter().enumerate() {
        let Ok(outcome) = &results[i].result else {
            continue;
        };
        if !units_for(&outcome.uploaded).contains(ETCD) {
            continue;
        }
        let result: Result<Option<String>, CertsError> = async {
            if let Some(stopped) = &etcd_stopped {
                return Err(CertsError::EtcdHealth {
                    when: format!("before restarting {}", host.name),
                    message: format!("not restarted: the roll stopped at {stopped}"),
                });
            }
            wait_healthy(etcd_health, Duration::from_secs(30))
                .await
                .map_err(|message| CertsError::EtcdHealth {
                    when: format!("before restarting {}", host.name),
                    message,
                })?;
            let done = restart_unit(exec.as_ref(), ETCD, ETCD_REJOIN_TIMEOUT).await?;
            if done != Restarted::Unit {
                return Ok(None);
            }
            wait_healthy(etcd_health, ETCD_REJOIN_TIMEOUT)
                .await
                .map_err(|message| CertsError::EtcdHealth {
                    when: format!("after restarting {}", host.name),
                    message,
                })?;
            tracing::info!(member = %host.name, "etcd member restarted, cluster healthy");
            Ok(Some(ETCD.to_string()))
        }
        .await;
        match result {
            Ok(Some(u)) => {
                if let Ok(o) = &mut results[i].result {
                    o.restarted.push(u);
                }
            }
            Ok(None) => {}
            Err(e) => {
                etcd_stopped.get_or_insert_with(|| host.name.clone());
                results[i].result = Err(e);
            }
        }
    }
    // 3. The other components, nodes in parallel.
    let items: Vec<(String, RestartItem)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, (h, e))| {
            let outcome = results[i].result.as_ref().ok()?;
            let units: Vec<&'static str> = units_for(&outcome.uploaded)
                .into_iter()
                .filter(|u| *u != ETCD)
                .collect();
            (!units.is_empty()).then(|| (h.name.clone(), (i, e.clone(), units)))
        })
        .collect();
    let restarts = fan
        .run(items, |(i, exec, units)| async move {
            let mut done = Vec::new();
            // kube-apiserver first (the set is ordered): the others fail while it is down.
            for unit in units {
                let how = restart_unit(exec.as_ref(), unit, Duration::from_secs(120)).await?;
                if how == Restarted::Unit && unit == NodeLayout::DEFAULT.units.kube_apiserver {
                    wait_apiserver_ready(exec.as_ref(), APISERVER_READY_TIMEOUT).await?;
                }
                if how != Restarted::Absent {
                    done.push(unit.to_string());
                }
            }
            Ok::<_, CertsError>((i, done))
        })
        .await;
    for r in restarts {
        match r.result {
            Ok((i, done)) => {
                if let Ok(o) = &mut results[i].result {
                    o.restarted.extend(done);
                }
            }
            Err(e) => {
                if let Some(slot) = results.iter_mut().find(|x| x.host == r.host) {
                    slot.result = Err(e);
                }
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(dir: &Path) -> Cluster {
        let yaml = "name: t\nhosts:\n  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }\n  - { name: e2, address: 10.0.0.2, roles: [worker, etcd], auth: { agent: true } }\n  - { name: w3, address: 10.0.0.3, roles: [worker], auth: { agent: true } }\nkubernetes: { version: v1.20.2, control_plane_endpoint: \"10.0.0.1:6443\" }\n";
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        clusterkit_core::config::load(&path).unwrap().cluster
    }

    fn generated(dir: &Path) -> (Cluster, PkiInput, StateLayout) {
        let c = cluster(dir);
        let input = pki_input(&c);
        let layout = StateLayout::from_cluster(&c);
        pki::ensure(&input, &layout, pki::Mode::Apply).unwrap();
        kubeconfig::ensure(&input, &layout, pki::Mode::Apply).unwrap();
        (c, input, layout)
    }

    /// node_files (which also lists files missing locally) must agree with the layout's own
    /// host_files once everything is generated: same local → remote pairs.
    #[test]
    fn node_files_agree_with_host_files() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, layout) = generated(dir.path());
        for h in &c.hosts {
            let mut want: Vec<(PathBuf, String)> = node_mappings(&layout, h)
                .into_iter()
                .filter(|m| {
                    let s = m.remote.to_string_lossy();
                    s.ends_with(".crt") || s.ends_with(".conf")
                })
                .map(|m| (m.local, m.remote.to_string_lossy().to_string()))
                .collect();
            let mut got: Vec<(PathBuf, String)> = node_files(&c, &layout, h)
                .into_iter()
                .filter(|f| !f.optional)
                .map(|f| (f.local.unwrap(), f.remote))
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{}", h.name);
            // Every key the check looks for is a key the node gets.
            let keys: Vec<String> = node_mappings(&layout, h)
                .into_iter()
                .map(|m| m.remote.to_string_lossy().to_string())
                .filter(|r| r.ends_with(".key"))
                .filter(|r| !r.ends_with("/sa.key") && !r.ends_with("/ca.key"))
                .collect();
            for k in keys {
                assert!(
                    node_files(&c, &layout, h)
                        .iter()
                        .any(|f| f.key.as_deref() == Some(&k)),
                    "{}: {k}",
                    h.name
                );
            }
        }
    }

    /// The real read script, run by a LocalExecutor over copies of the state files laid out
    /// under a temporary root (keys with modes, one kubeconfig missing).
    #[tokio::test]
    async fn read_script_and_rows() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (c, _, layout) = generated(dir.path());
        let root = dir.path().join("node");
        let h = c.host("cp1").unwrap();
        let mut files = node_files(&c, &layout, h);
        let mappings = node_mappings(&layout, h);
        for m in &mappings {
            let remote = m.remote.to_string_lossy().to_string();
            if remote.ends_with("scheduler.conf") {
                continue;
            }
            let dest = root.join(remote.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&m.local, &dest).unwrap();
            let mode = if remote.ends_with("/apiserver.key") {
                0o644
            } else {
                m.mode
            };
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let re = |p: &str| {
            root.join(p.trim_start_matches('/'))
                .to_string_lossy()
                .to_string()
        };
        // A node copy that is not the state directory's.
        std::fs::copy(
            layout.pki_dir().join("apiserver-kubelet-client.crt"),
            re("/etc/kubernetes/pki/front-proxy-client.crt"),
        )
        .unwrap();
        for f in &mut files {
            f.remote = re(&f.remote);
            f.key = f.key.as_deref().map(re);
        }
        let exec = clusterkit_core::exec::local::LocalExecutor::new("cp1", Duration::from_secs(30));
        let remote = read_node(&exec, &files).await.unwrap();
        let rows = node_rows("cp1", &files, &remote, OffsetDateTime::now_utc());
        let by = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(by("ca").status, Status::Ok);
        assert_eq!(by("ca").ca.as_deref(), Some("-"));
        assert!((3640..=3650).contains(&by("ca").days_left.unwrap()));
        assert_eq!(by("etcd-server").ca.as_deref(), Some("etcd-ca"));
        assert_eq!(by("etcd-server").subject.as_deref(), Some("cp1"));
        assert_eq!(by("etcd-server").validity_days, Some(365));
        assert_eq!(by("apiserver").status, Status::KeyMode);
        assert_eq!(by("scheduler.conf").status, Status::Missing);
        let cm = by("controller-manager.conf");
        assert_eq!(cm.status, Status::Ok, "{cm:?}");
        assert_eq!(
            cm.subject.as_deref(),
            Some("system:kube-controller-manager")
        );
        assert_eq!(cm.in_sync, Some(true));
        assert!(!rows.iter().any(|r| r.name == "kubelet-client-current"));
        let stale = by("front-proxy-client");
        assert_eq!(
            (stale.status, stale.in_sync),
            (Status::Stale, Some(false)),
            "{stale:?}"
        );
        assert!(rows
            .iter()
            .all(|r| r.fails_within(0) == !matches!(r.status, Status::Ok | Status::Stale)));
        assert!(by("ca").fails_within(4000));
    }

    #[test]
    fn renew_changes_serials_and_keeps_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (c, input, layout) = generated(dir.path());
        let all = renewables(&input, &layout, None).unwrap();
        assert!(select(&all, false, &["ca".into()]).is_err());
        assert!(select(&all, false, &["nope".into()]).is_err());
        assert!(select(&all, false, &[]).is_err());
        let every = select(&all, true, &[]).unwrap();
        assert!(every.iter().all(|r| !r.name().starts_with("kubelet.conf")));
        let picked = select(&all, false, &["etcd-server".into(), "admin.conf".into()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["etcd-server/cp1", "etcd-server/e2", "admin.conf"]);
        let before = local_rows(&c, &input, &layout, OffsetDateTime::now_utc()).unwrap();
        let renewed = renew_local(&c, &input, &layout, &picked, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(renewed.len(), 3);
        for r in &renewed {
            assert_ne!(r.old_serial.as_deref(), Some(r.new_serial.as_str()));
        }
        // Nothing else changed, and the pki/kubeconfig phases accept the renewed files as is.
        let after = local_rows(&c, &input, &layout, OffsetDateTime::now_utc()).unwrap();
        for (b, a) in before.iter().zip(&after) {
            let renamed = renewed.iter().any(|r| r.name == b.name)
                || (b.name == "admin.conf (operator copy)");
            assert_eq!(b.serial != a.serial, renamed, "{}", b.name);
            assert_eq!(a.status, Status::Ok, "{a:?}");
        }
        assert_eq!(
            pki::ensure(&input, &layout, pki::Mode::Check)
                .unwrap()
                .changed(),
            0
        );
        assert_eq!(
            kubeconfig::ensure(&input, &layout, pki::Mode::Check)
                .unwrap()
                .changed(),
            0
        );
        let op = std::fs::read(operator_admin_conf(&c)).unwrap();
        assert_eq!(
            op,
            std::fs::read(layout.kubeconfig_dir().join("admin.conf")).unwrap()
        );
    }

    #[test]
    fn kubeconfig_certificate_forms() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, layout) = generated(dir.path());
        let k = Kubeconfig::load(&layout.kubeconfig_dir().join("admin.conf")).unwrap();
        let b64 = B64.encode(k.client_cert_pem().unwrap());
        let inline = format!("    client-certificate-data: {b64}\n");
        let quoted = format!("    client-certificate-data: \"{b64}\"\n");
        let (a, b) = b64.split_at(40);
        let folded = format!("    client-certificate-data: >-\n      {a}\n      {b}\n");
        for text in [inline, quoted, folded] {
            let info = kubeconfig_client_cert(text.as_bytes()).unwrap().unwrap();
            assert_eq!(info.subject, "kubernetes-admin", "{text}");
        }
        let file_ref = "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n";
        let note = kubeconfig_client_cert(file_ref.as_bytes())
            .unwrap()
            .unwrap_err();
        assert!(
            note.contains("/var/lib/kubelet/pki/kubelet-client-current.pem"),
            "{note}"
        );
        assert!(kubeconfig_client_cert(b"    token: abc\n").is_err());
    }

    #[test]
    fn restarts_follow_files() {
        let u = |p: &[&str]| {
            units_for(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(u(&["/etc/kubernetes/pki/etcd/server.crt"]), ["etcd"]);
        assert!(u(&["/etc/kubernetes/pki/etcd/healthcheck-client.crt"]).is_empty());
        assert_eq!(
            u(&["/etc/kubernetes/pki/apiserver-etcd-client.key"]),
            ["kube-apiserver"]
        );
        assert_eq!(u(&["/etc/kubernetes/scheduler.conf"]), ["kube-scheduler"]);
        assert_eq!(
            u(&["/etc/kubernetes/pki/apiserver.crt"]),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler"
            ]
        );
        assert_eq!(u(&["/etc/kubernetes/kube-proxy.conf"]), ["kube-proxy"]);
    }
}
