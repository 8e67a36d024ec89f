//! The base root file system every node's overlay stands on: Debian 12 (bookworm) made by
//! `debootstrap --variant=minbase` with systemd and sshd, built once and cached under
//! `$CLUSTERKIT_CACHE/rootfs/bookworm`.
//!
//! The build runs into a temporary directory that is renamed into place only when complete,
//! under an exclusive `flock`, so parallel tests and sandboxes neither race nor see half a
//! rootfs. The base carries no SSH host keys and an empty machine-id: each node gets its own.
//!
//! Limits: needs network access to deb.debian.org (about 50 s); the cache is never refreshed
//! automatically — delete the directory to rebuild it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{io, Result, SandboxError};
use crate::sys;

/// The Debian release the nodes run.
pub const SUITE: &str = "bookworm";

/// The mirror debootstrap fetches from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Packages added to minbase: what systemd boot, sshd and the installer's phases need.
pub const PACKAGES: &str =
    "openssh-server,iproute2,procps,kmod,iptables,sudo,systemd,systemd-sysv,dbus,ca-certificates";

/// Where the cached base rootfs lives for a given cache directory.
pub fn base_dir(cache: &Path) -> PathBuf {
    cache.join("rootfs").join(SUITE)
}

/// Returns the cached base rootfs, building it first when it is not there yet.
pub fn ensure_base(cache: &Path) -> Result<PathBuf> {
    let final_dir = base_dir(cache);
    if is_complete(&final_dir) {
        return Ok(final_dir);
    }
    if !sys::is_root() {
        return Err(SandboxError::NotRoot);
    }
    let parent = final_dir.parent().unwrap_or(cache).to_path_buf();
    sys::mkdir(&parent, 0o755)?;
    let _lock = sys::Lock::acquire(&parent.join(format!(".{SUITE}.lock")))?;
    // Someone else may have finished the build while we waited for the lock.
    if is_complete(&final_dir) {
        return Ok(final_dir);
    }
    sys::require_tool("debootstrap", "debootstrap")?;
    remove_stale_builds(&parent)?;

    let tmp = parent.join(format!(".{SUITE}.tmp-{}", std::process::id()));
    let log = parent.join(format!("{SUITE}.debootstrap.log"));
    let log_file = fs::File::create(&log).map_err(io("create", &log))?;
    let log_err = log_file.try_clone().map_err(io("open", &log))?;
    tracing::info!(dir = %tmp.display(), "building the base rootfs with debootstrap");
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={PACKAGES}"))
        .arg(SUITE)
        .arg(&tmp)
        .arg(MIRROR)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .map_err(io("run debootstrap into", &tmp))?;
    if !status.success() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(SandboxError::Debootstrap {
            tail: sys::file_tail(&log),
            log,
        });
    }
    finish_base(&tmp)?;
    fs::rename(&tmp, &final_dir).map_err(io("rename into place", &final_dir))?;
    Ok(final_dir)
}

/// A base is complete once it has been renamed into place; the check on os-release guards
/// against a directory someone created by hand.
fn is_complete(dir: &Path) -> bool {
    dir.join("etc/os-release").exists() && dir.join("usr/sbin/sshd").exists()
}

/// Removes half-built trees of crashed builds (we hold the lock, so nobody is building).
fn remove_stale_builds(parent: &Path) -> Result<()> {
    let prefix = format!(".{SUITE}.tmp-");
    for entry in fs::read_dir(parent).map_err(io("read", parent))? {
        let entry = entry.map_err(io("read", parent))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            tracing::info!(dir = %path.display(), "removing a stale rootfs build");
            fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

/// Makes a fresh debootstrap tree a shareable base: no host keys, no machine identity, no
/// downloaded package files.
pub(crate) fn finish_base(root: &Path) -> Result<()> {
    let ssh = root.join("etc/ssh");
    if let Ok(entries) = fs::read_dir(&ssh) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
    }
    // An empty machine-id: each node's overlay gets its own file.
    sys::write_atomic(&root.join("etc/machine-id"), b"", 0o444)?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if dbus_id.symlink_metadata().is_ok() {
        fs::remove_file(&dbus_id).map_err(io("remove", &dbus_id))?;
        std::os::unix::fs::symlink("/etc/machine-id", &dbus_id).map_err(io("symlink", &dbus_id))?;
    }
    let archives = root.join("var/cache/apt/archives");
    if let Ok(entries) = fs::read_dir(&archives) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".deb") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}
