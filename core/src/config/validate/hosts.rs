//! Validation of `hosts`: addresses, names, roles, SSH authentication and privilege
//! escalation, node labels and taints. Limits: key files are checked on the local file system
//! only; nothing is resolved over the network.

use super::*;

/// Resolves `auth`; `prefix` is the field path of its parent (`hosts[1]`), `who` names the
/// host for secret error messages.
pub(super) fn resolve_auth(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawAuth>>,
    parent: Pos,
    prefix: &str,
    who: &str,
) -> Option<Auth> {
    let field = format!("{prefix}.auth");
    let Some(raw) = raw else {
        cx.error(
            parent,
            &field,
            "is required but missing: give key_file (optionally with passphrase_env), password_env, or agent: true",
        );
        return None;
    };
    let at = pos(raw);
    let r = &raw.value;
    let agent = r.agent.as_ref().is_some_and(|a| a.value);
    let chosen = [r.key_file.is_some(), r.password_env.is_some(), agent]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        let msg = if chosen == 0 {
            "no authentication method: give key_file, password_env, or agent: true"
        } else {
            "give only one of key_file, password_env and agent: true"
        };
        cx.error(at, &field, msg);
        return None;
    }
    if let Some(p) = &r.passphrase_env {
        if r.key_file.is_none() {
            cx.error(
                pos(p),
                &format!("{field}.passphrase_env"),
                "only makes sense with key_file",
            );
            return None;
        }
    }
    if let Some(k) = &r.key_file {
        let file = cx.key_file(k, &format!("{field}.key_file"));
        let passphrase = match &r.passphrase_env {
            Some(p) => {
                let f = format!("{field}.passphrase_env");
                Some(cx.env(p, &f, &format!("{who} {f}"))?)
            }
            None => None,
        };
        return Some(Auth::Key {
            file: file?,
            passphrase,
        });
    }
    if let Some(p) = &r.password_env {
        let f = format!("{field}.password_env");
        let password = cx.env(p, &f, &format!("{who} {f}"))?;
        return Some(Auth::Password { password });
    }
    Some(Auth::Agent)
}

/// A resolved host and where it came from, for checks that span sections.
pub(super) struct HostAt {
    pub(super) host: Host,
    /// Index in the file's `hosts` list.
    pub(super) index: usize,
    /// Position of its `address` value.
    pub(super) address_at: Pos,
}

/// Resolves every host. Hosts with errors are left out, so the result may be shorter than the
/// file's list.
pub(super) fn resolve_hosts(
    cx: &mut Ctx<'_>,
    raw: Option<&S<Vec<S<RawHost>>>>,
    profile: Profile,
) -> Vec<HostAt> {
    let Some(list) = raw else {
        cx.error(
            TOP,
            "hosts",
            "is required but missing: list at least one host",
        );
        return Vec::new();
    };
    let list_at = pos(list);
    let mut out = Vec::new();
    let mut names: HashMap<String, (usize, Pos)> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (usize, Pos)> = HashMap::new();
    for (i, h) in list.value.iter().enumerate() {
        let prefix = format!("hosts[{i}]");
        let at = pos(h);
        let r = &h.value;

        let name = cx.required_str(&r.name, at, &format!("{prefix}.name"));
        let name = name.filter(|n| {
            let name_at = r.name.as_ref().map_or(at, pos);
            if !is_node_name(n) {
                cx.error(
                    name_at,
                    &format!("{prefix}.name"),
                    format!("{n:?} is not a valid node name (lowercase letters, digits, '-' and '.'; it becomes the hostname)"),
                );
                return false;
            }
            if let Some((j, first)) = names.get(n) {
                cx.error(
                    name_at,
                    &format!("{prefix}.name"),
                    format!("duplicate host name {n:?} (first used by hosts[{j}] at line {})", first.0),
                );
                return false;
            }
            names.insert(n.clone(), (i, name_at));
            true
        });
        let who = match &name {
            Some(n) => format!("host {n}"),
            None => format!("host {prefix}"),
        };

        let address_at = r.address.as_ref().map_or(at, pos);
        let address = cx
            .required_str(&r.address, at, &format!("{prefix}.address"))
            .and_then(|a| match a.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    cx.error(
                        address_at,
                        &format!("{prefix}.address"),
                        format!("{a:?} is not an IP address"),
                    );
                    None
                }
            });
        let address = address.filter(|ip| {
            if let Some(why) = not_a_node_address(ip, profile) {
                cx.error(
                    address_at,
                    &format!("{prefix}.address"),
                    format!("{ip} cannot be a node's address: it is {why}"),
                );
                return false;
            }
            if let Some((j, first)) = addresses.get(ip) {
                cx.error(
                    address_at,
                    &format!("{prefix}.address"),
                    format!(
                        "duplicate address {ip} (first used by hosts[{j}] at line {})",
                        first.0
                    ),
                );
                return false;
            }
            addresses.insert(*ip, (i, address_at));
            true
        });

        let port = port(cx, &r.port, &format!("{prefix}.port"));
        let user = user(cx, &r.user, &format!("{prefix}.user"));
        let auth = resolve_auth(cx, r.auth.as_ref(), at, &prefix, &who);
        let become_ = resolve_become(cx, r.become_.as_ref(), &user, &prefix, &who);
        let roles = resolve_roles(cx, &r.roles, at, &prefix);
        let labels = resolve_labels(cx, &r.labels, &prefix);
        let taints = resolve_taints(cx, &r.taints, &prefix);

        if let (
            Some(name),
            Some(address),
            Some(port),
            Some(auth),
            Some(become_),
            Some(roles),
            Some(labels),
            Some(taints),
        ) = (name, address, port, auth, become_, roles, labels, taints)
        {
            out.push(HostAt {
                host: Host {
                    name,
                    address,
                    port,
                    user,
                    auth,
                    become_,
                    roles,
                    labels,
                    taints,
                },
                index: i,
                address_at,
            });
        }
    }

    // Role counts are judged on the file's roles, including hosts that had other errors, so an
    // unrelated typo does not also produce a misleading "no etcd host".
    let has_role = |role: Role| {
        list.value
            .iter()
            .filter(|h| {
                h.value
                    .roles
                    .iter()
                    .any(|r| r.value.trim() == role.as_str())
            })
            .count()
    };
    for role in [Role::ControlPlane, Role::Etcd] {
        if has_role(role) == 0 {
            cx.error(
                list_at,
                "hosts",
                format!("no host has the role {role}; at least one is needed"),
            );
        }
    }
    let etcd = has_role(Role::Etcd);
    if etcd > 0 && etcd % 2 == 0 {
        cx.warn(
            list_at,
            "hosts",
            format!(
                "{etcd} etcd members tolerate no more failures than {}: use an odd number",
                etcd - 1
            ),
        );
    }
    out
}

/// Why `ip` cannot be a node's address (other machines must reach it at it, and Kubernetes
/// advertises it), or `None` when it can. Loopback addresses are every machine itself, so
/// only the sandbox profile, where everything runs on this one machine, may use them.
pub(super) fn not_a_node_address(ip: &IpAddr, profile: Profile) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() && profile != Profile::Sandbox {
        return Some(
            "a loopback address, which is every machine itself (only profile: sandbox, where \
             everything runs on this machine, may use one)",
        );
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address; write the IPv4 address")
        }
        _ => None,
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of node names.
pub(super) fn is_node_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `Some(None)`: valid, no escalation. `None`: an error was recorded.
pub(super) fn resolve_become(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawBecome>>,
    user: &str,
    prefix: &str,
    who: &str,
) -> Option<Option<Become>> {
    let Some(raw) = raw else {
        // A non-root login needs root for nearly everything the installer does; passwordless
        // sudo is the common setup, so it is the default.
        return Some((user != "root").then_some(Become {
            method: BecomeMethod::Sudo,
            password: None,
        }));
    };
    let r = &raw.value;
    let field = format!("{prefix}.become.method");
    let method = match &r.method {
        None => "sudo".to_string(),
        Some(m) => m.value.trim().to_string(),
    };
    match method.as_str() {
        "sudo" => {
            let f = format!("{prefix}.become.password_env");
            let password = match &r.password_env {
                Some(p) => Some(cx.env(p, &f, &format!("{who} {f}"))?),
                None => None,
            };
            Some(Some(Become {
                method: BecomeMethod::Sudo,
                password,
            }))
        }
        "none" => {
            if let Some(p) = &r.password_env {
                cx.error(
                    pos(p),
                    &format!("{prefix}.become.password_env"),
                    "is only used with method: sudo (method here is none)",
                );
                return None;
            }
            Some(None)
        }
        other => {
            let at = r.method.as_ref().map_or(pos(raw), pos);
            cx.error(
                at,
                &field,
                format!("unknown become method {other:?} (expected sudo or none)"),
            );
            None
        }
    }
}

pub(super) fn resolve_roles(
    cx: &mut Ctx<'_>,
    raw: &[S<String>],
    at: Pos,
    prefix: &str,
) -> Option<Vec<Role>> {
    if raw.is_empty() {
        cx.error(
            at,
            &format!("{prefix}.roles"),
            "a host needs at least one role (etcd, control-plane, worker, monitor)",
        );
        return None;
    }
    let mut roles = Vec::new();
    let mut ok = true;
    for (j, r) in raw.iter().enumerate() {
        let field = format!("{prefix}.roles[{j}]");
        match r.value.trim().parse::<Role>() {
            Ok(role) if roles.contains(&role) => {
                cx.warn(pos(r), &field, format!("role {role} is listed twice"));
            }
            Ok(role) => roles.push(role),
            Err(_) => {
                cx.error(
                    pos(r),
                    &field,
                    format!(
                        "unknown role {:?} (expected etcd, control-plane, worker or monitor)",
                        r.value
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(roles)
}

pub(super) fn resolve_labels(
    cx: &mut Ctx<'_>,
    raw: &BTreeMap<String, S<String>>,
    prefix: &str,
) -> Option<BTreeMap<String, String>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let field = format!("{prefix}.labels.{k}");
        if !is_label_key(k) {
            cx.error(
                pos(v),
                &field,
                format!("{k:?} is not a valid Kubernetes label key"),
            );
            ok = false;
        } else if !is_label_value(&v.value) {
            cx.error(
                pos(v),
                &field,
                format!("{:?} is not a valid Kubernetes label value (≤63 of letters, digits, '-', '_', '.')", v.value),
            );
            ok = false;
        } else {
            out.insert(k.clone(), v.value.clone());
        }
    }
    ok.then_some(out)
}

/// `[prefix/]name` where prefix is a DNS subdomain and name a label value that is not empty.
pub(super) fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    // Kubernetes wants the prefix to be a lowercase DNS subdomain, as node names are.
    prefix.is_none_or(is_node_name) && !name.is_empty() && is_label_value(name)
}

pub(super) fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

pub(super) fn resolve_taints(
    cx: &mut Ctx<'_>,
    raw: &[S<String>],
    prefix: &str,
) -> Option<Vec<Taint>> {
    let mut ok = true;
    let mut out = Vec::new();
    for (j, t) in raw.iter().enumerate() {
        match parse_taint(t.value.trim()) {
            Some(taint) => out.push(taint),
            None => {
                cx.error(
                    pos(t),
                    &format!("{prefix}.taints[{j}]"),
                    format!(
                        "{:?} is not a taint like key=value:NoSchedule (effects: NoSchedule, PreferNoSchedule, NoExecute)",
                        t.value
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

pub(super) fn parse_taint(s: &str) -> Option<Taint> {
    let (kv, effect) = s.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    if !is_label_key(key) || value.is_some_and(|v| !is_label_value(v)) {
        return None;
    }
    Some(Taint {
        key: key.to_string(),
        value: value.map(str::to_string),
        effect: effect.to_string(),
    })
}
