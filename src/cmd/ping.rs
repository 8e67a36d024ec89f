//! `clusterkit ping`: connect to every host and print its facts.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit ping` is not available yet")
    }
}
