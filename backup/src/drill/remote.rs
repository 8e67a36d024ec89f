//! The scratch etcd of a drill on a cluster host (`backup drill --on HOST`), over SSH.
//!
//! The host runs the member with its own `etcd` binary (the one the installer put there), so the
//! drill measures a restore on the cluster's own hardware and etcd version. What happens there:
//! a directory from `mktemp -d /var/tmp/clusterkit-drill.XXXXXXXX` (0700) receives the one-off
//! PKI and the restored data dir; the member runs as a transient systemd unit
//! `clusterkit-drill-<random>` (`systemd-run --collect`: no unit file, unloaded even when it
//! fails) on two ports the host does not listen on, its client port on the host's cluster
//! address (mutual TLS with the one-off CA), its peer port on the host's loopback; at the end the
//! unit is stopped and the directory removed. Nothing of the cluster's etcd — its unit, ports or
//! data dir — is used.
//!
//! The restore itself (`etcdctl snapshot restore`) runs on this machine, as for the cluster
//! restore: Debian's `etcd-server` package, which the hosts have, carries no `etcdctl`. The
//! restored data dir is streamed over SSH as a sparse, uncompressed tar.
//!
//! Limits: this machine must reach the host's chosen client port (like it reaches 2379); an
//! interrupted drill (Ctrl-C) can leave the unit and directory behind — both carry the
//! `clusterkit-drill` name.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clusterkit_core::exec::{Command, Executor, UploadOptions};

use super::pki::ScratchPki;
use super::scratch::{self, answers, etcd_args, log_tail, restore_scratch, Dir, Scratch};
use super::{DrillError, DrillOptions, Started};
use crate::etcd::{EtcdTarget, EtcdTls};
use crate::restore_cluster::send_dir;

/// A host to run the scratch etcd on.
#[derive(Clone)]
pub struct RemoteHost {
    /// The host's name in cluster.yaml.
    pub name: String,
    /// Its address (the scratch member's client port listens there).
    pub address: IpAddr,
    pub exec: Arc<dyn Executor>,
}

/// Prefix of the transient unit and the temporary directory on the host.
pub const NAME_PREFIX: &str = "clusterkit-drill";

pub(crate) struct Remote {
    host: RemoteHost,
    work: Dir,
    etcdctl: std::path::PathBuf,
    etcd: String,
    dir: String,
    unit: String,
    client_url: String,
    peer_url: String,
    quota: u64,
    ship_seconds: Option<f64>,
    started: bool,
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

fn q(s: &str) -> String {
    clusterkit_core::exec::ssh::shell_quote(s)
}

impl Remote {
    fn err(&self, message: String) -> DrillError {
        DrillError::Scratch {
            host: self.host.name.clone(),
            message,
        }
    }

    async fn sh(&self, what: &str, line: String) -> Result<String, DrillError> {
        self.host
            .exec
            .run_checked(&Command::new(line).timeout(Duration::from_secs(600)))
            .await
            .map(|o| o.stdout_str())
            .map_err(|e| self.err(format!("{what}: {e}")))
    }

    /// Checks the host, picks its ports, creates its directory and uploads the PKI.
    pub async fn prepare(
        host: RemoteHost,
        work: Dir,
        opts: &DrillOptions,
        raw_size: u64,
    ) -> Result<Remote, DrillError> {
        let mut r = Remote {
            host,
            work,
            etcdctl: opts.etcdctl.clone(),
            etcd: String::new(),
            dir: String::new(),
            unit: format!("{NAME_PREFIX}-{:08x}", rand::random::<u32>()),
            client_url: String::new(),
            peer_url: String::new(),
            quota: scratch::quota_for(raw_size),
            ship_seconds: None,
            started: false,
        };
        r.etcd = r
            .sh(
                "finding etcd, systemd-run and tar",
                "command -v systemd-run >/dev/null || { echo 'no systemd-run on this host' >&2; exit 1; }; \
                 command -v tar >/dev/null || { echo 'tar is needed' >&2; exit 1; }; \
                 command -v etcd || { echo 'no etcd binary on this host (drill on an etcd host)' >&2; exit 1; }"
                    .into(),
            )
            .await?
            .trim()
            .to_string();
        // Two ports nothing listens on (the member binds them a moment later).
        let ports = r
            .sh(
                "choosing free ports",
                "used=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://'); \
                 for p in $(shuf -i 20000-32000 -n 64); do echo \"$used\" | grep -qx \"$p\" || echo \"$p\"; done | head -n 2"
                    .into(),
            )
            .await?;
        let ports: Vec<u16> = ports
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if ports.len() != 2 || ports[0] == ports[1] {
            return Err(r.err(format!("could not find two free ports: {ports:?}")));
        }
        r.client_url = url(r.host.address, ports[0]);
        r.peer_url = url(IpAddr::V4(Ipv4Addr::LOCALHOST), ports[1]);
        let pki = ScratchPki::generate(&[r.host.address, IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .map_err(|e| r.err(format!("generating the scratch certificate: {e}")))?;
        // The local copy is this side's client certificate.
        pki.write(&r.work.path().join("pki"))
            .map_err(|e| r.err(format!("writing the scratch certificate: {e}")))?;
        r.dir = r
            .sh(
                "creating the scratch directory",
                format!("mktemp -d /var/tmp/{NAME_PREFIX}.XXXXXXXX"),
            )
            .await?
            .trim()
            .to_string();
        if !r.dir.starts_with(&format!("/var/tmp/{NAME_PREFIX}.")) {
            return Err(r.err(format!("mktemp gave {:?}", r.dir)));
        }
        for (name, text, mode) in pki.files() {
            let path = format!("{}/pki/{name}", r.dir);
            let uploaded = r
                .host
                .exec
                .upload(
                    text.as_bytes(),
                    &path,
                    &UploadOptions {
                        mode,
                        owner: None,
                        create_parents: true,
                    },
                )
                .await;
            if let Err(e) = uploaded {
                r.stop().await;
                return Err(r.err(format!("writing {path}: {e}")));
            }
        }
        Ok(r)
    }

    fn target(&self) -> EtcdTarget {
        let pki = self.work.path().join("pki");
        EtcdTarget {
            endpoints: vec![self.client_url.clone()],
            tls: Some(EtcdTls {
                ca: pki.join(super::pki::CA_FILE),
                cert: pki.join(super::pki::CERT_FILE),
                key: pki.join(super::pki::KEY_FILE),
            }),
            timeout: Duration::from_secs(10),
        }
    }

    async fn unit_active(&self) -> bool {
        let state = self
            .host
            .exec
            .run(&Command::new(format!(
                "systemctl is-active {} 2>/dev/null || true",
                q(&self.unit)
            )))
            .await
            .map(|o| o.stdout_str())
            .unwrap_or_default();
        // A failed SSH call says nothing about the unit: keep waiting.
        let state = state.trim();
        state.is_empty() || state == "active" || state == "activating"
    }

    async fn log(&self) -> String {
        self.host
            .exec
            .run(&Command::new(format!(
                "tail -n 30 {}/etcd.log 2>/dev/null || true",
                q(&self.dir)
            )))
            .await
            .map(|o| o.stdout_str())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Scratch for Remote {
    async fn restore(
        &mut self,
        snapshot: &Path,
        id: &str,
    ) -> Result<Result<(), crate::BackupError>, DrillError> {
        let data = self.work.path().join("data");
        let restored =
            restore_scratch(&self.etcdctl, snapshot, &data, &self.peer_url, id, "local").await?;
        if restored.is_err() {
            return Ok(restored);
        }
        let t = Instant::now();
        let sent = send_dir(self.host.exec.as_ref(), self.work.path(), &self.dir).await;
        let _ = std::fs::remove_dir_all(&data);
        sent.map_err(|e| self.err(e.to_string()))?;
        self.ship_seconds = Some(t.elapsed().as_secs_f64());
        Ok(Ok(()))
    }

    fn extra_steps(&mut self) -> Vec<(String, f64)> {
        self.ship_seconds
            .take()
            .map(|s| vec![("ship".to_string(), s)])
            .unwrap_or_default()
    }

    async fn start(&mut self, timeout: Duration) -> Result<Started, DrillError> {
        let args: Vec<String> = etcd_args(
            &format!("{}/data", self.dir),
            &self.client_url,
            &self.peer_url,
            &format!("{}/pki", self.dir),
            self.quota,
        )
        .iter()
        .map(|a| q(a))
        .collect();
        self.started = true;
        self.sh(
            "starting the scratch etcd",
            format!(
                "systemd-run --quiet --collect --unit={u} -p StandardOutput=null \
                 -p StandardError=file:{d}/etcd.log -p WorkingDirectory={d} {e} {a}",
                u = q(&self.unit),
                d = self.dir,
                e = q(&self.etcd),
                a = args.join(" ")
            ),
        )
        .await?;
        let target = self.target();
        let deadline = Instant::now() + timeout;
        let mut last_unit_check = Instant::now();
        loop {
            if answers(&target).await {
                return Ok(Started::Answers(target));
            }
            if last_unit_check.elapsed() >= Duration::from_secs(2) {
                last_unit_check = Instant::now();
                if !self.unit_active().await {
                    let log = self.log().await;
                    if log.contains("address already in use") {
                        return Err(self.err(format!(
                            "a port was taken before etcd could bind it (run the drill again): {}",
                            log_tail(&log)
                        )));
                    }
                    return Ok(Started::Failed(format!(
                        "etcd on {} exited: {}",
                        self.host.name,
                        log_tail(&log)
                    )));
                }
            }
            if Instant::now() >= deadline {
                let log = self.log().await;
                return Ok(Started::Failed(format!(
                    "no answer from {} within {}s: {}",
                    self.client_url,
                    timeout.as_secs(),
                    log_tail(&log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn stop(&mut self) {
        let mut line = String::new();
        if self.started {
            line.push_str(&format!(
                "systemctl stop {u} >/dev/null 2>&1; systemctl reset-failed {u} >/dev/null 2>&1; ",
                u = q(&self.unit)
            ));
        }
        if !self.dir.is_empty() {
            line.push_str(&format!("rm -rf {}", q(&self.dir)));
        }
        if line.is_empty() {
            return;
        }
        if let Err(e) = self
            .host
            .exec
            .run_checked(&Command::new(line).timeout(Duration::from_secs(120)))
            .await
        {
            tracing::warn!(host = %self.host.name, unit = %self.unit, dir = %self.dir, error = %e,
                "could not remove the drill's scratch etcd; remove that unit and directory by hand");
        }
    }
}
