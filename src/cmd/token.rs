//! `clusterkit token`: bootstrap tokens for joining nodes (`token create [--ttl] [--print-join-command]`).

use anyhow::Context;
use clusterkit_core::config;
use clusterkit_installer::token::TokenArgs;

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    token: TokenArgs,
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let loaded = config::load(&global.config)?;
        let out = self
            .token
            .run(&loaded.cluster)
            .await
            .context("cannot create a bootstrap token")?;
        println!("{out}");
        Ok(())
    }
}
