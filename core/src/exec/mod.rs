//! Running commands and moving files on one host, behind one trait.
//!
//! `Executor` is the only way clusterkit touches a host: `SshExecutor` for real nodes (russh,
//! one connection, many channels) and `LocalExecutor` for the operator's own machine and for
//! tests. A command failure keeps everything an operator needs to act on it: host, command,
//! exit status, stdout and stderr.

pub mod known_hosts;
pub mod local;
pub mod shared;
pub mod ssh;

pub use shared::{Encoding, SharedUpload};

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

/// How many bytes of stderr an error message shows; the full text stays in `Output`.
pub const STDERR_TAIL: usize = 2048;

/// A shell command to run on a host (`sh -c` semantics on the remote side).
#[derive(Clone, Default)]
pub struct Command {
    /// The shell command line. Shown in logs and errors unless `redact` is set.
    pub line: String,
    /// Bytes fed to the command's standard input, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Overrides the executor's default per-command timeout.
    pub timeout: Option<Duration>,
    /// The command line itself holds a secret: logs and errors show `<redacted>` instead.
    pub redact: bool,
}

impl Command {
    pub fn new(line: impl Into<String>) -> Self {
        Command {
            line: line.into(),
            ..Default::default()
        }
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn redacted(mut self) -> Self {
        self.redact = true;
        self
    }

    /// The command line as it may appear in logs and errors.
    pub fn display(&self) -> &str {
        if self.redact {
            "<redacted>"
        } else {
            &self.line
        }
    }
}

impl fmt::Debug for Command {
    // Hand-written so that stdin (sudo passwords, keys) and redacted lines never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("line", &self.display())
            .field(
                "stdin",
                &self.stdin.as_ref().map(|s| format!("<{} bytes>", s.len())),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status; `None` when the remote side ended without one (killed by a signal).
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Options for `Executor::upload`.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// File mode, e.g. `0o600` for private keys.
    pub mode: u32,
    /// `user[:group]` to chown to; `None` keeps the connecting (or become) user.
    pub owner: Option<String>,
    /// Create missing parent directories (mode 0755).
    pub create_parents: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            mode: 0o644,
            owner: None,
            create_parents: true,
        }
    }
}

/// The underlying error of an [`ExecError`] (socket, ssh protocol, key file, known_hosts…),
/// kept whole so the chain reaches the caller.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `": cause"` when there is one: the variants that may carry a cause show it after their own
/// message, so the one-line text says everything even where only `Display` is printed.
fn with_cause(cause: &Option<Cause>) -> String {
    cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

/// Everything that can go wrong reaching a host. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{host}: cannot connect to {address}: {message}{}", with_cause(source))]
    Connect {
        host: String,
        address: String,
        message: String,
        #[source]
        source: Option<Cause>,
    },

    #[error("{host}: connection timed out after {after:?} ({address})")]
    ConnectTimeout {
        host: String,
        address: String,
        after: Duration,
    },

    #[error(
        "{host}: HOST KEY MISMATCH for {address}: known_hosts ({known_hosts}) has {expected}, \
         the server offered {offered}. Someone may be intercepting the connection, or the host \
         was reinstalled; if so, remove the old entry from {known_hosts}"
    )]
    HostKeyMismatch {
        host: String,
        address: String,
        known_hosts: String,
        expected: String,
        offered: String,
    },

    #[error(
        "{host}: unknown host key {offered} for {address}: not in {known_hosts}. Add it to \
         known_hosts, or set ssh.trust_on_first_use: true to record it on first contact"
    )]
    UnknownHostKey {
        host: String,
        address: String,
        known_hosts: String,
        offered: String,
    },

    #[error(
        "{host}: authentication as {user} failed: {message}{}",
        with_cause(source)
    )]
    Auth {
        host: String,
        user: String,
        message: String,
        #[source]
        source: Option<Cause>,
    },

    #[error("{host}: `{command}` timed out after {after:?}")]
    Timeout {
        host: String,
        command: String,
        after: Duration,
    },

    #[error("{host}: `{command}` exited with {}: {}", status.map(|s| s.to_string()).unwrap_or_else(|| "no status (killed)".into()), tail(stderr))]
    Command {
        host: String,
        command: String,
        status: Option<i32>,
        stdout: String,
        stderr: String,
    },

    /// `message` is what went wrong in words (or the remote stderr tail); `source` the local
    /// error behind it, if any.
    #[error("{host}: {operation} {path}: {message}{}", with_cause(source))]
    Transfer {
        host: String,
        operation: &'static str,
        path: String,
        message: String,
        #[source]
        source: Option<Cause>,
    },

    #[error("{host}: ssh session failed: {message}{}", with_cause(source))]
    Session {
        host: String,
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

/// The last `STDERR_TAIL` bytes of a stream, trimmed, for error messages.
pub fn tail(text: &str) -> &str {
    let text = text.trim_end();
    if text.len() <= STDERR_TAIL {
        return text;
    }
    let mut start = text.len() - STDERR_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// One host reachable for commands and file transfer.
#[async_trait]
pub trait Executor: Send + Sync {
    /// The host's name from cluster.yaml (or `localhost`), used in every message.
    fn host(&self) -> &str;

    /// Runs a command and returns its output whatever its exit status.
    async fn run(&self, command: &Command) -> Result<Output, ExecError>;

    /// Writes `data` to `path` atomically (temp file in the same directory, then rename).
    async fn upload(
        &self,
        data: &[u8],
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), ExecError>;

    /// Writes `content` to `path` like [`Executor::upload`], unpacked on the host when it is
    /// compressed, and checks its size there before it replaces the old file. The bytes are
    /// shared, not copied: one `SharedUpload` sent to many hosts is held in memory once.
    async fn upload_shared(
        &self,
        content: &SharedUpload,
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), ExecError> {
        let data = content.unpacked().map_err(|e| ExecError::Transfer {
            host: self.host().to_string(),
            operation: "upload",
            path: path.to_string(),
            message: "cannot unpack the content".into(),
            source: Some(e.into()),
        })?;
        self.upload(&data, path, options).await
    }

    /// Reads a whole file.
    async fn download(&self, path: &str) -> Result<Vec<u8>, ExecError>;

    /// Runs a command and turns a non-zero exit into `ExecError::Command`.
    async fn run_checked(&self, command: &Command) -> Result<Output, ExecError> {
        let output = self.run(command).await?;
        if output.success() {
            Ok(output)
        } else {
            Err(ExecError::Command {
                host: self.host().to_string(),
                command: command.display().to_string(),
                status: output.status,
                stdout: output.stdout_str(),
                stderr: output.stderr_str(),
            })
        }
    }

    /// Shorthand: run `line`, fail on non-zero exit, return stdout as text.
    async fn sh(&self, line: &str) -> Result<String, ExecError> {
        Ok(self.run_checked(&Command::new(line)).await?.stdout_str())
    }
}
