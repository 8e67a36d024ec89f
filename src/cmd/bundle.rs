//! `clusterkit bundle`: build and verify offline bundles of packages and binaries.
//!
//! `bundle build --out DIR` (`-d DIR`; `-o` is the global output format) puts the node packages the install needs (containerd, runc and their
//! dependencies missing from a minimal Debian 12) and any binaries (`--binaries DIR`, default
//! `$CLUSTERKIT_KUBE_BIN_DIR` when set; or `--kubernetes VERSION` downloads a release's binaries
//! from dl.k8s.io or `--kubernetes-mirror`, sha256-checked) into DIR with a checksummed
//! manifest.json. Point
//! cluster.yaml at it with `packages: { bundle: DIR }`; installs then upload from it over SSH.
//! Container images: by default the bundle also carries the images a node without a registry
//! needs — the pause image (under the tag the bundle's Kubernetes release expects) and the
//! busybox test workload, built from Debian material (see `clusterkit_installer::images`) — in
//! `DIR/images/`, covered by the manifest; the images phase imports them on every node. The
//! Kubernetes binaries' versions are read and recorded; they must be one release. `--no-images` leaves them out (nodes pull from a registry).
//! `bundle verify DIR` checks every file against the manifest.

use std::path::PathBuf;

use anyhow::Context;
use clusterkit_core::release::KubeVersion;
use clusterkit_installer::bundle::{self, BuildOptions, Bundle, ImageOptions, ReleaseOptions};
use clusterkit_installer::phases::network::NETWORK_PACKAGES;
use clusterkit_installer::phases::RUNTIME_PACKAGES;
use clusterkit_installer::release;

use super::Global;

#[derive(clap::Subcommand)]
pub enum BundleCommand {
    /// Download the packages (with dependencies), collect the binaries and add the container
    /// images into a directory.
    ///
    /// The Kubernetes binaries' versions are read (`--version`, `kubectl version --client -o
    /// json`) and recorded in manifest.json; they must all be one release (and the release of
    /// --kubernetes when given). Install refuses a bundle whose binaries are not the release
    /// kubernetes.version names.
    ///
    /// Images (default on): the pause image (from pause.c of Debian's kubernetes source, tagged
    /// as kubeadm of the bundle's release expects: registry.k8s.io/pause:3.2 for v1.20, 3.9 for
    /// v1.26–v1.30, 3.10.1 for v1.34; every tag when the bundle has no Kubernetes binaries) and
    /// the busybox test workload image (docker.io/library/busybox:clusterkit, from
    /// busybox-static) go into DIR/images/, built once into the image cache
    /// ($CLUSTERKIT_CACHE/images) and reused; the install imports them into containerd on every
    /// node, so no registry is needed. They are listed with their sha256 in manifest.json like
    /// every other file. A cluster whose runtime.sandbox_image is not in the bundle must be able
    /// to pull it: the install checks every node before any kubelet starts and fails naming it.
    Build {
        /// The bundle directory (created or refreshed).
        #[arg(short = 'd', long = "out")]
        out: PathBuf,
        /// dpkg status file of the nodes' base system (default: the sandbox's cached rootfs).
        #[arg(long)]
        base_status: Option<PathBuf>,
        /// Directory of binaries to include (repeatable). Default: $CLUSTERKIT_KUBE_BIN_DIR
        /// when set and --kubernetes is not given.
        #[arg(long = "binaries")]
        binaries: Vec<PathBuf>,
        /// Extra packages beyond the ones the install phases need.
        #[arg(long = "package")]
        packages: Vec<String>,
        /// Leave the container images out: the nodes pull pause (runtime.sandbox_image) and
        /// workload images from a registry or mirror instead.
        #[arg(long, conflicts_with = "image")]
        no_images: bool,
        /// An image archive of your own to carry as it is (repeatable): a registry export in
        /// OCI format (`ctr images export`, `skopeo copy … oci-archive:`, `podman save
        /// --format oci-archive`), one named image per archive. An image of the same name
        /// (an upstream kube-apiserver, pause, etcd…) is then not built; a control-plane image
        /// is imported where its component runs, any other image on every node (CoreDNS, say).
        #[arg(long = "image", value_name = "ARCHIVE")]
        image: Vec<PathBuf>,
        /// Download this Kubernetes release's binaries (kube-apiserver, controller-manager,
        /// scheduler, proxy, kubelet, kubectl, kubeadm) into the bundle, each checked against
        /// its published sha256. Use instead of --binaries.
        #[arg(long, value_name = "VERSION")]
        kubernetes: Option<String>,
        /// The release server (laid out like dl.k8s.io) for --kubernetes.
        #[arg(long, value_name = "URL", default_value = release::DEFAULT_BASE)]
        kubernetes_mirror: String,
    },
    /// Check every file of a bundle against its manifest.
    Verify { dir: PathBuf },
}

impl BundleCommand {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self {
            BundleCommand::Build {
                out,
                base_status,
                binaries,
                packages,
                no_images,
                image,
                kubernetes,
                kubernetes_mirror,
            } => {
                let release = kubernetes
                    .map(|v| -> anyhow::Result<ReleaseOptions> {
                        Ok(ReleaseOptions {
                            version: KubeVersion::parse(&v)
                                .with_context(|| format!("--kubernetes {v}"))?,
                            base: kubernetes_mirror,
                        })
                    })
                    .transpose()?;
                // Default binaries: $CLUSTERKIT_KUBE_BIN_DIR, unless a release is downloaded
                // (an explicit --binaries next to --kubernetes is refused by the build).
                let binaries = match std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR") {
                    Some(dir) if binaries.is_empty() && release.is_none() => vec![dir.into()],
                    _ => binaries,
                };
                // Everything the install phases install from packages: the runtime, Debian's
                // etcd for the etcd phase, and the CNI plugins for the host-gw network.
                let mut all: Vec<String> = RUNTIME_PACKAGES
                    .iter()
                    .chain(["etcd-server"].iter())
                    .chain(NETWORK_PACKAGES)
                    .map(|s| s.to_string())
                    .collect();
                for p in packages {
                    if !all.contains(&p) {
                        all.push(p);
                    }
                }
                let opts = BuildOptions {
                    out: out.clone(),
                    packages: all,
                    base_status: base_status.unwrap_or_else(bundle::default_base_status),
                    binary_dirs: binaries,
                    images: match no_images {
                        true => None,
                        false => Some(ImageOptions::from_env(&image)?),
                    },
                    release,
                };
                let manifest = tokio::task::spawn_blocking(move || bundle::build(&opts))
                    .await?
                    .with_context(|| format!("building the bundle in {}", out.display()))?;
                global.output.print(&manifest, || {
                    let mut text = String::new();
                    for p in &manifest.packages {
                        text += &format!("{:<24} {:<32} {}\n", p.name, p.version, p.file);
                    }
                    for b in &manifest.binaries {
                        let kind = if b.file.starts_with("images/") {
                            "(image)"
                        } else {
                            "(binary)"
                        };
                        text += &format!("{:<24} {:<32} {}\n", b.name, kind, b.file);
                    }
                    text + &format!("{}\n", out.join("manifest.json").display())
                })
            }
            BundleCommand::Verify { dir } => {
                let b = Bundle::load(&dir)?;
                b.verify()?;
                let images = b
                    .manifest
                    .binaries
                    .iter()
                    .filter(|f| f.file.starts_with("images/"))
                    .count();
                let (packages, binaries) = (
                    b.manifest.packages.len(),
                    b.manifest.binaries.len() - images,
                );
                let value = serde_json::json!({
                    "dir": dir, "ok": true, "packages": packages, "binaries": binaries,
                    "images": images,
                });
                global.output.print(&value, || {
                    format!(
                        "{}: {packages} packages, {binaries} binaries and {images} image files \
                         match the manifest\n",
                        dir.display()
                    )
                })
            }
        }
    }
}
