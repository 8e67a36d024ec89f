//! Backups, read from the backup store named in cluster.yaml (`backup.store`) through
//! `clusterkit_backup`'s catalog and status objects — no backup daemon needs to run.
//!
//! Per kind (etcd, namespace): how many complete backups exist, the age of the newest one and
//! of the newest trusted one (integrity checked when taken, not failed by a later `verify`),
//! and the last successful run's time, duration and stored size (from the status object the
//! backup commands write, or from the newest manifest when there is none); and per store and
//! kind the newest restore drill (`backups/<id>/drill.json`): when one last passed, whether the
//! newest failed, how long it took and the restore time it measured.
//! Without a configured store the etcd count is 0, so `BackupAbsent` says so.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clusterkit_backup::catalog;
use clusterkit_backup::manifest::Kind;
use clusterkit_backup::status;
use clusterkit_backup::store::Store;
use clusterkit_core::config;

use super::{flag, gauge, CollectError, Collector, Metrics};
use crate::topology::Topology;

fn backup_error(what: impl Into<String>, source: impl Into<crate::error::Cause>) -> CollectError {
    CollectError::Backup {
        what: what.into(),
        source: source.into(),
    }
}

pub struct BackupCollector {
    backup: config::Backup,
    interval: Duration,
    store: tokio::sync::Mutex<Option<Arc<dyn Store>>>,
}

impl BackupCollector {
    pub fn new(topology: &Topology) -> Self {
        BackupCollector {
            backup: topology.cluster.backup.clone(),
            interval: Duration::from_secs(topology.monitor().intervals.backups_secs),
            store: tokio::sync::Mutex::new(None),
        }
    }

    async fn store(&self) -> Result<Option<Arc<dyn Store>>, CollectError> {
        if self.backup.store.is_none() {
            return Ok(None);
        }
        let mut cached = self.store.lock().await;
        if let Some(s) = cached.as_ref() {
            return Ok(Some(s.clone()));
        }
        let (url, options) =
            clusterkit_backup::settings::store(&Default::default(), Some(&self.backup))
                .map_err(|e| backup_error("backup store", e))?;
        let store = clusterkit_backup::store::open_store(&url, &options)
            .await
            .map_err(|e| backup_error(format!("backup store {url}"), e))?;
        *cached = Some(store.clone());
        Ok(Some(store))
    }
}

#[async_trait]
impl Collector for BackupCollector {
    fn name(&self) -> &'static str {
        "backups"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError> {
        let configured = gauge(
            metrics,
            "clusterkit_backup_store_configured",
            "1 when cluster.yaml names a backup store.",
            &[],
        )?;
        let count = gauge(
            metrics,
            "clusterkit_backup_count",
            "Complete backups (with a manifest) in the store.",
            &["kind"],
        )?;
        let Some(store) = self.store().await? else {
            configured.with_label_values::<&str>(&[]).set(0.0);
            count.with_label_values(&["etcd"]).set(0.0);
            return Ok(());
        };
        configured.with_label_values::<&str>(&[]).set(1.0);
        let newest_age = gauge(
            metrics,
            "clusterkit_backup_newest_age_seconds",
            "Age of the newest complete backup.",
            &["kind"],
        )?;
        let verified_age = gauge(
            metrics,
            "clusterkit_backup_newest_verified_age_seconds",
            "Age of the newest backup whose checks passed and that no later verify failed.",
            &["kind"],
        )?;
        let trusted_count = gauge(
            metrics,
            "clusterkit_backup_verified_count",
            "Backups whose checks passed and that no later verify failed.",
            &["kind"],
        )?;
        let last_success = gauge(
            metrics,
            "clusterkit_backup_last_success_timestamp_seconds",
            "When the last successful backup finished (Unix seconds).",
            &["kind"],
        )?;
        let last_duration = gauge(
            metrics,
            "clusterkit_backup_last_duration_seconds",
            "How long the last successful backup took.",
            &["kind"],
        )?;
        let last_size = gauge(
            metrics,
            "clusterkit_backup_last_stored_bytes",
            "Stored (compressed, encrypted) size of the last successful backup.",
            &["kind"],
        )?;
        let last_failed = gauge(
            metrics,
            "clusterkit_backup_last_run_failed",
            "1 when the last backup run of the kind failed.",
            &["kind"],
        )?;

        let drill_success = gauge(
            metrics,
            "clusterkit_backup_drill_last_success_timestamp_seconds",
            "When the newest passed restore drill of the kind finished (Unix seconds).",
            &["store", "kind"],
        )?;
        let drill_duration = gauge(
            metrics,
            "clusterkit_backup_drill_last_duration_seconds",
            "How long the newest restore drill of the kind took, end to end.",
            &["store", "kind"],
        )?;
        let drill_restore = gauge(
            metrics,
            "clusterkit_backup_drill_last_restore_seconds",
            "Restore time (download, verify, restore, start until it answered) the newest drill measured.",
            &["store", "kind"],
        )?;
        let drill_failed = gauge(
            metrics,
            "clusterkit_backup_drill_last_failed",
            "1 when the newest restore drill of the kind failed.",
            &["store", "kind"],
        )?;
        let url = store.url().to_string();

        let entries = catalog::list(store.as_ref())
            .await
            .map_err(|e| backup_error("listing backups", e))?;
        let now = chrono::Utc::now();
        for kind in [Kind::Etcd, Kind::Namespace] {
            let k = kind.as_str();
            let of_kind: Vec<_> = entries.iter().filter(|e| e.manifest.kind == kind).collect();
            count.with_label_values(&[k]).set(of_kind.len() as f64);
            // `list` is oldest first.
            if let Some(newest) = of_kind.last() {
                newest_age
                    .with_label_values(&[k])
                    .set((now - newest.manifest.finished_at).num_milliseconds() as f64 / 1000.0);
            }
            let trusted: Vec<_> = of_kind.iter().filter(|e| e.trusted()).collect();
            trusted_count
                .with_label_values(&[k])
                .set(trusted.len() as f64);
            if let Some(newest) = trusted.last() {
                verified_age
                    .with_label_values(&[k])
                    .set((now - newest.manifest.finished_at).num_milliseconds() as f64 / 1000.0);
            }
            let st = status::read_status(store.as_ref(), kind)
                .await
                .map_err(|e| backup_error(format!("backup status of {k}"), e))?;
            match (&st, of_kind.last()) {
                (Some(s), _) if s.last_success_at.is_some() => {
                    let at = s.last_success_at.expect("checked");
                    last_success
                        .with_label_values(&[k])
                        .set(at.timestamp_millis() as f64 / 1000.0);
                    if let Some(d) = s.last_duration_seconds {
                        last_duration.with_label_values(&[k]).set(d);
                    }
                    if let Some(b) = s.last_stored_bytes {
                        last_size.with_label_values(&[k]).set(b as f64);
                    }
                }
                (_, Some(newest)) => {
                    let m = &newest.manifest;
                    last_success
                        .with_label_values(&[k])
                        .set(m.finished_at.timestamp_millis() as f64 / 1000.0);
                    last_duration
                        .with_label_values(&[k])
                        .set((m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0);
                    last_size.with_label_values(&[k]).set(m.stored_size as f64);
                }
                _ => {}
            }
            if let Some(s) = &st {
                let failed = matches!(s.last_outcome, Some(status::Outcome::Failure));
                last_failed.with_label_values(&[k]).set(flag(failed));
            }
            let drills: Vec<_> = of_kind
                .iter()
                .filter_map(|e| e.last_drill.as_ref())
                .collect();
            if let Some(newest) = drills.iter().max_by_key(|d| d.at) {
                let labels = [url.as_str(), k];
                drill_failed
                    .with_label_values(&labels)
                    .set(flag(!newest.ok));
                drill_duration
                    .with_label_values(&labels)
                    .set(newest.duration_seconds);
                drill_restore
                    .with_label_values(&labels)
                    .set(newest.restore_seconds);
            }
            if let Some(passed) = drills.iter().filter(|d| d.ok).map(|d| d.at).max() {
                drill_success
                    .with_label_values(&[url.as_str(), k])
                    .set(passed.timestamp_millis() as f64 / 1000.0);
            }
        }
        Ok(())
    }
}
