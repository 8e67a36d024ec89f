//! Bootstrap tokens for kubelet TLS bootstrap, as kubeadm makes them: a Secret
//! `bootstrap-token-<id>` in kube-system (type `bootstrap.kubernetes.io/token`) usable for
//! authentication and for signing the `cluster-info` ConfigMap, in the group
//! `system:bootstrappers:kubeadm:default-node-token`, expiring after a TTL; plus the join
//! command an operator hands to a new node (`clusterkit token create --print-join-command`).
//!
//! The join phase keeps its token in `<state>/bootstrap-token` (0600) and reuses it while the
//! Secret exists and has more than [`REUSE_MARGIN`] left, so a rerun changes nothing on nodes.
//!
//! Limits: the printed join command has kubeadm's form (`kubeadm join ENDPOINT --token T
//! --discovery-token-ca-cert-hash sha256:H`); clusterkit's own join path is the `join` phase.
//! Tokens are never printed to logs or errors; only the CLI prints a token, on stdout, on request.

use std::path::PathBuf;
use std::time::Duration;

use clusterkit_core::config::Cluster;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use rand::Rng;
use sha2::{Digest, Sha256};

use clusterkit_core::layout::{NodeLayout, StateLayout};

/// The group joining kubelets authenticate as (kubeadm's default node token group).
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The field manager of everything clusterkit applies.
pub const FIELD_MANAGER: &str = "clusterkit";
/// A saved token is replaced when it expires within this.
pub const REUSE_MARGIN: Duration = Duration::from_secs(3600);
/// The default lifetime of a token (kubeadm's).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Errors of token handling. Messages never contain the token secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// A local file could not be read.
    #[error("{path}: {source}{hint}")]
    Read {
        /// The file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
        /// What to do about it (may be empty).
        hint: &'static str,
    },
    /// A local file could not be written.
    #[error(transparent)]
    Write(#[from] crate::pki::PkiError),
    /// The cluster CA certificate cannot be read.
    #[error("CA certificate: {0}")]
    Ca(#[source] crate::pki::Unusable),
    /// Bad input (e.g. a TTL that does not parse).
    #[error("{0}")]
    Invalid(String),
}

/// A bootstrap token `<id>.<secret>`. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, `[a-z0-9]{6}`.
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapToken({}.<hidden>)", self.id)
    }
}

fn random_part(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

impl BootstrapToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        Self {
            id: random_part(6),
            secret: random_part(16),
        }
    }

    /// Parses `<id>.<secret>`.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        if !crate::kubeconfig::valid_bootstrap_token(t) {
            return None;
        }
        let (id, secret) = t.split_once('.')?;
        Some(Self {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// The whole token, for a bootstrap kubeconfig or the operator.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret's name.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The Secret that makes this token valid until `expiration`.
    pub fn secret(&self, expiration: chrono::DateTime<chrono::Utc>, description: &str) -> Secret {
        let b = |s: &str| ByteString(s.as_bytes().to_vec());
        let data = [
            ("token-id", self.id.as_str()),
            ("token-secret", self.secret.as_str()),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
            ("auth-extra-groups", BOOTSTRAP_GROUP),
            ("description", description),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), b(v)))
        .chain([(
            "expiration".to_string(),
            b(&expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        )])
        .collect();
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// Parses a TTL like `24h`, `90m`, `3600s`, `2d` or `0` (never expires).
pub fn parse_ttl(text: &str) -> Result<Duration, TokenError> {
    let t = text.trim();
    let bad = || TokenError::Invalid(format!("bad TTL {t:?}: use e.g. 24h, 90m, 3600s, 2d or 0"));
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(factor) {
        Some(secs) if (1..=MAX_TTL.as_secs()).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(TokenError::Invalid(format!(
            "TTL {t:?} is outside 1s..=3650d (0 means ten years)"
        ))),
    }
}

/// [`parse_ttl`] for clap, which then names the flag in the error.
fn ttl_flag(text: &str) -> Result<Duration, TokenError> {
    parse_ttl(text)
}

/// The longest TTL, also what `0` means: ten years.
const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// When a token made at `now` with `ttl` expires (zero: ten years), with checked arithmetic.
pub fn expires_at(
    ttl: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, TokenError> {
    let ttl = if ttl.is_zero() { MAX_TTL } else { ttl };
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| TokenError::Invalid(format!("a TTL of {ttl:?} reaches past the last date")))
}

/// Creates a new token Secret valid for `ttl` (zero: a far expiration, ten years).
pub async fn create(
    client: &kube::Client,
    ttl: Duration,
    description: &str,
) -> Result<(BootstrapToken, chrono::DateTime<chrono::Utc>), TokenError> {
    let token = BootstrapToken::generate();
    let expiration = expires_at(ttl, chrono::Utc::now())?;
    apply_secret(client, &token, expiration, description).await?;
    Ok((token, expiration))
}

async fn apply_secret(
    client: &kube::Client,
    token: &BootstrapToken,
    expiration: chrono::DateTime<chrono::Utc>,
    description: &str,
) -> Result<(), TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let secret = token.secret(expiration, description);
    api.patch(
        &token.secret_name(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|source| TokenError::Api {
        what: format!("applying Secret kube-system/{}", token.secret_name()),
        source,
    })?;
    Ok(())
}

/// When the token's Secret expires, or `None` when it does not exist (or has no expiration).
pub async fn expiration(
    client: &kube::Client,
    token: &BootstrapToken,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let s = api
        .get_opt(&token.secret_name())
        .await
        .map_err(|source| TokenError::Api {
            what: format!("reading Secret kube-system/{}", token.secret_name()),
            source,
        })?;
    Ok(s.and_then(|s| s.data)
        .and_then(|d| d.get("expiration").cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&chrono::Utc)))
}

/// The token file of the join phase.
pub fn saved_path(cluster: &Cluster) -> PathBuf {
    StateLayout::from_cluster(cluster)
        .root
        .join("bootstrap-token")
}

/// The join phase's token: the saved one while its Secret exists and lives longer than
/// [`REUSE_MARGIN`], else a new one (valid [`DEFAULT_TTL`]), saved 0600.
pub async fn ensure_join_token(
    cluster: &Cluster,
    client: &kube::Client,
) -> Result<BootstrapToken, TokenError> {
    let path = saved_path(cluster);
    if let Some(saved) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| BootstrapToken::parse(&t))
    {
        if let Some(exp) = expiration(client, &saved).await? {
            let margin = chrono::Duration::from_std(REUSE_MARGIN).unwrap_or_default();
            if exp > chrono::Utc::now() + margin {
                return Ok(saved);
            }
        }
    }
    let (token, _) = create(client, DEFAULT_TTL, "clusterkit join phase").await?;
    crate::pki::write_file(&path, format!("{}\n", token.expose()).as_bytes(), 0o600)?;
    Ok(token)
}

/// `sha256:<hex>` of the CA certificate's public key (SubjectPublicKeyInfo), kubeadm's
/// `--discovery-token-ca-cert-hash`.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, TokenError> {
    let der = crate::pki::pem_to_der(ca_pem).map_err(TokenError::Ca)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TokenError::Ca(crate::pki::Unusable::Der(Box::new(e))))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// The join command for `token`: `kubeadm join <endpoint> --token … --discovery-token-ca-cert-hash …`.
pub fn join_command(cluster: &Cluster, token: &BootstrapToken) -> Result<String, TokenError> {
    let ca_path = StateLayout::from_cluster(cluster).pki_dir().join("ca.crt");
    let ca = std::fs::read_to_string(&ca_path).map_err(|source| TokenError::Read {
        path: ca_path.clone(),
        source,
        hint: " (run `clusterkit install --phase pki` first)",
    })?;
    Ok(format!(
        "kubeadm join {} --token {} --discovery-token-ca-cert-hash {}",
        cluster.kubernetes.control_plane_endpoint,
        token.expose(),
        ca_cert_hash(&ca)?
    ))
}

/// The `kubeadm-config` ConfigMap's `ClusterConfiguration` API version kubeadm of `v` reads.
pub fn kubeadm_api_version(v: clusterkit_core::release::KubeVersion) -> &'static str {
    if v.at_least(31) {
        "kubeadm.k8s.io/v1beta4"
    } else if v.at_least(22) {
        "kubeadm.k8s.io/v1beta3"
    } else {
        "kubeadm.k8s.io/v1beta2"
    }
}

/// The name of the ConfigMap holding the cluster's KubeletConfiguration: `kubelet-config-1.X`
/// up to 1.23, `kubelet-config` from 1.24 (kubeadm's UnversionedKubeletConfigMap).
pub fn kubelet_config_map_name(v: clusterkit_core::release::KubeVersion) -> String {
    if v.at_least(24) {
        "kubelet-config".into()
    } else {
        format!("kubelet-config-{}.{}", v.major, v.minor)
    }
}

/// The Node annotation where kubeadm keeps a node's CRI socket; its commands on a node
/// (`certs check-expiration`, `upgrade plan`, `upgrade node`) read it from the node's Node.
pub const CRI_SOCKET_ANNOTATION: &str = "kubeadm.alpha.kubernetes.io/cri-socket";

/// The annotation's value as kubeadm of `v` writes it for containerd: the socket path up to
/// v1.23, its `unix://` URL from v1.24 (which warns about a bare path).
pub fn kubeadm_cri_socket(v: clusterkit_core::release::KubeVersion) -> String {
    let layout = NodeLayout::DEFAULT;
    if v.at_least(24) {
        layout.cri_endpoint.to_string()
    } else {
        layout.containerd_socket.to_string()
    }
}

/// kubeadm's `ClusterConfiguration` for this cluster, as `kubeadm join` (and `upgrade`,
/// `certs`) read it from the `kubeadm-config` ConfigMap. etcd is kubeadm's `local` (stacked)
/// etcd when every member is a static pod on a control-plane host
/// ([`crate::phases::etcd::static_pod`]), else `external` (systemd units, which kubeadm leaves
/// alone), reached with the API server's etcd client certificate.
pub fn cluster_configuration(cluster: &Cluster) -> serde_json::Value {
    let k = &cluster.kubernetes;
    let v = cluster.kubernetes.version;
    let node = NodeLayout::from_cluster(cluster);
    let members = cluster.hosts_with_role(clusterkit_core::config::Role::Etcd);
    let stacked = !members.is_empty()
        && members
            .iter()
            .all(|h| crate::phases::etcd::static_pod(cluster, h));
    let etcd = if stacked {
        serde_json::json!({ "local": { "dataDir": node.etcd_data_dir } })
    } else {
        serde_json::json!({
            "external": {
                "endpoints": node.etcd_client_urls(cluster),
                "caFile": node.pki("etcd/ca.crt"),
                "certFile": node.pki("apiserver-etcd-client.crt"),
                "keyFile": node.pki("apiserver-etcd-client.key"),
            }
        })
    };
    serde_json::json!({
        "apiVersion": kubeadm_api_version(v),
        "kind": "ClusterConfiguration",
        "clusterName": cluster.name,
        "kubernetesVersion": format!("v{}.{}.{}", v.major, v.minor, v.patch),
        "controlPlaneEndpoint": k.control_plane_endpoint.to_string(),
        "certificatesDir": node.pki_dir,
        "imageRepository": k.image_repository,
        "networking": {
            "dnsDomain": k.dns_domain,
            "podSubnet": k.pod_cidr.to_string(),
            "serviceSubnet": k.service_cidr.to_string(),
        },
        "etcd": etcd,
    })
}

/// kubeadm's `ClusterStatus` (v1beta2 only; removed with v1beta3): every API server's address.
pub fn cluster_status(cluster: &Cluster) -> serde_json::Value {
    use clusterkit_core::config::Role;
    let endpoints: serde_json::Map<String, serde_json::Value> = cluster
        .hosts_with_role(Role::ControlPlane)
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                serde_json::json!({
                    "advertiseAddress": h.address.to_string(),
                    "bindPort": NodeLayout::from_cluster(cluster).ports.apiserver,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "apiVersion": "kubeadm.k8s.io/v1beta2",
        "kind": "ClusterStatus",
        "apiEndpoints": endpoints,
    })
}

fn to_yaml(v: &serde_json::Value) -> Result<String, TokenError> {
    serde_saphyr::to_string(v).map_err(|e| TokenError::Invalid(format!("rendering YAML: {e}")))
}

/// What `kubeadm join` reads from the cluster besides `cluster-info`, with the RBAC that lets
/// a bootstrap token (and nodes) read it — kubeadm's own object names:
/// - ConfigMap `kube-system/kubeadm-config` (`ClusterConfiguration`, and `ClusterStatus` for
///   v1beta2) + Role/RoleBinding `kubeadm:nodes-kubeadm-config`;
/// - ConfigMap `kube-system/kubelet-config-1.X` (`kubelet`: the cluster's KubeletConfiguration,
///   `kubelet_config`) + Role/RoleBinding `kubeadm:kubelet-config-1.X`;
/// - ClusterRole/ClusterRoleBinding `kubeadm:get-nodes` (join checks for a Node of its name);
/// - Role/RoleBinding `kube-proxy` (get the `kube-proxy` ConfigMap, which kubeadm join reads
///   when it exists; clusterkit runs kube-proxy from its own files and creates none).
pub fn kubeadm_objects(
    cluster: &Cluster,
    kubelet_config: &str,
) -> Result<Vec<serde_json::Value>, TokenError> {
    use serde_json::json;
    let v = cluster.kubernetes.version;
    let mut data = serde_json::Map::new();
    data.insert(
        "ClusterConfiguration".into(),
        to_yaml(&cluster_configuration(cluster))?.into(),
    );
    if !v.at_least(22) {
        data.insert(
            "ClusterStatus".into(),
            to_yaml(&cluster_status(cluster))?.into(),
        );
    }
    let kubelet_cm = kubelet_config_map_name(v);
    let ns = "kube-system";
    let readers = json!([
        { "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP },
        { "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes" },
    ]);
    let role = |name: &str, resource: &str, names: &[&str], verbs: &[&str]| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": name, "namespace": ns },
            "rules": [{ "apiGroups": [""], "resources": [resource], "resourceNames": names, "verbs": verbs }],
        })
    };
    let binding = |name: &str, subjects: &serde_json::Value| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name, "namespace": ns },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": subjects,
        })
    };
    let bootstrappers = json!([
        { "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP },
    ]);
    let kubelet_role = format!("kubeadm:{kubelet_cm}");
    Ok(vec![
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "kubeadm-config", "namespace": ns },
            "data": data,
        }),
        role(
            "kubeadm:nodes-kubeadm-config",
            "configmaps",
            &["kubeadm-config"],
            &["get"],
        ),
        binding("kubeadm:nodes-kubeadm-config", &readers),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": kubelet_cm, "namespace": ns },
            "data": { "kubelet": kubelet_config },
        }),
        role(&kubelet_role, "configmaps", &[&kubelet_cm], &["get"]),
        binding(&kubelet_role, &readers),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "kubeadm:get-nodes" },
            "rules": [{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get"] }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": "kubeadm:get-nodes" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeadm:get-nodes" },
            "subjects": bootstrappers,
        }),
        role("kube-proxy", "configmaps", &["kube-proxy"], &["get"]),
        binding("kube-proxy", &bootstrappers),
    ])
}

/// Applies [`kubeadm_objects`] (server-side apply, field manager `clusterkit`).
pub async fn apply_kubeadm_objects(
    client: &kube::Client,
    cluster: &Cluster,
    kubelet_config: &str,
) -> Result<(), TokenError> {
    use kube::api::DynamicObject;
    use kube::discovery::ApiResource;
    for obj in kubeadm_objects(cluster, kubelet_config)? {
        let (group, version) = match obj["apiVersion"].as_str().unwrap_or("v1").split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), "v1".to_string()),
        };
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let plural = format!("{}s", kind.to_lowercase());
        let ar = ApiResource {
            group: group.clone(),
            version: version.clone(),
            api_version: obj["apiVersion"].as_str().unwrap_or("v1").to_string(),
            kind: kind.clone(),
            plural,
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|source| TokenError::Api {
            what: format!("applying {kind} {name}"),
            source,
        })?;
    }
    Ok(())
}

/// `clusterkit token …` arguments (the lead wires them as the `token` subcommand).
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// `clusterkit token` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token for joining nodes and print it (or the join command).
    Create {
        /// How long the token is valid: 24h, 90m, 2d, or 0 for (practically) never.
        #[arg(long, default_value = "24h", value_parser = ttl_flag)]
        ttl: Duration,
        /// Print the whole join command instead of the token alone.
        #[arg(long)]
        print_join_command: bool,
    },
}

impl TokenArgs {
    /// Runs the subcommand against the cluster (admin.conf from the state directory) and
    /// returns what to print on stdout.
    pub async fn run(&self, cluster: &Cluster) -> Result<String, TokenError> {
        match &self.command {
            TokenCommand::Create {
                ttl,
                print_join_command,
            } => {
                let ttl = *ttl;
                let client = crate::kube_api::admin_client(cluster, None)
                    .await
                    .map_err(|e| TokenError::Invalid(e.to_string()))?;
                let (token, _) = create(&client, ttl, "clusterkit token create").await?;
                if *print_join_command {
                    join_command(cluster, &token)
                } else {
                    Ok(token.expose())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = BootstrapToken::generate();
        assert!(crate::kubeconfig::valid_bootstrap_token(&t.expose()));
        assert_eq!(BootstrapToken::parse(&t.expose()), Some(t.clone()));
        assert!(!format!("{t:?}").contains(&t.secret));
        let s = t.secret(chrono::Utc::now(), "x");
        let d = s.data.unwrap();
        assert_eq!(d["auth-extra-groups"].0, BOOTSTRAP_GROUP.as_bytes());
        assert_eq!(d["usage-bootstrap-signing"].0, b"true");
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
    }

    #[test]
    fn kubeadm_objects_by_version() {
        use clusterkit_core::release::KubeVersion;
        assert_eq!(
            kubeadm_api_version(KubeVersion::new(1, 20, 2)),
            "kubeadm.k8s.io/v1beta2"
        );
        assert_eq!(
            kubeadm_api_version(KubeVersion::new(1, 26, 3)),
            "kubeadm.k8s.io/v1beta3"
        );
        assert_eq!(
            kubeadm_api_version(KubeVersion::new(1, 31, 0)),
            "kubeadm.k8s.io/v1beta4"
        );
        assert_eq!(
            kubelet_config_map_name(KubeVersion::new(1, 20, 2)),
            "kubelet-config-1.20"
        );
        assert_eq!(
            kubelet_config_map_name(KubeVersion::new(1, 26, 3)),
            "kubelet-config"
        );
        assert_eq!(
            kubeadm_cri_socket(KubeVersion::new(1, 20, 2)),
            "/run/containerd/containerd.sock"
        );
        assert_eq!(
            kubeadm_cri_socket(KubeVersion::new(1, 28, 7)),
            "unix:///run/containerd/containerd.sock"
        );
    }

    #[test]
    fn etcd_is_local_only_when_every_member_is_a_static_pod() {
        let etcd = |mode: &str, second: &str| {
            let c = crate::test_cluster(&format!(
                "name: demo\nhosts:\n  - {{ name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: {{ key_file: ./k }} }}\n  - {{ name: n2, address: 10.0.0.12, roles: [{second}], auth: {{ key_file: ./k }} }}\nkubernetes: {{ version: v1.20.2, control_plane_mode: {mode} }}\n"
            ));
            cluster_configuration(&c)["etcd"].clone()
        };
        assert_eq!(
            etcd("static-pod", "worker"),
            serde_json::json!({ "local": { "dataDir": "/var/lib/etcd" } })
        );
        // A member without the control plane runs under systemd: kubeadm's external etcd.
        for (mode, second) in [("static-pod", "worker, etcd"), ("systemd", "worker")] {
            let e = etcd(mode, second);
            assert_eq!(
                e["external"]["certFile"], "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                "{mode} {second}: {e}"
            );
            assert!(e.get("local").is_none(), "{e}");
        }
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "h",
            "5x",
            "-1h",
            "0s",
            "3651d",
            "18446744073709551615d",
            "99999999999999999999s",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ttl("3650d").unwrap(), MAX_TTL);
    }
}
