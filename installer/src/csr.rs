//! Approval of kubelet serving certificates (`serverTLSBootstrap: true`).
//!
//! A kubelet asks for its serving certificate with a CSR for the signer
//! `kubernetes.io/kubelet-serving`; Kubernetes never approves those by itself, because the
//! names in them come from the node (its own Node status, which a node may write): a
//! compromised node could ask for a certificate naming another node's address and then
//! impersonate that node's kubelet to the API server. clusterkit approves one only after
//! checking it against cluster.yaml, which the node cannot change ([`check_serving_csr`]):
//!
//! - requested by the node itself: username `system:node:<name>`, group `system:nodes`, and
//!   `<name>` is a host of cluster.yaml;
//! - the subject is exactly CN `system:node:<name>`, O `system:nodes`;
//! - every DNS name is the host's name, every IP address the host's address (cluster.yaml);
//!   no other kind of name (e-mail, URI); at least one name;
//! - usages are server auth (with digital signature / key encipherment), nothing else;
//! - the request's signature is valid (the requester holds the key).
//!
//! [`review_pending`] approves the pending requests that pass and denies the others (with the
//! reason, visible in `kubectl get csr`). The install's `join` phase calls it, so renewals are
//! approved by rerunning `clusterkit install` (the certificates live a year; the kubelet asks
//! again at 70–90 % of that).
//!
//! Limits: host names are compared exactly (a host whose kubelet reports a different hostname
//! or extra addresses gets a request that is denied, by design); requests of other signers are
//! left alone.

use std::collections::BTreeSet;
use std::net::IpAddr;

use clusterkit_core::config::Cluster;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The group every node's credentials carry.
pub const NODES_GROUP: &str = "system:nodes";

/// Username prefix of node credentials.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Why a serving CSR was not approved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("signer {0:?} is not {KUBELET_SERVING_SIGNER}")]
    Signer(String),
    #[error("requested by {0:?}, not by a node (system:node:<name> in group system:nodes)")]
    NotANode(String),
    #[error("node {0:?} is not a host of cluster.yaml")]
    UnknownNode(String),
    #[error("request does not parse: {0}")]
    Malformed(String),
    #[error("request signature is invalid")]
    BadSignature,
    #[error("subject {subject:?} is not CN=system:node:{node}, O=system:nodes")]
    Subject { node: String, subject: String },
    #[error("DNS name {name:?} does not belong to node {node}")]
    ForeignDns { node: String, name: String },
    #[error("IP address {ip} does not belong to node {node}")]
    ForeignIp { node: String, ip: String },
    #[error("subject alternative name {0} is of a kind kubelets never ask for")]
    OtherName(String),
    #[error("no DNS name or IP address requested")]
    NoNames,
    #[error("usage {0:?} is not allowed for a kubelet serving certificate")]
    Usage(String),
}

/// Errors talking to the API while reviewing CSRs.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("listing certificate signing requests: {0}")]
    List(#[source] kube::Error),
    #[error("{verdict} certificate signing request {name}: {source}")]
    Decide {
        name: String,
        verdict: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// What [`review_pending`] did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approved, for this node.
    Approved { csr: String, node: String },
    /// Denied, with the reason.
    Denied { csr: String, reason: String },
}

/// The names a host's serving certificate may carry, from cluster.yaml.
fn allowed(cluster: &Cluster, node: &str) -> Option<(BTreeSet<String>, BTreeSet<IpAddr>)> {
    let h = cluster.host(node)?;
    Some((
        BTreeSet::from([h.name.to_ascii_lowercase()]),
        BTreeSet::from([h.address]),
    ))
}

/// The usages a kubelet serving certificate may request.
const USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// Checks a kubelet-serving CSR against cluster.yaml; returns the node it is for.
pub fn check_serving_csr(
    cluster: &Cluster,
    csr: &CertificateSigningRequest,
) -> Result<String, Rejection> {
    let spec = &csr.spec;
    if spec.signer_name != KUBELET_SERVING_SIGNER {
        return Err(Rejection::Signer(spec.signer_name.clone()));
    }
    let user = spec.username.clone().unwrap_or_default();
    let in_group = spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g == NODES_GROUP));
    let node = match user.strip_prefix(NODE_USER_PREFIX) {
        Some(n) if in_group && !n.is_empty() => n.to_string(),
        _ => return Err(Rejection::NotANode(user)),
    };
    let (dns_ok, ip_ok) =
        allowed(cluster, &node).ok_or_else(|| Rejection::UnknownNode(node.clone()))?;
    for u in spec.usages.iter().flatten() {
        if !USAGES.contains(&u.as_str()) {
            return Err(Rejection::Usage(u.clone()));
        }
    }
    if !spec.usages.iter().flatten().any(|u| u == "server auth") {
        return Err(Rejection::Usage("(server auth missing)".into()));
    }
    check_request(&spec.request.0, &node, &dns_ok, &ip_ok)?;
    Ok(node)
}

/// Checks the PEM (or DER) PKCS#10 request itself.
fn check_request(
    request: &[u8],
    node: &str,
    dns_ok: &BTreeSet<String>,
    ip_ok: &BTreeSet<IpAddr>,
) -> Result<(), Rejection> {
    let der = if request.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(request)
            .map_err(|e| Rejection::Malformed(e.to_string()))?;
        if pem.label != "CERTIFICATE REQUEST" {
            return Err(Rejection::Malformed(format!(
                "PEM block {:?}, not CERTIFICATE REQUEST",
                pem.label
            )));
        }
        pem.contents
    } else {
        request.to_vec()
    };
    let (_, req) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Rejection::Malformed(e.to_string()))?;
    req.verify_signature()
        .map_err(|_| Rejection::BadSignature)?;
    let info = &req.certification_request_info;
    let cn: Vec<String> = info
        .subject
        .iter_common_name()
        .map(|a| a.as_str().unwrap_or("?").to_string())
        .collect();
    let o: Vec<String> = info
        .subject
        .iter_organization()
        .map(|a| a.as_str().unwrap_or("?").to_string())
        .collect();
    let rdns = info.subject.iter().count();
    if cn != [format!("{NODE_USER_PREFIX}{node}")] || o != [NODES_GROUP] || rdns != 2 {
        return Err(Rejection::Subject {
            node: node.to_string(),
            subject: info.subject.to_string(),
        });
    }
    let mut names = 0;
    for ext in req.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            names += 1;
            match name {
                GeneralName::DNSName(d) => {
                    if !dns_ok.contains(&d.to_ascii_lowercase()) {
                        return Err(Rejection::ForeignDns {
                            node: node.to_string(),
                            name: d.to_string(),
                        });
                    }
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default()),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default()),
                        _ => {
                            return Err(Rejection::ForeignIp {
                                node: node.to_string(),
                                ip: format!("{bytes:02x?}"),
                            })
                        }
                    };
                    if !ip_ok.contains(&ip) {
                        return Err(Rejection::ForeignIp {
                            node: node.to_string(),
                            ip: ip.to_string(),
                        });
                    }
                }
                other => return Err(Rejection::OtherName(format!("{other:?}"))),
            }
        }
    }
    if names == 0 {
        return Err(Rejection::NoNames);
    }
    Ok(())
}

fn is_pending(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_none_or(|c| {
            !c.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied" || c.type_ == "Failed")
        })
}

/// Reviews every pending kubelet-serving CSR: approves those [`check_serving_csr`] accepts,
/// denies the others (reason `ClusterkitRejected`, the check's message). Returns what it did.
pub async fn review_pending(
    cluster: &Cluster,
    client: &kube::Client,
) -> Result<Vec<Decision>, CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(CsrError::List)?;
    let mut out = Vec::new();
    for csr in list.items {
        if csr.spec.signer_name != KUBELET_SERVING_SIGNER || !is_pending(&csr) {
            continue;
        }
        let name = csr.metadata.name.clone().unwrap_or_default();
        let (verdict, condition, decision) = match check_serving_csr(cluster, &csr) {
            Ok(node) => (
                "approving",
                CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    reason: Some("ClusterkitApproved".into()),
                    message: Some(format!(
                        "names and addresses belong to node {node} in cluster.yaml"
                    )),
                    ..Default::default()
                },
                Decision::Approved {
                    csr: name.clone(),
                    node,
                },
            ),
            Err(why) => {
                tracing::warn!(csr = %name, reason = %why, "kubelet serving CSR denied");
                (
                    "denying",
                    CertificateSigningRequestCondition {
                        type_: "Denied".into(),
                        status: "True".into(),
                        reason: Some("ClusterkitRejected".into()),
                        message: Some(why.to_string()),
                        ..Default::default()
                    },
                    Decision::Denied {
                        csr: name.clone(),
                        reason: why.to_string(),
                    },
                )
            }
        };
        let patch = json!({ "status": { "conditions": [condition] } });
        api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| CsrError::Decide {
                name: name.clone(),
                verdict,
                source,
            })?;
        out.push(decision);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;

    fn cluster() -> Cluster {
        let yaml = r#"
name: t
hosts:
  - { name: node1, address: 10.0.0.11, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: node2, address: 10.0.0.12, roles: [worker], auth: { agent: true } }
kubernetes: { version: v1.20.2, control_plane_endpoint: "10.0.0.11:6443" }
ssh: { known_hosts: ./known_hosts }
"#;
        let dir = std::env::temp_dir();
        clusterkit_core::config::load_str(yaml, &dir.join("cluster.yaml"))
            .expect("test cluster.yaml")
            .cluster
    }

    fn request(cn: &str, org: &str, dns: &[&str], ips: &[&str]) -> Vec<u8> {
        use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, org);
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        for d in dns {
            p.subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        for i in ips {
            p.subject_alt_names
                .push(SanType::IpAddress(i.parse().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        p.serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    fn csr(user: &str, req: Vec<u8>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: KUBELET_SERVING_SIGNER.into(),
                username: Some(user.into()),
                groups: Some(vec![NODES_GROUP.into(), "system:authenticated".into()]),
                usages: Some(vec![
                    "digital signature".into(),
                    "key encipherment".into(),
                    "server auth".into(),
                ]),
                request: ByteString(req),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn own_names_are_approved() {
        let c = cluster();
        let r = request(
            "system:node:node2",
            "system:nodes",
            &["node2"],
            &["10.0.0.12"],
        );
        assert_eq!(
            check_serving_csr(&c, &csr("system:node:node2", r)),
            Ok("node2".into())
        );
    }

    #[test]
    fn another_nodes_ip_is_rejected() {
        let c = cluster();
        let r = request(
            "system:node:node2",
            "system:nodes",
            &["node2"],
            &["10.0.0.12", "10.0.0.11"],
        );
        assert_eq!(
            check_serving_csr(&c, &csr("system:node:node2", r)),
            Err(Rejection::ForeignIp {
                node: "node2".into(),
                ip: "10.0.0.11".into()
            })
        );
    }

    #[test]
    fn another_nodes_name_or_identity_is_rejected() {
        let c = cluster();
        let r = request("system:node:node2", "system:nodes", &["node1"], &[]);
        assert!(matches!(
            check_serving_csr(&c, &csr("system:node:node2", r)),
            Err(Rejection::ForeignDns { .. })
        ));
        // node2's credentials asking for node1's subject.
        let r = request(
            "system:node:node1",
            "system:nodes",
            &["node1"],
            &["10.0.0.11"],
        );
        assert!(matches!(
            check_serving_csr(&c, &csr("system:node:node2", r)),
            Err(Rejection::Subject { .. })
        ));
        // Not a node at all.
        let r = request("system:node:node2", "system:nodes", &["node2"], &[]);
        let mut x = csr("system:node:node2", r);
        x.spec.groups = Some(vec!["system:authenticated".into()]);
        assert!(matches!(
            check_serving_csr(&c, &x),
            Err(Rejection::NotANode(_))
        ));
        // A node cluster.yaml does not know.
        let r = request("system:node:node9", "system:nodes", &["node9"], &[]);
        assert!(matches!(
            check_serving_csr(&c, &csr("system:node:node9", r)),
            Err(Rejection::UnknownNode(_))
        ));
    }

    #[test]
    fn client_usage_and_empty_names_are_rejected() {
        let c = cluster();
        let r = request("system:node:node2", "system:nodes", &["node2"], &[]);
        let mut x = csr("system:node:node2", r);
        x.spec.usages = Some(vec!["client auth".into(), "server auth".into()]);
        assert!(matches!(
            check_serving_csr(&c, &x),
            Err(Rejection::Usage(_))
        ));
        let r = request("system:node:node2", "system:nodes", &[], &[]);
        assert_eq!(
            check_serving_csr(&c, &csr("system:node:node2", r)),
            Err(Rejection::NoNames)
        );
        let mut x = csr("system:node:node2", b"garbage".to_vec());
        x.spec.request = ByteString(b"garbage".to_vec());
        assert!(matches!(
            check_serving_csr(&c, &x),
            Err(Rejection::Malformed(_))
        ));
    }
}
