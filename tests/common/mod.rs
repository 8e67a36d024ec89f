//! Shared helpers for the integration tests: run the real `clusterkit` binary and, on failure,
//! show the command, its exit status, stdout and stderr (as ripgrep's tests/util.rs does).
#![allow(dead_code)]

pub mod golden;
pub mod ha;

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

/// `clusterkit -f CFG ARGS…`.
pub fn ck(cfg: &Path, args: &[&str]) -> Command {
    let mut c = clusterkit();
    c.arg("-f").arg(cfg).args(args);
    c
}

/// Runs the command and parses its stdout as JSON; panics with everything shown when it fails
/// or prints something else.
pub fn json_of(c: &mut Command) -> serde_json::Value {
    let out = run_ok(c);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(c, &out, "expected JSON")))
}

/// `clusterkit -f CFG -o json install ARGS…`: its JSON summary; panics showing the command and
/// its output when it fails or prints no JSON summary.
pub fn install_json(cfg: &Path, args: &[&str]) -> serde_json::Value {
    install_timed(cfg, args).0
}

/// `install_json` and the wall time of the install.
pub fn install_timed(cfg: &Path, args: &[&str]) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let mut c = clusterkit();
    c.arg("-f")
        .arg(cfg)
        .args(["-o", "json", "install"])
        .args(args);
    let out = c.output().expect("run clusterkit");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        describe(&c, &out, "install failed")
    );
    let summary = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "summary is not JSON")));
    (summary, took)
}

/// The tasks that an `--events` log of clusterkit records as changed (summary lines aside), as
/// `HOST PLAYBOOK / TASK: MESSAGE`; none when the log is missing.
pub fn changed_tasks(events: &Path) -> Vec<String> {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["status"] == "changed" && e["kind"] != "summary")
        .map(|e| {
            format!(
                "{} {} / {}: {}",
                e["host"], e["playbook"], e["task"], e["message"]
            )
        })
        .collect()
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

/// Waits up to `timeout` until something accepts TCP connections on 127.0.0.1:`port`.
pub fn listens(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
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

/// Runs `openssl ARGS` in `dir`; its output, or a panic showing the command and its output.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    run_ok(&mut c)
}

/// `openssl req` making a new unencrypted EC P-256 key (fast to generate), with `args` for the
/// rest (`-x509` for a self-signed certificate, `-keyout`, `-out`, `-subj`, …).
pub fn openssl_req_p256(dir: &Path, args: &[&str]) {
    let key = [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(dir, &[&key[..], args].concat());
}

/// `openssl x509 -req`: signs `NAME.csr` with the CA pair `CA.crt` and `CA.key`, adding the
/// extensions in the file `ext`, into `NAME.crt` valid `days` days (all names relative to
/// `dir`).
pub fn openssl_sign(dir: &Path, ca: &str, name: &str, ext: &str, days: u32) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-extfile",
            ext,
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// Writes a stand-in for the private key a cluster.yaml names, at `path` with mode 0600: for
/// tests that never connect, where validation checks only that the key exists with that mode.
pub fn stand_in_key(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        path,
        "not a real key: only its presence and mode are checked\n",
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A process started by a test, killed by its PID when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The nodes of a three-node sandbox (`UpOptions::new(_, 3)`).
pub const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// etcd's client URLs on every node of the sandbox, comma-separated (for `--endpoints`).
pub fn etcd_endpoints(sb: &clusterkit_sandbox::SandboxGuard) -> String {
    sb.nodes()
        .iter()
        .map(|n| format!("https://{}:2379", n.address))
        .collect::<Vec<_>>()
        .join(",")
}

/// An OpenSSH client (`ssh`, `scp`) with the sandbox's key and its known_hosts (host keys
/// verified, never prompted).
pub fn openssh_cmd(sb: &clusterkit_sandbox::SandboxGuard, program: &str) -> Command {
    let mut c = Command::new(program);
    c.arg("-i")
        .arg(sb.key_file())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sb.known_hosts().display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]);
    c
}

/// The stages of a `certs rotate-ca --check` report, after asserting they are the three
/// stages in order, each planned (nothing done).
pub fn planned_stages(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    let stages = v["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["trust-both", "reissue", "drop-old"], "{v:#}");
    assert!(stages.iter().all(|s| s["status"] == "planned"), "{v:#}");
    stages
}

/// `clusterkit -f CFG -o json certs rotate-ca --ca CAS ARGS…`: its report.
pub fn rotate_ca(cfg: &Path, cas: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json", "certs", "rotate-ca", "--ca", cas];
    all.extend_from_slice(args);
    json_of(&mut ck(cfg, &all))
}

/// Starts `certs rotate-ca --ca CAS` and kills it (SIGKILL) once the journal in the state
/// directory `state` says its reissue stage began (the new certificates issued, their roll-out
/// begun), within `timeout`; panics with its stderr when it ended before. Returns the journal.
pub fn kill_rotation_in_reissue(cfg: &Path, state: &Path, cas: &str, timeout: Duration) -> String {
    let journal_path = state.join("rotate/journal.json");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut killed = ck(cfg, &["-o", "json", "certs", "rotate-ca", "--ca", cas]);
    killed
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap());
    let mut child = killed.spawn().unwrap();
    let mid_stage_2 = wait_until(timeout, || {
        std::fs::read_to_string(&journal_path).is_ok_and(|j| j.contains("\"started\": \"reissue\""))
            || child.try_wait().unwrap().is_some()
    });
    let exited = child.try_wait().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(mid_stage_2 && exited.is_none(), "{exited:?}\n{log}");
    std::fs::read_to_string(&journal_path).unwrap()
}

/// Asserts that the rotate-ca report `v` of a resumed rotation found the trust-both stage done
/// and ran the reissue and drop-old stages.
#[track_caller]
pub fn assert_resumed_in_reissue(v: &serde_json::Value) {
    let got: Vec<(&str, &str)> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("trust-both", "done"),
            ("reissue", "ran"),
            ("drop-old", "ran")
        ],
        "{v:#}"
    );
}

/// Whether processes with these start times (monotonic µs, comparable across sandbox nodes:
/// they share the kernel) were started one after another, in any order, each at least 0.2 s
/// after the previous one (restarted together, they start within milliseconds).
pub fn one_at_a_time(starts: &[u64]) -> bool {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).all(|w| w[1] > w[0] + 200_000)
}

/// PEM certificate blocks of a text.
pub fn pem_certs(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter_map(|b| b.find("-----BEGIN").map(|i| b[i..].to_string()))
        .collect()
}

/// On `node`, `openssl verify` accepts `leaf` with the CA file `new` and refuses it with `old`.
pub fn new_not_old(
    sb: &clusterkit_sandbox::SandboxGuard,
    node: &str,
    leaf: &str,
    new: &str,
    old: &str,
) {
    let ok = ssh(sb, node, &format!("openssl verify -CAfile {new} {leaf}"));
    assert!(ok.trim().ends_with(": OK"), "{node}: {leaf}: {ok}");
    let refused = ssh_cmd(sb, node, &format!("openssl verify -CAfile {old} {leaf}"))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "{node}: {leaf} still verifies against {old}"
    );
}

/// `ssh root@NODE CMD` into a sandbox node (`openssh_cmd`).
pub fn ssh_cmd(sb: &clusterkit_sandbox::SandboxGuard, node: &str, cmd: &str) -> Command {
    let n = sb.node(node).unwrap();
    let mut c = openssh_cmd(sb, "ssh");
    c.args(["-o", "ConnectTimeout=10"])
        .arg(format!("root@{}", n.address))
        .arg(cmd);
    c
}

/// Copies the local file `local` to `remote` on a sandbox node (`scp`, host keys verified).
pub fn scp_to(sb: &clusterkit_sandbox::SandboxGuard, node: &str, local: &Path, remote: &str) {
    let mut scp = openssh_cmd(sb, "scp");
    scp.arg("-q")
        .arg(local)
        .arg(format!("root@{}:{remote}", sb.node(node).unwrap().address));
    run_ok(&mut scp);
}

/// kubeadm's kubelet unit on a sandbox node, enabled (not started: `kubeadm join` starts it):
/// the kubeadm package's drop-in inlined, reading what kubeadm writes
/// (bootstrap-kubelet.conf, kubelet.conf, config.yaml, kubeadm-flags.env).
pub fn kubeadm_kubelet_unit(sb: &clusterkit_sandbox::SandboxGuard, node: &str) {
    ssh(
        sb,
        node,
        "printf '%s\\n' '[Unit]' 'Description=kubelet (kubeadm)' '[Service]' \
         'Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"' \
         'Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"' \
         'EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env' \
         'ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS' \
         'Restart=always' 'RestartSec=2' '[Install]' 'WantedBy=multi-user.target' \
         > /etc/systemd/system/kubelet.service && systemctl daemon-reload && systemctl enable -q kubelet",
    );
}

/// `(name, manifest digest)` of every image in a node's containerd (CRI namespace `k8s.io`).
pub fn node_images(sb: &clusterkit_sandbox::SandboxGuard, node: &str) -> Vec<(String, String)> {
    ssh(sb, node, "ctr -n k8s.io images ls")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
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

/// Writes `name` into the sandbox's directory: the sandbox's cluster.yaml with the offline
/// bundle `bundle` and `extra` (more top-level sections, may be empty); returns its path.
pub fn sandbox_config(
    sb: &clusterkit_sandbox::SandboxGuard,
    name: &str,
    bundle: &Path,
    extra: &str,
) -> PathBuf {
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    let cfg = sb.dir().join(name);
    std::fs::write(
        &cfg,
        format!(
            "{base}\npackages: {{ bundle: {} }}\n{extra}",
            bundle.display()
        ),
    )
    .unwrap();
    cfg
}

/// Where the local API load balancer (`kubernetes.load_balancer: { local: true }`) listens on
/// every node, by default.
pub const LOCAL_LB: &str = "https://127.0.0.1:16443";

/// Turns the local API load balancer on in a cluster.yaml written by [`sandbox_config`]: the
/// sandbox's `kubernetes:` section is the last of its base, before `packages:`.
pub fn with_local_load_balancer(cfg: &Path) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let (base, rest) = text
        .split_once("\npackages:")
        .unwrap_or_else(|| panic!("no packages section in {}:\n{text}", cfg.display()));
    assert!(
        base.trim_end().ends_with("network: host-gw"),
        "kubernetes is not the last section of the base: {text}"
    );
    std::fs::write(
        cfg,
        format!(
            "{}\n  load_balancer: {{ local: true }}\npackages:{rest}",
            base.trim_end()
        ),
    )
    .unwrap();
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

/// `kube-system/NAME`'s Lease `spec.FIELD` (`holderIdentity`, `renewTime`) through kubectl,
/// without panicking: (success, output).
pub fn lease_field(kube_bin: &Path, admin: &Path, lease: &str, field: &str) -> (bool, String) {
    let jsonpath = format!("jsonpath={{.spec.{field}}}");
    try_kubectl(
        kube_bin,
        admin,
        &["-n", "kube-system", "get", "lease", lease, "-o", &jsonpath],
    )
}

/// `etcdctl` (v3 API) against `endpoints` with the cluster's etcd CA and the healthcheck client
/// certificate clusterkit keeps in the state directory `state`, with short dial and command
/// timeouts so that a stopped member fails the call instead of hanging it.
pub fn etcdctl(state: &Path, endpoints: &str, args: &[&str]) -> Command {
    let pki = state.join("pki/etcd");
    let mut c = Command::new(tool("CLUSTERKIT_ETCDCTL", Path::new("/usr/bin/etcdctl")));
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("healthcheck-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("healthcheck-client.key").display()
        ))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args);
    c
}

/// Asserts that the `reset -o json` summary `v` reports exactly one etcd member removed, the
/// one of `node`.
#[track_caller]
pub fn assert_removed_etcd_member(v: &serde_json::Value, node: &str) {
    let removed = v["etcd_members_removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{v:#}");
    assert!(
        removed[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("remove etcd member {node} ")),
        "{v:#}"
    );
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

/// A pod calling the API once a second with its service-account token and the CA of its
/// volume, as in-cluster clients do (kubectl from the node's /usr/local/bin/kubectl-in-pod, a
/// new process each time, so each call reads the CA anew): at API_SERVER (`host:port`), or,
/// when that is empty, at the `kubernetes` Service (what in-cluster config uses). A line ` ok`
/// per answer, ` FAIL <time> <error>` per failure, in its log.
const API_LOOP: &str = r#"
apiVersion: v1
kind: Pod
metadata: { name: api-loop, namespace: default }
spec:
  nodeSelector: { kubernetes.io/hostname: "@NODE@" }
  terminationGracePeriodSeconds: 1
  volumes:
    - { name: kubectl, hostPath: { path: /usr/local/bin/kubectl-in-pod } }
  containers:
    - name: loop
      image: docker.io/library/busybox:clusterkit
      imagePullPolicy: Never
      env: [{ name: API_SERVER, value: "@SERVER@" }]
      volumeMounts: [{ name: kubectl, mountPath: /kubectl, readOnly: true }]
      command:
        - sh
        - -c
        - |
          server=${API_SERVER:-$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT}
          while true; do
            sa=/var/run/secrets/kubernetes.io/serviceaccount
            if out=$(/kubectl --server="https://$server" --certificate-authority=$sa/ca.crt --token="$(cat $sa/token)" --request-timeout=5s get --raw /api 2>&1); then echo " ok"; else echo " FAIL $(date -u +%T) $(echo $out | head -c 300)"; fi
            sleep 1
          done
"#;

/// Starts the `api-loop` pod ([`API_LOOP`]) on `node` with `kube_bin`'s kubectl, calling
/// `server` (`host:port`; `None`: the `kubernetes` Service), and waits for its first answer;
/// panics with the pod's description and the node's view when there is none within 60 s.
/// Its log: [`api_loop_log`].
pub fn start_api_loop(
    sb: &clusterkit_sandbox::SandboxGuard,
    kube_bin: &Path,
    admin: &Path,
    node: &str,
    server: Option<&str>,
) {
    let mut upload = ssh_cmd(
        sb,
        node,
        "cat > /usr/local/bin/kubectl-in-pod && chmod 0755 /usr/local/bin/kubectl-in-pod",
    );
    upload.stdin(std::fs::File::open(kube_bin.join("kubectl")).unwrap());
    run_ok(&mut upload);
    let manifest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        manifest.path(),
        API_LOOP
            .replace("@NODE@", node)
            .replace("@SERVER@", server.unwrap_or_default()),
    )
    .unwrap();
    run_ok(&mut kubectl_cmd(
        kube_bin,
        admin,
        &["apply", "-f", &manifest.path().to_string_lossy()],
    ));
    run_ok(&mut kubectl_cmd(
        kube_bin,
        admin,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/api-loop",
            "--timeout=180s",
        ],
    ));
    let answered = wait_until(Duration::from_secs(60), || {
        api_loop_log(kube_bin, admin).lines().any(|l| l == " ok")
    });
    if !answered {
        let describe = kubectl_cmd(kube_bin, admin, &["describe", "pod", "api-loop"])
            .output()
            .unwrap();
        let seen = ssh_cmd(
            sb,
            node,
            "crictl ps -a; ls -lR /var/log/pods | head -50; tail -n 20 /var/log/pods/default_api-loop_*/loop/*.log",
        )
        .output()
        .unwrap();
        panic!(
            "the API loop never got an answer:\n{}\n{}\n{}{}",
            api_loop_log(kube_bin, admin),
            stdout(&describe),
            stdout(&seen),
            stderr(&seen)
        );
    }
}

/// The `api-loop` pod's log so far (stderr appended when kubectl fails).
pub fn api_loop_log(kube_bin: &Path, admin: &Path) -> String {
    let out = kubectl_cmd(kube_bin, admin, &["logs", "api-loop"])
        .output()
        .unwrap();
    format!("{}{}", stdout(&out), stderr(&out))
}

/// Waits (20 s at most) until `node`'s local load balancer passes `GET /readyz` to an API
/// server that answers 200, over TLS verified against the node's cluster CA file; panics with
/// the last answer otherwise.
pub fn ready_through_local_lb(sb: &clusterkit_sandbox::SandboxGuard, node: &str) {
    let through_lb = format!(
        "printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' | openssl s_client -quiet -verify_return_error -CAfile /etc/kubernetes/pki/ca.crt -connect {} 2>&1 | head -n 40",
        LOCAL_LB.trim_start_matches("https://")
    );
    let mut last = String::new();
    let answered = wait_until(Duration::from_secs(20), || {
        last = ssh(sb, node, &through_lb);
        last.lines()
            .any(|l| l.starts_with("HTTP/") && l.contains(" 200 "))
    });
    assert!(
        answered,
        "{node}: /readyz through its load balancer: {last}"
    );
}

/// The units a `certs rotate-ca` stage report says `node` restarted; panics when the stage has
/// no entry for it or the entry failed.
pub fn stage_restarted(stage: &serde_json::Value, node: &str) -> Vec<String> {
    let h = stage["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == node))
        .unwrap_or_else(|| panic!("no host {node} in {stage:#}"));
    assert_eq!(h["status"], "ok", "{node}: {stage:#}");
    h["restarted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

/// The `web` workload the roll and rotation tests keep serving: busybox httpd with a readiness probe and a preStop pause (so an evicted pod
/// keeps answering until kube-proxy has taken it out of the Service), and its budget.
pub fn web_workload(pdb_api: &str, min_available: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: web, namespace: default }}
spec:
  replicas: 3
  selector: {{ matchLabels: {{ app: web }} }}
  template:
    metadata: {{ labels: {{ app: web }} }}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
        - name: web
          image: docker.io/library/busybox:clusterkit
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
          ports: [{{ containerPort: 8080 }}]
          readinessProbe: {{ tcpSocket: {{ port: 8080 }}, periodSeconds: 1 }}
          lifecycle: {{ preStop: {{ exec: {{ command: ["sleep", "4"] }} }} }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: default }}
spec:
  selector: {{ app: web }}
  ports: [{{ port: 80, targetPort: 8080 }}]
---
apiVersion: {pdb_api}
kind: PodDisruptionBudget
metadata: {{ name: web, namespace: default }}
spec:
  minAvailable: {min_available}
  selector: {{ matchLabels: {{ app: web }} }}
"#
    )
}

/// The client loop, run on a node: a request to the Service every 0.2 s until /root/stop-loop
/// exists, one line per request in /root/loop.log (`ok`, or `fail TIME WHAT`).
pub const SERVICE_LOOP: &str = r#"#!/bin/bash
ip=$1
while [ ! -e /root/stop-loop ]; do
  out=$(timeout 3 bash -c "exec 3<>/dev/tcp/$ip/80; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3" 2>&1)
  if [[ $out == *hello-from-* ]]; then echo ok; else echo "fail $(date +%T.%N) ${out//$'\n'/ }"; fi >> /root/loop.log
  sleep 0.2
done
"#;

/// Waits for the `web` Deployment ([`web_workload`], applied) to roll out, then starts
/// [`SERVICE_LOOP`] on node1 against its Service and waits for its first answer; read and
/// clear its log with [`service_loop_results`], stop it by touching /root/stop-loop on node1.
pub fn start_service_loop(sb: &clusterkit_sandbox::SandboxGuard, kube_bin: &Path, admin: &Path) {
    kubectl(
        kube_bin,
        admin,
        &["rollout", "status", "deployment/web", "--timeout=180s"],
    );
    let ip = service_ip(kube_bin, admin, "web");
    ssh(
        sb,
        "node1",
        &format!("cat > /root/loop.sh <<'EOF'\n{SERVICE_LOOP}EOF\nchmod +x /root/loop.sh; rm -f /root/stop-loop /root/loop.log"),
    );
    ssh(
        sb,
        "node1",
        &format!("setsid nohup /root/loop.sh {ip} >/dev/null 2>&1 < /dev/null &"),
    );
    poll(
        Duration::from_secs(30),
        "the client loop answers",
        || match service_loop_results(sb) {
            (ok, fails) if ok > 0 && fails.is_empty() => Ok(()),
            r => Err(format!("{r:?}")),
        },
    );
}

/// [`SERVICE_LOOP`]'s answers and failures on node1 since the last call (the log is cleared).
pub fn service_loop_results(sb: &clusterkit_sandbox::SandboxGuard) -> (usize, Vec<String>) {
    tally(
        &ssh(sb, "node1", "cat /root/loop.log; : > /root/loop.log"),
        "ok",
        "fail",
    )
}

/// A client loop's log: the lines that are `ok` exactly, and the lines that start with
/// `fail` once leading blanks are trimmed.
pub fn tally(log: &str, ok: &str, fail: &str) -> (usize, Vec<String>) {
    let answered = log.lines().filter(|l| *l == ok).count();
    let failed = log
        .lines()
        .filter(|l| l.trim_start().starts_with(fail))
        .map(str::to_string)
        .collect();
    (answered, failed)
}

/// A Service's cluster IP.
pub fn service_ip(kube_bin: &Path, admin: &Path, name: &str) -> String {
    kubectl(
        kube_bin,
        admin,
        &["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"],
    )
    .trim()
    .to_string()
}

/// Monotonic start time (µs) of `unit`'s current main process on a sandbox node; the nodes
/// share the kernel, so these compare across nodes (0: not running).
pub fn unit_started(sb: &clusterkit_sandbox::SandboxGuard, node: &str, unit: &str) -> u64 {
    ssh(
        sb,
        node,
        &format!("systemctl show -p ExecMainStartTimestampMonotonic --value {unit}"),
    )
    .trim()
    .parse()
    .unwrap()
}

/// The control-plane containers the kubelet runs on a node (container name → image name),
/// read from containerd's CRI namespace: running tasks, and each one's kubelet label.
pub fn running_containers(
    sb: &clusterkit_sandbox::SandboxGuard,
    node: &str,
) -> std::collections::BTreeMap<String, String> {
    containers(sb, node)
        .into_iter()
        .map(|(name, (_, image))| (name, image))
        .collect()
}

/// The containers the kubelet runs on a node, container name → container id (a new id when
/// the kubelet replaced or recreated the container).
pub fn running_container_ids(
    sb: &clusterkit_sandbox::SandboxGuard,
    node: &str,
) -> std::collections::BTreeMap<String, String> {
    containers(sb, node)
        .into_iter()
        .map(|(name, (id, _))| (name, id))
        .collect()
}

/// Container name → (id, image name) of the running containers in containerd's CRI namespace.
fn containers(
    sb: &clusterkit_sandbox::SandboxGuard,
    node: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    let tasks = ssh(sb, node, "ctr -n k8s.io tasks ls");
    let mut out = std::collections::BTreeMap::new();
    for line in tasks.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[2] != "RUNNING" {
            continue;
        }
        // A container the kubelet replaced between the two reads is gone: skip it (the
        // caller reads again until every component shows).
        let c = ssh_cmd(sb, node, &format!("ctr -n k8s.io containers info {}", f[0]))
            .output()
            .unwrap();
        if !c.status.success() && stderr(&c).contains("not found") {
            continue;
        }
        let info: serde_json::Value =
            serde_json::from_str(&stdout(&c)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&c)));
        if let Some(name) = info["Labels"]["io.kubernetes.container.name"].as_str() {
            out.insert(
                name.to_string(),
                (
                    f[0].to_string(),
                    info["Image"].as_str().unwrap_or_default().to_string(),
                ),
            );
        }
    }
    out
}

/// Started member names (sorted) and how many endpoints report healthy.
pub fn etcd_state(
    sb: &clusterkit_sandbox::SandboxGuard,
    state: &Path,
    nodes: &[&str],
) -> (Vec<String>, usize) {
    let endpoints = nodes
        .iter()
        .map(|n| format!("https://{}:2379", sb.node(n).unwrap().address))
        .collect::<Vec<_>>()
        .join(",");
    let list: serde_json::Value = serde_json::from_str(&stdout(&run_ok(&mut etcdctl(
        state,
        &endpoints,
        &["member", "list", "-w", "json"],
    ))))
    .unwrap();
    let mut names: Vec<String> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    // etcdctl 3.4 prints the health lines on stderr.
    let out = etcdctl(state, &endpoints, &["endpoint", "health"])
        .output()
        .unwrap();
    let health = format!("{}{}", stdout(&out), stderr(&out));
    (names, health.matches("is healthy").count())
}

/// Asserts a readiness report (`install`, `node add`) is green, with every one of `nodes`
/// Ready and pods on `node` reaching, and reached from, pods on each of the others.
pub fn assert_ready_with(r: &serde_json::Value, nodes: &[&str], node: &str) {
    assert_eq!(r["ok"], true, "{r:#}");
    let checks = r["nodes"].as_array().unwrap();
    for n in nodes {
        assert!(
            checks
                .iter()
                .any(|c| c["name"] == format!("node {n}") && c["ok"] == true),
            "{n} Ready: {r:#}"
        );
    }
    let probes = r["probes"].to_string();
    for other in nodes.iter().filter(|n| **n != node) {
        for (from, to) in [(other, &node), (&node, other)] {
            assert!(
                probes.contains(&format!("pod on {from} -> pod on {to}")),
                "{r:#}"
            );
        }
    }
}

/// The manifest digest of the image `name` in a bundle's image manifest; panics naming it
/// when the bundle lacks it.
pub fn image_digest(manifest: &clusterkit_installer::images::ImageManifest, name: &str) -> String {
    manifest
        .images
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not in the bundle: {manifest:#?}"))
        .digest
        .clone()
}
