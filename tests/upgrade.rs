//! `clusterkit upgrade apply` on a 3-node sandbox, all real: Debian 12 nspawn nodes over SSH,
//! Kubernetes v1.20.2 (the one release these machines build, so the roll is to the version
//! that runs, with `--force-reroll`), control plane as systemd units, etcd backups into a
//! file:// store.
//!
//! A 3-replica busybox httpd Deployment behind a ClusterIP Service with a PodDisruptionBudget
//! `minAvailable: 2`, and a client loop on node1 requesting the Service (bash's /dev/tcp, 5
//! requests a second) through every step:
//! 1. `--check` reports every host would roll and changes nothing (no cordon, no restart, no
//!    journal); `upgrade plan` two minors ahead is refused and warns about this machine's
//!    kubectl;
//! 2. the roll with `--etcd`: a verified etcd backup, the etcd members one at a time (each
//!    restarted, `etcdctl endpoint health` polled throughout never finds fewer than 2 of 3
//!    healthy), the control-plane host, then every node drained, restarted (kubelet and
//!    kube-proxy InvocationIDs change) and uncordoned; the client loop saw no failed request,
//!    the Deployment never had fewer than 2 ready replicas, every node ends Ready and
//!    schedulable;
//! 3. `--max-unavailable 2`: node1 and node2 drain and roll together (never fewer than 2 ready
//!    replicas, no failed request), and node3's sshd is stopped meanwhile: the run fails
//!    naming node3 and the step, node3 is uncordoned; sshd back, `--resume` rolls node3 only;
//! 4. a rerun without `--force-reroll` rolls nothing and changes nothing;
//! 5. a budget that can never be met: the drain times out naming the blocking pod, the node is
//!    uncordoned, the other nodes' kubelets were not restarted;
//! 6. `--resume` with a kubelet playbook that edits node2's unit and fails: node2 is rolled
//!    back (the unit as it was, kubelet running), uncordoned, and the error names it.
//!
//! Across releases: the same roll from one minor to the next is
//! `upgrade_across_one_minor`, which needs two releases' binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{ck, describe, kubectl, run_ok, ssh, stderr, stdout};
use serde_json::Value;

#[test]
fn upgrade_apply_rolls_every_host_without_downtime() {
    roll_scenario(&common::kube_bin(), None);
}

/// One minor to the next: installed with `CLUSTERKIT_KUBE_BIN_DIR_FROM`'s release, upgraded to
/// `CLUSTERKIT_KUBE_BIN_DIR_TO`'s (each a directory with one release's kube-apiserver,
/// kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl). Both the same
/// directory: the scenario of the test above on that release.
#[test]
#[ignore = "needs two Kubernetes releases' binaries: CLUSTERKIT_KUBE_BIN_DIR_FROM and _TO; Debian ships only v1.20.2"]
fn upgrade_across_one_minor() {
    let dir = |v: &str| {
        PathBuf::from(std::env::var_os(v).unwrap_or_else(|| panic!("{v}: a release's binaries")))
    };
    roll_scenario(
        &dir("CLUSTERKIT_KUBE_BIN_DIR_FROM"),
        Some(&dir("CLUSTERKIT_KUBE_BIN_DIR_TO")),
    );
}

fn version_of(dir: &Path) -> String {
    clusterkit_installer::versions::binary_version(&dir.join("kubelet"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

/// Each unit's systemd InvocationID on every node (changes on every restart).
fn invocations(sb: &SandboxGuard) -> Vec<(String, String)> {
    common::NODES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                ssh(
                    sb,
                    n,
                    "systemctl show -p InvocationID --value kubelet kube-proxy | grep .",
                ),
            )
        })
        .collect()
}

/// etcd's InvocationID on every node.
fn etcd_invocations(sb: &SandboxGuard) -> Vec<(String, String)> {
    common::NODES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                ssh(sb, n, "systemctl show -p InvocationID --value etcd"),
            )
        })
        .collect()
}

/// `upgrade apply ARGS` with JSON on stdout: (success, stdout JSON or Null, the output for
/// messages).
fn apply(cfg: &Path, args: &[&str]) -> (bool, Value, String) {
    let mut c = ck(cfg, &["-o", "json", "upgrade", "apply"]);
    c.args(args);
    let out = c.output().expect("run clusterkit");
    eprint!("{}", stderr(&out));
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v, describe(&c, &out, "upgrade apply"))
}

/// `(host, stage) → outcome` of an apply report.
fn outcomes(v: &Value) -> Vec<(String, String, String)> {
    v["hosts"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap_or("").to_string(),
                h["stage"].as_str().unwrap_or("").to_string(),
                h["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Every node Ready and schedulable, else what is not.
fn nodes_ready_and_schedulable(kube_bin: &Path, admin: &Path) -> Result<(), String> {
    let v: Value =
        serde_json::from_str(&kubectl(kube_bin, admin, &["get", "nodes", "-o", "json"])).unwrap();
    let mut bad = Vec::new();
    for n in v["items"].as_array().unwrap() {
        let name = n["metadata"]["name"].as_str().unwrap_or("");
        if n["spec"]["unschedulable"] == Value::Bool(true) {
            bad.push(format!("{name} cordoned"));
        }
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if !ready {
            bad.push(format!("{name} not Ready"));
        }
    }
    if bad.is_empty() && v["items"].as_array().unwrap().len() == 3 {
        Ok(())
    } else {
        Err(format!("{bad:?}"))
    }
}

fn unschedulable(kube_bin: &Path, admin: &Path, node: &str) -> bool {
    kubectl(
        kube_bin,
        admin,
        &["get", "node", node, "-o", "jsonpath={.spec.unschedulable}"],
    )
    .trim()
        == "true"
}

/// Samples a figure every 0.25 s in a thread (a sample of `None`, e.g. while the API server
/// restarts, is skipped); the smallest value seen.
struct Watch {
    stop: Arc<AtomicBool>,
    min: Arc<Mutex<Option<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(sample: impl Fn() -> Option<u64> + Send + 'static) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(Mutex::new(None));
        let (st, mn) = (stop.clone(), min.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(n) = sample() {
                    let mut m = mn.lock().unwrap();
                    *m = Some(m.map_or(n, |m: u64| m.min(n)));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Watch {
            stop,
            min,
            thread: Some(thread),
        }
    }

    /// The Deployment's ready replicas.
    fn ready_replicas(kube_bin: &Path, admin: &Path) -> Watch {
        let (kb, ad) = (kube_bin.to_path_buf(), admin.to_path_buf());
        Watch::start(move || {
            let (ok, out) = common::try_kubectl(
                &kb,
                &ad,
                &[
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ],
            );
            ok.then(|| out.trim().parse::<u64>().unwrap_or(0))
        })
    }

    /// How many etcd members `etcdctl endpoint health` finds healthy.
    fn healthy_members(state: &Path, endpoints: &str) -> Watch {
        let (state, endpoints) = (state.to_path_buf(), endpoints.to_string());
        Watch::start(move || {
            let out = common::etcdctl(&state, &endpoints, &["endpoint", "health"])
                .output()
                .ok()?;
            let text = format!("{}{}", stdout(&out), stderr(&out));
            Some(text.matches("is healthy").count() as u64)
        })
    }

    fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        *self.min.lock().unwrap()
    }
}

/// The client loop's log on node1: (ok count, failure lines); truncates it.
fn roll_scenario(from_bin: &Path, to_bin: Option<&Path>) {
    let steps = common::Steps::new("upgrade");
    let from = version_of(from_bin);
    let to = to_bin.map_or(from.clone(), version_of);
    let minor = |v: &str| -> u32 { v.split('.').nth(1).unwrap().parse().unwrap() };
    let name = format!("up{}", std::process::id() % 1_000_000);
    let sb = SandboxGuard::up(UpOptions::new(&name, 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let config = |bin: &Path, version: &str, file: &str| -> PathBuf {
        let bundle = work.path().join(format!("bundle-{version}"));
        if !bundle.exists() {
            common::build_bundle(&bundle, Some(bin), &common::CLUSTER_PACKAGES);
        }
        let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap().replace(
            &format!(
                "version: {}",
                clusterkit_sandbox::cluster_yaml::KUBERNETES_VERSION
            ),
            &format!("version: {version}"),
        );
        let cfg = sb.dir().join(file);
        std::fs::write(
            &cfg,
            format!(
                "{base}packages: {{ bundle: {} }}\nbackup: {{ store: \"{store}\" }}\n",
                bundle.display()
            ),
        )
        .unwrap();
        cfg
    };
    let cfg_from = config(from_bin, &from, "upgrade-from.yaml");
    let admin = sb.dir().join("admin.conf");
    let kube_bin = from_bin.to_path_buf();

    steps.enter("install and the workload");
    common::install_json(&cfg_from, &["--no-readiness"]);
    let pdb_api = if minor(&from) >= 21 {
        "policy/v1"
    } else {
        "policy/v1beta1"
    };
    let manifest = work.path().join("web.yaml");
    std::fs::write(&manifest, common::web_workload(pdb_api, 2)).unwrap();
    kubectl(
        &kube_bin,
        &admin,
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    common::start_service_loop(&sb, &kube_bin, &admin);
    let cfg = match to_bin {
        Some(bin) => config(bin, &to, "upgrade-to.yaml"),
        None => cfg_from.clone(),
    };
    // The same release on both sides (CI: v1.20.2 is all there is) rolls with --force-reroll.
    let force: &[&str] = if from == to { &["--force-reroll"] } else { &[] };
    let journal = sb
        .dir()
        .join(format!("{name}-state"))
        .join("upgrade/journal.json");

    // 1. --check: every host would roll; nothing changes. A --to other than cluster.yaml's
    //    version is refused before anything is read.
    steps.enter("1. --check");
    let (ok, _, out) = apply(&cfg, &["--to", "v1.34.0"]);
    assert!(
        !ok && out.contains(&format!("kubernetes.version is {to}, not --to v1.34.0")),
        "{out}"
    );
    let before = invocations(&sb);
    let (ok, v, out) = apply(&cfg, &[&["--check"], force].concat());
    assert!(ok, "{out}");
    let o = outcomes(&v);
    assert_eq!(o.len(), 4, "control-plane host + 3 nodes: {v:#}");
    assert!(o.iter().all(|(_, _, x)| x == "would-roll"), "{v:#}");
    assert_eq!(invocations(&sb), before, "--check restarted something");
    assert!(!journal.exists(), "--check wrote the journal");
    nodes_ready_and_schedulable(&kube_bin, &admin).unwrap();
    // Two minors ahead: refused by the policy; this machine's kubectl (the release's, first on
    // PATH) would be two minors behind the target afterwards, which is a warning; node1's
    // kubectl moves with its API server and is only listed.
    let far = format!("v1.{}.0", minor(&from) + 2);
    let path = format!(
        "{}:{}",
        kube_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = ck(&cfg, &["-o", "json", "upgrade", "plan", "--to", &far]);
    let out = c.env("PATH", &path).output().unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", describe(&c, &out, "upgrade plan")));
    assert!(!out.status.success(), "{plan:#}");
    let kubectls: Vec<(String, String)> = plan["kubectl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["place"].as_str().unwrap().into(),
                k["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kubectls,
        [
            ("node1".to_string(), from.clone()),
            ("this machine".into(), from.clone())
        ],
        "{plan:#}"
    );
    assert_eq!(
        plan["warnings"],
        serde_json::json!([format!(
            "kubectl {from} on this machine is more than one minor from kube-apiserver {far} \
             after the upgrade: use kubectl {}.x",
            far.trim_end_matches(".0")
        )]),
        "{plan:#}"
    );

    // 2. The roll, watched by the client loop and the ready-replica watch.
    steps.enter("2. the roll");
    let state = sb.dir().join(format!("{name}-state"));
    let watch = Watch::ready_replicas(&kube_bin, &admin);
    let etcd_watch = Watch::healthy_members(&state, &common::etcd_endpoints(&sb));
    let etcd_before = etcd_invocations(&sb);
    let started = std::time::Instant::now();
    let (ok, v, out) = apply(&cfg, &[force, &["--etcd"]].concat());
    let took = started.elapsed();
    let min_ready = watch.finish();
    let min_etcd = etcd_watch.finish();
    assert!(ok, "{out}");
    eprintln!("upgrade apply (3 nodes): {:.1}s", took.as_secs_f64());
    let o = outcomes(&v);
    for n in common::NODES {
        assert!(
            o.contains(&(n.to_string(), "node".into(), "rolled".into())),
            "{n} rolled: {v:#}"
        );
    }
    assert!(
        o.contains(&("node1".into(), "control-plane".into(), "rolled".into())),
        "{v:#}"
    );
    // The etcd members one at a time: each restarted, never fewer than 2 of 3 healthy.
    for ((n, b), (_, a)) in etcd_before.iter().zip(&etcd_invocations(&sb)) {
        assert!(
            o.contains(&(n.clone(), "etcd".into(), "rolled".into())) && b != a,
            "{n}: etcd member restarted ({b} → {a}): {v:#}"
        );
    }
    assert!(
        min_etcd.is_some_and(|m| m >= 2),
        "etcd lost quorum during the roll: {min_etcd:?} healthy"
    );
    let backup = v["backup"].as_str().unwrap_or("").to_string();
    assert!(!backup.is_empty(), "an etcd backup first: {v:#}");
    let listed = stdout(&run_ok(&mut ck(
        &cfg,
        &["-o", "json", "backup", "list", "--store", &store],
    )));
    assert!(listed.contains(&backup), "{listed}");
    assert_eq!(v["readiness"]["ok"], true, "{v:#}");
    let after = invocations(&sb);
    for ((n, b), (_, a)) in before.iter().zip(&after) {
        let (b, a): (Vec<&str>, Vec<&str>) = (b.lines().collect(), a.lines().collect());
        assert!(
            b.len() == 2 && a.len() == 2 && b[0] != a[0] && b[1] != a[1],
            "{n}: kubelet and kube-proxy restarted: {b:?} → {a:?}"
        );
    }
    let (served, fails) = common::service_loop_results(&sb);
    assert!(
        fails.is_empty(),
        "the Service failed during the roll ({served} ok): {fails:#?}"
    );
    assert!(
        served > 50,
        "the client loop ran through the roll: {served}"
    );
    eprintln!("client loop during the roll: {served} requests, 0 failed; min ready {min_ready:?}");
    assert!(
        min_ready.is_some_and(|m| m >= 2),
        "the Deployment had fewer than 2 ready replicas: {min_ready:?}"
    );
    nodes_ready_and_schedulable(&kube_bin, &admin).unwrap();
    assert!(!journal.exists(), "the journal is removed when done");
    let running = stdout(&run_ok(&mut ck(
        &cfg,
        &["-o", "json", "upgrade", "plan", "--to", &to],
    )));
    assert!(
        running.contains("\"steps\": []"),
        "everything runs {to}: {running}"
    );

    // 3. Two nodes at a time (--max-unavailable 2): node1 and node2 drain together, and
    //    node3's sshd stops while they roll: node3 fails, uncordoned; --resume finishes.
    steps.enter("3. two nodes at once, sshd stopped mid-roll, then --resume");
    let watch = Watch::ready_replicas(&kube_bin, &admin);
    let mut c = ck(
        &cfg,
        &[
            "-o",
            "json",
            "upgrade",
            "apply",
            "--skip-backup",
            "--max-unavailable",
            "2",
        ],
    );
    // Everything runs the target now: only --force-reroll rolls again.
    c.arg("--force-reroll")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // Both cordoned at one moment: one batch. node3's sshd stops while they roll.
    let together = common::wait_until(Duration::from_secs(300), || {
        let (ok, out) = common::try_kubectl(
            &kube_bin,
            &admin,
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[?(@.spec.unschedulable==true)]}{.metadata.name} {end}",
            ],
        );
        ok && out.split_whitespace().collect::<Vec<_>>() == ["node1", "node2"]
    });
    assert!(together, "node1 and node2 were never cordoned together");
    ssh(
        &sb,
        "node3",
        "systemctl stop ssh.service ssh.socket 2>/dev/null; true",
    );
    let out = child.wait_with_output().unwrap();
    let min_ready = watch.finish();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "node3 unreachable must fail the run: {err}"
    );
    // One batch: node2 started draining before node1's roll was over.
    let at = |what: &str| {
        err.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the progress: {err}"))
    };
    assert!(
        at("node2: kubelet and kube-proxy: cordoning and draining")
            < at("node1: kubelet and kube-proxy: rolled"),
        "node1 and node2 were not rolled together: {err}"
    );
    assert!(
        min_ready.is_some_and(|m| m >= 2),
        "two nodes drained at once left fewer than 2 ready replicas: {min_ready:?}"
    );
    assert!(
        err.contains("node3: kubelet and kube-proxy: connecting failed")
            && err.contains("node3 uncordoned"),
        "the error names the host, the step and the uncordon: {err}"
    );
    assert!(
        !unschedulable(&kube_bin, &admin, "node3"),
        "node3 left cordoned"
    );
    // The node's init is the child of its systemd-nspawn process.
    let nspawn = sb.node("node3").unwrap().pid.expect("node3 runs");
    let init = std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("node3's init")
        .to_string();
    run_ok(Command::new("nsenter").args([
        "-t",
        &init,
        "-m",
        "-u",
        "-i",
        "-n",
        "-p",
        "--",
        "systemctl",
        "start",
        "ssh.service",
    ]));
    assert!(
        common::wait_until(Duration::from_secs(30), || ssh_ok(&sb, "node3")),
        "node3's sshd did not come back"
    );
    // Without --resume an unfinished upgrade is refused, naming the way on.
    let (ok, _, out) = apply(&cfg, &[]);
    assert!(!ok && out.contains("--resume"), "{out}");
    let (ok, v, out) = apply(&cfg, &["--resume"]);
    assert!(ok, "{out}");
    let o = outcomes(&v);
    assert!(
        o.contains(&("node3".into(), "node".into(), "rolled".into())),
        "{v:#}"
    );
    for n in ["node1", "node2"] {
        assert!(
            o.contains(&(n.into(), "node".into(), "done-before".into())),
            "{v:#}"
        );
    }
    nodes_ready_and_schedulable(&kube_bin, &admin).unwrap();
    let (served, fails) = common::service_loop_results(&sb);
    assert!(
        fails.is_empty(),
        "the Service failed while two nodes rolled at once ({served} ok): {fails:#?}"
    );

    // 4. A rerun without --force-reroll: nothing rolls, nothing changes.
    steps.enter("4. a rerun changes nothing");
    let before = invocations(&sb);
    let (ok, v, out) = apply(&cfg, &["--skip-backup"]);
    assert!(ok, "{out}");
    assert!(
        outcomes(&v).iter().all(|(_, _, x)| x == "verified"),
        "{v:#}"
    );
    let changed: u64 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["changed"].as_u64().unwrap())
        .sum();
    assert_eq!(changed, 0, "{v:#}");
    assert_eq!(invocations(&sb), before, "a rerun restarted something");

    // 5. A budget that can never be met: the drain times out naming the pod.
    steps.enter("5. an unsatisfiable disruption budget");
    std::fs::write(&manifest, common::web_workload(pdb_api, 3)).unwrap();
    kubectl(
        &kube_bin,
        &admin,
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    let before = invocations(&sb);
    let (ok, _, out) = apply(
        &cfg,
        &["--force-reroll", "--skip-backup", "--drain-timeout", "15"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("node1: kubelet and kube-proxy: draining failed")
            && out.contains("disruption budget still refuses to evict default/web-")
            && out.contains("node1 uncordoned"),
        "{out}"
    );
    assert!(
        !unschedulable(&kube_bin, &admin, "node1"),
        "node1 left cordoned"
    );
    let after = invocations(&sb);
    assert_eq!(
        before[1..],
        after[1..],
        "node2 and node3 were touched after node1's drain failed"
    );
    nodes_ready_and_schedulable(&kube_bin, &admin).unwrap();

    // 6. A host whose step fails after its files were kept is rolled back: the budget back to
    //    2, `--resume` with a kubelet playbook that edits node2's kubelet unit and then fails
    //    there. node1 finishes; node2's unit is restored, its kubelet runs, it is uncordoned.
    steps.enter("6. a failed host is rolled back");
    std::fs::write(&manifest, common::web_workload(pdb_api, 2)).unwrap();
    kubectl(
        &kube_bin,
        &admin,
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    let lib = work.path().join("broken-lib");
    std::fs::create_dir_all(lib.join("playbooks")).unwrap();
    std::fs::write(
        lib.join("playbooks/kubelet.yaml"),
        r#"- name: kubelet that breaks node2
  hosts: node2
  tasks:
    - name: the unit edited
      shell: { cmd: "echo '# edited by a broken playbook' >> /etc/systemd/system/kubelet.service" }
    - name: then a failure
      shell: { cmd: "echo broken on purpose >&2; exit 3" }
"#,
    )
    .unwrap();
    let (ok, v, out) = apply(&cfg, &["--resume", "--library", lib.to_str().unwrap()]);
    assert!(!ok, "{v:#}");
    assert!(
        out.contains("node2: kubelet and kube-proxy: install phases failed")
            && out.contains("broken on purpose")
            && out.contains("rolled back to the previous binaries and configurations")
            && out.contains("node2 uncordoned"),
        "{out}"
    );
    let unit = ssh(&sb, "node2", "cat /etc/systemd/system/kubelet.service");
    assert!(!unit.contains("edited by a broken playbook"), "{unit}");
    assert_eq!(
        ssh(&sb, "node2", "systemctl is-active kubelet").trim(),
        "active"
    );
    common::poll(
        Duration::from_secs(120),
        "every node Ready and schedulable",
        || nodes_ready_and_schedulable(&kube_bin, &admin),
    );
    let (_, fails) = common::service_loop_results(&sb);
    assert!(fails.is_empty(), "{fails:#?}");
    ssh(&sb, "node1", "touch /root/stop-loop");
    drop(sb);
}

fn ssh_ok(sb: &SandboxGuard, node: &str) -> bool {
    common::ssh_cmd(sb, node, "true")
        .output()
        .is_ok_and(|o| o.status.success())
}
