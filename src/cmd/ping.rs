//! `clusterkit ping`: connect to every selected host and print its facts.
//!
//! Connecting and gathering facts is one fan-out operation per host (one SSH connection, one
//! remote command). Table output on stdout, `-o json` for machines; progress and warnings on
//! stderr. Exits non-zero naming the hosts that could not be reached.

use anyhow::Context;
use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::facts::{self, Facts, FactsError};
use clusterkit_core::fanout::{self, Fanout};

use super::{Global, Selection};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    selection: Selection,
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let hosts = cluster
            .select(&self.selection.hosts, &self.selection.roles)
            .with_context(|| format!("selecting hosts in {}", global.config.display()))?;
        let fan = Fanout::new(
            "ping",
            self.selection
                .concurrency
                .unwrap_or(cluster.ssh.concurrency),
        );
        let items = hosts
            .iter()
            .map(|h| (h.name.clone(), fanout::ssh_target(&cluster, h)))
            .collect();
        let results = fan
            .run(items, |target| async move {
                let ssh = SshExecutor::connect(target?).await?;
                let facts = facts::gather(&ssh).await;
                ssh.close().await;
                facts
            })
            .await;
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "host": r.host,
                    "ok": r.result.is_ok(),
                    "duration_ms": r.duration.as_millis(),
                    "facts": r.result.as_ref().ok(),
                    "error": r.result.as_ref().err().map(|e: &FactsError| e.to_string()),
                })
            })
            .collect();
        global.output.print(&rows, || facts_table(&results))?;
        if !global.output.is_structured() {
            for r in &results {
                if let Err(err) = &r.result {
                    eprintln!("{err}");
                }
            }
        }
        fanout::check(&results)?;
        Ok(())
    }
}

fn facts_table(results: &[fanout::HostResult<Facts, FactsError>]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| match &r.result {
            Ok(f) => vec![
                r.host.clone(),
                "ok".into(),
                f.hostname.clone(),
                format!("{} {}", f.os_id, f.os_version),
                f.kernel.clone(),
                f.arch.clone(),
                f.cpus.to_string(),
                format!("{} MiB", f.memory_mib()),
                if f.swap_on { "on" } else { "off" }.into(),
                f.cgroup_version.clone(),
                f.node_uuid().unwrap_or("-").to_string(),
                format!("{:+}ms", f.clock_skew_ms),
            ],
            Err(_) => {
                let mut row = vec![r.host.clone(), "FAILED".into()];
                row.resize(12, "-".into());
                row
            }
        })
        .collect();
    fanout::table(
        &[
            "HOST", "STATUS", "HOSTNAME", "OS", "KERNEL", "ARCH", "CPUS", "MEMORY", "SWAP",
            "CGROUP", "UUID", "SKEW",
        ],
        &rows,
    )
}
