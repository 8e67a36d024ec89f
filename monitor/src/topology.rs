//! What the monitor works from: core's resolved [`Cluster`] (hosts and roles, the `monitor:`
//! section with its defaults, the backup store, SSH settings), and the few facts derived from
//! it that generators, collectors and `deploy` share: where the PKI clusterkit issued is,
//! which hosts run Prometheus, where Prometheus finds the exporter.
//!
//! Nothing here copies or re-defaults a setting: cluster.yaml is read, checked and given its
//! defaults by `clusterkit_core::config` alone (one parser, one set of diagnostics for every
//! command). Settings that are not keys of cluster.yaml (command-line tuning of the generated
//! files) belong to the generators' `Tuning`.

use std::path::{Path, PathBuf};

use clusterkit_core::config::{self, Cluster, Host, Role};

use crate::error::Result;

/// `address:port` of a host, with brackets around an IPv6 address.
pub fn endpoint(host: &Host, port: u16) -> String {
    std::net::SocketAddr::new(host.address, port).to_string()
}

/// Whether a host runs a kubelet: every Kubernetes node (control plane or worker). A host with
/// only the `etcd` or `monitor` role is not a node and has no kubelet to scrape.
pub fn runs_kubelet(host: &Host) -> bool {
    host.has_role(Role::ControlPlane) || host.has_role(Role::Worker)
}

/// Where the certificates clusterkit issued are kept (kubeadm's layout under `pki/`).
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// The cluster CA (signs the apiserver, kubelet and component serving certificates).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The etcd CA (signs etcd's server certificates).
    pub fn etcd_ca(&self) -> PathBuf {
        self.dir.join("etcd/ca.crt")
    }

    /// The client certificate used to read etcd's metrics and status: the dedicated
    /// `etcd/metrics-client` when the installer issued one, else `etcd/healthcheck-client`.
    pub fn etcd_metrics_client(&self) -> ClientCert {
        let (cert, key) = clusterkit_installer::pki::etcd_metrics_client(&self.dir);
        ClientCert { cert, key }
    }

    /// The client certificate for the apiserver, kubelets, scheduler and controller-manager
    /// metrics endpoints (kubeadm's `apiserver-kubelet-client`, which the kubelets trust and
    /// which is authorised on the apiserver).
    pub fn kube_client(&self) -> ClientCert {
        let (cert, key) = clusterkit_installer::pki::kube_metrics_client(&self.dir);
        ClientCert { cert, key }
    }
}

/// The cluster as the monitor sees it.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The resolved cluster: hosts, `monitor:` settings, backup store, SSH settings.
    pub cluster: Cluster,
    /// cluster.yaml's warnings (e.g. `monitor.tls: false`), for the command to print.
    pub warnings: Vec<String>,
}

impl Topology {
    /// Reads and validates cluster.yaml through `clusterkit_core::config`.
    pub fn load(path: &Path) -> Result<Topology> {
        let loaded = config::load(path)?;
        Ok(Topology {
            cluster: loaded.cluster,
            warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
        })
    }

    /// Parses cluster.yaml text as if it were the file at `path`.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Topology> {
        Ok(Topology::from_cluster(
            config::load_str(text, path)?.cluster,
        ))
    }

    /// The monitor's view of a resolved cluster.
    pub fn from_cluster(cluster: Cluster) -> Topology {
        Topology {
            cluster,
            warnings: Vec::new(),
        }
    }

    /// The `monitor:` settings, defaults filled in.
    pub fn monitor(&self) -> &config::Monitor {
        &self.cluster.monitor
    }

    pub fn pki(&self) -> Pki {
        Pki {
            dir: clusterkit_core::layout::StateLayout::from_cluster(&self.cluster).pki_dir(),
        }
    }

    pub fn hosts_with(&self, role: Role) -> impl Iterator<Item = &Host> + '_ {
        self.cluster.hosts.iter().filter(move |h| h.has_role(role))
    }

    /// Where Prometheus finds the exporter: the listen address itself, or every `monitor` host
    /// (first host if none) when the exporter listens on all addresses.
    pub fn exporter_targets(&self) -> Vec<(String, Option<String>)> {
        let addr = self.monitor().listen;
        if !addr.ip().is_unspecified() {
            return vec![(addr.to_string(), None)];
        }
        self.monitor_hosts()
            .into_iter()
            .map(|h| (endpoint(h, addr.port()), Some(h.name.clone())))
            .collect()
    }

    /// Hosts running Prometheus and Alertmanager: the `monitor` hosts, else the first host.
    pub fn monitor_hosts(&self) -> Vec<&Host> {
        let monitors: Vec<&Host> = self.hosts_with(Role::Monitor).collect();
        if monitors.is_empty() {
            self.cluster.hosts.iter().take(1).collect()
        } else {
            monitors
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const YAML: &str = r#"
name: demo
kubernetes: { version: v1.26.3 }
hosts:
  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: w1, address: 10.0.0.2, roles: [worker], auth: { agent: true } }
  - { name: m1, address: 10.0.0.3, roles: [monitor], auth: { agent: true } }
sysctls: { "net.core.somaxconn": "1024" }
backup: { store: "file:///srv/backups" }
monitor:
  listen: "0.0.0.0:9842"
  intervals: { etcd_secs: 5, scrape_secs: 30 }
  ports: { node_exporter: 9200 }
  etcd_quota_bytes: 8589934592
  backup_max_age_secs: 7200
  alertmanager:
    receivers:
      - { name: ops, webhook: { url: "http://127.0.0.1:9999/hook" } }
    critical_receiver: ops
"#;

    #[test]
    fn loads_hosts_state_dir_and_settings() {
        let t = Topology::from_yaml(Path::new("/etc/ck/cluster.yaml"), YAML).unwrap();
        let c = &t.cluster;
        let m = t.monitor();
        assert_eq!(c.state_dir, PathBuf::from("/etc/ck/demo-state"));
        assert_eq!(t.pki().dir, PathBuf::from("/etc/ck/demo-state/pki"));
        assert_eq!(c.hosts.len(), 3);
        assert_eq!(c.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(m.intervals.etcd_secs, 5);
        assert_eq!(m.intervals.evaluation_secs, 15);
        assert_eq!(m.intervals.scrape_secs, 30);
        assert_eq!(m.ports.node_exporter, 9200);
        assert_eq!(m.ports.etcd, 2379);
        assert_eq!(m.etcd_quota_bytes, 8 << 30);
        assert_eq!(
            crate::duration::PromDuration::secs(m.backup_max_age_secs).to_string(),
            "2h"
        );
        assert_eq!(
            c.backup.store.as_ref().map(|s| s.to_string()).as_deref(),
            Some("file:///srv/backups")
        );
        assert_eq!(
            t.exporter_targets(),
            vec![("10.0.0.3:9842".to_string(), Some("m1".to_string()))]
        );
        assert!(!runs_kubelet(&c.hosts[2]));
        assert!(runs_kubelet(&c.hosts[1]));
        assert_eq!(t.monitor_hosts()[0].name, "m1");
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let yaml = YAML.replace("10.0.0.3", "fd00::3");
        let t = Topology::from_yaml(Path::new("/etc/ck/cluster.yaml"), &yaml).unwrap();
        assert_eq!(endpoint(&t.cluster.hosts[2], 9100), "[fd00::3]:9100");
        assert_eq!(t.exporter_targets()[0].0, "[fd00::3]:9842");
    }
}
