//! The `clusterkit` command line: a thin layer that parses arguments, sets up logging and hands
//! each subcommand to its module in `src/cmd/`. All real work lives in the library crates.
//!
//! Everything here handles what a user typed, so nothing may panic on it: `unwrap`, `expect`
//! and indexing are denied (an error with the flag's name is the answer, see `cmd::flags`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;
#[cfg(test)]
mod fuzz;

/// Install, back up and monitor Kubernetes clusters over SSH.
#[derive(Parser)]
#[command(name = "clusterkit", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write, check and explain cluster.yaml.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// Local test clusters of real nodes (systemd-nspawn + sshd) on this machine.
    #[command(subcommand)]
    Sandbox(cmd::sandbox::Command),
    /// Connect to every host and print its facts.
    Ping(cmd::ping::Args),
    /// Run a shell command on the selected hosts.
    Exec(cmd::exec::Args),
    /// Run a playbook against the cluster.
    Run(cmd::run::Args),
    /// Install or converge the cluster, phase by phase.
    Install(cmd::install::Args),
    /// Build an offline bundle of packages, binaries and images.
    #[command(subcommand)]
    Bundle(cmd::bundle::BundleCommand),
    /// Back up etcd or namespaces, list, verify and prune backups.
    #[command(subcommand)]
    Backup(cmd::backup::Command),
    /// Restore etcd or namespaces from a backup.
    #[command(subcommand)]
    Restore(cmd::restore::Command),
    /// Exporter, generated monitoring configs, and their deployment.
    #[command(subcommand)]
    Monitor(cmd::monitor::MonitorCommand),
    /// Undo an installation on the selected hosts.
    Reset(cmd::reset::Args),
    /// Add or remove a node, touching only what changes.
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// Bootstrap tokens for joining nodes.
    Token(cmd::token::Args),
    /// Check and renew the certificates and kubeconfigs clusterkit issued.
    #[command(subcommand)]
    Certs(cmd::certs::CertsCommand),
    /// Plan an upgrade: what runs on every host and the moves the version-skew policy allows.
    #[command(subcommand)]
    Upgrade(cmd::upgrade::UpgradeCommand),
    /// What runs on every host against cluster.yaml, the Nodes, readiness, the nearest
    /// certificate expiry and the newest backup; exits non-zero when the cluster is not healthy.
    Status(cmd::status::Args),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(cmd::completion::Args),
}

impl Command {
    async fn run(self, global: cmd::Global) -> anyhow::Result<()> {
        match self {
            Command::Config(c) => c.run(global).await,
            Command::Sandbox(c) => c.run(global).await,
            Command::Ping(c) => c.run(global).await,
            Command::Exec(c) => c.run(global).await,
            Command::Run(c) => c.run(global).await,
            Command::Install(c) => c.run(global).await,
            Command::Bundle(c) => c.run(global).await,
            Command::Backup(c) => c.run(global).await,
            Command::Restore(c) => c.run(global).await,
            Command::Monitor(c) => c.run(global).await,
            Command::Reset(c) => c.run(global).await,
            Command::Node(c) => c.run(global).await,
            Command::Token(c) => c.run(global).await,
            Command::Certs(c) => c.run(global).await,
            Command::Upgrade(c) => c.run(global).await,
            Command::Status(c) => c.run(global).await,
            Command::Completion(c) => c.print(&mut Cli::command()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_logging(cli.global.verbose);
    if let Command::Monitor(args) = &cli.command {
        args.before_runtime();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run(cli.global)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Every cause, once: library errors that show their cause in their own message
            // (`…: {source}`) keep it as their source too, and it is not printed twice.
            let mut shown = err.to_string();
            eprintln!("error: {shown}");
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push('\n');
                    shown.push_str(&text);
                }
            }
            ExitCode::FAILURE
        }
    }
}
