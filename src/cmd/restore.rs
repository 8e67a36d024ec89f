//! `clusterkit restore`: restore etcd from a backup.
//!
//! `restore etcd ID --data-dir DIR …` restores a local etcd member's data dir (verify first,
//! restore into scratch, then swap; the old data dir is kept). Without `--data-dir` it restores
//! the whole etcd cluster of cluster.yaml over SSH (`clusterkit_backup::restore_cluster`: each
//! member restored here with its own name and peer URLs, shipped, apiservers and etcd stopped,
//! old data dirs moved aside, all members started together, waited for healthy; a failure
//! after the first member was stopped rolls every member back, and only then does the error
//! say so: one before that — a corrupt backup, a failed dry run or upload — changed nothing).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use clusterkit_backup::restore::{restore_local, LocalRestore};
use clusterkit_backup::{catalog, settings};

use super::store::{load_optional_cluster, DecryptArgs, StoreArgs};
use super::Global;
use clusterkit_core::config::Cluster;

#[derive(Subcommand)]
pub enum Command {
    /// Restore etcd from backup ID (verified completely before anything is touched).
    Etcd(EtcdArgs),
    /// Restore namespaces from a namespace backup ID (server-side apply, dependency order).
    Namespace(super::namespace::RestoreNamespaceArgs),
}

#[derive(clap::Args)]
pub struct EtcdArgs {
    /// Backup id (see `clusterkit backup list`).
    id: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    decrypt: DecryptArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Local restore: the data dir of a stopped etcd on this machine (kept aside, not deleted).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Local restore: the member's name.
    #[arg(long, default_value = "default")]
    name: String,
    /// Local restore: the member's peer URL.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    initial_advertise_peer_urls: String,
    /// Local restore: name=peer-url,… of all members (default: this one only).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// New cluster token (default: clusterkit-restore-<id>), so the restored member never
    /// joins the old cluster.
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// etcdctl binary (etcd 3.4 restores with etcdctl).
    #[arg(long, env = "CLUSTERKIT_ETCDCTL", default_value = "etcdctl")]
    etcdctl: PathBuf,
    /// etcdutl binary (etcd ≥ 3.5): a cluster restore uses it with --bump-revision and
    /// --mark-compacted when it offers them and every member runs etcd ≥ 3.5.
    #[arg(long, env = "CLUSTERKIT_ETCDUTL", default_value = "etcdutl")]
    etcdutl: PathBuf,
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [type yes]: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

impl Command {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        let a = match self {
            Command::Etcd(a) => a,
            Command::Namespace(a) => return a.run(&global).await,
        };
        let cluster = load_optional_cluster(&global)?;
        let cluster = cluster.as_ref();
        let Some(data_dir) = a.data_dir.clone() else {
            return restore_cluster(&a, cluster, &global).await;
        };
        let store = a.store.open(cluster).await?;
        let decrypt = a.decrypt.resolve(cluster)?;
        let m = catalog::get_manifest(store.as_ref(), &a.id).await?;
        if !a.yes
            && !confirm(&format!(
                "restore {} (taken {}) into {}? etcd must be stopped; the current data dir is kept aside",
                m.id,
                m.finished_at,
                data_dir.display()
            ))?
        {
            bail!("not confirmed; nothing changed");
        }
        let opts = LocalRestore {
            data_dir,
            name: a.name.clone(),
            peer_urls: a.initial_advertise_peer_urls.clone(),
            initial_cluster: a.initial_cluster.clone(),
            initial_cluster_token: a
                .initial_cluster_token
                .clone()
                .unwrap_or_else(|| format!("clusterkit-restore-{}", m.id)),
            etcdctl: a.etcdctl.clone(),
        };
        let now = clusterkit_backup::chrono::Utc::now();
        let result = restore_local(store.as_ref(), &a.id, &decrypt, &opts, now).await;
        let report = result.with_context(|| format!("restore of {} failed", a.id))?;
        global.output.print(&report, || {
            let mut t = format!(
                "restored {} into {} (revision ≥ {})\n",
                report.id,
                report.data_dir.display(),
                report.revision_at_least
            );
            if let Some(old) = &report.old_data_dir {
                t += &format!("previous data dir kept at {}\n", old.display());
            }
            t + "start etcd now; etcd 3.4 cannot bump revisions, so restart every watcher \
                 (kube-apiserver, controllers, kubelets) afterwards\n"
        })
    }
}

/// The multi-member restore over SSH (see `clusterkit_backup::restore_cluster`).
async fn restore_cluster(
    a: &EtcdArgs,
    cluster: Option<&Cluster>,
    global: &Global,
) -> anyhow::Result<()> {
    use clusterkit_backup::restore_cluster::{restore_cluster_with, ClusterRestoreOptions, Member};
    use clusterkit_core::config::Role;
    use clusterkit_core::exec::Executor;
    use clusterkit_core::fanout::{self, Fanout};
    let Some(cluster) = cluster else {
        bail!(
            "no cluster.yaml ({}) to find the etcd members in; for one local etcd give --data-dir",
            global.config.display()
        );
    };
    let store = a.store.open(Some(cluster)).await?;
    let decrypt = a.decrypt.resolve(Some(cluster))?;
    let m = catalog::get_manifest(store.as_ref(), &a.id).await?;
    let hosts = cluster.hosts_with_role(Role::Etcd);
    if hosts.is_empty() {
        bail!("cluster.yaml has no etcd hosts");
    }
    if !a.yes
        && !confirm(&format!(
            "restore {} (taken {}) onto the {} etcd members of {}? kube-apiserver and etcd will be \
             stopped everywhere; old data dirs are kept",
            m.id,
            m.finished_at,
            hosts.len(),
            cluster.name
        ))?
    {
        bail!("not confirmed; nothing changed");
    }
    let fan = Fanout::new("connect", cluster.ssh.concurrency);
    let connected = fanout::connect_all(cluster, &hosts, &fan).await;
    fanout::check(&connected)?;
    let mut members = Vec::new();
    for (h, r) in hosts.iter().zip(connected) {
        let exec: std::sync::Arc<dyn Executor> = r.result?;
        members.push(Member {
            name: h.name.clone(),
            peer_url: clusterkit_core::layout::NodeLayout::from_cluster(cluster)
                .etcd_peer_url(h.address),
            control_plane: h.has_role(Role::ControlPlane),
            exec,
        });
    }
    let target = settings::etcd_target(cluster);
    let now = clusterkit_backup::chrono::Utc::now();
    let mut opts = ClusterRestoreOptions {
        etcdctl: a.etcdctl.clone(),
        etcdutl: a.etcdutl.clone(),
        ..ClusterRestoreOptions::default()
    };
    // With the cluster's admin kubeconfig the restore also waits for the API servers it
    // stopped to answer again.
    let admin = super::namespace::kubeconfig_path(None, Some(cluster))?;
    if admin.is_file() {
        match clusterkit_backup::namespace::ApiClient::from_kubeconfig(&admin).await {
            Ok(c) => opts.apiserver = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "not waiting for the API servers after the restore")
            }
        }
    }
    let result = restore_cluster_with(
        store.as_ref(),
        &a.id,
        &decrypt,
        &members,
        &target,
        now,
        &opts,
    )
    .await;
    let report = result.with_context(|| format!("restore of {} failed", a.id))?;
    global.output.print(&report, || {
        let mut t = String::new();
        for r in &report.members {
            t += &format!(
                "{}: {} (old data dir kept at {})\n",
                r.member, r.result, r.old_data_dir
            );
        }
        for s in &report.steps {
            t += &format!(
                "  step {:<22} {:<10} {:>7.2}s\n",
                s.step,
                s.member.as_deref().unwrap_or("-"),
                s.seconds
            );
        }
        t + &format!(
            "restored in {:.1}s\nrevisions: {}\n",
            report.seconds, report.revisions
        )
    })
}
