//! `clusterkit status`: one operator's view of the cluster as it runs, read in one go.
//!
//! Per host: its roles (cluster.yaml), the version of each component's running process and
//! whether it is cluster.yaml's `kubernetes.version` ([`crate::running`]), and its Node's
//! Ready condition and cordon (the API, through the state directory's admin.conf). Then one
//! line each for the readiness of the components ([`readiness::component_checks`]: no waiting,
//! no probe pods), the certificate that expires first (the rows `certs check-expiration`
//! reports, nodes' copies and the state directory's), and the newest trusted etcd backup in
//! `backup.store` (the backup catalog; only when a store is configured).
//!
//! Reading costs one SSH connection and one command per host (the running versions and the
//! certificates together), the API calls of the component checks, and one listing of the
//! backup store (a GET per backup's manifest) — all at once.
//!
//! [`judge`] decides what is a problem (the cluster is not healthy: a command's non-zero exit)
//! and what is a warning: a component missing or not running cluster.yaml's release, a
//! host SSH cannot read, a Node not Ready or not registered, an unreachable API, a failed
//! component check and a certificate that is expired, missing or unusable are problems; a
//! cordoned Node, a component a host's roles do not give it, a certificate due for renewal, node
//! copies out of step with the state directory and a missing, unreadable or stale backup are
//! warnings. Limits: etcd's version is not read; namespace backups are not summarised.

use chrono::{DateTime, Utc};
use clusterkit_core::config::{Cluster, Host, Role};
use clusterkit_core::error_chain;
use clusterkit_core::fanout::Fanout;
use clusterkit_core::layout::{Component, StateLayout};
use clusterkit_core::release::KubeVersion;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::certs::{self, ExpiryRow};
use crate::readiness::{self, Check};
use crate::{kube_api, running};

/// Everything `status` shows (`-o json|yaml` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// cluster.yaml's `name`.
    pub cluster: String,
    /// cluster.yaml's `kubernetes.version`: what every component should run.
    pub version: KubeVersion,
    /// No problems (warnings do not count).
    pub healthy: bool,
    /// Why the cluster is not healthy, one line each.
    pub problems: Vec<String>,
    /// What the operator should know that does not make the cluster unhealthy.
    pub warnings: Vec<String>,
    /// Every host of cluster.yaml, in its order.
    pub hosts: Vec<HostStatus>,
    /// Why the Kubernetes API could not be read (Nodes and component checks are then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_error: Option<String>,
    /// The component checks of the readiness report (empty when the API could not be read).
    pub readiness: Vec<Check>,
    pub certificates: Certificates,
    /// The backup store's newest trusted etcd backup; `None`: no `backup.store` configured.
    pub backup: Option<Backup>,
}

/// One host.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub roles: Vec<Role>,
    /// Why the host could not be read over SSH (its components are then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why its certificates could not be read (they are then left out of the summary); names
    /// the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates_error: Option<String>,
    /// The components its roles give it, and any other that runs there.
    pub components: Vec<ComponentStatus>,
    pub node: NodeStatus,
}

/// One component on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    pub component: Component,
    /// What its running process reports; `None`: not running.
    pub version: Option<KubeVersion>,
    /// Whether the host's roles give it this component.
    pub expected: bool,
    /// It runs cluster.yaml's `kubernetes.version`.
    pub matches: bool,
}

/// A host's Node as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub state: NodeState,
    /// `spec.unschedulable`: cordoned, no new pods.
    pub cordoned: bool,
    /// The Ready condition's reason and message when not Ready.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Whether a Node is Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    Ready,
    NotReady,
    /// No Node of the host's name.
    NotRegistered,
    /// The API could not be read.
    Unknown,
}

/// The certificates' summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Certificates {
    /// The certificate (or kubeconfig) that expires first, on a node or in the state directory.
    pub nearest: Option<ExpiryRow>,
    /// Certificates that are expired, missing or unusable, as `host/name: status`.
    pub unusable: Vec<String>,
    /// Node copies that differ from the state directory's.
    pub stale: usize,
    /// Why the state directory's copies could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_error: Option<String>,
}

/// The backup store's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    /// `backup.store`.
    pub store: String,
    /// The newest etcd backup not known to be bad (checked when taken, no later verify or
    /// drill failed).
    pub newest: Option<BackupSeen>,
    /// Why the store could not be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One backup, as the summary shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSeen {
    pub id: String,
    pub finished_at: DateTime<Utc>,
    /// Seconds between its end and the reading.
    pub age_secs: i64,
    /// Its last restore drill passed.
    pub drill_passed: bool,
}

/// Reads everything at once and judges it (see the module's header).
pub async fn read(cluster: &Cluster) -> Status {
    let layout = StateLayout::from_cluster(cluster);
    let hosts: Vec<&Host> = cluster.hosts.iter().collect();
    let fanout = Fanout::new("status", cluster.ssh.concurrency).quiet();
    let on_hosts = running::read_hosts(cluster, &hosts, &fanout, |h| {
        certs::read_command(&certs::node_files(cluster, &layout, h)).line
    });
    let (on_hosts, (nodes, checks), backup) =
        tokio::join!(on_hosts, from_api(cluster), newest_backup(cluster));
    let now = certs::now();
    let mut rows = Vec::new();
    let mut certificates = Certificates::default();
    match certs::local_rows(cluster, &certs::pki_input(cluster), &layout, now) {
        Ok(local) => rows.extend(local),
        Err(e) => certificates.local_error = Some(error_chain(&e)),
    }
    let mut statuses = Vec::new();
    for (host, r) in hosts.iter().zip(on_hosts) {
        let mut certs_error = None;
        let (found, error) = match r.result {
            Ok((found, certs_out)) => {
                match certs::parse_read_output(&host.name, &certs_out) {
                    Ok(remote) => rows.extend(certs::node_rows(
                        &host.name,
                        &certs::node_files(cluster, &layout, host),
                        &remote,
                        now,
                    )),
                    Err(e) => certs_error = Some(error_chain(&e)),
                }
                (Some(found), None)
            }
            Err(e) => (None, Some(error_chain(&e))),
        };
        statuses.push(HostStatus {
            name: host.name.clone(),
            roles: host.roles.clone(),
            error,
            certificates_error: certs_error,
            components: found
                .map(|f| components(host, &f, cluster.kubernetes.version))
                .unwrap_or_default(),
            node: node_status(&host.name, nodes.as_ref()),
        });
    }
    summarise_certs(&mut certificates, rows);
    let mut status = Status {
        cluster: cluster.name.clone(),
        version: cluster.kubernetes.version,
        healthy: false,
        problems: Vec::new(),
        warnings: Vec::new(),
        hosts: statuses,
        api_error: nodes.err(),
        readiness: checks,
        certificates,
        backup,
    };
    let limits = Limits {
        renew_before_days: cluster.pki.renew_before_days,
        backup_max_age_secs: cluster.monitor.backup_max_age_secs,
    };
    (status.problems, status.warnings) = judge(&status, &limits);
    status.healthy = status.problems.is_empty();
    status
}

/// The Nodes and the component checks; `Err` says why the API could not be read.
async fn from_api(cluster: &Cluster) -> (Result<Vec<Node>, String>, Vec<Check>) {
    let client = match kube_api::admin_client(cluster, None).await {
        Ok(c) => c,
        Err(e) => return (Err(error_chain(&e)), Vec::new()),
    };
    match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => (
            Ok(list.items),
            readiness::component_checks(cluster, &client).await,
        ),
        Err(e) => (
            Err(format!("listing nodes: {}", error_chain(&e))),
            Vec::new(),
        ),
    }
}

/// The newest trusted etcd backup of `backup.store`, if one is configured.
async fn newest_backup(cluster: &Cluster) -> Option<Backup> {
    use clusterkit_backup::{catalog, manifest::Kind, settings, store};
    let shown = cluster.backup.store.as_ref()?.to_string();
    let newest = async {
        let (url, options) = settings::store(&Default::default(), Some(&cluster.backup))
            .map_err(|e| error_chain(&e))?;
        let store = store::open_store(&url, &options)
            .await
            .map_err(|e| error_chain(&e))?;
        let entries = catalog::list(store.as_ref())
            .await
            .map_err(|e| error_chain(&e))?;
        let now = Utc::now();
        // `list` is oldest first.
        Ok::<_, String>(
            entries
                .into_iter()
                .rfind(|e| e.manifest.kind == Kind::Etcd && e.trusted())
                .map(|e| BackupSeen {
                    age_secs: (now - e.manifest.finished_at).num_seconds(),
                    drill_passed: e.drill_passed(),
                    id: e.manifest.id,
                    finished_at: e.manifest.finished_at,
                }),
        )
    }
    .await;
    Some(match newest {
        Ok(newest) => Backup {
            store: shown,
            newest,
            error: None,
        },
        Err(e) => Backup {
            store: shown,
            newest: None,
            error: Some(e),
        },
    })
}

/// `host`'s components: each its roles give it, then any other that runs there.
fn components(
    host: &Host,
    running: &[crate::skew::Running],
    desired: KubeVersion,
) -> Vec<ComponentStatus> {
    let expected = running::expected(host);
    Component::ALL
        .into_iter()
        .filter_map(|c| {
            let version = running.iter().find(|r| r.component == c).map(|r| r.version);
            let expected = expected.contains(&c);
            (expected || version.is_some()).then_some(ComponentStatus {
                component: c,
                version,
                expected,
                matches: version == Some(desired),
            })
        })
        .collect()
}

/// The Node of `host` among `nodes` (`Err`: the API could not be read).
fn node_status(host: &str, nodes: Result<&Vec<Node>, &String>) -> NodeStatus {
    let Ok(nodes) = nodes else {
        return NodeStatus {
            state: NodeState::Unknown,
            cordoned: false,
            detail: String::new(),
        };
    };
    let Some(node) = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(host))
    else {
        return NodeStatus {
            state: NodeState::NotRegistered,
            cordoned: false,
            detail: String::new(),
        };
    };
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    match readiness::node_ready(node) {
        Ok(_) => NodeStatus {
            state: NodeState::Ready,
            cordoned,
            detail: String::new(),
        },
        Err(e) => NodeStatus {
            state: NodeState::NotReady,
            cordoned,
            detail: error_chain(&e),
        },
    }
}

/// The nearest expiry, the unusable certificates and the stale copies among `rows`.
fn summarise_certs(out: &mut Certificates, rows: Vec<ExpiryRow>) {
    use certs::Status as S;
    for r in &rows {
        match r.status {
            S::Ok => {}
            S::Stale => out.stale += 1,
            S::Missing | S::Invalid | S::Expired | S::KeyMissing | S::KeyMode => out
                .unusable
                .push(format!("{}/{}: {}", r.host, r.name, r.status.as_str())),
        }
    }
    out.nearest = rows
        .into_iter()
        .filter(|r| r.expires.is_some())
        .min_by_key(|r| (r.expires.clone(), r.host.clone(), r.name.clone()));
}

/// The thresholds of the warnings, from cluster.yaml.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `pki.renew_before_days`: a certificate this close to its end is due.
    pub renew_before_days: u64,
    /// `monitor.backup_max_age_secs`: an older newest backup is stale.
    pub backup_max_age_secs: u64,
}

/// The problems (not healthy) and the warnings in `status`, each one line.
pub fn judge(status: &Status, limits: &Limits) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let desired = status.version;
    for h in &status.hosts {
        if let Some(e) = &h.certificates_error {
            problems.push(e.clone());
        }
        if let Some(e) = &h.error {
            // SSH's errors name the host already.
            problems.push(if e.starts_with(&format!("{}: ", h.name)) {
                e.clone()
            } else {
                format!("{}: {e}", h.name)
            });
        } else {
            for c in &h.components {
                match c.version {
                    None => problems.push(format!("{}: {} is not running", h.name, c.component)),
                    Some(v) if v != desired => problems.push(format!(
                        "{}: {} runs {v}, cluster.yaml says {desired}",
                        h.name, c.component
                    )),
                    Some(_) => {}
                }
                if !c.expected {
                    warnings.push(format!(
                        "{}: {} runs there, which its roles in cluster.yaml do not give it",
                        h.name, c.component
                    ));
                }
            }
        }
        match h.node.state {
            NodeState::Ready | NodeState::Unknown => {}
            NodeState::NotReady => {
                problems.push(format!("{}: Node not Ready: {}", h.name, h.node.detail))
            }
            NodeState::NotRegistered => problems.push(format!("{}: no Node registered", h.name)),
        }
        if h.node.cordoned {
            warnings.push(format!(
                "{}: cordoned (no new pods; `kubectl uncordon {}` when done)",
                h.name, h.name
            ));
        }
    }
    if let Some(e) = &status.api_error {
        problems.push(format!("the Kubernetes API cannot be read: {e}"));
    }
    for c in status.readiness.iter().filter(|c| !c.ok) {
        problems.push(format!("{}: {}", c.name, c.detail));
    }
    let certs = &status.certificates;
    if !certs.unusable.is_empty() {
        // One line: a cluster never installed misses every certificate.
        const SHOWN: usize = 5;
        let mut line = format!(
            "{} certificates expired, missing or unusable: {}",
            certs.unusable.len(),
            certs
                .unusable
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        if certs.unusable.len() > SHOWN {
            line.push_str(&format!(
                " and {} more (`clusterkit certs check-expiration` lists them)",
                certs.unusable.len() - SHOWN
            ));
        }
        problems.push(line);
    }
    if let Some(e) = &certs.local_error {
        problems.push(format!("certificates: {e}"));
    }
    if let Some(n) = &certs.nearest {
        if n.days_left
            .is_some_and(|d| d < i64::try_from(limits.renew_before_days).unwrap_or(i64::MAX))
            && n.status != certs::Status::Expired
        {
            warnings.push(format!(
                "certificate {}/{} expires {}: renew it (`clusterkit certs renew`, or the next \
                 install)",
                n.host,
                n.name,
                n.expires.as_deref().unwrap_or("soon")
            ));
        }
    }
    if certs.stale > 0 {
        warnings.push(format!(
            "{} node certificate copies differ from the state directory: `clusterkit certs \
             distribute` uploads them",
            certs.stale
        ));
    }
    if let Some(b) = &status.backup {
        match (&b.error, &b.newest) {
            (Some(e), _) => warnings.push(format!("backup store {}: {e}", b.store)),
            (None, None) => warnings.push(format!("no trusted etcd backup in {}", b.store)),
            (None, Some(n))
                if n.age_secs > i64::try_from(limits.backup_max_age_secs).unwrap_or(i64::MAX) =>
            {
                warnings.push(format!(
                    "the newest trusted etcd backup {} is {} old (monitor.backup_max_age_secs: {})",
                    n.id,
                    age(n.age_secs),
                    age(i64::try_from(limits.backup_max_age_secs).unwrap_or(i64::MAX))
                ))
            }
            (None, Some(_)) => {}
        }
    }
    (problems, warnings)
}

/// `90 s`, `12 min`, `5 h`, `3 d`.
fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

impl Status {
    /// The table `status` prints: a line per host, a line per summary, then the verdict.
    pub fn table(&self) -> String {
        let mut out = format!(
            "cluster {}, kubernetes {} (cluster.yaml)\n",
            self.cluster, self.version
        );
        let mut headers = vec!["HOST".to_string(), "ROLES".into(), "NODE".into()];
        headers.extend(Component::ALL.iter().map(|c| {
            c.name()
                .strip_prefix("kube-")
                .unwrap_or(c.name())
                .to_uppercase()
        }));
        let rows: Vec<Vec<String>> = self.hosts.iter().map(|h| self.host_row(h)).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        out.push_str(&clusterkit_core::fanout::table(&headers, &rows));
        out.push_str(&format!("{:<14}{}\n", "readiness", self.readiness_line()));
        out.push_str(&format!(
            "{:<14}{}\n",
            "certificates",
            self.certificates_line()
        ));
        out.push_str(&format!("{:<14}{}\n", "backup", self.backup_line()));
        if self.healthy {
            out.push_str("healthy\n");
        } else {
            out.push_str(&format!("NOT healthy ({}):\n", self.problems.len()));
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        if !self.warnings.is_empty() {
            out.push_str("warnings:\n");
            for w in &self.warnings {
                out.push_str(&format!("  - {w}\n"));
            }
        }
        out
    }

    fn host_row(&self, h: &HostStatus) -> Vec<String> {
        let roles: Vec<&str> = h.roles.iter().map(|r| r.as_str()).collect();
        // kubectl's words: `Ready,SchedulingDisabled` for a cordoned Node.
        let mut node = match h.node.state {
            NodeState::Ready => "Ready",
            NodeState::NotReady => "NotReady",
            NodeState::NotRegistered => "not registered",
            NodeState::Unknown => "unknown",
        }
        .to_string();
        if h.node.cordoned {
            node.push_str(",SchedulingDisabled");
        }
        let mut row = vec![h.name.clone(), roles.join(","), node];
        for c in Component::ALL {
            let cell = match (&h.error, h.components.iter().find(|s| s.component == c)) {
                (Some(_), _) => "unreachable".to_string(),
                (None, None) => "-".to_string(),
                (None, Some(s)) => match s.version {
                    None => "not running".to_string(),
                    Some(v) if s.matches => v.to_string(),
                    Some(v) => format!("{v} (not {})", self.version),
                },
            };
            row.push(cell);
        }
        row
    }

    fn readiness_line(&self) -> String {
        if self.api_error.is_some() {
            return "unknown: the Kubernetes API cannot be read".into();
        }
        let failed: Vec<&str> = self
            .readiness
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        if failed.is_empty() {
            format!(
                "ok: {} component checks passed (API /readyz and /livez, leader leases, etcd, \
                 kubelets)",
                self.readiness.len()
            )
        } else {
            format!(
                "FAIL: {} of {} component checks: {}",
                failed.len(),
                self.readiness.len(),
                failed.join(", ")
            )
        }
    }

    fn certificates_line(&self) -> String {
        let c = &self.certificates;
        let mut line = match &c.nearest {
            None => "no certificate read".to_string(),
            Some(n) => format!(
                "nearest expiry {}/{} on {} ({})",
                n.host,
                n.name,
                n.expires.as_deref().unwrap_or("?"),
                match n.days_left.unwrap_or_default() {
                    d if d < 0 => format!("expired {} days ago", -d),
                    d => format!("{d} days"),
                }
            ),
        };
        if !c.unusable.is_empty() {
            line.push_str(&format!("; {} unusable", c.unusable.len()));
        }
        if c.stale > 0 {
            line.push_str(&format!("; {} stale node copies", c.stale));
        }
        line
    }

    fn backup_line(&self) -> String {
        match &self.backup {
            None => "no store configured (backup.store in cluster.yaml)".into(),
            Some(b) => match (&b.error, &b.newest) {
                (Some(e), _) => format!("{}: {e}", b.store),
                (None, None) => format!("no trusted etcd backup in {}", b.store),
                (None, Some(n)) => format!(
                    "{} finished {} ({} ago){} in {}",
                    n.id,
                    n.finished_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    age(n.age_secs),
                    if n.drill_passed {
                        ", restore drill passed"
                    } else {
                        ""
                    },
                    b.store
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: KubeVersion = KubeVersion::new(1, 20, 2);
    const LIMITS: Limits = Limits {
        renew_before_days: 30,
        backup_max_age_secs: 93_600,
    };

    fn host(name: &str, roles: &[Role], versions: &[(Component, KubeVersion)]) -> HostStatus {
        let h = Host {
            roles: roles.to_vec(),
            ..crate::test_cluster(CLUSTER).hosts[0].clone()
        };
        let running: Vec<crate::skew::Running> = versions
            .iter()
            .map(|&(component, version)| crate::skew::Running {
                host: name.into(),
                component,
                version,
            })
            .collect();
        HostStatus {
            name: name.into(),
            roles: roles.to_vec(),
            error: None,
            certificates_error: None,
            components: components(&h, &running, V),
            node: NodeStatus {
                state: NodeState::Ready,
                cordoned: false,
                detail: String::new(),
            },
        }
    }

    const CLUSTER: &str = "name: t\nhosts:\n  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { key_file: ./k } }\nkubernetes: { version: v1.20.2 }\nssh: { known_hosts: ./known_hosts }\n";

    fn row(host: &str, name: &str, days: i64) -> ExpiryRow {
        ExpiryRow {
            host: host.into(),
            name: name.into(),
            path: format!("/etc/kubernetes/pki/{name}.crt"),
            status: certs::Status::Ok,
            subject: None,
            ca: None,
            serial: None,
            expires: Some(format!("2027-01-{:02}T00:00:00Z", days.clamp(1, 28))),
            days_left: Some(days),
            residual: None,
            validity_days: Some(365),
            in_sync: Some(true),
            note: None,
            rotation: None,
        }
    }

    /// A healthy cluster: cp1 runs all five at v1.20.2, w1 kubelet and kube-proxy.
    fn healthy() -> Status {
        let all: Vec<(Component, KubeVersion)> = Component::ALL.iter().map(|&c| (c, V)).collect();
        let mut certificates = Certificates::default();
        summarise_certs(
            &mut certificates,
            vec![row("cp1", "apiserver", 20), row("local", "ca", 3000)],
        );
        certificates.nearest.as_mut().unwrap().days_left = Some(364);
        Status {
            cluster: "t".into(),
            version: V,
            healthy: true,
            problems: Vec::new(),
            warnings: Vec::new(),
            hosts: vec![
                host("cp1", &[Role::ControlPlane, Role::Etcd], &all),
                host(
                    "w1",
                    &[Role::Worker],
                    &[(Component::Kubelet, V), (Component::KubeProxy, V)],
                ),
            ],
            api_error: None,
            readiness: vec![Check {
                name: "etcd".into(),
                ok: true,
                detail: "3 members healthy".into(),
            }],
            certificates,
            backup: None,
        }
    }

    #[test]
    fn a_healthy_cluster_has_no_problems_and_no_warnings() {
        let s = healthy();
        assert_eq!(judge(&s, &LIMITS), (vec![], vec![]));
        let cp1: Vec<Component> = s.hosts[0].components.iter().map(|c| c.component).collect();
        assert_eq!(cp1, Component::ALL);
        assert!(s.hosts[0]
            .components
            .iter()
            .all(|c| c.matches && c.expected));
    }

    #[test]
    fn another_release_or_a_missing_component_is_a_problem_naming_host_and_component() {
        let mut s = healthy();
        let older = KubeVersion::new(1, 20, 1);
        s.hosts[1] = host("w1", &[Role::Worker], &[(Component::Kubelet, older)]);
        let (problems, warnings) = judge(&s, &LIMITS);
        assert_eq!(
            problems,
            [
                "w1: kubelet runs v1.20.1, cluster.yaml says v1.20.2",
                "w1: kube-proxy is not running"
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let table = Status {
            healthy: false,
            problems,
            ..s
        }
        .table();
        assert!(table.contains("v1.20.1 (not v1.20.2)"), "{table}");
        assert!(table.contains("not running"), "{table}");
        assert!(table.contains("NOT healthy (2):"), "{table}");
    }

    #[test]
    fn a_component_the_roles_do_not_give_is_a_warning() {
        let mut s = healthy();
        s.hosts[1] = host(
            "w1",
            &[Role::Worker],
            &[
                (Component::KubeApiserver, V),
                (Component::Kubelet, V),
                (Component::KubeProxy, V),
            ],
        );
        let (problems, warnings) = judge(&s, &LIMITS);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            warnings,
            ["w1: kube-apiserver runs there, which its roles in cluster.yaml do not give it"]
        );
    }

    #[test]
    fn nodes_not_ready_or_missing_are_problems_a_cordon_is_a_warning() {
        let mut s = healthy();
        s.hosts[0].node = NodeStatus {
            state: NodeState::NotReady,
            cordoned: true,
            detail: "not Ready: KubeletNotReady PLEG".into(),
        };
        s.hosts[1].node.state = NodeState::NotRegistered;
        let (problems, warnings) = judge(&s, &LIMITS);
        assert_eq!(
            problems,
            [
                "cp1: Node not Ready: not Ready: KubeletNotReady PLEG",
                "w1: no Node registered"
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("cp1: cordoned"), "{warnings:?}");
        let table = Status {
            healthy: false,
            ..s
        }
        .table();
        assert!(table.contains("NotReady,SchedulingDisabled"), "{table}");
    }

    #[test]
    fn an_unreachable_api_or_host_is_a_problem_and_says_unknown() {
        let mut s = healthy();
        s.api_error = Some("connection refused".into());
        s.readiness.clear();
        for h in &mut s.hosts {
            h.node.state = NodeState::Unknown;
        }
        s.hosts[1].error = Some("w1: cannot connect to 10.0.0.2:22: timed out".into());
        s.hosts[1].components.clear();
        s.hosts[0].certificates_error =
            Some("cp1: unexpected output reading certificates: bad header".into());
        let (problems, _) = judge(&s, &LIMITS);
        assert_eq!(
            problems,
            [
                "cp1: unexpected output reading certificates: bad header",
                "w1: cannot connect to 10.0.0.2:22: timed out",
                "the Kubernetes API cannot be read: connection refused"
            ]
        );
        let table = s.table();
        assert!(
            table.contains("unknown: the Kubernetes API cannot be read"),
            "{table}"
        );
        let w1 = table.lines().find(|l| l.starts_with("w1")).unwrap();
        assert_eq!(w1.matches("unreachable").count(), 5, "{w1}");
        assert!(w1.contains("unknown"), "{w1}");
    }

    #[test]
    fn failed_checks_and_unusable_certificates_are_problems() {
        let mut s = healthy();
        s.readiness.push(Check {
            name: "kube-scheduler".into(),
            ok: false,
            detail: "leader lease never renewed".into(),
        });
        let mut expired = row("w1", "kubelet.conf", -3);
        expired.status = certs::Status::Expired;
        let mut stale = row("w1", "ca", 3000);
        stale.status = certs::Status::Stale;
        summarise_certs(&mut s.certificates, vec![expired, stale]);
        let (problems, warnings) = judge(&s, &LIMITS);
        assert_eq!(
            problems,
            [
                "kube-scheduler: leader lease never renewed",
                "1 certificates expired, missing or unusable: w1/kubelet.conf: expired"
            ]
        );
        s.certificates.unusable = (0..7).map(|i| format!("w{i}/ca.crt: missing")).collect();
        let (problems, _) = judge(&s, &LIMITS);
        assert_eq!(
            problems[1],
            "7 certificates expired, missing or unusable: w0/ca.crt: missing, w1/ca.crt: missing, \
             w2/ca.crt: missing, w3/ca.crt: missing, w4/ca.crt: missing and 2 more (`clusterkit \
             certs check-expiration` lists them)"
        );
        assert_eq!(warnings.len(), 1, "expired is not also 'due': {warnings:?}");
        assert!(warnings[0].contains("certs distribute"), "{warnings:?}");
        let line = s.certificates_line();
        assert!(
            line.starts_with(
                "nearest expiry w1/kubelet.conf on 2027-01-01T00:00:00Z (expired 3 days ago)"
            ) && line.contains("7 unusable"),
            "{line}"
        );
    }

    #[test]
    fn the_nearest_certificate_is_the_first_to_expire_and_due_ones_warn() {
        let mut c = Certificates::default();
        summarise_certs(
            &mut c,
            vec![
                row("local", "ca", 28),
                row("cp1", "apiserver", 12),
                row("w1", "kubelet.conf", 20),
            ],
        );
        let n = c.nearest.as_ref().unwrap();
        assert_eq!((n.host.as_str(), n.name.as_str()), ("cp1", "apiserver"));
        let s = Status {
            certificates: c,
            ..healthy()
        };
        let (problems, warnings) = judge(&s, &LIMITS);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("certificate cp1/apiserver expires 2027-01-12"),
            "{warnings:?}"
        );
    }

    #[test]
    fn backups_missing_stale_or_unreadable_warn_and_never_fail() {
        let seen = |age_secs| BackupSeen {
            id: "etcd-20270101T000000Z-ab12".into(),
            finished_at: DateTime::from_timestamp(1_798_761_600, 0).unwrap(),
            age_secs,
            drill_passed: true,
        };
        let with = |newest, error| Status {
            backup: Some(Backup {
                store: "s3://b/k".into(),
                newest,
                error,
            }),
            ..healthy()
        };
        let fresh = with(Some(seen(3 * 3600)), None);
        assert_eq!(judge(&fresh, &LIMITS), (vec![], vec![]));
        let line = fresh.backup_line();
        assert!(
            line.starts_with("etcd-20270101T000000Z-ab12 finished 2027-01-01T00:00:00Z (3 h ago)")
                && line.contains("restore drill passed"),
            "{line}"
        );
        for (s, says) in [
            (with(None, None), "no trusted etcd backup in s3://b/k"),
            (
                with(Some(seen(100_000)), None),
                "the newest trusted etcd backup etcd-20270101T000000Z-ab12 is 27 h old",
            ),
            (
                with(None, Some("access denied".into())),
                "backup store s3://b/k: access denied",
            ),
        ] {
            let (problems, warnings) = judge(&s, &LIMITS);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].starts_with(says), "{warnings:?}");
        }
        assert!(healthy().backup_line().starts_with("no store configured"));
    }

    #[test]
    fn the_table_has_a_column_per_component_and_dashes_where_none_belongs() {
        let table = healthy().table();
        let mut lines = table.lines();
        assert_eq!(
            lines.next(),
            Some("cluster t, kubernetes v1.20.2 (cluster.yaml)")
        );
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "HOST",
                "ROLES",
                "NODE",
                "APISERVER",
                "CONTROLLER-MANAGER",
                "SCHEDULER",
                "KUBELET",
                "PROXY"
            ]
        );
        let w1: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("w1"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            w1,
            ["w1", "worker", "Ready", "-", "-", "-", "v1.20.2", "v1.20.2"]
        );
        assert!(table.contains("readiness     ok: 1 component checks passed"));
        assert!(table.ends_with("\nhealthy\n"), "{table}");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(59), "59 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(5 * 3600), "5 h");
        assert_eq!(age(3 * 86_400), "3 d");
    }
}
