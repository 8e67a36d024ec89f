//! The `--web.config.file` of node-exporter, Prometheus and Alertmanager, rendered from
//! `templates/monitoring/web-config.yml`: TLS with the host's own certificate of the
//! monitoring CA; node-exporter also requires a client certificate of that CA (Prometheus's
//! scrapes), Prometheus and Alertmanager require the web login (bcrypt hash) and accept a
//! client certificate only when it is the CA's.
//!
//! Paths are relative to the `web/` directory the files live in (Debian's exporter toolkit
//! resolves them against the config file's directory), so one file serves every host: each
//! host has its own pair at the same path.
//!
//! Alertmanager's `--cluster.tls-config` (`templates/monitoring/alertmanager-cluster.yml`,
//! used when there are several monitor hosts) makes their gossip mutual TLS with each host's
//! Alertmanager certificate; its paths are absolute (under the install directory).

use clusterkit_installer::pki::monitoring;
use serde_json::{json, Value};

use crate::error::{MonitorError, Result};
use crate::security::WebLogin;

/// The template, compiled in.
pub const TEMPLATE: (&str, &str) = (
    "templates/monitoring/web-config.yml",
    include_str!("../../../templates/monitoring/web-config.yml"),
);

/// Alertmanager's gossip TLS template, compiled in.
pub const CLUSTER_TEMPLATE: (&str, &str) = (
    "templates/monitoring/alertmanager-cluster.yml",
    include_str!("../../../templates/monitoring/alertmanager-cluster.yml"),
);

/// Alertmanager's `--cluster.tls-config`, relative to the generated directory.
pub const ALERTMANAGER_CLUSTER: &str = "web/alertmanager-cluster.yml";

/// node-exporter's web config, relative to the generated directory.
pub const NODE_EXPORTER: &str = "web/node-exporter.yml";
/// Prometheus's.
pub const PROMETHEUS: &str = "web/prometheus.yml";
/// Alertmanager's.
pub const ALERTMANAGER: &str = "web/alertmanager.yml";

/// `rel` (a path under the generated directory) as seen from `web/`.
fn from_web(rel: &str) -> String {
    format!("../{rel}")
}

/// The template context of one daemon's file.
fn context(what: &str, pair: &str, client_auth: &str, login: Option<&WebLogin>) -> Value {
    let users: Vec<Value> = login
        .iter()
        .map(|l| json!({ "name": l.username, "hash": l.hash }))
        .collect();
    json!({ "web": {
        "what": what,
        "cert_file": from_web(&format!("{pair}.crt")),
        "key_file": from_web(&format!("{pair}.key")),
        "client_ca_file": from_web(monitoring::CA),
        "client_auth_type": client_auth,
        "users": users,
    }})
}

/// node-exporter: TLS, client certificate required.
pub fn node_exporter_context() -> Value {
    context(
        "node-exporter",
        monitoring::NODE_EXPORTER,
        "RequireAndVerifyClientCert",
        None,
    )
}

/// Prometheus: TLS and the login.
pub fn prometheus_context(login: &WebLogin) -> Value {
    context(
        "Prometheus",
        monitoring::PROMETHEUS,
        "VerifyClientCertIfGiven",
        Some(login),
    )
}

/// Alertmanager: TLS and the login.
pub fn alertmanager_context(login: &WebLogin) -> Value {
    context(
        "Alertmanager",
        monitoring::ALERTMANAGER,
        "VerifyClientCertIfGiven",
        Some(login),
    )
}

/// Alertmanager's gossip TLS: its own pair and the monitoring CA, as they are under
/// `install_dir` (where the generated directory lives on the host).
pub fn alertmanager_cluster_context(install_dir: &std::path::Path) -> Value {
    let at = |rel: String| install_dir.join(rel).to_string_lossy().into_owned();
    json!({ "cluster": {
        "cert_file": at(format!("{}.crt", monitoring::ALERTMANAGER)),
        "key_file": at(format!("{}.key", monitoring::ALERTMANAGER)),
        "ca_file": at(monitoring::CA.to_string()),
    }})
}

/// Renders the web config template with `context`.
pub fn render(file: &str, context: &Value) -> Result<String> {
    render_template(TEMPLATE.1, file, context)
}

/// Renders `template` (one of this module's) with `context`.
pub fn render_template(template: &str, file: &str, context: &Value) -> Result<String> {
    clusterkit_core::playbook::render::render_text(template, context)
        .map(|mut s| {
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        })
        .map_err(|message| MonitorError::render(file, message))
}
