//! What the monitor needs to know about a cluster: its hosts and their roles, where the PKI
//! clusterkit issued lives, the desired sysctls, the backup store and the `monitor:` settings.
//!
//! `Topology::load` reads cluster.yaml itself with a deliberately small view of the file (unknown
//! keys are ignored, so it follows the full model in `clusterkit_core::config` without
//! duplicating its validation). Relative paths resolve against the directory of cluster.yaml;
//! the state directory is `<dir>/<name>-state` unless `state_dir:` says otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{MonitorError, Result};
use crate::settings::MonitorSettings;

/// The roles a host can have in cluster.yaml.
pub mod role {
    pub const CONTROL_PLANE: &str = "control-plane";
    pub const ETCD: &str = "etcd";
    pub const WORKER: &str = "worker";
    pub const MONITOR: &str = "monitor";
}

/// One host of the cluster, as the monitor sees it.
#[derive(Debug, Clone)]
pub struct Host {
    /// Name from cluster.yaml; used as the `host` label everywhere.
    pub name: String,
    /// Address to reach it (IP or DNS name), without a port.
    pub address: String,
    pub roles: Vec<String>,
}

impl Host {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Runs a kubelet: every Kubernetes node (control plane or worker). A host with only the
    /// `etcd` or `monitor` role is not a node and has no kubelet to scrape.
    pub fn runs_kubelet(&self) -> bool {
        self.has_role(role::CONTROL_PLANE) || self.has_role(role::WORKER)
    }

    /// `address:port`, with brackets around an IPv6 address.
    pub fn endpoint(&self, port: u16) -> String {
        if self.address.contains(':') {
            format!("[{}]:{port}", self.address)
        } else {
            format!("{}:{port}", self.address)
        }
    }
}

/// Where the certificates clusterkit issued are kept (kubeadm's layout under `pki/`).
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// The cluster CA (signs the apiserver, kubelet and component serving certificates).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The etcd CA (signs etcd's server certificates).
    pub fn etcd_ca(&self) -> PathBuf {
        self.dir.join("etcd/ca.crt")
    }

    /// The client certificate used to read etcd's metrics and status: the dedicated
    /// `etcd/metrics-client` when the installer issued one, else `etcd/healthcheck-client`.
    pub fn etcd_metrics_client(&self) -> ClientCert {
        for name in ["etcd/metrics-client", "etcd/healthcheck-client"] {
            let cert = self.dir.join(format!("{name}.crt"));
            if cert.exists() {
                return ClientCert {
                    key: self.dir.join(format!("{name}.key")),
                    cert,
                };
            }
        }
        ClientCert {
            cert: self.dir.join("etcd/metrics-client.crt"),
            key: self.dir.join("etcd/metrics-client.key"),
        }
    }

    /// The client certificate for the apiserver, kubelets, scheduler and controller-manager
    /// metrics endpoints (kubeadm's `apiserver-kubelet-client`, which the kubelets trust and
    /// which is authorised on the apiserver).
    pub fn kube_client(&self) -> ClientCert {
        ClientCert {
            cert: self.dir.join("apiserver-kubelet-client.crt"),
            key: self.dir.join("apiserver-kubelet-client.key"),
        }
    }
}

/// Everything the generators and collectors work from.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    /// The cluster.yaml this came from (for messages).
    pub config_path: PathBuf,
    /// `<dir of cluster.yaml>/<name>-state` unless configured.
    pub state_dir: PathBuf,
    pub hosts: Vec<Host>,
    /// Desired sysctls from cluster.yaml (drift is reported against these).
    pub sysctls: BTreeMap<String, String>,
    /// `backup.store` (`s3://…` or `file:///…`), if any.
    pub backup_store: Option<String>,
    pub monitor: MonitorSettings,
}

// The small view of cluster.yaml this crate reads. Unknown keys are allowed on purpose: the
// full schema belongs to clusterkit_core::config.
#[derive(Deserialize)]
struct RawCluster {
    name: String,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    hosts: Vec<RawHost>,
    #[serde(default)]
    sysctls: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    backup: Option<RawBackup>,
    #[serde(default)]
    monitor: Option<MonitorSettings>,
}

#[derive(Deserialize)]
struct RawHost {
    name: String,
    address: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct RawBackup {
    #[serde(default)]
    store: Option<String>,
}

impl Topology {
    /// Reads and checks cluster.yaml.
    pub fn load(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|e| MonitorError::io(path, e))?;
        Topology::from_yaml(path, &text)
    }

    /// Parses cluster.yaml text; `path` is used for messages and to resolve relative paths.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Topology> {
        let raw: RawCluster =
            serde_saphyr::from_str(text).map_err(|e| MonitorError::ClusterFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let state_dir = match raw.state_dir {
            Some(dir) => base.join(dir),
            None => base.join(format!("{}-state", raw.name)),
        };
        let sysctls = raw
            .sysctls
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        let topology = Topology {
            name: raw.name,
            config_path: path.to_path_buf(),
            state_dir,
            hosts: raw
                .hosts
                .into_iter()
                .map(|h| Host {
                    name: h.name,
                    address: h.address,
                    roles: h.roles,
                })
                .collect(),
            sysctls,
            backup_store: raw.backup.and_then(|b| b.store),
            monitor: raw.monitor.unwrap_or_default(),
        };
        topology.validate()?;
        Ok(topology)
    }

    fn setting_error(&self, field: &str, message: impl Into<String>) -> MonitorError {
        MonitorError::Setting {
            path: self.config_path.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Checks what the monitor relies on; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let m = &self.monitor;
        if self.hosts.is_empty() {
            return Err(self.setting_error("hosts", "no hosts: nothing to monitor"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if !names.insert(h.name.as_str()) {
                return Err(self.setting_error(
                    &format!("hosts[{i}].name"),
                    format!("duplicate host name `{}`", h.name),
                ));
            }
        }
        self.listen_addr()?;
        let k = &m.kubelet;
        for (field, v) in [
            (
                "monitor.kubelet.eviction_nodefs_available_percent",
                k.eviction_nodefs_available_percent,
            ),
            (
                "monitor.kubelet.image_gc_high_percent",
                k.image_gc_high_percent,
            ),
        ] {
            if !(v > 0.0 && v < 100.0) {
                return Err(
                    self.setting_error(field, format!("{v} is not a percentage in (0, 100)"))
                );
            }
        }
        if m.etcd_quota_bytes == 0 {
            return Err(self.setting_error("monitor.etcd_quota_bytes", "must be positive"));
        }
        let am = &m.alertmanager;
        let mut receivers = std::collections::BTreeSet::new();
        for (i, r) in am.receivers.iter().enumerate() {
            let field = format!("monitor.alertmanager.receivers[{i}]");
            r.kind().map_err(|msg| self.setting_error(&field, msg))?;
            if r.name.is_empty() || r.name == crate::generate::alertmanager::NULL_RECEIVER {
                return Err(self.setting_error(
                    &format!("{field}.name"),
                    format!("`{}` is not a usable receiver name", r.name),
                ));
            }
            if !receivers.insert(r.name.as_str()) {
                return Err(self.setting_error(
                    &format!("{field}.name"),
                    format!("duplicate receiver `{}`", r.name),
                ));
            }
        }
        for (field, value) in [
            (
                "monitor.alertmanager.critical_receiver",
                &am.critical_receiver,
            ),
            (
                "monitor.alertmanager.warning_receiver",
                &am.warning_receiver,
            ),
            (
                "monitor.alertmanager.watchdog_receiver",
                &am.watchdog_receiver,
            ),
        ] {
            if let Some(name) = value {
                if !receivers.contains(name.as_str()) {
                    return Err(self.setting_error(
                        field,
                        format!("no receiver named `{name}` in monitor.alertmanager.receivers"),
                    ));
                }
            }
        }
        let known = crate::generate::rules::alert_names();
        for name in m.alert_for.keys() {
            if !known.contains(&name.as_str()) {
                return Err(self.setting_error(
                    &format!("monitor.alert_for.{name}"),
                    format!(
                        "no alert named `{name}`; known alerts: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The exporter's listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.monitor.listen.parse().map_err(|_| {
            self.setting_error(
                "monitor.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:9842",
                    self.monitor.listen
                ),
            )
        })
    }

    pub fn pki(&self) -> Pki {
        Pki {
            dir: self.state_dir.join("pki"),
        }
    }

    /// Resolves a path from cluster.yaml against the directory holding it.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.config_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }

    pub fn hosts_with<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
        self.hosts.iter().filter(move |h| h.has_role(role))
    }

    /// Where Prometheus finds the exporter: the listen address itself, or every `monitor` host
    /// (first host if none) when the exporter listens on all addresses.
    pub fn exporter_targets(&self) -> Vec<(String, Option<String>)> {
        let Ok(addr) = self.listen_addr() else {
            return Vec::new();
        };
        if !addr.ip().is_unspecified() {
            return vec![(addr.to_string(), None)];
        }
        let monitors: Vec<&Host> = self.hosts_with(role::MONITOR).collect();
        let hosts = if monitors.is_empty() {
            self.hosts.iter().take(1).collect()
        } else {
            monitors
        };
        hosts
            .into_iter()
            .map(|h| (h.endpoint(addr.port()), Some(h.name.clone())))
            .collect()
    }

    /// Hosts running Prometheus and Alertmanager: the `monitor` hosts, else the first host.
    pub fn monitor_hosts(&self) -> Vec<&Host> {
        let monitors: Vec<&Host> = self.hosts_with(role::MONITOR).collect();
        if monitors.is_empty() {
            self.hosts.iter().take(1).collect()
        } else {
            monitors
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
name: demo
ssh: { known_hosts: ./known_hosts }
hosts:
  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { key_file: ./k } }
  - { name: w1, address: 10.0.0.2, roles: [worker] }
  - { name: m1, address: 10.0.0.3, roles: [monitor] }
sysctls: { "net.core.somaxconn": "1024", "vm.swappiness": 0 }
backup: { store: "file:///srv/backups" }
monitor:
  listen: "0.0.0.0:9842"
  intervals: { scrape: 5s }
  alertmanager:
    receivers:
      - { name: ops, webhook: { url: "http://127.0.0.1:9999/hook" } }
    critical_receiver: ops
"#;

    #[test]
    fn loads_hosts_state_dir_and_settings() {
        let t = Topology::from_yaml(Path::new("/etc/ck/cluster.yaml"), YAML).unwrap();
        assert_eq!(t.state_dir, PathBuf::from("/etc/ck/demo-state"));
        assert_eq!(t.hosts.len(), 3);
        assert_eq!(t.sysctls["vm.swappiness"], "0");
        assert_eq!(t.monitor.intervals.scrape.to_string(), "5s");
        assert_eq!(t.monitor.intervals.evaluation.to_string(), "15s");
        assert_eq!(
            t.exporter_targets(),
            vec![("10.0.0.3:9842".to_string(), Some("m1".to_string()))]
        );
        assert!(!t.hosts[2].runs_kubelet());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = YAML.replace("critical_receiver: ops", "critical_receiver: nobody");
        let err = Topology::from_yaml(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("monitor.alertmanager.critical_receiver"),
            "{err}"
        );
        let bad = YAML.replace("scrape: 5s", "scrape: fast");
        let err = Topology::from_yaml(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(err.to_string().contains("fast"), "{err}");
    }
}
