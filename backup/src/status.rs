//! The latest outcome per backup kind, kept in the store (`status/<kind>.json`) and exported
//! as Prometheus metrics.
//!
//! The monitor reads `status/<kind>.json` with [`read_status`] (no daemon needed) or scrapes
//! the schedule daemon's `/metrics`. Metric names:
//! - `clusterkit_backup_last_success_timestamp_seconds{kind}`
//! - `clusterkit_backup_last_duration_seconds{kind}`
//! - `clusterkit_backup_last_stored_bytes{kind}`
//! - `clusterkit_backup_runs_total{kind,outcome}` (outcome: success, failure, skipped)
//! - `clusterkit_restore_runs_total{kind,outcome}` (success, failure)
//!
//! Limits: the status object is read-modify-written; writers hold the backup lock, restores
//! are rare — a lost counter increment under a race is tolerated.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use serde::{Deserialize, Serialize};

use crate::error::BackupError;
use crate::manifest::{Kind, Manifest};
use crate::store::Store;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    /// Another scheduler held the lock.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What `status/<kind>.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindStatus {
    pub kind: Option<Kind>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<Outcome>,
    /// Error message of the last failure (no secrets).
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_success_id: Option<String>,
    pub last_duration_seconds: Option<f64>,
    pub last_stored_bytes: Option<u64>,
    /// Backup runs per outcome (skipped runs are only counted in the daemon's metrics: a
    /// skipping scheduler does not hold the lock and does not write here).
    #[serde(default)]
    pub runs: BTreeMap<String, u64>,
    /// Restores per outcome.
    #[serde(default)]
    pub restores: BTreeMap<String, u64>,
}

fn status_key(kind: Kind) -> String {
    format!("status/{kind}.json")
}

/// Reads the status of one kind (`None` before the first run).
pub async fn read_status(store: &dyn Store, kind: Kind) -> Result<Option<KindStatus>, BackupError> {
    match store.get(&status_key(kind)).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn update(
    store: &dyn Store,
    kind: Kind,
    f: impl FnOnce(&mut KindStatus),
) -> Result<KindStatus, BackupError> {
    let mut s = read_status(store, kind).await?.unwrap_or_default();
    s.kind = Some(kind);
    f(&mut s);
    store
        .put(
            &status_key(kind),
            Bytes::from(serde_json::to_vec_pretty(&s).unwrap_or_default()),
        )
        .await?;
    Ok(s)
}

/// Records a backup run.
pub async fn record_run(
    store: &dyn Store,
    kind: Kind,
    outcome: Outcome,
    at: DateTime<Utc>,
    duration_seconds: f64,
    manifest: Option<&Manifest>,
    error: Option<String>,
) -> Result<KindStatus, BackupError> {
    update(store, kind, |s| {
        *s.runs.entry(outcome.as_str().into()).or_default() += 1;
        if outcome == Outcome::Skipped {
            return;
        }
        s.last_attempt_at = Some(at);
        s.last_outcome = Some(outcome);
        s.last_duration_seconds = Some(duration_seconds);
        s.last_error = error;
        if let Some(m) = manifest {
            s.last_success_at = Some(m.finished_at);
            s.last_success_id = Some(m.id.clone());
            s.last_stored_bytes = Some(m.stored_size);
        }
    })
    .await
}

/// Records a restore.
pub async fn record_restore(
    store: &dyn Store,
    kind: Kind,
    outcome: Outcome,
) -> Result<KindStatus, BackupError> {
    update(store, kind, |s| {
        *s.restores.entry(outcome.as_str().into()).or_default() += 1;
    })
    .await
}

/// Records the outcome of one backup taken by a library entry point ([`crate::etcd::backup_etcd`],
/// [`crate::namespace::backup`]). The status feeds the monitor; failing to write it is logged
/// and never hides the backup's own result.
pub(crate) async fn note_backup<E: std::fmt::Display>(
    store: &dyn Store,
    kind: Kind,
    at: DateTime<Utc>,
    started: std::time::Instant,
    result: &Result<Manifest, E>,
) {
    let (outcome, m, err) = match result {
        Ok(m) => (Outcome::Success, Some(m), None),
        Err(e) => (Outcome::Failure, None, Some(e.to_string())),
    };
    let secs = started.elapsed().as_secs_f64();
    if let Err(e) = record_run(store, kind, outcome, at, secs, m, err).await {
        tracing::warn!(error = %e, "could not record the backup status");
    }
}

/// Records one restore by a library entry point; like [`note_backup`], a failure to write is
/// logged, never returned.
/// Runs `restore` and records its outcome for `kind` in the store's status (a failure to record
/// is logged, not returned: the restore's own result is what the caller needs).
pub(crate) async fn recorded<T, E>(
    store: &dyn Store,
    kind: Kind,
    restore: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = restore.await;
    note_restore(store, kind, result.is_ok()).await;
    result
}

pub(crate) async fn note_restore(store: &dyn Store, kind: Kind, ok: bool) {
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    if let Err(e) = record_restore(store, kind, outcome).await {
        tracing::warn!(error = %e, "could not record the restore in the store's status");
    }
}

/// Prometheus metrics of backups and restores.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    last_success: GaugeVec,
    last_duration: GaugeVec,
    last_stored: GaugeVec,
    runs: IntCounterVec,
    restores: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Registering fresh, uniquely named metrics in a fresh registry cannot fail.
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["kind"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["kind", "outcome"])
                .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        Metrics {
            last_success: gauge(
                "clusterkit_backup_last_success_timestamp_seconds",
                "Unix time the last successful backup finished.",
            ),
            last_duration: gauge(
                "clusterkit_backup_last_duration_seconds",
                "Duration of the last backup run.",
            ),
            last_stored: gauge(
                "clusterkit_backup_last_stored_bytes",
                "Stored (compressed, encrypted) size of the last successful backup.",
            ),
            runs: counter(
                "clusterkit_backup_runs_total",
                "Backup runs by kind and outcome.",
            ),
            restores: counter(
                "clusterkit_restore_runs_total",
                "Restores by kind and outcome.",
            ),
            registry,
        }
    }

    /// Seeds the gauges from the stored status, so a restarted daemon still reports the last
    /// success.
    pub fn load(&self, kind: Kind, s: &KindStatus) {
        let k = kind.as_str();
        if let Some(t) = s.last_success_at {
            self.last_success
                .with_label_values(&[k])
                .set(t.timestamp() as f64);
        }
        if let Some(d) = s.last_duration_seconds {
            self.last_duration.with_label_values(&[k]).set(d);
        }
        if let Some(b) = s.last_stored_bytes {
            self.last_stored.with_label_values(&[k]).set(b as f64);
        }
    }

    pub fn observe_run(&self, kind: Kind, outcome: Outcome, duration: f64, m: Option<&Manifest>) {
        let k = kind.as_str();
        self.runs.with_label_values(&[k, outcome.as_str()]).inc();
        if outcome == Outcome::Skipped {
            return;
        }
        self.last_duration.with_label_values(&[k]).set(duration);
        if let Some(m) = m {
            self.last_success
                .with_label_values(&[k])
                .set(m.finished_at.timestamp() as f64);
            self.last_stored
                .with_label_values(&[k])
                .set(m.stored_size as f64);
        }
    }

    pub fn observe_restore(&self, kind: Kind, outcome: Outcome) {
        self.restores
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_metrics() {
        let m = Metrics::new();
        m.observe_run(Kind::Etcd, Outcome::Failure, 1.5, None);
        m.observe_restore(Kind::Etcd, Outcome::Success);
        let text = m.render();
        assert!(
            text.contains(r#"clusterkit_backup_runs_total{kind="etcd",outcome="failure"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"clusterkit_restore_runs_total{kind="etcd",outcome="success"} 1"#));
        assert!(text.contains(r#"clusterkit_backup_last_duration_seconds{kind="etcd"} 1.5"#));
    }
}
