//! What the PKI is built from: the hosts and their addresses, validity periods, the typed
//! [`PkiInput`] taken from the resolved cluster, and which state files each host gets
//! ([`host_files`]). Limits: no validation here; cluster.yaml's validation already did it.

use super::*;
use clusterkit_core::layout::kubeconfig_file;

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
        for rel in [
            clusterkit_core::layout::CLUSTER_SIGNING_CERT,
            "sa.key",
            "sa.pub",
        ] {
            add(pki.join(rel), node.pki(rel));
        }
        for conf in [
            kubeconfig_file::CONTROLLER_MANAGER,
            kubeconfig_file::SCHEDULER,
        ] {
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
        host_dir.join(kubeconfig_file::KUBELET),
        node.kubeconfig(kubeconfig_file::KUBELET),
    );
    if control_plane && holds_admin_conf(layout, host) {
        add(layout.admin_conf(), node.kubeconfig(kubeconfig_file::ADMIN));
    }
    out
}

/// Whether `host` keeps a copy of the shared admin.conf in `/etc/kubernetes`, as kubeadm's
/// control-plane hosts do (its own commands there read it): its state directory holds a link
/// to the shared one ([`link_admin_conf`]), which the pki phase makes for the control-plane
/// hosts of a static-pod cluster. A link rather than a rule on cluster.yaml, so every reader of
/// the state directory (distribution, `certs`) sees the same answer without the cluster.
pub fn holds_admin_conf(layout: &StateLayout, host: &str) -> bool {
    layout.host_dir(host).join(kubeconfig_file::ADMIN).is_file()
}

/// Makes `host` hold admin.conf ([`holds_admin_conf`]): `<state>/hosts/<host>/admin.conf`, a
/// relative link to `<state>/kubeconfig/admin.conf`. Returns whether it was made now.
pub fn link_admin_conf(layout: &StateLayout, host: &str) -> io::Result<bool> {
    let link = layout.host_dir(host).join(kubeconfig_file::ADMIN);
    if link.symlink_metadata().is_ok() {
        return Ok(false);
    }
    fs::create_dir_all(layout.host_dir(host))?;
    // From <state>/hosts/<host>/ up to <state>.
    let up: PathBuf = StateLayout::host_rel(host)
        .components()
        .map(|_| Path::new(".."))
        .collect();
    std::os::unix::fs::symlink(
        up.join(StateLayout::KUBECONFIG)
            .join(kubeconfig_file::ADMIN),
        link,
    )?;
    Ok(true)
}
