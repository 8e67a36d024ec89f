//! `clusterkit reset`: undo an installation on the selected hosts.
//!
//! Asks for confirmation (type `yes`) unless `--yes`; `--check` only reports. Each host runs
//! one script (`clusterkit_installer::reset`): services stopped and disabled, kubelet
//! containers removed, `/etc/kubernetes`, `/var/lib/kubelet`, CNI config removed, etcd's data
//! moved aside (`--purge` deletes it), clusterkit's units removed, kube-proxy/CNI iptables
//! rules and ipvs services cleared. A second reset reports "nothing to do". Exits non-zero
//! naming the hosts that failed. etcd members reset while others stay are first removed from
//! the etcd cluster (unless `--keep-etcd-members`).

use std::io::{BufRead, IsTerminal, Write};

use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::fanout;
use clusterkit_installer::reset::{self, ResetError, ResetOptions};

use std::fmt::Write as _;

use super::{Global, Selection};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    selection: Selection,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,

    /// Delete etcd's data instead of moving it to /var/lib/etcd.reset-<timestamp>.
    #[arg(long)]
    purge: bool,

    /// Report what would be done on each host; change nothing.
    #[arg(long)]
    check: bool,

    /// When only some etcd members are reset, do not remove them from the etcd cluster first
    /// (by default they are removed through a remaining member, and the reset stops if that
    /// fails).
    #[arg(long)]
    keep_etcd_members: bool,
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let hosts = self.selection.pick(&cluster, &global)?;
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        if !self.check && !self.yes {
            confirm(&cluster.name, &names, self.purge)?;
        }
        // etcd members that leave a cluster that stays: out of the member list first.
        let removed = if self.keep_etcd_members {
            vec![]
        } else {
            match reset::remove_etcd_members(&cluster, &hosts, self.check).await {
                Ok(removed) => removed,
                Err(e) if self.check => {
                    eprintln!("warning: {e}");
                    vec![]
                }
                Err(e) => return Err(anyhow::Error::new(e).context(
                    "nothing was reset (pass --keep-etcd-members to reset without removing them)",
                )),
            }
        };
        let opts = ResetOptions::now(self.purge, self.check);
        let fan = self
            .selection
            .fanout(&cluster, if self.check { "reset (check)" } else { "reset" });
        let items = super::ssh_items(&cluster, &hosts);
        let opts = &opts;
        let results = fan
            .run(items, |target| async move {
                let ssh = SshExecutor::connect(target.map_err(ResetError::from)?)
                    .await
                    .map_err(ResetError::from)?;
                let r = reset::reset_host(&ssh, opts).await;
                ssh.close().await;
                r
            })
            .await;
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match &r.result {
                Ok(done) => serde_json::json!({
                    "host": r.host, "status": "ok", "changed": done.changed,
                    "duration_ms": r.duration.as_millis(),
                }),
                Err(e) => {
                    let changed = match e {
                        ResetError::Steps { changed, .. } => changed.clone(),
                        _ => vec![],
                    };
                    serde_json::json!({
                        "host": r.host, "status": "failed", "changed": changed,
                        "error": e.to_string(), "duration_ms": r.duration.as_millis(),
                    })
                }
            })
            .collect();
        let value = serde_json::json!({
            "check": self.check,
            "etcd_members_removed": removed,
            "hosts": rows,
        });
        global.output.print(&value, || {
            let mut out = String::new();
            let verb = if self.check {
                "would change"
            } else {
                "changed"
            };
            for r in &removed {
                let _ = writeln!(out, "etcd: {}{r}", if self.check { "would " } else { "" });
            }
            for r in &results {
                match &r.result {
                    Ok(done) if done.changed.is_empty() => {
                        let _ = writeln!(out, "{}: nothing to do", r.host);
                    }
                    Ok(done) => {
                        let _ = writeln!(out, "{}: {verb} {}", r.host, done.changed.len());
                        for c in &done.changed {
                            let _ = writeln!(out, "  {c}");
                        }
                    }
                    Err(ResetError::Steps {
                        changed, failed, ..
                    }) => {
                        let _ = writeln!(
                            out,
                            "{}: FAILED ({} done, {} failed)",
                            r.host,
                            changed.len(),
                            failed.len()
                        );
                        for c in changed {
                            let _ = writeln!(out, "  {c}");
                        }
                        for f in failed {
                            let _ = writeln!(out, "  FAILED {f}");
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "{}: FAILED {e}", r.host);
                    }
                }
            }
            out.push('\n');
            out.push_str(&fanout::summary_table(&results));
            out
        })?;
        fanout::check(&results)?;
        Ok(())
    }
}

/// Asks on the terminal; without one, `--yes` is required.
fn confirm(cluster: &str, hosts: &[&str], purge: bool) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let node = clusterkit_core::layout::NodeLayout::DEFAULT;
    let etcd = if purge {
        "DELETE etcd's data"
    } else {
        "move etcd's data aside"
    };
    eprint!(
        "This resets cluster {cluster} on {}: stops Kubernetes and etcd, removes {}, \
         {} and the CNI config, and will {etcd}.\nType 'yes' to continue: ",
        hosts.join(", "),
        node.kubernetes_dir,
        node.kubelet_dir,
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
    if read == 0 && !stdin.is_terminal() {
        anyhow::bail!("reset needs confirmation: pass --yes when stdin is not a terminal; nothing was changed");
    }
    if answer.trim() != "yes" {
        anyhow::bail!("reset aborted; nothing was changed");
    }
    Ok(())
}
