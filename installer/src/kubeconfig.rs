//! Kubeconfig files for the admin, the control-plane components and kubelets, signed by the
//! cluster CA from [`crate::pki`], plus the token-based bootstrap kubeconfig for TLS bootstrap.
//!
//! Identities are kubeadm's:
//!
//! | file | user (CN) | groups (O) | server |
//! |---|---|---|---|
//! | `kubeconfig/admin.conf` | kubernetes-admin | system:masters (< 1.29) / kubeadm:cluster-admins | endpoint |
//! | `kubeconfig/super-admin.conf` (1.29+) | kubernetes-super-admin | system:masters | endpoint |
//! | `hosts/<cp>/controller-manager.conf` | system:kube-controller-manager | | that host's API server |
//! | `hosts/<cp>/scheduler.conf` | system:kube-scheduler | | that host's API server |
//! | `hosts/<node>/kubelet.conf` | system:node:<node> | system:nodes | endpoint, or the local load balancer |
//!
//! CA, client certificate and key are embedded; files are written 0600. An existing kubeconfig
//! is kept while its embedded CA is the current one, its server is right and its client
//! certificate passes the same checks as [`crate::pki`]'s leaves.
//!
//! Limits: client certificates only (no exec plugins, no OIDC); one cluster/context/user per
//! file. The version rule for admin/super-admin lives in [`crate::versions::rules`].

use clusterkit_core::layout::kubeconfig_file;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pki::{
    self, Action, CaName, CertSpec, LoadedCa, Mode, PkiError, PkiInput, Report, Unusable, Usage,
};
use crate::versions::{self, join_host_port, SYSTEM_MASTERS};
use clusterkit_core::layout::StateLayout;

/// A kubeconfig file (`apiVersion: v1`, `kind: Config`), as much of it as clusterkit writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always `Config`.
    pub kind: String,
    /// Named clusters (one).
    pub clusters: Vec<NamedCluster>,
    /// Named contexts (one).
    pub contexts: Vec<NamedContext>,
    /// The context used by default.
    #[serde(rename = "current-context")]
    pub current_context: String,
    /// Named users (one).
    pub users: Vec<NamedUser>,
}

/// A `clusters[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// Where and how to reach it.
    pub cluster: ClusterEntry,
}

/// The API server's address and CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEntry {
    /// The CA bundle, base64 of PEM.
    #[serde(rename = "certificate-authority-data")]
    pub certificate_authority_data: String,
    /// `https://host:port`.
    pub server: String,
}

/// A `contexts[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Its name (`user@cluster`).
    pub name: String,
    /// The pair it selects.
    pub context: ContextEntry,
}

/// A cluster/user pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// The cluster's name.
    pub cluster: String,
    /// The user's name.
    pub user: String,
}

/// A `users[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its credentials.
    pub user: UserEntry,
}

/// Credentials: a client certificate and key, or a bearer token. `Debug` hides them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// Client certificate, base64 of PEM.
    #[serde(
        rename = "client-certificate-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate_data: Option<String>,
    /// Client key, base64 of PEM.
    #[serde(
        rename = "client-key-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key_data: Option<String>,
    /// Bearer token (bootstrap tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("UserEntry")
            .field(
                "client_certificate_data",
                &shown(&self.client_certificate_data),
            )
            .field("client_key_data", &shown(&self.client_key_data))
            .field("token", &shown(&self.token))
            .finish()
    }
}

/// Errors reading or building kubeconfigs. Never contains credentials.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a kubeconfig clusterkit can read.
    #[error("{path}: {source}")]
    Parse {
        /// The file (or `<memory>`).
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A kubeconfig that does not serialize.
    #[error("<memory>: {0}")]
    Serialize(#[source] serde_saphyr::SerializeError),
    /// A bootstrap token that is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("invalid bootstrap token format (expected [a-z0-9]{{6}}.[a-z0-9]{{16}})")]
    Token,
    /// From the PKI (CA loading, certificate issue, file writes).
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl Kubeconfig {
    /// A one-cluster, one-user kubeconfig.
    pub fn new(
        cluster_name: &str,
        server: &str,
        ca_pem: &str,
        user: &str,
        creds: UserEntry,
    ) -> Self {
        let context = format!("{user}@{cluster_name}");
        Self {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: cluster_name.into(),
                cluster: ClusterEntry {
                    certificate_authority_data: B64.encode(ca_pem),
                    server: server.into(),
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: ContextEntry {
                    cluster: cluster_name.into(),
                    user: user.into(),
                },
            }],
            current_context: context,
            users: vec![NamedUser {
                name: user.into(),
                user: creds,
            }],
        }
    }

    /// Parses YAML (or JSON) text.
    pub fn from_yaml(text: &str) -> Result<Self, KubeconfigError> {
        serde_saphyr::from_str(text).map_err(|e| KubeconfigError::Parse {
            path: "<memory>".into(),
            source: Box::new(e),
        })
    }

    /// Reads and parses a kubeconfig file.
    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut k = Self::from_yaml(&text);
        if let Err(KubeconfigError::Parse { path: p, .. }) = &mut k {
            *p = path.into();
        }
        k
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        serde_saphyr::to_string(self).map_err(KubeconfigError::Serialize)
    }

    fn current(&self) -> Option<(&ClusterEntry, &UserEntry)> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)?;
        let user = self.users.iter().find(|u| u.name == ctx.context.user)?;
        Some((&cluster.cluster, &user.user))
    }

    /// The current context's server URL.
    pub fn server(&self) -> Option<&str> {
        self.current().map(|(c, _)| c.server.as_str())
    }

    /// The current context's CA bundle, PEM.
    pub fn ca_pem(&self) -> Option<String> {
        let (c, _) = self.current()?;
        decode(&c.certificate_authority_data)
    }

    /// The current user's client certificate, PEM.
    pub fn client_cert_pem(&self) -> Option<String> {
        decode(self.current()?.1.client_certificate_data.as_ref()?)
    }

    /// The current user's client key, PEM.
    pub fn client_key_pem(&self) -> Option<String> {
        decode(self.current()?.1.client_key_data.as_ref()?)
    }
}

fn decode(b64: &str) -> Option<String> {
    String::from_utf8(B64.decode(b64.trim()).ok()?).ok()
}

/// kubeadm's user name in bootstrap kubeconfigs.
pub const BOOTSTRAP_USER: &str = "tls-bootstrap-token-user";

/// Checks the bootstrap token format `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn valid_bootstrap_token(token: &str) -> bool {
    let ok = |s: &str, n| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(token.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// The bootstrap kubeconfig a joining kubelet uses (`--bootstrap-kubeconfig`): the cluster CA,
/// the endpoint and a bootstrap token, which only allows creating a node-client CSR.
pub fn bootstrap_kubeconfig(
    cluster_name: &str,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<Kubeconfig, KubeconfigError> {
    if !valid_bootstrap_token(token) {
        return Err(KubeconfigError::Token);
    }
    Ok(Kubeconfig::new(
        cluster_name,
        server,
        ca_pem,
        BOOTSTRAP_USER,
        UserEntry {
            token: Some(token.into()),
            ..UserEntry::default()
        },
    ))
}

/// One kubeconfig to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeconfigSpec {
    /// `admin.conf`, `kubelet.conf/<node>`, …
    pub name: String,
    /// Path relative to the state directory.
    pub path: PathBuf,
    /// The user name (the certificate's CN).
    pub user: String,
    /// Groups (the certificate's O).
    pub groups: Vec<String>,
    /// The API server URL.
    pub server: String,
}

impl KubeconfigSpec {
    fn cert_spec(&self) -> CertSpec {
        CertSpec {
            name: self.name.clone(),
            base: self.path.clone(),
            ca: CaName::Kubernetes,
            common_name: self.user.clone(),
            organization: self.groups.clone(),
            usages: vec![Usage::ClientAuth],
            dns_names: vec![],
            ips: vec![],
        }
    }
}

/// Every kubeconfig of the cluster for this input and version.
pub fn kubeconfig_specs(input: &PkiInput) -> Vec<KubeconfigSpec> {
    let rules = versions::rules(input.version);
    let endpoint = input.server_url();
    let kc = Path::new(StateLayout::KUBECONFIG);
    let mut specs = vec![KubeconfigSpec {
        name: kubeconfig_file::ADMIN.into(),
        path: kc.join(kubeconfig_file::ADMIN),
        user: "kubernetes-admin".into(),
        groups: vec![rules.admin_group.into()],
        server: endpoint.clone(),
    }];
    if rules.super_admin_kubeconfig {
        specs.push(KubeconfigSpec {
            name: kubeconfig_file::SUPER_ADMIN.into(),
            path: kc.join(kubeconfig_file::SUPER_ADMIN),
            user: "kubernetes-super-admin".into(),
            groups: vec![SYSTEM_MASTERS.into()],
            server: endpoint.clone(),
        });
    }
    for h in &input.control_plane {
        // Components talk to their own host's API server, as kubeadm does since 1.23 (it
        // keeps them working while a load balancer in front is down).
        let local = format!("https://{}", join_host_port(h.ip, input.apiserver_port));
        for (file, user) in [
            (
                kubeconfig_file::CONTROLLER_MANAGER,
                "system:kube-controller-manager",
            ),
            (kubeconfig_file::SCHEDULER, "system:kube-scheduler"),
        ] {
            specs.push(KubeconfigSpec {
                name: format!("{file}/{}", h.name),
                path: StateLayout::host_rel(&h.name).join(file),
                user: user.into(),
                groups: vec![],
                server: local.clone(),
            });
        }
    }
    // Kubelets reach the API through the local load balancer when there is one.
    let node_server = input.node_server_url();
    for h in &input.kubelet_nodes {
        specs.push(KubeconfigSpec {
            name: format!("kubelet.conf/{}", h.name),
            path: StateLayout::host_rel(&h.name).join(kubeconfig_file::KUBELET),
            user: format!("system:node:{}", h.name),
            groups: vec!["system:nodes".into()],
            server: node_server.clone(),
        });
    }
    specs
}

/// Why an existing kubeconfig must be rewritten, or `Ok` when it is good.
fn check_existing(
    path: &Path,
    spec: &KubeconfigSpec,
    ca: &LoadedCa,
    input: &PkiInput,
    now: OffsetDateTime,
) -> Result<(), Unusable> {
    let differs = |what: &str| Unusable::Differs(what.to_string());
    let k = Kubeconfig::load(path)?;
    let ca_pem = k.ca_pem().ok_or_else(|| differs("no readable CA data"))?;
    if pki::pem_to_der(&ca_pem).ok().as_deref() != Some(ca.cert_der()) {
        return Err(differs("embeds another CA"));
    }
    if k.server() != Some(spec.server.as_str()) {
        return Err(differs(&format!("server is not {}", spec.server)));
    }
    let cert_pem = k.client_cert_pem().ok_or(Unusable::NoClientCert)?;
    let key_pem = k.client_key_pem().ok_or_else(|| differs("no client key"))?;
    let der = pki::pem_to_der(&cert_pem)?;
    // The parse error is not kept: it could echo key material.
    let key = KeyPair::from_pem(&key_pem).map_err(|_| differs("client key unreadable"))?;
    pki::check_leaf(
        &der,
        &key,
        &spec.cert_spec(),
        ca,
        now,
        input.validity.renew_before,
    )
}

/// Creates whatever kubeconfig is missing or invalid (or, in check mode, reports it). Needs the
/// cluster CA from [`pki::ensure`]; in check mode a missing CA means every file would change.
#[tracing::instrument(skip_all, fields(state = %layout.root.display(), ?mode))]
pub fn ensure(
    input: &PkiInput,
    layout: &StateLayout,
    mode: Mode,
) -> Result<Report, KubeconfigError> {
    ensure_at(input, layout, mode, OffsetDateTime::now_utc())
}

/// [`ensure`] at a given time.
pub fn ensure_at(
    input: &PkiInput,
    layout: &StateLayout,
    mode: Mode,
    now: OffsetDateTime,
) -> Result<Report, KubeconfigError> {
    let ca = match LoadedCa::load(layout, CaName::Kubernetes) {
        Ok(ca) => Some(ca),
        Err(_) if mode == Mode::Check => None,
        Err(e) => return Err(e.into()),
    };
    let mut report = Report::default();
    for spec in kubeconfig_specs(input) {
        let path = layout.root.join(&spec.path);
        let exists = path.exists();
        let verdict = match &ca {
            Some(ca) if exists => check_existing(&path, &spec, ca, input, now),
            None if exists => Err(Unusable::Differs("the cluster CA is missing".into())),
            _ => Ok(()),
        };
        let action = match (exists, verdict) {
            (true, Ok(())) => {
                if std::fs::metadata(&path)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                    .unwrap_or(0)
                    != 0o600
                {
                    if mode == Mode::Apply {
                        std::fs::set_permissions(
                            &path,
                            std::os::unix::fs::PermissionsExt::from_mode(0o600),
                        )
                        .map_err(|source| PkiError::Io {
                            op: "chmod",
                            path: path.clone(),
                            source,
                        })?;
                    }
                    Action::ModeFixed
                } else {
                    Action::Kept
                }
            }
            (true, Err(reason)) => Action::Replaced {
                reason: reason.to_string(),
            },
            (false, _) => Action::Created,
        };
        let write = matches!(action, Action::Created | Action::Replaced { .. });
        report.push(&spec.name, &path, action);
        if let (true, Mode::Apply, Some(ca)) = (write, mode, &ca) {
            let (cert_pem, key_pem) =
                pki::issue_leaf(&spec.cert_spec(), ca, now, input.validity.leaf)?;
            let config = Kubeconfig::new(
                &input.cluster_name,
                &spec.server,
                &ca.cert_pem,
                &spec.user,
                UserEntry {
                    client_certificate_data: Some(B64.encode(cert_pem)),
                    client_key_data: Some(B64.encode(key_pem)),
                    token: None,
                },
            );
            pki::write_file(&path, config.to_yaml()?.as_bytes(), 0o600)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_token_format() {
        assert!(valid_bootstrap_token("abcdef.0123456789abcdef"));
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abc.0123456789abcdef",
            "",
        ] {
            assert!(!valid_bootstrap_token(bad), "{bad}");
        }
        let k = bootstrap_kubeconfig(
            "demo",
            "https://10.0.0.1:6443",
            "PEM",
            "abcdef.0123456789abcdef",
        )
        .unwrap();
        let text = k.to_yaml().unwrap();
        let back = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.server(), Some("https://10.0.0.1:6443"));
        assert_eq!(back.ca_pem().as_deref(), Some("PEM"));
        assert!(
            !format!("{k:?}").contains("0123456789abcdef"),
            "Debug must not show the token"
        );
    }
}
