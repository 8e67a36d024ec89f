//! The `cluster.yaml` file exactly as written: plain serde types, no defaults, no checks.
//!
//! Every struct denies unknown fields, so a typo (`adress:`) is an error with its line rather
//! than a silently ignored key. Values are wrapped in [`Spanned`] so validation can point at
//! the line and column of a bad value. Almost every field is optional here, even ones the
//! resolved model requires: validation reports a missing field together with every other
//! problem, where a serde "missing field" error would stop at the first.
//!
//! Enum-like values (roles, proxy mode, profile, …) are kept as strings for the same reason:
//! an unknown value becomes one diagnostic among many instead of aborting the parse.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value and where it was written.
pub type S<T> = Spanned<T>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Option<S<String>>,
    pub state_dir: Option<S<String>>,
    pub ssh: Option<S<RawSsh>>,
    pub hosts: Option<S<Vec<S<RawHost>>>>,
    pub kubernetes: Option<S<RawKubernetes>>,
    pub runtime: Option<S<RawRuntime>>,
    pub packages: Option<S<RawPackages>>,
    pub profile: Option<S<String>>,
    #[serde(default)]
    pub sysctls: BTreeMap<String, S<String>>,
    pub backup: Option<S<RawBackup>>,
    pub monitor: Option<S<RawMonitor>>,
    pub pki: Option<S<RawPki>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPki {
    pub ca_validity_days: Option<S<u64>>,
    pub cert_validity_days: Option<S<u64>>,
    pub renew_before_days: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub known_hosts: Option<S<String>>,
    pub trust_on_first_use: Option<S<bool>>,
    pub concurrency: Option<S<u64>>,
    pub connect_timeout_secs: Option<S<u64>>,
    pub command_timeout_secs: Option<S<u64>>,
    pub jump_host: Option<S<RawJumpHost>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJumpHost {
    pub address: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub user: Option<S<String>>,
    pub auth: Option<S<RawAuth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub name: Option<S<String>>,
    pub address: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub user: Option<S<String>>,
    #[serde(default)]
    pub roles: Vec<S<String>>,
    pub auth: Option<S<RawAuth>>,
    #[serde(rename = "become")]
    pub become_: Option<S<RawBecome>>,
    #[serde(default)]
    pub labels: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub taints: Vec<S<String>>,
}

/// One of: `{key_file, passphrase_env?}`, `{password_env}`, `{agent: true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub key_file: Option<S<String>>,
    pub passphrase_env: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub agent: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBecome {
    pub method: Option<S<String>>,
    pub password_env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    pub version: Option<S<String>>,
    pub pod_cidr: Option<S<String>>,
    pub service_cidr: Option<S<String>>,
    pub dns_domain: Option<S<String>>,
    pub proxy_mode: Option<S<String>>,
    pub control_plane_endpoint: Option<S<String>>,
    pub control_plane_mode: Option<S<String>>,
    pub image_repository: Option<S<String>>,
    pub network: Option<S<String>>,
    pub load_balancer: Option<S<RawLoadBalancer>>,
}

/// `kubernetes.load_balancer`: the optional local API load balancer on every node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoadBalancer {
    pub local: Option<S<bool>>,
    pub port: Option<S<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, S<Vec<S<String>>>>,
    #[serde(default)]
    pub insecure_registries: Vec<S<String>>,
    pub sandbox_image: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPackages {
    pub bundle: Option<S<String>>,
    pub repositories: Option<S<BTreeMap<String, S<String>>>>,
    pub mirror: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    pub store: Option<S<String>>,
    pub s3: Option<S<RawS3>>,
    pub encryption: Option<S<RawEncryption>>,
    pub retention: Option<S<RawRetention>>,
    pub schedule: Option<S<String>>,
    pub compression_level: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub endpoint: Option<S<String>>,
    pub region: Option<S<String>>,
    pub path_style: Option<S<bool>>,
    pub access_key_id_env: Option<S<String>>,
    pub secret_access_key_env: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub checksums: Option<S<String>>,
    pub part_size_mib: Option<S<u64>>,
    pub parts_in_flight: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    #[serde(default)]
    pub age_recipients: Vec<S<String>>,
    pub age_identity_file: Option<S<String>>,
    pub passphrase_env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_last: Option<S<u32>>,
    pub hourly: Option<S<u32>>,
    pub daily: Option<S<u32>>,
    pub weekly: Option<S<u32>>,
    pub monthly: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    pub listen: Option<S<String>>,
    pub intervals: Option<S<RawIntervals>>,
    pub alertmanager: Option<S<RawAlertmanager>>,
    pub tls: Option<S<bool>>,
    pub web_auth: Option<S<RawWebAuth>>,
    pub basic_auth: Option<S<RawBasicAuth>>,
    pub ports: Option<S<RawMonitorPorts>>,
    pub etcd_quota_bytes: Option<S<u64>>,
    pub backup_max_age_secs: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitorPorts {
    pub node_exporter: Option<S<u16>>,
    pub etcd: Option<S<u16>>,
    pub apiserver: Option<S<u16>>,
    pub scheduler: Option<S<u16>>,
    pub controller_manager: Option<S<u16>>,
    pub kubelet: Option<S<u16>>,
    pub prometheus: Option<S<u16>>,
    pub alertmanager: Option<S<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntervals {
    pub scrape_secs: Option<S<u64>>,
    pub evaluation_secs: Option<S<u64>>,
    pub etcd_secs: Option<S<u64>>,
    pub control_plane_secs: Option<S<u64>>,
    pub nodes_secs: Option<S<u64>>,
    pub certificates_secs: Option<S<u64>>,
    pub backups_secs: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanager {
    #[serde(default)]
    pub receivers: Vec<S<RawReceiver>>,
    pub critical_receiver: Option<S<String>>,
    pub warning_receiver: Option<S<String>>,
}

/// `name` plus exactly one of the kinds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReceiver {
    pub name: Option<S<String>>,
    pub webhook: Option<S<RawWebhook>>,
    pub email: Option<S<RawEmail>>,
    pub wecom: Option<S<RawWecom>>,
    pub dingtalk: Option<S<RawDingtalk>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    pub to: Option<S<String>>,
    pub from: Option<S<String>>,
    pub smarthost: Option<S<String>>,
    pub auth_username: Option<S<String>>,
    pub auth_password_env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWecom {
    pub api_url: Option<S<String>>,
    pub corp_id: Option<S<String>>,
    pub agent_id: Option<S<String>>,
    pub to_party: Option<S<String>>,
    pub api_secret_env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDingtalk {
    pub webhook_url: Option<S<String>>,
}

/// `monitor.web_auth`: who may use Prometheus's and Alertmanager's web interfaces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebAuth {
    pub username: Option<S<String>>,
    pub password_env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: Option<S<String>>,
    pub password_env: Option<S<String>>,
}
