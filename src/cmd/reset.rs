//! `clusterkit reset`: undo an installation on the selected hosts.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit reset` is not available yet")
    }
}
