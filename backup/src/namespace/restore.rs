//! `restore namespace ID`: verify the stored backup (checksums, decryption) before touching
//! the cluster, then read the archive once, front to back, and server-side apply each object
//! (field manager `clusterkit`) in the archive's dependency order.
//!
//! Objects of one type are applied in parallel (`concurrency`); between types the restore
//! waits for every apply to finish, and after CRDs until each is Established and served, so
//! owners exist before what they own and custom resources after their definition.
//! ownerReferences are relinked: old uid → the new uid of the restored (or already existing)
//! owner, else the owner found by kind and name in the target namespace; an object whose owner
//! comes later in the archive is held back and applied at the end; a reference to an owner that
//! exists nowhere is dropped (with a note), since the garbage collector would otherwise delete
//! the object. Limits: the old→new uid map grows with the number of restored objects (about
//! 100 bytes each); `--dry-run` cannot ask the server about objects in a namespace or of a
//! custom type that the restore itself would create first — those are counted as created and
//! listed in the notes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::archive::{self, ArchiveHeader, EntryPath, ARCHIVE_FORMAT, HEADER_ENTRY};
use super::client::{ApiClient, ResourceType};
use super::error::NamespaceError;
use super::objects::{self, Prepare, Sidecar};
use crate::catalog;
use crate::crypto::Decrypt;
use crate::error::BackupError;
use crate::manifest::{Kind, Manifest};
use crate::pipeline;
use crate::store::Store;

/// What to do with objects that already exist in the target cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Leave them as they are.
    #[default]
    Skip,
    /// Apply the backed-up version over them.
    Update,
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Old namespace → new namespace.
    pub namespace_mapping: BTreeMap<String, String>,
    pub existing: Existing,
    /// Server-side dry run: nothing is persisted.
    pub dry_run: bool,
    /// Keep Service nodePorts instead of letting the cluster allocate new ones.
    pub keep_node_ports: bool,
    /// Keys for encrypted backups.
    pub decrypt: Decrypt,
    /// Applies in flight at once.
    pub concurrency: usize,
    /// How long to wait for a restored CRD to become Established.
    pub crd_timeout: Duration,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            namespace_mapping: BTreeMap::new(),
            existing: Existing::Skip,
            dry_run: false,
            keep_node_ports: false,
            decrypt: Decrypt::default(),
            concurrency: 16,
            crd_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts for one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeCounts {
    /// `configmaps`, `deployments.apps`, …
    pub resource: String,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// What a restore did, per type in restore order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub dry_run: bool,
    pub types: Vec<TypeCounts>,
    /// One line per failed object (the first [`MAX_MESSAGES`]).
    pub failures: Vec<String>,
    /// Things the operator should know (dropped ownerReferences, dry-run limits, …).
    pub notes: Vec<String>,
    /// Why objects were skipped: `"<type>: <reason>"` → count.
    pub skip_reasons: BTreeMap<String, u64>,
}

/// At most this many failure lines and notes are kept.
pub const MAX_MESSAGES: usize = 100;

impl RestoreReport {
    /// Objects that failed, over all types.
    pub fn failed(&self) -> u64 {
        self.types.iter().map(|t| t.failed).sum()
    }

    /// Counts for one type, if it was in the backup.
    pub fn counts(&self, resource: &str) -> Option<&TypeCounts> {
        self.types.iter().find(|t| t.resource == resource)
    }

    /// The per-type table.
    pub fn table(&self) -> String {
        let width = self
            .types
            .iter()
            .map(|t| t.resource.len())
            .max()
            .unwrap_or(0)
            .max("RESOURCE".len());
        let mut out = format!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}\n",
            "RESOURCE", "CREATED", "UPDATED", "SKIPPED", "FAILED"
        );
        let mut total = TypeCounts::default();
        for t in &self.types {
            out.push_str(&format!(
                "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}\n",
                t.resource, t.created, t.updated, t.skipped, t.failed
            ));
            total.created += t.created;
            total.updated += t.updated;
            total.skipped += t.skipped;
            total.failed += t.failed;
        }
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}\n",
            "TOTAL", total.created, total.updated, total.skipped, total.failed
        ));
        out
    }

    fn count(&mut self, resource: &str, outcome: &Outcome) {
        let idx = match self.types.iter().position(|t| t.resource == resource) {
            Some(i) => i,
            None => {
                self.types.push(TypeCounts {
                    resource: resource.to_string(),
                    ..Default::default()
                });
                self.types.len() - 1
            }
        };
        let t = &mut self.types[idx];
        match outcome {
            Outcome::Created => t.created += 1,
            Outcome::Updated => t.updated += 1,
            Outcome::Skipped(reason) => {
                t.skipped += 1;
                *self
                    .skip_reasons
                    .entry(format!("{resource}: {reason}"))
                    .or_default() += 1;
            }
            Outcome::Failed(msg) => {
                t.failed += 1;
                if self.failures.len() < MAX_MESSAGES {
                    self.failures.push(msg.clone());
                }
            }
            Outcome::Deferred(_) => {}
        }
    }
}

/// One object read from the archive.
#[derive(Debug)]
struct Archived {
    path: EntryPath,
    side: Sidecar,
    object: Value,
}

enum Item {
    Header(ArchiveHeader),
    Object(Box<Archived>),
}

enum Outcome {
    Created,
    Updated,
    Skipped(&'static str),
    Failed(String),
    /// Its owner comes later in the archive: retried at the end.
    Deferred(Box<Archived>),
}

/// Shared by the apply tasks.
struct Ctx {
    client: ApiClient,
    prepare: Prepare,
    existing: Existing,
    dry_run: bool,
    crd_timeout: Duration,
    /// (group, kind) → type, to find owners by name.
    kinds: HashMap<(String, String), ResourceType>,
    /// Old uid → uid in the target cluster.
    uids: Mutex<HashMap<String, String>>,
    /// Dry run: namespaces and custom types (group, plural) that would be created first.
    dry_new_namespaces: Mutex<HashSet<String>>,
    dry_new_types: Mutex<HashSet<(String, String)>>,
    notes: Mutex<Vec<String>>,
}

impl Ctx {
    fn note(&self, text: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if notes.len() < MAX_MESSAGES && !notes.contains(&text) {
            notes.push(text);
        }
    }
}

/// Reads the manifest of a namespace backup (refusing other kinds).
pub async fn load_manifest(store: &dyn Store, id: &str) -> Result<Manifest, NamespaceError> {
    let m = catalog::get_manifest(store, id).await?;
    if m.kind != Kind::Namespace {
        return Err(NamespaceError::Invalid(format!(
            "backup {id} is a {} backup, not a namespace backup",
            m.kind
        )));
    }
    Ok(m)
}

/// Restores backup `id` from `store` into the cluster `client` talks to, and counts the
/// restore in the store's status unless it is a dry run (a restore with failed objects counts
/// as failed).
#[tracing::instrument(skip_all, fields(id = %id, dry_run = opts.dry_run))]
pub async fn restore(
    client: &ApiClient,
    store: &dyn Store,
    id: &str,
    opts: &RestoreOptions,
) -> Result<RestoreReport, NamespaceError> {
    let result = restore_unrecorded(client, store, id, opts).await;
    if !opts.dry_run {
        let ok = matches!(&result, Ok(report) if report.failed() == 0);
        crate::status::note_restore(store, Kind::Namespace, ok).await;
    }
    result
}

async fn restore_unrecorded(
    client: &ApiClient,
    store: &dyn Store,
    id: &str,
    opts: &RestoreOptions,
) -> Result<RestoreReport, NamespaceError> {
    if opts.concurrency == 0 {
        return Err(NamespaceError::Invalid(
            "--concurrency must be at least 1".into(),
        ));
    }
    let m = load_manifest(store, id).await?;
    // Nothing is applied from a backup that is corrupt or cannot be decrypted.
    pipeline::read_and_check(store, &m, &opts.decrypt, None).await?;
    let (types, _) = client.discover().await?;
    let kinds = types
        .into_iter()
        .map(|t| ((t.group.clone(), t.kind.clone()), t))
        .collect();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        prepare: Prepare {
            namespace_mapping: opts.namespace_mapping.clone(),
            keep_node_ports: opts.keep_node_ports,
        },
        existing: opts.existing,
        dry_run: opts.dry_run,
        crd_timeout: opts.crd_timeout,
        kinds,
        uids: Mutex::new(HashMap::new()),
        dry_new_namespaces: Mutex::new(HashSet::new()),
        dry_new_types: Mutex::new(HashSet::new()),
        notes: Mutex::new(Vec::new()),
    });

    let reader = store.open(&m.data_key).await?;
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (tx, mut rx) = mpsc::channel::<Result<Item, NamespaceError>>(256);
    let decrypt = opts.decrypt.clone();
    let manifest = m.clone();
    let reader_task =
        tokio::task::spawn_blocking(move || read_archive(bridge, &manifest, &decrypt, &tx));

    let mut report = RestoreReport {
        id: id.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut tasks: JoinSet<(String, Outcome)> = JoinSet::new();
    let mut deferred: Vec<Archived> = Vec::new();
    let mut current_type = String::new();
    let mut seen_header = false;
    let mut done = 0u64;
    let mut failure: Option<NamespaceError> = None;
    while let Some(item) = rx.recv().await {
        let archived = match item {
            Err(e) => {
                failure = Some(e);
                break;
            }
            Ok(Item::Header(h)) => {
                if let Err(e) = check_header(id, &h, opts) {
                    failure = Some(e);
                    break;
                }
                seen_header = true;
                continue;
            }
            Ok(Item::Object(a)) => a,
        };
        if !seen_header {
            failure = Some(NamespaceError::Archive {
                id: id.to_string(),
                message: format!("the archive does not start with {HEADER_ENTRY}"),
            });
            break;
        }
        let key = type_of(&archived).key();
        if key != current_type {
            // Everything of the previous type is in place before the next type starts.
            drain(&mut tasks, &mut report, &mut deferred).await;
            current_type = key.clone();
        }
        while tasks.len() >= opts.concurrency {
            collect(tasks.join_next().await, &mut report, &mut deferred);
        }
        let ctx = ctx.clone();
        tasks.spawn(async move { (key, restore_one(&ctx, archived, false).await) });
        done += 1;
        if done % 1000 == 0 {
            tracing::info!(objects = done, "restoring");
        }
    }
    drain(&mut tasks, &mut report, &mut deferred).await;
    drop(rx);
    let read = reader_task
        .await
        .map_err(|e| BackupError::Pipeline(format!("archive reader failed: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    read?;
    // Objects whose owners came later: their owners are in place now (or never will be).
    for archived in std::mem::take(&mut deferred) {
        let key = type_of(&archived).key();
        let outcome = restore_one(&ctx, Box::new(archived), true).await;
        report.count(&key, &outcome);
    }
    report.notes = std::mem::take(&mut *ctx.notes.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(report)
}

fn check_header(id: &str, h: &ArchiveHeader, opts: &RestoreOptions) -> Result<(), NamespaceError> {
    if h.format > ARCHIVE_FORMAT {
        return Err(NamespaceError::Archive {
            id: id.to_string(),
            message: format!(
                "archive format {} is newer than this clusterkit understands ({ARCHIVE_FORMAT})",
                h.format
            ),
        });
    }
    for old in opts.namespace_mapping.keys() {
        if !h.namespaces.contains(old) {
            return Err(NamespaceError::Invalid(format!(
                "--namespace-mapping names {old:?}, which is not in backup {id} (it has: {})",
                h.namespaces.join(", ")
            )));
        }
    }
    Ok(())
}

fn collect(
    joined: Option<Result<(String, Outcome), tokio::task::JoinError>>,
    report: &mut RestoreReport,
    deferred: &mut Vec<Archived>,
) {
    match joined {
        Some(Ok((key, Outcome::Deferred(a)))) => {
            let _ = key;
            deferred.push(*a);
        }
        Some(Ok((key, outcome))) => report.count(&key, &outcome),
        Some(Err(e)) => report.count(
            "(internal)",
            &Outcome::Failed(format!("apply task failed: {e}")),
        ),
        None => {}
    }
}

async fn drain(
    tasks: &mut JoinSet<(String, Outcome)>,
    report: &mut RestoreReport,
    deferred: &mut Vec<Archived>,
) {
    while let Some(joined) = tasks.join_next().await {
        collect(Some(joined), report, deferred);
    }
}

/// The type of an archived object (kind from the object, the rest from its path).
fn type_of(a: &Archived) -> ResourceType {
    ResourceType {
        group: a.path.group.clone(),
        version: a.path.version.clone(),
        resource: a.path.resource.clone(),
        kind: a
            .object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        namespaced: a.path.namespace.is_some(),
    }
}

/// Restores one object. `final_pass`: owners that cannot be found now never will be.
async fn restore_one(ctx: &Ctx, archived: Box<Archived>, final_pass: bool) -> Outcome {
    let t = type_of(&archived);
    if let Some(reason) = objects::skip_reason(&t, &archived.object, &archived.side) {
        return Outcome::Skipped(reason);
    }
    let mut obj = archived.object.clone();
    objects::prepare(&t, &mut obj, &ctx.prepare);
    // After `prepare`: a mapped Namespace has its new name.
    let name = objects::name_of(&obj)
        .unwrap_or(&archived.path.name)
        .to_string();
    let namespace = archived
        .path
        .namespace
        .as_deref()
        .map(|ns| ctx.prepare.map_namespace(ns).to_string());
    if let (Some(ns), Some(meta)) = (
        &namespace,
        obj.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    let label = match &namespace {
        Some(ns) => format!("{} {ns}/{name}", t.key()),
        None => format!("{} {name}", t.key()),
    };
    match relink(ctx, &mut obj, namespace.as_deref(), final_pass).await {
        Ok(true) => {}
        Ok(false) => return Outcome::Deferred(archived),
        Err(e) => return Outcome::Failed(format!("{label}: {e}")),
    }
    let collection = t.collection_path(namespace.as_deref());

    if ctx.dry_run && would_need_creation_first(ctx, &t, namespace.as_deref()) {
        return Outcome::Created;
    }
    if ctx.existing == Existing::Skip {
        match ctx.client.get(&collection, &name).await {
            Ok(Some(existing)) => {
                remember_uid(ctx, &archived.side, &existing);
                return Outcome::Skipped("exists");
            }
            Ok(None) => {}
            Err(e) => return Outcome::Failed(format!("{label}: {e}")),
        }
    }
    let applied = match ctx
        .client
        .apply(&collection, &name, &obj, ctx.dry_run)
        .await
    {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(format!("{label}: {e}")),
    };
    remember_uid(ctx, &archived.side, &applied.object);
    if applied.created && ctx.dry_run {
        if t.group.is_empty() && t.resource == "namespaces" {
            lock(&ctx.dry_new_namespaces).insert(name.clone());
        } else if let Some(key) = crd_type_of(&t, &obj) {
            lock(&ctx.dry_new_types).insert(key);
        }
    }
    if !ctx.dry_run && crd_type_of(&t, &obj).is_some() {
        if let Err(e) = wait_crd_ready(ctx, &name, ctx.crd_timeout).await {
            return Outcome::Failed(format!("{label}: {e}"));
        }
    }
    if applied.created {
        Outcome::Created
    } else {
        Outcome::Updated
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn remember_uid(ctx: &Ctx, side: &Sidecar, new: &Value) {
    if let (Some(old), Some(new)) = (
        &side.uid,
        new.pointer("/metadata/uid").and_then(Value::as_str),
    ) {
        lock(&ctx.uids).insert(old.clone(), new.to_string());
    }
}

/// (group, plural) of the custom type a CRD object defines.
fn crd_type_of(t: &ResourceType, obj: &Value) -> Option<(String, String)> {
    if !super::plan::is_crd_type(t) {
        return None;
    }
    match objects::crd_group_plural(obj) {
        ("", _) | (_, "") => None,
        (group, plural) => Some((group.to_string(), plural.to_string())),
    }
}

/// Dry run only: the server cannot judge an object whose namespace or type the restore itself
/// would create first.
fn would_need_creation_first(ctx: &Ctx, t: &ResourceType, namespace: Option<&str>) -> bool {
    if let Some(ns) = namespace {
        if lock(&ctx.dry_new_namespaces).contains(ns) {
            ctx.note(format!(
                "dry run: namespace {ns} does not exist yet, so the server could not check the objects in it"
            ));
            return true;
        }
    }
    if lock(&ctx.dry_new_types).contains(&(t.group.clone(), t.resource.clone())) {
        ctx.note(format!(
            "dry run: {} is defined by a CRD the restore would create, so the server could not check its objects",
            t.key()
        ));
        return true;
    }
    false
}

/// Points ownerReferences at the owners' uids in the target cluster. `Ok(false)`: an owner is
/// not there yet (try again at the end).
async fn relink(
    ctx: &Ctx,
    obj: &mut Value,
    namespace: Option<&str>,
    final_pass: bool,
) -> Result<bool, NamespaceError> {
    let Some(Value::Array(refs)) = obj
        .pointer_mut("/metadata/ownerReferences")
        .map(Value::take)
    else {
        return Ok(true);
    };
    let mut kept = Vec::new();
    for mut r in refs {
        let old = r
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let known = lock(&ctx.uids).get(&old).cloned();
        let new = match known {
            Some(u) => Some(u),
            None => find_owner(ctx, &r, namespace).await?,
        };
        match new {
            Some(uid) => {
                r["uid"] = Value::String(uid);
                kept.push(r);
            }
            None if !final_pass => {
                // `archived` still holds the untouched object for the retry.
                return Ok(false);
            }
            None => ctx.note(format!(
                "dropped an ownerReference to {} {} of {}: the owner is neither in the backup nor in the cluster",
                r.get("kind").and_then(Value::as_str).unwrap_or("?"),
                r.get("name").and_then(Value::as_str).unwrap_or("?"),
                objects::name_of(obj).unwrap_or("?"),
            )),
        }
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if kept.is_empty() {
            meta.remove("ownerReferences");
        } else {
            meta.insert("ownerReferences".into(), Value::Array(kept));
        }
    }
    Ok(true)
}

/// The uid of an owner that exists in the target cluster under the same kind and name.
async fn find_owner(
    ctx: &Ctx,
    r: &Value,
    namespace: Option<&str>,
) -> Result<Option<String>, NamespaceError> {
    let api_version = r
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    let Some(t) = ctx.kinds.get(&(group.to_string(), kind.to_string())) else {
        return Ok(None);
    };
    if name.is_empty() {
        return Ok(None);
    }
    let owner = ctx.client.get(&t.collection_path(namespace), name).await?;
    Ok(owner.and_then(|o| {
        o.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
    }))
}

/// Waits until a restored CRD is Established and its resources are served.
async fn wait_crd_ready(ctx: &Ctx, name: &str, timeout: Duration) -> Result<(), NamespaceError> {
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || NamespaceError::Timeout {
        what: format!("CRD {name} to become established"),
        seconds: timeout.as_secs(),
    };
    let crd = loop {
        if let Some(crd) = ctx.client.get(crds, name).await? {
            let established = crd
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Established")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                });
            if established {
                break crd;
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(timed_out());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (group, plural) = objects::crd_group_plural(&crd);
    let version = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or_default();
    let path = format!("/apis/{group}/{version}/{plural}");
    loop {
        match ctx.client.list_page(&path, None, 1, None).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) if e.is_not_found() => return Err(timed_out()),
            Err(e) => return Err(e),
        }
    }
}

/// Decrypts, decompresses and untars the stored object, sending each entry on.
fn read_archive(
    input: impl Read,
    m: &Manifest,
    decrypt: &Decrypt,
    tx: &mpsc::Sender<Result<Item, NamespaceError>>,
) -> Result<(), NamespaceError> {
    // A send error means the restore stopped; its error is the one reported.
    visit_archive(input, m, decrypt, |item| tx.blocking_send(Ok(item)).is_ok())
}

/// What a namespace backup's archive holds, counted by [`count_archive`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveCounts {
    /// Whether the archive starts with its header entry.
    pub header: bool,
    /// Objects per type (`configmaps`, `deployments.apps`), as the manifest's `resource_counts`.
    pub counts: BTreeMap<String, u64>,
    pub objects: u64,
}

/// Downloads a namespace backup and decrypts, decompresses and parses every object in it,
/// counting them per type. (The checksums are [`pipeline::read_and_check`]'s job.)
pub async fn count_archive(
    store: &dyn Store,
    m: &Manifest,
    decrypt: &Decrypt,
) -> Result<ArchiveCounts, NamespaceError> {
    let reader = store.open(&m.data_key).await?;
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let manifest = m.clone();
    let decrypt = decrypt.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ArchiveCounts::default();
        let mut first = true;
        visit_archive(bridge, &manifest, &decrypt, |item| {
            match item {
                Item::Header(_) => out.header = first,
                Item::Object(a) => {
                    *out.counts.entry(type_of(&a).key()).or_default() += 1;
                    out.objects += 1;
                }
            }
            first = false;
            true
        })?;
        Ok(out)
    })
    .await
    .map_err(|e| BackupError::Pipeline(format!("archive reader failed: {e}")))?
}

/// Reads the archive entry by entry, handing each parsed item to `visit` until it returns false.
fn visit_archive(
    input: impl Read,
    m: &Manifest,
    decrypt: &Decrypt,
    mut visit: impl FnMut(Item) -> bool,
) -> Result<(), NamespaceError> {
    let bad = |message: String| NamespaceError::Archive {
        id: m.id.clone(),
        message,
    };
    let result = (|| {
        let plain = decrypt
            .reader(&m.encryption, input)
            .map_err(BackupError::from)?;
        let zstd =
            zstd::stream::read::Decoder::new(plain).map_err(|e| bad(format!("zstd: {e}")))?;
        let mut tar = tar::Archive::new(zstd);
        for entry in tar.entries().map_err(|e| bad(format!("tar: {e}")))? {
            let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| bad(format!("tar entry name: {e}")))?
                .to_string_lossy()
                .into_owned();
            let side =
                archive::sidecar_from_pax(&mut entry).map_err(|e| bad(format!("{path}: {e}")))?;
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{path}: {e}")))?;
            let item = if path == HEADER_ENTRY {
                Item::Header(
                    serde_json::from_slice(&data).map_err(|e| bad(format!("{path}: {e}")))?,
                )
            } else if let Some(p) = archive::parse_entry_path(&path) {
                let object = p
                    .format
                    .decode(&data)
                    .map_err(|e| bad(format!("{path}: {e}")))?;
                Item::Object(Box::new(Archived {
                    path: p,
                    side,
                    object,
                }))
            } else {
                tracing::warn!(entry = %path, "ignoring an unknown archive entry");
                continue;
            };
            if !visit(item) {
                return Ok(());
            }
        }
        Ok(())
    })();
    // An error ends the channel; the restore reports this result.
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_totals() {
        let mut r = RestoreReport::default();
        r.count("configmaps", &Outcome::Created);
        r.count("configmaps", &Outcome::Skipped("exists"));
        r.count("deployments.apps", &Outcome::Updated);
        r.count("deployments.apps", &Outcome::Failed("x".into()));
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("configmaps"));
        assert!(lines[3]
            .split_whitespace()
            .eq(["TOTAL", "1", "1", "1", "1"]));
        assert_eq!(r.failed(), 1);
        assert_eq!(r.failures, ["x"]);
    }
}
