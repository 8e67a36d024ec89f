//! `clusterkit backup`: back up etcd, list, describe, verify, drill and prune backups, run the
//! schedule daemon (etcd, or namespaces with `--kind namespace`), install a systemd timer or
//! print a Kubernetes CronJob.
//!
//! Thin layer over `clusterkit_backup`: flags and cluster.yaml (`-f`) are merged by
//! `clusterkit_backup::settings`; results go to stdout (table, or `-o json|yaml`), logs to stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use clusterkit_backup::clock::{Clock, SystemClock};
use clusterkit_backup::etcd::{EtcdBackupOptions, EtcdTarget, EtcdTls};
use clusterkit_backup::pipeline::WriteSettings;
use clusterkit_backup::retention::Retention;
use clusterkit_backup::settings;
use clusterkit_backup::{catalog, retention, schedule, status};
use clusterkit_core::config::{self, Cluster};

use super::store::{load_optional_cluster, DecryptArgs, StoreArgs};
use super::{flags, Global, OutputFormat};

#[derive(Subcommand)]
pub enum Command {
    /// Take an etcd snapshot and store it (streamed, verified, manifest written last).
    Etcd(EtcdArgs),
    /// Back up namespaces through the Kubernetes API (streamed; Secrets only when asked).
    Namespace(super::namespace::BackupNamespaceArgs),
    /// List complete backups.
    List(ListArgs),
    /// Show one backup's manifest.
    Describe(IdArgs),
    /// Download a backup and check every checksum and etcd's integrity hash.
    Verify(VerifyArgs),
    /// Restore a backup into a scratch etcd (here or on a host) and check it; records the
    /// verdict next to the backup. Exits non-zero when anything differs.
    Drill(Box<DrillArgs>),
    /// Delete backups the retention policy does not keep.
    Prune(PruneArgs),
    /// Run as a daemon: back up (etcd, or namespaces with --kind namespace), prune and record
    /// metrics at every cron tick.
    Schedule(Box<ScheduleArgs>),
    /// Install a systemd service + timer running `backup schedule --once` on the control-plane
    /// hosts (or print them, or a Kubernetes CronJob).
    InstallTimer(TimerArgs),
    /// Create an age identity file (0600) for encrypted backups and print its recipient.
    Keygen(KeygenArgs),
}

#[derive(ClapArgs)]
pub struct KeygenArgs {
    /// Where to write the identity (refuses to overwrite).
    #[arg(long)]
    out: PathBuf,
}

#[derive(ClapArgs)]
pub struct EtcdArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// etcd client URLs, comma-separated (default: every etcd host of cluster.yaml on :2379).
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// CA of etcd's server certificates.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Encrypt to this age recipient (age1…); repeatable. Default: backup.encryption.
    #[arg(long = "age-recipient")]
    age_recipient: Vec<String>,
    /// Encrypt with the passphrase in this environment variable.
    #[arg(long)]
    passphrase_env: Option<String>,
    /// zstd level, 1 to 22 (default: backup.compression_level, else 3).
    #[arg(long, value_parser = flags::compression_level())]
    compression_level: Option<i32>,
    /// Cluster name for the manifest (default: name from cluster.yaml).
    #[arg(long)]
    cluster_name: Option<String>,
    /// Lock lifetime in seconds without renewal, 10 to 86400.
    #[arg(long, default_value_t = 300, value_parser = flags::lock_ttl_secs())]
    lock_ttl_secs: u64,
}

#[derive(ClapArgs)]
pub struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(ClapArgs)]
pub struct IdArgs {
    /// Backup id (see `backup list`).
    id: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(ClapArgs)]
pub struct VerifyArgs {
    /// Backup id (see `backup list`).
    id: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    decrypt: DecryptArgs,
}

#[derive(ClapArgs)]
pub(crate) struct DrillArgs {
    /// Backup id (see `backup list`); or --latest.
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    id: Option<String>,
    /// Drill the newest backup of --kind.
    #[arg(long)]
    latest: bool,
    /// With --latest: which kind's newest backup.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Etcd)]
    kind: ScheduleKind,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    decrypt: DecryptArgs,
    #[command(flatten)]
    tools: DrillTools,
    /// etcd: the live cluster's kubeconfig, to report how far it moved since the backup (read
    /// only). Namespace: a scratch cluster's kubeconfig — the backup is applied there under
    /// mapped names (<ns>-drill-<random>), compared, and those namespaces deleted.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// Where and with what a drill's scratch etcd runs.
#[derive(ClapArgs, Clone, Debug, Default)]
pub(crate) struct DrillTools {
    /// Run the scratch etcd on this host of cluster.yaml (its own etcd binary, temporary
    /// directory, ports and transient unit, all removed afterwards) instead of here.
    #[arg(long = "on", value_name = "HOST")]
    on: Option<String>,
    /// The etcd binary for a local drill (default: bin/etcd of the cluster's bundle, else PATH).
    #[arg(long, env = "CLUSTERKIT_ETCD")]
    etcd: Option<PathBuf>,
    /// etcdctl for the restore (etcd 3.4 restores with etcdctl).
    #[arg(long, env = "CLUSTERKIT_ETCDCTL", default_value = "etcdctl")]
    etcdctl: PathBuf,
    /// Parent of the local scratch directory (default: the system's temporary directory); it
    /// needs room for about twice the database.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// How long the restored member may take to answer.
    #[arg(long, default_value_t = 180)]
    start_timeout_secs: u64,
}

impl DrillTools {
    /// Resolves the drill's options (connecting to `--on`'s host).
    pub(crate) async fn options(
        &self,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<clusterkit_backup::drill::DrillOptions> {
        use clusterkit_backup::drill::{remote::RemoteHost, DrillOptions};
        let mut opts = DrillOptions::local(
            settings::drill_etcd_binary(self.etcd.as_deref(), cluster),
            self.etcdctl.clone(),
        );
        opts.work_dir = self.work_dir.clone();
        opts.start_timeout = Duration::from_secs(self.start_timeout_secs.max(1));
        if let Some(name) = &self.on {
            let Some(cluster) = cluster else {
                bail!("--on {name} needs cluster.yaml (-f) to find the host in");
            };
            let host = cluster
                .hosts
                .iter()
                .find(|h| &h.name == name)
                .with_context(|| format!("--on: no host {name:?} in cluster.yaml"))?;
            let fan = clusterkit_core::fanout::Fanout::new("connect", 1);
            let mut connected = clusterkit_core::fanout::connect_all(cluster, &[host], &fan).await;
            let exec = connected
                .pop()
                .context("no connection result")?
                .result
                .with_context(|| format!("--on: connecting to {name}"))?;
            opts.on = Some(RemoteHost {
                name: host.name.clone(),
                address: host.address,
                exec,
            });
        }
        Ok(opts)
    }
}

fn print_drill(
    output: OutputFormat,
    rec: &clusterkit_backup::drill::DrillRecord,
) -> anyhow::Result<()> {
    output.print(rec, || {
        let mut out = format!(
            "{}
",
            rec.summary()
        );
        for s in &rec.steps {
            out.push_str(&format!("  step {:<16} {:>8.2}s\n", s.name, s.seconds));
        }
        for c in &rec.checks {
            out.push_str(&format!(
                "  {} {:<16} expected {}, found {}\n",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.expected,
                c.found
            ));
        }
        for (k, v) in &rec.figures {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out
    })
}

#[derive(ClapArgs)]
struct RetentionArgs {
    /// Keep the newest N backups (overrides backup.retention when any count is given; 0 to
    /// 100000, 0 turns a rule off).
    #[arg(long, value_parser = flags::retention_count())]
    keep_last: Option<u32>,
    #[arg(long, value_parser = flags::retention_count())]
    hourly: Option<u32>,
    #[arg(long, value_parser = flags::retention_count())]
    daily: Option<u32>,
    #[arg(long, value_parser = flags::retention_count())]
    weekly: Option<u32>,
    #[arg(long, value_parser = flags::retention_count())]
    monthly: Option<u32>,
}

impl RetentionArgs {
    fn resolve(&self, cfg: Option<&config::Backup>) -> Retention {
        let given = [
            self.keep_last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
        ];
        if given.iter().all(Option::is_none) {
            return settings::retention(cfg);
        }
        Retention {
            keep_last: self.keep_last.unwrap_or(0),
            hourly: self.hourly.unwrap_or(0),
            daily: self.daily.unwrap_or(0),
            weekly: self.weekly.unwrap_or(0),
            monthly: self.monthly.unwrap_or(0),
        }
    }
}

#[derive(ClapArgs)]
pub struct PruneArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What `backup schedule` backs up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScheduleKind {
    /// An etcd snapshot (the etcd flags below).
    Etcd,
    /// Namespaces through the Kubernetes API: NAMESPACE… or -A, and the selection flags of
    /// `backup namespace`.
    Namespace,
}

impl From<ScheduleKind> for clusterkit_backup::manifest::Kind {
    fn from(k: ScheduleKind) -> Self {
        match k {
            ScheduleKind::Etcd => clusterkit_backup::manifest::Kind::Etcd,
            ScheduleKind::Namespace => clusterkit_backup::manifest::Kind::Namespace,
        }
    }
}

#[derive(ClapArgs)]
pub struct ScheduleArgs {
    /// What to back up: etcd, or namespace (then name them or give -A).
    #[arg(long, value_enum, default_value_t = ScheduleKind::Etcd)]
    kind: ScheduleKind,
    /// Cron expression, e.g. "0 */6 * * *" (default: backup.schedule).
    #[arg(long, value_parser = flags::cron)]
    cron: Option<String>,
    /// Run one scheduled job now (lock, backup, prune, status) and exit.
    #[arg(long)]
    once: bool,
    /// With --once: skip when a backup finished less than this many seconds ago (another
    /// host's timer served this tick); 0 to 86400.
    #[arg(long, default_value_t = 300, value_parser = flags::once_window_secs())]
    once_window_secs: u64,
    /// Serve Prometheus metrics here, e.g. 127.0.0.1:9843.
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// With --kind namespace: what to back up (same flags as `backup namespace`).
    #[command(flatten)]
    namespace: super::namespace::NamespaceSelection,
    /// With --kind namespace: kubeconfig (default: kubeconfig/admin.conf in the cluster's state
    /// directory).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Drill every new backup (restore into a scratch etcd here and check it; namespaces:
    /// parse and count) before pruning; retention then keeps the newest passed drill. A failed
    /// drill makes `--once` exit non-zero.
    #[arg(long)]
    drill: bool,
    /// With --drill: the age identity to read the new backup (encrypted to a recipient).
    #[arg(long = "age-identity")]
    age_identity: Vec<PathBuf>,
    #[command(flatten)]
    drill_tools: DrillTools,
}

#[derive(ClapArgs)]
pub struct TimerArgs {
    /// What the timer backs up: etcd (unit clusterkit-backup), or namespace (unit
    /// clusterkit-backup-namespaces; name them or give -A).
    #[arg(long, value_enum, default_value_t = ScheduleKind::Etcd)]
    kind: ScheduleKind,
    /// With --kind namespace: what to back up (same flags as `backup namespace`).
    #[command(flatten)]
    namespace: super::namespace::NamespaceSelection,
    /// With --kind namespace: the kubeconfig copied to the hosts (default: kubeconfig/admin.conf in the
    /// cluster's state directory).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// systemd OnCalendar expression (default "*-*-* 00/6:00:00", every 6 hours).
    #[arg(long, default_value = "*-*-* 00/6:00:00", value_parser = flags::unit_line)]
    on_calendar: String,
    /// Print a Kubernetes CronJob manifest instead (cron syntax, default "0 */6 * * *").
    #[arg(long)]
    print_cronjob: bool,
    /// Cron schedule for --print-cronjob.
    #[arg(long, default_value = "0 */6 * * *", value_parser = flags::cron)]
    cron: String,
    /// Image that contains the clusterkit binary (for --print-cronjob).
    #[arg(long, default_value = "clusterkit:latest")]
    image: String,
    /// Path of the clusterkit binary on the hosts (for the systemd unit).
    #[arg(long, default_value = clusterkit_core::layout::NodeLayout::DEFAULT.clusterkit_binary)]
    binary: String,
    /// Do not upload this clusterkit binary to --binary (it must already be there).
    #[arg(long)]
    no_upload: bool,
    /// Store the hosts back up to (default: backup.store from cluster.yaml).
    #[arg(long)]
    store: Option<String>,
    /// Print the units instead of installing them.
    #[arg(long)]
    print: bool,
    /// Change nothing on the hosts; report what would change, with the diff of each unit and
    /// CA file that would change (never of the binary or the files holding secrets).
    #[arg(long)]
    check: bool,
    /// Each run drills its new backup on the host (etcd: needs etcd and etcdctl there, and a
    /// passphrase rather than an age recipient); retention keeps the newest passed drill.
    #[arg(long)]
    drill: bool,
}

impl EtcdArgs {
    fn target(&self, cluster: Option<&Cluster>) -> anyhow::Result<EtcdTarget> {
        if self.endpoints.is_empty() {
            let Some(c) = cluster else {
                bail!("no --endpoints and no cluster.yaml (-f) to find the etcd members in");
            };
            let mut t = settings::etcd_target(c);
            if let (Some(ca), Some(cert), Some(key)) = (&self.cacert, &self.cert, &self.key) {
                t.tls = Some(EtcdTls {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
            return Ok(t);
        }
        let tls = match (&self.cacert, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Some(EtcdTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, None) => None,
            _ => bail!("--cacert, --cert and --key go together"),
        };
        Ok(EtcdTarget {
            endpoints: self.endpoints.clone(),
            tls,
            timeout: Duration::from_secs(10),
        })
    }

    fn options(&self, cluster: Option<&Cluster>) -> anyhow::Result<EtcdBackupOptions> {
        let cfg = cluster.map(|c| &c.backup);
        let encrypt = settings::encrypt(&self.age_recipient, self.passphrase_env.as_deref(), cfg)?;
        Ok(EtcdBackupOptions {
            cluster: self
                .cluster_name
                .clone()
                .or_else(|| cluster.map(|c| c.name.clone()))
                .unwrap_or_default(),
            write: WriteSettings {
                compression_level: self
                    .compression_level
                    .or(cfg.map(|c| c.compression_level))
                    .unwrap_or(3),
                encrypt,
                etcd_integrity: true,
            },
            lock_ttl: seconds(self.lock_ttl_secs, "--lock-ttl-secs")?,
        })
    }
}

/// An etcd backup as cluster.yaml's `backup:` configures it (store, encryption, compression),
/// then read back and verified against its recorded checksums: what `upgrade apply` takes
/// before it touches a host. Returns the backup's id.
pub(crate) async fn etcd_backup_verified(cluster: &Cluster) -> anyhow::Result<String> {
    let args = EtcdArgs {
        store: StoreArgs::default(),
        endpoints: Vec::new(),
        cacert: None,
        cert: None,
        key: None,
        age_recipient: Vec::new(),
        passphrase_env: None,
        compression_level: None,
        cluster_name: None,
        lock_ttl_secs: 300,
    };
    let store = args.store.open(Some(cluster)).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let m = clusterkit_backup::etcd::backup_etcd(
        store.clone(),
        &args.target(Some(cluster))?,
        &args.options(Some(cluster))?,
        clock.clone(),
    )
    .await
    .context("etcd backup failed")?;
    let decrypt = DecryptArgs::default().resolve(Some(cluster))?;
    catalog::verify(store.as_ref(), &m.id, &decrypt, clock.now())
        .await
        .with_context(|| format!("verifying backup {}", m.id))?;
    Ok(m.id)
}

/// A flag's seconds as a signed duration, built with checked constructors (clap's range keeps
/// the value small; this keeps a wider one from wrapping or panicking all the same).
pub(crate) fn seconds(
    secs: u64,
    flag: &str,
) -> anyhow::Result<clusterkit_backup::chrono::Duration> {
    i64::try_from(secs)
        .ok()
        .and_then(clusterkit_backup::chrono::Duration::try_seconds)
        .with_context(|| format!("{flag} {secs} is too large"))
}

fn human(bytes: u64) -> String {
    // Precision is not needed for a size shown to one decimal.
    let mut v = bytes as f64;
    let mut unit = "B";
    for next in ["KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = next;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

impl Command {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = load_optional_cluster(&global)?;
        let cluster = cluster.as_ref();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        match self {
            Command::Etcd(a) => {
                let store = a.store.open(cluster).await?;
                let target = a.target(cluster)?;
                let opts = a.options(cluster)?;
                let started = std::time::Instant::now();
                let m = clusterkit_backup::etcd::backup_etcd(
                    store.clone(),
                    &target,
                    &opts,
                    clock.clone(),
                )
                .await
                .context("etcd backup failed")?;
                let secs = started.elapsed().as_secs_f64();
                global.output.print(&m, || {
                    let e = m.etcd.as_ref();
                    format!(
                        "backup {} complete: {} raw, {} stored ({}), member {}, marker at revision {}, {} keys, {:.1}s\n",
                        m.id,
                        human(m.raw_size),
                        human(m.stored_size),
                        m.encryption.summary(),
                        e.map(|e| e.member_name.as_str()).unwrap_or("?"),
                        e.map(|e| e.revision).unwrap_or(0),
                        e.and_then(|e| e.key_count).unwrap_or(0),
                        secs
                    )
                })
            }
            Command::List(a) => {
                let store = a.store.open(cluster).await?;
                let entries = catalog::list(store.as_ref()).await?;
                global.output.print(&entries, || {
                    let mut out = format!(
                        "{:<32} {:<9} {:<20} {:>10} {:>10} {:<18} {:<8} {}\n",
                        "ID",
                        "KIND",
                        "FINISHED",
                        "RAW",
                        "STORED",
                        "ENCRYPTION",
                        "VERIFIED",
                        "DRILL"
                    );
                    for e in &entries {
                        let m = &e.manifest;
                        out.push_str(&format!(
                            "{:<32} {:<9} {:<20} {:>10} {:>10} {:<18} {:<8} {}\n",
                            m.id,
                            m.kind.as_str(),
                            m.finished_at.format("%Y-%m-%d %H:%M:%S"),
                            human(m.raw_size),
                            human(m.stored_size),
                            m.encryption.summary(),
                            match &e.last_verify {
                                None => "at write",
                                Some(v) if v.ok => "ok",
                                Some(_) => "FAILED",
                            },
                            match &e.last_drill {
                                None => "-".to_string(),
                                Some(d) => format!(
                                    "{} {} ({:.1}s restore)",
                                    if d.ok { "ok" } else { "FAILED" },
                                    d.at.format("%Y-%m-%d %H:%M"),
                                    d.restore_seconds
                                ),
                            }
                        ));
                    }
                    if entries.is_empty() {
                        out.push_str("(no backups)\n");
                    }
                    out
                })
            }
            Command::Describe(a) => {
                let store = a.store.open(cluster).await?;
                let m = catalog::get_manifest(store.as_ref(), &a.id).await?;
                global.output.print(&m, || {
                    serde_json::to_string_pretty(&m).unwrap_or_default() + "\n"
                })
            }
            Command::Verify(a) => {
                let store = a.store.open(cluster).await?;
                let decrypt = a.decrypt.resolve(cluster)?;
                let m = catalog::verify(store.as_ref(), &a.id, &decrypt, clock.now())
                    .await
                    .with_context(|| format!("verify {} failed", a.id))?;
                global.output.print(&m, || {
                    format!(
                        "backup {} is intact: {} stored bytes and {} raw bytes match their sha256{}\n",
                        m.id,
                        m.stored_size,
                        m.raw_size,
                        if m.etcd.is_some() { ", etcd integrity hash ok" } else { "" }
                    )
                })
            }
            Command::Drill(a) => {
                let store = a.store.open(cluster).await?;
                let decrypt = a.decrypt.resolve(cluster)?;
                let id = match &a.id {
                    Some(id) => id.clone(),
                    None => clusterkit_backup::drill::latest(store.as_ref(), a.kind.into()).await?,
                };
                let kind = catalog::get_manifest(store.as_ref(), &id).await?.kind;
                let mut opts = a.tools.options(cluster).await?;
                if kind == clusterkit_backup::manifest::Kind::Namespace && opts.on.is_some() {
                    bail!("--on is for etcd drills; a namespace drill runs here (and in --kubeconfig's cluster)");
                }
                if let Some(k) = &a.kubeconfig {
                    let client =
                        clusterkit_backup::namespace::ApiClient::from_kubeconfig(k).await?;
                    match kind {
                        clusterkit_backup::manifest::Kind::Etcd => opts.live = Some(client),
                        clusterkit_backup::manifest::Kind::Namespace => {
                            opts.scratch_cluster = Some(client)
                        }
                    }
                }
                let rec = clusterkit_backup::drill::drill(store.as_ref(), &id, &decrypt, &opts)
                    .await
                    .with_context(|| {
                        format!("the drill of {id} could not run (nothing recorded)")
                    })?;
                print_drill(global.output, &rec)?;
                if !rec.ok {
                    bail!("drill of {id} {}", rec.verdict);
                }
                Ok(())
            }
            Command::Prune(a) => {
                let store = a.store.open(cluster).await?;
                let policy = a.retention.resolve(cluster.map(|c| &c.backup));
                let plan = retention::prune(store, &policy, a.dry_run, clock.clone()).await?;
                global.output.print(&plan, || {
                    let mut out = String::new();
                    let verb = if a.dry_run { "would delete" } else { "deleted" };
                    for id in &plan.delete {
                        out.push_str(&format!("{verb} {id}\n"));
                    }
                    for (id, why) in &plan.keep {
                        out.push_str(&format!("keep {id} ({})\n", why.join(", ")));
                    }
                    out
                })
            }
            Command::Namespace(a) => a.run(&global).await,
            Command::Schedule(a) => run_schedule(*a, cluster, clock).await,
            Command::Keygen(a) => {
                let recipient = clusterkit_backup::crypto::generate_identity_file(&a.out)
                    .with_context(|| format!("creating {}", a.out.display()))?;
                println!("{recipient}");
                eprintln!(
                    "identity written to {} (keep it safe, away from the backups); encrypt with \
                     --age-recipient {recipient} or backup.encryption.age_recipients",
                    a.out.display()
                );
                Ok(())
            }
            Command::InstallTimer(a) => install_timer(a, cluster, global.output).await,
        }
    }
}

async fn run_schedule(
    a: ScheduleArgs,
    cluster: Option<&Cluster>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    // Refuse flags of the other kind rather than ignoring them.
    let source = match a.kind {
        ScheduleKind::Etcd => {
            if !a.namespace.is_empty() || a.kubeconfig.is_some() {
                bail!("namespaces and namespace selection flags need --kind namespace");
            }
            schedule::Source::Etcd {
                target: a.etcd.target(cluster)?,
                options: a.etcd.options(cluster)?,
            }
        }
        ScheduleKind::Namespace => {
            if !a.etcd.endpoints.is_empty()
                || a.etcd.cacert.is_some()
                || a.etcd.cert.is_some()
                || a.etcd.key.is_some()
            {
                bail!("--endpoints, --cacert, --cert and --key are for --kind etcd");
            }
            let etcd_opts = a.etcd.options(cluster)?;
            let mut options = a.namespace.options(
                etcd_opts.write.encrypt,
                etcd_opts.write.compression_level,
                etcd_opts.cluster,
            );
            options.lock_ttl = etcd_opts.lock_ttl;
            // Refuse bad combinations (no namespace, plaintext Secrets) before the first tick.
            options.validate()?;
            let kubeconfig = super::namespace::kubeconfig_path(a.kubeconfig.as_deref(), cluster)?;
            let client =
                clusterkit_backup::namespace::ApiClient::from_kubeconfig(&kubeconfig).await?;
            schedule::Source::Namespace { client, options }
        }
    };
    let kind = source.kind();
    let store = a.etcd.store.open(cluster).await?;
    let metrics = status::Metrics::new();
    if let Ok(Some(s)) = status::read_status(store.as_ref(), kind).await {
        metrics.load(kind, &s);
    }
    let drill = if a.drill {
        if a.drill_tools.on.is_some() {
            bail!("--on is for `backup drill`; a scheduled drill runs where the schedule runs");
        }
        Some(schedule::DrillAfter {
            options: a.drill_tools.options(cluster).await?,
            decrypt: settings::decrypt(
                &a.age_identity,
                a.etcd.passphrase_env.as_deref(),
                cluster.map(|c| &c.backup),
            )?,
        })
    } else {
        None
    };
    let job = schedule::Job {
        store,
        source,
        retention: a.retention.resolve(cluster.map(|c| &c.backup)),
        clock,
        metrics: metrics.clone(),
        lock_wait: schedule::DEFAULT_LOCK_WAIT,
        drill,
    };
    let report_line = |r: &schedule::RunReport| {
        let line = serde_json::json!({
            "kind": kind.to_string(),
            "outcome": r.outcome.as_str(),
            "id": r.manifest.as_ref().map(|m| m.id.clone()),
            "pruned": r.pruned,
            "message": r.message,
            "drill": r.drill.as_ref().map(|d| serde_json::json!({
                "ok": d.ok,
                "verdict": d.verdict,
                "restore_seconds": d.restore_seconds,
            })),
            "drill_error": r.drill_error,
        });
        println!("{line}");
    };
    if a.once {
        // Timers on several control-plane hosts fire within RandomizedDelaySec of each other:
        // a backup finished within the window counts as this tick's.
        let window = seconds(a.once_window_secs, "--once-window-secs")?;
        let tick = job
            .clock
            .now()
            .checked_sub_signed(window)
            .context("--once-window-secs reaches before the earliest date")?;
        let r = schedule::run_once(&job, tick).await;
        report_line(&r);
        if r.outcome == status::Outcome::Failure {
            bail!("scheduled backup failed: {}", r.message.unwrap_or_default());
        }
        if let Some(e) = &r.drill_error {
            bail!("the backup succeeded, its drill could not run: {e}");
        }
        if let Some(d) = r.drill.as_ref().filter(|d| !d.ok) {
            bail!("the backup succeeded, its drill {}", d.verdict);
        }
        return Ok(());
    }
    let expr = a
        .cron
        .clone()
        .or_else(|| cluster.and_then(|c| c.backup.schedule.clone()))
        .context("no --cron and no backup.schedule in cluster.yaml")?;
    let cron = schedule::parse_cron(&expr)?;
    if let Some(addr) = &a.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tokio::spawn(schedule::serve_metrics(listener, metrics));
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    schedule::run_daemon(job, cron, shutdown, report_line).await;
    Ok(())
}

/// `install-timer`: the units on every control-plane host (see `clusterkit_backup::timer`
/// for what goes where), or printed.
async fn install_timer(
    a: TimerArgs,
    cluster: Option<&Cluster>,
    output: OutputFormat,
) -> anyhow::Result<()> {
    use clusterkit_backup::timer;
    use clusterkit_core::fanout::{self, Fanout};
    if a.kind == ScheduleKind::Etcd && (!a.namespace.is_empty() || a.kubeconfig.is_some()) {
        bail!("namespaces and namespace selection flags need --kind namespace");
    }
    if a.print_cronjob {
        if a.kind != ScheduleKind::Etcd {
            bail!("--print-cronjob prints the etcd backup CronJob; for namespaces use the timer or `backup schedule --kind namespace`");
        }
        print!("{}", timer::cronjob(&a.cron, &a.image)?);
        return Ok(());
    }
    let Some(cluster) = cluster else {
        bail!("install-timer needs cluster.yaml (-f): the control-plane hosts, etcd members and backup settings come from it");
    };
    let what = match a.kind {
        ScheduleKind::Etcd => timer::What::Etcd,
        ScheduleKind::Namespace => {
            // Refuse a selection `backup schedule` would refuse on the hosts at every tick.
            let encrypt = clusterkit_backup::settings::encrypt(&[], None, Some(&cluster.backup))?;
            a.namespace
                .options(
                    encrypt,
                    cluster.backup.compression_level,
                    cluster.name.clone(),
                )
                .validate()
                .context("the timer's selection is refused (its encryption comes from backup.encryption in cluster.yaml)")?;
            let kubeconfig =
                super::namespace::kubeconfig_path(a.kubeconfig.as_deref(), Some(cluster))?;
            if !kubeconfig.is_file() {
                bail!(
                    "{} does not exist: install the cluster first, or give --kubeconfig",
                    kubeconfig.display()
                );
            }
            timer::What::Namespaces {
                selection: a.namespace.to_args(),
                kubeconfig,
            }
        }
    };
    let upload = if a.no_upload || a.print {
        None
    } else {
        Some(timer::current_binary()?)
    };
    let spec = timer::spec_from_cluster(
        cluster,
        what,
        a.store.as_deref(),
        &a.on_calendar,
        &a.binary,
        upload,
        a.drill,
    )?;
    if a.print {
        println!("# {}\n{}", spec.service_path(), timer::service_unit(&spec)?);
        println!("# {}\n{}", spec.timer_path(), timer::timer_unit(&spec)?);
        return Ok(());
    }
    let hosts = cluster.hosts_with_role(config::Role::ControlPlane);
    if hosts.is_empty() {
        bail!("cluster.yaml has no control-plane hosts");
    }
    let fan = Fanout::new("connect", cluster.ssh.concurrency);
    let connected = fanout::connect_all(cluster, &hosts, &fan).await;
    fanout::check(&connected)?;
    let mut reports = Vec::new();
    let modules = clusterkit_core::playbook::modules::Standalone::default();
    // One host after the other: the binary upload is held in memory.
    for (h, r) in hosts.iter().zip(connected) {
        let exec = r.result?;
        let report = timer::install_on(exec.as_ref(), &spec, &modules, a.check)
            .await
            .with_context(|| format!("install-timer on {}", h.name))?;
        reports.push(report);
    }
    output.print(&reports, || {
        let mut out = String::new();
        for r in &reports {
            if r.changed.is_empty() {
                out.push_str(&format!("{}: up to date\n", r.host));
            } else {
                out.push_str(&format!("{}: {}\n", r.host, r.changed.join(", ")));
            }
            for d in &r.diff {
                out.push_str(d);
            }
        }
        if a.check {
            return out;
        }
        out.push_str(&format!(
            "timer {u}.timer enabled; run one now with: systemctl start {u}.service\n",
            u = spec.unit
        ));
        out
    })
}
