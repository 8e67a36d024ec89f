//! Phase `load-balancer`: the optional local API load balancer on every node (kubeasz's "l4
//! lb on each node"), on when cluster.yaml says `kubernetes.load_balancer: { local: true }`.
//!
//! Every node gets Debian's haproxy (from the offline bundle or the repositories; build the
//! bundle with `--package haproxy`) with `templates/haproxy/haproxy.cfg`: it listens on
//! `127.0.0.1:<port>` (default 16443) in TCP mode and forwards to every control-plane host's
//! API server on 6443, round robin. TLS passes through untouched: clients still verify the API
//! server's certificate (which has 127.0.0.1 in its SANs) and present their own. Backends are
//! health-checked with `GET /readyz` over TLS, verified against the cluster CA and the host's
//! name (`verifyhost`), every 2 s, out after 2 failures and back after 2 passes
//! ([`readmit_delay`]): a bare TCP check would keep sending
//! requests to an API server whose port is open but which has lost etcd or is still starting.
//! `/readyz` is readable anonymously (`system:public-info-viewer`).
//!
//! Who uses it ([`node_api_server`]): the kubelets (the control-plane hosts' kubelet.conf, the
//! workers' bootstrap kubeconfig and the kubelet.conf TLS bootstrap writes from it) and
//! kube-proxy. The controller manager and scheduler keep talking to their own host's API
//! server (as kubeadm does), and the operator's admin.conf, `cluster-info` and the printed
//! `kubeadm join` command keep `control_plane_endpoint`.
//!
//! The phase runs before `control-plane`, so a kubelet never starts without its load balancer;
//! haproxy starts with every backend down and picks each API server up as it becomes ready.
//!
//! Limits: with the load balancer turned off again the phase does nothing (haproxy stays
//! installed and running, unused: node kubeconfigs, the TLS-bootstrapped kubelet.conf
//! included, go back to the endpoint on the next install). `clusterkit node add` of a
//! control-plane host runs this phase on every node, so each gets the new backend
//! (tests/install_ha.rs). A node joined with the printed `kubeadm join` command uses the
//! endpoint, not the load balancer. `clusterkit reset` stops and disables haproxy when its
//! config is clusterkit's, and leaves the package installed.

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Role};
use clusterkit_core::layout::NodeLayout;
use serde_json::{json, Map, Value};

use super::common::with_vars;
use super::{InstallError, Phase, PhaseContext};
use crate::versions::join_host_port;

/// The `load-balancer` phase.
pub struct LoadBalancerPhase;

/// Seconds between two health checks of a backend.
const CHECK_INTERVAL_SECS: u64 = 2;
/// Failed checks in a row that take a backend out.
const CHECK_FALL: u64 = 2;
/// Passed checks in a row that take a backend back in.
const CHECK_RISE: u64 = 2;

/// How long after an API server is ready again every node's load balancer has taken it back
/// in (its checks passed [`CHECK_RISE`] times, one interval of slack); zero without the local
/// load balancer. A roll waits this long before it restarts the next API server, or for that
/// moment no backend would be in.
pub fn readmit_delay(cluster: &Cluster) -> std::time::Duration {
    if !cluster.kubernetes.load_balancer.local {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_secs((CHECK_RISE + 1) * CHECK_INTERVAL_SECS)
}

/// How long a stopping kube-apiserver keeps serving, out of rotation, before it stops
/// (`--shutdown-delay-duration`) when the cluster has more than one: long enough for every
/// node's load balancer to take it out (its `/readyz` fails at once: [`CHECK_FALL`] failed
/// checks, one interval of slack) and for kube-proxy to drop it from the `kubernetes` Service
/// (it leaves the endpoints at once; kube-proxy resyncs within a second). Then a restart, one
/// API server at a time, fails no request. `None` with a single API server: nothing could
/// take its requests.
pub fn shutdown_delay(cluster: &Cluster) -> Option<std::time::Duration> {
    (cluster.hosts_with_role(Role::ControlPlane).len() > 1)
        .then(|| std::time::Duration::from_secs((CHECK_FALL + 1) * CHECK_INTERVAL_SECS))
}

/// The URL node components (kubelet, kube-proxy) reach the API at: the local load balancer's
/// `https://127.0.0.1:<port>` when it is on, else `https://<control_plane_endpoint>`.
pub fn node_api_server(cluster: &Cluster) -> String {
    cluster
        .kubernetes
        .load_balancer
        .local_url()
        .unwrap_or_else(|| format!("https://{}", cluster.kubernetes.control_plane_endpoint))
}

/// The haproxy backends: `{name, address}` (`ip:<apiserver port>`) of every control-plane
/// host, in cluster.yaml order.
pub fn backends(cluster: &Cluster) -> Vec<Value> {
    let port = NodeLayout::from_cluster(cluster).ports.apiserver;
    cluster
        .hosts_with_role(Role::ControlPlane)
        .iter()
        .map(|h| {
            json!({
                "name": h.name,
                "address": join_host_port(h.address, port),
            })
        })
        .collect()
}

/// What the playbook and the template see as `host.load_balancer` (the same on every node).
pub fn vars(cluster: &Cluster) -> Value {
    json!({
        "port": cluster.kubernetes.load_balancer.port,
        // The CA certificate every node has (the pki phase), which the health checks verify
        // with.
        "ca_file": NodeLayout::from_cluster(cluster).pki("ca.crt"),
        "backends": backends(cluster),
        "check": {
            "interval_secs": CHECK_INTERVAL_SECS,
            "fall": CHECK_FALL,
            "rise": CHECK_RISE,
        },
    })
}

#[async_trait]
impl Phase for LoadBalancerPhase {
    fn name(&self) -> &'static str {
        "load-balancer"
    }
    fn describe(&self) -> &'static str {
        "local API load balancer on every node (haproxy on 127.0.0.1, /readyz-checked control-plane backends), when kubernetes.load_balancer.local"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        // Validated even when off, so a broken override fails before any host is touched.
        let pb = clusterkit_core::playbook::load(cx.library, "load-balancer")?;
        if !cx.cluster.kubernetes.load_balancer.local {
            tracing::info!("kubernetes.load_balancer.local is off: no local load balancer");
            return Ok(());
        }
        let lb = vars(cx.cluster);
        let targets = with_vars(cx.targets, |_| {
            let mut m = Map::new();
            m.insert("load_balancer".into(), lb.clone());
            Some(m)
        });
        cx.engine.run(&pb, &targets).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit_core::playbook::render::render_text;

    fn cluster(kubernetes: &str) -> Cluster {
        let text = format!(
            "name: demo\nhosts:\n  - {{ name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: {{ key_file: ./k }} }}\n  - {{ name: cp2, address: 10.0.0.12, roles: [control-plane, etcd, worker], auth: {{ key_file: ./k }} }}\n  - {{ name: w1, address: 10.0.0.13, roles: [worker, etcd], auth: {{ key_file: ./k }} }}\n  - {{ name: cp3, address: 10.0.0.14, roles: [control-plane], auth: {{ key_file: ./k }} }}\nkubernetes: {kubernetes}\n"
        );
        crate::test_cluster(&text)
    }

    #[test]
    fn node_components_use_the_local_load_balancer_only_when_it_is_on() {
        let off = cluster("{ version: v1.20.2, control_plane_endpoint: \"api.demo:6443\" }");
        assert_eq!(node_api_server(&off), "https://api.demo:6443");
        let on = cluster("{ version: v1.20.2, load_balancer: { local: true, port: 7443 } }");
        assert_eq!(node_api_server(&on), "https://127.0.0.1:7443");
        // The operator's endpoint is unchanged: the first control-plane host by default.
        assert_eq!(
            on.kubernetes.control_plane_endpoint.to_string(),
            "10.0.0.11:6443"
        );
    }

    #[test]
    fn kubeconfig_servers_follow_the_load_balancer_setting() {
        let on = cluster("{ version: v1.20.2, load_balancer: { local: true } }");
        let specs = crate::kubeconfig::kubeconfig_specs(&super::super::pki::input(&on));
        let server = |name: &str| {
            specs
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .server
                .clone()
        };
        // The operator keeps the endpoint; kubelets use the local load balancer; the
        // controller manager and scheduler their own host's API server.
        assert_eq!(server("admin.conf"), "https://10.0.0.11:6443");
        for cp in ["cp1", "cp2", "cp3"] {
            assert_eq!(
                server(&format!("kubelet.conf/{cp}")),
                "https://127.0.0.1:16443"
            );
        }
        assert_eq!(
            server("controller-manager.conf/cp2"),
            "https://10.0.0.12:6443"
        );
        assert_eq!(server("scheduler.conf/cp3"), "https://10.0.0.14:6443");
        // Workers: the bootstrap kubeconfig and the kubelet.conf rewrite use the same URL.
        let w1 = on.host("w1").unwrap();
        let kubelet = super::super::kubelet::kubelet_vars(&on, w1, None).unwrap();
        assert_eq!(kubelet["api_server"], "https://127.0.0.1:16443");

        let off = cluster("{ version: v1.20.2 }");
        let specs = crate::kubeconfig::kubeconfig_specs(&super::super::pki::input(&off));
        let kubelet_conf = specs.iter().find(|s| s.name == "kubelet.conf/cp1").unwrap();
        assert_eq!(kubelet_conf.server, "https://10.0.0.11:6443");
        let kubelet = super::super::kubelet::kubelet_vars(&off, w1, None).unwrap();
        assert_eq!(kubelet["api_server"], "https://10.0.0.11:6443");
    }

    #[test]
    fn haproxy_config_lists_every_control_plane_host_with_checked_tls() {
        let c = cluster("{ version: v1.20.2, load_balancer: { local: true } }");
        let text = render_text(
            include_str!("../../../templates/haproxy/haproxy.cfg"),
            &json!({ "host": { "load_balancer": vars(&c) } }),
        )
        .unwrap();
        assert!(text.contains("    bind 127.0.0.1:16443\n"), "{text}");
        let servers: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("server "))
            .collect();
        assert_eq!(
            servers,
            [
                "    server cp1 10.0.0.11:6443 verifyhost cp1",
                "    server cp2 10.0.0.12:6443 verifyhost cp2",
                "    server cp3 10.0.0.14:6443 verifyhost cp3",
            ],
            "control-plane hosts only, in cluster.yaml order:\n{text}"
        );
        assert!(text.contains("    mode tcp\n"), "{text}");
        assert!(text.contains("option httpchk GET /readyz"), "{text}");
        assert!(
            text.contains(
                "default-server check check-ssl verify required ca-file /etc/kubernetes/pki/ca.crt"
            ),
            "health checks verify the API server against the cluster CA: {text}"
        );
        assert!(!text.contains("verify none"), "{text}");
    }
}
