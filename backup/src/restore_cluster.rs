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
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clusterkit_core::exec::{Command, Executor};

use crate::catalog;
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::etcd::{self, EtcdTarget};
use crate::manifest::Kind;
use crate::restore::{fetch_verified, snapshot_restore, SnapshotRestore};
use crate::store::Store;

/// The data dir of every member (as the installer's etcd phase sets it).
pub const DATA_DIR: &str = "/var/lib/etcd";

/// How long the restored cluster may take to become healthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(240);

/// How much of a pack one SSH command carries (read into memory, appended on the member).
pub const PIECE: usize = 32 << 20;

/// What an etcd 3.4 restore means for revisions (said in the report and the CLI's output).
pub const REVISIONS_34: &str = "not bumped (etcd 3.4 has no --bump-revision): the revision after \
     the restore equals the snapshot's, so restart every watcher (kube-apiserver, controllers, \
     kubelets) to drop watches on revisions that will be reused";

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

/// How long one step of a restore took, on one member or for the whole cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTime {
    pub step: String,
    /// The member, for per-member steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    pub seconds: f64,
}

/// What a cluster restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterRestoreReport {
    pub id: String,
    pub members: Vec<MemberReport>,
    /// Where the time went, in the order the steps ended.
    pub steps: Vec<StepTime>,
    /// The whole restore, until the cluster (and the API servers, when waited for) answered.
    pub seconds: f64,
    /// How revisions were treated (etcd 3.4 cannot bump them: watchers must be restarted).
    pub revisions: String,
}

/// Collects [`StepTime`]s from steps that may run at once.
#[derive(Clone, Default)]
struct Steps(Arc<std::sync::Mutex<Vec<StepTime>>>);

impl Steps {
    fn add(&self, step: &str, member: Option<&str>, since: Instant) {
        let seconds = since.elapsed().as_secs_f64();
        tracing::info!(
            step,
            member = member.unwrap_or("-"),
            seconds,
            "restore step"
        );
        if let Ok(mut v) = self.0.lock() {
            v.push(StepTime {
                step: step.to_string(),
                member: member.map(str::to_string),
                seconds,
            });
        }
    }

    fn take(&self) -> Vec<StepTime> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
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

const STOP_APISERVER: &str = "if systemctl cat kube-apiserver >/dev/null 2>&1; then systemctl stop kube-apiserver; fi; \
     if [ -f /etc/kubernetes/manifests/kube-apiserver.yaml ]; then \
       mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/kube-apiserver.yaml.restore-hold; fi";
const START_APISERVER: &str = "if [ -f /etc/kubernetes/kube-apiserver.yaml.restore-hold ]; then \
       mv /etc/kubernetes/kube-apiserver.yaml.restore-hold /etc/kubernetes/manifests/kube-apiserver.yaml; fi; \
     if systemctl cat kube-apiserver >/dev/null 2>&1; then systemctl start kube-apiserver; fi";

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
) -> Result<ClusterRestoreReport, BackupError> {
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
) -> Result<ClusterRestoreReport, BackupError> {
    let started = Instant::now();
    let steps = Steps::default();
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
    let t = Instant::now();
    fetch_verified(store, &m, decrypt, &snapshot).await?;
    steps.add("download+verify", None, t);

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
        let t = Instant::now();
        snapshot_restore(&SnapshotRestore {
            etcdctl: &opts.etcdctl,
            snapshot: &snapshot,
            data_dir: &data,
            name: &x.name,
            peer_urls: &x.peer_url,
            initial_cluster: &initial,
            token: &token,
        })
        .await
        .map_err(|e| {
            BackupError::RestoreRefused(format!("the local dry run for {} failed: {e}", x.name))
        })?;
        steps.add("snapshot restore", Some(&x.name), t);
        let t = Instant::now();
        let pack = work.0.join(format!("member-{i}.tar"));
        pack_data_dir(&dir, &pack).await?;
        steps.add("pack", Some(&x.name), t);
        std::fs::remove_dir_all(&dir).map_err(|e| local(&dir, e))?;
        packs.push(pack);
    }
    let _ = std::fs::remove_file(&snapshot);

    // 3. Ship and unpack on every member; nothing running is touched yet.
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let scratch = format!("{DATA_DIR}-restore-{id}");
    let old = format!("{DATA_DIR}.before-{id}-{stamp}");
    let mut shipped = Ok(());
    for (x, pack) in members.iter().zip(&packs) {
        let t = Instant::now();
        shipped = ship(x, pack, &scratch).await;
        steps.add("ship+unpack", Some(&x.name), t);
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
        let t = Instant::now();
        for x in members.iter().filter(|x| x.control_plane) {
            sh(x, "stopping kube-apiserver", STOP_APISERVER.to_string()).await?;
        }
        steps.add("stop kube-apiserver", None, t);
        let t = Instant::now();
        futures::future::try_join_all(
            members
                .iter()
                .map(|x| sh(x, "stopping etcd", "systemctl stop etcd".into())),
        )
        .await?;
        steps.add("stop etcd", None, t);
        for x in members {
            let t = Instant::now();
            sh(
                x,
                "swapping the data dir",
                format!(
                    "if [ -d {d} ]; then chown -R --reference={d} {s}/data && mv {d} {o}; fi && \
                     mv {s}/data {d} && chmod 700 {d} && rm -rf {s}",
                    d = q(DATA_DIR),
                    o = q(&old),
                    s = q(&scratch)
                ),
            )
            .await?;
            steps.add("swap data dir", Some(&x.name), t);
        }
        // Members wait for each other to form a quorum, so start them together. Restart
        // counters from now on tell a member whose etcd exits.
        let t = Instant::now();
        futures::future::try_join_all(members.iter().map(|x| {
            sh(
                x,
                "starting etcd",
                "systemctl reset-failed etcd >/dev/null 2>&1; systemctl start --no-block etcd"
                    .into(),
            )
        }))
        .await?;
        steps.add("start etcd", None, t);
        let t = Instant::now();
        let ids = wait_healthy(target, members, min_revision, opts.health_timeout).await?;
        steps.add("healthy", None, t);
        let t = Instant::now();
        for x in members.iter().filter(|x| x.control_plane) {
            sh(x, "starting kube-apiserver", START_APISERVER.to_string()).await?;
        }
        steps.add("start kube-apiserver", None, t);
        Ok::<Vec<(String, u64)>, BackupError>(ids)
    }
    .await;
    match result {
        Ok(ids) => Ok(ClusterRestoreReport {
            id: id.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            steps: steps.take(),
            revisions: REVISIONS_34.to_string(),
            members: members
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
                .collect(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "restore failed; rolling back every member");
            let mut problems = Vec::new();
            for x in members {
                if let Err(e) = sh(x, "rollback: stopping etcd", "systemctl stop etcd".into()).await
                {
                    problems.push(e.to_string());
                }
                // The aside name is unique to this run: where it exists, this run moved it.
                let line = format!(
                    "if [ -d {o} ]; then rm -rf {d} && mv {o} {d}; fi",
                    d = q(DATA_DIR),
                    o = q(&old)
                );
                if let Err(e) = sh(x, "rollback: moving the old data dir back", line).await {
                    problems.push(e.to_string());
                }
                let _ = sh(x, "rollback: cleanup", format!("rm -rf {}", q(&scratch))).await;
            }
            for x in members {
                let line =
                    "systemctl reset-failed etcd >/dev/null 2>&1; systemctl start --no-block etcd";
                if let Err(e) = sh(x, "rollback: starting etcd", line.into()).await {
                    problems.push(e.to_string());
                }
            }
            for x in members.iter().filter(|x| x.control_plane) {
                if let Err(e) = sh(
                    x,
                    "rollback: starting kube-apiserver",
                    START_APISERVER.to_string(),
                )
                .await
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
        "checking etcd.service and tar",
        "systemctl cat etcd >/dev/null 2>&1 || { echo 'no etcd.service (run install --phase etcd)' >&2; exit 1; }; \
         command -v tar >/dev/null || { echo 'tar is needed' >&2; exit 1; }"
            .into(),
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
    send_and_unpack(x.exec.as_ref(), pack, scratch).await
}

/// Packs `parent/data` (a restored data dir) into the tar file `pack`; sparse files stay
/// sparse (`-S`), no compression.
pub(crate) async fn pack_data_dir(parent: &Path, pack: &Path) -> Result<(), BackupError> {
    run_local(
        Path::new("tar"),
        &[
            "-cSf".as_ref(),
            pack.as_os_str(),
            "-C".as_ref(),
            parent.as_os_str(),
            "data".as_ref(),
        ],
    )
    .await
}

/// Sends the pack of a restored data dir (`tar` of `data/`) to the host and unpacks it into
/// the existing directory `dir` there (`dir/data`), checking the size that arrived first.
pub(crate) async fn send_and_unpack(
    x: &dyn Executor,
    pack: &Path,
    dir: &str,
) -> Result<(), BackupError> {
    let remote = format!("{dir}/data.tar");
    let sent = send_file(x, pack, &remote).await?;
    x.run_checked(&Command::new(format!(
        "test \"$(stat -c %s {r})\" = {sent} || {{ echo \"{r}: $(stat -c %s {r}) bytes, {sent} sent\" >&2; exit 1; }}; \
         tar -xf {r} -C {s} && rm -f {r} && test -d {s}/data/member/wal",
        r = q(&remote),
        s = q(dir)
    )).timeout(Duration::from_secs(600)))
    .await
    .map_err(|e| exec_err(x.host(), "unpacking the restored data dir", e))?;
    Ok(())
}

/// Uploads the local file `local` to `remote` on the host (created with umask 077) in pieces of
/// [`PIECE`] appended to one file: memory holds one piece, not the whole file. Returns the
/// bytes sent; the caller checks the remote size before trusting it.
pub(crate) async fn send_file(
    x: &dyn Executor,
    local_path: &Path,
    remote: &str,
) -> Result<u64, BackupError> {
    // `run` never re-runs a command whose connection was lost, so a piece cannot be appended
    // twice; the caller's size check catches anything else.
    let mut file = tokio::fs::File::open(local_path)
        .await
        .map_err(|e| local(local_path, e))?;
    let mut sent = 0u64;
    loop {
        let piece = read_piece(&mut file, PIECE)
            .await
            .map_err(|e| local(local_path, e))?;
        if piece.is_empty() {
            break;
        }
        sent += piece.len() as u64;
        x.run_checked(
            &Command::new(format!("umask 077 && cat >> {}", q(remote)))
                .stdin(piece)
                .timeout(Duration::from_secs(600)),
        )
        .await
        .map_err(|e| exec_err(x.host(), &format!("uploading {}", local_path.display()), e))?;
    }
    Ok(sent)
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
        "reading etcd.service's state",
        "systemctl show etcd -p NRestarts -p ActiveState -p Result".into(),
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
                    .run(&Command::new(
                        "journalctl -u etcd -n 15 --no-pager -o cat 2>&1 || true",
                    ))
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

/// Rewrites `path` so that its all-zero blocks (4 KiB) become holes: etcd preallocates each WAL
/// file to 64 MiB with `fallocate`, which `tar -S` sees as data (its blocks are allocated), so a
/// small database shipped as a 64 MiB-per-member pack of zeros. The copy skips zero blocks by
/// seeking, sets the length, and replaces the file. Reading it gives the same bytes.
pub(crate) fn punch_zero_blocks(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const BLOCK: usize = 4096;
    let tmp = path.with_extension("sparse-tmp");
    let mut input = std::fs::File::open(path)?;
    let len = input.metadata()?.len();
    let mut out = std::fs::File::create(&tmp)?;
    out.set_permissions(input.metadata()?.permissions())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for block in buf[..filled].chunks(BLOCK) {
            if block.iter().all(|b| *b == 0) {
                out.seek(SeekFrom::Current(block.len() as i64))?;
            } else {
                out.write_all(block)?;
            }
        }
        if filled < buf.len() {
            break;
        }
    }
    out.set_len(len)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, path)
}

/// [`punch_zero_blocks`] on every WAL file of a restored data dir (`data/member/wal/*.wal`).
pub(crate) fn sparse_wal(data_dir: &Path) -> Result<(), BackupError> {
    let wal = data_dir.join("member/wal");
    let entries = std::fs::read_dir(&wal).map_err(|e| local(&wal, e))?;
    for e in entries {
        let p = e.map_err(|e| local(&wal, e))?.path();
        if p.extension().is_some_and(|x| x == "wal") {
            punch_zero_blocks(&p).map_err(|e| local(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_the_bytes_stay() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.wal");
        let mut data = vec![0u8; 8 << 20];
        data[..5000].fill(7);
        data[(6 << 20) + 3] = 1;
        std::fs::write(&p, &data).unwrap();
        let before = std::fs::metadata(&p).unwrap().blocks();
        punch_zero_blocks(&p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert!(
            meta.blocks() * 512 < 64 << 10,
            "{} blocks of 512 (before {before})",
            meta.blocks()
        );
        assert!(std::fs::read(&p).unwrap() == data, "content changed");
    }
}
