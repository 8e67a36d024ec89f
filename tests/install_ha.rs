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
//! reports nothing to do. Finally `reset --hosts node3` stops and disables its haproxy. Wall
//! times are printed.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle and
//! the Kubernetes binaries; fails with the reason when one is missing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{
    apiserver_etcd_servers, changed_tasks, clusterkit, describe, install_timed, poll, run_ok, ssh,
    ssh_cmd, stdout, NODES,
};
use serde_json::Value;

const LB: &str = "https://127.0.0.1:16443";

/// [`common::try_kubectl`], through `server` instead of the kubeconfig's when given.
fn try_kubectl(
    kube_bin: &Path,
    admin: &Path,
    server: Option<&str>,
    args: &[&str],
) -> (bool, String) {
    let mut all: Vec<&str> = server.map(|s| vec!["--server", s]).unwrap_or_default();
    all.extend_from_slice(args);
    common::try_kubectl(kube_bin, admin, &all)
}

/// `name -> renewTime` of the Leases in a namespace, read through `server`.
fn leases(kube_bin: &Path, admin: &Path, server: &str, ns: &str) -> Result<Value, String> {
    let (ok, out) = try_kubectl(
        kube_bin,
        admin,
        Some(server),
        &["-n", ns, "get", "leases", "-o", "json"],
    );
    if !ok {
        return Err(out);
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let mut m = serde_json::Map::new();
    for l in v["items"].as_array().into_iter().flatten() {
        m.insert(
            l["metadata"]["name"].as_str().unwrap_or("").to_string(),
            serde_json::json!({
                "holder": l["spec"]["holderIdentity"],
                "renew": l["spec"]["renewTime"],
            }),
        );
    }
    Ok(Value::Object(m))
}

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
            [LB, LB],
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
    let stop_at = ssh(
        &sb,
        "node1",
        // Killed, as a crashed host would leave it (a graceful stop drains requests for up
        // to a minute), then stopped so systemd does not restart it.
        "systemctl kill -s KILL kube-apiserver; systemctl stop kube-apiserver && date -u +%Y-%m-%dT%H:%M:%S.%6NZ",
    )
    .trim()
    .to_string();
    let stopped = Instant::now();
    assert_eq!(stop_at.len(), 27, "a MicroTime: {stop_at:?}");
    assert_ne!(
        ssh_cmd(&sb, "node1", "systemctl is-active kube-apiserver")
            .output()
            .map(|o| stdout(&o).trim().to_string())
            .unwrap_or_default(),
        "active"
    );
    // Through node1's own load balancer (its kubelet's credentials and server) the API still
    // answers: haproxy took node1's backend out and sends everything to node2. Five answers in
    // a row, so not one lucky round-robin turn.
    let via_lb = "for i in 1 2 3 4 5; do kubectl --kubeconfig /etc/kubernetes/kubelet.conf --request-timeout=10s get --raw /readyz || exit 1; echo; done";
    poll(
        Duration::from_secs(120),
        "node1's load balancer answering /readyz from node2",
        || {
            let out = ssh_cmd(&sb, "node1", via_lb)
                .output()
                .map_err(|e| e.to_string())?;
            let text = stdout(&out);
            if out.status.success() && text.matches("ok").count() == 5 {
                Ok(())
            } else {
                Err(format!("{text}{}", common::stderr(&out)))
            }
        },
    );
    eprintln!(
        "node1's LB answered from node2 {:.1}s after the stop",
        stopped.elapsed().as_secs_f64()
    );
    // Every kubelet renews its Lease after the stop: node1's and node3's talk to the API only
    // through their load balancer.
    let renewed_after = |l: &Value, name: &str, t: &str| {
        l[name]["renew"]
            .as_str()
            .is_some_and(|r| r.len() == t.len() && r > t)
    };
    let node_leases = poll(
        Duration::from_secs(180),
        "every node's lease renewed after the stop",
        || {
            let now = leases(&kube_bin, &admin, &node2_api, "kube-node-lease")?;
            let stale: Vec<&str> = NODES
                .iter()
                .copied()
                .filter(|n| !renewed_after(&now, n, &stop_at))
                .collect();
            if stale.is_empty() {
                Ok(now)
            } else {
                Err(format!("not renewed since {stop_at}: {stale:?}: {now}"))
            }
        },
    );
    eprintln!(
        "every node lease renewed after the stop at {stop_at} ({:.1}s later): {node_leases}",
        stopped.elapsed().as_secs_f64()
    );
    let ready = r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#;
    let (ok, out) = try_kubectl(
        &kube_bin,
        &admin,
        Some(&node2_api),
        &["get", "nodes", "-o", ready],
    );
    let mut v: Vec<&str> = out.split_whitespace().collect();
    v.sort();
    assert!(
        ok && v == ["node1=True", "node2=True", "node3=True"],
        "every Node stays Ready: {out}"
    );
    // The controller manager and scheduler: node2's instance leads (node1's lost its API
    // server) and renews after the stop.
    let leaders = poll(
        Duration::from_secs(180),
        "node2 holding and renewing the controller-manager and scheduler leases",
        || {
            let l = leases(&kube_bin, &admin, &node2_api, "kube-system")?;
            for name in ["kube-controller-manager", "kube-scheduler"] {
                let holder = l[name]["holder"].as_str().unwrap_or("");
                if !holder.starts_with("node2") || !renewed_after(&l, name, &stop_at) {
                    return Err(format!("{name}: {l}"));
                }
            }
            Ok(l)
        },
    );
    eprintln!(
        "leaders before the stop: {holders_before}; after ({:.1}s later): {leaders}",
        stopped.elapsed().as_secs_f64()
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
