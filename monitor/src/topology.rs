//! What the monitor needs to know about a cluster: its hosts and their roles, where the PKI
//! clusterkit issued lives, the desired sysctls, the backup store and the `monitor:` settings.
//!
//! `Topology::load` reads cluster.yaml through `clusterkit_core::config` (one parser, one set of
//! diagnostics for every command): intervals (scrape, evaluation, per collector), component
//! ports, etcd's quota, the backup age limit, receivers and routes. Not keys of cluster.yaml
//! (yet): the kubelet's disk thresholds (the installer's values are the defaults) and alert
//! timings; `Overrides` carries the ones a user can set on the command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clusterkit_core::config::{self, Cluster};

use crate::duration::PromDuration;
use crate::error::{MonitorError, Result};
use crate::settings::{
    BasicAuth, DingtalkReceiver, EmailReceiver, MonitorSettings, Receiver, WebAuth,
    WebhookReceiver, WecomReceiver,
};

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
    /// The full resolved cluster (SSH settings for the node collector, backup settings).
    pub cluster: Cluster,
    /// cluster.yaml's warnings (e.g. `monitor.tls: false`), for the command to print.
    pub warnings: Vec<String>,
}

/// Settings not (yet) in cluster.yaml, given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub scrape_interval: Option<PromDuration>,
    pub evaluation_interval: Option<PromDuration>,
    /// `ALERT=DURATION` pairs overriding an alert's `for:`.
    pub alert_for: BTreeMap<String, PromDuration>,
    /// Alertmanager's wait before the first notification of a group.
    pub group_wait: Option<PromDuration>,
    /// Alertmanager's wait before notifying about changes in a group.
    pub group_interval: Option<PromDuration>,
}

fn receiver_from_core(r: &config::Receiver) -> Receiver {
    let mut out = Receiver {
        name: r.name.clone(),
        webhook: None,
        email: None,
        wecom: None,
        dingtalk: None,
    };
    match &r.kind {
        config::ReceiverKind::Webhook { url } => {
            out.webhook = Some(WebhookReceiver { url: url.clone() })
        }
        config::ReceiverKind::Email {
            to,
            from,
            smarthost,
            auth_username,
            auth_password,
        } => {
            out.email = Some(EmailReceiver {
                to: to.clone(),
                from: from.clone(),
                smarthost: smarthost.clone(),
                auth_username: auth_username.clone(),
                auth_password_env: auth_password.as_ref().map(|s| s.var.clone()),
                require_tls: true,
            })
        }
        config::ReceiverKind::Wecom {
            api_url,
            corp_id,
            agent_id,
            to_party,
            api_secret,
        } => {
            out.wecom = Some(WecomReceiver {
                corp_id: corp_id.clone(),
                agent_id: agent_id.clone(),
                api_secret_env: api_secret.var.clone(),
                to_user: None,
                to_party: Some(to_party.clone()),
                api_url: api_url.clone(),
            })
        }
        config::ReceiverKind::Dingtalk { webhook_url } => {
            out.dingtalk = Some(DingtalkReceiver {
                webhook_url: webhook_url.clone(),
            })
        }
    }
    out
}

impl Topology {
    /// Reads and validates cluster.yaml through `clusterkit_core::config`.
    pub fn load(path: &Path) -> Result<Topology> {
        let loaded = config::load(path).map_err(|e| MonitorError::ClusterFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut topology = Topology::from_cluster(loaded.cluster)?;
        topology.warnings = loaded.warnings.iter().map(|w| w.to_string()).collect();
        Ok(topology)
    }

    /// Parses cluster.yaml text as if it were the file at `path`.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Topology> {
        let loaded = config::load_str(text, path).map_err(|e| MonitorError::ClusterFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Topology::from_cluster(loaded.cluster)
    }

    /// Builds the monitor's view of a resolved cluster.
    pub fn from_cluster(cluster: Cluster) -> Result<Topology> {
        let m = &cluster.monitor;
        let mut monitor = MonitorSettings {
            listen: m.listen.to_string(),
            ..MonitorSettings::default()
        };
        let i = &m.intervals;
        monitor.intervals.scrape = PromDuration::secs(i.scrape_secs.max(1));
        monitor.intervals.evaluation = PromDuration::secs(i.evaluation_secs.max(1));
        monitor.ports = crate::settings::Ports::from(&m.ports);
        monitor.etcd_quota_bytes = m.etcd_quota_bytes;
        monitor.backup_max_age = PromDuration::secs(m.backup_max_age_secs.max(1));
        monitor.intervals.etcd = PromDuration::secs(i.etcd_secs.max(1));
        monitor.intervals.control_plane = PromDuration::secs(i.control_plane_secs.max(1));
        monitor.intervals.nodes = PromDuration::secs(i.nodes_secs.max(1));
        monitor.intervals.certificates = PromDuration::secs(i.certificates_secs.max(1));
        monitor.intervals.backups = PromDuration::secs(i.backups_secs.max(1));
        monitor.alertmanager.receivers = m
            .alertmanager
            .receivers
            .iter()
            .map(receiver_from_core)
            .collect();
        monitor.alertmanager.critical_receiver = m.alertmanager.critical_receiver.clone();
        monitor.alertmanager.warning_receiver = m.alertmanager.warning_receiver.clone();
        monitor.tls = m.tls;
        monitor.web_auth = WebAuth {
            username: m.web_auth.username.clone(),
            password_env: m.web_auth.password.as_ref().map(|p| p.var.clone()),
        };
        monitor.basic_auth = m.basic_auth.as_ref().map(|b| BasicAuth {
            username: b.username.clone(),
            password_env: b.password.var.clone(),
        });
        let topology = Topology {
            name: cluster.name.clone(),
            config_path: cluster.path.clone(),
            state_dir: cluster.state_dir.clone(),
            hosts: cluster
                .hosts
                .iter()
                .map(|h| Host {
                    name: h.name.clone(),
                    address: h.address.to_string(),
                    roles: h.roles.iter().map(|r| r.as_str().to_string()).collect(),
                })
                .collect(),
            sysctls: cluster.sysctls.clone(),
            backup_store: cluster.backup.store.as_ref().map(|s| s.to_string()),
            monitor,
            cluster,
            warnings: Vec::new(),
        };
        topology.validate()?;
        Ok(topology)
    }

    /// Applies command-line settings on top of cluster.yaml.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Topology> {
        if let Some(d) = o.scrape_interval {
            self.monitor.intervals.scrape = d;
        }
        if let Some(d) = o.evaluation_interval {
            self.monitor.intervals.evaluation = d;
        }
        if let Some(d) = o.group_wait {
            self.monitor.alertmanager.group_wait = Some(d);
        }
        if let Some(d) = o.group_interval {
            self.monitor.alertmanager.group_interval = Some(d);
        }
        self.monitor
            .alert_for
            .extend(o.alert_for.iter().map(|(k, v)| (k.clone(), *v)));
        self.validate()?;
        Ok(self)
    }

    fn setting_error(&self, field: &str, message: impl Into<String>) -> MonitorError {
        MonitorError::Setting {
            path: self.config_path.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Checks what the monitor relies on beyond cluster.yaml's own validation.
    pub fn validate(&self) -> Result<()> {
        let m = &self.monitor;
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
        for (i, r) in m.alertmanager.receivers.iter().enumerate() {
            if r.name == crate::generate::alertmanager::NULL_RECEIVER {
                return Err(self.setting_error(
                    &format!("monitor.alertmanager.receivers[{i}].name"),
                    format!("`{}` is reserved by clusterkit", r.name),
                ));
            }
        }
        let known = crate::generate::rules::alert_names();
        for name in m.alert_for.keys() {
            if !known.contains(&name.as_str()) {
                return Err(self.setting_error(
                    &format!("alert_for.{name}"),
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
            dir: clusterkit_core::layout::StateLayout::new(&self.state_dir).pki_dir(),
        }
    }

    /// Resolves a path from cluster.yaml against the directory holding it.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.cluster.dir.join(p)
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
        self.monitor_hosts()
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

    pub(crate) const YAML: &str = r#"
name: demo
kubernetes: { version: v1.26.3 }
hosts:
  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: w1, address: 10.0.0.2, roles: [worker], auth: { agent: true } }
  - { name: m1, address: 10.0.0.3, roles: [monitor], auth: { agent: true } }
sysctls: { "net.core.somaxconn": "1024" }
backup: { store: "file:///srv/backups" }
monitor:
  listen: "0.0.0.0:9842"
  intervals: { etcd_secs: 5, scrape_secs: 30 }
  ports: { node_exporter: 9200 }
  etcd_quota_bytes: 8589934592
  backup_max_age_secs: 7200
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
        assert_eq!(t.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(t.monitor.intervals.etcd.to_string(), "5s");
        assert_eq!(t.monitor.intervals.evaluation.to_string(), "15s");
        assert_eq!(t.monitor.intervals.scrape.to_string(), "30s");
        assert_eq!(t.monitor.ports.node_exporter, 9200);
        assert_eq!(t.monitor.ports.etcd, 2379);
        assert_eq!(t.monitor.etcd_quota_bytes, 8 << 30);
        assert_eq!(t.monitor.backup_max_age.to_string(), "2h");
        assert_eq!(t.backup_store.as_deref(), Some("file:///srv/backups"));
        assert_eq!(
            t.exporter_targets(),
            vec![("10.0.0.3:9842".to_string(), Some("m1".to_string()))]
        );
        assert!(!t.hosts[2].runs_kubelet());
    }

    #[test]
    fn overrides_are_checked() {
        let t = Topology::from_yaml(Path::new("/etc/ck/cluster.yaml"), YAML).unwrap();
        let mut o = Overrides::default();
        o.alert_for
            .insert("NoSuchAlert".into(), PromDuration::secs(1));
        let err = t.clone().with_overrides(&o).unwrap_err();
        assert!(err.to_string().contains("NoSuchAlert"), "{err}");
        let mut o = Overrides::default();
        o.alert_for
            .insert("EtcdMembersDown".into(), PromDuration::secs(2));
        o.scrape_interval = Some(PromDuration::secs(1));
        let t = t.with_overrides(&o).unwrap();
        assert_eq!(t.monitor.intervals.scrape.to_string(), "1s");
    }
}
