//! A lock object in the store that expires, so two schedulers (or a scheduler and a manual
//! run) never write to one store at once, and a crashed holder never blocks forever.
//!
//! S3 offers no compare-and-swap that every compatible server supports, so this is a
//! candidate scheme built on strongly consistent list-after-write (AWS S3 since 2020, s3s-fs,
//! a directory): each contender writes `locks/<name>/<token>.json` with an expiry, then lists;
//! it holds the lock only if its candidate is the only live one. Two contenders that see each
//! other both withdraw and retry after a random pause, so at most one ever holds the lock.
//! The holder renews the expiry every `ttl / 3` while it works. Anyone may delete a candidate
//! whose expiry has passed, or whose holder is a process of this host that no longer exists.
//! Limits: clocks of contenders must agree to well within the TTL.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::BackupError;
use crate::store::Store;

/// The lock every backup writer takes (backups, prune and cleanup all write under it).
pub const BACKUP_LOCK: &str = "backup";

/// What a lock object says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub token: String,
    /// host:pid, for messages.
    pub holder: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

fn prefix(name: &str) -> String {
    format!("locks/{name}/")
}

fn key(name: &str, token: &str) -> String {
    format!("locks/{name}/{token}.json")
}

/// A held lock; renewed in the background until [`LockGuard::release`] (or drop, which stops
/// renewing and lets the lock expire).
#[derive(Debug)]
pub struct LockGuard {
    store: Arc<dyn Store>,
    name: String,
    info: LockInfo,
    renewer: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Stops renewing and deletes the lock object.
    pub async fn release(self) -> Result<(), BackupError> {
        self.renewer.abort();
        self.store
            .delete(&key(&self.name, &self.info.token))
            .await?;
        Ok(())
    }
}

impl LockGuard {
    /// [`LockGuard::release`] for callers whose own result matters more: a lock that cannot be
    /// deleted is logged and left to expire.
    pub async fn release_or_expire(self) {
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the backup lock; it will expire");
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A holder on this very host whose process is gone (it crashed, or lost the store mid-run
/// and could not delete its lock) need not be waited for. Holders elsewhere only expire.
fn holder_is_dead(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == hostname()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Live candidates (expired ones, and those of dead local processes, are deleted on the way).
async fn live(
    store: &dyn Store,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Vec<LockInfo>, BackupError> {
    let mut out = Vec::new();
    for o in store.list(&prefix(name)).await? {
        let info: Option<LockInfo> = match store.get(&o.key).await {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match info {
            Some(i) if i.expires_at > now && !holder_is_dead(&i.holder) => out.push(i),
            Some(i) => {
                tracing::info!(holder = %i.holder, expired = %i.expires_at, "removing a stale lock");
                store.delete(&o.key).await?;
            }
            None => {
                // Unparseable: treat as stale only once it is older than a day, by the store's
                // own timestamp, so a half-written object from a live writer is not stolen.
                if o.last_modified.is_some_and(|t| now - t > Duration::days(1)) {
                    store.delete(&o.key).await?;
                } else {
                    out.push(LockInfo {
                        token: o.key.clone(),
                        holder: "unknown (unreadable lock object)".into(),
                        acquired_at: now,
                        expires_at: now + Duration::days(1),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Tries to take lock `name` for `ttl`. `Ok(Err(info))` names the current holder when it is
/// taken. Contention between simultaneous contenders is retried a few times.
pub async fn try_acquire(
    store: Arc<dyn Store>,
    name: &str,
    ttl: Duration,
    clock: Arc<dyn Clock>,
) -> Result<Result<LockGuard, LockInfo>, BackupError> {
    let holder = format!("{}:{}", hostname(), std::process::id());
    for attempt in 0..5 {
        let now = clock.now();
        let others = live(store.as_ref(), name, now).await?;
        if let Some(other) = others.into_iter().next() {
            return Ok(Err(other));
        }
        let info = LockInfo {
            token: format!("{:016x}", rand::random::<u64>()),
            holder: holder.clone(),
            acquired_at: now,
            expires_at: now + ttl,
        };
        let my_key = key(name, &info.token);
        store
            .put(
                &my_key,
                Bytes::from(serde_json::to_vec(&info).unwrap_or_default()),
            )
            .await?;
        let contenders = live(store.as_ref(), name, clock.now()).await?;
        if contenders.iter().all(|c| c.token == info.token) {
            let renewer = tokio::spawn(renew(
                store.clone(),
                my_key,
                info.clone(),
                ttl,
                clock.clone(),
            ));
            return Ok(Ok(LockGuard {
                store,
                name: name.to_string(),
                info,
                renewer,
            }));
        }
        // Someone else wrote at the same time: withdraw, pause a random while, try again.
        store.delete(&my_key).await?;
        let pause = 50 + rand::random::<u64>() % (200 * (attempt + 1));
        tokio::time::sleep(StdDuration::from_millis(pause)).await;
    }
    let now = clock.now();
    Ok(Err(live(store.as_ref(), name, now)
        .await?
        .into_iter()
        .next()
        .unwrap_or(LockInfo {
            token: String::new(),
            holder: "another contender".into(),
            acquired_at: now,
            expires_at: now,
        })))
}

async fn renew(
    store: Arc<dyn Store>,
    key: String,
    mut info: LockInfo,
    ttl: Duration,
    clock: Arc<dyn Clock>,
) {
    let every = ttl.to_std().unwrap_or(StdDuration::from_secs(60)) / 3;
    loop {
        tokio::time::sleep(every.max(StdDuration::from_millis(100))).await;
        info.expires_at = clock.now() + ttl;
        if let Err(e) = store
            .put(
                &key,
                Bytes::from(serde_json::to_vec(&info).unwrap_or_default()),
            )
            .await
        {
            tracing::warn!(error = %e, "could not renew the backup lock");
        }
    }
}

/// Takes the store's backup lock ([`BACKUP_LOCK`], shared by backups and prunes) or fails with
/// who holds it.
pub async fn acquire_backup(
    store: &Arc<dyn Store>,
    ttl: Duration,
    clock: &Arc<dyn Clock>,
) -> Result<LockGuard, BackupError> {
    acquire(store.clone(), BACKUP_LOCK, ttl, clock.clone()).await
}

/// Takes the lock or fails with who holds it.
pub async fn acquire(
    store: Arc<dyn Store>,
    name: &str,
    ttl: Duration,
    clock: Arc<dyn Clock>,
) -> Result<LockGuard, BackupError> {
    match try_acquire(store.clone(), name, ttl, clock).await? {
        Ok(g) => Ok(g),
        Err(info) => Err(BackupError::Locked {
            name: name.to_string(),
            store: store.url().to_string(),
            holder: info.holder,
            until: info.expires_at.to_rfc3339(),
        }),
    }
}
