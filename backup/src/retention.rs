//! Retention: which backups to keep — the last N, plus the newest backup of each of the last
//! H hours, D days, W ISO weeks and M months that have backups (the scheme of restic's
//! `forget --keep-*`), applied per kind — and never the newest trusted backup (one whose
//! checks passed at creation and that no later `verify` or drill found bad), nor the newest
//! backup whose restore drill passed.
//!
//! Buckets are calendar periods in UTC. A policy that keeps nothing at all keeps everything:
//! an empty retention section must not empty the store.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Entry;
use crate::manifest::Kind;

/// How many backups of each period to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }
}

/// One backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub kind: Kind,
    pub at: DateTime<Utc>,
    /// Not known to be corrupt.
    pub trusted: bool,
    /// Its last restore drill passed.
    pub drill_passed: bool,
}

impl From<&Entry> for Item {
    fn from(e: &Entry) -> Item {
        Item {
            id: e.manifest.id.clone(),
            kind: e.manifest.kind,
            at: e.manifest.finished_at,
            trusted: e.trusted(),
            drill_passed: e.drill_passed(),
        }
    }
}

/// The decision for each backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Kept ids with the reasons (`last`, `hourly`, `daily`, `weekly`, `monthly`,
    /// `newest-verified`, `newest-drilled`, `no-policy`).
    pub keep: BTreeMap<String, Vec<&'static str>>,
    /// Ids to delete, oldest first.
    pub delete: Vec<String>,
}

type BucketFn = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);

fn hour(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), t.month(), t.day(), t.hour())
}
fn day(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), t.month(), t.day(), 0)
}
fn week(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    let w = t.iso_week();
    (w.year(), w.week(), 0, 0)
}
fn month(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), t.month(), 0, 0)
}

/// Decides what to keep. Pure: the same items give the same plan.
pub fn plan(policy: &Retention, items: &[Item]) -> Plan {
    let mut out = Plan::default();
    let mut kinds: BTreeSet<Kind> = BTreeSet::new();
    for i in items {
        kinds.insert(i.kind);
    }
    for kind in kinds {
        // Newest first.
        let mut list: Vec<&Item> = items.iter().filter(|i| i.kind == kind).collect();
        list.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        let mut keep: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        if policy.is_empty() {
            for i in &list {
                keep.entry(i.id.clone()).or_default().push("no-policy");
            }
        }
        let keep_last = usize::try_from(policy.keep_last).unwrap_or(usize::MAX);
        for i in list.iter().take(keep_last) {
            keep.entry(i.id.clone()).or_default().push("last");
        }
        let rules: [(u32, BucketFn, &'static str); 4] = [
            (policy.hourly, hour, "hourly"),
            (policy.daily, day, "daily"),
            (policy.weekly, week, "weekly"),
            (policy.monthly, month, "monthly"),
        ];
        for (count, bucket, reason) in rules {
            let mut last = None;
            let mut kept = 0;
            for i in &list {
                if kept >= count {
                    break;
                }
                let b = bucket(&i.at);
                if last != Some(b) {
                    last = Some(b);
                    keep.entry(i.id.clone()).or_default().push(reason);
                    kept += 1;
                }
            }
        }
        if let Some(newest) = list.iter().find(|i| i.trusted) {
            keep.entry(newest.id.clone())
                .or_default()
                .push("newest-verified");
        }
        // The newest backup proven to restore stays until a newer one is proven too.
        if let Some(newest) = list.iter().find(|i| i.drill_passed) {
            keep.entry(newest.id.clone())
                .or_default()
                .push("newest-drilled");
        }
        for i in list.iter().rev() {
            if !keep.contains_key(&i.id) {
                out.delete.push(i.id.clone());
            }
        }
        out.keep.extend(keep);
    }
    out
}

/// How long `prune`'s hold on the backup lock lives without renewal: listing and deleting
/// take seconds, not minutes.
const PRUNE_LOCK_TTL_MINUTES: i64 = 5;

/// Applies `policy` to the store: deletes what [`plan`] says and returns the plan. Deletes
/// under the store's backup lock (a backup in progress is never pruned mid-write); a dry run
/// deletes nothing and takes no lock.
pub async fn prune(
    store: std::sync::Arc<dyn crate::store::Store>,
    policy: &Retention,
    dry_run: bool,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
) -> Result<Plan, crate::error::BackupError> {
    if dry_run {
        return prune_locked(store.as_ref(), policy, true).await;
    }
    let guard = crate::lock::acquire_backup(
        &store,
        chrono::Duration::minutes(PRUNE_LOCK_TTL_MINUTES),
        &clock,
    )
    .await?;
    let result = prune_locked(store.as_ref(), policy, false).await;
    guard.release_or_expire().await;
    result
}

/// [`prune`] for a caller that already holds the store's backup lock (or a dry run).
pub async fn prune_locked(
    store: &dyn crate::store::Store,
    policy: &Retention,
    dry_run: bool,
) -> Result<Plan, crate::error::BackupError> {
    let entries = crate::catalog::list(store).await?;
    let items: Vec<Item> = entries.iter().map(Item::from).collect();
    let p = plan(policy, &items);
    if !dry_run {
        for id in &p.delete {
            crate::catalog::delete_backup(store, id).await?;
            tracing::info!(id, "pruned");
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, at: &str, trusted: bool) -> Item {
        Item {
            id: id.into(),
            kind: Kind::Etcd,
            at: at.parse().unwrap(),
            trusted,
            drill_passed: false,
        }
    }

    #[test]
    fn newest_drilled_survives_a_prune_that_would_remove_it() {
        let mut items = vec![
            item("a", "2024-03-01T01:00:00Z", true),
            item("b", "2024-03-02T01:00:00Z", true),
            item("c", "2024-03-03T01:00:00Z", true),
            item("d", "2024-03-04T01:00:00Z", true),
        ];
        items[0].drill_passed = true;
        items[1].drill_passed = true;
        let p = plan(
            &Retention {
                keep_last: 1,
                ..Default::default()
            },
            &items,
        );
        assert_eq!(p.keep["b"], vec!["newest-drilled"]);
        assert_eq!(p.keep["d"], vec!["last", "newest-verified"]);
        assert_eq!(p.delete, vec!["a", "c"]);
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        let items = vec![
            item("a", "2024-03-01T01:00:00Z", true),
            item("b", "2024-03-01T13:00:00Z", true),
            item("c", "2024-03-02T01:00:00Z", true),
            item("d", "2024-03-02T13:00:00Z", true),
            item("e", "2024-03-03T01:00:00Z", true),
        ];
        let p = plan(
            &Retention {
                daily: 2,
                ..Default::default()
            },
            &items,
        );
        assert_eq!(p.keep.keys().collect::<Vec<_>>(), vec!["d", "e"]);
        assert_eq!(p.delete, vec!["a", "b", "c"]);
    }

    #[test]
    fn newest_trusted_survives_even_outside_policy() {
        let items = vec![
            item("a", "2024-03-01T01:00:00Z", true),
            item("b", "2024-03-02T01:00:00Z", false),
        ];
        let p = plan(
            &Retention {
                keep_last: 1,
                ..Default::default()
            },
            &items,
        );
        assert_eq!(p.keep["a"], vec!["newest-verified"]);
        assert_eq!(p.keep["b"], vec!["last"]);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn empty_policy_keeps_all() {
        let items = vec![item("a", "2024-03-01T01:00:00Z", true)];
        assert!(plan(&Retention::default(), &items).delete.is_empty());
    }
}
