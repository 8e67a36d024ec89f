//! `kubernetes.control_plane_mode: static-pod` for real, on a 3-node cluster with Kubernetes
//! v1.20.2: the offline bundle carries the control-plane images `bundle build` made from the
//! bundle's own binaries (no registry anywhere); `clusterkit install` runs kube-apiserver,
//! kube-controller-manager, kube-scheduler and etcd on node1 as static pods (kubeadm's
//! manifests in /etc/kubernetes/manifests, the kubelet started before them), etcd's other two
//! members (node2, node3: etcd hosts without the control plane) under systemd, as kubeadm's
//! external etcd; the readiness report is green (every node Ready, pod-to-pod across every
//! pair of nodes, the probe Service through kube-proxy); containerd on node1 runs the four
//! containers from exactly the images the bundle holds (same manifest digest), the API lists
//! their mirror pods, node1 has no etcd unit or package; a rerun changes nothing; the same
//! cluster.yaml switched to `control_plane_mode: systemd` is refused in preflight, naming
//! node1, kube-apiserver and etcd, with node1 left as it was; `certs renew apiserver
//! etcd-server` recreates node1's static pods (manifest moved out and back, as kubeadm
//! documents) and the API server and etcd then present the new serials, and a rerun is green
//! with nothing changed; `backup etcd` and then `restore etcd` (node1's member stopped and
//! started through its manifest) bring back what was there at the backup and not what came
//! after, with the static pods ready again and a green readiness report. kube-proxy is
//! kubeadm's DaemonSet (its ConfigMap, the bundle's kube-proxy image) with a ready pod on
//! every node and no kube-proxy unit. kubeadm v1.20.2 of
//! the same build, run on node1, recognises the cluster: `certs check-expiration` reads
//! kubeadm-config and lists the certificates with the expiry clusterkit reads, `upgrade plan`
//! passes its health checks, `token create --print-join-command` prints clusterkit's endpoint
//! and CA hash with a token whose Secret exists, and that command passes kubeadm's discovery;
//! a fourth node, prepared by clusterkit (node preparation, containerd, images, pod network)
//! but joined by kubeadm alone with that command, becomes Ready. `reset` then leaves nothing of
//! the control plane on node1 (no container running, no manifest, nothing listening on its
//! ports, etcd's data moved aside) and a second reset has nothing to do.
//!
//! Debian 12 has no `crictl` (cri-tools is not packaged), so the running containers are read
//! with containerd's own `ctr` in the CRI namespace (`k8s.io`), by the container-name label
//! the kubelet gives them.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle and
//! the Kubernetes binaries; fails with the reason when one is missing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clusterkit_installer::images;
use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{
    changed_tasks, clusterkit, describe, install_json, install_timed, run_fail, ssh, stderr,
    stdout, try_kubectl,
};

/// The images in a node's containerd (CRI namespace): name → manifest digest.
fn node_images(sb: &SandboxGuard, node: &str) -> BTreeMap<String, String> {
    common::node_images(sb, node).into_iter().collect()
}

/// `kubectl -n kube-system get WHAT…`: (success, output).
fn kube_system_get(kube_bin: &Path, admin: &Path, what: &[&str]) -> (bool, String) {
    let args: Vec<&str> = ["-n", "kube-system", "get"]
        .into_iter()
        .chain(what.iter().copied())
        .collect();
    try_kubectl(kube_bin, admin, &args)
}

/// Waits until kube-proxy's DaemonSet has a Running, Ready pod on each of `nodes` and none
/// elsewhere, every one from the bundle's kube-proxy image.
fn kube_proxy_pods_ready(kube_bin: &Path, admin: &Path, nodes: &[&str]) {
    let want: Vec<String> = nodes
        .iter()
        .map(|n| format!("{n} Running True registry.k8s.io/kube-proxy:v1.20.2"))
        .collect();
    common::poll(
        Duration::from_secs(120),
        "a ready kube-proxy pod on every node",
        || {
            let (ok, out) = kube_system_get(
                kube_bin,
                admin,
                &[
                    "pods",
                    "-l",
                    "k8s-app=kube-proxy",
                    "-o",
                    "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.status.conditions[?(@.type==\"Ready\")].status} {.spec.containers[0].image}{\"\\n\"}{end}",
                ],
            );
            let mut got: Vec<String> = out.lines().map(str::to_string).collect();
            got.sort();
            (ok && got == want).then_some(()).ok_or(out)
        },
    );
}

/// Waits until node1's four static pods show through the API (their mirror pods) Running and
/// Ready. The kubelet creates mirror pods on its next pod sync after its Node registered (up
/// to a minute).
fn mirror_pods_ready(kube_bin: &Path, admin: &Path) {
    for container in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let pod = format!("{container}-node1");
        common::poll(Duration::from_secs(150), &pod, || {
            let (ok, out) = kube_system_get(
                kube_bin,
                admin,
                &[
                    "pod",
                    &pod,
                    "-o",
                    "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            );
            (ok && out.trim() == "Running True")
                .then_some(())
                .ok_or(out)
        });
    }
}

/// `2027-12-07T05:40:12Z` (check-expiration's `expires`) as kubeadm prints an expiry in UTC:
/// `Dec 07, 2027 05:40 UTC`.
fn kubeadm_date(rfc3339: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, time) = rfc3339
        .split_once('T')
        .unwrap_or_else(|| panic!("{rfc3339}"));
    let d: Vec<&str> = date.split('-').collect();
    let month: usize = d[1].parse().unwrap();
    format!(
        "{} {}, {} {} UTC",
        MONTHS[month - 1],
        d[2],
        d[0],
        &time[..5]
    )
}

/// The rows of `kubeadm certs check-expiration`: (certificates, CAs), each name → expiry
/// as printed (`Dec 07, 2027 05:40 UTC`).
fn kubeadm_expiry_rows(out: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut certs, mut cas) = (BTreeMap::new(), BTreeMap::new());
    // Which table the lines belong to: none yet (kubeadm's own progress lines), then each.
    let mut in_cas = None;
    for line in out.lines() {
        if line.starts_with("CERTIFICATE AUTHORITY") {
            in_cas = Some(true);
            continue;
        }
        if line.starts_with("CERTIFICATE ") {
            in_cas = Some(false);
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let row = (f.len() >= 6).then(|| (f[0].to_string(), f[1..6].join(" ")));
        match (in_cas, row) {
            (Some(false), Some((name, date))) => certs.insert(name, date),
            (Some(true), Some((name, date))) => cas.insert(name, date),
            _ => None,
        };
    }
    (certs, cas)
}

/// The words of a `kubeadm join` command line: (endpoint, token, CA certificate hash).
fn join_parts(line: &str) -> (String, String, String) {
    let w: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        w.iter()
            .position(|x| *x == flag)
            .and_then(|i| w.get(i + 1))
            .unwrap_or_else(|| panic!("no {flag} in {line:?}"))
            .to_string()
    };
    assert_eq!(w.get(..2), Some(&["kubeadm", "join"][..]), "{line:?}");
    (
        w[2].to_string(),
        after("--token"),
        after("--discovery-token-ca-cert-hash"),
    )
}

/// kubeadm of the same build on node1 (the control-plane host) finds the cluster it would
/// have made: `certs check-expiration` reads the kubeadm-config ConfigMap (no fallback to
/// defaults) and lists every certificate of kubeadm's external-etcd control plane with the
/// expiry clusterkit's own check-expiration reads on node1; `upgrade plan` passes its
/// health checks (a Job run on the cluster, Ready control plane, the static pod manifests)
/// and reads the versions; `token create --print-join-command` makes a bootstrap-token Secret
/// and prints the endpoint and CA hash clusterkit prints, and that command passes kubeadm's
/// discovery on node3 (`join phase preflight`: the token signs cluster-info, the CA hash
/// matches, the token reads kubeadm-config and the kubelet's ConfigMap). Returns that command.
fn kubeadm_recognises_the_cluster(
    sb: &SandboxGuard,
    cfg: &Path,
    kube_bin: &Path,
    admin: &Path,
) -> String {
    for node in ["node1", "node3"] {
        common::scp_to(
            sb,
            node,
            &kube_bin.join("kubeadm"),
            "/usr/local/bin/kubeadm",
        );
    }

    // certs check-expiration, against clusterkit's reading of node1's files.
    let out = ssh(sb, "node1", "TZ=UTC kubeadm certs check-expiration 2>&1");
    assert!(
        out.contains("[check-expiration] Reading configuration from the cluster")
            && !out.contains("Falling back to default configuration")
            && !out.contains("!MISSING!"),
        "{out}"
    );
    let (certs, cas) = kubeadm_expiry_rows(&out);
    assert_eq!(
        certs.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "admin.conf",
            "apiserver",
            "apiserver-kubelet-client",
            "controller-manager.conf",
            "front-proxy-client",
            "scheduler.conf"
        ],
        "{out}"
    );
    assert_eq!(
        cas.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ca", "front-proxy-ca"],
        "{out}"
    );
    let ours = common::json_of(&mut common::ck(
        cfg,
        &[
            "-o",
            "json",
            "certs",
            "check-expiration",
            "--hosts",
            "node1",
        ],
    ));
    for (name, date) in certs.iter().chain(&cas) {
        let row = ours["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == "node1" && r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("clusterkit shows no node1/{name}: {ours:#}"));
        assert_eq!(row["status"], "ok", "{row:#}");
        assert_eq!(row["in_sync"], true, "{row:#}");
        assert_eq!(
            &kubeadm_date(row["expires"].as_str().unwrap()),
            date,
            "{name}: kubeadm says {date}, clusterkit {row:#}"
        );
    }

    // upgrade plan, offline: the target given as kubeadm documents it (`upgrade plan
    // [version]`, no dl.k8s.io lookup). The sandbox has no CoreDNS (no image), whose
    // migration checks then have no version to start from: those two are skipped by name.
    let plan = ssh(
        sb,
        "node1",
        "kubeadm upgrade plan v1.20.2 --ignore-preflight-errors=CoreDNSUnsupportedPlugins,CoreDNSMigration 2>&1",
    );
    for want in [
        "[upgrade/config] Reading configuration from the cluster",
        "[upgrade] Running cluster health checks",
        "[upgrade/versions] Cluster version: v1.20.2",
        "[upgrade/versions] kubeadm version: v1.20.2",
    ] {
        assert!(plan.contains(want), "no {want:?} in:\n{plan}");
    }
    assert!(!plan.contains("[ERROR"), "{plan}");

    // token create --print-join-command: the same endpoint and CA hash as clusterkit's.
    let line = ssh(sb, "node1", "kubeadm token create --print-join-command");
    let line = line
        .lines()
        .find(|l| l.starts_with("kubeadm join"))
        .unwrap_or_else(|| panic!("{line}"));
    let (endpoint, token, hash) = join_parts(line);
    let ck_line = stdout(&common::run_ok(&mut common::ck(
        cfg,
        &["token", "create", "--print-join-command"],
    )));
    let (ck_endpoint, _, ck_hash) = join_parts(ck_line.trim());
    assert_eq!((&endpoint, &hash), (&ck_endpoint, &ck_hash), "{line}");
    let (id, secret) = token.split_once('.').unwrap();
    let stored = common::kubectl(
        kube_bin,
        admin,
        &[
            "-n",
            "kube-system",
            "get",
            "secret",
            &format!("bootstrap-token-{id}"),
            "-o",
            "jsonpath={.type} {.data.token-secret}",
        ],
    );
    let decoded = stdout(&common::run_ok(std::process::Command::new("sh").args([
        "-c",
        &format!(
            "printf %s '{}' | base64 -d",
            stored.split_whitespace().nth(1).unwrap_or("")
        ),
    ])));
    assert_eq!(
        (stored.split_whitespace().next(), decoded.as_str()),
        (Some("bootstrap.kubernetes.io/token"), secret),
        "bootstrap-token-{id}"
    );
    let pre = ssh(
        sb,
        "node3",
        &format!(
            "kubeadm join phase preflight {} --ignore-preflight-errors=all 2>&1",
            line.trim_start_matches("kubeadm join ")
        ),
    );
    assert!(
        pre.contains("[preflight] Reading configuration from the cluster"),
        "{pre}"
    );
    line.to_string()
}

/// What kubeadm leaves to the operator, done by clusterkit on node4 (listed in `cfg4` only):
/// the node preparation, containerd, the images and the pod network (node4's CNI config and
/// slice, and every node's route to it); then kubeadm's side on node4 as an operator does it
/// (kubeadm and kubelet in /usr/local/bin, the kubeadm package's kubelet unit) and `join`,
/// the command kubeadm printed on node1. node4 registers through TLS bootstrap with kubeadm's
/// files and becomes Ready.
fn join_with_kubeadm(sb: &SandboxGuard, cfg4: &Path, kube_bin: &Path, admin: &Path, join: &str) {
    for phase in ["prepare", "runtime", "images"] {
        common::run_ok(&mut common::ck(
            cfg4,
            &["install", "--phase", phase, "--hosts", "node4"],
        ));
    }
    common::run_ok(&mut common::ck(cfg4, &["install", "--phase", "network"]));
    for bin in ["kubeadm", "kubelet"] {
        common::scp_to(
            sb,
            "node4",
            &kube_bin.join(bin),
            &format!("/usr/local/bin/{bin}"),
        );
    }
    common::kubeadm_kubelet_unit(sb, "node4");
    let out = ssh(
        sb,
        "node4",
        &format!("{join} --ignore-preflight-errors=all 2>&1"),
    );
    assert!(out.contains("This node has joined the cluster"), "{out}");
    common::poll(Duration::from_secs(180), "node4 Ready", || {
        let (ok, out) = try_kubectl(
            kube_bin,
            admin,
            &[
                "get",
                "node",
                "node4",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        );
        (ok && out.trim() == "True").then_some(()).ok_or(out)
    });
    // The DaemonSet runs kube-proxy on the node kubeadm joined too.
    kube_proxy_pods_ready(kube_bin, admin, &["node1", "node2", "node3", "node4"]);
}

#[test]
fn static_pod_control_plane_on_three_nodes() {
    let steps = common::Steps::new("install_static_pod");
    let kube_bin = common::kube_bin();
    // A name of this process's own: runs of this test at once must not share one sandbox.
    let name = format!("sp{}", std::process::id() % 1_000_000);
    // node4 is installed by no one but kubeadm (step 9): clusterkit's cluster.yaml lists it
    // only for the node preparation kubeadm leaves to the operator.
    let sb = SandboxGuard::up(UpOptions::new(&name, 4))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();

    steps.enter("1. bundle with the control-plane images");
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, Some(&kube_bin), &common::CLUSTER_PACKAGES);
    let in_bundle = bundle.join("images");
    let manifest = images::load(&in_bundle).unwrap();
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    assert!(base.contains("control_plane_mode: systemd"), "{base}");
    let base = format!(
        "{}packages: {{ bundle: {} }}\n",
        base.replace(
            "control_plane_mode: systemd",
            "control_plane_mode: static-pod"
        ),
        bundle.display()
    );
    // The cluster is node1..node3; a second cluster.yaml (same state directory) adds node4.
    let node4 = base.find("  - name: node4\n").expect("node4 listed");
    let hosts_end = base.find("kubernetes:").expect("kubernetes section");
    assert!(node4 < hosts_end, "{base}");
    let cfg = sb.dir().join("static-pod.yaml");
    std::fs::write(&cfg, format!("{}{}", &base[..node4], &base[hosts_end..])).unwrap();
    let cfg4 = sb.dir().join("static-pod-4.yaml");
    std::fs::write(&cfg4, &base).unwrap();
    let admin = sb.dir().join("admin.conf");

    steps.enter("2. install, static-pod mode");
    let events = work.path().join("first.jsonl");
    let (summary, took) = install_timed(&cfg, &["--events", events.to_str().unwrap()]);
    eprintln!(
        "install (all phases, 3 nodes, static-pod): {:.1}s",
        took.as_secs_f64()
    );
    for n in common::NODES {
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }
    let r = &summary["readiness"];
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["nodes"].as_array().map(Vec::len), Some(3), "{r:#}");
    // 6 pod-to-pod pairs + the probe Service from each of the 3 nodes.
    assert_eq!(r["probes"].as_array().map(Vec::len), Some(9), "{r:#}");

    steps.enter("3. the four containers on node1, from the bundle's images");
    let running = common::poll(
        Duration::from_secs(90),
        "the four control-plane containers running on node1",
        || {
            let r = common::running_containers(&sb, "node1");
            if [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ]
            .iter()
            .all(|c| r.contains_key(*c))
            {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    let imported = node_images(&sb, "node1");
    for (container, image) in [
        ("etcd", "registry.k8s.io/etcd:3.4.13-0"),
        ("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.20.2"),
        (
            "kube-controller-manager",
            "registry.k8s.io/kube-controller-manager:v1.20.2",
        ),
        ("kube-scheduler", "registry.k8s.io/kube-scheduler:v1.20.2"),
    ] {
        assert_eq!(
            running.get(container).map(String::as_str),
            Some(image),
            "node1 runs {running:#?}"
        );
        assert_eq!(
            imported.get(image),
            Some(&common::image_digest(&manifest, image)),
            "node1's containerd holds {image} as the bundle built it: {imported:#?}"
        );
    }
    // The API shows each static pod (its mirror pod) running and ready on node1.
    mirror_pods_ready(&kube_bin, &admin);
    // etcd on node1 is the static pod only: no unit running, no package installed.
    let unit = ssh(
        &sb,
        "node1",
        "systemctl is-active etcd || true; test -e /usr/bin/etcd && echo binary || true",
    );
    assert_eq!(unit.trim(), "inactive", "{unit}");
    // node2 (worker and external etcd member) imported no control-plane image, only
    // kube-proxy's, which kubeadm's DaemonSet runs on every node.
    let node2 = ssh(&sb, "node2", "ctr -n k8s.io images ls -q");
    assert!(!node2.contains("kube-apiserver"), "{node2}");
    assert!(!node2.contains("etcd"), "{node2}");
    // kube-proxy is kubeadm's DaemonSet: a ready pod on every node, from the bundle's image,
    // and no kube-proxy unit anywhere (the probe Service of the readiness report went through
    // these pods' rules).
    kube_proxy_pods_ready(&kube_bin, &admin, &common::NODES);
    for n in common::NODES {
        let images = node_images(&sb, n);
        let image = "registry.k8s.io/kube-proxy:v1.20.2";
        assert_eq!(
            images.get(image),
            Some(&common::image_digest(&manifest, image)),
            "{n}: {images:#?}"
        );
        let unit = ssh(
            &sb,
            n,
            "systemctl is-active kube-proxy || true; test -e /etc/systemd/system/kube-proxy.service && echo unit-file || true",
        );
        assert_eq!(unit.trim(), "inactive", "{n}: {unit}");
    }
    assert_eq!(
        ssh(&sb, "node2", "systemctl is-active etcd").trim(),
        "active"
    );

    steps.enter("4. rerun: nothing changes");
    let events = work.path().join("rerun.jsonl");
    let (again, took) = install_timed(&cfg, &["--events", events.to_str().unwrap()]);
    eprintln!(
        "rerun (all phases, 3 nodes, static-pod): {:.1}s",
        took.as_secs_f64()
    );
    let changed = changed_tasks(&events);
    for n in common::NODES {
        assert_eq!(
            again["hosts"][n]["changed"], 0,
            "{n}: changed on rerun: {changed:#?}"
        );
        assert_eq!(again["hosts"][n]["failed"], 0, "{again:#}");
    }
    assert_eq!(again["readiness"]["ok"], true, "{again:#}");

    steps.enter("5. kubeadm's own commands on node1 recognise the cluster");
    let join = kubeadm_recognises_the_cluster(&sb, &cfg, &kube_bin, &admin);

    steps.enter("6. switching to systemd mode is refused before anything changes anywhere");
    let systemd = sb.dir().join("systemd.yaml");
    std::fs::write(
        &systemd,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "control_plane_mode: static-pod",
            "control_plane_mode: systemd",
        ),
    )
    .unwrap();
    let mut c = clusterkit();
    c.arg("-f").arg(&systemd).args(["install"]);
    let out = run_fail(&mut c);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("node1")
            && text.contains("kube-apiserver already runs in static-pod mode here")
            && text.contains("etcd already runs in static-pod mode here")
            && text.contains("clusterkit reset"),
        "{}",
        describe(
            &c,
            &out,
            "the refusal names the host, the components and the way out"
        )
    );
    let after = ssh(
        &sb,
        "node1",
        "ls /etc/kubernetes/manifests; ls /etc/systemd/system | grep -E '^(kube-apiserver|etcd)' || true",
    );
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        [
            "etcd.yaml",
            "kube-apiserver.yaml",
            "kube-controller-manager.yaml",
            "kube-scheduler.yaml"
        ],
        "node1 unchanged"
    );
    // Nor did the other nodes go on in systemd mode (it would have given them a kube-proxy
    // unit beside the DaemonSet's pods).
    for n in ["node2", "node3"] {
        let unit = ssh(
            &sb,
            n,
            "test -e /etc/systemd/system/kube-proxy.service && echo unit-file || true",
        );
        assert_eq!(unit.trim(), "", "{n}: the refused switch changed it");
    }

    steps.enter("7. certs renew: the static pods are recreated and serve the new certificates");
    let v = common::json_of(&mut common::ck(
        &cfg,
        &["-o", "json", "certs", "renew", "apiserver", "etcd-server"],
    ));
    let node1 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "node1")
        .unwrap_or_else(|| panic!("{v:#}"))
        .clone();
    assert_eq!(node1["status"], "ok", "{v:#}");
    let mut restarted: Vec<&str> = node1["restarted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    restarted.sort();
    assert_eq!(
        restarted,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler"
        ],
        "{v:#}"
    );
    let serial_of = |name: &str| {
        v["renewed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not renewed: {v:#}"))["new_serial"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let state = sb.dir().join(format!("{name}-state"));
    let node1_ip = sb.node("node1").unwrap().address.to_string();
    // What each server now presents over TLS (etcd asks for a client certificate: the
    // healthcheck client's).
    let presented = |port: u16, client: &str| {
        let out = common::run_ok(std::process::Command::new("sh").args([
            "-c",
            &format!(
                "openssl s_client -connect {node1_ip}:{port} {client} </dev/null 2>/dev/null | openssl x509 -noout -serial"
            ),
        ]));
        common::stdout(&out).trim().to_string()
    };
    assert_eq!(
        presented(6443, ""),
        format!("serial={}", serial_of("apiserver"))
    );
    let hc = format!(
        "-cert {} -key {}",
        state.join("pki/etcd/healthcheck-client.crt").display(),
        state.join("pki/etcd/healthcheck-client.key").display()
    );
    assert_eq!(
        presented(2379, &hc),
        format!("serial={}", serial_of("etcd-server/node1"))
    );
    // The cluster is whole again: the static pods ready, the readiness report of a rerun
    // green, nothing changed.
    mirror_pods_ready(&kube_bin, &admin);
    let events = work.path().join("after-renew.jsonl");
    let after = install_json(&cfg, &["--events", events.to_str().unwrap()]);
    let changed = changed_tasks(&events);
    for n in common::NODES {
        assert_eq!(after["hosts"][n]["failed"], 0, "{after:#}");
        assert_eq!(
            after["hosts"][n]["changed"], 0,
            "{n}: changed after the renewal: {changed:#?}"
        );
    }
    assert_eq!(after["readiness"]["ok"], true, "{after:#}");

    steps.enter("8. backup etcd, then restore etcd with node1's member a static pod");
    let store = format!("file://{}", sb.dir().join("restore-store").display());
    common::kubectl(
        &kube_bin,
        &admin,
        &["create", "configmap", "before-backup", "--from-literal=a=b"],
    );
    let backup = common::json_of(&mut common::ck(
        &cfg,
        &["-o", "json", "backup", "etcd", "--store", &store],
    ));
    let id = backup["id"].as_str().unwrap().to_string();
    common::kubectl(
        &kube_bin,
        &admin,
        &["create", "configmap", "after-backup", "--from-literal=a=b"],
    );
    let mut c = common::ck(
        &cfg,
        &[
            "-o", "json", "restore", "etcd", &id, "--store", &store, "--yes",
        ],
    );
    c.env(
        "CLUSTERKIT_ETCDCTL",
        common::tool("CLUSTERKIT_ETCDCTL", Path::new("/usr/bin/etcdctl")),
    );
    let report = common::json_of(&mut c);
    let restored_at = Instant::now();
    let restore_steps = report["steps"].to_string();
    assert!(
        restore_steps.contains("kube-apiserver ready"),
        "the restore did not wait for the API server: {report:#}"
    );
    // The controller manager and scheduler were recreated once the API server was back (the
    // restored data rolled their leader leases back): their manifests are back, nothing is
    // left aside.
    assert!(
        restore_steps.contains("start controller manager, scheduler"),
        "{report:#}"
    );
    let manifests = common::ssh(
        &sb,
        "node1",
        "ls /etc/kubernetes/manifests; ls /etc/kubernetes | grep -c restore-hold || true",
    );
    for m in [
        "etcd.yaml",
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
    ] {
        assert!(manifests.contains(m), "{m} not back: {manifests}");
    }
    assert_eq!(manifests.lines().last(), Some("0"), "{manifests}");
    let (ok, text) = try_kubectl(&kube_bin, &admin, &["get", "configmap", "after-backup"]);
    assert!(
        !ok && text.contains("NotFound"),
        "after-backup survived the restore: {text}"
    );
    common::kubectl(&kube_bin, &admin, &["get", "configmap", "before-backup"]);
    // node1's etcd is the static pod again (its manifest back in place), with the others a
    // healthy 3-member cluster: the readiness report of a rerun says so. The restored data
    // holds the mirror pods and leases as they were at the backup, so wait for what only
    // running controllers do: renew their leader leases.
    mirror_pods_ready(&kube_bin, &admin);
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let renew_time = || common::lease_field(&kube_bin, &admin, lease, "renewTime");
        let first = renew_time().1;
        common::poll(
            Duration::from_secs(240),
            &format!("lease {lease} renewed"),
            || match renew_time() {
                (true, now) if now != first => Ok(()),
                (_, now) => Err(format!("renewTime still {now:?}")),
            },
        );
        eprintln!(
            "{lease}: lease renewed {:.1}s after the restore returned",
            restored_at.elapsed().as_secs_f64()
        );
    }
    let after = install_json(&cfg, &[]);
    assert_eq!(after["readiness"]["ok"], true, "{after:#}");

    steps.enter("9. node4 joins with the command kubeadm printed and becomes Ready");
    join_with_kubeadm(&sb, &cfg4, &kube_bin, &admin, &join);

    steps.enter("10. reset: node1's static pods are gone with the kubelet, nothing listens");
    let v = common::json_of(&mut common::ck(&cfg, &["-o", "json", "reset", "--yes"]));
    let node1 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "node1")
        .unwrap_or_else(|| panic!("no node1 in {v:#}"));
    assert_eq!(node1["status"], "ok", "{v:#}");
    // Nothing of the control plane runs or answers on node1 afterwards: no container task in
    // containerd's CRI namespace, no manifest, no listener on the API server's, etcd's, the
    // controller manager's or the scheduler's port.
    let left = ssh(
        &sb,
        "node1",
        "ctr -n k8s.io tasks ls | grep -c RUNNING | sed 's/^/running /'; \
         [ -e /etc/kubernetes/manifests ] && echo manifests; \
         for p in 6443 2379 2380 10257 10259; do \
           (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && echo \"listening $p\"; done; \
         ls -d /var/lib/etcd.reset-*/member 2>/dev/null | sed 's/^/moved /'; true",
    );
    assert!(left.contains("running 0"), "{left}\n{v:#}");
    assert!(!left.contains("manifests"), "{left}");
    assert!(!left.contains("listening"), "{left}");
    assert!(left.contains("moved /var/lib/etcd.reset-"), "{left}");
    // A second reset finds nothing to do.
    let out = common::run_ok(&mut common::ck(&cfg, &["reset", "--yes"]));
    assert!(
        stdout(&out).contains("node1: nothing to do"),
        "{}",
        stdout(&out)
    );
}
