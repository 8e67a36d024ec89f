//! Certificates clusterkit issued: seconds until expiry and the fraction of the lifetime left,
//! for every PEM certificate (`*.crt`, `*.pem`) and every kubeconfig's embedded client
//! certificate (`*.conf`, `*.kubeconfig`) under the cluster's state directory.
//!
//! Limits: this reads the operator's copy of the PKI (`<state dir>`, label `host="local"`);
//! certificates renewed directly on a node (e.g. kubelet client rotation) are not seen here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use prometheus::Registry;

use super::{gauge, CollectError, Collector};
use crate::topology::Topology;

pub struct CertCollector {
    pub state_dir: PathBuf,
    pub interval: Duration,
}

impl CertCollector {
    pub fn new(topology: &Topology) -> Self {
        CertCollector {
            state_dir: topology.state_dir.clone(),
            interval: topology.monitor.intervals.certificates.as_duration(),
        }
    }
}

/// One certificate found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    /// Path relative to the state directory (`pki/apiserver.crt`, `admin.conf`).
    pub path: String,
    /// Subject common name.
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Every certificate in PEM text (a file may hold a chain).
pub fn parse_pem_certs(path: &str, bytes: &[u8]) -> Vec<CertInfo> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes).flatten() {
        if pem.label != "CERTIFICATE" {
            continue;
        }
        if let Ok(cert) = pem.parse_x509() {
            let subject = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or("")
                .to_string();
            out.push(CertInfo {
                path: path.to_string(),
                subject,
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            });
        }
    }
    out
}

/// The client certificates embedded in a kubeconfig.
pub fn parse_kubeconfig(path: &str, text: &str) -> Vec<CertInfo> {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for user in doc["users"].as_array().into_iter().flatten() {
        if let Some(data) = user["user"]["client-certificate-data"].as_str() {
            if let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                out.extend(parse_pem_certs(path, &pem));
            }
        }
    }
    out
}

/// Walks `dir` for certificates and kubeconfigs. Unreadable entries are errors; files that
/// are not certificates are skipped.
pub fn scan(dir: &Path) -> Result<Vec<CertInfo>, CollectError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == dir => {
                return Err(CollectError(format!(
                    "{}: state directory does not exist (has the PKI phase run?)",
                    dir.display()
                )))
            }
            Err(e) => return Err(CollectError(format!("{}: {e}", d.display()))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| CollectError(format!("{}: {e}", d.display())))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| CollectError(format!("{}: {e}", path.display())))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "crt" | "pem" | "conf" | "kubeconfig") {
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path)
                .map_err(|e| CollectError(format!("{}: {e}", path.display())))?;
            if matches!(ext, "crt" | "pem") {
                found.extend(parse_pem_certs(&rel, &bytes));
            } else {
                found.extend(parse_kubeconfig(&rel, &String::from_utf8_lossy(&bytes)));
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

#[async_trait]
impl Collector for CertCollector {
    fn name(&self) -> &'static str {
        "certificates"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn collect(&self, registry: &Registry) -> Result<(), CollectError> {
        let labels = &["host", "path", "subject"];
        let expiry = gauge(
            registry,
            "clusterkit_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative once expired).",
            labels,
        )?;
        let ratio = gauge(
            registry,
            "clusterkit_certificate_lifetime_remaining_ratio",
            "Fraction of the certificate's validity period still ahead (1 = new, 0 = expired).",
            labels,
        )?;
        let not_after = gauge(
            registry,
            "clusterkit_certificate_not_after_timestamp_seconds",
            "Expiry time of the certificate (Unix seconds).",
            labels,
        )?;
        let dir = self.state_dir.clone();
        let certs = tokio::task::spawn_blocking(move || scan(&dir))
            .await
            .map_err(|e| CollectError(format!("certificate scan task: {e}")))??;
        let now = chrono::Utc::now().timestamp();
        for c in &certs {
            let l = ["local", c.path.as_str(), c.subject.as_str()];
            let left = (c.not_after - now) as f64;
            let total = (c.not_after - c.not_before).max(1) as f64;
            expiry.with_label_values(&l).set(left);
            ratio
                .with_label_values(&l)
                .set((left / total).clamp(0.0, 1.0));
            not_after.with_label_values(&l).set(c.not_after as f64);
        }
        Ok(())
    }
}
