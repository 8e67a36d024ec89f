//! The inventory: what running something on cluster.yaml's hosts needs from the resolved
//! [`Cluster`]. How each host is reached over SSH ([`ssh_target`], and [`targets`] for the
//! playbook engine), what a playbook sees of a host ([`host_vars`], as `host`) and of the
//! cluster ([`context`]: `cluster`, `hosts`, `groups`, `layout`), and every host's name and
//! address for `/etc/hosts` ([`cluster_hosts`]); and from these, a run's [`engine`] and targets.
//!
//! Every playbook run starts here: the installer's phases, `clusterkit run`, `monitor deploy`.
//! Each adds its own block to the [`context`] (the installer `install`, the monitor `monitor`)
//! and brings its own [`RunOptions`]; what all of them share lives here so it is built once.
//!
//! Limits: secrets (SSH password, key passphrase, sudo password) are read from the environment
//! when a target is built and then live only in the target; host vars and the context never
//! hold one (cluster.yaml only names the variables). `groups` are the hosts' roles, nothing
//! else: there are no ad-hoc groups.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::{Auth, Cluster, Host};
use crate::exec::ssh::{SshAuth, SshExecutor, SshTarget, Sudo};
use crate::exec::ExecError;
use crate::layout::NodeLayout;
use crate::playbook::{Engine, HostTarget, PlaybookError, RunOptions};

/// What stops the inventory from being built.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// How to reach a host could not be worked out (a secret it needs cannot be read); the
    /// cause names the host, the user and the environment variable.
    #[error("{host}: cannot set up its SSH connection")]
    Target {
        host: String,
        #[source]
        source: Box<ExecError>,
    },

    /// The engine could not start (its journal or event log cannot be opened).
    #[error(transparent)]
    Engine(#[from] PlaybookError),
}

fn ssh_auth(host: &str, user: &str, auth: &Auth) -> Result<SshAuth, ExecError> {
    let secret_err = |e: crate::config::SecretError| ExecError::Auth {
        host: host.to_string(),
        user: user.to_string(),
        message: "cannot read the ssh secret".into(),
        source: Some(e.into()),
    };
    Ok(match auth {
        Auth::Key { file, passphrase } => SshAuth::Key {
            path: file.clone(),
            passphrase: passphrase
                .as_ref()
                .map(|p| p.read())
                .transpose()
                .map_err(secret_err)?,
        },
        Auth::Password { password } => SshAuth::Password(password.read().map_err(secret_err)?),
        Auth::Agent => SshAuth::Agent,
    })
}

/// The SSH target for `host`: address, auth (secrets read from the environment now), sudo,
/// known_hosts, timeouts and jump host from the cluster's `ssh` settings.
pub fn ssh_target(cluster: &Cluster, host: &Host) -> Result<SshTarget, ExecError> {
    let ssh = &cluster.ssh;
    let sudo = match &host.become_ {
        Some(become_) => Some(Sudo {
            password: become_
                .password
                .as_ref()
                .map(|p| p.read())
                .transpose()
                .map_err(|e| ExecError::Auth {
                    host: host.name.clone(),
                    user: host.user.clone(),
                    message: "sudo password".into(),
                    source: Some(e.into()),
                })?,
        }),
        None => None,
    };
    let jump = match &ssh.jump_host {
        Some(j) => {
            let name = format!("jump host {}", j.address);
            Some(Box::new(SshTarget {
                auth: ssh_auth(&name, &j.user, &j.auth)?,
                name,
                address: j.address.clone(),
                port: j.port,
                user: j.user.clone(),
                sudo: None,
                known_hosts: ssh.known_hosts.clone(),
                trust_on_first_use: ssh.trust_on_first_use,
                connect_timeout: ssh.connect_timeout(),
                command_timeout: ssh.command_timeout(),
                jump: None,
            }))
        }
        None => None,
    };
    Ok(SshTarget {
        name: host.name.clone(),
        address: host.address.to_string(),
        port: host.port,
        user: host.user.clone(),
        auth: ssh_auth(&host.name, &host.user, &host.auth)?,
        sudo,
        known_hosts: ssh.known_hosts.clone(),
        trust_on_first_use: ssh.trust_on_first_use,
        connect_timeout: ssh.connect_timeout(),
        command_timeout: ssh.command_timeout(),
        jump,
    })
}

/// Playbook targets for the selected hosts; connections open on first use, so an unreachable
/// host fails on its own without holding up the others.
pub fn targets(cluster: &Cluster, hosts: &[&Host]) -> Result<Vec<HostTarget>, InventoryError> {
    hosts
        .iter()
        .map(|h| {
            let target = ssh_target(cluster, h).map_err(|e| InventoryError::Target {
                host: h.name.clone(),
                source: Box::new(e),
            })?;
            Ok(HostTarget {
                name: h.name.clone(),
                address: h.address.to_string(),
                roles: h.roles.iter().map(|r| r.as_str().to_string()).collect(),
                exec: Arc::new(SshExecutor::lazy(target)),
                vars: host_vars(h),
            })
        })
        .collect()
}

/// What tera sees as `host` (and in `hosts`): no credentials.
pub fn host_vars(h: &Host) -> Value {
    json!({
        "name": h.name,
        "address": h.address.to_string(),
        "port": h.port,
        "roles": h.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "labels": h.labels,
    })
}

/// The hosts of each role, by role name, in cluster.yaml's order (tera's `groups`).
pub fn groups(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &cluster.hosts {
        for r in &h.roles {
            groups
                .entry(r.as_str().to_string())
                .or_default()
                .push(h.name.clone());
        }
    }
    groups
}

/// The tera context every playbook run over the cluster starts from: `cluster` (the resolved
/// cluster.yaml), `hosts` (every host's [`host_vars`]), `groups` ([`groups`]) and `layout`
/// (every path, unit and port on a node: [`NodeLayout`]). Callers add their own block.
pub fn context(cluster: &Cluster) -> Value {
    json!({
        "cluster": cluster,
        "hosts": cluster.hosts.iter().map(host_vars).collect::<Vec<_>>(),
        "groups": groups(cluster),
        "layout": NodeLayout::from_cluster(cluster),
    })
}

/// The playbook engine of one run over the cluster, and the targets of `hosts`: the one place
/// a run is set up, whoever runs (the installer's phases, `clusterkit run`, `monitor deploy`).
/// `context` is the render context (this module's [`context`] plus the caller's block);
/// `hosts_file` tasks list every host of cluster.yaml, not only the selected ones.
pub fn engine(
    cluster: &Cluster,
    hosts: &[&Host],
    context: Value,
    opts: RunOptions,
) -> Result<(Engine, Vec<HostTarget>), InventoryError> {
    let targets = targets(cluster, hosts)?;
    let engine = Engine::new(context, cluster_hosts(cluster), opts)?;
    Ok((engine, targets))
}

/// `(name, address)` of every host, for /etc/hosts.
pub fn cluster_hosts(cluster: &Cluster) -> Vec<(String, String)> {
    cluster
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(auth: &str) -> Cluster {
        let text = format!(
            "name: demo\nkubernetes: {{ version: v1.20.2 }}\nhosts:\n  - {{ name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], labels: {{ zone: a }}, auth: {auth} }}\n  - {{ name: w1, address: 10.0.0.2, roles: [worker], auth: {{ agent: true }} }}\n  - {{ name: cp2, address: 10.0.0.3, roles: [control-plane], auth: {{ agent: true }} }}\n"
        );
        let dir = std::env::temp_dir();
        crate::config::load_str(&text, &dir.join("cluster.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .cluster
    }

    #[test]
    fn groups_are_roles_in_file_order() {
        let c = cluster("{ agent: true }");
        let g = groups(&c);
        assert_eq!(g["control-plane"], ["cp1", "cp2"]);
        assert_eq!(g["etcd"], ["cp1"]);
        assert_eq!(g["worker"], ["w1"]);
        assert_eq!(g.len(), 3, "{g:?}");
    }

    #[test]
    fn context_and_host_vars_carry_no_secret_names() {
        let c = cluster("{ password_env: INVENTORY_TEST_CP1_PASS }");
        let ctx = context(&c);
        let keys: Vec<&String> = ctx.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["cluster", "groups", "hosts", "layout"]);
        assert_eq!(ctx["hosts"][0]["labels"]["zone"], "a");
        assert_eq!(ctx["hosts"][0]["roles"], json!(["control-plane", "etcd"]));
        assert!(ctx["hosts"][0].get("auth").is_none(), "{}", ctx["hosts"][0]);
        assert_eq!(
            cluster_hosts(&c),
            [
                ("cp1".to_string(), "10.0.0.1".to_string()),
                ("w1".to_string(), "10.0.0.2".to_string()),
                ("cp2".to_string(), "10.0.0.3".to_string()),
            ]
        );
    }

    #[test]
    fn an_unreadable_secret_names_the_host_and_variable() {
        let c = cluster("{ password_env: INVENTORY_TEST_UNSET_PASS }");
        let hosts: Vec<&Host> = c.hosts.iter().collect();
        let err = targets(&c, &hosts).err().expect("the password is not set");
        assert!(
            matches!(&err, InventoryError::Target { host, .. } if host == "cp1"),
            "{err:?}"
        );
        let text = crate::error_chain(&err);
        assert!(text.contains("INVENTORY_TEST_UNSET_PASS"), "{text}");
        let w1: Vec<&Host> = c.hosts.iter().filter(|h| h.name == "w1").collect();
        let t = targets(&c, &w1).unwrap();
        assert_eq!(
            (t[0].name.as_str(), t[0].address.as_str()),
            ("w1", "10.0.0.2")
        );
        assert_eq!(t[0].roles, ["worker"]);
    }
}
