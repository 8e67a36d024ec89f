//! `clusterkit token`: bootstrap tokens for joining nodes.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit token` is not available yet")
    }
}
