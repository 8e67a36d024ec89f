//! `clusterkit node`: add or remove a node, touching only what changes.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit node` is not available yet")
    }
}
