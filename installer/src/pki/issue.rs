//! Issuing and checking: loads the CAs, keeps a certificate that is still valid for its spec,
//! (re)issues the rest and writes keys 0600 ([`ensure`]). Limits: RSA 2048 only; no external
//! CA, no intermediate CAs.

use super::*;

/// Whether [`ensure`] writes or only reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Create or replace what is missing or invalid.
    Apply,
    /// Report what would change; write nothing.
    Check,
}

/// What happened (or would happen, in check mode) to one file pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Present and valid: untouched.
    Kept,
    /// Did not exist: created.
    Created,
    /// Existed but was unusable: replaced, for the reason given.
    Replaced {
        /// Why (e.g. "SAN 10.0.0.4 missing", "expires in 12 days").
        reason: String,
    },
    /// Valid, but the key file's mode was wrong and set to 0600.
    ModeFixed,
}

/// One line of a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportItem {
    /// The certificate's name (kubeadm's, `/host` for per-host ones).
    pub name: String,
    /// The certificate (or key) file.
    pub path: PathBuf,
    /// What was done.
    pub action: Action,
}

/// What a run of [`ensure`] (or the kubeconfig equivalent) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One item per certificate, key pair or kubeconfig, in issue order.
    pub items: Vec<ReportItem>,
}

impl Report {
    /// How many items changed (anything but [`Action::Kept`]).
    pub fn changed(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.action != Action::Kept)
            .count()
    }

    pub(crate) fn push(&mut self, name: &str, path: &Path, action: Action) {
        tracing::debug!(name, path = %path.display(), ?action, "pki");
        self.items.push(ReportItem {
            name: name.to_string(),
            path: path.to_path_buf(),
            action,
        });
    }

    /// Appends another report's items.
    pub fn extend(&mut self, other: Report) {
        self.items.extend(other.items);
    }
}

/// A loaded CA, able to sign.
pub struct LoadedCa {
    /// Which CA.
    pub name: CaName,
    /// Its certificate, PEM.
    pub cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
    /// True when this run created or replaced it (everything it signed must be re-issued).
    pub fresh: bool,
}

impl std::fmt::Debug for LoadedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCa")
            .field("name", &self.name)
            .field("fresh", &self.fresh)
            .finish_non_exhaustive()
    }
}

impl LoadedCa {
    /// Loads a CA from `<pki>/<base>.{crt,key}` as written by [`ensure`].
    pub fn load(layout: &StateLayout, name: CaName) -> Result<Self, PkiError> {
        let crt = layout.pki_dir().join(format!("{}.crt", name.base()));
        let key = layout.pki_dir().join(format!("{}.key", name.base()));
        Self::load_pair(&crt, &key, name)
    }

    /// Loads the CA `name` from a certificate (the signing one first, when a bundle) and key
    /// file anywhere (CA rotation's archive).
    pub fn load_pair(crt: &Path, key: &Path, name: CaName) -> Result<Self, PkiError> {
        let (cert_pem, cert_der, key) = read_pair(crt, key)?.ok_or_else(|| PkiError::Load {
            path: crt.to_path_buf(),
            source: Unusable::Missing,
        })?;
        check_ca(&cert_der, &key, name, OffsetDateTime::now_utc()).map_err(|source| {
            PkiError::Load {
                path: crt.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            name,
            cert_pem,
            cert_der,
            key,
            fresh: false,
        })
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key, PEM (to write it 0600; never log it).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}

/// A new self-signed CA `name` valid for `lifetime` from `now` (CA rotation's new CA; the
/// pki phase makes its own through [`ensure`]).
pub fn new_ca(name: CaName, now: OffsetDateTime, lifetime: Duration) -> Result<LoadedCa, PkiError> {
    issue_ca(name, now, lifetime)
}

/// Reads a cert/key pair; `Ok(None)` when either file is missing, `Err` only for I/O errors
/// other than "not found". Unparseable content is returned as an `Err(Load)`.
#[allow(clippy::type_complexity)]
pub(super) fn read_pair(
    crt: &Path,
    key: &Path,
) -> Result<Option<(String, Vec<u8>, KeyPair)>, PkiError> {
    let (Some(cert_pem), Some(key_pem)) = (read_optional(crt)?, read_optional(key)?) else {
        return Ok(None);
    };
    let cert_der = pem_to_der(&cert_pem).map_err(|source| PkiError::Load {
        path: crt.to_path_buf(),
        source,
    })?;
    // The key's parse error is not kept: it could echo key material.
    let key_pair = KeyPair::from_pem(&key_pem).map_err(|_| PkiError::Load {
        path: key.to_path_buf(),
        source: Unusable::Key,
    })?;
    Ok(Some((cert_pem, cert_der, key_pair)))
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The DER of the first CERTIFICATE block of a PEM text.
pub(crate) fn pem_to_der(pem_text: &str) -> Result<Vec<u8>, Unusable> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| Unusable::Pem(Box::new(e)))?;
    if pem.label != "CERTIFICATE" {
        return Err(Unusable::Label(pem.label));
    }
    Ok(pem.contents)
}

pub(super) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Unusable> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Unusable::Der(Box::new(e)))
}

/// What differs, in words.
fn differs(what: impl Into<String>) -> Unusable {
    Unusable::Differs(what.into())
}

pub(super) fn days_left(cert: &X509Certificate<'_>, now: OffsetDateTime) -> i64 {
    (cert.validity().not_after.timestamp() - now.unix_timestamp()).div_euclid(86_400)
}

pub(super) fn check_ca(
    der: &[u8],
    key: &KeyPair,
    name: CaName,
    now: OffsetDateTime,
) -> Result<(), Unusable> {
    let cert = parse(der)?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(differs("the key does not match the certificate"));
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(differs("not a CA certificate"));
    }
    if cert.verify_signature(None).is_err() {
        return Err(differs("not self-signed"));
    }
    if cert.validity().not_after.timestamp() <= now.unix_timestamp() {
        return Err(differs("expired"));
    }
    let cn = cert.subject().iter_common_name().next();
    if cn.and_then(|c| c.as_str().ok()) != Some(name.common_name()) {
        return Err(differs(format!("subject CN is not {}", name.common_name())));
    }
    Ok(())
}

/// Why an existing leaf must be re-issued, or `Ok` when it is still good.
pub(crate) fn check_leaf(
    der: &[u8],
    key: &KeyPair,
    spec: &CertSpec,
    ca: &LoadedCa,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Result<(), Unusable> {
    let cert = parse(der)?;
    let ca_cert = parse(&ca.cert_der)?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(differs("the key does not match the certificate"));
    }
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Err(differs(format!(
            "not signed by the current {}",
            ca.name.name()
        )));
    }
    if cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(differs("is a CA certificate"));
    }
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if cn != [spec.common_name.as_str()] {
        return Err(differs(format!("subject CN is not {}", spec.common_name)));
    }
    let mut orgs: Vec<&str> = cert
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let mut want: Vec<&str> = spec.organization.iter().map(String::as_str).collect();
    orgs.sort_unstable();
    want.sort_unstable();
    if orgs != want {
        return Err(differs(format!("subject O is not {want:?}")));
    }
    let eku = cert.extended_key_usage().ok().flatten().map(|e| e.value);
    let (server, client) = eku.map_or((false, false), |e| (e.server_auth, e.client_auth));
    if server != spec.usages.contains(&Usage::ServerAuth)
        || client != spec.usages.contains(&Usage::ClientAuth)
    {
        return Err(differs("extended key usages differ"));
    }
    let (mut have_dns, mut have_ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => have_dns.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        have_ips.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        have_ips.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(d) = spec.dns_names.iter().find(|d| !have_dns.contains(d)) {
        return Err(differs(format!("SAN {d} missing")));
    }
    if let Some(ip) = spec.ips.iter().find(|ip| !have_ips.contains(ip)) {
        return Err(differs(format!("SAN {ip} missing")));
    }
    let left = cert.validity().not_after.timestamp() - now.unix_timestamp();
    if left <= i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX) {
        return Err(differs(format!(
            "expires in {} days",
            days_left(&cert, now).max(0)
        )));
    }
    if cert.validity().not_before.timestamp() > now.unix_timestamp() + 3600 {
        return Err(differs("not valid yet"));
    }
    Ok(())
}

/// A fresh RSA 2048 key (kubeadm's default key type).
pub(crate) fn new_key(name: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|source| PkiError::Generate {
        name: name.to_string(),
        source,
    })
}

pub(super) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and of full length, like Go's crypto/x509 serials.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

pub(super) fn base_params(
    cn: &str,
    orgs: &[String],
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    // A little slack for hosts whose clock is slightly behind the operator's.
    let out_of_range = || PkiError::Input {
        field: "validity",
        message: format!(
            "{cn}: {} days from {now} is past the last date a certificate can hold",
            lifetime.as_secs() / 86_400
        ),
    };
    params.not_before = now
        .checked_sub(time::Duration::seconds(300))
        .ok_or_else(out_of_range)?;
    let lifetime = time::Duration::try_from(lifetime).map_err(|_| out_of_range())?;
    params.not_after = now.checked_add(lifetime).ok_or_else(out_of_range)?;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// Issues a leaf certificate for `spec` with a new key; returns (cert PEM, key PEM).
pub(crate) fn issue_leaf(
    spec: &CertSpec,
    ca: &LoadedCa,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<(String, String), PkiError> {
    let err = |source| PkiError::Generate {
        name: spec.name.clone(),
        source,
    };
    let key = new_key(&spec.name)?;
    let mut params = base_params(&spec.common_name, &spec.organization, now, lifetime)?;
    params.is_ca = IsCa::ExplicitNoCa;
    // kubeadm (Go's x509 with an RSA key): digitalSignature + keyEncipherment.
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = spec
        .usages
        .iter()
        .map(|u| match u {
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    for d in &spec.dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(d.clone().try_into().map_err(err)?));
    }
    for ip in &spec.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der.clone().into(), &ca.key).map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(super) fn issue_ca(
    name: CaName,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<LoadedCa, PkiError> {
    let err = |source| PkiError::Generate {
        name: name.name().to_string(),
        source,
    };
    let key = new_key(name.name())?;
    let mut params = base_params(name.common_name(), &[], now, lifetime)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // kubeadm (client-go's NewSelfSignedCACert): keyEncipherment, digitalSignature, certSign.
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(LoadedCa {
        name,
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key,
        fresh: true,
    })
}

/// Writes `data` to `path` atomically (temporary file + rename) with `mode`, creating the
/// parent directories (0700: they hold keys).
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { op, path, source }
    };
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create directory", dir))?;
        }
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(data).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    drop(f);
    // The umask may have narrowed the mode; set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    Ok(())
}

/// True when the file's mode is not exactly 0600; fixes it in apply mode.
pub(super) fn fix_key_mode(path: &Path, mode: Mode) -> Result<bool, PkiError> {
    let meta = fs::metadata(path).map_err(|source| PkiError::Io {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o777 == 0o600 {
        return Ok(false);
    }
    if mode == Mode::Apply {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            PkiError::Io {
                op: "chmod",
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(true)
}

pub(super) fn ensure_ca(
    layout: &StateLayout,
    name: CaName,
    validity: &Validity,
    now: OffsetDateTime,
    mode: Mode,
    report: &mut Report,
) -> Result<Option<LoadedCa>, PkiError> {
    let crt = layout.pki_dir().join(format!("{}.crt", name.base()));
    let key = layout.pki_dir().join(format!("{}.key", name.base()));
    let reason = match read_pair(&crt, &key) {
        Ok(Some((cert_pem, cert_der, key_pair))) => {
            match check_ca(&cert_der, &key_pair, name, now) {
                Ok(()) => {
                    let action = if fix_key_mode(&key, mode)? {
                        Action::ModeFixed
                    } else {
                        Action::Kept
                    };
                    report.push(name.name(), &crt, action);
                    return Ok(Some(LoadedCa {
                        name,
                        cert_pem,
                        cert_der,
                        key: key_pair,
                        fresh: false,
                    }));
                }
                Err(reason) => Some(reason.to_string()),
            }
        }
        Ok(None) => None,
        Err(PkiError::Load { source, .. }) => Some(source.to_string()),
        Err(e) => return Err(e),
    };
    let action = match reason {
        None => Action::Created,
        Some(reason) => Action::Replaced { reason },
    };
    report.push(name.name(), &crt, action);
    if mode == Mode::Check {
        return Ok(None);
    }
    let ca = issue_ca(name, now, validity.ca)?;
    write_file(&key, ca.key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&crt, ca.cert_pem.as_bytes(), 0o644)?;
    Ok(Some(ca))
}

/// The PEM blocks of a certificate bundle (`-----BEGIN CERTIFICATE-----` … `END`), each with
/// a trailing newline, in file order. Text outside the blocks is dropped.
pub fn pem_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// Writes the cluster CA's signing certificate alone (the first block of `ca.crt`, which is a
/// bundle while the CA is rotated) to [`CLUSTER_SIGNING_CERT`], for the controller manager's
/// CSR signer; untouched when it already holds that. Returns whether it was written.
///
/// [`CLUSTER_SIGNING_CERT`]: clusterkit_core::layout::CLUSTER_SIGNING_CERT
pub fn write_signing_cert(layout: &StateLayout, ca: &LoadedCa) -> Result<bool, PkiError> {
    let path = layout
        .pki_dir()
        .join(clusterkit_core::layout::CLUSTER_SIGNING_CERT);
    let first = pem_blocks(&ca.cert_pem)
        .into_iter()
        .next()
        .unwrap_or_default();
    if read_optional(&path)?.as_deref() == Some(first.as_str()) {
        return Ok(false);
    }
    write_file(&path, first.as_bytes(), 0o644)?;
    Ok(true)
}

/// Creates or keeps one leaf pair; `ca` is `None` in check mode when the CA itself would be
/// replaced (then every leaf would be too).
pub(crate) fn ensure_leaf(
    layout: &StateLayout,
    spec: &CertSpec,
    ca: Option<&LoadedCa>,
    validity: &Validity,
    now: OffsetDateTime,
    mode: Mode,
    report: &mut Report,
) -> Result<(), PkiError> {
    let crt = spec.cert_path(layout);
    let key = spec.key_path(layout);
    let reason = match (ca, read_pair(&crt, &key)) {
        (_, Err(PkiError::Load { source, .. })) => Some(source.to_string()),
        (_, Err(e)) => return Err(e),
        (_, Ok(None)) => None,
        (None, Ok(Some(_))) => Some("its CA is replaced".to_string()),
        (Some(ca), Ok(Some((_, der, key_pair)))) => {
            if ca.fresh {
                Some(format!("its CA {} was replaced", ca.name.name()))
            } else {
                match check_leaf(&der, &key_pair, spec, ca, now, validity.renew_before) {
                    Ok(()) => {
                        let action = if fix_key_mode(&key, mode)? {
                            Action::ModeFixed
                        } else {
                            Action::Kept
                        };
                        report.push(&spec.name, &crt, action);
                        return Ok(());
                    }
                    Err(reason) => Some(reason.to_string()),
                }
            }
        }
    };
    report.push(
        &spec.name,
        &crt,
        match reason {
            None => Action::Created,
            Some(reason) => Action::Replaced { reason },
        },
    );
    let Some(ca) = ca.filter(|_| mode == Mode::Apply) else {
        return Ok(());
    };
    let (cert_pem, key_pem) = issue_leaf(spec, ca, now, validity.leaf)?;
    write_file(&key, key_pem.as_bytes(), 0o600)?;
    write_file(&crt, cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

pub(super) fn ensure_sa(
    layout: &StateLayout,
    mode: Mode,
    report: &mut Report,
) -> Result<(), PkiError> {
    let key_path = layout.pki_dir().join("sa.key");
    let pub_path = layout.pki_dir().join("sa.pub");
    // Replacing the signing key invalidates every service-account token: only when unusable.
    let reason = match (read_optional(&key_path)?, read_optional(&pub_path)?) {
        (Some(k), Some(p)) => match KeyPair::from_pem(&k) {
            Ok(kp) if kp.public_key_pem() == p => {
                let action = if fix_key_mode(&key_path, mode)? {
                    Action::ModeFixed
                } else {
                    Action::Kept
                };
                report.push("sa", &key_path, action);
                return Ok(());
            }
            Ok(_) => Some("sa.pub does not match sa.key".to_string()),
            Err(_) => Some("sa.key is not a readable private key".to_string()),
        },
        (None, None) => None,
        _ => Some("one of sa.key and sa.pub is missing".to_string()),
    };
    report.push(
        "sa",
        &key_path,
        match reason {
            None => Action::Created,
            Some(reason) => Action::Replaced { reason },
        },
    );
    if mode == Mode::Apply {
        let key = new_key("sa")?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&pub_path, key.public_key_pem().as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Creates whatever is missing or invalid in the cluster PKI under `layout` (or, in check
/// mode, reports it) and returns what was done per certificate.
#[tracing::instrument(skip_all, fields(state = %layout.root.display(), ?mode))]
pub fn ensure(input: &PkiInput, layout: &StateLayout, mode: Mode) -> Result<Report, PkiError> {
    ensure_at(input, layout, mode, OffsetDateTime::now_utc())
}

/// [`ensure`] at a given time (for tests of expiry handling).
pub fn ensure_at(
    input: &PkiInput,
    layout: &StateLayout,
    mode: Mode,
    now: OffsetDateTime,
) -> Result<Report, PkiError> {
    let specs = cert_specs(input);
    let mut report = Report::default();
    let mut cas = Vec::new();
    for name in CaName::ALL {
        let ca = ensure_ca(layout, name, &input.validity, now, mode, &mut report)?;
        if let (Some(ca), CaName::Kubernetes, Mode::Apply) = (&ca, name, mode) {
            write_signing_cert(layout, ca)?;
        }
        cas.push((name, ca));
    }
    for spec in &specs {
        let ca = cas
            .iter()
            .find(|(n, _)| *n == spec.ca)
            .and_then(|(_, ca)| ca.as_ref());
        ensure_leaf(layout, spec, ca, &input.validity, now, mode, &mut report)?;
    }
    ensure_sa(layout, mode, &mut report)?;
    Ok(report)
}
