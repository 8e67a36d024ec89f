//! Phase `pki`: generate the cluster PKI and kubeconfigs on the operator's machine (in the
//! state directory, [`crate::pki`] and [`crate::kubeconfig`]) and give every node the files it
//! needs under `/etc/kubernetes` (playbook `pki`).
//!
//! Who gets what ([`pki::host_files`]): control-plane hosts the whole shared PKI and
//! their component kubeconfigs (and a kubelet.conf of their own, so their kubelets need no
//! bootstrap); etcd members their server/peer pair and the etcd CA certificate; every other
//! node only `ca.crt`. The etcd CA *key* stays off hosts that are not control-plane hosts: an
//! etcd member never signs anything. Keys and kubeconfigs are 0600, certificates 0644, and a
//! file is uploaded only when its checksum differs (the `copy` module).
//!
//! `admin.conf` is also written next to cluster.yaml (0600) for the operator, and in
//! static-pod mode onto the control-plane hosts, as kubeadm keeps it
//! ([`pki::holds_admin_conf`]).
//!
//! Limits: the local PKI work is not counted in the run summary (it reports hosts); it is
//! logged instead. In check mode nothing is generated and nodes are compared with what exists.

use std::path::Path;

use async_trait::async_trait;
use clusterkit_core::config::{ControlPlaneMode, Role};
use serde_json::{json, Map, Value};

use super::common::{self, with_vars};
use super::{InstallError, Phase, PhaseContext};
use crate::kubeconfig;
use crate::pki::{self, Mode, PkiInput};
use clusterkit_core::layout::{operator_admin_conf, StateLayout};

/// The `pki` phase.
pub struct PkiPhase;

/// The PKI input clusterkit uses for a cluster: kubeadm's, with kubelet credentials for the
/// control-plane hosts (their kubelets run before any bootstrap token exists in static-pod
/// mode; in systemd mode it keeps them independent of the join phase too).
pub fn input(cluster: &clusterkit_core::config::Cluster) -> PkiInput {
    let mut input = PkiInput::from_cluster(cluster);
    input.kubelet_nodes = input.control_plane.clone();
    input
}

fn pki_err(e: impl Into<super::Cause>) -> InstallError {
    InstallError::host("local PKI", "", e)
}

/// Generates (or, in check mode, checks) the PKI and kubeconfigs; returns how many local
/// files changed.
pub fn ensure_local(
    cluster: &clusterkit_core::config::Cluster,
    check: bool,
) -> Result<usize, InstallError> {
    let input = input(cluster);
    let layout = StateLayout::from_cluster(cluster);
    let mode = if check { Mode::Check } else { Mode::Apply };
    let mut report = pki::ensure(&input, &layout, mode).map_err(pki_err)?;
    report.extend(kubeconfig::ensure(&input, &layout, mode).map_err(pki_err)?);
    for item in report
        .items
        .iter()
        .filter(|i| i.action != pki::Action::Kept)
    {
        tracing::info!(name = %item.name, path = %item.path.display(), action = ?item.action, "pki");
    }
    let mut changed = report.changed();
    // kubeadm's control-plane hosts keep admin.conf in /etc/kubernetes (`kubeadm token
    // create`, `upgrade plan`, `certs check-expiration` read it there): so do those of the
    // kubeadm-shaped cluster, static-pod mode.
    if cluster.kubernetes.control_plane_mode == ControlPlaneMode::StaticPod {
        for h in cluster.hosts_with_role(Role::ControlPlane) {
            if check {
                changed += usize::from(!pki::holds_admin_conf(&layout, &h.name));
            } else if pki::link_admin_conf(&layout, &h.name).map_err(pki_err)? {
                changed += 1;
            }
        }
    }
    let admin = layout.admin_conf();
    let dest = operator_admin_conf(cluster);
    if let Ok(data) = std::fs::read(&admin) {
        if std::fs::read(&dest).ok().as_deref() != Some(&data[..]) || mode_of(&dest) != Some(0o600)
        {
            changed += 1;
            if !check {
                pki::write_file(&dest, &data, 0o600).map_err(pki_err)?;
            }
        }
    }
    Ok(changed)
}

fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// The files (`src` on this machine, `dest` on the node, `mode`) one host gets.
pub fn host_files(
    cluster: &clusterkit_core::config::Cluster,
    host: &clusterkit_core::config::Host,
) -> Vec<Value> {
    let layout = StateLayout::from_cluster(cluster);
    pki::host_files(
        &layout,
        &host.name,
        host.has_role(Role::ControlPlane),
        host.has_role(Role::Etcd),
    )
    .into_iter()
    .map(|f| {
        let src = std::fs::canonicalize(&f.local).unwrap_or(f.local.clone());
        json!({
            "src": src.display().to_string(),
            "dest": f.remote.display().to_string(),
            "mode": format!("{:04o}", f.mode),
        })
    })
    .collect()
}

#[async_trait]
impl Phase for PkiPhase {
    fn name(&self) -> &'static str {
        "pki"
    }
    fn describe(&self) -> &'static str {
        "kubeadm-style PKI and kubeconfigs (generated locally), distributed to /etc/kubernetes"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        let pb = clusterkit_core::playbook::load(cx.library, "pki")?;
        let changed = ensure_local(cx.cluster, cx.check)?;
        if changed > 0 {
            tracing::info!(changed, "local PKI and kubeconfigs updated");
        }
        let targets = with_vars(cx.targets, |t| {
            let h = common::host(cx.cluster, t)?;
            let mut m = Map::new();
            m.insert("pki_files".into(), Value::Array(host_files(cx.cluster, h)));
            Some(m)
        });
        cx.engine.run(&pb, &targets).await;
        Ok(())
    }
}
