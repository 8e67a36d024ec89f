//! Restoring every etcd member of a cluster clusterkit installed, over SSH.
//!
//! Order (nothing is stopped until every member has its restored data dir ready):
//! 1. download and verify the backup completely on the operator's machine;
//! 2. for every member, on the operator's machine: `etcdctl snapshot restore` into a local
//!    scratch directory with the member's own name and peer URL, the full `--initial-cluster`
//!    and a new `--initial-cluster-token` (this is the dry run), then pack that data dir
//!    (`tar -cS`: the preallocated 64 MiB WAL's zeros become holes; no compression — gzip cost
//!    ~40 CPU-s per GiB of DB and made the restore CPU-bound, bench/backup/RESULTS.md);
//! 3. on every member (still running): check the etcd unit and `tar` exist, send the pack in
//!    pieces of [`PIECE`] appended to one file (its size checked), and unpack it into
//!    `/var/lib/etcd-restore-<id>` (same filesystem as the data dir);
//! 4. stop kube-apiserver (systemd unit or static-pod manifest) on the control-plane hosts and
//!    etcd on every member;
//! 5. on every member: move the data dir aside (kept as `/var/lib/etcd.before-<id>-<time>`),
//!    give the restored one the old one's owner and move it into place;
//! 6. start etcd everywhere at once (members wait for each other's quorum) and wait for a
//!    healthy cluster: every endpoint answers with a leader, the member count, every member
//!    started, distinct member ids and a revision ≥ the snapshot's; a member whose etcd unit
//!    keeps exiting meanwhile (systemd had to restart it twice) fails the restore early
//!    rather than at the timeout; then start the apiservers.
//!
//! Any failure in 4–6 rolls every touched member back: etcd stopped everywhere, the restored
//! data dir removed and the old one moved back, etcd and the apiservers started again; the
//! error says whether the old cluster answered again afterwards.
//!
//! Why the restore runs on the operator's machine: Debian's `etcd-server` package (what the
//! installer puts on the members) has no `etcdctl`, and etcd 3.4 has no `etcdutl`; the
//! operator's machine needs `etcdctl` anyway for a local restore. The member-specific data dirs
//! are therefore built locally and shipped.
//!
//! Limits: memory holds one piece of a pack at a time (members are shipped one after another),
//! but the local scratch directory needs room for the snapshot plus every member's pack (about
//! 4 × the DB size for 3 members) and each member room for 2 × the DB size; the packs go
//! uncompressed, which suits the cluster's own network more than a slow link; written for the
//! installer's layout (`etcd.service`, `/var/lib/etcd`, peer URL `https://<address>:2380`); the
//! members need `tar` (essential in Debian).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clusterkit_core::exec::{Command, Executor};
use clusterkit_core::layout::NodeLayout;

use crate::catalog;
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::etcd::{self, EtcdTarget};
use crate::manifest::Kind;
use crate::restore::fetch_verified;
use crate::store::Store;

/// Where the members' data dir, units and the API server's manifest are.
const NODE: NodeLayout = NodeLayout::DEFAULT;
/// The etcd unit of every member.
const ETCD: &str = NODE.units.etcd;

/// How long the restored cluster may take to become healthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(240);

/// How much of a pack one SSH command carries (read into memory, appended on the member).
pub const PIECE: usize = 32 << 20;

/// How long, after a rollback, the old cluster may take to answer again before the error
/// says it did not.
const ROLLBACK_WAIT: Duration = Duration::from_secs(120);

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

/// Tunables of [`restore_cluster_with`].
#[derive(Debug, Clone)]
pub struct ClusterRestoreOptions {
    /// The local `etcdctl` (3.4 restores with etcdctl).
    pub etcdctl: PathBuf,
    /// See [`HEALTH_TIMEOUT`].
    pub health_timeout: Duration,
}

impl Default for ClusterRestoreOptions {
    /// `etcdctl` from `$CLUSTERKIT_ETCDCTL` (the variable `restore etcd --etcdctl` reads),
    /// else from `PATH`.
    fn default() -> Self {
        Self {
            etcdctl: std::env::var_os("CLUSTERKIT_ETCDCTL")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("etcdctl")),
            health_timeout: HEALTH_TIMEOUT,
        }
    }
}

/// What happened on one member.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberReport {
    pub member: String,
    pub old_data_dir: String,
    /// `restored (member id …)`.
    pub result: String,
    /// The member's id in the restored cluster (hex).
    pub member_id: String,
}

fn q(s: &str) -> String {
    clusterkit_core::exec::ssh::shell_quote(s)
}

fn exec_err(host: &str, what: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Command {
        command: format!("{what} on {host}"),
        status: "failed".into(),
        stderr: e.to_string(),
    }
}

async fn sh(m: &Member, what: &str, line: String) -> Result<String, BackupError> {
    m.exec
        .run_checked(&Command::new(line).timeout(Duration::from_secs(600)))
        .await
        .map(|o| o.stdout_str())
        .map_err(|e| exec_err(&m.name, what, e))
}

fn local(path: &Path, e: impl ToString) -> BackupError {
    BackupError::LocalIo {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Stops kube-apiserver: its unit (systemd control plane), or its static pod by moving the
/// manifest out of the kubelet's sight.
fn stop_apiserver() -> String {
    let (unit, manifest, held) = apiserver_files();
    format!(
        "if systemctl cat {unit} >/dev/null 2>&1; then systemctl stop {unit}; fi; \
         if [ -f {manifest} ]; then mv {manifest} {held}; fi"
    )
}

/// Undoes [`stop_apiserver`].
fn start_apiserver() -> String {
    let (unit, manifest, held) = apiserver_files();
    format!(
        "if [ -f {held} ]; then mv {held} {manifest}; fi; \
         if systemctl cat {unit} >/dev/null 2>&1; then systemctl start {unit}; fi"
    )
}

/// kube-apiserver's unit, static pod manifest, and where the manifest waits during a restore.
fn apiserver_files() -> (&'static str, String, String) {
    let unit = NODE.units.kube_apiserver;
    let held = NODE.kubeconfig(&format!("{unit}.yaml.restore-hold"));
    (unit, NODE.manifest(unit), held)
}

/// Starts the etcd unit without waiting (members wait for each other's quorum).
fn start_etcd() -> String {
    format!("systemctl reset-failed {ETCD} >/dev/null 2>&1; systemctl start --no-block {ETCD}")
}

/// A local scratch directory (0700) removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(id: &str) -> Result<Self, BackupError> {
        let p = std::env::temp_dir().join(format!(
            "clusterkit-restore-{id}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).map_err(|e| local(&p, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| local(&p, e))?;
        }
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_local(program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), BackupError> {
    let out = tokio::process::Command::new(program)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .await
        .map_err(|e| local(program, e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = clusterkit_core::exec::tail(&stderr).to_string();
    Err(BackupError::Command {
        command: format!(
            "{} {}",
            program.display(),
            args.first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        status: out.status.to_string(),
        stderr: tail,
    })
}

/// Restores backup `id` onto `members` (all of them) with the default options.
pub async fn restore_cluster(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    members: &[Member],
    target: &EtcdTarget,
    now: DateTime<Utc>,
) -> Result<Vec<MemberReport>, BackupError> {
    restore_cluster_with(
        store,
        id,
        decrypt,
        members,
        target,
        now,
        &ClusterRestoreOptions::default(),
    )
    .await
}

/// Restores backup `id` onto `members` (all of them). `target` reaches the restored cluster
/// for the health check. See the module doc for the steps.
pub async fn restore_cluster_with(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    members: &[Member],
    target: &EtcdTarget,
    now: DateTime<Utc>,
    opts: &ClusterRestoreOptions,
) -> Result<Vec<MemberReport>, BackupError> {
    if members.is_empty() {
        return Err(BackupError::Invalid("no etcd members to restore".into()));
    }
    let m = catalog::get_manifest(store, id).await?;
    if m.kind != Kind::Etcd {
        return Err(BackupError::RestoreRefused(format!(
            "{id} is a {} backup, not etcd",
            m.kind
        )));
    }
    let min_revision = m.etcd.as_ref().map(|e| e.revision).unwrap_or(0);

    // 1. Verify locally.
    let work = Scratch::new(id)?;
    let snapshot = work.0.join("snapshot.db");
    fetch_verified(store, &m, decrypt, &snapshot).await?;

    // 2. One restored data dir per member, built and packed locally (the dry run).
    let token = format!("clusterkit-restore-{id}");
    let initial: Vec<String> = members
        .iter()
        .map(|x| format!("{}={}", x.name, x.peer_url))
        .collect();
    let initial = initial.join(",");
    let mut packs = Vec::new();
    for (i, x) in members.iter().enumerate() {
        let dir = work.0.join(format!("member-{i}"));
        let data = dir.join("data");
        run_local(
            &opts.etcdctl,
            &[
                "snapshot".as_ref(),
                "restore".as_ref(),
                snapshot.as_os_str(),
                "--data-dir".as_ref(),
                data.as_os_str(),
                "--name".as_ref(),
                x.name.as_ref(),
                "--initial-cluster".as_ref(),
                initial.as_ref(),
                "--initial-cluster-token".as_ref(),
                token.as_ref(),
                "--initial-advertise-peer-urls".as_ref(),
                x.peer_url.as_ref(),
            ],
        )
        .await
        .map_err(|e| {
            BackupError::RestoreRefused(format!("the local dry run for {} failed: {e}", x.name))
        })?;
        let pack = work.0.join(format!("member-{i}.tar"));
        run_local(
            Path::new("tar"),
            &[
                "-cSf".as_ref(),
                pack.as_os_str(),
                "-C".as_ref(),
                dir.as_os_str(),
                "data".as_ref(),
            ],
        )
        .await?;
        std::fs::remove_dir_all(&dir).map_err(|e| local(&dir, e))?;
        packs.push(pack);
    }
    let _ = std::fs::remove_file(&snapshot);

    // 3. Ship and unpack on every member; nothing running is touched yet.
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let data_dir = NODE.etcd_data_dir;
    let scratch = format!("{data_dir}-restore-{id}");
    let old = format!("{data_dir}.before-{id}-{stamp}");
    let mut shipped = Ok(());
    for (x, pack) in members.iter().zip(&packs) {
        shipped = ship(x, pack, &scratch).await;
        if shipped.is_err() {
            break;
        }
    }
    drop(work);
    if let Err(e) = shipped {
        for x in members {
            let _ = sh(x, "cleanup", format!("rm -rf {}", q(&scratch))).await;
        }
        return Err(e);
    }

    // 4–6, with rollback.
    let result = async {
        for x in members.iter().filter(|x| x.control_plane) {
            sh(x, "stopping kube-apiserver", stop_apiserver()).await?;
        }
        futures::future::try_join_all(
            members
                .iter()
                .map(|x| sh(x, "stopping etcd", format!("systemctl stop {ETCD}"))),
        )
        .await?;
        for x in members {
            sh(
                x,
                "swapping the data dir",
                format!(
                    "if [ -d {d} ]; then chown -R --reference={d} {s}/data && mv {d} {o}; fi && \
                     mv {s}/data {d} && chmod 700 {d} && rm -rf {s}",
                    d = q(data_dir),
                    o = q(&old),
                    s = q(&scratch)
                ),
            )
            .await?;
        }
        // Members wait for each other to form a quorum, so start them together. Restart
        // counters from now on tell a member whose etcd exits.
        futures::future::try_join_all(members.iter().map(|x| sh(x, "starting etcd", start_etcd())))
            .await?;
        let ids = wait_healthy(target, members, min_revision, opts.health_timeout).await?;
        for x in members.iter().filter(|x| x.control_plane) {
            sh(x, "starting kube-apiserver", start_apiserver()).await?;
        }
        Ok::<Vec<(String, u64)>, BackupError>(ids)
    }
    .await;
    match result {
        Ok(ids) => Ok(members
            .iter()
            .map(|x| {
                let id = ids
                    .iter()
                    .find(|(n, _)| n == &x.name)
                    .map(|(_, i)| format!("{i:x}"))
                    .unwrap_or_default();
                MemberReport {
                    member: x.name.clone(),
                    old_data_dir: old.clone(),
                    result: format!("restored (member id {id})"),
                    member_id: id,
                }
            })
            .collect()),
        Err(e) => {
            tracing::error!(error = %e, "restore failed; rolling back every member");
            let mut problems = Vec::new();
            for x in members {
                if let Err(e) = sh(
                    x,
                    "rollback: stopping etcd",
                    format!("systemctl stop {ETCD}"),
                )
                .await
                {
                    problems.push(e.to_string());
                }
                // The aside name is unique to this run: where it exists, this run moved it.
                let line = format!(
                    "if [ -d {o} ]; then rm -rf {d} && mv {o} {d}; fi",
                    d = q(data_dir),
                    o = q(&old)
                );
                if let Err(e) = sh(x, "rollback: moving the old data dir back", line).await {
                    problems.push(e.to_string());
                }
                let _ = sh(x, "rollback: cleanup", format!("rm -rf {}", q(&scratch))).await;
            }
            for x in members {
                if let Err(e) = sh(x, "rollback: starting etcd", start_etcd()).await {
                    problems.push(e.to_string());
                }
            }
            for x in members.iter().filter(|x| x.control_plane) {
                if let Err(e) = sh(x, "rollback: starting kube-apiserver", start_apiserver()).await
                {
                    problems.push(e.to_string());
                }
            }
            let after = match wait_any_leader(target, ROLLBACK_WAIT).await {
                Ok(ep) => format!("the old cluster answers again (leader seen at {ep})"),
                Err(last) => format!(
                    "the old cluster did not answer with a leader within {}s: {last}",
                    ROLLBACK_WAIT.as_secs()
                ),
            };
            let problems = if problems.is_empty() {
                String::new()
            } else {
                format!("; rollback problems: {}", problems.join("; "))
            };
            Err(BackupError::RestoreRefused(format!(
                "{e}; every member was rolled back to its old data dir; {after}{problems}"
            )))
        }
    }
}

/// Checks the member can take the restore, uploads its pack and unpacks it into `scratch`.
async fn ship(x: &Member, pack: &Path, scratch: &str) -> Result<(), BackupError> {
    sh(
        x,
        &format!("checking {ETCD}.service and tar"),
        format!(
            "systemctl cat {ETCD} >/dev/null 2>&1 || {{ echo 'no {ETCD}.service (run install --phase etcd)' >&2; exit 1; }}; \
             command -v tar >/dev/null || {{ echo 'tar is needed' >&2; exit 1; }}"
        ),
    )
    .await?;
    sh(
        x,
        "preparing the scratch dir",
        format!(
            "rm -rf {s} && mkdir -p {s} && chmod 700 {s}",
            s = q(scratch)
        ),
    )
    .await?;
    // Pieces appended to one file: memory holds one piece, not the whole pack. `run` never
    // re-runs a command whose connection was lost, so a piece cannot be appended twice; the
    // size check before unpacking catches anything else.
    let remote = format!("{scratch}/data.tar");
    let mut file = tokio::fs::File::open(pack)
        .await
        .map_err(|e| local(pack, e))?;
    let mut sent = 0u64;
    loop {
        let piece = read_piece(&mut file, PIECE)
            .await
            .map_err(|e| local(pack, e))?;
        if piece.is_empty() {
            break;
        }
        sent += piece.len() as u64;
        x.exec
            .run_checked(
                &Command::new(format!("umask 077 && cat >> {}", q(&remote)))
                    .stdin(piece)
                    .timeout(Duration::from_secs(600)),
            )
            .await
            .map_err(|e| exec_err(&x.name, "uploading the restored data dir", e))?;
    }
    sh(
        x,
        "unpacking the restored data dir",
        format!(
            "test \"$(stat -c %s {r})\" = {sent} || {{ echo \"{r}: $(stat -c %s {r}) bytes, {sent} sent\" >&2; exit 1; }}; \
             tar -xf {r} -C {s} && rm -f {r} && test -d {s}/data/member/wal",
            r = q(&remote),
            s = q(scratch)
        ),
    )
    .await?;
    Ok(())
}

/// Reads up to `size` bytes (fewer only at the end of the file).
async fn read_piece(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut piece = Vec::with_capacity(size);
    while piece.len() < size {
        let n = (&mut *file)
            .take((size - piece.len()) as u64)
            .read_to_end(&mut piece)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(piece)
}

/// `NRestarts ActiveState Result` of the etcd unit.
async fn unit_state(x: &Member) -> Result<(u64, String, String), BackupError> {
    let out = sh(
        x,
        &format!("reading {ETCD}.service's state"),
        format!("systemctl show {ETCD} -p NRestarts -p ActiveState -p Result"),
    )
    .await?;
    let mut restarts = 0;
    let (mut active, mut result) = (String::new(), String::new());
    for line in out.lines() {
        match line.split_once('=') {
            Some(("NRestarts", v)) => restarts = v.trim().parse().unwrap_or(0),
            Some(("ActiveState", v)) => active = v.trim().to_string(),
            Some(("Result", v)) => result = v.trim().to_string(),
            _ => {}
        }
    }
    Ok((restarts, active, result))
}

/// Polls until every endpoint answers with a leader, `members.len()` started members with
/// distinct ids and revision ≥ `min`; fails at once when a member's etcd unit exits. Returns
/// the members' names and ids.
async fn wait_healthy(
    target: &EtcdTarget,
    members: &[Member],
    min: i64,
    timeout: Duration,
) -> Result<Vec<(String, u64)>, BackupError> {
    // Restart counters now; a failed read (SSH hiccup on a loaded host) only disables the fast
    // failure for that member, the health check still decides.
    let mut base = Vec::new();
    for x in members {
        base.push(unit_state(x).await.ok().map(|s| s.0));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        for (x, before) in members.iter().zip(&base) {
            let Ok((restarts, active, result)) = unit_state(x).await else {
                continue;
            };
            // One exit may be transient (systemd restarts etcd after 5 s); a unit that had to
            // be restarted twice, or gave up, keeps failing.
            let restarted_twice = before.is_some_and(|b| restarts >= b + 2);
            if restarted_twice || active == "failed" {
                let log = x
                    .exec
                    .run(&Command::new(format!(
                        "journalctl -u {ETCD} -n 15 --no-pager -o cat 2>&1 || true"
                    )))
                    .await
                    .map(|o| o.stdout_str())
                    .unwrap_or_default();
                return Err(BackupError::Command {
                    command: format!("etcd on {}", x.name),
                    status: format!(
                        "keeps exiting after the restore ({active}, last result {result}, {} restarts)",
                        restarts.saturating_sub(before.unwrap_or(0))
                    ),
                    stderr: clusterkit_core::exec::tail(&log).to_string(),
                });
            }
        }
        let last = match check_once(target, members.len(), min).await {
            Ok(ids) => return Ok(ids),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BackupError::RestoreRefused(format!(
                "the restored cluster did not become healthy within {}s: {last}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One pass over every endpoint; `Err` says what is not right yet.
async fn check_once(
    target: &EtcdTarget,
    members: usize,
    min: i64,
) -> Result<Vec<(String, u64)>, String> {
    let mut ids = Vec::new();
    for ep in &target.endpoints {
        let probe = async {
            let mut c = etcd::connect(ep, target).await.map_err(|e| e.to_string())?;
            let st = c.status().await.map_err(|e| format!("{ep}: {e}"))?;
            let list = c.member_list().await.map_err(|e| format!("{ep}: {e}"))?;
            let rev = st.header().map(|h| h.revision()).unwrap_or(0);
            let started: Vec<(String, u64)> = list
                .members()
                .iter()
                .filter(|m| !m.name().is_empty())
                .map(|m| (m.name().to_string(), m.id()))
                .collect();
            if st.leader() == 0 || list.members().len() != members || started.len() != members {
                return Err(format!(
                    "{ep}: leader {:x}, {} members of which {} started (want {members})",
                    st.leader(),
                    list.members().len(),
                    started.len()
                ));
            }
            if rev < min {
                return Err(format!("{ep}: revision {rev} < the snapshot's {min}"));
            }
            Ok(started)
        };
        match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(started)) => ids = started,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(format!("{ep}: timed out")),
        }
    }
    let mut distinct: Vec<u64> = ids.iter().map(|(_, i)| *i).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != ids.len() {
        return Err(format!("member ids are not distinct: {ids:?}"));
    }
    Ok(ids)
}

/// Polls until some endpoint reports a leader; returns that endpoint, or the last problem.
async fn wait_any_leader(target: &EtcdTarget, timeout: Duration) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no endpoint answered");
    loop {
        for ep in &target.endpoints {
            let probe = async {
                let mut c = etcd::connect(ep, target).await.map_err(|e| e.to_string())?;
                let st = c.status().await.map_err(|e| e.to_string())?;
                if st.leader() == 0 {
                    return Err("no leader".to_string());
                }
                Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok(())) => return Ok(ep.clone()),
                Ok(Err(e)) => last = format!("{ep}: {e}"),
                Err(_) => last = format!("{ep}: timed out"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
