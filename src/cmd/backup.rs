//! `clusterkit backup`: back up etcd or namespaces, list, verify and prune backups.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit backup` is not available yet")
    }
}
