//! clusterkit's backups: etcd snapshots (and namespaces, issue 7) streamed to S3 or a directory,
//! verified, optionally encrypted, retained and scheduled; and restores from them.

pub mod clock;
pub mod crypto;
pub mod error;
pub mod manifest;
pub mod pipeline;
pub mod store;

pub use error::BackupError;
