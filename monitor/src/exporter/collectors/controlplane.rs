//! Control-plane health as clusterkit sees it: the apiserver's `/livez` and `/readyz`, and the
//! scheduler's and controller-manager's `/healthz`, on every control-plane host, over HTTPS
//! verified against the cluster CA with the monitoring client certificate. Latency is kept
//! per check.
//!
//! `ControlPlaneComponentDown` alerts on `clusterkit_controlplane_up`, so a component that is
//! merely not scraped by Prometheus never raises a false alarm — this probe always runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{flag, gauge, CollectError, Collector, Metrics};
use crate::exporter::tls::client_config;
use crate::topology::{role, Topology};

/// One health endpoint to check.
#[derive(Debug, Clone)]
pub struct Check {
    pub host: String,
    pub component: &'static str,
    pub check: &'static str,
    /// Address to connect to.
    pub address: String,
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
        let ports = &topology.monitor.ports;
        let mut checks = Vec::new();
        for h in topology.hosts_with(role::CONTROL_PLANE) {
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
                    address: h.address.clone(),
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
            interval: topology.monitor.intervals.control_plane.as_duration(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// GET over HTTPS; Ok(status, body) or a short reason.
pub async fn https_get(
    config: Arc<rustls::ClientConfig>,
    address: &str,
    port: u16,
    path: &str,
) -> Result<(u16, String), String> {
    let ip: std::net::IpAddr = address
        .parse()
        .map_err(|_| format!("{address} is not an IP address"))?;
    let tcp = tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let server_name = rustls::pki_types::ServerName::IpAddress(ip.into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let host = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let (status, body) = http1_get(tls, &host, path, None).await?;
    Ok((
        status,
        String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
    ))
}

/// One HTTP/1.1 GET of `path` over an open connection `io` (plain TCP or TLS), `host` as the
/// Host header, with an `Authorization` header when given; Ok(status, body) or a short reason.
pub async fn http1_get<S>(
    io: S,
    host: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, host);
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
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
                let result = tokio::time::timeout(self.timeout, https_get(config, &c.address, c.port, c.path)).await;
                let healthy = match result {
                    Ok(Ok((200, _))) => true,
                    Ok(Ok((status, body))) => {
                        tracing::debug!(host = %c.host, component = c.component, status, body = %body.trim(), "unhealthy");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(host = %c.host, component = c.component, error = %e, "health check failed");
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
