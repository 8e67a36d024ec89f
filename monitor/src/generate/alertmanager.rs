//! alertmanager.yml: grouping, inhibition of warnings by criticals, and the receivers chosen in
//! cluster.yaml (webhook, email, WeCom, DingTalk through its webhook bridge).
//!
//! Secrets: the SMTP password goes to a 0600 file referenced by `auth_password_file`.
//! Alertmanager 0.25 has no `*_file` form for the WeCom API secret, so that one is written
//! inline — which is why alertmanager.yml itself is always written 0600.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{MonitorError, Result};
use crate::settings::Receiver;
use crate::topology::Topology;

/// A receiver with no integrations: where the Watchdog goes when no dead man's switch is set.
pub const NULL_RECEIVER: &str = "clusterkit-null";

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
pub type SecretFile = (String, String);

fn secret_from_env(field: &str, variable: &str) -> Result<String> {
    std::env::var(variable).map_err(|_| MonitorError::MissingSecret {
        field: field.to_string(),
        variable: variable.to_string(),
    })
}

/// The names routes use: (default, critical, warning).
pub fn route_receivers(topology: &Topology) -> Result<(String, String, String)> {
    let am = &topology.monitor.alertmanager;
    let first = am.receivers.first().ok_or_else(|| MonitorError::Setting {
        path: topology.config_path.clone(),
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

fn receiver(
    r: &Receiver,
    index: usize,
    secrets_dir: &Path,
    secrets: &mut Vec<SecretFile>,
) -> Result<Value> {
    let field = format!("monitor.alertmanager.receivers[{index}]");
    let mut out = json!({ "name": r.name });
    if let Some(w) = &r.webhook {
        out["webhook_configs"] = json!([{ "url": w.url, "send_resolved": true }]);
    } else if let Some(d) = &r.dingtalk {
        out["webhook_configs"] = json!([{ "url": d.webhook_url, "send_resolved": true }]);
    } else if let Some(e) = &r.email {
        let mut c = json!({
            "to": e.to,
            "from": e.from,
            "smarthost": e.smarthost,
            "require_tls": e.require_tls,
            "send_resolved": true,
        });
        if let Some(user) = &e.auth_username {
            c["auth_username"] = json!(user);
        }
        if let Some(var) = &e.auth_password_env {
            let password = secret_from_env(&format!("{field}.email.auth_password_env"), var)?;
            let rel = format!("secrets/{}-smtp-password", r.name);
            c["auth_password_file"] = json!(secrets_dir.join(format!("{}-smtp-password", r.name)));
            secrets.push((rel, password));
        }
        out["email_configs"] = json!([c]);
    } else if let Some(w) = &r.wecom {
        let secret = secret_from_env(&format!("{field}.wecom.api_secret_env"), &w.api_secret_env)?;
        let mut c = json!({
            "corp_id": w.corp_id,
            "agent_id": w.agent_id,
            "api_secret": secret,
            "send_resolved": true,
        });
        if let Some(v) = &w.to_user {
            c["to_user"] = json!(v);
        }
        if let Some(v) = &w.to_party {
            c["to_party"] = json!(v);
        }
        if let Some(v) = &w.api_url {
            c["api_url"] = json!(v);
        }
        out["wechat_configs"] = json!([c]);
    }
    Ok(out)
}

/// alertmanager.yml plus the secret files it references. `secrets_dir` is the absolute
/// directory where the secret files will live on the host running Alertmanager.
pub fn config(topology: &Topology, secrets_dir: &Path) -> Result<(Value, Vec<SecretFile>)> {
    let am = &topology.monitor.alertmanager;
    let (default, critical, warning) = route_receivers(topology)?;
    let mut secrets = Vec::new();
    let mut receivers = am
        .receivers
        .iter()
        .enumerate()
        .map(|(i, r)| receiver(r, i, secrets_dir, &mut secrets))
        .collect::<Result<Vec<Value>>>()?;
    let watchdog = match &am.watchdog_receiver {
        Some(name) => name.clone(),
        None => {
            receivers.push(json!({ "name": NULL_RECEIVER }));
            NULL_RECEIVER.to_string()
        }
    };
    let route = json!({
        "receiver": default,
        "group_by": ["alertname", "cluster", "host"],
        "group_wait": am.group_wait.map(|d| d.to_string()).unwrap_or_else(|| "30s".into()),
        "group_interval": am.group_interval.map(|d| d.to_string()).unwrap_or_else(|| "5m".into()),
        "repeat_interval": am.repeat_interval.map(|d| d.to_string()).unwrap_or_else(|| "4h".into()),
        "routes": [
            { "receiver": watchdog, "matchers": ["alertname=\"Watchdog\""], "repeat_interval": "5m" },
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
