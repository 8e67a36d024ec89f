//! `clusterkit restore`: restore etcd or namespaces from a backup.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit restore` is not available yet")
    }
}
