//! Kubernetes API clients for the installer: the admin client built from the state
//! directory's generated admin.conf (the API endpoint, or one control-plane host's apiserver),
//! a client from any kubeconfig, and raw GETs of health paths (`/readyz`, `/livez`).
//!
//! Limits: every client authenticates with a kubeconfig's client certificate (clusterkit's
//! own PKI); a failure to build one is an [`InstallError`] naming "kubernetes API".

use std::net::IpAddr;
use std::path::Path;

use clusterkit_core::config::Cluster;
use clusterkit_core::layout::{NodeLayout, StateLayout};

use crate::phases::InstallError;

/// A request to the Kubernetes API (or reading what it needs) that failed.
pub fn api_err(what: impl std::fmt::Display, e: impl Into<crate::phases::Cause>) -> InstallError {
    InstallError::host("kubernetes API", what.to_string(), e)
}

/// A raw GET that failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error(transparent)]
    Request(#[from] http::Error),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// A Kubernetes client with the admin credentials, talking to `server` (default: the
/// control-plane endpoint in admin.conf).
pub async fn admin_client(
    cluster: &Cluster,
    server: Option<&str>,
) -> Result<kube::Client, InstallError> {
    client_from(&StateLayout::from_cluster(cluster).admin_conf(), server).await
}

/// A Kubernetes client from a kubeconfig file, optionally talking to another `server`.
pub async fn client_from(path: &Path, server: Option<&str>) -> Result<kube::Client, InstallError> {
    clusterkit_core::kube_client::from_kubeconfig(path, server)
        .await
        .map_err(|e| api_err("kubernetes client", e))
}

/// `https://<ip>:<apiserver port>` of one control-plane host.
pub fn apiserver_url(cluster: &Cluster, ip: IpAddr) -> String {
    NodeLayout::from_cluster(cluster).apiserver_url(ip)
}

/// GETs a raw path (`/readyz`) and returns the body.
pub async fn get_raw(client: &kube::Client, path: &str) -> Result<String, RawError> {
    let req = http::Request::get(path).body(Vec::new())?;
    Ok(client.request_text(req).await?)
}
