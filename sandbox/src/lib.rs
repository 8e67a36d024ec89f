//! Local test clusters of real nodes: systemd-nspawn containers booting Debian 12 with systemd
//! and sshd, each in its own network namespace on a per-sandbox host bridge.
//!
//! A sandbox `NAME` lives in `$CLUSTERKIT_SANDBOX_DIR/NAME` (default
//! `/var/lib/clusterkit/sandbox/NAME`): `sandbox.json` (subnet, node count), `id_ed25519`
//! (root's key on every node, 0600), `known_hosts` (the nodes' real host keys),
//! `cluster.yaml`, and `nodes/nodeN/` (overlay layers, nspawn PID and log). The base rootfs is
//! built once by debootstrap into `$CLUSTERKIT_CACHE/rootfs/bookworm` (default
//! `/var/cache/clusterkit`). See [`net`] for addressing and [`node`] for the boot profile.
//!
//! # Use from tests (blocking API; call it from `#[test]`, or from `#[tokio::test]` through
//! `tokio::task::spawn_blocking` if the test must not block its runtime)
//!
//! ```no_run
//! use clusterkit_sandbox::{SandboxGuard, UpOptions};
//!
//! // Unique name per test (1–8 of [a-z0-9-]); nodes are node1..nodeN.
//! let mut sb = SandboxGuard::up(UpOptions::new("sshexec", 3)).expect("sandbox up");
//! let cluster_yaml = sb.cluster_yaml(); // hand this to clusterkit
//! let key = sb.key_file();              // root's private key on every node
//! for node in sb.nodes() {
//!     println!("{} {} pid {:?}", node.name, node.address, node.pid);
//! }
//! sb.stop_node("node2").unwrap();       // the node's sshd is gone, its address stays
//! sb.start_node("node2").unwrap();      // booted again, same identity and address
//! // dropping `sb` runs `down`: processes, mounts, namespaces, links and files are removed,
//! // even when the test panics.
//! ```
//!
//! Limits: Linux, root, systemd-nspawn and debootstrap required (errors say how to install
//! them); IPv4 only; at most [`MAX_NODES`] nodes; node names are fixed (`node1`…).

mod cgroup;
pub mod cluster_yaml;
pub mod error;
pub mod net;
pub mod node;
pub mod rootfs;
mod sys;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use error::{Result, SandboxError};
pub use node::Node;

use error::io;
use node::NodeDirs;

/// Most nodes one sandbox can have (veth names must fit in 15 characters).
pub const MAX_NODES: usize = 99;

/// Longest sandbox name (the bridge is `ckbr-<name>`, a veth `ckv-<name>-<index>`).
pub const MAX_NAME: usize = 8;

/// Where the sandbox keeps its cache and its state.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// Holds the cached base rootfs (`rootfs/bookworm`). `$CLUSTERKIT_CACHE`.
    pub cache: PathBuf,
    /// Holds one directory per sandbox. `$CLUSTERKIT_SANDBOX_DIR`.
    pub state: PathBuf,
}

impl Dirs {
    /// `$CLUSTERKIT_CACHE` (default `/var/cache/clusterkit`) and `$CLUSTERKIT_SANDBOX_DIR`
    /// (default `/var/lib/clusterkit/sandbox`).
    pub fn from_env() -> Dirs {
        let var = |k: &str, d: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(d))
        };
        Dirs {
            cache: var("CLUSTERKIT_CACHE", "/var/cache/clusterkit"),
            state: var("CLUSTERKIT_SANDBOX_DIR", "/var/lib/clusterkit/sandbox"),
        }
    }

    fn sandbox(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    fn lock(&self, name: &str) -> PathBuf {
        self.state.join(".locks").join(format!("{name}.lock"))
    }

    /// Serialises subnet choice between sandboxes being created at the same time.
    fn global_lock(&self) -> PathBuf {
        self.state.join(".locks").join(".subnets.lock")
    }
}

/// What `up` brings up.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Sandbox name: 1–8 characters of `[a-z0-9-]`, starting with a letter or digit.
    pub name: String,
    /// How many nodes (1–99). An existing sandbox with more nodes keeps them.
    pub nodes: usize,
}

impl UpOptions {
    /// Options for `nodes` nodes in sandbox `name`.
    pub fn new(name: impl Into<String>, nodes: usize) -> Self {
        UpOptions {
            name: name.into(),
            nodes,
        }
    }
}

/// What `sandbox.json` records: enough to rebuild names and addresses.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct State {
    name: String,
    /// Third octet of the sandbox's 10.213.X.0/24.
    octet: u8,
    nodes: usize,
}

/// A running sandbox. Dropping it leaves the nodes running (the CLI's `up` does that); use
/// [`SandboxGuard`] in tests to tear it down on drop.
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    dirs: Dirs,
    octet: u8,
    nodes: Vec<Node>,
}

/// Checks a sandbox name: it becomes part of interface, namespace and directory names.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(SandboxError::InvalidName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("use 1 to 8 characters (interface names are limited to 15)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("use only a-z, 0-9 and '-'");
    }
    if name.starts_with('-') {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

/// Fails unless root and the host tools are there, saying how to get them.
fn preflight() -> Result<()> {
    if !sys::is_root() {
        return Err(SandboxError::NotRoot);
    }
    sys::require_tool("systemd-nspawn", "systemd-container")?;
    sys::require_tool("ip", "iproute2")?;
    sys::require_tool("ssh-keygen", "openssh-client")?;
    sys::require_tool("setsid", "util-linux")?;
    Ok(())
}

fn read_state(dir: &Path) -> Result<Option<State>> {
    let path = dir.join("sandbox.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| SandboxError::StateJson { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Subnet octets recorded by the other sandboxes.
fn taken_octets(dirs: &Dirs, except: &str) -> Vec<u8> {
    let Ok(entries) = fs::read_dir(&dirs.state) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name() != except)
        .filter_map(|e| read_state(&e.path()).ok().flatten())
        .map(|s| s.octet)
        .collect()
}

impl Sandbox {
    /// Brings sandbox `opts.name` up with `$CLUSTERKIT_*` directories; see [`Sandbox::up_in`].
    pub fn up(opts: UpOptions) -> Result<Sandbox> {
        Sandbox::up_in(&Dirs::from_env(), opts)
    }

    /// Brings a sandbox up and returns once every node's sshd answers: builds the base rootfs
    /// if needed, creates bridge, namespaces and overlays, boots the nodes and writes
    /// `known_hosts` and `cluster.yaml`. Idempotent: running nodes stay as they are (same
    /// PIDs, addresses and host keys), missing or stopped ones are (re)started.
    pub fn up_in(dirs: &Dirs, opts: UpOptions) -> Result<Sandbox> {
        validate_name(&opts.name)?;
        if opts.nodes == 0 || opts.nodes > MAX_NODES {
            return Err(SandboxError::InvalidNodeCount {
                nodes: opts.nodes,
                max: MAX_NODES,
            });
        }
        preflight()?;
        // Every node runs its own systemd, containerd and kubelet, each holding inotify
        // instances; Debian's default of 128 per user runs out with a few sandboxes up and
        // node systemd then fails to start ("Too many open files"). Raised, never lowered.
        sys::raise_sysctl("fs/inotify/max_user_instances", 8192)?;
        sys::raise_sysctl("fs/inotify/max_user_watches", 524_288)?;
        let name = opts.name.as_str();
        let base = rootfs::ensure_base(&dirs.cache)?;
        sys::mkdir(&dirs.state, 0o755)?;
        let _lock = sys::Lock::acquire(&dirs.lock(name))?;
        let dir = dirs.sandbox(name);
        sys::mkdir(&dir, 0o755)?;

        let state = {
            let _global = sys::Lock::acquire(&dirs.global_lock())?;
            let existing = read_state(&dir)?;
            let octet = match &existing {
                Some(s) => s.octet,
                None => net::choose_subnet(name, &taken_octets(dirs, name))?,
            };
            let nodes = existing.as_ref().map_or(0, |s| s.nodes).max(opts.nodes);
            let state = State {
                name: name.into(),
                octet,
                nodes,
            };
            // Recorded before the bridge exists, so `down` after a crash here still finds it.
            let json = serde_json::to_vec_pretty(&state).unwrap_or_default();
            sys::write_atomic(&dir.join("sandbox.json"), &json, 0o644)?;
            net::ensure_bridge(name, octet)?;
            state
        };
        if state.nodes > opts.nodes {
            tracing::warn!(
                sandbox = name,
                nodes = state.nodes,
                "the sandbox already has more nodes than asked for; keeping them"
            );
        }

        let key = dir.join("id_ed25519");
        if !key.exists() {
            let _ = fs::remove_file(dir.join("id_ed25519.pub"));
            sys::run(
                std::process::Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", ""])
                    .arg("-C")
                    .arg(format!("clusterkit-sandbox-{name}"))
                    .arg("-f")
                    .arg(&key),
            )?;
        }
        let pub_path = dir.join("id_ed25519.pub");
        let authorized = fs::read_to_string(&pub_path).map_err(io("read", &pub_path))?;

        let mut nodes = Vec::with_capacity(state.nodes);
        for index in 1..=state.nodes {
            let node_name = node::node_name(index);
            let nd = NodeDirs::new(&dir, &node_name);
            let address = net::node_address(state.octet, index);
            let pid = match nd.running_pid() {
                Some(pid) => pid,
                None => {
                    tracing::info!(sandbox = name, node = %node_name, "booting");
                    orphans(&nd)?;
                    net::ensure_node_net(name, state.octet, index)?;
                    node::prepare(&nd, &base, &node_name, &authorized)?;
                    node::boot(&nd, &node_name, &net::netns_name(name, index))?
                }
            };
            nodes.push(Node {
                name: node_name,
                index,
                address,
                pid: Some(pid),
            });
        }

        // Boots overlap; wait for every sshd at once.
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let nd = NodeDirs::new(&dir, &n.name);
                    s.spawn(move || node::wait_ssh(&nd, &n.name, n.address))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for r in results {
            r?;
        }

        let sandbox = Sandbox {
            name: name.into(),
            dirs: dirs.clone(),
            octet: state.octet,
            nodes,
        };
        sandbox.write_outputs()?;
        Ok(sandbox)
    }

    /// Opens an existing sandbox (running or not) to inspect or control it.
    pub fn open(name: &str) -> Result<Sandbox> {
        Sandbox::open_in(&Dirs::from_env(), name)
    }

    /// [`Sandbox::open`] with explicit directories.
    pub fn open_in(dirs: &Dirs, name: &str) -> Result<Sandbox> {
        validate_name(name)?;
        let dir = dirs.sandbox(name);
        let state = read_state(&dir)?.ok_or_else(|| SandboxError::NotFound {
            name: name.into(),
            dir: dir.clone(),
        })?;
        let nodes = (1..=state.nodes)
            .map(|index| {
                let node_name = node::node_name(index);
                let pid = NodeDirs::new(&dir, &node_name).running_pid();
                Node {
                    name: node_name,
                    index,
                    address: net::node_address(state.octet, index),
                    pid,
                }
            })
            .collect();
        Ok(Sandbox {
            name: name.into(),
            dirs: dirs.clone(),
            octet: state.octet,
            nodes,
        })
    }

    fn write_outputs(&self) -> Result<()> {
        let dir = self.dir();
        let mut known = String::new();
        for n in &self.nodes {
            known.push_str(&node::known_hosts_lines(
                &NodeDirs::new(&dir, &n.name),
                n.address,
            )?);
        }
        sys::write_atomic(&self.known_hosts(), known.as_bytes(), 0o644)?;
        let yaml = cluster_yaml::render(&self.name, &self.nodes);
        sys::write_atomic(&self.cluster_yaml(), yaml.as_bytes(), 0o644)
    }

    /// The sandbox's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sandbox's state directory.
    pub fn dir(&self) -> PathBuf {
        self.dirs.sandbox(&self.name)
    }

    /// The ready-to-use cluster description of this sandbox.
    pub fn cluster_yaml(&self) -> PathBuf {
        self.dir().join("cluster.yaml")
    }

    /// Root's private key on every node (0600).
    pub fn key_file(&self) -> PathBuf {
        self.dir().join("id_ed25519")
    }

    /// The nodes' real host keys, one line per node and key type.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    /// The sandbox's /24 (e.g. `10.213.7.0`).
    pub fn subnet(&self) -> Ipv4Addr {
        net::subnet(self.octet)
    }

    /// The host's address on the sandbox bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        net::gateway(self.octet)
    }

    /// The nodes, with the PIDs known when this handle last changed them.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| SandboxError::NoSuchNode {
                sandbox: self.name.clone(),
                node: name.into(),
            })
    }

    fn node_index(&self, name: &str) -> Result<usize> {
        self.node(name)?;
        Ok(self.nodes.iter().position(|n| n.name == name).unwrap_or(0))
    }

    /// Powers a node off (its address then refuses connections); overlay, identity and
    /// network stay, so [`Sandbox::start_node`] brings the same node back.
    pub fn stop_node(&mut self, name: &str) -> Result<()> {
        let i = self.node_index(name)?;
        let _lock = sys::Lock::acquire(&self.dirs.lock(&self.name))?;
        let left = node::stop_all(&[NodeDirs::new(&self.dir(), name)]);
        self.nodes[i].pid = None;
        if left.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Leftovers {
                name: self.name.clone(),
                left,
            })
        }
    }

    /// Boots a stopped node again and waits for its sshd; a running node is left alone.
    pub fn start_node(&mut self, name: &str) -> Result<()> {
        let i = self.node_index(name)?;
        preflight()?;
        let base = rootfs::ensure_base(&self.dirs.cache)?;
        let _lock = sys::Lock::acquire(&self.dirs.lock(&self.name))?;
        let dir = self.dir();
        let nd = NodeDirs::new(&dir, name);
        let index = self.nodes[i].index;
        let pid = match nd.running_pid() {
            Some(pid) => pid,
            None => {
                let pub_path = dir.join("id_ed25519.pub");
                let authorized = fs::read_to_string(&pub_path).map_err(io("read", &pub_path))?;
                orphans(&nd)?;
                net::ensure_node_net(&self.name, self.octet, index)?;
                node::prepare(&nd, &base, name, &authorized)?;
                node::boot(&nd, name, &net::netns_name(&self.name, index))?
            }
        };
        self.nodes[i].pid = Some(pid);
        node::wait_ssh(&nd, name, self.nodes[i].address)
    }

    /// Tears the sandbox down; see [`down_in`].
    pub fn down(self) -> Result<()> {
        down_in(&self.dirs, &self.name)
    }
}

/// Removes what a crashed nspawn left of a node before it boots again (two systemd
/// instances must never share one root).
fn orphans(nd: &NodeDirs) -> Result<()> {
    let left = node::kill_orphans(nd);
    if left.is_empty() {
        Ok(())
    } else {
        Err(SandboxError::Leftovers {
            name: nd.dir.display().to_string(),
            left,
        })
    }
}

/// Tears sandbox `name` down with `$CLUSTERKIT_*` directories; see [`down_in`].
pub fn down(name: &str) -> Result<()> {
    down_in(&Dirs::from_env(), name)
}

/// Removes everything sandbox `name` made: node processes (SIGTERM, then SIGKILL), every
/// mount below its directory (deepest first, lazily as the last resort), its network
/// namespaces, veths and bridge, and its directory. Works from what exists — directories,
/// `ip netns list`, `ip link` — so it is safe after a crash and when run twice. The
/// directory is kept when anything could not be removed, and the error lists what is left.
pub fn down_in(dirs: &Dirs, name: &str) -> Result<()> {
    validate_name(name)?;
    if !sys::is_root() {
        return Err(SandboxError::NotRoot);
    }
    sys::require_tool("ip", "iproute2")?;
    let _lock = sys::Lock::acquire(&dirs.lock(name))?;
    let dir = dirs.sandbox(name);
    let mut left = Vec::new();

    let node_dirs: Vec<NodeDirs> = fs::read_dir(dir.join("nodes"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| NodeDirs::new(&dir, &e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    left.extend(node::stop_all(&node_dirs));

    for mount in sys::mounts_under(&dir)? {
        if let Err(e) = sys::unmount(&mount) {
            left.push(e.to_string());
        }
    }
    for mount in sys::mounts_under(&dir)? {
        left.push(format!("mount {} still present", mount.display()));
    }

    for ns in net::netns_list()? {
        if net::netns_owner(&ns).is_some_and(|(owner, _)| owner == name) {
            // Containers whose nspawn (and node directory) vanished in a crash.
            left.extend(node::kill_netns(&ns));
            if let Err(e) = sys::ip(&["netns", "delete", &ns]) {
                left.push(e.to_string());
            }
        }
    }
    let bridge = net::bridge_name(name);
    for link in net::links()? {
        let ours = link == bridge || net::veth_owner(&link).is_some_and(|(owner, _)| owner == name);
        if ours {
            if let Err(e) = sys::ip(&["link", "delete", &link]) {
                // A veth disappears with its namespace; only complain if it is still there.
                if net::links()?.contains(&link) {
                    left.push(e.to_string());
                }
            }
        }
    }

    if !left.is_empty() {
        return Err(SandboxError::Leftovers {
            name: name.into(),
            left,
        });
    }
    // Only with nothing mounted below it: remove_dir_all never crosses into a live overlay.
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &dir)(e)),
    }
}

/// State of one node for `sandbox status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    /// Name, address and PID (when running).
    #[serde(flatten)]
    pub node: Node,
    /// `running` or `stopped`.
    pub state: &'static str,
    /// Whether sshd sent its banner just now.
    pub ssh: bool,
}

/// State of one sandbox for `sandbox status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SandboxStatus {
    pub name: String,
    /// Its state directory.
    pub dir: PathBuf,
    /// `10.213.X.0/24`, or empty for leftovers of a sandbox whose directory is gone.
    pub subnet: String,
    /// Whether its bridge exists.
    pub bridge: bool,
    pub nodes: Vec<NodeStatus>,
    /// Set when only leftovers (bridge, namespaces) exist: run `down` to remove them.
    pub leftover: bool,
}

/// Status of sandbox `name`, or of every sandbox (including leftovers of crashed ones).
pub fn status_in(dirs: &Dirs, name: Option<&str>) -> Result<Vec<SandboxStatus>> {
    let links = net::links()?;
    let netns = net::netns_list()?;
    let mut names: Vec<String> = match name {
        Some(n) => {
            validate_name(n)?;
            vec![n.to_string()]
        }
        None => {
            let mut all: Vec<String> = fs::read_dir(&dirs.state)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.path().join("sandbox.json").exists())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            all.extend(
                links
                    .iter()
                    .filter_map(|l| l.strip_prefix("ckbr-"))
                    .map(str::to_string),
            );
            all.extend(
                netns
                    .iter()
                    .filter_map(|n| net::netns_owner(n))
                    .map(|(o, _)| o.to_string()),
            );
            all
        }
    };
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for n in names {
        let bridge = links.contains(&net::bridge_name(&n));
        match Sandbox::open_in(dirs, &n) {
            Ok(sb) => {
                let nodes = sb
                    .nodes
                    .iter()
                    .map(|node| NodeStatus {
                        node: node.clone(),
                        state: if node.pid.is_some() {
                            "running"
                        } else {
                            "stopped"
                        },
                        ssh: node.pid.is_some() && node::ssh_answers(node.address),
                    })
                    .collect();
                out.push(SandboxStatus {
                    subnet: format!("{}/24", sb.subnet()),
                    dir: sb.dir(),
                    name: n,
                    bridge,
                    nodes,
                    leftover: false,
                });
            }
            Err(SandboxError::NotFound { dir, .. }) => {
                let has_netns = netns
                    .iter()
                    .any(|ns| net::netns_owner(ns).is_some_and(|(o, _)| o == n));
                if bridge || has_netns {
                    out.push(SandboxStatus {
                        name: n,
                        dir,
                        subnet: String::new(),
                        bridge,
                        nodes: Vec::new(),
                        leftover: true,
                    });
                } else if name.is_some() {
                    return Err(SandboxError::NotFound { name: n, dir });
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A sandbox for a test: brought up by [`SandboxGuard::up`], torn down when dropped (also
/// when the test panics, and when `up` itself fails half-way). Derefs to [`Sandbox`].
#[derive(Debug)]
pub struct SandboxGuard {
    sandbox: Sandbox,
}

impl SandboxGuard {
    /// Brings the sandbox up; on failure removes whatever was created before returning.
    pub fn up(opts: UpOptions) -> Result<SandboxGuard> {
        let dirs = Dirs::from_env();
        let name = opts.name.clone();
        match Sandbox::up_in(&dirs, opts) {
            Ok(sandbox) => Ok(SandboxGuard { sandbox }),
            Err(e) => {
                if validate_name(&name).is_ok() {
                    if let Err(down) = down_in(&dirs, &name) {
                        eprintln!("sandbox {name}: cleanup after failed up: {down}");
                    }
                }
                Err(e)
            }
        }
    }
}

impl std::ops::Deref for SandboxGuard {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl std::ops::DerefMut for SandboxGuard {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if let Err(e) = down_in(&self.sandbox.dirs, &self.sandbox.name) {
            eprintln!("sandbox {}: down failed: {e}", self.sandbox.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("t1").is_ok());
        assert!(validate_name("a-b-c").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("toolongname").is_err());
        assert!(validate_name("Up").is_err());
        assert!(validate_name("-a").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
