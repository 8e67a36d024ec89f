//! `clusterkit backup namespace` and `clusterkit restore namespace`: the flags and handlers
//! over `clusterkit_backup::namespace`.
//!
//! Defaults come from cluster.yaml (`-f`) when it exists: the kubeconfig is the
//! `kubeconfig/admin.conf` that `install` generates in the cluster's state directory; store,
//! S3 settings and encryption come from its `backup:` section exactly as for `backup etcd`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clusterkit_backup::clock::SystemClock;
use clusterkit_backup::crypto::Encrypt;
use clusterkit_backup::namespace::{
    backup, restore, ApiClient, BackupOptions, Existing, NamespaceError, ObjectFormat,
    RestoreOptions, TypeFilter,
};
use clusterkit_backup::settings;
use clusterkit_core::config::Cluster;

use super::store::{load_optional_cluster, StoreArgs};
use super::{Global, OutputFormat};

/// What a namespace backup takes: shared by `backup namespace` and
/// `backup schedule --kind namespace`.
#[derive(clap::Args, Debug, Clone)]
pub struct NamespaceSelection {
    /// Namespaces to back up.
    pub namespaces: Vec<String>,

    /// Back up every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Only objects matching this label selector (Namespaces themselves are always taken).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,

    /// Only these resource types (plural, plural.group or kind; comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub include_resources: Vec<String>,

    /// Leave these resource types out (plural, plural.group or kind; comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_resources: Vec<String>,

    /// Also back up cluster-scoped types (ClusterRoles, StorageClasses, all CRDs, …; never
    /// Nodes or other machine-bound types unless named in --include-resources).
    #[arg(long)]
    pub include_cluster_resources: bool,

    /// Back up Secrets too (the backup must then be encrypted).
    #[arg(long)]
    pub include_secrets: bool,

    /// Allow Secrets in an unencrypted backup.
    #[arg(long)]
    pub allow_plaintext_secrets: bool,

    /// Drop kubectl's last-applied-configuration annotation from every object.
    #[arg(long)]
    pub strip_last_applied: bool,

    /// How objects are written in the archive.
    #[arg(long, value_enum, default_value_t = ObjectFormat::Yaml)]
    pub format: ObjectFormat,

    /// Objects per LIST request, 1 to 10000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
}

impl Default for NamespaceSelection {
    /// Nothing selected; format and page size as the flags' defaults.
    fn default() -> Self {
        NamespaceSelection {
            namespaces: Vec::new(),
            all_namespaces: false,
            selector: None,
            include_resources: Vec::new(),
            exclude_resources: Vec::new(),
            include_cluster_resources: false,
            include_secrets: false,
            allow_plaintext_secrets: false,
            strip_last_applied: false,
            format: ObjectFormat::Yaml,
            page_size: 500,
        }
    }
}

impl NamespaceSelection {
    /// True when nothing namespace-specific was asked for (no namespace, no `-A`, no filter):
    /// how `backup schedule` tells an etcd job given namespace flags by mistake.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && !self.all_namespaces
            && self.selector.is_none()
            && self.include_resources.is_empty()
            && self.exclude_resources.is_empty()
            && !self.include_cluster_resources
            && !self.include_secrets
            && !self.allow_plaintext_secrets
            && !self.strip_last_applied
    }

    /// The flags that ask for this selection again (defaults left out), for a unit's command
    /// line: parsing them gives back an equal selection.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.to_string());
            }
        };
        flag(self.all_namespaces, "--all-namespaces");
        flag(
            self.include_cluster_resources,
            "--include-cluster-resources",
        );
        flag(self.include_secrets, "--include-secrets");
        flag(self.allow_plaintext_secrets, "--allow-plaintext-secrets");
        flag(self.strip_last_applied, "--strip-last-applied");
        let mut value = |name: &str, v: String| {
            args.push(name.to_string());
            args.push(v);
        };
        if let Some(s) = &self.selector {
            value("--selector", s.clone());
        }
        if !self.include_resources.is_empty() {
            value("--include-resources", self.include_resources.join(","));
        }
        if !self.exclude_resources.is_empty() {
            value("--exclude-resources", self.exclude_resources.join(","));
        }
        let defaults = NamespaceSelection::default();
        if self.format != defaults.format {
            use clap::ValueEnum;
            if let Some(v) = self.format.to_possible_value() {
                value("--format", v.get_name().to_string());
            }
        }
        if self.page_size != defaults.page_size {
            value("--page-size", self.page_size.to_string());
        }
        // Last, after `--` would be safest, but a namespace name never starts with `-`
        // (RFC 1123 labels).
        args.extend(self.namespaces.iter().cloned());
        args
    }

    /// The backup options for this selection with the given encryption, zstd level and
    /// cluster name (the manifest's).
    pub fn options(
        &self,
        encrypt: Encrypt,
        compression_level: i32,
        cluster: String,
    ) -> BackupOptions {
        BackupOptions {
            namespaces: self.namespaces.clone(),
            all_namespaces: self.all_namespaces,
            selector: self.selector.clone(),
            filter: TypeFilter {
                include: self.include_resources.clone(),
                exclude: self.exclude_resources.clone(),
                include_secrets: self.include_secrets,
                include_cluster: self.include_cluster_resources,
            },
            allow_plaintext_secrets: self.allow_plaintext_secrets,
            strip_last_applied: self.strip_last_applied,
            format: self.format,
            page_size: self.page_size,
            encrypt,
            compression_level,
            cluster,
            ..BackupOptions::default()
        }
    }
}

/// `clusterkit backup namespace`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupNamespaceArgs {
    #[command(flatten)]
    pub select: NamespaceSelection,

    /// kubeconfig to use (default: kubeconfig/admin.conf in the cluster's state directory).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Encrypt to this age recipient (`age1…`; repeatable).
    #[arg(long = "age-recipient")]
    pub age_recipients: Vec<String>,

    /// Encrypt with the passphrase in this environment variable.
    #[arg(long)]
    pub passphrase_env: Option<String>,

    /// zstd compression level (default: backup.compression_level, else 3).
    #[arg(long)]
    pub compression_level: Option<i32>,
}

/// `clusterkit restore namespace ID`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreNamespaceArgs {
    /// The backup id (`clusterkit backup list`).
    pub id: String,

    /// Restore namespace OLD as NEW (`old:new`; repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub namespace_mapping: Vec<String>,

    /// What to do with objects that already exist.
    #[arg(long, value_enum, default_value_t = Existing::Skip)]
    pub existing: Existing,

    /// Ask the API server to check everything without persisting anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Keep Service nodePorts (by default the cluster allocates new ones).
    #[arg(long)]
    pub keep_node_ports: bool,

    /// Applies in flight at once, 1 to 1024.
    #[arg(
        long,
        default_value_t = 16,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
    )]
    pub concurrency: usize,

    /// kubeconfig to use (default: kubeconfig/admin.conf in the cluster's state directory).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub store: StoreArgs,

    /// age identity file for encrypted backups (repeatable).
    #[arg(long = "age-identity")]
    pub age_identities: Vec<PathBuf>,

    /// The passphrase of an encrypted backup is in this environment variable.
    #[arg(long)]
    pub passphrase_env: Option<String>,
}

/// The kubeconfig to use: the flag, else the `kubeconfig/admin.conf` the installer generates in
/// the cluster's state directory.
pub(crate) fn kubeconfig_path(
    flag: Option<&Path>,
    cluster: Option<&Cluster>,
) -> anyhow::Result<PathBuf> {
    match (flag, cluster) {
        (Some(k), _) => Ok(k.to_path_buf()),
        (None, Some(c)) => Ok(clusterkit_core::layout::StateLayout::from_cluster(c).admin_conf()),
        (None, None) => bail!(
            "no kubeconfig: give --kubeconfig, or -f cluster.yaml (its state directory has kubeconfig/admin.conf)"
        ),
    }
}

/// The API client of `--kubeconfig` (or the cluster's admin kubeconfig).
async fn client(flag: Option<&Path>, cluster: Option<&Cluster>) -> anyhow::Result<ApiClient> {
    let kubeconfig = kubeconfig_path(flag, cluster)?;
    Ok(ApiClient::from_kubeconfig(&kubeconfig).await?)
}

impl BackupNamespaceArgs {
    /// The options these arguments ask for (encryption keys read from the environment).
    /// `cluster` supplies defaults (encryption, compression level) the flags do not give.
    pub fn options(&self, cluster: Option<&Cluster>) -> Result<BackupOptions, NamespaceError> {
        let cfg = cluster.map(|c| &c.backup);
        let encrypt = settings::encrypt(&self.age_recipients, self.passphrase_env.as_deref(), cfg)?;
        Ok(self.select.options(
            encrypt,
            self.compression_level
                .or(cfg.map(|c| c.compression_level))
                .unwrap_or(3),
            cluster.map(|c| c.name.clone()).unwrap_or_default(),
        ))
    }

    /// Runs the backup and prints the backup id (per-type counts on stderr) or the manifest.
    pub async fn run(self, global: &Global) -> anyhow::Result<()> {
        let cluster = load_optional_cluster(global)?;
        let cluster = cluster.as_ref();
        let opts = self.options(cluster)?;
        // Refuse bad combinations before connecting anywhere.
        opts.validate()?;
        let client = client(self.kubeconfig.as_deref(), cluster).await?;
        let store = self.store.open(cluster).await?;
        let m = backup(&client, store, &opts, Arc::new(SystemClock))
            .await
            .context("namespace backup failed")?;
        if global.output == OutputFormat::Table {
            let counts = m
                .details
                .get("resource_counts")
                .and_then(|v| v.as_object())
                .cloned()
                .unwrap_or_default();
            let width = counts
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(0)
                .max("RESOURCE".len());
            eprintln!("{:<width$}  {:>8}", "RESOURCE", "OBJECTS");
            for (k, v) in &counts {
                eprintln!("{k:<width$}  {v:>8}");
            }
            eprintln!(
                "backup {}: {} objects, {} bytes raw, {} bytes stored, encryption {}",
                m.id,
                m.details.get("objects").cloned().unwrap_or_default(),
                m.raw_size,
                m.stored_size,
                m.encryption.summary()
            );
        }
        // The table is the id alone on stdout, for scripts.
        global.output.print(&m, || format!("{}\n", m.id))
    }
}

impl RestoreNamespaceArgs {
    /// The options these arguments ask for.
    /// `cluster` supplies the decryption keys the flags do not give.
    pub fn options(&self, cluster: Option<&Cluster>) -> Result<RestoreOptions, NamespaceError> {
        let decrypt = settings::decrypt(
            &self.age_identities,
            self.passphrase_env.as_deref(),
            cluster.map(|c| &c.backup),
        )?;
        Ok(RestoreOptions {
            namespace_mapping: parse_mapping(&self.namespace_mapping)?,
            existing: self.existing,
            dry_run: self.dry_run,
            keep_node_ports: self.keep_node_ports,
            decrypt,
            concurrency: self.concurrency,
            crd_timeout: Duration::from_secs(60),
        })
    }

    /// Runs the restore and prints the per-type table (or the report). Fails when any object
    /// failed.
    pub async fn run(self, global: &Global) -> anyhow::Result<()> {
        let cluster = load_optional_cluster(global)?;
        let cluster = cluster.as_ref();
        let opts = self.options(cluster)?;
        let client = client(self.kubeconfig.as_deref(), cluster).await?;
        let store = self.store.open(cluster).await?;
        let report = restore(&client, store.as_ref(), &self.id, &opts)
            .await
            .with_context(|| format!("restoring namespace backup {}", self.id))?;
        global.output.print(&report, || {
            let mut out = String::new();
            if report.dry_run {
                out.push_str("dry run: nothing was changed\n");
            }
            out.push_str(&report.table());
            for f in &report.failures {
                out.push_str(&format!("failed: {f}\n"));
            }
            for n in &report.notes {
                out.push_str(&format!("note: {n}\n"));
            }
            out
        })?;
        let failed = report.failed();
        if failed > 0 {
            bail!("{failed} objects could not be restored (see above)");
        }
        Ok(())
    }
}

/// Parses `old:new` pairs.
pub fn parse_mapping(pairs: &[String]) -> Result<BTreeMap<String, String>, NamespaceError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (old, new) = pair
            .split_once(':')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty())
            .ok_or_else(|| {
                NamespaceError::Invalid(format!("--namespace-mapping {pair:?}: expected old:new"))
            })?;
        if out.insert(old.to_string(), new.to_string()).is_some() {
            return Err(NamespaceError::Invalid(format!(
                "--namespace-mapping maps {old:?} twice"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Backup(BackupNamespaceArgs),
        Restore(RestoreNamespaceArgs),
    }

    #[test]
    fn a_selection_survives_its_own_flags() {
        let parse = |args: &[String]| {
            let mut all = vec!["x".to_string(), "backup".into()];
            all.extend(args.iter().cloned());
            all.extend(["--store".into(), "file:///b".into()]);
            let Cmd::Backup(b) = Cli::try_parse_from(all).unwrap().cmd else {
                panic!()
            };
            b.select
        };
        let given: Vec<String> = [
            "team-a",
            "team-b",
            "-l",
            "app in (web, api)",
            "--include-resources",
            "configmaps,deployments.apps",
            "--exclude-resources",
            "events",
            "--include-cluster-resources",
            "--include-secrets",
            "--allow-plaintext-secrets",
            "--strip-last-applied",
            "--format",
            "json",
            "--page-size",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let selection = parse(&given);
        let again = parse(&selection.to_args());
        assert_eq!(format!("{again:?}"), format!("{selection:?}"));
        assert_eq!(selection.format, ObjectFormat::Json, "not the default");
        assert_eq!(again.page_size, 50);
        // Defaults stay off the command line.
        let all = parse(&["-A".to_string()]);
        assert_eq!(all.to_args(), ["--all-namespaces"]);
    }

    #[test]
    fn parses_arguments() {
        let cli = Cli::try_parse_from([
            "x",
            "backup",
            "team-a",
            "team-b",
            "-l",
            "app=web",
            "--include-resources",
            "configmaps,deployments.apps",
            "--include-secrets",
            "--age-recipient",
            "age1xyz",
            "--store",
            "file:///b",
        ])
        .unwrap();
        let Cmd::Backup(b) = cli.cmd else { panic!() };
        assert_eq!(b.select.namespaces, ["team-a", "team-b"]);
        assert_eq!(
            b.select.include_resources,
            ["configmaps", "deployments.apps"]
        );
        assert_eq!(b.store.store.as_deref(), Some("file:///b"));

        let cli = Cli::try_parse_from([
            "x",
            "restore",
            "namespace-20240101T000000Z-abcd",
            "--namespace-mapping",
            "a:b,c:d",
            "--existing",
            "update",
            "--dry-run",
        ])
        .unwrap();
        let Cmd::Restore(r) = cli.cmd else { panic!() };
        let o = r.options(None).unwrap();
        assert_eq!(o.namespace_mapping.get("c").map(String::as_str), Some("d"));
        assert_eq!(o.existing, Existing::Update);
        assert!(o.dry_run);
    }

    #[test]
    fn mapping_errors() {
        assert!(parse_mapping(&["a".into()]).is_err());
        assert!(parse_mapping(&["a:".into()]).is_err());
        assert!(parse_mapping(&["a:b".into(), "a:c".into()]).is_err());
    }

    #[test]
    fn plaintext_secrets_refused() {
        let args = BackupNamespaceArgs {
            select: NamespaceSelection {
                namespaces: vec!["a".into()],
                include_secrets: true,
                ..Default::default()
            },
            kubeconfig: None,
            store: StoreArgs::default(),
            age_recipients: vec![],
            passphrase_env: None,
            compression_level: None,
        };
        let err = args.options(None).unwrap().validate().unwrap_err();
        assert!(matches!(err, NamespaceError::Refused(_)), "{err}");
        let mut ok = args.clone();
        ok.select.allow_plaintext_secrets = true;
        assert!(ok.options(None).unwrap().validate().is_ok());
    }
}
