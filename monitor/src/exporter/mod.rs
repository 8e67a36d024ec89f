//! `clusterkit monitor serve`: the exporter.
//!
//! Every collector runs in its own background task on its own interval and leaves behind the
//! text encoding of its metrics. A scrape concatenates those cached texts with the small set
//! of self metrics (collector health and duration, build info), so scrape latency does not
//! depend on etcd, the control plane or SSH, and stays flat as the cluster grows. The cached
//! texts are sent as they are (one body made of several pieces), never joined into a copy.

pub mod collectors;
pub mod http;
mod working_set;

pub use working_set::use_one_malloc_arena;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use collectors::Collector;

/// The cached output of one collector.
struct Slot {
    name: &'static str,
    /// Text format; `Bytes` so a scrape shares it instead of copying.
    text: RwLock<Bytes>,
}

/// Self metrics, updated after every collector run.
struct SelfMetrics {
    registry: Registry,
    up: GaugeVec,
    duration: GaugeVec,
    errors: CounterVec,
    last_run: GaugeVec,
}

impl SelfMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let up = GaugeVec::new(
            Opts::new(
                "clusterkit_collector_up",
                "1 when the collector's last run succeeded.",
            ),
            &["collector"],
        )
        .expect("valid metric");
        let duration = GaugeVec::new(
            Opts::new(
                "clusterkit_collector_duration_seconds",
                "How long the collector's last run took.",
            ),
            &["collector"],
        )
        .expect("valid metric");
        let errors = CounterVec::new(
            Opts::new(
                "clusterkit_collector_errors_total",
                "Failed collector runs.",
            ),
            &["collector"],
        )
        .expect("valid metric");
        let last_run = GaugeVec::new(
            Opts::new(
                "clusterkit_collector_last_run_timestamp_seconds",
                "When the collector last finished (Unix seconds).",
            ),
            &["collector"],
        )
        .expect("valid metric");
        let build = GaugeVec::new(
            Opts::new("clusterkit_build_info", "Always 1; the clusterkit version."),
            &["version"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        for m in [&up, &duration, &last_run, &build] {
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(errors.clone()))
            .expect("unique metric");
        SelfMetrics {
            registry,
            up,
            duration,
            errors,
            last_run,
        }
    }
}

/// The exporter's state shared by the collector tasks and the HTTP handlers.
pub struct Exporter {
    slots: Vec<Slot>,
    self_metrics: SelfMetrics,
}

impl Exporter {
    /// Everything a scrape returns, as pieces to send one after the other: each collector's
    /// cached text (shared, not copied: a scrape of 5,000 series allocates only the small self
    /// metrics) and the self metrics, encoded now.
    pub fn render(&self) -> Vec<Bytes> {
        let mut pieces: Vec<Bytes> = self
            .slots
            .iter()
            .map(|s| s.text.read().unwrap_or_else(|e| e.into_inner()).clone())
            .filter(|t| !t.is_empty())
            .collect();
        let mut buf = Vec::with_capacity(2048);
        // Encoding a registry we own into memory cannot fail.
        let _ = TextEncoder::new().encode(&self.self_metrics.registry.gather(), &mut buf);
        pieces.push(Bytes::from(buf));
        pieces
    }

    fn slot(&self, name: &str) -> &Slot {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .expect("slot exists")
    }

    /// Runs one collector once and stores its output.
    async fn run_once(&self, collector: &dyn Collector) {
        let start = Instant::now();
        let metrics = collectors::Metrics::new();
        let result = collector.collect(&metrics).await;
        let encoded = metrics.encode();
        let name = collector.name();
        let m = &self.self_metrics;
        let ok = match (&result, &encoded) {
            (Ok(()), Ok(_)) => true,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(collector = name, error = %clusterkit_core::error_chain(e), "collector failed");
                false
            }
        };
        let text = encoded.unwrap_or_default();
        // A failed run still publishes what it observed (e.g. components marked down).
        *self
            .slot(name)
            .text
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Bytes::from(text);
        m.up.with_label_values(&[name])
            .set(if ok { 1.0 } else { 0.0 });
        if !ok {
            m.errors.with_label_values(&[name]).inc();
        } else {
            // Make the counter visible at 0 before the first error.
            m.errors.with_label_values(&[name]).inc_by(0.0);
        }
        m.duration
            .with_label_values(&[name])
            .set(start.elapsed().as_secs_f64());
        m.last_run
            .with_label_values(&[name])
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }
}

/// Starts every collector in the background and returns the shared exporter plus a future
/// that resolves once each collector has finished its first run (so a first scrape already
/// has data).
pub fn start(
    collectors: Vec<Arc<dyn Collector>>,
) -> (Arc<Exporter>, tokio::sync::watch::Receiver<usize>) {
    let exporter = Arc::new(Exporter {
        slots: collectors
            .iter()
            .map(|c| Slot {
                name: c.name(),
                text: RwLock::new(Bytes::new()),
            })
            .collect(),
        self_metrics: SelfMetrics::new(),
    });
    let (done_tx, done_rx) = tokio::sync::watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    for c in collectors {
        let exporter = exporter.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(c.interval().max(Duration::from_millis(100)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut first = true;
            loop {
                ticker.tick().await;
                exporter.run_once(c.as_ref()).await;
                if first {
                    first = false;
                    done_tx.send_modify(|n| *n += 1);
                }
            }
        });
    }
    (exporter, done_rx)
}

/// The collectors for a cluster: etcd, control plane, nodes (SSH), certificates, backups, and synthetic series
/// when asked for.
pub fn collectors_for(
    topology: &crate::Topology,
    synthetic_series: usize,
) -> Vec<Arc<dyn Collector>> {
    let nodes = collectors::nodes::NodeCollector::new(topology);
    // Certificates are read live from the same hosts, over the same SSH connections.
    let shared = nodes
        .targets
        .iter()
        .map(|t| (t.host.clone(), t.executor.clone()))
        .collect();
    let mut list: Vec<Arc<dyn Collector>> = vec![
        Arc::new(collectors::etcd::EtcdCollector::new(topology)),
        Arc::new(collectors::controlplane::ControlPlaneCollector::new(
            topology,
        )),
        Arc::new(collectors::certs::CertCollector::new(topology).with_nodes(shared)),
        Arc::new(collectors::backups::BackupCollector::new(topology)),
        Arc::new(nodes),
    ];
    if synthetic_series > 0 {
        list.push(Arc::new(collectors::synthetic::SyntheticCollector {
            series: synthetic_series,
            interval: Duration::from_secs(15),
        }));
    }
    list
}

/// `monitor serve`: loads the listener's TLS (with `monitor.tls`: the monitoring CA's exporter
/// certificate, client certificates of that CA required) and basic-auth settings, starts every collector
/// and serves `/metrics` on `monitor.listen` until SIGINT or SIGTERM. It releases the
/// memory only start-up needed (`working_set`) before the collectors start, and again once
/// every collector has run once.
pub async fn run(topology: &crate::Topology, synthetic_series: usize) -> crate::Result<()> {
    let m = topology.monitor();
    let addr = m.listen;
    let tls = if m.tls {
        // The exporter's certificate and the CA its scrapers' certificates must chain to.
        crate::security::ensure_pki(topology)?;
        let pki = crate::security::MonitoringPki::of(topology);
        Some(crate::tls::mtls_server_config(
            &pki.exporter.0,
            &pki.exporter.1,
            &pki.ca,
        )?)
    } else {
        None
    };
    let auth = match &m.basic_auth {
        Some(b) => Some(http::Auth {
            username: b.username.clone(),
            password: b.password.read()?,
        }),
        None => None,
    };
    // What the loader and the command line touched is done with before the first collector
    // runs: dropping it now keeps it out of the start-up peak too (24.6 -> 17 MiB, RESULTS.md).
    working_set::release_startup_pages();
    let collectors = collectors_for(topology, synthetic_series);
    let count = collectors.len();
    let (exporter, mut first_runs) = start(collectors);
    tokio::spawn(async move {
        // Start-up ends when every collector has run once: from then on the process only
        // repeats what it has done, so what start-up alone touched can go.
        if first_runs.wait_for(|done| *done >= count).await.is_ok() {
            let released = working_set::release_startup_pages();
            tracing::debug!(released, "released the executable's start-up pages");
        }
    });
    let app = http::router(exporter, auth);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::MonitorError::Listen {
            address: addr.to_string(),
            source,
        })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "clusterkit exporter for {} listening on {scheme}://{addr}/metrics",
        topology.cluster.name
    );
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    http::serve(listener, app, tls, shutdown).await
}
