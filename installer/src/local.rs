//! What the bundle, image and release builders share about work on this machine: an I/O error
//! that names its file, and running a local program (apt-get, dpkg-deb, tar, gcc, busybox) with
//! its command line, exit status and stderr in the error.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file or directory here that could not be read, written or created.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// For `map_err` on an I/O call about `path` (`?` then converts it into the caller's error).
pub fn file_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// A local program that could not be started or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}): {stderr}")]
pub struct ToolError {
    /// The command line as run (program and arguments, unquoted).
    pub command: String,
    /// The exit status, or "not started".
    pub status: String,
    /// Why it did not start, or the last lines of its stderr.
    pub stderr: String,
}

/// How many lines of a failed program's stderr the error keeps: the end is where tools say why.
const STDERR_TAIL_LINES: usize = 20;

/// Runs `cmd` to completion and returns its stdout.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>, ToolError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| ToolError {
        command: shown.clone(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut tail: Vec<&str> = stderr
            .trim()
            .lines()
            .rev()
            .take(STDERR_TAIL_LINES)
            .collect();
        tail.reverse();
        return Err(ToolError {
            command: shown,
            status: out.status.to_string(),
            stderr: tail.join("\n"),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_program_keeps_its_command_status_and_the_end_of_stderr() {
        let script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
        let err = run(Command::new("sh").args(["-c", script])).unwrap_err();
        assert!(err.command.contains("sh -c"), "{err}");
        assert!(err.status.contains('3'), "{err}");
        let lines: Vec<&str> = err.stderr.lines().collect();
        assert_eq!(lines.len(), STDERR_TAIL_LINES, "{err}");
        assert_eq!(lines.first(), Some(&"line11"), "{err}");
        assert_eq!(lines.last(), Some(&"line30"), "{err}");
    }

    #[test]
    fn a_program_that_cannot_start_says_so() {
        let err = run(&mut Command::new("/nonexistent/clusterkit-no-such-tool")).unwrap_err();
        assert_eq!(err.status, "not started");
        assert!(err.stderr.contains("No such file"), "{err}");
    }

    #[test]
    fn stdout_comes_back_whole() {
        let out = run(Command::new("printf").arg("a\\nb")).unwrap();
        assert_eq!(out, b"a\nb");
    }
}
