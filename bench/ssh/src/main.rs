//! The SSH benchmark's driver: command latency and upload throughput on one open connection.
//!
//! Usage:
//! - `clusterkit-bench-ssh CLUSTER_YAML HOST exec RUNS` — connects once to HOST (as described
//!   by cluster.yaml, host keys verified), runs `true` 5 times to warm up, then RUNS times, and
//!   prints one duration in microseconds per line on stdout (run.sh computes the statistics).
//! - `clusterkit-bench-ssh CLUSTER_YAML HOST upload FILE DEST MODE` — reads FILE, then times one
//!   upload of it to DEST on HOST and prints `seconds bytes` on stdout. MODE `raw` is
//!   `Executor::upload` (the bytes as they are); `zstd` compresses the file first (timed too,
//!   as an install pays it once per file) and sends it with `Executor::upload_shared`, unpacked
//!   on the host. `upload FILE DEST MODE warm` first sends the same upload once untimed on the
//!   same connection, so the timed one runs on a TCP connection that has already carried 100 MB
//!   (as scp's open master connection has in run.sh, and as every upload but the first does in
//!   an install); without it the timed upload is the connection's first.

use std::time::Instant;

use clusterkit_core::exec::{Command, Encoding, Executor, SharedUpload, UploadOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (yaml, host, rest) = match args.as_slice() {
        [_, yaml, host, rest @ ..] => (yaml, host, rest),
        _ => return Err(usage()),
    };
    let loaded = clusterkit_core::config::load(yaml)?;
    let cluster = loaded.cluster;
    let host = cluster
        .host(host)
        .ok_or_else(|| format!("no host {host} in {yaml}"))?;
    let target = clusterkit_core::inventory::ssh_target(&cluster, host)?;
    let ssh = clusterkit_core::exec::ssh::SshExecutor::connect(target).await?;
    match rest {
        [mode, runs] if mode == "exec" => {
            let runs: usize = runs.parse()?;
            let command = Command::new("true");
            for _ in 0..5 {
                ssh.run_checked(&command).await?;
            }
            for _ in 0..runs {
                let started = Instant::now();
                ssh.run_checked(&command).await?;
                println!("{}", started.elapsed().as_micros());
            }
        }
        [mode, file, dest, how, warm @ ..] if mode == "upload" => {
            let warm = match warm {
                [] => false,
                [w] if w == "warm" => true,
                _ => return Err(usage()),
            };
            let data = std::fs::read(file)?;
            let options = UploadOptions::default();
            let runs = if warm { 2 } else { 1 };
            let mut seconds = 0.0;
            for _ in 0..runs {
                let started = Instant::now();
                match how.as_str() {
                    "raw" => ssh.upload(&data, dest, &options).await?,
                    "zstd" => {
                        let shared = SharedUpload::zstd(&data)?;
                        assert_eq!(shared.encoding, Encoding::Zstd);
                        ssh.upload_shared(&shared, dest, &options).await?
                    }
                    other => return Err(format!("unknown upload mode {other}").into()),
                }
                seconds = started.elapsed().as_secs_f64();
            }
            println!("{seconds:.3} {}", data.len());
        }
        _ => return Err(usage()),
    }
    ssh.close().await;
    Ok(())
}

fn usage() -> Box<dyn std::error::Error> {
    "usage: clusterkit-bench-ssh CLUSTER_YAML HOST exec RUNS | upload FILE DEST raw|zstd [warm]"
        .into()
}
