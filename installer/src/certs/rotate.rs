//! CA rotation (`certs rotate-ca`): a CA replaced by a new one without a new cluster, in the
//! three stages of Kubernetes' manual procedure, each recorded in a journal in the state
//! directory so a rerun continues where the last one stopped and a rerun after the end changes
//! nothing:
//!
//! 0. **prepare**: the old CA (certificate and key, 0600) is archived in
//!    [`StateLayout::rotation_archive`] and a new CA generated locally next to it;
//! 1. **trust both** ([`Stage::TrustBoth`]): every trust bundle becomes old+new (the old CA
//!    first: it still signs) — the node's `ca.crt` (kube-apiserver's and the controller
//!    manager's `--client-ca-file`, the kubelet's `clientCAFile`, `--root-ca-file` and so the
//!    `kube-root-ca.crt` ConfigMaps) and every kubeconfig's `certificate-authority-data`, or
//!    `front-proxy-ca.crt` (`--requestheader-client-ca-file`), or `etcd/ca.crt` (etcd's
//!    `--trusted-ca-file` and `--peer-trusted-ca-file`, kube-apiserver's `--etcd-cafile`, and
//!    what every other etcd client of clusterkit reads: the health checks and `backup etcd`
//!    from the state directory, the backup timers on the nodes);
//! 2. **reissue** ([`Stage::Reissued`]): the new CA signs (bundle new+old, the new key, the
//!    controller manager's signer) and every leaf it covers is re-issued with it, through
//!    [`renew_local`];
//! 3. **drop the old** ([`Stage::Done`]): refused while any certificate clusterkit knows of,
//!    on a node or in the state directory, is not signed by the new CA ([`unverified_node`],
//!    [`unverified_local`]); then the bundles are reduced to the new CA and the archived keys
//!    deleted.
//!
//! Each stage's local part is rebuilt from the archive (so it is idempotent), then the CA's
//! files go out through [`distribute`]: only what differs is uploaded, and what uses it is
//! restarted, one host at a time with the caller's fan-out, etcd members with health checks
//! (the whole cluster healthy before and after each member, so quorum holds throughout) and
//! kube-apiserver waited for until `/readyz` answers. The caller's etcd health check must
//! read the state directory's etcd CA and client pair at each call: they change with every
//! stage of the etcd CA's rotation. Then what the API publishes of the
//! CAs follows ([`refresh_api`]): `kube-public/cluster-info`, and after the drop stage
//! `kube-system/extension-apiserver-authentication` (the `kube-root-ca.crt` ConfigMaps follow
//! the controller manager's `--root-ca-file` by themselves).
//!
//! For the cluster CA, each stage also reaches what the kubelets keep themselves
//! ([`roll_kubelet`], one host at a time): the bootstrap kubeconfig and a bootstrapped node's
//! own kubelet.conf get the stage's bundle, and in the reissue stage the kubelet's rotated
//! client and serving certificates not from the new CA are replaced by ones the new CA signed
//! for the same node and names; the kubelet restarts when something changed.
//!
//! Workloads: at the end of the trust-both stage the journal records when every
//! `kube-root-ca.crt` ConfigMap was seen carrying both CAs; before the reissue stage the pods
//! whose containers started earlier are listed in the trust-both stage's report, and with
//! `--restart-workloads` their owners are rollout-restarted and waited for
//! ([`workloads`](super::workloads) says why the start time is the criterion, and why before
//! the reissue stage).
//!
//! Several CAs rotate together, each stage rolled once for all of them.
//!
//! The cluster CA's rotation is refused on a cluster whose controller managers still sign with
//! `ca.crt` (installed before [`CLUSTER_SIGNING_CERT`](clusterkit_core::layout::CLUSTER_SIGNING_CERT)
//! existed): rerunning the pki and control-plane phases first moves them.
//!
//! Limits: the cluster CA (`kubernetes`), the front proxy's and etcd's are rotated; the
//! monitoring CA is not (`certs renew` re-issues its leaves). Certificates clusterkit did not
//! issue are not looked at; Prometheus's copies of the etcd and cluster CAs are followed only
//! where `monitor deploy` put them with `monitor.tls` on ([`pki::prometheus_copies`]; with it
//! off, Prometheus's etcd scrape fails from the reissue stage on until `monitor deploy` runs
//! again). A stage
//! interrupted midway is rolled out again by the rerun with every user of its files restarted,
//! uploaded or not.

use super::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// How far one CA's rotation got: the last stage completed, on every node. Named in the
/// journal as in the output ([`Stage::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub enum Stage {
    /// The old CA is archived and the new one generated; no node has changed yet.
    #[serde(rename = "prepared")]
    Prepared,
    /// Every bundle trusts old and new.
    #[serde(rename = "trust-both")]
    TrustBoth,
    /// Every leaf is signed by the new CA.
    #[serde(rename = "reissue")]
    Reissued,
    /// Bundles hold only the new CA; the rotation is over.
    #[serde(rename = "drop-old")]
    Done,
}

impl Stage {
    /// The stages that change nodes, in order.
    pub const ROLLED: [Stage; 3] = [Stage::TrustBoth, Stage::Reissued, Stage::Done];

    /// Its name in the journal and the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prepared => "prepared",
            Stage::TrustBoth => "trust-both",
            Stage::Reissued => "reissue",
            Stage::Done => "drop-old",
        }
    }
}

/// One CA's rotation in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JournalEntry {
    /// The last stage completed.
    pub stage: Stage,
    /// SHA-256 of the old CA certificate's DER, hex.
    pub old_fingerprint: String,
    /// SHA-256 of the new CA certificate's DER, hex.
    pub new_fingerprint: String,
    /// When the stage was reached, RFC 3339.
    pub updated: String,
    /// The stage being rolled out, once its first upload may have happened: a rerun restarts
    /// everything that stage touches, uploaded by this run or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Stage>,
    /// When the cluster CA's `kube-root-ca.crt` ConfigMap was seen carrying both CAs (end of
    /// the trust-both stage), RFC 3339: pods whose containers started earlier may know only
    /// the old CA ([`workloads`](super::workloads)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_at: Option<String>,
}

/// The rotation journal: per CA (kubeadm's name), the stage reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Journal {
    /// Rotations, by CA name (`ca`, `etcd-ca`, `front-proxy-ca`).
    pub cas: BTreeMap<String, JournalEntry>,
}

impl Journal {
    /// Reads the journal; empty when the file does not exist.
    pub fn load(layout: &StateLayout) -> Result<Self, RotateError> {
        let path = layout.rotation_journal();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| RotateError::Journal {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RotateError::Journal {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// Writes the journal atomically (0600, like the rest of the state directory's secrets).
    pub fn save(&self, layout: &StateLayout) -> Result<(), RotateError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| RotateError::Journal {
            path: layout.rotation_journal(),
            message: e.to_string(),
        })?;
        pki::write_file(&layout.rotation_journal(), text.as_bytes(), 0o600)
            .map_err(CertsError::from)?;
        Ok(())
    }

    /// Records that `ca` reached `stage`.
    pub fn set(&mut self, ca: CaName, stage: Stage, now: OffsetDateTime) {
        if let Some(e) = self.cas.get_mut(ca.name()) {
            e.stage = stage;
            e.started = None;
            e.updated = rfc3339(now);
        }
    }

    /// Records that `ca`'s `stage` is being rolled out.
    pub fn start(&mut self, ca: CaName, stage: Stage) {
        if let Some(e) = self.cas.get_mut(ca.name()) {
            e.started = Some(stage);
        }
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Errors of CA rotation. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// From reading, issuing or distributing certificates.
    #[error(transparent)]
    Certs(Box<CertsError>),
    /// The journal cannot be read or written.
    #[error("rotation journal {path}: {message}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A CA this version cannot rotate.
    #[error("rotating {ca} is not supported yet (supported: {supported})")]
    Unsupported {
        /// The CA asked for.
        ca: String,
        /// What can be rotated.
        supported: String,
    },
    /// `--resume` without a rotation in progress.
    #[error("--resume: no rotation of {ca} is in progress")]
    NothingToResume {
        /// The CA.
        ca: String,
    },
    /// The archive does not hold what the journal says it should.
    #[error("{ca}: the rotation archive {path} is unusable: {message}")]
    Archive {
        /// The CA.
        ca: String,
        /// The archive file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The CA to rotate is not a single certificate (a bundle left by another tool).
    #[error("{path} holds {count} certificates, not one CA: cannot start a rotation")]
    NotSingle {
        /// The CA file.
        path: PathBuf,
        /// How many certificates it holds.
        count: usize,
    },
    /// The drop stage found certificates not signed by the new CA.
    #[error(
        "{ca}: not dropping the old CA: {} certificate(s) are not signed by the new one: {}",
        .unverified.len(),
        .unverified.iter().map(|u| format!("{}/{} ({})", u.host, u.name, u.reason)).collect::<Vec<_>>().join(", ")
    )]
    Unverified {
        /// The CA.
        ca: String,
        /// What is not signed by the new CA.
        unverified: Vec<Unverified>,
    },
    /// A stage failed on some hosts; the journal still says the previous stage.
    #[error("{ca}: stage {stage} failed on {hosts}; fix and rerun (or --resume)")]
    StageFailed {
        /// The CA.
        ca: String,
        /// The stage.
        stage: &'static str,
        /// The failed hosts, comma-separated.
        hosts: String,
    },
    /// Refreshing what the Kubernetes API publishes of the CAs failed.
    #[error("{what}: {message}")]
    Api {
        /// What was being refreshed.
        what: &'static str,
        /// The API's answer.
        message: String,
    },
    /// Controller managers that still sign CSRs with `ca.crt` (installed before the signer
    /// file existed): the trust stage would turn it into a bundle their signer refuses.
    #[error("the controller manager on {hosts} signs with ca.crt, not {file}: run `clusterkit install --phase pki` and `--phase control-plane` first")]
    OldSigner {
        /// The hosts, comma-separated.
        hosts: String,
        /// The signer file it should name.
        file: String,
    },
    /// A node could not be read for the drop stage's check.
    #[error("{ca}: cannot check {host} before dropping the old CA: {source}")]
    Read {
        /// The CA.
        ca: String,
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: Box<CertsError>,
    },
}

impl From<CertsError> for RotateError {
    fn from(e: CertsError) -> Self {
        Self::Certs(Box::new(e))
    }
}

/// Where the API server publishes the CAs it trusts for clients and the front proxy
/// (`kube-system`), for aggregated API servers and webhooks.
const AUTH_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// What the Kubernetes API publishes of the rotated CAs, brought in line with the state
/// directory after a stage (through the admin.conf of that stage):
///
/// - the `cluster-info` ConfigMap in `kube-public` (what `kubeadm join` discovers the CA
///   from), when the join phase made one, gets the cluster CA's current bundle;
/// - after the drop stage, [`AUTH_CONFIGMAP`] is deleted so the API servers publish it again
///   with only the CAs they now read: they add to what it holds and never remove a CA that is
///   still valid. Waits until it is back.
///
/// The API publishes nothing of etcd's CA: for it alone, nothing is asked.
async fn refresh_api(cluster: &Cluster, cas: &[CaName], stage: Stage) -> Result<(), RotateError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    if !cas
        .iter()
        .any(|c| matches!(c, CaName::Kubernetes | CaName::FrontProxy))
    {
        return Ok(());
    }
    let err = |what: &'static str| {
        move |e: kube::Error| RotateError::Api {
            what,
            message: e.to_string(),
        }
    };
    let client = api_client(cluster).await?;
    if cas.contains(&CaName::Kubernetes) {
        let public: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
        if public
            .get_opt("cluster-info")
            .await
            .map_err(err("reading kube-public/cluster-info"))?
            .is_some()
        {
            let kubeconfig =
                crate::phases::join::cluster_info_kubeconfig(cluster).map_err(|e| {
                    RotateError::Api {
                        what: "cluster-info kubeconfig",
                        message: e.to_string(),
                    }
                })?;
            let patch = serde_json::json!({ "data": { "kubeconfig": kubeconfig } });
            public
                .patch(
                    "cluster-info",
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(err("updating kube-public/cluster-info"))?;
        }
    }
    if stage != Stage::Done {
        return Ok(());
    }
    let (ns, name) = AUTH_CONFIGMAP;
    let auth: Api<ConfigMap> = Api::namespaced(client, ns);
    match auth.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            return Err(err(
                "deleting kube-system/extension-apiserver-authentication",
            )(e))
        }
    }
    crate::poll::wait_until(Duration::from_secs(180), || async {
        match auth.get_opt(name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(RotateError::Api {
                what: "kube-system/extension-apiserver-authentication",
                message: "not published again by the API server within 180s".into(),
            }),
            Err(e) => Err(err(
                "reading kube-system/extension-apiserver-authentication",
            )(e)),
        }
    })
    .await
}

/// A Kubernetes client with the state directory's admin.conf.
async fn api_client(cluster: &Cluster) -> Result<kube::Client, RotateError> {
    crate::kube_api::admin_client(cluster, None)
        .await
        .map_err(|e| RotateError::Api {
            what: "kubernetes client",
            message: e.to_string(),
        })
}

/// The command that says, for each of `files` that exists (a unit file, a static pod
/// manifest), `yes` when it carries `flag` and `no` when not.
pub fn flag_check_command(files: &[String], flag: &str) -> Command {
    for_each_file(
        files,
        &format!(
            "if [ -f \"$f\" ]; then if grep -qF -- {} \"$f\"; then echo yes; else echo no; fi; fi",
            shell_quote(flag)
        ),
    )
}

/// The command that runs `body` (shell, the file in `$f`) for each of `files`, in order.
fn for_each_file(files: &[String], body: &str) -> Command {
    let mut script = String::from("for f in");
    for f in files {
        script.push(' ');
        script.push_str(&shell_quote(f));
    }
    script.push_str(&format!("; do {body}; done"));
    Command::new(script)
}

/// Whether the node's controller manager (unit file or static pod, when it has one) signs
/// CSRs with [`CLUSTER_SIGNING_CERT`](clusterkit_core::layout::CLUSTER_SIGNING_CERT).
pub async fn signs_with_signer_file(exec: &dyn Executor) -> Result<bool, CertsError> {
    let node = NodeLayout::DEFAULT;
    let unit = node.units.kube_controller_manager;
    let flag = format!(
        "--cluster-signing-cert-file={}",
        node.pki(clusterkit_core::layout::CLUSTER_SIGNING_CERT)
    );
    let out = exec
        .run_checked(&flag_check_command(
            &[node.service_file(unit), node.manifest(unit)],
            &flag,
        ))
        .await?;
    Ok(!out.stdout_str().lines().any(|l| l.trim() == "no"))
}

/// The CAs `rotate-ca` can rotate.
pub const ROTATABLE: [CaName; 3] = [CaName::Kubernetes, CaName::FrontProxy, CaName::Etcd];

/// Concatenates certificates (PEM) into one bundle, in order, each block once.
pub fn bundle(pems: &[&str]) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in pems {
        for b in pki::pem_blocks(p) {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out.concat()
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The archived CAs of one rotation.
struct Archive {
    old: LoadedCa,
    new: LoadedCa,
}

fn archive_paths(dir: &Path, which: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{which}.crt")),
        dir.join(format!("{which}.key")),
    )
}

impl Archive {
    /// The trust bundle of `stage` (the signing CA first) and its signing CA; `None` before
    /// the first rolled stage.
    fn stage_bundle(&self, stage: Stage) -> Option<(String, &LoadedCa)> {
        let (old, new) = (&self.old, &self.new);
        Some(match stage {
            Stage::Prepared => return None,
            Stage::TrustBoth => (bundle(&[&old.cert_pem, &new.cert_pem]), old),
            Stage::Reissued => (bundle(&[&new.cert_pem, &old.cert_pem]), new),
            Stage::Done => (bundle(&[&new.cert_pem]), new),
        })
    }

    fn load(layout: &StateLayout, ca: CaName) -> Result<Self, RotateError> {
        let dir = layout.rotation_archive(ca.name());
        let load = |which: &str| -> Result<LoadedCa, RotateError> {
            let (crt, key) = archive_paths(&dir, which);
            LoadedCa::load_pair(&crt, &key, ca).map_err(|e| RotateError::Archive {
                ca: ca.name().into(),
                path: crt.clone(),
                message: e.to_string(),
            })
        };
        Ok(Self {
            old: load("old")?,
            new: load("new")?,
        })
    }
}

/// Starts a rotation of `ca`: archives the current CA (which must be a single certificate)
/// and generates the new one next to it; the journal gets [`Stage::Prepared`]. Nothing else
/// changes: the state directory's CA files are rewritten by the stages.
pub fn prepare(
    layout: &StateLayout,
    input: &PkiInput,
    ca: CaName,
    journal: &mut Journal,
    now: OffsetDateTime,
) -> Result<(), RotateError> {
    let current = LoadedCa::load(layout, ca).map_err(CertsError::from)?;
    let count = pki::pem_blocks(&current.cert_pem).len();
    if count != 1 {
        return Err(RotateError::NotSingle {
            path: layout.pki_dir().join(format!("{}.crt", ca.base())),
            count,
        });
    }
    let dir = layout.rotation_archive(ca.name());
    let (old_crt, old_key) = archive_paths(&dir, "old");
    let (new_crt, new_key) = archive_paths(&dir, "new");
    let key_src = layout.pki_dir().join(format!("{}.key", ca.base()));
    let key_pem = std::fs::read(&key_src).map_err(|source| {
        CertsError::from(PkiError::Io {
            op: "read",
            path: key_src.clone(),
            source,
        })
    })?;
    pki::write_file(&old_key, &key_pem, 0o600).map_err(CertsError::from)?;
    pki::write_file(&old_crt, current.cert_pem.as_bytes(), 0o644).map_err(CertsError::from)?;
    let fresh = pki::new_ca(ca, now, input.validity.ca).map_err(CertsError::from)?;
    pki::write_file(&new_key, fresh.key_pem().as_bytes(), 0o600).map_err(CertsError::from)?;
    pki::write_file(&new_crt, fresh.cert_pem.as_bytes(), 0o644).map_err(CertsError::from)?;
    journal.cas.insert(
        ca.name().to_string(),
        JournalEntry {
            stage: Stage::Prepared,
            old_fingerprint: fingerprint(current.cert_der()),
            new_fingerprint: fingerprint(fresh.cert_der()),
            updated: rfc3339(now),
            started: None,
            trusted_at: None,
        },
    );
    journal.save(layout)
}

/// The state-directory files of the cluster CA's family: the CA itself and its signer copy,
/// every leaf it signs, every kubeconfig. What each stage distributes (only what differs on a
/// node is uploaded).
pub fn family_files(
    input: &PkiInput,
    layout: &StateLayout,
    ca: CaName,
) -> Result<Vec<PathBuf>, CertsError> {
    let pki_dir = layout.pki_dir();
    let mut out = vec![
        pki_dir.join(format!("{}.crt", ca.base())),
        pki_dir.join(format!("{}.key", ca.base())),
    ];
    if ca == CaName::Kubernetes {
        out.push(pki_dir.join(clusterkit_core::layout::CLUSTER_SIGNING_CERT));
    }
    for r in renewables(input, layout, None)? {
        match &r {
            Renewable::Cert(spec) if spec.ca == ca => {
                out.push(spec.cert_path(layout));
                out.push(spec.key_path(layout));
            }
            Renewable::Cert(_) => {}
            _ if ca == CaName::Kubernetes => out.push(layout.root.join(r.rel_path())),
            _ => {}
        }
    }
    Ok(out)
}

/// Sets every kubeconfig's `certificate-authority-data` to `bundle_pem` (files that exist);
/// the operator's admin.conf follows the state copy. Returns the files rewritten.
fn set_kubeconfig_cas(
    cluster: &Cluster,
    input: &PkiInput,
    layout: &StateLayout,
    bundle_pem: &str,
) -> Result<Vec<PathBuf>, CertsError> {
    let data = B64.encode(bundle_pem);
    let mut changed = Vec::new();
    for r in renewables(input, layout, None)? {
        if matches!(r, Renewable::Cert(_)) {
            continue;
        }
        let path = layout.root.join(r.rel_path());
        if !path.is_file() {
            continue;
        }
        let mut k = Kubeconfig::load(&path)?;
        if k.clusters
            .iter()
            .all(|c| c.cluster.certificate_authority_data == data)
        {
            continue;
        }
        for c in &mut k.clusters {
            c.cluster.certificate_authority_data = data.clone();
        }
        pki::write_file(&path, k.to_yaml()?.as_bytes(), 0o600)?;
        changed.push(path);
    }
    let admin = layout.admin_conf();
    if admin.is_file() {
        let data = std::fs::read(&admin).map_err(|source| PkiError::Io {
            op: "read",
            path: admin.clone(),
            source,
        })?;
        let op = operator_admin_conf(cluster);
        if std::fs::read(&op).ok().as_deref() != Some(&data[..]) {
            pki::write_file(&op, &data, 0o600)?;
        }
    }
    Ok(changed)
}

/// Writes the CA files of the state directory for a stage: the bundle (signing CA first), the
/// signing key, the signer copy.
fn write_ca_files(
    layout: &StateLayout,
    ca: CaName,
    bundle_pem: &str,
    signing: &LoadedCa,
) -> Result<(), CertsError> {
    let crt = layout.pki_dir().join(format!("{}.crt", ca.base()));
    let key = layout.pki_dir().join(format!("{}.key", ca.base()));
    let key_pem = signing.key_pem();
    if pki::read_optional(&key)?.as_deref() != Some(key_pem.as_str()) {
        pki::write_file(&key, key_pem.as_bytes(), 0o600)?;
    }
    if pki::read_optional(&crt)?.as_deref() != Some(bundle_pem) {
        pki::write_file(&crt, bundle_pem.as_bytes(), 0o644)?;
    }
    if ca == CaName::Kubernetes {
        let loaded = LoadedCa::load(layout, ca)?;
        pki::write_signing_cert(layout, &loaded)?;
    }
    Ok(())
}

/// Applies the local (state directory) part of `stage`; idempotent, rebuilt from the archive.
/// Returns what was re-issued (stage 2 only).
pub fn apply_local(
    cluster: &Cluster,
    input: &PkiInput,
    layout: &StateLayout,
    ca: CaName,
    stage: Stage,
    now: OffsetDateTime,
) -> Result<Vec<Renewed>, RotateError> {
    let a = Archive::load(layout, ca)?;
    let Some((b, signing)) = a.stage_bundle(stage) else {
        return Ok(vec![]);
    };
    write_ca_files(layout, ca, &b, signing)?;
    if ca == CaName::Kubernetes {
        set_kubeconfig_cas(cluster, input, layout, &b)?;
    }
    if stage != Stage::Reissued {
        return Ok(vec![]);
    }
    // Only what the new CA did not sign yet: a rerun re-issues nothing twice.
    let todo: Vec<Renewable> = renewables(input, layout, None)?
        .into_iter()
        .filter(|r| match r {
            Renewable::Cert(spec) => spec.ca == ca,
            _ => ca == CaName::Kubernetes,
        })
        .filter(|r| {
            let path = layout.root.join(r.rel_path());
            !signed_by_file(&path, !matches!(r, Renewable::Cert(_)), &a.new)
        })
        .collect();
    Ok(renew_local(cluster, input, layout, &todo, now)?)
}

/// Deletes the archived keys once the rotation is over (the certificates stay, for the record).
fn drop_archived_keys(layout: &StateLayout, ca: CaName) -> Result<(), CertsError> {
    let dir = layout.rotation_archive(ca.name());
    for which in ["old", "new"] {
        let (_, key) = archive_paths(&dir, which);
        match std::fs::remove_file(&key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PkiError::Io {
                    op: "remove",
                    path: key,
                    source,
                }
                .into())
            }
        }
    }
    Ok(())
}

/// Whether the certificate (or a kubeconfig's client certificate) in `path` is signed by `ca`.
fn signed_by_file(path: &Path, kubeconfig: bool, ca: &LoadedCa) -> bool {
    let pem = if kubeconfig {
        Kubeconfig::load(path)
            .ok()
            .and_then(|k| k.client_cert_pem())
    } else {
        std::fs::read_to_string(path).ok()
    };
    pem.and_then(|p| pki::pem_to_der(&p).ok())
        .is_some_and(|der| signed_by(&der, ca.cert_der()))
}

/// Whether the certificate `der` names `ca_der`'s subject as issuer and carries its signature.
pub fn signed_by(der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// A certificate the drop stage refuses to leave behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unverified {
    /// The host, or `local` for the state directory.
    pub host: String,
    /// Its name, as `check-expiration` shows it.
    pub name: String,
    /// Why (`signed by another CA`).
    pub reason: String,
}

/// The leaves of `ca`'s family in the state directory that `new` did not sign.
pub fn unverified_local(
    input: &PkiInput,
    layout: &StateLayout,
    ca: CaName,
    new: &LoadedCa,
) -> Result<Vec<Unverified>, CertsError> {
    let mut out = Vec::new();
    for r in renewables(input, layout, None)? {
        let conf = !matches!(r, Renewable::Cert(_));
        if let Renewable::Cert(spec) = &r {
            if spec.ca != ca {
                continue;
            }
        } else if ca != CaName::Kubernetes {
            continue;
        }
        let path = layout.root.join(r.rel_path());
        if path.is_file() && !signed_by_file(&path, conf, new) {
            out.push(Unverified {
                host: "local".into(),
                name: r.name().to_string(),
                reason: "not signed by the new CA".into(),
            });
        }
    }
    Ok(out)
}

/// The certificates read from a node ([`read_node`]) that were issued by a CA with `ca`'s
/// name but are not signed by `new`: what still depends on the old CA.
pub fn unverified_node(
    host: &str,
    ca: CaName,
    files: &[NodeFile],
    remote: &BTreeMap<String, RemoteFile>,
    new: &LoadedCa,
) -> Vec<Unverified> {
    let mut out = Vec::new();
    for f in files {
        let Some(r) = remote.get(&f.remote).filter(|r| r.present) else {
            continue;
        };
        let info = match f.kind {
            FileKind::Cert | FileKind::CertAndKey => CertInfo::from_pem(&r.data).ok(),
            FileKind::Kubeconfig => match kubeconfig_client_cert(&r.data) {
                Ok(ClientCert::Embedded(info)) => Some(info),
                _ => None,
            },
        };
        let Some(info) = info else { continue };
        if info.is_ca || info.issuer != ca.common_name() {
            continue;
        }
        if !signed_by(&info.der, new.cert_der()) {
            out.push(Unverified {
                host: host.to_string(),
                name: f.name.clone(),
                reason: format!("serial {} is signed by another {}", info.serial, ca.name()),
            });
        }
    }
    out
}

/// What one stage did (or, with `--check`, would do) on one host.
#[derive(Clone, Debug, Serialize)]
pub struct HostStage {
    /// The host.
    pub host: String,
    /// `ok`, `failed` or `planned`.
    pub status: &'static str,
    /// Remote paths uploaded (planned: the CA family's files the host holds).
    pub uploaded: Vec<String>,
    /// Units restarted (planned: that would restart if those files change).
    pub restarted: Vec<String>,
    /// The error, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One stage of a rotation (of one or more CAs rolled together).
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// The CAs (kubeadm's names) this stage concerned.
    pub cas: Vec<String>,
    /// The stage.
    pub stage: &'static str,
    /// `done` (an earlier run did it), `ran`, `failed`, `planned`.
    pub status: &'static str,
    /// Re-issued certificates (stage 2).
    pub renewed: Vec<Renewed>,
    /// Per host.
    pub hosts: Vec<HostStage>,
    /// On the trust-both stage while the cluster CA's rotation is before its drop stage: the
    /// pods that may know only the old CA ([`workloads`](super::workloads)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<workloads::StalePod>,
}

/// What a stage over the CA families `only` ([`families`]) would do on `host` (`--check`): the
/// family's files the host holds, uploaded, and what reads them and runs in this cluster,
/// restarted (no haproxy without the local load balancer, no kube-proxy unit where it is a
/// DaemonSet).
fn planned(
    cluster: &Cluster,
    layout: &StateLayout,
    host: &Host,
    only: &HashSet<PathBuf>,
) -> HostStage {
    let units = NodeLayout::DEFAULT.units;
    let uploaded: Vec<String> = node_mappings(layout, host)
        .into_iter()
        .filter(|m| only.contains(&m.local))
        .map(|m| m.remote.to_string_lossy().into_owned())
        .collect();
    let runs = |u: &&str| {
        (*u != units.haproxy || cluster.kubernetes.load_balancer.local)
            && (*u != units.kube_proxy || !crate::phases::addons::kube_proxy_daemonset(cluster))
    };
    HostStage {
        host: host.name.clone(),
        status: "planned",
        restarted: units_for(&uploaded)
            .into_iter()
            .filter(runs)
            .map(String::from)
            .collect(),
        uploaded,
        error: None,
    }
}

/// Which of `cas` still need `stage`, by the journal.
fn needing(journal: &Journal, cas: &[CaName], stage: Stage) -> Vec<CaName> {
    cas.iter()
        .copied()
        .filter(|ca| journal.cas.get(ca.name()).is_none_or(|e| e.stage < stage))
        .collect()
}

/// The CA family files of `cas`, together.
fn families(
    input: &PkiInput,
    layout: &StateLayout,
    cas: &[CaName],
) -> Result<HashSet<PathBuf>, CertsError> {
    let mut out = HashSet::new();
    for ca in cas {
        out.extend(family_files(input, layout, *ca)?);
    }
    Ok(out)
}

/// The drop stage's check for `cas`: every certificate of theirs, in the state directory and
/// on every node, signed by its new CA.
async fn check_signed_by_new(
    cluster: &Cluster,
    layout: &StateLayout,
    input: &PkiInput,
    cas: &[CaName],
    nodes: &[(&Host, Arc<dyn Executor>)],
) -> Result<(), RotateError> {
    let mut news = Vec::new();
    let mut bad = Vec::new();
    for ca in cas {
        let a = Archive::load(layout, *ca)?;
        bad.extend(unverified_local(input, layout, *ca, &a.new)?);
        news.push((*ca, a.new));
    }
    for (h, exec) in nodes {
        let files = node_files(cluster, layout, h);
        let remote =
            read_node(exec.as_ref(), &files)
                .await
                .map_err(|source| RotateError::Read {
                    ca: cas.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
                    host: h.name.clone(),
                    source: Box::new(source),
                })?;
        for (ca, new) in &news {
            bad.extend(unverified_node(&h.name, *ca, &files, &remote, new));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(RotateError::Unverified {
        ca: cas.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        unverified: bad,
    })
}

/// How [`rotate_cas`] runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RotateOptions {
    /// Only report what each stage left would upload and restart per host.
    pub check: bool,
    /// A rotation of one of the CAs must be in progress.
    pub resume: bool,
    /// Rollout-restart the owners of the pods that may know only the old cluster CA before
    /// the reissue stage (and wait for them).
    pub restart_workloads: bool,
}

/// Rotates `cas` on `nodes` (every host of the cluster, connected), rolling each stage for all
/// of them at once (one restart of each component per stage): continues from the journal,
/// runs the stages left, records each in the journal once every node has it. After the
/// trust-both stage of the cluster CA, lists (and with `restart_workloads` restarts) the pods
/// that may know only the old CA. Appends one report per stage to `done` (also when it
/// returns `Err`, for the caller to print).
#[allow(clippy::too_many_arguments)]
pub async fn rotate_cas(
    cluster: &Cluster,
    layout: &StateLayout,
    cas: &[CaName],
    nodes: &[(&Host, Arc<dyn Executor>)],
    etcd_health: EtcdHealth<'_>,
    fan: &Fanout,
    opts: RotateOptions,
    done: &mut Vec<StageReport>,
) -> Result<(), RotateError> {
    let RotateOptions { check, resume, .. } = opts;
    let names = |cas: &[CaName]| cas.iter().map(|c| c.name().to_string()).collect::<Vec<_>>();
    if let Some(ca) = cas.iter().find(|c| !ROTATABLE.contains(c)) {
        return Err(RotateError::Unsupported {
            ca: ca.name().into(),
            supported: ROTATABLE.map(|c| c.name()).join(", "),
        });
    }
    let input = pki_input(cluster);
    let mut journal = Journal::load(layout)?;
    let in_progress =
        |j: &Journal, ca: &CaName| j.cas.get(ca.name()).is_some_and(|e| e.stage != Stage::Done);
    if resume && !cas.iter().any(|ca| in_progress(&journal, ca)) {
        return Err(RotateError::NothingToResume {
            ca: names(cas).join(","),
        });
    }
    let report = |cas: &[CaName], stage: Stage, status, renewed, hosts| StageReport {
        cas: names(cas),
        stage: stage.as_str(),
        status,
        renewed,
        hosts,
        workloads: vec![],
    };
    if check {
        for stage in Stage::ROLLED {
            let todo = needing(&journal, cas, stage);
            if todo.is_empty() {
                done.push(report(cas, stage, "done", vec![], vec![]));
                continue;
            }
            let only = families(&input, layout, &todo)?;
            let hosts = nodes
                .iter()
                .map(|(h, _)| planned(cluster, layout, h, &only))
                .collect();
            done.push(report(&todo, stage, "planned", vec![], hosts));
        }
        // The pods the operator will have to restart (or `--restart-workloads` will), on the
        // trust-both stage's report as in a run.
        if cas.contains(&CaName::Kubernetes) {
            let stale = stale_workloads(cluster, &journal, false).await?;
            if let Some(r) = done
                .iter_mut()
                .find(|r| r.stage == Stage::TrustBoth.as_str())
            {
                r.workloads = stale;
            }
        }
        return Ok(());
    }
    if needing(&journal, cas, Stage::TrustBoth).contains(&CaName::Kubernetes) {
        let mut old = Vec::new();
        for (h, exec) in nodes.iter().filter(|(h, _)| h.has_role(Role::ControlPlane)) {
            if !signs_with_signer_file(exec.as_ref()).await? {
                old.push(h.name.clone());
            }
        }
        if !old.is_empty() {
            return Err(RotateError::OldSigner {
                hosts: old.join(", "),
                file: NodeLayout::DEFAULT.pki(clusterkit_core::layout::CLUSTER_SIGNING_CERT),
            });
        }
    }
    // A rerun after the end changes nothing: only CAs never rotated (or mid-rotation) move.
    for ca in cas {
        if !journal.cas.contains_key(ca.name()) {
            prepare(layout, &input, *ca, &mut journal, now())?;
            tracing::info!(ca = ca.name(), "new CA generated, old CA archived");
        }
    }
    for stage in Stage::ROLLED {
        // Between stage 1 and stage 2 (the API server's new certificate is what a client
        // trusting only the old CA cannot verify): the pods that may know only the old CA.
        if stage == Stage::Reissued && cas.contains(&CaName::Kubernetes) {
            let stale = stale_workloads(cluster, &journal, opts.restart_workloads).await?;
            if let Some(r) = done
                .iter_mut()
                .rev()
                .find(|r| r.stage == Stage::TrustBoth.as_str())
            {
                r.workloads = stale;
            }
        }
        let todo = needing(&journal, cas, stage);
        if todo.is_empty() {
            done.push(report(cas, stage, "done", vec![], vec![]));
            continue;
        }
        if stage == Stage::Done {
            check_signed_by_new(cluster, layout, &input, &todo, nodes).await?;
        }
        let mut renewed = Vec::new();
        for ca in &todo {
            renewed.extend(apply_local(cluster, &input, layout, *ca, stage, now())?);
        }
        let only = families(&input, layout, &todo)?;
        // A stage an earlier run began may have uploaded files whose users never restarted.
        let resumed = todo
            .iter()
            .any(|ca| journal.cas.get(ca.name()).and_then(|e| e.started) == Some(stage));
        for ca in &todo {
            journal.start(*ca, stage);
        }
        journal.save(layout)?;
        let restart = if resumed {
            Restart::All
        } else {
            Restart::Changed
        };
        let settle = crate::phases::load_balancer::readmit_delay(cluster);
        let mut results = distribute(
            layout,
            nodes,
            Some(&only),
            restart,
            etcd_health,
            settle,
            fan,
        )
        .await;
        if todo.contains(&CaName::Kubernetes) {
            let archive = Archive::load(layout, CaName::Kubernetes)?;
            // One host at a time, as the rest of the rotation.
            for (r, (h, exec)) in results.iter_mut().zip(nodes) {
                let Ok(outcome) = &mut r.result else { continue };
                match roll_kubelet(exec.as_ref(), cluster, layout, h, &archive, stage, now()).await
                {
                    Ok(changed) if changed.is_empty() => {}
                    Ok(changed) => {
                        outcome.uploaded.extend(changed);
                        let kubelet = NodeLayout::DEFAULT.units.kubelet.to_string();
                        if !outcome.restarted.contains(&kubelet) {
                            outcome.restarted.push(kubelet);
                        }
                    }
                    Err(e) => r.result = Err(e),
                }
            }
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r.result.is_err())
            .map(|r| r.host.clone())
            .collect();
        let hosts = results
            .into_iter()
            .map(|r| match r.result {
                Ok(o) => HostStage {
                    host: r.host,
                    status: "ok",
                    uploaded: o.uploaded,
                    restarted: o.restarted,
                    error: None,
                },
                Err(e) => HostStage {
                    host: r.host,
                    status: "failed",
                    uploaded: vec![],
                    restarted: vec![],
                    error: Some(e.to_string()),
                },
            })
            .collect();
        if !failed.is_empty() {
            done.push(report(&todo, stage, "failed", renewed, hosts));
            return Err(RotateError::StageFailed {
                ca: names(&todo).join(","),
                stage: stage.as_str(),
                hosts: failed.join(", "),
            });
        }
        // Before the journal: a failure here reruns the stage (nothing left to upload) and
        // this.
        refresh_api(cluster, &todo, stage).await?;
        done.push(report(&todo, stage, "ran", renewed, hosts));
        if stage == Stage::TrustBoth && todo.contains(&CaName::Kubernetes) {
            let a = Archive::load(layout, CaName::Kubernetes)?;
            wait_root_ca(cluster, &bundle(&[&a.old.cert_pem, &a.new.cert_pem])).await?;
            if let Some(e) = journal.cas.get_mut(CaName::Kubernetes.name()) {
                e.trusted_at = Some(rfc3339(now()));
            }
            wait_pod_volumes(nodes, &a).await?;
        }
        for ca in &todo {
            journal.set(*ca, stage, now());
        }
        journal.save(layout)?;
        if stage == Stage::Done {
            for ca in &todo {
                drop_archived_keys(layout, *ca)?;
            }
        }
        tracing::info!(cas = ?names(&todo), stage = stage.as_str(), "stage done");
    }
    Ok(())
}

/// The kubeconfigs of a node's kubelet that clusterkit does not keep in the state directory:
/// the bootstrap kubeconfig, and on nodes that joined by TLS bootstrap the kubelet.conf the
/// kubelet wrote itself. Their `certificate-authority-data` follows each stage's bundle on the
/// node ([`set_ca_data_command`]).
fn kubelet_own_kubeconfigs(host: &Host) -> Vec<String> {
    let node = NodeLayout::DEFAULT;
    let mut out = vec![node.bootstrap_kubelet_conf.to_string()];
    if !host.has_role(Role::ControlPlane) {
        out.push(node.kubeconfig(clusterkit_core::layout::kubeconfig_file::KUBELET));
    }
    out
}

/// The command that sets `certificate-authority-data` to `data` (base64) in each of `files`
/// that exists and has another value, keeping its mode; prints the files it changed.
pub fn set_ca_data_command(files: &[String], data: &str) -> Command {
    // Base64 has no `|`: the sed separator.
    for_each_file(
        files,
        &format!(
            "if [ -f \"$f\" ] && grep -q '^ *certificate-authority-data:' \"$f\" && ! grep -q '^ *certificate-authority-data: {data}$' \"$f\"; then \
               sed -i 's|^\\( *certificate-authority-data:\\).*|\\1 {data}|' \"$f\" && echo \"$f\"; fi"
        ),
    )
}

/// The kubelet's side of a cluster CA stage on one node, after [`distribute`]:
///
/// - the kubeconfigs of [`kubelet_own_kubeconfigs`] get the stage's bundle (a kubelet that
///   trusts only the old CA cannot reach an API server serving with the new one);
/// - in the reissue stage, the kubelet's rotated client and serving certificates
///   (`kubelet-client-current.pem`, `kubelet-server-current.pem`) the new CA did not sign are
///   replaced by ones it signed, for the same node identity (CN, group `system:nodes`) and, for
///   serving, the same names (approved against cluster.yaml when the kubelet asked), written
///   next to them as the kubelet's own store names them and linked as current. The kubelet
///   keeps rotating them through CSRs, which the controller manager now signs with the new CA.
///   (Left alone, they would be the old CA's until 70–90 % of their life: the drop stage would
///   refuse, and the API server could not verify the kubelets for logs and exec.)
///
/// The kubelet restarts when something changed. Returns the paths changed.
async fn roll_kubelet(
    exec: &dyn Executor,
    cluster: &Cluster,
    layout: &StateLayout,
    host: &Host,
    archive: &Archive,
    stage: Stage,
    now: OffsetDateTime,
) -> Result<Vec<String>, CertsError> {
    let Some((b, _)) = archive.stage_bundle(stage) else {
        return Ok(vec![]);
    };
    let node = NodeLayout::DEFAULT;
    let out = exec
        .run_checked(&set_ca_data_command(
            &kubelet_own_kubeconfigs(host),
            &B64.encode(&b),
        ))
        .await?;
    let mut changed: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    if stage == Stage::Reissued {
        let pairs = [
            (node.kubelet_client_pem, "client", pki::Usage::ClientAuth),
            (node.kubelet_server_pem, "server", pki::Usage::ServerAuth),
        ];
        let files: Vec<NodeFile> = node_files(cluster, layout, host)
            .into_iter()
            .filter(|f| pairs.iter().any(|(p, _, _)| f.remote == *p))
            .collect();
        let remote = read_node(exec, &files).await?;
        for (current_path, kind, usage) in pairs {
            let current = remote
                .get(current_path)
                .filter(|r| r.present)
                .and_then(|r| CertInfo::from_pem(&r.data).ok());
            let Some(info) = current.filter(|i| !signed_by(&i.der, archive.new.cert_der())) else {
                continue;
            };
            let (dns_names, ips) = subject_alt_names(&info.der);
            let spec = pki::CertSpec {
                name: format!("kubelet-{kind}/{}", host.name),
                base: PathBuf::new(),
                ca: CaName::Kubernetes,
                common_name: info.subject.clone(),
                organization: vec![crate::csr::NODES_GROUP.into()],
                usages: vec![usage],
                dns_names,
                ips,
            };
            let validity = pki_input(cluster).validity.leaf;
            let (cert, key) = pki::issue_leaf(&spec, &archive.new, now, validity)?;
            // The kubelet's store names its pairs `kubelet-<kind>-<time>.pem` and links the
            // current one; it refuses a current that is not a link.
            let stamp = chrono::DateTime::from_timestamp(now.unix_timestamp(), 0)
                .map(|t| t.format("%Y-%m-%d-%H-%M-%S").to_string())
                .unwrap_or_default();
            let pair = format!("{}/kubelet-{kind}-{stamp}.pem", node.kubelet_pki_dir);
            exec.upload(
                format!("{cert}{key}").as_bytes(),
                &pair,
                &UploadOptions {
                    mode: 0o600,
                    owner: None,
                    create_parents: true,
                },
            )
            .await?;
            exec.run_checked(&Command::new(format!(
                "ln -sfn {} {}",
                shell_quote(&pair),
                shell_quote(current_path)
            )))
            .await?;
            changed.push(current_path.to_string());
        }
    }
    if !changed.is_empty() {
        restart_unit(exec, node.units.kubelet, Duration::from_secs(120)).await?;
    }
    Ok(changed)
}

/// The DNS names and IP addresses a certificate names (kept when the kubelet's serving
/// certificate is re-issued: clusterkit approved them against cluster.yaml).
fn subject_alt_names(der: &[u8]) -> (Vec<String>, Vec<std::net::IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return (dns, ips);
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(std::net::IpAddr::from(
                        <[u8; 4]>::try_from(*b).unwrap_or_default(),
                    )),
                    16 => ips.push(std::net::IpAddr::from(
                        <[u8; 16]>::try_from(*b).unwrap_or_default(),
                    )),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// Waits until every `kube-root-ca.crt` ConfigMap holds every certificate of `bundle_pem`
/// (the controller manager publishes its `--root-ca-file` in every namespace).
async fn wait_root_ca(cluster: &Cluster, bundle_pem: &str) -> Result<(), RotateError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams};
    let client = api_client(cluster).await?;
    let api: Api<ConfigMap> = Api::all(client);
    let want = pki::pem_blocks(bundle_pem);
    let name = workloads::ROOT_CA_CONFIGMAP;
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    crate::poll::wait_until(Duration::from_secs(180), || async {
        let list = api.list(&params).await.map_err(|e| RotateError::Api {
            what: "listing kube-root-ca.crt ConfigMaps",
            message: e.to_string(),
        })?;
        let behind: Vec<String> = list
            .items
            .iter()
            .filter(|cm| {
                let have = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .map(|t| pki::pem_blocks(t))
                    .unwrap_or_default();
                !want.iter().all(|w| have.contains(w))
            })
            .map(|cm| cm.metadata.namespace.clone().unwrap_or_default())
            .collect();
        if list.items.is_empty() || !behind.is_empty() {
            return Err(RotateError::Api {
                what: "kube-root-ca.crt",
                message: format!(
                    "not carrying both CAs within 180s in namespaces: {}",
                    behind.join(", ")
                ),
            });
        }
        Ok(())
    })
    .await
}

/// How long the kubelets get to rewrite the pods' `ca.crt` files with both CAs.
const POD_VOLUMES_TIMEOUT: Duration = Duration::from_secs(180);

/// The command listing the `ca.crt` files of the node's pod volumes (secret, ConfigMap and
/// projected) that hold the old CA and not the new one; each CA is recognised by a line of
/// its PEM body (keys differ, so lines do).
fn old_only_volumes_command(archive: &Archive) -> Command {
    let line = |pem: &str| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .nth(4)
            .unwrap_or_default()
            .to_string()
    };
    let (old, new) = (line(&archive.old.cert_pem), line(&archive.new.cert_pem));
    Command::new(format!(
        "for f in {dir}/pods/*/volumes/*/*/ca.crt; do [ -f \"$f\" ] || continue; \
           if grep -qF -- {old} \"$f\" && ! grep -qF -- {new} \"$f\"; then echo \"$f\"; fi; done",
        dir = NodeLayout::DEFAULT.kubelet_dir,
        old = shell_quote(&old),
        new = shell_quote(&new),
    ))
}

/// After the trust-both stage, before the API server may present a certificate from the new
/// CA: waits until the kubelets have rewritten every pod volume's `ca.crt` that held only the
/// old CA (they follow the Secret or ConfigMap within their sync period), so a process that
/// reads it when it starts trusts both. A volume the kubelet never rewrites (a `subPath`
/// mount) is named in the error.
async fn wait_pod_volumes(
    nodes: &[(&Host, Arc<dyn Executor>)],
    archive: &Archive,
) -> Result<(), RotateError> {
    let cmd = old_only_volumes_command(archive);
    for (h, exec) in nodes {
        crate::poll::wait_until(POD_VOLUMES_TIMEOUT, || async {
            let out = exec.run_checked(&cmd).await.map_err(CertsError::from)?;
            let left = out.stdout_str().trim().to_string();
            if left.is_empty() {
                Ok(())
            } else {
                Err(RotateError::Api {
                    what: "pod volumes",
                    message: format!(
                        "{}: after {}s these ca.crt files still hold only the old CA: {}",
                        h.name,
                        POD_VOLUMES_TIMEOUT.as_secs(),
                        left.replace('\n', ", ")
                    ),
                })
            }
        })
        .await?;
    }
    Ok(())
}

/// The pods that may know only the old cluster CA ([`workloads::list_stale`]) while a
/// rotation of it is between stage 1 and stage 3; before stage 1 (what `--check` shows), every
/// pod that reads the CA now, since all of them will have started before both CAs are
/// published; empty once the rotation is over. With `restart`, their owners
/// rollout-restarted and waited for.
async fn stale_workloads(
    cluster: &Cluster,
    journal: &Journal,
    restart: bool,
) -> Result<Vec<workloads::StalePod>, RotateError> {
    let at = match journal.cas.get(CaName::Kubernetes.name()) {
        Some(e) if e.stage == Stage::Done => return Ok(vec![]),
        Some(e) if e.stage >= Stage::TrustBoth => {
            let Some(at) = e
                .trusted_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                return Ok(vec![]);
            };
            Some(at.timestamp())
        }
        _ => None,
    };
    let client = api_client(cluster).await?;
    let mut stale = workloads::list_stale(&client, at).await?;
    if restart && !stale.is_empty() {
        workloads::restart_owners(&client, &mut stale, now()).await?;
    }
    Ok(stale)
}

/// While a rotation is in progress (a journal entry before the drop stage), the archived old
/// and new CA of each rotating CA as `check-expiration` rows of host `local`, marked in
/// [`ExpiryRow::rotation`].
pub fn rotation_rows(
    layout: &StateLayout,
    now: OffsetDateTime,
) -> Result<Vec<ExpiryRow>, RotateError> {
    let journal = Journal::load(layout)?;
    let mut rows = Vec::new();
    for (name, entry) in &journal.cas {
        if entry.stage == Stage::Done {
            continue;
        }
        let dir = layout.rotation_archive(name);
        for which in ["old", "new"] {
            let (crt, _) = archive_paths(&dir, which);
            let shown = crt.display().to_string();
            let mut row = match std::fs::read(&crt).map(|d| CertInfo::from_pem(&d)) {
                Ok(Ok(info)) => {
                    ExpiryRow::bare("local", name, &shown, Status::Ok).with_cert(&info, now)
                }
                Ok(Err(e)) => {
                    let mut r = ExpiryRow::bare("local", name, &shown, Status::Invalid);
                    r.note = Some(e.to_string());
                    r
                }
                Err(_) => ExpiryRow::bare("local", name, &shown, Status::Missing),
            };
            row.rotation = Some(which);
            row.note.get_or_insert_with(|| {
                format!("{which} CA, rotation at stage {}", entry.stage.as_str())
            });
            rows.push(row);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(dir: &Path) -> (Cluster, PkiInput, StateLayout) {
        let yaml = "name: t\nhosts:\n  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }\n  - { name: w2, address: 10.0.0.2, roles: [worker], auth: { agent: true } }\nkubernetes: { version: v1.20.2, control_plane_endpoint: \"10.0.0.1:6443\" }\n";
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        let c = clusterkit_core::config::load(&path).unwrap().cluster;
        let input = pki_input(&c);
        let layout = StateLayout::from_cluster(&c);
        pki::ensure(&input, &layout, pki::Mode::Apply).unwrap();
        kubeconfig::ensure(&input, &layout, pki::Mode::Apply).unwrap();
        (c, input, layout)
    }

    fn ca_pem(n: u8) -> String {
        let ca = pki::new_ca(CaName::Kubernetes, now(), Duration::from_secs(86_400)).unwrap();
        let _ = n;
        ca.cert_pem
    }

    #[test]
    fn bundle_concatenates_dedups_and_reduces() {
        let (a, b) = (ca_pem(1), ca_pem(2));
        let both = bundle(&[&a, &b]);
        assert_eq!(pki::pem_blocks(&both), vec![a.clone(), b.clone()]);
        assert!(both.starts_with(&a) && both.ends_with(&b));
        // A bundle fed back in adds nothing twice; the order is the first seen.
        assert_eq!(bundle(&[&both, &a, &b]), both);
        assert_eq!(bundle(&[&b, &both]), format!("{b}{a}"));
        // Reduction to the new CA only.
        assert_eq!(bundle(&[&b]), b);
        assert!(pki::pem_blocks("no pem here").is_empty());
    }

    #[test]
    fn journal_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path());
        assert_eq!(Journal::load(&layout).unwrap(), Journal::default());
        let mut j = Journal::default();
        j.cas.insert(
            "ca".into(),
            JournalEntry {
                stage: Stage::Prepared,
                old_fingerprint: "aa".into(),
                new_fingerprint: "bb".into(),
                updated: String::new(),
                started: None,
                trusted_at: None,
            },
        );
        j.start(CaName::Kubernetes, Stage::TrustBoth);
        assert_eq!(j.cas["ca"].started, Some(Stage::TrustBoth));
        j.set(CaName::Kubernetes, Stage::TrustBoth, now());
        assert_eq!(j.cas["ca"].started, None);
        j.start(CaName::Kubernetes, Stage::Reissued);
        // Not in the journal: nothing recorded.
        j.set(CaName::Etcd, Stage::Done, now());
        j.save(&layout).unwrap();
        let back = Journal::load(&layout).unwrap();
        assert_eq!(back, j);
        assert_eq!(back.cas["ca"].stage, Stage::TrustBoth);
        assert_eq!(back.cas["ca"].started, Some(Stage::Reissued));
        assert!(!back.cas.contains_key("etcd-ca"));
        let mode = std::fs::metadata(layout.rotation_journal())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(layout.rotation_journal()).unwrap();
        assert!(text.contains("\"stage\": \"trust-both\""), "{text}");
        for s in [
            Stage::Prepared,
            Stage::TrustBoth,
            Stage::Reissued,
            Stage::Done,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Stage>(&json).unwrap(), s);
        }
        assert!(Stage::Prepared < Stage::TrustBoth && Stage::Reissued < Stage::Done);
        std::fs::write(layout.rotation_journal(), "{not json").unwrap();
        let err = Journal::load(&layout).unwrap_err().to_string();
        assert!(err.contains("journal.json"), "{err}");
    }

    /// The local side of the three stages: bundles, signer, leaves, archive keys, and the
    /// drop check.
    #[test]
    fn stages_in_the_state_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (c, input, layout) = generated(dir.path());
        let ca_crt = layout.pki_dir().join("ca.crt");
        let signer = layout
            .pki_dir()
            .join(clusterkit_core::layout::CLUSTER_SIGNING_CERT);
        let old_pem = std::fs::read_to_string(&ca_crt).unwrap();
        assert_eq!(std::fs::read_to_string(&signer).unwrap(), old_pem);
        let mut j = Journal::default();
        prepare(&layout, &input, CaName::Kubernetes, &mut j, now()).unwrap();
        assert_eq!(
            Journal::load(&layout).unwrap().cas["ca"].stage,
            Stage::Prepared
        );
        let arch = layout.rotation_archive("ca");
        for key in ["old.key", "new.key"] {
            let m = std::fs::metadata(arch.join(key)).unwrap().permissions();
            assert_eq!(m.mode() & 0o777, 0o600, "{key}");
        }
        let new_pem = std::fs::read_to_string(arch.join("new.crt")).unwrap();
        assert_ne!(new_pem, old_pem);
        let stage = |s| apply_local(&c, &input, &layout, CaName::Kubernetes, s, now()).unwrap();
        let admin = layout.admin_conf();
        let ca_data = |p: &Path| Kubeconfig::load(p).unwrap().ca_pem().unwrap();

        // 1. Both trusted, the old CA still signs.
        stage(Stage::TrustBoth);
        let both = format!("{old_pem}{new_pem}");
        assert_eq!(std::fs::read_to_string(&ca_crt).unwrap(), both);
        assert_eq!(std::fs::read_to_string(&signer).unwrap(), old_pem);
        assert_eq!(ca_data(&admin), both);
        assert_eq!(ca_data(&operator_admin_conf(&c)), both);
        // The pki and kubeconfig phases accept the bundle as is.
        crate::certs::tests::phases_keep_everything(&input, &layout);
        let a = Archive::load(&layout, CaName::Kubernetes).unwrap();
        let left = unverified_local(&input, &layout, CaName::Kubernetes, &a.new).unwrap();
        assert!(left.iter().any(|u| u.name == "apiserver"), "{left:?}");
        assert!(left.iter().any(|u| u.name == "admin.conf"), "{left:?}");
        // Another CA's leaves are not the cluster CA's business.
        assert!(!left.iter().any(|u| u.name.starts_with("etcd")), "{left:?}");

        // 2. The new CA signs; every leaf re-issued once.
        let renewed = stage(Stage::Reissued);
        assert!(renewed.iter().any(|r| r.name == "apiserver"), "{renewed:?}");
        assert!(
            renewed.iter().any(|r| r.name == "kubelet.conf/cp1"),
            "{renewed:?}"
        );
        assert!(!renewed.iter().any(|r| r.name.starts_with("etcd")));
        assert_eq!(
            std::fs::read_to_string(&ca_crt).unwrap(),
            format!("{new_pem}{old_pem}")
        );
        assert_eq!(std::fs::read_to_string(&signer).unwrap(), new_pem);
        assert!(
            unverified_local(&input, &layout, CaName::Kubernetes, &a.new)
                .unwrap()
                .is_empty()
        );
        // Rerun (resume): nothing left to re-issue.
        let again = stage(Stage::Reissued);
        assert!(again.is_empty(), "{again:?}");
        crate::certs::tests::phases_keep_everything(&input, &layout);

        // 3. Only the new CA.
        stage(Stage::Done);
        assert_eq!(std::fs::read_to_string(&ca_crt).unwrap(), new_pem);
        assert_eq!(ca_data(&admin), new_pem);
        assert_eq!(ca_data(&operator_admin_conf(&c)), new_pem);
        drop_archived_keys(&layout, CaName::Kubernetes).unwrap();
        assert!(!arch.join("old.key").exists() && !arch.join("new.key").exists());
        assert!(arch.join("old.crt").is_file());
        crate::certs::tests::phases_keep_everything(&input, &layout);
    }

    /// The kubelet's own kubeconfigs get the stage's bundle: only a file with another value is
    /// rewritten (and printed), its mode kept; an absent file is skipped.
    #[tokio::test]
    async fn ca_data_follows_the_bundle_on_the_node() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let conf = |data: &str| {
            format!("apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {data}\n    server: https://10.0.0.1:6443\n  name: default-cluster\nusers:\n- name: u\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n")
        };
        let (old, same, absent) = (
            dir.path().join("kubelet.conf"),
            dir.path().join("bootstrap-kubelet.conf"),
            dir.path().join("absent.conf"),
        );
        let new_data = B64.encode(bundle(&[&ca_pem(1), &ca_pem(2)]));
        std::fs::write(&old, conf("b2xk/Kz0=")).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&same, conf(&new_data)).unwrap();
        let files: Vec<String> = [&old, &same, &absent]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let exec = clusterkit_core::exec::local::LocalExecutor::new("n", Duration::from_secs(30));
        let out = exec
            .run_checked(&set_ca_data_command(&files, &new_data))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), format!("{}\n", old.display()));
        assert_eq!(std::fs::read_to_string(&old).unwrap(), conf(&new_data));
        assert_eq!(std::fs::read_to_string(&same).unwrap(), conf(&new_data));
        let mode = std::fs::metadata(&old).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Rerun: nothing to change.
        let out = exec
            .run_checked(&set_ca_data_command(&files, &new_data))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), "");
    }

    /// Mid-rotation, `check-expiration` gets the archived old and new CA, marked; none once
    /// the rotation is over.
    #[test]
    fn rotation_rows_show_both_cas_until_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (_, input, layout) = generated(dir.path());
        assert!(rotation_rows(&layout, now()).unwrap().is_empty());
        let old = LoadedCa::load(&layout, CaName::Kubernetes).unwrap();
        let mut j = Journal::default();
        prepare(&layout, &input, CaName::Kubernetes, &mut j, now()).unwrap();
        j.set(CaName::Kubernetes, Stage::TrustBoth, now());
        j.save(&layout).unwrap();
        let a = Archive::load(&layout, CaName::Kubernetes).unwrap();
        let rows = rotation_rows(&layout, now()).unwrap();
        let got: Vec<(&str, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.rotation, r.serial.as_deref()))
            .collect();
        let serial = |ca: &LoadedCa| CertInfo::from_der(ca.cert_der()).unwrap().serial;
        let (old_serial, new_serial) = (serial(&old), serial(&a.new));
        assert_ne!(old_serial, new_serial);
        assert_eq!(
            got,
            [
                ("ca", Some("old"), Some(old_serial.as_str())),
                ("ca", Some("new"), Some(new_serial.as_str())),
            ]
        );
        for r in &rows {
            assert_eq!((r.host.as_str(), r.status), ("local", Status::Ok));
            assert_eq!(r.validity_days, Some(3650), "{r:?}");
            let note = r.note.as_deref().unwrap();
            assert!(note.ends_with("rotation at stage trust-both"), "{note}");
        }
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["rotation"], "old");
        j.set(CaName::Kubernetes, Stage::Done, now());
        j.save(&layout).unwrap();
        assert!(rotation_rows(&layout, now()).unwrap().is_empty());
    }

    /// A re-issued kubelet serving certificate keeps the names of the one it replaces.
    #[test]
    fn subject_alt_names_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, layout) = generated(dir.path());
        let ca = LoadedCa::load(&layout, CaName::Kubernetes).unwrap();
        let ips: Vec<std::net::IpAddr> =
            vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let spec = pki::CertSpec {
            name: "kubelet-server/w2".into(),
            base: PathBuf::new(),
            ca: CaName::Kubernetes,
            common_name: "system:node:w2".into(),
            organization: vec!["system:nodes".into()],
            usages: vec![pki::Usage::ServerAuth],
            dns_names: vec!["w2".into()],
            ips: ips.clone(),
        };
        let (cert, _) = pki::issue_leaf(&spec, &ca, now(), Duration::from_secs(86_400)).unwrap();
        let der = pki::pem_to_der(&cert).unwrap();
        assert_eq!(subject_alt_names(&der), (vec!["w2".to_string()], ips));
        assert!(signed_by(&der, ca.cert_der()));
    }

    /// The signer flag check: a unit file with the flag, one without, none at all.
    #[tokio::test]
    async fn flag_check_finds_old_signers() {
        let dir = tempfile::tempdir().unwrap();
        let flag = "--cluster-signing-cert-file=/etc/kubernetes/pki/ca-signer.crt";
        let new = dir.path().join("new.service");
        let old = dir.path().join("old.yaml");
        std::fs::write(&new, format!("ExecStart=/bin/x \\\n  {flag} \\\n  --y=1\n")).unwrap();
        std::fs::write(
            &old,
            "    - --cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt\n",
        )
        .unwrap();
        let exec = clusterkit_core::exec::local::LocalExecutor::new("cp1", Duration::from_secs(30));
        let run = |files: Vec<&Path>| {
            let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            let exec = &exec;
            async move {
                exec.run_checked(&flag_check_command(&files, flag))
                    .await
                    .unwrap()
                    .stdout_str()
                    .to_string()
            }
        };
        assert_eq!(run(vec![&new]).await, "yes\n");
        assert_eq!(run(vec![&new, &old]).await, "yes\nno\n");
        let absent = dir.path().join("absent");
        assert_eq!(run(vec![&absent]).await, "");
    }

    /// The front proxy's CA: its own bundle and client certificate; the cluster CA and the
    /// kubeconfigs are left alone.
    #[test]
    fn front_proxy_stages_touch_only_their_family() {
        let dir = tempfile::tempdir().unwrap();
        let (c, input, layout) = generated(dir.path());
        let fp = CaName::FrontProxy;
        let read = |rel: &str| std::fs::read_to_string(layout.pki_dir().join(rel)).unwrap();
        let (ca_before, admin_before) =
            (read("ca.crt"), std::fs::read(layout.admin_conf()).unwrap());
        let old_pem = read("front-proxy-ca.crt");
        let mut j = Journal::default();
        prepare(&layout, &input, fp, &mut j, now()).unwrap();
        let new_pem =
            std::fs::read_to_string(layout.rotation_archive("front-proxy-ca").join("new.crt"))
                .unwrap();
        let stage = |s| apply_local(&c, &input, &layout, fp, s, now()).unwrap();
        stage(Stage::TrustBoth);
        assert_eq!(read("front-proxy-ca.crt"), format!("{old_pem}{new_pem}"));
        let renewed = stage(Stage::Reissued);
        let names: Vec<&str> = renewed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["front-proxy-client"]);
        crate::certs::tests::phases_keep_everything(&input, &layout);
        stage(Stage::Done);
        assert_eq!(read("front-proxy-ca.crt"), new_pem);
        assert_eq!(read("ca.crt"), ca_before);
        assert_eq!(std::fs::read(layout.admin_conf()).unwrap(), admin_before);
        let files = family_files(&input, &layout, fp).unwrap();
        assert!(
            files
                .iter()
                .all(|f| f.to_string_lossy().contains("front-proxy")),
            "{files:?}"
        );
        crate::certs::tests::phases_keep_everything(&input, &layout);
    }

    /// The cluster CA's plan restarts, where the new trust bundle lands, what reads it: the
    /// local load balancer (its health checks) only when the cluster has one.
    #[test]
    fn cluster_ca_plan_reloads_haproxy_only_with_the_load_balancer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, input, layout) = generated(dir.path());
        let only = families(&input, &layout, &[CaName::Kubernetes]).unwrap();
        let cp = planned(&c, &layout, c.host("cp1").unwrap(), &only);
        assert!(
            cp.uploaded
                .contains(&"/etc/kubernetes/pki/ca.crt".to_string()),
            "{cp:?}"
        );
        assert_eq!(
            cp.restarted,
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet"
            ],
            "{cp:?}"
        );
        c.kubernetes.load_balancer.local = true;
        for h in ["cp1", "w2"] {
            let plan = planned(&c, &layout, c.host(h).unwrap(), &only);
            assert!(plan.restarted.contains(&"haproxy".to_string()), "{plan:?}");
        }
    }

    /// etcd's CA: its bundle (etcd's trusted CA files, kube-apiserver's `--etcd-cafile`) and
    /// every leaf it signs; the plan of each stage uploads them to the etcd members and
    /// control-plane hosts and restarts etcd and kube-apiserver there, nothing on a worker;
    /// the other CAs and the kubeconfigs are left alone.
    #[test]
    fn etcd_stages_plan_and_touch_only_their_family() {
        let dir = tempfile::tempdir().unwrap();
        let (c, input, layout) = generated(dir.path());
        let etcd = CaName::Etcd;
        let read = |rel: &str| std::fs::read_to_string(layout.pki_dir().join(rel)).unwrap();
        let others = || {
            (
                read("ca.crt"),
                read("front-proxy-ca.crt"),
                std::fs::read(layout.admin_conf()).unwrap(),
            )
        };
        let before = others();
        let old_pem = read("etcd/ca.crt");
        let mut j = Journal::default();
        prepare(&layout, &input, etcd, &mut j, now()).unwrap();
        assert_eq!(
            Journal::load(&layout).unwrap().cas["etcd-ca"].stage,
            Stage::Prepared
        );
        let new_pem =
            std::fs::read_to_string(layout.rotation_archive("etcd-ca").join("new.crt")).unwrap();
        assert_ne!(new_pem, old_pem);
        let stage = |s| apply_local(&c, &input, &layout, etcd, s, now()).unwrap();
        let only = families(&input, &layout, &[etcd]).unwrap();
        let plan = |h: &str| planned(&c, &layout, c.host(h).unwrap(), &only);
        let cp = plan("cp1");
        for f in [
            "etcd/ca.crt",
            "etcd/server.crt",
            "etcd/peer.key",
            "etcd/healthcheck-client.crt",
            "apiserver-etcd-client.crt",
        ] {
            let remote = format!("/etc/kubernetes/pki/{f}");
            assert!(cp.uploaded.contains(&remote), "{remote}: {cp:?}");
        }
        assert!(
            cp.uploaded.iter().all(|u| u.contains("etcd")),
            "{:?}",
            cp.uploaded
        );
        assert_eq!(cp.restarted, ["etcd", "kube-apiserver"]);
        let worker = plan("w2");
        assert!(
            worker.uploaded.is_empty() && worker.restarted.is_empty(),
            "{worker:?}"
        );
        let a = Archive::load(&layout, etcd).unwrap();
        let mut leaves = [
            "apiserver-etcd-client",
            "etcd-healthcheck-client",
            "etcd-metrics-client",
            "etcd-peer/cp1",
            "etcd-server/cp1",
        ];
        leaves.sort_unstable();

        // 1. Both trusted, the old CA still signs; every leaf still the old CA's.
        stage(Stage::TrustBoth);
        assert_eq!(read("etcd/ca.crt"), format!("{old_pem}{new_pem}"));
        assert_eq!(
            LoadedCa::load(&layout, etcd).unwrap().cert_der(),
            a.old.cert_der()
        );
        crate::certs::tests::phases_keep_everything(&input, &layout);
        let mut left: Vec<String> = unverified_local(&input, &layout, etcd, &a.new)
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        left.sort_unstable();
        assert_eq!(left, leaves);

        // 2. The new CA signs; every leaf re-issued once, by it.
        let mut renewed: Vec<String> = stage(Stage::Reissued).into_iter().map(|r| r.name).collect();
        renewed.sort_unstable();
        assert_eq!(renewed, leaves);
        assert_eq!(read("etcd/ca.crt"), format!("{new_pem}{old_pem}"));
        assert!(unverified_local(&input, &layout, etcd, &a.new)
            .unwrap()
            .is_empty());
        assert!(stage(Stage::Reissued).is_empty());
        crate::certs::tests::phases_keep_everything(&input, &layout);

        // 3. Only the new CA.
        stage(Stage::Done);
        assert_eq!(read("etcd/ca.crt"), new_pem);
        assert!(before == others(), "another CA or a kubeconfig changed");
        crate::certs::tests::phases_keep_everything(&input, &layout);
    }

    /// The drop check on a node's files: a leaf of the old CA is listed, the new CA's and
    /// other CAs' leaves are not.
    #[tokio::test]
    async fn node_check_lists_old_leaves() {
        let names =
            node_check_after_reissue(CaName::Kubernetes, "pki/apiserver.crt", "apiserver.crt")
                .await;
        assert_eq!(names, ["apiserver"]);
        let names =
            node_check_after_reissue(CaName::Etcd, "hosts/cp1/pki/etcd/peer.crt", "etcd/peer.crt")
                .await;
        assert_eq!(names, ["etcd-peer"]);
    }

    /// Rotates `ca` up to its reissue stage in the state directory, lays cp1's files out under
    /// a temporary root with the state file `old_local` (relative to the state directory, as
    /// it was before the rotation) at `/etc/kubernetes/pki/<remote>`, and returns what the
    /// drop check lists there.
    async fn node_check_after_reissue(ca: CaName, old_local: &str, remote: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let (c, input, layout) = generated(dir.path());
        let old_leaf = std::fs::read(layout.root.join(old_local)).unwrap();
        let mut j = Journal::default();
        prepare(&layout, &input, ca, &mut j, now()).unwrap();
        for s in [Stage::TrustBoth, Stage::Reissued] {
            apply_local(&c, &input, &layout, ca, s, now()).unwrap();
        }
        let a = Archive::load(&layout, ca).unwrap();
        let h = c.host("cp1").unwrap();
        let root = dir.path().join("node");
        let mut files = node_files(&c, &layout, h);
        for m in node_mappings(&layout, h) {
            let dest = root.join(m.remote.to_string_lossy().trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&m.local, &dest).unwrap();
        }
        let re = |p: &str| {
            root.join(p.trim_start_matches('/'))
                .to_string_lossy()
                .to_string()
        };
        std::fs::write(re(&format!("/etc/kubernetes/pki/{remote}")), &old_leaf).unwrap();
        for f in &mut files {
            f.remote = re(&f.remote);
            f.key = f.key.as_deref().map(re);
        }
        let exec = clusterkit_core::exec::local::LocalExecutor::new("cp1", Duration::from_secs(30));
        let remote = read_node(&exec, &files).await.unwrap();
        unverified_node("cp1", ca, &files, &remote, &a.new)
            .into_iter()
            .map(|u| u.name)
            .collect()
    }
}
