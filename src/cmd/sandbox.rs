//! `clusterkit sandbox`: local test clusters of real nodes (systemd-nspawn + sshd) on this machine.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit sandbox` is not available yet")
    }
}
