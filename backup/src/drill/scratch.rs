//! The scratch etcd of a drill on this machine: a temporary directory (0700) holding the
//! snapshot, the restored data dir, a one-off PKI and the member's log; two loopback ports
//! chosen free; the `etcd` binary given (from the bundle or `PATH`) started with a cleared
//! environment (no `ETCD_*` variable of the operator's shell can point it elsewhere), stopped by
//! its PID, and the directory removed when the drill ends, whatever the outcome.
//!
//! Limits: ports are chosen by binding port 0 and releasing it just before etcd starts; another
//! process taking one in between makes the drill fail with "address already in use" (an error
//! about this machine, not a verdict about the backup — run it again).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::pki::ScratchPki;
use super::{DrillError, DrillOptions, Started};
use crate::error::BackupError;
use crate::etcd::{self, EtcdTarget, EtcdTls};
use crate::restore::{snapshot_restore, SnapshotRestore};

/// The member name of every scratch etcd.
pub const MEMBER: &str = "clusterkit-drill";

/// How one scratch etcd is run; [`Local`] here, [`super::remote::Remote`] on a host.
#[async_trait]
pub(crate) trait Scratch: Send {
    /// Restores the verified `snapshot` into the scratch's data dir. The inner `Err` is a
    /// verdict (etcdctl refused the snapshot), the outer one a drill that could not run.
    async fn restore(
        &mut self,
        snapshot: &Path,
        id: &str,
    ) -> Result<Result<(), BackupError>, DrillError>;

    /// Steps between restore and start that count into the restore time (`ship`).
    fn extra_steps(&mut self) -> Vec<(String, f64)>;

    /// Starts the member and waits until it answers, exits, or `timeout` passes.
    async fn start(&mut self, timeout: Duration) -> Result<Started, DrillError>;

    /// Stops the member and removes everything the scratch created. Never fails: what cannot
    /// be removed is logged.
    async fn stop(&mut self);
}

/// A local directory (0700) removed with everything in it when dropped.
pub struct Dir(PathBuf);

impl Dir {
    /// `parent/clusterkit-drill-<id>-<pid>-<random>` (parent: the system's temporary directory).
    pub fn new(parent: Option<&Path>, id: &str) -> Result<Dir, BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let p = parent.join(format!(
            "clusterkit-drill-{id}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&p)
            .map_err(|e| BackupError::LocalIo {
                path: p.clone(),
                source: e,
            })?;
        Ok(Dir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "could not remove the drill's scratch directory");
            }
        }
    }
}

/// A free loopback port, held until the listener is dropped.
fn reserve_port() -> Result<std::net::TcpListener, std::io::Error> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
}

/// The last lines of a log file (for errors).
pub(crate) fn log_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    clusterkit_core::exec::tail(&lines[from..].join("\n")).to_string()
}

/// The flags of a scratch member (TLS on both sides, client certificates required).
pub(crate) fn etcd_args(
    data_dir: &str,
    client_url: &str,
    peer_url: &str,
    pki_dir: &str,
    quota_bytes: u64,
) -> Vec<String> {
    let f = |n: &str| format!("{pki_dir}/{n}");
    let (ca, cert, key) = (
        f(super::pki::CA_FILE),
        f(super::pki::CERT_FILE),
        f(super::pki::KEY_FILE),
    );
    [
        ("--name", MEMBER.to_string()),
        ("--data-dir", data_dir.to_string()),
        ("--listen-client-urls", client_url.to_string()),
        ("--advertise-client-urls", client_url.to_string()),
        ("--listen-peer-urls", peer_url.to_string()),
        ("--initial-advertise-peer-urls", peer_url.to_string()),
        ("--initial-cluster", format!("{MEMBER}={peer_url}")),
        ("--cert-file", cert.clone()),
        ("--key-file", key.clone()),
        ("--trusted-ca-file", ca.clone()),
        ("--peer-cert-file", cert),
        ("--peer-key-file", key),
        ("--peer-trusted-ca-file", ca),
        ("--quota-backend-bytes", quota_bytes.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .chain([
        "--client-cert-auth".into(),
        "--peer-client-cert-auth".into(),
    ])
    .collect()
}

/// The backend quota of a scratch member: room for the restored database (etcd refuses writes,
/// not reads, above it — but stays clear of its "database space exceeded" alarm).
pub(crate) fn quota_for(raw_size: u64) -> u64 {
    (raw_size.saturating_mul(2)).max(8 << 30)
}

/// A scratch etcd on this machine.
pub(crate) struct Local {
    dir: Dir,
    etcd: PathBuf,
    etcdctl: PathBuf,
    client_port: Option<std::net::TcpListener>,
    peer_port: Option<std::net::TcpListener>,
    client_url: String,
    peer_url: String,
    pki: (PathBuf, PathBuf, PathBuf),
    quota: u64,
    child: Option<tokio::process::Child>,
}

impl Local {
    /// Prepares the scratch in `dir`: ports reserved, PKI written.
    pub fn new(dir: Dir, opts: &DrillOptions, raw_size: u64) -> Result<Local, DrillError> {
        let scratch = |message: String| DrillError::Scratch {
            host: "local".into(),
            message,
        };
        let client = reserve_port().map_err(|e| scratch(format!("no free loopback port: {e}")))?;
        let peer = reserve_port().map_err(|e| scratch(format!("no free loopback port: {e}")))?;
        let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
        let client_url = format!("https://127.0.0.1:{}", port(&client));
        let peer_url = format!("https://127.0.0.1:{}", port(&peer));
        let pki = ScratchPki::generate(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .map_err(|e| scratch(format!("generating the scratch certificate: {e}")))?;
        let files = pki
            .write(&dir.path().join("pki"))
            .map_err(|e| scratch(format!("writing the scratch certificate: {e}")))?;
        Ok(Local {
            etcd: opts.etcd.clone(),
            etcdctl: opts.etcdctl.clone(),
            client_port: Some(client),
            peer_port: Some(peer),
            client_url,
            peer_url,
            pki: files,
            quota: quota_for(raw_size),
            child: None,
            dir,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn target(&self) -> EtcdTarget {
        EtcdTarget {
            endpoints: vec![self.client_url.clone()],
            tls: Some(EtcdTls {
                ca: self.pki.0.clone(),
                cert: self.pki.1.clone(),
                key: self.pki.2.clone(),
            }),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Restores with etcdctl into `data_dir` as the scratch member at `peer_url`; the snapshot file
/// is removed afterwards (it is no longer needed, and may be large).
pub(crate) async fn restore_scratch(
    etcdctl: &Path,
    snapshot: &Path,
    data_dir: &Path,
    peer_url: &str,
    id: &str,
    host: &str,
) -> Result<Result<(), BackupError>, DrillError> {
    let result = snapshot_restore(&SnapshotRestore {
        etcdctl,
        snapshot,
        data_dir,
        name: MEMBER,
        peer_urls: peer_url,
        initial_cluster: &format!("{MEMBER}={peer_url}"),
        token: &format!("clusterkit-drill-{id}"),
        bump_revision: None,
    })
    .await;
    let _ = std::fs::remove_file(snapshot);
    match result {
        Ok(()) => Ok(Ok(())),
        Err(e @ BackupError::Command { .. }) => Ok(Err(e)),
        Err(e) => Err(DrillError::Scratch {
            host: host.to_string(),
            message: format!(
                "{e} (give --etcdctl PATH or install etcdctl, Debian package etcd-client)"
            ),
        }),
    }
}

#[async_trait]
impl Scratch for Local {
    async fn restore(
        &mut self,
        snapshot: &Path,
        id: &str,
    ) -> Result<Result<(), BackupError>, DrillError> {
        restore_scratch(
            &self.etcdctl,
            snapshot,
            &self.data_dir(),
            &self.peer_url,
            id,
            "local",
        )
        .await
    }

    fn extra_steps(&mut self) -> Vec<(String, f64)> {
        Vec::new()
    }

    async fn start(&mut self, timeout: Duration) -> Result<Started, DrillError> {
        let scratch = |message: String| DrillError::Scratch {
            host: "local".into(),
            message,
        };
        let log = std::fs::File::create(self.log())
            .map_err(|e| scratch(format!("{}: {e}", self.log().display())))?;
        let args = etcd_args(
            &self.data_dir().to_string_lossy(),
            &self.client_url,
            &self.peer_url,
            &self.dir.path().join("pki").to_string_lossy(),
            self.quota,
        );
        // Released only now, so the window in which another process could take them is short.
        self.client_port = None;
        self.peer_port = None;
        let child = tokio::process::Command::new(&self.etcd)
            .env_clear()
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                scratch(format!(
                    "cannot run {}: {e} (give --etcd PATH, or install etcd: Debian package etcd-server)",
                    self.etcd.display()
                ))
            })?;
        self.child = Some(child);
        let target = self.target();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(self.log()).unwrap_or_default();
                    if text.contains("address already in use") {
                        return Err(scratch(format!(
                            "a port was taken before etcd could bind it (run the drill again): {}",
                            log_tail(&text)
                        )));
                    }
                    return Ok(Started::Failed(format!(
                        "etcd exited ({status}): {}",
                        log_tail(&text)
                    )));
                }
            }
            if answers(&target).await {
                return Ok(Started::Answers(target));
            }
            if Instant::now() >= deadline {
                let text = std::fs::read_to_string(self.log()).unwrap_or_default();
                return Ok(Started::Failed(format!(
                    "no answer within {}s: {}",
                    timeout.as_secs(),
                    log_tail(&text)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL by PID and reap: the scratch's data is thrown away, nothing to flush.
            if let Err(e) = child.kill().await {
                tracing::warn!(error = %e, "could not stop the scratch etcd");
            }
        }
        let data = self.data_dir();
        if data.exists() {
            let _ = std::fs::remove_dir_all(&data);
        }
    }
}

/// Whether the member at `target` answers a status call within a short timeout.
pub(crate) async fn answers(target: &EtcdTarget) -> bool {
    let probe = async {
        let endpoint = target.endpoints.first()?;
        let mut c = etcd::connect(endpoint, target).await.ok()?;
        c.status().await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), probe).await,
        Ok(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let d = Dir::new(Some(parent.path()), "etcd-x").unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(p.join("f"), "x").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn member_flags_require_client_certificates() {
        let a = etcd_args("/d", "https://127.0.0.1:1", "https://127.0.0.1:2", "/p", 1);
        let joined = a.join(" ");
        assert!(joined.contains("--client-cert-auth"), "{joined}");
        assert!(joined.contains("--peer-client-cert-auth"), "{joined}");
        assert!(joined.contains("--trusted-ca-file /p/ca.crt"), "{joined}");
        assert!(joined.contains("--initial-cluster clusterkit-drill=https://127.0.0.1:2"));
    }
}
