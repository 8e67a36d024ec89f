//! Phase `addons`: kube-proxy on every node, run by systemd with its own kubeconfig
//! (`system:kube-proxy`, bound to `system:node-proxier` by Kubernetes' default RBAC) and a
//! KubeProxyConfiguration in the mode cluster.yaml chose (`ipvs` by default, `iptables` in the
//! sandbox, whose kernel has no IPVS).
//!
//! Limits: the pod network is the `network` phase's (host-gw) or the operator's manifests;
//! CoreDNS is not deployed (the readiness report says so); kube-proxy runs as a systemd service
//! rather than kubeadm's DaemonSet (there are no images in the sandbox). In
//! the sandbox profile kube-proxy leaves `nf_conntrack_max` alone (`conntrack.maxPerCore: 0`):
//! that sysctl is not per network namespace and would change the machine's.

use std::path::PathBuf;

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Profile, ProxyMode};
use serde_json::{json, Map, Value};

use super::common::{self, with_vars};
use super::control_plane::binary_files;
use super::{InstallError, Phase, PhaseContext};
use crate::kubeconfig::{Kubeconfig, UserEntry};
use crate::pki::{self, CaName, CertSpec, LoadedCa, StateLayout, Usage, Validity};
use crate::versions::Component;

/// The `addons` phase.
pub struct AddonsPhase;

/// kube-proxy's client certificate identity.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";

fn err(e: impl std::fmt::Display) -> InstallError {
    InstallError::Target {
        host: "local PKI".into(),
        message: e.to_string(),
    }
}

/// `<state>/kubeconfig/kube-proxy.conf`: created, or re-issued when its CA, server or
/// certificate is no longer right. Returns its path and whether it changed.
pub fn ensure_kube_proxy_conf(
    cluster: &Cluster,
    check: bool,
) -> Result<(PathBuf, bool), InstallError> {
    use base64::Engine as _;
    let layout = StateLayout::from_cluster(cluster);
    let path = layout.kubeconfig_dir().join("kube-proxy.conf");
    let server = format!("https://{}", cluster.kubernetes.control_plane_endpoint);
    let spec = CertSpec {
        name: "kube-proxy.conf".into(),
        base: "kubeconfig/kube-proxy.conf".into(),
        ca: CaName::Kubernetes,
        common_name: KUBE_PROXY_USER.into(),
        organization: vec![],
        usages: vec![Usage::ClientAuth],
        dns_names: vec![],
        ips: vec![],
    };
    let validity = Validity::default();
    let ca = match LoadedCa::load(&layout, CaName::Kubernetes) {
        Ok(ca) => ca,
        Err(_) if check => return Ok((path, true)),
        Err(e) => return Err(err(e)),
    };
    let now = time::OffsetDateTime::now_utc();
    let good = Kubeconfig::load(&path).ok().is_some_and(|k| {
        let ca_ok = k.ca_pem().and_then(|p| pki::pem_to_der(&p).ok()).as_deref() == Some(ca.cert_der());
        let cert = k.client_cert_pem().and_then(|p| pki::pem_to_der(&p).ok());
        let key = k.client_key_pem().and_then(|p| rcgen::KeyPair::from_pem(&p).ok());
        ca_ok
            && k.server() == Some(server.as_str())
            && matches!((cert, key), (Some(c), Some(key)) if pki::check_leaf(&c, &key, &spec, &ca, now, validity.renew_before).is_ok())
    });
    if good || check {
        return Ok((path, !good));
    }
    let (cert_pem, key_pem) = pki::issue_leaf(&spec, &ca, now, validity.leaf).map_err(err)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let k = Kubeconfig::new(
        &cluster.name,
        &server,
        &ca.cert_pem,
        KUBE_PROXY_USER,
        UserEntry {
            client_certificate_data: Some(b64.encode(cert_pem)),
            client_key_data: Some(b64.encode(key_pem)),
            token: None,
        },
    );
    pki::write_file(&path, k.to_yaml().map_err(err)?.as_bytes(), 0o600).map_err(err)?;
    Ok((path, true))
}

#[async_trait]
impl Phase for AddonsPhase {
    fn name(&self) -> &'static str {
        "addons"
    }
    fn describe(&self) -> &'static str {
        "kube-proxy on every node (systemd, own kubeconfig, KubeProxyConfiguration)"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        let pb = clusterkit_core::playbook::load(cx.library, "addons")?;
        let (conf, _) = ensure_kube_proxy_conf(cx.cluster, cx.check)?;
        let conf = std::fs::canonicalize(&conf).unwrap_or(conf);
        let bins = binary_files(cx.cluster, &["kube-proxy"])?;
        let mode = match cx.cluster.kubernetes.proxy_mode {
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Iptables => "iptables",
        };
        let mut failure = None;
        let targets = with_vars(cx.targets, |t| {
            let h = cx.cluster.host(&t.name)?;
            let input = common::flag_input(cx.cluster, h);
            let flags = match common::flags(cx.cluster, h, Component::KubeProxy) {
                Ok(f) => f,
                Err(e) => {
                    failure = Some(e);
                    return None;
                }
            };
            let mut m = Map::new();
            m.insert(
                "kube_proxy".into(),
                json!({
                    "flags": flags,
                    "config_path": input.kube_proxy_config.display().to_string(),
                    "kubeconfig_src": conf.display().to_string(),
                    "mode": mode,
                    "cluster_cidr": cx.cluster.kubernetes.pod_cidr.to_string(),
                    "sandbox": cx.cluster.profile == Profile::Sandbox,
                }),
            );
            m.insert("kube_proxy_binaries".into(), Value::Array(bins.clone()));
            Some(m)
        });
        if let Some(e) = failure {
            return Err(e);
        }
        cx.engine.run(&pb, &targets).await;
        Ok(())
    }
}
