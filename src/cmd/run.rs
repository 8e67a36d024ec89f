//! `clusterkit run`: run a playbook against the cluster.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit run` is not available yet")
    }
}
