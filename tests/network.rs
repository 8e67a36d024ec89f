//! The host-gw pod network on a real 3-node sandbox: `clusterkit install --phase
//! prepare|runtime|network`, then the real state read back over SSH — each node's pod CIDR
//! slice (host order, recorded in the state directory), the CNI conflist carrying it, routes to
//! the other nodes' slices, the masquerade rule — a rerun and `--check` changing nothing, drift
//! reported by `--check` and repaired by a run, and real traffic: Debian's bridge plugin (CNI
//! ADD) wires a network namespace on two nodes, busybox httpd in one answers an HTTP request
//! (busybox nc) from the other across nodes, traffic leaving the pod network is masqueraded,
//! CNI DEL releases the address. Routes come back after a node restart (boot unit), and
//! `network::remove_node` takes a node's routes off the others.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the offline
//! bundle (containerd, runc, containernetworking-plugins) and busybox-static on this machine
//! (uploaded to the nodes as a test tool); fails with the reason otherwise.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clusterkit_installer::phases::{self, network, InstallOptions, PhaseContext};
use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{describe, install_json, ssh, ssh_cmd, stdout};
use serde_json::{json, Value};

/// Runs `cmd` on the node with `input` on its standard input.
fn ssh_stdin(sb: &SandboxGuard, node: &str, cmd: &str, input: &[u8]) -> String {
    let mut c = ssh_cmd(sb, node, cmd);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        describe(&c, &out, "expected success")
    );
    stdout(&out)
}

/// `(destination, gateway)` of clusterkit's pod routes on a node.
fn pod_routes(sb: &SandboxGuard, node: &str) -> BTreeSet<(String, String)> {
    ssh(sb, node, "ip -4 route show proto 75")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[1] == "via").then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
}

/// The routes a node must have: every other node's slice via that node's address.
fn wanted_routes(
    sb: &SandboxGuard,
    node: &str,
    slices: &Value,
    nodes: &[&str],
) -> BTreeSet<(String, String)> {
    nodes
        .iter()
        .filter(|n| **n != node)
        .map(|n| {
            (
                slices[*n].as_str().unwrap().to_string(),
                sb.node(n).unwrap().address.to_string(),
            )
        })
        .collect()
}

/// A shell command fetching `/` over HTTP/1.0 from `host port` inside netns `ckpod`.
/// busybox nc, not busybox wget: Debian 12's busybox-static (1:1.35.0-4+deb12u1+b1) wget
/// segfaults on this machine even for 127.0.0.1 (checked outside any sandbox too).
fn http_get_in_pod(host_port: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ip netns exec ckpod /root/busybox nc -w 3 {host_port}")
}

/// `http_get_in_pod(host_port)` on node1, retried for up to 10 s until it answers 200:
/// (whether it did, the last reply).
fn get_from_node1_pod(sb: &SandboxGuard, host_port: &str) -> (bool, String) {
    let mut body = String::new();
    let fetched = common::wait_until(Duration::from_secs(10), || {
        let out = ssh_cmd(sb, "node1", &http_get_in_pod(host_port))
            .output()
            .unwrap();
        body = stdout(&out);
        out.status.success() && body.starts_with("HTTP/1.1 200")
    });
    (fetched, body)
}

/// The bridge plugin's own config from the conflist, as a runtime hands it to the plugin.
fn bridge_config(conflist: &Value) -> Value {
    let mut plugin = conflist["plugins"][0].clone();
    plugin["name"] = conflist["name"].clone();
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    plugin
}

/// CNI ADD/DEL of the bridge plugin for netns `ckpod` on a node; returns the plugin's output.
fn cni(sb: &SandboxGuard, node: &str, command: &str, config: &Value) -> String {
    ssh_stdin(
        sb,
        node,
        &format!(
            "CNI_COMMAND={command} CNI_CONTAINERID=ckpod-{node} CNI_NETNS=/run/netns/ckpod \
             CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin /opt/cni/bin/bridge"
        ),
        config.to_string().as_bytes(),
    )
}

#[test]
fn host_gw_pod_network_on_three_nodes() {
    let busybox = PathBuf::from(
        std::env::var_os("CLUSTERKIT_BUSYBOX").unwrap_or_else(|| "/bin/busybox".into()),
    );
    assert!(
        busybox.is_file(),
        "{} missing: install busybox-static (scripts/deps.sh)",
        busybox.display()
    );
    let mut sb = SandboxGuard::up(UpOptions::new("net3", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let nodes = ["node1", "node2", "node3"];
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, None, &["--package", "containernetworking-plugins"]);
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    assert!(
        base.contains("network: host-gw"),
        "the sandbox profile uses host-gw:\n{base}"
    );
    let cfg = common::sandbox_config(&sb, "network.yaml", &bundle, "");

    install_json(&cfg, &["--phase", "prepare"]);
    install_json(&cfg, &["--phase", "runtime"]);
    let first = install_json(&cfg, &["--phase", "network"]);
    for n in nodes {
        assert_eq!(first["hosts"][n]["failed"], 0, "{first:#}");
        assert!(
            first["hosts"][n]["changed"].as_u64().unwrap() > 0,
            "{first:#}"
        );
    }

    // 1. Slices by host order, recorded in the state directory.
    let state = sb.dir().join("net3-state/network/pod-cidrs.json");
    let slices: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        slices,
        json!({"node1": "10.244.0.0/24", "node2": "10.244.1.0/24", "node3": "10.244.2.0/24"})
    );

    // 2. Per node: conflist with its slice, loopback config, plugins, routes, NAT, boot unit.
    let mut conflists = serde_json::Map::new();
    for n in nodes {
        let text = ssh(&sb, n, "cat /etc/cni/net.d/10-clusterkit.conflist");
        let conf: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{n}: {e}\n{text}"));
        let bridge = &conf["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "cni0");
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(
            bridge["ipam"]["ranges"][0][0]["subnet"], slices[n],
            "{n}: {text}"
        );
        assert_eq!(conf["plugins"][1]["type"], "portmap");
        let lo: Value =
            serde_json::from_str(&ssh(&sb, n, "cat /etc/cni/net.d/99-loopback.conf")).unwrap();
        assert_eq!(lo["type"], "loopback");
        ssh(&sb, n, "for p in bridge host-local loopback portmap; do test -x /opt/cni/bin/$p && test -x /usr/lib/cni/$p; done");
        assert_eq!(
            pod_routes(&sb, n),
            wanted_routes(&sb, n, &slices, &nodes),
            "{n}"
        );
        ssh(
            &sb,
            n,
            &format!(
                "iptables -w -t nat -C POSTROUTING -s {} ! -d 10.244.0.0/16 -m comment --comment clusterkit-pod-network -j MASQUERADE",
                slices[n].as_str().unwrap()
            ),
        );
        assert_eq!(
            ssh(&sb, n, "systemctl is-enabled clusterkit-pod-network").trim(),
            "enabled"
        );
        conflists.insert(n.to_string(), conf);
    }

    // 3. Idempotent.
    let again = install_json(&cfg, &["--phase", "network"]);
    for n in nodes {
        assert_eq!(again["hosts"][n]["changed"], 0, "{again:#}");
        assert_eq!(again["hosts"][n]["failed"], 0, "{again:#}");
    }
    let check = install_json(&cfg, &["--phase", "network", "--check"]);
    for n in nodes {
        assert_eq!(
            check["hosts"][n]["changed"], 0,
            "--check on a converged cluster: {check:#}"
        );
    }

    // Drift: node2 loses its route to node1's slice and its masquerade rule. --check reports
    // it and changes nothing; a run repairs exactly that.
    let masq = format!(
        "-s {} ! -d 10.244.0.0/16 -m comment --comment clusterkit-pod-network -j MASQUERADE",
        slices["node2"].as_str().unwrap()
    );
    ssh(
        &sb,
        "node2",
        &format!("ip -4 route del 10.244.0.0/24 && iptables -w -t nat -D POSTROUTING {masq}"),
    );
    let check = install_json(&cfg, &["--phase", "network", "--check"]);
    assert_eq!(check["hosts"]["node1"]["changed"], 0, "{check:#}");
    assert_eq!(check["hosts"]["node2"]["changed"], 1, "{check:#}");
    assert_eq!(pod_routes(&sb, "node2").len(), 1, "--check must not repair");
    let fix = install_json(&cfg, &["--phase", "network"]);
    assert_eq!(fix["hosts"]["node2"]["changed"], 1, "{fix:#}");
    assert_eq!(fix["hosts"]["node3"]["changed"], 0, "{fix:#}");
    assert_eq!(
        pod_routes(&sb, "node2"),
        wanted_routes(&sb, "node2", &slices, &nodes)
    );
    ssh(
        &sb,
        "node2",
        &format!("iptables -w -t nat -C POSTROUTING {masq}"),
    );

    // 4. Real traffic: CNI ADD on node1 and node2, httpd in node2's pod, fetched from node1's pod.
    let bb = std::fs::read(&busybox).unwrap();
    let mut pod_ip = serde_json::Map::new();
    for n in ["node1", "node2", "node3"] {
        ssh_stdin(
            &sb,
            n,
            "cat > /root/busybox && chmod 0755 /root/busybox",
            &bb,
        );
    }
    for n in ["node1", "node2"] {
        ssh(
            &sb,
            n,
            "ip netns add ckpod && ip netns exec ckpod ip link set lo up",
        );
        let out = cni(&sb, n, "ADD", &bridge_config(&conflists[n]));
        let result: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{n}: {e}\n{out}"));
        let ip = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let slice = slices[n].as_str().unwrap();
        assert!(
            ip.starts_with(slice.trim_end_matches("0/24")),
            "{n}: {ip} outside {slice}"
        );
        assert_eq!(
            result["ips"][0]["gateway"],
            slice.replace("0/24", "1"),
            "{out}"
        );
        pod_ip.insert(n.to_string(), json!(ip));
    }
    let ip2 = pod_ip["node2"].as_str().unwrap();
    ssh(
        &sb,
        "node2",
        "mkdir -p /root/www && echo hello-from-node2 > /root/www/index.html; \
         ip netns exec ckpod setsid /root/busybox httpd -f -p 8080 -h /root/www </dev/null >/dev/null 2>&1 & echo $! > /root/httpd.pid",
    );
    ssh(
        &sb,
        "node1",
        &format!("ip netns exec ckpod /root/busybox ping -c 1 -W 5 {ip2}"),
    );
    let (fetched, body) = get_from_node1_pod(&sb, &format!("{ip2} 8080"));
    assert!(
        fetched && body.trim_end().ends_with("\nhello-from-node2"),
        "pod to pod across nodes failed: {body:?}"
    );

    // 5. Leaving the pod network is masqueraded: node3's (host) httpd sees node1's address.
    let node1_addr = sb.node("node1").unwrap().address.to_string();
    let node3_addr = sb.node("node3").unwrap().address.to_string();
    ssh(
        &sb,
        "node3",
        "mkdir -p /root/www && echo hello-from-node3 > /root/www/index.html; \
         setsid /root/busybox httpd -f -vv -p 8081 -h /root/www </dev/null >/root/httpd.log 2>&1 & echo $! > /root/httpd.pid",
    );
    let (fetched, body) = get_from_node1_pod(&sb, &format!("{node3_addr} 8081"));
    assert!(
        fetched && body.trim_end().ends_with("\nhello-from-node3"),
        "pod to another node failed: {body:?}"
    );
    let log = ssh(&sb, "node3", "cat /root/httpd.log");
    assert!(
        log.contains(&node1_addr),
        "expected the masqueraded source {node1_addr}:\n{log}"
    );
    assert!(
        !log.contains(pod_ip["node1"].as_str().unwrap()),
        "pod address leaked:\n{log}"
    );
    for n in ["node2", "node3"] {
        ssh(&sb, n, "kill $(cat /root/httpd.pid)");
    }

    // 6. CNI DEL releases the address; the namespaces go.
    for n in ["node1", "node2"] {
        let ip = pod_ip[n].as_str().unwrap();
        assert!(ssh(
            &sb,
            n,
            &format!("test -e /var/lib/cni/networks/clusterkit/{ip} && echo held")
        )
        .contains("held"));
        cni(&sb, n, "DEL", &bridge_config(&conflists[n]));
        ssh(
            &sb,
            n,
            &format!("test ! -e /var/lib/cni/networks/clusterkit/{ip} && ip netns del ckpod"),
        );
    }

    // 7. Routes and NAT come back after a restart (boot unit). The node's network namespace
    // outlives its systemd, so take them away first: only the unit can bring them back.
    ssh(
        &sb,
        "node3",
        "ip -4 route flush proto 75 && iptables -w -t nat -F POSTROUTING",
    );
    assert!(pod_routes(&sb, "node3").is_empty());
    sb.stop_node("node3").unwrap();
    sb.start_node("node3").unwrap();
    let mut routes = BTreeSet::new();
    let back = common::wait_until(Duration::from_secs(60), || {
        let out = ssh_cmd(
            &sb,
            "node3",
            "systemctl is-active clusterkit-pod-network && ip -4 route show proto 75",
        )
        .output()
        .unwrap();
        routes = stdout(&out)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[1] == "via").then(|| (f[0].to_string(), f[2].to_string()))
            })
            .collect();
        out.status.success() && routes == wanted_routes(&sb, "node3", &slices, &nodes)
    });
    assert!(back, "node3 after restart: {routes:?}");
    ssh(
        &sb,
        "node3",
        "iptables -w -t nat -S POSTROUTING | grep -q 'clusterkit-pod-network'",
    );

    // 8. node remove: node3's slice route disappears from node1 and node2, its slice is freed.
    let cluster = clusterkit_core::config::load(&cfg)
        .unwrap_or_else(|e| panic!("{e}"))
        .cluster;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let hosts: Vec<&clusterkit_core::config::Host> = cluster.hosts.iter().collect();
        let opts = InstallOptions::default();
        let (engine, targets) = phases::engine(&cluster, &hosts, &opts).unwrap();
        let library = phases::library(&[]);
        let cx = PhaseContext {
            cluster: &cluster,
            engine: &engine,
            targets: &targets,
            library: &library,
            check: false,
        };
        network::remove_node(&cx, "node3").await.unwrap();
        engine.finish()
    });
    assert!(report.failed_hosts().is_empty(), "{}", report.table());
    for n in ["node1", "node2"] {
        let want = wanted_routes(&sb, n, &slices, &["node1", "node2"]);
        assert_eq!(pod_routes(&sb, n), want, "{n} after removing node3");
    }
    let slices: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        slices,
        json!({"node1": "10.244.0.0/24", "node2": "10.244.1.0/24"})
    );
}
