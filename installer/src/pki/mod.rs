//! kubeadm-style PKI generated in-process with rcgen, kept in the cluster's state directory.
//!
//! The layout, subjects and key usages are kubeadm's (`cmd/kubeadm/app/phases/certs/certlist.go`
//! and `pkiutil`), so kubeadm's own `certs` commands keep working on the result:
//!
//! ```text
//! <state>/pki/ca.{crt,key}                       CN=kubernetes (CA)
//! <state>/pki/apiserver.{crt,key}                CN=kube-apiserver, serverAuth, SANs below
//! <state>/pki/apiserver-kubelet-client.{crt,key} CN=kube-apiserver-kubelet-client, O=system:masters, clientAuth
//! <state>/pki/front-proxy-ca.{crt,key}           CN=front-proxy-ca (CA)
//! <state>/pki/front-proxy-client.{crt,key}       CN=front-proxy-client, clientAuth
//! <state>/pki/sa.{key,pub}                       service-account signing key pair
//! <state>/pki/etcd/ca.{crt,key}                  CN=etcd-ca (CA)
//! <state>/pki/etcd/healthcheck-client.{crt,key}  CN=kube-etcd-healthcheck-client, O=system:masters, clientAuth
//! <state>/pki/etcd/metrics-client.{crt,key}      CN=clusterkit-etcd-metrics, clientAuth (monitoring only)
//! <state>/pki/apiserver-etcd-client.{crt,key}    CN=kube-apiserver-etcd-client, O=system:masters, clientAuth
//! <state>/hosts/<member>/pki/etcd/server.{crt,key}  CN=<member>, serverAuth+clientAuth
//! <state>/hosts/<member>/pki/etcd/peer.{crt,key}    CN=<member>, serverAuth+clientAuth
//! ```
//!
//! The monitoring stack has a CA of its own (made by `clusterkit monitor config|deploy`, not by
//! the pki phase, and only while `monitor.tls` is on; see [`monitoring_cert_specs`]):
//!
//! ```text
//! <state>/pki/monitoring/ca.{crt,key}                       CN=clusterkit-monitoring-ca (CA)
//! <state>/pki/monitoring/prometheus-client.{crt,key}        CN=clusterkit-prometheus, clientAuth (scrapes)
//! <state>/pki/monitoring/alertmanager-client.{crt,key}      CN=clusterkit-alertmanager-client, clientAuth
//! <state>/pki/monitoring/exporter.{crt,key}                 CN=clusterkit-exporter, serverAuth
//! <state>/hosts/<host>/pki/monitoring/node-exporter.{crt,key}  CN=<host>, serverAuth, every host
//! <state>/hosts/<mon>/pki/monitoring/prometheus.{crt,key}      CN=<mon>, serverAuth, monitor hosts
//! <state>/hosts/<mon>/pki/monitoring/alertmanager.{crt,key}    CN=<mon>, serverAuth+clientAuth (gossip), monitor hosts
//! ```
//!
//! Unlike kubeadm, one apiserver certificate covers every control-plane host (it is the same
//! file on each of them). A node's `/etc/kubernetes/pki` is `<state>/pki` overlaid with
//! `<state>/hosts/<node>/pki` ([`host_files`]).
//!
//! Idempotence: an existing certificate is kept when it parses, matches its key, is signed by
//! the current CA, still has the subject, usages and every required SAN, and does not expire
//! within [`Validity::renew_before`]. A CA is replaced only when missing, unreadable or expired
//! (replacing it re-issues everything it signed). Keys are RSA 2048 (kubeadm's default),
//! written 0600 through a temporary file and a rename.
//!
//! Limits: no external CA mode (the CA keys must be here), no intermediate CAs, no key
//! encryption at rest; the state directory must be protected like the keys it holds.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use clusterkit_core::config::{nth_ip, Endpoint};
use clusterkit_core::layout::{NodeLayout, StateLayout};
use clusterkit_core::release::KubeVersion;
use ipnet::IpNet;

use crate::versions::SYSTEM_MASTERS;

mod input;
mod issue;
mod monitor;
mod specs;

pub use input::*;
pub use issue::*;
pub use monitor::*;
pub use specs::*;

/// Errors of the PKI phase. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The cluster input cannot produce a PKI (e.g. a bad service CIDR).
    #[error("invalid PKI input, {field}: {message}")]
    Input {
        /// The input field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// rcgen refused to build a key or certificate.
    #[error("cannot generate {name}: {source}")]
    Generate {
        /// The certificate or key being made.
        name: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// An existing file that must be usable (a CA in check mode, a CA for a kubeconfig) is not.
    #[error("cannot use {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        #[source]
        source: Unusable,
    },
}

/// Why an existing certificate, key or kubeconfig cannot be used or kept as it is.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("missing (run the pki phase first)")]
    Missing,

    #[error("not text")]
    NotText,

    #[error("not a PEM certificate: {0}")]
    Pem(#[source] Box<x509_parser::nom::Err<x509_parser::error::PEMError>>),

    #[error("PEM block is {0:?}, not CERTIFICATE")]
    Label(String),

    #[error("not a readable certificate: {0}")]
    Der(#[source] Box<x509_parser::nom::Err<x509_parser::error::X509Error>>),

    /// The parse error is not kept: it could echo key material.
    #[error("not a readable private key")]
    Key,

    #[error("client-certificate-data is not base64: {0}")]
    Base64(#[source] base64::DecodeError),

    #[error("no client certificate")]
    NoClientCert,

    /// The kubeconfig itself cannot be read.
    #[error(transparent)]
    Kubeconfig(Box<crate::kubeconfig::KubeconfigError>),

    /// What differs from what clusterkit issues, or what else is wrong, in words ("expires in
    /// 3 days").
    #[error("{0}")]
    Differs(String),
}

impl From<crate::kubeconfig::KubeconfigError> for Unusable {
    fn from(e: crate::kubeconfig::KubeconfigError) -> Self {
        Unusable::Kubeconfig(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_past_the_last_date_is_an_error_not_a_panic() {
        let now = OffsetDateTime::now_utc();
        for days in [9_999_999u64, u64::MAX / 86_400] {
            let lifetime = Duration::from_secs(DAY.as_secs().saturating_mul(days));
            let Err(err) = issue_ca(CaName::Kubernetes, now, lifetime) else {
                panic!("{days} days accepted");
            };
            assert!(
                err.to_string()
                    .contains("is past the last date a certificate can hold"),
                "{err}"
            );
        }
        // The longest lifetime cluster.yaml allows still works.
        let longest = Duration::from_secs(DAY.as_secs() * 36_500);
        assert!(issue_ca(CaName::Kubernetes, now, longest).is_ok());
    }

    /// Prometheus's copies: only on a host with a Prometheus certificate, only for the jobs
    /// `monitor deploy` staged, the etcd client the dedicated one when it exists.
    #[test]
    fn prometheus_copies_follow_the_staged_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path());
        let touch = |rel: &str| {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "x").unwrap();
        };
        for rel in [
            "pki/etcd/ca.crt",
            "pki/etcd/healthcheck-client.crt",
            "pki/etcd/healthcheck-client.key",
            "pki/ca.crt",
            "pki/apiserver-kubelet-client.crt",
            "pki/apiserver-kubelet-client.key",
            "hosts/n2/pki/monitoring/prometheus.crt",
        ] {
            touch(rel);
        }
        let copies = |host: &str| -> Vec<(String, String, u32, Option<&str>)> {
            prometheus_copies(&layout, host)
                .into_iter()
                .map(|f| {
                    (
                        f.local
                            .strip_prefix(dir.path())
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                        f.remote.to_string_lossy().into_owned(),
                        f.mode,
                        f.owner,
                    )
                })
                .collect()
        };
        assert!(copies("n2").is_empty(), "nothing staged yet");
        touch(&format!("monitor/{}", monitoring::ETCD_CA));
        let tls = "/etc/prometheus/clusterkit/tls";
        let want = |client: &str| {
            vec![
                (
                    "pki/etcd/ca.crt".to_string(),
                    format!("{tls}/etcd-ca.crt"),
                    0o644,
                    None,
                ),
                (
                    format!("pki/etcd/{client}.crt"),
                    format!("{tls}/etcd-metrics-client.crt"),
                    0o644,
                    None,
                ),
                (
                    format!("pki/etcd/{client}.key"),
                    format!("{tls}/etcd-metrics-client.key"),
                    0o600,
                    Some(monitoring::DAEMON_USER),
                ),
            ]
        };
        assert_eq!(copies("n2"), want("healthcheck-client"));
        assert!(copies("n1").is_empty(), "not a monitor host");
        touch("pki/etcd/metrics-client.crt");
        touch("pki/etcd/metrics-client.key");
        assert_eq!(copies("n2"), want("metrics-client"));
        touch(&format!("monitor/{}", monitoring::KUBE_CA));
        let all = copies("n2");
        assert_eq!(all.len(), 6, "{all:?}");
        assert_eq!(
            all[3..]
                .iter()
                .map(|c| (c.0.as_str(), c.1.rsplit('/').next().unwrap()))
                .collect::<Vec<_>>(),
            [
                ("pki/ca.crt", "ca.crt"),
                (
                    "pki/apiserver-kubelet-client.crt",
                    "kube-metrics-client.crt"
                ),
                (
                    "pki/apiserver-kubelet-client.key",
                    "kube-metrics-client.key"
                ),
            ]
        );
    }

    #[test]
    fn monitoring_pki_is_idempotent_and_laid_out_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let input = MonitoringInput {
            hosts: vec![
                Host::new("n1", ip("10.0.0.1")),
                Host::new("n2", ip("10.0.0.2")),
            ],
            monitors: vec![Host::new("n2", ip("10.0.0.2"))],
            exporter_names: vec!["localhost".into()],
            exporter_ips: vec![ip("127.0.0.1"), ip("10.0.0.9")],
            validity: Validity::default(),
        };
        assert!(!has_monitoring(&layout));
        let first = ensure_monitoring(&input, &layout, Mode::Apply).unwrap();
        // The CA, three shared leaves, two node-exporters, Prometheus and Alertmanager on n2.
        assert_eq!(first.changed(), 8, "{first:?}");
        assert!(has_monitoring(&layout));
        let again = ensure_monitoring(&input, &layout, Mode::Apply).unwrap();
        assert_eq!(again.changed(), 0, "{again:?}");
        let n1: Vec<String> = monitoring_files(&layout, "n1")
            .iter()
            .map(|f| f.remote.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            n1,
            [
                "/etc/prometheus/clusterkit/tls/monitoring-ca.crt",
                "/etc/prometheus/clusterkit/tls/node-exporter.crt",
                "/etc/prometheus/clusterkit/tls/node-exporter.key",
            ]
        );
        let n2 = monitoring_files(&layout, "n2");
        assert_eq!(n2.len(), 11);
        for f in &n2 {
            let key = f.remote.extension().is_some_and(|e| e == "key");
            assert_eq!(f.mode == 0o600, key, "{f:?}");
            assert_eq!(f.owner.is_some(), key, "{f:?}");
        }
        // node-exporter's certificate names its host and address, nothing else of the cluster.
        let pem =
            std::fs::read_to_string(dir.path().join("hosts/n1/pki/monitoring/node-exporter.crt"))
                .unwrap();
        let der = pem_to_der(&pem).unwrap();
        let cert = parse(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("n1")), "{names:?}");
        // IPs print as hex bytes: 10.0.0.1 is 0a:00:00:01.
        assert!(names.iter().any(|n| n.contains("0a:00:00:01")), "{names:?}");
        assert!(
            !names.iter().any(|n| n.contains("0a:00:00:02")),
            "{names:?}"
        );
        assert_eq!(
            monitoring::units_reading("tls/node-exporter.key"),
            ["prometheus-node-exporter"]
        );
        assert_eq!(
            monitoring::units_reading("tls/prometheus-client.crt"),
            ["prometheus"]
        );
        assert_eq!(monitoring::units_reading("tls/monitoring-ca.crt").len(), 3);
    }
}
