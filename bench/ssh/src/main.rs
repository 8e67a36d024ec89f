//! Times `Executor::run("true")` on one already-open SSH connection.
//!
//! Usage: `clusterkit-bench-ssh CLUSTER_YAML HOST RUNS` — connects once to HOST (as described by
//! cluster.yaml, host keys verified), runs `true` 5 times to warm up, then RUNS times, and
//! prints one duration in microseconds per line on stdout (run.sh computes the statistics).

use std::time::Instant;

use clusterkit_core::exec::{Command, Executor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, yaml, host, runs] = args.as_slice() else {
        return Err("usage: clusterkit-bench-ssh CLUSTER_YAML HOST RUNS".into());
    };
    let runs: usize = runs.parse()?;
    let loaded = clusterkit_core::config::load(yaml)?;
    let cluster = loaded.cluster;
    let host = cluster
        .host(host)
        .ok_or_else(|| format!("no host {host} in {yaml}"))?;
    let target = clusterkit_core::fanout::ssh_target(&cluster, host)?;
    let ssh = clusterkit_core::exec::ssh::SshExecutor::connect(target).await?;
    let command = Command::new("true");
    for _ in 0..5 {
        ssh.run_checked(&command).await?;
    }
    for _ in 0..runs {
        let started = Instant::now();
        ssh.run_checked(&command).await?;
        println!("{}", started.elapsed().as_micros());
    }
    ssh.close().await;
    Ok(())
}
