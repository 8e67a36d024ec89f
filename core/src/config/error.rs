//! Errors and diagnostics of the cluster description.
//!
//! A `cluster.yaml` is checked like a compiler checks code: every problem found becomes a
//! [`Diagnostic`] naming the file, line, column and field path, and loading fails with all of
//! them at once ([`ConfigError::Invalid`]) rather than stopping at the first. Warnings use the
//! same type and travel next to a successfully loaded cluster.
//!
//! Limits: a YAML syntax error or a type mismatch stops the parser itself, so such a file
//! reports that one parse error only (serde-saphyr cannot recover past it).

use std::fmt;
use std::path::PathBuf;

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used; loading fails.
    Error,
    /// The file is usable but probably not what the operator meant (e.g. an even etcd count).
    Warning,
}

/// One problem found in a cluster file, with the place it was found.
///
/// Displays as `FILE:LINE:COLUMN: FIELD: MESSAGE` (warnings add `warning: ` after the
/// position), the form editors and CI logs recognise.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file as the operator named it (not canonicalised, so messages match what they typed).
    pub file: PathBuf,
    /// 1-based line; 0 when the position is unknown.
    pub line: u64,
    /// 1-based column (characters); 0 when the position is unknown.
    pub column: u64,
    /// Field path such as `hosts[2].address`; empty for whole-file problems and parse errors.
    pub field: String,
    /// What is wrong, and where it helps, what would be right.
    pub message: String,
}

impl Diagnostic {
    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a cluster file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable). A file that is not UTF-8 is
    /// [`ConfigError::Invalid`] with the position of its first bad byte.
    /// (The I/O error is part of the message rather than a `source`, so printing the chain
    /// does not repeat it.)
    #[error("cannot read cluster file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file was read but has errors. Holds every error and warning found, in file order;
    /// displays one diagnostic per line.
    #[error("{}", display_lines(diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// All diagnostics (errors and warnings) when the file was invalid; empty for read errors.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    /// How many of the diagnostics are errors (1 for a read error).
    pub fn error_count(&self) -> usize {
        match self {
            ConfigError::Read { .. } => 1,
            ConfigError::Invalid { diagnostics, .. } => {
                diagnostics.iter().filter(|d| d.is_error()).count()
            }
        }
    }
}

fn display_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why `Cluster::select` could not honour `--hosts` / `--roles`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A name given with `--hosts` is not a host in the cluster file.
    #[error("unknown host {name:?} (hosts in this cluster: {})", known.join(", "))]
    UnknownHost { name: String, known: Vec<String> },
    /// A role given with `--roles` is not one clusterkit knows.
    #[error("unknown role {role:?} (roles: etcd, control-plane, worker, monitor)")]
    UnknownRole { role: String },
    /// The filters are valid but no host matches all of them.
    #[error("no host matches hosts [{}] and roles [{}]", hosts.join(", "), roles.join(", "))]
    Empty {
        hosts: Vec<String>,
        roles: Vec<String>,
    },
}

/// Why a secret named in the cluster file could not be read from the environment.
///
/// Names the environment variable and the field that refers to it; never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The variable is not set.
    #[error("environment variable {var} is not set (needed for {what})")]
    Missing { var: String, what: String },
    /// The variable is set but empty, which is never a usable secret.
    #[error("environment variable {var} is empty (needed for {what})")]
    Empty { var: String, what: String },
    /// The variable holds bytes that are not valid UTF-8.
    #[error("environment variable {var} is not valid UTF-8 (needed for {what})")]
    NotUnicode { var: String, what: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(severity: Severity, field: &str) -> Diagnostic {
        Diagnostic {
            severity,
            file: "cluster.yaml".into(),
            line: 14,
            column: 7,
            field: field.into(),
            message: "\"10.0.0.300\" is not an IP address".into(),
        }
    }

    #[test]
    fn diagnostic_display_names_file_line_column_and_field() {
        assert_eq!(
            diag(Severity::Error, "hosts[2].address").to_string(),
            "cluster.yaml:14:7: hosts[2].address: \"10.0.0.300\" is not an IP address"
        );
        assert_eq!(
            diag(Severity::Warning, "").to_string(),
            "cluster.yaml:14:7: warning: \"10.0.0.300\" is not an IP address"
        );
    }

    #[test]
    fn config_error_shows_one_diagnostic_per_line() {
        let err = ConfigError::Invalid {
            path: "cluster.yaml".into(),
            diagnostics: vec![diag(Severity::Error, "a"), diag(Severity::Error, "b")],
        };
        let text = err.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(err.error_count(), 2);
    }
}
