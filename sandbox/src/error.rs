//! Errors of the sandbox: each variant names what it was doing (node, path, command) so an
//! operator can act on it without reading the code.

use std::path::PathBuf;

/// Everything that can go wrong while bringing sandbox nodes up or down.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Overlay mounts, network namespaces and systemd-nspawn all need root.
    #[error(
        "`clusterkit sandbox` must run as root: it mounts overlays, creates network namespaces \
         and boots systemd-nspawn containers (rerun it as root, e.g. with sudo)"
    )]
    NotRoot,

    /// A host tool the sandbox needs is not on PATH.
    #[error("`{tool}` was not found on PATH: install it with `apt-get install {package}`")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },

    /// The sandbox name cannot be used in interface and namespace names.
    #[error("invalid sandbox name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// The node count is out of range.
    #[error("invalid node count {nodes}: a sandbox has between 1 and {max} nodes")]
    InvalidNodeCount { nodes: usize, max: usize },

    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A system call (mount, umount, flock, kill) failed.
    #[error("{action} {path}: {source}")]
    Sys {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// A host command failed; the message carries its stderr tail.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A host command could not be started.
    #[error("`{command}` failed (not started): {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// debootstrap could not build the base rootfs.
    #[error("building the base rootfs with debootstrap failed (full log in {log}):\n{tail}")]
    Debootstrap { log: PathBuf, tail: String },

    /// Every candidate /24 is taken by another sandbox or an existing route.
    #[error("no free /24 left in 10.213.0.0/16 for sandbox {name}")]
    NoFreeSubnet { name: String },

    /// The node's systemd-nspawn process exited before sshd answered.
    #[error("node {node}: systemd-nspawn exited before sshd answered (log {log}):\n{tail}")]
    NodeExited {
        node: String,
        log: PathBuf,
        tail: String,
    },

    /// sshd inside the node did not send its banner in time.
    #[error("node {node} ({address}): sshd did not answer on port 22 within {secs} s (log {log})")]
    SshTimeout {
        node: String,
        address: String,
        secs: u64,
        log: PathBuf,
    },

    /// No sandbox of that name exists.
    #[error("sandbox {name} does not exist (no {dir})")]
    NotFound { name: String, dir: PathBuf },

    /// The sandbox has no node of that name.
    #[error("sandbox {sandbox} has no node {node}")]
    NoSuchNode { sandbox: String, node: String },

    /// A state file (or a file the sandbox reads back) says something unexpected, in words.
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },

    /// The sandbox's state file does not parse.
    #[error("{path}: {source}")]
    StateJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// `down` could not remove something; the rest was removed.
    #[error("sandbox {name}: teardown left things behind: {}", left.join("; "))]
    Leftovers { name: String, left: Vec<String> },
}

/// Result type of the sandbox crate.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Shorthand for an I/O error with its path.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io {
        action,
        path,
        source,
    }
}
