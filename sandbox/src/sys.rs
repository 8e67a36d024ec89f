//! Small host helpers the sandbox is built from: running host commands, file locks, atomic
//! file writes, the mount table and process checks.
//!
//! Limits: Linux only (reads `/proc`), and everything here is blocking.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{io, Result, SandboxError};

/// How many bytes of a command's stderr (or a log) an error shows.
const TAIL: usize = 2000;

/// Runs a host command to completion; fails with its stderr tail when it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    tracing::debug!(command = %shown, "run");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SandboxError::Spawn {
            command: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SandboxError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS…`, failing with stderr.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// The command line as it appears in errors.
fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last [`TAIL`] bytes of a text, on a char boundary.
pub(crate) fn tail(text: &str) -> String {
    let text = text.trim_end();
    if text.len() <= TAIL {
        return text.to_string();
    }
    let mut start = text.len() - TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// The tail of a log file, or a note that it cannot be read.
pub(crate) fn file_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes)),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Whether an executable of that name is on PATH.
pub(crate) fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Fails with how to install `tool` when it is missing.
pub(crate) fn require_tool(tool: &'static str, package: &'static str) -> Result<()> {
    if on_path(tool) {
        Ok(())
    } else {
        Err(SandboxError::MissingTool { tool, package })
    }
}

/// Whether this process runs with effective UID 0.
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An exclusive `flock` on a lock file, released when dropped (or when the process dies,
/// which is why a crashed `up` never leaves a stale lock).
pub(crate) struct Lock {
    _lock: Flock<File>,
}

impl Lock {
    /// Blocks until the lock at `path` is ours; creates the file and its directory.
    pub(crate) fn acquire(path: &Path) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io("open", path))?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| SandboxError::Sys {
                action: "lock",
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(Lock { _lock: lock })
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &tmp))?;
        f.write_all(contents).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename into place", path))
}

/// Creates a directory (and its parents) and sets its mode.
pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(io("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub(crate) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let table =
        fs::read_to_string("/proc/self/mountinfo").map_err(io("read", "/proc/self/mountinfo"))?;
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Whether `path` itself is a mount point.
pub(crate) fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(mounts_under(path)?.iter().any(|p| p == path))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `path`; when it is busy, detaches it lazily as the last resort.
pub(crate) fn unmount(path: &Path) -> Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()), // not mounted any more
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unmount failed, detaching lazily");
            umount2(path, MntFlags::MNT_DETACH).map_err(|source| SandboxError::Sys {
                action: "unmount",
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// Whether `pid` is a live (not zombie) systemd-nspawn process booting `root`. Checking the
/// command line keeps a recycled PID from being mistaken for (and killed as) a node.
pub(crate) fn is_nspawn_of(pid: u32, root: &Path) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the command name in parentheses, which may contain spaces.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_nspawn = args.first().is_some_and(|a| a.ends_with(b"systemd-nspawn"));
    let root = root.as_os_str().as_encoded_bytes();
    is_nspawn && args.contains(&root)
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        })
        .unwrap_or(false)
}

/// PIDs of every live systemd-nspawn process booting `root` (finds nodes whose PID file was
/// lost in a crash).
pub(crate) fn nspawn_pids_of(root: &Path) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_nspawn_of(*pid, root))
        .collect()
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal) {
        if e != nix::Error::ESRCH {
            tracing::warn!(pid, %signal, error = %e, "kill failed");
        }
    }
}

/// Raises the host sysctl `key` (a `/proc/sys` path relative name like
/// `fs/inotify/max_user_instances`) to at least `min`; never lowers it. Returns whether it was
/// raised.
pub(crate) fn raise_sysctl(key: &str, min: u64) -> Result<bool> {
    let path = Path::new("/proc/sys").join(key);
    let current = fs::read_to_string(&path).map_err(io("read", path.clone()))?;
    let current: u64 = current.trim().parse().unwrap_or(0);
    if current >= min {
        return Ok(false);
    }
    fs::write(&path, min.to_string()).map_err(io("write", path))?;
    tracing::info!(
        key,
        from = current,
        to = min,
        "raised a host limit for the sandbox"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(5000) + "END";
        let t = tail(&long);
        assert!(t.ends_with("END"));
        assert!(t.len() <= TAIL + 4);
    }
}
