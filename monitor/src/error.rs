//! Errors of the monitor crate. Every variant names the file, setting, host or address it is
//! about; none ever carries a secret value (only the name of the variable or file holding it).

use std::path::PathBuf;

/// Anything that can go wrong loading the cluster, generating configs or serving metrics.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// cluster.yaml could not be read or parsed (the message carries line and column).
    #[error("{path}: {message}", path = path.display())]
    ClusterFile { path: PathBuf, message: String },

    /// A setting has a value that cannot work; `field` is its dotted path in cluster.yaml.
    #[error("{path}: {field}: {message}", path = path.display())]
    Setting {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// A secret was to be read from an environment variable that is not set.
    #[error("{field}: environment variable {variable} is not set")]
    MissingSecret { field: String, variable: String },

    /// Reading or writing a file failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A certificate or key could not be loaded.
    #[error("{path}: {message}", path = path.display())]
    Tls { path: PathBuf, message: String },

    /// Serialising a generated file failed (a bug, reported with the file name).
    #[error("cannot render {file}: {message}")]
    Render { file: String, message: String },

    /// `monitor deploy` could not start (playbook, bundle, SSH targets) or was asked for a
    /// job that does not exist.
    #[error("monitor deploy: {message}")]
    Deploy { message: String },

    /// Prometheus's HTTP API did not answer usefully until the deadline.
    #[error("Prometheus at {address}: {message}")]
    PrometheusApi { address: String, message: String },

    /// Scrape targets still down (or not yet known to Prometheus) when the wait ended.
    #[error("targets not up after {waited_secs} s: {}", down.join("; "))]
    TargetsDown { waited_secs: u64, down: Vec<String> },

    /// The monitoring CA or one of its certificates could not be made or read.
    #[error("monitoring PKI: {source}")]
    Pki {
        #[source]
        source: clusterkit_installer::pki::PkiError,
    },

    /// The exporter could not listen on its address.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl MonitorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MonitorError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = MonitorError> = std::result::Result<T, E>;
