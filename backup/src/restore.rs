//! Restoring an etcd snapshot into a local data directory (one etcd on this machine).
//!
//! Order: download and verify completely into a scratch directory next to the data dir (a
//! corrupt or undecryptable backup stops here, nothing touched); run `etcdctl snapshot
//! restore` into the scratch directory (the dry run); only then move the old data dir aside
//! (kept as `<data-dir>.before-<id>-<time>`) and rename the restored one into place. If that
//! swap fails, the old data dir is put back.
//!
//! Limits: etcd must be stopped by the caller (the data dir is replaced underneath it
//! otherwise); etcd 3.4 has no `--bump-revision`, so every watcher (apiservers, controllers,
//! kubelets) must be restarted after a restore. The multi-member flow over SSH is separate.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::catalog;
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::manifest::{Kind, Manifest};
use crate::pipeline;
use crate::store::Store;

/// Where and as whom the restored member lives.
#[derive(Debug, Clone)]
pub struct LocalRestore {
    /// The etcd data directory to replace.
    pub data_dir: PathBuf,
    /// Member name (`--name` of etcd).
    pub name: String,
    /// This member's peer URL(s), comma-separated.
    pub peer_urls: String,
    /// `name=peer-url,…` of every member; default: only this one.
    pub initial_cluster: Option<String>,
    /// A new token, so restored members never talk to the old cluster.
    pub initial_cluster_token: String,
    /// The `etcdctl` binary (3.4: restore lives in etcdctl; etcdutl from 3.5).
    pub etcdctl: PathBuf,
}

/// What the restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub data_dir: PathBuf,
    /// Where the previous data dir went (`None` if there was none).
    pub old_data_dir: Option<PathBuf>,
    pub revision_at_least: i64,
    pub raw_size: u64,
}

fn local(path: &Path, source: std::io::Error) -> BackupError {
    BackupError::LocalIo {
        path: path.to_path_buf(),
        source,
    }
}

/// Downloads `id` and checks it completely into `dest` (a file). Removes `dest` on failure.
pub async fn fetch_verified(
    store: &dyn Store,
    m: &Manifest,
    decrypt: &Decrypt,
    dest: &Path,
) -> Result<(), BackupError> {
    match pipeline::read_and_check(store, m, decrypt, Some(dest)).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(dest);
            Err(e)
        }
    }
}

/// Restores backup `id` into `opts.data_dir` and counts the restore in the store's status. See
/// the module doc for the order of steps.
pub async fn restore_local(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    opts: &LocalRestore,
    now: DateTime<Utc>,
) -> Result<RestoreReport, BackupError> {
    crate::status::recorded(store, Kind::Etcd, async {
        let m = catalog::get_manifest(store, id).await?;
        if m.kind != Kind::Etcd {
            return Err(BackupError::RestoreRefused(format!(
                "{id} is a {} backup, not etcd",
                m.kind
            )));
        }
        let data_dir = opts.data_dir.components().collect::<PathBuf>();
        let parent = data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| {
                BackupError::Invalid(format!("{} has no parent directory", data_dir.display()))
            })?
            .to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| local(&parent, e))?;
        let base = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "etcd".into());
        let stamp = now.format("%Y%m%dT%H%M%SZ");
        // Scratch next to the data dir: same filesystem, so the final rename is atomic.
        let scratch = parent.join(format!(".{base}.restore-{id}"));
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(|e| local(&scratch, e))?;
        }
        std::fs::create_dir_all(&scratch).map_err(|e| local(&scratch, e))?;
        let result = restore_into_scratch(store, &m, decrypt, opts, &scratch).await;
        let restored = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
        };
        // Verified and restored in scratch: now, and only now, touch the real data dir.
        let old = if data_dir.exists() {
            let old = parent.join(format!("{base}.before-{id}-{stamp}"));
            std::fs::rename(&data_dir, &old).map_err(|e| local(&data_dir, e))?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&restored, &data_dir) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, &data_dir);
            }
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(local(&data_dir, e));
        }
        let _ = std::fs::remove_dir_all(&scratch);
        Ok(RestoreReport {
            id: m.id.clone(),
            data_dir,
            old_data_dir: old,
            revision_at_least: m.etcd.as_ref().map(|e| e.revision).unwrap_or(0),
            raw_size: m.raw_size,
        })
    })
    .await
}

async fn restore_into_scratch(
    store: &dyn Store,
    m: &Manifest,
    decrypt: &Decrypt,
    opts: &LocalRestore,
    scratch: &Path,
) -> Result<PathBuf, BackupError> {
    let snapshot = scratch.join("snapshot.db");
    fetch_verified(store, m, decrypt, &snapshot).await?;
    let target = scratch.join("data");
    let initial_cluster = opts
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={}", opts.name, opts.peer_urls));
    snapshot_restore(&SnapshotRestore {
        etcdctl: &opts.etcdctl,
        snapshot: &snapshot,
        data_dir: &target,
        name: &opts.name,
        peer_urls: &opts.peer_urls,
        initial_cluster: &initial_cluster,
        token: &opts.initial_cluster_token,
        bump_revision: None,
    })
    .await?;
    let _ = std::fs::remove_file(&snapshot);
    Ok(target)
}

/// One `etcdctl snapshot restore` of a snapshot file [`fetch_verified`] wrote (so verified:
/// etcdctl's own hash check is skipped) into a new data dir.
pub struct SnapshotRestore<'a> {
    /// `etcdctl` (etcd 3.4 restores with it; 3.5 still does, deprecated for etcdutl).
    pub etcdctl: &'a Path,
    pub snapshot: &'a Path,
    /// Created by etcdctl; must not exist.
    pub data_dir: &'a Path,
    /// The member's name.
    pub name: &'a str,
    /// The member's peer URL(s), comma-separated.
    pub peer_urls: &'a str,
    /// `name=peer-url,…` of every member.
    pub initial_cluster: &'a str,
    /// A new token, so the restored member never talks to the old cluster.
    pub token: &'a str,
    /// `etcdutl` (≥ 3.5) only: move revisions up by this much and mark them compacted, so no
    /// watcher sees an older revision reused. `etcdctl` then names the etcdutl binary.
    pub bump_revision: Option<u64>,
}

/// Runs `etcdctl snapshot restore`. [`BackupError::LocalIo`] when etcdctl cannot be run,
/// [`BackupError::Command`] (with stderr's tail) when it fails.
pub async fn snapshot_restore(r: &SnapshotRestore<'_>) -> Result<(), BackupError> {
    let out = tokio::process::Command::new(r.etcdctl)
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(r.snapshot)
        .arg("--data-dir")
        .arg(r.data_dir)
        .arg("--name")
        .arg(r.name)
        .arg("--initial-cluster")
        .arg(r.initial_cluster)
        .arg("--initial-cluster-token")
        .arg(r.token)
        .arg("--initial-advertise-peer-urls")
        .arg(r.peer_urls)
        // Every snapshot handed here was verified by `fetch_verified` on its way to disk
        // (etcd's integrity hash among the checks): hashing it again costs a pass over the DB.
        .arg("--skip-hash-check")
        .args(
            r.bump_revision
                .map(|n| {
                    vec![
                        format!("--bump-revision={n}"),
                        "--mark-compacted".to_string(),
                    ]
                })
                .unwrap_or_default(),
        )
        .output()
        .await
        .map_err(|e| local(r.etcdctl, e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(BackupError::Command {
        command: format!("{} snapshot restore", r.etcdctl.display()),
        status: out.status.to_string(),
        stderr: clusterkit_core::exec::tail(&String::from_utf8_lossy(&out.stderr)).to_string(),
    })
}
