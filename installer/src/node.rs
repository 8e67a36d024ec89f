//! Day 2: adding a node to an installed cluster, and removing one, touching only what changes.
//!
//! **Add** ([`add`]): the host must already be in cluster.yaml and not yet a Node of the
//! cluster. The install phases run again with a host selection instead of being duplicated:
//! `prepare` on every host (their `/etc/hosts` gets the new node; nothing else changes on a
//! prepared host), `runtime`, `images`, `pki`, `join`, `addons` on the new host only; `etcd` only when
//! it has the etcd role (the phase adds it with `member add` and starts it with
//! `--initial-cluster-state=existing`, then waits until every member is healthy);
//! `control-plane` only when it has that role (the pki phase then also runs on the other
//! control-plane hosts, which receive the API server certificate re-issued with the new host in
//! its SANs, and `load-balancer` runs on every node, whose local load balancer gets the new API
//! server as a backend); `network` on every node, since every node routes the new node's pod
//! slice.
//!
//! **Remove** ([`remove`]), refused with a clear error when the host is the last control-plane
//! host, the host `control_plane_endpoint` points at, the last etcd member, or when removing its
//! etcd member would leave fewer healthy members than the smaller cluster's quorum:
//! 1. cordon (`spec.unschedulable`) and drain through the Kubernetes API: every pod bound to
//!    the node is evicted (the Eviction API, so PodDisruptionBudgets are respected; a 429 is
//!    retried until the drain timeout) except DaemonSet pods and mirror (static) pods, which
//!    are skipped; pods without a controller are refused unless `force`, as `kubectl drain`
//!    does; then it waits until the evicted pods are gone;
//! 2. its etcd member is removed through a remaining member ([`crate::reset::remove_etcd_members`]);
//! 3. its kubelet is stopped (so nothing re-registers it) and its Node object deleted;
//! 4. its pod routes are removed from the other nodes (`phases::network::remove_node`, host-gw);
//! 5. the host itself is reset ([`crate::reset`]; etcd data moved aside).
//!
//! `check` reports every step and changes nothing (the drain lists the pods it would evict).
//!
//! When the new host is an etcd member, the other control-plane hosts then get it in their API
//! server's `--etcd-servers`, one host after the other (the `control-plane` phase restarts
//! that host's components and waits until every API server is ready before the next).
//!
//! Limits: the host must be reachable for the reset (the cluster-side steps are done first,
//! and a failed reset is reported at the end); after a removal the API servers keep the
//! removed etcd member in `--etcd-servers` (harmless while another listed member answers) and
//! other nodes' `/etc/hosts` keep the removed host, until the operator takes the host out of
//! cluster.yaml and runs `clusterkit install` (as long as it stays there, an install would add
//! it again).

use std::collections::BTreeMap;
use std::time::Duration;

use clusterkit_core::config::{Cluster, Host, Network, Role};
use clusterkit_core::layout::NodeLayout;
use clusterkit_core::playbook::RunReport;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use crate::kube_api;
use crate::phases::{
    self, etcd as etcd_phase, InstallError, InstallOptions, PhaseContext, Plan, Step,
};
use crate::poll;
use crate::reset::{self, ResetError, ResetOptions};

/// How long a drain may take (evictions refused by a disruption budget are retried until then).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The annotation marking mirror pods (static pods seen through the API).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How long a server error of the API is retried right after the node's etcd member left.
const SERVER_ERROR_RETRY: Duration = Duration::from_secs(30);

/// Deletes the Node `name` (already gone counts as deleted). A server error (5xx) is retried
/// for up to [`SERVER_ERROR_RETRY`]: the etcd member just removed may have been the leader,
/// and a request in flight during the election fails with "etcdserver: leader changed".
async fn delete_node(nodes: &Api<Node>, name: &str) -> Result<(), kube::Error> {
    poll::wait_until(SERVER_ERROR_RETRY, || async {
        match nodes.delete(name, &Default::default()).await {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Ok(())),
            Err(kube::Error::Api(s)) if s.code >= 500 => Err(kube::Error::Api(s)),
            // Anything else is not the election's: no retry.
            Err(e) => Ok(Err(e)),
        }
    })
    .await
    .and_then(|r| r)
}

/// Errors of `node add` / `node remove`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The host is not in cluster.yaml.
    #[error("host {host} is not in cluster.yaml ({known}); add it there first")]
    UnknownHost {
        /// The name asked for.
        host: String,
        /// The hosts cluster.yaml lists.
        known: String,
    },
    /// The operation would hurt the cluster, or the host is not in the expected state.
    #[error("refusing to {action} {host}: {reason}")]
    Refused {
        /// `add` or `remove`.
        action: &'static str,
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// Removing the host's etcd member would break the cluster.
    #[error("refusing to remove {host}: {source}")]
    Quorum {
        /// The host.
        host: String,
        #[source]
        source: QuorumError,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API's answer.
        #[source]
        source: crate::phases::Cause,
    },
    /// The drain did not finish.
    #[error("draining {host}: {message}")]
    Drain {
        /// The node.
        host: String,
        /// What is left.
        message: String,
    },
    /// An install phase stopped.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The etcd member removal or the host's reset failed.
    #[error(transparent)]
    Reset(#[from] ResetError),
}

/// Why removing an etcd member would break the cluster (or cannot be judged).
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("it is the only etcd member")]
    OnlyMember,

    #[error(
        "etcd would lose quorum: {healthy} of the other {others} member(s) are healthy, and a \
         cluster of {others} needs {need}"
    )]
    Lost {
        healthy: usize,
        others: usize,
        need: usize,
    },

    /// No other member answers; each one's problem.
    #[error("no other etcd member answers ({})", .0.join("; "))]
    NoAnswer(Vec<String>),

    /// The verdict, and the members that did not answer.
    #[error("{verdict} ({})", problems.join("; "))]
    Partial {
        #[source]
        verdict: Box<QuorumError>,
        problems: Vec<String>,
    },

    /// The etcd client credentials cannot be read.
    #[error(transparent)]
    Client(#[from] InstallError),
}

fn api(what: impl Into<String>, e: impl Into<crate::phases::Cause>) -> NodeError {
    NodeError::Api {
        what: what.into(),
        source: e.into(),
    }
}

/// The host of cluster.yaml named `name`.
pub fn find_host<'a>(cluster: &'a Cluster, name: &str) -> Result<&'a Host, NodeError> {
    cluster.host(name).ok_or_else(|| NodeError::UnknownHost {
        host: name.to_string(),
        known: cluster
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Which hosts each install phase runs on when `host` joins (names of cluster.yaml hosts;
/// empty: the phase is skipped), then, for a new etcd member, every other API server rolled
/// onto the new `--etcd-servers` one host at a time: the control-plane phase waits for
/// `/readyz` and every `/livez` before the next host restarts, so the API stays up. Without the
/// roll, replacing the etcd members one by one would leave the API servers pointing only at
/// removed ones. Pure, so the selection is unit-tested.
pub fn add_plan(cluster: &Cluster, host: &Host) -> Plan {
    let me = vec![host.name.clone()];
    let cp = host.has_role(Role::ControlPlane);
    let every = || cluster.hosts.iter().map(|h| h.name.clone()).collect();
    let mut steps: Vec<Step> = phases::all()
        .iter()
        .map(|p| {
            let on = match p.name() {
                // Every node's /etc/hosts lists the new node (the rest of prepare is a no-op
                // on a prepared host); every node routes the new node's pod slice.
                "prepare" | "network" => every(),
                "etcd" if !host.has_role(Role::Etcd) => vec![],
                "control-plane" if !cp => vec![],
                // Every node's local load balancer gets the new API server as a backend.
                "load-balancer" if cp => every(),
                // A new API server changes the shared apiserver certificate's SANs.
                "pki" if cp => cluster
                    .hosts
                    .iter()
                    .filter(|h| h.name == host.name || h.has_role(Role::ControlPlane))
                    .map(|h| h.name.clone())
                    .collect(),
                _ => me.clone(),
            };
            // Later steps build on this one: stop when the new host failed.
            Step {
                phase: p.name(),
                hosts: on,
                why: None,
                stop_if_failed: me.clone(),
            }
        })
        .collect();
    steps.extend(etcd_servers_roll(cluster, host).into_iter().map(|h| Step {
        phase: "control-plane",
        hosts: vec![h.clone()],
        why: Some("its API server gets the new etcd member"),
        stop_if_failed: vec![host.name.clone(), h],
    }));
    Plan { steps }
}

/// Adds `name` (listed in cluster.yaml, not yet a Node) to the installed cluster: see the
/// module documentation. Returns the engine's per-host report (failed tasks are in it; an
/// `Err` is for what stops the whole operation).
pub async fn add(
    cluster: &Cluster,
    name: &str,
    opts: &InstallOptions,
) -> Result<RunReport, NodeError> {
    let host = find_host(cluster, name)?;
    let refused = |reason: String| NodeError::Refused {
        action: "add",
        host: name.to_string(),
        reason,
    };
    let client = kube_api::admin_client(cluster, None).await.map_err(|e| {
        refused(format!(
            "the cluster's API cannot be used ({e}); install the cluster first"
        ))
    })?;
    let nodes: Api<Node> = Api::all(client);
    match nodes.get_opt(name).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(refused(format!(
                "it is already a Node of the cluster (converge it with `clusterkit install --hosts {name}`)"
            )))
        }
        Err(e) => {
            return Err(refused(format!(
                "the cluster's API does not answer ({e}); install the cluster first"
            )))
        }
    }
    // The new node gets cluster.yaml's release: refused when the control plane runs another
    // (mid-upgrade, or cluster.yaml edited ahead of `upgrade apply`).
    phases::same_release(cluster, opts).await?;
    Ok(phases::run(cluster, &add_plan(cluster, host), opts).await?)
}

/// The control-plane hosts whose API servers must be rolled onto the new etcd member list
/// when `host` joins: every control-plane host but `host` itself (its own phase already used
/// the new list), when `host` is an etcd member; in cluster.yaml order. Pure, unit-tested.
pub fn etcd_servers_roll(cluster: &Cluster, host: &Host) -> Vec<String> {
    if !host.has_role(Role::Etcd) {
        return vec![];
    }
    cluster
        .hosts_with_role(Role::ControlPlane)
        .iter()
        .filter(|h| h.name != host.name)
        .map(|h| h.name.clone())
        .collect()
}

/// What happens to the pods of a node being drained.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DrainPlan {
    /// `namespace/name` of the pods to evict.
    pub evict: Vec<String>,
    /// `namespace/name (why)` of the pods left alone (DaemonSet, mirror pods).
    pub skip: Vec<String>,
    /// `namespace/name` of pods no controller recreates (evicted only with `force`).
    pub unmanaged: Vec<String>,
    /// `namespace/name` of pods to evict that keep data in an `emptyDir` volume, which the
    /// eviction deletes (evicted only with `delete_emptydir_data`, as `kubectl drain`).
    pub local_data: Vec<String>,
}

/// How [`drain`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct DrainOptions {
    /// Evict pods without a controller too.
    pub force: bool,
    /// Evict pods with `emptyDir` volumes too (their data is lost).
    pub delete_emptydir_data: bool,
    /// List what would be evicted; cordon and evict nothing.
    pub check: bool,
    /// How long the evictions (retried while a disruption budget refuses) and the pods'
    /// termination may take.
    pub timeout: Duration,
}

/// Sorts a node's pods as `kubectl drain` does (pure).
pub fn drain_plan(pods: &[Pod]) -> DrainPlan {
    let mut plan = DrainPlan::default();
    for p in pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let id = format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default());
        let mirror = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
        let controller = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let finished = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        if mirror {
            plan.skip.push(format!("{id} (mirror pod)"));
        } else if controller.is_some_and(|o| o.kind == "DaemonSet") {
            plan.skip.push(format!("{id} (DaemonSet)"));
        } else if controller.is_none() && !finished {
            plan.unmanaged.push(id);
        } else {
            let empty_dir = p
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
            if empty_dir && !finished {
                plan.local_data.push(id.clone());
            }
            plan.evict.push(id);
        }
    }
    plan
}

/// The Eviction object the API server of `cluster`'s version takes (policy/v1 from 1.22).
fn eviction_body(cluster: &Cluster, ns: &str, name: &str) -> serde_json::Value {
    let v = cluster.kubernetes.version;
    let api_version = if v.at_least(22) {
        "policy/v1"
    } else {
        "policy/v1beta1"
    };
    json!({
        "apiVersion": api_version,
        "kind": "Eviction",
        "metadata": { "name": name, "namespace": ns },
    })
}

/// Evicts one pod of `node`, retrying while a disruption budget refuses (429) until
/// `deadline`; then fails naming the pod and what the budget said.
async fn evict(
    cluster: &Cluster,
    client: &kube::Client,
    node: &str,
    id: &str,
    deadline: tokio::time::Instant,
) -> Result<(), NodeError> {
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    let body = serde_json::to_vec(&eviction_body(cluster, ns, name)).map_err(|e| api(id, e))?;
    loop {
        let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .map_err(|e| api(id, e))?;
        match client.request_text(req).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 429 => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(NodeError::Drain {
                        host: node.to_string(),
                        message: format!(
                            "timed out: a disruption budget still refuses to evict {id} ({})",
                            s.message
                        ),
                    });
                }
                tracing::info!(pod = %id, "eviction refused by a disruption budget; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(api(format!("evicting {id}"), e)),
        }
    }
}

/// The pods bound to `node`.
async fn node_pods(client: &kube::Client, node: &str) -> Result<Vec<Pod>, NodeError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(pods
        .list(&lp)
        .await
        .map_err(|e| api(format!("listing the pods of {node}"), e))?
        .items)
}

/// Cordons and drains `node` (see the module documentation). Returns the plan it carried out
/// (or, in check mode, would).
pub async fn drain(
    cluster: &Cluster,
    client: &kube::Client,
    node: &str,
    opts: DrainOptions,
) -> Result<DrainPlan, NodeError> {
    let DrainOptions {
        force,
        delete_emptydir_data,
        check,
        timeout,
    } = opts;
    let nodes: Api<Node> = Api::all(client.clone());
    if !check {
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "unschedulable": true } })),
            )
            .await
            .map_err(|e| api(format!("cordoning {node}"), e))?;
        tracing::info!(node, "cordoned");
    }
    let mut plan = drain_plan(&node_pods(client, node).await?);
    if !plan.unmanaged.is_empty() {
        if !force && !check {
            return Err(NodeError::Drain {
                host: node.to_string(),
                message: format!(
                    "pods without a controller would be lost: {} (pass --force to evict them anyway)",
                    plan.unmanaged.join(", ")
                ),
            });
        }
        if force {
            plan.evict.append(&mut plan.unmanaged.clone());
        }
    }
    if !plan.local_data.is_empty() && !delete_emptydir_data && !check {
        return Err(NodeError::Drain {
            host: node.to_string(),
            message: format!(
                "pods with emptyDir data would lose it: {} (pass --delete-emptydir-data to evict them anyway)",
                plan.local_data.join(", ")
            ),
        });
    }
    if check {
        return Ok(plan);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for id in &plan.evict {
        evict(cluster, client, node, id, deadline).await?;
        tracing::info!(node, pod = %id, "evicted");
    }
    // Wait until the evicted pods are gone from the node (their grace periods run).
    let wanted = plan.evict.clone();
    let left = poll::wait_until(timeout, || async {
        let pods = node_pods(client, node).await.map_err(|e| e.to_string())?;
        let left: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default()
                )
            })
            .filter(|id| wanted.contains(id))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still on the node: {}", left.join(", ")))
        }
    })
    .await;
    left.map_err(|message| NodeError::Drain {
        host: node.to_string(),
        message: format!("after {}s: {message}", timeout.as_secs()),
    })?;
    Ok(plan)
}

/// Why removing `host` is refused, if it is (no etcd access needed).
pub fn removal_blocker(cluster: &Cluster, host: &Host) -> Option<String> {
    if host.has_role(Role::ControlPlane) {
        let others = cluster
            .hosts_with_role(Role::ControlPlane)
            .iter()
            .filter(|h| h.name != host.name)
            .count();
        if others == 0 {
            return Some("it is the only control-plane host; the cluster would have no API server (use `clusterkit reset` to remove the whole cluster)".into());
        }
        let endpoint = &cluster.kubernetes.control_plane_endpoint;
        if endpoint.host == host.name || endpoint.host.parse() == Ok(host.address) {
            return Some(format!(
                "control_plane_endpoint ({endpoint}) points at it; point the endpoint at another control-plane host (or a load balancer) first"
            ));
        }
    }
    if host.has_role(Role::Etcd) && cluster.hosts_with_role(Role::Etcd).len() == 1 {
        return Some("it is the only etcd member; the cluster's data lives there".into());
    }
    None
}

/// The quorum rule (pure): a cluster of `members` keeps working after one healthy member
/// leaves when the `healthy_remaining` others are a majority of `members - 1`.
pub fn quorum_after_removal(members: usize, healthy_remaining: usize) -> Result<(), QuorumError> {
    if members <= 1 {
        return Err(QuorumError::OnlyMember);
    }
    let need = (members - 1) / 2 + 1;
    if healthy_remaining < need {
        return Err(QuorumError::Lost {
            healthy: healthy_remaining,
            others: members - 1,
            need,
        });
    }
    Ok(())
}

/// Checks, through the remaining members, that removing `host`'s etcd member keeps a quorum.
async fn check_etcd_quorum(cluster: &Cluster, host: &Host) -> Result<(), QuorumError> {
    let tls = etcd_phase::ClientTls::load(cluster)?;
    let timeout = Duration::from_secs(5);
    let mut members = None;
    let mut healthy = Vec::new();
    let mut problems = Vec::new();
    for h in cluster
        .hosts_with_role(Role::Etcd)
        .into_iter()
        .filter(|h| h.name != host.name)
    {
        match etcd_phase::view(&tls, &etcd_phase::client_url(h), timeout).await {
            Ok(v) if v.leader != 0 => {
                members.get_or_insert(v.members.len());
                healthy.push(h.name.clone());
            }
            Ok(_) => problems.push(format!("{}: no leader", h.name)),
            Err(e) => problems.push(clusterkit_core::error_chain(&e)),
        }
    }
    let Some(members) = members else {
        return Err(QuorumError::NoAnswer(problems));
    };
    quorum_after_removal(members, healthy.len()).map_err(|e| {
        if problems.is_empty() {
            e
        } else {
            QuorumError::Partial {
                verdict: Box::new(e),
                problems,
            }
        }
    })
}

/// What [`remove`] did (or, in check mode, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoveReport {
    /// The node.
    pub host: String,
    /// Check mode: nothing was changed.
    pub check: bool,
    /// The pods evicted and skipped; `None` when there was no Node object.
    pub drain: Option<DrainPlan>,
    /// One line per etcd member removed.
    pub etcd_members_removed: Vec<String>,
    /// Whether the Node object was (or would be) deleted.
    pub node_deleted: bool,
    /// The network run on the other nodes (pod routes removed); `None` without host-gw.
    pub network: Option<RunReport>,
    /// What the host's reset changed (or would change).
    pub reset_changed: Vec<String>,
    /// Why the host's reset failed (the cluster-side steps were done anyway).
    pub reset_error: Option<String>,
}

/// Options of [`remove`].
#[derive(Clone)]
pub struct RemoveOptions {
    /// Report, change nothing.
    pub check: bool,
    /// Evict pods without a controller too.
    pub force: bool,
    /// Delete etcd's data on the host instead of moving it aside.
    pub purge: bool,
    /// How long the drain may take.
    pub drain_timeout: Duration,
    /// Playbook engine options (library, concurrency, progress, events).
    pub install: InstallOptions,
}

/// Removes `name` from the cluster: see the module documentation.
pub async fn remove(
    cluster: &Cluster,
    name: &str,
    opts: &RemoveOptions,
) -> Result<RemoveReport, NodeError> {
    let host = find_host(cluster, name)?;
    let refused = |reason: String| NodeError::Refused {
        action: "remove",
        host: name.to_string(),
        reason,
    };
    if let Some(reason) = removal_blocker(cluster, host) {
        return Err(refused(reason));
    }
    if host.has_role(Role::Etcd) {
        check_etcd_quorum(cluster, host)
            .await
            .map_err(|source| NodeError::Quorum {
                host: name.to_string(),
                source,
            })?;
    }
    let mut report = RemoveReport {
        host: name.to_string(),
        check: opts.check,
        ..Default::default()
    };
    let client = kube_api::admin_client(cluster, None)
        .await
        .map_err(|e| api("connecting", e))?;
    let nodes: Api<Node> = Api::all(client.clone());
    let exists = nodes
        .get_opt(name)
        .await
        .map_err(|e| api(format!("reading node {name}"), e))?
        .is_some();
    // 1. Cordon and drain.
    if exists {
        report.drain = Some(
            drain(
                cluster,
                &client,
                name,
                DrainOptions {
                    force: opts.force,
                    // The node leaves the cluster: its pods' local data goes with it.
                    delete_emptydir_data: true,
                    check: opts.check,
                    timeout: opts.drain_timeout,
                },
            )
            .await?,
        );
    }
    // 2. etcd member.
    report.etcd_members_removed = reset::remove_etcd_members(cluster, &[host], opts.check).await?;
    let every: Vec<&Host> = cluster.hosts.iter().collect();
    let (engine, targets) = phases::engine(cluster, &every, &opts.install)?;
    let me = targets
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| refused("it has no SSH target".into()))?;
    // 3. Node object, after the kubelet stopped (best effort: an unreachable host is reset
    //    later or not at all, the API side is done anyway).
    if exists {
        if !opts.check {
            if let Err(e) = me
                .exec
                .sh(&format!(
                    "systemctl stop {} 2>/dev/null || true",
                    NodeLayout::DEFAULT.units.kubelet
                ))
                .await
            {
                tracing::warn!(host = name, error = %e, "cannot stop the kubelet before deleting its Node");
            }
            delete_node(&nodes, name)
                .await
                .map_err(|e| api(format!("deleting node {name}"), e))?;
            tracing::info!(node = name, "Node deleted");
        }
        report.node_deleted = true;
    }
    // 4. Pod routes on the other nodes.
    if cluster.kubernetes.network == Network::HostGw {
        let library = phases::library(&opts.install.library);
        let cx = PhaseContext {
            cluster,
            engine: &engine,
            targets: &targets,
            library: &library,
            check: opts.check,
        };
        phases::network::remove_node(&cx, name).await?;
        report.network = Some(engine.finish());
    }
    // 5. The host itself.
    let reset_opts = ResetOptions::now(opts.purge, opts.check);
    match reset::reset_host(me.exec.as_ref(), &reset_opts).await {
        Ok(r) => report.reset_changed = r.changed,
        Err(e) => {
            if let ResetError::Steps { changed, .. } = &e {
                report.reset_changed = changed.clone();
            }
            report.reset_error = Some(e.to_string());
        }
    }
    Ok(report)
}

/// A short, human summary of a removal (one line per step).
pub fn remove_summary(r: &RemoveReport) -> String {
    let would = if r.check { "would " } else { "" };
    let mut s = String::new();
    match &r.drain {
        Some(d) => {
            s.push_str(&format!(
                "{}: {would}cordon and drain: evict {} pod(s)",
                r.host,
                d.evict.len()
            ));
            if !d.evict.is_empty() {
                s.push_str(&format!(" ({})", d.evict.join(", ")));
            }
            if !d.skip.is_empty() {
                s.push_str(&format!("; skipped {}", d.skip.join(", ")));
            }
            if r.check && !d.unmanaged.is_empty() {
                s.push_str(&format!(
                    "; without a controller (needs --force): {}",
                    d.unmanaged.join(", ")
                ));
            }
            s.push('\n');
        }
        None => s.push_str(&format!("{}: no Node object, nothing to drain\n", r.host)),
    }
    for m in &r.etcd_members_removed {
        s.push_str(&format!("etcd: {would}{m}\n"));
    }
    if r.node_deleted {
        s.push_str(&format!("{}: {would}delete the Node object\n", r.host));
    }
    if let Some(n) = &r.network {
        let mut per: BTreeMap<&str, u32> = BTreeMap::new();
        for (h, hr) in &n.hosts {
            per.insert(h, hr.changed);
        }
        let parts: Vec<String> = per
            .iter()
            .map(|(h, c)| format!("{h} {c} changed"))
            .collect();
        s.push_str(&format!(
            "pod routes to {} on the other nodes: {}\n",
            r.host,
            parts.join(", ")
        ));
    }
    if r.reset_changed.is_empty() && r.reset_error.is_none() {
        s.push_str(&format!("{}: reset: nothing to do\n", r.host));
    } else {
        s.push_str(&format!(
            "{}: reset: {would}change {}\n",
            r.host,
            r.reset_changed.len()
        ));
        for l in &r.reset_changed {
            s.push_str(&format!("  {l}\n"));
        }
    }
    if let Some(e) = &r.reset_error {
        s.push_str(&format!("{}: reset FAILED: {e}\n", r.host));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn cluster() -> Cluster {
        let text = "name: demo\nhosts:\n  - { name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: { key_file: ./k } }\n  - { name: e2, address: 10.0.0.12, roles: [worker, etcd], auth: { key_file: ./k } }\n  - { name: e3, address: 10.0.0.13, roles: [worker, etcd], auth: { key_file: ./k } }\n  - { name: w4, address: 10.0.0.14, roles: [worker], auth: { key_file: ./k } }\n  - { name: cp5, address: 10.0.0.15, roles: [control-plane], auth: { key_file: ./k } }\nkubernetes: { version: v1.20.2, control_plane_endpoint: \"10.0.0.11:6443\" }\n";
        crate::test_cluster(text)
    }

    /// The hosts of the first step running `phase`.
    fn on<'a>(plan: &'a Plan, phase: &str) -> &'a [String] {
        &plan.steps.iter().find(|s| s.phase == phase).unwrap().hosts
    }

    #[test]
    fn add_runs_each_phase_where_it_is_needed() {
        let c = cluster();
        let w4 = c.host("w4").unwrap();
        let plan = add_plan(&c, w4);
        for p in ["runtime", "images", "pki", "join", "addons"] {
            assert_eq!(on(&plan, p), ["w4"], "{p}");
        }
        assert_eq!(on(&plan, "prepare").len(), 5, "every /etc/hosts");
        assert!(on(&plan, "etcd").is_empty());
        assert!(on(&plan, "control-plane").is_empty());
        assert_eq!(on(&plan, "network").len(), 5);
        let e3 = c.host("e3").unwrap();
        assert_eq!(on(&add_plan(&c, e3), "etcd"), ["e3"]);
        let cp5 = c.host("cp5").unwrap();
        let plan = add_plan(&c, cp5);
        assert_eq!(on(&plan, "control-plane"), ["cp5"]);
        assert_eq!(on(&plan, "pki"), ["cp1", "cp5"]);
        assert_eq!(on(&plan, "load-balancer").len(), 5, "every node's backends");
        assert_eq!(on(&add_plan(&c, w4), "load-balancer"), ["w4"]);
    }

    #[test]
    fn a_new_etcd_member_rolls_the_other_api_servers() {
        let c = cluster();
        let roll = |n: &str| etcd_servers_roll(&c, c.host(n).unwrap());
        assert_eq!(roll("e3"), ["cp1", "cp5"], "every API server, in order");
        // The plan ends with the roll, one host per step, stopping when either the new
        // member or the rolled host failed.
        let plan = add_plan(&c, c.host("e3").unwrap());
        let tail: Vec<_> = plan.steps[plan.steps.len() - 2..].to_vec();
        for (step, h) in tail.iter().zip(["cp1", "cp5"]) {
            assert_eq!(step.phase, "control-plane");
            assert_eq!(step.hosts, [h]);
            assert_eq!(step.stop_if_failed, ["e3", h]);
            assert!(step.why.is_some());
        }
        assert_eq!(plan.steps.len(), phases::all().len() + 2);
        assert_eq!(roll("cp1"), ["cp5"], "not the new host itself");
        assert!(roll("w4").is_empty(), "not an etcd member");
        assert!(roll("cp5").is_empty(), "a control-plane host without etcd");
    }

    #[test]
    fn removal_refusals() {
        let c = cluster();
        assert!(removal_blocker(&c, c.host("w4").unwrap()).is_none());
        assert!(removal_blocker(&c, c.host("cp5").unwrap()).is_none());
        let why = removal_blocker(&c, c.host("cp1").unwrap()).unwrap();
        assert!(why.contains("control_plane_endpoint"), "{why}");
        let mut one = c.clone();
        one.hosts.retain(|h| h.name != "cp5");
        let why = removal_blocker(&one, one.host("cp1").unwrap()).unwrap();
        assert!(why.contains("only control-plane host"), "{why}");
        assert!(quorum_after_removal(3, 2).is_ok());
        assert!(quorum_after_removal(4, 2).is_ok(), "3 members need 2");
        assert!(quorum_after_removal(3, 1)
            .unwrap_err()
            .to_string()
            .contains("lose quorum"));
        assert!(quorum_after_removal(5, 2).is_err(), "4 members need 3");
        assert!(quorum_after_removal(1, 0).is_err());
    }

    fn pod(name: &str, owner: Option<&str>, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                owner_references: owner.map(|kind| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        name: "o".into(),
                        uid: "u".into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn drain_plan_respects_daemonsets_and_mirror_pods() {
        let plan = drain_plan(&[
            pod("web", Some("ReplicaSet"), &[]),
            pod("ds", Some("DaemonSet"), &[]),
            pod("static", None, &[(MIRROR_ANNOTATION, "x")]),
            pod("bare", None, &[]),
        ]);
        assert_eq!(plan.evict, ["ns/web"]);
        assert_eq!(plan.skip, ["ns/ds (DaemonSet)", "ns/static (mirror pod)"]);
        assert_eq!(plan.unmanaged, ["ns/bare"]);
        assert!(plan.local_data.is_empty());
    }

    #[test]
    fn drain_plan_marks_pods_with_empty_dir_data() {
        let mut scratch = pod("cache", Some("ReplicaSet"), &[]);
        scratch.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            volumes: Some(vec![k8s_openapi::api::core::v1::Volume {
                name: "tmp".into(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let plan = drain_plan(&[scratch, pod("web", Some("ReplicaSet"), &[])]);
        assert_eq!(plan.evict, ["ns/cache", "ns/web"]);
        assert_eq!(plan.local_data, ["ns/cache"]);
    }

    #[test]
    fn eviction_api_version_follows_the_release() {
        let mut c = cluster();
        assert_eq!(eviction_body(&c, "a", "b")["apiVersion"], "policy/v1beta1");
        c.kubernetes.version.minor = 26;
        assert_eq!(eviction_body(&c, "a", "b")["apiVersion"], "policy/v1");
    }
}
