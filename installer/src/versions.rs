//! Per-Kubernetes-version rules, kept in one place: which flags each component accepts and
//! which kubeconfig identities exist, and the full command-line flag list of kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet and kube-proxy for a version and a node.
//!
//! The same rendered flags serve both control-plane modes (static pod manifests and systemd
//! units). The flag sets follow what kubeadm of the same version writes, with clusterkit's
//! paths (kubeadm's `/etc/kubernetes` layout by default).
//!
//! Limits: versions before v1.20 are refused (their API server still needs
//! `--service-account-issuer` to be optional and insecure serving switched off differently);
//! the rules cover the flags clusterkit sets, not every flag Kubernetes ever removed.

use clusterkit_core::layout::kubeconfig_file;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clusterkit_core::layout::{Component, NodeLayout};
use clusterkit_core::release::{self, KubeVersion};

/// Errors from parsing versions and rendering flags.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// Not a version, or one clusterkit does not install.
    #[error(transparent)]
    Version(#[from] release::VersionError),
    /// Kubernetes binaries the phase needs are not where it looked.
    #[error(
        "Kubernetes binaries missing: {} (looked in {}); put them in the offline bundle's bin/ \
         directory or install them from the package repository (scripts/build-kube.sh builds \
         v1.20.2 locally)",
        missing.join(", "),
        looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingBinaries {
        /// The binaries not found (or not executable).
        missing: Vec<String>,
        /// Every directory searched, in order.
        looked_in: Vec<PathBuf>,
    },
    /// A binary's version command did not print a version.
    #[error("cannot read the Kubernetes version of {path}: {found}")]
    UnreadableVersion {
        /// The binary.
        path: PathBuf,
        /// What it printed (first line) or why it did not run.
        found: String,
    },
    /// A binary is present but reports another version than the cluster's.
    #[error(
        "{path} is Kubernetes {found}, but kubernetes.version is {wanted}: put the {wanted} \
         binaries in the bundle (`clusterkit bundle build --binaries DIR` or \
         `--kubernetes {wanted}`), or set kubernetes.version to {found}"
    )]
    WrongBinaryVersion {
        /// The binary.
        path: PathBuf,
        /// What it reported.
        found: String,
        /// The cluster's version.
        wanted: KubeVersion,
    },
    /// A package repository that does not carry this version.
    #[error("{repository} has no packages for Kubernetes {version}: {hint}")]
    NoRepository {
        /// The repository.
        repository: &'static str,
        /// The version asked for.
        version: KubeVersion,
        /// What to use instead.
        hint: &'static str,
    },
    /// A flag input the component cannot use (e.g. an empty etcd server list).
    #[error("cannot render {component} flags: {message}")]
    Input {
        /// The component being rendered.
        component: Component,
        /// What is missing or wrong.
        message: String,
    },
}

/// The group of the cluster administrator (`admin.conf`) before v1.29: all-powerful and
/// impossible to revoke through RBAC.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group of `admin.conf` from v1.29 on; bound to `cluster-admin` by a ClusterRoleBinding
/// of the same name, which the control-plane phase must create with `super-admin.conf`.
pub const KUBEADM_CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";

/// Everything that changes between the Kubernetes versions clusterkit supports. One function
/// ([`rules`]) decides each item, so the callers never compare versions themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRules {
    /// kube-apiserver accepts `--insecure-port` (only `0` since v1.20; removed in v1.24).
    pub apiserver_insecure_port_flag: bool,
    /// kube-controller-manager and kube-scheduler get `--port=0` to switch off their insecure
    /// port (as kubeadm does before v1.23, when insecure serving was gone from both).
    pub component_insecure_port_flag: bool,
    /// kubelet needs `--container-runtime=remote` to use a CRI runtime (flag removed in v1.27).
    pub kubelet_container_runtime_flag: bool,
    /// The CRI endpoint goes into KubeletConfiguration (`containerRuntimeEndpoint`, v1.27+)
    /// rather than the deprecated `--container-runtime-endpoint` flag.
    pub kubelet_runtime_endpoint_in_config: bool,
    /// kubelet takes `--pod-infra-container-image` (removed in v1.35, where it stops the
    /// kubelet from starting). Deprecated since v1.24 — the runtime's sandbox image decides
    /// which image pods use — but through v1.34 the kubelet's image garbage collector still
    /// spares the image it names, and kubeadm still writes it: containerd 1.6 does not report
    /// its sandbox image as pinned, so without the flag a node short of disk would delete the
    /// pause image an offline cluster cannot pull again.
    pub kubelet_pod_infra_image_flag: bool,
    /// dockershim exists (removed in v1.24): Docker Engine can be the runtime without
    /// cri-dockerd. clusterkit always installs containerd; this is for preflight messages.
    pub dockershim: bool,
    /// `super-admin.conf` exists (v1.29+), in `system:masters`, next to a revocable admin.
    pub super_admin_kubeconfig: bool,
    /// The organisation (group) of `admin.conf`'s client certificate.
    pub admin_group: &'static str,
    /// The kubelet refuses to start on a cgroup v1 host (its `failCgroupV1` default turns true
    /// in v1.35; cgroup v1 is in maintenance from v1.31 and only warned about before v1.35).
    pub kubelet_fails_on_cgroup_v1: bool,
}

/// The release whose kubelet no longer starts on a cgroup v1 host by default.
pub const CGROUP_V1_DROPPED: KubeVersion = KubeVersion::new(1, 35, 0);

/// The rules for one version.
pub fn rules(version: KubeVersion) -> VersionRules {
    VersionRules {
        apiserver_insecure_port_flag: !version.at_least(24),
        component_insecure_port_flag: !version.at_least(23),
        kubelet_container_runtime_flag: !version.at_least(27),
        kubelet_runtime_endpoint_in_config: version.at_least(27),
        kubelet_pod_infra_image_flag: !version.at_least(35),
        dockershim: !version.at_least(24),
        super_admin_kubeconfig: version.at_least(29),
        admin_group: if version.at_least(29) {
            KUBEADM_CLUSTER_ADMINS
        } else {
            SYSTEM_MASTERS
        },
        kubelet_fails_on_cgroup_v1: version >= CGROUP_V1_DROPPED,
    }
}

/// What the flags of one node's components depend on. Paths are where the files live ON THE
/// NODE; the defaults are [`NodeLayout::DEFAULT`]'s (kubeadm's).
#[derive(Clone, Debug)]
pub struct FlagInput {
    /// The Kubernetes version the binaries are.
    pub version: KubeVersion,
    /// The node's name (kubelet `--hostname-override`, kube-proxy too).
    pub node_name: String,
    /// The node's address: the API server advertises it, kubelet reports it.
    pub node_ip: IpAddr,
    /// Where kube-apiserver listens; `None` = every interface (kubeadm's default). Tests set
    /// 127.0.0.1.
    pub apiserver_bind_address: Option<IpAddr>,
    /// kube-apiserver's secure port.
    pub apiserver_port: u16,
    /// Client URLs of every etcd member (`https://10.0.0.1:2379`).
    pub etcd_servers: Vec<String>,
    /// The service network (`10.96.0.0/12`).
    pub service_cidr: String,
    /// The pod network (`10.244.0.0/16`); `None` = nodes get no pod CIDR from the controller
    /// manager (a CNI with its own IPAM).
    pub pod_cidr: Option<String>,
    /// The cluster DNS domain (`cluster.local`), part of the service-account issuer.
    pub dns_domain: String,
    /// The cluster's name (controller manager `--cluster-name`).
    pub cluster_name: String,
    /// The PKI directory (`/etc/kubernetes/pki`).
    pub pki_dir: PathBuf,
    /// Where the kubeconfigs live (`/etc/kubernetes`).
    pub kubeconfig_dir: PathBuf,
    /// kubelet's KubeletConfiguration file (`/var/lib/kubelet/config.yaml`).
    pub kubelet_config: PathBuf,
    /// kube-proxy's configuration file (`/var/lib/kube-proxy/config.conf`).
    pub kube_proxy_config: PathBuf,
    /// The CRI socket (`unix:///run/containerd/containerd.sock`).
    pub container_runtime_endpoint: String,
    /// The pause image (default: kubeadm's for the release, `registry.k8s.io/pause:3.9` for
    /// v1.28).
    pub sandbox_image: String,
    /// How long a stopping kube-apiserver keeps serving after it has taken itself out of the
    /// `kubernetes` Service's endpoints and begun failing `/readyz` (`--shutdown-delay-duration`);
    /// `None`: it stops at once (kubeadm's default). With more than one API server this is the
    /// time kube-proxy and the load balancers need to send new requests elsewhere, so a restart
    /// fails none.
    pub apiserver_shutdown_delay: Option<std::time::Duration>,
    /// Extra or overriding flags per component (without the leading `--`); they win over the
    /// rendered ones, as kubeadm's `extraArgs` do.
    pub extra_args: BTreeMap<Component, BTreeMap<String, String>>,
}

impl FlagInput {
    /// An input with kubeadm's paths and defaults for the parts not given.
    pub fn new(version: KubeVersion, node_name: &str, node_ip: IpAddr) -> Self {
        let layout = NodeLayout::DEFAULT;
        Self {
            version,
            node_name: node_name.to_string(),
            node_ip,
            apiserver_bind_address: None,
            apiserver_port: layout.ports.apiserver,
            etcd_servers: vec![format!(
                "https://{}",
                join_host_port(node_ip, layout.ports.etcd_client)
            )],
            service_cidr: "10.96.0.0/12".into(),
            pod_cidr: Some("10.244.0.0/16".into()),
            dns_domain: "cluster.local".into(),
            cluster_name: "kubernetes".into(),
            pki_dir: layout.pki_dir.into(),
            kubeconfig_dir: layout.kubernetes_dir.into(),
            kubelet_config: layout.kubelet_config.into(),
            kube_proxy_config: layout.kube_proxy_config.into(),
            container_runtime_endpoint: layout.cri_endpoint.into(),
            sandbox_image: crate::images::pause_image_for(version.minor, version.patch),
            apiserver_shutdown_delay: None,
            extra_args: BTreeMap::new(),
        }
    }
}

/// `ip:port`, with brackets for IPv6.
pub fn join_host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The full, sorted flag list (`--name=value`) of `component` for this node and version.
pub fn render_flags(component: Component, input: &FlagInput) -> Result<Vec<String>, VersionError> {
    input.version.check_supported()?;
    let r = rules(input.version);
    let pki = |f: &str| input.pki_dir.join(f).display().to_string();
    let conf = |f: &str| input.kubeconfig_dir.join(f).display().to_string();
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        flags.insert(k.to_string(), v);
    };
    match component {
        Component::KubeApiserver => {
            if input.etcd_servers.is_empty() {
                return Err(VersionError::Input {
                    component,
                    message: "no etcd servers".into(),
                });
            }
            set("advertise-address", input.node_ip.to_string());
            if let Some(bind) = input.apiserver_bind_address {
                set("bind-address", bind.to_string());
            }
            set("allow-privileged", "true".into());
            set("authorization-mode", "Node,RBAC".into());
            set("client-ca-file", pki("ca.crt"));
            set("enable-admission-plugins", "NodeRestriction".into());
            set("enable-bootstrap-token-auth", "true".into());
            set("etcd-cafile", pki("etcd/ca.crt"));
            set("etcd-certfile", pki("apiserver-etcd-client.crt"));
            set("etcd-keyfile", pki("apiserver-etcd-client.key"));
            set("etcd-servers", input.etcd_servers.join(","));
            if r.apiserver_insecure_port_flag {
                set("insecure-port", "0".into());
            }
            set(
                "kubelet-client-certificate",
                pki("apiserver-kubelet-client.crt"),
            );
            set("kubelet-client-key", pki("apiserver-kubelet-client.key"));
            // Kubelets serve certificates from the cluster CA (serverTLSBootstrap): verify them.
            set("kubelet-certificate-authority", pki("ca.crt"));
            set(
                "kubelet-preferred-address-types",
                "InternalIP,ExternalIP,Hostname".into(),
            );
            set("proxy-client-cert-file", pki("front-proxy-client.crt"));
            set("proxy-client-key-file", pki("front-proxy-client.key"));
            set("requestheader-allowed-names", "front-proxy-client".into());
            set("requestheader-client-ca-file", pki("front-proxy-ca.crt"));
            set(
                "requestheader-extra-headers-prefix",
                "X-Remote-Extra-".into(),
            );
            set("requestheader-group-headers", "X-Remote-Group".into());
            set("requestheader-username-headers", "X-Remote-User".into());
            set("secure-port", input.apiserver_port.to_string());
            set(
                "service-account-issuer",
                format!("https://kubernetes.default.svc.{}", input.dns_domain),
            );
            set("service-account-key-file", pki("sa.pub"));
            set("service-account-signing-key-file", pki("sa.key"));
            set("service-cluster-ip-range", input.service_cidr.clone());
            if let Some(d) = input.apiserver_shutdown_delay {
                set("shutdown-delay-duration", format!("{}s", d.as_secs()));
            }
            set("tls-cert-file", pki("apiserver.crt"));
            set("tls-private-key-file", pki("apiserver.key"));
        }
        Component::KubeControllerManager => {
            let kc = conf(kubeconfig_file::CONTROLLER_MANAGER);
            if let Some(pod_cidr) = &input.pod_cidr {
                set("allocate-node-cidrs", "true".into());
                set("cluster-cidr", pod_cidr.clone());
            }
            set("authentication-kubeconfig", kc.clone());
            set("authorization-kubeconfig", kc.clone());
            set("client-ca-file", pki("ca.crt"));
            set("cluster-name", input.cluster_name.clone());
            set(
                "cluster-signing-cert-file",
                pki(clusterkit_core::layout::CLUSTER_SIGNING_CERT),
            );
            set("cluster-signing-key-file", pki("ca.key"));
            set("controllers", "*,bootstrapsigner,tokencleaner".into());
            set("kubeconfig", kc);
            set("leader-elect", "true".into());
            if r.component_insecure_port_flag {
                set("port", "0".into());
            }
            set("requestheader-client-ca-file", pki("front-proxy-ca.crt"));
            set("root-ca-file", pki("ca.crt"));
            set("service-account-private-key-file", pki("sa.key"));
            set("service-cluster-ip-range", input.service_cidr.clone());
            set("use-service-account-credentials", "true".into());
        }
        Component::KubeScheduler => {
            let kc = conf(kubeconfig_file::SCHEDULER);
            set("authentication-kubeconfig", kc.clone());
            set("authorization-kubeconfig", kc.clone());
            set("kubeconfig", kc);
            set("leader-elect", "true".into());
            if r.component_insecure_port_flag {
                set("port", "0".into());
            }
        }
        Component::Kubelet => {
            set(
                "bootstrap-kubeconfig",
                conf(kubeconfig_file::BOOTSTRAP_KUBELET),
            );
            set("config", input.kubelet_config.display().to_string());
            if r.kubelet_container_runtime_flag {
                set("container-runtime", "remote".into());
            }
            if !r.kubelet_runtime_endpoint_in_config {
                set(
                    "container-runtime-endpoint",
                    input.container_runtime_endpoint.clone(),
                );
            }
            set("hostname-override", input.node_name.clone());
            set("kubeconfig", conf(kubeconfig_file::KUBELET));
            set("node-ip", input.node_ip.to_string());
            if r.kubelet_pod_infra_image_flag {
                set("pod-infra-container-image", input.sandbox_image.clone());
            }
        }
        Component::KubeProxy => {
            set("config", input.kube_proxy_config.display().to_string());
            set("hostname-override", input.node_name.clone());
        }
    }
    if matches!(
        component,
        Component::KubeControllerManager | Component::KubeScheduler
    ) {
        // Served where monitoring probes them (/healthz, /metrics) from another host: the
        // node's address, not kubeadm's 127.0.0.1, with the API server's certificate (same
        // host, signed by the cluster CA, SANs with every control-plane name and address)
        // instead of kubeadm's self-signed one, so they verify against the cluster CA.
        set("bind-address", input.node_ip.to_string());
        set("tls-cert-file", pki("apiserver.crt"));
        set("tls-private-key-file", pki("apiserver.key"));
    }
    if let Some(extra) = input.extra_args.get(&component) {
        for (k, v) in extra {
            flags.insert(k.trim_start_matches('-').to_string(), v.clone());
        }
    }
    Ok(flags
        .into_iter()
        .map(|(k, v)| format!("--{k}={v}"))
        .collect())
}

/// The Kubernetes binaries a host needs: kubelet, kubeadm and kubectl everywhere, plus
/// kube-apiserver, kube-controller-manager and kube-scheduler on control-plane hosts in systemd
/// mode (in static-pod mode they run from images). kube-proxy normally runs as a DaemonSet
/// from its image; callers that run it as a binary add it themselves.
pub fn required_binaries(control_plane: bool, systemd_control_plane: bool) -> Vec<&'static str> {
    let mut v = vec!["kubelet", "kubeadm", "kubectl"];
    if control_plane && systemd_control_plane {
        v.extend([
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]);
    }
    v
}

/// Finds each binary in the first directory that has it as an executable file; fails naming
/// every missing binary and every directory searched.
pub fn locate_binaries(
    names: &[&str],
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, VersionError> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for name in names {
        let hit = dirs.iter().map(|d| d.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        match hit {
            Some(p) => {
                found.insert(name.to_string(), p);
            }
            None => missing.push(name.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(VersionError::MissingBinaries {
            missing,
            looked_in: dirs.to_vec(),
        });
    }
    Ok(found)
}

/// The Kubernetes binaries clusterkit installs and the version each reports.
pub const KUBERNETES_BINARIES: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "kubeadm",
];

/// Runs a local Kubernetes binary's version command and returns the version it reports.
/// kubectl answers `version --client -o json` (its `--short` is gone from v1.28), kubeadm
/// `version -o short`, the others `--version` (`Kubernetes v1.28.7`).
pub fn binary_version(path: &std::path::Path) -> Result<KubeVersion, VersionError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let args: &[&str] = match name {
        "kubectl" => &["version", "--client", "-o", "json"],
        "kubeadm" => &["version", "-o", "short"],
        _ => &["--version"],
    };
    let unreadable = |found: String| VersionError::UnreadableVersion {
        path: path.to_path_buf(),
        found,
    };
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .map_err(|e| unreadable(format!("cannot run it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let found = if name == "kubectl" {
        serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|v| {
                v.pointer("/clientVersion/gitVersion")
                    .and_then(|g| g.as_str())
                    .map(str::to_string)
            })
            .and_then(|g| KubeVersion::parse(&g).ok())
    } else {
        // "Kubernetes v1.20.2" or "v1.20.2".
        stdout
            .split_whitespace()
            .find_map(|w| KubeVersion::parse(w.trim_matches(|c: char| c == ',' || c == '"')).ok())
    };
    found.ok_or_else(|| {
        let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        unreadable(if text.trim().is_empty() {
            format!("no output ({})", out.status)
        } else {
            text.lines().next().unwrap_or_default().trim().to_string()
        })
    })
}

/// Runs a local Kubernetes binary's version command and checks it is `wanted` (same
/// major.minor.patch).
pub fn check_binary_version(
    path: &std::path::Path,
    wanted: KubeVersion,
) -> Result<(), VersionError> {
    let found = binary_version(path)?;
    if found != wanted {
        return Err(VersionError::WrongBinaryVersion {
            path: path.to_path_buf(),
            found: found.to_string(),
            wanted,
        });
    }
    Ok(())
}

/// Package formats of the node operating systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageFormat {
    /// Debian, Ubuntu (apt).
    Deb,
    /// RHEL, CentOS, Rocky (yum/dnf).
    Rpm,
}

/// The install argument pinning a Kubernetes package to a version: `kubelet=1.30.0-*` for apt
/// (the revision differs between pkgs.k8s.io `-1.1` and the legacy/mirror `-00`), and
/// `kubelet-1.30.0` for yum/dnf, as in the operator guides.
pub fn package_spec(name: &str, version: KubeVersion, format: PackageFormat) -> String {
    let v = format!("{}.{}.{}", version.major, version.minor, version.patch);
    match format {
        PackageFormat::Deb => format!("{name}={v}-*"),
        PackageFormat::Rpm => format!("{name}-{v}"),
    }
}

/// The pkgs.k8s.io repository of a version's minor release (one repository per minor, from
/// v1.24). Older versions live only in the frozen legacy repositories and their mirrors.
pub fn pkgs_k8s_io_repository(
    version: KubeVersion,
    format: PackageFormat,
) -> Result<String, VersionError> {
    if !version.at_least(24) {
        return Err(VersionError::NoRepository {
            repository: "pkgs.k8s.io",
            version,
            hint: "configure a mirror of the legacy repository (packages.repositories in cluster.yaml) or use an offline bundle",
        });
    }
    let kind = match format {
        PackageFormat::Deb => "deb",
        PackageFormat::Rpm => "rpm",
    };
    Ok(format!(
        "https://pkgs.k8s.io/core:/stable:/v{}.{}/{kind}/",
        version.major, version.minor
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_boundaries() {
        let v = |m| rules(KubeVersion::new(1, m, 0));
        assert!(v(23).apiserver_insecure_port_flag && !v(24).apiserver_insecure_port_flag);
        assert!(v(22).component_insecure_port_flag && !v(23).component_insecure_port_flag);
        assert!(v(26).kubelet_container_runtime_flag && !v(27).kubelet_container_runtime_flag);
        assert!(
            !v(26).kubelet_runtime_endpoint_in_config && v(27).kubelet_runtime_endpoint_in_config
        );
        assert!(v(23).dockershim && !v(24).dockershim);
        assert!(!v(28).super_admin_kubeconfig && v(29).super_admin_kubeconfig);
        assert_eq!(v(28).admin_group, SYSTEM_MASTERS);
        assert_eq!(v(29).admin_group, KUBEADM_CLUSTER_ADMINS);
        assert!(v(34).kubelet_pod_infra_image_flag && !v(35).kubelet_pod_infra_image_flag);
        assert!(!v(34).kubelet_fails_on_cgroup_v1 && v(35).kubelet_fails_on_cgroup_v1);
    }

    #[test]
    fn extra_args_override() {
        let mut input = FlagInput::new(
            KubeVersion::new(1, 30, 0),
            "cp1",
            "10.0.0.1".parse().unwrap(),
        );
        input
            .extra_args
            .entry(Component::KubeScheduler)
            .or_default()
            .insert("--leader-elect".into(), "false".into());
        let flags = render_flags(Component::KubeScheduler, &input).unwrap();
        assert!(
            flags.contains(&"--leader-elect=false".to_string()),
            "{flags:?}"
        );
        assert!(!flags.contains(&"--leader-elect=true".to_string()));
    }

    #[test]
    fn apiserver_needs_etcd() {
        let mut input = FlagInput::new(
            KubeVersion::new(1, 30, 0),
            "cp1",
            "10.0.0.1".parse().unwrap(),
        );
        input.etcd_servers.clear();
        assert!(render_flags(Component::KubeApiserver, &input).is_err());
    }
}
