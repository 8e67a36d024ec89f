//! `backup namespace`: discovery → paginated LIST per type → strip → one archive entry per
//! object → the shared write pipeline (sha256, zstd, optional age, multipart upload) → the
//! manifest, written last, with `kind: namespace`.
//!
//! Memory is bounded whatever the object count: one LIST page (`page_size` objects) is
//! processed while the next is fetched, the tar is handed on in chunks of about
//! [`CHUNK`] bytes through a bounded channel, and the pipeline's own bound applies after that.
//! Only per-type counters and the namespace names grow with the backup. Limits: a LIST whose
//! continue token expires (etcd compaction during a very long backup) fails the backup rather
//! than silently restarting; objects changed during the backup are captured as each page saw
//! them (there is no cluster-wide snapshot through the API).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::archive::{self, ArchiveHeader, ObjectFormat, TarWriter, ARCHIVE_FORMAT, HEADER_ENTRY};
use super::client::{ApiClient, ResourceType};
use super::error::NamespaceError;
use super::objects;
use super::plan::{self, TypeFilter};
use crate::catalog;
use crate::clock::Clock;
use crate::crypto::Encrypt;
use crate::error::BackupError;
use crate::lock;
use crate::manifest::{self, Kind, Manifest};
use crate::pipeline::WriteSettings;
use crate::store::Store;

/// The tar is handed to the pipeline in chunks of about this size.
pub const CHUNK: usize = 1 << 20;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Namespaces to back up (ignored with `all_namespaces`).
    pub namespaces: Vec<String>,
    /// Every namespace.
    pub all_namespaces: bool,
    /// A label selector applied to every LIST (Namespaces themselves are always taken).
    pub selector: Option<String>,
    /// Types to take / leave out, Secrets, cluster-scoped types.
    pub filter: TypeFilter,
    /// Secrets in an unencrypted backup are refused unless this is set.
    pub allow_plaintext_secrets: bool,
    /// Remove kubectl's last-applied annotation.
    pub strip_last_applied: bool,
    pub format: ObjectFormat,
    /// Objects per LIST page.
    pub page_size: u32,
    pub encrypt: Encrypt,
    /// zstd level.
    pub compression_level: i32,
    /// Cluster name recorded in the manifest.
    pub cluster: String,
    /// How long the store lock lives without renewal.
    pub lock_ttl: chrono::Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            namespaces: Vec::new(),
            all_namespaces: false,
            selector: None,
            filter: TypeFilter::default(),
            allow_plaintext_secrets: false,
            strip_last_applied: false,
            format: ObjectFormat::Yaml,
            page_size: 500,
            encrypt: Encrypt::None,
            compression_level: 3,
            cluster: String::new(),
            lock_ttl: chrono::Duration::minutes(5),
        }
    }
}

impl BackupOptions {
    /// Checks the options before anything is read or written.
    pub fn validate(&self) -> Result<(), NamespaceError> {
        if self.all_namespaces && !self.namespaces.is_empty() {
            return Err(NamespaceError::Invalid(
                "give namespaces or --all-namespaces, not both".into(),
            ));
        }
        if !self.all_namespaces && self.namespaces.is_empty() {
            return Err(NamespaceError::Invalid(
                "name at least one namespace, or --all-namespaces".into(),
            ));
        }
        if self.page_size == 0 {
            return Err(NamespaceError::Invalid(
                "--page-size must be at least 1".into(),
            ));
        }
        self.filter.validate()?;
        if self.filter.include_secrets
            && !self.encrypt.describe().is_encrypted()
            && !self.allow_plaintext_secrets
        {
            return Err(NamespaceError::Refused(
                "--include-secrets needs an encrypted backup (--age-recipient or \
                 --passphrase-env); add --allow-plaintext-secrets to store Secrets unencrypted"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl BackupOptions {
    /// What this backup selects, canonically (sorted, deduplicated), as recorded in the
    /// manifest's `selection` detail: the schedule uses it to tell its own backups from other
    /// namespace backups in the same store (tick de-duplication and pruning).
    pub fn selection(&self) -> Value {
        let sorted = |v: &[String]| {
            let mut v: Vec<String> = v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
            v.sort();
            v.dedup();
            v
        };
        let namespaces = if self.all_namespaces {
            Vec::new()
        } else {
            let mut v = self.namespaces.clone();
            v.sort();
            v.dedup();
            v
        };
        json!({
            "all_namespaces": self.all_namespaces,
            "namespaces": namespaces,
            "selector": self.selector,
            "include_resources": sorted(&self.filter.include),
            "exclude_resources": sorted(&self.filter.exclude),
            "include_secrets": self.filter.include_secrets,
            "include_cluster_resources": self.filter.include_cluster,
        })
    }
}

/// Backs up namespaces into `store` under the store's backup lock (shared with etcd
/// backups, whose cleanup of interrupted runs must not meet a backup in progress), after
/// cleaning up what interrupted runs left; records the outcome in the store's status (what
/// the monitor reads) and returns the manifest (written last).
pub async fn backup(
    client: &ApiClient,
    store: Arc<dyn Store>,
    opts: &BackupOptions,
    clock: Arc<dyn Clock>,
) -> Result<Manifest, NamespaceError> {
    opts.validate()?;
    let guard = lock::acquire_backup(&store, opts.lock_ttl, &clock).await?;
    let started = std::time::Instant::now();
    let result = async {
        let cleaned = catalog::cleanup_incomplete(store.as_ref()).await?;
        if !cleaned.is_empty() {
            tracing::info!(?cleaned, "removed what interrupted backups left");
        }
        backup_locked(client, store.as_ref(), opts).await
    }
    .await;
    crate::status::note_backup(
        store.as_ref(),
        Kind::Namespace,
        clock.now(),
        started,
        &result,
    )
    .await;
    guard.release_or_expire().await;
    result
}

/// [`backup`] for a caller that already holds the store's backup lock (the schedule daemon).
#[tracing::instrument(skip_all, fields(store = store.url()))]
pub async fn backup_locked(
    client: &ApiClient,
    store: &dyn Store,
    opts: &BackupOptions,
) -> Result<Manifest, NamespaceError> {
    opts.validate()?;
    let started_at = Utc::now();
    let server_version = client.server_version().await?;
    let (all_types, discovery_failures) = client.discover().await?;
    let types = plan::plan(&all_types, &opts.filter);
    let namespaces = namespace_objects(client, opts).await?;
    let namespace_names: Vec<String> = namespaces
        .iter()
        .filter_map(|n| objects::name_of(n).map(str::to_string))
        .collect();
    let crds = needed_crds(client, opts, &all_types, &types, &namespace_names).await?;
    tracing::info!(
        types = types.len(),
        namespaces = namespace_names.len(),
        crds = crds.len(),
        "backing up"
    );

    let id = manifest::new_id(Kind::Namespace, started_at);
    let header = ArchiveHeader {
        format: ARCHIVE_FORMAT,
        server_version: server_version.clone(),
        namespaces: namespace_names.clone(),
        object_format: opts.format,
        selector: opts.selector.clone(),
        include_cluster_resources: opts.filter.include_cluster,
        include_secrets: opts.filter.include_secrets,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, BackupError>>(4);
    let producer = Producer {
        client,
        opts,
        tx,
        tar: TarWriter::new(started_at.timestamp().max(0) as u64),
        counts: BTreeMap::new(),
        skipped_types: Vec::new(),
    };
    let settings = WriteSettings {
        compression_level: opts.compression_level,
        encrypt: opts.encrypt.clone(),
        etcd_integrity: false,
    };
    let source = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    // The same staging as every backup kind: pending marker, streamed upload, abort on failure.
    let (produced, staged) = tokio::join!(
        producer.run(header, &crds, &types, &namespaces),
        catalog::stage(store, Kind::Namespace, &id, started_at, source, settings)
    );
    let ((counts, skipped_types), staged) = match (produced, staged) {
        (Ok(p), Ok(s)) => (p, s),
        // A producer that stopped because the pipeline did: the pipeline's error says why.
        (Err(NamespaceError::Backup(BackupError::Cancelled)), Err(e)) => return Err(e.into()),
        // Otherwise the producer's own failure explains more than the pipeline's echo of it.
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e.into()),
    };

    let total: u64 = counts.values().sum();
    let mut details = BTreeMap::new();
    details.insert("namespaces".to_string(), json!(namespace_names));
    details.insert("resource_counts".to_string(), json!(counts));
    details.insert("objects".to_string(), json!(total));
    details.insert("server_version".to_string(), json!(server_version));
    details.insert("object_format".to_string(), json!(opts.format));
    details.insert("selector".to_string(), json!(opts.selector));
    details.insert("selection".to_string(), opts.selection());
    details.insert(
        "include_secrets".to_string(),
        json!(opts.filter.include_secrets),
    );
    details.insert(
        "include_cluster_resources".to_string(),
        json!(opts.filter.include_cluster),
    );
    details.insert(
        "crds".to_string(),
        json!(crds.iter().filter_map(objects::name_of).collect::<Vec<_>>()),
    );
    if !skipped_types.is_empty() || !discovery_failures.is_empty() {
        details.insert("skipped_types".to_string(), json!(skipped_types));
        details.insert("discovery_failures".to_string(), json!(discovery_failures));
    }
    let manifest = catalog::commit(store, staged, &opts.cluster, Utc::now(), None, details).await?;
    tracing::info!(id = %id, objects = total, stored = manifest.stored_size, "namespace backup complete");
    Ok(manifest)
}

/// The Namespace objects backed up: the named ones (each must exist) or all.
async fn namespace_objects(
    client: &ApiClient,
    opts: &BackupOptions,
) -> Result<Vec<Value>, NamespaceError> {
    let path = "/api/v1/namespaces";
    let mut out = Vec::new();
    if opts.all_namespaces {
        let mut token: Option<String> = None;
        loop {
            let page = client
                .list_page(path, None, opts.page_size, token.as_deref())
                .await?;
            out.extend(page.items);
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    } else {
        let mut names = opts.namespaces.clone();
        names.sort();
        names.dedup();
        for name in names {
            match client.get(path, &name).await? {
                Some(ns) => out.push(ns),
                None => {
                    return Err(NamespaceError::Invalid(format!(
                        "namespace {name:?} does not exist"
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// The CRDs to write first: all of them with `--include-cluster-resources` (unless excluded),
/// else those whose custom resources the backup will contain.
async fn needed_crds(
    client: &ApiClient,
    opts: &BackupOptions,
    all_types: &[ResourceType],
    types: &[ResourceType],
    namespaces: &[String],
) -> Result<Vec<Value>, NamespaceError> {
    let Some(crd_type) = all_types.iter().find(|t| plan::is_crd_type(t)) else {
        return Ok(Vec::new());
    };
    let take_all = opts.filter.include_cluster && opts.filter.wants(crd_type);
    let path = crd_type.collection_path(None);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_page(&path, None, opts.page_size, token.as_deref())
            .await?;
        for crd in page.items {
            let (group, plural) = objects::crd_group_plural(&crd);
            let wanted = match types
                .iter()
                .find(|t| t.group == group && t.resource == plural)
            {
                _ if take_all => true,
                None => false,
                Some(t) => has_objects(client, opts, t, namespaces).await?,
            };
            if wanted {
                out.push(crd);
            }
        }
        match page.continue_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(out)
}

/// Whether the backup will contain at least one object of `t`.
async fn has_objects(
    client: &ApiClient,
    opts: &BackupOptions,
    t: &ResourceType,
    namespaces: &[String],
) -> Result<bool, NamespaceError> {
    let scopes: Vec<Option<&str>> = if !t.namespaced || opts.all_namespaces {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for ns in scopes {
        let page = client
            .list_page(&t.collection_path(ns), opts.selector.as_deref(), 1, None)
            .await?;
        if !page.items.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the archive and feeds it to the pipeline.
struct Producer<'a> {
    client: &'a ApiClient,
    opts: &'a BackupOptions,
    tx: mpsc::Sender<Result<Bytes, BackupError>>,
    tar: TarWriter,
    /// Objects written per type key.
    counts: BTreeMap<String, u64>,
    /// Types the server would not list (404/405), with the reason.
    skipped_types: Vec<String>,
}

type Counts = (BTreeMap<String, u64>, Vec<String>);

impl Producer<'_> {
    async fn run(
        mut self,
        header: ArchiveHeader,
        crds: &[Value],
        types: &[ResourceType],
        namespaces: &[Value],
    ) -> Result<Counts, NamespaceError> {
        let result = self.write_all(header, crds, types, namespaces).await;
        if let Err(e) = &result {
            // Make the pipeline fail too, so nothing is completed.
            let _ = self
                .tx
                .send(Err(BackupError::Pipeline(e.to_string())))
                .await;
        }
        result?;
        let last = self
            .tar
            .finish()
            .map_err(|e| BackupError::Pipeline(format!("tar: {e}")))?;
        if self.tx.send(Ok(last)).await.is_err() {
            return Err(BackupError::Cancelled.into());
        }
        Ok((self.counts, self.skipped_types))
    }

    async fn write_all(
        &mut self,
        header: ArchiveHeader,
        crds: &[Value],
        types: &[ResourceType],
        namespaces: &[Value],
    ) -> Result<(), NamespaceError> {
        let header =
            serde_json::to_vec_pretty(&header).map_err(|e| BackupError::Pipeline(e.to_string()))?;
        self.append(HEADER_ENTRY, None, &header).await?;
        let crd_type = ResourceType {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            resource: "customresourcedefinitions".into(),
            kind: "CustomResourceDefinition".into(),
            namespaced: false,
        };
        for crd in crds {
            self.object(&crd_type, crd.clone()).await?;
        }
        for t in types {
            if plan::is_namespace_type(t) {
                for ns in namespaces {
                    self.object(t, ns.clone()).await?;
                }
                continue;
            }
            let scopes: Vec<Option<String>> = if !t.namespaced || self.opts.all_namespaces {
                vec![None]
            } else {
                namespaces
                    .iter()
                    .filter_map(objects::name_of)
                    .map(|n| Some(n.to_string()))
                    .collect()
            };
            for ns in scopes {
                self.list_type(t, ns.as_deref()).await?;
            }
        }
        Ok(())
    }

    /// Streams every page of one type in one scope, fetching the next page while writing one.
    async fn list_type(
        &mut self,
        t: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<(), NamespaceError> {
        let path = t.collection_path(namespace);
        let fetch = |token: Option<String>| {
            let client = self.client.clone();
            let path = path.clone();
            let selector = self.opts.selector.clone();
            let limit = self.opts.page_size;
            tokio::spawn(async move {
                client
                    .list_page(&path, selector.as_deref(), limit, token.as_deref())
                    .await
            })
        };
        let mut next = Some(fetch(None));
        let mut first = true;
        while let Some(handle) = next.take() {
            let page = match handle
                .await
                .map_err(|e| BackupError::Pipeline(format!("LIST task failed: {e}")))?
            {
                Ok(p) => p,
                // A type that went away or cannot be listed after all: noted, not fatal.
                Err(e) if first && matches!(e.status(), Some(404 | 405)) => {
                    tracing::warn!(resource = %t.key(), error = %e, "skipping a type the server would not list");
                    self.skipped_types.push(format!("{}: {e}", t.key()));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            first = false;
            next = page.continue_token.clone().map(|tok| fetch(Some(tok)));
            for item in page.items {
                self.object(t, item).await?;
            }
        }
        Ok(())
    }

    async fn object(&mut self, t: &ResourceType, mut obj: Value) -> Result<(), NamespaceError> {
        let side = objects::sidecar(t, &obj);
        objects::strip(t, &mut obj, self.opts.strip_last_applied);
        let name = objects::name_of(&obj).unwrap_or_default().to_string();
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        if name.is_empty() || name.contains('/') {
            return Err(NamespaceError::Api {
                method: "LIST",
                path: t.collection_path(namespace.as_deref()),
                status: None,
                message: "an object without a valid name".into(),
            });
        }
        let path = archive::entry_path(t, namespace.as_deref(), &name, self.opts.format);
        let data = self
            .opts
            .format
            .encode(&obj)
            .map_err(|e| BackupError::Pipeline(format!("encoding {path}: {e}")))?;
        self.append(&path, Some(&side), &data).await?;
        *self.counts.entry(t.key()).or_default() += 1;
        Ok(())
    }

    async fn append(
        &mut self,
        path: &str,
        side: Option<&objects::Sidecar>,
        data: &[u8],
    ) -> Result<(), NamespaceError> {
        self.tar
            .append(path, side, data)
            .map_err(|e| BackupError::Pipeline(format!("tar entry {path}: {e}")))?;
        if self.tar.buffered() >= CHUNK {
            let chunk = self.tar.take();
            if self.tx.send(Ok(chunk)).await.is_err() {
                // The pipeline stopped; its error is the one reported.
                return Err(BackupError::Cancelled.into());
            }
        }
        Ok(())
    }
}
