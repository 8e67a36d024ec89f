//! `clusterkit run PLAYBOOK`: run a playbook (a file, or a built-in one by name) against the
//! cluster, with the same engine, check mode, journal and summary as `install`.
//!
//! The playbook sees the same variables as the installer's (`cluster`, `hosts`, `groups`,
//! `install`, `host`, `facts`); templates and files are looked up next to the playbook first,
//! then in `--library`, then among the built-in ones.

use std::path::PathBuf;

use clusterkit_core::playbook;
use clusterkit_installer::phases::{self, InstallOptions};

use super::{Global, Selection};

#[derive(clap::Args)]
pub struct Args {
    /// The playbook: a YAML file, or the name of a built-in one (prepare, runtime).
    playbook: String,

    /// Change nothing; report what would change.
    #[arg(long)]
    check: bool,

    /// Skip tasks a previous, failed run already finished.
    #[arg(long)]
    resume: bool,

    /// Write one JSON event per task per host to this file.
    #[arg(long)]
    events: Option<PathBuf>,

    /// Directory with playbooks/, templates/ and files/ searched before the built-in ones.
    #[arg(long)]
    library: Option<PathBuf>,

    #[command(flatten)]
    selection: Selection,
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let library = phases::library(&self.library.iter().cloned().collect::<Vec<_>>());
        // A bad playbook fails here, before the cluster file is even read.
        let pb = playbook::load(&library, &self.playbook)?;
        let cluster = super::load_cluster(&global)?;
        let hosts = self.selection.pick(&cluster, &global)?;
        let opts = InstallOptions {
            check: self.check,
            resume: self.resume,
            events: self.events,
            concurrency: self.selection.concurrency,
            progress: true,
            verbose: global.verbose > 0,
            ..Default::default()
        };
        let (engine, targets) = phases::engine(&cluster, &hosts, &opts)?;
        engine.run(&pb, &targets).await;
        super::install::print_report(&engine.finish(), global.output)
    }
}
