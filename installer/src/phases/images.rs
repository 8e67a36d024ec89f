//! Phase `images`: the container images clusterkit builds itself (the pause image and the
//! busybox test workload, see [`crate::images`]) imported into containerd's `k8s.io` namespace
//! on every node, so pods start without any registry; then every image a later phase needs
//! ([`required_images`]: the runtime's sandbox image, CoreDNS on real clusters) is checked on
//! every node, and pulled when it is not there. An image that is neither imported nor
//! pullable fails the node here, naming the image and the way out, before any kubelet starts
//! (a kubelet would only retry the pull forever while every pod stays in ContainerCreating).
//!
//! Where the tarballs come from: the offline bundle's `images/` directory when cluster.yaml
//! names a bundle and it has an `images/manifest.json`; otherwise, in the sandbox profile, the
//! local image cache (`$CLUSTERKIT_CACHE/images`), built there from Debian material when
//! missing, with the pause image under the name `runtime.sandbox_image` gives; a production
//! cluster without bundled images imports nothing (its nodes pull). Each tarball the phase's
//! hosts import is checked against its recorded sha256 before anything is uploaded.
//!
//! The playbook (`playbooks/images.yaml`) is check-then-act per image: an image containerd
//! already lists under its name with the same manifest digest is skipped; otherwise the tarball
//! is uploaded to [`REMOTE_IMAGE_DIR`] and imported, and the import is verified by digest.
//!
//! Limits: images for this machine's architecture only; a node that lacks `ctr` (containerd's
//! CLI, part of Debian's containerd package) fails the phase with the command's error.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Host, Packages, Profile};
use clusterkit_core::release::DEFAULT_IMAGE_REPOSITORY;
use serde_json::{json, Map, Value};

use super::common::with_vars;
use super::{InstallError, Phase, PhaseContext};
use crate::images::{self, ImageManifest, Sources};

/// Where image tarballs are kept on the nodes (kept after import, so a re-import after an
/// image was deleted needs no upload).
pub const REMOTE_IMAGE_DIR: &str = "/var/cache/clusterkit/images";

/// The directory images are taken from for this cluster, and its manifest.
///
/// An offline bundle with `images/manifest.json` wins; its tarballs are not hashed here (a
/// bundle carries ~300 MB of control-plane images that a systemd-mode cluster never imports):
/// the phase verifies those its hosts import ([`images::verify_entries`]). Otherwise, with
/// `profile: sandbox`, the local cache, built when missing or damaged (building needs the
/// Kubernetes source and busybox-static, see [`crate::images`]) and verified. A production
/// cluster without bundled images gets none (`None`): its nodes pull from registries, and a
/// locally built pause image must not shadow the registry's under the same name unless the
/// operator bundled it.
pub fn image_dir(
    cluster: &Cluster,
) -> Result<Option<(PathBuf, ImageManifest)>, images::ImageError> {
    if let Packages::Bundle { dir } = &cluster.packages {
        let in_bundle = dir.join("images");
        if in_bundle.join(images::MANIFEST_FILE).is_file() {
            return Ok(Some((in_bundle.clone(), images::load(&in_bundle)?)));
        }
    }
    if cluster.profile != Profile::Sandbox {
        return Ok(None);
    }
    let cache = images::cache_dir();
    let m = images::ensure(
        &cache,
        &Sources::from_env(),
        std::slice::from_ref(&cluster.runtime.sandbox_image),
    )?;
    Ok(Some((cache, m)))
}

/// The component images `host` runs: those of its static pods
/// ([`super::control_plane::static_pod_images`]) and kube-proxy's where it runs as kubeadm's
/// DaemonSet ([`super::addons::kube_proxy_daemonset`]: on every node).
pub fn component_images(cluster: &Cluster, host: &Host) -> Vec<String> {
    let mut images = super::control_plane::static_pod_images(cluster, host);
    if super::addons::kube_proxy_daemonset(cluster) {
        images.push(super::addons::kube_proxy_image(cluster));
    }
    images
}

/// The images later phases need on `host`, each checked (and pulled when missing) by this
/// phase: the runtime's sandbox image and CoreDNS (where the addons phase deploys it: not in
/// the sandbox profile, which has no registry) everywhere, and the host's component images
/// ([`component_images`]).
pub fn required_images(cluster: &Cluster, host: &Host) -> Vec<String> {
    let mut images = vec![cluster.runtime.sandbox_image.clone()];
    if cluster.profile != Profile::Sandbox {
        images.push(super::addons::coredns_image(cluster));
    }
    images.extend(component_images(cluster, host));
    images
}

/// The name `cluster` runs a bundled image under. `bundle build` tags the pause and
/// control-plane images in the default repository (`registry.k8s.io/…`); a cluster with
/// another `kubernetes.image_repository` names them there (its manifests, DaemonSet and
/// sandbox image default do), so they are tagged under that name too. Other images
/// (busybox) keep theirs.
pub fn cluster_name(cluster: &Cluster, bundled: &str) -> String {
    let repository = cluster.kubernetes.image_repository.trim_end_matches('/');
    match bundled
        .strip_prefix(DEFAULT_IMAGE_REPOSITORY)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rest) => format!("{repository}/{rest}"),
        None => bundled.to_string(),
    }
}

/// The playbook's `host.images` variable of `host`: one object per image of the manifest it
/// imports — every image but the component ones, which only the hosts that run them import
/// ([`component_images`]; a systemd-mode cluster imports none of them). `name` is the
/// image's name in this cluster ([`cluster_name`]), `bundled` its name in the tarball.
pub fn image_vars(dir: &Path, manifest: &ImageManifest, cluster: &Cluster, host: &Host) -> Value {
    Value::Array(
        imported(manifest, cluster, host)
            .map(|i| {
                let name = cluster_name(cluster, &i.name);
                json!({
                    // What the playbook's listing prints for an image already in place.
                    "key": format!("<{name}@{}>", i.digest),
                    "name": name,
                    "bundled": i.name,
                    "digest": i.digest,
                    "file": i.file,
                    "path": dir.join(&i.file).to_string_lossy(),
                })
            })
            .collect(),
    )
}

/// The images of `manifest` that `host` imports: every image but the component ones, which
/// only the hosts that run them import ([`component_images`]).
fn imported<'m>(
    manifest: &'m ImageManifest,
    cluster: &'m Cluster,
    host: &Host,
) -> impl Iterator<Item = &'m images::ImageEntry> {
    let components = component_images(cluster, host);
    manifest.images.iter().filter(move |i| {
        i.component.is_none() || components.contains(&cluster_name(cluster, &i.name))
    })
}

/// `images`: see the module docs.
pub struct ImagesPhase;

#[async_trait]
impl Phase for ImagesPhase {
    fn name(&self) -> &'static str {
        "images"
    }
    fn describe(&self) -> &'static str {
        "pause and busybox images (built from Debian material) imported into containerd; every image a phase needs present or pulled"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        let mut pb = clusterkit_core::playbook::load(cx.library, "images")?;
        let cluster = cx.cluster.clone();
        let hosts: Vec<String> = cx.targets.iter().map(|t| t.name.clone()).collect();
        // Building the cache compiles pause.c, verifying hashes tarballs: keep both off the
        // async workers. Only the tarballs these hosts import are hashed.
        let found = tokio::task::spawn_blocking(move || {
            let found = image_dir(&cluster)?;
            if let Some((dir, manifest)) = &found {
                let mut files = std::collections::BTreeSet::new();
                let used = hosts
                    .iter()
                    .filter_map(|h| cluster.host(h))
                    .flat_map(|h| imported(manifest, &cluster, h))
                    .filter(|i| files.insert(i.file.clone()));
                images::verify_entries(dir, used)?;
            }
            Ok::<_, images::ImageError>(found)
        })
        .await
        .map_err(|e| InstallError::Task {
            what: "preparing the images",
            source: e,
        })??;
        if found.is_none() {
            tracing::info!(
                "no images in the offline bundle (and not a sandbox): nodes pull from registries"
            );
        }
        for play in &mut pb.plays {
            play.vars
                .insert("image_dir".into(), json!(REMOTE_IMAGE_DIR));
        }
        let targets = with_vars(cx.targets, |t| {
            let h = cx.cluster.host(&t.name)?;
            let mut m = Map::new();
            let images = match &found {
                Some((dir, manifest)) => image_vars(dir, manifest, cx.cluster, h),
                None => Value::Array(Vec::new()),
            };
            m.insert("images".into(), images);
            m.insert(
                "required_images".into(),
                json!(required_images(cx.cluster, h)),
            );
            Some(m)
        });
        cx.engine.run(&pb, &targets).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageEntry;

    #[test]
    fn required_images_follow_the_profile_and_the_control_plane_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id_ed25519");
        std::fs::write(&key, "not a key\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let load = |extra: &str| {
            let path = tmp.path().join("cluster.yaml");
            std::fs::write(
                &path,
                format!("name: demo\nhosts:\n  - {{ name: cp1, address: 10.213.0.11, roles: [control-plane, etcd, worker], auth: {{ key_file: ./id_ed25519 }} }}\n{extra}"),
            )
            .unwrap();
            clusterkit_core::config::load(&path)
                .unwrap_or_else(|e| panic!("{e}"))
                .cluster
        };
        let names = |c: &Cluster| required_images(c, c.host("cp1").unwrap());
        let prod = load("kubernetes: { version: v1.28.7 }\n");
        assert_eq!(
            names(&prod),
            [
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io/coredns/coredns:v1.10.1",
                "registry.k8s.io/kube-apiserver:v1.28.7",
                "registry.k8s.io/kube-controller-manager:v1.28.7",
                "registry.k8s.io/kube-scheduler:v1.28.7",
                "registry.k8s.io/etcd:3.5.10-0",
                // kubeadm's kube-proxy DaemonSet (static-pod mode, the default).
                "registry.k8s.io/kube-proxy:v1.28.7",
            ]
        );
        let sandbox = load("kubernetes: { version: v1.20.2, control_plane_mode: systemd, proxy_mode: iptables }\nprofile: sandbox\n");
        assert_eq!(names(&sandbox), ["registry.k8s.io/pause:3.2"]);
    }

    #[test]
    fn vars_carry_the_listing_key_and_local_path_and_control_plane_images_go_where_they_run() {
        let entry = |name: &str, component: Option<&str>| ImageEntry {
            name: name.into(),
            file: crate::images::file_name(name),
            sha256: "00".into(),
            size: 1,
            digest: "sha256:ab".into(),
            recipe: crate::images::RECIPE,
            component: component.map(str::to_string),
            source: None,
        };
        let m = ImageManifest {
            format: 1,
            images: vec![
                entry("registry.k8s.io/pause:3.2", None),
                entry(
                    "registry.k8s.io/kube-apiserver:v1.20.2",
                    Some("kube-apiserver"),
                ),
                entry("registry.k8s.io/etcd:3.4.13-0", Some("etcd")),
                entry("registry.k8s.io/kube-proxy:v1.20.2", Some("kube-proxy")),
                entry(
                    "registry.k8s.io/kube-apiserver:v1.19.0",
                    Some("kube-apiserver"),
                ),
            ],
        };
        let cluster = |mode: &str| {
            crate::test_cluster(&format!(
                "name: demo\nhosts:\n  - {{ name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: {{ key_file: ./k }} }}\n  - {{ name: w1, address: 10.0.0.12, roles: [worker, etcd], auth: {{ key_file: ./k }} }}\nkubernetes: {{ version: v1.20.2, control_plane_mode: {mode} }}\n"
            ))
        };
        let names = |c: &Cluster, host: &str| -> Vec<String> {
            let v = image_vars(Path::new("/cache/images"), &m, c, c.host(host).unwrap());
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        };
        let sp = cluster("static-pod");
        let v = image_vars(Path::new("/cache/images"), &m, &sp, sp.host("cp1").unwrap());
        assert_eq!(v[0]["key"], "<registry.k8s.io/pause:3.2@sha256:ab>");
        assert_eq!(v[0]["path"], "/cache/images/pause_3.2.oci.tar");
        assert_eq!(
            names(&sp, "cp1"),
            [
                "registry.k8s.io/pause:3.2",
                "registry.k8s.io/kube-apiserver:v1.20.2",
                "registry.k8s.io/etcd:3.4.13-0",
                "registry.k8s.io/kube-proxy:v1.20.2"
            ]
        );
        // An etcd host without the control plane runs etcd under systemd: no etcd image, only
        // kube-proxy's (kubeadm's DaemonSet runs on every node).
        assert_eq!(
            names(&sp, "w1"),
            [
                "registry.k8s.io/pause:3.2",
                "registry.k8s.io/kube-proxy:v1.20.2"
            ]
        );
        let sd = cluster("systemd");
        assert_eq!(names(&sd, "cp1"), ["registry.k8s.io/pause:3.2"]);
        // Another image_repository: the same images, named there, imported from the bundle's
        // names (busybox keeps its own).
        let mirror = crate::test_cluster(
            "name: demo\nhosts:\n  - { name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: { key_file: ./k } }\nkubernetes: { version: v1.20.2, control_plane_mode: static-pod, image_repository: mirror.example/k8s }\n",
        );
        let v = image_vars(Path::new("/i"), &m, &mirror, mirror.host("cp1").unwrap());
        assert_eq!(
            names(&mirror, "cp1"),
            [
                "mirror.example/k8s/pause:3.2",
                "mirror.example/k8s/kube-apiserver:v1.20.2",
                "mirror.example/k8s/etcd:3.4.13-0",
                "mirror.example/k8s/kube-proxy:v1.20.2"
            ]
        );
        assert_eq!(v[1]["bundled"], "registry.k8s.io/kube-apiserver:v1.20.2");
        assert_eq!(
            v[1]["key"],
            "<mirror.example/k8s/kube-apiserver:v1.20.2@sha256:ab>"
        );
        assert_eq!(
            cluster_name(&mirror, crate::images::BUSYBOX_IMAGE),
            crate::images::BUSYBOX_IMAGE
        );
    }
}
