//! `clusterkit config`: write, check and explain cluster.yaml.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit config` is not available yet")
    }
}
