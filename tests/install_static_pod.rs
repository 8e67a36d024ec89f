//! `kubernetes.control_plane_mode: static-pod` for real, on a 3-node sandbox with Kubernetes
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
//! after, with the static pods ready again and a green readiness report.
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
use std::time::Duration;

use clusterkit_installer::images;
use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{
    changed_tasks, clusterkit, describe, install_json, install_timed, run_fail, ssh, stderr,
    stdout, try_kubectl,
};
use serde_json::Value;

/// The control-plane containers the kubelet runs on a node (container name → image name),
/// read from containerd's CRI namespace: running tasks, and each one's kubelet label.
fn running_containers(sb: &SandboxGuard, node: &str) -> BTreeMap<String, String> {
    let tasks = ssh(sb, node, "ctr -n k8s.io tasks ls");
    let mut out = BTreeMap::new();
    for line in tasks.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[2] != "RUNNING" {
            continue;
        }
        // A container the kubelet replaced between the two reads is gone: skip it (the
        // caller reads again until every component shows).
        let c = common::ssh_cmd(sb, node, &format!("ctr -n k8s.io containers info {}", f[0]))
            .output()
            .unwrap();
        if !c.status.success() && stderr(&c).contains("not found") {
            continue;
        }
        let info: Value =
            serde_json::from_str(&stdout(&c)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&c)));
        if let Some(name) = info["Labels"]["io.kubernetes.container.name"].as_str() {
            out.insert(
                name.to_string(),
                info["Image"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    out
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
            let (ok, out) = try_kubectl(
                kube_bin,
                admin,
                &[
                    "-n",
                    "kube-system",
                    "get",
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

#[test]
fn static_pod_control_plane_on_three_nodes() {
    let steps = common::Steps::new("install_static_pod");
    let kube_bin = common::kube_bin();
    // A name of this process's own: runs of this test at once must not share one sandbox.
    let name = format!("sp{}", std::process::id() % 1_000_000);
    let sb = SandboxGuard::up(UpOptions::new(&name, 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();

    steps.enter("1. bundle with the control-plane images");
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, Some(&kube_bin), &common::CLUSTER_PACKAGES);
    let in_bundle = bundle.join("images");
    let manifest = images::load(&in_bundle).unwrap();
    let digest_of = |image: &str| {
        manifest
            .images
            .iter()
            .find(|i| i.name == image)
            .unwrap_or_else(|| panic!("{image} not in the bundle: {manifest:#?}"))
            .digest
            .clone()
    };
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    assert!(base.contains("control_plane_mode: systemd"), "{base}");
    let cfg = sb.dir().join("static-pod.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}packages: {{ bundle: {} }}\n",
            base.replace(
                "control_plane_mode: systemd",
                "control_plane_mode: static-pod"
            ),
            bundle.display()
        ),
    )
    .unwrap();
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
            let r = running_containers(&sb, "node1");
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
    let imported: BTreeMap<String, String> = ssh(&sb, "node1", "ctr -n k8s.io images ls")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect();
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
            Some(&digest_of(image)),
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
    // node2 (worker and external etcd member) imported no control-plane image.
    let node2 = ssh(&sb, "node2", "ctr -n k8s.io images ls -q");
    assert!(!node2.contains("kube-apiserver"), "{node2}");
    assert!(!node2.contains("etcd"), "{node2}");
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

    steps.enter("5. switching to systemd mode is refused before anything changes");
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

    steps.enter("6. certs renew: the static pods are recreated and serve the new certificates");
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
    let after = install_json(&cfg, &[]);
    for n in common::NODES {
        assert_eq!(after["hosts"][n]["failed"], 0, "{after:#}");
        assert_eq!(after["hosts"][n]["changed"], 0, "{after:#}");
    }
    assert_eq!(after["readiness"]["ok"], true, "{after:#}");

    steps.enter("7. backup etcd, then restore etcd with node1's member a static pod");
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
    let restore_steps = report["steps"].to_string();
    assert!(
        restore_steps.contains("kube-apiserver ready"),
        "the restore did not wait for the API server: {report:#}"
    );
    let (ok, text) = try_kubectl(&kube_bin, &admin, &["get", "configmap", "after-backup"]);
    assert!(
        !ok && text.contains("NotFound"),
        "after-backup survived the restore: {text}"
    );
    common::kubectl(&kube_bin, &admin, &["get", "configmap", "before-backup"]);
    // node1's etcd is the static pod again (its manifest back in place), with the others a
    // healthy 3-member cluster: the readiness report of a rerun says so. The restored data
    // holds the mirror pods and leases as they were at the backup, so wait for what only
    // running controllers do: renew their leader leases (a controller manager or scheduler
    // that lost its lease to the restore exits, and the kubelet restarts it with back-off).
    mirror_pods_ready(&kube_bin, &admin);
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let renew_time = || {
            try_kubectl(
                &kube_bin,
                &admin,
                &[
                    "-n",
                    "kube-system",
                    "get",
                    "lease",
                    lease,
                    "-o",
                    "jsonpath={.spec.renewTime}",
                ],
            )
        };
        let first = renew_time().1;
        common::poll(
            Duration::from_secs(240),
            &format!("lease {lease} renewed"),
            || match renew_time() {
                (true, now) if now != first => Ok(()),
                (_, now) => Err(format!("renewTime still {now:?}")),
            },
        );
    }
    let after = install_json(&cfg, &[]);
    assert_eq!(after["readiness"]["ok"], true, "{after:#}");
}
