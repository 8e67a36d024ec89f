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
//! kubectl); CA names and unknown names are refused. Last, kubelets join on every node and
//! the cluster and front-proxy CAs are rotated under running pods (`certs rotate-ca`, killed
//! mid-way and resumed with `--restart-workloads`): see [`rotate_cluster_ca`].
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle,
//! the Kubernetes binaries, etcdctl and openssl; fails with the reason when one is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{
    ck, etcd_endpoints, json_of, new_not_old, pem_certs, run_fail, run_ok, ssh, stderr, stdout,
    tool, NODES,
};
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
    serial_and_end(&out, node)
}

/// (serial, notAfter) from `openssl x509 -noout -serial -enddate` output read on `host`.
fn serial_and_end(out: &str, host: &str) -> (String, String) {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{host}: no {k} in {out}"))
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

#[test]
fn check_and_renew_on_three_nodes() {
    let steps = common::Steps::new("certs check and renew");
    assert!(
        tool("CLUSTERKIT_OPENSSL", Path::new("/usr/bin/openssl")).is_file(),
        "openssl missing"
    );
    let kube_bin = common::kube_bin();
    // Its own name per run: the suite and a developer may run this file at the same time.
    let name = format!("ct{}", std::process::id() % 1_000_000);
    let sb = SandboxGuard::up(UpOptions::new(&name, 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(
        &bundle,
        Some(&kube_bin),
        &["--package", "etcd-server", "--package", "haproxy"],
    );
    let cfg = common::sandbox_config(&sb, "certs.yaml", &bundle, "");
    // The local API load balancer on every node: its health checks verify the API server
    // with the cluster CA, which the rotation replaces.
    common::with_local_load_balancer(&cfg);
    let state: PathBuf = sb.dir().join(format!("{name}-state"));
    for phase in [
        "prepare",
        "runtime",
        "pki",
        "etcd",
        "load-balancer",
        "control-plane",
    ] {
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
    // One member at a time (the leader last): each restarted after the previous one (its
    // start time is later by at least the previous member's restart and health wait).
    let starts: Vec<u64> = NODES
        .iter()
        .map(|n| common::unit_started(&sb, n, "etcd"))
        .collect();
    eprintln!("etcd start times (monotonic µs): {starts:?}");
    // Restarted together, they would start within milliseconds of each other.
    assert!(common::one_at_a_time(&starts), "{starts:?}");
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
        stderr(&out).contains("`certs rotate-ca` replaces CAs"),
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

    rotate_cluster_ca(&sb, &cfg, &state, &kube_bin, &steps);
}

/// A Deployment and a bare pod that read the cluster CA (the service-account token volume).
const CA_READER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: ca-reader, namespace: default }
spec:
  replicas: 1
  selector: { matchLabels: { app: ca-reader } }
  template:
    metadata: { labels: { app: ca-reader } }
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: reader
          image: docker.io/library/busybox:clusterkit
          imagePullPolicy: Never
          command: ["sh", "-c", "exec sleep 100000"]
---
apiVersion: v1
kind: Pod
metadata: { name: ca-reader-bare, namespace: default, labels: { app: ca-reader } }
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: reader
      image: docker.io/library/busybox:clusterkit
      imagePullPolicy: Never
      command: ["sh", "-c", "exec sleep 100000"]
---
apiVersion: v1
kind: Pod
metadata: { name: ca-reader-subpath, namespace: default, labels: { app: ca-reader-subpath } }
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{ name: ca, configMap: { name: kube-root-ca.crt } }]
  containers:
    - name: reader
      image: docker.io/library/busybox:clusterkit
      imagePullPolicy: Never
      volumeMounts: [{ name: ca, mountPath: /ca/ca.crt, subPath: ca.crt }]
      command: ["sh", "-c", "exec sleep 100000"]
"#;

/// The `app=ca-reader` pods not being deleted: (name, uid, node), by name.
fn ca_reader_pods(kube_bin: &Path, admin: &Path) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&common::kubectl(
        kube_bin,
        admin,
        &["get", "pods", "-l", "app=ca-reader", "-o", "json"],
    ))
    .unwrap();
    let mut pods: Vec<(String, String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["metadata"]["uid"]),
                s(&p["spec"]["nodeName"]),
            )
        })
        .collect();
    pods.sort();
    pods
}

/// `openssl x509` here: (serial, notAfter as openssl prints it).
fn local_cert(path: &Path) -> (String, String) {
    let out = run_ok(
        Command::new(tool("CLUSTERKIT_OPENSSL", Path::new("/usr/bin/openssl")))
            .args(["x509", "-noout", "-serial", "-enddate", "-in"])
            .arg(path),
    );
    serial_and_end(&stdout(&out), "local")
}

/// A kubeconfig's base64 value of `key`: `certificate-authority-data` of its cluster or
/// `client-certificate-data` of its user.
fn kubeconfig_value(text: &str, key: &str) -> String {
    let v: Value = serde_saphyr::from_str(text).unwrap();
    let entry = if key.starts_with("certificate-authority") || key == "server" {
        &v["clusters"][0]["cluster"]
    } else {
        &v["users"][0]["user"]
    };
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_string()
}

/// 8. `certs rotate-ca --ca kubernetes,front-proxy` on the running cluster, with kubelets on
///    every node (images, network and join phases first) and a Deployment, a bare pod and a
///    bare pod mounting `ca.crt` with `subPath` started before: `--check` plans the three
///    stages, lists those pods and the API loop's as the ones to restart, and changes nothing;
///    the rotation is
///    killed (SIGKILL) in the middle of stage 2, where `check-expiration` shows the old and
///    the new CA of both rotations (serial and expiry as openssl reads the archive), and
///    `--resume --restart-workloads` finishes it, listing both pods, replacing the
///    Deployment's (its new pod's mounted ca.crt holds the new CA) and leaving the bare ones
///    (the subPath one still sees the old CA alone in its container: why it is listed);
///    afterwards every certificate of both CAs on the nodes, the kubelets' rotated client and
///    serving certificates included, verifies against the new CA and not the old (openssl on the
///    node), no node and no kubeconfig (the workers' own kubelet.conf included) trusts an old
///    CA, every node is Ready and its load balancer (reloaded in the drop stage) passes a
///    request verified against the new CA alone, a pod on node2 that called the API every second throughout saw
///    no TLS or authentication failure, `kubectl logs` reaches the kubelet, the
///    kube-root-ca.crt and extension-apiserver-authentication ConfigMaps carry the new CAs,
///    kubectl with the regenerated admin.conf works and the old credentials are refused; a
///    rerun changes nothing.
fn rotate_cluster_ca(
    sb: &SandboxGuard,
    cfg: &Path,
    state: &Path,
    kube_bin: &Path,
    steps: &common::Steps,
) {
    steps.enter("8. rotate-ca --ca kubernetes,front-proxy, killed in stage 2 and resumed");
    const CAS: &str = "kubernetes,front-proxy";
    let admin = sb.dir().join("admin.conf");
    let work = tempfile::tempdir().unwrap();
    let old_admin = work.path().join("old-admin.conf");
    std::fs::copy(&admin, &old_admin).unwrap();
    let kubectl = |conf: &Path, args: &[&str]| {
        let mut c = Command::new(kube_bin.join("kubectl"));
        c.arg("--kubeconfig").arg(conf).args(args);
        c
    };
    // Kubelets on every node (the workers by TLS bootstrap, so with their own kubelet.conf and
    // rotated client certificates) and workloads on them: the images, network and join phases.
    // The join phase also makes kube-public/cluster-info, which the rotation keeps in line.
    for phase in ["images", "network", "join"] {
        run_ok(&mut ck(cfg, &["install", "--phase", phase]));
    }
    // A Deployment and a bare pod started before the rotation: both read the cluster CA.
    let manifest = work.path().join("ca-reader.yaml");
    std::fs::write(&manifest, CA_READER).unwrap();
    let manifest = manifest.to_string_lossy().to_string();
    run_ok(&mut kubectl(&admin, &["apply", "-f", &manifest]));
    run_ok(&mut kubectl(
        &admin,
        &[
            "rollout",
            "status",
            "deployment/ca-reader",
            "--timeout=180s",
        ],
    ));
    run_ok(&mut kubectl(
        &admin,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/ca-reader-bare",
            "pod/ca-reader-subpath",
            "--timeout=180s",
        ],
    ));
    let pods_before = ca_reader_pods(kube_bin, &admin);
    assert_eq!(pods_before.len(), 2, "{pods_before:?}");
    // A pod on node2 that calls the API every second with its service-account token and the
    // CA of its volume, at the control-plane host's address (this cluster has no kube-proxy),
    // throughout the rotation.
    let cp = sb.node("node1").unwrap().address.to_string();
    common::start_api_loop(sb, kube_bin, &admin, "node2", Some(&format!("{cp}:6443")));
    let old_ca = std::fs::read_to_string(state.join("pki/ca.crt")).unwrap();
    assert_eq!(pem_certs(&old_ca).len(), 1);
    let old_fp = std::fs::read_to_string(state.join("pki/front-proxy-ca.crt")).unwrap();

    // --check: three stages planned, nothing changed.
    let v = json_of(&mut ck(
        cfg,
        &["-o", "json", "certs", "rotate-ca", "--ca", CAS, "--check"],
    ));
    let stages = common::planned_stages(&v);
    // The pods that read the cluster CA now: the ones to restart between stages 1 and 2,
    // listed on the trust-both stage; nothing restarted.
    let listed: Vec<(&str, bool)> = stages[0]["workloads"]
        .as_array()
        .unwrap_or_else(|| panic!("no workloads on the trust-both stage: {v:#}"))
        .iter()
        .map(|p| (p["pod"].as_str().unwrap(), p["restarted"] == true))
        .collect();
    for pod in pods_before
        .iter()
        .map(|(p, _, _)| p.as_str())
        .chain(["api-loop", "ca-reader-subpath"])
    {
        assert!(
            listed.contains(&(pod, false)),
            "{v:#}\n{pod} not listed as (pod, restarted): {listed:?}"
        );
    }
    let node1 = stages[0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "node1")
        .unwrap();
    for file in ["ca.crt", "front-proxy-ca.crt"] {
        assert!(
            node1["uploaded"]
                .as_array()
                .unwrap()
                .contains(&Value::from(format!("/etc/kubernetes/pki/{file}"))),
            "{v:#}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(state.join("pki/ca.crt")).unwrap(),
        old_ca
    );
    assert!(!state.join("rotate/journal.json").exists());
    // Nothing to resume for a CA never rotated: refused before anything changes.
    let out = run_fail(&mut ck(
        cfg,
        &["certs", "rotate-ca", "--ca", "etcd", "--resume"],
    ));
    assert!(
        stderr(&out).contains("no rotation of etcd-ca"),
        "{}",
        stderr(&out)
    );
    // A controller manager still signing with ca.crt (installed before the signer file) is
    // refused before anything changes.
    let unit = "/etc/systemd/system/kube-controller-manager.service";
    ssh(
        sb,
        "node1",
        &format!("cp {unit} /tmp/kcm.service && sed -i 's#pki/ca-signer.crt#pki/ca.crt#' {unit}"),
    );
    let out = run_fail(&mut ck(cfg, &["certs", "rotate-ca", "--ca", CAS]));
    assert!(
        stderr(&out).contains("node1 signs with ca.crt"),
        "{}",
        stderr(&out)
    );
    ssh(sb, "node1", &format!("cp /tmp/kcm.service {unit}"));
    let out = run_fail(&mut ck(cfg, &["certs", "rotate-ca", "--resume"]));
    assert!(
        stderr(&out).contains("no rotation of ca"),
        "{}",
        stderr(&out)
    );
    assert!(!state.join("rotate/journal.json").exists());

    // The rotation of both, killed in the middle of stage 2 (once the new certificates are
    // issued and their roll-out has begun), then resumed.
    let journal =
        common::kill_rotation_in_reissue(cfg, state, CAS, std::time::Duration::from_secs(600));
    assert_eq!(
        journal.matches("\"stage\": \"trust-both\"").count(),
        2,
        "{journal}"
    );
    assert!(journal.contains("\"trusted_at\""), "{journal}");

    // Mid-rotation, check-expiration shows both CAs of each rotation, marked old and new,
    // with the serial and expiry openssl reads from the archive.
    let rows = check(cfg);
    for ca in ["ca", "front-proxy-ca"] {
        for which in ["old", "new"] {
            let marked: Vec<&Value> = rows
                .iter()
                .filter(|r| r["host"] == "local" && r["name"] == ca && r["rotation"] == which)
                .collect();
            assert_eq!(marked.len(), 1, "{ca} {which}: {rows:#?}");
            let r = marked[0];
            let path = state.join(format!("rotate/{ca}/{which}.crt"));
            assert_eq!(r["path"], path.to_string_lossy().as_ref(), "{r:#}");
            let (serial, end) = local_cert(&path);
            assert_eq!(r["serial"], serial.as_str(), "{r:#}");
            assert_eq!(
                r["expires"],
                openssl_date_to_rfc3339(&end).as_str(),
                "{r:#}"
            );
            assert_eq!(r["status"], "ok", "{r:#}");
            assert_eq!(r["ca"], "-", "{r:#}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(state.join("rotate/ca/old.crt")).unwrap(),
        old_ca
    );
    let table = stdout(&run_ok(&mut ck(cfg, &["certs", "check-expiration"])));
    for which in ["old", "new"] {
        assert!(
            table.contains(&format!("{which} CA, rotation at stage trust-both")),
            "{table}"
        );
    }

    // Resumed with --restart-workloads: the pods started before both CAs were published are
    // listed; the Deployment's is replaced, the bare pod only listed.
    let v = common::rotate_ca(cfg, CAS, &["--resume", "--restart-workloads"]);
    common::assert_resumed_in_reissue(&v);
    let stages = v["stages"].as_array().unwrap();
    for s in &stages[1..] {
        assert_eq!(
            s["cas"],
            serde_json::json!(["ca", "front-proxy-ca"]),
            "{v:#}"
        );
        for h in s["hosts"].as_array().unwrap() {
            assert_eq!(h["status"], "ok", "{v:#}");
        }
        let n1 = s["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == "node1")
            .unwrap();
        assert!(
            n1["restarted"]
                .as_array()
                .unwrap()
                .contains(&Value::from("kube-apiserver")),
            "{v:#}"
        );
    }
    let listed = stages[0]["workloads"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let entry = |pod: &str| {
        listed
            .iter()
            .find(|w| w["namespace"] == "default" && w["pod"] == pod)
            .unwrap_or_else(|| panic!("{v:#}\n{pod} not listed"))
            .clone()
    };
    for (name, uid, _) in &pods_before {
        let w = entry(name);
        assert_eq!(w["uid"], uid.as_str(), "{w:#}");
        if name == "ca-reader-bare" {
            assert_eq!(w["owner"], Value::Null, "{w:#}");
            assert_eq!(w["restarted"], false, "{w:#}");
        } else {
            assert_eq!(
                w["owner"],
                serde_json::json!({ "kind": "Deployment", "name": "ca-reader" }),
                "{w:#}"
            );
            assert_eq!(w["restarted"], true, "{w:#}");
        }
    }
    // The pod that mounts kube-root-ca.crt's ca.crt with subPath: listed, not restarted (a
    // bare pod); its volume does not hold the rotation up.
    let w = entry("ca-reader-subpath");
    assert_eq!(w["owner"], Value::Null, "{w:#}");
    assert_eq!(w["restarted"], false, "{w:#}");
    // The resumed stage re-issued nothing twice, and restarted every user of its files even
    // where the killed run had already uploaded them.
    assert_eq!(stages[1]["renewed"], serde_json::json!([]), "{v:#}");
    let n1 = stages[1]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "node1")
        .unwrap();
    for unit in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(
            n1["restarted"]
                .as_array()
                .unwrap()
                .contains(&Value::from(unit)),
            "{unit}: {v:#}"
        );
    }
    let new_ca = std::fs::read_to_string(state.join("pki/ca.crt")).unwrap();
    assert_eq!(pem_certs(&new_ca).len(), 1, "{new_ca}");
    assert_ne!(new_ca, old_ca);
    let archive = state.join("rotate/ca");
    assert_eq!(
        std::fs::read_to_string(archive.join("old.crt")).unwrap(),
        old_ca
    );
    assert!(!archive.join("old.key").exists() && !archive.join("new.key").exists());
    let journal = std::fs::read_to_string(state.join("rotate/journal.json")).unwrap();
    assert!(journal.contains("\"stage\": \"drop-old\""), "{journal}");

    // On every node: the trust bundle is the new CA alone; on the control-plane host every
    // certificate of the cluster CA (files and kubeconfig client certificates) verifies
    // against the new CA and not against the old one, and the kubeconfigs trust only the new.
    let old_ca_on_node = "/tmp/clusterkit-old-ca.pem";
    for node in NODES {
        assert_eq!(
            ssh(sb, node, "cat /etc/kubernetes/pki/ca.crt"),
            new_ca,
            "{node}"
        );
        ssh(
            sb,
            node,
            &format!("cat > {old_ca_on_node} <<'EOF'\n{old_ca}EOF"),
        );
    }
    let mut leaves: Vec<String> = ["apiserver.crt", "apiserver-kubelet-client.crt"]
        .iter()
        .map(|f| format!("/etc/kubernetes/pki/{f}"))
        .collect();
    for conf in ["controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        let text = ssh(sb, "node1", &format!("cat /etc/kubernetes/{conf}"));
        let ca_data = kubeconfig_value(&text, "certificate-authority-data");
        let pem = ssh(sb, "node1", &format!("printf '%s' {ca_data} | base64 -d"));
        assert_eq!(pem, new_ca, "{conf} trusts more than the new CA");
        let leaf = format!("/tmp/clusterkit-{conf}.pem");
        ssh(
            sb,
            "node1",
            &format!(
                "printf '%s' {} | base64 -d > {leaf}",
                kubeconfig_value(&text, "client-certificate-data")
            ),
        );
        leaves.push(leaf);
    }
    for leaf in &leaves {
        new_not_old(
            sb,
            "node1",
            leaf,
            "/etc/kubernetes/pki/ca.crt",
            old_ca_on_node,
        );
    }
    let text = std::fs::read_to_string(state.join("kubeconfig/admin.conf")).unwrap();
    let ca_data = kubeconfig_value(&text, "certificate-authority-data");
    let pem = ssh(sb, "node1", &format!("printf '%s' {ca_data} | base64 -d"));
    assert_eq!(pem, new_ca, "admin.conf");
    assert_eq!(
        std::fs::read(&admin).unwrap(),
        std::fs::read(state.join("kubeconfig/admin.conf")).unwrap()
    );
    let rows = check(cfg);
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:#?}");
    assert!(rows.iter().all(|r| r["rotation"].is_null()), "{rows:#?}");

    // Every kubelet's client certificate is the new CA's, and every node is Ready: the
    // workers' own kubelet.conf trusts the new CA.
    for node in NODES {
        for pair in ["client", "server"] {
            new_not_old(
                sb,
                node,
                &format!("/var/lib/kubelet/pki/kubelet-{pair}-current.pem"),
                "/etc/kubernetes/pki/ca.crt",
                old_ca_on_node,
            );
        }
        let conf = ssh(sb, node, "cat /etc/kubernetes/kubelet.conf");
        let ca_data = kubeconfig_value(&conf, "certificate-authority-data");
        let pem = ssh(sb, node, &format!("printf '%s' {ca_data} | base64 -d"));
        assert_eq!(pem, new_ca, "{node}: kubelet.conf");
    }
    let ready = common::wait_until(std::time::Duration::from_secs(120), || {
        let out = stdout(
            &kubectl(
                &admin,
                &[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ],
            )
            .output()
            .unwrap(),
        );
        out.lines().filter(|l| *l == "True").count() == NODES.len()
    });
    assert!(ready, "not every node Ready after the rotation");
    // Every node's load balancer (which its kubelet uses) took the new CA: it was reloaded in
    // the drop stage, and it passes a request, verified against the new CA alone, to an API
    // server it checked with it.
    let drop = &stages[2];
    assert_eq!(drop["stage"], "drop-old", "{v:#}");
    for node in NODES {
        assert!(
            common::stage_restarted(drop, node).contains(&"haproxy".to_string()),
            "{node}: haproxy not reloaded: {v:#}"
        );
        let conf = ssh(sb, node, "cat /etc/kubernetes/kubelet.conf");
        assert_eq!(
            kubeconfig_value(&conf, "server"),
            common::LOCAL_LB,
            "{node}"
        );
        common::ready_through_local_lb(sb, node);
    }

    // The Deployment's pod was replaced and its new pod's ca.crt holds the new CA; the bare
    // pod still runs, as it was.
    let pods_after = ca_reader_pods(kube_bin, &admin);
    for (name, uid, _) in &pods_before {
        let same = pods_after.iter().any(|(_, u, _)| u == uid);
        assert_eq!(same, name == "ca-reader-bare", "{name}: {pods_after:?}");
    }
    let (_, uid, node) = pods_after
        .iter()
        .find(|(n, _, _)| n != "ca-reader-bare")
        .unwrap_or_else(|| panic!("no new ca-reader pod: {pods_after:?}"));
    let mounted = common::wait_until(std::time::Duration::from_secs(90), || {
        let (ok, text) = common::ssh_cmd(
            sb,
            node,
            &format!("cat /var/lib/kubelet/pods/{uid}/volumes/*/*/ca.crt"),
        )
        .output()
        .map(|o| (o.status.success(), stdout(&o)))
        .unwrap();
        ok && text.contains(new_ca.trim())
    });
    assert!(mounted, "{node}: the new pod's ca.crt lacks the new CA");
    // Why a subPath mount is listed: the kubelet rewrote the ConfigMap volume (the new CA
    // alone now), while the file the container sees is still the one it started with.
    let inside = stdout(&run_ok(&mut kubectl(
        &admin,
        &["exec", "ca-reader-subpath", "--", "cat", "/ca/ca.crt"],
    )));
    assert_eq!(
        inside.trim(),
        old_ca.trim(),
        "the subPath file followed the ConfigMap"
    );

    // The API loop ran throughout and still answers. The only failures allowed are those of
    // the single API server restarting in each stage: a refused connection, one reset by the
    // stopping server or a request that timed out (5 s), and, in its first moments, an authenticated request refused because its
    // authorizer has not loaded the RBAC objects yet ("Forbidden ... cannot get path"). Any
    // other failure, TLS (x509) or authentication (Unauthorized) above all, fails the test.
    // (`kubectl logs` also shows that the API server reaches the kubelet, verified against the
    // new CA alone.)
    std::thread::sleep(std::time::Duration::from_secs(3));
    let log = stdout(&run_ok(&mut kubectl(&admin, &["logs", "api-loop"])));
    let lines: Vec<&str> = log.lines().collect();
    let (ok, failed) = common::tally(&log, " ok", "FAIL");
    let is_refused = |l: &&String| {
        l.contains("was refused")
            || l.contains("connection reset by peer")
            || l.contains("deadline exceeded")
            || l.contains("Client.Timeout exceeded")
    };
    let is_unsynced =
        |l: &&String| l.contains("(Forbidden)") && l.contains("cannot get path \"/api\"");
    let refused = failed.iter().filter(|l| is_refused(l)).count();
    let unsynced = failed.iter().filter(|l| is_unsynced(l)).count();
    let other: Vec<&String> = failed
        .iter()
        .filter(|l| !(is_refused(l) || is_unsynced(l)))
        .collect();
    eprintln!(
        "API loop in a pod during the rotation: {ok} calls answered, {} failed: {refused} refused, reset or timed out and {unsynced} authorizer-not-ready refusals while the API server restarted, {} other (TLS, authentication, …)",
        failed.len(),
        other.len()
    );
    assert!(other.is_empty(), "{other:#?}");
    assert!(ok >= 60, "{log}");
    assert_eq!(lines.last(), Some(&" ok"), "{log}");

    // The front proxy's CA: the new one alone on the node, its client certificate from it,
    // and the API server publishes it to aggregated API servers.
    let new_fp = std::fs::read_to_string(state.join("pki/front-proxy-ca.crt")).unwrap();
    assert_eq!(pem_certs(&new_fp).len(), 1, "{new_fp}");
    assert_ne!(new_fp, old_fp);
    assert_eq!(
        ssh(sb, "node1", "cat /etc/kubernetes/pki/front-proxy-ca.crt"),
        new_fp
    );
    let fp_archive = state.join("rotate/front-proxy-ca");
    assert_eq!(
        std::fs::read_to_string(fp_archive.join("old.crt")).unwrap(),
        old_fp
    );
    assert!(!fp_archive.join("old.key").exists() && !fp_archive.join("new.key").exists());
    ssh(
        sb,
        "node1",
        &format!("cat > /tmp/clusterkit-old-fp.pem <<'EOF'\n{old_fp}EOF"),
    );
    new_not_old(
        sb,
        "node1",
        "/etc/kubernetes/pki/front-proxy-client.crt",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        "/tmp/clusterkit-old-fp.pem",
    );

    // kubectl: the regenerated admin.conf works; the old one is refused, and so are its
    // credentials when the server's new certificate is trusted.
    assert_eq!(
        stdout(&run_ok(&mut kubectl(&admin, &["get", "--raw", "/readyz"]))).trim(),
        "ok"
    );
    let out = run_fail(&mut kubectl(&old_admin, &["get", "--raw", "/api"]));
    assert!(stderr(&out).contains("x509"), "{}", stderr(&out));
    let mut mixed_conf: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&old_admin).unwrap()).unwrap();
    let key = "certificate-authority-data";
    mixed_conf["clusters"][0]["cluster"][key] = Value::from(kubeconfig_value(
        &std::fs::read_to_string(&admin).unwrap(),
        key,
    ));
    // kubectl reads JSON kubeconfigs too.
    let mixed = work.path().join("old-credentials.conf");
    std::fs::write(&mixed, mixed_conf.to_string()).unwrap();
    let out = run_fail(&mut kubectl(&mixed, &["get", "--raw", "/api"]));
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    // In-cluster clients get the new CA: the controller manager publishes it.
    // A ConfigMap's value (`key` as jsonpath writes it) through the new admin.conf.
    let configmap = |ns: &str, name: &str, key: &str| {
        let jsonpath = format!("jsonpath={{.data.{key}}}");
        let args = ["get", "configmap", name, "-n", ns, "-o", jsonpath.as_str()];
        stdout(&kubectl(&admin, &args).output().unwrap())
    };
    let published = common::wait_until(std::time::Duration::from_secs(90), || {
        configmap("default", "kube-root-ca.crt", "ca\\.crt") == new_ca
    });
    assert!(published, "kube-root-ca.crt never carried the new CA alone");
    let auth = "extension-apiserver-authentication";
    let published = common::wait_until(std::time::Duration::from_secs(90), || {
        configmap("kube-system", auth, "requestheader-client-ca-file") == new_fp
    });
    assert!(
        published,
        "the API server never published the new front-proxy CA alone"
    );
    assert_eq!(configmap("kube-system", auth, "client-ca-file"), new_ca);
    let info = configmap("kube-public", "cluster-info", "kubeconfig");
    let ca_data = kubeconfig_value(&info, "certificate-authority-data");
    let pem = ssh(sb, "node1", &format!("printf '%s' {ca_data} | base64 -d"));
    assert_eq!(pem, new_ca, "cluster-info");

    // A rerun changes nothing: every stage is done, nothing restarts.
    let starts = || -> Vec<u64> {
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]
        .iter()
        .map(|u| common::unit_started(sb, "node1", u))
        .collect()
    };
    let before = starts();
    let v = json_of(&mut ck(
        cfg,
        &["-o", "json", "certs", "rotate-ca", "--ca", CAS],
    ));
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["status"], "done", "{v:#}");
        assert_eq!(s["hosts"], serde_json::json!([]), "{v:#}");
    }
    assert_eq!(
        std::fs::read_to_string(state.join("pki/ca.crt")).unwrap(),
        new_ca
    );
    assert_eq!(
        std::fs::read_to_string(state.join("pki/front-proxy-ca.crt")).unwrap(),
        new_fp
    );
    assert_eq!(before, starts());
}
