//! `clusterkit sandbox`: local test clusters of real nodes (systemd-nspawn + sshd) on this
//! machine. A thin layer over `clusterkit_sandbox`; the work is blocking, so it runs on
//! tokio's blocking pool.

use anyhow::Context;
use clusterkit_sandbox::{self as sandbox, Dirs, Sandbox, UpOptions};

use std::fmt::Write as _;

use super::Global;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create (or complete) a sandbox of N nodes and print the path of its cluster.yaml last.
    Up {
        /// How many nodes (1 to 99).
        #[arg(long, default_value_t = 3, value_parser = super::flags::sandbox_nodes())]
        nodes: usize,
        /// Sandbox name (1–8 of a-z, 0-9, '-'); several sandboxes can exist at once.
        #[arg(long, default_value = "demo")]
        name: String,
    },
    /// List sandboxes and their nodes (PID, address, whether sshd answers).
    Status {
        /// Only this sandbox.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove everything a sandbox made: processes, mounts, namespaces, links, files.
    Down {
        #[arg(long, default_value = "demo")]
        name: String,
    },
    /// Build the cached base rootfs now (debootstrap, about a minute) instead of at first `up`.
    Base,
}

impl Command {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || self.run_blocking(&global))
            .await
            .context("sandbox task panicked")?
    }

    fn run_blocking(self, global: &Global) -> anyhow::Result<()> {
        let dirs = Dirs::from_env();
        match self {
            Command::Up { nodes, name } => {
                eprintln!("sandbox {name}: bringing up {nodes} node(s)…");
                let sb = Sandbox::up_in(&dirs, UpOptions::new(name.clone(), nodes))
                    .with_context(|| format!("sandbox up --name {name}"))?;
                for n in sb.nodes() {
                    eprintln!(
                        "  {:<8} {:<15} pid {}",
                        n.name,
                        n.address,
                        n.pid.map_or("-".into(), |p| p.to_string())
                    );
                }
                eprintln!(
                    "sandbox {name}: ready; tear down with `clusterkit sandbox down --name {name}`"
                );
                println!("{}", sb.cluster_yaml().display());
            }
            Command::Status { name } => {
                let list = sandbox::status_in(&dirs, name.as_deref()).context("sandbox status")?;
                global.output.print(&list, || {
                    let mut t = String::new();
                        if list.is_empty() {
                            let _ = writeln!(t, "no sandboxes");
                        }
                        for s in &list {
                            if s.leftover {
                                let _ = writeln!(t,
                                    "{}: leftovers of a removed sandbox (bridge: {}); run `clusterkit sandbox down --name {}`",
                                    s.name, s.bridge, s.name
                                );
                                continue;
                            }
                            let _ = writeln!(t,
                                "{} {} (bridge {}) {}",
                                s.name,
                                s.subnet,
                                if s.bridge { "up" } else { "missing" },
                                s.dir.display()
                            );
                            let _ = writeln!(t,
                                "  {:<8} {:<15} {:<8} {:<8} SSH",
                                "NODE", "ADDRESS", "STATE", "PID"
                            );
                            for n in &s.nodes {
                                let _ = writeln!(t,
                                    "  {:<8} {:<15} {:<8} {:<8} {}",
                                    n.node.name,
                                    n.node.address,
                                    n.state,
                                    n.node.pid.map_or("-".into(), |p| p.to_string()),
                                    if n.ssh { "answers" } else { "no" }
                                );
                            }
                        }
                    t
                })?;
            }
            Command::Down { name } => {
                sandbox::down_in(&dirs, &name)
                    .with_context(|| format!("sandbox down --name {name}"))?;
                eprintln!("sandbox {name}: removed");
            }
            Command::Base => {
                let base = sandbox::rootfs::ensure_base(&dirs.cache)
                    .context("building the base rootfs")?;
                println!("{}", base.display());
            }
        }
        Ok(())
    }
}
