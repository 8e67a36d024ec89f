//! `clusterkit monitor`: generate the monitoring configs (`config`), run the exporter
//! (`serve`), and install the monitoring stack onto the cluster's hosts (`deploy`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use clusterkit_monitor::generate::{self, Options};
use clusterkit_monitor::Topology;

use super::{Global, OutputFormat};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: MonitorCommand,
}

#[derive(Subcommand)]
enum MonitorCommand {
    /// Write prometheus.yml, targets, alert rules, alertmanager.yml and Grafana provisioning.
    Config(ConfigArgs),
    /// Run the exporter (etcd, control plane, nodes, certificates, backups).
    Serve(ServeArgs),
    /// Install node-exporter, Prometheus and Alertmanager on the cluster's hosts.
    Deploy(DeployArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Directory to write into (created if missing).
    #[arg(short = 'o', long = "output-dir")]
    output_dir: PathBuf,
    /// Absolute directory where these files will live when used (default: the output
    /// directory); Alertmanager and Grafana need a few absolute paths.
    #[arg(long)]
    install_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Listen address (default: monitor.listen from cluster.yaml).
    #[arg(long)]
    listen: Option<String>,
    /// Add this many synthetic series (for benchmarks only).
    #[arg(long, hide = true, env = "CLUSTERKIT_MONITOR_SYNTHETIC_SERIES")]
    synthetic_series: Option<usize>,
}

#[derive(clap::Args)]
struct DeployArgs {}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self.command {
            MonitorCommand::Config(args) => config(args, &global),
            MonitorCommand::Serve(args) => serve(args, &global).await,
            MonitorCommand::Deploy(_) => anyhow::bail!(
                "`clusterkit monitor deploy` is not implemented yet: it needs the SSH executor and the \
                 offline bundle. Meanwhile run `clusterkit monitor config -o DIR` and install \
                 Prometheus/Alertmanager with DIR as their configuration."
            ),
        }
    }
}

fn load(global: &Global) -> anyhow::Result<Topology> {
    Topology::load(&global.config)
        .with_context(|| format!("cannot use {}", global.config.display()))
}

fn config(args: ConfigArgs, global: &Global) -> anyhow::Result<()> {
    let topology = load(global)?;
    let report = generate::generate(
        &topology,
        &args.output_dir,
        &Options {
            install_dir: args.install_dir,
        },
    )
    .with_context(|| {
        format!(
            "cannot write the monitoring configs into {}",
            args.output_dir.display()
        )
    })?;
    for w in &report.warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    match global.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "changed": report.changed, "unchanged": report.unchanged, "warnings": report.warnings })
        ),
        OutputFormat::Table | OutputFormat::Yaml => {
            for f in &report.changed {
                println!("changed    {f}");
            }
            for f in &report.unchanged {
                println!("unchanged  {f}");
            }
            println!(
                "{} changed, {} unchanged in {}",
                report.changed.len(),
                report.unchanged.len(),
                args.output_dir.display()
            );
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs, global: &Global) -> anyhow::Result<()> {
    let _ = (args.listen, args.synthetic_series, load(global)?);
    anyhow::bail!("`clusterkit monitor serve` is not available yet")
}
