//! One sandbox node: its directory, overlay root, identity (hostname, machine-id, SSH host
//! keys, root's authorized_keys), the pod-capable boot profile, and its systemd-nspawn process.
//!
//! Layout of a node directory (`<sandbox dir>/nodes/<node>/`): `upper/` and `work/` (the
//! overlay's writable layers), `root/` (the overlay mount the node boots from), `containerd/`
//! (bound to the node's `/var/lib/containerd`, off the overlay, because containerd's overlayfs
//! snapshotter cannot stack on an overlay), `nspawn.pid`, `nspawn.log` and `cgroups` (the node's
//! own cgroup directories, see `cgroup.rs`).
//!
//! The node runs as `systemd-nspawn … -b` in its own session (setsid), outliving the command
//! that started it; its PID is recorded. Stopping sends SIGTERM (nspawn powers the node's
//! systemd off cleanly via SIGRTMIN+3), then SIGKILL if it takes too long.
//!
//! Pod-capable profile (DESIGN.md, "Pods can really run in the sandbox"): nspawn starts with
//! `SYSTEMD_SECCOMP=0`; `/dev/kmsg` links to `/dev/console`; the oneshot unit
//! `clusterkit-sandbox-cgroups.service` remounts the cgroup v1 controllers writable before
//! containerd and kubelet start. These are sandbox-only settings, never real-host defaults.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{io, Result, SandboxError};
use crate::sys;

/// How long a node may take from boot to sshd's banner (generous: the machine is shared).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a node may take to power off after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The oneshot unit that makes the cgroup v1 controllers writable inside the node.
pub const CGROUPS_UNIT: &str = "clusterkit-sandbox-cgroups.service";

const CGROUPS_SCRIPT_PATH: &str = "usr/local/sbin/clusterkit-sandbox-cgroups";

/// systemd-nspawn mounts the cgroup v1 controllers read-only; containerd and kubelet need them
/// writable. A plain remount reports "mount point is busy", hence unmount + fresh mount.
const CGROUPS_SCRIPT: &str = r#"#!/bin/sh
# Installed by clusterkit sandbox (pod-capable sandbox profile; never used on real hosts).
# Remounts the cgroup v1 controllers writable: systemd-nspawn mounts them read-only.
set -e
[ -e /dev/kmsg ] || ln -s /dev/console /dev/kmsg
mount -o remount,rw /sys/fs/cgroup
for c in pids cpu cpuacct cpuset memory devices blkio freezer; do
    [ -d "/sys/fs/cgroup/$c" ] || continue
    if grep -q " /sys/fs/cgroup/$c cgroup rw," /proc/mounts; then continue; fi
    umount -l "/sys/fs/cgroup/$c" 2>/dev/null || true
    mount -t cgroup -o "rw,nosuid,nodev,noexec,$c" cgroup "/sys/fs/cgroup/$c"
done
"#;

const CGROUPS_UNIT_TEXT: &str = "\
# Installed by clusterkit sandbox (pod-capable sandbox profile; never used on real hosts).
[Unit]
Description=clusterkit sandbox: writable cgroup v1 controllers for containerd and kubelet
After=local-fs.target
Before=containerd.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/clusterkit-sandbox-cgroups

[Install]
WantedBy=multi-user.target
";

/// kubelet reads /dev/kmsg; nspawn provides none. kind links it to the console too.
const KMSG_TMPFILES: &str = "# Installed by clusterkit sandbox: kubelet needs /dev/kmsg.\nL /dev/kmsg - - - - /dev/console\n";

/// A node of a sandbox as seen from the host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// `node1`, `node2`, … — also the node's hostname.
    pub name: String,
    /// 1-based position; decides address, veth and namespace names.
    pub index: usize,
    /// The node's address on the sandbox bridge.
    pub address: Ipv4Addr,
    /// PID of the node's systemd-nspawn process when it is running.
    pub pid: Option<u32>,
}

/// Paths of one node on the host.
#[derive(Clone, Debug)]
pub(crate) struct NodeDirs {
    pub dir: PathBuf,
    /// The node's network namespace (derived from the sandbox directory's name and the node
    /// name), used to find container processes that outlived their nspawn.
    pub netns: Option<String>,
}

impl NodeDirs {
    pub fn new(sandbox_dir: &Path, node: &str) -> Self {
        let sandbox = sandbox_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let index = node
            .strip_prefix("node")
            .and_then(|i| i.parse::<usize>().ok());
        NodeDirs {
            dir: sandbox_dir.join("nodes").join(node),
            netns: sandbox
                .zip(index)
                .map(|(s, i)| crate::net::netns_name(&s, i)),
        }
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn containerd(&self) -> PathBuf {
        self.dir.join("containerd")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("nspawn.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("nspawn.log")
    }

    /// The running nspawn PID from the PID file, if that process still boots this node.
    pub fn running_pid(&self) -> Option<u32> {
        let pid = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        sys::is_nspawn_of(pid, &self.root()).then_some(pid)
    }
}

/// Node name for a 1-based index.
pub fn node_name(index: usize) -> String {
    format!("node{index}")
}

/// Prepares a node's file system: directories, the overlay mount, identity and profile files.
/// Idempotent: identity (machine-id, host keys) is created once and kept afterwards.
pub(crate) fn prepare(
    dirs: &NodeDirs,
    base: &Path,
    hostname: &str,
    authorized_key: &str,
) -> Result<()> {
    sys::mkdir(&dirs.dir, 0o700)?;
    for d in [dirs.upper(), dirs.work(), dirs.root()] {
        sys::mkdir(&d, 0o755)?;
    }
    sys::mkdir(&dirs.containerd(), 0o711)?;
    let root = dirs.root();
    if !sys::is_mount_point(&root)? {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.display(),
            dirs.upper().display(),
            dirs.work().display()
        );
        nix::mount::mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|source| SandboxError::Sys {
            action: "mount the overlay on",
            path: root.clone(),
            source,
        })?;
    }

    sys::write_atomic(
        &root.join("etc/hostname"),
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    // The installer manages /etc/hosts later; only seed it on the first boot.
    if !dirs.upper().join("etc/hosts").exists() {
        sys::write_atomic(&root.join("etc/hosts"), hosts.as_bytes(), 0o644)?;
    }
    if !dirs.upper().join("etc/machine-id").exists() {
        let id = format!("{:032x}\n", rand::random::<u128>());
        sys::write_atomic(&root.join("etc/machine-id"), id.as_bytes(), 0o444)?;
    }
    // Fresh host keys of every type, once per node (the base has none).
    sys::run(Command::new("ssh-keygen").arg("-A").arg("-f").arg(&root))?;

    let ssh_dir = root.join("root/.ssh");
    sys::mkdir(&ssh_dir, 0o700)?;
    sys::write_atomic(
        &ssh_dir.join("authorized_keys"),
        authorized_key.as_bytes(),
        0o600,
    )?;

    install_profile(&root)
}

/// Writes the pod-capable profile files into the node (rewritten on every `up`, so a node
/// picks up a newer profile at its next boot).
fn install_profile(root: &Path) -> Result<()> {
    let script = root.join(CGROUPS_SCRIPT_PATH);
    sys::mkdir(script.parent().unwrap_or(root), 0o755)?;
    sys::write_atomic(&script, CGROUPS_SCRIPT.as_bytes(), 0o755)?;
    let units = root.join("etc/systemd/system");
    sys::write_atomic(
        &units.join(CGROUPS_UNIT),
        CGROUPS_UNIT_TEXT.as_bytes(),
        0o644,
    )?;
    let wants = units.join("multi-user.target.wants");
    sys::mkdir(&wants, 0o755)?;
    let link = wants.join(CGROUPS_UNIT);
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{CGROUPS_UNIT}"), &link)
            .map_err(io("symlink", &link))?;
    }
    let tmpfiles = root.join("etc/tmpfiles.d");
    sys::mkdir(&tmpfiles, 0o755)?;
    sys::write_atomic(
        &tmpfiles.join("clusterkit-sandbox-kmsg.conf"),
        KMSG_TMPFILES.as_bytes(),
        0o644,
    )?;
    // sshd must not wait on DNS: the nodes have no resolver.
    let sshd_conf = root.join("etc/ssh/sshd_config.d");
    sys::mkdir(&sshd_conf, 0o755)?;
    sys::write_atomic(
        &sshd_conf.join("clusterkit-sandbox.conf"),
        b"UseDNS no\n",
        0o644,
    )?;
    Ok(())
}

/// Boots the node in the background and records its PID. The node must be prepared and its
/// network namespace present.
pub(crate) fn boot(dirs: &NodeDirs, hostname: &str, netns: &str) -> Result<u32> {
    let root = dirs.root();
    let log = dirs.log();
    // `sh` starts nspawn in the background and exits at once, so the node is nobody's child
    // (no zombie in a long-running test process) and `$!` is nspawn's own PID: setsid execs
    // without forking because its caller is not a process-group leader.
    // Before that, `sh` joins the node's own cgroups, which nspawn and the node inherit.
    let cgroups = crate::cgroup::create(&dirs.dir, &format!("clusterkit-{netns}"))?;
    let script = r#"log=$1; cgroups=$2; shift 2
while IFS= read -r dir; do
    echo $$ >"$dir/cgroup.procs" || exit 1
done <"$cgroups"
setsid "$@" </dev/null >>"$log" 2>&1 & echo $!"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&log)
        .arg(&cgroups)
        .arg("systemd-nspawn")
        .args(["--register=no", "--keep-unit", "-q"])
        .arg("-D")
        .arg(&root)
        .arg(format!("--machine={hostname}"))
        .arg(format!("--network-namespace-path=/run/netns/{netns}"))
        .arg("--capability=all")
        .arg("--kill-signal=SIGRTMIN+3")
        .arg("--console=passive")
        .arg("--link-journal=no")
        .arg("--resolv-conf=off")
        .arg(format!(
            "--bind={}:/var/lib/containerd",
            dirs.containerd().display()
        ))
        .arg("-b")
        // Without it /proc/sys is read-only inside the node and sysctl fails.
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
        // Pod-capable profile: runc needs the session keyring, which seccomp would refuse.
        .env("SYSTEMD_SECCOMP", "0");
    let out = sys::run(&mut cmd)?;
    let pid: u32 = out.trim().parse().map_err(|_| SandboxError::State {
        path: log.clone(),
        message: format!("starting systemd-nspawn printed {out:?} instead of a PID"),
    })?;
    sys::write_atomic(&dirs.pid_file(), format!("{pid}\n").as_bytes(), 0o644)?;
    // `$!` is known before the background shell has exec'd setsid and then nspawn; wait until
    // the PID really is this node's nspawn so liveness checks do not see a half-started one.
    let start = Instant::now();
    while !sys::is_nspawn_of(pid, &root) {
        let gone = !Path::new(&format!("/proc/{pid}")).exists();
        if gone || start.elapsed() > Duration::from_secs(10) {
            return Err(SandboxError::NodeExited {
                node: hostname.into(),
                log: log.clone(),
                tail: sys::file_tail(&log),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// Whether sshd at `address` sends its SSH banner within a short time.
pub fn ssh_answers(address: Ipv4Addr) -> bool {
    let addr = SocketAddr::from((address, 22));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 4 {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    // Be polite: say who we are before hanging up, so sshd logs no protocol error.
    let _ = stream.write_all(b"SSH-2.0-clusterkit-sandbox-probe\r\n");
    buf.starts_with(b"SSH-")
}

/// Waits until the node's sshd answers, failing early when its nspawn process exits.
pub(crate) fn wait_ssh(dirs: &NodeDirs, node: &str, address: Ipv4Addr) -> Result<()> {
    let start = Instant::now();
    loop {
        if dirs.running_pid().is_none() {
            return Err(SandboxError::NodeExited {
                node: node.into(),
                log: dirs.log(),
                tail: sys::file_tail(&dirs.log()),
            });
        }
        if ssh_answers(address) {
            return Ok(());
        }
        if start.elapsed() > BOOT_TIMEOUT {
            return Err(SandboxError::SshTimeout {
                node: node.into(),
                address: address.to_string(),
                secs: BOOT_TIMEOUT.as_secs(),
                log: dirs.log(),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stops every nspawn process of these nodes: SIGTERM (clean poweroff), wait, SIGKILL.
/// Finds processes by PID file and by scanning /proc, so a lost PID file does not leave a
/// node running. Returns descriptions of processes that would not die.
pub(crate) fn stop_all(nodes: &[NodeDirs]) -> Vec<String> {
    let mut pids: Vec<(u32, PathBuf)> = Vec::new();
    for n in nodes {
        let root = n.root();
        for pid in n
            .running_pid()
            .into_iter()
            .chain(sys::nspawn_pids_of(&root))
        {
            if !pids.iter().any(|(p, _)| *p == pid) {
                pids.push((pid, root.clone()));
            }
        }
    }
    for (pid, _) in &pids {
        sys::signal(*pid, Signal::SIGTERM);
    }
    let alive = |pids: &[(u32, PathBuf)]| -> Vec<(u32, PathBuf)> {
        pids.iter()
            .filter(|(p, r)| sys::is_nspawn_of(*p, r))
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut left = alive(&pids);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = alive(&left);
    }
    for (pid, root) in &left {
        tracing::warn!(pid, root = %root.display(), "node did not power off in time, killing it");
        sys::signal(*pid, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = alive(&left);
    }
    for n in nodes {
        let _ = fs::remove_file(n.pid_file());
    }
    let mut leftovers: Vec<String> = left
        .iter()
        .map(|(pid, root)| {
            format!(
                "systemd-nspawn PID {pid} for {} still running",
                root.display()
            )
        })
        .collect();
    if leftovers.is_empty() {
        for n in nodes {
            leftovers.extend(kill_orphans(n));
        }
    }

    leftovers
}

/// Kills what is left in a node's network namespace once its nspawn is gone. A SIGKILLed
/// (or crashed) nspawn does not take its container with it: the node's systemd lives on,
/// reparented to the host's init, still using the overlay root and holding port 22. Only
/// call this when no nspawn runs for the node, so everything in the namespace is an orphan.
/// The node's cgroups go too, once nothing is left in them.
pub(crate) fn kill_orphans(dirs: &NodeDirs) -> Vec<String> {
    let left = dirs.netns.as_deref().map(kill_netns).unwrap_or_default();
    if !left.is_empty() {
        return left;
    }
    crate::cgroup::remove(&dirs.dir)
}

/// SIGKILLs every process in network namespace `ns` (a pid-namespace init takes its whole
/// container with it); returns descriptions of survivors.
pub(crate) fn kill_netns(ns: &str) -> Vec<String> {
    let mut pids = crate::net::netns_pids(ns);
    if pids.is_empty() {
        return Vec::new();
    }
    tracing::warn!(netns = %ns, count = pids.len(), "killing processes of a node whose nspawn is gone");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.is_empty() && Instant::now() < deadline {
        for pid in &pids {
            sys::signal(*pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
        pids = crate::net::netns_pids(ns)
            .into_iter()
            .filter(|p| sys::is_alive(*p))
            .collect();
    }
    pids.iter()
        .map(|pid| format!("process {pid} in network namespace {ns} survived SIGKILL"))
        .collect()
}

/// The node's SSH host public keys as `known_hosts` lines for `address`.
pub(crate) fn known_hosts_lines(dirs: &NodeDirs, address: Ipv4Addr) -> Result<String> {
    let ssh = dirs.root().join("etc/ssh");
    let mut lines = String::new();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let path = ssh.join(format!("ssh_host_{kind}_key.pub"));
        let text = fs::read_to_string(&path).map_err(io("read", &path))?;
        // "<type> <base64> <comment>": keep type and key, drop the comment.
        let mut parts = text.split_whitespace();
        let (Some(ty), Some(key)) = (parts.next(), parts.next()) else {
            return Err(SandboxError::State {
                path,
                message: "not an SSH public key".into(),
            });
        };
        lines.push_str(&format!("{address} {ty} {key}\n"));
    }
    Ok(lines)
}
