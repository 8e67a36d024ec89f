//! `clusterkit install`: install or converge the cluster, phase by phase.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit install` is not available yet")
    }
}
