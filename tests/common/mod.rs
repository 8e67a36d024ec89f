//! Shared helpers for the integration tests: run the real `clusterkit` binary and, on failure,
//! show the command, its exit status, stdout and stderr (as ripgrep's tests/util.rs does).
#![allow(dead_code)]

pub mod golden;

use std::cell::RefCell;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clusterkit"))
}

/// A `clusterkit` command with a clean environment for config lookups.
pub fn clusterkit() -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_remove("CLUSTERKIT_CONFIG");
    cmd
}

/// Runs the command and returns its output; panics with everything shown when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{}", describe(cmd, &out, "expected success"));
    }
    out
}

/// Runs the command and returns its output; panics with everything shown when it succeeds.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if out.status.success() {
        panic!("{}", describe(cmd, &out, "expected failure"));
    }
    out
}

pub fn describe(cmd: &Command, out: &Output, what: &str) -> String {
    format!(
        "{what}\ncommand: {cmd:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The cache of tools built by scripts/deps.sh.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CLUSTERKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/clusterkit".into())
}

/// A tool from an environment variable, or a default path; panics with how to get it.
pub fn tool(env: &str, default: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    if default.exists() {
        return default.to_path_buf();
    }
    panic!(
        "{env} is not set and {} does not exist: run `bash scripts/deps.sh` first",
        default.display()
    );
}

/// A process started by a test, killed by its PID when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ssh root@NODE CMD` into a sandbox node, with the sandbox's key and its known_hosts (host
/// keys verified, never prompted).
pub fn ssh_cmd(sb: &clusterkit_sandbox::SandboxGuard, node: &str, cmd: &str) -> Command {
    let n = sb.node(node).unwrap();
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(sb.key_file())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sb.known_hosts().display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg(format!("root@{}", n.address))
        .arg(cmd);
    c
}

/// Runs `cmd` on a sandbox node; its stdout, or a panic showing the command and its output.
pub fn ssh(sb: &clusterkit_sandbox::SandboxGuard, node: &str, cmd: &str) -> String {
    stdout(&run_ok(&mut ssh_cmd(sb, node, cmd)))
}

/// `systemctl start UNITS…` on a sandbox node (for oneshot services it returns when they are
/// done); on failure panics with the command's output and the units' journal.
pub fn start_units(sb: &clusterkit_sandbox::SandboxGuard, node: &str, units: &[&str]) {
    let mut c = ssh_cmd(sb, node, &format!("systemctl start {}", units.join(" ")));
    let out = c.output().unwrap();
    if !out.status.success() {
        let journal = ssh(
            sb,
            node,
            &format!(
                "journalctl {} --no-pager -n 60 || true",
                units
                    .iter()
                    .map(|u| format!("-u {u}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        panic!(
            "{}\n--- journal ---\n{journal}",
            describe(&c, &out, "starting the units")
        );
    }
}

/// The `--etcd-servers=…` flag of the kube-apiserver running on `node` (from the process,
/// not its unit file, so it shows what the API server really uses).
pub fn apiserver_etcd_servers(sb: &clusterkit_sandbox::SandboxGuard, node: &str) -> String {
    ssh(
        sb,
        node,
        "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value kube-apiserver)/cmdline | grep -- '--etcd-servers='",
    )
}

/// Polls `check` every 2 s until it returns `Ok`; panics with `what` and the last error after
/// `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => {
                panic!("{what}: not within {}s: {e}", timeout.as_secs())
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// The Kubernetes v1.20.2 binaries the sandbox tests install: `$CLUSTERKIT_KUBE_BIN_DIR`, else
/// where scripts/build-kube.sh caches them. Panics naming the way out when they are missing.
pub fn kube_bin() -> PathBuf {
    let dir = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("kube-v1.20.2-r2/bin"));
    assert!(
        dir.join("kube-apiserver").is_file(),
        "Kubernetes v1.20.2 binaries missing in {} (CLUSTERKIT_KUBE_BIN_DIR): run `bash scripts/deps.sh` (scripts/build-kube.sh)",
        dir.display()
    );
    dir
}

/// The `bundle build` flags of a whole cluster's packages beyond the runtime: Debian's etcd for
/// the etcd phase and the CNI plugins for the host-gw network.
pub const CLUSTER_PACKAGES: [&str; 4] = [
    "--package",
    "etcd-server",
    "--package",
    "containernetworking-plugins",
];

/// `clusterkit bundle build … --out OUT`, the offline bundle a sandbox test installs from:
/// `args` (e.g. `--package etcd-server`, `--no-images`) and the Kubernetes binaries of
/// `kube_bin` (`None`: no binaries).
pub fn build_bundle(out: &Path, kube_bin: Option<&Path>, args: &[&str]) {
    let mut c = clusterkit();
    match kube_bin {
        Some(dir) => c.env("CLUSTERKIT_KUBE_BIN_DIR", dir),
        None => c.env_remove("CLUSTERKIT_KUBE_BIN_DIR"),
    };
    run_ok(c.args(["bundle", "build"]).args(args).arg("--out").arg(out));
}

/// kubectl (from `kube_bin`) with the kubeconfig `admin` and a 30 s request timeout.
pub fn kubectl_cmd(kube_bin: &Path, admin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(kube_bin.join("kubectl"));
    c.arg("--kubeconfig")
        .arg(admin)
        .arg("--request-timeout=30s")
        .args(args);
    c
}

/// kubectl's stdout; panics showing its output when it fails.
pub fn kubectl(kube_bin: &Path, admin: &Path, args: &[&str]) -> String {
    stdout(&run_ok(&mut kubectl_cmd(kube_bin, admin, args)))
}

/// kubectl without panicking: (success, stdout + stderr).
pub fn try_kubectl(kube_bin: &Path, admin: &Path, args: &[&str]) -> (bool, String) {
    match kubectl_cmd(kube_bin, admin, args).output() {
        Ok(o) => (o.status.success(), format!("{}{}", stdout(&o), stderr(&o))),
        Err(e) => (false, e.to_string()),
    }
}

/// The steps of a long scenario test, so that a failure anywhere in one says which step it was
/// (the assertion's message says what): each step is announced on stderr as it starts, with the
/// time since the scenario began, and when a panic unwinds past this value it prints the step
/// that was running.
pub struct Steps {
    scenario: &'static str,
    current: RefCell<String>,
    start: Instant,
}

impl Steps {
    pub fn new(scenario: &'static str) -> Steps {
        Steps {
            scenario,
            current: RefCell::new("setup".into()),
            start: Instant::now(),
        }
    }

    /// Marks the start of `step` (e.g. "2. etcd from this machine").
    pub fn enter(&self, step: &str) {
        eprintln!(
            "=== {}: step {step} (at {:.1} s)",
            self.scenario,
            self.start.elapsed().as_secs_f64()
        );
        *self.current.borrow_mut() = step.to_string();
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "=== {}: FAILED in step {} (after {:.1} s)",
                self.scenario,
                self.current.borrow(),
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}
