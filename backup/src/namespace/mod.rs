//! Namespace backup and restore through the Kubernetes API, Velero-style but
//! streaming: memory stays bounded whatever the number of objects.
//!
//! A namespace backup is an ordinary clusterkit backup (`kind: namespace`): same store, same
//! write pipeline (sha256 → zstd → optional age → multipart upload), same manifest written
//! last, so `backup list/describe/verify/prune` and the schedule treat it like an etcd backup.
//! Its payload is a tar of one YAML file per object (see [`archive`]), in restore order.
//!
//! - [`backup()`]: discovery of every listable type (CRDs included; cluster-scoped types on
//!   request), paginated LIST, field stripping, Secrets only when asked and then only encrypted
//!   unless explicitly allowed.
//! - [`restore()`]: verification first, then server-side apply in dependency order, with
//!   namespace mapping, `--existing skip|update`, server dry run, relinked ownerReferences and
//!   a per-type report.
//!
//! Limits: no volume data (PersistentVolume contents are not copied); objects are captured page
//! by page, not at one instant.

pub mod archive;
pub mod backup;
pub mod client;
pub mod error;
pub mod objects;
pub mod plan;
pub mod restore;

pub use archive::ObjectFormat;
pub use backup::{backup, BackupOptions};
pub use client::{ApiClient, ResourceType};
pub use error::NamespaceError;
pub use plan::TypeFilter;
pub use restore::{load_manifest, restore, Existing, RestoreOptions, RestoreReport, TypeCounts};
