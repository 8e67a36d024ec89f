//! `control_plane_mode: static-pod` with two control-plane hosts behind the local API load
//! balancer, on a 3-node sandbox, all real: Kubernetes v1.20.2 built from Debian's source
//! package, the control-plane images `bundle build` made from the bundle's binaries, Debian's
//! haproxy from the bundle. node1 and node2 run kube-apiserver, the controller manager, the
//! scheduler and etcd as static pods; node3 is a worker and etcd's third member under systemd.
//!
//! Steps: the install's readiness report is green and every kubelet reaches the API through its
//! local load balancer. `monitor deploy` (Prometheus on node3, from the bundle) finds every
//! scrape target up: both API servers, controller managers and schedulers (static pods), etcd
//! (two static-pod members, one unit), every kubelet and node-exporter; the exporter
//! (`monitor serve`) exports both API servers' certificate expiry and every etcd member up.
//! node1's kube-apiserver manifest is moved out of /etc/kubernetes/manifests (how kubeadm
//! documents stopping a static pod): once nothing listens on node1's API port, the API answers
//! through node1's own load balancer, every Node's Lease is renewed after the stop and every
//! Node stays Ready, and node2's controller manager and scheduler hold their leases
//! ([`common::ha::survives_api_server_down`]); moved back, node1's controller manager and
//! scheduler run again (they exit when they lose leadership, and restart with the kubelet's
//! back-off) and its API server answers `/livez`. `node remove node2` takes a control-plane
//! host and etcd member out — its member made the leader first, so the API's requests meet an
//! election — (two healthy members left, node1 holding both leases) and resets it: its
//! containers removed with ctr (no crictl on Debian) and containerd restarted so that its CRI
//! plugin forgets them, then its CNI configuration directory emptied but kept; `node add node2`
//! then brings it back without containerd restarted in between (containerd watches that
//! directory; a removed one would leave node2 NotReady): node add's readiness report is green,
//! node2 runs its four control-plane containers again, etcd has three healthy members.
//! `upgrade apply --to <the version that runs> --force-reroll --etcd` then rolls every host,
//! and from the first control-plane host's roll on a loop on each control-plane host calls the
//! API through its local load balancer five times a second: no phase changes a file (node2's etcd manifest kept the
//! `--initial-cluster-state=existing` node add gave it; a converge used to rewrite it, which
//! restarted the member), each static pod is recreated, node3's etcd unit and every kubelet
//! restarted, every kube-proxy pod replaced; no call fails, every node ends Ready and
//! uncordoned, and a rerun without `--force-reroll` changes and restarts nothing. (Before the
//! containerd restart in reset, node2's kube-proxy pod — the DaemonSet's pod from before the
//! removal, run again after node add — stayed Terminating: the kubelet could not remove the
//! containers ctr had removed.) Wall times are printed.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle,
//! etcdctl and the Kubernetes binaries; fails with the reason when one is missing.

mod common;
mod monitor_support;

use std::time::{Duration, Instant};

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::ha::{leases, try_kubectl};
use common::{ck, install_timed, json_of, poll, ssh, NODES};
use monitor_support::curl;

/// The containers of a control-plane host in static-pod mode.
const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Waits until `node` runs every container of [`STATIC_PODS`].
fn static_pods_running(sb: &SandboxGuard, node: &str) {
    poll(
        Duration::from_secs(180),
        &format!("the control-plane containers running on {node}"),
        || {
            let running = common::running_containers(sb, node);
            if STATIC_PODS.iter().all(|c| running.contains_key(*c)) {
                Ok(())
            } else {
                Err(format!("{running:?}"))
            }
        },
    );
}

/// The `monitor:` section: Alertmanager needs a receiver; nothing is sent.
const MONITOR: &str = "monitor:\n  alertmanager:\n    receivers:\n      - { name: ops, webhook: { url: \"http://127.0.0.1:9/hook\" } }\n";

/// `text` (a sandbox cluster.yaml) with `node`'s roles, `[worker, etcd]` there, set to `roles`.
fn with_roles(text: &str, node: &str, roles: &str) -> String {
    let from = "roles: [worker, etcd]";
    let at = text
        .find(&format!("  - name: {node}\n"))
        .unwrap_or_else(|| panic!("{node} not listed: {text}"));
    let r = at + text[at..].find(from).expect("its roles");
    format!("{}roles: {roles}{}", &text[..r], &text[r + from.len()..])
}

/// Makes `node`'s etcd member the leader (`etcdctl move-leader` through the current one), so
/// that removing it forces an election while `node remove` goes on with its API calls.
fn etcd_leader_to(sb: &SandboxGuard, state: &std::path::Path, node: &str) {
    let endpoints = common::etcd_endpoints(sb);
    let status: serde_json::Value = serde_json::from_str(&common::stdout(&common::run_ok(
        &mut common::etcdctl(state, &endpoints, &["endpoint", "status", "-w", "json"]),
    )))
    .unwrap();
    let statuses = status.as_array().unwrap();
    let url = format!("https://{}:2379", sb.node(node).unwrap().address);
    let of = |s: &serde_json::Value| s["Status"]["header"]["member_id"].as_u64().unwrap();
    let target = statuses
        .iter()
        .find(|s| s["Endpoint"] == url.as_str())
        .map(of)
        .unwrap_or_else(|| panic!("{url} not in {status:#}"));
    let leader = statuses[0]["Status"]["leader"].as_u64().unwrap();
    if leader == target {
        return;
    }
    let at = statuses
        .iter()
        .find(|s| of(s) == leader)
        .unwrap_or_else(|| panic!("leader {leader:x} not in {status:#}"))["Endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    common::run_ok(&mut common::etcdctl(
        state,
        &at,
        &["move-leader", &format!("{target:x}")],
    ));
}

/// When `node`'s containerd last started (systemd's monotonic timestamp).
fn containerd_started(sb: &SandboxGuard, node: &str) -> String {
    ssh(
        sb,
        node,
        "systemctl show -p ActiveEnterTimestampMonotonic --value containerd",
    )
    .trim()
    .to_string()
}

#[test]
fn two_static_pod_control_planes_behind_a_local_load_balancer() {
    let steps = common::Steps::new("install_static_pod_ha");
    let kube_bin = common::kube_bin();
    // A name of this process's own: runs of this test at once must not share one sandbox.
    let name = format!("sh{}", std::process::id() % 1_000_000);
    let sb = SandboxGuard::up(UpOptions::new(&name, 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let addr = |n: &str| sb.node(n).unwrap().address.to_string();
    let api = |n: &str| format!("https://{}:6443", addr(n));
    let admin = sb.dir().join("admin.conf");
    let state = sb.dir().join(format!("{name}-state"));

    steps.enter("1. bundle with the control-plane images, haproxy, Prometheus; cluster.yaml");
    let bundle = work.path().join("bundle");
    let mut packages = common::CLUSTER_PACKAGES.to_vec();
    for p in [
        "haproxy",
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
    ] {
        packages.extend(["--package", p]);
    }
    common::build_bundle(&bundle, Some(&kube_bin), &packages);
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    // node2 becomes the second control-plane host; node3 also runs Prometheus.
    let text = with_roles(&base, "node2", "[control-plane, etcd]");
    let text = with_roles(&text, "node3", "[worker, etcd, monitor]").replace(
        "control_plane_mode: systemd",
        "control_plane_mode: static-pod",
    );
    assert!(text.contains("control_plane_mode: static-pod"), "{text}");
    let cfg = sb.dir().join("static-pod-ha.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{text}\npackages: {{ bundle: {} }}\n{MONITOR}",
            bundle.display()
        ),
    )
    .unwrap();
    common::with_local_load_balancer(&cfg);

    steps.enter("2. install: two static-pod control planes, green readiness report");
    let (summary, took) = install_timed(&cfg, &[]);
    eprintln!(
        "install (all phases, 3 nodes, static-pod, 2 control planes): {:.1}s",
        took.as_secs_f64()
    );
    for n in NODES {
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }
    let r = &summary["readiness"];
    assert_eq!(r["ok"], true, "{r:#}");
    let components = r["components"].to_string();
    for cp in ["node1", "node2"] {
        assert!(
            components.contains(&format!("apiserver /livez {cp}")),
            "{r:#}"
        );
        static_pods_running(&sb, cp);
    }
    for n in NODES {
        let server = ssh(&sb, n, "grep -h 'server:' /etc/kubernetes/kubelet.conf");
        assert_eq!(
            server.split_whitespace().last(),
            Some(common::LOCAL_LB),
            "{n}: the kubelet uses the local load balancer"
        );
    }

    steps.enter("3. monitor deploy: every control-plane, kubelet, etcd and node target up");
    let jobs = "node,etcd,apiserver,kubelet,kube-scheduler,kube-controller-manager";
    let start = Instant::now();
    let v = json_of(&mut ck(
        &cfg,
        &["-o", "json", "monitor", "deploy", "--check-jobs", jobs],
    ));
    eprintln!("monitor deploy: {:.1}s", start.elapsed().as_secs_f64());
    let targets = v["targets"].as_array().unwrap();
    let cps = ["node1", "node2"];
    for (job, hosts) in [
        ("apiserver", &cps[..]),
        ("kube-controller-manager", &cps[..]),
        ("kube-scheduler", &cps[..]),
        ("etcd", &NODES[..]),
        ("kubelet", &NODES[..]),
        ("node", &NODES[..]),
    ] {
        for h in hosts {
            assert!(
                targets
                    .iter()
                    .any(|t| t["job"] == job && t["host"] == *h && t["health"] == "up"),
                "{job} on {h} not up: {v:#}"
            );
        }
    }

    // The exporter (`monitor serve`, run on this machine) reads the static pods' certificates
    // over SSH and asks every etcd member, static pod or unit, for its status.
    let port = common::free_port();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let mut c = ck(
        &cfg,
        &["monitor", "serve", "--listen", &format!("127.0.0.1:{port}")],
    );
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let exporter = common::Child(c.spawn().expect("start monitor serve"));
    let mon = state.join("pki/monitoring");
    let (client, key) = (
        mon.join("prometheus-client.crt"),
        mon.join("prometheus-client.key"),
    );
    let mut wanted: Vec<String> = ["node1", "node2"]
        .iter()
        .map(|h| format!("clusterkit_certificate_not_after_timestamp_seconds{{host=\"{h}\",path=\"/etc/kubernetes/pki/apiserver.crt\""))
        .collect();
    wanted.extend(
        NODES
            .iter()
            .map(|h| format!("clusterkit_etcd_member_up{{member=\"{h}\"}} 1")),
    );
    let mut metrics = String::new();
    let found = common::wait_until(Duration::from_secs(90), || {
        let (code, body) = curl(&url, &mon.join("ca.crt"), None, Some((&client, &key)));
        metrics = body;
        code == "200" && wanted.iter().all(|w| metrics.contains(w.as_str()))
    });
    assert!(found, "not all of {wanted:#?} in:\n{metrics}");
    drop(exporter);

    steps.enter("4. node1's API server manifest moved away: the cluster carries on through node2");
    let holders_before = poll(Duration::from_secs(60), "leader leases readable", || {
        leases(&kube_bin, &admin, &api("node2"), "kube-system")
    });
    eprintln!("leaders before the stop: {holders_before}");
    ssh(
        &sb,
        "node1",
        "mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/kube-apiserver.yaml.away",
    );
    let moved = Instant::now();
    // The kubelet notices the manifest's absence and stops the pod.
    poll(
        Duration::from_secs(120),
        "nothing listening on node1's API port",
        || {
            let l = ssh(&sb, "node1", "ss -Hltn 'sport = :6443'");
            if l.trim().is_empty() {
                Ok(())
            } else {
                Err(l)
            }
        },
    );
    let stop_at = common::ha::micro_time(&sb, "node1");
    eprintln!(
        "node1's API server stopped {:.1}s after its manifest moved",
        moved.elapsed().as_secs_f64()
    );
    common::ha::survives_api_server_down(
        &sb,
        (&kube_bin, &admin),
        ("node1", "node2"),
        (&stop_at, Instant::now()),
    );
    ssh(
        &sb,
        "node1",
        "mv /etc/kubernetes/kube-apiserver.yaml.away /etc/kubernetes/manifests/kube-apiserver.yaml",
    );
    // node1's controller manager and scheduler exit when they lose leadership and, while
    // their API server is away, again at each start (they read its authentication ConfigMap
    // first): the kubelet restarts them with a growing back-off. node2 must not leave before
    // they run again, or no scheduler would be left to lead.
    for c in ["kube-controller-manager", "kube-scheduler"] {
        poll(
            Duration::from_secs(400),
            &format!("node1's {c} running and ready again"),
            || {
                let (ok, out) = try_kubectl(
                    &kube_bin,
                    &admin,
                    Some(&api("node2")),
                    &[
                        "-n",
                        "kube-system",
                        "get",
                        "pod",
                        &format!("{c}-node1"),
                        "-o",
                        "jsonpath={.status.containerStatuses[0].ready}",
                    ],
                );
                (ok && out.trim() == "true").then_some(()).ok_or(out)
            },
        );
    }
    poll(
        Duration::from_secs(180),
        "node1's API server live again",
        || match try_kubectl(
            &kube_bin,
            &admin,
            Some(&api("node1")),
            &["get", "--raw", "/livez"],
        ) {
            (true, out) if out.trim() == "ok" => Ok(()),
            (_, out) => Err(out),
        },
    );

    steps.enter("5. node remove node2: a control-plane host and etcd member leaves");
    // node2's member leads when it leaves: the API's requests meanwhile may fail with
    // "etcdserver: leader changed", which node remove must ride out.
    etcd_leader_to(&sb, &state, "node2");
    let start = Instant::now();
    let v = json_of(&mut ck(
        &cfg,
        &["-o", "json", "node", "remove", "node2", "--yes"],
    ));
    eprintln!("node remove node2: {:.1}s", start.elapsed().as_secs_f64());
    common::assert_removed_etcd_member(&v, "node2");
    assert_eq!(v["node_deleted"], true, "{v:#}");
    assert!(v["reset_error"].is_null(), "{v:#}");
    let reset = v["reset_changed"].to_string();
    assert!(
        reset.contains("remove the CNI configuration in /etc/cni/net.d"),
        "{v:#}"
    );
    assert_eq!(
        ssh(&sb, "node2", "ls -A /etc/cni/net.d | wc -l").trim(),
        "0",
        "node2's CNI configuration directory kept, empty"
    );
    // The nodes have no crictl: the kubelet's containers went with ctr, and containerd was
    // restarted so that its CRI plugin forgets them (before the CNI directory was emptied).
    assert!(reset.contains("restart containerd"), "{v:#}");
    let containerd_before = containerd_started(&sb, "node2");
    let (members, healthy) = common::etcd_state(&sb, &state, &["node1", "node3"]);
    assert_eq!(
        (members, healthy),
        (vec!["node1".into(), "node3".into()], 2)
    );
    // Leadership returns to node1 (node2's instances are gone).
    poll(
        Duration::from_secs(120),
        "node1 holding the controller-manager and scheduler leases",
        || {
            let l = leases(&kube_bin, &admin, &api("node1"), "kube-system")?;
            let held = ["kube-controller-manager", "kube-scheduler"]
                .iter()
                .all(|n| {
                    l[n]["holder"]
                        .as_str()
                        .is_some_and(|h| h.starts_with("node1"))
                });
            held.then_some(()).ok_or(l.to_string())
        },
    );

    steps.enter("6. node add node2: back, Ready, its static pods running");
    let start = Instant::now();
    let v = json_of(&mut ck(&cfg, &["-o", "json", "node", "add", "node2"]));
    eprintln!("node add node2: {:.1}s", start.elapsed().as_secs_f64());
    for n in NODES {
        assert_eq!(v["hosts"][n]["failed"], 0, "{v:#}");
    }
    common::assert_ready_with(&v["readiness"], &NODES, "node2");
    assert_eq!(
        containerd_started(&sb, "node2"),
        containerd_before,
        "containerd on node2 was restarted"
    );
    static_pods_running(&sb, "node2");
    let (members, healthy) =
        poll(
            Duration::from_secs(120),
            "3 healthy etcd members",
            || match common::etcd_state(&sb, &state, &NODES) {
                s if s.0.len() == 3 && s.1 == 3 => Ok(s),
                s => Err(format!("{s:?}")),
            },
        );
    assert_eq!(members, NODES);
    assert_eq!(healthy, 3);

    steps.enter("7. upgrade apply --force-reroll --etcd: every static pod replaced, host by host, no failed call");
    let version = clusterkit_sandbox::cluster_yaml::KUBERNETES_VERSION;
    let ids_before: Vec<_> = NODES
        .iter()
        .map(|n| common::running_container_ids(&sb, n))
        .collect();
    let units_before: Vec<String> = NODES.iter().map(|n| invocations(&sb, n)).collect();
    let start = Instant::now();
    // `upgrade apply` to the version that runs, without a backup (this test has no store).
    let base = format!("-o json upgrade apply --skip-backup --to {version}");
    let upgrade = |extra: &[&str]| {
        let args: Vec<&str> = base.split(' ').chain(extra.iter().copied()).collect();
        ck(&cfg, &args)
    };
    let mut c = upgrade(&["--force-reroll", "--etcd"]);
    // The API loops start when the first control-plane host's roll does: while an etcd member
    // stops, a request the API server sends it can fail inside etcd 3.4 ("transport: missing
    // content-type field", seen once in 880 calls) and kube-apiserver does not retry it; the
    // load balancers' work is the API servers' restarts.
    let out = run_following(&mut c, "node1: control plane: rolling", || {
        for cp in ["node1", "node2"] {
            start_node_api_loop(&sb, cp);
        }
    });
    eprintln!(
        "upgrade apply --force-reroll --etcd (3 nodes, static-pod, 2 control planes): {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let loops: Vec<(usize, Vec<String>)> = stop_node_api_loops(&sb, &["node1", "node2"]);
    assert!(
        out.status.success(),
        "{}",
        common::describe(&c, &out, "upgrade apply")
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rolled = |host: &str, stage: &str| {
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["host"] == host && h["stage"] == stage && h["outcome"] == "rolled")
    };
    for n in NODES {
        assert!(rolled(n, "etcd") && rolled(n, "node"), "{n}: {v:#}");
    }
    for cp in ["node1", "node2"] {
        assert!(rolled(cp, "control-plane"), "{cp}: {v:#}");
    }
    // The same version and configuration: the phases change no file anywhere (node add left
    // nothing that a converge rewrites), so every restart is the roll's own.
    for h in v["hosts"].as_array().unwrap() {
        assert_eq!(h["changed"], 0, "{}: {v:#}", h["host"]);
    }
    assert_eq!(v["readiness"]["ok"], true, "{v:#}");
    // Each static pod, and kube-proxy's pod on every node, runs in a new container; each
    // kubelet (and node3's etcd unit) was restarted.
    for ((n, before), units) in NODES.iter().zip(&ids_before).zip(&units_before) {
        let mut replaced = vec!["kube-proxy"];
        if *n != "node3" {
            replaced.extend(STATIC_PODS);
        }
        let after = poll(
            Duration::from_secs(60),
            &format!("{n}'s containers running"),
            || {
                let ids = common::running_container_ids(&sb, n);
                if replaced.iter().all(|k| ids.contains_key(*k)) {
                    Ok(ids)
                } else {
                    Err(format!("{before:?} → {ids:?}"))
                }
            },
        );
        for c in replaced {
            assert!(
                before.get(c).is_some() && before.get(c) != after.get(c),
                "{n}: {c} not replaced: {before:?} → {after:?}"
            );
        }
        let now = invocations(&sb, n);
        for (b, a) in units.lines().zip(now.lines()) {
            assert_ne!(b, a, "{n}: a unit was not restarted: {units:?} → {now:?}");
        }
    }
    for ((cp, (ok, fails)), limit) in ["node1", "node2"].iter().zip(&loops).zip([50, 50]) {
        assert!(
            fails.is_empty(),
            "{cp}: API calls through its load balancer failed during the roll ({ok} ok): {fails:#?}"
        );
        assert!(*ok > limit, "{cp}: the API loop ran through the roll: {ok}");
        eprintln!("{cp}: {ok} API calls through the local load balancer, 0 failed");
    }
    let (ok, nodes) = try_kubectl(
        &kube_bin,
        &admin,
        None,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].spec.unschedulable}",
        ],
    );
    assert!(
        ok && nodes.trim().is_empty(),
        "every node uncordoned: {nodes}"
    );

    // A rerun at the version that runs changes nothing and restarts nothing.
    let start = Instant::now();
    let again = json_of(&mut upgrade(&[]));
    eprintln!("upgrade apply rerun: {:.1}s", start.elapsed().as_secs_f64());
    for h in again["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "verified", "{again:#}");
        assert_eq!(h["changed"], 0, "{again:#}");
    }
    drop(sb);
}

/// Runs `c` and calls `then` once, when its stderr (shown as it comes) prints a line that
/// contains `at`; its output. Fails the test when no line did.
fn run_following(
    c: &mut std::process::Command,
    at: &str,
    then: impl FnOnce(),
) -> std::process::Output {
    use std::io::{BufRead, Read};
    use std::process::Stdio;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run clusterkit");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes).map(|_| bytes)
    });
    let mut stderr = Vec::new();
    let mut then = Some(then);
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.expect("read stderr");
        eprintln!("{line}");
        if line.contains(at) {
            if let Some(f) = then.take() {
                f();
            }
        }
        stderr.extend_from_slice(line.as_bytes());
        stderr.push(b'\n');
    }
    let status = child.wait().expect("wait for clusterkit");
    assert!(
        then.is_none(),
        "no line with {at:?} in:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    std::process::Output {
        status,
        stdout: reader.join().unwrap().expect("read stdout"),
        stderr,
    }
}

/// `node`'s systemd InvocationIDs of the kubelet and, where it is a unit, etcd (one per line).
fn invocations(sb: &SandboxGuard, node: &str) -> String {
    ssh(
        sb,
        node,
        "for u in kubelet etcd; do if systemctl cat $u >/dev/null 2>&1; then systemctl show -p InvocationID --value $u; fi; done",
    )
}

/// Starts a loop on `node` calling the API through the node's local load balancer five times a
/// second with the kubelet's credentials (`GET` of its own Node, a read from etcd), a line
/// `ok` or `FAIL <time> <error>` per call in /root/api-loop.log, until /root/api-loop.stop
/// exists.
fn start_node_api_loop(sb: &SandboxGuard, node: &str) {
    let script = format!(
        "while [ ! -e /root/api-loop.stop ]; do \
           if out=$(kubectl --kubeconfig /etc/kubernetes/kubelet.conf --request-timeout=5s get --raw /api/v1/nodes/{node} 2>&1 >/dev/null); \
           then echo ok; else echo \"FAIL $(date -u +%T) $(echo $out | head -c 300)\"; fi; sleep 0.2; done"
    );
    ssh(
        sb,
        node,
        &format!(
            "rm -f /root/api-loop.stop /root/api-loop.log; cat > /root/api-loop.sh <<'EOF'\n{script}\nEOF\n\
             setsid nohup sh /root/api-loop.sh >/root/api-loop.log 2>&1 </dev/null &"
        ),
    );
    poll(
        Duration::from_secs(30),
        &format!("{node}'s API loop answers"),
        || match node_api_loop_log(sb, node) {
            l if l.lines().any(|l| l == "ok") => Ok(()),
            l => Err(l),
        },
    );
}

fn node_api_loop_log(sb: &SandboxGuard, node: &str) -> String {
    ssh(sb, node, "cat /root/api-loop.log")
}

/// Stops the API loops of `nodes` (each ends after its current call, at most 5 s); per node,
/// its ok count and failure lines.
fn stop_node_api_loops(sb: &SandboxGuard, nodes: &[&str]) -> Vec<(usize, Vec<String>)> {
    for n in nodes {
        ssh(sb, n, "touch /root/api-loop.stop");
    }
    std::thread::sleep(Duration::from_secs(6));
    nodes
        .iter()
        .map(|n| {
            let log = node_api_loop_log(sb, n);
            let ok = log.lines().filter(|l| *l == "ok").count();
            let fails = log
                .lines()
                .filter(|l| *l != "ok")
                .map(str::to_string)
                .collect();
            (ok, fails)
        })
        .collect()
}
