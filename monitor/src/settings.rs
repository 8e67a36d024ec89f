//! The `monitor:` section of cluster.yaml, as written by the operator (raw file types with
//! defaults). `Topology` combines it with the hosts and PKI into what generators and collectors
//! use.
//!
//! Secrets are never written here: a password is named by the environment variable holding it
//! (`*_env`), read only when a config file is generated or the exporter starts.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::duration::PromDuration;

/// `monitor:` in cluster.yaml. Every field is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorSettings {
    /// Where `clusterkit monitor serve` listens (`host:port`). An unspecified address
    /// (`0.0.0.0:9842`) means "on every `monitor` host", which is where Prometheus scrapes it.
    pub listen: String,
    /// How often Prometheus scrapes and evaluates, and how often each collector refreshes.
    pub intervals: Intervals,
    /// Ports of the scraped components; the defaults are the ones the installer binds.
    pub ports: Ports,
    /// etcd's backend quota (`--quota-backend-bytes`); the quota alerts use this real value.
    pub etcd_quota_bytes: u64,
    /// The kubelet's disk thresholds; filesystem alerts fire before the kubelet acts on them.
    pub kubelet: KubeletThresholds,
    /// A backup older than this is stale (the schedule's period plus slack).
    pub backup_max_age: PromDuration,
    /// Per-alert override of the `for:` duration (alert name → duration), e.g. to page sooner.
    pub alert_for: BTreeMap<String, PromDuration>,
    /// Alert routing and receivers.
    pub alertmanager: AlertmanagerSettings,
    /// TLS and authentication on every endpoint (`monitor.tls`, default on).
    pub tls: bool,
    /// The Prometheus and Alertmanager login.
    pub web_auth: WebAuth,
    /// Require HTTP basic auth on the exporter.
    pub basic_auth: Option<BasicAuth>,
    /// Grafana provisioning.
    pub grafana: GrafanaSettings,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            listen: "127.0.0.1:9842".into(),
            intervals: Intervals::default(),
            ports: Ports::default(),
            etcd_quota_bytes: 2 * 1024 * 1024 * 1024,
            kubelet: KubeletThresholds::default(),
            backup_max_age: PromDuration::secs(26 * 3600),
            alert_for: BTreeMap::new(),
            alertmanager: AlertmanagerSettings::default(),
            tls: true,
            web_auth: WebAuth::default(),
            basic_auth: None,
            grafana: GrafanaSettings::default(),
        }
    }
}

/// Refresh and scrape intervals.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intervals {
    pub scrape: PromDuration,
    pub evaluation: PromDuration,
    pub etcd: PromDuration,
    pub control_plane: PromDuration,
    pub nodes: PromDuration,
    pub certificates: PromDuration,
    pub backups: PromDuration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            scrape: PromDuration::secs(15),
            evaluation: PromDuration::secs(15),
            etcd: PromDuration::secs(10),
            control_plane: PromDuration::secs(10),
            nodes: PromDuration::secs(30),
            certificates: PromDuration::secs(300),
            backups: PromDuration::secs(60),
        }
    }
}

/// Ports of what Prometheus scrapes and where Prometheus/Alertmanager listen.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ports {
    pub node_exporter: u16,
    pub etcd: u16,
    pub apiserver: u16,
    pub scheduler: u16,
    pub controller_manager: u16,
    pub kubelet: u16,
    pub prometheus: u16,
    pub alertmanager: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports::from(&clusterkit_core::config::MonitorPorts::default())
    }
}

impl From<&clusterkit_core::config::MonitorPorts> for Ports {
    fn from(p: &clusterkit_core::config::MonitorPorts) -> Self {
        Ports {
            node_exporter: p.node_exporter,
            etcd: p.etcd,
            apiserver: p.apiserver,
            scheduler: p.scheduler,
            controller_manager: p.controller_manager,
            kubelet: p.kubelet,
            prometheus: p.prometheus,
            alertmanager: p.alertmanager,
        }
    }
}

/// The kubelet's eviction and image-GC levels (percent), as configured by the installer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletThresholds {
    /// `evictionHard: nodefs.available` in percent (kubelet default 10).
    pub eviction_nodefs_available_percent: f64,
    /// `imageGCHighThresholdPercent` (kubelet default 85).
    pub image_gc_high_percent: f64,
}

impl Default for KubeletThresholds {
    fn default() -> Self {
        KubeletThresholds {
            eviction_nodefs_available_percent: 10.0,
            image_gc_high_percent: 85.0,
        }
    }
}

/// `monitor.alertmanager`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerSettings {
    pub receivers: Vec<Receiver>,
    /// Receiver for `severity: critical` (default: the first receiver).
    pub critical_receiver: Option<String>,
    /// Receiver for `severity: warning` (default: the critical receiver).
    pub warning_receiver: Option<String>,
    /// Receiver of the always-firing Watchdog (a dead man's switch). Unset: Watchdog is
    /// dropped by a receiver without integrations so it does not spam the others.
    pub watchdog_receiver: Option<String>,
    pub group_wait: Option<PromDuration>,
    pub group_interval: Option<PromDuration>,
    pub repeat_interval: Option<PromDuration>,
}

/// One notification target. Exactly one kind of integration per receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub name: String,
    #[serde(default)]
    pub webhook: Option<WebhookReceiver>,
    #[serde(default)]
    pub email: Option<EmailReceiver>,
    #[serde(default)]
    pub wecom: Option<WecomReceiver>,
    #[serde(default)]
    pub dingtalk: Option<DingtalkReceiver>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailReceiver {
    pub to: String,
    pub from: String,
    /// `host:port` of the SMTP server.
    pub smarthost: String,
    #[serde(default)]
    pub auth_username: Option<String>,
    /// Environment variable holding the SMTP password.
    #[serde(default)]
    pub auth_password_env: Option<String>,
    /// STARTTLS required (default true; only turn off for a local relay).
    #[serde(default = "yes")]
    pub require_tls: bool,
}

/// WeCom (企业微信) through Alertmanager's native `wechat_configs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomReceiver {
    pub corp_id: String,
    pub agent_id: String,
    /// Environment variable holding the application secret.
    pub api_secret_env: String,
    #[serde(default)]
    pub to_user: Option<String>,
    #[serde(default)]
    pub to_party: Option<String>,
    #[serde(default)]
    pub api_url: Option<String>,
}

/// DingTalk through its webhook bridge (prometheus-webhook-dingtalk): the bridge URL, e.g.
/// `http://127.0.0.1:8060/dingtalk/ops/send`; the bridge holds the robot token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingtalkReceiver {
    pub webhook_url: String,
}

/// The Prometheus and Alertmanager login (`monitor.web_auth`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAuth {
    pub username: String,
    /// Environment variable holding the password; `None`: generated into the state directory.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl Default for WebAuth {
    fn default() -> Self {
        WebAuth {
            username: "admin".into(),
            password_env: None,
        }
    }
}

/// Basic auth for the exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

/// Grafana provisioning.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrafanaSettings {
    /// URL Grafana uses to reach Prometheus (default: the first monitor host's Prometheus).
    pub prometheus_url: Option<String>,
}

fn yes() -> bool {
    true
}

impl Receiver {
    /// Which integration this receiver uses, or an error naming the receiver.
    pub fn kind(&self) -> Result<&'static str, String> {
        let kinds: Vec<&'static str> = [
            self.webhook.as_ref().map(|_| "webhook"),
            self.email.as_ref().map(|_| "email"),
            self.wecom.as_ref().map(|_| "wecom"),
            self.dingtalk.as_ref().map(|_| "dingtalk"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "receiver `{}` has no integration (webhook, email, wecom or dingtalk)",
                self.name
            )),
            many => Err(format!(
                "receiver `{}` has several integrations ({}); use one receiver each",
                self.name,
                many.join(", ")
            )),
        }
    }
}
