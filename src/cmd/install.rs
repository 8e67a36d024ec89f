//! `clusterkit install`: install or converge the cluster, phase by phase.
//!
//! `install -f cluster.yaml` runs every phase in order (see `clusterkit_installer::phases`);
//! `--phase NAME` runs one. `--check` changes nothing and reports what would change,
//! `--resume` skips the tasks a failed run already finished. The per-host summary goes to
//! stdout (a table, or JSON with `-o json`), progress to stderr. Exits non-zero when a host
//! failed.

use std::path::PathBuf;

use anyhow::Context;
use clusterkit_core::config;
use clusterkit_core::playbook::RunReport;
use clusterkit_installer::phases::{self, InstallOptions};

use super::{Global, OutputFormat, Selection};

#[derive(clap::Args)]
pub struct Args {
    /// Run only this phase (default: every phase, in order). Phases: prepare, runtime.
    #[arg(long)]
    phase: Option<String>,

    /// Change nothing; report what would change.
    #[arg(long)]
    check: bool,

    /// Skip tasks a previous, failed run already finished (from the journal in the state dir).
    #[arg(long)]
    resume: bool,

    /// Write one JSON event per task per host to this file.
    #[arg(long)]
    events: Option<PathBuf>,

    /// Directory with playbooks/ and templates/ overriding the built-in ones.
    #[arg(long)]
    library: Option<PathBuf>,

    #[command(flatten)]
    selection: Selection,
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let loaded = config::load(&global.config)?;
        for warning in &loaded.warnings {
            eprintln!("{warning}");
        }
        let cluster = loaded.cluster;
        let hosts = cluster
            .select(&self.selection.hosts, &self.selection.roles)
            .with_context(|| format!("selecting hosts in {}", global.config.display()))?;
        let opts = InstallOptions {
            phase: self.phase,
            check: self.check,
            resume: self.resume,
            events: self.events,
            library: self.library.into_iter().collect(),
            concurrency: self.selection.concurrency,
            progress: true,
            verbose: global.verbose > 0,
        };
        let report = phases::install(&cluster, &hosts, &opts).await?;
        print_report(&report, global.output)
    }
}

/// Prints the summary on stdout and turns failed hosts into a non-zero exit.
pub fn print_report(report: &RunReport, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        OutputFormat::Table => print!("{}", report.table()),
        OutputFormat::Yaml => anyhow::bail!("the summary prints as a table or json, not yaml"),
    }
    let failed = report.failed_hosts();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} hosts failed: {}",
            failed.len(),
            report.hosts.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
