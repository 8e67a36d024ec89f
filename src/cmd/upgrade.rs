//! `clusterkit upgrade plan --to vX.Y.Z`: what runs on every host (each component's running
//! process, see `clusterkit_installer::running`), and either the moves that take the cluster to
//! the target in roll order or every reason the version-skew policy refuses it
//! (`clusterkit_installer::skew`). With an offline bundle, its Kubernetes release is reported
//! (whether it carries the target's binaries) and counts as the newest patch of the running
//! minor the policy asks to move to first. Changes nothing. `upgrade apply` does not exist yet.

use anyhow::Context;
use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::fanout;
use clusterkit_core::release::KubeVersion;
use clusterkit_installer::running;
use clusterkit_installer::skew::{self, Running, Step};

use super::{Global, Selection};

#[derive(clap::Subcommand)]
pub enum UpgradeCommand {
    /// Read what runs on every host and print the moves to --to, or why the version-skew
    /// policy refuses them (exits non-zero then). Changes nothing.
    Plan(PlanArgs),
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
        let UpgradeCommand::Plan(a) = self;
        a.to.check_supported().context("--to")?;
        let cluster = super::load_cluster(&global)?;
        let hosts = a.selection.pick(&cluster, &global)?;
        let fan = a.selection.fanout(&cluster, "read versions");
        let results = fan
            .run(super::ssh_items(&cluster, &hosts), |target| async move {
                let ssh = SshExecutor::connect(target?).await?;
                let found = running::read(&ssh).await;
                ssh.close().await;
                Ok::<_, anyhow::Error>(found?)
            })
            .await;
        for r in &results {
            if let Err(e) = &r.result {
                eprintln!("{}: {e:#}", r.host);
            }
        }
        fanout::check(&results)?;
        let running: Vec<Running> = results
            .into_iter()
            .filter_map(|r| r.result.ok())
            .flatten()
            .collect();
        let bundle = clusterkit_installer::phases::bundle(&cluster)?.map(|b| {
            let kubernetes = b
                .manifest
                .kubernetes_version
                .as_deref()
                .and_then(|v| KubeVersion::parse(v).ok());
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
