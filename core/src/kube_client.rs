//! The one way clusterkit builds a Kubernetes API client: from a kubeconfig file, with short
//! connection and read timeouts and **without** kube's built-in retry layer.
//!
//! kube retries every 429/503/504 up to 15 times with doubling waits (minutes in all) and says
//! nothing while it does. clusterkit's callers poll on their own schedule instead — a join
//! that waits for kubelet serving certificates must see the API server's 503 for a kubelet
//! without a certificate at once, review the CSRs that arrived meanwhile and try again a second
//! later. A caller that wants to retry a request (a namespace backup hitting API priority and
//! fairness) does so visibly, with its own bound.
//!
//! Limits: the kubeconfig's current context only; exec and auth-provider plugins work as kube
//! runs them.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for a TCP connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a single read from the API server may take. Long enough for a big LIST page,
/// short enough that a hung server fails the request instead of the whole command.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("kubeconfig {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig was read but does not describe a usable client.
    #[error("kubeconfig {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The server URL given instead of the kubeconfig's is not a URL.
    #[error("API server URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    /// kube could not build its HTTP stack (TLS material it cannot use).
    #[error("kubernetes client from {path}")]
    Build {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// A client for the kubeconfig at `path` (its current context), talking to `server` instead of
/// the kubeconfig's server when given (`https://10.0.0.1:6443`: one API server of several).
pub async fn from_kubeconfig(
    path: &Path,
    server: Option<&str>,
) -> Result<kube::Client, KubeClientError> {
    // Several rustls crypto providers are linked into the binary (ring for kube, aws-lc for
    // the S3 client), so rustls cannot pick one by itself; an already installed one is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| KubeClientError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|source| KubeClientError::Config {
                path: path.to_path_buf(),
                source,
            })?;
    if let Some(s) = server {
        config.cluster_url = s.parse().map_err(|source| KubeClientError::Url {
            url: s.to_string(),
            source,
        })?;
    }
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|source| KubeClientError::Build {
        path: path.to_path_buf(),
        source,
    })
}
