//! `clusterkit monitor`: generate the monitoring configs (`config`), run the exporter
//! (`serve`), and install the monitoring stack onto the cluster's hosts (`deploy`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use clusterkit_monitor::duration::PromDuration;
use clusterkit_monitor::generate::{self, Options};
use clusterkit_monitor::Topology;

use std::fmt::Write as _;

use super::Global;

#[derive(Subcommand)]
pub enum MonitorCommand {
    /// Write prometheus.yml, targets, alert rules, alertmanager.yml and Grafana provisioning.
    Config(ConfigArgs),
    /// Run the exporter (etcd, control plane, nodes, certificates, backups).
    Serve(ServeArgs),
    /// Install node-exporter, Prometheus and Alertmanager on the cluster's hosts.
    Deploy(DeployArgs),
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Directory to write into (created if missing). (`-o` is the global output format.)
    #[arg(short = 'd', long = "dir", visible_alias = "output-dir")]
    output_dir: PathBuf,
    /// Absolute directory where these files will live when used (default: the output
    /// directory); Alertmanager and Grafana need a few absolute paths.
    #[arg(long)]
    install_dir: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

/// Command-line tuning: Prometheus intervals (override `monitor.intervals.scrape_secs` /
/// `evaluation_secs`), per-alert pending durations and Alertmanager grouping (not in
/// cluster.yaml yet).
#[derive(clap::Args)]
struct Tuning {
    /// Prometheus scrape interval (e.g. 15s).
    #[arg(long, value_parser = parse_duration)]
    scrape_interval: Option<PromDuration>,
    /// Prometheus rule evaluation interval (e.g. 15s).
    #[arg(long, value_parser = parse_duration)]
    evaluation_interval: Option<PromDuration>,
    /// Override an alert's `for:` duration, e.g. `--alert-for EtcdMembersDown=1m` (repeatable).
    #[arg(long = "alert-for", value_parser = parse_alert_for)]
    alert_for: Vec<(String, PromDuration)>,
    /// Alertmanager group_wait (default 30s).
    #[arg(long, value_parser = parse_duration)]
    group_wait: Option<PromDuration>,
    /// Alertmanager group_interval (default 5m).
    #[arg(long, value_parser = parse_duration)]
    group_interval: Option<PromDuration>,
}

impl Tuning {
    /// The tuning, checked against the alerts clusterkit ships.
    fn checked(&self, topology: &Topology) -> anyhow::Result<generate::Tuning> {
        let tuning = generate::Tuning {
            scrape_interval: self.scrape_interval,
            evaluation_interval: self.evaluation_interval,
            alert_for: self.alert_for.iter().cloned().collect(),
            group_wait: self.group_wait,
            group_interval: self.group_interval,
        };
        tuning.check(topology)?;
        Ok(tuning)
    }
}

fn parse_duration(s: &str) -> Result<PromDuration, String> {
    PromDuration::parse(s).map_err(|e| e.to_string())
}

fn parse_alert_for(s: &str) -> Result<(String, PromDuration), String> {
    let (name, d) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not ALERT=DURATION"))?;
    Ok((name.to_string(), parse_duration(d)?))
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Listen address, IP:PORT (default: monitor.listen from cluster.yaml).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Add this many synthetic series (for benchmarks only).
    #[arg(
        long,
        hide = true,
        env = "CLUSTERKIT_MONITOR_SYNTHETIC_SERIES",
        value_parser = super::flags::synthetic_series()
    )]
    synthetic_series: Option<usize>,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Report what would change; change nothing.
    #[arg(long)]
    check: bool,
    /// Jobs whose every target must be up afterwards (comma-separated; default: every job but
    /// the clusterkit exporter's, which `deploy` does not run).
    #[arg(long, value_delimiter = ',')]
    check_jobs: Option<Vec<String>>,
    /// Seconds to wait for the targets to come up (1 to 86400).
    #[arg(long, default_value_t = 180, value_parser = super::flags::wait_secs())]
    wait_secs: u64,
    /// Override directory for playbooks (searched before the embedded ones; repeatable).
    #[arg(long)]
    library: Vec<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

impl MonitorCommand {
    /// Process-wide settings that must be made before the async runtime starts its threads.
    pub fn before_runtime(&self) {
        if let MonitorCommand::Serve(_) = self {
            // A long-lived exporter held to a small RSS: see working_set.
            clusterkit_monitor::exporter::use_one_malloc_arena();
        }
    }

    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self {
            MonitorCommand::Config(args) => config(args, &global),
            MonitorCommand::Serve(args) => serve(args, &global).await,
            MonitorCommand::Deploy(args) => deploy(args, &global).await,
        }
    }
}

fn load(global: &Global) -> anyhow::Result<Topology> {
    let topology = Topology::load(&global.config)
        .with_context(|| format!("cannot use {}", global.config.display()))?;
    // Every run repeats them: `monitor.tls: false` above all must not go unnoticed.
    for w in &topology.warnings {
        eprintln!("{w}");
    }
    Ok(topology)
}

fn config(args: ConfigArgs, global: &Global) -> anyhow::Result<()> {
    let topology = load(global)?;
    let tuning = args.tuning.checked(&topology)?;
    let report = generate::generate(
        &topology,
        &args.output_dir,
        &Options {
            install_dir: args.install_dir,
            tuning,
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
    let value = serde_json::json!({
        "changed": report.changed, "unchanged": report.unchanged, "warnings": report.warnings,
    });
    global.output.print(&value, || {
        let mut text = String::new();
        for f in &report.changed {
            let _ = writeln!(text, "changed    {f}");
        }
        for f in &report.unchanged {
            let _ = writeln!(text, "unchanged  {f}");
        }
        let _ = writeln!(
            text,
            "{} changed, {} unchanged in {}",
            report.changed.len(),
            report.unchanged.len(),
            args.output_dir.display()
        );
        text
    })
}

async fn deploy(args: DeployArgs, global: &Global) -> anyhow::Result<()> {
    use clusterkit_monitor::deploy::{self, DeployOptions};
    let topology = load(global)?;
    let opts = DeployOptions {
        tuning: args.tuning.checked(&topology)?,
        check: args.check,
        check_jobs: args.check_jobs,
        wait: std::time::Duration::from_secs(args.wait_secs),
        concurrency: None,
        library: args.library,
        progress: true,
        verbose: global.verbose > 0,
    };
    let report = deploy::deploy(&topology, &opts).await?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    global.output.print(&report, || {
        let mut text = report.run.table();
            for t in &report.targets {
                let _ = writeln!(text,
                    "{:<8} {:<24} {:<24} {}{}",
                    t.health,
                    t.job,
                    t.instance,
                    if t.required { "" } else { "(not checked) " },
                    t.last_error
                );
            }
            if !report.grafana {
                let _ = writeln!(text,
                    "Grafana: not installed (the offline bundle carries no `grafana` package; \
                     Debian has none). Dashboards and provisioning are in {}/grafana on the monitor hosts.",
                    deploy::CONFIG_DIR
                );
            }
            for p in &report.prometheus {
                let _ = writeln!(text, "Prometheus: {p}");
            }
            if let Some(login) = &report.login {
                let _ = writeln!(text, "Prometheus and Alertmanager login: {login}");
            }
        text
    })?;
    let failed = report.run.failed_hosts();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} hosts failed: {}",
            failed.len(),
            report.run.hosts.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

async fn serve(args: ServeArgs, global: &Global) -> anyhow::Result<()> {
    let mut topology = load(global)?;
    if let Some(listen) = args.listen {
        topology.cluster.monitor.listen = listen;
    }
    clusterkit_monitor::exporter::run(&topology, args.synthetic_series.unwrap_or(0)).await?;
    Ok(())
}
