//! `clusterkit exec`: run a shell command on the selected hosts.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit exec` is not available yet")
    }
}
