//! What `check-expiration` reports: the facts of a certificate ([`CertInfo`]), one
//! [`ExpiryRow`] per host and file from what a node holds ([`node_rows`]) or from the state
//! directory ([`local_rows`]), and the table printed ([`expiry_table`]). Limits: reads only;
//! a kubeconfig that references its certificate by file is reported, not followed.

use super::*;
use clusterkit_core::layout::kubeconfig_file;

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
    pub fn from_der(der: &[u8]) -> Result<Self, Unusable> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| Unusable::Der(Box::new(e)))?;
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
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, Unusable> {
        let text = std::str::from_utf8(pem_text).map_err(|_| Unusable::NotText)?;
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
pub(super) fn trim_serial(raw: &[u8]) -> &[u8] {
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
    /// `old` or `new`: a CA of the rotation in progress, from its archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<&'static str>,
}

impl ExpiryRow {
    pub(super) fn bare(host: &str, name: &str, path: &str, status: Status) -> Self {
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
            rotation: None,
        }
    }

    pub(super) fn with_cert(mut self, info: &CertInfo, now: OffsetDateTime) -> Self {
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

/// Where a kubeconfig's client certificate is.
#[derive(Debug)]
pub(super) enum ClientCert {
    /// Embedded (`client-certificate-data`), parsed.
    Embedded(CertInfo),
    /// A file on the node (`client-certificate: PATH`), e.g. the kubelet's rotated pair.
    File(String),
}

/// The client certificate of a kubeconfig's client-certificate line(s).
pub(super) fn kubeconfig_client_cert(lines: &[u8]) -> Result<ClientCert, Unusable> {
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
                let pem = B64.decode(&value).map_err(Unusable::Base64)?;
                return Ok(ClientCert::Embedded(CertInfo::from_pem(&pem)?));
            }
            "client-certificate" => return Ok(ClientCert::File(value)),
            _ => {}
        }
    }
    Err(Unusable::NoClientCert)
}

/// The certificate of the state directory's copy of `file`, if any.
pub(super) fn local_cert(file: &NodeFile) -> Option<CertInfo> {
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
            FileKind::Cert | FileKind::CertAndKey => {
                CertInfo::from_pem(&got.data).map(ClientCert::Embedded)
            }
            FileKind::Kubeconfig => kubeconfig_client_cert(&got.data),
        };
        let mut row = ExpiryRow::bare(host, &f.name, &f.remote, Status::Ok);
        let info = match parsed {
            Ok(ClientCert::Embedded(info)) => info,
            Ok(ClientCert::File(path)) => {
                // The kubelet's own rotated pair: reported on its own row.
                row.note = Some(format!("client certificate in {path}"));
                rows.push(row);
                continue;
            }
            Err(e) => {
                row.status = Status::Invalid;
                row.note = Some(e.to_string());
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
                    r.note = Some(e.to_string());
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
    let proxy = layout.kubeconfig_dir().join(kubeconfig_file::KUBE_PROXY);
    if proxy.is_file() {
        confs.push((kubeconfig_file::KUBE_PROXY.into(), proxy));
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
                .map_err(Unusable::from)
                .and_then(|k| k.client_cert_pem().ok_or(Unusable::NoClientCert))
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
                    r.note = Some(e.to_string());
                    r
                }
            }
        };
        rows.push(row);
    }
    Ok(rows)
}

pub(super) fn mode_of(path: &Path) -> Option<u32> {
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
