//! `clusterkit upgrade apply`: moves a running cluster to cluster.yaml's `kubernetes.version`,
//! one host at a time, without taking the API or the workloads down.
//!
//! [`prepare`] reads what really runs on every host ([`running`]), refuses what the
//! version-skew policy refuses ([`skew::plan`]) and a bundle without the target's binaries,
//! before anything is touched; then [`apply`] rolls:
//! 1. the control-plane hosts one at a time: the files the host has now (binaries and units,
//!    or the static pods' manifests) kept in [`NodeLayout::previous_dir`], the `control-plane`
//!    phase run on that host with the target's binaries (images) and flags, then
//!    kube-apiserver restarted and waited for (`/readyz` on the host and through the endpoint,
//!    every `/livez`), then controller manager and scheduler (leases renewed) — each only if
//!    the phase did not restart it already ([`Instance`]: a unit's InvocationID; a static
//!    pod's manifest, whose change the kubelet acts on, waited for until it has);
//! 2. every host's kubelet and kube-proxy, `max_unavailable` hosts at a time: cordon and drain
//!    through the Eviction API ([`node::drain`]: disruption budgets honoured, DaemonSet and
//!    mirror pods left, emptyDir pods only when asked), the files kept, the `join` and `addons`
//!    phases on that host, kubelet and kube-proxy restarted and waited for (both answer
//!    `/healthz` through the API server's node proxy, the Node is Ready and reports the
//!    target version), uncordoned. In static-pod mode kube-proxy is kubeadm's DaemonSet: the
//!    first node's `addons` phase applies the target's, which moves every node's kube-proxy
//!    (as `kubeadm upgrade apply` does); a node whose kube-proxy still runs another version,
//!    or every node with `force_reroll`, has its pod replaced in its turn.
//!
//! In static-pod mode the `images` phase runs on every host first, so that no manifest or
//! DaemonSet names an image a node does not have.
//!
//! A host rolls when something on it runs another version than the target, or always with
//! `force_reroll` (how CI exercises a roll with the one release it can build). A host already
//! at the target is only converged (the phases, which change nothing on a converged host), so a
//! rerun after a successful upgrade changes nothing. After each host's step the running
//! processes are read again: a component whose binary was replaced but which still runs the
//! old version is a failure, not a success.
//!
//! A failed host is rolled back (its kept files restored, its components restarted and waited
//! for) and uncordoned — uncordoned also when the rollback fails — and the run stops there,
//! naming the host, the step and the error (with the remote command's stderr). The journal
//! ([`StateLayout::upgrade_journal`]) records the steps each host finished; `resume` continues
//! from the failed host's step, and a run without `resume` refuses while an unfinished journal
//! exists. The journal is removed when the upgrade completes.
//!
//! With `etcd`, the etcd members go first, one at a time: the `etcd` phase on the member (the
//! bundle's etcd-server package, or a static-pod member's manifest), the member restarted when
//! its running binary was replaced or its manifest changed (or with `force_reroll`), and every member healthy with a leader before the next.
//!
//! Limits: in static-pod mode the control-plane and etcd phases install the target's kubelet
//! on control-plane hosts (it runs their static pods) before the host is drained, and a
//! rollback cannot take the kube-proxy DaemonSet back for one node; a rolled-back etcd
//! binary is copied back under the package manager (dpkg still records the newer package);
//! nodes of one batch are drained together, so a batch larger than what the disruption
//! budgets allow waits for the drain timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clusterkit_core::config::{Cluster, ControlPlaneMode, Host, Role};
use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::exec::{Command, ExecError, Executor};
use clusterkit_core::fanout::Fanout;
use clusterkit_core::inventory;
use clusterkit_core::layout::{Component, NodeLayout, StateLayout};
use clusterkit_core::release::KubeVersion;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::certs::{restart_unit, wait_apiserver_ready, APISERVER_READY_TIMEOUT};
use crate::kube_api;
use crate::node::{self, DrainOptions, DrainPlan};
use crate::phases::{self, control_plane, join, Cause, InstallError, InstallOptions, Plan};
use crate::poll::{self, NotReady};
use crate::running;
use crate::skew::{self, Running};

/// How long a restarted node's kubelet may take to report Ready at the target version.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How `upgrade apply` behaves.
#[derive(Clone)]
pub struct ApplyOptions {
    /// The version to move to; must be cluster.yaml's `kubernetes.version`.
    pub target: KubeVersion,
    /// Roll every host even where everything already runs the target.
    pub force_reroll: bool,
    /// Also roll the etcd members, one at a time, before the control plane.
    pub etcd: bool,
    /// Continue the unfinished upgrade the journal records.
    pub resume: bool,
    /// Report what would change on every host; change nothing.
    pub check: bool,
    /// Nodes drained and upgraded at once (at least 1).
    pub max_unavailable: usize,
    /// How long one node's drain may take.
    pub drain_timeout: Duration,
    /// Evict pods with emptyDir volumes (their data is lost).
    pub delete_emptydir_data: bool,
    /// The playbook engine's options (library, events, progress).
    pub install: InstallOptions,
}

/// The two steps of a host's upgrade, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The etcd member (etcd hosts; only when asked).
    Etcd,
    /// kube-apiserver, controller manager and scheduler (control-plane hosts).
    ControlPlane,
    /// kubelet and kube-proxy (every host).
    Node,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Etcd => "etcd",
            Stage::ControlPlane => "control-plane",
            Stage::Node => "node",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Etcd => "etcd member",
            Stage::ControlPlane => "control plane",
            Stage::Node => "kubelet and kube-proxy",
        })
    }
}

/// Errors of `upgrade apply`.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "cluster.yaml's kubernetes.version is {desired}, not --to {to}: cluster.yaml holds the \
         version the cluster should run; set `kubernetes.version: {to}` there and rerun"
    )]
    NotDesired {
        desired: KubeVersion,
        to: KubeVersion,
    },
    #[error("the version-skew policy refuses {target}:\n  {}", reasons.join("\n  "))]
    Refused {
        target: KubeVersion,
        reasons: Vec<String>,
    },
    #[error(
        "the offline bundle carries {carries}, not {target}: build one with `clusterkit bundle \
         build --kubernetes {target}` and point packages.bundle at it"
    )]
    BundleLacksTarget {
        carries: String,
        target: KubeVersion,
    },
    #[error(
        "an upgrade to {target} stopped unfinished ({left}); rerun with --resume to continue it, \
         or remove {} to start over", path.display()
    )]
    Unfinished {
        target: String,
        left: String,
        path: PathBuf,
    },
    #[error("--resume: {0}")]
    Resume(String),
    #[error("upgrade journal {}: {source}", path.display())]
    Journal {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("{host}: connecting: {source}")]
    Connect {
        host: String,
        #[source]
        source: Box<ExecError>,
    },
    /// A host's step failed; `aftermath` says what was done about it.
    #[error(
        "{host}: {stage}: {step} failed: {source}{}",
        aftermath_text(aftermath)
    )]
    Host {
        host: String,
        stage: Stage,
        step: &'static str,
        #[source]
        source: Cause,
        aftermath: Vec<String>,
    },
}

fn aftermath_text(a: &[String]) -> String {
    if a.is_empty() {
        String::new()
    } else {
        format!(" (then: {})", a.join("; "))
    }
}

/// What a step of one host failed with, before the rollback adds what it did.
struct StepError {
    step: &'static str,
    source: Cause,
}

impl StepError {
    /// The error of `host`'s `stage`, with what was done about it.
    fn on(self, host: &Host, stage: Stage, aftermath: Vec<String>) -> UpgradeError {
        UpgradeError::Host {
            host: host.name.clone(),
            stage,
            step: self.step,
            source: self.source,
            aftermath,
        }
    }
}

fn step_err(step: &'static str, e: impl Into<Cause>) -> StepError {
    StepError {
        step,
        source: e.into(),
    }
}

/// The journal: the target and what each host finished.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    target: String,
    force_reroll: bool,
    /// The etcd backup taken before the first host was touched.
    #[serde(default)]
    backup: Option<String>,
    #[serde(default)]
    done: BTreeMap<String, BTreeSet<Stage>>,
    /// The host and step that failed last.
    #[serde(default)]
    failed: Option<String>,
}

/// An upgrade checked and ready to apply (see [`prepare`]).
pub struct Prepared {
    pub target: KubeVersion,
    /// What ran on every host when the upgrade was prepared.
    pub running: Vec<Running>,
    /// The moves the skew policy allows, in roll order.
    pub moves: Vec<skew::Step>,
    /// Whether this continues an unfinished upgrade.
    pub resumed: bool,
    journal: Journal,
    journal_path: PathBuf,
}

impl Prepared {
    /// The backup recorded for this upgrade, if one was taken.
    pub fn backup(&self) -> Option<&str> {
        self.journal.backup.as_deref()
    }

    /// Records the etcd backup taken before any host is touched.
    pub fn record_backup(&mut self, id: &str) -> Result<(), UpgradeError> {
        self.journal.backup = Some(id.to_string());
        self.save()
    }

    fn done(&self, host: &str, stage: Stage) -> bool {
        self.journal
            .done
            .get(host)
            .is_some_and(|s| s.contains(&stage))
    }

    fn save(&self) -> Result<(), UpgradeError> {
        let err = |source: Cause| UpgradeError::Journal {
            path: self.journal_path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(&self.journal).map_err(|e| err(e.into()))?;
        if let Some(dir) = self.journal_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.into()))?;
        }
        let tmp = self.journal_path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| err(e.into()))?;
        std::fs::rename(&tmp, &self.journal_path).map_err(|e| err(e.into()))
    }
}

/// One host's part of the report.
#[derive(Debug, Serialize)]
pub struct HostReport {
    pub host: String,
    pub stage: Stage,
    pub outcome: Outcome,
    /// Tasks the phases changed on the host.
    pub changed: u32,
    /// Units restarted by the upgrade itself (beyond the phases' handlers).
    pub restarted: Vec<String>,
    /// The drain carried out (or, in check mode, planned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainPlan>,
    /// How long the cordon and drain took (0 without one).
    pub drain_seconds: f64,
    pub seconds: f64,
}

/// What happened to a host in one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Moved (or rerolled) to the target.
    Rolled,
    /// Already at the target: converged and verified, nothing restarted.
    Verified,
    /// Finished by the run `resume` continues.
    DoneBefore,
    /// Check mode: would roll.
    WouldRoll,
    /// Check mode: already at the target.
    WouldVerify,
}

impl Outcome {
    /// The outcome as the report's JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Rolled => "rolled",
            Outcome::Verified => "verified",
            Outcome::DoneBefore => "done-before",
            Outcome::WouldRoll => "would-roll",
            Outcome::WouldVerify => "would-verify",
        }
    }
}

/// The whole upgrade.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: KubeVersion,
    pub check: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    pub hosts: Vec<HostReport>,
    pub seconds: f64,
}

impl Report {
    /// Host steps that rolled.
    pub fn rolled(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.outcome == Outcome::Rolled)
            .count()
    }

    /// Tasks changed over all hosts.
    pub fn changed(&self) -> u32 {
        self.hosts.iter().map(|h| h.changed).sum()
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for h in &self.hosts {
            out.push_str(&format!(
                "{:<12} {:<24} {:<13} {:>3} changed {:>6.1}s{}{}\n",
                h.host,
                h.stage.to_string(),
                h.outcome.name(),
                h.changed,
                h.seconds,
                if h.restarted.is_empty() {
                    String::new()
                } else {
                    format!("  restarted {}", h.restarted.join(", "))
                },
                h.drain
                    .as_ref()
                    .map(|d| format!("  evicted {}", d.evict.len()))
                    .unwrap_or_default(),
            ));
        }
        out.push_str(&format!(
            "{}{} host step(s) rolled to {}, {} task(s) changed, {:.1}s\n",
            if self.check { "check mode: " } else { "" },
            self.rolled(),
            self.target,
            self.changed(),
            self.seconds
        ));
        out
    }
}

/// Progress on stderr, with the seconds since the upgrade started.
fn progress(host: &str, what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("upgrade: [{t:6.1}s] {host}: {what}");
}

async fn connect(cluster: &Cluster, host: &Host) -> Result<SshExecutor, UpgradeError> {
    let err = |source| UpgradeError::Connect {
        host: host.name.clone(),
        source: Box::new(source),
    };
    let target = inventory::ssh_target(cluster, host).map_err(err)?;
    SshExecutor::connect(target).await.map_err(err)
}

/// What runs on every host of `cluster` ([`running::read_hosts`]: one command per host, at
/// most `ssh.concurrency` at once).
pub async fn read_running(cluster: &Cluster) -> Result<Vec<Running>, UpgradeError> {
    let hosts: Vec<&Host> = cluster.hosts.iter().collect();
    let fanout = Fanout::new("read versions", cluster.ssh.concurrency).quiet();
    let mut all = Vec::new();
    for r in running::read_hosts(cluster, &hosts, &fanout, |_| String::new()).await {
        let (found, _) = r
            .result
            .map_err(|e| InstallError::host(r.host, "reading which versions run", e))?;
        all.extend(found);
    }
    Ok(all)
}

/// Checks the upgrade before anything is touched: `--to` is cluster.yaml's version, the skew
/// policy allows it from what runs now, the bundle carries its binaries, and the journal
/// agrees with `resume`.
pub async fn prepare(cluster: &Cluster, opts: &ApplyOptions) -> Result<Prepared, UpgradeError> {
    let target = opts.target;
    if target != cluster.kubernetes.version {
        return Err(UpgradeError::NotDesired {
            desired: cluster.kubernetes.version,
            to: target,
        });
    }
    let bundle = phases::bundle(cluster)?;
    if let Some(b) = bundle.as_ref() {
        if b.manifest.kubernetes_release() != Some(target) {
            return Err(UpgradeError::BundleLacksTarget {
                carries: (b.manifest.kubernetes_version.clone())
                    .unwrap_or_else(|| "no Kubernetes binaries".into()),
                target,
            });
        }
    }
    let running = read_running(cluster).await?;
    let moves = skew::plan(&running, target, Some(target)).map_err(|r| UpgradeError::Refused {
        target,
        reasons: r.iter().map(|r| r.to_string()).collect(),
    })?;
    let journal_path = StateLayout::from_cluster(cluster).upgrade_journal();
    let existing =
        match std::fs::read(&journal_path) {
            Ok(bytes) => Some(serde_json::from_slice::<Journal>(&bytes).map_err(|e| {
                UpgradeError::Journal {
                    path: journal_path.clone(),
                    source: e.into(),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(UpgradeError::Journal {
                    path: journal_path,
                    source: e.into(),
                })
            }
        };
    let fresh = Journal {
        target: target.to_string(),
        force_reroll: opts.force_reroll,
        ..Default::default()
    };
    let (journal, resumed) = match (existing, opts.resume) {
        (Some(j), true) if j.target == target.to_string() => (j, true),
        (Some(j), true) => {
            return Err(UpgradeError::Resume(format!(
                "the unfinished upgrade is to {}, not {target}",
                j.target
            )))
        }
        (None, true) => {
            return Err(UpgradeError::Resume(
                "no unfinished upgrade to continue; run without --resume".into(),
            ))
        }
        (Some(j), false) if !opts.check => {
            return Err(UpgradeError::Unfinished {
                left: j
                    .failed
                    .clone()
                    .unwrap_or_else(|| "interrupted".to_string()),
                target: j.target,
                path: journal_path,
            })
        }
        (_, false) => (fresh, false),
    };
    Ok(Prepared {
        target,
        running,
        moves,
        resumed,
        journal,
        journal_path,
    })
}

/// Rolls the cluster (see the module documentation). `prepared` comes from [`prepare`]; the
/// caller takes the etcd backup in between and records it there.
pub async fn apply(
    cluster: &Cluster,
    mut prepared: Prepared,
    opts: &ApplyOptions,
) -> Result<Report, UpgradeError> {
    let started = Instant::now();
    let check = opts.check;
    progress(
        &cluster.name,
        &format!(
            "{}to {}",
            if check {
                "checking the roll "
            } else {
                "rolling "
            },
            prepared.target
        ),
    );
    if !check {
        prepared.journal.force_reroll |= opts.force_reroll;
        prepared.save()?;
    }
    let force = opts.force_reroll || (prepared.resumed && prepared.journal.force_reroll);
    let client = kube_api::admin_client(cluster, None).await?;
    let mut report = Report {
        target: prepared.target,
        check,
        backup: prepared.journal.backup.clone(),
        hosts: Vec::new(),
        seconds: 0.0,
    };
    let running = std::mem::take(&mut prepared.running);
    let roll = Roll {
        cluster,
        opts,
        force,
        target: prepared.target,
        running: &running,
        layout: NodeLayout::from_cluster(cluster),
    };
    if roll.static_pods() {
        roll.images_everywhere().await?;
    }
    for h in cluster
        .hosts_with_role(Role::Etcd)
        .into_iter()
        .filter(|_| opts.etcd)
    {
        if prepared.done(&h.name, Stage::Etcd) {
            report
                .hosts
                .push(HostReport::done_before(&h.name, Stage::Etcd));
            continue;
        }
        let result = roll.etcd(h).await;
        record(&mut prepared, &mut report, &h.name, Stage::Etcd, result)?;
    }
    for h in cluster.hosts_with_role(Role::ControlPlane) {
        if prepared.done(&h.name, Stage::ControlPlane) {
            report
                .hosts
                .push(HostReport::done_before(&h.name, Stage::ControlPlane));
            continue;
        }
        let result = roll.control_plane(h).await;
        record(
            &mut prepared,
            &mut report,
            &h.name,
            Stage::ControlPlane,
            result,
        )?;
    }
    let pending: Vec<&Host> = cluster
        .hosts
        .iter()
        .filter(|h| {
            if prepared.done(&h.name, Stage::Node) {
                report
                    .hosts
                    .push(HostReport::done_before(&h.name, Stage::Node));
                false
            } else {
                true
            }
        })
        .collect();
    for batch in pending.chunks(opts.max_unavailable.max(1)) {
        let results = futures::future::join_all(batch.iter().map(|h| roll.node(&client, h))).await;
        let mut first_err = None;
        for (h, result) in batch.iter().zip(results) {
            if let Err(e) = record(&mut prepared, &mut report, &h.name, Stage::Node, result) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    if !check {
        std::fs::remove_file(&prepared.journal_path).map_err(|e| UpgradeError::Journal {
            path: prepared.journal_path.clone(),
            source: e.into(),
        })?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Adds a host step's result to the report and the journal.
fn record(
    prepared: &mut Prepared,
    report: &mut Report,
    host: &str,
    stage: Stage,
    result: Result<HostReport, UpgradeError>,
) -> Result<(), UpgradeError> {
    let check = report.check;
    match result {
        Ok(r) => {
            progress(host, &format!("{stage}: {}", r.outcome.name()));
            report.hosts.push(r);
            if !check {
                prepared
                    .journal
                    .done
                    .entry(host.to_string())
                    .or_default()
                    .insert(stage);
                prepared.journal.failed = None;
                prepared.save()?;
            }
            Ok(())
        }
        Err(e) => {
            if !check {
                prepared.journal.failed = Some(format!("{host}: {}", stage.name()));
                prepared.save()?;
            }
            Err(e)
        }
    }
}

impl HostReport {
    fn done_before(host: &str, stage: Stage) -> HostReport {
        HostReport {
            host: host.to_string(),
            stage,
            outcome: Outcome::DoneBefore,
            changed: 0,
            restarted: Vec::new(),
            drain: None,
            drain_seconds: 0.0,
            seconds: 0.0,
        }
    }
}

/// What every host's roll shares.
struct Roll<'a> {
    cluster: &'a Cluster,
    opts: &'a ApplyOptions,
    force: bool,
    target: KubeVersion,
    running: &'a [Running],
    layout: NodeLayout,
}

/// The files of `units` that a roll replaces and a rollback restores: each unit's binary and
/// unit file, plus `extra`.
fn kept_files(layout: &NodeLayout, units: &[&str], extra: &[&str]) -> Vec<String> {
    units
        .iter()
        .flat_map(|u| [layout.bin(u), layout.service_file(u)])
        .chain(extra.iter().map(|f| f.to_string()))
        .collect()
}

/// The shell script that copies `files` (those that exist) into `dir`, replacing what it held.
fn keep_script(dir: &str, files: &[String]) -> String {
    format!(
        "set -e; d={dir}; rm -rf \"$d.new\"; mkdir -p \"$d.new\"; \
         for f in {}; do if [ -e \"$f\" ]; then cp -p \"$f\" \"$d.new/$(printf %s \"$f\" | tr / %)\"; fi; done; \
         rm -rf \"$d\"; mv \"$d.new\" \"$d\"",
        files.join(" ")
    )
}

/// The shell script that puts the files kept in `dir` back (renamed into place, so a running
/// binary is never written over) and restarts `units` (none: static pods, which the kubelet
/// replaces when their manifest comes back changed).
fn restore_script(dir: &str, files: &[String], units: &[&str]) -> String {
    let restart = if units.is_empty() {
        String::new()
    } else {
        format!(
            "; systemctl daemon-reload; systemctl restart {}",
            units.join(" ")
        )
    };
    format!(
        "set -e; d={dir}; test -d \"$d\"; \
         for f in {}; do s=\"$d/$(printf %s \"$f\" | tr / %)\"; \
           if [ -e \"$s\" ]; then cp -p \"$s\" \"$f.clusterkit-rollback\" && mv -f \"$f.clusterkit-rollback\" \"$f\"; fi; done\
         {restart}",
        files.join(" "),
    )
}

/// What tells whether a component was restarted: a systemd unit's InvocationID (it changes on
/// every start), or a static pod's manifest checksum and the id of its running container (the
/// kubelet replaces the pod, some seconds later, when its manifest changes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Instance {
    manifest: String,
    id: String,
}

/// How long the kubelet may take to replace or recreate one static pod.
const STATIC_POD_TIMEOUT: Duration = Duration::from_secs(180);

/// The [`Instance`] of each of `names` on the host, in `names`' order, read in one command:
/// static pods (`static_pods`) or systemd units.
async fn instances(
    exec: &dyn Executor,
    layout: &NodeLayout,
    names: &[&str],
    static_pods: bool,
) -> Result<Vec<Instance>, ExecError> {
    let lines: Vec<String> = names
        .iter()
        .map(|n| {
            if static_pods {
                format!(
                    "echo \"$(sha256sum < {} 2>/dev/null | cut -c1-64) $({} | head -n 1)\"",
                    layout.manifest(n),
                    NodeLayout::static_pod_container(n)
                )
            } else {
                format!("echo \"- $(systemctl show -p InvocationID --value {n})\"")
            }
        })
        .collect();
    let out = exec.sh(&lines.join("\n")).await?;
    Ok(out
        .lines()
        .map(|l| {
            let (manifest, id) = l.split_once(' ').unwrap_or((l, ""));
            Instance {
                manifest: manifest.to_string(),
                id: id.trim().to_string(),
            }
        })
        .collect())
}

impl Roll<'_> {
    fn stale(&self, host: &str, components: &[Component]) -> bool {
        components.iter().any(|c| {
            !self
                .running
                .iter()
                .any(|r| r.host == host && r.component == *c && r.version == self.target)
        })
    }

    /// Static-pod mode: the target's images (control plane, etcd, pause, kube-proxy) imported
    /// on every host (the `images` phase) before any manifest or the kube-proxy DaemonSet
    /// names them: an offline node could not pull them, and the DaemonSet moves every node's
    /// kube-proxy at once. Importing restarts nothing; a host that fails stops the upgrade
    /// before anything else is touched.
    async fn images_everywhere(&self) -> Result<(), UpgradeError> {
        progress(&self.cluster.name, "the target's images on every host");
        let hosts: Vec<&Host> = self.cluster.hosts.iter().collect();
        let plan = Plan::phases_on(Some("images"), &hosts)?;
        let report = phases::run(self.cluster, &plan, &self.install_opts()).await?;
        match report
            .hosts
            .iter()
            .find(|(_, r)| r.failed > 0 || r.error.is_some())
        {
            Some((host, r)) => Err(InstallError::host(
                host.clone(),
                "importing the target's images",
                r.error.clone().unwrap_or_else(|| "failed".into()),
            )
            .into()),
            None => Ok(()),
        }
    }

    /// Whether the control plane runs as static pods (and kube-proxy as kubeadm's DaemonSet).
    fn static_pods(&self) -> bool {
        self.cluster.kubernetes.control_plane_mode == ControlPlaneMode::StaticPod
    }

    /// Whether `component` runs on `exec`'s host now at another version than the target.
    async fn runs_older(
        &self,
        exec: &dyn Executor,
        component: Component,
    ) -> Result<bool, StepError> {
        let now = running::read(exec)
            .await
            .map_err(|e| step_err("reading the running versions", e))?;
        Ok(now
            .iter()
            .any(|r| r.component == component && r.version != self.target))
    }

    /// Restarts those of `names` (their [`Instance`]s `before` and `after` the phases) that the
    /// phases did not, and waits until each runs anew; the names it restarted itself. Units:
    /// those whose InvocationID did not change, restarted together. Static pods: one whose
    /// manifest changed is waited for until the kubelet has replaced its container; any other
    /// is recreated ([`restart_unit`]: its manifest moved aside and back).
    async fn restart(
        &self,
        exec: &SshExecutor,
        host: &Host,
        names: &[&str],
        (before, after): (&[Instance], &[Instance]),
        static_pods: bool,
    ) -> Result<Vec<String>, StepError> {
        let pairs = names.iter().zip(before.iter().zip(after));
        if !static_pods {
            let idle: Vec<&str> = pairs
                .filter(|(_, (b, a))| b == a)
                .map(|(n, _)| *n)
                .collect();
            if !idle.is_empty() {
                progress(&host.name, &format!("restarting {}", idle.join(", ")));
                exec.sh(&format!("systemctl restart {}", idle.join(" ")))
                    .await
                    .map_err(|e| step_err("restarting", e))?;
            }
            return Ok(idle.iter().map(|n| n.to_string()).collect());
        }
        // The static pods of one group (controller manager and scheduler) at once: each
        // waits for the kubelet on its own.
        let each = pairs.map(|(name, (b, a))| async move {
            if b.manifest != a.manifest {
                progress(
                    &host.name,
                    &format!("waiting for the kubelet to replace {name}"),
                );
                let wait = NodeLayout::wait_static_pod_replacing(
                    name,
                    &b.id,
                    STATIC_POD_TIMEOUT.as_secs(),
                );
                let out = exec
                    .run(&Command::new(wait).timeout(STATIC_POD_TIMEOUT + Duration::from_secs(30)))
                    .await
                    .map_err(|e| step_err("waiting for the kubelet", e))?;
                if !out.success() {
                    return Err(step_err(
                        "waiting for the kubelet",
                        clusterkit_core::exec::tail(&out.stderr_str()).to_string(),
                    ));
                }
                Ok(None)
            } else {
                progress(&host.name, &format!("recreating static pod {name}"));
                restart_unit(exec, name, STATIC_POD_TIMEOUT)
                    .await
                    .map_err(|e| step_err("recreating the static pod", e))?;
                Ok(Some(name.to_string()))
            }
        });
        Ok(futures::future::try_join_all(each)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    fn plan(&self, host: &Host, phases: &[&'static str]) -> Plan {
        Plan {
            steps: phases
                .iter()
                .map(|p| phases::Step {
                    phase: p,
                    hosts: vec![host.name.clone()],
                    why: None,
                    stop_if_failed: vec![host.name.clone()],
                })
                .collect(),
        }
    }

    fn install_opts(&self) -> InstallOptions {
        InstallOptions {
            phase: None,
            check: self.opts.check,
            resume: false,
            ..self.opts.install.clone()
        }
    }

    /// Runs `phases` on `host`; the tasks it changed, or the first host error.
    async fn converge(&self, host: &Host, phases: &[&'static str]) -> Result<u32, StepError> {
        let report = phases::run(self.cluster, &self.plan(host, phases), &self.install_opts())
            .await
            .map_err(|e| step_err("install phases", e))?;
        let mine = report.hosts.get(&host.name).cloned().unwrap_or_default();
        if let Some(error) = mine.error.filter(|_| mine.failed > 0) {
            return Err(step_err("install phases", error));
        }
        Ok(mine.changed)
    }

    /// Verifies that every one of `components` on `host` runs the target.
    async fn verify(&self, exec: &dyn Executor, components: &[Component]) -> Result<(), StepError> {
        let now = running::read(exec)
            .await
            .map_err(|e| step_err("reading the running versions", e))?;
        for c in components {
            match now.iter().find(|r| r.component == *c) {
                Some(r) if r.version == self.target => {}
                Some(r) => {
                    return Err(step_err(
                        "verifying the running versions",
                        format!("{c} still runs {} after its restart", r.version),
                    ))
                }
                None => {
                    return Err(step_err(
                        "verifying the running versions",
                        format!("{c} is not running"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Check mode: `phases` on `host` in check mode, reported as would-roll or would-verify.
    async fn check_only(
        &self,
        host: &Host,
        stage: Stage,
        roll: bool,
        phases: &[&'static str],
        started: Instant,
    ) -> Result<HostReport, UpgradeError> {
        let changed = self
            .converge(host, phases)
            .await
            .map_err(|e| e.on(host, stage, vec![]))?;
        Ok(self.report(host, stage, roll, changed, vec![], None, started))
    }

    /// The etcd step of one member: the `etcd` phase on the host (the bundle's etcd-server, or
    /// a static-pod member's manifest with the target's etcd image), then a restart when the
    /// phase did not restart the member and either the running process's binary was replaced
    /// on disk or `force_reroll` (a static pod whose manifest changed is waited for until the
    /// kubelet has replaced it; otherwise recreated); the whole cluster healthy (every member
    /// answering, a leader) before the next member.
    async fn etcd(&self, host: &Host) -> Result<HostReport, UpgradeError> {
        let started = Instant::now();
        let stage = Stage::Etcd;
        let unit = self.layout.units.etcd;
        let static_pod = crate::phases::etcd::static_pod(self.cluster, host);
        let (files, units) = if static_pod {
            (vec![self.layout.manifest(unit)], vec![])
        } else {
            (
                vec![
                    self.layout.etcd_binary.to_string(),
                    self.layout.service_file(unit),
                ],
                vec![unit],
            )
        };
        let dir = format!("{}/{}", self.layout.previous_dir, stage.name());
        let fail = |e: StepError, aftermath| e.on(host, stage, aftermath);
        if self.opts.check {
            return self.check_only(host, stage, true, &["etcd"], started).await;
        }
        progress(&host.name, &format!("{stage}: rolling"));
        let exec = connect(self.cluster, host).await?;
        let result = async {
            exec.sh(&keep_script(&dir, &files))
                .await
                .map_err(|e| step_err("keeping the previous files", e))?;
            let read = || async {
                instances(&exec, &self.layout, &[unit], static_pod)
                    .await
                    .map_err(|e| step_err("reading the member", e))
            };
            let before = read().await?;
            let changed = self.converge(host, &["etcd"]).await?;
            let after = read().await?;
            // A package upgrade replaces the binary under the running member, which keeps
            // running the old one until restarted: its executable then reads "(deleted)".
            let stale = !static_pod && {
                let exe = exec
                    .sh(&format!(
                        "readlink /proc/$(systemctl show -p MainPID --value {unit})/exe || true"
                    ))
                    .await
                    .map_err(|e| step_err("reading the running member", e))?;
                exe.trim().ends_with("(deleted)")
            };
            let restarted = if before != after || stale || self.force {
                self.restart(&exec, host, &[unit], (&before, &after), static_pod)
                    .await?
            } else {
                Vec::new()
            };
            let tls = crate::phases::etcd::ClientTls::load(self.cluster)
                .map_err(|e| step_err("the etcd client credentials", e))?;
            poll::wait_until(crate::phases::etcd::HEALTH_TIMEOUT, || {
                crate::phases::etcd::health(self.cluster, &tls)
            })
            .await
            .map_err(|e| step_err("waiting for a healthy etcd cluster", e))?;
            let rolled = before != after || !restarted.is_empty();
            Ok::<_, StepError>((changed, restarted, rolled))
        }
        .await;
        let out = match result {
            Ok((changed, restarted, rolled)) => {
                Ok(self.report(host, stage, rolled, changed, restarted, None, started))
            }
            Err(e) => {
                progress(&host.name, "rolling back");
                let aftermath = vec![match exec.sh(&restore_script(&dir, &files, &units)).await {
                    Ok(_) => "rolled back to the previous files".to_string(),
                    Err(re) => format!("rollback failed: {re}"),
                }];
                Err(fail(e, aftermath))
            }
        };
        exec.close().await;
        out
    }

    /// The control-plane step of one host: its components run by systemd or as static pods
    /// (the `control-plane` phase writes their units or manifests); kube-apiserver first,
    /// waited for until it answers `/readyz` on the host and the control plane is ready, then
    /// the controller manager and scheduler, until running processes lead.
    async fn control_plane(&self, host: &Host) -> Result<HostReport, UpgradeError> {
        let started = Instant::now();
        let stage = Stage::ControlPlane;
        let roll = self.force || self.stale(&host.name, &Component::CONTROL_PLANE);
        let names: Vec<&str> = Component::CONTROL_PLANE.iter().map(|c| c.name()).collect();
        let kubectl = self.layout.bin("kubectl");
        let static_pods = self.static_pods();
        let (files, units) = if static_pods {
            let mut files: Vec<String> = names.iter().map(|n| self.layout.manifest(n)).collect();
            files.push(kubectl);
            (files, vec![])
        } else {
            (kept_files(&self.layout, &names, &[&kubectl]), names.clone())
        };
        let dir = format!("{}/{}", self.layout.previous_dir, stage.name());
        if !self.opts.check {
            progress(
                &host.name,
                &format!("{stage}: {}", if roll { "rolling" } else { "converging" }),
            );
        }
        let fail = |e: StepError, aftermath| e.on(host, stage, aftermath);
        if self.opts.check {
            return self
                .check_only(host, stage, roll, &["control-plane"], started)
                .await;
        }
        let exec = connect(self.cluster, host).await?;
        let result = async {
            if roll {
                exec.sh(&keep_script(&dir, &files))
                    .await
                    .map_err(|e| step_err("keeping the previous files", e))?;
            }
            let read = || async {
                instances(&exec, &self.layout, &names, static_pods)
                    .await
                    .map_err(|e| step_err("reading the components", e))
            };
            let before = read().await?;
            // This host's leaders: restarted, they hold their leases until the leases run out.
            let mine: Vec<String> = control_plane::leaders(self.cluster)
                .await
                .map_err(|e| step_err("reading the leader leases", e))?
                .into_iter()
                .filter(|h| h.starts_with(&format!("{}_", host.name)))
                .collect();
            let changed = self.converge(host, &["control-plane"]).await?;
            let mut restarted = Vec::new();
            if roll {
                let after = read().await?;
                // The API server first; controller manager and scheduler once it is ready,
                // and then until running processes lead.
                restarted = self
                    .restart(
                        &exec,
                        host,
                        &names[..1],
                        (&before[..1], &after[..1]),
                        static_pods,
                    )
                    .await?;
                wait_apiserver_ready(&exec, APISERVER_READY_TIMEOUT)
                    .await
                    .map_err(|e| step_err("waiting for the API server", e))?;
                control_plane::wait_ready(self.cluster)
                    .await
                    .map_err(|e| step_err("waiting for the control plane", e))?;
                restarted.extend(
                    self.restart(
                        &exec,
                        host,
                        &names[1..],
                        (&before[1..], &after[1..]),
                        static_pods,
                    )
                    .await?,
                );
                progress(&host.name, "waiting for running leaders");
                control_plane::wait_ready_without(self.cluster, &mine)
                    .await
                    .map_err(|e| step_err("waiting for the controllers to lead", e))?;
                // With the local load balancer, every node takes the restarted API server back
                // in only once its checks pass again: the next host's API server stops after
                // that, or for that moment no backend would be in.
                tokio::time::sleep(crate::phases::load_balancer::readmit_delay(self.cluster)).await;
            }
            self.verify(&exec, &Component::CONTROL_PLANE).await?;
            Ok::<_, StepError>((changed, restarted))
        }
        .await;
        let out = match result {
            Ok((changed, restarted)) => {
                Ok(self.report(host, stage, roll, changed, restarted, None, started))
            }
            Err(e) => {
                let mut aftermath = Vec::new();
                if roll {
                    progress(&host.name, "rolling back");
                    match exec.sh(&restore_script(&dir, &files, &units)).await {
                        Err(re) => aftermath.push(format!("rollback failed: {re}")),
                        Ok(_) => match control_plane::wait_ready(self.cluster).await {
                            Ok(()) => aftermath.push("rolled back to the previous files".into()),
                            Err(we) => aftermath.push(format!(
                                "rolled back, but the control plane is not ready: {we}"
                            )),
                        },
                    }
                }
                Err(fail(e, aftermath))
            }
        };
        exec.close().await;
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        host: &Host,
        stage: Stage,
        roll: bool,
        changed: u32,
        restarted: Vec<String>,
        drain: Option<DrainPlan>,
        started: Instant,
    ) -> HostReport {
        let outcome = match (self.opts.check, roll) {
            (false, true) => Outcome::Rolled,
            (false, false) => Outcome::Verified,
            (true, true) => Outcome::WouldRoll,
            (true, false) => Outcome::WouldVerify,
        };
        HostReport {
            host: host.name.clone(),
            stage,
            outcome,
            changed,
            restarted,
            drain,
            drain_seconds: 0.0,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The kubelet and kube-proxy step of one host.
    async fn node(&self, client: &kube::Client, host: &Host) -> Result<HostReport, UpgradeError> {
        let started = Instant::now();
        let stage = Stage::Node;
        let comps = [Component::Kubelet, Component::KubeProxy];
        let roll = self.force || self.stale(&host.name, &comps);
        // In static-pod mode kube-proxy is kubeadm's DaemonSet, not a unit.
        let proxy_pod = self.static_pods();
        let units: Vec<&str> = comps
            .iter()
            .filter(|c| !(proxy_pod && **c == Component::KubeProxy))
            .map(|c| c.name())
            .collect();
        let files = kept_files(
            &self.layout,
            &units,
            &[self.layout.kubelet_config, self.layout.kube_proxy_config],
        );
        let dir = format!("{}/{}", self.layout.previous_dir, stage.name());
        let fail = |e: StepError, aftermath| e.on(host, stage, aftermath);
        let drain_opts = DrainOptions {
            force: false,
            delete_emptydir_data: self.opts.delete_emptydir_data,
            check: self.opts.check,
            timeout: self.opts.drain_timeout,
        };
        if self.opts.check {
            let drain = if roll {
                Some(
                    node::drain(self.cluster, client, &host.name, drain_opts)
                        .await
                        .map_err(|e| fail(step_err("draining", e), vec![]))?,
                )
            } else {
                None
            };
            let changed = self
                .converge(host, &["join", "addons"])
                .await
                .map_err(|e| fail(e, vec![]))?;
            return Ok(self.report(host, stage, roll, changed, vec![], drain, started));
        }
        if !roll {
            progress(&host.name, &format!("{stage}: converging"));
            let changed = self
                .converge(host, &["join", "addons"])
                .await
                .map_err(|e| fail(e, vec![]))?;
            return Ok(self.report(host, stage, roll, changed, vec![], None, started));
        }
        progress(&host.name, &format!("{stage}: cordoning and draining"));
        let drain_started = Instant::now();
        let drained = match node::drain(self.cluster, client, &host.name, drain_opts).await {
            Ok(plan) => plan,
            Err(e) => {
                let aftermath = vec![uncordon(client, &host.name).await];
                return Err(fail(step_err("draining", e), aftermath));
            }
        };
        let drain_seconds = drain_started.elapsed().as_secs_f64();
        progress(
            &host.name,
            &format!(
                "drained in {drain_seconds:.1}s (evicted: {}); rolling",
                if drained.evict.is_empty() {
                    "none".to_string()
                } else {
                    drained.evict.join(", ")
                }
            ),
        );
        let mut saved = false;
        let mut exec = None;
        let result = async {
            let ssh = connect(self.cluster, host)
                .await
                .map_err(|e| step_err("connecting", e))?;
            let exec: &SshExecutor = exec.insert(ssh);
            exec.sh(&keep_script(&dir, &files))
                .await
                .map_err(|e| step_err("keeping the previous files", e))?;
            saved = true;
            let read = || async {
                instances(exec, &self.layout, &units, false)
                    .await
                    .map_err(|e| step_err("reading the units", e))
            };
            let before = read().await?;
            let changed = self.converge(host, &["join", "addons"]).await?;
            let after = read().await?;
            let mut restarted = self
                .restart(exec, host, &units, (&before, &after), false)
                .await?;
            if proxy_pod && (self.force || self.runs_older(exec, Component::KubeProxy).await?) {
                progress(&host.name, "replacing the kube-proxy pod");
                crate::phases::addons::replace_kube_proxy_pod(client, &host.name)
                    .await
                    .map_err(|e| step_err("replacing the kube-proxy pod", e))?;
                restarted.push(Component::KubeProxy.name().to_string());
            }
            progress(
                &host.name,
                "waiting for kubelet and kube-proxy to serve, the Node Ready at the target",
            );
            wait_healthz(client, &host.name, self.layout.ports.kube_proxy_healthz)
                .await
                .map_err(|e| step_err("waiting for kubelet and kube-proxy", e))?;
            wait_node(client, &host.name, self.target)
                .await
                .map_err(|e| step_err("waiting for the Node", e))?;
            self.verify(exec, &comps).await?;
            Ok::<_, StepError>((changed, restarted))
        }
        .await;
        let out = match result {
            Ok((changed, restarted)) => match set_unschedulable(client, &host.name, false).await {
                Ok(()) => Ok(HostReport {
                    drain_seconds,
                    ..self.report(
                        host,
                        stage,
                        roll,
                        changed,
                        restarted,
                        Some(drained),
                        started,
                    )
                }),
                Err(e) => Err(fail(step_err("uncordoning", e), vec![])),
            },
            Err(e) => {
                let mut aftermath = Vec::new();
                if let (true, Some(exec)) = (saved, exec.as_ref()) {
                    progress(&host.name, "rolling back");
                    aftermath.push(match exec.sh(&restore_script(&dir, &files, &units)).await {
                        Ok(_) => "rolled back to the previous binaries and configurations".into(),
                        Err(re) => format!("rollback failed: {re}"),
                    });
                }
                aftermath.push(uncordon(client, &host.name).await);
                Err(fail(e, aftermath))
            }
        };
        if let Some(exec) = exec {
            exec.close().await;
        }
        out
    }
}

/// Sets `spec.unschedulable` of a Node.
async fn set_unschedulable(client: &kube::Client, node: &str, on: bool) -> Result<(), Cause> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": on } })),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.into())
}

/// Uncordons a node after a failure; says how that went, for the error's aftermath.
async fn uncordon(client: &kube::Client, node: &str) -> String {
    match set_unschedulable(client, node, false).await {
        Ok(()) => format!("{node} uncordoned"),
        Err(e) => format!("uncordoning {node} failed: {e}"),
    }
}

/// Waits until the node's kubelet and kube-proxy answer `/healthz` through the API server:
/// after a restart, the new processes serve (systemd stopped the old ones first).
async fn wait_healthz(client: &kube::Client, node: &str, kube_proxy: u16) -> Result<(), NotReady> {
    poll::wait_until(NODE_READY_TIMEOUT, || async {
        join::probe_healthz(client, node, None).await?;
        join::probe_healthz(client, node, Some(kube_proxy)).await
    })
    .await
}

/// Waits until the Node is Ready and its kubelet reports `target`.
async fn wait_node(client: &kube::Client, node: &str, target: KubeVersion) -> Result<(), NotReady> {
    let nodes: Api<Node> = Api::all(client.clone());
    poll::wait_until(NODE_READY_TIMEOUT, || async {
        let n = nodes
            .get(node)
            .await
            .map_err(|e| NotReady::failed(format!("reading node {node}"), e))?;
        let status = n.status.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let version = status
            .node_info
            .map(|i| i.kubelet_version)
            .unwrap_or_default();
        if !ready {
            return Err(NotReady::Seen(format!("{node} is not Ready")));
        }
        if KubeVersion::parse(&version).ok() != Some(target) {
            return Err(NotReady::Seen(format!(
                "{node} reports kubelet {version}, not {target}"
            )));
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit_core::exec::local::LocalExecutor;

    #[tokio::test]
    async fn kept_files_come_back_and_missing_ones_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("bin-a");
        let b = root.path().join("etc/b.conf");
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::write(&a, "old a").unwrap();
        std::fs::write(&b, "old b").unwrap();
        let missing = root.path().join("not-there");
        let files: Vec<String> = [&a, &b, &missing]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let dir = root.path().join("previous/node").display().to_string();
        let exec = LocalExecutor::new("here", Duration::from_secs(30));
        exec.sh(&keep_script(&dir, &files)).await.unwrap();
        std::fs::write(&a, "new a").unwrap();
        std::fs::write(&b, "new b").unwrap();
        // With no unit to restart (systemctl is not here), the restore puts the files back.
        let script = restore_script(&dir, &files, &[]);
        exec.sh(&script).await.unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old b");
        assert!(
            !missing.exists(),
            "a file that did not exist is not created"
        );
        // Keeping again replaces what was kept.
        std::fs::write(&a, "newer a").unwrap();
        exec.sh(&keep_script(&dir, &files)).await.unwrap();
        std::fs::write(&a, "x").unwrap();
        exec.sh(&script).await.unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "newer a");
    }

    #[tokio::test]
    async fn restoring_without_kept_files_fails() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("never-kept").display().to_string();
        let exec = LocalExecutor::new("here", Duration::from_secs(30));
        let err = exec
            .sh(&restore_script(&dir, &["/nonexistent".into()], &["x"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("here"), "{err}");
    }

    #[test]
    fn a_host_error_names_host_stage_step_and_aftermath() {
        let e = UpgradeError::Host {
            host: "node2".into(),
            stage: Stage::Node,
            step: "connecting",
            source: "connection refused".into(),
            aftermath: vec!["node2 uncordoned".into()],
        };
        assert_eq!(
            e.to_string(),
            "node2: kubelet and kube-proxy: connecting failed: connection refused (then: node2 uncordoned)"
        );
    }

    #[test]
    fn the_journal_round_trips_its_stages() {
        let mut j = Journal {
            target: "v1.20.2".into(),
            ..Default::default()
        };
        j.done
            .entry("node1".into())
            .or_default()
            .extend([Stage::ControlPlane, Stage::Node]);
        let text = serde_json::to_string(&j).unwrap();
        assert!(text.contains("\"control-plane\""), "{text}");
        let back: Journal = serde_json::from_str(&text).unwrap();
        assert_eq!(back.done["node1"].len(), 2);
    }
}
