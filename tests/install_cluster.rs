//! The whole `clusterkit install` on a 3-node sandbox, all real: Debian 12 nspawn nodes over
//! SSH, Debian's etcd 3.4 from the offline bundle, Kubernetes v1.20.2 built from Debian's
//! source package (`CLUSTERKIT_KUBE_BIN_DIR`, scripts/deps.sh), control plane as systemd units.
//!
//! One sandbox is shared by the steps (bringing nodes up and installing is the slow part):
//! install every phase; etcd seen from this machine with `etcdctl` and the generated
//! healthcheck certificate (3 started members, every endpoint healthy; no client certificate
//! or one from another CA is refused); `/readyz` through admin.conf with the v1.20.2 kubectl,
//! `/livez` on the control-plane host; controller manager and scheduler hold fresh leases and
//! answer `/healthz` on the node's address (where monitoring probes them); a
//! worker's kubelet joined by TLS bootstrap (its CSR from the bootstrap token approved, its Node
//! registered, its client certificate verified against the cluster CA with `openssl verify`),
//! every kubelet's `/configz` computing its node status every 4 s;
//! then workloads: every node Ready, a busybox httpd Deployment of 3 replicas spread over the
//! 3 nodes and Running, pod-to-pod traffic across every pair of nodes (`busybox nc` inside the
//! pods through `kubectl exec`), `kubectl logs` from every node, a ClusterIP Service in front of
//! the pod on node1 answering the pod on node3, a deleted pod's address leaving the Service's
//! endpoints; then a run after a node's drift repairs it (its readiness probes made after the
//! phases), a rerun changes nothing (its probe pods started while the phases ran, none left
//! afterwards) and `--check` reports nothing to do, and the Service
//! still answers; `upgrade plan` reads what runs; `status` shows every host's components at
//! cluster.yaml's release and every Node Ready (a cordon warns, a stopped kube-proxy fails it),
//! and `install` with a patch release newer or older than the one running is refused before it
//! touches a host; then etcd and namespace backup timers (`backup install-timer`) on the
//! control-plane host, started at once, both back up into the node's store; last, `restore etcd`
//! of a backup (which `status` names as the store's newest trusted one) under the running
//! control plane (API server waited for, a later object gone). Wall times of the install, the
//! rerun, `status`, the refused installs and the restore are printed.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle,
//! etcdctl, openssl and the Kubernetes binaries; fails with the reason when one is missing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clusterkit_installer::readiness;
use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{
    changed_tasks, clusterkit, describe, etcd_endpoints, install_timed, kubectl, openssl,
    openssl_req_p256, openssl_sign, run_fail, run_ok, ssh, stderr, stdout, tool, try_kubectl,
};
use serde_json::Value;

/// `clusterkit -o json install --events EVENTS` (every phase); returns the summary and the wall
/// time.
fn install(cfg: &Path, events: &Path) -> (Value, Duration) {
    install_timed(cfg, &["--events", events.to_str().unwrap()])
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

#[test]
fn install_whole_cluster_on_three_nodes() {
    install_and_check(&common::kube_bin(), "v1.20.2");
}

/// The same scenario with a newer release's binaries, built by hand outside the repository
/// (`CLUSTERKIT_KUBE_BIN_DIR_NEWER`: kube-apiserver, kube-controller-manager, kube-scheduler,
/// kubelet, kube-proxy, kubectl and kubeadm of one release). cluster.yaml names the release
/// the binaries report and sets nothing else by hand: the pause image, the flags and the
/// kubelet configuration are the release's defaults.
#[test]
#[ignore = "needs Kubernetes binaries newer than v1.20.2 (CLUSTERKIT_KUBE_BIN_DIR_NEWER); Debian ships only v1.20.2"]
fn install_whole_cluster_on_three_nodes_newer_release() {
    let dir = std::path::PathBuf::from(std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR_NEWER").expect(
        "CLUSTERKIT_KUBE_BIN_DIR_NEWER: a directory with one newer release's Kubernetes binaries",
    ));
    let version = clusterkit_installer::versions::binary_version(&dir.join("kubelet"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    assert_ne!(
        version, "v1.20.2",
        "CLUSTERKIT_KUBE_BIN_DIR_NEWER holds v1.20.2"
    );
    install_and_check(&dir, &version);
}

/// The whole scenario with the Kubernetes binaries of `kube_bin`, which are `version`.
fn install_and_check(kube_bin: &Path, version: &str) {
    let steps = common::Steps::new("install_cluster");
    let kube_bin = kube_bin.to_path_buf();
    // A name of this process's own: two runs of this test at once (several engineers share the
    // machine) must not share, and tear down, one sandbox.
    let name = format!("ic{}", std::process::id() % 1_000_000);
    let sb = SandboxGuard::up(UpOptions::new(&name, 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();

    // Offline bundle: containerd, runc, etcd-server, CNI plugins and the Kubernetes binaries.
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, Some(&kube_bin), &common::CLUSTER_PACKAGES);
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap().replace(
        &format!(
            "version: {}",
            clusterkit_sandbox::cluster_yaml::KUBERNETES_VERSION
        ),
        &format!("version: {version}"),
    );
    assert!(base.contains(&format!("version: {version}")), "{base}");
    let cfg = sb.dir().join("install-cluster.yaml");
    std::fs::write(
        &cfg,
        format!("{base}packages: {{ bundle: {} }}\n", bundle.display()),
    )
    .unwrap();
    let state = sb.dir().join(format!("{name}-state"));
    let admin = sb.dir().join("admin.conf");

    // 1. Every phase.
    steps.enter("1. every phase");
    let (summary, took) = install(&cfg, &work.path().join("first.jsonl"));
    eprintln!("install (all phases, 3 nodes): {:.1}s", took.as_secs_f64());
    for n in ["node1", "node2", "node3"] {
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }
    // No API at the start: the probe pods were made after the phases.
    assert_eq!(
        summary["readiness"]["probes_during_run"], false,
        "{summary:#}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // 2. etcd from this machine with the healthcheck certificate.
    steps.enter("2. etcd from this machine with the healthcheck certificate");
    let endpoints = etcd_endpoints(&sb);
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
        d,
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
    );
    openssl(
        d,
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
    );
    std::fs::write(d.join("ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl_sign(d, "other-ca", "other", "ext", 1);
    let oc = format!("--cert={}", d.join("other.crt").display());
    let ok = format!("--key={}", d.join("other.key").display());
    run_fail(&mut etcdctl(
        &state,
        &first,
        &[&oc, &ok],
        &["endpoint", "health"],
    ));

    // 3. The control plane, with the release's own kubectl.
    steps.enter("3. the control plane, with the release's own kubectl");
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
        let (read, holder) = common::lease_field(&kube_bin, &admin, lease, "holderIdentity");
        assert!(read, "reading lease {lease}: {holder}");
        assert!(holder.starts_with("node1"), "{lease} held by {holder:?}");
        assert_eq!(
            ssh(&sb, "node1", &format!("systemctl is-active {lease}")).trim(),
            "active"
        );
    }
    // Their health endpoints answer on the node's address, where Prometheus and the exporter
    // probe them from another host (kubeadm's 127.0.0.1 would leave them "down"), with a
    // serving certificate the cluster CA verifies (kubeadm's are self-signed).
    for port in [10257, 10259] {
        let url = format!("https://{}:{port}/healthz", sb.nodes()[0].address);
        let out = run_ok(
            Command::new("curl")
                .args(["-sS", "--max-time", "10", "--cacert"])
                .arg(state.join("pki/ca.crt"))
                .arg(&url),
        );
        assert_eq!(stdout(&out).trim(), "ok", "{url}");
    }

    // 4. Workers joined through TLS bootstrap.
    steps.enter("4. workers joined through TLS bootstrap");
    let nodes = kubectl(
        &kube_bin,
        &admin,
        &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2", "node3"]);
    // The configuration the kubelets run with, as they report it: node status every 4 s.
    for n in &nodes {
        let configz: Value = serde_json::from_str(&kubectl(
            &kube_bin,
            &admin,
            &["get", "--raw", &format!("/api/v1/nodes/{n}/proxy/configz")],
        ))
        .unwrap();
        assert_eq!(
            configz["kubeletconfig"]["nodeStatusUpdateFrequency"], "4s",
            "{n}: {configz:#}"
        );
    }
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
        d,
        &[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "kubelet-node2.crt",
        ],
    );
    let subject = stdout(&openssl(
        d,
        &["x509", "-noout", "-subject", "-in", "kubelet-node2.crt"],
    ));
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

    // Pod CIDRs: one source of truth. The controller manager allocates none (host-gw assigns
    // them); every Node's spec.podCIDR is the slice the network phase routes to it.
    let cm = ssh(&sb, "node1", "systemctl cat kube-controller-manager");
    assert!(!cm.contains("--allocate-node-cidrs=true"), "{cm}");
    let slices: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("network/pod-cidrs.json")).unwrap(),
    )
    .unwrap();
    for n in ["node1", "node2", "node3"] {
        let cidr = kubectl(
            &kube_bin,
            &admin,
            &["get", "node", n, "-o", "jsonpath={.spec.podCIDR}"],
        );
        assert_eq!(cidr.trim(), slices[n].as_str().unwrap(), "{n}: {slices}");
    }
    // Kubelet serving certificates from the cluster CA, naming the node, verified by the API
    // server.
    let api = ssh(&sb, "node1", "systemctl cat kube-apiserver");
    assert!(
        api.contains("--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt"),
        "{api}"
    );
    for (i, n) in ["node1", "node2", "node3"].iter().enumerate() {
        let pem = ssh(
            &sb,
            n,
            "cat /var/lib/kubelet/pki/kubelet-server-current.pem",
        );
        let file = format!("serving-{n}.crt");
        std::fs::write(d.join(&file), first_cert(&pem)).unwrap();
        openssl(d, &["verify", "-CAfile", ca.to_str().unwrap(), &file]);
        let text = stdout(&openssl(d, &["x509", "-noout", "-text", "-in", &file]));
        let ip = sb.nodes()[i].address.to_string();
        assert!(
            text.contains(&format!("IP Address:{ip}"))
                && text.contains(&format!("DNS:{n}"))
                && text.contains(&format!("CN = system:node:{n}")),
            "{n}: {text}"
        );
    }

    // 5. Workloads: every node Ready, a Deployment spread over the nodes, pod-to-pod traffic
    // across nodes, a ClusterIP Service, endpoints following pod deletion.
    steps.enter("5. workloads across the nodes");
    workloads(&kube_bin, &admin, work.path());

    // A serving CSR from node2's identity naming node3's address is not approved by the next
    // install (the check that keeps a node from getting a certificate for another).
    let node3_ip = sb.nodes()[2].address.to_string();
    openssl_req_p256(
        d,
        &[
            "-new",
            "-keyout",
            "evil.key",
            "-out",
            "evil.csr",
            "-subj",
            "/O=system:nodes/CN=system:node:node2",
            "-addext",
            &format!("subjectAltName=DNS:node2,IP:{node3_ip}"),
        ],
    );
    let request = stdout(&openssl(d, &["base64", "-A", "-in", "evil.csr"]))
        .trim()
        .to_string();
    std::fs::write(
        d.join("evil-csr.yaml"),
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{ name: evil-serving }}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kubelet-serving\n  usages: [digital signature, key encipherment, server auth]\n"
        ),
    )
    .unwrap();
    let evil_yaml = d.join("evil-csr.yaml");
    kubectl(
        &kube_bin,
        &admin,
        &[
            "--as",
            "system:node:node2",
            "--as-group",
            "system:nodes",
            "create",
            "-f",
            evil_yaml.to_str().unwrap(),
        ],
    );

    // 6. Rerun: nothing changes.
    steps.enter("6. rerun: nothing changes");
    // First a drifted node: the run repairs it, so the probe pods it started while the
    // phases ran are deleted and the report makes its own after them.
    ssh(&sb, "node3", "rm /etc/sysctl.d/90-clusterkit.conf");
    let (repaired, _) = install(&cfg, &work.path().join("repair.jsonl"));
    assert_eq!(repaired["hosts"]["node3"]["changed"], 1, "{repaired:#}");
    assert_eq!(repaired["readiness"]["ok"], true, "{repaired:#}");
    assert_eq!(
        repaired["readiness"]["probes_during_run"], false,
        "{repaired:#}"
    );
    let events = work.path().join("rerun.jsonl");
    let (again, took) = install(&cfg, &events);
    eprintln!("rerun (all phases, 3 nodes): {:.1}s", took.as_secs_f64());
    let changed = changed_tasks(&events);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(
            again["hosts"][n]["changed"], 0,
            "{n}: changed on rerun: {changed:#?}"
        );
        assert_eq!(again["hosts"][n]["failed"], 0, "{again:#}");
    }
    // The rerun's readiness report: every node Ready, components healthy, every node's probe
    // pod reached from every other node, the probe Service from every node.
    let r = &again["readiness"];
    assert_eq!(r["ok"], true, "{r:#}");
    // Nothing changed: the probe pods started while the phases ran were the report's, and
    // are gone with it.
    assert_eq!(r["probes_during_run"], true, "{r:#}");
    let left = kubectl(
        &kube_bin,
        &admin,
        &[
            "get",
            "daemonsets,services",
            "-n",
            "kube-system",
            "-o",
            "name",
        ],
    );
    assert!(!left.contains(readiness::PROBE_NAME), "{left}");
    assert_eq!(r["nodes"].as_array().map(Vec::len), Some(3), "{r:#}");
    // 6 pod-to-pod pairs + the probe Service from each of the 3 nodes.
    assert_eq!(r["probes"].as_array().map(Vec::len), Some(9), "{r:#}");
    assert!(
        r["notes"].to_string().contains("CoreDNS is not installed"),
        "{r:#}"
    );
    let evil: Value = serde_json::from_str(&kubectl(
        &kube_bin,
        &admin,
        &["get", "csr", "evil-serving", "-o", "json"],
    ))
    .unwrap();
    let conds = evil["status"]["conditions"].to_string();
    assert!(
        !conds.contains("\"Approved\"")
            && conds.contains("\"Denied\"")
            && evil["status"]["certificate"].is_null(),
        "a CSR naming another node's IP must not be approved: {evil:#}"
    );
    assert!(
        conds.contains(&node3_ip),
        "the denial names the foreign IP: {conds}"
    );

    // 7. `--check` on the converged cluster: nothing to do.
    steps.enter("7. `--check` on the converged cluster: nothing to do");
    let mut c = clusterkit();
    c.arg("-f")
        .arg(&cfg)
        .args(["-o", "json", "install", "--check"]);
    let out = run_ok(&mut c);
    let check: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "summary is not JSON")));
    for n in ["node1", "node2", "node3"] {
        assert_eq!(check["hosts"][n]["changed"], 0, "{n}: --check: {check:#}");
        assert_eq!(check["hosts"][n]["failed"], 0, "{n}: --check: {check:#}");
    }
    // The workload still answers after the rerun.
    let pods = web_pods(&kube_bin, &admin);
    let (client, _, _) = &pods[0];
    let ip = common::service_ip(&kube_bin, &admin, "web");
    fetch(
        &kube_bin,
        &admin,
        client,
        &format!("{ip}:80"),
        "hello-from-",
    );

    // 7b. `upgrade plan` reads what the processes on each node run and applies the version-skew
    //     policy: nothing to move to the running version, refused two minors ahead, the moves
    //     in roll order one minor ahead.
    steps.enter("7b. upgrade plan reads what runs and applies the skew policy");
    let plan = |to: &str| {
        let mut c = clusterkit();
        c.arg("-f")
            .arg(&cfg)
            .args(["-o", "json", "upgrade", "plan", "--to", to]);
        c
    };
    let mut c = plan(version);
    let out = run_ok(&mut c);
    let now: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "plan is not JSON")));
    assert_eq!(now["steps"], serde_json::json!([]), "{now:#}");
    assert_eq!(now["refused"], serde_json::json!([]), "{now:#}");
    let running = now["running"].as_array().expect("running");
    let runs = |host: &str, component: &str| {
        running
            .iter()
            .any(|r| r["host"] == host && r["component"] == component)
    };
    assert!(runs("node1", "kube-apiserver"), "{now:#}");
    assert!(runs("node1", "kube-controller-manager"), "{now:#}");
    assert!(runs("node1", "kube-scheduler"), "{now:#}");
    for n in ["node1", "node2", "node3"] {
        assert!(runs(n, "kubelet"), "{n}: {now:#}");
    }
    assert!(
        running.iter().all(|r| r["version"] == version),
        "every component runs {version}: {now:#}"
    );
    let mut c = clusterkit();
    c.arg("-f")
        .arg(&cfg)
        .args(["-o", "yaml", "upgrade", "plan", "--to", version]);
    let out = run_ok(&mut c);
    let yaml: Value = serde_saphyr::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "plan is not YAML")));
    assert_eq!(yaml, now, "-o yaml and -o json say the same");
    let v = clusterkit_core::release::KubeVersion::parse(version).unwrap();
    let out = run_fail(&mut plan(&format!("v1.{}.0", v.minor + 2)));
    assert!(
        stderr(&out).contains(&format!("upgrade to v1.{}.x first", v.minor + 1)),
        "{}",
        stderr(&out)
    );
    let mut c = plan(&format!("v1.{}.0", v.minor + 1));
    let out = run_ok(&mut c);
    let next: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "plan is not JSON")));
    let moves = next["steps"].as_array().expect("steps");
    assert_eq!(
        moves.len(),
        running.len(),
        "every component moves: {next:#}"
    );
    assert_eq!(moves[0]["component"], "kube-apiserver", "{next:#}");
    assert_eq!(moves.last().unwrap()["host"], "node3", "{next:#}");
    // The bundle carries the running release, not the next one.
    assert_eq!(now["bundle"]["kubernetes"], version, "{now:#}");
    assert_eq!(now["bundle"]["has_target"], true, "{now:#}");
    assert_eq!(next["bundle"]["has_target"], false, "{next:#}");

    // 7c. `status`: every host with its roles and the components its roles give it, each at
    //     cluster.yaml's release, every Node Ready and schedulable, the component checks
    //     passed, the nearest certificate expiry; the table says the same. A cordoned Node is a
    //     warning (exit 0), a stopped kube-proxy a problem (exit non-zero, named). Then
    //     `install` with a newer (or older) kubernetes.version refuses before touching a host,
    //     pointing at `upgrade apply` (or refusing the downgrade).
    steps.enter("7c. status; install refuses another release than the one running");
    let status = |cfg: &Path| {
        let mut c = clusterkit();
        c.arg("-f").arg(cfg).args(["-o", "json", "status"]);
        c
    };
    let start = std::time::Instant::now();
    let mut c = status(&cfg);
    let out = run_ok(&mut c);
    eprintln!(
        "status (3 nodes, -o json): {:.2}s",
        start.elapsed().as_secs_f64()
    );
    let st: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "status is not JSON")));
    assert_eq!(st["healthy"], true, "{st:#}");
    assert_eq!(st["problems"], serde_json::json!([]), "{st:#}");
    assert_eq!(st["version"], version, "{st:#}");
    let hosts = st["hosts"].as_array().expect("hosts");
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(names, ["node1", "node2", "node3"], "{st:#}");
    for h in hosts {
        assert_eq!(h["node"]["state"], "ready", "{h:#}");
        assert_eq!(h["node"]["cordoned"], false, "{h:#}");
        let comps = h["components"].as_array().expect("components");
        let mut want = vec!["kubelet", "kube-proxy"];
        if h["roles"].to_string().contains("control-plane") {
            want = vec![
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kube-proxy",
            ];
        }
        let got: Vec<&str> = comps
            .iter()
            .filter_map(|c| c["component"].as_str())
            .collect();
        assert_eq!(got, want, "{h:#}");
        for c in comps {
            assert_eq!(c["version"], version, "{h:#}");
            assert_eq!(c["matches"], true, "{h:#}");
        }
    }
    assert_eq!(
        hosts[0]["roles"],
        serde_json::json!(["control-plane", "etcd"])
    );
    assert_eq!(hosts[2]["roles"], serde_json::json!(["worker", "etcd"]));
    let checks = st["readiness"].as_array().expect("readiness");
    assert!(
        checks.len() >= 7 && checks.iter().all(|c| c["ok"] == true),
        "{st:#}"
    );
    let nearest = &st["certificates"]["nearest"];
    let days = nearest["days_left"].as_i64().expect("days_left");
    assert!((300..=365).contains(&days), "a leaf issued now: {st:#}");
    assert_eq!(
        st["certificates"]["unusable"],
        serde_json::json!([]),
        "{st:#}"
    );
    assert!(st["backup"].is_null(), "no backup.store: {st:#}");
    let table = stdout(&run_ok(&mut common::ck(&cfg, &["status"])));
    eprintln!("{table}");
    for n in ["node1", "node2", "node3"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("no line for {n}:\n{table}"));
        assert!(line.contains(" Ready "), "{line}\n{table}");
        let want = if n == "node1" { 5 } else { 2 };
        assert_eq!(line.matches(version).count(), want, "{line}\n{table}");
    }
    assert!(
        table.contains("\nhealthy\n") && table.contains("nearest expiry"),
        "{table}"
    );
    // A cordoned Node: still healthy, shown as kubectl shows it, and warned about.
    kubectl(&kube_bin, &admin, &["cordon", "node3"]);
    let out = run_ok(&mut common::ck(&cfg, &["status"]));
    kubectl(&kube_bin, &admin, &["uncordon", "node3"]);
    let table = stdout(&out);
    assert!(
        table.contains("Ready,SchedulingDisabled")
            && table.contains("node3: cordoned")
            && table.contains("\nhealthy\n"),
        "{table}"
    );
    // A component that does not run: not healthy, exit non-zero, the host and component named.
    ssh(&sb, "node3", "systemctl stop kube-proxy");
    let out = run_fail(&mut status(&cfg));
    ssh(&sb, "node3", "systemctl start kube-proxy");
    let st: Value = serde_json::from_slice(&out.stdout).expect("status JSON on failure too");
    assert_eq!(st["healthy"], false, "{st:#}");
    assert!(
        stderr(&out).contains("node3: kube-proxy is not running"),
        "{}",
        stderr(&out)
    );
    // Another release in cluster.yaml: refused before any host is touched.
    let v = clusterkit_core::release::KubeVersion::parse(version).unwrap();
    let mut others = vec![(
        clusterkit_core::release::KubeVersion::new(v.major, v.minor, v.patch + 1),
        "upgrade apply --to",
    )];
    if v.patch > 0 {
        others.push((
            clusterkit_core::release::KubeVersion::new(v.major, v.minor, v.patch - 1),
            "does not downgrade",
        ));
    }
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    for (other, says) in others {
        let other_cfg = sb.dir().join(format!("install-{other}.yaml"));
        std::fs::write(
            &other_cfg,
            cfg_text.replace(&format!("version: {version}"), &format!("version: {other}")),
        )
        .unwrap();
        let events = work.path().join(format!("refused-{other}.jsonl"));
        let start = std::time::Instant::now();
        let out = run_fail(&mut common::ck(
            &other_cfg,
            &["install", "--events", events.to_str().unwrap()],
        ));
        eprintln!(
            "install refused for {other} in {:.2}s",
            start.elapsed().as_secs_f64()
        );
        let err = stderr(&out);
        assert!(
            err.contains(says) && err.contains(&format!("node1 runs kube-apiserver {version}")),
            "{other}: {err}"
        );
        let ran = std::fs::read_to_string(&events).unwrap_or_default();
        assert!(ran.trim().is_empty(), "{other}: nothing may run: {ran}");
    }
    assert!(
        stdout(&run_ok(&mut common::ck(&cfg, &["status"]))).contains("\nhealthy\n"),
        "kube-proxy back on node3"
    );

    // 8. Backup timers on the control-plane host, etcd and namespaces, into one store on the
    //    node: both started at once, both back up (one waits for the store's lock), the
    //    namespace backup read through the real API server with the kubeconfig the timer got.
    steps.enter("8. etcd and namespace backup timers on the control-plane host");
    let store = "file:///var/backups/clusterkit";
    for kind in ["etcd", "namespace"] {
        let mut c = clusterkit();
        c.arg("-f").arg(&cfg).args([
            "-o",
            "json",
            "backup",
            "install-timer",
            "--store",
            store,
            "--kind",
            kind,
        ]);
        if kind == "namespace" {
            c.arg("default");
        }
        let out = run_ok(&mut c);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "report is not JSON")));
        assert_eq!(report.as_array().map(|a| a.len()), Some(1), "{report:#}");
    }
    assert_eq!(
        ssh(
            &sb,
            "node1",
            "stat -c %a /etc/clusterkit/namespace-backup.conf; systemctl is-enabled clusterkit-backup.timer clusterkit-backup-namespaces.timer"
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["600", "enabled", "enabled"]
    );
    common::start_units(
        &sb,
        "node1",
        &[
            "clusterkit-backup.service",
            "clusterkit-backup-namespaces.service",
        ],
    );
    let list: Value = serde_json::from_str(&ssh(
        &sb,
        "node1",
        &format!("/usr/local/bin/clusterkit -o json backup list --store {store}"),
    ))
    .unwrap();
    let mut kinds: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or(""))
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["etcd", "namespace"], "{list:#}");
    let ns = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "namespace")
        .unwrap();
    assert_eq!(
        ns["details"]["namespaces"],
        serde_json::json!(["default"]),
        "{ns:#}"
    );
    assert_eq!(
        ns["details"]["resource_counts"]["deployments.apps"], 1,
        "the web Deployment is in it: {ns:#}"
    );

    // 9. A cluster restore under a running control plane: a backup taken from here, an object
    //    created after it, `restore etcd` (API servers stopped, etcd restored, API servers
    //    started and waited for): the API answers at once, the later object is gone, the
    //    Deployment is there. Last step: with etcd 3.4 the revision is not bumped, and the
    //    running controllers and kubelets are not restarted here.
    steps.enter("9. a cluster restore under a running control plane");
    let local_store = format!("file://{}", sb.dir().join("restore-store").display());
    let mut c = clusterkit();
    c.arg("-f")
        .arg(&cfg)
        .args(["-o", "json", "backup", "etcd", "--store", &local_store]);
    let out = run_ok(&mut c);
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // `status` with that store in cluster.yaml names the backup as the newest trusted one.
    let with_store = sb.dir().join("install-cluster-store.yaml");
    std::fs::write(
        &with_store,
        format!("{cfg_text}backup: {{ store: \"{local_store}\" }}\n"),
    )
    .unwrap();
    let mut c = status(&with_store);
    let out = run_ok(&mut c);
    let st: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "status is not JSON")));
    assert_eq!(st["backup"]["newest"]["id"], id.as_str(), "{st:#}");
    assert_eq!(st["backup"]["store"], local_store.as_str(), "{st:#}");
    kubectl(
        &kube_bin,
        &admin,
        &["create", "configmap", "after-backup", "--from-literal=a=b"],
    );
    let mut c = clusterkit();
    c.env(
        "CLUSTERKIT_ETCDCTL",
        tool("CLUSTERKIT_ETCDCTL", Path::new("/usr/bin/etcdctl")),
    )
    .arg("-f")
    .arg(&cfg)
    .args([
        "-o",
        "json",
        "restore",
        "etcd",
        &id,
        "--store",
        &local_store,
        "--yes",
    ]);
    let out = run_ok(&mut c);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "report is not JSON")));
    let restore_steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        restore_steps.contains(&"kube-apiserver ready"),
        "the restore did not wait for the API server: {report:#}"
    );
    assert!(
        report["revisions"].as_str().unwrap().contains("not bumped"),
        "{report:#}"
    );
    eprintln!(
        "restore under a running control plane: {:.1}s until the API server answered\n{}",
        report["seconds"].as_f64().unwrap(),
        serde_json::to_string(&report["steps"]).unwrap()
    );
    let (ok, text) = try_kubectl(&kube_bin, &admin, &["get", "configmap", "after-backup"]);
    assert!(
        !ok && text.contains("NotFound"),
        "after-backup survived the restore: {text}"
    );
    kubectl(&kube_bin, &admin, &["get", "deployment", "web"]);
    drop(sb);
}

/// The test workload: busybox httpd answering `hello-from-<pod name>` on 8080, 3 replicas kept
/// on distinct nodes by a topology spread constraint.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: default }
spec:
  replicas: 3
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector: { matchLabels: { app: web } }
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: docker.io/library/busybox:clusterkit
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"]
          ports: [{ containerPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: web-one, namespace: default }
spec:
  selector: { app: web, role: server }
  ports: [{ port: 80, targetPort: 8080 }]
"#;

/// Running `app=web` pods: (name, node, pod IP), sorted by node.
fn web_pods(kube_bin: &Path, admin: &Path) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&kubectl(
        kube_bin,
        admin,
        &["get", "pods", "-l", "app=web", "-o", "json"],
    ))
    .unwrap();
    let mut pods: Vec<(String, String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["status"]["podIP"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    pods.sort_by(|a, b| a.1.cmp(&b.1));
    pods
}

/// From inside pod `client`, GET `target` (ip:port) with `busybox nc` until the answer
/// contains `expect`; panics after 90 s.
fn fetch(kube_bin: &Path, admin: &Path, client: &str, target: &str, expect: &str) -> String {
    let (host, port) = target.rsplit_once(':').unwrap();
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}");
    let mut last = String::new();
    let ok = common::wait_until(Duration::from_secs(90), || {
        let (ok, out) = try_kubectl(
            kube_bin,
            admin,
            &["exec", client, "--", "sh", "-c", &script],
        );
        last = out;
        if ok && last.contains(expect) {
            true
        } else {
            std::thread::sleep(Duration::from_secs(2));
            false
        }
    });
    assert!(
        ok,
        "{client} fetching {target}: expected {expect:?}, last answer:\n{last}"
    );
    last
}

fn workloads(kube_bin: &Path, admin: &Path, work: &Path) {
    // Every node Ready.
    let mut last = String::new();
    let ready = common::wait_until(Duration::from_secs(180), || {
        let (_, out) = try_kubectl(
            kube_bin,
            admin,
            &[
                "get",
                "nodes",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#,
            ],
        );
        last = out;
        let mut v: Vec<&str> = last.split_whitespace().collect();
        v.sort();
        v == ["node1=True", "node2=True", "node3=True"] || {
            std::thread::sleep(Duration::from_secs(2));
            false
        }
    });
    assert!(ready, "every node Ready: {last}");

    // The Deployment spreads over the three nodes and reaches Running.
    let manifest = work.join("web.yaml");
    std::fs::write(&manifest, WEB).unwrap();
    kubectl(
        kube_bin,
        admin,
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    let mut pods = Vec::new();
    let spread = common::wait_until(Duration::from_secs(300), || {
        pods = web_pods(kube_bin, admin);
        let nodes: Vec<&str> = pods.iter().map(|p| p.1.as_str()).collect();
        nodes == ["node1", "node2", "node3"] || {
            std::thread::sleep(Duration::from_secs(2));
            false
        }
    });
    let (_, all) = try_kubectl(kube_bin, admin, &["get", "pods", "-o", "wide"]);
    assert!(spread, "3 web pods Running, one per node: {pods:?}\n{all}");
    let (_, deploy) = try_kubectl(kube_bin, admin, &["get", "deployment", "web"]);
    eprintln!("{all}\n{deploy}");

    // Pod-to-pod across nodes: every pod fetches from the pod on the next node.
    for i in 0..3 {
        let (client, _, _) = &pods[i];
        let (server, _, ip) = &pods[(i + 1) % 3];
        fetch(
            kube_bin,
            admin,
            client,
            &format!("{ip}:8080"),
            &format!("hello-from-{server}"),
        );
    }
    // `kubectl logs` reaches the kubelet on every node.
    for (name, node, _) in &pods {
        let out = kubectl(kube_bin, admin, &["logs", name]);
        assert!(out.contains("serving"), "logs of {name} on {node}: {out}");
    }

    // A ClusterIP Service in front of the pod on node1 answers from the pod on node3, which
    // shares no node with it (kube-proxy's iptables rules on node3, the route to node1).
    let (server, _, _) = &pods[0];
    let (client, _, _) = &pods[2];
    kubectl(
        kube_bin,
        admin,
        &["label", "--overwrite", "pod", server, "role=server"],
    );
    let ip = kubectl(
        kube_bin,
        admin,
        &[
            "get",
            "service",
            "web-one",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    fetch(
        kube_bin,
        admin,
        client,
        &format!("{}:80", ip.trim()),
        &format!("hello-from-{server}"),
    );

    // Deleting a pod takes its address out of the Service's endpoints.
    let endpoints = |name: &str| -> Vec<(String, String)> {
        let (ok, out) = try_kubectl(kube_bin, admin, &["get", "endpoints", name, "-o", "json"]);
        if !ok {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
            .map(|a| {
                (
                    a["ip"].as_str().unwrap_or("").to_string(),
                    a["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let mut eps = Vec::new();
    let all_in = common::wait_until(Duration::from_secs(60), || {
        eps = endpoints("web");
        pods.iter().all(|p| eps.iter().any(|e| e.0 == p.2)) || {
            std::thread::sleep(Duration::from_secs(1));
            false
        }
    });
    assert!(
        all_in,
        "every web pod in the endpoints: {eps:?} vs {pods:?}"
    );
    let (victim, _, victim_ip) = &pods[1];
    kubectl(kube_bin, admin, &["delete", "pod", victim, "--wait=false"]);
    let gone = common::wait_until(Duration::from_secs(120), || {
        eps = endpoints("web");
        // The address may come back only for another pod (a reused IP).
        !eps.iter()
            .any(|(ip, pod)| pod == victim || (ip == victim_ip && pod.is_empty()))
            || {
                std::thread::sleep(Duration::from_secs(1));
                false
            }
    });
    assert!(gone, "{victim} ({victim_ip}) out of the endpoints: {eps:?}");
    // ...and the Service keeps answering through the others.
    let ip = common::service_ip(kube_bin, admin, "web");
    fetch(kube_bin, admin, client, &format!("{ip}:80"), "hello-from-");
    // What an operator types first in a test pod: wget of the Service's page, plain and with
    // a timeout.
    let url = format!("http://{}/", ip.trim());
    for args in [
        vec!["wget", "-q", "-O", "-", url.as_str()],
        vec!["wget", "-q", "-T", "5", "-O", "-", url.as_str()],
    ] {
        let mut exec = vec!["exec", client.as_str(), "--"];
        exec.extend(&args);
        let page = kubectl(kube_bin, admin, &exec);
        assert!(page.contains("hello-from-"), "{args:?}: {page}");
    }
}
