//! Control-plane health as clusterkit sees it: the apiserver's `/livez` and `/readyz`, and the
//! scheduler's and controller-manager's `/healthz`, on every control-plane host, over HTTPS
//! verified against the cluster CA with the monitoring client certificate. Latency is kept
//! per check.
//!
//! `ControlPlaneComponentDown` alerts on `clusterkit_controlplane_up`, so a component that is
//! merely not scraped by Prometheus never raises a false alarm — this probe always runs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use clusterkit_core::config::Role;

use super::{flag, gauge, CollectError, Collector, Metrics};
use crate::error::HttpError;
use crate::tls::client_config;
use crate::topology::Topology;
use clusterkit_core::error_chain as chain;

/// One health endpoint to check.
#[derive(Debug, Clone)]
pub struct Check {
    pub host: String,
    pub component: &'static str,
    pub check: &'static str,
    /// Address to connect to.
    pub address: IpAddr,
    pub port: u16,
    pub path: &'static str,
}

pub struct ControlPlaneCollector {
    pub checks: Vec<Check>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub interval: Duration,
    pub timeout: Duration,
}

impl ControlPlaneCollector {
    pub fn new(topology: &Topology) -> Self {
        let m = topology.monitor();
        let ports = &m.ports;
        let mut checks = Vec::new();
        for h in topology.hosts_with(Role::ControlPlane) {
            for (component, check, port, path) in [
                ("kube-apiserver", "livez", ports.apiserver, "/livez"),
                ("kube-apiserver", "readyz", ports.apiserver, "/readyz"),
                ("kube-scheduler", "healthz", ports.scheduler, "/healthz"),
                (
                    "kube-controller-manager",
                    "healthz",
                    ports.controller_manager,
                    "/healthz",
                ),
            ] {
                checks.push(Check {
                    host: h.name.clone(),
                    component,
                    check,
                    address: h.address,
                    port,
                    path,
                });
            }
        }
        let pki = topology.pki();
        let client = pki.kube_client();
        ControlPlaneCollector {
            checks,
            ca: pki.ca(),
            cert: client.cert,
            key: client.key,
            interval: Duration::from_secs(m.intervals.control_plane_secs),
            timeout: Duration::from_secs(3),
        }
    }
}

/// GET over HTTPS of `path` on `ip:port`, the server verified as `ip`; (status, the body's
/// first 256 bytes).
pub async fn https_get(
    config: Arc<rustls::ClientConfig>,
    ip: IpAddr,
    port: u16,
    path: &str,
) -> Result<(u16, String), HttpError> {
    let address = SocketAddr::new(ip, port);
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(HttpError::Connect)?;
    let server_name = rustls::pki_types::ServerName::IpAddress(ip.into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(HttpError::Tls)?;
    let (status, body) = http1_get(tls, &address.to_string(), path, None).await?;
    Ok((
        status,
        String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
    ))
}

/// One HTTP/1.1 GET of `path` over an open connection `io` (plain TCP or TLS), `host` as the
/// Host header, with an `Authorization` header when given; (status, body).
pub async fn http1_get<S>(
    io: S,
    host: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, Bytes), HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(HttpError::Http)?;
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, host);
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(HttpError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(HttpError::Http)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(HttpError::Body)?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

#[async_trait]
impl Collector for ControlPlaneCollector {
    fn name(&self) -> &'static str {
        "control_plane"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError> {
        let ok = gauge(
            metrics,
            "clusterkit_controlplane_check_ok",
            "1 when the health endpoint answered 200 ok.",
            &["host", "component", "check"],
        )?;
        let latency = gauge(
            metrics,
            "clusterkit_controlplane_check_duration_seconds",
            "Time the health check took.",
            &["host", "component", "check"],
        )?;
        let up = gauge(
            metrics,
            "clusterkit_controlplane_up",
            "1 when every health check of the component passed.",
            &["host", "component"],
        )?;
        if self.checks.is_empty() {
            return Ok(());
        }
        // Set every component down first: the PKI may be missing, and then nothing is healthy
        // as far as anyone can tell.
        for c in &self.checks {
            up.with_label_values(&[c.host.as_str(), c.component])
                .set(0.0);
        }
        let config = client_config(&self.ca, Some((&self.cert, &self.key)))?;
        let runs = self.checks.iter().map(|c| {
            let config = config.clone();
            async move {
                let start = Instant::now();
                let result = tokio::time::timeout(self.timeout, https_get(config, c.address, c.port, c.path)).await;
                let healthy = match result {
                    Ok(Ok((200, _))) => true,
                    Ok(Ok((status, body))) => {
                        tracing::debug!(host = %c.host, component = c.component, status, body = %body.trim(), "unhealthy");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(host = %c.host, component = c.component, error = %chain(&e), "health check failed");
                        false
                    }
                    Err(_) => false,
                };
                (c, healthy, start.elapsed())
            }
        });
        let results = futures::future::join_all(runs).await;
        let mut all: std::collections::BTreeMap<(&str, &str), bool> = Default::default();
        for (c, healthy, elapsed) in results {
            ok.with_label_values(&[c.host.as_str(), c.component, c.check])
                .set(flag(healthy));
            latency
                .with_label_values(&[c.host.as_str(), c.component, c.check])
                .set(elapsed.as_secs_f64());
            let entry = all.entry((c.host.as_str(), c.component)).or_insert(true);
            *entry &= healthy;
        }
        for ((host, component), healthy) in all {
            up.with_label_values(&[host, component]).set(flag(healthy));
        }
        Ok(())
    }
}
