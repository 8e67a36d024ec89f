//! LocalExecutor: the same Executor contract on this machine.
//!
//! Commands run as `sh -c LINE` with tokio::process, as the current user (no sudo: the local
//! side of clusterkit runs as root when it needs to). Each command runs in its own process
//! group, so a timeout kills the whole group — a shell's children included — not just `sh`.
//! Uploads write a temp file in the target directory, fsync it, set mode and owner, then rename.
//!
//! Limits: the owner of an upload is set with `chown(1)` (names or ids, like the SSH side);
//! output is held in memory.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Command, ExecError, Executor, Output, UploadOptions};

/// Runs commands on the local machine.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// The name used in messages (`localhost` unless a cluster host is the local machine).
    name: String,
    /// Default per-command timeout (a `Command` may override it).
    command_timeout: Duration,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        LocalExecutor::new("localhost", Duration::from_secs(600))
    }
}

impl LocalExecutor {
    pub fn new(name: impl Into<String>, command_timeout: Duration) -> Self {
        LocalExecutor {
            name: name.into(),
            command_timeout,
        }
    }

    /// An upload or download failure: `message` says what was being done, `source` why it
    /// failed (when a local error is behind it).
    fn transfer_error(
        &self,
        operation: &'static str,
        path: &str,
        message: impl Into<String>,
        source: Option<super::Cause>,
    ) -> ExecError {
        ExecError::Transfer {
            host: self.name.clone(),
            operation,
            path: path.to_string(),
            message: message.into(),
            source,
        }
    }

    /// Kills the process group `pgid` (negative pid for kill(1)); best effort.
    async fn kill_group(pgid: u32) {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    fn write_temp(
        &self,
        data: &[u8],
        path: &Path,
        options: &UploadOptions,
    ) -> Result<(), ExecError> {
        let target = path.display().to_string();
        let target = target.as_str();
        let io_err = |what: String| {
            move |e: std::io::Error| self.transfer_error("upload", target, what, Some(e.into()))
        };
        let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => dir,
            None => Path::new("."),
        };
        if options.create_parents {
            std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| self.transfer_error("upload", target, "path has no file name", None))?;
        let temp = dir.join(format!(
            ".{file_name}.ck-upload.{:016x}",
            rand::random::<u64>()
        ));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io_err(format!("create {}", temp.display())))?;
            file.write_all(data)
                .and_then(|_| file.sync_all())
                .map_err(io_err(format!("write {}", temp.display())))?;
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(options.mode))
                .map_err(io_err(format!("chmod {}", temp.display())))?;
            if let Some(owner) = &options.owner {
                let out = std::process::Command::new("chown")
                    .arg("--")
                    .arg(owner)
                    .arg(&temp)
                    .output()
                    .map_err(io_err("chown".into()))?;
                if !out.status.success() {
                    return Err(self.transfer_error(
                        "upload",
                        target,
                        format!(
                            "chown {owner}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        None,
                    ));
                }
            }
            std::fs::rename(&temp, path).map_err(io_err("rename into place".into()))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn host(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(skip_all, fields(host = %self.name, command = %command.display()))]
    async fn run(&self, command: &Command) -> Result<Output, ExecError> {
        let started = Instant::now();
        let timeout = command.timeout.unwrap_or(self.command_timeout);
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command.line)
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Session {
                host: self.name.clone(),
                message: "cannot start sh".into(),
                source: Some(e.into()),
            })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let mut stdout_pipe = child.stdout.take();
        let mut stderr_pipe = child.stderr.take();
        let input = command.stdin.clone();
        let work = async {
            let feed = async {
                if let (Some(mut pipe), Some(data)) = (stdin, input) {
                    // A command that exits without reading its stdin is not an error.
                    let _ = pipe.write_all(&data).await;
                    let _ = pipe.shutdown().await;
                }
            };
            let read_out = async {
                let mut buf = Vec::new();
                if let Some(p) = stdout_pipe.as_mut() {
                    let _ = p.read_to_end(&mut buf).await;
                }
                buf
            };
            let read_err = async {
                let mut buf = Vec::new();
                if let Some(p) = stderr_pipe.as_mut() {
                    let _ = p.read_to_end(&mut buf).await;
                }
                buf
            };
            let ((), stdout, stderr, status) = tokio::join!(feed, read_out, read_err, child.wait());
            (stdout, stderr, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok((stdout, stderr, status)) => {
                let status = status.map_err(|e| ExecError::Session {
                    host: self.name.clone(),
                    message: format!("waiting for `{}`", command.display()),
                    source: Some(e.into()),
                })?;
                Ok(Output {
                    status: status.code(),
                    stdout,
                    stderr,
                    duration: started.elapsed(),
                })
            }
            Err(_) => {
                if let Some(pid) = pid {
                    Self::kill_group(pid).await;
                }
                Err(ExecError::Timeout {
                    host: self.name.clone(),
                    command: command.display().to_string(),
                    after: timeout,
                })
            }
        }
    }

    #[tracing::instrument(skip_all, fields(host = %self.name, path = %path, bytes = data.len()))]
    async fn upload(
        &self,
        data: &[u8],
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), ExecError> {
        let this = self.clone();
        let data = data.to_vec();
        let target = path.to_string();
        let options = options.clone();
        tokio::task::spawn_blocking(move || this.write_temp(&data, Path::new(&target), &options))
            .await
            .map_err(|e| {
                self.transfer_error("upload", path, "the writing task failed", Some(e.into()))
            })?
    }

    async fn download(&self, path: &str) -> Result<Vec<u8>, ExecError> {
        tokio::fs::read(path)
            .await
            .map_err(|e| self.transfer_error("download", path, "read", Some(e.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_with_stdin_and_status() {
        let local = LocalExecutor::default();
        let out = local
            .run(&Command::new("cat; echo err >&2; exit 3").stdin("hello"))
            .await
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr_str(), "err\n");
        let err = local
            .run_checked(&Command::new("echo boom >&2; false"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let local = LocalExecutor::default();
        let started = Instant::now();
        let err = local
            .run(
                &Command::new(format!("(sleep 2; touch {}) & sleep 30", marker.display()))
                    .timeout(Duration::from_millis(300)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out command kept running"
        );
    }

    #[tokio::test]
    async fn upload_is_atomic_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        let path_str = path.to_str().unwrap();
        let local = LocalExecutor::default();
        let options = UploadOptions {
            mode: 0o600,
            ..Default::default()
        };
        local.upload(b"one", path_str, &options).await.unwrap();
        local.upload(b"two", path_str, &options).await.unwrap();
        assert_eq!(local.download(path_str).await.unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "temp files left behind");
        let err = local.download("/nonexistent/x").await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x"), "{err}");
    }
}
