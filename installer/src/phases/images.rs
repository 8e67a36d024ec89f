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
//! cluster without bundled images imports nothing (its nodes pull). Each tarball is checked
//! against its recorded sha256 before anything is uploaded.
//!
//! The playbook (`playbooks/images.yaml`) is check-then-act per image: an image containerd
//! already lists under its name with the same manifest digest is skipped; otherwise the tarball
//! is uploaded to [`REMOTE_IMAGE_DIR`] and imported, and the import is verified by digest.
//!
//! Limits: images for this machine's architecture only; a node that lacks `ctr` (containerd's
//! CLI, part of Debian's containerd package) fails the phase with the command's error.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Packages, Profile};
use serde_json::{json, Value};

use super::{InstallError, Phase, PhaseContext};
use crate::images::{self, ImageManifest, Sources};

/// Where image tarballs are kept on the nodes (kept after import, so a re-import after an
/// image was deleted needs no upload).
pub const REMOTE_IMAGE_DIR: &str = "/var/cache/clusterkit/images";

/// The directory images are taken from for this cluster, and its verified manifest.
///
/// An offline bundle with `images/manifest.json` wins. Otherwise, with `profile: sandbox`, the
/// local cache, built when missing or damaged (building needs the Kubernetes source and
/// busybox-static, see [`crate::images`]). A production cluster without bundled images gets
/// none (`None`): its nodes pull from registries, and a locally built pause image must not
/// shadow the registry's under the same name unless the operator bundled it.
pub fn image_dir(
    cluster: &Cluster,
) -> Result<Option<(PathBuf, ImageManifest)>, images::ImageError> {
    if let Packages::Bundle { dir } = &cluster.packages {
        let in_bundle = dir.join("images");
        if in_bundle.join(images::MANIFEST_FILE).is_file() {
            let m = images::load(&in_bundle)?;
            images::verify(&in_bundle, &m)?;
            return Ok(Some((in_bundle, m)));
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

/// The images later phases need, each checked (and pulled when missing) by this phase on the
/// nodes that run it: the runtime's sandbox image and CoreDNS (where the addons phase deploys
/// it: not in the sandbox profile, which has no registry) everywhere, the static-pod control
/// plane's images on control-plane hosts.
pub fn required_images(cluster: &Cluster) -> Vec<Value> {
    let everywhere = |image: String| json!({ "image": image, "control_plane_only": false });
    let mut images = vec![everywhere(cluster.runtime.sandbox_image.clone())];
    if cluster.profile != Profile::Sandbox {
        images.push(everywhere(super::addons::coredns_image(cluster)));
    }
    images.extend(
        super::control_plane::static_pod_images(cluster)
            .into_iter()
            .map(|image| json!({ "image": image, "control_plane_only": true })),
    );
    images
}

/// The playbook's `images` variable: one object per image.
pub fn image_vars(dir: &Path, manifest: &ImageManifest) -> Value {
    Value::Array(
        manifest
            .images
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "digest": i.digest,
                    "file": i.file,
                    "path": dir.join(&i.file).to_string_lossy(),
                    // What the playbook's listing prints for an image already in place.
                    "key": format!("<{}@{}>", i.name, i.digest),
                })
            })
            .collect(),
    )
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
        // Building the cache compiles pause.c: keep it off the async workers.
        let found = tokio::task::spawn_blocking(move || image_dir(&cluster))
            .await
            .map_err(|e| InstallError::Task {
                what: "preparing the images",
                source: e,
            })??;
        let vars = match found {
            Some((dir, manifest)) => image_vars(&dir, &manifest),
            None => {
                tracing::info!(
                    "no images in the offline bundle (and not a sandbox): nodes pull from registries"
                );
                Value::Array(Vec::new())
            }
        };
        for play in &mut pb.plays {
            play.vars.insert("images".into(), vars.clone());
            play.vars
                .insert("image_dir".into(), json!(REMOTE_IMAGE_DIR));
            play.vars
                .insert("required_images".into(), json!(required_images(cx.cluster)));
        }
        cx.engine.run(&pb, cx.targets).await;
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
        let names = |c: &Cluster| -> Vec<(String, bool)> {
            required_images(c)
                .iter()
                .map(|i| {
                    (
                        i["image"].as_str().unwrap().to_string(),
                        i["control_plane_only"].as_bool().unwrap(),
                    )
                })
                .collect()
        };
        let prod = load("kubernetes: { version: v1.28.7 }\n");
        assert_eq!(
            names(&prod),
            [
                ("registry.k8s.io/pause:3.9".to_string(), false),
                ("registry.k8s.io/coredns/coredns:v1.10.1".to_string(), false),
                ("registry.k8s.io/kube-apiserver:v1.28.7".to_string(), true),
                (
                    "registry.k8s.io/kube-controller-manager:v1.28.7".to_string(),
                    true
                ),
                ("registry.k8s.io/kube-scheduler:v1.28.7".to_string(), true),
            ]
        );
        let sandbox = load("kubernetes: { version: v1.20.2, control_plane_mode: systemd, proxy_mode: iptables }\nprofile: sandbox\n");
        assert_eq!(
            names(&sandbox),
            [("registry.k8s.io/pause:3.2".to_string(), false)]
        );
    }

    #[test]
    fn vars_carry_the_listing_key_and_local_path() {
        let m = ImageManifest {
            format: 1,
            images: vec![ImageEntry {
                name: "registry.k8s.io/pause:3.2".into(),
                file: "pause_3.2.oci.tar".into(),
                sha256: "00".into(),
                size: 1,
                digest: "sha256:ab".into(),
                recipe: crate::images::RECIPE,
            }],
        };
        let v = image_vars(Path::new("/cache/images"), &m);
        assert_eq!(v[0]["key"], "<registry.k8s.io/pause:3.2@sha256:ab>");
        assert_eq!(v[0]["path"], "/cache/images/pause_3.2.oci.tar");
    }
}
