//! `clusterkit certs`: check and renew the certificates and kubeconfigs clusterkit issued.
//!
//! - `check-expiration`: every certificate and kubeconfig on every selected node, read live
//!   over SSH (one round trip per host), plus the state directory's copies; a table like
//!   kubeadm's or `-o json`; `--fail-within DAYS` exits non-zero for cron jobs.
//! - `renew [--all | NAME…]`: re-issue leaf certificates (never the CAs), upload what changed,
//!   restart what uses it (etcd one member at a time, waiting for a healthy cluster).
//! - `distribute`: only the second half — bring nodes in line with the state directory (e.g.
//!   after a renewal that could not reach a host).
//! - `rotate-ca [--ca …] [--check] [--resume]`: replace a CA (the cluster's, the front
//!   proxy's, etcd's) in three stages (trust both, reissue, drop the old), journaled so a rerun
//!   continues and a rerun after the end changes nothing; every host, one at a time.
//!
//! The work is in `clusterkit_installer::certs`; this is the CLI around it.

use clusterkit_core::layout::kubeconfig_file;
use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use clusterkit_core::config::{Cluster, Host};
use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::exec::Executor;
use clusterkit_core::fanout::{self, Fanout, HostResult};
use clusterkit_core::inventory;
use clusterkit_core::layout::StateLayout;
use clusterkit_installer::certs::{self, CertsError, ExpiryRow, NodeOutcome};
use clusterkit_installer::phases::etcd as etcd_phase;
use clusterkit_installer::pki::{CaName, MonitoringInput};

use super::{Global, Selection};

#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Expiry of every certificate and kubeconfig, read live from the nodes.
    CheckExpiration(CheckArgs),
    /// Re-issue leaf certificates (not the CAs), distribute them and restart what uses them.
    Renew(RenewArgs),
    /// Upload whatever differs from the state directory and restart what uses it.
    Distribute(DistributeArgs),
    /// Replace CAs without a new cluster: trust old and new, reissue every leaf with the new
    /// one, then drop the old; resumable, one host at a time.
    RotateCa(RotateArgs),
}

/// The CAs `rotate-ca --ca` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CaChoice {
    /// The cluster CA (`ca.crt`): API server, kubelets, kubeconfigs.
    Kubernetes,
    /// etcd's CA.
    Etcd,
    /// The front proxy's CA (aggregated APIs).
    FrontProxy,
    /// All three.
    All,
}

impl CaChoice {
    /// The CAs of `choices`, each once, in rotation order.
    fn cas(choices: &[CaChoice]) -> Vec<CaName> {
        let all = choices.contains(&CaChoice::All);
        [
            (CaChoice::Kubernetes, CaName::Kubernetes),
            (CaChoice::FrontProxy, CaName::FrontProxy),
            (CaChoice::Etcd, CaName::Etcd),
        ]
        .into_iter()
        .filter(|(c, _)| all || choices.contains(c))
        .map(|(_, ca)| ca)
        .collect()
    }
}

#[derive(clap::Args)]
pub struct RotateArgs {
    /// Which CAs to rotate (comma-separated: rotated together, one restart per stage).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kubernetes")]
    ca: Vec<CaChoice>,

    /// Change nothing: show each stage left and what it would upload and restart per host.
    #[arg(long)]
    check: bool,

    /// Continue a rotation that stopped; fails when none is in progress. (A plain rerun
    /// continues too.)
    #[arg(long)]
    resume: bool,

    /// After the trust-both stage, rollout-restart the Deployments, StatefulSets and
    /// DaemonSets whose pods started before both CAs were published (they may know only the
    /// old one) and wait for them; bare pods are only listed.
    #[arg(long)]
    restart_workloads: bool,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    selection: Selection,

    /// Exit non-zero when a certificate expires within DAYS days, or one is missing, invalid
    /// or has a readable key (stale copies only warn).
    #[arg(long, value_name = "DAYS", value_parser = super::flags::fail_within_days())]
    fail_within: Option<i64>,

    /// Leave out the state directory's copies.
    #[arg(long)]
    no_local: bool,
}

#[derive(clap::Args)]
pub struct RenewArgs {
    /// Renew every leaf certificate and kubeconfig (kubelet.conf excepted: kubelets rotate
    /// their own client certificate). CAs are never renewed: `certs rotate-ca` replaces them.
    #[arg(long, conflicts_with = "names")]
    all: bool,

    /// Names as `certs check-expiration` shows them (`apiserver`, `admin.conf`); a group name
    /// (`etcd-server`, `controller-manager.conf`) means every host's.
    names: Vec<String>,

    /// Renew in the state directory only; upload nothing.
    #[arg(long)]
    no_distribute: bool,

    /// Upload, but restart nothing.
    #[arg(long)]
    no_restart: bool,

    #[command(flatten)]
    selection: Selection,
}

#[derive(clap::Args)]
pub struct DistributeArgs {
    /// Upload, but restart nothing.
    #[arg(long)]
    no_restart: bool,

    #[command(flatten)]
    selection: Selection,
}

impl CertsCommand {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self {
            CertsCommand::CheckExpiration(a) => a.run(global).await,
            CertsCommand::Renew(a) => a.run(global).await,
            CertsCommand::Distribute(a) => a.run(global).await,
            CertsCommand::RotateCa(a) => a.run(global).await,
        }
    }
}

impl CheckArgs {
    async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let hosts = self.selection.pick(&cluster, &global)?;
        let layout = StateLayout::from_cluster(&cluster);
        let input = certs::pki_input(&cluster);
        let now = certs::now();
        let mut rows: Vec<ExpiryRow> = Vec::new();
        if !self.no_local {
            rows.extend(certs::local_rows(&cluster, &input, &layout, now)?);
            // Both CAs of a rotation in progress, marked old and new.
            rows.extend(certs::rotation_rows(&layout, now)?);
        }
        let items = hosts
            .iter()
            .map(|h| {
                let files = certs::node_files(&cluster, &layout, h);
                (h.name.clone(), (inventory::ssh_target(&cluster, h), files))
            })
            .collect();
        let results = self
            .selection
            .fanout(&cluster, "read certificates")
            .run(items, |(target, files)| async move {
                let ssh = SshExecutor::connect(target?).await?;
                let remote = certs::read_node(&ssh, &files).await;
                ssh.close().await;
                Ok::<_, CertsError>((files, remote?))
            })
            .await;
        for r in &results {
            if let Ok((files, remote)) = &r.result {
                rows.extend(certs::node_rows(&r.host, files, remote, now));
            }
        }
        let errors: Vec<serde_json::Value> = results
            .iter()
            .filter_map(|r| {
                r.result
                    .as_ref()
                    .err()
                    .map(|e| serde_json::json!({ "host": r.host, "error": e.to_string() }))
            })
            .collect();
        global.output.print(
            &serde_json::json!({ "certificates": rows, "errors": errors }),
            || certs::expiry_table(&rows),
        )?;
        for r in &results {
            if let Err(e) = &r.result {
                eprintln!("{e}");
            }
        }
        let stale = rows
            .iter()
            .filter(|r| r.status == certs::Status::Stale)
            .count();
        if stale > 0 {
            eprintln!(
                "{stale} node copies differ from the state directory: `clusterkit certs distribute` uploads them"
            );
        }
        fanout::check(&results)?;
        if let Some(days) = self.fail_within {
            let failing: Vec<String> = rows
                .iter()
                .filter(|r| r.fails_within(days))
                .map(|r| format!("{}/{} ({})", r.host, r.name, describe(r)))
                .collect();
            if !failing.is_empty() {
                anyhow::bail!(
                    "{} certificate(s) expire within {days} days or are not usable: {}",
                    failing.len(),
                    failing.join(", ")
                );
            }
        }
        Ok(())
    }
}

fn describe(r: &ExpiryRow) -> String {
    match (r.status, r.days_left) {
        (certs::Status::Ok | certs::Status::Stale, Some(d)) => format!("{d} days left"),
        (s, _) => s.as_str().to_string(),
    }
}

/// Connects to the selected hosts; unreachable ones are returned as failed results.
async fn connect(
    cluster: &Cluster,
    hosts: &[&Host],
    fan: &Fanout,
) -> (
    Vec<(String, Arc<SshExecutor>)>,
    Vec<HostResult<NodeOutcome, CertsError>>,
) {
    let connected = fanout::connect_all(cluster, hosts, fan).await;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in connected {
        match r.result {
            Ok(ssh) => ok.push((r.host, ssh)),
            Err(e) => failed.push(HostResult {
                host: r.host,
                duration: r.duration,
                result: Err(CertsError::from(e)),
            }),
        }
    }
    (ok, failed)
}

/// The etcd health check rolls wait on: the operator's machine checks etcd with the etcd CA
/// and the healthcheck client certificate of the state directory, as the etcd phase does,
/// read again at each check (a rotation of the etcd CA changes both between checks); then
/// asks which member leads.
fn etcd_health(cluster: &Cluster) -> certs::HealthFuture<'_> {
    Box::pin(async move {
        match etcd_phase::ClientTls::load(cluster) {
            Ok(tls) => {
                etcd_phase::health(cluster, &tls).await?;
                Ok(etcd_phase::leader(cluster, &tls).await)
            }
            Err(e) => Err(format!("no etcd healthcheck client certificate: {e}").into()),
        }
    })
}

/// Uploads, restarts, prints the per-host summary; `Err` naming failed hosts.
async fn distribute_and_report(
    cluster: &Cluster,
    selection: &Selection,
    only: Option<&HashSet<std::path::PathBuf>>,
    restart: bool,
    global: &Global,
    renewed: Option<&[certs::Renewed]>,
) -> anyhow::Result<()> {
    let hosts = selection.pick(cluster, global)?;
    let layout = StateLayout::from_cluster(cluster);
    if let Some(only) = only {
        // A node left out of the selection keeps its old copies: say which.
        for h in &cluster.hosts {
            if hosts.iter().any(|s| s.name == h.name) {
                continue;
            }
            if certs::node_mappings(&layout, h)
                .iter()
                .any(|m| only.contains(&m.local))
            {
                eprintln!(
                    "warning: {} holds renewed files but is not selected; run `clusterkit certs distribute --hosts {}`",
                    h.name, h.name
                );
            }
        }
    }
    let fan = selection.fanout(cluster, "distribute");
    let (connected, mut results) = connect(cluster, &hosts, &fan).await;
    let nodes: Vec<(&Host, Arc<dyn Executor>)> = connected
        .iter()
        .filter_map(|(name, e)| {
            let exec: Arc<dyn Executor> = e.clone();
            cluster.host(name).map(|h| (h, exec))
        })
        .collect();
    let health = || -> certs::HealthFuture<'_> { etcd_health(cluster) };
    let restart = if restart {
        certs::Restart::Changed
    } else {
        certs::Restart::No
    };
    let settle = clusterkit_installer::phases::load_balancer::readmit_delay(cluster);
    results.extend(certs::distribute(&layout, &nodes, only, restart, &health, settle, &fan).await);
    // Input order (the selection's), not "unreachable first".
    results.sort_by_key(|r| hosts.iter().position(|h| h.name == r.host));
    for (_, ssh) in &connected {
        ssh.close().await;
    }
    let hosts: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match &r.result {
            Ok(o) => serde_json::json!({
                "host": r.host, "status": "ok", "uploaded": o.uploaded, "restarted": o.restarted,
            }),
            Err(e) => {
                serde_json::json!({ "host": r.host, "status": "failed", "error": e.to_string() })
            }
        })
        .collect();
    let value = serde_json::json!({
        "renewed": renewed.unwrap_or_default(),
        "hosts": hosts,
    });
    global.output.print(&value, || {
        let mut out = String::new();
        if let Some(renewed) = renewed {
            out.push_str(&renewed_table(renewed));
            out.push('\n');
        }
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| match &r.result {
                Ok(o) => vec![
                    r.host.clone(),
                    "ok".into(),
                    o.uploaded.len().to_string(),
                    if o.restarted.is_empty() {
                        "-".into()
                    } else {
                        o.restarted.join(",")
                    },
                    String::new(),
                ],
                Err(e) => vec![
                    r.host.clone(),
                    "failed".into(),
                    "-".into(),
                    "-".into(),
                    e.to_string().lines().next().unwrap_or_default().to_string(),
                ],
            })
            .collect();
        out.push_str(&fanout::table(
            &["HOST", "STATUS", "UPLOADED", "RESTARTED", "ERROR"],
            &rows,
        ));
        out
    })?;
    for r in &results {
        if let Err(e) = &r.result {
            eprintln!("{e}");
        }
    }
    fanout::check(&results)?;
    Ok(())
}

fn renewed_table(renewed: &[certs::Renewed]) -> String {
    let rows: Vec<Vec<String>> = renewed
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.old_serial.clone().unwrap_or_else(|| "-".into()),
                r.new_serial.clone(),
                r.expires.clone(),
            ]
        })
        .collect();
    fanout::table(&["RENEWED", "OLD SERIAL", "NEW SERIAL", "EXPIRES"], &rows)
}

impl RenewArgs {
    async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let layout = StateLayout::from_cluster(&cluster);
        let input = certs::pki_input(&cluster);
        let monitoring = MonitoringInput::from_cluster(&cluster);
        let all = certs::renewables(&input, &layout, Some(&monitoring))?;
        let picked = certs::select(&all, self.all, &self.names)?;
        let renewed = certs::renew_local(&cluster, &input, &layout, &picked, certs::now())
            .with_context(|| format!("renewing in {}", layout.root.display()))?;
        if renewed.iter().any(|r| r.name == kubeconfig_file::ADMIN) {
            eprintln!(
                "admin.conf renewed; the operator's copy is {}",
                clusterkit_core::layout::operator_admin_conf(&cluster).display()
            );
        }
        if self.no_distribute {
            return global.output.print(
                &serde_json::json!({ "renewed": renewed, "hosts": [] }),
                || renewed_table(&renewed),
            );
        }
        let only: HashSet<std::path::PathBuf> = renewed
            .iter()
            .flat_map(|r| r.files.iter().cloned())
            .collect();
        distribute_and_report(
            &cluster,
            &self.selection,
            Some(&only),
            !self.no_restart,
            &global,
            Some(&renewed),
        )
        .await
    }
}

impl DistributeArgs {
    async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        distribute_and_report(
            &cluster,
            &self.selection,
            None,
            !self.no_restart,
            &global,
            None,
        )
        .await
    }
}

impl RotateArgs {
    async fn run(self, global: Global) -> anyhow::Result<()> {
        let cluster = super::load_cluster(&global)?;
        let layout = StateLayout::from_cluster(&cluster);
        let cas = CaChoice::cas(&self.ca);
        // Refuse what cannot be rotated before anything changes.
        if let Some(ca) = cas.iter().find(|c| !certs::ROTATABLE.contains(c)) {
            anyhow::bail!(
                "--ca: rotating {} is not supported yet (supported: {})",
                ca.name(),
                certs::ROTATABLE.map(|c| c.name()).join(", ")
            );
        }
        // Every host, one at a time: a CA is trusted everywhere or the stage is not done.
        let hosts: Vec<&Host> = cluster.hosts.iter().collect();
        let fan = Fanout::new("rotate-ca", 1);
        let connected = fanout::connect_all(&cluster, &hosts, &fan).await;
        let mut nodes: Vec<(&Host, Arc<dyn Executor>)> = Vec::new();
        let mut unreachable = Vec::new();
        for r in &connected {
            match &r.result {
                Ok(ssh) => {
                    let exec: Arc<dyn Executor> = ssh.clone();
                    if let Some(h) = cluster.host(&r.host) {
                        nodes.push((h, exec));
                    }
                }
                Err(e) => unreachable.push(format!("{}: {e}", r.host)),
            }
        }
        let health = || -> certs::HealthFuture<'_> { etcd_health(&cluster) };
        let mut reports = Vec::new();
        let outcome = if !unreachable.is_empty() {
            Err(anyhow::anyhow!(
                "every host must be reachable to rotate a CA: {}",
                unreachable.join("; ")
            ))
        } else {
            certs::rotate_cas(
                &cluster,
                &layout,
                &cas,
                &nodes,
                &health,
                &fan,
                certs::RotateOptions {
                    check: self.check,
                    resume: self.resume,
                    restart_workloads: self.restart_workloads,
                },
                &mut reports,
            )
            .await
            .context("rotating CAs")
        };
        for r in &connected {
            if let Ok(ssh) = &r.result {
                ssh.close().await;
            }
        }
        global
            .output
            .print(&serde_json::json!({ "stages": reports }), || {
                rotation_table(&reports)
            })?;
        outcome
    }
}

fn rotation_table(reports: &[certs::StageReport]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in reports {
        let cas = r.cas.join(",");
        if r.hosts.is_empty() {
            rows.push(vec![
                cas.clone(),
                r.stage.into(),
                r.status.into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for h in &r.hosts {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(",")
                }
            };
            rows.push(vec![
                cas.clone(),
                r.stage.into(),
                h.error
                    .as_deref()
                    .map_or_else(|| h.status.to_string(), |e| format!("failed: {e}")),
                h.host.clone(),
                list(&h.uploaded),
                list(&h.restarted),
            ]);
        }
    }
    let mut out = fanout::table(
        &["CA", "STAGE", "STATUS", "HOST", "UPLOADED", "RESTARTED"],
        &rows,
    );
    let stale: Vec<&certs::workloads::StalePod> =
        reports.iter().flat_map(|r| r.workloads.iter()).collect();
    if !stale.is_empty() {
        let rows: Vec<Vec<String>> = stale
            .iter()
            .map(|p| {
                vec![
                    p.namespace.clone(),
                    p.pod.clone(),
                    p.started.clone(),
                    p.owner
                        .as_ref()
                        .map_or_else(|| "-".into(), |o| format!("{}/{}", o.kind, o.name)),
                    if p.restarted {
                        "restarted".into()
                    } else if p.owner.as_ref().is_some_and(|o| o.restartable()) {
                        "restart it (or --restart-workloads)".into()
                    } else {
                        "restart it by hand".into()
                    },
                ]
            })
            .collect();
        out.push_str(
            "\npods started before both CAs were published (may trust only the old CA):\n",
        );
        out.push_str(&fanout::table(
            &["NAMESPACE", "POD", "STARTED", "OWNER", "ACTION"],
            &rows,
        ));
    }
    out
}
