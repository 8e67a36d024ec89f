//! `clusterkit exec`: run a shell command on the selected hosts.
//!
//! The words after `--` are joined with spaces and run by the remote shell, as `ssh` does
//! (`clusterkit exec -- 'systemctl is-active kubelet || journalctl -u kubelet -n 20'`). Output
//! is grouped per host, in cluster.yaml order, once every host has finished: a header line
//! `==> HOST (exit N, 0.12s) <==`, then stdout, then stderr lines prefixed with `! `.
//! `-o json` prints one object per host. A host fails when it cannot be reached or the command
//! exits non-zero; the command then exits non-zero naming them.

use std::time::Duration;

use anyhow::Context;
use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::exec::{Command, ExecError, Executor, Output};
use clusterkit_core::fanout::{self, Fanout};

use super::{Global, Selection};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    selection: Selection,

    /// Seconds the command may run on each host, 1 to 604800 (default:
    /// ssh.command_timeout_secs).
    #[arg(long, value_parser = super::flags::command_timeout_secs())]
    timeout: Option<u64>,

    /// The command to run (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

/// Why a host failed: unreachable, or the command ran and exited non-zero.
#[derive(Debug)]
enum HostFailure {
    Exec(ExecError),
    Status(Output),
}

impl From<ExecError> for HostFailure {
    fn from(err: ExecError) -> Self {
        HostFailure::Exec(err)
    }
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostFailure::Exec(err) => err.fmt(f),
            HostFailure::Status(output) => match output.status {
                Some(status) => write!(f, "exited with {status}"),
                None => f.write_str("killed (no exit status)"),
            },
        }
    }
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let hosts = cluster
            .select(&self.selection.hosts, &self.selection.roles)
            .with_context(|| format!("selecting hosts in {}", global.config.display()))?;
        let line = self.command.join(" ");
        let mut command = Command::new(line.clone());
        if let Some(secs) = self.timeout {
            command = command.timeout(Duration::from_secs(secs));
        }
        let fan = Fanout::new(
            "exec",
            self.selection
                .concurrency
                .unwrap_or(cluster.ssh.concurrency),
        );
        let items = hosts
            .iter()
            .map(|h| (h.name.clone(), fanout::ssh_target(&cluster, h)))
            .collect();
        let command = &command;
        let results = fan
            .run(items, |target| async move {
                let ssh = SshExecutor::connect(target?).await?;
                let output = ssh.run(command).await;
                ssh.close().await;
                let output = output?;
                if output.success() {
                    Ok(output)
                } else {
                    Err(HostFailure::Status(output))
                }
            })
            .await;

        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let output = match &r.result {
                    Ok(o) | Err(HostFailure::Status(o)) => Some(o),
                    Err(HostFailure::Exec(_)) => None,
                };
                serde_json::json!({
                    "host": r.host,
                    "ok": r.result.is_ok(),
                    "exit_status": output.and_then(|o| o.status),
                    "stdout": output.map(|o| o.stdout_str()),
                    "stderr": output.map(|o| o.stderr_str()),
                    "duration_ms": r.duration.as_millis(),
                    "error": r.result.as_ref().err().map(|e| e.to_string()),
                })
            })
            .collect();
        global.output.print(&rows, || {
            let mut out = String::new();
            for r in &results {
                match &r.result {
                    Ok(o) | Err(HostFailure::Status(o)) => {
                        let status = o
                            .status
                            .map(|s| format!("exit {s}"))
                            .unwrap_or_else(|| "killed".into());
                        out.push_str(&format!(
                            "==> {} ({status}, {:.2}s) <==\n",
                            r.host,
                            r.duration.as_secs_f64()
                        ));
                        out.push_str(&o.stdout_str());
                        if !o.stdout.is_empty() && !o.stdout.ends_with(b"\n") {
                            out.push('\n');
                        }
                        for l in o.stderr_str().lines() {
                            out.push_str(&format!("! {l}\n"));
                        }
                    }
                    Err(HostFailure::Exec(e)) => {
                        out.push_str(&format!("==> {} (FAILED) <==\n! {e}\n", r.host));
                    }
                }
            }
            out
        })?;
        fanout::check(&results)?;
        Ok(())
    }
}
