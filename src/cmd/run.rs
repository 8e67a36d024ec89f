//! `clusterkit run PLAYBOOK`: run a playbook (a file, or a built-in one by name) against the
//! cluster, with the same engine, check mode, journal and summary as `install`.
//!
//! The playbook sees the same variables as the installer's (`cluster`, `hosts`, `groups`,
//! `install`, `host`, `facts`); templates and files are looked up next to the playbook first,
//! then in `--library`, then among the built-in ones.

use clusterkit_core::playbook;
use clusterkit_installer::phases;

use super::{Global, PlaybookFlags, Selection};

#[derive(clap::Args)]
pub struct Args {
    /// The playbook: a YAML file, or the name of a built-in one (prepare, runtime).
    playbook: String,

    #[command(flatten)]
    run: PlaybookFlags,

    #[command(flatten)]
    selection: Selection,
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let opts = self.run.options(&self.selection, &global);
        let library = phases::library(&opts.library);
        // A bad playbook fails here, before the cluster file is even read.
        let pb = playbook::load(&library, &self.playbook)?;
        let cluster = super::load_cluster(&global)?;
        let hosts = self.selection.pick(&cluster, &global)?;
        let (engine, targets) = phases::engine(&cluster, &hosts, &opts)?;
        engine.run(&pb, &targets).await;
        super::install::print_report(&engine.finish(), global.output)
    }
}
