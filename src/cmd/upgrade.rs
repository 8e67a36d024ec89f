//! `clusterkit upgrade plan --to vX.Y.Z`: what runs on every host (each component's running
//! process, see `clusterkit_installer::running`), and either the moves that take the cluster to
//! the target in roll order or every reason the version-skew policy refuses it
//! (`clusterkit_installer::skew`). With an offline bundle, its Kubernetes release is reported
//! (whether it carries the target's binaries) and counts as the newest patch of the running
//! minor the policy asks to move to first. kubectl — each control-plane host's and this
//! machine's — is read too and warned about when it would leave the policy's ±1 minor of the
//! API servers. Changes nothing.
//!
//! `clusterkit upgrade apply`: an etcd backup (verified) and then the roll of
//! `clusterkit_installer::upgrade`, with its report on stdout and progress on stderr.

use anyhow::Context;
use clusterkit_core::config::Role;
use clusterkit_core::fanout;
use clusterkit_core::release::KubeVersion;
use clusterkit_installer::running;
use clusterkit_installer::skew::{self, Running, Step};

use super::{Global, PlaybookFlags, Selection};

#[derive(clap::Subcommand)]
pub enum UpgradeCommand {
    /// Read what runs on every host and print the moves to --to, or why the version-skew
    /// policy refuses them (exits non-zero then). Changes nothing.
    Plan(PlanArgs),
    /// Move the cluster to cluster.yaml's kubernetes.version: an etcd backup first, then the
    /// control-plane hosts one at a time, then every node drained, upgraded and uncordoned in
    /// batches. A failed host is rolled back and uncordoned; --resume continues from it.
    Apply(ApplyArgs),
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The target release: cluster.yaml's kubernetes.version (default), said again to confirm.
    #[arg(long)]
    to: Option<KubeVersion>,

    /// Roll every host even where everything already runs the target (restarts, drains).
    #[arg(long)]
    force_reroll: bool,

    /// Also roll the etcd members (the bundle's etcd-server), one at a time before the control
    /// plane, each with the whole cluster healthy before the next.
    #[arg(long)]
    etcd: bool,

    /// Nodes drained and upgraded at once, 1 to 1024.
    #[arg(long, default_value_t = 1, value_parser = super::flags::concurrency())]
    max_unavailable: usize,

    /// How long one node's drain may take, in seconds (1 to 86400); a disruption budget that
    /// still refuses then is named in the error.
    #[arg(long, default_value_t = clusterkit_installer::node::DRAIN_TIMEOUT.as_secs(), value_parser = super::flags::wait_secs())]
    drain_timeout: u64,

    /// Evict pods with emptyDir volumes too (their data is lost).
    #[arg(long)]
    delete_emptydir_data: bool,

    /// Do not take the etcd backup first (there is then nothing to restore if it goes wrong).
    #[arg(long)]
    skip_backup: bool,

    #[command(flatten)]
    run: PlaybookFlags,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The target release, e.g. v1.21.14.
    #[arg(long)]
    to: KubeVersion,

    #[command(flatten)]
    selection: Selection,
}

/// `upgrade plan`'s result (`-o json|yaml`).
#[derive(serde::Serialize)]
struct Plan {
    target: KubeVersion,
    running: Vec<Running>,
    steps: Vec<Step>,
    refused: Vec<String>,
    /// The offline bundle's Kubernetes release, when packages come from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<BundleRelease>,
    /// The etcd release kubeadm's table pairs with the target (`upgrade apply` moves etcd to
    /// the bundle's only with `--etcd`).
    etcd_expected: &'static str,
    /// Every kubectl found: each control-plane host's (clusterkit's, replaced with its API
    /// server) and this machine's on `PATH`.
    kubectl: Vec<Kubectl>,
    /// What the policy does not support but does not refuse: a kubectl more than one minor
    /// from an API server now or after the roll.
    warnings: Vec<String>,
}

/// Where [`Kubectl::place`] is this machine rather than a host.
const LOCAL: &str = "this machine";

/// One kubectl and its client version.
#[derive(serde::Serialize)]
struct Kubectl {
    place: String,
    version: KubeVersion,
}

/// The client version of the kubectl on this machine's `PATH`; `None` when there is none (or
/// it does not answer `version --client -o json`).
fn local_kubectl() -> Option<KubeVersion> {
    let out = std::process::Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    running::kubectl_version(&String::from_utf8_lossy(&out.stdout))
}

/// What the offline bundle carries, for the plan.
#[derive(serde::Serialize)]
struct BundleRelease {
    /// The release its Kubernetes binaries report; `None`: it has none.
    kubernetes: Option<KubeVersion>,
    /// Whether those are the target's: `upgrade apply` needs them in the bundle.
    has_target: bool,
}

impl UpgradeCommand {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self {
            UpgradeCommand::Plan(a) => a.run(global).await,
            UpgradeCommand::Apply(a) => a.run(global).await,
        }
    }
}

impl ApplyArgs {
    async fn run(self, global: Global) -> anyhow::Result<()> {
        use clusterkit_installer::upgrade::{self, ApplyOptions};
        let cluster = super::load_cluster(&global)?;
        let target = self.to.unwrap_or(cluster.kubernetes.version);
        target.check_supported().context("--to")?;
        let opts = ApplyOptions {
            target,
            force_reroll: self.force_reroll,
            etcd: self.etcd,
            resume: self.run.resume,
            check: self.run.check,
            max_unavailable: self.max_unavailable,
            drain_timeout: std::time::Duration::from_secs(self.drain_timeout),
            delete_emptydir_data: self.delete_emptydir_data,
            install: clusterkit_installer::phases::InstallOptions {
                check: self.run.check,
                events: self.run.events,
                library: self.run.library.into_iter().collect(),
                progress: true,
                verbose: global.verbose > 0,
                ..Default::default()
            },
        };
        let mut prepared = upgrade::prepare(&cluster, &opts).await?;
        for m in &prepared.moves {
            eprintln!("upgrade: {}: {} {} → {}", m.host, m.component, m.from, m.to);
        }
        if opts.check || self.skip_backup {
            if self.skip_backup && !opts.check {
                eprintln!("upgrade: --skip-backup: no etcd backup is taken");
            }
        } else if let Some(id) = prepared.backup() {
            eprintln!("upgrade: etcd backup {id} (taken before the interrupted run)");
        } else {
            eprintln!("upgrade: taking an etcd backup");
            let id = super::backup::etcd_backup_verified(&cluster)
                .await
                .context("the etcd backup before the upgrade (pass --skip-backup to go without)")?;
            eprintln!("upgrade: etcd backup {id} taken and verified");
            prepared.record_backup(&id)?;
        }
        let report = upgrade::apply(&cluster, prepared, &opts).await?;
        if opts.check {
            global.output.print(&report, || report.table())?;
            return Ok(());
        }
        eprintln!("readiness: nodes, components, a probe pod on every node…");
        let ready = clusterkit_installer::readiness::check(&cluster, None)
            .await
            .context("readiness report")?;
        super::install::print_with_readiness(&report, || report.table(), &ready, global.output)?;
        super::install::fail_unless_ready(&ready, "upgraded, but ")
    }
}

impl PlanArgs {
    async fn run(self, global: Global) -> anyhow::Result<()> {
        let a = self;
        a.to.check_supported().context("--to")?;
        let cluster = super::load_cluster(&global)?;
        let hosts = a.selection.pick(&cluster, &global)?;
        let fan = a.selection.fanout(&cluster, "read versions");
        let kubectl_path =
            clusterkit_core::layout::NodeLayout::from_cluster(&cluster).bin("kubectl");
        let results = running::read_hosts(&cluster, &hosts, &fan, |h| {
            if h.has_role(Role::ControlPlane) {
                running::kubectl_script(&kubectl_path)
            } else {
                String::new()
            }
        })
        .await;
        for r in &results {
            if let Err(e) = &r.result {
                eprintln!("{}: {e:#}", r.host);
            }
        }
        fanout::check(&results)?;
        let mut running = Vec::new();
        let mut kubectl = Vec::new();
        for r in results {
            if let Ok((found, also)) = r.result {
                running.extend(found);
                if let Some(version) = running::kubectl_version(&also) {
                    kubectl.push(Kubectl {
                        place: r.host,
                        version,
                    });
                }
            }
        }
        kubectl.extend(local_kubectl().map(|version| Kubectl {
            place: LOCAL.to_string(),
            version,
        }));
        // A control-plane host's kubectl is replaced by the target's with its API server, so
        // only this machine's can be too far from the target after the roll.
        let warnings = kubectl
            .iter()
            .filter_map(|k| skew::kubectl(&k.place, k.version, &running, a.to))
            .filter(|s| !s.after_roll || s.place == LOCAL)
            .map(|s| s.to_string())
            .collect();
        let bundle = clusterkit_installer::phases::bundle(&cluster)?.map(|b| {
            let kubernetes = b.manifest.kubernetes_release();
            BundleRelease {
                kubernetes,
                has_target: kubernetes == Some(a.to),
            }
        });
        let newest_patch = bundle.as_ref().and_then(|b| b.kubernetes);
        let (steps, refused) = match skew::plan(&running, a.to, newest_patch) {
            Ok(steps) => (steps, Vec::new()),
            Err(r) => (Vec::new(), r.iter().map(|r| r.to_string()).collect()),
        };
        let plan = Plan {
            target: a.to,
            running,
            steps,
            refused,
            bundle,
            etcd_expected: clusterkit_core::release::images(a.to.minor, a.to.patch).etcd_version(),
            kubectl,
            warnings,
        };
        global.output.print(&plan, || table(&plan))?;
        if !plan.refused.is_empty() {
            anyhow::bail!(
                "the version-skew policy refuses {}:\n  {}",
                plan.target,
                plan.refused.join("\n  ")
            );
        }
        Ok(())
    }
}

fn table(plan: &Plan) -> String {
    let mut out = String::from("RUNNING\n");
    for r in &plan.running {
        out.push_str(&format!(
            "  {:<12} {:<24} {}\n",
            r.host, r.component, r.version
        ));
    }
    if plan.steps.is_empty() && plan.refused.is_empty() {
        out.push_str(&format!(
            "everything runs {}: nothing to move\n",
            plan.target
        ));
    } else if !plan.steps.is_empty() {
        out.push_str(&format!("MOVES TO {} (in this order)\n", plan.target));
        for (i, s) in plan.steps.iter().enumerate() {
            out.push_str(&format!(
                "  {:>3}. {:<12} {:<24} {} → {}\n",
                i + 1,
                s.host,
                s.component,
                s.from,
                s.to
            ));
        }
    }
    for k in &plan.kubectl {
        out.push_str(&format!(
            "  {:<12} {:<24} {}\n",
            k.place, "kubectl", k.version
        ));
    }
    out.push_str(&format!(
        "etcd: kubeadm pairs {} with etcd {}; upgrade apply moves etcd to the bundle's only with \
         --etcd\n",
        plan.target, plan.etcd_expected
    ));
    for w in &plan.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    if let Some(b) = plan.bundle.as_ref().filter(|b| !b.has_target) {
        let carries = b
            .kubernetes
            .map_or("no Kubernetes binaries".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "the bundle carries {carries}, not {}: build one with `clusterkit bundle build \
             --kubernetes {}` before the upgrade\n",
            plan.target, plan.target
        ));
    }
    out
}
