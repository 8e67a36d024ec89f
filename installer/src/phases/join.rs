//! Phase `join`: TLS bootstrap of every node's kubelet, as kubeadm sets it up.
//!
//! Through the Kubernetes API (kube-rs server-side apply, field manager `clusterkit`, from the
//! operator's machine with admin.conf):
//! - a bootstrap token Secret ([`crate::token`]), reused across runs while it is valid;
//! - the `cluster-info` ConfigMap in kube-public (a kubeconfig with the CA and the endpoint,
//!   signed by the controller manager's bootstrapsigner) and the Role/RoleBinding that let
//!   anonymous clients read it (token discovery);
//! - ClusterRoleBindings: bootstrappers may create CSRs (`system:node-bootstrapper`) and their
//!   node-client CSRs are auto-approved (`…:nodeclient`); nodes' renewals too (`…:selfnodeclient`).
//!
//! Then every node gets `/etc/kubernetes/bootstrap-kubelet.conf` and its kubelet (playbook
//! `kubelet`): control-plane hosts already have a kubelet.conf of their own; workers ask for a
//! client certificate with the token, get it approved and signed by the cluster CA, and
//! register. The phase waits for every Node object, then applies cluster.yaml's labels (and
//! `node-role.kubernetes.io/<role>`), kubeadm's CRI-socket annotation, and adds its taints.
//!
//! With the host-gw network the phase sets each Node's `spec.podCIDR(s)` from the slices the
//! network phase routes ([`network::pod_cidrs`]; the controller manager allocates none). Then
//! kubelet serving certificates: every kubelet asks for one (`serverTLSBootstrap`), clusterkit
//! approves the requests whose names belong to the node and denies the others ([`crate::csr`]),
//! and waits until the API server reaches every kubelet over verified TLS, reviewing new
//! requests for the whole wait (kubelets ask a moment after they register).
//!
//! Limits: taints are only added, never removed (the node controller owns some of them).
//! Serving-certificate renewals are approved when install runs again.

use clusterkit_core::layout::kubeconfig_file;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Network, Role};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Taint};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role as RbacRole, RoleBinding, RoleRef, Subject,
};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde_json::json;

use super::kubelet::run_kubelet;
use super::network;
use super::{InstallError, Phase, PhaseContext};
use crate::csr;
use crate::kube_api::{self, api_err};
use crate::kubeconfig::{self, Kubeconfig, UserEntry};
use crate::poll::{self, NotReady};
use crate::token::{self, BOOTSTRAP_GROUP, FIELD_MANAGER};
use clusterkit_core::layout::StateLayout;

/// The `join` phase.
pub struct JoinPhase;

/// How long the phase waits for every Node to register.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(180);

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<(), InstallError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| api_err(format!("applying {name}"), e))?;
    Ok(())
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..Default::default()
    }
}

fn crb(name: &str, cluster_role: &str, kind: &str, subject: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind.into(),
            name: subject.into(),
            namespace: None,
        }]),
    }
}

/// The ClusterRoleBindings of TLS bootstrap (kubeadm's names).
pub fn bootstrap_bindings() -> Vec<ClusterRoleBinding> {
    vec![
        crb(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            "Group",
            BOOTSTRAP_GROUP,
        ),
        crb(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "Group",
            BOOTSTRAP_GROUP,
        ),
        crb(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "Group",
            "system:nodes",
        ),
    ]
}

/// The `cluster-info` kubeconfig: the CA and the endpoint, no credentials.
pub fn cluster_info_kubeconfig(cluster: &Cluster) -> Result<String, InstallError> {
    let ca_path = StateLayout::from_cluster(cluster).pki_dir().join("ca.crt");
    let ca = std::fs::read_to_string(&ca_path).map_err(|e| api_err(ca_path.display(), e))?;
    let server = format!("https://{}", cluster.kubernetes.control_plane_endpoint);
    let mut k = Kubeconfig::new("", &server, &ca, "", UserEntry::default());
    // kubeadm's cluster-info has one nameless cluster and nothing else.
    k.contexts.clear();
    k.users.clear();
    k.current_context = String::new();
    k.to_yaml()
        .map_err(|e| api_err("cluster-info kubeconfig", e))
}

/// Applies the token-independent objects: cluster-info, its RBAC, the bootstrap bindings.
pub async fn apply_bootstrap_objects(
    cluster: &Cluster,
    client: &kube::Client,
) -> Result<(), InstallError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let cm = ConfigMap {
        metadata: meta("cluster-info", Some("kube-public")),
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            cluster_info_kubeconfig(cluster)?,
        )])),
        ..Default::default()
    };
    apply(&cms, "cluster-info", &cm).await?;
    let roles: Api<RbacRole> = Api::namespaced(client.clone(), "kube-public");
    let role = RbacRole {
        metadata: meta("kubeadm:bootstrap-signer-clusterinfo", Some("kube-public")),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec!["cluster-info".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    apply(&roles, "kubeadm:bootstrap-signer-clusterinfo", &role).await?;
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), "kube-public");
    let rb = RoleBinding {
        metadata: meta("kubeadm:bootstrap-signer-clusterinfo", Some("kube-public")),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "kubeadm:bootstrap-signer-clusterinfo".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: "system:anonymous".into(),
            namespace: None,
        }]),
    };
    apply(&rbs, "kubeadm:bootstrap-signer-clusterinfo", &rb).await?;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    for b in bootstrap_bindings() {
        let name = b.metadata.name.clone().unwrap_or_default();
        apply(&crbs, &name, &b).await?;
    }
    Ok(())
}

/// From v1.29 admin.conf's group `kubeadm:cluster-admins` is bound to cluster-admin by a
/// ClusterRoleBinding created with super-admin.conf (as kubeadm does).
pub async fn bind_cluster_admins(cluster: &Cluster) -> Result<(), InstallError> {
    let path = StateLayout::from_cluster(cluster)
        .kubeconfig_dir()
        .join(kubeconfig_file::SUPER_ADMIN);
    let client = kube_api::client_from(&path, None).await?;
    let crbs: Api<ClusterRoleBinding> = Api::all(client);
    let b = crb(
        crate::versions::KUBEADM_CLUSTER_ADMINS,
        "cluster-admin",
        "Group",
        crate::versions::KUBEADM_CLUSTER_ADMINS,
    );
    apply(&crbs, crate::versions::KUBEADM_CLUSTER_ADMINS, &b).await
}

/// The labels clusterkit puts on a node: cluster.yaml's, plus `node-role.kubernetes.io/<role>`
/// for control-plane and worker hosts.
pub fn node_labels(host: &clusterkit_core::config::Host) -> BTreeMap<String, String> {
    let mut labels = host.labels.clone();
    for role in [Role::ControlPlane, Role::Worker] {
        if host.has_role(role) {
            labels.insert(
                format!("node-role.kubernetes.io/{}", role.as_str()),
                String::new(),
            );
        }
    }
    labels
}

/// Waits for every host's Node, then applies labels and adds missing taints.
async fn register_and_label(
    cluster: &Cluster,
    client: &kube::Client,
    hosts: &[String],
) -> Result<(), InstallError> {
    let nodes: Api<Node> = Api::all(client.clone());
    poll::wait_until(REGISTER_TIMEOUT, || async {
        let mut missing = Vec::new();
        for h in hosts {
            let node = nodes
                .get_opt(h)
                .await
                .map_err(|e| NotReady::failed(format!("reading node {h}"), e))?;
            if node.is_none() {
                missing.push(h.as_str());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(NotReady::Seen(format!(
                "not registered: {}",
                missing.join(", ")
            )))
        }
    })
    .await
    .map_err(|source| InstallError::Timeout {
        host: "join".into(),
        what: "nodes did not register".into(),
        secs: REGISTER_TIMEOUT.as_secs(),
        source,
    })?;
    for name in hosts {
        let Some(host) = cluster.host(name) else {
            continue;
        };
        let labels = node_labels(host);
        // The CRI socket where kubeadm keeps it, so kubeadm's own commands on the node find it.
        let annotations = BTreeMap::from([(
            token::CRI_SOCKET_ANNOTATION,
            token::kubeadm_cri_socket(cluster.kubernetes.version),
        )]);
        let patch = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name, "labels": labels, "annotations": annotations },
        });
        nodes
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| api_err(format!("labelling node {name}"), e))?;
        if !host.taints.is_empty() {
            let node = nodes
                .get(name)
                .await
                .map_err(|e| api_err(format!("reading node {name}"), e))?;
            let mut taints: Vec<Taint> = node.spec.and_then(|s| s.taints).unwrap_or_default();
            let before = taints.len();
            for t in &host.taints {
                if !taints
                    .iter()
                    .any(|x| x.key == t.key && x.effect == t.effect)
                {
                    taints.push(Taint {
                        key: t.key.clone(),
                        value: t.value.clone(),
                        effect: t.effect.clone(),
                        time_added: None,
                    });
                }
            }
            if taints.len() != before {
                let patch = json!({ "spec": { "taints": taints } });
                nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| api_err(format!("tainting node {name}"), e))?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Phase for JoinPhase {
    fn name(&self) -> &'static str {
        "join"
    }
    fn describe(&self) -> &'static str {
        "bootstrap token, cluster-info, RBAC; kubelets join by TLS bootstrap; node labels and taints"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        // Validate before touching anything.
        clusterkit_core::playbook::load(cx.library, "kubelet")?;
        let cp_failed = cx
            .cluster
            .hosts_with_role(Role::ControlPlane)
            .iter()
            .any(|h| cx.engine.host_failed(&h.name));
        if cp_failed {
            // No API to join: the report already says why the control-plane host failed.
            return Ok(());
        }
        let bootstrap = if cx.check {
            // Nothing is created in check mode: nodes are compared with a placeholder that
            // differs only where a token would be written.
            None
        } else {
            let client = kube_api::admin_client(cx.cluster, None).await?;
            apply_bootstrap_objects(cx.cluster, &client).await?;
            let t = token::ensure_join_token(cx.cluster, &client)
                .await
                .map_err(|e| api_err("bootstrap token", e))?;
            let ca_path = StateLayout::from_cluster(cx.cluster)
                .pki_dir()
                .join("ca.crt");
            let ca =
                std::fs::read_to_string(&ca_path).map_err(|e| api_err(ca_path.display(), e))?;
            // The local load balancer when it is on: the kubelet.conf TLS bootstrap writes
            // keeps this server.
            let server = super::load_balancer::node_api_server(cx.cluster);
            let k = kubeconfig::bootstrap_kubeconfig(&cx.cluster.name, &server, &ca, &t.expose())
                .map_err(|e| api_err("bootstrap kubeconfig", e))?;
            Some(
                k.to_yaml()
                    .map_err(|e| api_err("bootstrap kubeconfig", e))?,
            )
        };
        run_kubelet(cx, cx.targets, bootstrap.as_deref()).await?;
        if cx.check {
            return Ok(());
        }
        let joined: Vec<String> = cx
            .targets
            .iter()
            .filter(|t| !cx.engine.host_failed(&t.name))
            .map(|t| t.name.clone())
            .collect();
        let client = kube_api::admin_client(cx.cluster, None).await?;
        register_and_label(cx.cluster, &client, &joined).await?;
        set_pod_cidrs(cx.cluster, &client, &joined).await?;
        serving_certificates(cx.cluster, &client, &joined).await
    }
}

/// How long the phase waits for every kubelet to serve with an approved certificate.
pub const SERVING_TIMEOUT: Duration = Duration::from_secs(180);

/// host-gw: each Node's `spec.podCIDR(s)` set to the slice the network phase routes to it
/// ([`network::pod_cidrs`], the one source of truth; the controller manager allocates nothing
/// with host-gw). A Node whose podCIDR already differs (Kubernetes never lets it change) is
/// an error naming both and the way out.
async fn set_pod_cidrs(
    cluster: &Cluster,
    client: &kube::Client,
    hosts: &[String],
) -> Result<(), InstallError> {
    if cluster.kubernetes.network != Network::HostGw {
        return Ok(());
    }
    let slices = network::pod_cidrs(cluster)?;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in hosts {
        let Some(slice) = slices.get(name) else {
            continue;
        };
        let want = slice.to_string();
        let node = nodes
            .get(name)
            .await
            .map_err(|e| api_err(format!("reading node {name}"), e))?;
        let have = node.spec.and_then(|s| s.pod_cidr).unwrap_or_default();
        if have == want {
            continue;
        }
        if !have.is_empty() {
            return Err(network::NetworkError::NodeSlice {
                node: name.clone(),
                have,
                want,
            }
            .into());
        }
        let patch = json!({ "spec": { "podCIDR": want, "podCIDRs": [want] } });
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_err(format!("setting podCIDR of node {name}"), e))?;
        tracing::info!(node = %name, pod_cidr = %want, "node podCIDR set");
    }
    Ok(())
}

/// Kubelet serving certificates (`serverTLSBootstrap`). Once a second, for the whole wait:
/// every pending kubelet-serving CSR is reviewed ([`csr::review_pending`]: approved only when
/// its names belong to the node, denied otherwise), and every kubelet not yet reached is probed
/// through the API server (`nodes/<name>/proxy/healthz`; the API server verifies kubelets
/// against the cluster CA). A kubelet sends its CSR a moment after it registers, so CSRs keep
/// arriving while this runs; each probe is bounded by [`PROBE_TIMEOUT`] and the API client does
/// not retry on its own, so an unapproved kubelet's 503 comes back at once and the next review
/// follows a second later. Ends as soon as every kubelet serves; says on stderr what it approves
/// and, every [`REPORT_EVERY`], which nodes it still waits for and why.
async fn serving_certificates(
    cluster: &Cluster,
    client: &kube::Client,
    hosts: &[String],
) -> Result<(), InstallError> {
    let start = std::time::Instant::now();
    let mut last_report = start;
    // Node → what its last probe said, for the nodes not serving yet.
    let mut waiting: BTreeMap<String, String> = hosts
        .iter()
        .map(|h| (h.clone(), "not probed yet".to_string()))
        .collect();
    loop {
        let review_error = match csr::review_pending(cluster, client).await {
            Ok(decisions) => {
                for d in decisions {
                    match d {
                        csr::Decision::Approved { csr, node } => {
                            eprintln!("  {node}: kubelet serving CSR {csr} approved")
                        }
                        csr::Decision::Denied { csr, reason } => {
                            eprintln!("  join: kubelet serving CSR {csr} denied: {reason}")
                        }
                    }
                }
                None
            }
            // The API server may be briefly unavailable (a control-plane restart): keep
            // waiting, and report it if it lasts.
            Err(e) => Some(clusterkit_core::error_chain(&e)),
        };
        let probes = futures::future::join_all(
            waiting
                .keys()
                .map(|n| async move { (n.clone(), probe_kubelet(client, n).await) }),
        )
        .await;
        for (node, result) in probes {
            match result {
                Ok(()) => {
                    waiting.remove(&node);
                    eprintln!(
                        "  {node}: kubelet serves with an approved certificate ({}s)",
                        start.elapsed().as_secs()
                    );
                }
                Err(why) => {
                    // Shown in a progress line: the first line says enough.
                    let why = clusterkit_core::error_chain(&why);
                    waiting.insert(node, why.lines().next().unwrap_or_default().to_string());
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let state = || {
            let mut parts: Vec<String> = waiting.iter().map(|(n, w)| format!("{n}: {w}")).collect();
            if let Some(e) = &review_error {
                parts.push(format!("reviewing CSRs: {e}"));
            }
            parts.join("; ")
        };
        if start.elapsed() >= SERVING_TIMEOUT {
            return Err(InstallError::Target {
                host: "join".into(),
                message: format!(
                    "kubelets not serving with an approved certificate within {}s (a CSR of kubernetes.io/kubelet-serving naming other hosts' addresses is denied; see `kubectl get csr`): {}",
                    SERVING_TIMEOUT.as_secs(),
                    state()
                ),
            });
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = std::time::Instant::now();
            eprintln!(
                "  join: waiting for kubelet serving certificates ({}s of {}s): {}",
                start.elapsed().as_secs(),
                SERVING_TIMEOUT.as_secs(),
                state()
            );
        }
        tokio::time::sleep(poll::POLL_MAX).await;
    }
}

/// How long one probe of a kubelet through the API server may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the serving-certificate wait says what it still waits for.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// `Ok` when the API server reaches the node's kubelet over verified TLS and it says `ok`;
/// otherwise what went wrong.
async fn probe_kubelet(client: &kube::Client, node: &str) -> Result<(), NotReady> {
    probe_healthz(client, node, None).await
}

/// `Ok` when the API server reaches `/healthz` on `node` and it answers: the kubelet's (over
/// verified TLS, and it must say `ok`), or with `port` another server on the node's address
/// (kube-proxy's, any success). Otherwise what went wrong.
pub async fn probe_healthz(
    client: &kube::Client,
    node: &str,
    port: Option<u16>,
) -> Result<(), NotReady> {
    let target = port.map_or(node.to_string(), |p| format!("{node}:{p}"));
    let path = format!("/api/v1/nodes/{target}/proxy/healthz");
    match tokio::time::timeout(PROBE_TIMEOUT, kube_api::get_raw(client, &path)).await {
        Ok(Ok(body)) if port.is_some() || body.trim() == "ok" => Ok(()),
        Ok(Ok(body)) => Err(NotReady::Seen(format!("healthz says {:?}", body.trim()))),
        Ok(Err(e)) => Err(NotReady::failed(format!("{target} healthz"), e)),
        Err(_) => Err(NotReady::Seen(format!(
            "{target} healthz: no answer within {}s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}
