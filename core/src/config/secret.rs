//! Secrets named by the cluster file and read from the environment at use time.
//!
//! `cluster.yaml` never holds a password, passphrase or key: only the *name* of an environment
//! variable (`password_env: W1_PASS`). The resolved model keeps that name in a [`SecretEnv`],
//! and the code that needs the secret calls [`SecretEnv::read`] just before use. The value
//! comes back as a [`Secret`], whose `Debug` and `Display` print `<redacted>`, so a stray
//! `{:?}` or `tracing` field cannot leak it.
//!
//! Limits: the value lives in ordinary heap memory (no zeroing on drop); the environment of
//! the clusterkit process is trusted.

use std::fmt;

use super::error::SecretError;

/// A reference to a secret held in an environment variable, as written in the cluster file.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct SecretEnv {
    /// The environment variable's name (e.g. `W1_PASS`). Safe to show; it is not the secret.
    pub var: String,
    /// What the secret is for, for error messages (e.g. `hosts[1] (w1) auth.password_env`).
    #[serde(skip)]
    pub what: String,
}

impl SecretEnv {
    /// A reference to the variable `var`, described as `what` in errors.
    pub fn new(var: impl Into<String>, what: impl Into<String>) -> Self {
        SecretEnv {
            var: var.into(),
            what: what.into(),
        }
    }

    /// Reads the secret now. The error names the variable and its use, never a value.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match std::env::var(&self.var) {
            Ok(value) if value.is_empty() => Err(SecretError::Empty {
                var: self.var.clone(),
                what: self.what.clone(),
            }),
            Ok(value) => Ok(Secret(value)),
            Err(std::env::VarError::NotPresent) => Err(SecretError::Missing {
                var: self.var.clone(),
                what: self.what.clone(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::NotUnicode {
                var: self.var.clone(),
                what: self.what.clone(),
            }),
        }
    }

    /// Whether the variable is set right now (for preflight checks; does not read the value
    /// into the caller's hands).
    pub fn is_set(&self) -> bool {
        std::env::var_os(&self.var).is_some_and(|v| !v.is_empty())
    }
}

impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the variable name: that is all this type holds, and it is not secret.
        write!(f, "${}", self.var)
    }
}

/// A secret value read from the environment. `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value obtained some other way (e.g. read from a file) so it is redacted too.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Call only where it is handed to the consumer (stdin of sudo, the SSH
    /// library, an HTTP header); never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variable_names_variable_and_use() {
        let s = SecretEnv::new(
            "CLUSTERKIT_TEST_SURELY_UNSET_4711",
            "hosts[1] (w1) auth.password_env",
        );
        let err = s.read().unwrap_err().to_string();
        assert!(err.contains("CLUSTERKIT_TEST_SURELY_UNSET_4711"), "{err}");
        assert!(err.contains("hosts[1] (w1) auth.password_env"), "{err}");
        assert!(!s.is_set());
    }

    #[test]
    fn secret_is_redacted_in_debug_and_display() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_a_set_variable() {
        // PATH is set in every test environment; reading it exercises the success path
        // without mutating the process environment (which is unsafe under parallel tests).
        let s = SecretEnv::new("PATH", "test");
        assert!(!s.read().unwrap().expose().is_empty());
    }
}
