//! What happens to an object on its way into a backup ([`strip`]) and on its way back into a
//! cluster ([`prepare`], [`skip_reason`]). Pure functions over `serde_json::Value`, so every
//! rule is unit-tested without a server.
//!
//! Backup removes what the server owns (status, uid, resourceVersion, managedFields,
//! creationTimestamp, generation, selfLink, deletion marks; the last-applied annotation only
//! when asked). Restore clears what belongs to the old cluster (Service cluster IPs and node
//! ports, PVC bindings, a bare Pod's node, service-account token references), maps namespaces,
//! and skips what a controller recreates. Limits: only the built-in controllers are known;
//! objects owned by an operator's custom resource are restored and relinked, not skipped.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::client::ResourceType;

/// kubectl's client-side apply record.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Facts kept beside an object (in its archive entry's PAX records), not in its YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sidecar {
    /// The object's uid in the backed-up cluster, to relink ownerReferences on restore.
    pub uid: Option<String>,
    /// A Pod or Job that had finished: the restore skips it.
    pub finished: bool,
}

/// Reads the sidecar facts; call before [`strip`].
pub fn sidecar(t: &ResourceType, obj: &Value) -> Sidecar {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let finished = match (t.group.as_str(), t.resource.as_str()) {
        ("", "pods") => matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ),
        ("batch", "jobs") => obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                matches!(
                    c.get("type").and_then(Value::as_str),
                    Some("Complete" | "Failed")
                ) && c.get("status").and_then(Value::as_str) == Some("True")
            }),
        _ => false,
    };
    Sidecar { uid, finished }
}

/// Metadata the API server owns: never kept in an archive, never sent in an apply (an archive
/// made elsewhere may still carry them).
const SERVER_OWNED: [&str; 8] = [
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// `(group, plural)` of the custom resource type a CustomResourceDefinition object defines;
/// empty strings where the object lacks them.
pub fn crd_group_plural(crd: &Value) -> (&str, &str) {
    let field = |p| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    (field("/spec/group"), field("/spec/names/plural"))
}

/// Removes server-owned fields in place and sets `apiVersion`/`kind` (list items lack them).
pub fn strip(t: &ResourceType, obj: &mut Value, strip_last_applied: bool) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    map.insert("apiVersion".into(), Value::String(t.api_version()));
    map.insert("kind".into(), Value::String(t.kind.clone()));
    map.remove("status");
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        for field in SERVER_OWNED {
            meta.remove(field);
        }
        if strip_last_applied {
            remove_key(meta, "annotations", LAST_APPLIED);
        }
    }
}

fn remove_key(map: &mut Map<String, Value>, field: &str, key: &str) {
    if let Some(Value::Object(inner)) = map.get_mut(field) {
        inner.remove(key);
        if inner.is_empty() {
            map.remove(field);
        }
    }
}

/// Built-in controllers and the kinds they recreate from their own spec: an object with a
/// controller ownerReference to one of these is left to that controller.
const RECREATED_BY: &[(&str, &str)] = &[
    ("Deployment", "ReplicaSet"),
    ("ReplicaSet", "Pod"),
    ("ReplicationController", "Pod"),
    ("StatefulSet", "Pod"),
    ("StatefulSet", "ControllerRevision"),
    ("DaemonSet", "Pod"),
    ("DaemonSet", "ControllerRevision"),
    ("Job", "Pod"),
    ("CronJob", "Job"),
    ("Service", "EndpointSlice"),
];

/// Why the restore leaves an object out, if it does.
pub fn skip_reason(t: &ResourceType, obj: &Value, side: &Sidecar) -> Option<&'static str> {
    if side.finished {
        return Some("finished");
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(&t.kind);
    let controller = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("kind").and_then(Value::as_str));
    if let Some(owner) = controller {
        if RECREATED_BY.iter().any(|(o, k)| *o == owner && *k == kind) {
            return Some("recreated by its controller");
        }
    }
    match (t.group.as_str(), t.resource.as_str()) {
        // The token controller issues tokens for the new ServiceAccount uid.
        ("", "secrets")
            if obj.get("type").and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token") =>
        {
            Some("service-account token (reissued by the cluster)")
        }
        // Published into every namespace by the root-CA publisher of the target cluster.
        ("", "configmaps") if name_of(obj) == Some("kube-root-ca.crt") => {
            Some("published by the cluster")
        }
        ("discovery.k8s.io", "endpointslices")
            if obj
                .pointer("/metadata/labels/endpointslice.kubernetes.io~1managed-by")
                .is_some() =>
        {
            Some("managed by the endpoint-slice controller")
        }
        _ => None,
    }
}

/// The object's name.
pub fn name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name").and_then(Value::as_str)
}

/// Restore-time settings that change objects.
#[derive(Debug, Clone, Default)]
pub struct Prepare {
    /// Old namespace → new namespace.
    pub namespace_mapping: BTreeMap<String, String>,
    /// Keep Service nodePorts (they may clash in the target cluster).
    pub keep_node_ports: bool,
}

impl Prepare {
    /// The namespace an object of `namespace` goes to.
    pub fn map_namespace<'a>(&'a self, namespace: &'a str) -> &'a str {
        self.namespace_mapping
            .get(namespace)
            .map(String::as_str)
            .unwrap_or(namespace)
    }
}

/// Rewrites a backed-up object for the target cluster (ownerReferences are relinked by the
/// restore, which knows the new uids).
pub fn prepare(t: &ResourceType, obj: &mut Value, settings: &Prepare) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    map.remove("status");
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        for field in SERVER_OWNED {
            meta.remove(field);
        }
        if t.namespaced {
            if let Some(Value::String(ns)) = meta.get_mut("namespace") {
                *ns = settings.map_namespace(ns).to_string();
            }
        } else if t.group.is_empty() && t.resource == "namespaces" {
            if let Some(Value::String(name)) = meta.get_mut("name") {
                *name = settings.map_namespace(name).to_string();
            }
        }
    }
    match (t.group.as_str(), t.resource.as_str()) {
        ("", "services") => prepare_service(map, settings.keep_node_ports),
        ("", "persistentvolumeclaims") => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                spec.remove("volumeName");
            }
            if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                for a in [
                    "pv.kubernetes.io/bind-completed",
                    "pv.kubernetes.io/bound-by-controller",
                    "volume.kubernetes.io/selected-node",
                ] {
                    remove_key(meta, "annotations", a);
                }
            }
        }
        ("", "serviceaccounts") => {
            // References to the old cluster's token secrets; the new cluster issues its own.
            let name = map
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(Value::Array(secrets)) = map.get_mut("secrets") {
                secrets.retain(|s| !is_token_of(s.get("name").and_then(Value::as_str), &name));
                if secrets.is_empty() {
                    map.remove("secrets");
                }
            }
        }
        ("", "pods") => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                spec.remove("nodeName");
                prepare_pod_spec(spec);
            }
        }
        ("batch", "jobs") => {
            // The selector and label carry the old Job's uid; the API server generates new ones.
            let manual = map
                .get("spec")
                .and_then(|s| s.get("manualSelector"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !manual {
                if let Some(Value::Object(spec)) = map.get_mut("spec") {
                    spec.remove("selector");
                    if let Some(Value::Object(meta)) =
                        spec.get_mut("template").and_then(|t| t.get_mut("metadata"))
                    {
                        remove_key(meta, "labels", "controller-uid");
                    }
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            if let Some(Value::Array(subjects)) = map.get_mut("subjects") {
                for s in subjects {
                    if let Some(Value::String(ns)) = s.get_mut("namespace") {
                        *ns = settings.map_namespace(ns).to_string();
                    }
                }
            }
        }
        _ => {}
    }
}

fn is_token_of(secret: Option<&str>, service_account: &str) -> bool {
    secret.is_some_and(|s| s.starts_with(&format!("{service_account}-token-")))
}

fn prepare_service(map: &mut Map<String, Value>, keep_node_ports: bool) {
    let Some(Value::Object(spec)) = map.get_mut("spec") else {
        return;
    };
    // Cluster IPs come from the old cluster's service range; "None" (headless) is a choice.
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if !keep_node_ports {
        spec.remove("healthCheckNodePort");
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
}

/// A bare Pod's spec still mounts the old cluster's service-account token secret (1.20's
/// admission plugin adds it); the new cluster's admission adds a fresh one.
fn prepare_pod_spec(spec: &mut Map<String, Value>) {
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let mut removed = Vec::new();
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        volumes.retain(|v| {
            let token = is_token_of(v.pointer("/secret/secretName").and_then(Value::as_str), &sa);
            if token {
                if let Some(n) = v.get("name").and_then(Value::as_str) {
                    removed.push(n.to_string());
                }
            }
            !token
        });
    }
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(key) {
            for c in containers {
                if let Some(Value::Array(mounts)) = c.get_mut("volumeMounts") {
                    mounts.retain(|m| {
                        !m.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| removed.iter().any(|r| r == n))
                    });
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// A served `v1` type of `group` (plan's tests use it too).
    pub(in crate::namespace) fn t(
        group: &str,
        resource: &str,
        kind: &str,
        namespaced: bool,
    ) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            kind: kind.into(),
            namespaced,
        }
    }

    #[test]
    fn strips_server_fields_and_keeps_last_applied_unless_asked() {
        let cm = t("", "configmaps", "ConfigMap", true);
        let mut o = json!({
            "metadata": {"name": "a", "namespace": "n", "uid": "u1", "resourceVersion": "5",
                "managedFields": [], "creationTimestamp": "x", "generation": 2, "selfLink": "/x",
                "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{}"}},
            "data": {"k": "v"},
            "status": {"x": 1}
        });
        assert_eq!(sidecar(&cm, &o).uid.as_deref(), Some("u1"));
        let mut o2 = o.clone();
        strip(&cm, &mut o, false);
        assert_eq!(
            o,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "namespace": "n", "labels": {"a": "b"},
                                "annotations": {LAST_APPLIED: "{}"}},
                   "data": {"k": "v"}})
        );
        strip(&cm, &mut o2, true);
        assert!(o2.pointer("/metadata/annotations").is_none());
    }

    #[test]
    fn finished_and_controller_owned_objects_are_skipped() {
        let pods = t("", "pods", "Pod", true);
        let done =
            json!({"kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": "Succeeded"}});
        let side = sidecar(&pods, &done);
        assert!(side.finished);
        assert_eq!(skip_reason(&pods, &done, &side), Some("finished"));

        let owned = json!({"kind": "Pod", "metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": true}]}});
        assert!(skip_reason(&pods, &owned, &Sidecar::default()).is_some());

        let rs = t("apps", "replicasets", "ReplicaSet", true);
        let bare_rs = json!({"kind": "ReplicaSet", "metadata": {"name": "r"}});
        assert_eq!(skip_reason(&rs, &bare_rs, &Sidecar::default()), None);

        // Owned, but not by a controller that recreates it: restored (and relinked).
        let cm = t("", "configmaps", "ConfigMap", true);
        let cm_owned = json!({"kind": "ConfigMap", "metadata": {"name": "c", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "1"}]}});
        assert_eq!(skip_reason(&cm, &cm_owned, &Sidecar::default()), None);

        let jobs = t("batch", "jobs", "Job", true);
        let job = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert!(sidecar(&jobs, &job).finished);

        let secrets = t("", "secrets", "Secret", true);
        let token = json!({"metadata": {"name": "default-token-x"}, "type": "kubernetes.io/service-account-token"});
        assert!(skip_reason(&secrets, &token, &Sidecar::default()).is_some());
        let root_ca = json!({"metadata": {"name": "kube-root-ca.crt"}});
        assert!(skip_reason(&cm, &root_ca, &Sidecar::default()).is_some());
    }

    #[test]
    fn services_lose_cluster_ips_and_node_ports() {
        let svc = t("", "services", "Service", true);
        let mut o = json!({"metadata": {"name": "s", "namespace": "old"}, "spec": {
            "type": "NodePort", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
            "ports": [{"port": 80, "nodePort": 30080}]}});
        let mut kept = o.clone();
        let settings = Prepare {
            namespace_mapping: [("old".to_string(), "new".to_string())].into(),
            keep_node_ports: false,
        };
        prepare(&svc, &mut o, &settings);
        assert_eq!(
            o,
            json!({"metadata": {"name": "s", "namespace": "new"}, "spec": {
                "type": "NodePort", "ports": [{"port": 80}]}})
        );
        prepare(
            &svc,
            &mut kept,
            &Prepare {
                keep_node_ports: true,
                ..Default::default()
            },
        );
        assert_eq!(kept.pointer("/spec/ports/0/nodePort"), Some(&json!(30080)));
        assert!(kept.pointer("/spec/clusterIP").is_none());

        let mut headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        prepare(&svc, &mut headless, &Prepare::default());
        assert_eq!(headless.pointer("/spec/clusterIP"), Some(&json!("None")));
    }

    #[test]
    fn pvcs_service_accounts_namespaces_bindings_and_pods() {
        let pvc = t("", "persistentvolumeclaims", "PersistentVolumeClaim", true);
        let mut o = json!({"metadata": {"name": "c", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                           "spec": {"volumeName": "pv-1", "resources": {}}});
        prepare(&pvc, &mut o, &Prepare::default());
        assert_eq!(
            o,
            json!({"metadata": {"name": "c"}, "spec": {"resources": {}}})
        );

        let sa = t("", "serviceaccounts", "ServiceAccount", true);
        let mut o = json!({"metadata": {"name": "app"}, "secrets": [{"name": "app-token-abcde"}, {"name": "other"}]});
        prepare(&sa, &mut o, &Prepare::default());
        assert_eq!(o["secrets"], json!([{"name": "other"}]));

        let mapping = Prepare {
            namespace_mapping: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let ns = t("", "namespaces", "Namespace", false);
        let mut o = json!({"metadata": {"name": "a"}});
        prepare(&ns, &mut o, &mapping);
        assert_eq!(o["metadata"]["name"], "b");

        let rb = t(
            "rbac.authorization.k8s.io",
            "rolebindings",
            "RoleBinding",
            true,
        );
        let mut o = json!({"metadata": {"name": "r", "namespace": "a"},
                           "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "a"},
                                        {"kind": "ServiceAccount", "name": "y", "namespace": "c"}]});
        prepare(&rb, &mut o, &mapping);
        assert_eq!(o["metadata"]["namespace"], "b");
        assert_eq!(o["subjects"][0]["namespace"], "b");
        assert_eq!(o["subjects"][1]["namespace"], "c");

        let pods = t("", "pods", "Pod", true);
        let mut o = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1",
            "volumes": [{"name": "default-token-x", "secret": {"secretName": "default-token-x"}},
                        {"name": "data", "emptyDir": {}}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "default-token-x"}, {"name": "data"}]}]}});
        prepare(&pods, &mut o, &Prepare::default());
        assert_eq!(
            o["spec"]["volumes"],
            json!([{"name": "data", "emptyDir": {}}])
        );
        assert_eq!(
            o["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "data"}])
        );
        assert!(o.pointer("/spec/nodeName").is_none());
    }
}
