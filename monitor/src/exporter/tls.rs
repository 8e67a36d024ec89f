//! Loading PEM files into rustls configurations: the exporter's own HTTPS listener and the
//! HTTPS client the control-plane probe uses (server verified against the cluster CA, client
//! certificate presented). The `ring` provider is named explicitly because several rustls
//! providers are compiled into the binary (a process-wide default would be ambiguous).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{MonitorError, Result};

fn tls_err(path: &Path, message: impl Into<String>) -> MonitorError {
    MonitorError::Tls {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| MonitorError::io(path, e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no certificate in file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (the message never shows key material).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| MonitorError::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| tls_err(path, "no usable PEM private key in file"))
}

/// Server configuration for the exporter's HTTPS listener.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(cert, format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(config))
}

/// Client configuration trusting only `ca` and presenting `cert`/`key` when given.
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| tls_err(ca, format!("unusable CA certificate: {e}")))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(ca, e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| tls_err(cert, format!("certificate and key do not match: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
