//! Errors of namespace backup and restore. Variants name the API path, file or backup id an
//! operator needs; none carries a secret (object contents never appear in messages).

use std::path::PathBuf;

use crate::error::BackupError;
use crate::store::StoreError;

/// Everything namespace backup and restore can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {}: {message}", path.display())]
    Kubeconfig { path: PathBuf, message: String },

    /// The API server answered with an error (or could not be reached).
    #[error("Kubernetes API {method} {path}: {message}")]
    Api {
        method: &'static str,
        path: String,
        /// HTTP status when the server answered.
        status: Option<u16>,
        message: String,
    },

    /// The backup archive holds something this version cannot read.
    #[error("backup {id}: {message}")]
    Archive { id: String, message: String },

    /// The operator asked for something unsafe or contradictory.
    #[error("refused: {0}")]
    Refused(String),

    /// An option value is invalid.
    #[error("invalid option: {0}")]
    Invalid(String),

    /// Waiting for the API server (a CRD to become established) took too long.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },

    #[error(transparent)]
    Backup(#[from] BackupError),

    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NamespaceError {
    /// The HTTP status of an API error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            NamespaceError::Api { status, .. } => *status,
            _ => None,
        }
    }

    /// True for an API answer of 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}
