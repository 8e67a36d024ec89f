//! Errors of the monitor crate. Every variant names the file, setting, host or address it is
//! about, and keeps what caused it as its `source` (not repeated in its own message, so the
//! printed chain says each thing once); none ever carries a secret value (only the name of the
//! variable or file holding it). Log lines print the whole chain with `clusterkit_core::error_chain`.

use std::path::PathBuf;

/// A cause of any type, kept as the source of an error (serialiser, template engine, TLS
/// library and backup store errors, whose types differ).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Anything that can go wrong loading the cluster, generating configs or serving metrics.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// cluster.yaml could not be read, or is invalid (each problem with file:line:column).
    #[error(transparent)]
    Config(#[from] clusterkit_core::config::ConfigError),

    /// A setting has a value that cannot work; `field` is its dotted path in cluster.yaml.
    #[error("{path}: {field}: {message}", path = path.display())]
    Setting {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// `--alert-for` names an alert clusterkit does not ship.
    #[error("--alert-for {name}: no alert named `{name}`; known alerts: {}", known.join(", "))]
    UnknownAlert {
        name: String,
        known: Vec<&'static str>,
    },

    /// A secret named by cluster.yaml could not be read (the error names the variable and the
    /// setting, never a value).
    #[error(transparent)]
    Secret(#[from] clusterkit_core::config::SecretError),

    /// Reading or writing a file failed.
    #[error("{path}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A certificate or key could not be loaded or used; `what` says which and how.
    #[error("{path}: {what}", path = path.display())]
    Tls {
        path: PathBuf,
        what: String,
        #[source]
        source: Option<Cause>,
    },

    /// Serialising a generated file failed (a bug, reported with the file name).
    #[error("cannot render {file}")]
    Render {
        file: String,
        #[source]
        source: Cause,
    },

    /// `monitor deploy` could not prepare its run (the offline bundle).
    #[error("monitor deploy: {what}")]
    Install {
        what: &'static str,
        #[source]
        source: clusterkit_installer::phases::InstallError,
    },

    /// `monitor deploy` could not set up its run (a host's SSH target, the playbook engine).
    #[error("monitor deploy: the inventory")]
    Inventory {
        #[source]
        source: clusterkit_core::inventory::InventoryError,
    },

    /// `monitor deploy`'s playbook could not be loaded.
    #[error("monitor deploy: the playbook")]
    Playbook {
        #[source]
        source: clusterkit_core::playbook::PlaybookError,
    },

    /// `--check-jobs` names a job the generated prometheus.yml does not have.
    #[error("--check-jobs: no job `{job}` in the generated prometheus.yml (jobs: {})", jobs.join(", "))]
    UnknownJob { job: String, jobs: Vec<String> },

    /// Prometheus's HTTP API did not answer usefully until the deadline (the last failure).
    #[error("Prometheus at {address}")]
    PrometheusApi {
        address: String,
        #[source]
        source: ApiError,
    },

    /// Scrape targets still down (or not yet known to Prometheus) when the wait ended.
    #[error("targets not up after {waited_secs} s: {}", down.join("; "))]
    TargetsDown { waited_secs: u64, down: Vec<String> },

    /// The monitoring CA or one of its certificates could not be made or read.
    #[error("monitoring PKI")]
    Pki {
        #[source]
        source: clusterkit_installer::pki::PkiError,
    },

    /// The exporter could not listen on its address.
    #[error("cannot listen on {address}")]
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

    pub(crate) fn render(file: impl Into<String>, source: impl Into<Cause>) -> Self {
        MonitorError::Render {
            file: file.into(),
            source: source.into(),
        }
    }
}

/// Why an HTTP request got no response (the cause is the I/O, TLS or HTTP library's error).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("cannot build the request")]
    Request(#[source] hyper::http::Error),
    #[error("reading the response body failed")]
    Body(#[source] hyper::Error),
}

/// Why Prometheus's API gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no answer within {secs} s")]
    Timeout { secs: u64 },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the answer is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("status {0}")]
    Failed(String),
    #[error("no data.activeTargets in the answer")]
    NoActiveTargets,
}

pub type Result<T, E = MonitorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit_core::error_chain as chain;

    #[test]
    fn the_chain_names_each_cause_once() {
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = MonitorError::io("/x/prometheus.yml", denied);
        assert_eq!(e.to_string(), "/x/prometheus.yml");
        assert_eq!(chain(&e), "/x/prometheus.yml: denied");
        let http = ApiError::Http(HttpError::Connect(std::io::Error::other("refused")));
        let e = MonitorError::PrometheusApi {
            address: "10.0.0.3:9090".into(),
            source: http,
        };
        assert_eq!(
            chain(&e),
            "Prometheus at 10.0.0.3:9090: cannot connect: refused"
        );
    }
}
