//! Where clusterkit puts things: every path, systemd unit and port on a node
//! ([`NodeLayout`]), and every file in the cluster's state directory on the operator's machine
//! ([`StateLayout`]). Installer, backup, monitor and the CLI take these from here, so a path or
//! port is written down once; the installer hands [`NodeLayout`] to templates and playbooks as
//! `layout`.
//!
//! The node side is kubeadm's layout (`/etc/kubernetes`, its `pki/` and `manifests/`,
//! `/var/lib/etcd`, `/var/lib/kubelet`, the components' default ports), so kubeadm's own tools
//! and the usual operator habits work on a clusterkit node.
//!
//! Limits: nothing here is configurable from cluster.yaml except what the resolved
//! [`Cluster`] already carries (the local load balancer's port, the monitor's ports, the
//! profile's CNI plugin directory).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Cluster, LoadBalancer, Profile, Role};

/// A path under kubeadm's configuration root, `/etc/kubernetes`.
macro_rules! etc_kubernetes {
    ($rel:literal) => {
        concat!("/etc/kubernetes", $rel)
    };
}

/// The bootstrap kubeconfig's file name (a literal, so paths can be built from it at compile
/// time).
macro_rules! bootstrap_kubelet_conf {
    () => {
        "bootstrap-kubelet.conf"
    };
}

/// A path under the kubelet's state directory, `/var/lib/kubelet`.
macro_rules! var_lib_kubelet {
    ($rel:literal) => {
        concat!("/var/lib/kubelet", $rel)
    };
}

/// A path under kube-proxy's state directory, `/var/lib/kube-proxy`.
macro_rules! var_lib_kube_proxy {
    ($rel:literal) => {
        concat!("/var/lib/kube-proxy", $rel)
    };
}

/// A path under clusterkit's own configuration directory on a node, `/etc/clusterkit`.
macro_rules! etc_clusterkit {
    ($rel:literal) => {
        concat!("/etc/clusterkit", $rel)
    };
}

/// A path under the directory installed binaries go to.
macro_rules! usr_local_bin {
    ($rel:literal) => {
        concat!("/usr/local/bin", $rel)
    };
}

/// containerd's CRI socket (a path).
macro_rules! containerd_socket {
    () => {
        "/run/containerd/containerd.sock"
    };
}

/// Where kubelet and containerd look for CNI plugins by default.
macro_rules! opt_cni_dir {
    () => {
        "/opt/cni/bin"
    };
}

/// The host-gw pod network's unit (and script) name.
macro_rules! pod_network_unit {
    () => {
        "clusterkit-pod-network"
    };
}

/// The etcd CA certificate, relative to the PKI directory (a node's or the state directory's).
const ETCD_CA: &str = "etcd/ca.crt";

/// The certificate the controller manager signs CSRs with (`--cluster-signing-cert-file`),
/// relative to the PKI directory: the cluster CA alone. It is a file of its own because
/// `ca.crt` is the trust bundle every other component reads, and holds two CAs while the
/// cluster CA is rotated; the CSR signer accepts exactly one certificate.
pub const CLUSTER_SIGNING_CERT: &str = "ca-signer.crt";

/// The monitoring PKI's directory, relative to a PKI directory of the state directory.
const MONITORING_PKI: &str = "monitoring";

/// kube-apiserver's etcd client pair's base name, relative to the PKI directory.
const APISERVER_ETCD_CLIENT: &str = "apiserver-etcd-client";

/// A Kubernetes component clusterkit runs on a node. Its name is the binary's, the systemd
/// unit's and the static pod's (as kubeadm names them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// The API server.
    KubeApiserver,
    /// The controller manager.
    KubeControllerManager,
    /// The scheduler.
    KubeScheduler,
    /// The node agent.
    Kubelet,
    /// The service proxy.
    KubeProxy,
}

impl Component {
    /// Every component, in start order.
    pub const ALL: [Component; 5] = [
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::Kubelet,
        Component::KubeProxy,
    ];

    /// The three control-plane components, in start order.
    pub const CONTROL_PLANE: [Component; 3] = [
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
    ];

    /// The binary, systemd unit and static pod name.
    pub const fn name(&self) -> &'static str {
        match self {
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kubelet => "kubelet",
            Component::KubeProxy => "kube-proxy",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The ports clusterkit's services listen on, on each node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// kube-apiserver's secure port, on every control-plane host.
    pub apiserver: u16,
    /// etcd's client port (TLS), on every etcd member.
    pub etcd_client: u16,
    /// etcd's peer port (TLS).
    pub etcd_peer: u16,
    /// etcd's plain-HTTP `/metrics` and `/health`, on 127.0.0.1 only.
    pub etcd_metrics: u16,
    /// The kubelet's API (TLS).
    pub kubelet: u16,
    /// The kubelet's healthz, on 127.0.0.1.
    pub kubelet_healthz: u16,
    /// kube-proxy's metrics, on 127.0.0.1.
    pub kube_proxy_metrics: u16,
    /// kube-proxy's healthz.
    pub kube_proxy_healthz: u16,
    /// kube-controller-manager's secure port (`/healthz`, `/metrics`).
    pub controller_manager: u16,
    /// kube-scheduler's secure port.
    pub scheduler: u16,
    /// The local API load balancer, on 127.0.0.1 of every node (when it is on).
    pub load_balancer: u16,
    /// node-exporter (`monitor deploy`), on every host.
    pub node_exporter: u16,
    /// Prometheus (`monitor deploy`), on the monitor hosts.
    pub prometheus: u16,
    /// Alertmanager (`monitor deploy`), on the monitor hosts.
    pub alertmanager: u16,
}

impl Ports {
    /// kubeadm's ports (and the usual ones of the monitoring daemons).
    pub const DEFAULT: Ports = Ports {
        apiserver: 6443,
        etcd_client: 2379,
        etcd_peer: 2380,
        etcd_metrics: 2381,
        kubelet: 10250,
        kubelet_healthz: 10248,
        kube_proxy_metrics: 10249,
        kube_proxy_healthz: 10256,
        controller_manager: 10257,
        scheduler: 10259,
        load_balancer: LoadBalancer::DEFAULT_PORT,
        node_exporter: 9100,
        prometheus: 9090,
        alertmanager: 9093,
    };

    /// Ports clusterkit's own services listen on, with what listens there: what another
    /// service (the local load balancer) must not take. The monitoring daemons are left out
    /// but node-exporter, which runs on every node.
    pub fn reserved(&self) -> [(u16, &'static str); 10] {
        [
            (self.etcd_client, "etcd (clients)"),
            (self.etcd_peer, "etcd (peers)"),
            (self.apiserver, "kube-apiserver"),
            (self.node_exporter, "node-exporter"),
            (self.kubelet_healthz, "the kubelet's healthz"),
            (self.kube_proxy_metrics, "kube-proxy's metrics"),
            (self.kubelet, "the kubelet"),
            (self.kube_proxy_healthz, "kube-proxy's healthz"),
            (self.controller_manager, "kube-controller-manager"),
            (self.scheduler, "kube-scheduler"),
        ]
    }
}

/// systemd units clusterkit installs or drives on a node (the Kubernetes components' are
/// [`Component::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Units {
    /// The kubelet.
    pub kubelet: &'static str,
    /// kube-proxy.
    pub kube_proxy: &'static str,
    /// kube-apiserver (systemd control-plane mode).
    pub kube_apiserver: &'static str,
    /// kube-controller-manager (systemd control-plane mode).
    pub kube_controller_manager: &'static str,
    /// kube-scheduler (systemd control-plane mode).
    pub kube_scheduler: &'static str,
    /// An etcd member (clusterkit's unit, overriding Debian's `etcd-server` package's).
    pub etcd: &'static str,
    /// The container runtime.
    pub containerd: &'static str,
    /// The local API load balancer.
    pub haproxy: &'static str,
    /// The host-gw pod network's routes.
    pub pod_network: &'static str,
    /// node-exporter (Debian's unit), on every host.
    pub node_exporter: &'static str,
    /// Prometheus (Debian's unit), on the monitor hosts.
    pub prometheus: &'static str,
    /// Alertmanager (Debian's unit), on the monitor hosts.
    pub alertmanager: &'static str,
    /// The etcd backup timer (`<name>.timer` runs `<name>.service`).
    pub etcd_backup: &'static str,
    /// The namespace backup timer.
    pub namespace_backup: &'static str,
}

impl Units {
    /// The units' names.
    pub const DEFAULT: Units = Units {
        kubelet: Component::Kubelet.name(),
        kube_proxy: Component::KubeProxy.name(),
        kube_apiserver: Component::KubeApiserver.name(),
        kube_controller_manager: Component::KubeControllerManager.name(),
        kube_scheduler: Component::KubeScheduler.name(),
        etcd: "etcd",
        containerd: "containerd",
        haproxy: "haproxy",
        pod_network: pod_network_unit!(),
        node_exporter: "prometheus-node-exporter",
        prometheus: "prometheus",
        alertmanager: "prometheus-alertmanager",
        etcd_backup: "clusterkit-backup",
        namespace_backup: "clusterkit-backup-namespaces",
    };

    /// The services clusterkit runs, in the order they are stopped (consumers before etcd).
    pub fn services(&self) -> [&'static str; 6] {
        [
            self.kubelet,
            self.kube_proxy,
            self.kube_scheduler,
            self.kube_controller_manager,
            self.kube_apiserver,
            self.etcd,
        ]
    }

    /// The backup timers (`clusterkit backup install-timer`).
    pub fn backup_timers(&self) -> [&'static str; 2] {
        [self.etcd_backup, self.namespace_backup]
    }
}

/// The kubeconfig files clusterkit generates, by kubeadm's names: on a node in
/// [`NodeLayout::kubernetes_dir`], locally in the state directory's `kubeconfig/` (the shared
/// ones) or `hosts/<host>/` (each host's own).
pub mod kubeconfig_file {
    /// The operator's cluster-admin kubeconfig.
    pub const ADMIN: &str = "admin.conf";
    /// The break-glass kubeconfig in `system:masters` (from v1.29, as kubeadm).
    pub const SUPER_ADMIN: &str = "super-admin.conf";
    pub const CONTROLLER_MANAGER: &str = "controller-manager.conf";
    pub const SCHEDULER: &str = "scheduler.conf";
    /// A node's kubelet (its rotated client certificate once bootstrapped).
    pub const KUBELET: &str = "kubelet.conf";
    /// What a joining kubelet starts with (a bootstrap token).
    pub const BOOTSTRAP_KUBELET: &str = bootstrap_kubelet_conf!();
    pub const KUBE_PROXY: &str = "kube-proxy.conf";
}

/// Where everything clusterkit installs lives on a node. Serialized as the templates'
/// `layout` (paths as strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NodeLayout {
    /// kubeadm's configuration root: the kubeconfigs, `pki/` and `manifests/`.
    pub kubernetes_dir: &'static str,
    /// The cluster PKI (kubeadm's `/etc/kubernetes/pki`).
    pub pki_dir: &'static str,
    /// etcd's certificates and CA.
    pub etcd_pki_dir: &'static str,
    /// The kubelet's static pod manifests.
    pub manifests_dir: &'static str,
    /// Kubernetes binaries clusterkit installs (kubelet, kube-proxy, control-plane components).
    pub bin_dir: &'static str,
    /// The etcd binary Debian's `etcd-server` package installs.
    pub etcd_binary: &'static str,
    /// Where `backup install-timer` puts the clusterkit binary its units run.
    pub clusterkit_binary: &'static str,
    /// Every etcd member's data directory.
    pub etcd_data_dir: &'static str,
    /// The kubelet's state.
    pub kubelet_dir: &'static str,
    /// The KubeletConfiguration file.
    pub kubelet_config: &'static str,
    /// The kubelet's own certificates (rotated client and serving pairs).
    pub kubelet_pki_dir: &'static str,
    /// The kubelet's current client certificate and key (one PEM), kept by rotation.
    pub kubelet_client_pem: &'static str,
    /// The kubelet's current serving certificate and key (one PEM), from its CSRs
    /// (`serverTLSBootstrap`).
    pub kubelet_server_pem: &'static str,
    /// The bootstrap kubeconfig a joining kubelet starts with.
    pub bootstrap_kubelet_conf: &'static str,
    /// kube-proxy's state.
    pub kube_proxy_dir: &'static str,
    /// The KubeProxyConfiguration file.
    pub kube_proxy_config: &'static str,
    /// clusterkit's own files on a node (the backup timers' secrets and kubeconfig).
    pub clusterkit_dir: &'static str,
    /// What `upgrade apply` replaced on the host (binaries, units, configurations), kept for
    /// rolling the host back; each file under its path with `/` as `%`.
    pub previous_dir: &'static str,
    /// The backup timers' environment file: the store's and the encryption's secrets (0600).
    pub backup_env: &'static str,
    /// The admin kubeconfig copy the namespace backup timer uses (0600).
    pub backup_kubeconfig: &'static str,
    /// The copy of the S3 store's CA bundle the backup timers use.
    pub backup_s3_ca: &'static str,
    /// Where clusterkit writes systemd units.
    pub systemd_dir: &'static str,
    /// CNI network configurations.
    pub cni_conf_dir: &'static str,
    /// CNI plugins' state (host-local IPAM).
    pub cni_state_dir: &'static str,
    /// Where kubelet and containerd look for CNI plugins by default (upstream tarballs').
    pub opt_cni_dir: &'static str,
    /// Where Debian's `containernetworking-plugins` puts them.
    pub debian_cni_dir: &'static str,
    /// The CNI plugin directory containerd is configured with: [`NodeLayout::opt_cni_dir`] on
    /// real hosts, [`NodeLayout::debian_cni_dir`] in the sandbox.
    pub cni_bin_dir: &'static str,
    /// The host-gw pod network's script (routes to other nodes' slices, masquerading).
    pub pod_network_script: &'static str,
    /// containerd's CRI socket.
    pub containerd_socket: &'static str,
    /// The CRI endpoint URL of that socket (kubelet, crictl).
    pub cri_endpoint: &'static str,
    /// containerd's configuration.
    pub containerd_config: &'static str,
    /// crictl's configuration (pointed at containerd).
    pub crictl_config: &'static str,
    /// Where containerd looks for per-registry `hosts.toml` files.
    pub containerd_certs_dir: &'static str,
    /// The local API load balancer's configuration.
    pub haproxy_config: &'static str,
    /// The monitoring stack's configuration and TLS files (`monitor deploy`): node-exporter's
    /// on every host, Prometheus's and Alertmanager's on the monitor hosts.
    pub monitoring_dir: &'static str,
    /// Ports.
    pub ports: Ports,
    /// systemd units.
    pub units: Units,
}

impl NodeLayout {
    /// kubeadm's layout on a real host.
    pub const DEFAULT: NodeLayout = NodeLayout {
        kubernetes_dir: etc_kubernetes!(""),
        pki_dir: etc_kubernetes!("/pki"),
        etcd_pki_dir: etc_kubernetes!("/pki/etcd"),
        manifests_dir: etc_kubernetes!("/manifests"),
        bin_dir: usr_local_bin!(""),
        etcd_binary: "/usr/bin/etcd",
        clusterkit_binary: usr_local_bin!("/clusterkit"),
        etcd_data_dir: "/var/lib/etcd",
        kubelet_dir: var_lib_kubelet!(""),
        kubelet_config: var_lib_kubelet!("/config.yaml"),
        kubelet_pki_dir: var_lib_kubelet!("/pki"),
        kubelet_client_pem: var_lib_kubelet!("/pki/kubelet-client-current.pem"),
        kubelet_server_pem: var_lib_kubelet!("/pki/kubelet-server-current.pem"),
        bootstrap_kubelet_conf: concat!(etc_kubernetes!("/"), bootstrap_kubelet_conf!()),
        kube_proxy_dir: var_lib_kube_proxy!(""),
        kube_proxy_config: var_lib_kube_proxy!("/config.conf"),
        clusterkit_dir: etc_clusterkit!(""),
        previous_dir: "/var/lib/clusterkit/previous",
        backup_env: etc_clusterkit!("/backup.env"),
        backup_kubeconfig: etc_clusterkit!("/namespace-backup.conf"),
        backup_s3_ca: etc_clusterkit!("/s3-ca.pem"),
        systemd_dir: "/etc/systemd/system",
        cni_conf_dir: "/etc/cni/net.d",
        cni_state_dir: "/var/lib/cni",
        opt_cni_dir: opt_cni_dir!(),
        debian_cni_dir: "/usr/lib/cni",
        cni_bin_dir: opt_cni_dir!(),
        pod_network_script: concat!("/usr/local/sbin/", pod_network_unit!()),
        containerd_socket: containerd_socket!(),
        cri_endpoint: concat!("unix://", containerd_socket!()),
        containerd_config: "/etc/containerd/config.toml",
        crictl_config: "/etc/crictl.yaml",
        containerd_certs_dir: "/etc/containerd/certs.d",
        haproxy_config: "/etc/haproxy/haproxy.cfg",
        monitoring_dir: "/etc/prometheus/clusterkit",
        ports: Ports::DEFAULT,
        units: Units::DEFAULT,
    };

    /// The layout of a cluster's nodes: [`NodeLayout::DEFAULT`] with the cluster's own ports
    /// (local load balancer, monitoring daemons) and, in the sandbox, Debian's CNI plugins.
    pub fn from_cluster(cluster: &Cluster) -> Self {
        let mut l = Self::DEFAULT;
        if cluster.profile == Profile::Sandbox {
            l.cni_bin_dir = l.debian_cni_dir;
        }
        l.ports.load_balancer = cluster.kubernetes.load_balancer.port;
        let m = &cluster.monitor.ports;
        l.ports.node_exporter = m.node_exporter;
        l.ports.prometheus = m.prometheus;
        l.ports.alertmanager = m.alertmanager;
        l
    }

    /// A file of the cluster PKI: `pki("ca.crt")` is `/etc/kubernetes/pki/ca.crt`.
    pub fn pki(&self, rel: &str) -> String {
        format!("{}/{rel}", self.pki_dir)
    }

    /// A kubeconfig (or other file) in the configuration root: `kubeconfig("kubelet.conf")`.
    pub fn kubeconfig(&self, name: &str) -> String {
        format!("{}/{name}", self.kubernetes_dir)
    }

    /// A static pod manifest: `/etc/kubernetes/manifests/<name>.yaml`.
    pub fn manifest(&self, name: &str) -> String {
        format!("{}/{name}.yaml", self.manifests_dir)
    }

    /// Where a static pod's manifest waits while the pod is stopped on purpose (a restart, a
    /// restore): beside the manifest directory, `/etc/kubernetes/<name>.yaml.<why>`, so the
    /// kubelet does not run it.
    pub fn manifest_aside(&self, name: &str, why: &str) -> String {
        format!("{}/{name}.yaml.{why}", self.kubernetes_dir)
    }

    /// Shell that prints the ids of the running tasks (containers or pod sandboxes) in
    /// containerd's CRI namespace whose containers match `filter` (a `ctr` label filter), one
    /// per line. Reads containerd with `ctr` by the kubelet's labels: Debian 12 has no crictl.
    fn running_tasks(filter: &str) -> String {
        format!(
            "for id in $(ctr -n k8s.io containers ls -q '{filter}'); do \
               ctr -n k8s.io tasks ls | awk -v id=\"$id\" '$1 == id && $3 == \"RUNNING\" {{ print $1 }}'; done"
        )
    }

    /// Shell that prints the id of the running container `name` of a static pod (the kubelet's
    /// container-name label; `etcd`, `kube-apiserver`), nothing when none runs.
    pub fn static_pod_container(name: &str) -> String {
        Self::running_tasks(&format!("labels.\"io.kubernetes.container.name\"=={name}"))
    }

    /// Shell that waits up to `secs` seconds until the static pod `name` (the kubelet's pod
    /// `<name>-<node>`) has no running container or sandbox task in containerd's CRI namespace
    /// (`stopped`: the kubelet has torn it down), or until its container `name` runs again
    /// (`!stopped`); prints why on stderr and fails when it does not. `name` is a plain word
    /// (`etcd`, `kube-apiserver`).
    pub fn wait_static_pod(name: &str, stopped: bool, secs: u64) -> String {
        if stopped {
            let tasks =
                Self::running_tasks(&format!("labels.\"io.kubernetes.pod.name\"~=\"^{name}-\""));
            Self::wait_shell(
                &format!("[ -z \"$({tasks})\" ]"),
                &format!("stop {name}"),
                secs,
            )
        } else {
            Self::wait_static_pod_replacing(name, "", secs)
        }
    }

    /// Shell that waits up to `secs` seconds until the container `name` of a static pod runs
    /// with another id than `old` ([`static_pod_container`](Self::static_pod_container)'s
    /// output before a change; empty: any running one): the kubelet has replaced the pod after
    /// its manifest changed. Prints why on stderr and fails when it does not.
    pub fn wait_static_pod_replacing(name: &str, old: &str, secs: u64) -> String {
        let ids = Self::static_pod_container(name);
        Self::wait_shell(
            &format!("[ -n \"$({ids} | grep -vx -e '{old}')\" ]"),
            &format!("start {name}"),
            secs,
        )
    }

    /// Shell that runs `test` once a second until it succeeds, at most `secs` times; then
    /// fails saying the kubelet did not do `what` in time.
    fn wait_shell(test: &str, what: &str, secs: u64) -> String {
        format!(
            "( i=0; until {test}; do i=$((i+1)); \
               if [ $i -ge {secs} ]; then echo \"the kubelet did not {what} within {secs}s\" >&2; exit 1; fi; \
               sleep 1; done )"
        )
    }

    /// Shell that recreates the static pod `name` the way kubeadm documents: its manifest moved
    /// aside ([`manifest_aside`](Self::manifest_aside) with `why`) until the kubelet has torn
    /// the pod down, then moved back and waited for until the kubelet runs its container again;
    /// each wait at most `secs`. Fails (the manifest back in place) when a wait does. The
    /// manifest must exist.
    pub fn recreate_static_pod(&self, name: &str, why: &str, secs: u64) -> String {
        let manifest = self.manifest(name);
        let aside = self.manifest_aside(name, why);
        let stopped = Self::wait_static_pod(name, true, secs);
        let started = Self::wait_static_pod(name, false, secs);
        format!(
            "mv {manifest} {aside} || exit 1; \
             {stopped} || {{ mv {aside} {manifest}; exit 1; }}; \
             mv {aside} {manifest} || exit 1; \
             {started} || exit 1"
        )
    }

    /// An installed Kubernetes binary: `/usr/local/bin/<name>`.
    pub fn bin(&self, name: &str) -> String {
        format!("{}/{name}", self.bin_dir)
    }

    /// A clusterkit file in `/etc/clusterkit`.
    pub fn clusterkit_file(&self, name: &str) -> String {
        format!("{}/{name}", self.clusterkit_dir)
    }

    /// The service unit file clusterkit writes for `unit`: `/etc/systemd/system/<unit>.service`.
    pub fn service_file(&self, unit: &str) -> String {
        format!("{}/{unit}.service", self.systemd_dir)
    }

    /// The timer unit file clusterkit writes for `unit`: `/etc/systemd/system/<unit>.timer`.
    pub fn timer_file(&self, unit: &str) -> String {
        format!("{}/{unit}.timer", self.systemd_dir)
    }

    /// The etcd CA certificate every etcd member and control-plane host holds.
    pub fn etcd_ca(&self) -> String {
        self.pki(ETCD_CA)
    }

    /// kube-apiserver's etcd client pair (`.crt`, `.key`), which the etcd backup timer also
    /// uses on control-plane hosts.
    pub fn apiserver_etcd_client(&self) -> (String, String) {
        (
            self.pki(&format!("{APISERVER_ETCD_CLIENT}.crt")),
            self.pki(&format!("{APISERVER_ETCD_CLIENT}.key")),
        )
    }

    /// `https://<ip>:<etcd client port>` of a member.
    pub fn etcd_client_url(&self, ip: IpAddr) -> String {
        https(ip, self.ports.etcd_client)
    }

    /// `https://<ip>:<etcd peer port>` of a member.
    pub fn etcd_peer_url(&self, ip: IpAddr) -> String {
        https(ip, self.ports.etcd_peer)
    }

    /// `https://127.0.0.1:<etcd client port>`: a member's local client URL.
    pub fn etcd_local_client_url(&self) -> String {
        self.etcd_client_url(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// `http://127.0.0.1:<etcd metrics port>`: where a member serves `/metrics` and `/health`.
    pub fn etcd_metrics_url(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.ports.etcd_metrics)
        )
    }

    /// The client URL of every etcd member of `cluster`, in cluster.yaml order.
    pub fn etcd_client_urls(&self, cluster: &Cluster) -> Vec<String> {
        cluster
            .hosts_with_role(Role::Etcd)
            .iter()
            .map(|h| self.etcd_client_url(h.address))
            .collect()
    }

    /// `https://<ip>:<apiserver port>` of a control-plane host.
    pub fn apiserver_url(&self, ip: IpAddr) -> String {
        https(ip, self.ports.apiserver)
    }
}

/// `https://<ip>:<port>`, an IPv6 address in brackets.
fn https(ip: IpAddr, port: u16) -> String {
    format!("https://{}", SocketAddr::new(ip, port))
}

/// Where a cluster's generated files live on the operator's machine: `<dir of
/// cluster.yaml>/<name>-state/` unless cluster.yaml's `state_dir` says otherwise.
///
/// ```text
/// <state>/pki/                    the shared PKI (a node's /etc/kubernetes/pki)
/// <state>/kubeconfig/             shared kubeconfigs (admin.conf, super-admin.conf, kube-proxy.conf)
/// <state>/hosts/<host>/           one host's own files, laid out like its /etc/kubernetes
/// <state>/journal/                the playbook engine's resume journals
/// <state>/rotate/                 CA rotation: its journal and the old and new CAs
/// <state>/network/pod-cidrs.json  host-gw's pod CIDR allocation
/// <state>/monitor/                generated monitoring configuration, staged for upload
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLayout {
    /// The state directory.
    pub root: PathBuf,
}

impl StateLayout {
    /// The shared PKI's directory, relative to the state directory.
    pub const PKI: &'static str = "pki";
    /// The shared kubeconfigs' directory, relative to the state directory.
    pub const KUBECONFIG: &'static str = "kubeconfig";
    /// The per-host directories' parent, relative to the state directory.
    pub const HOSTS: &'static str = "hosts";

    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The layout of a loaded cluster.yaml (its `state_dir`).
    pub fn from_cluster(cluster: &Cluster) -> Self {
        Self::new(&cluster.state_dir)
    }

    /// The state directory a cluster gets when cluster.yaml names none:
    /// `<dir of cluster.yaml>/<name>-state`.
    pub fn default_root(cluster_dir: &Path, name: &str) -> PathBuf {
        cluster_dir.join(format!("{name}-state"))
    }

    /// Files shared by every node: kubeadm's `/etc/kubernetes/pki`.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join(Self::PKI)
    }

    /// Shared kubeconfigs (admin.conf, super-admin.conf, kube-proxy.conf).
    pub fn kubeconfig_dir(&self) -> PathBuf {
        self.root.join(Self::KUBECONFIG)
    }

    /// The etcd CA certificate (a node's `/etc/kubernetes/pki/etcd/ca.crt`).
    pub fn etcd_ca(&self) -> PathBuf {
        self.pki_dir().join(ETCD_CA)
    }

    /// kube-apiserver's etcd client pair (`.crt`, `.key`): what clusterkit's own etcd clients
    /// (backup, restore) authenticate with.
    pub fn apiserver_etcd_client(&self) -> (PathBuf, PathBuf) {
        let pki = self.pki_dir();
        (
            pki.join(format!("{APISERVER_ETCD_CLIENT}.crt")),
            pki.join(format!("{APISERVER_ETCD_CLIENT}.key")),
        )
    }

    /// The cluster administrator's kubeconfig the pki phase generates.
    pub fn admin_conf(&self) -> PathBuf {
        self.kubeconfig_dir().join(kubeconfig_file::ADMIN)
    }

    /// One host's own files, laid out like its `/etc/kubernetes`.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.root.join(Self::host_rel(host))
    }

    /// One host's own files, relative to the state directory.
    pub fn host_rel(host: &str) -> PathBuf {
        Path::new(Self::HOSTS).join(host)
    }

    /// The monitoring PKI shared by every host (CA, the exporter's and Prometheus's client
    /// pairs).
    pub fn monitoring_pki_dir(&self) -> PathBuf {
        self.root.join(Self::monitoring_pki_rel())
    }

    /// [`StateLayout::monitoring_pki_dir`], relative to the state directory.
    pub fn monitoring_pki_rel() -> PathBuf {
        Path::new(Self::PKI).join(MONITORING_PKI)
    }

    /// One host's own monitoring pairs (node-exporter's, Prometheus's, Alertmanager's serving
    /// certificates).
    pub fn host_monitoring_pki_dir(&self, host: &str) -> PathBuf {
        self.root.join(Self::host_monitoring_pki_rel(host))
    }

    /// [`StateLayout::host_monitoring_pki_dir`], relative to the state directory.
    pub fn host_monitoring_pki_rel(host: &str) -> PathBuf {
        Self::host_rel(host).join(Self::PKI).join(MONITORING_PKI)
    }

    /// The playbook engine's journals (`install --resume`).
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// `upgrade apply`'s journal (the target and the steps each host finished), a JSON file.
    pub fn upgrade_journal(&self) -> PathBuf {
        self.root.join("upgrade/journal.json")
    }

    /// CA rotation's journal (the stage each CA's rotation reached), a JSON file.
    pub fn rotation_journal(&self) -> PathBuf {
        self.root.join("rotate/journal.json")
    }

    /// CA rotation's archive for one CA (kubeadm's name: `ca`, `etcd-ca`, `front-proxy-ca`):
    /// the old CA and the new one, certificates and keys (0600), kept until the rotation's
    /// last stage is done.
    pub fn rotation_archive(&self, ca: &str) -> PathBuf {
        self.root.join("rotate").join(ca)
    }

    /// The host-gw network's record of which pod CIDR each host has.
    pub fn pod_cidrs(&self) -> PathBuf {
        self.root.join("network/pod-cidrs.json")
    }

    /// Generated monitoring configuration, staged before `monitor deploy` uploads it.
    pub fn monitor_dir(&self) -> PathBuf {
        self.root.join("monitor")
    }
}

/// The operator's copy of admin.conf: next to cluster.yaml, outside the state directory, so
/// `kubectl --kubeconfig admin.conf` works from there.
pub fn operator_admin_conf(cluster: &Cluster) -> PathBuf {
    cluster.dir.join(kubeconfig_file::ADMIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_are_kubeadms() {
        let l = NodeLayout::DEFAULT;
        assert_eq!(l.pki("etcd/ca.crt"), "/etc/kubernetes/pki/etcd/ca.crt");
        assert_eq!(l.etcd_pki_dir, "/etc/kubernetes/pki/etcd");
        assert_eq!(l.kubeconfig("kubelet.conf"), "/etc/kubernetes/kubelet.conf");
        assert_eq!(
            l.manifest(Component::KubeApiserver.name()),
            "/etc/kubernetes/manifests/kube-apiserver.yaml"
        );
        assert_eq!(l.bin("kubelet"), "/usr/local/bin/kubelet");
        assert_eq!(l.cri_endpoint, "unix:///run/containerd/containerd.sock");
        assert_eq!(
            l.service_file(l.units.etcd),
            "/etc/systemd/system/etcd.service"
        );
        assert_eq!(
            l.kubelet_client_pem,
            "/var/lib/kubelet/pki/kubelet-client-current.pem"
        );
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(l.etcd_client_url(v6), "https://[fd00::1]:2379");
        assert_eq!(
            l.etcd_peer_url("10.0.0.1".parse().unwrap()),
            "https://10.0.0.1:2380"
        );
        assert_eq!(l.etcd_local_client_url(), "https://127.0.0.1:2379");
        assert_eq!(l.etcd_metrics_url(), "http://127.0.0.1:2381");
        assert_eq!(l.apiserver_url(v6), "https://[fd00::1]:6443");
        assert_eq!(l.etcd_ca(), "/etc/kubernetes/pki/etcd/ca.crt");
        // Serialized for templates as plain strings and numbers.
        let v = serde_json::to_value(l).unwrap();
        assert_eq!(v["manifests_dir"], "/etc/kubernetes/manifests");
        assert_eq!(v["ports"]["apiserver"], 6443);
        assert_eq!(v["units"]["kube_scheduler"], "kube-scheduler");
    }

    #[test]
    fn static_pod_waits_are_shell_that_reads_the_kubelet_labels() {
        // A stand-in `ctr` that lists one running etcd container: the stop wait times out
        // (and says so), the start wait returns at once.
        let dir = std::env::temp_dir().join(format!("ck-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ctr = dir.join("ctr");
        std::fs::write(
            &ctr,
            "#!/bin/sh\ncase \"$*\" in\n  *'containers ls'*) echo abc ;;\n  *'tasks ls'*) printf 'TASK PID STATUS\\nabc 1 RUNNING\\n' ;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ctr, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = |script: String| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
                .output()
                .unwrap()
        };
        let stop = NodeLayout::wait_static_pod("etcd", true, 2);
        assert!(
            stop.contains(r#"labels."io.kubernetes.pod.name"~="^etcd-""#),
            "{stop}"
        );
        let out = run(stop);
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "the kubelet did not stop etcd within 2s"
        );
        let start = NodeLayout::wait_static_pod("etcd", false, 2);
        assert!(
            start.contains(r#"labels."io.kubernetes.container.name"==etcd"#),
            "{start}"
        );
        assert!(run(start).status.success());
        let ids = run(NodeLayout::static_pod_container("etcd"));
        assert_eq!(String::from_utf8_lossy(&ids.stdout), "abc\n");
        let replaced = run(NodeLayout::wait_static_pod_replacing("etcd", "abc", 2));
        assert!(!replaced.status.success(), "abc still runs: not replaced");
        assert_eq!(
            String::from_utf8_lossy(&replaced.stderr).trim(),
            "the kubelet did not start etcd within 2s"
        );
        assert!(run(NodeLayout::wait_static_pod_replacing("etcd", "old", 2))
            .status
            .success());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            NodeLayout::DEFAULT.manifest_aside("etcd", "restore-hold"),
            "/etc/kubernetes/etcd.yaml.restore-hold"
        );
    }

    #[test]
    fn reserved_ports_are_distinct() {
        let r = Ports::DEFAULT.reserved();
        let mut ports: Vec<u16> = r.iter().map(|(p, _)| *p).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), r.len());
        assert!(!ports.contains(&Ports::DEFAULT.load_balancer));
    }
}
