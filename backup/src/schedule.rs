//! The schedule daemon: at each cron tick, take the store's backup lock (or skip the tick if
//! another scheduler holds it), clean up interrupted runs, back up, prune, and record the
//! outcome in the store's status object and in Prometheus metrics (served on `/metrics`).
//!
//! Limits: a tick that comes while the previous run still works is skipped, not queued.
//! Cron expressions use the `cron` crate's syntax (seconds first: `0 0 */6 * * *`); a
//! five-field expression gets `0` seconds prepended.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

use crate::clock::Clock;
use crate::error::BackupError;
use crate::etcd::{self, EtcdBackupOptions, EtcdTarget};
use crate::lock;
use crate::manifest::{Kind, Manifest};
use crate::retention::{self, Retention};
use crate::status::{self, Metrics, Outcome};
use crate::store::Store;

/// Everything one scheduled run needs.
#[derive(Clone)]
pub struct Job {
    pub store: Arc<dyn Store>,
    pub target: EtcdTarget,
    pub backup: EtcdBackupOptions,
    pub retention: Retention,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
}

/// What one run did.
#[derive(Debug)]
pub struct RunReport {
    pub outcome: Outcome,
    pub manifest: Option<Manifest>,
    pub pruned: Vec<String>,
    /// For `Skipped`: who held the lock. For `Failure`: the error.
    pub message: Option<String>,
}

/// Parses a cron expression; five fields get a leading `0` seconds field.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, BackupError> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full)
        .map_err(|e| BackupError::Invalid(format!("cron expression {expr:?}: {e}")))
}

/// One scheduled run for the tick at `tick`: lock → (skip if another scheduler already
/// finished a backup since `tick`) → backup → prune → status and metrics.
pub async fn run_once(job: &Job, tick: DateTime<Utc>) -> RunReport {
    let started = Instant::now();
    let guard = match lock::try_acquire(
        job.store.clone(),
        lock::BACKUP_LOCK,
        job.backup.lock_ttl,
        job.clock.clone(),
    )
    .await
    {
        Ok(Ok(g)) => g,
        Ok(Err(holder)) => {
            let report = RunReport {
                outcome: Outcome::Skipped,
                manifest: None,
                pruned: vec![],
                message: Some(format!(
                    "lock held by {} until {}",
                    holder.holder, holder.expires_at
                )),
            };
            finish(job, &report, started).await;
            return report;
        }
        Err(e) => {
            let report = failure(e);
            finish(job, &report, started).await;
            return report;
        }
    };
    // The lock keeps runs apart; this keeps a tick from being served twice when the other
    // scheduler got the lock first and already finished.
    if let Ok(Some(st)) = status::read_status(job.store.as_ref(), Kind::Etcd).await {
        if let Some(done) = st.last_success_at.filter(|t| *t >= tick) {
            let report = RunReport {
                outcome: Outcome::Skipped,
                manifest: None,
                pruned: vec![],
                message: Some(format!(
                    "a backup for this tick already finished at {done} (another scheduler)"
                )),
            };
            finish(job, &report, started).await;
            let _ = guard.release().await;
            return report;
        }
    }
    let result = async {
        let m = etcd::backup_etcd_locked(
            job.store.as_ref(),
            &job.target,
            &job.backup,
            job.clock.as_ref(),
        )
        .await?;
        let plan = retention::prune(job.store.as_ref(), &job.retention, false).await?;
        Ok::<_, BackupError>((m, plan.delete))
    }
    .await;
    let report = match result {
        Ok((m, pruned)) => RunReport {
            outcome: Outcome::Success,
            manifest: Some(m),
            pruned,
            message: None,
        },
        Err(e) => failure(e),
    };
    finish(job, &report, started).await;
    if let Err(e) = guard.release().await {
        tracing::warn!(error = %e, "could not release the lock; it will expire");
    }
    report
}

fn failure(e: BackupError) -> RunReport {
    RunReport {
        outcome: Outcome::Failure,
        manifest: None,
        pruned: vec![],
        message: Some(e.to_string()),
    }
}

async fn finish(job: &Job, report: &RunReport, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    job.metrics
        .observe_run(Kind::Etcd, report.outcome, secs, report.manifest.as_ref());
    if report.outcome == Outcome::Skipped {
        // A skipping scheduler may not hold the lock: it must not write to the store.
        return;
    }
    let error = match report.outcome {
        Outcome::Failure => report.message.clone(),
        _ => None,
    };
    if let Err(e) = status::record_run(
        job.store.as_ref(),
        Kind::Etcd,
        report.outcome,
        job.clock.now(),
        secs,
        report.manifest.as_ref(),
        error,
    )
    .await
    {
        tracing::warn!(error = %e, "could not record the run's status in the store");
    }
}

/// Runs `job` at every tick of `schedule` until `shutdown` resolves.
pub async fn run_daemon(
    job: Job,
    schedule: cron::Schedule,
    shutdown: impl std::future::Future<Output = ()>,
    mut on_report: impl FnMut(&RunReport),
) {
    futures::pin_mut!(shutdown);
    loop {
        let now = job.clock.now();
        let Some(next) = schedule.after(&now).next() else {
            tracing::warn!("the cron expression has no future tick; stopping");
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(next = %next, "next backup");
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let report = run_once(&job, next).await;
        on_report(&report);
    }
}

/// Serves `metrics` as text on every HTTP request to `listener` (for Prometheus).
pub async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Metrics) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await;
            let body = metrics.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// Default lock lifetime without renewal: long enough for clock skew, short enough that a
/// crashed scheduler blocks the next for minutes, not hours.
pub fn default_lock_ttl() -> Duration {
    Duration::minutes(5)
}
