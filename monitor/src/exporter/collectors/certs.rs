//! Certificates clusterkit issued: seconds until expiry and the fraction of the lifetime left,
//! for every PEM certificate and every kubeconfig's embedded client certificate, read
//!
//! - live from every node over SSH ([`remote_script`], label `host="<name>"`, absolute path):
//!   `/etc/kubernetes/pki/**/*.crt`, `/etc/kubernetes/*.conf`, the kubelet's current client
//!   and serving certificates (`/var/lib/kubelet/pki/*.crt`, `kubelet-*-current.pem`) and the
//!   monitoring stack's (`/etc/prometheus/clusterkit/tls/*.crt`), so a certificate renewed or
//!   rotated on a node is seen as it is there;
//! - and from the operator's copy under the state directory (`host="local"`, relative path:
//!   `pki/apiserver.crt`, `admin.conf`), the files clusterkit uploads and the admin
//!   kubeconfig the operator uses.
//!
//! Private keys never leave a node: the remote script prints only the `CERTIFICATE` blocks of
//! PEM files and drops `client-key-data` lines from kubeconfigs. One SSH command per host and
//! run; an unreachable host is `clusterkit_certificate_read_success{host} 0`, not a collector
//! failure. Limits: old dated kubelet certificates (`kubelet-client-<date>.pem`) are skipped,
//! only the `-current` ones count.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use clusterkit_core::exec::{Command, Executor};

use super::{flag, gauge, CollectError, Collector, Metrics};
use crate::error::MonitorError;
use crate::topology::Topology;

pub struct CertCollector {
    pub state_dir: PathBuf,
    pub interval: Duration,
    /// Nodes read over SSH: (host name, executor).
    pub nodes: Vec<(String, Arc<dyn Executor>)>,
    /// Per-host command timeout.
    pub timeout: Duration,
    pub concurrency: usize,
}

impl CertCollector {
    /// Reads the state directory only; add nodes with [`CertCollector::with_nodes`].
    pub fn new(topology: &Topology) -> Self {
        CertCollector {
            state_dir: topology.cluster.state_dir.clone(),
            interval: Duration::from_secs(topology.monitor().intervals.certificates_secs),
            nodes: Vec::new(),
            timeout: Duration::from_secs(30),
            concurrency: topology.cluster.ssh.concurrency.max(1),
        }
    }

    /// Also reads the certificates on these nodes (shared executors: one SSH connection per
    /// host for every collector).
    pub fn with_nodes(mut self, nodes: Vec<(String, Arc<dyn Executor>)>) -> Self {
        self.nodes = nodes;
        self
    }
}

/// Prints `==> PATH` and then the certificate text of every certificate file and kubeconfig
/// clusterkit puts on a node, without private keys.
pub fn remote_script() -> String {
    let node = clusterkit_core::layout::NodeLayout::DEFAULT;
    let files = [
        format!("{}/*.crt", node.pki_dir),
        format!("{}/*/*.crt", node.pki_dir),
        format!("{}/*.conf", node.kubernetes_dir),
        format!("{}/*.crt", node.kubelet_pki_dir),
        node.kubelet_client_pem.to_string(),
        format!("{}/kubelet-server-current.pem", node.kubelet_pki_dir),
        format!("{}/tls/*.crt", node.monitoring_dir),
    ];
    REMOTE_SCRIPT.replace("{FILES}", &files.join(" "))
}

const REMOTE_SCRIPT: &str = r#"for f in {FILES}; do
  [ -f "$f" ] || continue
  echo "==> $f"
  case "$f" in
    *.conf) grep -v 'client-key-data' "$f" ;;
    *) sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$f" ;;
  esac
done
true
"#;

/// Parses [`remote_script`]'s output into certificates labelled with their absolute paths.
pub fn parse_remote(output: &str) -> Vec<CertInfo> {
    let mut found = Vec::new();
    let mut flush = |path: &Option<String>, body: &str| {
        if let Some(p) = path {
            if p.ends_with(".conf") {
                found.extend(parse_kubeconfig(p, body));
            } else {
                found.extend(parse_pem_certs(p, body.as_bytes()));
            }
        }
    };
    let mut path: Option<String> = None;
    let mut body = String::new();
    for line in output.lines() {
        if let Some(p) = line.strip_prefix("==> ") {
            flush(&path, &body);
            path = Some(p.trim().to_string());
            body.clear();
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    flush(&path, &body);
    found
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
                return Err(CollectError::NoStateDir {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(MonitorError::io(&d, e).into()),
        };
        for entry in entries {
            let entry = entry.map_err(|e| MonitorError::io(&d, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| MonitorError::io(&path, e))?;
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
            let bytes = std::fs::read(&path).map_err(|e| MonitorError::io(&path, e))?;
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

    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError> {
        let labels = &["host", "path", "subject"];
        let expiry = gauge(
            metrics,
            "clusterkit_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative once expired).",
            labels,
        )?;
        let ratio = gauge(
            metrics,
            "clusterkit_certificate_lifetime_remaining_ratio",
            "Fraction of the certificate's validity period still ahead (1 = new, 0 = expired).",
            labels,
        )?;
        let not_after = gauge(
            metrics,
            "clusterkit_certificate_not_after_timestamp_seconds",
            "Expiry time of the certificate (Unix seconds).",
            labels,
        )?;
        let read = gauge(
            metrics,
            "clusterkit_certificate_read_success",
            "1 when the host's certificates could be read (over SSH; `local` is the state directory).",
            &["host"],
        )?;
        let dir = self.state_dir.clone();
        let local = tokio::task::spawn_blocking(move || scan(&dir))
            .await
            .map_err(|source| CollectError::Task {
                what: "certificate scan",
                source,
            })?;
        let mut certs: Vec<(String, CertInfo)> = Vec::new();
        let local_error = match local {
            Ok(found) => {
                read.with_label_values(&["local"]).set(1.0);
                certs.extend(found.into_iter().map(|c| ("local".to_string(), c)));
                None
            }
            Err(e) => {
                read.with_label_values(&["local"]).set(0.0);
                Some(e)
            }
        };
        let semaphore = tokio::sync::Semaphore::new(self.concurrency);
        let runs = self.nodes.iter().map(|(host, exec)| {
            let semaphore = &semaphore;
            async move {
                let _permit = semaphore.acquire().await.ok();
                let command = Command::new(remote_script()).timeout(self.timeout);
                let result =
                    tokio::time::timeout(self.timeout * 2, exec.run_checked(&command)).await;
                (host, result)
            }
        });
        for (host, result) in futures::future::join_all(runs).await {
            match result {
                Ok(Ok(out)) => {
                    read.with_label_values(&[host]).set(1.0);
                    certs.extend(
                        parse_remote(&out.stdout_str())
                            .into_iter()
                            .map(|c| (host.clone(), c)),
                    );
                }
                Ok(Err(e)) => {
                    tracing::debug!(host, error = %e, "reading certificates failed");
                    read.with_label_values(&[host]).set(flag(false));
                }
                Err(_) => read.with_label_values(&[host]).set(flag(false)),
            }
        }
        let now = chrono::Utc::now().timestamp();
        for (host, c) in &certs {
            let l = [host.as_str(), c.path.as_str(), c.subject.as_str()];
            let left = (c.not_after - now) as f64;
            let total = (c.not_after - c.not_before).max(1) as f64;
            expiry.with_label_values(&l).set(left);
            ratio
                .with_label_values(&l)
                .set((left / total).clamp(0.0, 1.0));
            not_after.with_label_values(&l).set(c.not_after as f64);
        }
        // Nodes were read even when the local copy is missing; report that after.
        match local_error {
            Some(e) if self.nodes.is_empty() => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_script_reads_every_certificate_clusterkit_puts_on_a_node() {
        let first = remote_script().lines().next().unwrap().to_string();
        assert_eq!(
            first,
            "for f in /etc/kubernetes/pki/*.crt /etc/kubernetes/pki/*/*.crt /etc/kubernetes/*.conf \
             /var/lib/kubelet/pki/*.crt /var/lib/kubelet/pki/kubelet-client-current.pem \
             /var/lib/kubelet/pki/kubelet-server-current.pem /etc/prometheus/clusterkit/tls/*.crt; do"
        );
    }

    /// A self-signed certificate valid from 2025-01-01 for `days` (< 28) days, with its key
    /// after it (as in kubelet-client-current.pem).
    fn pem(cn: &str, days: u8) -> String {
        let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2025, 1, 1 + days);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem() + &key.serialize_pem()
    }

    #[test]
    fn remote_output_keeps_paths_and_certificates() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem("system:node:n1", 20));
        let out = format!(
            "==> /etc/kubernetes/pki/apiserver.crt\n{}==> /etc/kubernetes/kubelet.conf\nusers:\n- name: n\n  user:\n    client-certificate-data: {b64}\n==> /var/lib/kubelet/pki/kubelet.crt\nnot a certificate\n",
            pem("kube-apiserver", 10)
        );
        let certs = parse_remote(&out);
        let got: Vec<(&str, &str)> = certs
            .iter()
            .map(|c| (c.path.as_str(), c.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/kubernetes/pki/apiserver.crt", "kube-apiserver"),
                ("/etc/kubernetes/kubelet.conf", "system:node:n1"),
            ]
        );
        let days = (certs[0].not_after - certs[0].not_before) / 86400;
        assert_eq!(days, 10);
    }
}
