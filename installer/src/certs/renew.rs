//! Re-issuing in the state directory: what can be renewed ([`renewables`], [`select`]) and
//! [`renew_local`], new keys and serials signed by the existing CAs, admin.conf copied next to
//! cluster.yaml. Limits: CAs are never renewed; nothing reaches a node here (see rollout).

use super::*;
use clusterkit_core::layout::kubeconfig_file;

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
        !self.name().starts_with(kubeconfig_file::KUBELET)
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
    if layout
        .kubeconfig_dir()
        .join(kubeconfig_file::KUBE_PROXY)
        .is_file()
    {
        out.push(Renewable::ExistingKubeconfig {
            name: kubeconfig_file::KUBE_PROXY.into(),
            path: Path::new(StateLayout::KUBECONFIG).join(kubeconfig_file::KUBE_PROXY),
        });
    }
    Ok(out)
}

/// Picks what to renew: `--all`, or names; a name matches exactly or as a group
/// (`etcd-server` is every `etcd-server/<member>`). CA names are refused: CAs are replaced by
/// [`rotate_cas`], never renewed in place.
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
                name: format!("{name} (a CA: `certs rotate-ca` replaces CAs)"),
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

pub(super) fn serial_of_file(path: &Path, kubeconfig: bool) -> Option<String> {
    let info = if kubeconfig {
        let k = Kubeconfig::load(path).ok()?;
        CertInfo::from_pem(k.client_cert_pem()?.as_bytes()).ok()?
    } else {
        CertInfo::from_pem(&std::fs::read(path).ok()?).ok()?
    };
    Some(info.serial)
}

/// The subject (CN, O) of a kubeconfig's client certificate.
pub(super) fn kubeconfig_identity(k: &Kubeconfig) -> Option<(String, Vec<String>)> {
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

pub(super) fn write_kubeconfig(
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
pub(super) fn ca_for<'c>(
    cas: &'c mut BTreeMap<&'static str, LoadedCa>,
    layout: &StateLayout,
    name: CaName,
) -> Result<&'c LoadedCa, CertsError> {
    if !cas.contains_key(name.name()) {
        cas.insert(name.name(), LoadedCa::load(layout, name)?);
    }
    Ok(&cas[name.name()])
}

/// The client certificate of a kubeconfig: `common_name` in `organization`, from the cluster CA.
fn client_cert(
    name: &str,
    base: PathBuf,
    common_name: &str,
    organization: Vec<String>,
) -> CertSpec {
    CertSpec {
        name: name.to_string(),
        base,
        ca: CaName::Kubernetes,
        common_name: common_name.to_string(),
        organization,
        usages: vec![Usage::ClientAuth],
        dns_names: vec![],
        ips: vec![],
    }
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
        // A kubeconfig's client certificate, newly issued by the cluster CA, written with the
        // kubeconfig around it; returns the certificate.
        let reissue_kubeconfig = |cert: CertSpec,
                                  server: &str,
                                  user: &str,
                                  cas: &mut BTreeMap<&'static str, LoadedCa>|
         -> Result<String, CertsError> {
            let ca = ca_for(cas, layout, CaName::Kubernetes)?;
            let (cert_pem, key_pem) = pki::issue_leaf(&cert, ca, now, lifetime)?;
            let cluster_name = &input.cluster_name;
            write_kubeconfig(
                &path,
                cluster_name,
                server,
                user,
                ca,
                cert_pem.clone(),
                key_pem,
            )?;
            Ok(cert_pem)
        };
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
            Renewable::Kubeconfig(spec) => reissue_kubeconfig(
                client_cert(
                    &spec.name,
                    spec.path.clone(),
                    &spec.user,
                    spec.groups.clone(),
                ),
                &spec.server,
                &spec.user,
                &mut cas,
            )?,
            Renewable::ExistingKubeconfig { name, .. } => {
                let existing = Kubeconfig::load(&path)?;
                let (cn, orgs) = kubeconfig_identity(&existing).ok_or_else(|| PkiError::Load {
                    path: path.clone(),
                    source: Unusable::Differs("no readable client certificate to renew".into()),
                })?;
                let server = existing.server().unwrap_or_default().to_string();
                let user = existing
                    .users
                    .first()
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| cn.clone());
                reissue_kubeconfig(
                    client_cert(name, item.rel_path(), &cn, orgs),
                    &server,
                    &user,
                    &mut cas,
                )?
            }
        };
        if item.name() == kubeconfig_file::ADMIN {
            let data = std::fs::read(&path).map_err(|source| PkiError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            pki::write_file(&operator_admin_conf(cluster), &data, 0o600)?;
        }
        let info = CertInfo::from_pem(cert_pem.as_bytes()).map_err(|source| PkiError::Load {
            path: path.clone(),
            source,
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
