//! Restoring every etcd member of a cluster clusterkit installed, over SSH.
//!
//! Order (nothing is stopped until every member has its restored data dir ready):
//! 1. at once: every member is checked (etcd.service, tar), its scratch dir
//!    `/var/lib/etcd-restore-<id>` (same filesystem as the data dir) prepared and its etcd
//!    version read, while the backup is downloaded and verified completely on the operator's
//!    machine;
//! 2. for every member, all at once, on the operator's machine: `snapshot restore` into a local
//!    scratch directory with the member's own name and peer URL, the full `--initial-cluster`
//!    and a new `--initial-cluster-token` (this is the dry run) — with `etcdutl … --bump-revision
//!    --mark-compacted` when every member runs etcd ≥ 3.5 and the local etcdutl offers them,
//!    else with `etcdctl` (etcd 3.4: the revision after the restore equals the snapshot's, the
//!    report says so); the WAL's preallocated zeros are turned into holes;
//! 3. that data dir streamed to its member as a sparse `tar` in pieces of [`PIECE`] (no pack
//!    file here, no compression: gzip cost ~40 CPU-s per GiB of DB, bench/backup/RESULTS.md),
//!    its size checked and unpacked into the scratch dir;
//! 4. kube-apiserver, the controller manager and the scheduler killed (systemd units; static
//!    pods' manifests moved aside) on the control-plane hosts, then etcd stopped on every
//!    follower at once and on the leader last;
//! 5. on every member at once: the data dir moved aside (kept as
//!    `/var/lib/etcd.before-<id>-<time>`), the restored one given its owner and moved in place;
//! 6. etcd started everywhere at once (members wait for each other's quorum), then waited for
//!    until healthy: every endpoint answers with a leader, the member count, every member
//!    started, distinct member ids and a revision ≥ the snapshot's (checked every 0.5 s); a
//!    member whose etcd unit keeps exiting meanwhile (systemd had to restart it twice) fails the
//!    restore early rather than at the timeout; then the API servers are started and, given
//!    the admin kubeconfig, waited for, and then the controller managers and schedulers.
//!
//! Every step is timed per member or for the cluster ([`ClusterRestoreReport::steps`]).
//! Any failure in 4–6 rolls every touched member back: etcd stopped everywhere, the restored
//! data dir removed and the old one moved back, etcd and the apiservers started again; the
//! error says whether the old cluster answered again afterwards.
//!
//! Why the restore runs on the operator's machine: Debian's `etcd-server` package (what the
//! installer puts on the members) has no `etcdctl`, and etcd 3.4 has no `etcdutl`; the
//! operator's machine needs `etcdctl` anyway for a local restore. The member-specific data dirs
//! are therefore built locally and shipped.
//!
//! A member that runs as a static pod (static-pod mode: `/etc/kubernetes/manifests/etcd.yaml`,
//! no unit) is stopped by moving its manifest aside until the kubelet has torn the pod down,
//! and started by putting it back; its etcd version is not read (no binary on the host), so
//! revisions are not bumped.
//!
//! Limits: memory holds one piece per member at a time; the local scratch directory needs room
//! for the snapshot plus every member's restored data dir (about 4 × the DB size for 3
//! members) and each member room for 2 × the DB size (the received tar and its unpacked copy);
//! the data goes uncompressed, which suits the cluster's own network more than a slow link;
//! written for the installer's layout (`etcd.service`, `/var/lib/etcd`, peer URL
//! `https://<address>:2380`); the members need `tar` (essential in Debian).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clusterkit_core::exec::{Command, Executor};
use clusterkit_core::layout::NodeLayout;

use crate::catalog;
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::etcd::{self, EtcdTarget, ProbeError};
use crate::manifest::Kind;
use crate::restore::{fetch_verified, snapshot_restore, SnapshotRestore};
use crate::store::Store;

/// Where the members' data dir, units and the API server's manifest are.
const NODE: NodeLayout = NodeLayout::DEFAULT;
/// The etcd unit of every member.
const ETCD: &str = NODE.units.etcd;

/// How long the restored cluster may take to become healthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(240);

/// How much of a pack one SSH command carries (read into memory, appended on the member). The
/// members receive theirs at once, so memory holds one piece per member.
pub const PIECE: usize = 16 << 20;

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

/// How far a restore with etcdutl moves the revision (etcd's documented value: more than any
/// cluster writes between a backup and its restore).
pub const BUMP_REVISION: u64 = 1_000_000_000;

/// Tunables of [`restore_cluster_with`].
#[derive(Debug, Clone)]
pub struct ClusterRestoreOptions {
    /// The local `etcdctl` (3.4 restores with etcdctl).
    pub etcdctl: PathBuf,
    /// The local `etcdutl` (etcd ≥ 3.5): used, with `--bump-revision` and `--mark-compacted`,
    /// when it offers them and every member runs etcd ≥ 3.5.
    pub etcdutl: PathBuf,
    /// See [`HEALTH_TIMEOUT`].
    pub health_timeout: Duration,
    /// The cluster's API server (admin kubeconfig): when given and the restore stopped API
    /// servers, it waits until they answer again.
    pub apiserver: Option<crate::namespace::ApiClient>,
}

fn tool_from_env(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

impl Default for ClusterRestoreOptions {
    /// `etcdctl` and `etcdutl` from `$CLUSTERKIT_ETCDCTL` and `$CLUSTERKIT_ETCDUTL` (the
    /// variables `restore etcd --etcdctl/--etcdutl` read), else from `PATH`.
    fn default() -> Self {
        Self {
            etcdctl: tool_from_env("CLUSTERKIT_ETCDCTL", "etcdctl"),
            etcdutl: tool_from_env("CLUSTERKIT_ETCDUTL", "etcdutl"),
            health_timeout: HEALTH_TIMEOUT,
            apiserver: None,
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

fn local(path: &Path, source: std::io::Error) -> BackupError {
    BackupError::LocalIo {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`stop_control_plane`] prints when there was an API server to stop.
const APISERVER_STOPPED: &str = "clusterkit: kube-apiserver stopped";

/// The controller manager and the scheduler, whose leader leases the restored data rolls
/// back: left running, each loses its lease and exits, and in static-pod mode the kubelet
/// restarts it with growing back-off, leaving the cluster without controllers for a minute or
/// more. As units they stop with the API server and start after it; as static pods they are
/// recreated once the API server is back ([`start_controllers`]).
const CONTROLLERS: [&str; 2] = [
    NODE.units.kube_controller_manager,
    NODE.units.kube_scheduler,
];

/// Stops kube-apiserver, and the controller manager and scheduler units: killed, not asked — a
/// graceful stop of the API server waits up to its request timeout (60 s, measured in
/// tests/install_cluster.rs) for watches to end, and nothing they would finish matters: etcd
/// is replaced underneath them. The API server's static pod has its manifest moved aside
/// instead.
fn stop_control_plane() -> String {
    let apiserver = NODE.units.kube_apiserver;
    let (manifest, held) = manifest_files(apiserver);
    let mut script = format!(
        "if [ -f {manifest} ]; then mv {manifest} {held} || exit 1; echo '{APISERVER_STOPPED}'; fi"
    );
    for unit in std::iter::once(apiserver).chain(CONTROLLERS) {
        script.push_str(&format!(
            "; if systemctl cat {unit} >/dev/null 2>&1; then \
                 systemctl kill --signal=SIGKILL {unit} 2>/dev/null || true; systemctl stop {unit}; \
                 echo 'clusterkit: {unit} stopped'; fi"
        ));
    }
    script
}

/// Starts kube-apiserver again: its manifest back, or its unit started.
fn start_apiserver() -> String {
    let unit = NODE.units.kube_apiserver;
    let (manifest, held) = manifest_files(unit);
    format!(
        "if [ -f {held} ]; then mv {held} {manifest}; fi; \
         if systemctl cat {unit} >/dev/null 2>&1; then systemctl start {unit}; fi"
    )
}

/// Starts the controller manager and scheduler units again, or recreates their static pods
/// (with the API server answering: the kubelet deletes the restored mirror pods and creates
/// them anew).
fn start_controllers() -> String {
    CONTROLLERS
        .iter()
        .map(|unit| {
            let manifest = NODE.manifest(unit);
            let recreate = NODE.recreate_static_pod(unit, "restore-hold", STATIC_POD_STOP_SECS);
            format!(
                "if systemctl cat {unit} >/dev/null 2>&1; then systemctl start {unit} || exit 1; \
                 elif [ -f {manifest} ]; then {recreate}; fi"
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A static pod's manifest (etcd's or a control-plane component's), and where it waits during
/// a restore.
fn manifest_files(unit: &str) -> (String, String) {
    (
        NODE.manifest(unit),
        NODE.manifest_aside(unit, "restore-hold"),
    )
}

/// Stops etcd: gracefully for 3 s, then killed. A member stops in well under a second, but a
/// leader whose followers stop at the same time waits up to 7 s (measured) for a leadership
/// transfer nobody can take: the restore stops the leader last, and this bounds what is left.
/// etcd's WAL is crash-safe, so a killed member's data dir (kept aside for the rollback) starts
/// again as after a power cut. A static-pod member (no unit, a manifest: static-pod mode) has
/// its manifest moved aside and is waited for until the kubelet has torn the pod down.
fn stop_etcd() -> String {
    let (manifest, held) = manifest_files(ETCD);
    let stopped = NodeLayout::wait_static_pod(ETCD, true, STATIC_POD_STOP_SECS);
    format!(
        "if systemctl cat {ETCD} >/dev/null 2>&1; then \
           timeout 3 systemctl stop {ETCD} || \
           {{ systemctl kill --signal=SIGKILL {ETCD} 2>/dev/null || true; systemctl stop {ETCD}; }}; \
         elif [ -f {manifest} ]; then mv {manifest} {held} && {stopped}; fi"
    )
}

/// Starts etcd without waiting (members wait for each other's quorum): the unit, or a
/// static-pod member's manifest put back for the kubelet.
fn start_etcd() -> String {
    let (manifest, held) = manifest_files(ETCD);
    format!(
        "if [ -f {held} ]; then mv {held} {manifest}; \
         else systemctl reset-failed {ETCD} >/dev/null 2>&1; systemctl start --no-block {ETCD}; fi"
    )
}

/// How long a static-pod member may take to stop once its manifest left: the kubelet looks at
/// the manifest directory every 20 s, then stops the pod.
const STATIC_POD_STOP_SECS: u64 = 90;

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

/// Restores backup `id` onto `members` (all of them) and counts the restore in the store's
/// status. `target` reaches the restored cluster for the health check. See the module doc for
/// the steps.
pub async fn restore_cluster_with(
    store: &dyn Store,
    id: &str,
    decrypt: &Decrypt,
    members: &[Member],
    target: &EtcdTarget,
    now: DateTime<Utc>,
    opts: &ClusterRestoreOptions,
) -> Result<ClusterRestoreReport, BackupError> {
    crate::status::recorded(store, Kind::Etcd, async {
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
        let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
        let data_dir = NODE.etcd_data_dir;
        let scratch = format!("{data_dir}-restore-{id}");
        let old = format!("{data_dir}.before-{id}-{stamp}");

        // 1. Every member can take the restore (and says its etcd version), while the backup is
        //    downloaded and verified here.
        let t = Instant::now();
        let work = Scratch::new(id)?;
        let snapshot = work.0.join("snapshot.db");
        let (checked, fetched) = tokio::join!(
            futures::future::try_join_all(members.iter().map(|x| check_member(x, &scratch))),
            async {
                let t = Instant::now();
                let r = fetch_verified(store, &m, decrypt, &snapshot).await;
                steps.add("download+verify", None, t);
                r
            }
        );
        let cleanup = || async {
            futures::future::join_all(
                members
                    .iter()
                    .map(|x| sh(x, "cleanup", format!("rm -rf {}", q(&scratch)))),
            )
            .await;
        };
        let versions = match (checked, fetched) {
            (Ok(v), Ok(())) => v,
            (Err(e), _) | (_, Err(e)) => {
                cleanup().await;
                return Err(e);
            }
        };
        steps.add("check members", None, t);
        let bump = bump_revisions(opts, &versions).await;
        let revisions = match &bump {
            Ok(n) => format!(
                "bumped by {n} and marked compacted (etcdutl snapshot restore --bump-revision \
                 --mark-compacted): no watcher sees an older revision reused"
            ),
            Err(why) => format!("{REVISIONS_34} ({why})"),
        };
        let bump = bump.ok();

        // 2–3. Per member, all at once: the local dry run (its own name and peer URL, a new
        //    token), shipped and unpacked next to its data dir; nothing running is touched yet.
        let token = format!("clusterkit-restore-{id}");
        let initial: Vec<String> = members
            .iter()
            .map(|x| format!("{}={}", x.name, x.peer_url))
            .collect();
        let initial = initial.join(",");
        let shipped = futures::future::try_join_all(members.iter().enumerate().map(|(i, x)| {
            let (work, snapshot, initial, token, scratch, steps) =
                (&work, &snapshot, &initial, &token, &scratch, &steps);
            async move {
                let dir = work.0.join(format!("member-{i}"));
                let data = dir.join("data");
                let t = Instant::now();
                snapshot_restore(&SnapshotRestore {
                    etcdctl: bump
                        .map(|_| opts.etcdutl.as_path())
                        .unwrap_or(&opts.etcdctl),
                    snapshot,
                    data_dir: &data,
                    name: &x.name,
                    peer_urls: &x.peer_url,
                    initial_cluster: initial,
                    token,
                    bump_revision: bump,
                })
                .await
                .map_err(|e| {
                    BackupError::RestoreRefused(format!("the local dry run for {} failed: {e}", x.name))
                })?;
                steps.add("snapshot restore", Some(&x.name), t);
                let t = Instant::now();
                let sent = send_dir(x.exec.as_ref(), &dir, scratch).await;
                let _ = std::fs::remove_dir_all(&dir);
                sent?;
                steps.add("ship+unpack", Some(&x.name), t);
                Ok::<(), BackupError>(())
            }
        }))
        .await;
        drop(work);
        if let Err(e) = shipped {
            cleanup().await;
            return Err(e);
        }

        // 4–6, with rollback.
        let control_plane: Vec<&Member> = members.iter().filter(|x| x.control_plane).collect();
        let result = async {
            let t = Instant::now();
            let stopped = futures::future::try_join_all(
                control_plane
                    .iter()
                    .map(|x| sh(x, "stopping the control plane", stop_control_plane())),
            )
            .await?;
            let had_apiserver = stopped.iter().any(|out| out.contains(APISERVER_STOPPED));
            steps.add("stop kube-apiserver, controller manager, scheduler", None, t);
            // Followers first, all at once, then the leader: a leader stopping while its followers
            // do waits up to 7 s for a leadership transfer nobody can take; alone, it stops at once.
            let t = Instant::now();
            let leader = leader_name(target).await;
            let (last, first): (Vec<&Member>, Vec<&Member>) = members
                .iter()
                .partition(|x| Some(&x.name) == leader.as_ref());
            for group in [first, last] {
                futures::future::try_join_all(
                    group.iter().map(|x| sh(x, "stopping etcd", stop_etcd())),
                )
                .await?;
            }
            steps.add("stop etcd", None, t);
            let t = Instant::now();
            futures::future::try_join_all(members.iter().map(|x| {
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
            }))
            .await?;
            steps.add("swap data dirs", None, t);
            // Members wait for each other to form a quorum, so start them together. Restart
            // counters from now on tell a member whose etcd exits.
            let t = Instant::now();
            futures::future::try_join_all(members.iter().map(|x| sh(x, "starting etcd", start_etcd())))
                .await?;
            steps.add("start etcd", None, t);
            let t = Instant::now();
            let ids = wait_healthy(target, members, min_revision, opts.health_timeout).await?;
            steps.add("etcd healthy", None, t);
            let t = Instant::now();
            futures::future::try_join_all(
                control_plane
                    .iter()
                    .map(|x| sh(x, "starting kube-apiserver", start_apiserver())),
            )
            .await?;
            steps.add("start kube-apiserver", None, t);
            Ok::<_, BackupError>((ids, had_apiserver))
        }
        .await;
        match result {
            Ok((ids, had_apiserver)) => {
                if had_apiserver {
                    if let Some(api) = &opts.apiserver {
                        let t = Instant::now();
                        wait_apiserver(api, opts.health_timeout).await?;
                        steps.add("kube-apiserver ready", None, t);
                    }
                }
                // After the API server, so that they find it answering when they start.
                let t = Instant::now();
                futures::future::try_join_all(control_plane.iter().map(|x| {
                    sh(
                        x,
                        "starting the controller manager and scheduler",
                        start_controllers(),
                    )
                }))
                .await?;
                steps.add("start controller manager, scheduler", None, t);
                Ok(ClusterRestoreReport {
                    id: id.to_string(),
                    seconds: started.elapsed().as_secs_f64(),
                    steps: steps.take(),
                    revisions,
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
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "restore failed; rolling back every member");
                let mut problems = Vec::new();
                for x in members {
                    if let Err(e) = sh(x, "rollback: stopping etcd", stop_etcd()).await {
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
                    let all = format!("{}; {}", start_apiserver(), start_controllers());
                    if let Err(e) = sh(x, "rollback: starting the control plane", all).await {
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
    })
    .await
}

/// Checks that the member can take the restore (etcd.service or its static pod, and tar
/// exist), prepares its
/// empty scratch dir and returns its etcd version (`unknown` when `etcd --version` says none).
async fn check_member(x: &Member, scratch: &str) -> Result<String, BackupError> {
    let out = sh(
        x,
        &format!("checking {ETCD}.service and tar"),
        format!(
            "systemctl cat {ETCD} >/dev/null 2>&1 || [ -f {m} ] || {{ echo 'no {ETCD}.service and no {ETCD} static pod (run install --phase etcd)' >&2; exit 1; }}; \
             command -v tar >/dev/null || {{ echo 'tar is needed' >&2; exit 1; }}; \
             rm -rf {s} && mkdir -p {s} && chmod 700 {s} && \
             {{ etcd --version 2>/dev/null | sed -n 's/^etcd Version: *//p' | grep . || echo unknown; }}",
            s = q(scratch),
            m = manifest_files(ETCD).0
        ),
    )
    .await?;
    Ok(out.trim().to_string())
}

/// `major.minor` of an etcd version string.
fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().trim_start_matches('v').split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// How far to bump revisions, or why they are not bumped: every member must run etcd ≥ 3.5 and
/// the local etcdutl must offer `--bump-revision` and `--mark-compacted`.
async fn bump_revisions(opts: &ClusterRestoreOptions, versions: &[String]) -> Result<u64, NoBump> {
    if let Some(v) = versions
        .iter()
        .find(|v| major_minor(v).is_none_or(|mm| mm < (3, 5)))
    {
        return Err(NoBump::OldMember(v.clone()));
    }
    let help = tokio::process::Command::new(&opts.etcdutl)
        .args(["snapshot", "restore", "--help"])
        .output()
        .await
        .map_err(|source| NoBump::NoEtcdutl {
            path: opts.etcdutl.clone(),
            source,
        })?;
    let text =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    if text.contains("--bump-revision") && text.contains("--mark-compacted") {
        Ok(BUMP_REVISION)
    } else {
        Err(NoBump::NoFlags(opts.etcdutl.clone()))
    }
}

/// Why revisions are not bumped (the restore then goes on as etcd 3.4 would).
#[derive(Debug, thiserror::Error)]
enum NoBump {
    #[error("a member runs etcd {0}")]
    OldMember(String),
    #[error("no {} here: {source}", path.display())]
    NoEtcdutl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} snapshot restore has no --bump-revision/--mark-compacted", .0.display())]
    NoFlags(PathBuf),
}

/// Polls the API server until a quorum read answers.
async fn wait_apiserver(
    api: &crate::namespace::ApiClient,
    timeout: Duration,
) -> Result<(), BackupError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match tokio::time::timeout(
            Duration::from_secs(5),
            api.get_path("/api/v1/namespaces?limit=1"),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BackupError::RestoreRefused(format!(
                "etcd is restored and healthy, but the API server did not answer within {}s: {last}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sends `parent/data` (a restored data dir) to the host and unpacks it into the existing
/// directory `dir` there (`dir/data`). The dir is packed by `tar -cS` into a pipe and sent in
/// pieces of [`PIECE`] appended to `dir/data.tar` (memory holds one piece, nothing is written
/// here); the size that arrived is checked before `tar -x`. The WAL files are made sparse first
/// ([`sparse_wal`]) so their preallocated zeros travel as holes.
pub(crate) async fn send_dir(
    x: &dyn Executor,
    parent: &Path,
    dir: &str,
) -> Result<(), BackupError> {
    use tokio::io::AsyncReadExt;
    sparse_wal(&parent.join("data"))?;
    let mut tar = tokio::process::Command::new("tar")
        .arg("-cSf")
        .arg("-")
        .arg("-C")
        .arg(parent)
        .arg("data")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| local(Path::new("tar"), e))?;
    let mut out = tar.stdout.take().ok_or_else(|| {
        local(
            parent,
            std::io::Error::other("tar was started without a stdout pipe"),
        )
    })?;
    let remote = format!("{dir}/data.tar");
    let mut sent = 0u64;
    loop {
        let mut piece = Vec::with_capacity(PIECE);
        while piece.len() < PIECE {
            let n = (&mut out)
                .take((PIECE - piece.len()) as u64)
                .read_to_end(&mut piece)
                .await
                .map_err(|e| local(parent, e))?;
            if n == 0 {
                break;
            }
        }
        if piece.is_empty() {
            break;
        }
        sent += piece.len() as u64;
        // `run` never re-runs a command whose connection was lost, so a piece cannot be
        // appended twice; the size check below catches anything else.
        x.run_checked(
            &Command::new(format!("umask 077 && cat >> {}", q(&remote)))
                .stdin(piece)
                .timeout(Duration::from_secs(600)),
        )
        .await
        .map_err(|e| exec_err(x.host(), "uploading the restored data dir", e))?;
    }
    let status = tar.wait_with_output().await.map_err(|e| local(parent, e))?;
    if !status.status.success() {
        return Err(BackupError::Command {
            command: format!("tar -cS -C {} data", parent.display()),
            status: status.status.to_string(),
            stderr: clusterkit_core::exec::tail(&String::from_utf8_lossy(&status.stderr))
                .to_string(),
        });
    }
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
    let base: Vec<Option<u64>> = futures::future::join_all(members.iter().map(unit_state))
        .await
        .into_iter()
        .map(|r| r.ok().map(|s| s.0))
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    // The units are looked at every 2 s (one SSH command per member), the cluster every 0.5 s.
    let mut units_seen = tokio::time::Instant::now();
    loop {
        if units_seen.elapsed() >= Duration::from_secs(2) {
            units_seen = tokio::time::Instant::now();
            let states = futures::future::join_all(members.iter().map(unit_state)).await;
            for ((x, before), state) in members.iter().zip(&base).zip(states) {
                let Ok((restarts, active, result)) = state else {
                    continue;
                };
                // One exit may be transient (systemd restarts etcd after 5 s); a unit that had
                // to be restarted twice, or gave up, keeps failing.
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One pass over every endpoint; `Err` says what is not right yet.
async fn check_once(
    target: &EtcdTarget,
    members: usize,
    min: i64,
) -> Result<Vec<(String, u64)>, NotYet> {
    let mut ids = Vec::new();
    for ep in &target.endpoints {
        // Every call is bounded (connect by the target's timeout, the rest by PROBE_TIMEOUT).
        let probe = async {
            let mut c = etcd::connect_probe(ep, target).await?;
            let st = etcd::call("status", PROBE_TIMEOUT, c.status()).await?;
            let list = etcd::call("member list", PROBE_TIMEOUT, c.member_list()).await?;
            let rev = st.header().map(|h| h.revision()).unwrap_or(0);
            let started: Vec<(String, u64)> = list
                .members()
                .iter()
                .filter(|m| !m.name().is_empty())
                .map(|m| (m.name().to_string(), m.id()))
                .collect();
            if st.leader() == 0 || list.members().len() != members || started.len() != members {
                return Err(ProbeError::NotReady(format!(
                    "leader {:x}, {} members of which {} started (want {members})",
                    st.leader(),
                    list.members().len(),
                    started.len()
                )));
            }
            if rev < min {
                return Err(ProbeError::NotReady(format!(
                    "revision {rev} < the snapshot's {min}"
                )));
            }
            Ok(started)
        };
        ids = probe.await.map_err(|source| NotYet {
            endpoint: ep.clone(),
            source,
        })?;
    }
    let mut distinct: Vec<u64> = ids.iter().map(|(_, i)| *i).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != ids.len() {
        return Err(NotYet {
            endpoint: target.endpoints.join(","),
            source: ProbeError::NotReady(format!("member ids are not distinct: {ids:?}")),
        });
    }
    Ok(ids)
}

/// What an endpoint said when the restored (or rolled back) cluster was not ready yet.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint}: {source}")]
struct NotYet {
    endpoint: String,
    #[source]
    source: ProbeError,
}

/// How long one call to an endpoint may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of the old cluster's leader, if some endpoint says within a few seconds.
async fn leader_name(target: &EtcdTarget) -> Option<String> {
    for ep in &target.endpoints {
        let probe = async {
            let mut c = etcd::connect(ep, target).await.ok()?;
            let leader = c.status().await.ok()?.leader();
            let list = c.member_list().await.ok()?;
            list.members()
                .iter()
                .find(|m| m.id() == leader)
                .map(|m| m.name().to_string())
        };
        if let Ok(Some(name)) = tokio::time::timeout(Duration::from_secs(3), probe).await {
            return Some(name);
        }
    }
    None
}

/// Polls until some endpoint reports a leader; returns that endpoint, or the last problem.
async fn wait_any_leader(target: &EtcdTarget, timeout: Duration) -> Result<String, NotYet> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = NotYet {
        endpoint: target.endpoints.join(","),
        source: ProbeError::NotReady("no endpoint answered".into()),
    };
    loop {
        for ep in &target.endpoints {
            let probe = async {
                let mut c = etcd::connect_probe(ep, target).await?;
                let st = etcd::call("status", PROBE_TIMEOUT, c.status()).await?;
                if st.leader() == 0 {
                    return Err(ProbeError::NotReady("no leader".into()));
                }
                Ok(())
            };
            let source = match probe.await {
                Ok(()) => return Ok(ep.clone()),
                Err(e) => e,
            };
            last = NotYet {
                endpoint: ep.clone(),
                source,
            };
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
    fn versions_are_read_as_major_minor() {
        assert_eq!(major_minor("3.4.23"), Some((3, 4)));
        assert_eq!(major_minor("v3.5.17"), Some((3, 5)));
        assert_eq!(major_minor("unknown"), None);
    }

    #[tokio::test]
    async fn revisions_are_bumped_only_with_35_members_and_an_etcdutl_that_can() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for etcdutl 3.5's help text (no etcd 3.5 on Debian 12): the decision
        // reads only whether the flags are offered.
        let fake = |name: &str, help: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\necho '{help}'\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let mut opts = ClusterRestoreOptions {
            etcdutl: fake(
                "fake-etcdutl-with-bump",
                "--bump-revision uint64 --mark-compacted",
            ),
            ..ClusterRestoreOptions::default()
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bump_revisions(&opts, &v(&["3.5.9", "3.6.0", "3.5.9"]))
                .await
                .unwrap(),
            BUMP_REVISION
        );
        let why = bump_revisions(&opts, &v(&["3.5.9", "3.4.23"]))
            .await
            .unwrap_err();
        assert!(
            matches!(&why, NoBump::OldMember(v) if v == "3.4.23"),
            "{why}"
        );
        assert!(bump_revisions(&opts, &v(&["unknown"])).await.is_err());
        opts.etcdutl = fake("fake-etcdutl-without", "--data-dir string");
        let why = bump_revisions(&opts, &v(&["3.5.9"])).await.unwrap_err();
        assert!(matches!(why, NoBump::NoFlags(_)), "{why}");
        assert!(why.to_string().contains("no --bump-revision"), "{why}");
        opts.etcdutl = dir.path().join("absent");
        let why = bump_revisions(&opts, &v(&["3.5.9"])).await.unwrap_err();
        assert!(matches!(why, NoBump::NoEtcdutl { .. }), "{why}");
        assert!(why.to_string().contains("no "), "{why}");
    }

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
