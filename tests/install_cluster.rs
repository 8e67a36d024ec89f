//! The whole `clusterkit install` on a 3-node sandbox, all real: Debian 12 nspawn nodes over
//! SSH, Debian's etcd 3.4 from the offline bundle, Kubernetes v1.20.2 built from Debian's
//! source package (`CLUSTERKIT_KUBE_BIN_DIR`, scripts/deps.sh), control plane as systemd units.
//!
//! One sandbox is shared by the steps (bringing nodes up and installing is the slow part):
//! install every phase; etcd seen from this machine with `etcdctl` and the generated
//! healthcheck certificate (3 started members, every endpoint healthy; no client certificate
//! or one from another CA is refused); `/readyz` through admin.conf with the v1.20.2 kubectl,
//! `/livez` on the control-plane host; controller manager and scheduler hold fresh leases; a
//! worker's kubelet joined by TLS bootstrap (its CSR from the bootstrap token approved, its Node
//! registered, its client certificate verified against the cluster CA with `openssl verify`);
//! then a rerun changes nothing. Wall times of the install and the rerun are printed.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle,
//! etcdctl, openssl and the Kubernetes binaries; fails with the reason when one is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{clusterkit, describe, run_fail, run_ok, stdout, tool};
use serde_json::Value;

fn ssh(sb: &SandboxGuard, node: &str, cmd: &str) -> String {
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
    stdout(&run_ok(&mut c))
}

/// `clusterkit -o json install` (every phase); returns the summary and the wall time.
fn install(cfg: &Path, events: &Path) -> (Value, Duration) {
    let start = Instant::now();
    let mut c = clusterkit();
    c.arg("-f")
        .arg(cfg)
        .args(["-o", "json", "install", "--events"])
        .arg(events);
    let out = c.output().expect("run clusterkit");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        describe(&c, &out, "install failed")
    );
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "summary is not JSON")));
    (summary, took)
}

fn etcdctl(state: &Path, endpoints: &str, tls: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(tool("CLUSTERKIT_ETCDCTL", Path::new("/usr/bin/etcdctl")));
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!(
            "--cacert={}",
            state.join("pki/etcd/ca.crt").display()
        ))
        .args(tls)
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args);
    c
}

fn kubectl(kube_bin: &Path, admin: &Path, args: &[&str]) -> String {
    let mut c = Command::new(kube_bin.join("kubectl"));
    c.arg("--kubeconfig").arg(admin).args(args);
    stdout(&run_ok(&mut c))
}

/// The first PEM certificate block of a file's text.
fn first_cert(pem: &str) -> String {
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = pem[start..]
        .find("-----END CERTIFICATE-----")
        .expect("end of certificate")
        + start;
    format!("{}-----END CERTIFICATE-----\n", &pem[start..end])
}

fn openssl(args: &[&str], dir: &Path) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    run_ok(&mut c);
}

#[test]
fn install_whole_cluster_on_three_nodes() {
    let kube_bin = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::cache_dir().join("kube-v1.20.2/bin"));
    assert!(
        kube_bin.join("kube-apiserver").is_file(),
        "Kubernetes v1.20.2 binaries missing in {} (CLUSTERKIT_KUBE_BIN_DIR): run `bash scripts/deps.sh` (scripts/build-kube.sh)",
        kube_bin.display()
    );
    let sb = SandboxGuard::up(UpOptions::new("inscl", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();

    // Offline bundle: containerd, runc, etcd-server, CNI plugins and the Kubernetes binaries.
    let bundle = work.path().join("bundle");
    run_ok(
        clusterkit()
            .env("CLUSTERKIT_KUBE_BIN_DIR", &kube_bin)
            .args([
                "bundle",
                "build",
                "--package",
                "etcd-server",
                "--package",
                "containernetworking-plugins",
                "--out",
            ])
            .arg(&bundle),
    );
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    let cfg = sb.dir().join("install-cluster.yaml");
    std::fs::write(
        &cfg,
        format!("{base}packages: {{ bundle: {} }}\n", bundle.display()),
    )
    .unwrap();
    let state = sb.dir().join("inscl-state");
    let admin = sb.dir().join("admin.conf");

    // 1. Every phase.
    let (summary, took) = install(&cfg, &work.path().join("first.jsonl"));
    eprintln!("install (all phases, 3 nodes): {:.1}s", took.as_secs_f64());
    for n in ["node1", "node2", "node3"] {
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // 2. etcd from this machine with the healthcheck certificate.
    let endpoints = sb
        .nodes()
        .iter()
        .map(|n| format!("https://{}:2379", n.address))
        .collect::<Vec<_>>()
        .join(",");
    let hc_cert = format!(
        "--cert={}",
        state.join("pki/etcd/healthcheck-client.crt").display()
    );
    let hc_key = format!(
        "--key={}",
        state.join("pki/etcd/healthcheck-client.key").display()
    );
    let tls = [hc_cert.as_str(), hc_key.as_str()];
    let list: Value = serde_json::from_str(&stdout(&run_ok(&mut etcdctl(
        &state,
        &endpoints,
        &tls,
        &["member", "list", "-w", "json"],
    ))))
    .unwrap();
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{list:#}");
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap_or(""))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["node1", "node2", "node3"],
        "every member started: {list:#}"
    );
    // etcdctl 3.4 prints the health lines on stderr.
    let out = run_ok(&mut etcdctl(
        &state,
        &endpoints,
        &tls,
        &["endpoint", "health"],
    ));
    let health = format!("{}{}", stdout(&out), common::stderr(&out));
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    // No client certificate: refused.
    let first = format!("https://{}:2379", sb.nodes()[0].address);
    run_fail(&mut etcdctl(&state, &first, &[], &["endpoint", "health"]));
    // A client certificate from another CA: refused.
    let d = work.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-subj",
            "/CN=other-ca",
            "-days",
            "1",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.csr",
            "-subj",
            "/CN=kube-etcd-healthcheck-client/O=system:masters",
        ],
        d,
    );
    std::fs::write(d.join("ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "other.csr",
            "-CA",
            "other-ca.crt",
            "-CAkey",
            "other-ca.key",
            "-CAcreateserial",
            "-out",
            "other.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
        d,
    );
    let oc = format!("--cert={}", d.join("other.crt").display());
    let ok = format!("--key={}", d.join("other.key").display());
    run_fail(&mut etcdctl(
        &state,
        &first,
        &[&oc, &ok],
        &["endpoint", "health"],
    ));

    // 3. The control plane, with the v1.20.2 kubectl.
    assert_eq!(
        kubectl(&kube_bin, &admin, &["get", "--raw", "/readyz"]).trim(),
        "ok"
    );
    let cp = format!("https://{}:6443", sb.nodes()[0].address);
    assert_eq!(
        kubectl(
            &kube_bin,
            &admin,
            &["--server", &cp, "get", "--raw", "/livez"]
        )
        .trim(),
        "ok"
    );
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let holder = kubectl(
            &kube_bin,
            &admin,
            &[
                "-n",
                "kube-system",
                "get",
                "lease",
                lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        assert!(holder.starts_with("node1"), "{lease} held by {holder:?}");
        assert_eq!(
            ssh(&sb, "node1", &format!("systemctl is-active {lease}")).trim(),
            "active"
        );
    }

    // 4. Workers joined through TLS bootstrap.
    let nodes = kubectl(
        &kube_bin,
        &admin,
        &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2", "node3"]);
    let csrs: Value =
        serde_json::from_str(&kubectl(&kube_bin, &admin, &["get", "csr", "-o", "json"])).unwrap();
    let bootstrapped: Vec<&Value> = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["spec"]["username"]
                .as_str()
                .unwrap_or("")
                .starts_with("system:bootstrap:")
        })
        .collect();
    assert!(
        bootstrapped.len() >= 2,
        "a CSR per worker from the bootstrap token: {csrs:#}"
    );
    for c in &bootstrapped {
        let approved = c["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["type"] == "Approved");
        assert!(
            approved && c["status"]["certificate"].is_string(),
            "approved and signed: {c:#}"
        );
    }
    let roles = kubectl(
        &kube_bin,
        &admin,
        &["get", "node", "node2", "-o", "jsonpath={.metadata.labels}"],
    );
    assert!(roles.contains("node-role.kubernetes.io/worker"), "{roles}");
    let pem = ssh(
        &sb,
        "node2",
        "cat /var/lib/kubelet/pki/kubelet-client-current.pem",
    );
    std::fs::write(d.join("kubelet-node2.crt"), first_cert(&pem)).unwrap();
    let ca = state.join("pki/ca.crt");
    openssl(
        &[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "kubelet-node2.crt",
        ],
        d,
    );
    let mut subj = Command::new("openssl");
    subj.current_dir(d)
        .args(["x509", "-noout", "-subject", "-in", "kubelet-node2.crt"]);
    let subject = stdout(&run_ok(&mut subj));
    assert!(
        subject.contains("system:node:node2") && subject.contains("system:nodes"),
        "{subject}"
    );
    // kube-proxy runs on every node.
    for n in ["node1", "node2", "node3"] {
        assert_eq!(
            ssh(&sb, n, "systemctl is-active kube-proxy kubelet")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["active", "active"],
            "{n}"
        );
    }

    // 5. Rerun: nothing changes.
    let events = work.path().join("rerun.jsonl");
    let (again, took) = install(&cfg, &events);
    eprintln!("rerun (all phases, 3 nodes): {:.1}s", took.as_secs_f64());
    let changed: Vec<String> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["status"] == "changed" && e["kind"] != "summary")
        .map(|e| {
            format!(
                "{} {} / {}: {}",
                e["host"], e["playbook"], e["task"], e["message"]
            )
        })
        .collect();
    for n in ["node1", "node2", "node3"] {
        assert_eq!(
            again["hosts"][n]["changed"], 0,
            "{n}: changed on rerun: {changed:#?}"
        );
        assert_eq!(again["hosts"][n]["failed"], 0, "{again:#}");
    }
    drop(sb);
}
