//! `clusterkit certs`: check and renew the certificates and kubeconfigs clusterkit issued.

use super::Global;

#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, _global: Global) -> anyhow::Result<()> {
        anyhow::bail!("`clusterkit certs` is not available yet")
    }
}
