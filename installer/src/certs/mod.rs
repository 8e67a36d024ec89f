//! Day 2: expiry checks and renewal of every certificate and kubeconfig clusterkit issued.
//!
//! - [`node_files`] lists what each node should hold (the same rules as
//!   [`pki::host_files`], but also for files missing locally) and [`read_node`] reads
//!   them **live**, in one SSH round trip per host: certificates whole, kubeconfigs reduced on
//!   the node to their `client-certificate(-data)` line and key files to their mode (private
//!   keys never travel). [`node_rows`] and [`local_rows`] turn that into [`ExpiryRow`]s: subject,
//!   issuing CA, serial, expiry, days left, residual lifetime fraction, key presence and mode,
//!   and whether the node's copy is the state directory's.
//! - [`renew_local`] re-issues leaf certificates and kubeconfig client certificates in the state
//!   directory with new keys and serials, signed by the existing CAs ([`crate::pki`]'s issuer),
//!   and rewrites the operator's `admin.conf` next to cluster.yaml when `admin.conf` is renewed.
//!   [`sync_node`] uploads to a node only the files whose checksum or mode differ, and
//!   [`units_for`] / [`restart_unit`] say and do what must restart; [`distribute`] does that on
//!   every node: uploads in parallel, etcd members one at a time with the whole cluster
//!   checked healthy before and after each, then the other components, nodes in parallel
//!   (kube-apiserver first, waited for until `/readyz` answers 200, then its clients).
//!
//! - [`rotate_cas`] replaces a CA in three journaled stages (trust both, reissue, drop the old);
//!   see the rotate module.
//!
//! Limits: `renew` never renews a CA (a CA is re-created only by the pki phase when it is
//! missing or expired, and that re-issues everything, or replaced by [`rotate_cas`]). The service-account key pair is not a certificate and is left alone.
//! Kubelets rotate their own client certificate (`rotateCertificates: true`, through CSRs), so
//! `kubelet.conf` is left out of `--all`, like kubeadm does; it can still be renewed by name.
//! Control-plane components are restarted through systemd (systemd mode); in static-pod mode
//! their containers are stopped with crictl and the kubelet starts them again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clusterkit_core::config::{Cluster, Host, Role};
use clusterkit_core::exec::ssh::shell_quote;
use clusterkit_core::exec::{Command, ExecError, Executor, UploadOptions};
use clusterkit_core::fanout::{Fanout, HostResult};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use clusterkit_core::layout::{operator_admin_conf, NodeLayout, StateLayout};

use crate::kubeconfig::{self, Kubeconfig, KubeconfigError, KubeconfigSpec, UserEntry};
use crate::pki::{
    self, monitoring, CaName, CertSpec, FileMapping, LoadedCa, MonitoringInput, PkiError, PkiInput,
    Unusable, Usage,
};

mod expiry;
mod inventory;
mod renew;
mod rollout;
mod rotate;
pub mod workloads;

pub use expiry::*;
pub use inventory::*;
pub use renew::*;
pub use rollout::*;
pub use rotate::*;

/// Errors of `certs check-expiration`, `renew` and `distribute`. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// From the PKI (loading a CA, issuing, writing files).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// From building or reading a kubeconfig.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// Reaching a host failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A name given to `renew` is not a certificate clusterkit issues.
    #[error("unknown certificate {name:?}; renewable: {known}")]
    UnknownName {
        /// The name given.
        name: String,
        /// Every renewable name, comma-separated.
        known: String,
    },
    /// `renew` without names and without `--all`.
    #[error("nothing to renew: name certificates (see `certs check-expiration`) or pass --all")]
    NothingSelected,
    /// Reading the state of a node's copies (checksums, modes) failed.
    #[error("{host}: reading the node's certificate files")]
    NodeState {
        host: String,
        #[source]
        source: Box<clusterkit_core::playbook::modules::ModuleError>,
    },
    /// The node's answer to the read command was not what it prints.
    #[error("{host}: unexpected output reading certificates: {message}")]
    Protocol {
        /// The host.
        host: String,
        /// What was wrong.
        message: String,
    },
    /// A component did not come back after its restart.
    #[error("{host}: {unit} is not running after the restart: {message}")]
    Restart {
        /// The host.
        host: String,
        /// The systemd unit (or static pod).
        unit: String,
        /// What systemd or the health check said.
        message: String,
    },
    /// A member was not restarted, in words (the roll stopped earlier).
    #[error("etcd {when}: {message}")]
    EtcdHealth {
        /// `before restarting node1`, `after restarting node1`.
        when: String,
        /// Why.
        message: String,
    },
    /// etcd was not healthy (before a rolling restart, or after one member's restart).
    #[error("etcd {when}: {source}")]
    EtcdUnhealthy {
        /// `before restarting node1`, `after restarting node1`.
        when: String,
        /// The health check's findings.
        #[source]
        source: crate::phases::Cause,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(dir: &Path) -> Cluster {
        let yaml = "name: t\nhosts:\n  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }\n  - { name: e2, address: 10.0.0.2, roles: [worker, etcd], auth: { agent: true } }\n  - { name: w3, address: 10.0.0.3, roles: [worker], auth: { agent: true } }\nkubernetes: { version: v1.20.2, control_plane_endpoint: \"10.0.0.1:6443\" }\n";
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        clusterkit_core::config::load(&path).unwrap().cluster
    }

    /// The pki and kubeconfig phases (check mode) would change nothing in the state directory.
    pub(super) fn phases_keep_everything(input: &PkiInput, layout: &StateLayout) {
        let pki = pki::ensure(input, layout, pki::Mode::Check).unwrap();
        assert_eq!(pki.changed(), 0, "{pki:?}");
        let confs = kubeconfig::ensure(input, layout, pki::Mode::Check).unwrap();
        assert_eq!(confs.changed(), 0, "{confs:?}");
    }

    fn generated(dir: &Path) -> (Cluster, PkiInput, StateLayout) {
        let c = cluster(dir);
        let input = pki_input(&c);
        let layout = StateLayout::from_cluster(&c);
        pki::ensure(&input, &layout, pki::Mode::Apply).unwrap();
        kubeconfig::ensure(&input, &layout, pki::Mode::Apply).unwrap();
        (c, input, layout)
    }

    /// node_files (which also lists files missing locally) must agree with the layout's own
    /// host_files once everything is generated: same local → remote pairs.
    #[test]
    fn node_files_agree_with_host_files() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, layout) = generated(dir.path());
        // The control-plane hosts of a static-pod cluster also hold admin.conf.
        for h in c.hosts_with_role(Role::ControlPlane) {
            assert!(pki::link_admin_conf(&layout, &h.name).unwrap());
            assert!(
                !pki::link_admin_conf(&layout, &h.name).unwrap(),
                "made once"
            );
            assert!(node_mappings(&layout, h)
                .iter()
                .any(|m| m.local == layout.admin_conf()
                    && m.remote == Path::new("/etc/kubernetes/admin.conf")
                    && m.mode == 0o600));
        }
        for h in &c.hosts {
            let mut want: Vec<(PathBuf, String)> = node_mappings(&layout, h)
                .into_iter()
                .filter(|m| {
                    let s = m.remote.to_string_lossy();
                    // The signer copy of ca.crt's first certificate is not a row of its own.
                    (s.ends_with(".crt") || s.ends_with(".conf"))
                        && !s.ends_with(clusterkit_core::layout::CLUSTER_SIGNING_CERT)
                })
                .map(|m| (m.local, m.remote.to_string_lossy().to_string()))
                .collect();
            let mut got: Vec<(PathBuf, String)> = node_files(&c, &layout, h)
                .into_iter()
                .filter(|f| !f.optional)
                .map(|f| (f.local.unwrap(), f.remote))
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{}", h.name);
            // Every key the check looks for is a key the node gets.
            let keys: Vec<String> = node_mappings(&layout, h)
                .into_iter()
                .map(|m| m.remote.to_string_lossy().to_string())
                .filter(|r| r.ends_with(".key"))
                .filter(|r| !r.ends_with("/sa.key") && !r.ends_with("/ca.key"))
                .collect();
            for k in keys {
                assert!(
                    node_files(&c, &layout, h)
                        .iter()
                        .any(|f| f.key.as_deref() == Some(&k)),
                    "{}: {k}",
                    h.name
                );
            }
        }
    }

    /// The real read script, run by a LocalExecutor over copies of the state files laid out
    /// under a temporary root (keys with modes, one kubeconfig missing).
    #[tokio::test]
    async fn read_script_and_rows() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (c, _, layout) = generated(dir.path());
        let root = dir.path().join("node");
        let h = c.host("cp1").unwrap();
        let mut files = node_files(&c, &layout, h);
        let mappings = node_mappings(&layout, h);
        for m in &mappings {
            let remote = m.remote.to_string_lossy().to_string();
            if remote.ends_with("scheduler.conf") {
                continue;
            }
            let dest = root.join(remote.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&m.local, &dest).unwrap();
            let mode = if remote.ends_with("/apiserver.key") {
                0o644
            } else {
                m.mode
            };
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let re = |p: &str| {
            root.join(p.trim_start_matches('/'))
                .to_string_lossy()
                .to_string()
        };
        // A node copy that is not the state directory's.
        std::fs::copy(
            layout.pki_dir().join("apiserver-kubelet-client.crt"),
            re("/etc/kubernetes/pki/front-proxy-client.crt"),
        )
        .unwrap();
        for f in &mut files {
            f.remote = re(&f.remote);
            f.key = f.key.as_deref().map(re);
        }
        let exec = clusterkit_core::exec::local::LocalExecutor::new("cp1", Duration::from_secs(30));
        let remote = read_node(&exec, &files).await.unwrap();
        let rows = node_rows("cp1", &files, &remote, OffsetDateTime::now_utc());
        let by = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(by("ca").status, Status::Ok);
        assert_eq!(by("ca").ca.as_deref(), Some("-"));
        assert!((3640..=3650).contains(&by("ca").days_left.unwrap()));
        assert_eq!(by("etcd-server").ca.as_deref(), Some("etcd-ca"));
        assert_eq!(by("etcd-server").subject.as_deref(), Some("cp1"));
        assert_eq!(by("etcd-server").validity_days, Some(365));
        assert_eq!(by("apiserver").status, Status::KeyMode);
        assert_eq!(by("scheduler.conf").status, Status::Missing);
        let cm = by("controller-manager.conf");
        assert_eq!(cm.status, Status::Ok, "{cm:?}");
        assert_eq!(
            cm.subject.as_deref(),
            Some("system:kube-controller-manager")
        );
        assert_eq!(cm.in_sync, Some(true));
        assert!(!rows.iter().any(|r| r.name == "kubelet-client-current"));
        let stale = by("front-proxy-client");
        assert_eq!(
            (stale.status, stale.in_sync),
            (Status::Stale, Some(false)),
            "{stale:?}"
        );
        assert!(rows
            .iter()
            .all(|r| r.fails_within(0) == !matches!(r.status, Status::Ok | Status::Stale)));
        assert!(by("ca").fails_within(4000));
    }

    #[test]
    fn renew_changes_serials_and_keeps_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (c, input, layout) = generated(dir.path());
        let all = renewables(&input, &layout, None).unwrap();
        assert!(select(&all, false, &["ca".into()]).is_err());
        assert!(select(&all, false, &["nope".into()]).is_err());
        assert!(select(&all, false, &[]).is_err());
        let every = select(&all, true, &[]).unwrap();
        assert!(every.iter().all(|r| !r.name().starts_with("kubelet.conf")));
        let picked = select(&all, false, &["etcd-server".into(), "admin.conf".into()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["etcd-server/cp1", "etcd-server/e2", "admin.conf"]);
        let before = local_rows(&c, &input, &layout, OffsetDateTime::now_utc()).unwrap();
        let renewed = renew_local(&c, &input, &layout, &picked, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(renewed.len(), 3);
        for r in &renewed {
            assert_ne!(r.old_serial.as_deref(), Some(r.new_serial.as_str()));
        }
        // Nothing else changed, and the pki/kubeconfig phases accept the renewed files as is.
        let after = local_rows(&c, &input, &layout, OffsetDateTime::now_utc()).unwrap();
        for (b, a) in before.iter().zip(&after) {
            let renamed = renewed.iter().any(|r| r.name == b.name)
                || (b.name == "admin.conf (operator copy)");
            assert_eq!(b.serial != a.serial, renamed, "{}", b.name);
            assert_eq!(a.status, Status::Ok, "{a:?}");
        }
        phases_keep_everything(&input, &layout);
        let op = std::fs::read(operator_admin_conf(&c)).unwrap();
        assert_eq!(
            op,
            std::fs::read(layout.kubeconfig_dir().join("admin.conf")).unwrap()
        );
    }

    #[test]
    fn kubeconfig_certificate_forms() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, layout) = generated(dir.path());
        let k = Kubeconfig::load(&layout.kubeconfig_dir().join("admin.conf")).unwrap();
        let b64 = B64.encode(k.client_cert_pem().unwrap());
        let inline = format!("    client-certificate-data: {b64}\n");
        let quoted = format!("    client-certificate-data: \"{b64}\"\n");
        let (a, b) = b64.split_at(40);
        let folded = format!("    client-certificate-data: >-\n      {a}\n      {b}\n");
        for text in [inline, quoted, folded] {
            let ClientCert::Embedded(info) = kubeconfig_client_cert(text.as_bytes()).unwrap()
            else {
                panic!("no embedded certificate: {text}");
            };
            assert_eq!(info.subject, "kubernetes-admin", "{text}");
        }
        let file_ref = "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n";
        let ClientCert::File(path) = kubeconfig_client_cert(file_ref.as_bytes()).unwrap() else {
            panic!("not a file reference: {file_ref}");
        };
        let note = format!("client certificate in {path}");
        assert!(
            note.contains("/var/lib/kubelet/pki/kubelet-client-current.pem"),
            "{note}"
        );
        assert!(kubeconfig_client_cert(b"    token: abc\n").is_err());
    }

    #[test]
    fn restarts_follow_files() {
        let u = |p: &[&str]| {
            units_for(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(u(&["/etc/kubernetes/pki/etcd/server.crt"]), ["etcd"]);
        assert!(u(&["/etc/kubernetes/pki/etcd/healthcheck-client.crt"]).is_empty());
        assert_eq!(
            u(&["/etc/kubernetes/pki/apiserver-etcd-client.key"]),
            ["kube-apiserver"]
        );
        assert_eq!(u(&["/etc/kubernetes/scheduler.conf"]), ["kube-scheduler"]);
        assert_eq!(
            u(&["/etc/kubernetes/pki/apiserver.crt"]),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler"
            ]
        );
        assert_eq!(u(&["/etc/kubernetes/kube-proxy.conf"]), ["kube-proxy"]);
        // The cluster CA: also the local load balancer, whose health checks verify with it.
        assert_eq!(
            u(&["/etc/kubernetes/pki/ca.crt"]),
            [
                "haproxy",
                "kube-apiserver",
                "kube-controller-manager",
                "kubelet"
            ]
        );
        assert_eq!(
            u(&["/etc/kubernetes/pki/etcd/ca.crt"]),
            ["etcd", "kube-apiserver"]
        );
    }
}
