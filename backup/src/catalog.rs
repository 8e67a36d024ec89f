//! The life of a backup in a store, for every kind: stage (pending marker, streamed upload),
//! commit (manifest written last), list, describe, verify, delete, and the cleanup of what
//! interrupted runs left behind.
//!
//! This is the public API other crates use: the namespace backup stages its tar
//! stream with [`stage`] and commits with [`commit`]; the monitor reads backups with
//! [`list_manifests`] and the latest run per kind with [`crate::status::read_status`].
//!
//! Limits: [`cleanup_incomplete`] deletes every backup directory without a manifest, so it
//! must only run while holding the store's backup lock (see [`crate::lock`]) — otherwise it
//! could remove a backup another process is still writing.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::manifest::{
    self, data_key, manifest_key, pending_key, verify_key, EtcdInfo, Kind, Manifest, Pending,
    VerifyRecord, BACKUPS, MANIFEST_FORMAT,
};
use crate::pipeline::{self, WriteSettings, Written};
use crate::store::Store;

/// The version recorded in manifests.
pub const TOOL_VERSION: &str = concat!("clusterkit ", env!("CARGO_PKG_VERSION"));

/// Uploaded data waiting for its manifest.
#[derive(Debug, Clone)]
pub struct Staged {
    pub id: String,
    pub kind: Kind,
    pub started_at: DateTime<Utc>,
    pub written: Written,
    pub settings: WriteSettings,
}

fn writer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

fn json<T: serde::Serialize>(v: &T) -> Bytes {
    // Serializing our own plain structs cannot fail.
    Bytes::from(serde_json::to_vec_pretty(v).unwrap_or_default())
}

/// Uploads a payload as backup `id`: records a pending marker with the upload id, streams
/// `source` through the write pipeline, and completes the upload. On failure the upload is
/// aborted (best effort: if the store is unreachable the marker lets the next run finish
/// the job) and no manifest exists.
pub async fn stage<S>(
    store: &dyn Store,
    kind: Kind,
    id: &str,
    started_at: DateTime<Utc>,
    source: S,
    settings: WriteSettings,
) -> Result<Staged, BackupError>
where
    S: Stream<Item = Result<Bytes, BackupError>> + Send,
{
    manifest::check_id(id)?;
    let key = data_key(id);
    let mut upload = store.begin_upload(&key).await?;
    let pending = Pending {
        id: id.to_string(),
        kind,
        data_key: key.clone(),
        upload_id: upload.upload_id().to_string(),
        started_at,
        writer: writer_name(),
    };
    if let Err(e) = store.put(&pending_key(id), json(&pending)).await {
        let _ = upload.abort().await;
        return Err(e.into());
    }
    let part_size = store.part_size();
    let written = match pipeline::write_stream(source, upload.as_mut(), part_size, settings.clone())
        .await
    {
        Ok(w) => w,
        Err(e) => {
            match upload.abort().await {
                Ok(()) => {
                    let _ = store.delete(&pending_key(id)).await;
                }
                Err(abort) => {
                    tracing::warn!(id, error = %abort, "could not abort the upload; the next run will")
                }
            }
            return Err(e);
        }
    };
    let stored = upload.complete().await?;
    if stored != written.stored_size {
        return Err(BackupError::Pipeline(format!(
            "store reports {stored} bytes for {key}, the pipeline wrote {}",
            written.stored_size
        )));
    }
    Ok(Staged {
        id: id.to_string(),
        kind,
        started_at,
        written,
        settings,
    })
}

/// Writes the manifest (last), then removes the pending marker. After this the backup exists.
pub async fn commit(
    store: &dyn Store,
    staged: Staged,
    cluster: &str,
    finished_at: DateTime<Utc>,
    etcd: Option<EtcdInfo>,
    details: BTreeMap<String, serde_json::Value>,
) -> Result<Manifest, BackupError> {
    let m = Manifest {
        format: MANIFEST_FORMAT,
        id: staged.id.clone(),
        kind: staged.kind,
        cluster: cluster.to_string(),
        data_key: data_key(&staged.id),
        raw_size: staged.written.raw_size,
        stored_size: staged.written.stored_size,
        sha256_raw: staged.written.sha256_raw.clone(),
        sha256_stored: staged.written.sha256_stored.clone(),
        compression: "zstd".into(),
        compression_level: staged.settings.compression_level,
        encryption: staged.settings.encrypt.describe(),
        tool_version: TOOL_VERSION.into(),
        started_at: staged.started_at,
        finished_at,
        etcd,
        details,
    };
    store.put(&manifest_key(&m.id), json(&m)).await?;
    if let Err(e) = store.delete(&pending_key(&m.id)).await {
        tracing::warn!(id = %m.id, error = %e, "backup complete, but its pending marker stays until the next run");
    }
    Ok(m)
}

/// Reads one manifest.
pub async fn get_manifest(store: &dyn Store, id: &str) -> Result<Manifest, BackupError> {
    manifest::check_id(id)?;
    let bytes = store.get(&manifest_key(id)).await.map_err(|e| {
        if e.is_not_found() {
            BackupError::NoSuchBackup {
                id: id.to_string(),
                store: store.url().to_string(),
            }
        } else {
            e.into()
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| BackupError::BadManifest {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// One backup as `list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub manifest: Manifest,
    /// The last `verify` result, if any.
    pub last_verify: Option<VerifyRecord>,
    /// The last restore drill, if any.
    pub last_drill: Option<crate::drill::DrillRecord>,
}

impl Entry {
    /// Not known to be bad: created with its checks passed and not failed a later verify or
    /// drill.
    pub fn trusted(&self) -> bool {
        self.last_verify.as_ref().is_none_or(|v| v.ok)
            && self.last_drill.as_ref().is_none_or(|d| d.ok)
    }

    /// Its last restore drill passed.
    pub fn drill_passed(&self) -> bool {
        self.last_drill.as_ref().is_some_and(|d| d.ok)
    }
}

/// Every complete backup (one with a manifest) in the store, oldest first. Unreadable
/// manifests are skipped with a warning rather than hiding every other backup.
///
/// This is the entry point for the monitor: it needs nothing but a [`Store`]
/// (see [`crate::store::open_store`]).
pub async fn list_manifests(store: &dyn Store) -> Result<Vec<Manifest>, BackupError> {
    Ok(list(store).await?.into_iter().map(|e| e.manifest).collect())
}

/// Like [`list_manifests`], with each backup's last verify result.
pub async fn list(store: &dyn Store) -> Result<Vec<Entry>, BackupError> {
    let objects = store.list(BACKUPS).await?;
    let mut ids = Vec::new();
    let mut verified = std::collections::HashSet::new();
    let mut drilled = std::collections::HashSet::new();
    for o in &objects {
        let Some(rest) = o.key.strip_prefix(BACKUPS) else {
            continue;
        };
        match rest.split_once('/') {
            Some((id, "manifest.json")) => ids.push(id.to_string()),
            Some((id, "verify.json")) => {
                verified.insert(id.to_string());
            }
            Some((id, "drill.json")) => {
                drilled.insert(id.to_string());
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let manifest = match get_manifest(store, &id).await {
            Ok(m) => m,
            // Deleted since the listing (pruned by another run): not a backup any more.
            Err(BackupError::NoSuchBackup { .. }) => continue,
            Err(e) => {
                tracing::warn!(id, error = %e, "skipping a backup with an unreadable manifest");
                continue;
            }
        };
        let last_verify = if verified.contains(&id) {
            match store.get(&verify_key(&id)).await {
                Ok(b) => serde_json::from_slice(&b).ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        let last_drill = if drilled.contains(&id) {
            crate::drill::last_drill(store, &id).await.ok().flatten()
        } else {
            None
        };
        out.push(Entry {
            manifest,
            last_verify,
            last_drill,
        });
    }
    out.sort_by(|a, b| {
        (a.manifest.finished_at, &a.manifest.id).cmp(&(b.manifest.finished_at, &b.manifest.id))
    });
    Ok(out)
}

/// Downloads and checks a backup completely, and records the result next to it.
pub async fn verify(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    now: DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    let m = get_manifest(store, id).await?;
    let result = pipeline::read_and_check(store, &m, decrypt, None).await;
    // A missing key says nothing about the backup itself: only record real verdicts.
    let record = match &result {
        Ok(_) => Some(VerifyRecord {
            ok: true,
            at: now,
            error: None,
        }),
        Err(e @ BackupError::Corrupt { .. }) => Some(VerifyRecord {
            ok: false,
            at: now,
            error: Some(e.to_string()),
        }),
        Err(_) => None,
    };
    if let Some(r) = record {
        if let Err(e) = store.put(&verify_key(id), json(&r)).await {
            tracing::warn!(id, error = %e, "could not record the verify result");
        }
    }
    result.map(|_| m)
}

/// Deletes a backup: the manifest first (so it stops existing at once), then the rest.
pub async fn delete_backup(store: &dyn Store, id: &str) -> Result<(), BackupError> {
    manifest::check_id(id)?;
    store.delete(&manifest_key(id)).await?;
    for o in store.list(&manifest::dir_of(id)).await? {
        store.delete(&o.key).await?;
    }
    Ok(())
}

/// Removes what interrupted runs left: aborts their recorded uploads and deletes every
/// backup directory without a manifest. Returns the ids cleaned. Hold the lock (see module doc).
pub async fn cleanup_incomplete(store: &dyn Store) -> Result<Vec<String>, BackupError> {
    let objects = store.list(BACKUPS).await?;
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects {
        if let Some((id, _)) = o.key.strip_prefix(BACKUPS).and_then(|r| r.split_once('/')) {
            by_id.entry(id.to_string()).or_default().push(o.key.clone());
        }
    }
    let mut cleaned = Vec::new();
    for (id, keys) in by_id {
        if keys.iter().any(|k| k.ends_with("/manifest.json")) {
            continue;
        }
        let pk = pending_key(&id);
        if keys.contains(&pk) {
            if let Ok(b) = store.get(&pk).await {
                if let Ok(p) = serde_json::from_slice::<Pending>(&b) {
                    store.abort_upload(&p.data_key, &p.upload_id).await?;
                }
            }
        }
        for k in keys.iter().filter(|k| **k != pk) {
            store.delete(k).await?;
        }
        // The marker goes last: if we die midway, the next run still knows the upload id.
        store.delete(&pk).await?;
        tracing::info!(id, "removed an incomplete backup");
        cleaned.push(id);
    }
    Ok(cleaned)
}

/// [`stage`] for a payload already in memory (small payloads, tools and tests).
pub async fn stage_bytes(
    store: &dyn Store,
    kind: Kind,
    id: &str,
    started_at: DateTime<Utc>,
    data: Vec<u8>,
    settings: WriteSettings,
) -> Result<Staged, BackupError> {
    let source = futures::stream::iter([Ok::<_, BackupError>(Bytes::from(data))]);
    stage(store, kind, id, started_at, source, settings).await
}
