//! What secures the monitoring stack (`monitor.tls`, on by default): the monitoring CA and its
//! certificates, the Prometheus/Alertmanager login, and the TLS client clusterkit itself uses
//! to query Prometheus.
//!
//! - [`ensure_pki`] issues (or keeps) the monitoring CA and every certificate of
//!   [`pki::monitoring_cert_specs`] in the state directory; `monitor config`, `serve` and
//!   `deploy` all call it, so whichever runs first makes them and a rerun changes nothing.
//! - [`WebLogin::load_or_create`]: the password comes from `monitor.web_auth.password_env`, or
//!   is generated once into `<state>/monitor-auth/web-password` (0600) and kept. Its bcrypt
//!   hash (what the web config files hold) is kept next to it and reused while it still
//!   matches the password, so generating twice writes identical files and restarts nothing.
//!
//! Limits: the bcrypt cost is [`BCRYPT_COST`] (the hash is made once; Prometheus and
//! Alertmanager cache a successful check). Two clusterkit commands issuing the monitoring PKI
//! for the first time at the same moment may each make a CA; the next run re-issues what the
//! surviving CA did not sign.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clusterkit_core::layout::StateLayout;
use clusterkit_installer::pki::{self, Mode, MonitoringInput};

use crate::error::{MonitorError, Result};
use crate::topology::Topology;

/// bcrypt cost of the web password's hash (2^10 rounds: the minimum OWASP recommends).
pub const BCRYPT_COST: u32 = 10;

/// Where the login's files live under the state directory.
const AUTH_DIR: &str = "monitor-auth";

/// The monitoring files in the state directory that clusterkit itself (the exporter, the
/// deploy's queries, the generated configs) uses.
#[derive(Debug, Clone)]
pub struct MonitoringPki {
    /// The monitoring CA certificate.
    pub ca: PathBuf,
    /// The exporter's serving pair.
    pub exporter: (PathBuf, PathBuf),
    /// The client pair Prometheus scrapes with.
    pub prometheus_client: (PathBuf, PathBuf),
    /// The client pair Prometheus presents to Alertmanager.
    pub alertmanager_client: (PathBuf, PathBuf),
    /// The state directory (per-host pairs live under `hosts/<name>/pki/monitoring/`).
    pub state_dir: PathBuf,
}

impl MonitoringPki {
    /// The paths for a topology (whether or not the files exist yet).
    pub fn of(topology: &Topology) -> Self {
        let dir = StateLayout::from_cluster(&topology.cluster).monitoring_pki_dir();
        let pair = |name: &str| {
            (
                dir.join(format!("{name}.crt")),
                dir.join(format!("{name}.key")),
            )
        };
        MonitoringPki {
            ca: dir.join("ca.crt"),
            exporter: pair("exporter"),
            prometheus_client: pair("prometheus-client"),
            alertmanager_client: pair("alertmanager-client"),
            state_dir: topology.cluster.state_dir.clone(),
        }
    }

    /// A host's own pair (`node-exporter`, `prometheus`, `alertmanager`).
    pub fn host_pair(&self, host: &str, what: &str) -> (PathBuf, PathBuf) {
        let dir = StateLayout::new(&self.state_dir).host_monitoring_pki_dir(host);
        (
            dir.join(format!("{what}.crt")),
            dir.join(format!("{what}.key")),
        )
    }
}

/// Issues whatever is missing or due in the monitoring PKI; returns how many files changed.
pub fn ensure_pki(topology: &Topology) -> Result<usize> {
    let input = MonitoringInput::from_cluster(&topology.cluster);
    let layout = StateLayout::from_cluster(&topology.cluster);
    let report = pki::ensure_monitoring(&input, &layout, Mode::Apply)
        .map_err(|source| MonitorError::Pki { source })?;
    for item in &report.items {
        if item.action != pki::Action::Kept {
            tracing::info!(name = %item.name, action = ?item.action, "monitoring certificate");
        }
    }
    Ok(report.changed())
}

/// The Prometheus/Alertmanager login. `Debug` never shows the password.
#[derive(Clone)]
pub struct WebLogin {
    /// The user name (`monitor.web_auth.username`).
    pub username: String,
    password: String,
    /// The bcrypt hash the web config files hold.
    pub hash: String,
    /// Where the password is when clusterkit generated it (for the operator).
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for WebLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebLogin")
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

/// Writes a private file (0600 from creation on) in a directory only its owner can enter.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| MonitorError::io(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| MonitorError::io(dir, e))?;
    }
    crate::atomic::write_atomic(path, data, 0o600)
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MonitorError::io(path, e)),
    }
}

/// 24 random letters and digits (about 143 bits).
fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl WebLogin {
    /// The login for a topology; see the module docs.
    pub fn load_or_create(topology: &Topology) -> Result<WebLogin> {
        let dir = topology.cluster.state_dir.join(AUTH_DIR);
        let auth = &topology.monitor().web_auth;
        let (password, password_file) = match &auth.password {
            Some(secret) => (secret.read()?.expose().to_string(), None),
            None => {
                let file = dir.join("web-password");
                let password = match read_optional(&file)? {
                    Some(p) if !p.trim().is_empty() => p.trim().to_string(),
                    _ => {
                        let p = generate_password();
                        write_private(&file, p.as_bytes())?;
                        p
                    }
                };
                (password, Some(file))
            }
        };
        let hash_file = dir.join("web-password.bcrypt");
        let kept = read_optional(&hash_file)?
            .map(|h| h.trim().to_string())
            .filter(|h| bcrypt::verify(&password, h).unwrap_or(false));
        let hash = match kept {
            Some(h) => h,
            None => {
                let h = bcrypt::hash(&password, BCRYPT_COST)
                    .map_err(|e| MonitorError::render(hash_file.display().to_string(), e))?;
                write_private(&hash_file, h.as_bytes())?;
                h
            }
        };
        Ok(WebLogin {
            username: auth.username.clone(),
            password,
            hash,
            password_file,
        })
    }

    /// The password, for a file only Prometheus reads or an `Authorization` header.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of an `Authorization: Basic …` header.
    pub fn authorization(&self) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// A TLS client that trusts only the monitoring CA (for clusterkit's own queries of
/// Prometheus).
pub fn client_config(topology: &Topology) -> Result<Arc<rustls::ClientConfig>> {
    crate::tls::client_config(&MonitoringPki::of(topology).ca, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_password_and_hash_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cluster.yaml");
        std::fs::write(
            &cfg,
            "name: demo\nkubernetes: { version: v1.26.3 }\nhosts:\n  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }\n",
        )
        .unwrap();
        let t = Topology::load(&cfg).unwrap();
        let first = WebLogin::load_or_create(&t).unwrap();
        let file = first.password_file.clone().unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(first.password().len(), 24);
        assert!(bcrypt::verify(first.password(), &first.hash).unwrap());
        let second = WebLogin::load_or_create(&t).unwrap();
        assert_eq!(
            (second.password(), second.hash.as_str()),
            (first.password(), first.hash.as_str())
        );
        assert!(!format!("{second:?}").contains(first.password()));
        // A changed password gets a new hash.
        std::fs::write(&file, "another-password").unwrap();
        let third = WebLogin::load_or_create(&t).unwrap();
        assert_ne!(third.hash, first.hash);
        assert!(bcrypt::verify("another-password", &third.hash).unwrap());
    }
}
