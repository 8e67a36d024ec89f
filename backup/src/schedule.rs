//! The schedule daemon: at each cron tick, take the store's backup lock (or skip the tick if
//! another scheduler holds it), clean up interrupted runs, back up (etcd or namespaces), drill
//! the new backup when asked (`--drill`, see [`crate::drill`]), prune this job's own backups, and record the outcome in the store's status object and in
//! Prometheus metrics (served on `/metrics`), per kind.
//!
//! A job's "own" backups: for etcd every etcd backup; for namespaces the namespace backups with
//! the same selection (namespaces, selector, resource filters — the manifest's `selection`
//! detail), so two namespace schedules writing to one store neither skip each other's ticks
//! nor prune each other's backups. `backup prune` (manual) still applies per kind to all.
//!
//! A run that finds the lock held waits for it (up to [`Job::lock_wait`]) rather than skipping
//! at once: the holder may be another job on the same store (an etcd schedule and a namespace
//! schedule at the same minute), and both must run. When the holder was another scheduler of
//! the same job, the waiting run then finds this tick's backup already finished and skips.
//!
//! Limits: a tick that comes while the previous run still works is skipped, not queued; a run
//! that waited `lock_wait` in vain is skipped. Namespace backups taken before the `selection`
//! detail existed are never pruned by a schedule (use `backup prune`).
//! Cron expressions use the `cron` crate's syntax (seconds first: `0 0 */6 * * *`); a
//! five-field expression gets `0` seconds prepended.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

use crate::catalog;
use crate::clock::Clock;
use crate::error::BackupError;
use crate::etcd::{self, EtcdBackupOptions, EtcdTarget};
use crate::lock;
use crate::manifest::{Kind, Manifest};
use crate::namespace::{self, ApiClient, NamespaceError};
use crate::retention::{self, Item, Plan, Retention};
use crate::status::{self, Metrics, Outcome};
use crate::store::Store;

/// What a scheduled job backs up.
#[derive(Clone, Debug)]
pub enum Source {
    /// An etcd snapshot.
    Etcd {
        target: EtcdTarget,
        options: EtcdBackupOptions,
    },
    /// Namespaces through the Kubernetes API (`options.validate()` is checked at each run).
    Namespace {
        client: ApiClient,
        options: namespace::BackupOptions,
    },
}

impl Source {
    /// The kind of backup this source makes (status and metrics are kept per kind).
    pub fn kind(&self) -> Kind {
        match self {
            Source::Etcd { .. } => Kind::Etcd,
            Source::Namespace { .. } => Kind::Namespace,
        }
    }

    fn lock_ttl(&self) -> Duration {
        match self {
            Source::Etcd { options, .. } => options.lock_ttl,
            Source::Namespace { options, .. } => options.lock_ttl,
        }
    }

    /// Whether `m` is a backup this job made (or could have made): see the module header.
    pub fn owns(&self, m: &Manifest) -> bool {
        match self {
            Source::Etcd { .. } => m.kind == Kind::Etcd,
            Source::Namespace { options, .. } => {
                m.kind == Kind::Namespace
                    && m.details.get("selection") == Some(&options.selection())
            }
        }
    }
}

/// A restore drill after each backup (`backup schedule --drill`).
#[derive(Clone)]
pub struct DrillAfter {
    pub options: crate::drill::DrillOptions,
    pub decrypt: crate::crypto::Decrypt,
}

/// Everything one scheduled run needs.
#[derive(Clone)]
pub struct Job {
    pub store: Arc<dyn Store>,
    pub source: Source,
    pub retention: Retention,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// How long a run waits for the store's backup lock before it skips its tick.
    pub lock_wait: std::time::Duration,
    /// Drill every new backup before pruning (so retention sees its verdict).
    pub drill: Option<DrillAfter>,
}

/// Default [`Job::lock_wait`]: longer than a large etcd or namespace backup takes, shorter than
/// any sensible interval between two ticks.
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// What one run did.
#[derive(Debug)]
pub struct RunReport {
    pub outcome: Outcome,
    pub manifest: Option<Manifest>,
    pub pruned: Vec<String>,
    /// For `Skipped`: who held the lock. For `Failure`: the error.
    pub message: Option<String>,
    /// The drill of the new backup, when the job drills.
    pub drill: Option<crate::drill::DrillRecord>,
    /// Why the drill could not run (a backup whose drill could not run is still a backup).
    pub drill_error: Option<String>,
}

impl RunReport {
    fn new(outcome: Outcome, message: Option<String>) -> RunReport {
        RunReport {
            outcome,
            manifest: None,
            pruned: vec![],
            message,
            drill: None,
            drill_error: None,
        }
    }
}

/// Parses a cron expression as `config validate` does; five fields get a leading `0` seconds
/// field.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, BackupError> {
    clusterkit_core::config::grammar::parse_cron(expr)
        .map_err(|e| BackupError::Invalid(e.to_string()))
}

/// One scheduled run for the tick at `tick`: lock → (skip if another scheduler already
/// finished a backup since `tick`) → backup → prune → status and metrics.
pub async fn run_once(job: &Job, tick: DateTime<Utc>) -> RunReport {
    let started = Instant::now();
    let guard = match acquire_waiting(job).await {
        Ok(Ok(g)) => g,
        Ok(Err(holder)) => {
            let report = RunReport::new(
                Outcome::Skipped,
                Some(format!(
                    "lock held by {} until {}",
                    holder.holder, holder.expires_at
                )),
            );
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
    if let Some(done) = finished_since(job, tick).await {
        let report = RunReport::new(
            Outcome::Skipped,
            Some(format!(
                "a backup for this tick already finished at {done} (another scheduler)"
            )),
        );
        finish(job, &report, started).await;
        let _ = guard.release().await;
        return report;
    }
    let result = async {
        let m = match &job.source {
            Source::Etcd { target, options } => {
                etcd::backup_etcd_locked(job.store.as_ref(), target, options, job.clock.as_ref())
                    .await?
            }
            Source::Namespace { client, options } => {
                // What interrupted runs left (etcd's locked backup does the same itself).
                let cleaned = catalog::cleanup_incomplete(job.store.as_ref()).await?;
                if !cleaned.is_empty() {
                    tracing::info!(?cleaned, "removed what interrupted backups left");
                }
                namespace::backup::backup_locked(client, job.store.as_ref(), options).await?
            }
        };
        let drilled = match &job.drill {
            Some(d) => Some(
                crate::drill::drill(job.store.as_ref(), &m.id, &d.decrypt, &d.options)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            None => None,
        };
        let plan = prune_own(job.store.as_ref(), &job.source, &job.retention).await?;
        Ok::<_, NamespaceError>((m, plan.delete, drilled))
    }
    .await;
    let report = match result {
        Ok((m, pruned, drilled)) => {
            let mut r = RunReport::new(Outcome::Success, None);
            r.manifest = Some(m);
            r.pruned = pruned;
            match drilled {
                Some(Ok(rec)) => r.drill = Some(rec),
                Some(Err(e)) => r.drill_error = Some(e),
                None => {}
            }
            r
        }
        Err(e) => failure(e),
    };
    finish(job, &report, started).await;
    if let Err(e) = guard.release().await {
        tracing::warn!(error = %e, "could not release the lock; it will expire");
    }
    report
}

/// The store's backup lock, retried with growing pauses (1 s up to 15 s) while another run holds
/// it, for at most `job.lock_wait`; `Ok(Err(holder))` when it is still held then.
async fn acquire_waiting(
    job: &Job,
) -> Result<Result<lock::LockGuard, lock::LockInfo>, BackupError> {
    let deadline = Instant::now() + job.lock_wait;
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let held = match lock::try_acquire(
            job.store.clone(),
            lock::BACKUP_LOCK,
            job.source.lock_ttl(),
            job.clock.clone(),
        )
        .await?
        {
            Ok(guard) => return Ok(Ok(guard)),
            Err(holder) => holder,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(held));
        }
        if pause.as_secs() == 1 {
            tracing::info!(holder = %held.holder, "backup lock held; waiting for it");
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(15));
    }
}

/// When one of this job's backups finished at or after `tick`, if one did. Etcd reads the
/// kind's status object (cheap); namespaces look through the catalog for the same selection.
async fn finished_since(job: &Job, tick: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match &job.source {
        Source::Etcd { .. } => status::read_status(job.store.as_ref(), Kind::Etcd)
            .await
            .ok()
            .flatten()
            .and_then(|st| st.last_success_at)
            .filter(|t| *t >= tick),
        Source::Namespace { .. } => catalog::list_manifests(job.store.as_ref())
            .await
            .ok()?
            .into_iter()
            .filter(|m| job.source.owns(m) && m.finished_at >= tick)
            .map(|m| m.finished_at)
            .max(),
    }
}

/// Applies `policy` to this job's own backups only (see the module header); the caller holds
/// the backup lock.
pub async fn prune_own(
    store: &dyn Store,
    source: &Source,
    policy: &Retention,
) -> Result<Plan, BackupError> {
    let entries = catalog::list(store).await?;
    let items: Vec<Item> = entries
        .iter()
        .filter(|e| source.owns(&e.manifest))
        .map(Item::from)
        .collect();
    let plan = retention::plan(policy, &items);
    for id in &plan.delete {
        catalog::delete_backup(store, id).await?;
        tracing::info!(id, "pruned");
    }
    Ok(plan)
}

fn failure(e: impl std::fmt::Display) -> RunReport {
    RunReport::new(Outcome::Failure, Some(e.to_string()))
}

async fn finish(job: &Job, report: &RunReport, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    job.metrics.observe_run(
        job.source.kind(),
        report.outcome,
        secs,
        report.manifest.as_ref(),
    );
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
        job.source.kind(),
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
