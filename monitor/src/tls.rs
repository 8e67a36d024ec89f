//! Loading PEM files into rustls configurations: the exporter's own HTTPS listener, and the
//! HTTPS clients of the control-plane probe (server verified against the cluster CA, client
//! certificate presented) and of clusterkit's queries of Prometheus. The `ring` provider is named explicitly because several rustls
//! providers are compiled into the binary (a process-wide default would be ambiguous).
//!
//! The listener requires a client certificate signed by the monitoring CA and serves the
//! certificate files as they are on disk: a renewed pair (`clusterkit certs renew`) is read at
//! the first handshake after its files changed, so the exporter needs no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{MonitorError, Result};

/// `what` went wrong with the file at `path`, caused by `source` when there is one.
fn tls_err(path: &Path, what: &str, source: Option<crate::error::Cause>) -> MonitorError {
    MonitorError::Tls {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    }
}

/// [`tls_err`] with its cause.
fn tls_cause<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(rustls::Error) -> MonitorError + 'a {
    move |e| tls_err(path, what, Some(e.into()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| MonitorError::io(path, e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_err(path, "not a PEM certificate file", Some(e.into())))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no certificate in file", None));
    }
    Ok(certs)
}

/// The private key in a PEM file (the message never shows key material).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| MonitorError::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| tls_err(path, "no usable PEM private key in file", None))
}

/// Server configuration serving `cert`/`key` without client authentication (tests' HTTPS
/// stand-ins use it).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_cause(cert, "no TLS protocol version usable"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_cause(cert, "certificate and key do not match"))?;
    Ok(Arc::new(config))
}

/// The serving pair as last loaded, and the files' modification times then.
struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<rustls::sign::CertifiedKey>,
}

/// Serves the pair at `cert`/`key`, reloading it when either file's modification time changes
/// (one `stat` each per handshake). A pair that fails to load keeps the previous one.
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_pair(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<Loaded> {
    let stamp = (modified(cert), modified(key));
    let certs = load_certs(cert)?;
    let private = load_key(key)?;
    let pair = rustls::sign::CertifiedKey::from_der(certs, private, provider)
        .map_err(tls_cause(cert, "certificate and key do not match"))?;
    Ok(Loaded {
        stamp,
        key: Arc::new(pair),
    })
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.stamp != (modified(&self.cert), modified(&self.key)) {
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(fresh) => {
                    tracing::info!(cert = %self.cert.display(), "serving the renewed certificate");
                    *current = fresh;
                }
                Err(e) => tracing::warn!(
                    error = %clusterkit_core::error_chain(&e),
                    "renewed certificate not usable yet"
                ),
            }
        }
        Some(current.key.clone())
    }
}

/// Server configuration requiring a client certificate signed by `client_ca`, serving the
/// pair at `cert`/`key` (reloaded when renewed).
pub fn mtls_server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for c in load_certs(client_ca)? {
        roots
            .add(c)
            .map_err(tls_cause(client_ca, "unusable CA certificate"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| {
        tls_err(
            client_ca,
            "cannot verify clients with this CA",
            Some(e.into()),
        )
    })?;
    let resolver = ReloadingCert {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: Mutex::new(load_pair(cert, key, &provider)?),
        provider: provider.clone(),
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_cause(cert, "no TLS protocol version usable"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    Ok(Arc::new(config))
}

/// Client configuration trusting only `ca` and presenting `cert`/`key` when given.
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(tls_cause(ca, "unusable CA certificate"))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_cause(ca, "no TLS protocol version usable"))?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(tls_cause(cert, "certificate and key do not match"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
