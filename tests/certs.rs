//! `clusterkit certs check-expiration | renew | distribute` on a 3-node sandbox, all real:
//! Debian 12 nspawn nodes over SSH, installed by the real `install --phase` prepare, runtime,
//! pki, etcd (3-member TLS etcd 3.4 from the offline bundle) and control-plane (Kubernetes
//! v1.20.2 built from Debian's source, systemd mode, `CLUSTERKIT_KUBE_BIN_DIR`).
//!
//! One sandbox is shared by the steps (bringing nodes up and installing is the slow part):
//! check-expiration lists every expected file per host with the configured validity (leaves
//! 365 days, CAs 10 years), its serials and expiry equal what `openssl x509` prints on the node;
//! `--fail-within` exits non-zero only when something expires sooner; a deleted file shows as
//! missing and a world-readable key as such, and `certs distribute` repairs both; renewing the
//! etcd certificates changes the serials on the nodes, restarts the members one at a time, and
//! etcd keeps all three members healthy and a key written before the renewal; a renewed
//! kubeconfig goes only to the host that holds it (and restarts only its user) and admin.conf
//! next to cluster.yaml follows; a renewed API server certificate is what kube-apiserver
//! presents after the restart, and `/readyz` answers through the renewed admin.conf (v1.20.2
//! kubectl); CA names and unknown names are refused.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle,
//! the Kubernetes binaries, etcdctl and openssl; fails with the reason when one is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{ck, etcd_endpoints, json_of, run_fail, run_ok, ssh, stderr, stdout, tool, NODES};
use serde_json::Value;

/// `check-expiration -o json` rows.
fn check(cfg: &Path) -> Vec<Value> {
    let v = json_of(&mut ck(cfg, &["-o", "json", "certs", "check-expiration"]));
    assert_eq!(v["errors"], serde_json::json!([]), "{v:#}");
    v["certificates"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], host: &str, name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["host"] == host && r["name"] == name)
        .unwrap_or_else(|| panic!("no row {host}/{name} in {rows:#?}"))
}

/// `openssl x509` on the node: (serial, notAfter as openssl prints it).
fn node_cert(sb: &SandboxGuard, node: &str, path: &str) -> (String, String) {
    let out = ssh(
        sb,
        node,
        &format!("openssl x509 -noout -serial -enddate -in {path}"),
    );
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{node}: no {k} in {out}"))
            .trim()
            .to_string()
    };
    (get("serial="), get("notAfter="))
}

/// openssl's `Nov 22 18:45:37 2027 GMT` (day space-padded) as `2027-11-22T18:45:37Z`.
fn openssl_date_to_rfc3339(date: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = date.split_whitespace().collect();
    assert_eq!((f.len(), f.get(4)), (5, Some(&"GMT")), "{date}");
    let month = MONTHS.iter().position(|m| *m == f[0]).unwrap() + 1;
    let day: u32 = f[1].parse().unwrap();
    format!("{}-{month:02}-{day:02}T{}Z", f[3], f[2])
}

/// Monotonic start time (µs) of etcd's current process on a node; nodes share the kernel,
/// so these compare across nodes.
fn etcd_started(sb: &SandboxGuard, node: &str) -> u64 {
    ssh(
        sb,
        node,
        "systemctl show -p ExecMainStartTimestampMonotonic --value etcd",
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn check_and_renew_on_three_nodes() {
    let steps = common::Steps::new("certs check and renew");
    assert!(
        tool("CLUSTERKIT_OPENSSL", Path::new("/usr/bin/openssl")).is_file(),
        "openssl missing"
    );
    let kube_bin = common::kube_bin();
    let sb = SandboxGuard::up(UpOptions::new("certs", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, Some(&kube_bin), &["--package", "etcd-server"]);
    let cfg = common::sandbox_config(&sb, "certs.yaml", &bundle, "");
    let state: PathBuf = sb.dir().join("certs-state");
    for phase in ["prepare", "runtime", "pki", "etcd", "control-plane"] {
        run_ok(&mut ck(&cfg, &["install", "--phase", phase]));
    }
    let endpoints = etcd_endpoints(&sb);

    // 1. Every expected file on every host, with the configured validity, as openssl sees it.
    steps.enter("1. every expected file on every host, as openssl sees it");
    let rows = check(&cfg);
    let cp_files = [
        "ca",
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-ca",
        "front-proxy-client",
        "apiserver-etcd-client",
        "etcd-ca",
        "etcd-healthcheck-client",
        "etcd-server",
        "etcd-peer",
        "controller-manager.conf",
        "scheduler.conf",
        "kubelet.conf",
    ];
    let member_files = ["ca", "etcd-ca", "etcd-server", "etcd-peer"];
    for node in NODES {
        let mut names: Vec<&str> = rows
            .iter()
            .filter(|r| r["host"] == node)
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        let mut want: Vec<&str> = if node == "node1" {
            cp_files.to_vec()
        } else {
            member_files.to_vec()
        };
        want.sort_unstable();
        assert_eq!(names, want, "{node}");
    }
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r:#}");
        let name = r["name"].as_str().unwrap();
        let is_ca = ["ca", "front-proxy-ca", "etcd-ca"].contains(&name);
        let (validity, left) = if is_ca {
            (3650, 3649..=3650)
        } else {
            (365, 364..=365)
        };
        assert_eq!(r["validity_days"], validity, "{r:#}");
        assert!(left.contains(&r["days_left"].as_i64().unwrap()), "{r:#}");
        assert!(r["residual"].as_f64().unwrap() > 0.99, "{r:#}");
        if r["host"] != "local" {
            assert_eq!(r["in_sync"], true, "{r:#}");
            let ca = if is_ca {
                "-"
            } else if name.starts_with("etcd") || name == "apiserver-etcd-client" {
                "etcd-ca"
            } else if name == "front-proxy-client" {
                "front-proxy-ca"
            } else {
                "ca"
            };
            assert_eq!(r["ca"], ca, "{r:#}");
        }
    }
    for node in NODES {
        let server = row(&rows, node, "etcd-server");
        assert_eq!(server["subject"], node);
        let (serial, end) = node_cert(&sb, node, "/etc/kubernetes/pki/etcd/server.crt");
        assert_eq!(server["serial"], serial.as_str(), "{node}");
        assert_eq!(
            server["expires"],
            openssl_date_to_rfc3339(&end).as_str(),
            "{node}"
        );
    }
    let table = stdout(&run_ok(&mut ck(
        &cfg,
        &["certs", "check-expiration", "--hosts", "node2"],
    )));
    assert!(table.starts_with("HOST"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node2") && l.contains("etcd-peer")),
        "{table}"
    );
    assert!(!table.lines().any(|l| l.starts_with("node1")), "{table}");

    // 2. --fail-within for cron: fails only when something expires sooner.
    steps.enter("2. --fail-within for cron: fails only when something expires sooner");
    run_ok(&mut ck(
        &cfg,
        &["certs", "check-expiration", "--fail-within", "30"],
    ));
    let out = run_fail(&mut ck(
        &cfg,
        &["certs", "check-expiration", "--fail-within", "400"],
    ));
    assert!(
        stderr(&out).contains("expire within 400 days"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("node2/etcd-server"),
        "{}",
        stderr(&out)
    );

    // 3. Drift on the nodes is seen; `certs distribute` repairs it (and restarts etcd on the
    //    member whose peer certificate came back).
    steps.enter("3. drift on the nodes seen, `certs distribute` repairs it");
    ssh(&sb, "node3", "rm /etc/kubernetes/pki/etcd/peer.crt");
    ssh(
        &sb,
        "node2",
        "chmod 0644 /etc/kubernetes/pki/etcd/server.key",
    );
    let rows = check(&cfg);
    assert_eq!(row(&rows, "node3", "etcd-peer")["status"], "missing");
    assert_eq!(row(&rows, "node2", "etcd-server")["status"], "key-mode");
    let out = run_fail(&mut ck(
        &cfg,
        &["certs", "check-expiration", "--fail-within", "30"],
    ));
    assert!(
        stderr(&out).contains("node3/etcd-peer (missing)"),
        "{}",
        stderr(&out)
    );
    let v = json_of(&mut ck(&cfg, &["-o", "json", "certs", "distribute"]));
    let hosts = v["hosts"].as_array().unwrap();
    let host = |n: &str| hosts.iter().find(|h| h["host"] == n).unwrap().clone();
    assert_eq!(host("node1")["uploaded"], serde_json::json!([]), "{v:#}");
    assert_eq!(
        host("node2")["uploaded"],
        serde_json::json!(["/etc/kubernetes/pki/etcd/server.key"]),
        "{v:#}"
    );
    assert_eq!(
        host("node3")["uploaded"],
        serde_json::json!(["/etc/kubernetes/pki/etcd/peer.crt"]),
        "{v:#}"
    );
    assert_eq!(
        host("node3")["restarted"],
        serde_json::json!(["etcd"]),
        "{v:#}"
    );
    assert_eq!(
        ssh(
            &sb,
            "node2",
            "stat -c %a /etc/kubernetes/pki/etcd/server.key"
        )
        .trim(),
        "600"
    );
    assert!(check(&cfg).iter().all(|r| r["status"] == "ok"));

    // 4. Renew the etcd certificates with data in etcd.
    steps.enter("4. renew the etcd certificates with data in etcd");
    run_ok(&mut common::etcdctl(
        &state,
        &endpoints,
        &["put", "clusterkit/certs-test", "written-before-renewal"],
    ));
    let before: Vec<(String, String)> = NODES
        .iter()
        .map(|n| node_cert(&sb, n, "/etc/kubernetes/pki/etcd/peer.crt"))
        .collect();
    let v = json_of(&mut ck(
        &cfg,
        &["-o", "json", "certs", "renew", "etcd-server", "etcd-peer"],
    ));
    let renewed = v["renewed"].as_array().unwrap();
    assert_eq!(renewed.len(), 6, "{v:#}");
    for r in renewed {
        assert_ne!(r["old_serial"], r["new_serial"], "{r:#}");
        assert!(r["old_serial"].is_string(), "{r:#}");
    }
    for h in v["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "ok", "{v:#}");
        assert_eq!(h["restarted"], serde_json::json!(["etcd"]), "{v:#}");
        // server.crt/key and peer.crt/key: only the renewed files.
        assert_eq!(h["uploaded"].as_array().unwrap().len(), 4, "{v:#}");
    }
    for (i, node) in NODES.iter().enumerate() {
        for kind in ["server", "peer"] {
            let (serial, _) = node_cert(&sb, node, &format!("/etc/kubernetes/pki/etcd/{kind}.crt"));
            let want = renewed
                .iter()
                .find(|r| r["name"] == format!("etcd-{kind}/{node}"))
                .unwrap();
            assert_eq!(want["new_serial"], serial.as_str(), "{node} {kind}");
            if kind == "peer" {
                assert_ne!(serial, before[i].0, "{node}: serial unchanged");
            }
        }
    }
    // One member at a time: each restarted after the previous one (its start time is later
    // by at least the previous member's restart and health wait).
    let starts: Vec<u64> = NODES.iter().map(|n| etcd_started(&sb, n)).collect();
    eprintln!("etcd start times (monotonic µs): {starts:?}");
    // Restarted together, they would start within milliseconds of each other.
    assert!(
        starts[1] > starts[0] + 200_000 && starts[2] > starts[1] + 200_000,
        "{starts:?}"
    );
    let members = stdout(&run_ok(&mut common::etcdctl(
        &state,
        &endpoints,
        &["member", "list"],
    )));
    assert_eq!(
        members
            .lines()
            .filter(|l| l.contains(", started, "))
            .count(),
        3,
        "{members}"
    );
    let health = run_ok(&mut common::etcdctl(
        &state,
        &endpoints,
        &["endpoint", "health"],
    ));
    let health = format!("{}{}", stdout(&health), stderr(&health));
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let got = stdout(&run_ok(&mut common::etcdctl(
        &state,
        &endpoints,
        &["get", "--print-value-only", "clusterkit/certs-test"],
    )));
    assert_eq!(got.trim(), "written-before-renewal");
    let rows = check(&cfg);
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:#?}");

    // 5. A kubeconfig: only its host gets it, and only its user restarts.
    //    admin.conf next to cluster.yaml follows the state copy.
    steps.enter("5. a kubeconfig: only its host gets it, and only its user restarts");
    let admin = sb.dir().join("admin.conf");
    let admin_before = std::fs::read(&admin).unwrap();
    let v = json_of(&mut ck(
        &cfg,
        &[
            "-o",
            "json",
            "certs",
            "renew",
            "scheduler.conf",
            "admin.conf",
        ],
    ));
    let hosts = v["hosts"].as_array().unwrap();
    for h in hosts {
        let want: &[&str] = if h["host"] == "node1" {
            &["/etc/kubernetes/scheduler.conf"]
        } else {
            &[]
        };
        assert_eq!(h["uploaded"], serde_json::json!(want), "{v:#}");
        let restarted: &[&str] = if h["host"] == "node1" {
            &["kube-scheduler"]
        } else {
            &[]
        };
        assert_eq!(h["restarted"], serde_json::json!(restarted), "{v:#}");
    }
    assert_eq!(
        ssh(&sb, "node1", "systemctl is-active kube-scheduler").trim(),
        "active"
    );
    let admin_after = std::fs::read(&admin).unwrap();
    assert_ne!(admin_before, admin_after);
    assert_eq!(
        admin_after,
        std::fs::read(state.join("kubeconfig/admin.conf")).unwrap()
    );
    let rows = check(&cfg);
    let sched = row(&rows, "node1", "scheduler.conf");
    assert_eq!(
        (sched["status"].as_str(), sched["in_sync"].as_bool()),
        (Some("ok"), Some(true))
    );
    let renewed_serial = v["renewed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "scheduler.conf/node1")
        .unwrap()["new_serial"]
        .clone();
    assert_eq!(sched["serial"], renewed_serial);

    // 6. The API server's serving certificate: renewed, restarted, and what it now presents
    //    over TLS is the new one; /readyz answers through the renewed admin.conf.
    steps.enter("6. the API server's serving certificate renewed");
    let v = json_of(&mut ck(
        &cfg,
        &["-o", "json", "certs", "renew", "apiserver"],
    ));
    let new_serial = v["renewed"][0]["new_serial"].as_str().unwrap().to_string();
    let node1 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "node1")
        .unwrap()
        .clone();
    // The controller manager and scheduler serve with it too.
    assert_eq!(
        node1["restarted"],
        serde_json::json!([
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler"
        ]),
        "{v:#}"
    );
    let cp = &sb.node("node1").unwrap().address;
    for port in [6443, 10257, 10259] {
        let presented = Command::new("sh")
            .args([
                "-c",
                "openssl s_client -connect \"$1:$2\" </dev/null 2>/dev/null | openssl x509 -noout -serial",
                "sh",
                &cp.to_string(),
                &port.to_string(),
            ])
            .output()
            .unwrap();
        assert_eq!(
            stdout(&presented).trim(),
            format!("serial={new_serial}"),
            "port {port}"
        );
    }
    let mut kubectl = Command::new(kube_bin.join("kubectl"));
    kubectl
        .arg("--kubeconfig")
        .arg(&admin)
        .args(["get", "--raw", "/readyz"]);
    assert_eq!(stdout(&run_ok(&mut kubectl)).trim(), "ok");
    for unit in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert_eq!(
            ssh(&sb, "node1", &format!("systemctl is-active {unit}")).trim(),
            "active"
        );
    }
    let rows = check(&cfg);

    // 7. Refused: a CA (rotation is not supported) and an unknown name; nothing changed.
    steps.enter("7. refused: a CA and an unknown name, nothing changed");
    let out = run_fail(&mut ck(&cfg, &["certs", "renew", "etcd-ca"]));
    assert!(
        stderr(&out).contains("CA rotation is not supported"),
        "{}",
        stderr(&out)
    );
    let out = run_fail(&mut ck(&cfg, &["certs", "renew", "no-such-cert"]));
    assert!(
        stderr(&out).contains("unknown certificate"),
        "{}",
        stderr(&out)
    );
    let out = run_fail(&mut ck(&cfg, &["certs", "renew"]));
    assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    let after = check(&cfg);
    for (a, b) in rows.iter().zip(&after) {
        assert_eq!(a["serial"], b["serial"], "{a:#} {b:#}");
    }
}
