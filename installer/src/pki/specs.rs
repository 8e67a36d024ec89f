//! Which certificates exist: the certificate authorities ([`CaName`]), key usages and every
//! leaf's subject and SANs ([`cert_specs`]), as kubeadm lays them out. Limits: pure data; no
//! file is read or written here.

use super::*;

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
    pub(super) fn client(name: &str, base: PathBuf, ca: CaName, cn: &str, orgs: &[&str]) -> Self {
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

pub(super) fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
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
