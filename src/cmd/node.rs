//! `clusterkit node`: add or remove a node, touching only what changes.
//!
//! - `node add HOST`: HOST is listed in cluster.yaml and not yet a Node; the install phases run
//!   for it alone (etcd and control-plane only when it has those roles), and every node gets the
//!   route to its pod slice. Prints the per-host summary and, when no host failed, the
//!   readiness report like `install` (every node Ready, the new one included, pod traffic
//!   between every pair of nodes); exits non-zero when either says so.
//! - `node remove HOST`: refuses to remove the last control-plane host, the one the endpoint
//!   points at, or an etcd member whose removal would break quorum; otherwise cordons and
//!   drains it (DaemonSet and mirror pods stay), removes its etcd member, deletes its Node,
//!   removes its pod routes from the other nodes, and resets it. Asks for confirmation (type
//!   `yes`) unless `--yes`; `--check` only reports.
//!
//! The library side is `clusterkit_installer::node`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clusterkit_installer::node::{self, RemoveOptions};
use clusterkit_installer::phases::InstallOptions;
use clusterkit_installer::readiness;

use super::Global;

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Install a host listed in cluster.yaml into the running cluster.
    Add(AddArgs),
    /// Drain a node, take it out of etcd and the API, remove its routes, reset it.
    Remove(RemoveArgs),
}

#[derive(clap::Args)]
pub struct AddArgs {
    /// The host's name in cluster.yaml.
    host: String,

    /// Change nothing; report what would change.
    #[arg(long)]
    check: bool,

    /// Write one JSON event per task per host to this file.
    #[arg(long)]
    events: Option<PathBuf>,

    /// Directory with playbooks/ and templates/ overriding the built-in ones.
    #[arg(long)]
    library: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The host's name in cluster.yaml.
    host: String,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,

    /// Report what would be done; change nothing.
    #[arg(long)]
    check: bool,

    /// Also evict pods that no controller will recreate (they are lost).
    #[arg(long)]
    force: bool,

    /// Delete etcd's data on the host instead of moving it aside.
    #[arg(long)]
    purge: bool,

    /// How long the drain may take, in seconds (1 to 86400).
    #[arg(long, default_value_t = node::DRAIN_TIMEOUT.as_secs(), value_parser = super::flags::wait_secs())]
    drain_timeout: u64,

    /// Directory with playbooks/ and templates/ overriding the built-in ones.
    #[arg(long)]
    library: Option<PathBuf>,
}

impl NodeCommand {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        match self {
            NodeCommand::Add(a) => {
                let opts = InstallOptions {
                    phase: None,
                    check: a.check,
                    resume: false,
                    events: a.events,
                    library: a.library.into_iter().collect(),
                    concurrency: None,
                    progress: true,
                    verbose: global.verbose > 0,
                    verify_all: false,
                };
                let report = node::add(&cluster, &a.host, &opts)
                    .await
                    .with_context(|| format!("node add {}", a.host))?;
                if a.check || !report.failed_hosts().is_empty() {
                    return super::install::print_report(&report, global.output);
                }
                // The phases succeeding is not the node working: it must register, report
                // Ready and carry pod traffic to and from the others, as after `install`.
                eprintln!("readiness: nodes, components, a probe pod on every node…");
                let ready = readiness::check(&cluster, None)
                    .await
                    .context("readiness report")?;
                super::install::print_install(&report, Some(&ready), global.output)
            }
            NodeCommand::Remove(r) => {
                node::find_host(&cluster, &r.host)?;
                if !r.check && !r.yes {
                    confirm(&cluster.name, &r.host)?;
                }
                let opts = RemoveOptions {
                    check: r.check,
                    force: r.force,
                    purge: r.purge,
                    drain_timeout: Duration::from_secs(r.drain_timeout),
                    install: InstallOptions {
                        check: r.check,
                        library: r.library.into_iter().collect(),
                        progress: true,
                        verbose: global.verbose > 0,
                        ..Default::default()
                    },
                };
                let report = node::remove(&cluster, &r.host, &opts)
                    .await
                    .with_context(|| format!("node remove {}", r.host))?;
                global
                    .output
                    .print(&report, || node::remove_summary(&report))?;
                if let Some(n) = &report.network {
                    let failed = n.failed_hosts();
                    if !failed.is_empty() {
                        anyhow::bail!(
                            "removing the pod routes failed on {}; rerun `clusterkit install --phase network` once {} is out of cluster.yaml",
                            failed.join(", "),
                            r.host
                        );
                    }
                }
                if let Some(e) = &report.reset_error {
                    anyhow::bail!(
                        "{} is out of the cluster but its reset failed: {e}; run `clusterkit reset --hosts {}` once it is reachable",
                        r.host,
                        r.host
                    );
                }
                if !r.check {
                    eprintln!(
                        "{} removed; take it out of {} now (a later install would add it again)",
                        r.host,
                        global.config.display()
                    );
                }
                Ok(())
            }
        }
    }
}

/// Asks on the terminal; without one, `--yes` is required.
fn confirm(cluster: &str, host: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    eprint!(
        "This removes {host} from cluster {cluster}: drains it, removes its etcd member and Node, \
         and resets it (stops Kubernetes and etcd, removes {}).\nType 'yes' to continue: ",
        clusterkit_core::layout::NodeLayout::DEFAULT.kubernetes_dir
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
    if read == 0 && !stdin.is_terminal() {
        anyhow::bail!(
            "node remove needs confirmation: pass --yes when stdin is not a terminal; nothing was changed"
        );
    }
    if answer.trim() != "yes" {
        anyhow::bail!("node remove aborted; nothing was changed");
    }
    Ok(())
}
