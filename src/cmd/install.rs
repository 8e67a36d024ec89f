//! `clusterkit install`: install or converge the cluster, phase by phase.
//!
//! `install -f cluster.yaml` runs every phase in order (see `clusterkit_installer::phases`);
//! `--phase NAME` runs one. `--check` changes nothing and reports what would change,
//! `--resume` skips the tasks a failed run already finished. The per-host summary goes to
//! stdout (a table, or JSON with `-o json`), progress to stderr. A full install (every phase,
//! every host, not `--check`) ends with the readiness report (`clusterkit_installer::readiness`;
//! JSON: the `readiness` key; `--no-readiness` skips it). Exits non-zero when a host failed or
//! the cluster is not ready. Refused before any phase when the control-plane hosts run another
//! release than `kubernetes.version` (`phases::install`): that is `upgrade apply`'s move.

use anyhow::Context;

use clusterkit_core::playbook::RunReport;
use clusterkit_installer::phases::{self, InstallOptions};
use clusterkit_installer::readiness;

use super::{Global, OutputFormat, PlaybookFlags, Selection};

#[derive(clap::Args)]
pub struct Args {
    /// Run only this phase (default: every phase, in order).
    #[arg(long, value_parser = phase_names())]
    phase: Option<String>,

    #[command(flatten)]
    run: PlaybookFlags,

    /// Skip the readiness report after a full install (nodes Ready, components healthy, a
    /// probe pod on every node reaching every other node).
    #[arg(long)]
    no_readiness: bool,

    /// Hash every binary and large file on the hosts, instead of trusting the stamps clusterkit
    /// keeps of what it wrote (a file whose size or times changed is re-hashed anyway).
    #[arg(long)]
    verify_all: bool,

    #[command(flatten)]
    selection: Selection,
}

/// The installer's phases, in order: what `--phase` accepts and its help lists.
fn phase_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(phases::all().iter().map(|p| p.name()))
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let hosts = self.selection.pick(&cluster, &global)?;
        let opts = InstallOptions {
            phase: self.phase,
            verify_all: self.verify_all,
            ..self.run.options(&self.selection, &global)
        };
        let full = opts.phase.is_none()
            && !opts.check
            && self.selection.hosts.is_empty()
            && self.selection.roles.is_empty();
        let readiness_wanted = full && !self.no_readiness;
        // On a cluster that already runs, the readiness report's probe pods start while the
        // phases run; they are used only when the run changed nothing.
        let early = async {
            if readiness_wanted {
                readiness::start_early(&cluster).await
            } else {
                None
            }
        };
        let (report, early) = tokio::join!(phases::install(&cluster, &hosts, &opts), early);
        let early = match (report.as_ref().map(|r| r.changed()), early) {
            (Ok(0), early) => early,
            (_, Some(p)) => {
                p.discard(&cluster).await;
                None
            }
            (_, None) => None,
        };
        let report = report?;
        // The readiness report follows a full install that left no host failed; a run of one
        // phase, of some hosts, or in check mode is not a finished cluster.
        let readiness = if readiness_wanted && report.failed_hosts().is_empty() {
            eprintln!("readiness: nodes, components, a probe pod on every node…");
            Some(
                readiness::check(&cluster, early)
                    .await
                    .context("readiness report")?,
            )
        } else {
            if let Some(p) = early {
                p.discard(&cluster).await;
            }
            None
        };
        print_install(&report, readiness.as_ref(), global.output)
    }
}

/// The install summary plus the readiness report (JSON: the summary's object with a
/// `readiness` key); non-zero exit when a host failed or the cluster is not ready.
pub(super) fn print_install(
    report: &RunReport,
    readiness: Option<&readiness::Report>,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let Some(r) = readiness else {
        return print_report(report, output);
    };
    print_with_readiness(report, || report.table(), r, output)?;
    fail_on_hosts(report)?;
    fail_unless_ready(r, "")
}

/// Prints `report` followed by the readiness report: in JSON the report's object with a
/// `readiness` key, as a table `table()` then the readiness table.
pub(super) fn print_with_readiness<T: serde::Serialize>(
    report: &T,
    table: impl FnOnce() -> String,
    r: &readiness::Report,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(report)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("readiness".into(), serde_json::to_value(r)?);
    }
    output.print(&v, || format!("{}{}", table(), r.table()))
}

/// A non-zero exit naming every failed check when the readiness report is not ok; `done`
/// starts the message with what was done nonetheless (`"upgraded, but "`).
pub(super) fn fail_unless_ready(r: &readiness::Report, done: &str) -> anyhow::Result<()> {
    if r.ok {
        return Ok(());
    }
    let what: Vec<String> = r
        .failures()
        .iter()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    anyhow::bail!("{done}the cluster is not ready:\n  {}", what.join("\n  "))
}

/// Prints the summary on stdout and turns failed hosts into a non-zero exit.
pub fn print_report(report: &RunReport, output: OutputFormat) -> anyhow::Result<()> {
    output.print(report, || report.table())?;
    fail_on_hosts(report)
}

/// A non-zero exit naming the hosts that failed, if any did.
fn fail_on_hosts(report: &RunReport) -> anyhow::Result<()> {
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
