//! The collectors behind `clusterkit monitor serve`. Each one runs on its own interval in the
//! background, writes its metrics into a fresh registry, and the exporter caches the encoded
//! text: a scrape never waits for etcd, an HTTP probe or SSH.
//!
//! A collector reports what it observed even when the observed thing is down (that is a
//! metric, e.g. `clusterkit_etcd_member_up 0`); it returns an error only when it could not do
//! its job at all (unreadable certificates, a broken store), which sets
//! `clusterkit_collector_up{collector} 0`.

pub mod backups;
pub mod certs;
pub mod controlplane;
pub mod etcd;
pub mod nodes;
pub mod synthetic;

use std::time::Duration;

use async_trait::async_trait;
use prometheus::{GaugeVec, Opts, Registry};

/// Why a collector run failed (shown in logs; never contains secrets).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectError(pub String);

impl From<crate::MonitorError> for CollectError {
    fn from(e: crate::MonitorError) -> Self {
        CollectError(e.to_string())
    }
}

impl From<prometheus::Error> for CollectError {
    fn from(e: prometheus::Error) -> Self {
        CollectError(format!("metrics registry: {e}"))
    }
}

/// One source of metrics.
#[async_trait]
pub trait Collector: Send + Sync {
    /// Short name: the `collector` label of the self metrics.
    fn name(&self) -> &'static str;
    /// How often it runs.
    fn interval(&self) -> Duration;
    /// Observes and registers its metrics into `registry` (a fresh one per run).
    async fn collect(&self, registry: &Registry) -> Result<(), CollectError>;
}

/// Registers a gauge family with the given label names.
pub fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, CollectError> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// 1.0 for true.
pub fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}
