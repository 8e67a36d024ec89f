//! cluster.yaml: raw file types, validation, and the resolved model every phase uses.
//!
//! ```no_run
//! let loaded = clusterkit_core::config::load("cluster.yaml")?;
//! for w in &loaded.warnings {
//!     eprintln!("{w}");
//! }
//! let cluster = loaded.cluster;
//! for host in cluster.hosts_with_role(clusterkit_core::config::Role::Etcd) {
//!     println!("{} {}", host.name, host.address);
//! }
//! # Ok::<(), clusterkit_core::config::ConfigError>(())
//! ```
//!
//! The file is parsed by serde-saphyr into [`raw`] types (unknown keys are errors), then
//! [`validate`] checks everything it can and fills in defaults, producing a [`Cluster`]. Every
//! problem is reported at once, each as `FILE:LINE:COLUMN: FIELD: MESSAGE`. Secrets are only
//! ever named (`*_env` fields) and read at use time through [`SecretEnv::read`].
//!
//! Limits: one YAML document per file; a YAML syntax or type error stops parsing, so it is
//! reported alone; `~` in paths is not expanded.
//!
//! Every value here comes from the operator's file, so nothing may panic on it: `unwrap`,
//! `expect` and indexing are denied in this module and its children (tests excepted).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod error;
pub mod grammar;
pub mod raw;
pub mod resolved;
pub mod secret;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Diagnostic, SecretError, SelectError, Severity};
pub use resolved::*;
pub use secret::{Secret, SecretEnv};

/// An annotated example cluster file (what `clusterkit config init` prints). It validates once
/// the key file it names (`./id_ed25519`, mode 0600) exists next to it.
pub const EXAMPLE: &str = include_str!("example.yaml");

/// A successfully loaded cluster and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub cluster: Cluster,
    /// Things that are allowed but probably unintended (e.g. an even etcd count).
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses and validates a cluster file.
///
/// Relative paths inside it are resolved against its directory. On failure the error holds
/// every diagnostic found (errors and warnings).
pub fn load(path: impl AsRef<Path>) -> Result<Loaded, ConfigError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let text = utf8(bytes, path)?;
    load_str(&text, path)
}

/// Where a file stops being UTF-8: the first bad byte, its offset, line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUtf8 {
    pub byte: u8,
    pub offset: usize,
    /// 1-based.
    pub line: u64,
    /// 1-based, in characters.
    pub column: u64,
}

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the file is not UTF-8: byte 0x{:02x} at byte offset {} does not start a valid \
             character",
            self.byte, self.offset
        )
    }
}

/// `bytes` as text, or where it stops being UTF-8 (for every file a user hands clusterkit).
pub fn text(bytes: Vec<u8>) -> Result<String, NotUtf8> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let good = bytes.get(..offset).unwrap_or_default();
        // Everything before the bad byte is valid UTF-8, so lines and characters can be counted.
        let before = String::from_utf8_lossy(good);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        NotUtf8 {
            byte: bytes.get(offset).copied().unwrap_or_default(),
            offset,
            line: u64::try_from(line).unwrap_or(u64::MAX),
            column: u64::try_from(column).unwrap_or(u64::MAX),
        }
    })
}

/// The file's bytes as text; otherwise an error at the first bad byte.
fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String, ConfigError> {
    text(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line: e.line,
            column: e.column,
            field: String::new(),
            message: e.to_string(),
        }],
    })
}

/// Parses and validates `text` as if it were the file at `path` (which need not exist; its
/// directory anchors relative paths, its name appears in messages).
pub fn load_str(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let raw: raw::RawCluster = match serde_saphyr::from_str(text) {
        Ok(raw) => raw,
        Err(err) => return Err(invalid(vec![parse_diagnostic(&err, path)])),
    };
    let abs = absolute(path);
    let (cluster, diagnostics) = validate::resolve(raw, path, &abs);
    match cluster {
        Some(cluster) => Ok(Loaded {
            cluster,
            warnings: diagnostics,
        }),
        None => Err(invalid(diagnostics)),
    }
}

fn absolute(path: &Path) -> PathBuf {
    // `std::path::absolute` only fails for an empty path or without a working directory; the
    // relative path is then the best we have.
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A serde-saphyr error as a diagnostic: its location, and its message without the snippet
/// and the trailing "at line L, column C" (the diagnostic's prefix says that already).
fn parse_diagnostic(err: &serde_saphyr::Error, path: &Path) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = err.without_snippet().to_string();
    if let Some(stripped) = message.strip_suffix(&format!(" at line {line}, column {column}")) {
        message = stripped.to_string();
    }
    if let Some(stripped) = message.strip_prefix(&format!("line {line} column {column}: ")) {
        message = stripped.to_string();
    }
    if message.trim().is_empty() {
        message = "the file is empty or not a YAML mapping".into();
    }
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line,
        column,
        field: String::new(),
        message: message.trim().to_string(),
    }
}

#[cfg(test)]
mod tests;
