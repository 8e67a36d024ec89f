//! kubeadm-style PKI generated in-process with rcgen, kept in the cluster's state directory.
//!
//! The layout, subjects and key usages are kubeadm's (`cmd/kubeadm/app/phases/certs/certlist.go`
//! and `pkiutil`), so kubeadm's own `certs` commands keep working on the result:
//!
//! ```text
//! <state>/pki/ca.{crt,key}                       CN=kubernetes (CA)
//! <state>/pki/apiserver.{crt,key}                CN=kube-apiserver, serverAuth, SANs below
//! <state>/pki/apiserver-kubelet-client.{crt,key} CN=kube-apiserver-kubelet-client, O=system:masters, clientAuth
//! <state>/pki/front-proxy-ca.{crt,key}           CN=front-proxy-ca (CA)
//! <state>/pki/front-proxy-client.{crt,key}       CN=front-proxy-client, clientAuth
//! <state>/pki/sa.{key,pub}                       service-account signing key pair
//! <state>/pki/etcd/ca.{crt,key}                  CN=etcd-ca (CA)
//! <state>/pki/etcd/healthcheck-client.{crt,key}  CN=kube-etcd-healthcheck-client, O=system:masters, clientAuth
//! <state>/pki/etcd/metrics-client.{crt,key}      CN=clusterkit-etcd-metrics, clientAuth (monitoring only)
//! <state>/pki/apiserver-etcd-client.{crt,key}    CN=kube-apiserver-etcd-client, O=system:masters, clientAuth
//! <state>/hosts/<member>/pki/etcd/server.{crt,key}  CN=<member>, serverAuth+clientAuth
//! <state>/hosts/<member>/pki/etcd/peer.{crt,key}    CN=<member>, serverAuth+clientAuth
//! ```
//!
//! The monitoring stack has a CA of its own (made by `clusterkit monitor config|deploy`, not by
//! the pki phase, and only while `monitor.tls` is on; see [`monitoring_cert_specs`]):
//!
//! ```text
//! <state>/pki/monitoring/ca.{crt,key}                       CN=clusterkit-monitoring-ca (CA)
//! <state>/pki/monitoring/prometheus-client.{crt,key}        CN=clusterkit-prometheus, clientAuth (scrapes)
//! <state>/pki/monitoring/alertmanager-client.{crt,key}      CN=clusterkit-alertmanager-client, clientAuth
//! <state>/pki/monitoring/exporter.{crt,key}                 CN=clusterkit-exporter, serverAuth
//! <state>/hosts/<host>/pki/monitoring/node-exporter.{crt,key}  CN=<host>, serverAuth, every host
//! <state>/hosts/<mon>/pki/monitoring/prometheus.{crt,key}      CN=<mon>, serverAuth, monitor hosts
//! <state>/hosts/<mon>/pki/monitoring/alertmanager.{crt,key}    CN=<mon>, serverAuth+clientAuth (gossip), monitor hosts
//! ```
//!
//! Unlike kubeadm, one apiserver certificate covers every control-plane host (it is the same
//! file on each of them). A node's `/etc/kubernetes/pki` is `<state>/pki` overlaid with
//! `<state>/hosts/<node>/pki` ([`host_files`]).
//!
//! Idempotence: an existing certificate is kept when it parses, matches its key, is signed by
//! the current CA, still has the subject, usages and every required SAN, and does not expire
//! within [`Validity::renew_before`]. A CA is replaced only when missing, unreadable or expired
//! (replacing it re-issues everything it signed). Keys are RSA 2048 (kubeadm's default),
//! written 0600 through a temporary file and a rename.
//!
//! Limits: no external CA mode (the CA keys must be here), no intermediate CAs, no key
//! encryption at rest; the state directory must be protected like the keys it holds.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use clusterkit_core::config::{nth_ip, Endpoint};
use clusterkit_core::layout::{NodeLayout, StateLayout};
use clusterkit_core::release::KubeVersion;
use ipnet::IpNet;

use crate::versions::SYSTEM_MASTERS;

/// Errors of the PKI phase. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The cluster input cannot produce a PKI (e.g. a bad service CIDR).
    #[error("invalid PKI input, {field}: {message}")]
    Input {
        /// The input field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// rcgen refused to build a key or certificate.
    #[error("cannot generate {name}: {source}")]
    Generate {
        /// The certificate or key being made.
        name: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// An existing file that must be usable (a CA in check mode, a CA for a kubeconfig) is not.
    #[error("cannot use {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        message: String,
    },
}

/// A host that needs certificates: its name (a SAN and, for etcd, the CN) and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The node name as in cluster.yaml (and the Node object).
    pub name: String,
    /// The address other hosts reach it on.
    pub ip: IpAddr,
}

impl Host {
    /// A host from its name and address.
    pub fn new(name: &str, ip: IpAddr) -> Self {
        Self {
            name: name.to_string(),
            ip,
        }
    }
}

/// How long certificates live, and when an existing one counts as due for renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Lifetime of the three CAs (kubeadm: 10 years).
    pub ca: Duration,
    /// Lifetime of every other certificate (kubeadm: 1 year).
    pub leaf: Duration,
    /// A leaf expiring within this is re-issued by the next run. Must be shorter than `leaf`.
    pub renew_before: Duration,
}

/// One day, for validity arithmetic.
pub const DAY: Duration = Duration::from_secs(86_400);

impl Default for Validity {
    fn default() -> Self {
        Self {
            ca: DAY * 3650,
            leaf: DAY * 365,
            renew_before: DAY * 30,
        }
    }
}

/// Everything the PKI and kubeconfigs depend on, independent of how cluster.yaml is modelled.
/// Its values come validated from the resolved cluster ([`PkiInput::from_cluster`]); nothing
/// here checks them again.
#[derive(Clone, Debug)]
pub struct PkiInput {
    /// The cluster's name: the kubeconfigs' cluster entry.
    pub cluster_name: String,
    /// The Kubernetes version: decides admin.conf's group and whether super-admin.conf exists.
    pub version: KubeVersion,
    /// Control-plane hosts: all of them are in the apiserver certificate.
    pub control_plane: Vec<Host>,
    /// etcd members: each gets its own server and peer certificate.
    pub etcd: Vec<Host>,
    /// Where clients reach the API; a DNS name or an IP.
    pub control_plane_endpoint: Endpoint,
    /// The port kube-apiserver listens on on each control-plane host (6443); the component
    /// kubeconfigs use it with the host's own address.
    pub apiserver_port: u16,
    /// The service network; its first address is the `kubernetes` Service's ClusterIP.
    pub service_cidr: IpNet,
    /// The cluster DNS domain (`cluster.local`).
    pub dns_domain: String,
    /// Nodes that get a kubelet.conf with their own credentials; workers not listed here join
    /// through TLS bootstrap instead. Usually the control-plane hosts.
    pub kubelet_nodes: Vec<Host>,
    /// Where the kubelet.conf files reach the API when it is not the control-plane endpoint:
    /// the local load balancer on every node (`127.0.0.1:<port>`, cluster.yaml
    /// `kubernetes.load_balancer`). `None`: the endpoint.
    pub node_api_server: Option<Endpoint>,
    /// Certificate lifetimes.
    pub validity: Validity,
}

impl PkiInput {
    /// The URL node kubeconfigs (kubelet.conf) use: [`PkiInput::node_api_server`]'s, else the
    /// endpoint's.
    pub fn node_server_url(&self) -> String {
        match &self.node_api_server {
            Some(e) => format!("https://{e}"),
            None => self.server_url(),
        }
    }

    /// `https://host:port` of the control-plane endpoint.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.control_plane_endpoint)
    }

    /// The input for a loaded cluster.yaml: control-plane and etcd hosts by role, kubelet
    /// credentials for the control-plane hosts (workers use TLS bootstrap), the API server on
    /// its port of each control-plane host, kubelet.conf through the local load balancer when
    /// it is on, validity from cluster.yaml's `pki:`.
    pub fn from_cluster(cluster: &clusterkit_core::config::Cluster) -> Self {
        use clusterkit_core::config::Role;
        let hosts = |role| -> Vec<Host> {
            cluster
                .hosts_with_role(role)
                .into_iter()
                .map(|h| Host::new(&h.name, h.address))
                .collect()
        };
        let k = &cluster.kubernetes;
        let control_plane = hosts(Role::ControlPlane);
        Self {
            cluster_name: cluster.name.clone(),
            version: k.version,
            etcd: hosts(Role::Etcd),
            kubelet_nodes: control_plane.clone(),
            control_plane,
            control_plane_endpoint: k.control_plane_endpoint.clone(),
            apiserver_port: NodeLayout::from_cluster(cluster).ports.apiserver,
            service_cidr: k.service_cidr,
            dns_domain: k.dns_domain.clone(),
            node_api_server: k.load_balancer.local_endpoint(),
            validity: Validity::from_config(&cluster.pki),
        }
    }
}

impl Validity {
    /// The lifetimes cluster.yaml's `pki:` section sets (kubeadm's by default).
    pub fn from_config(p: &clusterkit_core::config::Pki) -> Self {
        let days = |n: u64| Duration::from_secs(DAY.as_secs().saturating_mul(n));
        Self {
            ca: days(p.ca_validity_days),
            leaf: days(p.cert_validity_days),
            renew_before: days(p.renew_before_days),
        }
    }
}

/// A generated file and where it goes on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMapping {
    /// The file in the state directory.
    pub local: PathBuf,
    /// Its path on the node.
    pub remote: PathBuf,
    /// Its mode on the node (0600 for keys and kubeconfigs, 0644 for certificates).
    pub mode: u32,
    /// Its owner on the node when not root (the monitoring daemons' keys).
    pub owner: Option<&'static str>,
}

/// Every PKI and kubeconfig file a host needs, with its path on the node and mode.
/// Control-plane hosts get the whole shared PKI (CA keys included, as kubeadm's control-plane
/// join does) and their component kubeconfigs; etcd members their server/peer pair and the
/// etcd CA certificate (not its key: a member that is not a control-plane host never signs);
/// a host with a kubelet.conf gets it and `ca.crt`. Files that were never generated are
/// skipped.
pub fn host_files(
    layout: &StateLayout,
    host: &str,
    control_plane: bool,
    etcd: bool,
) -> Vec<FileMapping> {
    let node = NodeLayout::DEFAULT;
    let mut out = Vec::new();
    let mut add = |local: PathBuf, remote: String| {
        if local.is_file() {
            let name = local.to_string_lossy();
            let mode = if name.ends_with(".crt") || name.ends_with(".pub") {
                0o644
            } else {
                0o600
            };
            out.push(FileMapping {
                local,
                remote: remote.into(),
                mode,
                owner: None,
            });
        }
    };
    let pki = layout.pki_dir();
    let host_dir = layout.host_dir(host);
    if control_plane {
        for base in [
            "ca",
            "apiserver",
            "apiserver-kubelet-client",
            "front-proxy-ca",
            "front-proxy-client",
            "apiserver-etcd-client",
            "etcd/ca",
            "etcd/healthcheck-client",
        ] {
            for ext in ["crt", "key"] {
                let rel = format!("{base}.{ext}");
                add(pki.join(&rel), node.pki(&rel));
            }
        }
        for rel in ["sa.key", "sa.pub"] {
            add(pki.join(rel), node.pki(rel));
        }
        for conf in ["controller-manager.conf", "scheduler.conf"] {
            add(host_dir.join(conf), node.kubeconfig(conf));
        }
    } else {
        add(pki.join("ca.crt"), node.pki("ca.crt"));
    }
    if etcd {
        if !control_plane {
            add(pki.join("etcd/ca.crt"), node.pki("etcd/ca.crt"));
        }
        for base in ["etcd/server", "etcd/peer"] {
            for ext in ["crt", "key"] {
                let rel = format!("{base}.{ext}");
                add(host_dir.join(StateLayout::PKI).join(&rel), node.pki(&rel));
            }
        }
    }
    add(
        host_dir.join("kubelet.conf"),
        node.kubeconfig("kubelet.conf"),
    );
    out
}

/// The certificate authorities: the three of the cluster PKI and the monitoring one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaName {
    /// `ca`: the cluster CA (API server, kubelets, kubeconfigs).
    Kubernetes,
    /// `front-proxy-ca`: the aggregation layer.
    FrontProxy,
    /// `etcd/ca`: etcd's own CA.
    Etcd,
    /// `monitoring/ca`: node-exporter, Prometheus, Alertmanager and the exporter (made on
    /// demand by the monitor, not by the pki phase).
    Monitoring,
}

impl CaName {
    /// Every CA of the cluster PKI (the pki phase's).
    pub const ALL: [CaName; 3] = [CaName::Kubernetes, CaName::FrontProxy, CaName::Etcd];

    /// Every CA clusterkit may have issued, the monitoring CA included.
    pub const EVERY: [CaName; 4] = [
        CaName::Kubernetes,
        CaName::FrontProxy,
        CaName::Etcd,
        CaName::Monitoring,
    ];

    /// The file base name under the PKI directory.
    pub fn base(&self) -> &'static str {
        match self {
            CaName::Kubernetes => "ca",
            CaName::FrontProxy => "front-proxy-ca",
            CaName::Etcd => "etcd/ca",
            CaName::Monitoring => "monitoring/ca",
        }
    }

    /// kubeadm's name for it.
    pub fn name(&self) -> &'static str {
        match self {
            CaName::Kubernetes => "ca",
            CaName::FrontProxy => "front-proxy-ca",
            CaName::Etcd => "etcd-ca",
            CaName::Monitoring => "monitoring-ca",
        }
    }

    /// The subject CN kubeadm gives it.
    pub fn common_name(&self) -> &'static str {
        match self {
            CaName::Kubernetes => "kubernetes",
            CaName::FrontProxy => "front-proxy-ca",
            CaName::Etcd => "etcd-ca",
            CaName::Monitoring => MONITORING_CA_CN,
        }
    }
}

/// Subject CN of the monitoring CA.
pub const MONITORING_CA_CN: &str = "clusterkit-monitoring-ca";

/// An extended key usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server.
    ServerAuth,
    /// TLS client.
    ClientAuth,
}

/// One leaf certificate to issue: what kubeadm's `KubeadmCert` describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    /// kubeadm's name (`apiserver`, `etcd-server`), with `/<host>` for per-host ones.
    pub name: String,
    /// Path of the `.crt`/`.key` pair relative to the state directory, without extension.
    pub base: PathBuf,
    /// The signing CA.
    pub ca: CaName,
    /// Subject CN.
    pub common_name: String,
    /// Subject O (groups, for client certificates).
    pub organization: Vec<String>,
    /// Extended key usages.
    pub usages: Vec<Usage>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
}

impl CertSpec {
    fn client(name: &str, base: PathBuf, ca: CaName, cn: &str, orgs: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            base,
            ca,
            common_name: cn.to_string(),
            organization: orgs.iter().map(|s| s.to_string()).collect(),
            usages: vec![Usage::ClientAuth],
            dns_names: vec![],
            ips: vec![],
        }
    }

    /// The certificate file.
    pub fn cert_path(&self, layout: &StateLayout) -> PathBuf {
        layout.root.join(self.base.with_extension("crt"))
    }

    /// The private key file.
    pub fn key_path(&self, layout: &StateLayout) -> PathBuf {
        layout.root.join(self.base.with_extension("key"))
    }
}

/// CN of the dedicated etcd client certificate the monitor uses to scrape etcd's `/metrics`.
pub const ETCD_METRICS_CLIENT_CN: &str = "clusterkit-etcd-metrics";

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// Every leaf certificate of the cluster PKI (kubeconfig client certificates excepted), in
/// the order they are issued.
pub fn cert_specs(input: &PkiInput) -> Vec<CertSpec> {
    let pki = Path::new(StateLayout::PKI);
    let mut specs = Vec::new();

    // apiserver: kubeadm's GetAPIServerAltNames, for every control-plane host at once.
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for h in &input.control_plane {
        push_unique(&mut dns, h.name.clone());
        push_unique(&mut ips, h.ip);
    }
    for d in [
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", input.dns_domain),
    ] {
        push_unique(&mut dns, d);
    }
    push_unique(&mut ips, nth_ip(&input.service_cidr, 1));
    push_unique(&mut ips, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let ep_host = &input.control_plane_endpoint.host;
    match ep_host.parse::<IpAddr>() {
        Ok(ip) => push_unique(&mut ips, ip),
        Err(_) => push_unique(&mut dns, ep_host.clone()),
    }
    specs.push(CertSpec {
        name: "apiserver".into(),
        base: pki.join("apiserver"),
        ca: CaName::Kubernetes,
        common_name: "kube-apiserver".into(),
        organization: vec![],
        usages: vec![Usage::ServerAuth],
        dns_names: dns,
        ips,
    });
    // Every kubeadm release, 1.29+ included, keeps system:masters on this one.
    specs.push(CertSpec::client(
        "apiserver-kubelet-client",
        pki.join("apiserver-kubelet-client"),
        CaName::Kubernetes,
        "kube-apiserver-kubelet-client",
        &[SYSTEM_MASTERS],
    ));
    specs.push(CertSpec::client(
        "front-proxy-client",
        pki.join("front-proxy-client"),
        CaName::FrontProxy,
        "front-proxy-client",
        &[],
    ));
    // etcd server and peer: kubeadm's getAltNames (name, localhost, IP, 127.0.0.1, ::1).
    for h in &input.etcd {
        for (kind, file) in [("etcd-server", "server"), ("etcd-peer", "peer")] {
            let mut ips = vec![];
            for ip in [
                h.ip,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                push_unique(&mut ips, ip);
            }
            specs.push(CertSpec {
                name: format!("{kind}/{}", h.name),
                base: StateLayout::host_rel(&h.name)
                    .join(StateLayout::PKI)
                    .join("etcd")
                    .join(file),
                ca: CaName::Etcd,
                common_name: h.name.clone(),
                organization: vec![],
                usages: vec![Usage::ServerAuth, Usage::ClientAuth],
                dns_names: vec![h.name.clone(), "localhost".into()],
                ips,
            });
        }
    }
    specs.push(CertSpec::client(
        "etcd-healthcheck-client",
        pki.join("etcd/healthcheck-client"),
        CaName::Etcd,
        "kube-etcd-healthcheck-client",
        &[SYSTEM_MASTERS],
    ));
    specs.push(CertSpec::client(
        "etcd-metrics-client",
        pki.join("etcd/metrics-client"),
        CaName::Etcd,
        ETCD_METRICS_CLIENT_CN,
        &[],
    ));
    specs.push(CertSpec::client(
        "apiserver-etcd-client",
        pki.join("apiserver-etcd-client"),
        CaName::Etcd,
        "kube-apiserver-etcd-client",
        &[SYSTEM_MASTERS],
    ));
    specs
}

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
        let (cert_pem, cert_der, key) = read_pair(&crt, &key)?.ok_or_else(|| PkiError::Load {
            path: crt.clone(),
            message: "missing (run the pki phase first)".into(),
        })?;
        check_ca(&cert_der, &key, name, OffsetDateTime::now_utc()).map_err(|message| {
            PkiError::Load {
                path: crt.clone(),
                message,
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
}

/// Reads a cert/key pair; `Ok(None)` when either file is missing, `Err` only for I/O errors
/// other than "not found". Unparseable content is returned as an `Err(Load)`.
#[allow(clippy::type_complexity)]
fn read_pair(crt: &Path, key: &Path) -> Result<Option<(String, Vec<u8>, KeyPair)>, PkiError> {
    let (Some(cert_pem), Some(key_pem)) = (read_optional(crt)?, read_optional(key)?) else {
        return Ok(None);
    };
    let cert_der = pem_to_der(&cert_pem).map_err(|message| PkiError::Load {
        path: crt.to_path_buf(),
        message,
    })?;
    // The key's parse error is not shown: it could echo key material.
    let key_pair = KeyPair::from_pem(&key_pem).map_err(|_| PkiError::Load {
        path: key.to_path_buf(),
        message: "not a readable private key".into(),
    })?;
    Ok(Some((cert_pem, cert_der, key_pair)))
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
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
pub(crate) fn pem_to_der(pem_text: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", pem.label));
    }
    Ok(pem.contents)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("not a readable certificate: {e}"))
}

fn days_left(cert: &X509Certificate<'_>, now: OffsetDateTime) -> i64 {
    (cert.validity().not_after.timestamp() - now.unix_timestamp()).div_euclid(86_400)
}

fn check_ca(der: &[u8], key: &KeyPair, name: CaName, now: OffsetDateTime) -> Result<(), String> {
    let cert = parse(der)?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("the key does not match the certificate".into());
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("not a CA certificate".into());
    }
    if cert.verify_signature(None).is_err() {
        return Err("not self-signed".into());
    }
    if cert.validity().not_after.timestamp() <= now.unix_timestamp() {
        return Err("expired".into());
    }
    let cn = cert.subject().iter_common_name().next();
    if cn.and_then(|c| c.as_str().ok()) != Some(name.common_name()) {
        return Err(format!("subject CN is not {}", name.common_name()));
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
) -> Result<(), String> {
    let cert = parse(der)?;
    let ca_cert = parse(&ca.cert_der)?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("the key does not match the certificate".into());
    }
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Err(format!("not signed by the current {}", ca.name.name()));
    }
    if cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
    {
        return Err("is a CA certificate".into());
    }
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if cn != [spec.common_name.as_str()] {
        return Err(format!("subject CN is not {}", spec.common_name));
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
        return Err(format!("subject O is not {want:?}"));
    }
    let eku = cert.extended_key_usage().ok().flatten().map(|e| e.value);
    let (server, client) = eku.map_or((false, false), |e| (e.server_auth, e.client_auth));
    if server != spec.usages.contains(&Usage::ServerAuth)
        || client != spec.usages.contains(&Usage::ClientAuth)
    {
        return Err("extended key usages differ".into());
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
        return Err(format!("SAN {d} missing"));
    }
    if let Some(ip) = spec.ips.iter().find(|ip| !have_ips.contains(ip)) {
        return Err(format!("SAN {ip} missing"));
    }
    let left = cert.validity().not_after.timestamp() - now.unix_timestamp();
    if left <= i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX) {
        return Err(format!("expires in {} days", days_left(&cert, now).max(0)));
    }
    if cert.validity().not_before.timestamp() > now.unix_timestamp() + 3600 {
        return Err("not valid yet".into());
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

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and of full length, like Go's crypto/x509 serials.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn base_params(
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

fn issue_ca(name: CaName, now: OffsetDateTime, lifetime: Duration) -> Result<LoadedCa, PkiError> {
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
fn fix_key_mode(path: &Path, mode: Mode) -> Result<bool, PkiError> {
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

fn ensure_ca(
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
                Err(reason) => Some(reason),
            }
        }
        Ok(None) => None,
        Err(PkiError::Load { message, .. }) => Some(message),
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
        (_, Err(PkiError::Load { message, .. })) => Some(message),
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
                    Err(reason) => Some(reason),
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

fn ensure_sa(layout: &StateLayout, mode: Mode, report: &mut Report) -> Result<(), PkiError> {
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
        cas.push((
            name,
            ensure_ca(layout, name, &input.validity, now, mode, &mut report)?,
        ));
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

// ---------------------------------------------------------------------------------------
// The monitoring PKI

/// Where the monitoring stack's files live on a host and who reads them: `monitor deploy`
/// writes them, `certs check-expiration` reads the certificates among them and `certs renew`
/// replaces them and restarts the daemon that uses each.
pub mod monitoring {
    use clusterkit_core::layout::NodeLayout;

    const NODE: NodeLayout = NodeLayout::DEFAULT;

    /// The directory on every host (node-exporter's files on every host, Prometheus's and
    /// Alertmanager's on the monitor hosts).
    pub const DIR: &str = NODE.monitoring_dir;
    /// The user Debian's node-exporter, Prometheus and Alertmanager units run as: owner of
    /// their private keys.
    pub const DAEMON_USER: &str = "prometheus";
    /// The monitoring CA certificate, relative to [`DIR`] (every host).
    pub const CA: &str = "tls/monitoring-ca.crt";
    /// node-exporter's serving pair, relative to [`DIR`] without extension (every host).
    pub const NODE_EXPORTER: &str = "tls/node-exporter";
    /// Prometheus's serving pair (monitor hosts).
    pub const PROMETHEUS: &str = "tls/prometheus";
    /// Alertmanager's serving pair (monitor hosts).
    pub const ALERTMANAGER: &str = "tls/alertmanager";
    /// The client pair Prometheus scrapes with (monitor hosts).
    pub const PROMETHEUS_CLIENT: &str = "tls/prometheus-client";
    /// The client pair Alertmanager's clients present (Prometheus sending alerts).
    pub const ALERTMANAGER_CLIENT: &str = "tls/alertmanager-client";
    /// node-exporter's systemd unit (Debian's).
    pub const NODE_EXPORTER_UNIT: &str = NODE.units.node_exporter;
    /// Prometheus's systemd unit.
    pub const PROMETHEUS_UNIT: &str = NODE.units.prometheus;
    /// Alertmanager's systemd unit.
    pub const ALERTMANAGER_UNIT: &str = NODE.units.alertmanager;

    /// Whether `file` (relative to [`DIR`]) is one of the monitoring PKI's files.
    pub fn is_pki_file(file: &str) -> bool {
        !units_reading(file).is_empty()
    }

    /// The units that read `file` (a path relative to [`DIR`]).
    pub fn units_reading(file: &str) -> &'static [&'static str] {
        let base = file.trim_end_matches(".crt").trim_end_matches(".key");
        match base {
            _ if file == CA => &[NODE_EXPORTER_UNIT, PROMETHEUS_UNIT, ALERTMANAGER_UNIT],
            NODE_EXPORTER => &[NODE_EXPORTER_UNIT],
            PROMETHEUS | PROMETHEUS_CLIENT | ALERTMANAGER_CLIENT => &[PROMETHEUS_UNIT],
            ALERTMANAGER => &[ALERTMANAGER_UNIT],
            _ => &[],
        }
    }
}

/// What the monitoring certificates are issued for.
#[derive(Clone, Debug)]
pub struct MonitoringInput {
    /// Every host (each runs node-exporter).
    pub hosts: Vec<Host>,
    /// The hosts running Prometheus and Alertmanager.
    pub monitors: Vec<Host>,
    /// DNS names Prometheus may reach the exporter by.
    pub exporter_names: Vec<String>,
    /// Addresses Prometheus may reach the exporter at.
    pub exporter_ips: Vec<IpAddr>,
    /// Lifetimes (the cluster's `pki:` settings).
    pub validity: Validity,
}

impl MonitoringInput {
    /// The input for a loaded cluster.yaml: every host, the `monitor` hosts (the first host
    /// when none has the role), and the exporter at `monitor.listen` (on every monitor host
    /// when it listens on all addresses); loopback is always in the exporter's names.
    pub fn from_cluster(cluster: &clusterkit_core::config::Cluster) -> Self {
        use clusterkit_core::config::Role;
        let hosts: Vec<Host> = cluster
            .hosts
            .iter()
            .map(|h| Host::new(&h.name, h.address))
            .collect();
        let mut monitors: Vec<Host> = cluster
            .hosts_with_role(Role::Monitor)
            .into_iter()
            .map(|h| Host::new(&h.name, h.address))
            .collect();
        if monitors.is_empty() {
            monitors.extend(hosts.first().cloned());
        }
        let mut exporter_names = vec!["localhost".to_string()];
        let mut exporter_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let listen = cluster.monitor.listen.ip();
        if listen.is_unspecified() {
            for m in &monitors {
                push_unique(&mut exporter_names, m.name.clone());
                push_unique(&mut exporter_ips, m.ip);
            }
        } else {
            push_unique(&mut exporter_ips, listen);
        }
        Self {
            hosts,
            monitors,
            exporter_names,
            exporter_ips,
            validity: Validity::from_config(&cluster.pki),
        }
    }
}

/// A serving certificate of the monitoring CA for one host: its name, its address and
/// loopback (a check on the host itself verifies too).
fn monitoring_server(name: String, base: PathBuf, h: &Host, usages: Vec<Usage>) -> CertSpec {
    let mut ips = vec![h.ip];
    push_unique(&mut ips, IpAddr::V4(Ipv4Addr::LOCALHOST));
    CertSpec {
        name,
        base,
        ca: CaName::Monitoring,
        common_name: h.name.clone(),
        organization: vec![],
        usages,
        dns_names: vec![h.name.clone(), "localhost".into()],
        ips,
    }
}

/// Every leaf certificate of the monitoring PKI, in issue order.
pub fn monitoring_cert_specs(input: &MonitoringInput) -> Vec<CertSpec> {
    let pki = StateLayout::monitoring_pki_rel();
    let mut specs = vec![
        CertSpec::client(
            "monitoring-prometheus-client",
            pki.join("prometheus-client"),
            CaName::Monitoring,
            "clusterkit-prometheus",
            &[],
        ),
        CertSpec::client(
            "monitoring-alertmanager-client",
            pki.join("alertmanager-client"),
            CaName::Monitoring,
            "clusterkit-alertmanager-client",
            &[],
        ),
        CertSpec {
            name: "monitoring-exporter".into(),
            base: pki.join("exporter"),
            ca: CaName::Monitoring,
            common_name: "clusterkit-exporter".into(),
            organization: vec![],
            usages: vec![Usage::ServerAuth],
            dns_names: input.exporter_names.clone(),
            ips: input.exporter_ips.clone(),
        },
    ];
    let host_pki = |h: &Host| StateLayout::host_monitoring_pki_rel(&h.name);
    for h in &input.hosts {
        specs.push(monitoring_server(
            format!("monitoring-node-exporter/{}", h.name),
            host_pki(h).join("node-exporter"),
            h,
            vec![Usage::ServerAuth],
        ));
    }
    for m in &input.monitors {
        // Alertmanager's certificate is also its client certificate towards the other monitor
        // hosts' Alertmanagers (gossip over mutual TLS).
        for (what, usages) in [
            ("prometheus", vec![Usage::ServerAuth]),
            ("alertmanager", vec![Usage::ServerAuth, Usage::ClientAuth]),
        ] {
            specs.push(monitoring_server(
                format!("monitoring-{what}/{}", m.name),
                host_pki(m).join(what),
                m,
                usages,
            ));
        }
    }
    specs
}

/// Creates whatever is missing or invalid in the monitoring PKI (or reports it in check
/// mode), with the same rules as [`ensure`].
#[tracing::instrument(skip_all, fields(state = %layout.root.display(), ?mode))]
pub fn ensure_monitoring(
    input: &MonitoringInput,
    layout: &StateLayout,
    mode: Mode,
) -> Result<Report, PkiError> {
    let now = OffsetDateTime::now_utc();
    let mut report = Report::default();
    let ca = ensure_ca(
        layout,
        CaName::Monitoring,
        &input.validity,
        now,
        mode,
        &mut report,
    )?;
    for spec in monitoring_cert_specs(input) {
        ensure_leaf(
            layout,
            &spec,
            ca.as_ref(),
            &input.validity,
            now,
            mode,
            &mut report,
        )?;
    }
    Ok(report)
}

/// Whether the monitoring CA exists (`monitor config` or `deploy` made it).
pub fn has_monitoring(layout: &StateLayout) -> bool {
    layout
        .pki_dir()
        .join(format!("{}.crt", CaName::Monitoring.base()))
        .is_file()
}

/// The monitoring files a host holds, as `monitor deploy` puts them and `certs renew`
/// replaces them: the monitoring CA and node-exporter's pair on every host; Prometheus's
/// and Alertmanager's serving and client pairs on a monitor host (one that has a
/// Prometheus certificate issued). Keys are 0600 and owned by the daemons' user. Files
/// never issued are skipped.
pub fn monitoring_files(layout: &StateLayout, host: &str) -> Vec<FileMapping> {
    let dir = Path::new(monitoring::DIR);
    let pki = layout.monitoring_pki_dir();
    let own = layout.host_monitoring_pki_dir(host);
    let mut out = Vec::new();
    let mut add = |local: PathBuf, rel: &str| {
        if local.is_file() {
            let key = rel.ends_with(".key");
            out.push(FileMapping {
                local,
                remote: dir.join(rel),
                mode: if key { 0o600 } else { 0o644 },
                owner: key.then_some(monitoring::DAEMON_USER),
            });
        }
    };
    add(pki.join("ca.crt"), monitoring::CA);
    let mut pairs = vec![(own.join("node-exporter"), monitoring::NODE_EXPORTER)];
    if own.join("prometheus.crt").is_file() {
        pairs.extend([
            (own.join("prometheus"), monitoring::PROMETHEUS),
            (own.join("alertmanager"), monitoring::ALERTMANAGER),
            (pki.join("prometheus-client"), monitoring::PROMETHEUS_CLIENT),
            (
                pki.join("alertmanager-client"),
                monitoring::ALERTMANAGER_CLIENT,
            ),
        ]);
    }
    for (local, rel) in pairs {
        for ext in ["crt", "key"] {
            add(local.with_extension(ext), &format!("{rel}.{ext}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_past_the_last_date_is_an_error_not_a_panic() {
        let now = OffsetDateTime::now_utc();
        for days in [9_999_999u64, u64::MAX / 86_400] {
            let lifetime = Duration::from_secs(DAY.as_secs().saturating_mul(days));
            let Err(err) = issue_ca(CaName::Kubernetes, now, lifetime) else {
                panic!("{days} days accepted");
            };
            assert!(
                err.to_string()
                    .contains("is past the last date a certificate can hold"),
                "{err}"
            );
        }
        // The longest lifetime cluster.yaml allows still works.
        let longest = Duration::from_secs(DAY.as_secs() * 36_500);
        assert!(issue_ca(CaName::Kubernetes, now, longest).is_ok());
    }

    #[test]
    fn monitoring_pki_is_idempotent_and_laid_out_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let input = MonitoringInput {
            hosts: vec![
                Host::new("n1", ip("10.0.0.1")),
                Host::new("n2", ip("10.0.0.2")),
            ],
            monitors: vec![Host::new("n2", ip("10.0.0.2"))],
            exporter_names: vec!["localhost".into()],
            exporter_ips: vec![ip("127.0.0.1"), ip("10.0.0.9")],
            validity: Validity::default(),
        };
        assert!(!has_monitoring(&layout));
        let first = ensure_monitoring(&input, &layout, Mode::Apply).unwrap();
        // The CA, three shared leaves, two node-exporters, Prometheus and Alertmanager on n2.
        assert_eq!(first.changed(), 8, "{first:?}");
        assert!(has_monitoring(&layout));
        let again = ensure_monitoring(&input, &layout, Mode::Apply).unwrap();
        assert_eq!(again.changed(), 0, "{again:?}");
        let n1: Vec<String> = monitoring_files(&layout, "n1")
            .iter()
            .map(|f| f.remote.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            n1,
            [
                "/etc/prometheus/clusterkit/tls/monitoring-ca.crt",
                "/etc/prometheus/clusterkit/tls/node-exporter.crt",
                "/etc/prometheus/clusterkit/tls/node-exporter.key",
            ]
        );
        let n2 = monitoring_files(&layout, "n2");
        assert_eq!(n2.len(), 11);
        for f in &n2 {
            let key = f.remote.extension().is_some_and(|e| e == "key");
            assert_eq!(f.mode == 0o600, key, "{f:?}");
            assert_eq!(f.owner.is_some(), key, "{f:?}");
        }
        // node-exporter's certificate names its host and address, nothing else of the cluster.
        let pem =
            std::fs::read_to_string(dir.path().join("hosts/n1/pki/monitoring/node-exporter.crt"))
                .unwrap();
        let der = pem_to_der(&pem).unwrap();
        let cert = parse(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("n1")), "{names:?}");
        // IPs print as hex bytes: 10.0.0.1 is 0a:00:00:01.
        assert!(names.iter().any(|n| n.contains("0a:00:00:01")), "{names:?}");
        assert!(
            !names.iter().any(|n| n.contains("0a:00:00:02")),
            "{names:?}"
        );
        assert_eq!(
            monitoring::units_reading("tls/node-exporter.key"),
            ["prometheus-node-exporter"]
        );
        assert_eq!(
            monitoring::units_reading("tls/prometheus-client.crt"),
            ["prometheus"]
        );
        assert_eq!(monitoring::units_reading("tls/monitoring-ca.crt").len(), 3);
    }
}
