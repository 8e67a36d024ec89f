//! HA on a 3-node sandbox, all real: the local API load balancer on
//! (`kubernetes.load_balancer: { local: true }`: Debian's haproxy from the offline bundle on
//! every node, 127.0.0.1:16443, backends checked with /readyz), Kubernetes v1.20.2 built from
//! Debian's source package (`CLUSTERKIT_KUBE_BIN_DIR`), control plane as systemd units.
//!
//! Steps: the whole install on node1 (control plane, etcd) and node3 (worker, etcd) succeeds,
//! readiness report included. node2 is then listed as a control-plane host and etcd member
//! and `node add node2` runs, which also gives node1's and node3's load balancers their new
//! backend (`install --phase load-balancer` then changes nothing anywhere). `/readyz` answers `ok` through admin.conf, which
//! keeps `control_plane_endpoint` (node1), and on node2; every node runs haproxy with both
//! backends, and its kubelet.conf (clusterkit's on the control-plane hosts, the one TLS
//! bootstrap wrote on the worker) and kube-proxy.conf use `https://127.0.0.1:16443`; the
//! controller managers and schedulers use their own host's API server. Then kube-apiserver
//! is killed and kept stopped on node1, the host the endpoint names: through node1's own load
//! balancer the API still answers `/readyz` (five times in a row, so not by round-robin
//! luck), every node's Lease (node1's and node3's kubelets included, which reach the API only
//! through their load balancer) is renewed after the stop and every Node stays Ready, and the
//! controller manager and scheduler leases are held, and renewed after the stop, by node2 (the
//! leader moved, or stayed). The API server is started again; a full install converges what
//! `node add` leaves to it, a rerun then changes nothing and `--check --phase load-balancer`
//! reports nothing to do. Then etcd's CA is rotated under the running cluster (see
//! [`rotate_etcd_ca`]), and the cluster and front-proxy CAs (`--ca all`), without a failed API
//! call or Service request ([`rotate_cluster_ca`]).
//! Finally `reset --hosts node3` stops and disables its haproxy. Wall
//! times are printed.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle and
//! the Kubernetes binaries; fails with the reason when one is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::ha::{leases, try_kubectl};
use common::{
    apiserver_etcd_servers, changed_tasks, ck, clusterkit, describe, install_timed, json_of,
    new_not_old, pem_certs, poll, run_fail, run_ok, ssh, ssh_cmd, stdout, NODES,
};
use serde_json::Value;

#[test]
fn two_control_planes_behind_a_local_load_balancer() {
    let kube_bin = common::kube_bin();
    // A name of this process's own (≤ 8 characters): parallel runs must not share a sandbox.
    let name = format!("ha{}", std::process::id() % 1_000_000);
    let sb = SandboxGuard::up(UpOptions::new(&name, 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();

    // Offline bundle: the usual packages plus haproxy, and the Kubernetes binaries.
    let bundle = work.path().join("bundle");
    common::build_bundle(
        &bundle,
        Some(&kube_bin),
        &[&common::CLUSTER_PACKAGES[..], &["--package", "haproxy"]].concat(),
    );
    // Two versions of one cluster.yaml (same state directory): node1 (control plane, etcd) and
    // node3 (worker, etcd) first; then node2 listed too, as a control-plane host and etcd
    // member. The local load balancer on; the sandbox's endpoint stays node1:6443.
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    let (mut with_node2, mut without_node2) = (String::new(), String::new());
    let mut in_node2 = false;
    for line in base.lines() {
        if let Some(n) = line.trim().strip_prefix("- name: ") {
            in_node2 = n == "node2";
        } else if !line.starts_with("    ") {
            in_node2 = false;
        }
        let line = if in_node2 && line.trim_start().starts_with("roles:") {
            "    roles: [control-plane, etcd]"
        } else {
            line
        };
        with_node2.push_str(line);
        with_node2.push('\n');
        if !in_node2 {
            without_node2.push_str(line);
            without_node2.push('\n');
        }
    }
    assert!(
        with_node2.contains(
            "roles: [control-plane, etcd]\n    auth: { key_file: ./id_ed25519 }\n  - name: node3"
        ),
        "{with_node2}"
    );
    assert!(!without_node2.contains("node2"), "{without_node2}");
    assert!(
        base.trim_end().ends_with("network: host-gw"),
        "kubernetes is the last section: {base}"
    );
    let tail = format!(
        "  load_balancer: {{ local: true }}\npackages: {{ bundle: {} }}\n",
        bundle.display()
    );
    let cfg = sb.dir().join("install-ha.yaml");
    std::fs::write(&cfg, format!("{without_node2}{tail}")).unwrap();
    let admin = sb.dir().join("admin.conf");
    let addr = |n: &str| sb.node(n).unwrap().address.to_string();
    let node2_api = format!("https://{}:6443", addr("node2"));

    // 1. Every phase on node1 and node3, the readiness report included.
    let (summary, took) = install_timed(&cfg, &[]);
    eprintln!(
        "install (all phases, node1 control plane + node3 worker, local LB): {:.1}s",
        took.as_secs_f64()
    );
    for n in ["node1", "node3"] {
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }
    assert_eq!(summary["readiness"]["ok"], true, "{summary:#}");

    // 2. node2 added as a second control-plane host (etcd member add, the API server
    // certificate re-issued with node2 in its SANs, its control plane, kubelet and
    // kube-proxy); then the load-balancer phase gives the other nodes their new backend.
    std::fs::write(&cfg, format!("{with_node2}{tail}")).unwrap();
    let start = Instant::now();
    let mut c = clusterkit();
    c.arg("-f")
        .arg(&cfg)
        .args(["-o", "json", "node", "add", "node2"]);
    let out = run_ok(&mut c);
    let added: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "summary is not JSON")));
    eprintln!(
        "node add node2 (control plane): {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(added["hosts"]["node2"]["failed"], 0, "{added:#}");
    for n in ["node1", "node3"] {
        assert_eq!(added["hosts"][n]["failed"], 0, "{added:#}");
        assert!(
            added["hosts"][n]["changed"].as_u64().unwrap_or(0) > 0,
            "{n}: node add gives its haproxy.cfg node2: {added:#}"
        );
    }
    // node add left nothing for the load-balancer phase to do, on any node.
    let (lb, _) = install_timed(&cfg, &["--phase", "load-balancer"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(lb["hosts"][n]["failed"], 0, "{lb:#}");
        assert_eq!(lb["hosts"][n]["changed"], 0, "{n}: {lb:#}");
    }
    let (ok, out) = try_kubectl(&kube_bin, &admin, None, &["get", "--raw", "/readyz"]);
    assert!(
        ok && out.trim() == "ok",
        "/readyz through admin.conf: {out}"
    );
    let (ok, out) = try_kubectl(
        &kube_bin,
        &admin,
        Some(&node2_api),
        &["get", "--raw", "/readyz"],
    );
    assert!(ok && out.trim() == "ok", "/readyz on node2: {out}");
    let admin_text = std::fs::read_to_string(&admin).unwrap();
    assert!(
        admin_text.contains(&format!("server: https://{}:6443", addr("node1"))),
        "admin.conf keeps control_plane_endpoint: {admin_text}"
    );
    // node add rolled node1's API server onto the new etcd member list: the running process
    // (not just its unit file) lists both members.
    let etcd_servers = apiserver_etcd_servers(&sb, "node1");
    for n in ["node1", "node2"] {
        assert!(
            etcd_servers.contains(&format!("https://{}:2379", addr(n))),
            "node1's kube-apiserver lacks etcd member {n}: {etcd_servers}"
        );
    }
    for n in NODES {
        assert_eq!(
            ssh(&sb, n, "systemctl is-active haproxy").trim(),
            "active",
            "{n}"
        );
        let servers = ssh(
            &sb,
            n,
            "grep -h 'server:' /etc/kubernetes/kubelet.conf /etc/kubernetes/kube-proxy.conf",
        );
        let servers: Vec<&str> = servers
            .split_whitespace()
            .filter(|w| w.starts_with("https://"))
            .collect();
        assert_eq!(
            servers,
            [common::LOCAL_LB, common::LOCAL_LB],
            "{n}: kubelet.conf and kube-proxy.conf use the local LB"
        );
        let cfg = ssh(&sb, n, "cat /etc/haproxy/haproxy.cfg");
        for cp in ["node1", "node2"] {
            assert!(
                cfg.contains(&format!("server {cp} {}:6443 verifyhost {cp}", addr(cp))),
                "{n}: backend {cp} in\n{cfg}"
            );
        }
        assert!(!cfg.contains("server node3"), "{cfg}");
    }
    // The controller managers and schedulers reach their own host's API server.
    for cp in ["node1", "node2"] {
        let conf = ssh(&sb, cp, "grep -h 'server:' /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf");
        assert_eq!(
            conf.matches(&format!("https://{}:6443", addr(cp))).count(),
            2,
            "{cp}: {conf}"
        );
    }

    // 3. kube-apiserver stopped on node1, the host control_plane_endpoint names. The nodes
    // share this machine's clock, so `stop_at` (in the API's MicroTime format, which compares
    // as text) orders against the Leases' renewTime.
    let holders_before = poll(Duration::from_secs(60), "leader leases readable", || {
        leases(&kube_bin, &admin, &node2_api, "kube-system")
    });
    eprintln!("leaders before the stop: {holders_before}");
    // Killed, as a crashed host would leave it (a graceful stop drains requests for up to a
    // minute), then stopped so systemd does not restart it.
    ssh(
        &sb,
        "node1",
        "systemctl kill -s KILL kube-apiserver; systemctl stop kube-apiserver",
    );
    let stop_at = common::ha::micro_time(&sb, "node1");
    let stopped = Instant::now();
    assert_ne!(
        ssh_cmd(&sb, "node1", "systemctl is-active kube-apiserver")
            .output()
            .map(|o| stdout(&o).trim().to_string())
            .unwrap_or_default(),
        "active"
    );
    // node1's and node3's kubelets reach the API only through their load balancer.
    common::ha::survives_api_server_down(
        &sb,
        (&kube_bin, &admin),
        ("node1", "node2"),
        (&stop_at, stopped),
    );

    // 4. node1's API server back; the endpoint answers again.
    ssh(&sb, "node1", "systemctl start kube-apiserver");
    poll(
        Duration::from_secs(180),
        "node1's API server ready again",
        || match try_kubectl(&kube_bin, &admin, None, &["get", "--raw", "/readyz"]) {
            (true, out) if out.trim() == "ok" => Ok(()),
            (_, out) => Err(out),
        },
    );

    // 5. A full install converges whatever `node add` left to it; a rerun then changes
    // nothing; check mode of the phase alone: nothing to do.
    let (conv, took) = install_timed(&cfg, &["--no-readiness"]);
    eprintln!(
        "converging install (all phases): {:.1}s",
        took.as_secs_f64()
    );
    for n in NODES {
        assert_eq!(conv["hosts"][n]["failed"], 0, "{conv:#}");
    }
    let events = work.path().join("rerun.jsonl");
    let events_arg = events.to_str().unwrap();
    let (again, took) = install_timed(&cfg, &["--no-readiness", "--events", events_arg]);
    eprintln!("rerun (all phases): {:.1}s", took.as_secs_f64());
    let changed = changed_tasks(&events);
    for n in NODES {
        assert_eq!(
            again["hosts"][n]["changed"], 0,
            "{n}: changed on rerun: {changed:#?}"
        );
        assert_eq!(again["hosts"][n]["failed"], 0, "{again:#}");
    }
    let (check, _) = install_timed(&cfg, &["--check", "--phase", "load-balancer"]);
    for n in NODES {
        assert_eq!(check["hosts"][n]["changed"], 0, "{n}: --check: {check:#}");
        assert_eq!(check["hosts"][n]["failed"], 0, "{n}: --check: {check:#}");
        assert!(
            check["hosts"][n]["ok"].as_u64().unwrap_or(0) > 0,
            "{n}: the phase ran its tasks: {check:#}"
        );
    }

    // 6. etcd's CA rotated under the running cluster.
    let state = sb.dir().join(format!("{name}-state"));
    rotate_etcd_ca(&sb, &cfg, &state, work.path());

    // 7. The cluster and front-proxy CAs rotated under the running cluster: no API call and
    // no Service request fails.
    rotate_cluster_ca(&sb, &cfg, &kube_bin, &admin);

    // Reset of the worker stops and disables clusterkit's haproxy (the package stays).
    let mut c = clusterkit();
    c.arg("-f")
        .arg(&cfg)
        .args(["-o", "json", "reset", "--yes", "--hosts", "node3"]);
    run_ok(&mut c);
    let state = ssh(
        &sb,
        "node3",
        "systemctl is-active haproxy; systemctl is-enabled haproxy; dpkg-query -W -f='${Status}' haproxy",
    );
    assert_eq!(
        state.split_whitespace().collect::<Vec<_>>(),
        ["inactive", "disabled", "install", "ok", "installed"],
        "{state}"
    );
    drop(sb);
}

/// Reads through NODE's load balancer once a second, on NODE (its kubelet.conf, its Node
/// object: a quorum read of etcd by whichever API server haproxy picks) until
/// /tmp/ck-reads-stop exists: ` ok` or ` FAIL <time> <error>` per read. kubectl is on the
/// control-plane hosts; a worker needs the copy [`common::start_api_loop`] puts there.
const READS_LOOP: &str = r#"kubectl=$(command -v kubectl || echo /usr/local/bin/kubectl-in-pod)
while [ ! -e /tmp/ck-reads-stop ]; do
  if out=$($kubectl --kubeconfig /etc/kubernetes/kubelet.conf --request-timeout=5s get node @NODE@ -o name 2>&1); then echo " ok"; else echo " FAIL $(date -u +%T) $(echo $out | head -c 300)"; fi
  sleep 1
done"#;

/// Starts [`READS_LOOP`] on `node`; stop it with [`stop_reads`].
fn start_reads(sb: &SandboxGuard, node: &str) -> std::thread::JoinHandle<std::process::Output> {
    ssh(sb, node, "rm -f /tmp/ck-reads-stop");
    let mut reads = ssh_cmd(sb, node, &READS_LOOP.replace("@NODE@", node));
    std::thread::spawn(move || reads.output().unwrap())
}

/// Stops a [`start_reads`] loop: (answered, failed lines).
fn stop_reads(
    sb: &SandboxGuard,
    node: &str,
    reads: std::thread::JoinHandle<std::process::Output>,
) -> (usize, Vec<String>) {
    ssh(sb, node, "touch /tmp/ck-reads-stop");
    common::tally(&stdout(&reads.join().unwrap()), " ok", "FAIL")
}

/// 6. `certs rotate-ca --ca etcd` under the running cluster (three etcd members, two API
///    servers behind every node's load balancer): `--check` plans the three stages (etcd
///    restarted on every member, kube-apiserver on the control-plane hosts) and changes
///    nothing; the rotation is killed in its reissue stage, where `check-expiration` shows the
///    old and the new etcd CA, and `--resume` finishes it. Then every etcd certificate on every
///    node and in the state directory verifies against the new CA and not the old (openssl),
///    `etcd/ca.crt` is the new CA alone on every node, every member refuses a client
///    certificate of the old CA and a client trusting only the old CA cannot verify them, and
///    `check-expiration` finds everything ok; every member was restarted, one at a time
///    (their start times, each after the previous one's). Throughout, `etcdctl endpoint
///    health` asked every second (with the state directory's CA and client certificate of
///    that moment) never found fewer than two of the three members healthy, and reads through
///    node1's load balancer never failed but while etcd's leader changed hands (see below). `backup etcd` works
///    afterwards; a rerun changes nothing and restarts no member.
fn rotate_etcd_ca(sb: &SandboxGuard, cfg: &Path, state: &Path, work: &Path) {
    let started = Instant::now();
    let endpoints = common::etcd_endpoints(sb);
    let pki = state.join("pki/etcd");
    let old_ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    assert_eq!(pem_certs(&old_ca).len(), 1);
    // The old CA and a client pair it signed, kept to show that they no longer work.
    let old = work.join("old-etcd");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["ca.crt", "healthcheck-client.crt", "healthcheck-client.key"] {
        std::fs::copy(pki.join(f), old.join(f)).unwrap();
    }
    let journal_path = state.join("rotate/journal.json");
    let host = |v: &Value, n: &str| -> Value {
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == n)
            .unwrap_or_else(|| panic!("no host {n} in {v:#}"))
            .clone()
    };
    let has = |list: &Value, item: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str() == Some(item))
    };

    // --check: the three stages planned for etcd's files, nothing changed.
    let v = common::rotate_ca(cfg, "etcd", &["--check"]);
    for s in common::planned_stages(&v) {
        assert_eq!(s["cas"], serde_json::json!(["etcd-ca"]), "{v:#}");
        for n in NODES {
            let h = host(s, n);
            assert!(
                has(&h["uploaded"], "/etc/kubernetes/pki/etcd/ca.crt"),
                "{v:#}"
            );
            assert!(has(&h["restarted"], "etcd"), "{v:#}");
            assert!(
                h["uploaded"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|u| u.as_str().unwrap().contains("etcd")),
                "only etcd's files: {v:#}"
            );
        }
        for n in ["node1", "node2"] {
            assert!(has(&host(s, n)["restarted"], "kube-apiserver"), "{v:#}");
        }
    }
    assert_eq!(std::fs::read_to_string(pki.join("ca.crt")).unwrap(), old_ca);
    assert!(!journal_path.exists());

    // Monotonic start time (µs) of each member's etcd process; nodes share the kernel, so
    // these compare across nodes.
    let etcd_started = || -> Vec<u64> {
        NODES
            .iter()
            .map(|n| common::unit_started(sb, n, "etcd"))
            .collect()
    };
    let starts_before = etcd_started();

    // Watchers for the whole rotation: etcd's health every second from here, reads through
    // node1's load balancer every second on node1.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, state, endpoints) = (stop.clone(), state.to_path_buf(), endpoints.clone());
        std::thread::spawn(move || {
            // (healthy members, etcdctl's output) per answer; reads of a client pair caught
            // between its certificate's and its key's replacement, apart.
            let mut samples: Vec<(usize, String)> = Vec::new();
            let mut torn = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = common::etcdctl(&state, &endpoints, &["endpoint", "health"])
                    .output()
                    .unwrap();
                let text = format!("{}{}", stdout(&out), common::stderr(&out));
                if text.contains("private key does not match public key") {
                    torn += 1;
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                samples.push((text.matches(" is healthy").count(), text));
                std::thread::sleep(Duration::from_secs(1));
            }
            (samples, torn)
        })
    };
    let reads = start_reads(sb, "node1");

    // The rotation, killed in its reissue stage (once the new certificates are issued and
    // their roll-out has begun).
    let journal = common::kill_rotation_in_reissue(cfg, state, "etcd", Duration::from_secs(900));
    assert!(journal.contains("\"stage\": \"trust-both\""), "{journal}");
    // Mid-rotation: the old and the new etcd CA, marked.
    let v = json_of(&mut ck(cfg, &["-o", "json", "certs", "check-expiration"]));
    for which in ["old", "new"] {
        let marked: Vec<&Value> = v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["host"] == "local" && r["name"] == "etcd-ca" && r["rotation"] == which)
            .collect();
        assert_eq!(marked.len(), 1, "{which}: {v:#}");
        assert_eq!(marked[0]["status"], "ok", "{v:#}");
    }
    let v = common::rotate_ca(cfg, "etcd", &["--resume"]);
    common::assert_resumed_in_reissue(&v);
    let stages = v["stages"].as_array().unwrap();
    for s in &stages[1..] {
        for n in NODES {
            let h = host(s, n);
            assert_eq!(h["status"], "ok", "{v:#}");
            // Every member restarted in each stage, the resumed one included.
            assert!(has(&h["restarted"], "etcd"), "{n}: {v:#}");
        }
    }
    eprintln!(
        "etcd CA rotation (check, killed run, resume): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Every member restarted, one at a time: in the last stage each started after the
    // previous one had started and the cluster had been found healthy.
    let starts = etcd_started();
    eprintln!("etcd start times (monotonic µs) before {starts_before:?}, after {starts:?}");
    for (i, n) in NODES.iter().enumerate() {
        assert!(starts[i] > starts_before[i], "{n}: etcd not restarted");
    }
    assert!(common::one_at_a_time(&starts), "{starts:?}");

    // The watchers stop; what they saw.
    let (ok, failed) = stop_reads(sb, "node1", reads);
    stop.store(true, Ordering::Relaxed);
    let (samples, torn) = watcher.join().unwrap();
    let least = samples.iter().map(|(n, _)| *n).min().unwrap_or(0);
    // The one failure a member's restart may cause: a read in flight while the leader hands
    // over (a stopping leader transfers its leadership) is answered "etcdserver: leader
    // changed", which kube-apiserver's etcd client does not retry. At most one per restart of
    // a member in the three stages; any other failure (refused, timed out, x509) fails.
    let (leader_changed, other): (Vec<&String>, Vec<&String>) = failed
        .iter()
        .partition(|l| l.contains("etcdserver: leader changed"));
    eprintln!(
        "during the etcd CA rotation: {} health samples, fewest healthy members {least} ({torn} torn reads of the client pair retried); {ok} reads through node1's load balancer answered, {} failed ({} while etcd's leader changed)",
        samples.len(),
        failed.len(),
        leader_changed.len()
    );
    assert!(samples.len() >= 60, "{} samples", samples.len());
    // A pair is replaced once (cert, then key, each atomically): a torn read is rare.
    assert!(
        torn <= 3,
        "{torn} torn reads of the healthcheck client pair"
    );
    if let Some((_, text)) = samples.iter().find(|(n, _)| *n < 2) {
        panic!("etcd lost its quorum during the rotation:\n{text}");
    }
    assert!(ok >= 60, "{ok} reads answered, failed: {failed:#?}");
    assert!(
        other.is_empty() && leader_changed.len() <= 3 * NODES.len(),
        "reads failed during the rotation: {failed:#?}"
    );

    // The new CA alone everywhere; every etcd certificate verifies against it, not the old.
    let new_ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    assert_eq!(pem_certs(&new_ca).len(), 1, "{new_ca}");
    assert_ne!(new_ca, old_ca);
    let old_on_node = "/tmp/clusterkit-old-etcd-ca.pem";
    let node_pki = "/etc/kubernetes/pki";
    for n in NODES {
        assert_eq!(
            ssh(sb, n, &format!("cat {node_pki}/etcd/ca.crt")),
            new_ca,
            "{n}"
        );
        ssh(sb, n, &format!("cat > {old_on_node} <<'EOF'\n{old_ca}EOF"));
        let mut leaves = vec!["etcd/server.crt", "etcd/peer.crt"];
        if n != "node3" {
            leaves.extend(["etcd/healthcheck-client.crt", "apiserver-etcd-client.crt"]);
        }
        for leaf in leaves {
            new_not_old(
                sb,
                n,
                &format!("{node_pki}/{leaf}"),
                &format!("{node_pki}/etcd/ca.crt"),
                old_on_node,
            );
        }
    }
    let openssl = |args: &[&str], leaf: &Path| {
        Command::new(common::tool(
            "CLUSTERKIT_OPENSSL",
            Path::new("/usr/bin/openssl"),
        ))
        .args(args)
        .arg(leaf)
        .output()
        .unwrap()
    };
    let mut local: Vec<PathBuf> = ["healthcheck-client.crt", "metrics-client.crt"]
        .iter()
        .map(|f| pki.join(f))
        .collect();
    local.push(state.join("pki/apiserver-etcd-client.crt"));
    for n in NODES {
        for kind in ["server", "peer"] {
            local.push(state.join(format!("hosts/{n}/pki/etcd/{kind}.crt")));
        }
    }
    let new_file = pki.join("ca.crt");
    let old_file = old.join("ca.crt");
    for leaf in &local {
        let out = openssl(&["verify", "-CAfile", new_file.to_str().unwrap()], leaf);
        assert!(
            out.status.success(),
            "{}: {}",
            leaf.display(),
            common::stderr(&out)
        );
        let out = openssl(&["verify", "-CAfile", old_file.to_str().unwrap()], leaf);
        assert!(
            !out.status.success(),
            "{} verifies against the old CA",
            leaf.display()
        );
    }
    assert!(!state.join("rotate/etcd-ca/old.key").exists());
    assert!(!state.join("rotate/etcd-ca/new.key").exists());

    // The members refuse the old CA's client certificate, and the old CA cannot verify them.
    let old_client = |ca: &Path, cert: &Path, key: &Path| {
        let mut c = Command::new(common::tool(
            "CLUSTERKIT_ETCDCTL",
            Path::new("/usr/bin/etcdctl"),
        ));
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", ca.display()))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
            .args(["endpoint", "health"]);
        c
    };
    let (new_cert, new_key) = (
        pki.join("healthcheck-client.crt"),
        pki.join("healthcheck-client.key"),
    );
    let (old_cert, old_key) = (
        old.join("healthcheck-client.crt"),
        old.join("healthcheck-client.key"),
    );
    let out = run_fail(&mut old_client(&new_file, &old_cert, &old_key));
    let text = format!("{}{}", stdout(&out), common::stderr(&out));
    assert_eq!(text.matches(" is healthy").count(), 0, "{text}");
    let out = run_fail(&mut old_client(&old_file, &new_cert, &new_key));
    let text = format!("{}{}", stdout(&out), common::stderr(&out));
    assert_eq!(text.matches(" is healthy").count(), 0, "{text}");
    let out = run_ok(&mut old_client(&new_file, &new_cert, &new_key));
    let text = format!("{}{}", stdout(&out), common::stderr(&out));
    assert_eq!(text.matches(" is healthy").count(), 3, "{text}");
    let v = json_of(&mut ck(cfg, &["-o", "json", "certs", "check-expiration"]));
    for r in v["certificates"].as_array().unwrap() {
        assert_eq!(r["status"], "ok", "{r:#}");
        assert!(r["rotation"].is_null(), "{r:#}");
    }

    // A backup through the new CA and client pair.
    let store = format!("file://{}", work.join("etcd-store").display());
    let v = json_of(&mut ck(
        cfg,
        &["-o", "json", "backup", "etcd", "--store", &store],
    ));
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v:#}"))
        .to_string();
    run_ok(&mut ck(cfg, &["backup", "verify", &id, "--store", &store]));

    // A rerun changes nothing: every stage done, no member restarted.
    let before = etcd_started();
    let v = common::rotate_ca(cfg, "etcd", &[]);
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["status"], "done", "{v:#}");
        assert_eq!(s["hosts"], serde_json::json!([]), "{v:#}");
    }
    assert_eq!(before, starts);
    assert_eq!(etcd_started(), starts);
    assert_eq!(std::fs::read_to_string(pki.join("ca.crt")).unwrap(), new_ca);
}

/// 7. `certs rotate-ca --ca all` under the running cluster, which rotates the cluster and
///    front-proxy CAs (etcd's is done), with two API servers, each stopping with
///    `--shutdown-delay-duration` (so it leaves the `kubernetes` Service and the load
///    balancers before it stops): every stage runs on every node, haproxy reloaded on each in
///    the stages that change the trust bundle; throughout, a pod on the worker calling the API
///    once a second through the `kubernetes` Service with its service-account token and the
///    CA of its volume, reads through node1's and node3's load balancers with their kubelet's
///    credentials, and requests to a 3-replica workload's Service from node1 every 0.2 s
///    never fail. Both API servers restarted, one at a time; every
///    Node is Ready afterwards and every node's load balancer passes a request verified
///    against the new CA alone.
fn rotate_cluster_ca(sb: &SandboxGuard, cfg: &Path, kube_bin: &Path, admin: &Path) {
    const CPS: [&str; 2] = ["node1", "node2"];
    let apiserver_started = || -> Vec<u64> {
        CPS.iter()
            .map(|n| common::unit_started(sb, n, "kube-apiserver"))
            .collect()
    };
    for n in CPS {
        let unit = ssh(sb, n, "systemctl cat kube-apiserver");
        assert!(
            unit.contains("--shutdown-delay-duration=6s"),
            "{n}: two API servers, each leaves rotation before it stops: {unit}"
        );
    }
    let starts_before = apiserver_started();
    // A workload behind a Service, requested from node1 every 0.2 s.
    let web = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(web.path(), common::web_workload("policy/v1beta1", 2)).unwrap();
    common::kubectl(
        kube_bin,
        admin,
        &["apply", "-f", &web.path().to_string_lossy()],
    );
    common::start_service_loop(sb, kube_bin, admin);
    common::start_api_loop(sb, kube_bin, admin, "node3", None);
    let readers: Vec<_> = ["node1", "node3"]
        .into_iter()
        .map(|n| (n, start_reads(sb, n)))
        .collect();

    let started = Instant::now();
    // `all`: the two CAs not rotated yet (etcd's is done).
    let v = common::rotate_ca(cfg, "all", &[]);
    eprintln!(
        "cluster and front-proxy CA rotation (two API servers, local load balancers): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3, "{v:#}");
    for (i, s) in stages.iter().enumerate() {
        assert_eq!(s["status"], "ran", "{v:#}");
        assert_eq!(
            s["cas"],
            serde_json::json!(["ca", "front-proxy-ca"]),
            "{v:#}"
        );
        for n in NODES {
            let restarted = common::stage_restarted(s, n);
            // The trust bundle changes in the first and the last stage.
            if i != 1 {
                assert!(restarted.contains(&"haproxy".to_string()), "{n}: {v:#}");
            }
        }
    }

    // What the clients saw (the log through node3's kubelet, which the rotation restarted).
    std::thread::sleep(Duration::from_secs(2));
    let log = poll(Duration::from_secs(60), "the API loop's log", || {
        let log = common::api_loop_log(kube_bin, admin);
        if log.starts_with("Error from server") {
            Err(log)
        } else {
            Ok(log)
        }
    });
    let (pod_ok, pod_failed) = common::tally(&log, " ok", "FAIL");
    let mut reads = Vec::new();
    for (n, r) in readers {
        reads.push((n, stop_reads(sb, n, r)));
    }
    let (served, service_fails) = common::service_loop_results(sb);
    ssh(sb, "node1", "touch /root/stop-loop");
    eprintln!(
        "during the cluster CA rotation: the pod's calls through the kubernetes Service {pod_ok} answered, {} failed; reads through the load balancer {}",
        pod_failed.len(),
        reads
            .iter()
            .map(|(n, (ok, failed))| format!("on {n} {ok} answered, {} failed", failed.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "the web Service from node1: {served} answered, {} failed",
        service_fails.len()
    );
    assert!(served >= 300, "{served} Service requests answered");
    assert!(
        service_fails.is_empty(),
        "the Service failed during the rotation: {service_fails:#?}"
    );
    assert!(pod_ok >= 60, "{log}");
    assert!(
        pod_failed.is_empty(),
        "the pod's API calls failed: {pod_failed:#?}"
    );
    for (n, (ok, failed)) in &reads {
        assert!(
            *ok >= 60,
            "{n}: {ok} reads answered; the first failures: {:#?}",
            &failed[..failed.len().min(5)]
        );
        assert!(failed.is_empty(), "{n}: reads failed: {failed:#?}");
    }

    // Both API servers restarted, one at a time.
    let starts = apiserver_started();
    for (i, n) in CPS.iter().enumerate() {
        assert!(
            starts[i] > starts_before[i],
            "{n}: kube-apiserver not restarted"
        );
    }
    assert!(common::one_at_a_time(&starts), "{starts:?}");
    let ready = r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#;
    let out = common::kubectl(kube_bin, admin, &["get", "nodes", "-o", ready]);
    let mut nodes: Vec<&str> = out.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["node1=True", "node2=True", "node3=True"], "{out}");
    for n in NODES {
        common::ready_through_local_lb(sb, n);
    }
    run_ok(&mut common::kubectl_cmd(
        kube_bin,
        admin,
        &["delete", "pod", "api-loop", "--wait=false"],
    ));
}
