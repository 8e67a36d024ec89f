//! Restore drills: prove that a backup restores, per backup, and measure how long it takes.
//!
//! An etcd drill downloads and verifies the backup (both sha256 sums and etcd's integrity
//! hash), restores it with `etcdctl snapshot restore` into a **scratch etcd** that shares nothing
//! with the cluster — its own temporary directory (0700), loopback ports chosen free, a one-off
//! CA and certificate so even the scratch member speaks TLS with client-certificate
//! authentication — starts it, and checks that it answers, that its revision is the snapshot's
//! (the manifest brackets it), that the key count at the marker's revision equals the
//! manifest's, and that the marker key holds this backup's id. With a live cluster's API server
//! it also reports how far the live cluster has moved since (revision delta). The scratch runs
//! on this machine ([`scratch::Local`]) or on a cluster host over SSH ([`remote::Remote`]).
//!
//! A namespace drill downloads and verifies, decrypts and parses every object, and compares the
//! counts per resource type with the manifest's; with the API server of a scratch cluster it
//! applies the backup under mapped namespace names, compares, and deletes them again.
//!
//! The verdict is recorded next to the backup (`backups/<id>/drill.json`, see
//! [`manifest::drill_key`]) without touching its manifest — but only verdicts about the backup:
//! a drill that could not run (no etcd binary, no key to decrypt, store unreachable) returns an
//! error and records nothing.
//!
//! Limits: the scratch etcd is a single member (a restore onto N members is
//! [`crate::restore_cluster`]); the restore time measured is this machine's or that host's, for
//! one member; backups taken before markers existed are checked for integrity, start and
//! revision only.

pub mod namespace;
pub mod pki;
pub mod remote;
pub mod scratch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, TOOL_VERSION};
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::etcd::{self, EtcdTarget};
use crate::manifest::{self, Kind, Manifest, Marker};
use crate::namespace::{ApiClient, NamespaceError};
use crate::store::Store;

/// Current [`DrillRecord::format`].
pub const DRILL_FORMAT: u32 = 1;

/// How long a scratch etcd may take to answer after it was started (a large database is
/// opened and its index rebuilt first).
pub const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Everything a drill can fail with, other than a verdict about the backup.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Backup(#[from] BackupError),

    #[error(transparent)]
    Namespace(#[from] NamespaceError),

    /// The scratch etcd could not be prepared or run for a reason outside the backup.
    #[error("scratch etcd on {host}: {message}")]
    Scratch { host: String, message: String },
}

impl From<crate::store::StoreError> for DrillError {
    fn from(e: crate::store::StoreError) -> Self {
        DrillError::Backup(e.into())
    }
}

/// One comparison of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `integrity`, `starts`, `revision`, `key_count`, `marker`, `objects`, `count:<type>`, …
    pub name: String,
    pub ok: bool,
    /// What the manifest (or the rule) says.
    pub expected: String,
    /// What the restore showed.
    pub found: String,
}

impl Check {
    fn new(name: &str, ok: bool, expected: impl ToString, found: impl ToString) -> Check {
        Check {
            name: name.to_string(),
            ok,
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `download+verify`, `restore`, `ship`, `start`, `checks`, `parse`, `apply`, …
    pub name: String,
    pub seconds: f64,
}

/// The result of one drill, as kept in `backups/<id>/drill.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub format: u32,
    pub id: String,
    pub kind: Kind,
    /// When the drill finished.
    pub at: DateTime<Utc>,
    /// Every check passed.
    pub ok: bool,
    /// `ok`, or `failed: ` and what differed.
    pub verdict: String,
    /// Where the scratch ran: `local` or the host's name.
    pub host: String,
    /// Download, verification, restore and start until the member answered: the restore time
    /// (RTO) this backup measured. For namespaces: download, verification and parsing (and the
    /// apply, when a scratch cluster was given).
    pub restore_seconds: f64,
    /// The whole drill.
    pub duration_seconds: f64,
    pub steps: Vec<Step>,
    pub checks: Vec<Check>,
    /// What the restore showed: `revision`, `key_count`, `live_revision`,
    /// `revisions_behind_live`, `objects`, `etcd_version`, …
    #[serde(default)]
    pub figures: BTreeMap<String, serde_json::Value>,
    pub tool_version: String,
}

impl DrillRecord {
    /// One line: verdict, restore time, where.
    pub fn summary(&self) -> String {
        format!(
            "drill of {} {}: restored in {:.1}s on {} (drill {:.1}s)",
            self.id, self.verdict, self.restore_seconds, self.host, self.duration_seconds
        )
    }
}

/// Where the scratch etcd runs and with what.
#[derive(Clone)]
pub struct DrillOptions {
    /// The `etcd` binary (local drills; a remote host uses its own).
    pub etcd: PathBuf,
    /// The local `etcdctl` (etcd 3.4 restores with etcdctl).
    pub etcdctl: PathBuf,
    /// Parent of the local scratch directory (default: the system's temporary directory).
    pub work_dir: Option<PathBuf>,
    /// Run the scratch etcd on this host instead of here.
    pub on: Option<remote::RemoteHost>,
    /// The live cluster's API server, to report how far it moved since the backup.
    pub live: Option<ApiClient>,
    /// A scratch cluster's API server for namespace drills (applied under mapped names, then
    /// deleted).
    pub scratch_cluster: Option<ApiClient>,
    /// See [`START_TIMEOUT`].
    pub start_timeout: Duration,
}

impl DrillOptions {
    /// Local drills with the binaries from `PATH`.
    pub fn local(etcd: PathBuf, etcdctl: PathBuf) -> Self {
        Self {
            etcd,
            etcdctl,
            work_dir: None,
            on: None,
            live: None,
            scratch_cluster: None,
            start_timeout: START_TIMEOUT,
        }
    }
}

/// The newest backup of `kind` in the store.
pub async fn latest(store: &dyn Store, kind: Kind) -> Result<String, BackupError> {
    catalog::list_manifests(store)
        .await?
        .into_iter()
        .rev()
        .find(|m| m.kind == kind)
        .map(|m| m.id)
        .ok_or_else(|| BackupError::NoSuchBackup {
            id: format!("(newest {kind} backup)"),
            store: store.url().to_string(),
        })
}

/// The last drill of backup `id`, if any.
pub async fn last_drill(store: &dyn Store, id: &str) -> Result<Option<DrillRecord>, BackupError> {
    match store.get(&manifest::drill_key(id)).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `record` next to its backup. The manifest is not touched.
pub async fn record(store: &dyn Store, record: &DrillRecord) -> Result<(), BackupError> {
    let body = serde_json::to_vec_pretty(record).unwrap_or_default();
    store
        .put(&manifest::drill_key(&record.id), Bytes::from(body))
        .await?;
    Ok(())
}

/// Runs the drill of backup `id` and records its verdict (see the module doc). Returns the
/// record; `ok: false` is a verdict about the backup, `Err` a drill that could not run.
pub async fn drill(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    opts: &DrillOptions,
) -> Result<DrillRecord, DrillError> {
    let m = catalog::get_manifest(store, id).await?;
    let started = Instant::now();
    let mut run = Run::default();
    let host = opts
        .on
        .as_ref()
        .map(|h| h.name.clone())
        .unwrap_or_else(|| "local".to_string());
    match m.kind {
        Kind::Etcd => drill_etcd(store, &m, decrypt, opts, &mut run).await?,
        Kind::Namespace => namespace::drill(store, &m, decrypt, opts, &mut run).await?,
    }
    let failed: Vec<String> = run
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: expected {}, found {}", c.name, c.expected, c.found))
        .collect();
    let ok = failed.is_empty() && !run.checks.is_empty();
    let rec = DrillRecord {
        format: DRILL_FORMAT,
        id: m.id.clone(),
        kind: m.kind,
        at: Utc::now(),
        ok,
        verdict: if ok {
            "ok".into()
        } else {
            format!("failed: {}", failed.join("; "))
        },
        host,
        restore_seconds: run.restore_seconds,
        duration_seconds: started.elapsed().as_secs_f64(),
        steps: run.steps,
        checks: run.checks,
        figures: run.figures,
        tool_version: TOOL_VERSION.into(),
    };
    record(store, &rec).await?;
    Ok(rec)
}

/// What a drill collects as it goes.
#[derive(Default)]
pub(crate) struct Run {
    pub steps: Vec<Step>,
    pub checks: Vec<Check>,
    pub figures: BTreeMap<String, serde_json::Value>,
    pub restore_seconds: f64,
}

impl Run {
    /// Records how long `name` took since `since`; returns the seconds.
    pub fn step(&mut self, name: &str, since: Instant) -> f64 {
        let seconds = since.elapsed().as_secs_f64();
        self.steps.push(Step {
            name: name.to_string(),
            seconds,
        });
        seconds
    }

    pub fn check(&mut self, name: &str, ok: bool, expected: impl ToString, found: impl ToString) {
        self.checks.push(Check::new(name, ok, expected, found));
    }

    /// Records the `integrity` check from a download's result: `Ok(true)` to go on,
    /// `Ok(false)` when the backup is corrupt (a verdict), `Err` when it could not be read.
    pub fn integrity<T>(
        &mut self,
        result: Result<T, BackupError>,
        expected: &str,
    ) -> Result<bool, DrillError> {
        match result {
            Ok(_) => {
                self.check("integrity", true, expected, "all equal");
                Ok(true)
            }
            Err(BackupError::Corrupt { what, .. }) => {
                self.check(
                    "integrity",
                    false,
                    expected,
                    format!("integrity check failed: {what}"),
                );
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn figure(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.figures.insert(name.to_string(), value.into());
    }
}

/// A scratch etcd that was started from the restored data and answers (or exited).
pub(crate) enum Started {
    /// It answers here.
    Answers(EtcdTarget),
    /// It exited or never answered: the restored data does not start (log tail).
    Failed(String),
}

async fn drill_etcd(
    store: &dyn Store,
    m: &Manifest,
    decrypt: &Decrypt,
    opts: &DrillOptions,
    run: &mut Run,
) -> Result<(), DrillError> {
    let info = m.etcd.clone().ok_or_else(|| BackupError::BadManifest {
        id: m.id.clone(),
        message: "an etcd backup without its etcd section".into(),
    })?;
    let work = scratch::Dir::new(opts.work_dir.as_deref(), &m.id)?;
    let snapshot = work.path().join("snapshot.db");
    let t = Instant::now();
    let fetched = crate::restore::fetch_verified(store, m, decrypt, &snapshot).await;
    let mut rto = run.step("download+verify", t);
    let expected = "sha256 of stored and raw bytes and etcd's integrity hash as recorded";
    if !run.integrity(fetched, expected)? {
        run.restore_seconds = rto;
        return Ok(());
    }

    let mut scratch: Box<dyn scratch::Scratch> = match &opts.on {
        None => Box::new(scratch::Local::new(work, opts, m.raw_size)?),
        Some(host) => {
            Box::new(remote::Remote::prepare(host.clone(), work, opts, m.raw_size).await?)
        }
    };
    let result = async {
        let t = Instant::now();
        let restored = scratch.restore(&snapshot, &m.id).await?;
        rto += run.step("restore", t);
        if let Err(why) = restored {
            run.check(
                "restores",
                false,
                "etcdctl snapshot restore succeeds",
                why.to_string(),
            );
            return Ok::<_, DrillError>(None);
        }
        for (name, seconds) in scratch.extra_steps() {
            run.steps.push(Step { name, seconds });
            rto += seconds;
        }
        let t = Instant::now();
        let started = scratch.start(opts.start_timeout).await?;
        rto += run.step("start", t);
        match started {
            Started::Failed(why) => {
                run.check(
                    "starts",
                    false,
                    "the restored member starts and answers",
                    why,
                );
                Ok(None)
            }
            Started::Answers(target) => {
                run.check(
                    "starts",
                    true,
                    "the restored member starts and answers",
                    format!(
                        "answered after {:.1}s",
                        run.steps.last().map(|s| s.seconds).unwrap_or(0.0)
                    ),
                );
                Ok(Some(target))
            }
        }
    }
    .await;
    run.restore_seconds = rto;
    let target = match result {
        Ok(t) => t,
        Err(e) => {
            scratch.stop().await;
            return Err(e);
        }
    };
    if let Some(target) = target {
        let t = Instant::now();
        let checked = check_restored(&target, m, &info, run).await;
        run.step("checks", t);
        if let Err(e) = checked {
            scratch.stop().await;
            return Err(e);
        }
    }
    scratch.stop().await;
    if let Some(live) = &opts.live {
        match live_revision(live).await {
            Ok(rev) => {
                run.figure("live_revision", rev);
                if let Some(r) = run.figures.get("revision").and_then(|v| v.as_i64()) {
                    run.figure("revisions_behind_live", rev - r);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the live cluster's revision");
                run.figure("live_revision_error", e.to_string());
            }
        }
    }
    Ok(())
}

/// The checks against a scratch etcd that answers.
async fn check_restored(
    target: &EtcdTarget,
    m: &Manifest,
    info: &manifest::EtcdInfo,
    run: &mut Run,
) -> Result<(), DrillError> {
    let endpoint = target.endpoints.first().cloned().unwrap_or_default();
    let mut client = etcd::connect(&endpoint, target).await?;
    let scratch_err = |message: String| DrillError::Scratch {
        host: endpoint.clone(),
        message,
    };
    let status = tokio::time::timeout(target.timeout, client.status())
        .await
        .map_err(|_| scratch_err("status timed out".into()))?
        .map_err(|e| scratch_err(format!("status: {e}")))?;
    let revision = status.header().map(|h| h.revision()).unwrap_or(0);
    run.figure("revision", revision);
    run.figure("etcd_version", status.version().to_string());
    run.figure("db_size_bytes", status.db_size());
    let upper = info.revision_after.unwrap_or(info.revision);
    let (expected, ok) = if info.marker.is_none() {
        // Without a marker the recorded revision is only a lower bound.
        (format!("≥ {}", info.revision), revision >= info.revision)
    } else if upper == info.revision {
        (info.revision.to_string(), revision == info.revision)
    } else {
        (
            format!("{}..={upper} (written to during the backup)", info.revision),
            revision >= info.revision && revision <= upper,
        )
    };
    run.check("revision", ok, expected, revision);
    if let Some(want) = info.key_count {
        let found = match etcd::count_keys(&mut client, info.revision, target.timeout).await {
            Ok(n) => {
                run.figure("key_count", n);
                n.to_string()
            }
            Err(e) => format!("cannot count at revision {}: {e}", info.revision),
        };
        run.check(
            "key_count",
            found == want.to_string(),
            format!("{want} at revision {}", info.revision),
            found,
        );
    } else if let Ok(n) = etcd::count_keys(&mut client, 0, target.timeout).await {
        run.figure("key_count", n);
    }
    if let Some(marker) = &info.marker {
        let found = read_marker(&mut client, &marker.key, target.timeout).await;
        let (ok, text) = match &found {
            Ok(Some((Some(id), rev))) => (
                id == &m.id && *rev == marker.revision,
                format!("{id} at revision {rev}"),
            ),
            Ok(Some((None, rev))) => (false, format!("an unreadable value at revision {rev}")),
            Ok(None) => (false, format!("no key {}", marker.key)),
            Err(e) => (false, format!("cannot read {}: {e}", marker.key)),
        };
        run.check(
            "marker",
            ok,
            format!("{} at revision {}", m.id, marker.revision),
            text,
        );
    }
    Ok(())
}

/// The marker's backup id (if its value parses) and mod revision, if the key exists.
async fn read_marker(
    client: &mut etcd_client::Client,
    key: &str,
    timeout: Duration,
) -> Result<Option<(Option<String>, i64)>, etcd::ProbeError> {
    let got = etcd::call("get", timeout, client.get(key, None)).await?;
    Ok(got
        .kvs()
        .first()
        .map(|kv| (Marker::id_in(kv.value()), kv.mod_revision())))
}

/// The live cluster's etcd revision as its API server reports it: the resourceVersion of a
/// quorum list (the API server's resourceVersions are etcd revisions).
pub async fn live_revision(client: &ApiClient) -> Result<i64, NamespaceError> {
    let v = client.get_path("/api/v1/namespaces?limit=1").await?;
    v.pointer("/metadata/resourceVersion")
        .and_then(|r| r.as_str())
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| NamespaceError::Api {
            method: "GET",
            path: "/api/v1/namespaces?limit=1".into(),
            status: None,
            message: "no numeric metadata.resourceVersion in the answer".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record read back from `drill.json` equals the one written, timings included: step
    /// times such as 1.8110047310000001 s once came back one bit off.
    #[test]
    fn record_reads_back_exactly() {
        let seconds = [1.8110047310000001, 0.1 + 0.2, 4.036810991, 1e-9, 123456.789];
        for s in seconds {
            let rec = DrillRecord {
                format: 1,
                id: "etcd-20261206T195049Z-3d42".into(),
                kind: Kind::Etcd,
                at: Utc::now(),
                ok: true,
                verdict: "ok".into(),
                host: "local".into(),
                restore_seconds: s,
                duration_seconds: s * 3.0,
                steps: vec![Step {
                    name: "apply+compare".into(),
                    seconds: s,
                }],
                checks: vec![],
                figures: BTreeMap::new(),
                tool_version: "clusterkit test".into(),
            };
            let text = serde_json::to_string(&rec).unwrap();
            let back: DrillRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(back, rec, "{text}");
        }
    }
}
