//! Phase `addons`: kube-proxy on every node, and CoreDNS on real clusters.
//!
//! kube-proxy runs as kubeadm runs it where the cluster is kubeadm-shaped (static-pod mode,
//! [`kube_proxy_daemonset`]): `templates/kubernetes/kube-proxy.yaml` (kubeadm's proxy addon:
//! ServiceAccount `kube-proxy`, ClusterRoleBinding `kubeadm:node-proxier`, the `kube-proxy`
//! ConfigMap with `config.conf` and `kubeconfig.conf`, the DaemonSet) applied through the API
//! with the bundle's kube-proxy image (tagged as kubeadm names it, imported on every node by
//! the images phase), after which the phase waits until a pod is ready on every node; a
//! kube-proxy unit left from a systemd-run kube-proxy is stopped and removed first, so two
//! never program the same node. In systemd mode kube-proxy is a systemd service with its own
//! kubeconfig (`system:kube-proxy`, bound to `system:node-proxier` by Kubernetes' default
//! RBAC). Either way its KubeProxyConfiguration (`templates/kubernetes/kube-proxy-config.yaml`)
//! has the mode cluster.yaml chose (`ipvs` by default, `iptables` in the sandbox, whose kernel
//! has no IPVS).
//!
//! CoreDNS (cluster DNS), on real clusters: `templates/kubernetes/coredns.yaml` (kubeadm's
//! addon: ServiceAccount, RBAC, Corefile for `kubernetes.dns_domain`, Deployment, Service
//! `kube-dns` on the 10th address of the service CIDR, the kubelets' `clusterDNS`) rendered here
//! and applied with server-side apply through the API. The image is
//! `<kubernetes.image_repository>/coredns/coredns:<tag>`, the tag kubeadm pins for the
//! Kubernetes release ([`coredns_image`]). In the sandbox profile there is no CoreDNS
//! image (no registry): the phase says so ([`NO_COREDNS_IN_SANDBOX`], the readiness report's
//! words too) and services are reached by ClusterIP.
//!
//! Limits: the pod network is the `network` phase's (host-gw) or the operator's manifests;
//! check mode does not compare the API objects with the cluster's. In the sandbox profile
//! kube-proxy leaves `nf_conntrack_max` alone (`conntrack.maxPerCore: 0`): that sysctl is not
//! per network namespace and would change the machine's.

use clusterkit_core::layout::kubeconfig_file;
use std::path::PathBuf;

use async_trait::async_trait;
use clusterkit_core::config::{nth_ip, Cluster, ControlPlaneMode, Profile, ProxyMode, Role};
use clusterkit_core::playbook::Library;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Map, Value};

use super::common::binary_files;
use super::common::{self, with_vars};
use super::{InstallError, Phase, PhaseContext};
use crate::kube_api;
use crate::kubeconfig::{Kubeconfig, UserEntry};
use crate::pki::{self, CaName, CertSpec, LoadedCa, Usage, Validity};
use clusterkit_core::layout::{Component, NodeLayout, StateLayout};
use clusterkit_core::release::{self, ReleaseImages};

/// The `addons` phase.
pub struct AddonsPhase;

/// kube-proxy's client certificate identity.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";

fn err(e: impl Into<super::Cause>) -> InstallError {
    InstallError::host("local PKI", "", e)
}

/// `<state>/kubeconfig/kube-proxy.conf`: created, or re-issued when its CA, server or
/// certificate is no longer right. Returns its path and whether it changed.
pub fn ensure_kube_proxy_conf(
    cluster: &Cluster,
    check: bool,
) -> Result<(PathBuf, bool), InstallError> {
    use base64::Engine as _;
    let layout = StateLayout::from_cluster(cluster);
    let path = layout.kubeconfig_dir().join(kubeconfig_file::KUBE_PROXY);
    // The local load balancer when it is on (the same address on every node).
    let server = super::load_balancer::node_api_server(cluster);
    let spec = CertSpec {
        name: kubeconfig_file::KUBE_PROXY.into(),
        base: std::path::Path::new(StateLayout::KUBECONFIG).join(kubeconfig_file::KUBE_PROXY),
        ca: CaName::Kubernetes,
        common_name: KUBE_PROXY_USER.into(),
        organization: vec![],
        usages: vec![Usage::ClientAuth],
        dns_names: vec![],
        ips: vec![],
    };
    let validity = Validity::from_config(&cluster.pki);
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

/// Why the sandbox has no cluster DNS (the readiness report says the same).
pub const NO_COREDNS_IN_SANDBOX: &str = "there is no CoreDNS image in the sandbox (no registry)";

/// The CoreDNS template, relative to `templates/`.
pub const COREDNS_TEMPLATE: &str = "kubernetes/coredns.yaml";

/// Field manager of clusterkit's server-side applies of addon objects.
const FIELD_MANAGER: &str = "clusterkit";

/// `<image_repository>/coredns/coredns:<tag>` (`…/coredns:1.7.0` before v1.21), kubeadm's
/// CoreDNS for the cluster's release ([`clusterkit_core::release::images`]).
pub fn coredns_image(cluster: &Cluster) -> String {
    let v = cluster.kubernetes.version;
    format!(
        "{}/{}:{}",
        cluster.kubernetes.image_repository.trim_end_matches('/'),
        ReleaseImages::coredns_path(v.minor),
        release::images(v.minor, v.patch).coredns
    )
}

/// The template's context: `coredns.{image, cluster_ip, dns_domain, replicas}`.
pub fn coredns_context(cluster: &Cluster) -> Value {
    json!({
        "coredns": {
            "image": coredns_image(cluster),
            "cluster_ip": nth_ip(&cluster.kubernetes.service_cidr, 10).to_string(),
            "dns_domain": cluster.kubernetes.dns_domain.to_string(),
            "replicas": 2,
        }
    })
}

/// The objects of an addon manifest (CoreDNS, kube-proxy), typed.
#[derive(Debug, Clone, Default)]
pub struct AddonObjects {
    pub service_accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub config_maps: Vec<ConfigMap>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub daemon_sets: Vec<DaemonSet>,
}

/// An addon manifest document that is not what clusterkit applies.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {doc}: {source}")]
    Yaml {
        doc: usize,
        #[source]
        source: serde_saphyr::Error,
    },

    #[error("document {doc} ({kind}): {source}")]
    Schema {
        doc: usize,
        kind: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("document {doc}: unexpected kind {kind:?}")]
    Kind { doc: usize, kind: String },
}

/// Parses a multi-document manifest into the addon object kinds; any other kind, or a
/// document that does not fit its kind's schema, is an error naming the document.
pub fn parse_objects(text: &str) -> Result<AddonObjects, ManifestError> {
    let mut out = AddonObjects::default();
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    for (n, doc) in docs.iter().enumerate() {
        let v: Value = serde_saphyr::from_str(doc)
            .map_err(|source| ManifestError::Yaml { doc: n + 1, source })?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let bad = |source| ManifestError::Schema {
            doc: n + 1,
            kind: kind.clone(),
            source,
        };
        match kind.as_str() {
            "ServiceAccount" => out
                .service_accounts
                .push(serde_json::from_value(v).map_err(bad)?),
            "ClusterRole" => out
                .cluster_roles
                .push(serde_json::from_value(v).map_err(bad)?),
            "ClusterRoleBinding" => out
                .cluster_role_bindings
                .push(serde_json::from_value(v).map_err(bad)?),
            "ConfigMap" => out
                .config_maps
                .push(serde_json::from_value(v).map_err(bad)?),
            "Deployment" => out
                .deployments
                .push(serde_json::from_value(v).map_err(bad)?),
            "Service" => out.services.push(serde_json::from_value(v).map_err(bad)?),
            "DaemonSet" => out
                .daemon_sets
                .push(serde_json::from_value(v).map_err(bad)?),
            other => {
                return Err(ManifestError::Kind {
                    doc: n + 1,
                    kind: other.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Renders an addon template (an operator's override wins) with `context` and parses it.
fn render_objects(
    library: &Library,
    template: &str,
    context: &Value,
) -> Result<AddonObjects, InstallError> {
    let fail = |e: super::Cause| InstallError::host(format!("templates/{template}"), "", e);
    let source = library.template(template)?;
    let text = clusterkit_core::playbook::render::render_text(&source.text, context)
        .map_err(|e| fail(e.into()))?;
    parse_objects(&text).map_err(|e| fail(e.into()))
}

/// Renders the CoreDNS template (an operator's override wins) and parses it.
pub fn render_coredns(library: &Library, cluster: &Cluster) -> Result<AddonObjects, InstallError> {
    render_objects(library, COREDNS_TEMPLATE, &coredns_context(cluster))
}

/// Whether kube-proxy runs as kubeadm's DaemonSet: in the kubeadm-shaped cluster (static-pod
/// mode); systemd mode runs it as a systemd service.
pub fn kube_proxy_daemonset(cluster: &Cluster) -> bool {
    cluster.kubernetes.control_plane_mode == ControlPlaneMode::StaticPod
}

/// kube-proxy's image, as kubeadm names it (`registry.k8s.io/kube-proxy:v1.20.2`): the bundle
/// builds it from its kube-proxy binary.
pub fn kube_proxy_image(cluster: &Cluster) -> String {
    super::control_plane::component_image(cluster, Component::KubeProxy)
}

/// The name of kubeadm's kube-proxy DaemonSet in `kube-system`, as the template names it.
pub const KUBE_PROXY_DAEMONSET: &str = "kube-proxy";

/// The kube-proxy addon template, relative to `templates/`.
pub const KUBE_PROXY_TEMPLATE: &str = "kubernetes/kube-proxy.yaml";

/// The KubeProxyConfiguration template, relative to `templates/` (the systemd service's file,
/// and the DaemonSet's `config.conf`).
pub const KUBE_PROXY_CONFIG_TEMPLATE: &str = "kubernetes/kube-proxy-config.yaml";

/// Where the DaemonSet's pods find the `kube-proxy` ConfigMap's files (kubeadm's paths).
pub const KUBE_PROXY_POD_DIR: &str = "/var/lib/kube-proxy";

/// What the KubeProxyConfiguration template needs (`host.kube_proxy` of its context), with
/// the kubeconfig kube-proxy reads.
fn kube_proxy_config_vars(cluster: &Cluster, kubeconfig: &str) -> Value {
    json!({
        "kubeconfig": kubeconfig,
        "mode": match cluster.kubernetes.proxy_mode {
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Iptables => "iptables",
        },
        "cluster_cidr": cluster.kubernetes.pod_cidr.to_string(),
        "sandbox": cluster.profile == Profile::Sandbox,
    })
}

/// The kube-proxy template's context: `kube_proxy.{image, server, config}`, the
/// config rendered from [`KUBE_PROXY_CONFIG_TEMPLATE`] with the ConfigMap's kubeconfig path.
pub fn kube_proxy_context(library: &Library, cluster: &Cluster) -> Result<Value, InstallError> {
    let source = library.template(KUBE_PROXY_CONFIG_TEMPLATE)?;
    let vars = kube_proxy_config_vars(cluster, &format!("{KUBE_PROXY_POD_DIR}/kubeconfig.conf"));
    let config = clusterkit_core::playbook::render::render_text(
        &source.text,
        &json!({ "host": { "kube_proxy": vars }, "layout": NodeLayout::from_cluster(cluster) }),
    )
    .map_err(|e| InstallError::host(format!("templates/{KUBE_PROXY_CONFIG_TEMPLATE}"), "", e))?;
    Ok(json!({
        "kube_proxy": {
            "image": kube_proxy_image(cluster),
            "server": super::load_balancer::node_api_server(cluster),
            "config": config,
        }
    }))
}

/// Renders kubeadm's kube-proxy addon for the cluster and parses it.
pub fn render_kube_proxy(
    library: &Library,
    cluster: &Cluster,
) -> Result<AddonObjects, InstallError> {
    render_objects(
        library,
        KUBE_PROXY_TEMPLATE,
        &kube_proxy_context(library, cluster)?,
    )
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<(), InstallError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| kube_api::api_err(format!("applying {} {name}", K::kind(&())), e))?;
    Ok(())
}

/// Applies every object of an addon (namespaced ones in their manifest namespace).
pub async fn apply_objects(client: &kube::Client, objs: &AddonObjects) -> Result<(), InstallError> {
    fn ns(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
        m.namespace.clone().unwrap_or_else(|| "kube-system".into())
    }
    for o in &objs.service_accounts {
        apply(&Api::namespaced(client.clone(), &ns(&o.metadata)), o).await?;
    }
    for o in &objs.cluster_roles {
        apply(&Api::all(client.clone()), o).await?;
    }
    for o in &objs.cluster_role_bindings {
        apply(&Api::all(client.clone()), o).await?;
    }
    for o in &objs.config_maps {
        apply(&Api::namespaced(client.clone(), &ns(&o.metadata)), o).await?;
    }
    for o in &objs.services {
        apply(&Api::namespaced(client.clone(), &ns(&o.metadata)), o).await?;
    }
    for o in &objs.deployments {
        apply(&Api::namespaced(client.clone(), &ns(&o.metadata)), o).await?;
    }
    for o in &objs.daemon_sets {
        apply(&Api::namespaced(client.clone(), &ns(&o.metadata)), o).await?;
    }
    Ok(())
}

/// Whether a control-plane host failed in this run: then there is no API to apply to (the
/// report already names the host).
fn control_plane_failed(cx: &PhaseContext<'_>) -> bool {
    cx.cluster
        .hosts_with_role(Role::ControlPlane)
        .iter()
        .any(|h| cx.engine.host_failed(&h.name))
}

/// CoreDNS: applied on real clusters, a plain note in the sandbox.
async fn coredns(cx: &PhaseContext<'_>) -> Result<(), InstallError> {
    if cx.cluster.profile == Profile::Sandbox {
        tracing::warn!(
            "no cluster DNS: CoreDNS is not installed ({NO_COREDNS_IN_SANDBOX}); pods reach services by ClusterIP, not by name"
        );
        return Ok(());
    }
    // Render and type-check first: a broken override fails before anything is applied.
    let objs = render_coredns(cx.library, cx.cluster)?;
    let cp_failed = control_plane_failed(cx);
    if cx.check || cp_failed {
        // No API to talk to (the report already names the failed host), or nothing to change.
        tracing::info!(image = %coredns_image(cx.cluster), "CoreDNS not applied (check mode or no control plane)");
        return Ok(());
    }
    let client = kube_api::admin_client(cx.cluster, None).await?;
    apply_objects(&client, &objs).await
}

#[async_trait]
impl Phase for AddonsPhase {
    fn name(&self) -> &'static str {
        "addons"
    }
    fn describe(&self) -> &'static str {
        "kube-proxy on every node (kubeadm's DaemonSet in static-pod mode, else systemd); CoreDNS on real clusters"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        let pb = clusterkit_core::playbook::load(cx.library, "addons")?;
        let daemonset = kube_proxy_daemonset(cx.cluster);
        // Render and type-check the DaemonSet's objects before any node is touched.
        let objs = if daemonset {
            Some(render_kube_proxy(cx.library, cx.cluster)?)
        } else {
            None
        };
        let (conf, bins) = if daemonset {
            (PathBuf::new(), Vec::new())
        } else {
            let (conf, _) = ensure_kube_proxy_conf(cx.cluster, cx.check)?;
            let conf = std::fs::canonicalize(&conf).unwrap_or(conf);
            (conf, binary_files(cx.cluster, &["kube-proxy"])?)
        };
        let layout = NodeLayout::from_cluster(cx.cluster);
        let mut failure = None;
        let targets = with_vars(cx.targets, |t| {
            let h = cx.cluster.host(&t.name)?;
            let input = common::flag_input(cx.cluster, h);
            let flags = if daemonset {
                Vec::new()
            } else {
                match common::flags(cx.cluster, h, Component::KubeProxy) {
                    Ok(f) => f,
                    Err(e) => {
                        failure = Some(e);
                        return None;
                    }
                }
            };
            let mut vars =
                kube_proxy_config_vars(cx.cluster, &layout.kubeconfig(kubeconfig_file::KUBE_PROXY));
            vars["daemonset"] = json!(daemonset);
            vars["flags"] = json!(flags);
            vars["config_path"] = json!(input.kube_proxy_config.display().to_string());
            vars["kubeconfig_src"] = json!(conf.display().to_string());
            let mut m = Map::new();
            m.insert("kube_proxy".into(), vars);
            m.insert("kube_proxy_binaries".into(), Value::Array(bins.clone()));
            Some(m)
        });
        if let Some(e) = failure {
            return Err(e);
        }
        cx.engine.run(&pb, &targets).await;
        if let Some(objs) = objs {
            kube_proxy_daemonset_up(cx, &objs).await?;
        }
        coredns(cx).await
    }
}

/// How long the phase waits for a ready kube-proxy pod on every node.
pub const KUBE_PROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// kube-proxy as kubeadm's DaemonSet: its objects applied, the systemd kube-proxy's state
/// kubeconfig gone (the playbook removed the nodes' copies and units; nothing distributes it
/// again), then a wait until every scheduled pod runs the applied spec and is ready.
async fn kube_proxy_daemonset_up(
    cx: &PhaseContext<'_>,
    objs: &AddonObjects,
) -> Result<(), InstallError> {
    let cp_failed = control_plane_failed(cx);
    if cx.check || cp_failed {
        return Ok(());
    }
    let state_conf = StateLayout::from_cluster(cx.cluster)
        .kubeconfig_dir()
        .join(kubeconfig_file::KUBE_PROXY);
    if state_conf.exists() {
        std::fs::remove_file(&state_conf).map_err(err)?;
    }
    let client = kube_api::admin_client(cx.cluster, None).await?;
    apply_objects(&client, objs).await?;
    let api: Api<DaemonSet> = Api::namespaced(client, "kube-system");
    crate::poll::wait_until(KUBE_PROXY_TIMEOUT, || async {
        let ds = api.get(KUBE_PROXY_DAEMONSET).await.map_err(|e| {
            crate::poll::NotReady::failed("reading DaemonSet kube-system/kube-proxy", e)
        })?;
        let generation = ds.metadata.generation.unwrap_or_default();
        let status = ds.status.unwrap_or_default();
        let desired = status.desired_number_scheduled;
        let updated = status.updated_number_scheduled.unwrap_or_default();
        if desired > 0
            && status.observed_generation.unwrap_or_default() >= generation
            && updated == desired
            && status.number_ready == desired
        {
            Ok(())
        } else {
            Err(crate::poll::NotReady::Seen(format!(
                "kube-proxy pods: {} of {desired} ready, {updated} updated",
                status.number_ready
            )))
        }
    })
    .await
    .map_err(|source| InstallError::Timeout {
        host: "addons".into(),
        what: "kube-proxy's DaemonSet was not ready on every node".into(),
        secs: KUBE_PROXY_TIMEOUT.as_secs(),
        source,
    })
}

/// Replaces the kube-proxy pod that kubeadm's DaemonSet runs on `node` (a pod of the
/// DaemonSet's selector there, deleted) and waits until the DaemonSet's new pod there is
/// running with every container ready: a new process reads the binary and configuration the
/// DaemonSet names now. The DaemonSet creates the new pod only once the old one is gone, so
/// the two never program the node together.
pub async fn replace_kube_proxy_pod(
    client: &kube::Client,
    node: &str,
) -> Result<(), crate::poll::NotReady> {
    use crate::poll::NotReady;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, ListParams};
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let ds = ds
        .get(KUBE_PROXY_DAEMONSET)
        .await
        .map_err(|e| NotReady::failed("reading DaemonSet kube-system/kube-proxy", e))?;
    let selector = ds
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let on_node = ListParams::default()
        .labels(&selector)
        .fields(&format!("spec.nodeName={node}"));
    let what = format!("kube-proxy pods on {node}");
    let (names, old): (Vec<String>, Vec<String>) = pods
        .list(&on_node)
        .await
        .map_err(|e| NotReady::failed(&what, e))?
        .items
        .into_iter()
        .map(|p| {
            let m = p.metadata;
            (m.name.unwrap_or_default(), m.uid.unwrap_or_default())
        })
        .unzip();
    for name in &names {
        pods.delete(name, &DeleteParams::default())
            .await
            .map_err(|e| NotReady::failed(format!("deleting pod kube-system/{name}"), e))?;
    }
    crate::poll::wait_until(KUBE_PROXY_TIMEOUT, || async {
        let now = pods
            .list(&on_node)
            .await
            .map_err(|e| NotReady::failed(&what, e))?;
        let ready = now.items.iter().any(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            !old.contains(&uid)
                && status.phase.as_deref() == Some("Running")
                && status
                    .container_statuses
                    .as_ref()
                    .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.ready))
        });
        if ready {
            Ok(())
        } else {
            Err(NotReady::Seen(format!(
                "no new ready kube-proxy pod on {node} yet ({} pods)",
                now.items.len()
            )))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id_ed25519");
        std::fs::write(&key, "not a key\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let yaml = format!(
            "name: demo\nhosts:\n  - {{ name: cp1, address: 10.213.0.11, roles: [control-plane, etcd, worker], auth: {{ key_file: ./id_ed25519 }} }}\n{extra}"
        );
        let path = tmp.path().join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        clusterkit_core::config::load(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .cluster
    }

    #[test]
    fn coredns_images_follow_kubeadm() {
        let image = |v: &str| coredns_image(&cluster(&format!("kubernetes: {{ version: {v} }}\n")));
        // Before v1.21 kubeadm's CoreDNS image is `<repo>/coredns:1.7.0`.
        assert_eq!(image("v1.20.2"), "registry.k8s.io/coredns:1.7.0");
        assert_eq!(image("v1.26.3"), "registry.k8s.io/coredns/coredns:v1.9.3");
        assert_eq!(image("v1.30.0"), "registry.k8s.io/coredns/coredns:v1.11.1");
        assert_eq!(image("v1.34.0"), "registry.k8s.io/coredns/coredns:v1.12.1");
    }

    #[test]
    fn coredns_manifests_are_typed_with_image_and_cluster_ip() {
        let c = cluster(
            "kubernetes: { version: v1.26.3, service_cidr: 10.32.0.0/16, dns_domain: k8s.example, image_repository: mirror.example/k8s }\n",
        );
        let lib = crate::phases::library(&[]);
        let objs = render_coredns(&lib, &c).unwrap();
        assert_eq!(objs.service_accounts.len(), 1);
        assert_eq!(objs.cluster_roles.len(), 1);
        assert_eq!(objs.cluster_role_bindings.len(), 1);
        let d = &objs.deployments[0];
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("mirror.example/k8s/coredns/coredns:v1.9.3")
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("coredns"));
        let svc = &objs.services[0];
        assert_eq!(svc.metadata.name.as_deref(), Some("kube-dns"));
        let spec = svc.spec.as_ref().unwrap();
        // The 10th address of the service CIDR, as the kubelets' clusterDNS.
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.32.0.10"));
        assert_eq!(
            spec.cluster_ip.as_deref().unwrap(),
            nth_ip(&c.kubernetes.service_cidr, 10).to_string()
        );
        assert_eq!(spec.selector.as_ref().unwrap()["k8s-app"], "kube-dns");
        let corefile = &objs.config_maps[0].data.as_ref().unwrap()["Corefile"];
        assert!(
            corefile.contains("kubernetes k8s.example in-addr.arpa ip6.arpa {"),
            "{corefile}"
        );
    }

    #[test]
    fn kube_proxy_daemonset_is_kubeadms_with_the_bundle_image() {
        use k8s_openapi::api::core::v1::ConfigMap as Cm;
        let c = cluster(
            "kubernetes: { version: v1.20.2, control_plane_mode: static-pod, proxy_mode: iptables, pod_cidr: 10.244.0.0/16 }\n",
        );
        assert!(kube_proxy_daemonset(&c));
        let lib = crate::phases::library(&[]);
        let objs = render_kube_proxy(&lib, &c).unwrap();
        let ds = &objs.daemon_sets[0];
        assert_eq!(ds.metadata.name.as_deref(), Some(KUBE_PROXY_DAEMONSET));
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.service_account_name.as_deref(), Some("kube-proxy"));
        let ctr = &pod.containers[0];
        assert_eq!(
            ctr.image.as_deref(),
            Some("registry.k8s.io/kube-proxy:v1.20.2")
        );
        assert_eq!(
            ctr.command.as_deref().unwrap()[..2],
            [
                "/usr/local/bin/kube-proxy".to_string(),
                "--config=/var/lib/kube-proxy/config.conf".to_string()
            ]
        );
        let crb = &objs.cluster_role_bindings[0];
        assert_eq!(crb.metadata.name.as_deref(), Some("kubeadm:node-proxier"));
        assert_eq!(crb.role_ref.name, "system:node-proxier");
        let cm: &Cm = &objs.config_maps[0];
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-proxy"));
        let data = cm.data.as_ref().unwrap();
        let config: Value = serde_saphyr::from_str(&data["config.conf"]).unwrap();
        assert_eq!(config["kind"], "KubeProxyConfiguration");
        assert_eq!(config["mode"], "iptables");
        assert_eq!(config["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(
            config["clientConnection"]["kubeconfig"],
            "/var/lib/kube-proxy/kubeconfig.conf"
        );
        let kubeconfig: Value = serde_saphyr::from_str(&data["kubeconfig.conf"]).unwrap();
        assert_eq!(
            kubeconfig["clusters"][0]["cluster"]["server"],
            "https://10.213.0.11:6443"
        );
        assert!(
            !kube_proxy_daemonset(&cluster(
                "kubernetes: { version: v1.20.2, control_plane_mode: systemd }\n"
            )),
            "systemd mode keeps the unit"
        );
    }

    #[test]
    fn unexpected_kinds_and_bad_fields_are_refused() {
        assert!(parse_objects("kind: Secret\napiVersion: v1\n")
            .unwrap_err()
            .to_string()
            .contains("unexpected kind"));
        assert!(parse_objects("apiVersion: v1\nkind: Service\nspec: 3\n")
            .unwrap_err()
            .to_string()
            .contains("document 1 (Service)"));
        let two = "# c\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\n";
        assert_eq!(parse_objects(two).unwrap().service_accounts.len(), 1);
    }
}
