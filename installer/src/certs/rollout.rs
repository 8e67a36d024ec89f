//! Getting renewed files onto the nodes and restarting what uses them: [`sync_node`] uploads
//! what differs, [`units_for`] / [`restart_unit`] restart, [`distribute`] rolls etcd members
//! one at a time with health checks, then kube-apiserver (waited for until `/readyz`) and its
//! clients. Limits: etcd health is supplied by the caller; static pods are restarted by
//! stopping their containers with crictl.

use super::*;
use crate::phases::Cause;
use clusterkit_core::layout::kubeconfig_file;
use clusterkit_core::playbook::modules::files;

/// The files a node gets from the state directory: [`pki::host_files`], plus kube-proxy's
/// kubeconfig once the addons phase has issued it, plus the monitoring files
/// ([`pki::monitoring_files`]) and Prometheus's copies of the cluster PKI
/// ([`pki::prometheus_copies`]).
pub fn node_mappings(layout: &StateLayout, host: &Host) -> Vec<FileMapping> {
    let mut files = pki::host_files(
        layout,
        &host.name,
        host.has_role(Role::ControlPlane),
        host.has_role(Role::Etcd),
    );
    let proxy = layout.kubeconfig_dir().join(kubeconfig_file::KUBE_PROXY);
    if proxy.is_file() {
        files.push(FileMapping {
            local: proxy,
            remote: NodeLayout::DEFAULT
                .kubeconfig(kubeconfig_file::KUBE_PROXY)
                .into(),
            mode: 0o600,
            owner: None,
        });
    }
    files.extend(pki::monitoring_files(layout, &host.name));
    files.extend(pki::prometheus_copies(layout, &host.name));
    files
}

/// Brings a node's copies of `files` in line with the state directory: one command reads
/// every checksum and mode (the playbook modules' `stat_files`), then only the files that
/// differ are uploaded (atomically, with
/// their mode: 0600 for keys and kubeconfigs). Returns the remote paths uploaded.
pub async fn sync_node(
    exec: &dyn Executor,
    files: &[FileMapping],
) -> Result<Vec<String>, CertsError> {
    if files.is_empty() {
        return Ok(vec![]);
    }
    let remote: Vec<String> = files
        .iter()
        .map(|f| f.remote.to_string_lossy().into_owned())
        .collect();
    let paths: Vec<&str> = remote.iter().map(String::as_str).collect();
    let have = files::stat_files(exec, &paths)
        .await
        .map_err(|source| CertsError::NodeState {
            host: exec.host().to_string(),
            source: Box::new(source),
        })?;
    let mut changed = Vec::new();
    for ((f, remote), have) in files.iter().zip(remote).zip(have) {
        let data = std::fs::read(&f.local).map_err(|source| PkiError::Io {
            op: "read",
            path: f.local.clone(),
            source,
        })?;
        if have.is_some_and(|h| h.sha256 == files::sha256_hex(&data) && h.mode == f.mode) {
            continue;
        }
        exec.upload(
            &data,
            &remote,
            &UploadOptions {
                mode: f.mode,
                owner: f.owner.map(String::from),
                create_parents: true,
            },
        )
        .await?;
        changed.push(remote);
    }
    Ok(changed)
}

/// The units that must restart after `changed` (remote paths) were replaced on a node.
/// Clients the operator or the monitor use (healthcheck, metrics) restart nothing.
pub fn units_for(changed: &[String]) -> BTreeSet<&'static str> {
    let node = NodeLayout::DEFAULT;
    let u = node.units;
    let mut units = BTreeSet::new();
    for path in changed {
        let p = path.as_str();
        let file = p.rsplit('/').next().unwrap_or(p);
        if let Some(rel) = p
            .strip_prefix(monitoring::DIR)
            .and_then(|r| r.strip_prefix('/'))
        {
            units.extend(monitoring::units_reading(rel));
            continue;
        }
        if p.strip_prefix(node.etcd_pki_dir)
            .is_some_and(|r| r.starts_with('/'))
        {
            if ["server.crt", "server.key", "peer.crt", "peer.key", "ca.crt"].contains(&file) {
                units.insert(u.etcd);
            }
            if file == "ca.crt" {
                units.insert(u.kube_apiserver);
            }
            continue;
        }
        match file {
            // Also the controller manager's and scheduler's serving certificate.
            "apiserver.crt" | "apiserver.key" => {
                units.insert(u.kube_apiserver);
                units.insert(u.kube_controller_manager);
                units.insert(u.kube_scheduler);
            }
            "apiserver-kubelet-client.crt"
            | "apiserver-kubelet-client.key"
            | "front-proxy-client.crt"
            | "front-proxy-client.key"
            | "front-proxy-ca.crt"
            | "apiserver-etcd-client.crt"
            | "apiserver-etcd-client.key"
            | "sa.pub" => {
                units.insert(u.kube_apiserver);
            }
            // haproxy too: the local load balancer's health checks verify the API servers
            // with this file, which it reads only when it starts or reloads.
            "ca.crt" => {
                units.insert(u.kube_apiserver);
                units.insert(u.kube_controller_manager);
                units.insert(u.kubelet);
                units.insert(u.haproxy);
            }
            clusterkit_core::layout::CLUSTER_SIGNING_CERT | "ca.key" | "sa.key" => {
                units.insert(u.kube_controller_manager);
            }
            kubeconfig_file::CONTROLLER_MANAGER => {
                units.insert(u.kube_controller_manager);
            }
            kubeconfig_file::SCHEDULER => {
                units.insert(u.kube_scheduler);
            }
            kubeconfig_file::KUBELET => {
                units.insert(u.kubelet);
            }
            kubeconfig_file::KUBE_PROXY => {
                units.insert(u.kube_proxy);
            }
            _ => {}
        }
    }
    units
}

/// What [`restart_unit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restarted {
    /// The systemd unit was running and was restarted.
    Unit,
    /// The static pod was recreated: its manifest moved out of the manifest directory until
    /// the kubelet had stopped its container, then moved back.
    StaticPod,
    /// Installed but not running: left stopped (it reads the new files when started).
    Inactive,
    /// Not on this node.
    Absent,
}

/// Restarts `unit` on a node if it runs there: a running systemd unit is restarted and must
/// be active a few seconds later (haproxy is reloaded instead: a new worker reads the files
/// again and takes over the listening socket while the old one finishes its connections, so
/// the kubelets' and kube-proxy's watches are not cut); a static pod (no unit, a manifest) is recreated the way
/// kubeadm documents — its manifest moved out of the manifest directory until the kubelet has
/// torn the pod down (containerd's CRI namespace shows no running task of the pod's
/// containers or sandbox, by the kubelet's pod-name label; `ctr`, no crictl needed: Debian
/// has none), then moved back, and waited for until the kubelet runs the container again. The
/// caller waits for health.
pub async fn restart_unit(
    exec: &dyn Executor,
    unit: &str,
    timeout: Duration,
) -> Result<Restarted, CertsError> {
    let u = shell_quote(unit);
    let layout = NodeLayout::DEFAULT;
    let verb = if unit == layout.units.haproxy {
        "reload"
    } else {
        "restart"
    };
    let manifest = shell_quote(&layout.manifest(unit));
    // Each of the two waits: half the command's own timeout, leaving time to put the
    // manifest back.
    let secs = (timeout.as_secs().saturating_sub(15) / 2).max(10);
    let recreate = layout.recreate_static_pod(unit, "restarting", secs);
    let script = format!(
        "if systemctl cat {u}.service >/dev/null 2>&1; then \
           if systemctl is-active -q {u}; then systemctl {verb} {u} || exit 1; sleep 2; \
             if systemctl is-active -q {u}; then echo unit; else systemctl status --no-pager -n 5 {u} >&2; exit 1; fi; \
           else echo inactive; fi; \
         elif [ -f {manifest} ]; then \
           {recreate}; \
           echo static-pod; \
         else echo absent; fi"
    );
    let out = exec.run(&Command::new(script).timeout(timeout)).await?;
    if !out.success() {
        return Err(CertsError::Restart {
            host: exec.host().to_string(),
            unit: unit.to_string(),
            message: clusterkit_core::exec::tail(&out.stderr_str()).to_string(),
        });
    }
    Ok(match out.stdout_str().trim() {
        "unit" => Restarted::Unit,
        "static-pod" => Restarted::StaticPod,
        "inactive" => Restarted::Inactive,
        _ => Restarted::Absent,
    })
}

/// How long a restarted kube-apiserver may take to answer `/readyz` with 200.
pub const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Waits on the node until its kube-apiserver answers `/readyz` with 200 (anonymous, as
/// kubeadm's probes do), asked with `openssl s_client` (nodes need no curl); without openssl
/// it only checks that the unit (or the static pod's container) still runs.
pub async fn wait_apiserver_ready(
    exec: &dyn Executor,
    timeout: Duration,
) -> Result<(), CertsError> {
    let secs = timeout.as_secs().max(1);
    let node = NodeLayout::DEFAULT;
    let (unit, port) = (node.units.kube_apiserver, node.ports.apiserver);
    let running = NodeLayout::static_pod_container(unit);
    let script = format!(
        "command -v openssl >/dev/null 2>&1 || {{ sleep 5; systemctl is-active -q {unit} || [ -n \"$({running})\" ]; exit; }}; \
         i=0; while [ $i -lt {secs} ]; do \
           if printf 'GET /readyz HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -quiet -connect 127.0.0.1:{port} 2>/dev/null | head -n 1 | grep -q ' 200 '; then exit 0; fi; \
           sleep 2; i=$((i+2)); done; echo 'no 200 from /readyz' >&2; exit 1"
    );
    let out = exec
        .run(&Command::new(script).timeout(timeout + Duration::from_secs(30)))
        .await?;
    if out.success() {
        Ok(())
    } else {
        Err(CertsError::Restart {
            host: exec.host().to_string(),
            unit: unit.into(),
            message: format!(
                "not ready after {secs}s: {}",
                clusterkit_core::exec::tail(&out.stderr_str())
            ),
        })
    }
}

/// What distribution did on one node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeOutcome {
    /// Remote paths uploaded.
    pub uploaded: Vec<String>,
    /// Units restarted (or static pods recycled).
    pub restarted: Vec<String>,
}

/// Checks the etcd cluster once (every member answers, all started, a leader); on success,
/// the leading member's name when known. Supplied by the caller so this module does not
/// depend on how etcd is reached.
pub type EtcdHealth<'a> = &'a dyn Fn() -> HealthFuture<'a>;

/// The future an [`EtcdHealth`] check returns.
pub type HealthFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<String>, Cause>> + 'a>>;

/// A node to distribute to: its cluster.yaml entry and a connected executor.
pub(super) type NodeItem<'a> = (&'a Host, Arc<dyn Executor>);

/// Restarts to do on a node: its index in the input, its executor, the units.
pub(super) type RestartItem = (usize, Arc<dyn Executor>, Vec<&'static str>);

/// How long one etcd member may take to rejoin a healthy cluster after its restart.
pub const ETCD_REJOIN_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn wait_healthy(
    health: EtcdHealth<'_>,
    timeout: Duration,
) -> Result<Option<String>, Cause> {
    let start = std::time::Instant::now();
    loop {
        let err = match health().await {
            Ok(leader) => return Ok(leader),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What [`distribute`] restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Nothing: upload only.
    No,
    /// What uses the files uploaded.
    Changed,
    /// What uses any of the files distributed, uploaded or not: a rerun after an upload whose
    /// restarts did not happen.
    All,
}

/// Distributes the state directory's files to `nodes` and restarts what uses them:
///
/// 1. every node in parallel (`fan`): upload what differs among its files (all of them, or
///    only those whose local path is in `only`);
/// 2. etcd members whose files changed, **one at a time**, the leader last: the cluster must
///    be healthy first, then the member restarts and the whole cluster must be healthy again
///    (within [`ETCD_REJOIN_TIMEOUT`]) before the next; a failure stops the roll, so quorum
///    holds;
/// 3. every other component whose files changed, nodes in parallel; a restarted
///    kube-apiserver is waited for until `/readyz` answers, then for `apiserver_settle` more
///    (the local load balancers' [`readmit_delay`](crate::phases::load_balancer::readmit_delay):
///    with one host at a time, the next API server stops only once every node's load
///    balancer sends requests to this one again).
///
/// `restart` says what restarts. Returns one result per node, in input order.
pub async fn distribute(
    layout: &StateLayout,
    nodes: &[(&Host, Arc<dyn Executor>)],
    only: Option<&HashSet<PathBuf>>,
    restart: Restart,
    etcd_health: EtcdHealth<'_>,
    apiserver_settle: Duration,
    fan: &Fanout,
) -> Vec<HostResult<NodeOutcome, CertsError>> {
    let files_of = |host: &Host| -> Vec<FileMapping> {
        node_mappings(layout, host)
            .into_iter()
            .filter(|f| only.is_none_or(|o| o.contains(&f.local)))
            .collect()
    };
    let items: Vec<(String, NodeItem<'_>)> = nodes
        .iter()
        .map(|(h, e)| (h.name.clone(), (*h, e.clone())))
        .collect();
    let mut results = fan
        .run(items, |(host, exec)| async move {
            let uploaded = sync_node(exec.as_ref(), &files_of(host)).await?;
            Ok::<_, CertsError>(NodeOutcome {
                uploaded,
                restarted: vec![],
            })
        })
        .await;
    // The units to restart on node `i`.
    let to_restart = |i: usize, outcome: &NodeOutcome| -> BTreeSet<&'static str> {
        match restart {
            Restart::No => BTreeSet::new(),
            Restart::Changed => units_for(&outcome.uploaded),
            Restart::All => units_for(
                &files_of(nodes[i].0)
                    .iter()
                    .map(|f| f.remote.to_string_lossy().into_owned())
                    .collect::<Vec<_>>(),
            ),
        }
    };
    if restart == Restart::No {
        return results;
    }
    const ETCD: &str = NodeLayout::DEFAULT.units.etcd;
    // 2. etcd, one member at a time, the leader last: a stopping leader hands its leadership
    // over, and a request in flight then fails ("leader changed"); so it happens once per roll
    // rather than once per member.
    let restarts_etcd = |i: usize| {
        results[i]
            .result
            .as_ref()
            .is_ok_and(|o| to_restart(i, o).contains(ETCD))
    };
    let leader = if (0..nodes.len()).any(restarts_etcd) {
        etcd_health().await.ok().flatten()
    } else {
        None
    };
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| leader.as_deref() == Some(nodes[i].0.name.as_str()));
    let mut etcd_stopped: Option<String> = None;
    for i in order {
        let (host, exec) = &nodes[i];
        let Ok(outcome) = &results[i].result else {
            continue;
        };
        if !to_restart(i, outcome).contains(ETCD) {
            continue;
        }
        let result: Result<Option<String>, CertsError> = async {
            if let Some(stopped) = &etcd_stopped {
                return Err(CertsError::EtcdHealth {
                    when: format!("before restarting {}", host.name),
                    message: format!("not restarted: the roll stopped at {stopped}"),
                });
            }
            wait_healthy(etcd_health, Duration::from_secs(30))
                .await
                .map_err(|source| CertsError::EtcdUnhealthy {
                    when: format!("before restarting {}", host.name),
                    source,
                })?;
            let done = restart_unit(exec.as_ref(), ETCD, ETCD_REJOIN_TIMEOUT).await?;
            if !matches!(done, Restarted::Unit | Restarted::StaticPod) {
                return Ok(None);
            }
            wait_healthy(etcd_health, ETCD_REJOIN_TIMEOUT)
                .await
                .map_err(|source| CertsError::EtcdUnhealthy {
                    when: format!("after restarting {}", host.name),
                    source,
                })?;
            tracing::info!(member = %host.name, "etcd member restarted, cluster healthy");
            Ok(Some(ETCD.to_string()))
        }
        .await;
        match result {
            Ok(Some(u)) => {
                if let Ok(o) = &mut results[i].result {
                    o.restarted.push(u);
                }
            }
            Ok(None) => {}
            Err(e) => {
                etcd_stopped.get_or_insert_with(|| host.name.clone());
                results[i].result = Err(e);
            }
        }
    }
    // 3. The other components, nodes in parallel.
    let items: Vec<(String, RestartItem)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, (h, e))| {
            let outcome = results[i].result.as_ref().ok()?;
            let units: Vec<&'static str> = to_restart(i, outcome)
                .into_iter()
                .filter(|u| *u != ETCD)
                .collect();
            (!units.is_empty()).then(|| (h.name.clone(), (i, e.clone(), units)))
        })
        .collect();
    let restarts = fan
        .run(items, |(i, exec, units)| async move {
            let mut done = Vec::new();
            // kube-apiserver first (the set is ordered): the others fail while it is down.
            for unit in units {
                let how = restart_unit(exec.as_ref(), unit, Duration::from_secs(120)).await?;
                if matches!(how, Restarted::Unit | Restarted::StaticPod)
                    && unit == NodeLayout::DEFAULT.units.kube_apiserver
                {
                    wait_apiserver_ready(exec.as_ref(), APISERVER_READY_TIMEOUT).await?;
                    tokio::time::sleep(apiserver_settle).await;
                }
                if how != Restarted::Absent {
                    done.push(unit.to_string());
                }
            }
            Ok::<_, CertsError>((i, done))
        })
        .await;
    for r in restarts {
        match r.result {
            Ok((i, done)) => {
                if let Ok(o) = &mut results[i].result {
                    o.restarted.extend(done);
                }
            }
            Err(e) => {
                if let Some(slot) = results.iter_mut().find(|x| x.host == r.host) {
                    slot.result = Err(e);
                }
            }
        }
    }
    results
}
