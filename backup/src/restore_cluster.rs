//! Restoring every etcd member of a cluster clusterkit installed, over SSH.
//!
//! Order (nothing is stopped until every member has a restored data dir ready):
//! 1. download and verify the backup completely on the operator's machine;
//! 2. on every member: upload the snapshot and run `etcdctl snapshot restore` into a scratch
//!    directory with the member's own name and peer URL, the full `--initial-cluster` and a new
//!    `--initial-cluster-token` (the dry run, on the real hosts);
//! 3. stop kube-apiserver (systemd unit or static-pod manifest) on the control-plane hosts and
//!    etcd on every member;
//! 4. on every member: move the data dir aside (kept) and the restored one into place;
//! 5. start etcd everywhere and wait for a healthy cluster with the right member count and a
//!    revision ≥ the snapshot's; then start the apiservers.
//!
//! Any failure in 3–5 rolls every touched member back to its old data dir and restarts etcd
//! and the apiservers. Limits: the snapshot is read into memory once for the uploads (the
//! Executor API takes bytes); written for the installer's layout (`etcd.service`,
//! `/var/lib/etcd`, peer URL `https://<address>:2380`); NOT yet exercised end to end against a
//! sandbox cluster.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clusterkit_core::exec::{Command, Executor, UploadOptions};

use crate::catalog;
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::etcd::{self, EtcdTarget};
use crate::manifest::Kind;
use crate::restore::fetch_verified;
use crate::store::Store;

/// The data dir of every member (as the installer's etcd phase sets it).
pub const DATA_DIR: &str = "/var/lib/etcd";

/// One etcd member to restore.
pub struct Member {
    /// Member name (the host's name).
    pub name: String,
    /// `https://<address>:2380`.
    pub peer_url: String,
    /// Whether kube-apiserver runs here and must be stopped around the restore.
    pub control_plane: bool,
    pub exec: Arc<dyn Executor>,
}

/// What happened on one member.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberReport {
    pub member: String,
    pub old_data_dir: String,
    pub result: String,
}

fn q(s: &str) -> String {
    clusterkit_core::exec::ssh::shell_quote(s)
}

fn exec_err(host: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Command {
        command: format!("on {host}"),
        status: "failed".into(),
        stderr: e.to_string(),
    }
}

async fn sh(m: &Member, line: String) -> Result<String, BackupError> {
    m.exec
        .run_checked(&Command::new(line).timeout(Duration::from_secs(600)))
        .await
        .map(|o| o.stdout_str())
        .map_err(|e| exec_err(&m.name, e))
}

const STOP_APISERVER: &str = "if systemctl cat kube-apiserver >/dev/null 2>&1; then systemctl stop kube-apiserver; fi; \
     if [ -f /etc/kubernetes/manifests/kube-apiserver.yaml ]; then \
       mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/kube-apiserver.yaml.restore-hold; fi";
const START_APISERVER: &str = "if [ -f /etc/kubernetes/kube-apiserver.yaml.restore-hold ]; then \
       mv /etc/kubernetes/kube-apiserver.yaml.restore-hold /etc/kubernetes/manifests/kube-apiserver.yaml; fi; \
     if systemctl cat kube-apiserver >/dev/null 2>&1; then systemctl start kube-apiserver; fi";

/// Restores backup `id` onto `members` (all of them). `target` reaches the restored cluster
/// for the health check. See the module doc for the steps.
pub async fn restore_cluster(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    members: &[Member],
    target: &EtcdTarget,
    now: DateTime<Utc>,
) -> Result<Vec<MemberReport>, BackupError> {
    let m = catalog::get_manifest(store, id).await?;
    if m.kind != Kind::Etcd {
        return Err(BackupError::RestoreRefused(format!(
            "{id} is a {} backup, not etcd",
            m.kind
        )));
    }
    let min_revision = m.etcd.as_ref().map(|e| e.revision).unwrap_or(0);
    // 1. Verify locally.
    let tmp = std::env::temp_dir().join(format!("clusterkit-restore-{id}.db"));
    fetch_verified(store, &m, decrypt, &tmp).await?;
    let snapshot = std::fs::read(&tmp).map_err(|e| BackupError::LocalIo {
        path: tmp.clone(),
        message: e.to_string(),
    });
    let _ = std::fs::remove_file(&tmp);
    let snapshot = snapshot?;

    // 2. Restore into scratch on every member (nothing running is touched).
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let scratch = format!("{DATA_DIR}-restore-{id}");
    let old = format!("{DATA_DIR}.before-{id}-{stamp}");
    let token = format!("clusterkit-restore-{id}");
    let initial: Vec<String> = members
        .iter()
        .map(|x| format!("{}={}", x.name, x.peer_url))
        .collect();
    let initial = initial.join(",");
    let prepared = futures::future::join_all(members.iter().map(|x| async {
        sh(x, format!("rm -rf {s} && mkdir -p {s} && chmod 700 {s}", s = q(&scratch))).await?;
        x.exec
            .upload(&snapshot, &format!("{scratch}/snapshot.db"), &UploadOptions { mode: 0o600, owner: None, create_parents: true })
            .await
            .map_err(|e| exec_err(&x.name, e))?;
        sh(x, format!(
            "ETCDCTL_API=3 etcdctl snapshot restore {s}/snapshot.db --data-dir {s}/data --name {n} \
             --initial-cluster {ic} --initial-cluster-token {t} --initial-advertise-peer-urls {p} && rm -f {s}/snapshot.db",
            s = q(&scratch), n = q(&x.name), ic = q(&initial), t = q(&token), p = q(&x.peer_url)
        )).await
    }))
    .await;
    drop(snapshot);
    if let Some(e) = prepared.into_iter().find_map(Result::err) {
        for x in members {
            let _ = sh(x, format!("rm -rf {}", q(&scratch))).await;
        }
        return Err(e);
    }

    // 3–5, with rollback.
    let swapped = std::sync::Mutex::new(Vec::<String>::new());
    let result = async {
        for x in members.iter().filter(|x| x.control_plane) {
            sh(x, STOP_APISERVER.to_string()).await?;
        }
        futures::future::try_join_all(members.iter().map(|x| sh(x, "systemctl stop etcd".into()))).await?;
        for x in members {
            sh(x, format!(
                "if [ -d {d} ]; then mv {d} {o}; fi && mv {s}/data {d} && chmod 700 {d} && rm -rf {s}",
                d = q(DATA_DIR), o = q(&old), s = q(&scratch)
            )).await?;
            swapped.lock().unwrap_or_else(|e| e.into_inner()).push(x.name.clone());
        }
        // Members wait for each other to form a quorum, so start them together.
        futures::future::try_join_all(members.iter().map(|x| sh(x, "systemctl start --no-block etcd".into()))).await?;
        wait_healthy(target, members.len(), min_revision).await?;
        for x in members.iter().filter(|x| x.control_plane) {
            sh(x, START_APISERVER.to_string()).await?;
        }
        Ok::<(), BackupError>(())
    }
    .await;
    match result {
        Ok(()) => Ok(members
            .iter()
            .map(|x| MemberReport {
                member: x.name.clone(),
                old_data_dir: old.clone(),
                result: "restored".into(),
            })
            .collect()),
        Err(e) => {
            tracing::error!(error = %e, "restore failed; rolling back every member");
            let swapped = swapped.into_inner().unwrap_or_else(|e| e.into_inner());
            for x in members {
                let _ = sh(x, "systemctl stop etcd".into()).await;
                if swapped.contains(&x.name) {
                    let _ = sh(
                        x,
                        format!("rm -rf {d} && mv {o} {d}", d = q(DATA_DIR), o = q(&old)),
                    )
                    .await;
                }
                let _ = sh(x, format!("rm -rf {}", q(&scratch))).await;
            }
            for x in members {
                let _ = sh(x, "systemctl start --no-block etcd".into()).await;
            }
            for x in members.iter().filter(|x| x.control_plane) {
                let _ = sh(x, START_APISERVER.to_string()).await;
            }
            Err(e)
        }
    }
}

/// Polls until every endpoint answers with a leader, `members` members, revision ≥ `min`.
async fn wait_healthy(target: &EtcdTarget, members: usize, min: i64) -> Result<(), BackupError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut ok = true;
        for ep in &target.endpoints {
            let probe = async {
                let mut c = etcd::connect(ep, target).await?;
                let st = c.status().await.map_err(|e| BackupError::Etcd {
                    endpoint: ep.clone(),
                    message: e.to_string(),
                })?;
                let list = c.member_list().await.map_err(|e| BackupError::Etcd {
                    endpoint: ep.clone(),
                    message: e.to_string(),
                })?;
                let rev = st.header().map(|h| h.revision()).unwrap_or(0);
                if st.leader() == 0 || list.members().len() != members || rev < min {
                    return Err(BackupError::Etcd {
                        endpoint: ep.clone(),
                        message: format!("leader {:x}, {} members (want {members}), revision {rev} (want ≥ {min})", st.leader(), list.members().len()),
                    });
                }
                Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    ok = false;
                    last = e.to_string();
                }
                Err(_) => {
                    ok = false;
                    last = format!("{ep}: timed out");
                }
            }
        }
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(BackupError::RestoreRefused(format!(
        "the restored cluster did not become healthy: {last}"
    )))
}
