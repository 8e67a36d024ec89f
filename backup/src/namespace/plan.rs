//! Which resource types a namespace backup takes, and in which order.
//!
//! The order is the restore's dependency order — CRDs, Namespaces, ServiceAccounts,
//! ConfigMaps, Secrets, PVCs, Services, workloads (owners before what they own), then the
//! rest — and it is written into the archive that way, so a restore reads the archive once,
//! front to back, and still applies owners before dependents. Limits: among "the rest" the
//! order is alphabetical; an object owned by a later type is held back by the restore until
//! the end (see `restore.rs`).

use super::client::ResourceType;
use super::error::NamespaceError;

/// Rank of a type in the dependency order (lower first).
pub fn rank(t: &ResourceType) -> u32 {
    match (t.group.as_str(), t.resource.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => 0,
        ("", "namespaces") => 1,
        ("storage.k8s.io", "storageclasses") => 2,
        ("", "persistentvolumes") => 3,
        ("", "serviceaccounts") => 10,
        ("", "configmaps") => 11,
        ("", "secrets") => 12,
        ("", "limitranges") => 13,
        ("", "resourcequotas") => 14,
        ("", "persistentvolumeclaims") => 15,
        ("", "services") => 16,
        ("", "endpoints") => 17,
        ("apps", "deployments") => 20,
        ("apps", "statefulsets") => 21,
        ("apps", "daemonsets") => 22,
        ("apps", "replicasets") => 23,
        ("", "replicationcontrollers") => 24,
        ("batch", "cronjobs") => 25,
        ("batch", "jobs") => 26,
        ("", "pods") => 27,
        _ => 100,
    }
}

/// True for the type of CustomResourceDefinitions.
pub fn is_crd_type(t: &ResourceType) -> bool {
    t.group == "apiextensions.k8s.io" && t.resource == "customresourcedefinitions"
}

/// True for the type of Namespaces.
pub fn is_namespace_type(t: &ResourceType) -> bool {
    t.group.is_empty() && t.resource == "namespaces"
}

/// True for Secrets.
pub fn is_secret_type(t: &ResourceType) -> bool {
    t.group.is_empty() && t.resource == "secrets"
}

/// Namespaced types never backed up unless named in `--include-resources`: events are a log,
/// not state.
const DEFAULT_EXCLUDED_NAMESPACED: &[&str] = &["events", "events.events.k8s.io"];

/// Cluster-scoped types never backed up unless named: they belong to the machines or the
/// control plane of one cluster and would harm another.
const DEFAULT_EXCLUDED_CLUSTER: &[&str] = &[
    "nodes",
    "componentstatuses",
    "csinodes.storage.k8s.io",
    "volumeattachments.storage.k8s.io",
    "certificatesigningrequests.certificates.k8s.io",
    "apiservices.apiregistration.k8s.io",
    "events",
    "events.events.k8s.io",
];

/// Groups that only re-serve types of another group (1.20 still serves Ingresses under
/// `extensions`); taking both would back every object up twice.
const ALIAS_GROUPS: &[&str] = &["extensions"];

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct TypeFilter {
    /// Only these types (plural, plural.group or kind, case-insensitive; `*` for all).
    pub include: Vec<String>,
    /// Never these types.
    pub exclude: Vec<String>,
    /// Take Secrets.
    pub include_secrets: bool,
    /// Take cluster-scoped types too.
    pub include_cluster: bool,
}

fn matches(pattern: &str, t: &ResourceType) -> bool {
    let p = pattern.trim().to_ascii_lowercase();
    p == "*" || p == t.resource || p == t.key() || p == t.kind.to_ascii_lowercase()
}

impl TypeFilter {
    fn named(&self, t: &ResourceType) -> bool {
        self.include
            .iter()
            .any(|p| p.trim() != "*" && matches(p, t))
    }

    /// Whether a type is wanted (Namespaces and CRDs are decided elsewhere).
    pub fn wants(&self, t: &ResourceType) -> bool {
        if self.exclude.iter().any(|p| matches(p, t)) {
            return false;
        }
        if is_secret_type(t) {
            return self.include_secrets;
        }
        let key = t.key();
        if !t.namespaced {
            if !self.include_cluster {
                return false;
            }
            if DEFAULT_EXCLUDED_CLUSTER.contains(&key.as_str()) && !self.named(t) {
                return false;
            }
        } else if DEFAULT_EXCLUDED_NAMESPACED.contains(&key.as_str()) && !self.named(t) {
            return false;
        }
        self.include.is_empty() || self.include.iter().any(|p| matches(p, t))
    }

    /// Checks the options against each other.
    pub fn validate(&self) -> Result<(), NamespaceError> {
        let names_secrets = self
            .include
            .iter()
            .any(|p| matches!(p.trim().to_ascii_lowercase().as_str(), "secrets" | "secret"));
        if names_secrets && !self.include_secrets {
            return Err(NamespaceError::Invalid(
                "Secrets are backed up only with --include-secrets".into(),
            ));
        }
        Ok(())
    }
}

/// The types to back up, in dependency order: every wanted type the server offers, without
/// alias groups, plus Namespaces (always: a restore needs them). CRDs are not in the list; the
/// backup writes the ones it needs first.
pub fn plan(all: &[ResourceType], filter: &TypeFilter) -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = all
        .iter()
        .filter(|t| {
            !ALIAS_GROUPS.contains(&t.group.as_str())
                || !all
                    .iter()
                    .any(|o| o.resource == t.resource && !ALIAS_GROUPS.contains(&o.group.as_str()))
        })
        .filter(|t| is_namespace_type(t) || (!is_crd_type(t) && filter.wants(t)))
        .cloned()
        .collect();
    out.sort_by(|a, b| (rank(a), &a.group, &a.resource).cmp(&(rank(b), &b.group, &b.resource)));
    out.dedup_by(|a, b| a.group == b.group && a.resource == b.resource);
    out
}

#[cfg(test)]
mod tests {
    use super::super::objects::tests::t;
    use super::*;

    fn server() -> Vec<ResourceType> {
        vec![
            t("", "pods", "Pod", true),
            t("", "configmaps", "ConfigMap", true),
            t("", "secrets", "Secret", true),
            t("", "events", "Event", true),
            t("", "namespaces", "Namespace", false),
            t("", "nodes", "Node", false),
            t("", "services", "Service", true),
            t("", "serviceaccounts", "ServiceAccount", true),
            t("apps", "deployments", "Deployment", true),
            t("apps", "replicasets", "ReplicaSet", true),
            t("extensions", "ingresses", "Ingress", true),
            t("networking.k8s.io", "ingresses", "Ingress", true),
            t("rbac.authorization.k8s.io", "roles", "Role", true),
            t(
                "rbac.authorization.k8s.io",
                "clusterroles",
                "ClusterRole",
                false,
            ),
            t(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            ),
            t("example.com", "widgets", "Widget", true),
        ]
    }

    fn keys(v: &[ResourceType]) -> Vec<String> {
        v.iter().map(ResourceType::key).collect()
    }

    #[test]
    fn default_plan_is_in_dependency_order_without_secrets_events_or_aliases() {
        let p = plan(&server(), &TypeFilter::default());
        assert_eq!(
            keys(&p),
            [
                "namespaces",
                "serviceaccounts",
                "configmaps",
                "services",
                "deployments.apps",
                "replicasets.apps",
                "pods",
                "widgets.example.com",
                "ingresses.networking.k8s.io",
                "roles.rbac.authorization.k8s.io",
            ]
        );
    }

    #[test]
    fn secrets_cluster_and_filters() {
        let f = TypeFilter {
            include_secrets: true,
            include_cluster: true,
            ..Default::default()
        };
        let k = keys(&plan(&server(), &f));
        assert!(k.contains(&"secrets".to_string()));
        assert!(k.contains(&"clusterroles.rbac.authorization.k8s.io".to_string()));
        assert!(!k.contains(&"nodes".to_string()));
        assert!(!k.iter().any(|k| k.starts_with("customresourcedefinitions")));

        let f = TypeFilter {
            include: vec!["ConfigMap".into(), "deployments.apps".into()],
            ..Default::default()
        };
        assert_eq!(
            keys(&plan(&server(), &f)),
            ["namespaces", "configmaps", "deployments.apps"]
        );

        let f = TypeFilter {
            exclude: vec!["pods".into(), "Widget".into()],
            ..Default::default()
        };
        let k = keys(&plan(&server(), &f));
        assert!(
            !k.contains(&"pods".to_string()) && !k.contains(&"widgets.example.com".to_string())
        );

        let f = TypeFilter {
            include: vec!["events".into()],
            ..Default::default()
        };
        assert_eq!(keys(&plan(&server(), &f)), ["namespaces", "events"]);

        assert!(TypeFilter {
            include: vec!["secrets".into()],
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
