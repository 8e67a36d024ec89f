//! Turning cluster.yaml's `backup:` section plus command-line overrides into the options the
//! library uses. Flags win over the file; the file wins over the AWS environment.

use std::path::PathBuf;
use std::time::Duration;

use clusterkit_core::config::{self, Checksums, Cluster};
use clusterkit_core::layout::{NodeLayout, StateLayout};

use crate::crypto::{Decrypt, Encrypt};
use crate::error::BackupError;
use crate::etcd::{EtcdTarget, EtcdTls};
use crate::retention::Retention;
use crate::store::{ChecksumMode, StoreOptions};

/// Store-related overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct StoreOverrides {
    pub store: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub checksums: Option<ChecksumMode>,
    pub part_size_mib: Option<u64>,
    pub parts_in_flight: Option<usize>,
}

fn secret(env: &Option<config::SecretEnv>) -> Result<Option<String>, BackupError> {
    match env {
        Some(e) => e
            .read()
            .map(|s| Some(s.expose().to_string()))
            .map_err(|err| BackupError::Invalid(err.to_string())),
        None => Ok(None),
    }
}

/// `n` MiB in bytes, refused when it does not fit in memory's address space.
fn mib(n: u64) -> Result<usize, BackupError> {
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(1 << 20))
        .ok_or_else(|| BackupError::Invalid(format!("a part size of {n} MiB is too large")))
}

/// The store URL and options, from flags then cluster.yaml.
pub fn store(
    flags: &StoreOverrides,
    cfg: Option<&config::Backup>,
) -> Result<(String, StoreOptions), BackupError> {
    let url =
        match (&flags.store, cfg.and_then(|c| c.store.as_ref())) {
            (Some(u), _) => u.clone(),
            (None, Some(s)) => s.to_string(),
            (None, None) => return Err(BackupError::Invalid(
                "no store: give --store s3://bucket/prefix or file:///path, or set backup.store \
                 in cluster.yaml (-f)"
                    .into(),
            )),
        };
    let mut opts = StoreOptions::default();
    if let Some(c) = cfg {
        opts.s3.endpoint = c.s3.endpoint.clone();
        opts.s3.region = c.s3.region.clone();
        opts.s3.path_style = c.s3.path_style;
        opts.s3.access_key_id = secret(&c.s3.access_key_id)?;
        opts.s3.secret_access_key = secret(&c.s3.secret_access_key)?;
        opts.s3.ca_file = c.s3.ca_file.clone();
        opts.s3.checksums = match c.s3.checksums {
            Checksums::WhenRequired => ChecksumMode::WhenRequired,
            Checksums::WhenSupported => ChecksumMode::WhenSupported,
        };
        opts.part_size = Some(mib(c.s3.part_size_mib)?);
        opts.s3.parts_in_flight = Some(c.s3.parts_in_flight);
    }
    if flags.endpoint.is_some() {
        opts.s3.endpoint = flags.endpoint.clone();
    }
    if flags.region.is_some() {
        opts.s3.region = flags.region.clone();
    }
    if flags.path_style.is_some() {
        opts.s3.path_style = flags.path_style;
    }
    if flags.ca_file.is_some() {
        opts.s3.ca_file = flags.ca_file.clone();
    }
    if let Some(c) = flags.checksums {
        opts.s3.checksums = c;
    }
    if let Some(p) = flags.part_size_mib {
        opts.part_size = Some(mib(p)?);
    }
    if flags.parts_in_flight.is_some() {
        opts.s3.parts_in_flight = flags.parts_in_flight;
    }
    Ok((url, opts))
}

/// Encryption of new backups: flags if any, else cluster.yaml.
pub fn encrypt(
    recipients: &[String],
    passphrase_env: Option<&str>,
    cfg: Option<&config::Backup>,
) -> Result<Encrypt, BackupError> {
    if !recipients.is_empty() || passphrase_env.is_some() {
        return Ok(Encrypt::from_options(recipients, passphrase_env)?);
    }
    match cfg {
        Some(c) => Ok(Encrypt::from_options(
            &c.encryption.age_recipients,
            c.encryption.passphrase.as_ref().map(|p| p.var.as_str()),
        )?),
        None => Ok(Encrypt::None),
    }
}

/// Keys for reading backups: flags plus cluster.yaml's identity file / passphrase.
pub fn decrypt(
    identities: &[PathBuf],
    passphrase_env: Option<&str>,
    cfg: Option<&config::Backup>,
) -> Result<Decrypt, BackupError> {
    let mut files = identities.to_vec();
    let mut pass = passphrase_env.map(str::to_string);
    if let Some(c) = cfg {
        if files.is_empty() {
            files.extend(c.encryption.age_identity_file.clone());
        }
        if pass.is_none() {
            // Only use the file's passphrase variable when it is set: a backup encrypted to
            // recipients must stay readable without it.
            pass = c
                .encryption
                .passphrase
                .as_ref()
                .filter(|p| p.is_set())
                .map(|p| p.var.clone());
        }
    }
    Ok(Decrypt::from_options(&files, pass.as_deref())?)
}

/// Retention from cluster.yaml (absent counts are 0).
pub fn retention(cfg: Option<&config::Backup>) -> Retention {
    match cfg {
        Some(c) => Retention {
            keep_last: c.retention.keep_last.unwrap_or(0),
            hourly: c.retention.hourly.unwrap_or(0),
            daily: c.retention.daily.unwrap_or(0),
            weekly: c.retention.weekly.unwrap_or(0),
            monthly: c.retention.monthly.unwrap_or(0),
        },
        None => Retention::default(),
    }
}

/// etcd endpoints and client certificate of a cluster clusterkit installed: every etcd host's
/// client URL, the etcd CA and the apiserver's etcd client pair from the state directory.
pub fn etcd_target(cluster: &Cluster) -> EtcdTarget {
    let state = StateLayout::from_cluster(cluster);
    let (cert, key) = state.apiserver_etcd_client();
    EtcdTarget {
        endpoints: NodeLayout::from_cluster(cluster).etcd_client_urls(cluster),
        tls: Some(EtcdTls {
            ca: state.etcd_ca(),
            cert,
            key,
        }),
        timeout: Duration::from_secs(10),
    }
}

/// The `etcd` binary of a local restore drill: `flag` (or `$CLUSTERKIT_ETCD`, which the CLI
/// reads into it), else `bin/etcd` of the cluster's offline bundle when it has one, else `etcd`
/// from `PATH`.
pub fn drill_etcd_binary(flag: Option<&std::path::Path>, cluster: Option<&Cluster>) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(config::Packages::Bundle { dir }) = cluster.map(|c| &c.packages) {
        let bin = dir.join("bin/etcd");
        if bin.is_file() {
            return bin;
        }
    }
    PathBuf::from("etcd")
}
