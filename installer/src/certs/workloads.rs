//! The workloads a cluster CA rotation leaves behind: pods whose processes may know only the old
//! CA ([`stale_pods`]), and their rollout restart ([`restart_owners`]).
//!
//! Which pods: a pod that mounts the service-account directory in-cluster clients read
//! ([`SERVICE_ACCOUNT_DIR`], where client-go's in-cluster config finds `ca.crt`) or the
//! `kube-root-ca.crt` ConfigMap, and one of whose containers started (its current run) before
//! the moment clusterkit saw `kube-root-ca.crt` carry both CAs (the `trusted_at` of the
//! journal, recorded at the end of the trust-both stage), or in the same second: start times
//! have whole seconds, and a restart too many costs less than a pod left with the old CA. The
//! start time is the exact criterion, not the file's content: the kubelet rewrites secret,
//! ConfigMap and projected volumes in place when their source changes, so every running pod's
//! `ca.crt` soon holds both CAs on disk, while a process reads it once, when it starts
//! (client-go does), and keeps the old CA alone in memory. Containers started after that moment were given a volume built
//! from the updated sources. Such a process breaks as soon as the API server presents a
//! certificate from the new CA, which is stage 2 (reissue): the restart has to happen between
//! stage 1 and stage 2.
//!
//! The restart is `kubectl rollout restart`'s: the owner's pod template gets the annotation
//! [`RESTARTED_AT`] with the current time, for Deployments (found through the pod's
//! ReplicaSet), StatefulSets and DaemonSets. Bare pods and pods of other owners (Jobs, a
//! ReplicaSet without a Deployment) are only listed: deleting them could lose work, and that
//! is the operator's call.
//!
//! Limits: a pod that reads `ca.crt` again on its own (or never) is listed all the same;
//! a container that restarts in place after the moment (crash loop) counts as restarted.

use super::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

/// Where the service-account admission plugin mounts the token, `ca.crt` and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ConfigMap the controller manager publishes the cluster CA bundle in, in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// What owns a pod, as far as a restart is concerned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Owner {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, or whatever else owns it (`ReplicaSet`, `Job`).
    pub kind: String,
    /// Its name (same namespace as the pod).
    pub name: String,
}

impl Owner {
    /// Whether a rollout restart applies to it.
    pub fn restartable(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        )
    }
}

/// A pod that may know only the old cluster CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StalePod {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Its UID (to tell a replaced pod from a new one of the same name).
    pub uid: String,
    /// When its earliest running container started, RFC 3339.
    pub started: String,
    /// Its owner, if any (`None`: a bare pod, only listed).
    pub owner: Option<Owner>,
    /// Whether `--restart-workloads` restarted its owner in this run.
    pub restarted: bool,
}

/// Whether the pod mounts the service-account directory or `kube-root-ca.crt`.
fn reads_cluster_ca(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let mounts_sa = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR);
    let root_ca = spec.volumes.iter().flatten().any(|v| {
        v.config_map
            .as_ref()
            .is_some_and(|c| c.name == ROOT_CA_CONFIGMAP)
            || v.projected.as_ref().is_some_and(|p| {
                p.sources.iter().flatten().any(|s| {
                    s.config_map
                        .as_ref()
                        .is_some_and(|c| c.name == ROOT_CA_CONFIGMAP)
                })
            })
    });
    mounts_sa || root_ca
}

/// The earliest start (Unix seconds) of the pod's running containers; the pod's own start
/// when none runs yet.
fn earliest_start(pod: &Pod) -> Option<i64> {
    let status = pod.status.as_ref()?;
    let running = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0.as_second())
        .min();
    running.or_else(|| status.start_time.as_ref().map(|t| t.0.as_second()))
}

/// The pod's controller reference, as an owner (a ReplicaSet not yet resolved).
fn controller(pod: &Pod) -> Option<Owner> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
}

/// The pods of `pods` that may know only the old CA: they read the cluster CA, are not done or
/// being deleted, and a container of theirs started no later than the second `trusted_at`
/// (Unix seconds; `None`: before both CAs are published, so every such pod). The owner is the
/// pod's controller reference as is (a ReplicaSet, before [`resolve_owners`]).
pub fn stale_pods(pods: &[Pod], trusted_at: Option<i64>) -> Vec<StalePod> {
    let mut out = Vec::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
            || !reads_cluster_ca(pod)
        {
            continue;
        }
        let Some(started) = earliest_start(pod).filter(|s| trusted_at.is_none_or(|t| *s <= t))
        else {
            continue;
        };
        out.push(StalePod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            started: chrono::DateTime::from_timestamp(started, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            owner: controller(pod),
            restarted: false,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    out
}

fn api_err(what: &'static str) -> impl Fn(kube::Error) -> RotateError {
    move |e| RotateError::Api {
        what,
        message: e.to_string(),
    }
}

/// Replaces each ReplicaSet owner by the Deployment that controls it, when one does.
async fn resolve_owners(client: &kube::Client, pods: &mut [StalePod]) -> Result<(), RotateError> {
    for p in pods.iter_mut() {
        let Some(owner) = p.owner.as_mut().filter(|o| o.kind == "ReplicaSet") else {
            continue;
        };
        let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &p.namespace);
        let Some(set) = rs
            .get_opt(&owner.name)
            .await
            .map_err(api_err("reading a pod's ReplicaSet"))?
        else {
            continue;
        };
        if let Some(deploy) = set
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true) && r.kind == "Deployment")
        {
            *owner = Owner {
                kind: "Deployment".into(),
                name: deploy.name.clone(),
            };
        }
    }
    Ok(())
}

/// The pods of the cluster that may know only the old CA ([`stale_pods`]), owners resolved.
pub async fn list_stale(
    client: &kube::Client,
    trusted_at: Option<i64>,
) -> Result<Vec<StalePod>, RotateError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing pods"))?;
    let mut stale = stale_pods(&list.items, trusted_at);
    resolve_owners(client, &mut stale).await?;
    Ok(stale)
}

/// The merge patch of a rollout restart at `now` (RFC 3339).
pub fn restart_patch(now: &str) -> serde_json::Value {
    serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: now } } } }
    })
}

/// How long the restarted pods may take to be gone.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

/// Rollout-restarts the restartable owners of `pods` (each once) and waits until every pod of
/// theirs in `pods` is gone (replaced), within [`RESTART_TIMEOUT`]; marks them `restarted`.
/// Bare pods and other owners are left as they are.
pub async fn restart_owners(
    client: &kube::Client,
    pods: &mut [StalePod],
    now: OffsetDateTime,
) -> Result<(), RotateError> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let patch = restart_patch(&rfc3339(now));
    let params = PatchParams::default();
    let mut owners: BTreeSet<(String, Owner)> = BTreeSet::new();
    for p in pods.iter() {
        if let Some(o) = p.owner.as_ref().filter(|o| o.restartable()) {
            owners.insert((p.namespace.clone(), o.clone()));
        }
    }
    for (ns, o) in &owners {
        let c = client.clone();
        let res = match o.kind.as_str() {
            "Deployment" => Api::<Deployment>::namespaced(c, ns)
                .patch(&o.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            "StatefulSet" => Api::<StatefulSet>::namespaced(c, ns)
                .patch(&o.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            _ => Api::<DaemonSet>::namespaced(c, ns)
                .patch(&o.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        res.map_err(api_err("rollout restart"))?;
        tracing::info!(namespace = %ns, kind = %o.kind, name = %o.name, "rollout restart");
    }
    let waited: Vec<(String, String, String)> = pods
        .iter()
        .filter(|p| p.owner.as_ref().is_some_and(Owner::restartable))
        .map(|p| (p.namespace.clone(), p.pod.clone(), p.uid.clone()))
        .collect();
    crate::poll::wait_until(RESTART_TIMEOUT, || async {
        let mut left = Vec::new();
        for (ns, name, uid) in &waited {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let pod = api
                .get_opt(name)
                .await
                .map_err(api_err("waiting for restarted pods"))?;
            if pod.is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) {
                left.push(format!("{ns}/{name}"));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(RotateError::Api {
                what: "rollout restart",
                message: format!(
                    "still running after {}s: {}",
                    RESTART_TIMEOUT.as_secs(),
                    left.join(", ")
                ),
            })
        }
    })
    .await?;
    for p in pods.iter_mut() {
        p.restarted = p.owner.as_ref().is_some_and(Owner::restartable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, started: &str, mounts_sa: bool, owner: Option<(&str, &str)>) -> Pod {
        let mounts = if mounts_sa {
            serde_json::json!([{ "name": "token", "mountPath": SERVICE_ACCOUNT_DIR }])
        } else {
            serde_json::json!([])
        };
        let owners: Vec<serde_json::Value> = owner
            .map(|(kind, name)| {
                serde_json::json!({ "apiVersion": "apps/v1", "kind": kind, "name": name,
                                    "uid": "u", "controller": true })
            })
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                          "ownerReferences": owners },
            "spec": { "containers": [{ "name": "c", "volumeMounts": mounts }] },
            "status": { "phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                        "containerStatuses": [{ "name": "c", "ready": true, "restartCount": 0,
                            "image": "i", "imageID": "",
                            "state": { "running": { "startedAt": started } } }] }
        }))
        .unwrap()
    }

    fn at(t: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp()
    }

    #[test]
    fn lists_pods_started_before_both_cas_were_published() {
        let trusted = at("2026-01-01T10:00:00Z");
        let pods = vec![
            pod(
                "old",
                "2026-01-01T09:59:59Z",
                true,
                Some(("ReplicaSet", "web-1")),
            ),
            pod(
                "new",
                "2026-01-01T10:00:01Z",
                true,
                Some(("ReplicaSet", "web-1")),
            ),
            // Started in the second both CAs were seen: maybe before, so listed.
            pod("same-second", "2026-01-01T10:00:00Z", true, None),
            pod("no-token", "2026-01-01T09:00:00Z", false, None),
            pod("bare", "2026-01-01T09:00:00Z", true, None),
        ];
        let stale = stale_pods(&pods, Some(trusted));
        let names: Vec<&str> = stale.iter().map(|p| p.pod.as_str()).collect();
        assert_eq!(names, ["bare", "old", "same-second"]);
        // Before the rotation (`--check`): every pod that reads the CA, whenever it started.
        let all = stale_pods(&pods, None);
        let names: Vec<&str> = all.iter().map(|p| p.pod.as_str()).collect();
        assert_eq!(names, ["bare", "new", "old", "same-second"]);
        assert_eq!(stale[0].owner, None);
        assert_eq!(stale[1].started, "2026-01-01T09:59:59Z");
        assert_eq!(stale[1].uid, "uid-old");
        assert_eq!(
            stale[1].owner,
            Some(Owner {
                kind: "ReplicaSet".into(),
                name: "web-1".into()
            })
        );
        // A ReplicaSet owner is resolved to its Deployment before a restart; as is, it is not
        // restartable, nor is a Job.
        assert!(!stale[1].owner.as_ref().unwrap().restartable());
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            let o = Owner {
                kind: kind.into(),
                name: "x".into(),
            };
            assert!(o.restartable(), "{kind}");
        }
    }

    #[test]
    fn finished_deleted_and_configmap_readers() {
        let trusted = at("2026-01-01T10:00:00Z");
        let mut done = pod("done", "2026-01-01T09:00:00Z", true, None);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut going = pod("going", "2026-01-01T09:00:00Z", true, None);
        going.metadata.deletion_timestamp =
            serde_json::from_value(serde_json::json!("2026-01-01T10:01:00Z")).unwrap();
        // The projected kube-root-ca.crt volume (what 1.21+ mounts) counts without the mount
        // path check.
        let mut projected = pod("projected", "2026-01-01T09:00:00Z", false, None);
        projected.spec.as_mut().unwrap().volumes = serde_json::from_value(serde_json::json!([
            { "name": "api", "projected": { "sources": [
                { "configMap": { "name": ROOT_CA_CONFIGMAP } } ] } }
        ]))
        .unwrap();
        // No container running yet: the pod's start time decides.
        let mut pending = pod("pending", "2026-01-01T09:00:00Z", true, None);
        pending.status.as_mut().unwrap().container_statuses = None;
        pending.status.as_mut().unwrap().start_time =
            serde_json::from_value(serde_json::json!("2026-01-01T10:05:00Z")).unwrap();
        let stale = stale_pods(&[done, going, projected, pending], Some(trusted));
        let names: Vec<&str> = stale.iter().map(|p| p.pod.as_str()).collect();
        assert_eq!(names, ["projected"]);
    }

    #[test]
    fn restart_patch_is_kubectls() {
        let p = restart_patch("2026-01-01T10:00:00Z");
        assert_eq!(
            p["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-01-01T10:00:00Z"
        );
    }
}
