//! `clusterkit node add` / `node remove` on a 4-node sandbox, all real: Debian 12 nspawn nodes
//! over SSH, Debian's etcd 3.4 from the offline bundle, Kubernetes v1.20.2 built from Debian's
//! source package (`CLUSTERKIT_KUBE_BIN_DIR`), control plane as systemd units, host-gw pods.
//!
//! The cluster is installed from a cluster.yaml listing node1..node3 only; node4 is then listed
//! (roles worker and etcd) and `node add node4` runs: its readiness report says node4 is Ready
//! and its pods reach and are reached from every other node's; it becomes a
//! started etcd member (4 members, all healthy), every other node routes its pod slice and
//! resolves its name (/etc/hosts), and
//! node1..node3's etcd, kubelet and kube-proxy were not restarted, node1's kube-apiserver only
//! to take node4 into its `--etcd-servers`. Adding a node
//! that is already one is refused. Removing node1 (the only control-plane host) is refused.
//! A busybox httpd Deployment allowed on node3 and node4 (placed on node4 while node3 is
//! cordoned) behind a ClusterIP Service, a client pod on node1 and a DaemonSet are created;
//! `node remove node4 --check` reports the eviction and changes nothing; `node remove node4
//! --yes` evicts the Deployment's pod (rescheduled on node3, and the Service answers from it)
//! and skips the DaemonSet's, removes the etcd member (3 left, healthy), deletes the Node,
//! removes the route to node4's slice from the others, and resets node4; again the other nodes'
//! services were not restarted. Finally the command `token create --print-join-command`
//! prints joins the reset node4 with the real kubeadm v1.20.2 (`join phase preflight`, then the
//! whole `kubeadm join`): kubeadm's discovery, the kubeadm-config and kubelet-config-1.20
//! ConfigMaps and their RBAC work. Wall times are printed.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle,
//! etcdctl and the Kubernetes binaries; fails with the reason when one is missing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{
    apiserver_etcd_servers, ck, describe, kubectl, kubectl_cmd, poll, run_fail, run_ok, ssh,
    stderr, stdout, try_kubectl,
};
use serde_json::Value;

const OLD: [&str; 3] = ["node1", "node2", "node3"];

/// Runs a clusterkit command that must succeed and print JSON; returns it and the wall time.
fn json_ok(c: &mut Command) -> (Value, Duration) {
    let start = Instant::now();
    let out = run_ok(c);
    let took = start.elapsed();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(c, &out, "expected JSON")));
    (v, took)
}

/// When each long-running service of a node last (re)started: restarts show up as changes.
fn started_at(sb: &SandboxGuard, node: &str) -> String {
    ssh(
        sb,
        node,
        "for u in etcd kubelet kube-proxy kube-apiserver; do echo \"$u $(systemctl show -p ActiveEnterTimestampMonotonic --value $u)\"; done",
    )
}

/// node4's pod slice from the network state, and the routes to it on `node`.
fn routes_to(sb: &SandboxGuard, node: &str, slice: &str) -> String {
    ssh(sb, node, &format!("ip route show {slice}"))
}

/// From the client pod on node1, GETs `target` (ip:port) with `busybox nc` (Debian 12's static
/// busybox `wget` crashes here) until the answer contains `expect`.
fn fetch(kube_bin: &Path, admin: &Path, target: &str, expect: &str) -> String {
    let (host, port) = target.rsplit_once(':').unwrap();
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}");
    poll(
        Duration::from_secs(120),
        &format!("{expect} from {target}"),
        || {
            let (ok, out) = try_kubectl(
                kube_bin,
                admin,
                &["exec", "client", "--", "sh", "-c", &script],
            );
            if ok && out.contains(expect) {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
}

/// `kubectl get node node4 -o jsonpath=PATH` without panicking: (success, stdout + stderr).
fn node4_jsonpath(kube_bin: &Path, admin: &Path, path: &str) -> (bool, String) {
    try_kubectl(
        kube_bin,
        admin,
        &["get", "node", "node4", "-o", &format!("jsonpath={path}")],
    )
}

/// Names of the `app=web` pods running on `node`.
fn web_pods_running_on(kube_bin: &Path, admin: &Path, node: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&kubectl(
        kube_bin,
        admin,
        &["get", "pods", "-l", "app=web", "-o", "json"],
    ))
    .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node && p["status"]["phase"] == "Running")
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The test workload (images every node has imported): a busybox httpd Deployment that may run
/// on node3 or node4 only, so after node4 is removed it must come back on node3; a ClusterIP
/// Service in front of it; a client pod on node1; and a DaemonSet on every node.
const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: default }
spec:
  replicas: 1
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - { key: kubernetes.io/hostname, operator: In, values: [node3, node4] }
      terminationGracePeriodSeconds: 1
      containers:
        - name: httpd
          image: docker.io/library/busybox:clusterkit
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: default }
spec:
  nodeSelector: { kubernetes.io/hostname: node1 }
  terminationGracePeriodSeconds: 1
  containers:
    - { name: sh, image: docker.io/library/busybox:clusterkit, imagePullPolicy: Never, command: ["sleep", "3600"] }
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: everywhere, namespace: default }
spec:
  selector: { matchLabels: { app: everywhere } }
  template:
    metadata: { labels: { app: everywhere } }
    spec:
      terminationGracePeriodSeconds: 1
      tolerations: [{ operator: Exists }]
      containers:
        - { name: pause, image: registry.k8s.io/pause:3.2, imagePullPolicy: Never }
"#;

#[test]
fn add_and_remove_a_node() {
    let steps = common::Steps::new("node add and remove");
    let kube_bin = common::kube_bin();
    let sb = SandboxGuard::up(UpOptions::new("nodeadd", 4))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, Some(&kube_bin), &common::CLUSTER_PACKAGES);
    // Two versions of one cluster.yaml (same file, same state directory): without node4, then
    // with node4 as a worker and etcd member.
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    let start = base
        .find("  - name: node4\n")
        .expect("node4 in the sandbox's cluster.yaml");
    let end = base.find("kubernetes:").expect("kubernetes section");
    assert!(start < end, "{base}");
    let node4 = base[start..end].replace("roles: [worker]", "roles: [worker, etcd]");
    assert!(node4.contains("roles: [worker, etcd]"), "{node4}");
    let packages = format!("packages: {{ bundle: {} }}\n", bundle.display());
    let three = format!("{}{}{packages}", &base[..start], &base[end..]);
    let four = format!("{}{node4}{}{packages}", &base[..start], &base[end..]);
    let cfg = sb.dir().join("nodes.yaml");
    std::fs::write(&cfg, &three).unwrap();
    let state = sb.dir().join("nodeadd-state");
    let admin = sb.dir().join("admin.conf");

    // 1. The cluster on node1..node3.
    steps.enter("1. the cluster on node1..node3");
    let (summary, took) = json_ok(&mut ck(&cfg, &["-o", "json", "install"]));
    eprintln!("install (all phases, 3 nodes): {:.1}s", took.as_secs_f64());
    for n in OLD {
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }
    assert_eq!(
        common::etcd_state(&sb, &state, &OLD),
        (vec!["node1".into(), "node2".into(), "node3".into()], 3)
    );
    let before: Vec<String> = OLD.iter().map(|n| started_at(&sb, n)).collect();

    // 2. node4 listed, then added.
    steps.enter("2. node4 listed, then added");
    std::fs::write(&cfg, &four).unwrap();
    let out = run_fail(&mut ck(&cfg, &["node", "add", "node2"]));
    assert!(
        stderr(&out).contains("refusing to add node2") && stderr(&out).contains("already a Node"),
        "{}",
        stderr(&out)
    );
    // cluster.yaml ahead of what runs: the new node would get another release. Refused,
    // pointing to `upgrade apply`; node4 is untouched (the add below installs it from scratch).
    let ahead = sb.dir().join("nodes-ahead.yaml");
    std::fs::write(
        &ahead,
        four.replace(
            &format!(
                "version: {}",
                clusterkit_sandbox::cluster_yaml::KUBERNETES_VERSION
            ),
            "version: v1.20.3",
        ),
    )
    .unwrap();
    let out = run_fail(&mut ck(&ahead, &["node", "add", "node4"]));
    assert!(
        stderr(&out).contains("upgrade apply") && stderr(&out).contains("v1.20.3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ssh(&sb, "node4", "ls /etc/kubernetes 2>/dev/null | wc -l").trim(),
        "0",
        "a refused add touched node4"
    );
    let (summary, took) = json_ok(&mut ck(&cfg, &["-o", "json", "node", "add", "node4"]));
    eprintln!("node add node4: {:.1}s", took.as_secs_f64());
    assert_eq!(summary["hosts"]["node4"]["failed"], 0, "{summary:#}");
    assert!(
        summary["hosts"]["node4"]["changed"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    for n in OLD {
        // The others got node4 in /etc/hosts and its route; node1's API server also got the
        // new etcd member (checked in install_ha).
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
        let hosts = ssh(&sb, n, "getent hosts node4");
        assert!(
            hosts.contains(&sb.node("node4").unwrap().address.to_string()),
            "{n}: /etc/hosts lacks node4: {hosts:?}"
        );
    }
    // node add ends with the readiness report: node4 Ready, and pods on node4 reach and are
    // reached from every other node's.
    let all4 = ["node1", "node2", "node3", "node4"];
    common::assert_ready_with(&summary["readiness"], &all4, "node4");
    let (members, healthy) = poll(Duration::from_secs(120), "4 healthy etcd members", || {
        let s = common::etcd_state(&sb, &state, &all4);
        if s.0.len() == 4 && s.1 == 4 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert_eq!(members, ["node1", "node2", "node3", "node4"]);
    assert_eq!(healthy, 4);
    let slices: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("network/pod-cidrs.json")).unwrap(),
    )
    .unwrap();
    let slice = slices["node4"]
        .as_str()
        .expect("node4 has a pod slice")
        .to_string();
    let node4_ip = sb.node("node4").unwrap().address.to_string();
    for n in OLD {
        let r = routes_to(&sb, n, &slice);
        assert!(r.contains(&format!("via {node4_ip}")), "{n}: {r:?}");
    }
    assert!(!ssh(&sb, "node4", "ip route show proto 75")
        .trim()
        .is_empty());
    // node add restarted nothing on the other nodes but node1's API server, rolled onto the
    // new etcd member list: the running process lists node4.
    let after_add: Vec<String> = OLD.iter().map(|n| started_at(&sb, n)).collect();
    for ((n, b), a) in OLD.iter().zip(&before).zip(&after_add) {
        for (b, a) in b.lines().zip(a.lines()) {
            if *n == "node1" && b.starts_with("kube-apiserver ") {
                assert_ne!(
                    a, b,
                    "node1's API server was not restarted for node4's etcd member"
                );
            } else {
                assert_eq!(a, b, "{n}: node add restarted a service");
            }
        }
    }
    let etcd_servers = apiserver_etcd_servers(&sb, "node1");
    assert!(
        etcd_servers.contains(&format!("https://{node4_ip}:2379")),
        "node1's kube-apiserver lacks etcd member node4: {etcd_servers}"
    );

    // 3. The last control-plane host cannot be removed.
    steps.enter("3. the last control-plane host cannot be removed");
    let out = run_fail(&mut ck(&cfg, &["node", "remove", "node1", "--yes"]));
    assert!(
        stderr(&out).contains("refusing to remove node1")
            && stderr(&out).contains("only control-plane host"),
        "{}",
        stderr(&out)
    );

    // 4. A workload on node4 (node3, its other allowed node, cordoned meanwhile), and a
    //    DaemonSet everywhere.
    steps.enter("4. a workload on node4 and a DaemonSet everywhere");
    kubectl(&kube_bin, &admin, &["cordon", "node3"]);
    let mut apply = kubectl_cmd(&kube_bin, &admin, &["apply", "-f", "-"]);
    apply
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = apply.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), WORKLOAD.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        describe(&apply, &out, "kubectl apply")
    );
    let pods_on_node4 = |label: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(&kubectl(
            &kube_bin,
            &admin,
            &["get", "pods", "-l", label, "-o", "json"],
        ))
        .unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "node4")
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let web = poll(Duration::from_secs(120), "the web pod on node4", || {
        let p = pods_on_node4("app=web");
        if p.len() == 1 {
            Ok(p[0].clone())
        } else {
            Err(format!("{p:?}"))
        }
    });
    let daemon = poll(
        Duration::from_secs(120),
        "the DaemonSet pod on node4",
        || {
            let p = pods_on_node4("app=everywhere");
            if p.len() == 1 {
                Ok(p[0].clone())
            } else {
                Err(format!("{p:?}"))
            }
        },
    );

    kubectl(&kube_bin, &admin, &["uncordon", "node3"]);
    let service = format!("{}:80", common::service_ip(&kube_bin, &admin, "web"));
    poll(Duration::from_secs(120), "the client pod running", || {
        let phase = kubectl(
            &kube_bin,
            &admin,
            &["get", "pod", "client", "-o", "jsonpath={.status.phase}"],
        );
        if phase.trim() == "Running" {
            Ok(())
        } else {
            Err(phase)
        }
    });
    fetch(&kube_bin, &admin, &service, &format!("hello-from-{web}"));

    // 5. --check: reports the drain, changes nothing.
    steps.enter("5. --check: reports the drain, changes nothing");
    let (v, _) = json_ok(&mut ck(
        &cfg,
        &["-o", "json", "node", "remove", "node4", "--check"],
    ));
    assert_eq!(v["check"], true);
    let evict: Vec<&str> = v["drain"]["evict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(evict, [format!("default/{web}")], "{v:#}");
    assert_eq!(
        v["etcd_members_removed"].as_array().unwrap().len(),
        1,
        "{v:#}"
    );
    assert_eq!(
        kubectl(
            &kube_bin,
            &admin,
            &[
                "get",
                "node",
                "node4",
                "-o",
                "jsonpath={.spec.unschedulable}"
            ]
        )
        .trim(),
        "",
        "--check cordoned node4"
    );
    assert_eq!(common::etcd_state(&sb, &state, &all4).0.len(), 4);
    assert_eq!(pods_on_node4("app=web"), std::slice::from_ref(&web));

    // 6. The removal.
    steps.enter("6. the removal");
    let (v, took) = json_ok(&mut ck(
        &cfg,
        &["-o", "json", "node", "remove", "node4", "--yes"],
    ));
    eprintln!("node remove node4: {:.1}s", took.as_secs_f64());
    let evicted: Vec<&str> = v["drain"]["evict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(evicted, [format!("default/{web}")], "{v:#}");
    let skipped = v["drain"]["skip"].to_string();
    assert!(
        skipped.contains(&format!("default/{daemon} (DaemonSet)")),
        "{v:#}"
    );
    common::assert_removed_etcd_member(&v, "node4");
    assert_eq!(v["node_deleted"], true, "{v:#}");
    assert!(v["reset_error"].is_null(), "{v:#}");
    let reset = v["reset_changed"].to_string();
    assert!(reset.contains("stop and disable kubelet"), "{v:#}");
    assert!(reset.contains("stop and disable etcd"), "{v:#}");

    // The Node is gone; the web pod was evicted and runs again on node3, answering through the
    // Service from node1.
    let (found, out) = try_kubectl(&kube_bin, &admin, &["get", "node", "node4"]);
    assert!(!found && out.contains("NotFound"), "{out}");
    assert!(pods_on_node4("app=web").is_empty());
    let moved = poll(
        Duration::from_secs(180),
        "the web pod running on node3",
        || {
            let p = web_pods_running_on(&kube_bin, &admin, "node3");
            if p.len() == 1 {
                Ok(p[0].clone())
            } else {
                Err(format!("{p:?}"))
            }
        },
    );
    assert_ne!(moved, web);
    fetch(&kube_bin, &admin, &service, &format!("hello-from-{moved}"));
    // etcd: three members, all healthy.
    let (members, healthy) = poll(Duration::from_secs(60), "3 healthy etcd members", || {
        let s = common::etcd_state(&sb, &state, &OLD);
        if s.0.len() == 3 && s.1 == 3 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert_eq!(members, ["node1", "node2", "node3"]);
    assert_eq!(healthy, 3);
    // Routes to node4's slice are gone from the others; its slice is freed.
    for n in OLD {
        assert_eq!(routes_to(&sb, n, &slice).trim(), "", "{n}");
    }
    let slices: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("network/pod-cidrs.json")).unwrap(),
    )
    .unwrap();
    assert!(slices.get("node4").is_none(), "{slices:#}");
    // node4 is reset.
    let f = ssh(
        &sb,
        "node4",
        "systemctl is-active etcd kubelet kube-proxy || true; ls /etc/kubernetes 2>&1 || true",
    );
    assert!(!f.contains("\nactive") && !f.starts_with("active"), "{f}");
    assert!(f.contains("No such file"), "{f}");
    // The others were not restarted, and the API still answers.
    let after: Vec<String> = OLD.iter().map(|n| started_at(&sb, n)).collect();
    assert_eq!(
        after, after_add,
        "node remove restarted a service on another node"
    );
    assert_eq!(
        kubectl(&kube_bin, &admin, &["get", "--raw", "/readyz"]).trim(),
        "ok"
    );

    // 7. kubeadm compatibility: the command `token create --print-join-command` prints joins
    //    the reset node4 with the real kubeadm v1.20.2 — discovery through the signed
    //    cluster-info, then the kubeadm-config and kubelet-config-1.20 ConfigMaps read with the
    //    bootstrap token (`join phase preflight`), then the whole join: kubeadm writes the
    //    kubelet's config from the ConfigMap, the kubelet bootstraps and registers.
    steps.enter("7. kubeadm compatibility: token create --print-join-command");
    let join = stdout(&run_ok(&mut ck(
        &cfg,
        &["token", "create", "--print-join-command"],
    )));
    let join = join.trim().to_string();
    assert!(join.starts_with("kubeadm join "), "{join}");
    let args = join.trim_start_matches("kubeadm join ");
    common::scp_to(
        &sb,
        "node4",
        &kube_bin.join("kubeadm"),
        "/usr/local/bin/kubeadm",
    );
    let start = Instant::now();
    let pre = ssh(
        &sb,
        "node4",
        &format!("kubeadm join phase preflight {args} --ignore-preflight-errors=all 2>&1"),
    );
    eprintln!(
        "kubeadm join phase preflight: {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert!(pre.contains("[preflight]"), "{pre}");
    common::kubeadm_kubelet_unit(&sb, "node4");
    let start = Instant::now();
    let out = ssh(
        &sb,
        "node4",
        &format!("kubeadm join {args} --ignore-preflight-errors=all 2>&1"),
    );
    eprintln!("kubeadm join: {:.1}s", start.elapsed().as_secs_f64());
    assert!(out.contains("This node has joined the cluster"), "{out}");
    let cfg_from_cm = ssh(&sb, "node4", "cat /var/lib/kubelet/config.yaml");
    assert!(
        cfg_from_cm.contains("cgroupDriver: systemd")
            && cfg_from_cm.contains("rotateCertificates: true"),
        "{cfg_from_cm}"
    );
    poll(
        Duration::from_secs(180),
        "node4 registered by kubeadm join",
        || {
            let (ok, text) = node4_jsonpath(&kube_bin, &admin, "{.metadata.annotations}");
            if ok && text.contains("kubeadm.alpha.kubernetes.io/cri-socket") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );
    drop(sb);
}
