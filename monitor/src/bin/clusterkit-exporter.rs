//! `clusterkit-exporter -f cluster.yaml [--listen ADDR]`: the exporter of `clusterkit monitor
//! serve` as a binary of its own, for hosts where memory counts.
//!
//! Why: the `clusterkit` binary carries the installer, the backup tool and the Kubernetes
//! client (~36 MB of code); the pages of it that a running process touches (relocations,
//! scattered code) are most of `monitor serve`'s resident memory. This binary links only what
//! the exporter uses and runs on a single-threaded runtime (a scrape only copies cached text).
//! Measured in bench/monitor.
//!
//! Built only on request: `cargo build --release -p clusterkit-monitor --features
//! standalone-exporter --bin clusterkit-exporter`. Limits: no log output (collector failures
//! still show as `clusterkit_collector_up 0`); `CLUSTERKIT_MONITOR_SYNTHETIC_SERIES` adds
//! benchmark series as in `monitor serve`.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: clusterkit-exporter -f CLUSTER.YAML [--listen ADDR]";

fn main() -> ExitCode {
    let mut config: Option<PathBuf> = None;
    let mut listen: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-f" | "--config" => config = args.next().map(PathBuf::from),
            "--listen" => listen = args.next(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unexpected argument `{other}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let synthetic = std::env::var("CLUSTERKIT_MONITOR_SYNTHETIC_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut topology = clusterkit_monitor::Topology::load(&config)?;
        if let Some(l) = listen {
            topology.monitor.listen = l;
        }
        clusterkit_monitor::exporter::run(&topology, synthetic).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
