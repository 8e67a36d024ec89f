//! The resolved cluster model: what every phase, the backup tool and the monitor use.
//!
//! Produced only by validation (`config::load`), so a value of these types is always
//! consistent: defaults are filled in, paths are absolute, addresses and CIDRs are parsed,
//! roles are typed, at least one control-plane and one etcd host exist. Every default is
//! documented on its field. Secrets are never stored here, only [`SecretEnv`] references.
//!
//! Everything derives `Serialize` so the playbook engine can hand the model to tera templates;
//! enums serialize as the same kebab-case words the file uses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::error::SelectError;
use super::secret::SecretEnv;
use crate::release::KubeVersion;

/// A whole cluster as described by one `cluster.yaml`.
#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    /// The cluster's name (letters, digits, `.`, `_`, `-`); names the state directory and
    /// labels metrics and backups.
    pub name: String,
    /// The cluster file itself (absolute).
    pub path: PathBuf,
    /// The directory holding the cluster file (absolute). Relative paths in the file are
    /// resolved against it.
    pub dir: PathBuf,
    /// Where clusterkit keeps this cluster's PKI, kubeconfigs and journals.
    /// Default: `<dir>/<name>-state`.
    pub state_dir: PathBuf,
    /// How hosts are reached.
    pub ssh: Ssh,
    /// Every host, in file order.
    pub hosts: Vec<Host>,
    /// The Kubernetes cluster to build.
    pub kubernetes: Kubernetes,
    /// containerd settings.
    pub runtime: Runtime,
    /// Where packages and binaries come from.
    pub packages: Packages,
    /// Real hosts or the local sandbox; changes several defaults (see [`Profile`]).
    pub profile: Profile,
    /// Extra sysctls applied on every host (`net.core.somaxconn: "1024"`). Default: none.
    pub sysctls: BTreeMap<String, String>,
    /// Backup settings (all optional in the file).
    pub backup: Backup,
    /// Monitor settings (all optional in the file).
    pub monitor: Monitor,
    /// Certificate lifetimes of the PKI clusterkit issues (all optional in the file).
    pub pki: Pki,
}

/// Certificate lifetimes (`pki:` in cluster.yaml), kubeadm's by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pki {
    /// Lifetime of the three CAs (cluster, front-proxy, etcd). Default: 3650 days.
    pub ca_validity_days: u64,
    /// Lifetime of every other certificate (servers, clients, kubeconfigs). Default: 365 days;
    /// never longer than `ca_validity_days`.
    pub cert_validity_days: u64,
    /// A certificate expiring within this many days is re-issued by the next install (and
    /// reported due by `certs check-expiration`). Default: 30; shorter than
    /// `cert_validity_days`.
    pub renew_before_days: u64,
}

impl Default for Pki {
    fn default() -> Self {
        Pki {
            ca_validity_days: 3650,
            cert_validity_days: 365,
            renew_before_days: 30,
        }
    }
}

impl Cluster {
    /// The host called `name`, if any.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Hosts carrying `role`, in file order.
    pub fn hosts_with_role(&self, role: Role) -> Vec<&Host> {
        self.hosts.iter().filter(|h| h.has_role(role)).collect()
    }

    /// The hosts chosen by `--hosts` and `--roles`, in file order.
    ///
    /// Both empty selects every host. Names must exist and roles must be known (an unknown
    /// one is an error, not silently ignored). When both are given a host must match both:
    /// be named, and carry at least one of the roles. A selection matching nothing is an error.
    pub fn select(&self, hosts: &[String], roles: &[String]) -> Result<Vec<&Host>, SelectError> {
        for name in hosts {
            if self.host(name).is_none() {
                return Err(SelectError::UnknownHost {
                    name: name.clone(),
                    known: self.hosts.iter().map(|h| h.name.clone()).collect(),
                });
            }
        }
        let roles = roles
            .iter()
            .map(|r| {
                r.parse::<Role>()
                    .map_err(|_| SelectError::UnknownRole { role: r.clone() })
            })
            .collect::<Result<Vec<Role>, _>>()?;
        let selected: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| hosts.is_empty() || hosts.contains(&h.name))
            .filter(|h| roles.is_empty() || roles.iter().any(|r| h.has_role(*r)))
            .collect();
        if selected.is_empty() {
            return Err(SelectError::Empty {
                hosts: hosts.to_vec(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            });
        }
        Ok(selected)
    }
}

/// SSH settings shared by all hosts.
#[derive(Clone, Debug, Serialize)]
pub struct Ssh {
    /// The known_hosts file used to verify host keys. Default: `<dir>/known_hosts`.
    pub known_hosts: PathBuf,
    /// Accept and record the key of a host not yet in known_hosts. Default: false (refuse).
    /// A changed key is always refused.
    pub trust_on_first_use: bool,
    /// How many hosts are worked on at once. Default: 16.
    pub concurrency: usize,
    /// Seconds to wait for a TCP connection plus SSH handshake. Default: 10.
    pub connect_timeout_secs: u64,
    /// Seconds a single remote command may run. Default: 600.
    pub command_timeout_secs: u64,
    /// A bastion every connection goes through. Default: none (direct connections).
    pub jump_host: Option<JumpHost>,
}

impl Ssh {
    /// `connect_timeout_secs` as a `Duration`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// `command_timeout_secs` as a `Duration`.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
}

/// A bastion host reached first; connections to cluster hosts are tunnelled through it.
#[derive(Clone, Debug, Serialize)]
pub struct JumpHost {
    /// IP address or DNS name (a bastion is often known by name).
    pub address: String,
    /// Default: 22.
    pub port: u16,
    /// Default: `root`.
    pub user: String,
    /// How to log in to the bastion.
    pub auth: Auth,
}

/// One machine of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// Unique name; becomes the node's hostname and Kubernetes node name (RFC 1123: lowercase
    /// letters, digits, `-` and `.`).
    pub name: String,
    /// Unique address clusterkit connects to and Kubernetes advertises.
    pub address: IpAddr,
    /// SSH port. Default: 22.
    pub port: u16,
    /// SSH login user. Default: `root`.
    pub user: String,
    /// How to log in.
    pub auth: Auth,
    /// How a non-root user gains root. Default: `sudo` without a password for a non-root user,
    /// none for root; `become: {method: none}` turns it off.
    #[serde(rename = "become")]
    pub become_: Option<Become>,
    /// What the host is for; never empty, no duplicates, in file order.
    pub roles: Vec<Role>,
    /// Kubernetes node labels. Default: none.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes node taints. Default: none.
    pub taints: Vec<Taint>,
}

impl Host {
    /// Whether the host carries `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// `address:port`, ready for a TCP connect.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// How clusterkit logs in over SSH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Auth {
    /// A private key file (absolute path, mode checked to be 0600 or stricter), optionally
    /// encrypted with a passphrase from the environment.
    Key {
        file: PathBuf,
        passphrase: Option<SecretEnv>,
    },
    /// A password from the environment.
    Password { password: SecretEnv },
    /// Keys offered by the running ssh-agent (`SSH_AUTH_SOCK`).
    Agent,
}

/// Privilege escalation for a non-root login user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Become {
    /// Only `sudo` exists today.
    pub method: BecomeMethod,
    /// sudo's password from the environment (fed on stdin, never on a command line);
    /// `None` means passwordless sudo (NOPASSWD).
    pub password: Option<SecretEnv>,
}

/// The privilege escalation tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BecomeMethod {
    Sudo,
}

/// What a host does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs an etcd member.
    Etcd,
    /// Runs kube-apiserver, kube-controller-manager and kube-scheduler.
    ControlPlane,
    /// Runs workloads (kubelet + kube-proxy + CNI).
    Worker,
    /// Runs Prometheus, Alertmanager and the clusterkit exporter.
    Monitor,
}

impl Role {
    /// Every role, in the order the documentation lists them.
    pub const ALL: [Role; 4] = [Role::Etcd, Role::ControlPlane, Role::Worker, Role::Monitor];

    /// The spelling used in cluster.yaml and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Etcd => "etcd",
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
            Role::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A Kubernetes node taint, `key[=value]:Effect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

impl Serialize for Taint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Kubernetes {
    /// Prefix length of each node's IPv4 pod CIDR: kube-controller-manager's default
    /// `--node-cidr-mask-size`, and the slice host-gw routes to a node.
    pub const NODE_POD_PREFIX_V4: u8 = 24;
    /// The same for IPv6 pod networks.
    pub const NODE_POD_PREFIX_V6: u8 = 64;
}

/// Kubernetes settings.
#[derive(Clone, Debug, Serialize)]
pub struct Kubernetes {
    /// The Kubernetes release (required), e.g. `v1.26.3`.
    pub version: KubeVersion,
    /// Pod network. Default: `10.244.0.0/16`.
    pub pod_cidr: IpNet,
    /// Service network. Default: `10.96.0.0/12`.
    pub service_cidr: IpNet,
    /// Cluster DNS domain. Default: `cluster.local`.
    pub dns_domain: String,
    /// kube-proxy mode. Default: `ipvs`, but `iptables` with `profile: sandbox` (the sandbox
    /// kernel has no IPVS).
    pub proxy_mode: ProxyMode,
    /// Where clients reach the API server. Default: the first control-plane host's address,
    /// port 6443.
    pub control_plane_endpoint: Endpoint,
    /// How the control plane runs. Default: `static-pod`, but `systemd` with
    /// `profile: sandbox`.
    pub control_plane_mode: ControlPlaneMode,
    /// Registry prefix of the control-plane and pause images. Default: `registry.k8s.io`.
    pub image_repository: String,
    /// Pod network implementation. Default: `calico`, but `host-gw` with `profile: sandbox`.
    pub network: Network,
    /// The optional local API load balancer on every node. Default: off.
    pub load_balancer: LoadBalancer,
}

/// `kubernetes.load_balancer`: a local TCP load balancer (haproxy) on every node, listening on
/// `127.0.0.1:<port>` and forwarding to every control-plane host's API server (kubeasz's
/// "l4 lb on each node"). Node components (kubelet, kube-proxy) then reach the API through it
/// and keep working while any one control-plane host is down; the operator's admin.conf keeps
/// `control_plane_endpoint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LoadBalancer {
    /// Run the local load balancer on every node. Default: false.
    pub local: bool,
    /// The port it listens on, on 127.0.0.1 of every node. Default: [`LoadBalancer::DEFAULT_PORT`].
    pub port: u16,
}

impl LoadBalancer {
    /// The default listening port (kubespray's and kubeadm HA guides' choice for a local
    /// proxy: 6443 itself is taken by the API server on control-plane hosts).
    pub const DEFAULT_PORT: u16 = 16443;

    /// `127.0.0.1:<port>` when the local load balancer is on.
    pub fn local_endpoint(&self) -> Option<Endpoint> {
        self.local.then(|| Endpoint {
            host: std::net::Ipv4Addr::LOCALHOST.to_string(),
            port: self.port,
        })
    }

    /// `https://127.0.0.1:<port>` when the local load balancer is on.
    pub fn local_url(&self) -> Option<String> {
        self.local_endpoint().map(|e| format!("https://{e}"))
    }
}

impl Default for LoadBalancer {
    fn default() -> Self {
        Self {
            local: false,
            port: Self::DEFAULT_PORT,
        }
    }
}

/// The `n`-th address of a network, counted from its network address (`10.96.0.0/12`, 1 →
/// `10.96.0.1`, the `kubernetes` Service's ClusterIP; 10 → `10.96.0.10`, the cluster DNS
/// Service's, by kubeadm's convention). Host bits in `net` are ignored; past the network's
/// end it wraps around the address space.
pub fn nth_ip(net: &IpNet, n: u32) -> IpAddr {
    match net.network() {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4).wrapping_add(n))),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6).wrapping_add(u128::from(n)),
        )),
    }
}

/// A `host:port` endpoint; `host` is an IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Text that is not `host:port`; `why` names the part that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not host:port ({why})")]
pub struct BadEndpoint {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for Endpoint {
    type Err = BadEndpoint;
    /// Accepts `host:port`, `1.2.3.4:port` and `[v6::addr]:port`.
    fn from_str(s: &str) -> Result<Self, BadEndpoint> {
        let bad = |why: &'static str| BadEndpoint {
            text: s.to_string(),
            why,
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(|| bad("missing ]:port"))?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in brackets"))?;
            (h, p)
        } else {
            let (h, p) = s.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
            if h.contains(':') {
                return Err(bad("write IPv6 addresses as [addr]:port"));
            }
            (h, p)
        };
        if host.is_empty() || !host_is_valid(host) {
            return Err(bad("bad host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

/// An IP literal, or a DNS name of letters, digits, `-`, `.`.
pub(crate) fn host_is_valid(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// kube-proxy's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    Ipvs,
    Iptables,
}

/// Whether the control plane runs as kubelet static pods or as systemd services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlPlaneMode {
    StaticPod,
    Systemd,
}

/// The pod network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    Calico,
    Flannel,
    /// Linux bridge + host-local IPAM + static routes between nodes (no overlay).
    HostGw,
}

/// Real hosts or the local sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Real machines. The default.
    Production,
    /// systemd-nspawn nodes on one machine: iptables proxy, systemd control plane, host-gw
    /// network by default, plus the sandbox-only kubelet/containerd settings.
    Sandbox,
}

/// containerd settings.
#[derive(Clone, Debug, Serialize)]
pub struct Runtime {
    /// Registry host → mirror URLs (tried in order). Default: none.
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// Registries reached over plain HTTP or with unverified TLS. Default: none.
    pub insecure_registries: Vec<String>,
    /// The pod sandbox ("pause") image. Default: `<image_repository>/pause:<tag>` with the tag
    /// kubeadm uses for the Kubernetes version (see [`default_pause_tag`]).
    pub sandbox_image: String,
}

/// The pause image tag kubeadm pins for a Kubernetes release ([`crate::release::images`]).
pub fn default_pause_tag(v: &KubeVersion) -> &'static str {
    crate::release::images(v.minor, v.patch).pause
}

/// Where packages and Kubernetes binaries come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Packages {
    /// An offline bundle directory (made by `clusterkit bundle build`), uploaded over SSH.
    Bundle { dir: PathBuf },
    /// Online package repositories. This is the default, with no overrides.
    Online {
        /// Name → repository URL overrides (e.g. `kubernetes: https://…`). Default: none
        /// (the installer's built-in repositories).
        repositories: BTreeMap<String, String>,
        /// A mirror base URL that replaces the default repositories' host. Default: none.
        mirror: Option<String>,
    },
}

/// Backup settings.
#[derive(Clone, Debug, Serialize)]
pub struct Backup {
    /// Where backups go. Default: none (backup commands then need `--store`).
    pub store: Option<Store>,
    /// S3 client settings (used when `store` is `s3://`).
    pub s3: S3,
    /// Encryption of backup archives. Default: none (unencrypted).
    pub encryption: Encryption,
    /// Which backups pruning keeps.
    pub retention: Retention,
    /// Cron expression for scheduled backups. Default: none (no schedule).
    pub schedule: Option<String>,
    /// zstd level 1..=22. Default: 3.
    pub compression_level: i32,
}

/// A backup store location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Store {
    /// `s3://bucket/prefix`; `prefix` has no leading or trailing `/` and may be empty.
    S3 { bucket: String, prefix: String },
    /// `file:///abs/path` (or `file://rel/path`, resolved against the cluster file's dir).
    File { path: PathBuf },
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Store::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Store::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

/// S3 client settings.
#[derive(Clone, Debug, Serialize)]
pub struct S3 {
    /// Endpoint URL for S3-compatible stores. Default: none (AWS, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region. Default: none (the SDK's lookup, e.g. `AWS_REGION`).
    pub region: Option<String>,
    /// Force path-style addressing. Default: none (the SDK decides; most non-AWS stores want
    /// `true`).
    pub path_style: Option<bool>,
    /// Environment variable holding the access key id. Default: none (SDK default chain).
    pub access_key_id: Option<SecretEnv>,
    /// Environment variable holding the secret access key. Default: none (SDK default chain).
    pub secret_access_key: Option<SecretEnv>,
    /// Extra CA bundle (PEM) for the endpoint's TLS. Default: none (system roots).
    pub ca_file: Option<PathBuf>,
    /// When request checksums are computed. Default: `when_required` (many S3-compatible
    /// stores reject the SDK's newer checksum headers).
    pub checksums: Checksums,
    /// Multipart part size in MiB (≥ 5, S3's minimum). Default: 8.
    pub part_size_mib: u64,
    /// Parts uploaded concurrently. Default: 4.
    pub parts_in_flight: usize,
}

/// The S3 SDK's request checksum policy (`when_required` / `when_supported` in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksums {
    WhenRequired,
    WhenSupported,
}

/// Encryption of backups (age). All empty means unencrypted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Encryption {
    /// age public keys (`age1…`) backups are encrypted to.
    pub age_recipients: Vec<String>,
    /// age identity file used to decrypt on restore.
    pub age_identity_file: Option<PathBuf>,
    /// Environment variable holding a passphrase (scrypt recipient).
    pub passphrase: Option<SecretEnv>,
}

impl Encryption {
    /// Whether any encryption is configured.
    pub fn enabled(&self) -> bool {
        !self.age_recipients.is_empty() || self.passphrase.is_some()
    }
}

/// Retention rules; a backup is kept if any rule keeps it. All `None` keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// The newest N backups.
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last N hours.
    pub hourly: Option<u32>,
    /// … days.
    pub daily: Option<u32>,
    /// … ISO weeks.
    pub weekly: Option<u32>,
    /// … months.
    pub monthly: Option<u32>,
}

/// Monitor settings.
#[derive(Clone, Debug, Serialize)]
pub struct Monitor {
    /// The exporter's listen address. Default: `127.0.0.1:9842`.
    pub listen: SocketAddr,
    /// How often each collector runs.
    pub intervals: Intervals,
    /// Alert routing.
    pub alertmanager: Alertmanager,
    /// TLS and authentication on every monitoring endpoint: node-exporter and the exporter
    /// require a client certificate of the monitoring CA, Prometheus and Alertmanager basic
    /// auth over TLS. Default: true; `false` (plain HTTP, no authentication) is for closed lab
    /// networks only and warns at every run.
    pub tls: bool,
    /// The Prometheus and Alertmanager login (used only while `tls` is on).
    pub web_auth: WebAuth,
    /// Require HTTP basic auth on the exporter. Default: none.
    pub basic_auth: Option<BasicAuth>,
    /// Ports Prometheus scrapes and Prometheus/Alertmanager listen on.
    pub ports: MonitorPorts,
    /// etcd's backend quota (`--quota-backend-bytes`) the quota alerts compare with.
    /// Default: 2 GiB (etcd's default, which the installer keeps).
    pub etcd_quota_bytes: u64,
    /// A backup older than this is stale (schedule period plus slack). Default: 93600 (26 h).
    pub backup_max_age_secs: u64,
    /// The kubelet's disk thresholds the filesystem alerts fire ahead of. Not a key of
    /// cluster.yaml (so not part of the printed model): the kubelet's defaults, which the
    /// installer keeps on real hosts.
    #[serde(skip)]
    pub kubelet_disk: KubeletDisk,
}

/// The kubelet's eviction and image-GC levels, in percent of a node's disk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KubeletDisk {
    /// `evictionHard: nodefs.available`: pods are evicted below this much free space.
    /// Default: 10 (the kubelet's).
    pub eviction_nodefs_available_percent: f64,
    /// `imageGCHighThresholdPercent`: image garbage collection starts above this usage.
    /// Default: 85 (the kubelet's).
    pub image_gc_high_percent: f64,
}

impl Default for KubeletDisk {
    fn default() -> Self {
        KubeletDisk {
            eviction_nodefs_available_percent: 10.0,
            image_gc_high_percent: 85.0,
        }
    }
}

/// Ports of the monitored components; the defaults are the ones the installer binds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MonitorPorts {
    /// Default: 9100.
    pub node_exporter: u16,
    /// Default: 2379.
    pub etcd: u16,
    /// Default: 6443.
    pub apiserver: u16,
    /// Default: 10259.
    pub scheduler: u16,
    /// Default: 10257.
    pub controller_manager: u16,
    /// Default: 10250.
    pub kubelet: u16,
    /// Default: 9090.
    pub prometheus: u16,
    /// Default: 9093.
    pub alertmanager: u16,
}

impl Default for MonitorPorts {
    fn default() -> Self {
        let p = crate::layout::Ports::DEFAULT;
        MonitorPorts {
            node_exporter: p.node_exporter,
            etcd: p.etcd_client,
            apiserver: p.apiserver,
            scheduler: p.scheduler,
            controller_manager: p.controller_manager,
            kubelet: p.kubelet,
            prometheus: p.prometheus,
            alertmanager: p.alertmanager,
        }
    }
}

/// Prometheus and collector intervals, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Intervals {
    /// How often Prometheus scrapes. Default: 15.
    pub scrape_secs: u64,
    /// How often Prometheus evaluates the alert rules. Default: 15.
    pub evaluation_secs: u64,
    /// Default: 15.
    pub etcd_secs: u64,
    /// Default: 15.
    pub control_plane_secs: u64,
    /// Default: 30.
    pub nodes_secs: u64,
    /// Default: 3600 (certificates change rarely).
    pub certificates_secs: u64,
    /// Default: 300.
    pub backups_secs: u64,
}

/// Alertmanager receivers and routing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Alertmanager {
    /// Receivers, names unique, none named [`Alertmanager::NULL_RECEIVER`].
    pub receivers: Vec<Receiver>,
    /// Receiver for `severity=critical`. Default: none. Always names a receiver above.
    pub critical_receiver: Option<String>,
    /// Receiver for `severity=warning`. Default: none. Always names a receiver above.
    pub warning_receiver: Option<String>,
}

impl Alertmanager {
    /// The receiver without integrations the generated configuration routes the always-firing
    /// Watchdog to; reserved, so no receiver of the file may take the name.
    pub const NULL_RECEIVER: &'static str = "clusterkit-null";
}

/// One Alertmanager receiver.
#[derive(Clone, Debug, Serialize)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
}

/// Where a receiver sends alerts.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ReceiverKind {
    Webhook {
        url: String,
    },
    Email {
        to: String,
        from: String,
        /// `host:port` of the SMTP server.
        smarthost: String,
        auth_username: Option<String>,
        auth_password: Option<SecretEnv>,
    },
    /// WeCom (WeChat Work).
    Wecom {
        /// Default: none (Alertmanager's default `https://qyapi.weixin.qq.com/cgi-bin/`).
        api_url: Option<String>,
        corp_id: String,
        agent_id: String,
        to_party: String,
        api_secret: SecretEnv,
    },
    /// DingTalk robot webhook (through a webhook adapter).
    Dingtalk {
        webhook_url: String,
    },
}

/// The basic-auth login of Prometheus and Alertmanager.
#[derive(Clone, Debug, Serialize)]
pub struct WebAuth {
    /// Default: `admin`.
    pub username: String,
    /// Where the password comes from. Default: none, i.e. generated once into the state
    /// directory (mode 0600) and kept there.
    pub password: Option<SecretEnv>,
}

impl Default for WebAuth {
    fn default() -> Self {
        WebAuth {
            username: "admin".into(),
            password: None,
        }
    }
}

/// HTTP basic auth for the exporter.
#[derive(Clone, Debug, Serialize)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretEnv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_host_port_forms() {
        let e: Endpoint = "10.0.0.1:6443".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.1", 6443));
        let e: Endpoint = "api.example.com:443".parse().unwrap();
        assert_eq!(e.to_string(), "api.example.com:443");
        let e: Endpoint = "[fd00::1]:6443".parse().unwrap();
        assert_eq!(e.to_string(), "[fd00::1]:6443");
        for bad in [
            "10.0.0.1",
            "10.0.0.1:",
            ":6443",
            "a b:1",
            "fd00::1:6443",
            "h:0",
            "h:70000",
            "",
            "host:x",
            "[::1",
            "bad_name:6443",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn nth_addresses_of_a_network() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(nth_ip(&net("10.96.0.0/12"), 1).to_string(), "10.96.0.1");
        assert_eq!(nth_ip(&net("10.96.5.7/12"), 1).to_string(), "10.96.0.1");
        assert_eq!(nth_ip(&net("10.96.0.0/12"), 10).to_string(), "10.96.0.10");
        assert_eq!(nth_ip(&net("fd00:10::/108"), 1).to_string(), "fd00:10::1");
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("master".parse::<Role>().is_err());
    }

    #[test]
    fn pause_tag_follows_kubeadm() {
        let v = |s: &str| s.parse::<KubeVersion>().unwrap();
        assert_eq!(default_pause_tag(&v("v1.20.2")), "3.2");
        assert_eq!(default_pause_tag(&v("v1.26.3")), "3.9");
        assert_eq!(default_pause_tag(&v("v1.31.0")), "3.10");
        assert_eq!(default_pause_tag(&v("v1.34.1")), "3.10.1");
    }
}
