//! The `cluster.yaml` a sandbox hands to the rest of clusterkit: its nodes with addresses,
//! the generated key, a known_hosts with the nodes' real host keys (no trust on first use),
//! and the sandbox profile's Kubernetes settings (iptables kube-proxy — this kernel has no
//! IPVS —, systemd control plane, host-gw pod network).
//!
//! Written by hand rather than serialised so it carries comments for the operator who opens it.

use std::fmt::Write;

use crate::node::Node;

/// The Kubernetes version the sandbox can run (built from Debian's source package).
pub const KUBERNETES_VERSION: &str = "v1.20.2";

/// Roles by position: node1 is the control plane; the first three nodes (or only node1 when
/// there are fewer than three) run etcd; every node but node1 is a worker.
pub fn roles(index: usize, nodes: usize) -> Vec<&'static str> {
    let mut roles = Vec::new();
    if index == 1 {
        roles.push("control-plane");
    } else {
        roles.push("worker");
    }
    if index == 1 || (nodes >= 3 && index <= 3) {
        roles.push("etcd");
    }
    roles
}

/// Renders cluster.yaml for a sandbox; paths are relative to the sandbox directory.
pub fn render(name: &str, nodes: &[Node]) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Written by `clusterkit sandbox up --name {name}`: {} local systemd-nspawn nodes.\n\
         # Rewritten on every `up`; removed by `clusterkit sandbox down --name {name}`.",
        nodes.len()
    );
    let _ = writeln!(y, "name: {name}");
    let _ = writeln!(y, "profile: sandbox");
    let _ = writeln!(y, "ssh:");
    let _ = writeln!(
        y,
        "  # The nodes' real host keys, read from their /etc/ssh."
    );
    let _ = writeln!(y, "  known_hosts: ./known_hosts");
    let _ = writeln!(y, "  trust_on_first_use: false");
    let _ = writeln!(y, "  connect_timeout_secs: 10");
    let _ = writeln!(y, "hosts:");
    for n in nodes {
        let roles = roles(n.index, nodes.len()).join(", ");
        let _ = writeln!(y, "  - name: {}", n.name);
        let _ = writeln!(y, "    address: {}", n.address);
        let _ = writeln!(y, "    port: 22");
        let _ = writeln!(y, "    user: root");
        let _ = writeln!(y, "    roles: [{roles}]");
        let _ = writeln!(y, "    auth: {{ key_file: ./id_ed25519 }}");
    }
    let cp = nodes
        .first()
        .map(|n| n.address.to_string())
        .unwrap_or_default();
    let _ = writeln!(y, "kubernetes:");
    let _ = writeln!(y, "  version: {KUBERNETES_VERSION}");
    let _ = writeln!(y, "  pod_cidr: 10.244.0.0/16");
    let _ = writeln!(y, "  service_cidr: 10.96.0.0/12");
    let _ = writeln!(y, "  # The sandbox kernel has no IPVS.");
    let _ = writeln!(y, "  proxy_mode: iptables");
    let _ = writeln!(y, "  control_plane_endpoint: \"{cp}:6443\"");
    let _ = writeln!(y, "  control_plane_mode: systemd");
    let _ = writeln!(y, "  network: host-gw");
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn roles_by_position() {
        assert_eq!(roles(1, 1), ["control-plane", "etcd"]);
        assert_eq!(roles(2, 2), ["worker"]);
        assert_eq!(roles(2, 3), ["worker", "etcd"]);
        assert_eq!(roles(3, 5), ["worker", "etcd"]);
        assert_eq!(roles(4, 5), ["worker"]);
    }

    #[test]
    fn renders_hosts() {
        let nodes = vec![
            Node {
                name: "node1".into(),
                index: 1,
                address: Ipv4Addr::new(10, 213, 7, 11),
                pid: None,
            },
            Node {
                name: "node2".into(),
                index: 2,
                address: Ipv4Addr::new(10, 213, 7, 12),
                pid: None,
            },
        ];
        let y = render("t1", &nodes);
        assert!(y.contains("name: t1\n"));
        assert!(y.contains("  - name: node2\n    address: 10.213.7.12\n"));
        assert!(y.contains("control_plane_endpoint: \"10.213.7.11:6443\""));
        assert!(y.contains("roles: [control-plane, etcd]"));
    }
}
