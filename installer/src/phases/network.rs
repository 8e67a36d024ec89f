//! Phase `network`: the built-in `host-gw` pod network (`kubernetes.network: host-gw`, the
//! default with `profile: sandbox`). Other networks (calico, flannel) are manifests applied
//! later; for them this phase does nothing.
//!
//! host-gw, as flannel's host-gw backend does it but with static, clusterkit-managed state:
//! - every node owns a `/24` slice of `kubernetes.pod_cidr` ([`pod_cidrs`]); its pods get
//!   addresses from it through Debian's `containernetworking-plugins` — `bridge` (`cni0`, the
//!   node is the gateway `.1`) with `host-local` IPAM on the slice, `portmap`, and `loopback` —
//!   configured by `/etc/cni/net.d/10-clusterkit.conflist` (+ `99-loopback.conf`);
//! - every node routes each other node's slice via that node's address (`ip route replace …
//!   proto 75`; the protocol number marks clusterkit's routes so stale ones are found and
//!   removed) — which needs the nodes on one L2 segment, as host-gw always does;
//! - traffic from the slice to outside the pod network is masqueraded (iptables nat
//!   POSTROUTING, checked with `-C` before `-A`), and FORWARD accepts pod traffic.
//!
//! The routes and rules are applied by a per-node script (`templates/cni/pod-network.sh`) that
//! prints one `CHANGED:` line per change (so the playbook reports ok/changed), and a systemd
//! oneshot unit runs it again at every boot.
//!
//! Slice allocation (deterministic, documented for whoever sets `spec.podCIDR`): slices are
//! numbered from the start of `pod_cidr`; on the first install host *i* of cluster.yaml (in
//! file order, from 0) gets slice *i*. The allocation is recorded in
//! `<state_dir>/network/pod-cidrs.json` and kept: a host keeps its slice while it stays in
//! cluster.yaml, a removed host's slice is freed, and a new host takes the lowest free slice.
//! This is the one source of truth: with host-gw the controller manager allocates nothing (no
//! `--allocate-node-cidrs`, see `phases::common::flag_input`) and the `join` phase sets each
//! Node's `spec.podCIDR(s)` from [`pod_cidrs`].
//!
//! Plugins: Debian installs them in `/usr/lib/cni`; containerd's CRI (which runs CNI for the
//! kubelet with a remote runtime — kubelet's own `--cni-bin-dir`, default `/opt/cni/bin`, is for
//! dockershim only) looks in its `bin_dir`, `/usr/lib/cni` in the sandbox profile and
//! `/opt/cni/bin` otherwise; both work because `/opt/cni/bin` gets symlinks.
//!
//! Limits: IPv4 only; `/24` slices, so `pod_cidr` must be `/24` or larger and have a slice per
//! host; no encapsulation (nodes must reach each other directly).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Network};
use clusterkit_core::layout::{NodeLayout, StateLayout};
use clusterkit_core::playbook::HostTarget;
use serde_json::{json, Map, Value};

use super::{InstallError, Phase, PhaseContext};

/// Prefix length of each node's pod CIDR slice.
pub const SLICE_PREFIX: u8 = clusterkit_core::config::Kubernetes::NODE_POD_PREFIX_V4;

/// The CNI network's name (in the conflist and in host-local's data directory).
pub const NETWORK_NAME: &str = "clusterkit";

/// The bridge pods are plugged into.
pub const BRIDGE: &str = "cni0";

/// CNI spec version of the generated configs (understood by containerd 1.6 and plugins 1.1).
pub const CNI_VERSION: &str = "0.4.0";

/// Route protocol number marking clusterkit's pod routes (unassigned in /etc/iproute2/rt_protos).
pub const ROUTE_PROTO: u8 = 75;

/// Packages this phase installs (add them to offline bundles).
pub const NETWORK_PACKAGES: &[&str] = &["containernetworking-plugins"];

/// The plugins the configs use (loopback is run by containerd for every pod).
pub const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// An IPv4 network `addr/prefix` (the address is the network's first address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slice {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Slice {
    /// The gateway address pods use: the first host address (the node's `cni0`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl std::fmt::Display for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Text that is not an IPv4 `addr/prefix`; `why` names the part that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct BadSlice {
    text: String,
    why: &'static str,
}

impl std::str::FromStr for Slice {
    type Err = BadSlice;
    fn from_str(s: &str) -> Result<Slice, BadSlice> {
        let bad = |why| BadSlice {
            text: s.to_string(),
            why,
        };
        let (a, p) = s.split_once('/').ok_or_else(|| bad("not addr/prefix"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("bad IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix"))?;
        if prefix > 32 {
            return Err(bad("prefix above 32"));
        }
        Ok(Slice { addr, prefix })
    }
}

/// Errors of the pod network (configuration that host-gw cannot serve).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("kubernetes.pod_cidr {cidr}: host-gw supports IPv4 pod networks only")]
    NotIpv4 { cidr: String },

    #[error(
        "kubernetes.pod_cidr {cidr} is smaller than one /{SLICE_PREFIX} node slice: use a /{SLICE_PREFIX} or larger"
    )]
    TooSmall { cidr: String },

    #[error(
        "kubernetes.pod_cidr {cidr} has {slices} /{SLICE_PREFIX} slices for {hosts} hosts: use a larger pod_cidr"
    )]
    Exhausted {
        cidr: String,
        slices: u64,
        hosts: usize,
    },

    #[error("host {host}: host-gw routes pod traffic via the node's IPv4 address, not {address}")]
    HostNotIpv4 { host: String, address: String },

    #[error("{path}: {source}")]
    StateIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {source}")]
    StateJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: host {host}: {source}")]
    StateSlice {
        path: PathBuf,
        host: String,
        #[source]
        source: BadSlice,
    },

    /// A Node object whose podCIDR is not the slice host-gw routes to it.
    #[error(
        "node {node} has podCIDR {have} but host-gw routes {want} to it; Kubernetes never changes a node's podCIDR: delete the Node object (`kubectl delete node {node}`, its kubelet registers it again) and rerun install"
    )]
    NodeSlice {
        node: String,
        have: String,
        want: String,
    },
}

/// `pod_cidr` as an IPv4 network with its host bits cleared.
fn pod_network(cluster: &Cluster) -> Result<Slice, NetworkError> {
    let cidr = &cluster.kubernetes.pod_cidr;
    match cidr.network() {
        IpAddr::V4(addr) => Ok(Slice {
            addr,
            prefix: cidr.prefix_len(),
        }),
        IpAddr::V6(_) => Err(NetworkError::NotIpv4 {
            cidr: cidr.to_string(),
        }),
    }
}

/// Slice number `i` of `net`.
fn nth_slice(net: Slice, i: u64) -> Slice {
    let step = 1u64 << (32 - SLICE_PREFIX);
    Slice {
        addr: Ipv4Addr::from((u64::from(u32::from(net.addr)) + i * step) as u32),
        prefix: SLICE_PREFIX,
    }
}

/// Whether `slice` is one of `net`'s slices, and which.
fn slice_index(net: Slice, slice: Slice) -> Option<u64> {
    if slice.prefix != SLICE_PREFIX {
        return None;
    }
    let base = u64::from(u32::from(net.addr));
    let a = u64::from(u32::from(slice.addr));
    let size = 1u64 << (32 - net.prefix);
    let step = 1u64 << (32 - SLICE_PREFIX);
    (a >= base && a < base + size && (a - base) % step == 0).then(|| (a - base) / step)
}

/// The allocation rule (pure): previous slices kept for hosts still present (when still valid
/// slices of `pod_cidr` and not claimed twice), then the lowest free slice for every other host,
/// in cluster.yaml order.
pub fn allocate(
    cluster: &Cluster,
    previous: &BTreeMap<String, Slice>,
) -> Result<BTreeMap<String, Slice>, NetworkError> {
    let net = pod_network(cluster)?;
    if net.prefix > SLICE_PREFIX {
        return Err(NetworkError::TooSmall {
            cidr: net.to_string(),
        });
    }
    let count = 1u64 << (SLICE_PREFIX - net.prefix);
    if count < cluster.hosts.len() as u64 {
        return Err(NetworkError::Exhausted {
            cidr: net.to_string(),
            slices: count,
            hosts: cluster.hosts.len(),
        });
    }
    let mut used = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for h in &cluster.hosts {
        if let Some(i) = previous.get(&h.name).and_then(|s| slice_index(net, *s)) {
            if used.insert(i) {
                out.insert(h.name.clone(), nth_slice(net, i));
            }
        }
    }
    let mut next = 0u64;
    for h in &cluster.hosts {
        if out.contains_key(&h.name) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        used.insert(next);
        out.insert(h.name.clone(), nth_slice(net, next));
    }
    Ok(out)
}

/// The recorded allocation: `<state_dir>/network/pod-cidrs.json`.
pub fn state_file(cluster: &Cluster) -> PathBuf {
    StateLayout::from_cluster(cluster).pod_cidrs()
}

fn load_state(cluster: &Cluster) -> Result<BTreeMap<String, Slice>, NetworkError> {
    let path = state_file(cluster);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(NetworkError::StateIo { path, source: e }),
    };
    let raw: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|source| NetworkError::StateJson {
            path: path.clone(),
            source,
        })?;
    raw.into_iter()
        .map(|(h, s)| {
            s.parse()
                .map(|s| (h.clone(), s))
                .map_err(|source| NetworkError::StateSlice {
                    path: path.clone(),
                    host: h.clone(),
                    source,
                })
        })
        .collect()
}

fn save_state(cluster: &Cluster, slices: &BTreeMap<String, Slice>) -> Result<(), NetworkError> {
    let path = state_file(cluster);
    let err = |source: std::io::Error| NetworkError::StateIo {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let raw: BTreeMap<&String, String> = slices.iter().map(|(h, s)| (h, s.to_string())).collect();
    let text = serde_json::to_string_pretty(&raw).unwrap_or_default() + "\n";
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// Every host's pod CIDR slice: the recorded allocation extended by [`allocate`]. This is
/// what Node objects' `spec.podCIDR` must say (read-only: nothing is recorded here).
pub fn pod_cidrs(cluster: &Cluster) -> Result<BTreeMap<String, Slice>, NetworkError> {
    allocate(cluster, &load_state(cluster)?)
}

/// What the network playbook and templates see as `host.network` on `host`.
pub fn host_network(
    cluster: &Cluster,
    slices: &BTreeMap<String, Slice>,
    host: &str,
) -> Result<Value, NetworkError> {
    let net = pod_network(cluster)?;
    let mut routes = Vec::new();
    for h in &cluster.hosts {
        if h.name == host {
            continue;
        }
        let IpAddr::V4(via) = h.address else {
            return Err(NetworkError::HostNotIpv4 {
                host: h.name.clone(),
                address: h.address.to_string(),
            });
        };
        if let Some(s) = slices.get(&h.name) {
            routes.push(json!({ "dst": s.to_string(), "via": via.to_string(), "node": h.name }));
        }
    }
    let slice = slices.get(host).copied().unwrap_or(nth_slice(net, 0));
    let layout = NodeLayout::from_cluster(cluster);
    Ok(json!({
        "name": NETWORK_NAME,
        "cni_version": CNI_VERSION,
        "bridge": BRIDGE,
        "pod_cidr": net.to_string(),
        "slice": slice.to_string(),
        "gateway": slice.gateway().to_string(),
        "routes": routes,
        "route_proto": ROUTE_PROTO,
        "script": layout.pod_network_script,
        "packages": NETWORK_PACKAGES,
        "plugins": PLUGINS,
        // Debian's package puts the plugins here; kubelet and containerd look in the
        // other, which gets symlinks to them.
        "debian_cni_dir": layout.debian_cni_dir,
        "opt_cni_dir": layout.opt_cni_dir,
    }))
}

/// The targets with `host.network` filled in for `cluster` (whose hosts define the routes).
fn network_targets(
    cluster: &Cluster,
    slices: &BTreeMap<String, Slice>,
    targets: &[HostTarget],
) -> Result<Vec<HostTarget>, NetworkError> {
    targets
        .iter()
        .filter(|t| cluster.host(&t.name).is_some())
        .map(|t| {
            let mut t = t.clone();
            let v = host_network(cluster, slices, &t.name)?;
            if let Value::Object(vars) = &mut t.vars {
                vars.insert("network".into(), v);
            } else {
                let mut m = Map::new();
                m.insert("network".into(), v);
                t.vars = Value::Object(m);
            }
            Ok(t)
        })
        .collect()
}

/// `network`: see the module docs.
pub struct NetworkPhase;

#[async_trait]
impl Phase for NetworkPhase {
    fn name(&self) -> &'static str {
        "network"
    }
    fn describe(&self) -> &'static str {
        "host-gw pod network: CNI bridge + host-local per node /24, routes between nodes, masquerading"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        if cx.cluster.kubernetes.network != Network::HostGw {
            tracing::info!(
                network = ?cx.cluster.kubernetes.network,
                "pod network is not host-gw: nothing for the network phase to do"
            );
            return Ok(());
        }
        let pb = clusterkit_core::playbook::load(cx.library, "network")?;
        let slices = pod_cidrs(cx.cluster)?;
        if !cx.check {
            save_state(cx.cluster, &slices)?;
        }
        let targets = network_targets(cx.cluster, &slices, cx.targets)?;
        cx.engine.run(&pb, &targets).await;
        Ok(())
    }
}

/// For `node remove`: takes `removed` out of the pod network. Its slice is freed in the
/// recorded allocation and the network playbook runs on `targets` (the remaining nodes) with
/// the cluster minus that host, so their scripts delete the route to its slice (routes marked
/// with [`ROUTE_PROTO`] that are no longer wanted are removed) and the boot unit no longer
/// restores it. Call it with the engine of the removal run; `--check` is honoured.
pub async fn remove_node(cx: &PhaseContext<'_>, removed: &str) -> Result<(), InstallError> {
    let mut rest = cx.cluster.clone();
    rest.hosts.retain(|h| h.name != removed);
    let pb = clusterkit_core::playbook::load(cx.library, "network")?;
    let mut slices = load_state(cx.cluster)?;
    slices.remove(removed);
    let slices = allocate(&rest, &slices)?;
    if !cx.check {
        save_state(&rest, &slices)?;
    }
    let remaining: Vec<HostTarget> = cx
        .targets
        .iter()
        .filter(|t| t.name != removed)
        .cloned()
        .collect();
    let targets = network_targets(&rest, &slices, &remaining)?;
    cx.engine.run(&pb, &targets).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(hosts: &[(&str, &str)], pod_cidr: &str) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("ck-net-{}-{}", std::process::id(), hosts.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("id");
        std::fs::write(&key, "x\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut yaml = String::from("name: t\nhosts:\n");
        for (i, (n, a)) in hosts.iter().enumerate() {
            let roles = if i == 0 {
                "[control-plane, etcd, worker]"
            } else {
                "[worker]"
            };
            yaml.push_str(&format!(
                "  - {{ name: {n}, address: {a}, roles: {roles}, auth: {{ key_file: ./id }} }}\n"
            ));
        }
        yaml.push_str(&format!(
            "kubernetes: {{ version: v1.20.2, pod_cidr: {pod_cidr}, network: host-gw }}\n"
        ));
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        clusterkit_core::config::load(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .cluster
    }

    #[test]
    fn slices_follow_host_order_and_survive_removal() {
        let c = cluster(
            &[("a", "10.1.0.1"), ("b", "10.1.0.2"), ("c", "10.1.0.3")],
            "10.244.0.0/16",
        );
        let s = allocate(&c, &BTreeMap::new()).unwrap();
        assert_eq!(s["a"].to_string(), "10.244.0.0/24");
        assert_eq!(s["b"].to_string(), "10.244.1.0/24");
        assert_eq!(s["c"].to_string(), "10.244.2.0/24");
        assert_eq!(s["b"].gateway().to_string(), "10.244.1.1");
        // b removed: c keeps its slice; a new host d takes the freed one.
        let mut c2 = c.clone();
        c2.hosts.retain(|h| h.name != "b");
        let mut d = c.hosts[1].clone();
        d.name = "d".into();
        c2.hosts.push(d);
        let mut prev = s.clone();
        prev.remove("b");
        let s2 = allocate(&c2, &prev).unwrap();
        assert_eq!(s2["c"].to_string(), "10.244.2.0/24");
        assert_eq!(s2["d"].to_string(), "10.244.1.0/24");
    }

    #[test]
    fn foreign_or_duplicate_previous_slices_are_reallocated() {
        let c = cluster(&[("a", "10.1.0.1"), ("b", "10.1.0.2")], "10.244.0.0/16");
        let mut prev = BTreeMap::new();
        prev.insert("a".to_string(), "10.9.0.0/24".parse().unwrap());
        prev.insert("b".to_string(), "10.244.5.0/24".parse().unwrap());
        let s = allocate(&c, &prev).unwrap();
        assert_eq!(s["b"].to_string(), "10.244.5.0/24");
        assert_eq!(s["a"].to_string(), "10.244.0.0/24");
    }

    #[test]
    fn too_small_pod_cidrs_are_refused_with_the_field() {
        // `config validate` refuses these files already; a cluster built in code is checked
        // here all the same.
        let mut c = cluster(&[("a", "10.1.0.1"), ("b", "10.1.0.2")], "10.244.0.0/16");
        c.kubernetes.pod_cidr = "10.244.0.0/25".parse().unwrap();
        let e = allocate(&c, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("kubernetes.pod_cidr 10.244.0.0/25"), "{e}");
        let mut c = cluster(
            &[("a", "10.1.0.1"), ("b", "10.1.0.2"), ("c", "10.1.0.3")],
            "10.244.0.0/16",
        );
        c.kubernetes.pod_cidr = "10.244.0.0/23".parse().unwrap();
        let e = allocate(&c, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("2 /24 slices for 3 hosts"), "{e}");
    }

    #[test]
    fn host_network_routes_to_every_other_node() {
        let c = cluster(
            &[("a", "10.1.0.1"), ("b", "10.1.0.2"), ("c", "10.1.0.3")],
            "10.244.0.0/16",
        );
        let s = allocate(&c, &BTreeMap::new()).unwrap();
        let v = host_network(&c, &s, "b").unwrap();
        assert_eq!(v["slice"], "10.244.1.0/24");
        assert_eq!(v["gateway"], "10.244.1.1");
        assert_eq!(v["pod_cidr"], "10.244.0.0/16");
        assert_eq!(
            v["routes"],
            json!([
                {"dst": "10.244.0.0/24", "via": "10.1.0.1", "node": "a"},
                {"dst": "10.244.2.0/24", "via": "10.1.0.3", "node": "c"},
            ])
        );
    }

    #[test]
    fn slice_parsing() {
        assert!("10.0.0.0".parse::<Slice>().is_err());
        assert!("10.0.0.0/33".parse::<Slice>().is_err());
        let s: Slice = "10.0.3.0/24".parse().unwrap();
        let net: Slice = "10.0.0.0/16".parse().unwrap();
        assert_eq!(slice_index(net, s), Some(3));
        assert_eq!(slice_index(net, "10.0.3.128/25".parse().unwrap()), None);
        assert_eq!(slice_index(net, "10.1.0.0/24".parse().unwrap()), None);
    }
}
