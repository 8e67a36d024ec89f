//! The kubelet on every node: its variables (flags, KubeletConfiguration values, bootstrap
//! kubeconfig) and the shared `kubelet` playbook, run by the `control-plane` phase (static-pod
//! mode starts it on the control-plane hosts first) and by the `join` phase for every node.

use clusterkit_core::config::{Cluster, Host, Profile};
use serde_json::{json, Map, Value};

use super::common::{self, binary_files, with_vars};
use super::{InstallError, PhaseContext};
use crate::versions;
use clusterkit_core::layout::Component;

/// The kubelet variables of one node (`host.kubelet`): its flags, KubeletConfiguration
/// values, and the bootstrap kubeconfig text when one is given.
pub fn kubelet_vars(
    cluster: &Cluster,
    host: &Host,
    bootstrap: Option<&str>,
) -> Result<Value, InstallError> {
    let rules = versions::rules(cluster.kubernetes.version);
    let input = common::flag_input(cluster, host);
    Ok(json!({
        "flags": common::flags(cluster, host, Component::Kubelet)?,
        "config_path": input.kubelet_config.display().to_string(),
        "cluster_dns": clusterkit_core::config::nth_ip(&cluster.kubernetes.service_cidr, 10).to_string(),
        "cluster_domain": cluster.kubernetes.dns_domain,
        "runtime_endpoint_in_config": rules.kubelet_runtime_endpoint_in_config,
        "runtime_endpoint": input.container_runtime_endpoint,
        "sandbox": cluster.profile == Profile::Sandbox,
        "bootstrap_kubeconfig": bootstrap.unwrap_or(""),
        "api_server": super::load_balancer::node_api_server(cluster),
    }))
}

/// Loads and runs the shared `kubelet` playbook on `targets` with each host's kubelet vars.
pub async fn run_kubelet(
    cx: &PhaseContext<'_>,
    targets: &[clusterkit_core::playbook::HostTarget],
    bootstrap: Option<&str>,
) -> Result<(), InstallError> {
    let pb = clusterkit_core::playbook::load(cx.library, "kubelet")?;
    let bins = binary_files(cx.cluster, &["kubelet"])?;
    let mut err = None;
    let targets = with_vars(targets, |t| {
        let h = cx.cluster.host(&t.name)?;
        let mut m = Map::new();
        match kubelet_vars(cx.cluster, h, bootstrap) {
            Ok(v) => {
                m.insert("kubelet".into(), v);
            }
            Err(e) => err = Some(e),
        }
        m.insert("kubelet_binaries".into(), Value::Array(bins.clone()));
        Some(m)
    });
    if let Some(e) = err {
        return Err(e);
    }
    cx.engine.run(&pb, &targets).await;
    Ok(())
}
