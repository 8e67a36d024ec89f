//! The installer: phases that take bare hosts to a running Kubernetes cluster over SSH, and the
//! PKI, kubeconfigs, version rules and offline bundles they rely on.

pub mod bundle;
pub mod certs;
pub mod csr;
pub mod images;
pub mod kube_api;
pub mod kubeconfig;
pub mod local;
pub mod node;
pub mod phases;
pub mod pki;
pub mod poll;
pub mod readiness;
pub mod release;
pub mod reset;
pub mod running;
pub mod skew;
pub mod status;
pub mod token;
pub mod upgrade;
pub mod versions;

/// A cluster.yaml text loaded as the unit tests need it: next to it a placeholder key `./k`
/// (0600, for `auth: { key_file: ./k }`) and an empty known_hosts; both go once it is loaded.
#[cfg(test)]
pub(crate) fn test_cluster(yaml: &str) -> clusterkit_core::config::Cluster {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "not used").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(dir.path().join("known_hosts"), "").unwrap();
    clusterkit_core::config::load_str(yaml, &dir.path().join("cluster.yaml"))
        .unwrap_or_else(|e| panic!("{e:?}"))
        .cluster
}
