//! etcd snapshots: pick a healthy member (a follower when there is one) over TLS, stream
//! `Maintenance::snapshot` through the write pipeline into the store, check etcd's integrity
//! hash at the end of the stream, and write the manifest last.
//!
//! Just before the snapshot, the backup writes a marker key ([`manifest::MARKER_KEY`]: this
//! backup's id and time) through the member it snapshots and counts every key as of that write's
//! revision; the manifest records the marker, that revision and the count, so a restore drill
//! can prove the restored data is this backup's, complete.
//!
//! Limits: etcd 3.4 sends no header with snapshot chunks, so the snapshot's own revision is only
//! bracketed: ≥ the marker's and ≤ the revision read right after the stream (equal when nothing
//! was written meanwhile). The marker write moves the cluster's revision by one per backup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::catalog;
use crate::clock::Clock;
use crate::error::BackupError;
use crate::lock;
use crate::manifest::{self, EtcdInfo, Kind, Manifest, Marker};
use crate::pipeline::WriteSettings;
use crate::store::Store;

/// Client certificate files for etcd's TLS.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to reach the etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdTarget {
    /// `https://host:2379`, one per member.
    pub endpoints: Vec<String>,
    /// Required for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// Per-request timeout for everything but the snapshot stream itself.
    pub timeout: Duration,
}

/// The member chosen for a snapshot.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub endpoint: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub revision: i64,
    pub is_leader: bool,
    pub version: String,
    pub member_count: usize,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, BackupError> {
    std::fs::read(path).map_err(|e| BackupError::LocalIo {
        path: path.clone(),
        source: e,
    })
}

/// Why one look at an etcd member failed, or what is not right with it yet.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The member could not be connected to.
    #[error("{0}")]
    Connect(#[source] Box<BackupError>),

    /// A call did not answer in time.
    #[error("{call} timed out after {}s", .after.as_secs())]
    Timeout { call: &'static str, after: Duration },

    /// A call failed.
    #[error("{call}: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: etcd_client::Error,
    },

    /// The member answered, but is not (yet) what is needed: no leader, errors it reports,
    /// a member count or revision short of the expected one.
    #[error("{0}")]
    NotReady(String),
}

/// One etcd call, named `call` in errors, given `after` to answer.
pub(crate) async fn call<T>(
    call: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| ProbeError::Timeout { call, after })?
        .map_err(|source| ProbeError::Call { call, source })
}

/// [`connect`] for probes.
pub(crate) async fn connect_probe(
    endpoint: &str,
    target: &EtcdTarget,
) -> Result<Client, ProbeError> {
    connect(endpoint, target)
        .await
        .map_err(|e| ProbeError::Connect(Box::new(e)))
}

/// Connects to one endpoint (TLS when files are given).
pub async fn connect(endpoint: &str, target: &EtcdTarget) -> Result<Client, BackupError> {
    let mut opts = ConnectOptions::new().with_connect_timeout(target.timeout);
    if let Some(tls) = &target.tls {
        let ca = read(&tls.ca)?;
        let cert = read(&tls.cert)?;
        let key = read(&tls.key)?;
        opts = opts.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key)),
        );
    } else if endpoint.starts_with("https://") {
        return Err(BackupError::Invalid(format!(
            "{endpoint} uses https: give --cacert, --cert and --key"
        )));
    }
    Client::connect([endpoint], Some(opts))
        .await
        .map_err(|source| BackupError::Etcd {
            endpoint: endpoint.to_string(),
            source: ProbeError::Call {
                call: "connect",
                source,
            },
        })
}

async fn probe(endpoint: &str, target: &EtcdTarget) -> Result<(Client, Chosen), ProbeError> {
    let mut client = connect_probe(endpoint, target).await?;
    let status = call("status", target.timeout, client.status()).await?;
    if !status.errors().is_empty() {
        return Err(ProbeError::NotReady(format!(
            "member reports errors: {}",
            status.errors().join("; ")
        )));
    }
    let header = status
        .header()
        .ok_or_else(|| ProbeError::NotReady("status without header".into()))?;
    let member_id = header.member_id();
    let cluster_id = header.cluster_id();
    let revision = header.revision();
    if status.leader() == 0 {
        return Err(ProbeError::NotReady("member has no leader".into()));
    }
    let members = call("member list", target.timeout, client.member_list()).await?;
    let name = members
        .members()
        .iter()
        .find(|m| m.id() == member_id)
        .map(|m| m.name().to_string())
        .unwrap_or_default();
    Ok((
        client,
        Chosen {
            endpoint: endpoint.to_string(),
            member_id,
            cluster_id,
            name,
            revision,
            is_leader: status.leader() == member_id,
            version: status.version().to_string(),
            member_count: members.members().len(),
        },
    ))
}

/// Asks every endpoint for its status and picks a healthy follower, else the healthy leader.
pub async fn pick_member(target: &EtcdTarget) -> Result<(Client, Chosen), BackupError> {
    if target.endpoints.is_empty() {
        return Err(BackupError::Invalid("no etcd endpoints given".into()));
    }
    let probes = futures::future::join_all(target.endpoints.iter().map(|e| probe(e, target))).await;
    let mut failures = Vec::new();
    let mut leader = None;
    for (endpoint, result) in target.endpoints.iter().zip(probes) {
        match result {
            Ok((client, chosen)) if !chosen.is_leader => {
                tracing::info!(endpoint, member = %chosen.name, "using a follower");
                return Ok((client, chosen));
            }
            Ok(found) => leader = leader.or(Some(found)),
            Err(e) => {
                tracing::warn!(endpoint, error = %e, "etcd member not usable");
                failures.push(format!("{endpoint}: {e}"));
            }
        }
    }
    leader.ok_or_else(|| BackupError::NoHealthyMember {
        endpoints: target.endpoints.join(","),
        details: failures.join("; "),
    })
}

/// Reads the snapshot stream of `endpoint` on a thread of its own, with its own connection
/// and a current-thread runtime, and hands the chunks over through a bounded channel. Why:
/// on the shared runtime the S3 uploads (HTTP, the SigV4 hash of every part) ran on the same
/// workers as the etcd connection's TLS and HTTP/2, and the stream slowed down (bench/backup:
/// the encoder waited 6–9 s for it, while a client doing nothing else drains it in 7.4 s).
/// The thread ends at the end of the stream, on an error (sent as the last item), or when the
/// receiver is dropped.
fn spawn_snapshot_reader(
    endpoint: String,
    target: EtcdTarget,
) -> tokio::sync::mpsc::Receiver<Result<Bytes, BackupError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let etcd_err = |endpoint: &str, call: &'static str, source| BackupError::Etcd {
        endpoint: endpoint.to_string(),
        source: ProbeError::Call { call, source },
    };
    let spawned = std::thread::Builder::new()
        .name("etcd-snapshot".into())
        .spawn({
            let tx = tx.clone();
            move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(BackupError::Pipeline(format!(
                            "cannot start the snapshot reader: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut client = match connect(&endpoint, &target).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let mut stream = match client.snapshot().await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(etcd_err(&endpoint, "snapshot", e))).await;
                            return;
                        }
                    };
                    loop {
                        let item = match stream.message().await {
                            Ok(Some(msg)) => Ok(Bytes::copy_from_slice(msg.blob())),
                            Ok(None) => return,
                            Err(e) => Err(etcd_err(&endpoint, "snapshot stream", e)),
                        };
                        let last = item.is_err();
                        // A send error means the pipeline stopped: nobody needs the rest.
                        if tx.send(item).await.is_err() || last {
                            return;
                        }
                    }
                });
            }
        });
    if let Err(e) = spawned {
        let _ = tx.try_send(Err(BackupError::Pipeline(format!(
            "cannot start the snapshot reader thread: {e}"
        ))));
    }
    rx
}

/// Writes the backup marker ([`manifest::MARKER_KEY`]) through `client` and counts every key
/// as of that write's revision. Returns the marker (with its revision) and the count.
pub async fn write_marker(
    client: &mut Client,
    endpoint: &str,
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
    timeout: Duration,
) -> Result<(Marker, i64), BackupError> {
    let err = |source| BackupError::Etcd {
        endpoint: endpoint.to_string(),
        source,
    };
    let mut marker = Marker {
        key: manifest::MARKER_KEY.to_string(),
        id: id.to_string(),
        at,
        revision: 0,
    };
    let put = call(
        "writing the backup marker",
        timeout,
        client.put(marker.key.clone(), marker.value(), None),
    )
    .await
    .map_err(err)?;
    marker.revision = put.header().map(|h| h.revision()).ok_or_else(|| {
        err(ProbeError::NotReady(
            "the marker write's answer has no header".into(),
        ))
    })?;
    let count = count_keys(client, marker.revision, timeout)
        .await
        .map_err(err)?;
    Ok((marker, count))
}

/// Every key in etcd as of `revision` (0: now).
pub async fn count_keys(
    client: &mut Client,
    revision: i64,
    timeout: Duration,
) -> Result<i64, ProbeError> {
    let opts = GetOptions::new()
        .with_all_keys()
        .with_count_only()
        .with_revision(revision);
    let got = call("counting keys", timeout, client.get(vec![0u8], Some(opts))).await?;
    Ok(got.count())
}

/// Options of one etcd backup.
#[derive(Debug, Clone)]
pub struct EtcdBackupOptions {
    /// Cluster name recorded in the manifest.
    pub cluster: String,
    pub write: WriteSettings,
    /// How long the store lock lives without renewal.
    pub lock_ttl: chrono::Duration,
}

/// Takes one etcd backup: lock, clean up interrupted runs, snapshot, manifest, and the
/// outcome in the store's status (what the monitor reads). Returns the manifest of the new
/// backup.
pub async fn backup_etcd(
    store: Arc<dyn Store>,
    target: &EtcdTarget,
    opts: &EtcdBackupOptions,
    clock: Arc<dyn Clock>,
) -> Result<Manifest, BackupError> {
    let guard = lock::acquire_backup(&store, opts.lock_ttl, &clock).await?;
    let started = std::time::Instant::now();
    let result = backup_etcd_locked(store.as_ref(), target, opts, clock.as_ref()).await;
    crate::status::note_backup(store.as_ref(), Kind::Etcd, clock.now(), started, &result).await;
    guard.release_or_expire().await;
    result
}

/// [`backup_etcd`] for a caller that already holds the store's backup lock.
pub async fn backup_etcd_locked(
    store: &dyn Store,
    target: &EtcdTarget,
    opts: &EtcdBackupOptions,
    clock: &dyn Clock,
) -> Result<Manifest, BackupError> {
    let cleaned = catalog::cleanup_incomplete(store).await?;
    if !cleaned.is_empty() {
        tracing::info!(count = cleaned.len(), "cleaned up interrupted backups");
    }
    let (mut client, chosen) = pick_member(target).await?;
    let started_at = clock.now();
    let id = manifest::new_id(Kind::Etcd, started_at);
    // Through the member the snapshot comes from: its answer comes after it applied the write,
    // so the snapshot that follows holds the marker.
    let (marker, key_count) = write_marker(
        &mut client,
        &chosen.endpoint,
        &id,
        started_at,
        target.timeout,
    )
    .await?;
    tracing::info!(id, endpoint = %chosen.endpoint, member = %chosen.name, revision = marker.revision, key_count, "snapshot starting");
    let rx = spawn_snapshot_reader(chosen.endpoint.clone(), target.clone());
    let source = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut write = opts.write.clone();
    write.etcd_integrity = true;
    let staged = catalog::stage(store, Kind::Etcd, &id, started_at, source, write).await?;
    let integrity = staged.written.integrity_sha256.clone().unwrap_or_default();
    // Brackets the snapshot's own revision; a failure here only loses that bracket.
    let revision_after = match tokio::time::timeout(target.timeout, client.status()).await {
        Ok(Ok(s)) => s.header().map(|h| h.revision()),
        _ => None,
    };
    let info = EtcdInfo {
        cluster_id: format!("{:x}", chosen.cluster_id),
        member_id: format!("{:x}", chosen.member_id),
        member_name: chosen.name,
        endpoint: chosen.endpoint,
        revision: marker.revision,
        revision_after,
        key_count: Some(key_count),
        marker: Some(marker),
        was_leader: chosen.is_leader,
        member_count: chosen.member_count,
        integrity_sha256: integrity,
        etcd_version: chosen.version,
    };
    catalog::commit(
        store,
        staged,
        &opts.cluster,
        clock.now(),
        Some(info),
        BTreeMap::new(),
    )
    .await
}
