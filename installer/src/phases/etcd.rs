//! Phase `etcd`: an etcd cluster on the `etcd` hosts, secured with TLS on both sides.
//!
//! Each member runs Debian's `etcd-server` package binary (from the offline bundle or the
//! package repository) under clusterkit's own `etcd.service` (template `etcd/etcd.service`,
//! overriding the package's unit) with client and peer TLS and client-certificate
//! authentication on both (`--client-cert-auth`, `--peer-client-cert-auth`, each with its
//! trusted CA), its data in `/var/lib/etcd`. Members restart together (the restart does not
//! block), then the phase waits, from the operator's machine with the healthcheck client
//! certificate, until every member answers, the member list holds every etcd host started,
//! and there is a leader.
//!
//! Growing the cluster: when some etcd hosts already form a cluster, every etcd host missing
//! from its member list is added first (`member add`) and starts with
//! `--initial-cluster-state=existing`; `--initial-cluster` always lists every etcd host of
//! cluster.yaml. Add one member per run: etcd refuses an add that would leave the cluster
//! without quorum until the previous new member has started.
//!
//! Static-pod mode (`kubernetes.control_plane_mode: static-pod`): a member on a control-plane
//! host runs as kubeadm's stacked etcd instead, a static pod (template
//! `kubernetes/manifests/etcd.yaml`: the same flags, the image the offline bundle built from
//! Debian's etcd, `/var/lib/etcd` and the etcd pki directory mounted) that the kubelet, started
//! here on those hosts, runs; a changed manifest is the kubelet's cue to recreate the pod. An
//! etcd host without the control plane keeps the unit (kubeadm's external etcd).
//!
//! Limits: members are never removed here (a host taken out of cluster.yaml stays a member
//! until `etcdctl member remove`); the operator's machine must reach the members' client port
//! (2379) for the health check; the unit runs etcd as root, like kubeadm's static pod does.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, ControlPlaneMode, Host, Role};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde_json::{json, Map, Value};

use super::common::with_vars;
use super::{InstallError, Phase, PhaseContext};
use clusterkit_core::layout::{NodeLayout, StateLayout};

/// The `etcd` phase.
pub struct EtcdPhase;

/// How long the phase waits for a healthy cluster after starting the members.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether `host`'s etcd member runs as a static pod (`/etc/kubernetes/manifests/etcd.yaml`,
/// kubeadm's stacked etcd): in static-pod mode on a host that is also a control-plane host,
/// whose kubelet runs before any API server. An etcd host without the control plane keeps
/// the systemd unit (kubeadm's external etcd), as does every member in systemd mode.
pub fn static_pod(cluster: &Cluster, host: &Host) -> bool {
    cluster.kubernetes.control_plane_mode == ControlPlaneMode::StaticPod
        && host.has_role(Role::Etcd)
        && host.has_role(Role::ControlPlane)
}

/// The etcd image of the static pod: kubeadm's tag for the release, in the cluster's
/// `image_repository`.
pub fn image(cluster: &Cluster) -> String {
    crate::images::etcd_image(
        &cluster.kubernetes.image_repository,
        cluster.kubernetes.version,
    )
}

/// A member's peer URL.
pub fn peer_url(h: &Host) -> String {
    NodeLayout::DEFAULT.etcd_peer_url(h.address)
}

/// A member's client URL.
pub fn client_url(h: &Host) -> String {
    NodeLayout::DEFAULT.etcd_client_url(h.address)
}

/// How a member joins: a new cluster of every etcd host, or an existing one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    /// `new` or `existing`.
    pub state: &'static str,
    /// `name=peer-url` of the members the new one starts with.
    pub initial_cluster: Vec<String>,
}

/// The command-line flags of one member.
pub fn member_flags(cluster: &Cluster, host: &Host, boot: &Bootstrap) -> Vec<String> {
    let layout = NodeLayout::from_cluster(cluster);
    let client = client_url(host);
    let local_client = layout.etcd_local_client_url();
    let pki = layout.etcd_pki_dir;
    vec![
        format!("--name={}", host.name),
        format!("--data-dir={}", layout.etcd_data_dir),
        format!("--listen-client-urls={local_client},{client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={}", peer_url(host)),
        format!("--initial-advertise-peer-urls={}", peer_url(host)),
        format!("--initial-cluster={}", boot.initial_cluster.join(",")),
        format!("--initial-cluster-state={}", boot.state),
        format!("--initial-cluster-token={}-etcd", cluster.name),
        format!("--cert-file={pki}/server.crt"),
        format!("--key-file={pki}/server.key"),
        "--client-cert-auth=true".into(),
        format!("--trusted-ca-file={pki}/ca.crt"),
        format!("--peer-cert-file={pki}/peer.crt"),
        format!("--peer-key-file={pki}/peer.key"),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={pki}/ca.crt"),
        format!("--listen-metrics-urls={}", layout.etcd_metrics_url()),
        "--snapshot-count=10000".into(),
    ]
}

/// Every etcd host starting a new cluster together.
pub fn new_cluster(cluster: &Cluster) -> Bootstrap {
    Bootstrap {
        state: "new",
        initial_cluster: cluster
            .hosts_with_role(Role::Etcd)
            .iter()
            .map(|h| format!("{}={}", h.name, peer_url(h)))
            .collect(),
    }
}

/// Why an etcd endpoint could not be asked, or the cluster is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{endpoint}: {source}")]
    Client {
        endpoint: String,
        #[source]
        source: etcd_client::Error,
    },

    #[error("{endpoint}: {what} timed out")]
    Timeout {
        endpoint: String,
        what: &'static str,
    },

    /// Members that answer but do not (yet) form a healthy cluster, one problem each.
    #[error("{}", .0.join("; "))]
    Unhealthy(Vec<String>),
}

/// TLS material of the healthcheck client (the operator's machine acts as it).
pub struct ClientTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl ClientTls {
    /// Reads the etcd CA and the healthcheck client pair from the state directory.
    pub fn load(cluster: &Cluster) -> Result<Self, InstallError> {
        let pki = StateLayout::from_cluster(cluster).pki_dir();
        let read = |rel: &str| {
            let p = pki.join(rel);
            std::fs::read(&p).map_err(|e| {
                InstallError::host(
                    "local PKI",
                    format!("cannot read {} (run the pki phase first)", p.display()),
                    e,
                )
            })
        };
        Ok(Self {
            ca: read("etcd/ca.crt")?,
            cert: read("etcd/healthcheck-client.crt")?,
            key: read("etcd/healthcheck-client.key")?,
        })
    }

    /// A client of one endpoint.
    pub async fn connect(&self, endpoint: &str, timeout: Duration) -> Result<Client, EtcdError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&self.ca))
                    .identity(Identity::from_pem(&self.cert, &self.key)),
            );
        Client::connect([endpoint], Some(opts))
            .await
            .map_err(|source| EtcdError::Client {
                endpoint: endpoint.to_string(),
                source,
            })
    }
}

/// What one member reports.
#[derive(Clone, Debug)]
pub struct MemberView {
    /// Member name → peer URLs, from the member list; unstarted members have no name.
    pub members: Vec<(String, Vec<String>)>,
    /// The leader's member id (0: none).
    pub leader: u64,
    /// The leader's member name, when the member list names it.
    pub leader_name: Option<String>,
}

/// Asks one endpoint for the member list and its leader.
pub async fn view(
    tls: &ClientTls,
    endpoint: &str,
    timeout: Duration,
) -> Result<MemberView, EtcdError> {
    let mut c = tls.connect(endpoint, timeout).await?;
    let timed_out = |what| EtcdError::Timeout {
        endpoint: endpoint.to_string(),
        what,
    };
    let failed = |source| EtcdError::Client {
        endpoint: endpoint.to_string(),
        source,
    };
    let status = tokio::time::timeout(timeout, c.status())
        .await
        .map_err(|_| timed_out("status"))?
        .map_err(failed)?;
    let list = tokio::time::timeout(timeout, c.member_list())
        .await
        .map_err(|_| timed_out("member list"))?
        .map_err(failed)?;
    let leader = status.leader();
    Ok(MemberView {
        members: list
            .members()
            .iter()
            .map(|m| (m.name().to_string(), m.peer_urls().to_vec()))
            .collect(),
        leader,
        leader_name: list
            .members()
            .iter()
            .find(|m| leader != 0 && m.id() == leader)
            .map(|m| m.name().to_string())
            .filter(|n| !n.is_empty()),
    })
}

/// The name of the member that leads, as the first etcd host that answers knows it.
pub async fn leader(cluster: &Cluster, tls: &ClientTls) -> Option<String> {
    for h in cluster.hosts_with_role(Role::Etcd) {
        if let Ok(v) = view(tls, &client_url(h), Duration::from_secs(5)).await {
            if v.leader_name.is_some() {
                return v.leader_name;
            }
        }
    }
    None
}

/// Checks the whole cluster once: every member answers, lists every etcd host started, and
/// knows a leader.
pub async fn health(cluster: &Cluster, tls: &ClientTls) -> Result<(), EtcdError> {
    let hosts = cluster.hosts_with_role(Role::Etcd);
    let mut problems = Vec::new();
    for h in &hosts {
        match view(tls, &client_url(h), Duration::from_secs(5)).await {
            Ok(v) => {
                if v.leader == 0 {
                    problems.push(format!("{}: no leader", h.name));
                }
                let started: Vec<&str> = v
                    .members
                    .iter()
                    .filter(|(n, _)| !n.is_empty())
                    .map(|(n, _)| n.as_str())
                    .collect();
                for other in &hosts {
                    if !started.contains(&other.name.as_str()) {
                        problems.push(format!("{}: member {} not started", h.name, other.name));
                    }
                }
            }
            Err(e) => problems.push(format!("{}: {e}", h.name)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EtcdError::Unhealthy(problems))
    }
}

/// How each etcd host starts. Every member's `--initial-cluster` lists every etcd host of
/// cluster.yaml (stable across runs, so a rerun leaves the units alone). On a fresh cluster all
/// start `new`; when members already run, hosts missing from the member list are added
/// (`member add`, unless `check`) and start `existing`, and running members keep the state
/// their unit or static pod manifest already has (etcd ignores both flags once its data
/// directory exists).
async fn plan(
    cluster: &Cluster,
    targets: &[clusterkit_core::playbook::HostTarget],
    check: bool,
) -> Result<BTreeMap<String, Bootstrap>, InstallError> {
    let hosts = cluster.hosts_with_role(Role::Etcd);
    let fresh = new_cluster(cluster);
    let mut out: BTreeMap<String, Bootstrap> = hosts
        .iter()
        .map(|h| (h.name.clone(), fresh.clone()))
        .collect();
    let Ok(tls) = ClientTls::load(cluster) else {
        return Ok(out);
    };
    // The first member that answers tells whether a cluster exists already.
    let mut existing = None;
    for h in &hosts {
        if let Ok(v) = view(&tls, &client_url(h), Duration::from_secs(3)).await {
            existing = Some((h, v));
            break;
        }
    }
    let Some((via, view)) = existing else {
        return Ok(out);
    };
    let joining = |state| Bootstrap {
        state,
        initial_cluster: fresh.initial_cluster.clone(),
    };
    for h in &hosts {
        let url = peer_url(h);
        let member = view
            .members
            .iter()
            .find(|(n, urls)| n == &h.name || urls.contains(&url));
        match member {
            Some((name, _)) if !name.is_empty() => {
                // Running: keep the state its unit (or static pod manifest) has, so that
                // file does not change and the member is not restarted.
                let layout = NodeLayout::DEFAULT;
                let current = match targets.iter().find(|t| t.name == h.name) {
                    Some(t) => t
                        .exec
                        .sh(&format!(
                            "grep -ho 'initial-cluster-state=[a-z]*' {} {} 2>/dev/null || true",
                            layout.service_file(layout.units.etcd),
                            layout.manifest(layout.units.etcd)
                        ))
                        .await
                        .unwrap_or_default(),
                    None => String::new(),
                };
                let state = if current.contains("=existing") {
                    "existing"
                } else {
                    "new"
                };
                out.insert(h.name.clone(), joining(state));
            }
            // Added earlier, never started: it joins the existing cluster.
            Some(_) => {
                out.insert(h.name.clone(), joining("existing"));
            }
            None => {
                if !check {
                    let c = tls
                        .connect(&client_url(via), Duration::from_secs(5))
                        .await
                        .map_err(|e| InstallError::host(&via.name, "etcd client", e))?;
                    reconfigure(|| {
                        let (mut c, url) = (c.clone(), url.clone());
                        async move { c.member_add([url], None).await }
                    })
                    .await
                    .map_err(|e| {
                        InstallError::host(
                            &h.name,
                            format!("etcd member add {url} through {}", via.name),
                            e,
                        )
                    })?;
                    tracing::info!(member = %h.name, via = %via.name, "etcd member added");
                }
                out.insert(h.name.clone(), joining("existing"));
            }
        }
    }
    Ok(out)
}

/// Runs a membership change, retried while etcd answers "unhealthy cluster": with strict
/// reconfiguration checks (etcd's default) it refuses to add or remove a voting member until
/// the others have been connected to the leader for its health interval (5 s), which is not yet
/// the case right after members start. Other errors are returned at once.
pub(crate) async fn reconfigure<T, F, Fut>(mut change: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match change().await {
            Err(e)
                if e.to_string().contains("unhealthy cluster")
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(error = %e, "etcd not ready for a membership change; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            result => return result,
        }
    }
}

#[async_trait]
impl Phase for EtcdPhase {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn describe(&self) -> &'static str {
        "etcd members with client and peer TLS, started together, waited for until healthy"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        let pb = clusterkit_core::playbook::load(cx.library, "etcd")?;
        let plan = plan(cx.cluster, cx.targets, cx.check).await?;
        let layout = NodeLayout::from_cluster(cx.cluster);
        let targets = with_vars(cx.targets, |t| {
            let h = cx.cluster.host(&t.name)?;
            let mut m = Map::new();
            if let Some(boot) = plan.get(&h.name) {
                m.insert(
                    "etcd".into(),
                    json!({
                        "binary": layout.etcd_binary,
                        "data_dir": layout.etcd_data_dir,
                        "pki_dir": layout.etcd_pki_dir,
                        "flags": member_flags(cx.cluster, h, boot),
                        "static_pod": static_pod(cx.cluster, h),
                        "image": image(cx.cluster),
                        "metrics_port": layout.ports.etcd_metrics,
                    }),
                );
            }
            Some(m)
        });
        cx.engine.run(&pb, &targets).await;
        // Static-pod members run under the kubelet: start it on their hosts now (it runs the
        // manifest without any API server; it registers its node once one answers).
        let static_targets: Vec<_> = cx
            .targets
            .iter()
            .filter(|t| {
                cx.cluster
                    .host(&t.name)
                    .is_some_and(|h| static_pod(cx.cluster, h))
            })
            .cloned()
            .collect();
        if !static_targets.is_empty() {
            super::kubelet::run_kubelet(cx, &static_targets, None).await?;
        }
        if cx.check {
            return Ok(());
        }
        let members: Vec<&Host> = cx
            .cluster
            .hosts_with_role(Role::Etcd)
            .into_iter()
            .filter(|h| !cx.engine.host_failed(&h.name))
            .collect();
        if members.len() != cx.cluster.hosts_with_role(Role::Etcd).len() {
            // A member's playbook failed: the report says why; waiting cannot help.
            return Ok(());
        }
        let tls = ClientTls::load(cx.cluster)?;
        crate::poll::wait_until(HEALTH_TIMEOUT, || health(cx.cluster, &tls))
            .await
            .map_err(|e| {
                InstallError::host(
                    "etcd",
                    format!(
                        "the cluster is not healthy after {}s",
                        HEALTH_TIMEOUT.as_secs()
                    ),
                    e,
                )
            })?;
        tracing::info!(members = members.len(), "etcd healthy");
        Ok(())
    }
}

/// Variables for tests and tools: the member flags of every etcd host of a fresh cluster.
pub fn fresh_flags(cluster: &Cluster) -> BTreeMap<String, Value> {
    let boot = new_cluster(cluster);
    cluster
        .hosts_with_role(Role::Etcd)
        .iter()
        .map(|h| (h.name.clone(), json!(member_flags(cluster, h, &boot))))
        .collect()
}
