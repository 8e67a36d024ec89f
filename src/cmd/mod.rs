//! One module per subcommand; each has an args type with `async fn run(self, global)`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

pub mod backup;
pub mod bundle;
pub mod certs;
pub mod completion;
pub mod config;
pub mod exec;
pub mod flags;
pub mod install;
pub mod monitor;
pub mod namespace;
pub mod node;
pub mod ping;
pub mod reset;
pub mod restore;
pub mod run;
pub mod sandbox;
pub mod status;
pub mod store;
pub mod token;
pub mod upgrade;

/// Flags every subcommand accepts.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// The cluster description.
    #[arg(
        short = 'f',
        long = "config",
        global = true,
        env = "CLUSTERKIT_CONFIG",
        default_value = "cluster.yaml"
    )]
    pub config: PathBuf,

    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// How results on stdout are printed.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Which hosts a fan-out command touches (flattened into the commands that need it).
#[derive(Args, Clone, Debug, Default)]
pub struct Selection {
    /// Only these hosts (names from cluster.yaml, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,

    /// Only hosts with any of these roles (etcd, control-plane, worker, monitor).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,

    /// How many hosts are worked on at once, 1 to 1024 (default: ssh.concurrency from
    /// cluster.yaml).
    #[arg(long, value_parser = flags::concurrency())]
    pub concurrency: Option<usize>,
}

/// How a playbook run goes: the flags `install` and `run` share.
#[derive(Args, Clone, Debug, Default)]
pub struct PlaybookFlags {
    /// Change nothing; report what would change.
    #[arg(long)]
    pub check: bool,

    /// Skip tasks a previous, failed run already finished (from the journal in the state dir).
    #[arg(long)]
    pub resume: bool,

    /// Write one JSON event per task per host to this file.
    #[arg(long)]
    pub events: Option<PathBuf>,

    /// Directory with playbooks/, templates/ and files/ searched before the built-in ones.
    #[arg(long)]
    pub library: Option<PathBuf>,
}

impl PlaybookFlags {
    /// The installer's options for these flags, the host selection's concurrency and
    /// `-v`; progress goes to stderr. A command sets what only it has (`--phase`...) after.
    pub fn options(
        self,
        selection: &Selection,
        global: &Global,
    ) -> clusterkit_installer::phases::InstallOptions {
        clusterkit_installer::phases::InstallOptions {
            check: self.check,
            resume: self.resume,
            events: self.events,
            library: self.library.into_iter().collect(),
            concurrency: selection.concurrency,
            progress: true,
            verbose: global.verbose > 0,
            ..Default::default()
        }
    }
}

impl Selection {
    /// The hosts of `cluster` these flags select, in cluster.yaml's order; an unknown name or
    /// role is an error naming the known ones and the file.
    pub fn pick<'c>(
        &self,
        cluster: &'c clusterkit_core::config::Cluster,
        global: &Global,
    ) -> anyhow::Result<Vec<&'c clusterkit_core::config::Host>> {
        use anyhow::Context;
        cluster
            .select(&self.hosts, &self.roles)
            .with_context(|| format!("selecting hosts in {}", global.config.display()))
    }

    /// A fan-out named `label` over as many hosts at once as `--concurrency` (or
    /// `ssh.concurrency`) allows.
    pub fn fanout(
        &self,
        cluster: &clusterkit_core::config::Cluster,
        label: &str,
    ) -> clusterkit_core::fanout::Fanout {
        clusterkit_core::fanout::Fanout::new(
            label,
            self.concurrency.unwrap_or(cluster.ssh.concurrency),
        )
    }
}

/// Each host's name with its SSH target: the items of a fan-out that connects to every host.
pub fn ssh_items(
    cluster: &clusterkit_core::config::Cluster,
    hosts: &[&clusterkit_core::config::Host],
) -> Vec<(
    String,
    Result<clusterkit_core::exec::ssh::SshTarget, clusterkit_core::exec::ExecError>,
)> {
    hosts
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                clusterkit_core::inventory::ssh_target(cluster, h),
            )
        })
        .collect()
}

/// How a command prints its result on stdout: a table for people, or the same serialized
/// value as JSON or YAML for programs (so the two machine formats always agree).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

impl OutputFormat {
    /// Prints `value` as JSON or YAML, or what `table` renders for `-o table`. Every command's
    /// result goes through here.
    pub fn print<T: serde::Serialize>(
        self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let text = match self {
            OutputFormat::Table => table(),
            OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
            OutputFormat::Yaml => serde_saphyr::to_string(value)?,
        };
        write_stdout(&text)
    }

    /// Whether the output is for programs (JSON or YAML) rather than a table.
    pub fn is_structured(self) -> bool {
        self != OutputFormat::Table
    }
}

/// Writes to stdout; a closed pipe (`clusterkit … | head`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// cluster.yaml (`-f`) loaded and validated, its warnings printed on stderr: the start of every
/// command that works on a cluster.
pub fn load_cluster(global: &Global) -> anyhow::Result<clusterkit_core::config::Cluster> {
    let loaded = clusterkit_core::config::load(&global.config)?;
    for warning in &loaded.warnings {
        eprintln!("{warning}");
    }
    Ok(loaded.cluster)
}

/// Logs go to stderr so stdout stays machine-readable.
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // kube-rs logs every failed request at ERROR, including the expected ones while the
    // installer waits for an API server to come up; our own errors carry what matters.
    let default = match verbose {
        0 => "warn,kube_client=off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
