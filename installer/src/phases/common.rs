//! Helpers shared by the cluster phases (`pki`, `etcd`, `control-plane`, `join`, `addons`):
//! per-host playbook variables computed in Rust, Kubernetes binaries from the offline bundle,
//! and the per-node component flags. (API clients are in [`crate::kube_api`], polling in
//! [`crate::poll`].)
//!
//! Limits: Kubernetes binaries come from the offline bundle only (its manifest's `binaries`, or
//! its `bin/` directory); installing them from a package repository is not implemented, and the
//! phases say so instead of guessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clusterkit_core::config::{Cluster, Host, Network, Packages};
use clusterkit_core::playbook::HostTarget;
use serde_json::{Map, Value};

use super::InstallError;
use crate::versions::{self, FlagInput};
use clusterkit_core::layout::{Component, NodeLayout};

/// Copies of `targets` whose `host` variables also hold what `extra` returns for them (an
/// object merged into the host's vars). Hosts `extra` returns `None` for are left out.
pub fn with_vars(
    targets: &[HostTarget],
    mut extra: impl FnMut(&HostTarget) -> Option<Map<String, Value>>,
) -> Vec<HostTarget> {
    targets
        .iter()
        .filter_map(|t| {
            let more = extra(t)?;
            let mut t = t.clone();
            if let Value::Object(vars) = &mut t.vars {
                vars.extend(more);
            }
            Some(t)
        })
        .collect()
}

/// The cluster.yaml host behind a playbook target.
pub fn host<'a>(cluster: &'a Cluster, target: &HostTarget) -> Option<&'a Host> {
    cluster.host(&target.name)
}

/// `https://<ip>:<client port>` of every etcd member, in cluster.yaml order.
pub fn etcd_client_urls(cluster: &Cluster) -> Vec<String> {
    NodeLayout::from_cluster(cluster).etcd_client_urls(cluster)
}

/// The flag input of one node: cluster.yaml's networks and versions, the node layout's paths.
pub fn flag_input(cluster: &Cluster, host: &Host) -> FlagInput {
    let k = &cluster.kubernetes;
    let mut input = FlagInput::new(cluster.kubernetes.version, &host.name, host.address);
    input.apiserver_port = NodeLayout::from_cluster(cluster).ports.apiserver;
    input.etcd_servers = etcd_client_urls(cluster);
    input.service_cidr = k.service_cidr.to_string();
    // host-gw assigns node slices itself (phases::network); the controller manager must not.
    input.pod_cidr = (k.network != Network::HostGw).then(|| k.pod_cidr.to_string());
    input.dns_domain = k.dns_domain.clone();
    input.cluster_name = cluster.name.clone();
    input.sandbox_image = cluster.runtime.sandbox_image.clone();
    input.apiserver_shutdown_delay = super::load_balancer::shutdown_delay(cluster);
    input
}

/// The rendered flags of `component` on `host`, or an install error naming the host.
pub fn flags(
    cluster: &Cluster,
    host: &Host,
    component: Component,
) -> Result<Vec<String>, InstallError> {
    versions::render_flags(component, &flag_input(cluster, host))
        .map_err(|e| InstallError::host(&host.name, format!("{component:?} flags"), e))
}

/// `{src, dest}` of binaries to put in the node's binary directory.
pub fn binary_files(cluster: &Cluster, names: &[&str]) -> Result<Vec<Value>, InstallError> {
    let layout = NodeLayout::from_cluster(cluster);
    Ok(bundle_binaries(cluster, names)?
        .into_iter()
        .map(|(name, path)| {
            let src = std::fs::canonicalize(&path).unwrap_or(path);
            serde_json::json!({ "name": name, "src": src.display().to_string(), "dest": layout.bin(&name) })
        })
        .collect())
}

/// Finds Kubernetes binaries in the offline bundle: an entry of its manifest's `binaries`
/// (by name or file name), else `<bundle>/bin/<name>`. Fails naming every missing binary and
/// every place searched.
pub fn bundle_binaries(
    cluster: &Cluster,
    names: &[&str],
) -> Result<BTreeMap<String, PathBuf>, InstallError> {
    let Packages::Bundle { dir } = &cluster.packages else {
        return Err(InstallError::BundleContent(format!(
            "Kubernetes binaries ({}) are installed from an offline bundle, and cluster.yaml \
             configures none: build one with `clusterkit bundle build -d DIR --kubernetes {}` \
             (downloads them from dl.k8s.io, or --kubernetes-mirror URL) and set \
             packages: {{ bundle: DIR }}",
            names.join(", "),
            cluster.kubernetes.version
        )));
    };
    let manifest = super::bundle(cluster)?;
    let mut found = BTreeMap::new();
    // Versions the bundle recorded when it was built (read again below for files without one).
    let mut recorded: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = Vec::new();
    for name in names {
        let hit = manifest.as_ref().and_then(|b| {
            b.manifest
                .binaries
                .iter()
                .find(|f| {
                    f.name == *name || Path::new(&f.file).file_name().is_some_and(|n| n == *name)
                })
                .map(|f| (b.dir.join(&f.file), f.version.clone()))
        });
        match hit.filter(|(p, _)| p.is_file()) {
            Some((p, version)) => {
                if let Some(v) = version {
                    recorded.insert(name.to_string(), v);
                }
                found.insert(name.to_string(), p);
            }
            None => rest.push(*name),
        }
    }
    if !rest.is_empty() {
        let dirs = vec![dir.join("bin")];
        let more = versions::locate_binaries(&rest, &dirs).map_err(|e| {
            InstallError::BundleContent(format!(
                "{e} (and not in {}'s `binaries`)",
                dir.join("manifest.json").display()
            ))
        })?;
        found.extend(more);
    }
    // The binaries must be the release cluster.yaml names: a bundle of another release would
    // start components whose flags and behaviour the rest of the install does not expect.
    let wanted = cluster.kubernetes.version;
    for (name, path) in &found {
        if !versions::KUBERNETES_BINARIES.contains(&name.as_str()) {
            continue;
        }
        let version = match recorded.get(name) {
            Some(v) => clusterkit_core::release::KubeVersion::parse(v)
                .map_err(|e| InstallError::BundleVersion(e.into())),
            None => versions::binary_version(path).map_err(InstallError::BundleVersion),
        }?;
        if version != wanted {
            return Err(InstallError::BundleVersion(
                versions::VersionError::WrongBinaryVersion {
                    path: path.clone(),
                    found: version.to_string(),
                    wanted,
                },
            ));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_host_vars() {
        let t = HostTarget {
            name: "n1".into(),
            address: "10.0.0.1".into(),
            roles: vec!["etcd".into()],
            exec: std::sync::Arc::new(clusterkit_core::exec::local::LocalExecutor::new(
                "n1",
                std::time::Duration::from_secs(5),
            )),
            vars: serde_json::json!({"name": "n1"}),
        };
        let out = with_vars(&[t.clone(), t], |_| {
            let mut m = Map::new();
            m.insert("x".into(), Value::from(1));
            Some(m)
        });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].vars, serde_json::json!({"name": "n1", "x": 1}));
    }

    /// A cluster at `version` installing from the offline bundle `bundle`.
    fn cluster_with_bundle(dir: &Path, version: &str, bundle: &Path) -> Cluster {
        let key = dir.join("id_ed25519");
        std::fs::write(&key, "not a key\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let yaml = format!(
            "name: demo\nhosts:\n  - {{ name: cp1, address: 10.213.0.11, roles: [control-plane, etcd, worker], auth: {{ key_file: ./id_ed25519 }} }}\nkubernetes: {{ version: {version} }}\npackages: {{ bundle: {} }}\n",
            bundle.display()
        );
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        clusterkit_core::config::load(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .cluster
    }

    /// A stand-in kubelet that reports `version` the way the real one does.
    fn kubelet_reporting(bin: &Path, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(bin).unwrap();
        let path = bin.join("kubelet");
        std::fs::write(&path, format!("#!/bin/sh\necho 'Kubernetes {version}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn bundle_binaries_of_another_release_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        kubelet_reporting(&bundle.join("bin"), "v1.28.7");
        // Recorded in the manifest when the bundle was built: refused without running it.
        let manifest = serde_json::json!({
            "format": 1, "created": "", "os": "debian-12", "arch": "amd64", "packages": [],
            "binaries": [{ "name": "kubelet", "file": "bin/kubelet", "sha256": "", "size": 0,
                           "version": "v1.28.7" }],
        });
        std::fs::write(bundle.join("manifest.json"), manifest.to_string()).unwrap();
        let c = cluster_with_bundle(tmp.path(), "v1.20.2", &bundle);
        let e = bundle_binaries(&c, &["kubelet"]).unwrap_err().to_string();
        assert!(
            e.contains("kubelet is Kubernetes v1.28.7, but kubernetes.version is v1.20.2"),
            "{e}"
        );
        let c = cluster_with_bundle(tmp.path(), "v1.28.7", &bundle);
        assert!(bundle_binaries(&c, &["kubelet"]).is_ok());
        // Not recorded (an older bundle, or bin/ alone): the binary is asked.
        let manifest = serde_json::json!({
            "format": 1, "created": "", "os": "debian-12", "arch": "amd64", "packages": [],
        });
        std::fs::write(bundle.join("manifest.json"), manifest.to_string()).unwrap();
        let c = cluster_with_bundle(tmp.path(), "v1.29.1", &bundle);
        let e = bundle_binaries(&c, &["kubelet"]).unwrap_err().to_string();
        assert!(
            e.contains("kubelet is Kubernetes v1.28.7, but kubernetes.version is v1.29.1"),
            "{e}"
        );
    }
}
