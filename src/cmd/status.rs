//! `clusterkit status`: what runs on every host against cluster.yaml, the Nodes, and one line
//! each for readiness, certificates and backups (`clusterkit_installer::status`). Reads only.

use super::Global;

#[derive(clap::Args)]
#[command(after_help = "\
Exit status: 0 when the cluster is healthy; 1 when it is not (a component missing or running \
another release than kubernetes.version, a host SSH cannot read, a Node not Ready or not \
registered, the API unreachable, a failed component check, a certificate expired, missing or \
unusable) or when cluster.yaml cannot be loaded. The whole status is printed either way; \
warnings (a cordoned Node, a certificate due for renewal, no recent trusted backup) do not \
change the exit status.")]
pub struct Args {}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let status = clusterkit_installer::status::read(&cluster).await;
        global.output.print(&status, || status.table())?;
        if !status.healthy {
            anyhow::bail!(
                "the cluster is not healthy:\n  {}",
                status.problems.join("\n  ")
            );
        }
        Ok(())
    }
}
