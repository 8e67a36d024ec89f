//! The backup crate's error type. Variants carry the backup id, store, endpoint or path an
//! operator needs; none carries a secret.

use std::path::PathBuf;

use crate::crypto::CryptoError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Crypto(#[from] CryptoError),

    #[error("etcd {endpoint}: {source}")]
    Etcd {
        endpoint: String,
        #[source]
        source: crate::etcd::ProbeError,
    },

    #[error("no healthy etcd member among {endpoints}: {details}")]
    NoHealthyMember { endpoints: String, details: String },

    #[error("{}: {source}", path.display())]
    LocalIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the snapshot failed etcd's integrity check, nothing was kept: {0}")]
    Integrity(#[source] crate::pipeline::IntegrityError),

    #[error("backup {id} is corrupt: {what}")]
    Corrupt { id: String, what: String },

    #[error("no backup {id} in {store} (no manifest; `clusterkit backup list` shows what exists)")]
    NoSuchBackup { id: String, store: String },

    #[error("backup {id} has an unreadable manifest: {message}")]
    BadManifest { id: String, message: String },

    #[error("{0}")]
    Pipeline(String),

    /// A stage stopped because another failed; the other's error is the one reported.
    #[error("cancelled")]
    Cancelled,

    /// A module's check-then-act on a host failed (stat, upload, attributes).
    #[error("{what} on {host}")]
    OnHost {
        host: String,
        what: String,
        #[source]
        source: Box<clusterkit_core::playbook::modules::ModuleError>,
    },

    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("lock {name} in {store} is held by {holder} until {until}")]
    Locked {
        name: String,
        store: String,
        holder: String,
        until: String,
    },

    #[error("restore refused: {0}")]
    RestoreRefused(String),

    #[error("rendering {template}: {message}")]
    Render { template: String, message: String },

    #[error("invalid setting: {0}")]
    Invalid(String),

    #[error(transparent)]
    BadId(#[from] crate::manifest::BadId),
}
