//! The flags every backup and restore command shares: where the store is and the keys that
//! read encrypted backups. Defaults come from cluster.yaml's `backup:` section, merged by
//! `clusterkit_backup::settings` (flags win over the file, the file over the AWS environment).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args as ClapArgs;
use clusterkit_backup::settings::{self, StoreOverrides};
use clusterkit_backup::store::{ChecksumMode, Store};
use clusterkit_core::config::Cluster;

use super::{flags, Global};

/// Where backups live; defaults come from `backup:` in cluster.yaml.
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct StoreArgs {
    /// s3://bucket/prefix or file:///path (default: backup.store from cluster.yaml).
    #[arg(long)]
    pub store: Option<String>,
    /// S3 endpoint URL (default: backup.s3.endpoint, then AWS_ENDPOINT_URL).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: backup.s3.region, then AWS_REGION, then us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// Path-style addressing (default: on exactly when a custom endpoint is used).
    #[arg(long)]
    pub s3_path_style: Option<bool>,
    /// PEM CA bundle for the S3 endpoint.
    #[arg(long)]
    pub s3_ca_file: Option<PathBuf>,
    /// Request checksums: when-required (default, widest compatibility) or when-supported.
    #[arg(long, value_parser = parse_checksums)]
    pub s3_checksums: Option<ChecksumMode>,
    /// Multipart part size in MiB, 5 to 5120 (S3's limits; default 5).
    #[arg(long, value_parser = flags::part_size_mib())]
    pub part_size_mib: Option<u64>,
    /// Parts uploaded at once, 1 to 64 (default 2).
    #[arg(long, value_parser = flags::parts_in_flight())]
    pub parts_in_flight: Option<usize>,
}

impl StoreArgs {
    fn overrides(&self) -> StoreOverrides {
        StoreOverrides {
            store: self.store.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            ca_file: self.s3_ca_file.clone(),
            checksums: self.s3_checksums,
            part_size_mib: self.part_size_mib,
            parts_in_flight: self.parts_in_flight,
        }
    }

    /// Opens the store these flags (and cluster.yaml) name.
    pub(crate) async fn open(&self, cluster: Option<&Cluster>) -> anyhow::Result<Arc<dyn Store>> {
        let (url, opts) = settings::store(&self.overrides(), cluster.map(|c| &c.backup))?;
        let store = clusterkit_backup::store::open_store(&url, &opts)
            .await
            .with_context(|| format!("opening store {url}"))?;
        Ok(store)
    }
}

/// Keys to read encrypted backups.
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct DecryptArgs {
    /// age identity file (AGE-SECRET-KEY-1… lines); default: backup.encryption.age_identity_file.
    #[arg(long = "age-identity")]
    pub age_identity: Vec<PathBuf>,
    /// Environment variable holding the passphrase.
    #[arg(long)]
    pub passphrase_env: Option<String>,
}

impl DecryptArgs {
    /// The keys these flags (and cluster.yaml's `backup.encryption`) give.
    pub(crate) fn resolve(
        &self,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<clusterkit_backup::crypto::Decrypt> {
        Ok(settings::decrypt(
            &self.age_identity,
            self.passphrase_env.as_deref(),
            cluster.map(|c| &c.backup),
        )?)
    }
}

fn parse_checksums(s: &str) -> Result<ChecksumMode, String> {
    match s {
        "when-required" | "when_required" => Ok(ChecksumMode::WhenRequired),
        "when-supported" | "when_supported" => Ok(ChecksumMode::WhenSupported),
        _ => Err("expected when-required or when-supported".into()),
    }
}

/// cluster.yaml if it exists (backup commands also work standalone with flags).
pub(crate) fn load_optional_cluster(global: &Global) -> anyhow::Result<Option<Cluster>> {
    if !global.config.exists() {
        return Ok(None);
    }
    super::load_cluster(global).map(Some)
}
