//! The sandbox against real nodes: `clusterkit sandbox up/status/down` boot systemd-nspawn
//! containers with real sshd, and every check below goes to the nodes themselves (OpenSSH
//! client with strict host-key checking, `ip netns`, `ip link`, the mount table, /proc).
//!
//! Needs root, systemd-nspawn, debootstrap (first run builds the cached base rootfs, about a
//! minute) and the OpenSSH client — all installed by scripts/deps.sh. Each test uses its own
//! sandbox name, so they run in parallel; every sandbox is torn down even when a test fails.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clusterkit_sandbox::{node::ssh_answers, SandboxGuard, UpOptions};
use common::{clusterkit, describe, run_fail, run_ok, stderr, stdout};

/// Runs `clusterkit sandbox down --name` on drop, so a failing test leaves nothing behind.
struct Down(&'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = clusterkit()
            .args(["sandbox", "down", "--name", self.0])
            .output();
    }
}

fn sandbox_dir(name: &str) -> PathBuf {
    std::env::var_os("CLUSTERKIT_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/clusterkit/sandbox".into())
        .join(name)
}

/// `ssh` with the sandbox key and strict checking against the sandbox's known_hosts only.
fn ssh(dir: &Path, address: &str, command: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ])
        .arg(dir.join("id_ed25519"))
        .arg(format!("root@{address}"))
        .arg(command)
        .output()
        .expect("run ssh (apt-get install openssh-client)")
}

fn ssh_ok(dir: &Path, address: &str, command: &str) -> String {
    let out = ssh(dir, address, command);
    assert!(
        out.status.success(),
        "ssh root@{address} {command}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status_json(name: &str) -> serde_json::Value {
    let out = run_ok(clusterkit().args(["sandbox", "status", "--name", name, "-o", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status -o json is not JSON ({e}): {}", stdout(&out)));
    v[0].clone()
}

/// (name, address, pid) of each node from `sandbox status`.
fn nodes_of(status: &serde_json::Value) -> Vec<(String, String, u64)> {
    status["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["address"].as_str().unwrap().to_string(),
                n["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn netns_of(name: &str) -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("ck-{name}-node")))
        .map(str::to_string)
        .collect()
}

fn links_of(name: &str) -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["-o", "link", "show"]));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| *n == format!("ckbr-{name}") || n.starts_with(&format!("ckv-{name}-")))
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// The nodes' own cgroup directories, in every hierarchy (named after the netns).
fn cgroups_of(name: &str) -> Vec<String> {
    let out = run_ok(Command::new("find").args([
        "/sys/fs/cgroup",
        "-type",
        "d",
        "-name",
        &format!("clusterkit-ck-{name}-node*"),
    ]));
    stdout(&out).lines().map(str::to_string).collect()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !matches!(
                s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()),
                Some('Z')
            )
        })
        .unwrap_or(false)
}

fn assert_gone(name: &str, pids: &[u64]) {
    let dir = sandbox_dir(name);
    assert_eq!(
        netns_of(name),
        Vec::<String>::new(),
        "network namespaces left"
    );
    assert_eq!(links_of(name), Vec::<String>::new(), "bridge or veths left");
    assert_eq!(mounts_under(&dir), Vec::<String>::new(), "mounts left");
    assert_eq!(cgroups_of(name), Vec::<String>::new(), "cgroups left");
    for pid in pids {
        assert!(!alive(*pid), "node process {pid} still running");
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn up_status_ssh_idempotent_down() {
    let name = "sbtest1";
    let _down = Down(name);
    let dir = sandbox_dir(name);

    let out = run_ok(clusterkit().args(["sandbox", "up", "--name", name, "--nodes", "3"]));
    let last = stdout(&out).lines().last().unwrap_or_default().to_string();
    assert_eq!(
        PathBuf::from(&last),
        dir.join("cluster.yaml"),
        "last stdout line"
    );
    assert!(Path::new(&last).is_file());

    // The written cluster.yaml is valid for the config parser.
    run_ok(clusterkit().args(["config", "validate", "-f", &last]));

    let status = status_json(name);
    let nodes = nodes_of(&status);
    assert_eq!(nodes.len(), 3, "status: {status}");
    for n in status["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "running", "{n}");
        assert_eq!(n["ssh"], true, "{n}");
    }

    // Every node answers SSH with the generated key, host key verified strictly, and is who
    // it says it is; identities are distinct.
    let mut machine_ids = HashSet::new();
    for (node, address, _) in &nodes {
        let out = ssh_ok(&dir, address, "hostname; cat /etc/machine-id");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(node.as_str()), "hostname of {address}");
        let id = lines.next().unwrap_or_default().to_string();
        assert_eq!(id.len(), 32, "machine-id of {node}: {id:?}");
        assert!(machine_ids.insert(id), "machine-id of {node} repeats");
    }
    let known_hosts = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    let keys: Vec<&str> = known_hosts
        .lines()
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    assert_eq!(keys.len(), 9, "3 key types per node:\n{known_hosts}");
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        9,
        "host keys repeat:\n{known_hosts}"
    );

    // Pod-capable profile: writable cgroup v1 controllers, /dev/kmsg, containerd off overlay.
    let (_, first, _) = &nodes[0];
    let mounts = ssh_ok(&dir, first, "mount | grep ' /sys/fs/cgroup/memory '");
    assert!(
        mounts.contains("(rw,"),
        "memory cgroup not writable: {mounts}"
    );
    ssh_ok(&dir, first, "test -L /dev/kmsg");
    // No seccomp filter (runc needs the session keyring) and a writable /proc/sys.
    let seccomp = ssh_ok(&dir, first, "grep '^Seccomp:' /proc/self/status");
    assert!(seccomp.ends_with('0'), "seccomp active: {seccomp}");
    ssh_ok(
        &dir,
        first,
        "sysctl -q -w net.core.somaxconn=$(sysctl -n net.core.somaxconn)",
    );
    // Each node has cgroups of its own: when nodes shared them, one node's kubelet removed
    // another node's pod cgroups as orphans. A cgroup made on node1 is not seen on node2, in a
    // controller hierarchy and in systemd's.
    let (_, second, _) = &nodes[1];
    for h in ["cpu", "memory", "systemd"] {
        let probe = format!("/sys/fs/cgroup/{h}/clusterkit-isolation-test");
        ssh_ok(&dir, first, &format!("mkdir {probe}"));
        let seen = ssh(&dir, second, &format!("test -d {probe}"));
        ssh_ok(&dir, first, &format!("rmdir {probe}"));
        assert!(!seen.status.success(), "node2 sees node1's cgroup {probe}");
    }
    let fs = ssh_ok(&dir, first, "findmnt -n -o FSTYPE /var/lib/containerd");
    assert_ne!(
        fs, "overlay",
        "/var/lib/containerd must not be on the overlay"
    );

    // A wrong host key is refused: the known_hosts check is real.
    let tampered = dir.join("known_hosts.tampered");
    // node2's keys under node1's address.
    let other: String = known_hosts
        .lines()
        .filter(|l| l.starts_with(&format!("{} ", nodes[1].1)))
        .map(|l| l.replacen(&nodes[1].1, &nodes[0].1, 1) + "\n")
        .collect();
    std::fs::write(&tampered, other).unwrap();
    let out = Command::new("ssh")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", tampered.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(dir.join("id_ed25519"))
        .arg(format!("root@{}", nodes[0].1))
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "ssh accepted node2's keys for node1");
    std::fs::remove_file(&tampered).unwrap();

    // Up again: nothing restarts, same addresses and PIDs.
    let out = run_ok(clusterkit().args(["sandbox", "up", "--name", name, "--nodes", "3"]));
    assert_eq!(stdout(&out).lines().last().unwrap_or_default(), last);
    assert_eq!(
        nodes_of(&status_json(name)),
        nodes,
        "second up changed the nodes"
    );

    let pids: Vec<u64> = nodes.iter().map(|n| n.2).collect();
    run_ok(clusterkit().args(["sandbox", "down", "--name", name]));
    assert_gone(name, &pids);
    // Down again is a no-op that succeeds.
    run_ok(clusterkit().args(["sandbox", "down", "--name", name]));
    let out = run_fail(clusterkit().args(["sandbox", "status", "--name", name]));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn guard_stops_and_starts_a_node_and_cleans_up_on_drop() {
    let name = "sbtest2";
    let dir = sandbox_dir(name);
    let pids;
    {
        let mut sb = SandboxGuard::up(UpOptions::new(name, 2)).expect("sandbox up");
        assert_eq!(sb.nodes().len(), 2);
        let node2 = sb.node("node2").unwrap().clone();
        let address = node2.address.to_string();
        assert_eq!(ssh_ok(&dir, &address, "hostname"), "node2");

        sb.stop_node("node2").unwrap();
        assert!(sb.node("node2").unwrap().pid.is_none());
        assert!(
            !alive(u64::from(node2.pid.unwrap())),
            "stopped node still runs"
        );
        // A stopped node refuses (or drops) connections quickly instead of hanging.
        let start = Instant::now();
        assert!(!ssh_answers(node2.address));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "probe took {:?}",
            start.elapsed()
        );
        // node1 is untouched.
        assert_eq!(
            ssh_ok(&dir, &sb.nodes()[0].address.to_string(), "hostname"),
            "node1"
        );

        sb.start_node("node2").unwrap();
        // Same identity: the known_hosts written at `up` still verifies it.
        assert_eq!(ssh_ok(&dir, &address, "hostname"), "node2");
        pids = sb
            .nodes()
            .iter()
            .filter_map(|n| n.pid)
            .map(u64::from)
            .collect::<Vec<_>>();
        assert_eq!(pids.len(), 2);
    }
    assert_gone(name, &pids);
}

#[test]
fn down_cleans_up_after_lost_state() {
    let name = "sbtest3";
    let _down = Down(name);
    let dir = sandbox_dir(name);
    run_ok(clusterkit().args(["sandbox", "up", "--name", name, "--nodes", "1"]));
    let container = container_pids(&format!("ck-{name}-node1"));
    let pid: u64 = std::fs::read_to_string(dir.join("nodes/node1/nspawn.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // As if a crash lost the bookkeeping: no PID file, no sandbox.json.
    std::fs::remove_file(dir.join("nodes/node1/nspawn.pid")).unwrap();
    std::fs::remove_file(dir.join("sandbox.json")).unwrap();
    let out = run_ok(clusterkit().args(["sandbox", "status"]));
    assert!(
        stdout(&out).contains(name),
        "status lists the leftovers: {}",
        stdout(&out)
    );
    run_ok(clusterkit().args(["sandbox", "down", "--name", name]));
    assert_gone(name, &[vec![pid], container].concat());
}

/// PIDs of every process inside a node's network namespace (its container).
fn container_pids(ns: &str) -> Vec<u64> {
    let out = run_ok(Command::new("ip").args(["netns", "pids", ns]));
    stdout(&out)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn up_recovers_a_node_whose_nspawn_was_killed() {
    let name = "sbtest5";
    let _down = Down(name);
    let dir = sandbox_dir(name);
    run_ok(clusterkit().args(["sandbox", "up", "--name", name, "--nodes", "1"]));
    let (_, address, pid) = nodes_of(&status_json(name)).remove(0);
    let old_container = container_pids(&format!("ck-{name}-node1"));
    assert!(!old_container.is_empty());

    // A crash of nspawn leaves its container running without it.
    run_ok(Command::new("kill").args(["-KILL", &pid.to_string()]));
    assert!(common::wait_until(Duration::from_secs(5), || !alive(pid)));
    assert_eq!(status_json(name)["nodes"][0]["state"], "stopped");

    run_ok(clusterkit().args(["sandbox", "up", "--name", name, "--nodes", "1"]));
    let (_, again, new_pid) = nodes_of(&status_json(name)).remove(0);
    assert_eq!(again, address);
    assert_ne!(new_pid, pid);
    for p in &old_container {
        assert!(
            !alive(*p),
            "process {p} of the crashed node still runs next to the new one"
        );
    }
    assert_eq!(ssh_ok(&dir, &address, "hostname"), "node1");

    let new_container = container_pids(&format!("ck-{name}-node1"));
    run_ok(clusterkit().args(["sandbox", "down", "--name", name]));
    assert_gone(name, &[vec![new_pid], new_container].concat());
}

#[test]
fn clear_errors_for_bad_input_and_missing_tools() {
    let out = run_fail(clusterkit().args(["sandbox", "up", "--name", "Bad_Name"]));
    assert!(
        stderr(&out).contains("invalid sandbox name"),
        "{}",
        stderr(&out)
    );

    let out = run_fail(clusterkit().args(["sandbox", "up", "--name", "sbtest4", "--nodes", "0"]));
    assert!(
        stderr(&out).contains("'--nodes <NODES>': 0 is not in 1..=99"),
        "{}",
        stderr(&out)
    );

    // Without systemd-nspawn on PATH the error says how to install it (and creates nothing).
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = clusterkit();
    cmd.env("PATH", empty.path())
        .args(["sandbox", "up", "--name", "sbtest4"]);
    let out = run_fail(&mut cmd);
    assert!(
        stderr(&out).contains("apt-get install systemd-container"),
        "{}",
        describe(&cmd, &out, "missing tool")
    );
    assert!(!sandbox_dir("sbtest4").exists());

    // Not root: said plainly.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::bin())
        .args(["sandbox", "up", "--name", "sbtest4"]);
    let out = run_fail(&mut cmd);
    assert!(
        stderr(&out).contains("must run as root"),
        "{}",
        describe(&cmd, &out, "not root")
    );
}
