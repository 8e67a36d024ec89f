//! `clusterkit bundle`: build an offline bundle of packages, binaries and images.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit bundle` is not available yet")
    }
}
