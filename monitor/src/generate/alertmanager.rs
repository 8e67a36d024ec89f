//! alertmanager.yml: grouping, inhibition of warnings by criticals, and the receivers chosen in
//! cluster.yaml (webhook, email, WeCom, DingTalk through its webhook bridge).
//!
//! Secrets: the SMTP password goes to a 0600 file referenced by `auth_password_file`.
//! Alertmanager 0.25 has no `*_file` form for the WeCom API secret, so that one is written
//! inline — which is why alertmanager.yml itself is always written 0600.

use std::path::Path;

use clusterkit_core::config::{Alertmanager, Receiver, ReceiverKind, Secret};
use serde_json::{json, Value};

use crate::error::{MonitorError, Result};
use crate::generate::tuning::Tuning;
use crate::topology::Topology;

/// A receiver with no integrations: where the Watchdog goes (it would only spam the others).
pub const NULL_RECEIVER: &str = Alertmanager::NULL_RECEIVER;

/// Labels that identify "the same problem" for inhibition: the same alert about the same
/// object (instance, host, certificate path, mount point, etcd member).
pub const INHIBIT_EQUAL: &[&str] = &[
    "alertname",
    "instance",
    "host",
    "path",
    "mountpoint",
    "member",
];

/// A secret file to write next to the config: (relative path, content).
pub type SecretFile = (String, Secret);

/// The names routes use: (default, critical, warning).
pub fn route_receivers(topology: &Topology) -> Result<(String, String, String)> {
    let am = &topology.monitor().alertmanager;
    let first = am.receivers.first().ok_or_else(|| MonitorError::Setting {
        path: topology.cluster.path.clone(),
        field: "monitor.alertmanager.receivers".into(),
        message: "no receivers: alerts would go nowhere; add a webhook, email, wecom or dingtalk receiver".into(),
    })?;
    let critical = am
        .critical_receiver
        .clone()
        .unwrap_or_else(|| first.name.clone());
    let warning = am
        .warning_receiver
        .clone()
        .unwrap_or_else(|| critical.clone());
    Ok((warning.clone(), critical, warning))
}

fn receiver(r: &Receiver, secrets_dir: &Path, secrets: &mut Vec<SecretFile>) -> Result<Value> {
    let mut out = json!({ "name": r.name });
    match &r.kind {
        ReceiverKind::Webhook { url } => {
            out["webhook_configs"] = json!([{ "url": url, "send_resolved": true }]);
        }
        ReceiverKind::Dingtalk { webhook_url } => {
            out["webhook_configs"] = json!([{ "url": webhook_url, "send_resolved": true }]);
        }
        ReceiverKind::Email {
            to,
            from,
            smarthost,
            auth_username,
            auth_password,
        } => {
            let mut c = json!({
                "to": to,
                "from": from,
                "smarthost": smarthost,
                "require_tls": true,
                "send_resolved": true,
            });
            if let Some(user) = auth_username {
                c["auth_username"] = json!(user);
            }
            if let Some(password) = auth_password {
                let password = password.read()?;
                let rel = format!("secrets/{}-smtp-password", r.name);
                c["auth_password_file"] =
                    json!(secrets_dir.join(format!("{}-smtp-password", r.name)));
                secrets.push((rel, password));
            }
            out["email_configs"] = json!([c]);
        }
        ReceiverKind::Wecom {
            api_url,
            corp_id,
            agent_id,
            to_party,
            api_secret,
        } => {
            let secret = api_secret.read()?;
            let mut c = json!({
                "corp_id": corp_id,
                "agent_id": agent_id,
                "api_secret": secret.expose(),
                "send_resolved": true,
                "to_party": to_party,
            });
            if let Some(v) = api_url {
                c["api_url"] = json!(v);
            }
            out["wechat_configs"] = json!([c]);
        }
    }
    Ok(out)
}

/// alertmanager.yml plus the secret files it references. `secrets_dir` is the absolute
/// directory where the secret files will live on the host running Alertmanager.
pub fn config(
    topology: &Topology,
    secrets_dir: &Path,
    tuning: &Tuning,
) -> Result<(Value, Vec<SecretFile>)> {
    let am = &topology.monitor().alertmanager;
    let (default, critical, warning) = route_receivers(topology)?;
    let mut secrets = Vec::new();
    let mut receivers = am
        .receivers
        .iter()
        .map(|r| receiver(r, secrets_dir, &mut secrets))
        .collect::<Result<Vec<Value>>>()?;
    receivers.push(json!({ "name": NULL_RECEIVER }));
    let route = json!({
        "receiver": default,
        "group_by": ["alertname", "cluster", "host"],
        "group_wait": tuning.group_wait.map(|d| d.to_string()).unwrap_or_else(|| "30s".into()),
        "group_interval": tuning.group_interval.map(|d| d.to_string()).unwrap_or_else(|| "5m".into()),
        "repeat_interval": "4h",
        "routes": [
            { "receiver": NULL_RECEIVER, "matchers": ["alertname=\"Watchdog\""], "repeat_interval": "5m" },
            { "receiver": critical, "matchers": ["severity=\"critical\""] },
            { "receiver": warning, "matchers": ["severity=\"warning\""] },
        ],
    });
    let value = json!({
        "global": { "resolve_timeout": "5m" },
        "route": route,
        "inhibit_rules": [{
            "source_matchers": ["severity=\"critical\""],
            "target_matchers": ["severity=\"warning\""],
            "equal": INHIBIT_EQUAL,
        }],
        "receivers": receivers,
    });
    Ok((value, secrets))
}
