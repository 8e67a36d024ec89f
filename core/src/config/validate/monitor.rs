//! Validation of `monitor`: listen address, ports, intervals, thresholds, TLS and web
//! authentication, Alertmanager receivers and routes. Limits: receivers' URLs are checked by
//! syntax only.

use super::*;

pub(super) fn resolve_monitor(cx: &mut Ctx<'_>, raw: Option<&S<RawMonitor>>) -> Option<Monitor> {
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 9842));
    let default_intervals = Intervals {
        scrape_secs: 15,
        evaluation_secs: 15,
        etcd_secs: 15,
        control_plane_secs: 15,
        nodes_secs: 30,
        certificates_secs: 3600,
        backups_secs: 300,
    };
    let Some(raw) = raw else {
        return Some(Monitor {
            listen: default_listen,
            intervals: default_intervals,
            alertmanager: Alertmanager::default(),
            tls: true,
            web_auth: WebAuth::default(),
            basic_auth: None,
            ports: MonitorPorts::default(),
            etcd_quota_bytes: DEFAULT_ETCD_QUOTA_BYTES,
            backup_max_age_secs: DEFAULT_BACKUP_MAX_AGE_SECS,
            kubelet_disk: KubeletDisk::default(),
        });
    };
    let r = &raw.value;
    let mut ok = true;

    let listen = match &r.listen {
        None => default_listen,
        Some(l) => match l.value.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                cx.error(
                    pos(l),
                    "monitor.listen",
                    "port 0 is not a port to listen on",
                );
                ok = false;
                default_listen
            }
            Ok(a) => a,
            Err(_) => {
                cx.error(
                    pos(l),
                    "monitor.listen",
                    format!(
                        "{:?} is not an IP:port address like 127.0.0.1:9842",
                        l.value
                    ),
                );
                ok = false;
                default_listen
            }
        },
    };

    let intervals = match &r.intervals {
        None => default_intervals,
        Some(i) => {
            let i = &i.value;
            let d = &default_intervals;
            Intervals {
                scrape_secs: cx.ranged(
                    &i.scrape_secs,
                    "monitor.intervals.scrape_secs",
                    &grammar::INTERVAL_SECS,
                    d.scrape_secs,
                ),
                evaluation_secs: cx.ranged(
                    &i.evaluation_secs,
                    "monitor.intervals.evaluation_secs",
                    &grammar::INTERVAL_SECS,
                    d.evaluation_secs,
                ),
                etcd_secs: cx.ranged(
                    &i.etcd_secs,
                    "monitor.intervals.etcd_secs",
                    &grammar::INTERVAL_SECS,
                    d.etcd_secs,
                ),
                control_plane_secs: cx.ranged(
                    &i.control_plane_secs,
                    "monitor.intervals.control_plane_secs",
                    &grammar::INTERVAL_SECS,
                    d.control_plane_secs,
                ),
                nodes_secs: cx.ranged(
                    &i.nodes_secs,
                    "monitor.intervals.nodes_secs",
                    &grammar::INTERVAL_SECS,
                    d.nodes_secs,
                ),
                certificates_secs: cx.ranged(
                    &i.certificates_secs,
                    "monitor.intervals.certificates_secs",
                    &grammar::INTERVAL_SECS,
                    d.certificates_secs,
                ),
                backups_secs: cx.ranged(
                    &i.backups_secs,
                    "monitor.intervals.backups_secs",
                    &grammar::INTERVAL_SECS,
                    d.backups_secs,
                ),
            }
        }
    };

    let alertmanager = match &r.alertmanager {
        None => Some(Alertmanager::default()),
        Some(a) => resolve_alertmanager(cx, a),
    };

    let (tls, web_auth) = resolve_monitor_security(cx, r);

    let basic_auth = match &r.basic_auth {
        None => None,
        Some(b) => {
            let bat = pos(b);
            let username = cx
                .required_str(&b.value.username, bat, "monitor.basic_auth.username")
                .filter(|u| {
                    let ok = u.len() <= 128 && u.chars().all(|c| !c.is_control() && c != ':');
                    if !ok {
                        let uat = b.value.username.as_ref().map_or(bat, pos);
                        cx.error(
                            uat,
                            "monitor.basic_auth.username",
                            "at most 128 characters, no ':' (it ends an HTTP basic-auth user) \
                             and no control characters",
                        );
                    }
                    ok
                });
            let f = "monitor.basic_auth.password_env";
            let password = cx
                .required(&b.value.password_env, bat, f)
                .and_then(|p| cx.env(p, f, f));
            match (username, password) {
                (Some(username), Some(password)) => Some(BasicAuth { username, password }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let ports = match &r.ports {
        None => MonitorPorts::default(),
        Some(p) => {
            let p = &p.value;
            let d = MonitorPorts::default();
            let mut port = |v: &Option<S<u16>>, field: &str, default: u16| match v {
                None => default,
                Some(s) if s.value == 0 => {
                    cx.error(pos(s), field, "must be a port from 1 to 65535");
                    ok = false;
                    default
                }
                Some(s) => s.value,
            };
            MonitorPorts {
                node_exporter: port(
                    &p.node_exporter,
                    "monitor.ports.node_exporter",
                    d.node_exporter,
                ),
                etcd: port(&p.etcd, "monitor.ports.etcd", d.etcd),
                apiserver: port(&p.apiserver, "monitor.ports.apiserver", d.apiserver),
                scheduler: port(&p.scheduler, "monitor.ports.scheduler", d.scheduler),
                controller_manager: port(
                    &p.controller_manager,
                    "monitor.ports.controller_manager",
                    d.controller_manager,
                ),
                kubelet: port(&p.kubelet, "monitor.ports.kubelet", d.kubelet),
                prometheus: port(&p.prometheus, "monitor.ports.prometheus", d.prometheus),
                alertmanager: port(
                    &p.alertmanager,
                    "monitor.ports.alertmanager",
                    d.alertmanager,
                ),
            }
        }
    };
    let etcd_quota_bytes = cx.ranged(
        &r.etcd_quota_bytes,
        "monitor.etcd_quota_bytes",
        &grammar::ETCD_QUOTA_BYTES,
        DEFAULT_ETCD_QUOTA_BYTES,
    );
    let backup_max_age_secs = cx.ranged(
        &r.backup_max_age_secs,
        "monitor.backup_max_age_secs",
        &grammar::BACKUP_MAX_AGE_SECS,
        DEFAULT_BACKUP_MAX_AGE_SECS,
    );
    if !ok {
        return None;
    }
    Some(Monitor {
        listen,
        intervals,
        alertmanager: alertmanager?,
        tls,
        web_auth: web_auth?,
        basic_auth,
        ports,
        etcd_quota_bytes,
        backup_max_age_secs,
        kubelet_disk: KubeletDisk::default(),
    })
}

/// `monitor.tls` (default on; off warns) and `monitor.web_auth`; `None` for web_auth after an
/// error.
pub(super) fn resolve_monitor_security(
    cx: &mut Ctx<'_>,
    r: &RawMonitor,
) -> (bool, Option<WebAuth>) {
    let tls = match &r.tls {
        None => true,
        Some(t) if t.value => true,
        Some(t) => {
            cx.warn(
                pos(t),
                "monitor.tls",
                "false: node-exporter, Prometheus, Alertmanager and the exporter serve plain \
                 HTTP without authentication; only for a closed lab network",
            );
            false
        }
    };
    let Some(w) = &r.web_auth else {
        return (tls, Some(WebAuth::default()));
    };
    let username = match &w.value.username {
        None => Some(WebAuth::default().username),
        Some(u) => cx.non_blank(u, "monitor.web_auth.username"),
    };
    let username = username.filter(|u| {
        // A quoted YAML key in the web config files, and the user part of `user:password`.
        let ok = !u.contains([':', '"', '\\']) && u.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            if let Some(at) = w.value.username.as_ref() {
                cx.error(
                    pos(at),
                    "monitor.web_auth.username",
                    "must be printable ASCII without spaces, ':', '\"' or '\\'",
                );
            }
        }
        ok
    });
    let field = "monitor.web_auth.password_env";
    let password = match &w.value.password_env {
        None => Some(None),
        Some(p) => cx.env(p, field, field).map(Some),
    };
    match (username, password) {
        (Some(username), Some(password)) => (tls, Some(WebAuth { username, password })),
        _ => (tls, None),
    }
}

/// etcd's own default backend quota (the installer sets no `--quota-backend-bytes`).
pub(super) const DEFAULT_ETCD_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A daily backup plus two hours of slack.
pub(super) const DEFAULT_BACKUP_MAX_AGE_SECS: u64 = 26 * 3600;

pub(super) fn resolve_alertmanager(
    cx: &mut Ctx<'_>,
    raw: &S<RawAlertmanager>,
) -> Option<Alertmanager> {
    let r = &raw.value;
    let mut ok = true;
    let mut receivers = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, rcv) in r.receivers.iter().enumerate() {
        let prefix = format!("monitor.alertmanager.receivers[{i}]");
        let at = pos(rcv);
        let rr = &rcv.value;
        let name = cx.required_str(&rr.name, at, &format!("{prefix}.name"));
        if let Some(n) = &name {
            let problem = if n == Alertmanager::NULL_RECEIVER {
                Some(format!("{n:?} is reserved by clusterkit"))
            } else {
                names
                    .get(n)
                    .map(|j| format!("duplicate receiver name {n:?} (also receivers[{j}])"))
            };
            if let Some(message) = problem {
                let nat = rr.name.as_ref().map_or(at, pos);
                cx.error(nat, &format!("{prefix}.name"), message);
                ok = false;
            }
            names.insert(n.clone(), i);
        }
        let kinds = [
            rr.webhook.is_some(),
            rr.email.is_some(),
            rr.wecom.is_some(),
            rr.dingtalk.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds != 1 {
            cx.error(
                at,
                &prefix,
                "give exactly one of webhook, email, wecom, dingtalk",
            );
            ok = false;
            continue;
        }
        let kind = if let Some(w) = &rr.webhook {
            let f = format!("{prefix}.webhook.url");
            cx.required(&w.value.url, pos(w), &f)
                .and_then(|u| cx.url(u, &f))
                .map(|url| ReceiverKind::Webhook { url })
        } else if let Some(e) = &rr.email {
            let eat = pos(e);
            let er = &e.value;
            let to = cx.required_str(&er.to, eat, &format!("{prefix}.email.to"));
            let from = cx.required_str(&er.from, eat, &format!("{prefix}.email.from"));
            let smarthost = cx
                .required(&er.smarthost, eat, &format!("{prefix}.email.smarthost"))
                .and_then(|s| match s.value.trim().parse::<Endpoint>() {
                    Ok(_) => Some(s.value.trim().to_string()),
                    Err(e) => {
                        cx.error(pos(s), &format!("{prefix}.email.smarthost"), e.to_string());
                        None
                    }
                });
            let auth_username =
                cx.optional_str(&er.auth_username, &format!("{prefix}.email.auth_username"));
            let f = format!("{prefix}.email.auth_password_env");
            let auth_password = cx.optional_env(&er.auth_password_env, &f, &f);
            let pw_ok = er.auth_password_env.is_none() || auth_password.is_some();
            match (to, from, smarthost, pw_ok) {
                (Some(to), Some(from), Some(smarthost), true) => Some(ReceiverKind::Email {
                    to,
                    from,
                    smarthost,
                    auth_username,
                    auth_password,
                }),
                _ => None,
            }
        } else if let Some(w) = &rr.wecom {
            let wat = pos(w);
            let wr = &w.value;
            let api_url = match &wr.api_url {
                Some(u) => cx.url(u, &format!("{prefix}.wecom.api_url")).map(Some),
                None => Some(None),
            };
            let corp_id = cx.required_str(&wr.corp_id, wat, &format!("{prefix}.wecom.corp_id"));
            let agent_id = cx.required_str(&wr.agent_id, wat, &format!("{prefix}.wecom.agent_id"));
            let to_party = cx.required_str(&wr.to_party, wat, &format!("{prefix}.wecom.to_party"));
            let f = format!("{prefix}.wecom.api_secret_env");
            let api_secret = cx
                .required(&wr.api_secret_env, wat, &f)
                .and_then(|s| cx.env(s, &f, &f));
            match (api_url, corp_id, agent_id, to_party, api_secret) {
                (
                    Some(api_url),
                    Some(corp_id),
                    Some(agent_id),
                    Some(to_party),
                    Some(api_secret),
                ) => Some(ReceiverKind::Wecom {
                    api_url,
                    corp_id,
                    agent_id,
                    to_party,
                    api_secret,
                }),
                _ => None,
            }
        } else if let Some(d) = &rr.dingtalk {
            let f = format!("{prefix}.dingtalk.webhook_url");
            cx.required(&d.value.webhook_url, pos(d), &f)
                .and_then(|u| cx.url(u, &f))
                .map(|webhook_url| ReceiverKind::Dingtalk { webhook_url })
        } else {
            None
        };
        match (name, kind) {
            (Some(name), Some(kind)) => receivers.push(Receiver { name, kind }),
            _ => ok = false,
        }
    }
    let mut route = |v: &Option<S<String>>, field: &str| -> Option<String> {
        let s = v.as_ref()?;
        let n = s.value.trim().to_string();
        if !names.contains_key(&n) {
            let mut known: Vec<&str> = Vec::new();
            for x in &r.receivers {
                if let Some(n) = &x.value.name {
                    if !known.contains(&n.value.trim()) {
                        known.push(n.value.trim());
                    }
                }
            }
            cx.error(
                pos(s),
                field,
                format!(
                    "no receiver is named {n:?} (receivers: {})",
                    known.join(", ")
                ),
            );
            ok = false;
            return None;
        }
        Some(n)
    };
    let critical_receiver = route(
        &r.critical_receiver,
        "monitor.alertmanager.critical_receiver",
    );
    let warning_receiver = route(&r.warning_receiver, "monitor.alertmanager.warning_receiver");
    ok.then_some(Alertmanager {
        receivers,
        critical_receiver,
        warning_receiver,
    })
}
