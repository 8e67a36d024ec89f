//! `clusterkit monitor`: exporter, generated monitoring configs, and their deployment.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit monitor` is not available yet")
    }
}
