//! Container images without a registry: the two images the project's own clusters need, built
//! from Debian material into OCI image tarballs that `ctr -n k8s.io images import` accepts.
//!
//! - the pause image, under the names the cluster asks for ([`pause_image`]: kubeadm's tag for
//!   the Kubernetes release, `registry.k8s.io/pause:3.2` for v1.20, `…:3.9` for v1.26–v1.30,
//!   or whatever `runtime.sandbox_image` says in the sandbox): `build/pause/linux/pause.c` from
//!   Debian's `kubernetes` source package, compiled statically with gcc and the flags of
//!   upstream's `build/pause/Makefile` (`-Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV)`;
//!   there is no git in a source tarball, so `REV` is `clusterkit`). The binary says `v3.4` (the
//!   source's TAG) whatever the image's tag: pause does one thing (hold the pod's namespaces
//!   and reap zombies) the same way in every release; the tag is the one kubelet and containerd
//!   ask for.
//! - [`BUSYBOX_IMAGE`] (`docker.io/library/busybox:clusterkit`), a test workload: the static
//!   `/bin/busybox` of Debian's `busybox-static` with a symlink per applet (sh, httpd, nc,
//!   ping, sleep, …), `/bin/wget` a wrapper that gives busybox's wget the `-T` timeout Debian's
//!   build lacks ([`WGET_WRAPPER`]), `/etc/passwd` and `/etc/group` for root and nobody, and an
//!   empty `/var/www`.
//!
//! - the control-plane images ([`ComponentInput`], [`component_spec`]): kube-apiserver,
//!   kube-controller-manager, kube-scheduler, kube-proxy and etcd, each one layer with the
//!   binary in `/usr/local/bin` (as upstream's images have it) and, for a dynamically linked
//!   binary (Debian's etcd), the shared libraries and loader `ldd` names, at the paths the
//!   binary asks for; `/tmp`; config with the binary as Entrypoint, `PATH` and User `0`.
//!   Tagged as kubeadm names them ([`component_image`]): `registry.k8s.io/kube-apiserver:v1.20.2`,
//!   and etcd with kubeadm's etcd tag for the release (`etcd:3.4.13-0` for v1.20) whatever
//!   etcd release the binary is (Debian 12's etcd-server is 3.4.23): the static-pod manifests
//!   and kubeadm ask for that tag. The Kubernetes binaries built here are static Go binaries
//!   (`ldd`: "not a dynamic executable"); kube-proxy's image also carries this machine's
//!   iptables, which kube-proxy runs ([`iptables_files`]).
//!
//! Names are fully qualified because kubelet normalises image names before looking them up.
//!
//! Each image is one OCI layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`): one
//! uncompressed layer (so its digest is also its diff_id), an image config (Entrypoint/Cmd,
//! rootfs with the diff_id), a manifest, and an index whose entry carries
//! `io.containerd.image.name` and `org.opencontainers.image.ref.name`. Everything is built
//! here, deterministically (sorted entries, mtime 0, owner root): the same inputs give the same
//! bytes, so the manifest digest containerd reports identifies the content.
//!
//! A directory of images (the cache `$CLUSTERKIT_CACHE/images/`, or `images/` of an offline
//! bundle) holds the tarballs and a `manifest.json` ([`ImageManifest`]) with each tarball's
//! sha256 and size and the image's manifest digest (what `ctr images ls` shows as DIGEST).
//!
//! Limits: linux/amd64-style single-platform images of this machine's architecture; building
//! needs gcc with a static libc (libc6-dev), `tar` and the source tarball that
//! `scripts/build-kube.sh` downloads. A dynamic binary's libraries are this machine's (found
//! with `ldd`): right for nodes of the same Debian release, which is what bundles are for.
//! Images are tagged in the default repository (`registry.k8s.io`); the `images` phase tags
//! them under a cluster's own `kubernetes.image_repository` on the nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::local::{self, file_err, FileError, ToolError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The repository kubeadm's pause images live in (`registry.k8s.io/pause:<tag>`).
pub const PAUSE_REPOSITORY: &str = "registry.k8s.io/pause";

/// `registry.k8s.io/pause:<tag>`.
pub fn pause_image(tag: &str) -> String {
    format!("{PAUSE_REPOSITORY}:{tag}")
}

/// The pause image kubeadm of Kubernetes `1.<minor>.<patch>` uses.
pub fn pause_image_for(minor: u32, patch: u32) -> String {
    pause_image(clusterkit_core::release::images(minor, patch).pause)
}

/// Every pause image of the releases clusterkit installs (one per distinct tag), for an
/// offline bundle that does not say which release it is for.
pub fn every_pause_image() -> Vec<String> {
    let mut names: Vec<String> = (clusterkit_core::release::MIN_MINOR
        ..=clusterkit_core::release::MAX_MINOR)
        .map(|minor| pause_image_for(minor, 0))
        .collect();
    names.dedup();
    names
}

/// The test workload image.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:clusterkit";

/// The index file of an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// `REV` in the pause binary's version string (upstream takes it from `git describe`).
const PAUSE_REV: &str = "clusterkit";

/// What can go wrong building or reading images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Io(#[from] FileError),

    #[error(transparent)]
    Command(#[from] ToolError),

    #[error(
        "no Kubernetes source in {dir} (neither build/pause/linux/pause.c nor a \
         kubernetes_*.orig.tar.gz): run scripts/build-kube.sh (it keeps Debian's source \
         package there) or set CLUSTERKIT_KUBE_SRC"
    )]
    NoKubeSource { dir: PathBuf },

    #[error("{path} is not a statically linked executable (install busybox-static)")]
    NotStatic { path: PathBuf },

    #[error("{path}: {source}")]
    ManifestJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A manifest that parses but names something clusterkit refuses, in words.
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },

    #[error("{path} does not match {manifest} (size or sha256 differs): rebuild the images")]
    Mismatch { path: PathBuf, manifest: PathBuf },

    /// An image archive the operator gave that is not one named OCI image.
    #[error(
        "{path}: {message} (an OCI image archive is expected, as `ctr images export`, `skopeo \
         copy … oci-archive:` or `podman save --format oci-archive` write it)"
    )]
    Archive { path: PathBuf, message: String },

    /// The build machine's iptables, which the kube-proxy image carries, is not usable.
    #[error(
        "{path}: {message} (kube-proxy's image carries this machine's iptables: install iptables)"
    )]
    Iptables { path: PathBuf, message: String },
}

/// `manifest.json` of an image directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageManifest {
    /// Format version (1).
    pub format: u32,
    /// Every image tarball in the directory.
    pub images: Vec<ImageEntry>,
}

/// One image tarball.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageEntry {
    /// Fully qualified name containerd imports it under (`registry.k8s.io/pause:3.2`).
    pub name: String,
    /// Tarball path relative to the directory.
    pub file: String,
    /// sha256 of the tarball (hex), checked before upload.
    pub sha256: String,
    /// Size of the tarball in bytes.
    pub size: u64,
    /// The image manifest's digest (`sha256:…`): what `ctr images ls` shows as DIGEST.
    pub digest: String,
    /// The [`RECIPE`] the image was built with; an image of another recipe is rebuilt.
    #[serde(default)]
    pub recipe: u32,
    /// For a control-plane image, the command it runs (`kube-apiserver`, `etcd`): only the
    /// hosts that run that component import it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// sha256 over the layer's inputs (paths and contents) of a control-plane image: a
    /// changed binary or library rebuilds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The version of how the images are made from their inputs. Bump it whenever the same inputs
/// would give other bytes (a file added to an image, a changed config): cached and bundled
/// images of an older recipe are then rebuilt instead of reused.
pub const RECIPE: u32 = 3;

/// One file system entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// Everything that makes an image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Fully qualified name.
    pub name: String,
    /// Layer contents: path without leading `/` → entry. A BTreeMap, so the layer is sorted
    /// and parents (`bin`) come before children (`bin/sh`).
    pub files: BTreeMap<String, Entry>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// The config's `User` (empty: none, the runtime's default).
    pub user: String,
    /// GOARCH-style architecture (`amd64`).
    pub architecture: String,
}

/// An image built in memory.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub name: String,
    /// The OCI layout as a tar.
    pub archive: Vec<u8>,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the (uncompressed) layer: its digest and its diff_id.
    pub layer_digest: String,
    /// `sha256:…` of the image config.
    pub config_digest: String,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// This machine's architecture in OCI (GOARCH) words.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A deterministic tar: entries in the given order, mtime 0, owner root, no user names.
fn tar_of<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Entry)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        // Writing into a Vec cannot fail on I/O; a path too long for ustar would, and the
        // paths here are short and fixed — still, keep the error visible in debug builds.
        let r = match entry {
            Entry::Dir { mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
            Entry::File { mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
            }
            Entry::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
            }
        };
        debug_assert!(r.is_ok(), "tar entry {path}: {r:?}");
    }
    b.into_inner().unwrap_or_default()
}

/// Builds the OCI layout tar of an image.
pub fn build_image(spec: &ImageSpec) -> BuiltImage {
    let layer = tar_of(spec.files.iter().map(|(p, e)| (p.as_str(), e)));
    let layer_digest = digest(&layer);
    let mut config_section = serde_json::Map::new();
    config_section.insert("Env".into(), json!(spec.env));
    if !spec.entrypoint.is_empty() {
        config_section.insert("Entrypoint".into(), json!(spec.entrypoint));
    }
    if !spec.cmd.is_empty() {
        config_section.insert("Cmd".into(), json!(spec.cmd));
    }
    if !spec.user.is_empty() {
        config_section.insert("User".into(), json!(spec.user));
    }
    config_section.insert("WorkingDir".into(), json!("/"));
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": spec.architecture,
        "os": "linux",
        "config": config_section,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "clusterkit (installer/src/images.rs)" }],
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = digest(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_digest = digest(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": spec.architecture, "os": "linux" },
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": spec.name,
            },
        }],
    });
    let index = serde_json::to_vec(&index).unwrap_or_default();
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let mut outer: BTreeMap<String, Entry> = BTreeMap::new();
    let file = |data: Vec<u8>| Entry::File { mode: 0o644, data };
    outer.insert("blobs".into(), Entry::Dir { mode: 0o755 });
    outer.insert("blobs/sha256".into(), Entry::Dir { mode: 0o755 });
    outer.insert(blob(&layer_digest), file(layer));
    outer.insert(blob(&config_digest), file(config));
    outer.insert(blob(&manifest_digest), file(manifest));
    outer.insert("index.json".into(), file(index));
    outer.insert(
        "oci-layout".into(),
        file(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    BuiltImage {
        name: spec.name.clone(),
        archive: tar_of(outer.iter().map(|(p, e)| (p.as_str(), e))),
        manifest_digest,
        layer_digest,
        config_digest,
    }
}

/// The pause image around a static pause binary, named `name`.
pub fn pause_spec(pause: Vec<u8>, name: &str) -> ImageSpec {
    let mut files = BTreeMap::new();
    files.insert(
        "pause".to_string(),
        Entry::File {
            mode: 0o755,
            data: pause,
        },
    );
    ImageSpec {
        name: name.to_string(),
        files,
        entrypoint: vec!["/pause".into()],
        cmd: vec![],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        user: String::new(),
        architecture: oci_arch().into(),
    }
}

/// `/bin/wget` of the busybox image: Debian 12's busybox is built without wget's timeout
/// option and crashes (SIGSEGV) when given `-T`, the first thing an operator types in a test
/// pod; this wrapper takes the option and runs busybox's wget under busybox's `timeout`.
pub const WGET_WRAPPER: &str = include_str!("../assets/busybox-wget.sh");

/// The busybox image: the binary, one symlink per applet in `/bin` (`wget` is
/// [`WGET_WRAPPER`]), a minimal `/etc`.
pub fn busybox_spec(busybox: Vec<u8>, applets: &[String]) -> ImageSpec {
    let mut files = BTreeMap::new();
    let dir = |mode| Entry::Dir { mode };
    for d in ["bin", "etc", "root", "var", "var/www"] {
        files.insert(d.to_string(), dir(if d == "root" { 0o700 } else { 0o755 }));
    }
    files.insert("tmp".to_string(), dir(0o1777));
    files.insert(
        "bin/busybox".to_string(),
        Entry::File {
            mode: 0o755,
            data: busybox,
        },
    );
    files.insert(
        "bin/wget".to_string(),
        Entry::File {
            mode: 0o755,
            data: WGET_WRAPPER.as_bytes().to_vec(),
        },
    );
    for a in applets {
        // Applet names are plain words; anything else (a path) would escape /bin.
        if a.is_empty()
            || a == "busybox"
            || a == "wget"
            || !a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.[".contains(&b))
        {
            continue;
        }
        files.insert(
            format!("bin/{a}"),
            Entry::Symlink {
                target: "busybox".into(),
            },
        );
    }
    files.insert(
        "etc/passwd".to_string(),
        Entry::File {
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
        },
    );
    files.insert(
        "etc/group".to_string(),
        Entry::File {
            mode: 0o644,
            data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        },
    );
    ImageSpec {
        name: BUSYBOX_IMAGE.to_string(),
        files,
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        env: vec!["PATH=/bin".into()],
        user: String::new(),
        architecture: oci_arch().into(),
    }
}

/// Where a control-plane binary lives in its image (upstream's images keep it there too).
pub const COMPONENT_BIN_DIR: &str = "usr/local/bin";

/// The user the control-plane images run as: root, as kubeadm's static pods run them — the
/// components read keys under /etc/kubernetes/pki that only root may read.
pub const COMPONENT_USER: &str = "0";

/// `<repository>/<name>:<tag>`, as kubeadm names its images.
pub fn component_image(repository: &str, name: &str, tag: &str) -> String {
    format!("{}/{name}:{tag}", repository.trim_end_matches('/'))
}

/// The Kubernetes components that get an image, by binary name (etcd is the other one).
pub const KUBE_COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// The etcd image kubeadm names for Kubernetes `version`, in `repository`.
pub fn etcd_image(repository: &str, version: clusterkit_core::release::KubeVersion) -> String {
    let tag = clusterkit_core::release::images(version.minor, version.patch).etcd;
    component_image(repository, "etcd", tag)
}

/// The component a control-plane image runs, from its name (`…/kube-apiserver:v1.20.2` →
/// `kube-apiserver`, `…/etcd:3.4.13-0` → `etcd`); `None` for any other image.
pub fn component_of(image: &str) -> Option<String> {
    let last = image.rsplit('/').next()?;
    let name = last.split([':', '@']).next()?;
    (KUBE_COMPONENTS.contains(&name) || name == "etcd").then(|| name.to_string())
}

/// An image archive an operator brings (a registry export): its name and the digest containerd
/// lists after importing it, read from the archive's `index.json` — which must describe one
/// image, named with a full reference (`registry/path:tag`) by containerd's
/// `io.containerd.image.name` annotation or by `org.opencontainers.image.ref.name`.
pub fn read_archive(path: &Path) -> Result<(String, String), ImageError> {
    let bad = |message: String| ImageError::Archive {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(file_err(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut index = None;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("reading the tar archive: {e}")))?;
        let at = entry.path().map(|p| p.to_path_buf()).unwrap_or_default();
        if at == Path::new("index.json") || at == Path::new("./index.json") {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)
                .map_err(|e| bad(format!("reading index.json: {e}")))?;
            index = Some(data);
            break;
        }
    }
    let index = index.ok_or_else(|| bad("no index.json in it".into()))?;
    let index: serde_json::Value =
        serde_json::from_slice(&index).map_err(|e| bad(format!("index.json is not JSON: {e}")))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let [m] = manifests.as_slice() else {
        return Err(bad(format!(
            "index.json describes {} images; one per archive is supported",
            manifests.len()
        )));
    };
    let digest = m["digest"]
        .as_str()
        .filter(|d| d.starts_with("sha256:"))
        .ok_or_else(|| bad("the image in index.json has no sha256 digest".into()))?;
    // A full reference (with its registry): the kubelet asks containerd for exactly that name.
    let annotation = |key: &str| {
        m["annotations"][key]
            .as_str()
            .filter(|r| r.contains('/'))
            .map(str::to_string)
    };
    let name = annotation("io.containerd.image.name")
        .or_else(|| annotation("org.opencontainers.image.ref.name"))
        .ok_or_else(|| {
            bad("the image in index.json has no full name (registry/path:tag) in its io.containerd.image.name or org.opencontainers.image.ref.name annotation".into())
        })?;
    Ok((name, digest.to_string()))
}

/// One control-plane image to build: its name and the binary it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInput {
    /// Fully qualified image name (`registry.k8s.io/kube-apiserver:v1.20.2`).
    pub image: String,
    /// The binary; its file name is the command (`kube-apiserver`).
    pub binary: PathBuf,
}

impl ComponentInput {
    /// The command the image runs: the binary's file name.
    pub fn command(&self) -> String {
        self.binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The files `ldd` says a dynamic binary loads (libraries and the loader), absolute paths.
pub fn ldd_paths(output: &str) -> Vec<String> {
    let mut out: Vec<String> = output
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`;
            // the vDSO (`linux-vdso.so.1 (0x…)`) has no file.
            let path = match l.split_once("=> ") {
                Some((_, rest)) => rest,
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The layer's files of a control-plane image: the binary at
/// `usr/local/bin/<command>` and, when it is dynamically linked, what `ldd` lists (read
/// through symlinks, stored at the path the loader looks for). Paths without leading `/`.
pub fn component_files(input: &ComponentInput) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let data = std::fs::read(&input.binary).map_err(file_err(&input.binary))?;
    let mut files = Vec::new();
    if !is_static_elf(&data) {
        let out = run(Command::new("ldd").arg(&input.binary).env("LC_ALL", "C"))?;
        for lib in ldd_paths(&String::from_utf8_lossy(&out)) {
            let p = Path::new(&lib);
            let bytes = std::fs::read(p).map_err(file_err(p))?;
            files.push((lib.trim_start_matches('/').to_string(), bytes));
        }
    }
    files.push((format!("{COMPONENT_BIN_DIR}/{}", input.command()), data));
    if input.command() == KUBE_PROXY {
        files.extend(iptables_files(Path::new(IPTABLES))?);
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(files)
}

/// The component whose image also carries iptables ([`iptables_files`]).
pub const KUBE_PROXY: &str = "kube-proxy";

/// The build machine's `iptables` (a link to the multi-call binary of the backend its
/// alternative selects: nft on Debian 12, as on the nodes).
pub const IPTABLES: &str = "/usr/sbin/iptables";

/// The commands kube-proxy runs to program the node, each the multi-call binary (it acts on
/// the name it is called by), in `usr/sbin` as upstream's kube-proxy image has them.
pub const IPTABLES_COMMANDS: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// What kube-proxy needs at run time besides itself (it programs the node through iptables):
/// the multi-call binary `iptables` resolves to, under each of [`IPTABLES_COMMANDS`]; the
/// extension modules it loads at run time from its xtables directory (beside libxtables, the
/// path it was built with); and what `ldd` lists for each of them. Paths without leading `/`.
pub fn iptables_files(iptables: &Path) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let bad = |message: String| ImageError::Iptables {
        path: iptables.to_path_buf(),
        message,
    };
    let multi = std::fs::canonicalize(iptables).map_err(|e| bad(e.to_string()))?;
    let data = std::fs::read(&multi).map_err(file_err(&multi))?;
    let mut files: BTreeMap<String, Vec<u8>> = IPTABLES_COMMANDS
        .iter()
        .map(|c| (format!("usr/sbin/{c}"), data.clone()))
        .collect();
    let ldd = |p: &Path| -> Result<Vec<String>, ImageError> {
        let out = run(Command::new("ldd").arg(p).env("LC_ALL", "C"))?;
        Ok(ldd_paths(&String::from_utf8_lossy(&out)))
    };
    let libs = ldd(&multi)?;
    let libxtables = libs
        .iter()
        .find(|l| l.contains("/libxtables.so"))
        .ok_or_else(|| bad(format!("{} does not load libxtables", multi.display())))?;
    let xtables_dir = std::fs::canonicalize(libxtables)
        .map_err(file_err(Path::new(libxtables)))?
        .with_file_name("xtables");
    let mut loaded = vec![multi.clone()];
    let mut modules: Vec<PathBuf> = std::fs::read_dir(&xtables_dir)
        .map_err(file_err(&xtables_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    if modules.is_empty() {
        return Err(bad(format!(
            "no extension modules in {}",
            xtables_dir.display()
        )));
    }
    modules.sort();
    for m in modules {
        let bytes = std::fs::read(&m).map_err(file_err(&m))?;
        files.insert(
            m.to_string_lossy().trim_start_matches('/').to_string(),
            bytes,
        );
        loaded.push(m);
    }
    for p in &loaded {
        for lib in ldd(p)? {
            let path = Path::new(&lib);
            let bytes = std::fs::read(path).map_err(file_err(path))?;
            files.insert(lib.trim_start_matches('/').to_string(), bytes);
        }
    }
    Ok(files.into_iter().collect())
}

/// The image of one control-plane component around its layer files ([`component_files`]).
pub fn component_spec(name: &str, command: &str, files: Vec<(String, Vec<u8>)>) -> ImageSpec {
    let mut tree = BTreeMap::new();
    tree.insert("tmp".to_string(), Entry::Dir { mode: 0o1777 });
    for (path, data) in files {
        // Every parent directory, so the layer unpacks without implicit directories.
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            tree.entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            parent = p.parent();
        }
        tree.insert(path, Entry::File { mode: 0o755, data });
    }
    ImageSpec {
        name: name.to_string(),
        files: tree,
        entrypoint: vec![format!("/{COMPONENT_BIN_DIR}/{command}")],
        cmd: vec![],
        env: vec!["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        user: COMPONENT_USER.into(),
        architecture: oci_arch().into(),
    }
}

/// sha256 over a layer's inputs (each path, its length and contents).
fn source_digest(files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (path, data) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex::encode(h.finalize())
}

/// The control-plane images of `inputs` in `dir` (the image cache): reused when the manifest
/// lists one under its name, of this [`RECIPE`], built from the same inputs, and its tarball
/// verifies; built otherwise. Every other image of the directory stays. Returns the entries of
/// `inputs`, in their order.
pub fn ensure_components(
    dir: &Path,
    inputs: &[ComponentInput],
) -> Result<Vec<ImageEntry>, ImageError> {
    let _lock = lock(dir)?;
    let mut manifest = load(dir).unwrap_or(ImageManifest {
        format: 1,
        images: Vec::new(),
    });
    let mut out = Vec::new();
    let mut changed = false;
    for input in inputs {
        let files = component_files(input)?;
        let source = source_digest(&files);
        let cached = manifest.images.iter().find(|i| {
            i.name == input.image
                && i.recipe == RECIPE
                && i.source.as_deref() == Some(source.as_str())
                && verify_one(dir, i).is_ok()
        });
        if let Some(i) = cached {
            out.push(i.clone());
            continue;
        }
        let spec = component_spec(&input.image, &input.command(), files);
        let entry = ImageEntry {
            component: Some(input.command()),
            source: Some(source),
            ..write_image(dir, &spec)?
        };
        manifest.images.retain(|i| i.name != entry.name);
        manifest.images.push(entry.clone());
        out.push(entry);
        changed = true;
    }
    if changed {
        write_manifest(dir, &manifest)?;
    }
    Ok(out)
}

/// Where the inputs come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// A directory holding Debian's `kubernetes_*.orig.tar.gz` (what scripts/build-kube.sh
    /// keeps), or an unpacked source tree (with `build/pause/linux/pause.c`).
    pub kube_src: PathBuf,
    /// The static busybox (`/bin/busybox` of busybox-static).
    pub busybox: PathBuf,
}

impl Sources {
    /// `CLUSTERKIT_KUBE_SRC` (default `$CLUSTERKIT_CACHE/kube-src`) and `CLUSTERKIT_BUSYBOX`
    /// (default `/bin/busybox`).
    pub fn from_env() -> Sources {
        Sources {
            kube_src: std::env::var_os("CLUSTERKIT_KUBE_SRC")
                .map(PathBuf::from)
                .unwrap_or_else(|| cache_root().join("kube-src")),
            busybox: std::env::var_os("CLUSTERKIT_BUSYBOX")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/bin/busybox")),
        }
    }
}

fn cache_root() -> PathBuf {
    std::env::var_os("CLUSTERKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/clusterkit"))
}

/// The image cache: `$CLUSTERKIT_CACHE/images` (default `/var/cache/clusterkit/images`).
pub fn cache_dir() -> PathBuf {
    cache_root().join("images")
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    Ok(local::run(cmd)?)
}

/// `TAG = 3.4` of build/pause/Makefile.
pub fn makefile_tag(makefile: &str) -> Option<String> {
    makefile.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "TAG").then(|| v.trim().to_string())
    })
}

/// Finds (or extracts into `work`) `build/pause/linux/pause.c` and `build/pause/Makefile`.
fn pause_sources(kube_src: &Path, work: &Path) -> Result<(PathBuf, PathBuf), ImageError> {
    let tree = kube_src.join("build/pause");
    if tree.join("linux/pause.c").is_file() {
        return Ok((tree.join("linux/pause.c"), tree.join("Makefile")));
    }
    let mut tarballs: Vec<PathBuf> = std::fs::read_dir(kube_src)
        .map_err(|_| ImageError::NoKubeSource {
            dir: kube_src.to_path_buf(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("kubernetes_") && n.ends_with(".orig.tar.gz")
                })
                .unwrap_or(false)
        })
        .collect();
    tarballs.sort();
    let tarball = tarballs.pop().ok_or_else(|| ImageError::NoKubeSource {
        dir: kube_src.to_path_buf(),
    })?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(work)
        .args([
            "--wildcards",
            "--no-anchored",
            "build/pause/linux/pause.c",
            "build/pause/Makefile",
        ]))?;
    // The tarball's top directory (kubernetes-1.20.2/) is not known in advance.
    for e in std::fs::read_dir(work).map_err(file_err(work))? {
        let dir = e.map_err(file_err(work))?.path().join("build/pause");
        if dir.join("linux/pause.c").is_file() {
            return Ok((dir.join("linux/pause.c"), dir.join("Makefile")));
        }
    }
    Err(ImageError::NoKubeSource {
        dir: kube_src.to_path_buf(),
    })
}

/// Compiles pause.c statically, as upstream's Makefile does; returns the binary.
pub fn build_pause_binary(kube_src: &Path) -> Result<Vec<u8>, ImageError> {
    let work = tempdir()?;
    let (source, makefile) = pause_sources(kube_src, work.path())?;
    let tag = std::fs::read_to_string(&makefile)
        .ok()
        .and_then(|m| makefile_tag(&m))
        .unwrap_or_else(|| "HEAD".into());
    let out = work.path().join("pause");
    run(Command::new("gcc")
        .args(["-Os", "-Wall", "-Werror", "-static"])
        .arg(format!("-DVERSION=v{tag}-{PAUSE_REV}"))
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .env("LC_ALL", "C"))?;
    Ok(std::fs::read(&out).map_err(file_err(&out))?)
}

/// A temporary directory removed on drop (no tempfile dependency in the library).
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir, ImageError> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("clusterkit-images-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(file_err(&p)(e).into()),
        }
    }
    Err(file_err(&base)(std::io::Error::other("no free temporary directory name")).into())
}

/// True for an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(data: &[u8]) -> bool {
    // ELF64 little-endian: program headers at e_phoff (0x20), e_phentsize (0x36), e_phnum (0x38).
    if data.len() < 0x40 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let mut off = [0u8; 8];
    off.copy_from_slice(&data[0x20..0x28]);
    let phoff = u64::from_le_bytes(off) as usize;
    let (size, num) = (u16_at(0x36), u16_at(0x38));
    (0..num).all(|i| {
        let at = phoff.saturating_add(i.saturating_mul(size));
        // PT_INTERP (3) means a dynamic loader is needed.
        data.get(at..at + 4)
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3)
            .unwrap_or(false)
    })
}

/// Reads the static busybox and its applet list (`busybox --list`).
pub fn busybox_inputs(busybox: &Path) -> Result<(Vec<u8>, Vec<String>), ImageError> {
    let data = std::fs::read(busybox).map_err(file_err(busybox))?;
    if !is_static_elf(&data) {
        return Err(ImageError::NotStatic {
            path: busybox.to_path_buf(),
        });
    }
    let list = run(Command::new(busybox).arg("--list"))?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&list)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    applets.sort();
    applets.dedup();
    Ok((data, applets))
}

/// File name of an image's tarball (`registry.k8s.io/pause:3.2` → `pause_3.2.oci.tar`). Names
/// outside registry.k8s.io and Docker Hub's library get a hash of the whole name too
/// (`mirror.example/k8s/pause:3.9` → `pause_3.9-1a2b3c4d.oci.tar`), so two repositories' images
/// of the same name and tag do not share a file.
pub fn file_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image).replace(':', "_");
    if image.starts_with("registry.k8s.io/") || image.starts_with("docker.io/library/") {
        format!("{last}.oci.tar")
    } else {
        format!("{last}-{}.oci.tar", &sha256_hex(image.as_bytes())[..8])
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    // A name of this process's own: two processes may build into the same cache at once.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(file_err(&tmp))?;
    Ok(std::fs::rename(&tmp, path).map_err(file_err(path))?)
}

/// Builds the image of `spec` into `dir`; returns its manifest entry (no component or source).
fn write_image(dir: &Path, spec: &ImageSpec) -> Result<ImageEntry, ImageError> {
    let built = build_image(spec);
    let file = file_name(&built.name);
    write_atomic(&dir.join(&file), &built.archive)?;
    Ok(ImageEntry {
        name: built.name,
        file,
        sha256: sha256_hex(&built.archive),
        size: built.archive.len() as u64,
        digest: built.manifest_digest,
        recipe: RECIPE,
        component: None,
        source: None,
    })
}

/// Writes `dir/manifest.json` (last, so a directory with a manifest is complete).
fn write_manifest(dir: &Path, manifest: &ImageManifest) -> Result<(), ImageError> {
    let text = serde_json::to_string_pretty(manifest).unwrap_or_default() + "\n";
    write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
}

/// Builds the busybox image and the pause image under each of `pause_names` into `out`, keeps
/// every other image `out` already holds intact, and writes its `manifest.json` (last, so a
/// directory with a manifest is complete).
pub fn build(
    out: &Path,
    sources: &Sources,
    pause_names: &[String],
) -> Result<ImageManifest, ImageError> {
    std::fs::create_dir_all(out).map_err(file_err(out))?;
    // What is there and intact stays (another cluster's pause tag in a shared cache).
    let mut images: Vec<ImageEntry> = match load(out) {
        Ok(m) => m
            .images
            .into_iter()
            .filter(|i| i.recipe == RECIPE && verify_one(out, i).is_ok())
            .filter(|i| i.name != BUSYBOX_IMAGE && !pause_names.contains(&i.name))
            .collect(),
        Err(_) => Vec::new(),
    };
    let pause = build_pause_binary(&sources.kube_src)?;
    let (busybox, applets) = busybox_inputs(&sources.busybox)?;
    let mut specs: Vec<ImageSpec> = pause_names
        .iter()
        .map(|name| pause_spec(pause.clone(), name))
        .collect();
    specs.push(busybox_spec(busybox, &applets));
    for spec in specs {
        images.push(write_image(out, &spec)?);
    }
    let manifest = ImageManifest { format: 1, images };
    write_manifest(out, &manifest)?;
    Ok(manifest)
}

/// Reads `dir/manifest.json` (does not hash the tarballs; see [`verify`]).
pub fn load(dir: &Path) -> Result<ImageManifest, ImageError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(file_err(&path))?;
    let m: ImageManifest =
        serde_json::from_str(&text).map_err(|source| ImageError::ManifestJson {
            path: path.clone(),
            source,
        })?;
    for i in &m.images {
        // The file name goes into remote paths: keep it a plain name.
        if i.file.contains('/') || i.file.starts_with('.') || i.file.is_empty() {
            return Err(ImageError::Manifest {
                path,
                message: format!(
                    "image {}: file {:?} is not a plain file name",
                    i.name, i.file
                ),
            });
        }
    }
    Ok(m)
}

/// Checks every tarball against its recorded size and sha256.
pub fn verify(dir: &Path, manifest: &ImageManifest) -> Result<(), ImageError> {
    verify_entries(dir, &manifest.images)
}

/// [`verify`] for some of a manifest's images.
pub fn verify_entries<'a>(
    dir: &Path,
    entries: impl IntoIterator<Item = &'a ImageEntry>,
) -> Result<(), ImageError> {
    entries.into_iter().try_for_each(|i| verify_one(dir, i))
}

fn verify_one(dir: &Path, i: &ImageEntry) -> Result<(), ImageError> {
    let path = dir.join(&i.file);
    let data = std::fs::read(&path).map_err(file_err(&path))?;
    if data.len() as u64 != i.size || sha256_hex(&data) != i.sha256 {
        return Err(ImageError::Mismatch {
            path,
            manifest: dir.join(MANIFEST_FILE),
        });
    }
    Ok(())
}

/// One builder at a time per image directory (tests and `bundle build` share the cache): the
/// others wait, then find the images complete. Released when the returned file is closed.
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    std::fs::create_dir_all(dir).map_err(file_err(dir))?;
    let lock_path = dir.join(".lock");
    let file = std::fs::File::create(&lock_path).map_err(file_err(&lock_path))?;
    Ok(
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))
            .map_err(file_err(&lock_path))?,
    )
}

/// The busybox image and the pause image under each of `pause_names` in `dir`: reused when its
/// manifest lists them and every tarball verifies, built (from `sources`) otherwise. Returns
/// the manifest narrowed to those images (a shared cache may hold other pause tags too). This
/// is what the offline bundle and the sandbox's images phase call.
pub fn ensure(
    dir: &Path,
    sources: &Sources,
    pause_names: &[String],
) -> Result<ImageManifest, ImageError> {
    let _lock = lock(dir)?;
    let wanted = |m: ImageManifest| ImageManifest {
        format: m.format,
        images: m
            .images
            .into_iter()
            .filter(|i| i.name == BUSYBOX_IMAGE || pause_names.contains(&i.name))
            .collect(),
    };
    if let Ok(m) = load(dir) {
        let m = wanted(m);
        let complete = pause_names
            .iter()
            .map(String::as_str)
            .chain([BUSYBOX_IMAGE])
            .all(|n| m.images.iter().any(|i| i.name == n && i.recipe == RECIPE));
        if complete && verify(dir, &m).is_ok() {
            return Ok(m);
        }
    }
    build(dir, sources, pause_names).map(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_tar(data: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>, u32, String)> {
        let mut a = tar::Archive::new(data);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0, "{path}");
            assert_eq!(e.header().uid().unwrap(), 0, "{path}");
            out.insert(path, (kind, data, mode, link));
        }
        out
    }

    fn sample() -> ImageSpec {
        busybox_spec(
            b"\x7fELF fake".to_vec(),
            &[
                "sh".into(),
                "httpd".into(),
                "../evil".into(),
                "busybox".into(),
            ],
        )
    }

    #[test]
    fn oci_layout_is_complete_and_consistent() {
        let built = build_image(&sample());
        let outer = read_tar(&built.archive);
        assert_eq!(outer["oci-layout"].1, br#"{"imageLayoutVersion":"1.0.0"}"#);
        let blob = |d: &str| &outer[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))].1;
        let index: serde_json::Value = serde_json::from_slice(&outer["index.json"].1).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], built.manifest_digest.as_str());
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            BUSYBOX_IMAGE
        );
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            BUSYBOX_IMAGE
        );
        let manifest_bytes = blob(&built.manifest_digest);
        assert_eq!(entry["size"], manifest_bytes.len());
        assert_eq!(digest(manifest_bytes), built.manifest_digest);
        let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], built.config_digest.as_str());
        let config: serde_json::Value = serde_json::from_slice(blob(&built.config_digest)).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], built.layer_digest.as_str());
        assert_eq!(config["config"]["Cmd"][0], "sh");
        let layer = blob(&built.layer_digest);
        assert_eq!(
            digest(layer),
            built.layer_digest,
            "uncompressed: digest == diff_id"
        );
        assert_eq!(manifest["layers"][0]["size"], layer.len());
        let files = read_tar(layer);
        assert_eq!(files["bin/busybox"].1, b"\x7fELF fake");
        assert_eq!(files["bin/busybox"].2, 0o755);
        assert_eq!(files["bin/sh"].0, tar::EntryType::Symlink);
        assert_eq!(files["bin/sh"].3, "busybox");
        assert!(files.contains_key("bin/httpd"));
        assert_eq!(files["bin/wget"].0, tar::EntryType::Regular);
        assert_eq!(files["bin/wget"].1, WGET_WRAPPER.as_bytes());
        assert_eq!(files["bin/wget"].2, 0o755);
        assert!(
            !files.keys().any(|k| k.contains("evil")),
            "applet names cannot be paths"
        );
        assert_eq!(files["tmp/"].2, 0o1777);
    }

    #[test]
    fn same_inputs_same_bytes() {
        let a = build_image(&sample());
        let b = build_image(&sample());
        assert_eq!(a.archive, b.archive);
        let mut other = sample();
        other.cmd = vec!["httpd".into()];
        assert_ne!(build_image(&other).manifest_digest, a.manifest_digest);
    }

    #[test]
    fn pause_image_has_the_entrypoint() {
        let built = build_image(&pause_spec(vec![1, 2, 3], &pause_image("3.9")));
        let outer = read_tar(&built.archive);
        let config = &outer[&format!(
            "blobs/sha256/{}",
            built.config_digest.trim_start_matches("sha256:")
        )]
            .1;
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
        assert_eq!(file_name(&pause_image("3.2")), "pause_3.2.oci.tar");
        assert_eq!(file_name(&pause_image_for(28, 7)), "pause_3.9.oci.tar");
        let mirrored = file_name("mirror.example/k8s/pause:3.9");
        assert!(
            mirrored.starts_with("pause_3.9-") && mirrored.ends_with(".oci.tar"),
            "{mirrored}"
        );
        assert_ne!(mirrored, file_name("other.example/pause:3.9"));
        assert_eq!(
            every_pause_image(),
            ["3.2", "3.4.1", "3.5", "3.6", "3.7", "3.8", "3.9", "3.10", "3.10.1"].map(pause_image)
        );
        assert_eq!(file_name(BUSYBOX_IMAGE), "busybox_clusterkit.oci.tar");
    }

    #[test]
    fn component_images_carry_the_binary_its_libraries_and_root() {
        let built = build_image(&component_spec(
            "registry.k8s.io/etcd:3.4.13-0",
            "etcd",
            vec![
                ("lib64/ld-linux-x86-64.so.2".into(), b"ld".to_vec()),
                ("usr/local/bin/etcd".into(), b"etcd".to_vec()),
            ],
        ));
        let outer = read_tar(&built.archive);
        let blob = |d: &str| &outer[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))].1;
        let config: serde_json::Value = serde_json::from_slice(blob(&built.config_digest)).unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            json!(["/usr/local/bin/etcd"])
        );
        assert_eq!(config["config"]["User"], "0");
        let files = read_tar(blob(&built.layer_digest));
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "lib64/",
                "lib64/ld-linux-x86-64.so.2",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/etcd"
            ]
        );
        assert_eq!(files["usr/local/bin/etcd"].2, 0o755);
        assert_eq!(files["tmp/"].2, 0o1777);
        // pause and busybox have no User: their bytes stay what they were.
        let pause = build_image(&pause_spec(vec![1], &pause_image("3.2")));
        let outer = read_tar(&pause.archive);
        let config = &outer[&format!(
            "blobs/sha256/{}",
            pause.config_digest.trim_start_matches("sha256:")
        )]
            .1;
        assert!(!String::from_utf8_lossy(config).contains("User"));
        assert_eq!(
            etcd_image("registry.k8s.io", "v1.20.2".parse().unwrap()),
            "registry.k8s.io/etcd:3.4.13-0"
        );
    }

    #[test]
    fn ldd_output_gives_the_files_to_carry() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f07)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f08)\n";
        assert_eq!(
            ldd_paths(out),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(ldd_paths("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn makefile_tag_and_static_detection() {
        assert_eq!(
            makefile_tag("REGISTRY ?= x\nTAG = 3.4\nREV = $(shell git)\n").as_deref(),
            Some("3.4")
        );
        assert_eq!(makefile_tag("TAGS = 1\n"), None);
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        // This test binary is dynamically linked (it has an interpreter).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
    }

    #[test]
    fn manifest_refuses_paths_and_detects_tampering() {
        let dir = tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), b"abc").unwrap();
        let mut m = ImageManifest {
            format: 1,
            images: vec![ImageEntry {
                name: "x/y:z".into(),
                file: "a.tar".into(),
                sha256: sha256_hex(b"abc"),
                size: 3,
                digest: "sha256:00".into(),
                recipe: RECIPE,
                component: None,
                source: None,
            }],
        };
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        verify(dir.path(), &loaded).unwrap();
        std::fs::write(dir.path().join("a.tar"), b"abd").unwrap();
        assert!(matches!(
            verify(dir.path(), &loaded),
            Err(ImageError::Mismatch { .. })
        ));
        m.images[0].file = "../a.tar".into();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("plain file name"));
    }
}
