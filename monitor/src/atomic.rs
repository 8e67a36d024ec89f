//! Writing a file whole or not at all: through a temporary file in the same directory and a
//! rename, with its final mode from creation on. The generated configuration and the web
//! login's files are written this way, so a reader never sees half a file and a private file
//! is never briefly world-readable.
//!
//! Limits: the directory itself is not synced after the rename.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{MonitorError, Result};

/// Writes `content` to `path` with exactly `mode` through a temporary file and a rename,
/// creating the parent directories. A private file is created with its final mode (never
/// briefly world-readable).
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| MonitorError::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| MonitorError::io(&tmp, e))?;
    f.write_all(content)
        .map_err(|e| MonitorError::io(&tmp, e))?;
    f.sync_all().map_err(|e| MonitorError::io(&tmp, e))?;
    drop(f);
    // The umask may have narrowed the mode at creation; set it exactly.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| MonitorError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| MonitorError::io(path, e))
}
