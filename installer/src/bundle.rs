//! Offline bundles: the packages (with their dependencies) and binaries the nodes need, with a
//! checksummed `manifest.json`, so an install never needs the nodes to reach a mirror.
//!
//! How the package set is found: apt on this (Debian 12) machine simulates installing each
//! requested package onto a node's base system — its dpkg status file, by default the one of
//! the sandbox's cached base rootfs (`$CLUSTERKIT_CACHE/rootfs/bookworm`), or `--base-status`
//! for real nodes' minimal image. The simulation's `Inst` lines are exactly what a node lacks,
//! in dependency order; `apt-get download` fetches those versions. Binaries (e.g. the
//! Kubernetes binaries in `CLUSTERKIT_KUBE_BIN_DIR`) are hard-linked or copied into `bin/`.
//!
//! Container images ([`BuildOptions::images`]): the pause image and the busybox test workload
//! built from Debian material (see [`crate::images`]), taken from the local image cache
//! (`$CLUSTERKIT_CACHE/images`, built there when missing) and hard-linked or copied into
//! `DIR/images/` with its own `images/manifest.json`; the images phase imports them on every
//! node. Each tarball and `images/manifest.json` itself are listed in the bundle manifest's
//! `binaries` (names `image:<name>` and `images-manifest`), so `bundle verify` covers them.
//!
//! Layout: `DIR/manifest.json`, `DIR/debs/*.deb`, `DIR/bin/*`, `DIR/images/*`, and
//! `DIR/.downloads/` (downloaded release binaries, hard-linked into `bin/`). The `package`
//! module reads the manifest ([`Bundle`]) and uploads only the closure members a node is missing.
//!
//! Limits: Debian packages for the architecture of this machine only; this machine's apt lists
//! decide the versions (run `apt-get update` first for the newest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clusterkit_core::playbook::modules::package::BundleFile;

use crate::images::{self, ImageError, Sources};
use crate::local::{self, file_err, FileError, ToolError};
use crate::release::{self, ReleaseError};
use crate::versions::{self, VersionError};
pub use clusterkit_core::playbook::modules::{Bundle, BundleManifest, BundlePackage};
use clusterkit_core::release::KubeVersion;

/// What can go wrong building a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Io(#[from] FileError),

    #[error(transparent)]
    Command(#[from] ToolError),

    #[error(
        "the base system's dpkg status {path} does not exist: run `clusterkit sandbox up` once \
         (it builds the cached base rootfs), or pass --base-status with the status file of a \
         node's minimal image"
    )]
    NoBase { path: PathBuf },

    #[error("apt cannot install {package} onto the base system: {message}")]
    Unresolvable { package: String, message: String },

    #[error("container images for the bundle (leave them out with --no-images): {0}")]
    Images(#[from] ImageError),

    #[error("--image: {0}")]
    ImageArchive(#[source] ImageError),

    #[error("Kubernetes release binaries: {0}")]
    Release(#[from] ReleaseError),

    #[error("reading the version of {binary}")]
    Version {
        binary: String,
        #[source]
        source: VersionError,
    },

    #[error(
        "the bundle's Kubernetes binaries are of different releases ({first}, {second}): \
         a bundle carries one release; pass --binaries with one release's binaries"
    )]
    MixedVersions { first: String, second: String },

    #[error(
        "{name} would come both from {dir} and from the downloaded release; leave out \
         --binaries (or unset CLUSTERKIT_KUBE_BIN_DIR) or --kubernetes"
    )]
    TwoSources { name: String, dir: PathBuf },

    #[error(
        "the binaries directory {dir} (--binaries, or CLUSTERKIT_KUBE_BIN_DIR) cannot be read"
    )]
    BinaryDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no Kubernetes binary ({}) in {} (--binaries, or CLUSTERKIT_KUBE_BIN_DIR): point it at \
         the directory that holds them, or pass --kubernetes VERSION to download a release",
        versions::KUBERNETES_BINARIES.join(", "),
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoKubernetesBinaries { dirs: Vec<PathBuf> },
}

/// What to put in a bundle.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    /// Packages to include with their dependencies (e.g. containerd, runc).
    pub packages: Vec<String>,
    /// The dpkg status file describing what nodes already have.
    pub base_status: PathBuf,
    /// Directories whose files go into `bin/` (Kubernetes binaries).
    pub binary_dirs: Vec<PathBuf>,
    /// Container images into `images/`: built into (or reused from) `cache`, from `sources`.
    /// `None`: no images (nodes pull from a registry).
    pub images: Option<ImageOptions>,
    /// Kubernetes release binaries to download into `bin/` ([`crate::release`]).
    pub release: Option<ReleaseOptions>,
}

/// Which Kubernetes release to download, and from where.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub version: KubeVersion,
    /// A server laid out like dl.k8s.io ([`release::DEFAULT_BASE`] or a mirror).
    pub base: String,
}

/// Where the bundle's images come from.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The image cache they are built into or reused from ([`images::cache_dir`]).
    pub cache: PathBuf,
    /// Inputs for building them when the cache lacks them.
    pub sources: Sources,
    /// The operator's own images (registry exports, [`read_archives`]): carried as they are,
    /// and an image of the same name is not built.
    pub given: Vec<GivenImage>,
}

impl ImageOptions {
    /// The cache and sources from the environment (`CLUSTERKIT_CACHE`, `CLUSTERKIT_KUBE_SRC`,
    /// `CLUSTERKIT_BUSYBOX`), and the image `archives`, read now ([`read_archives`]): a wrong
    /// one fails before anything is downloaded or built.
    pub fn from_env(archives: &[PathBuf]) -> Result<ImageOptions, BundleError> {
        Ok(ImageOptions {
            cache: images::cache_dir(),
            sources: Sources::from_env(),
            given: read_archives(archives)?,
        })
    }
}

/// An operator's image archive, read: where it is, its image's full name and digest.
#[derive(Debug, Clone)]
pub struct GivenImage {
    pub path: PathBuf,
    pub name: String,
    pub digest: String,
}

/// Reads each image archive's name and digest ([`images::read_archive`]); a missing, unreadable
/// or unnamed archive, or an image that two archives hold, is refused naming the file.
pub fn read_archives(paths: &[PathBuf]) -> Result<Vec<GivenImage>, BundleError> {
    let mut given: Vec<GivenImage> = Vec::new();
    for path in paths {
        let (name, digest) = images::read_archive(path).map_err(BundleError::ImageArchive)?;
        if let Some(first) = given.iter().find(|g| g.name == name) {
            return Err(BundleError::ImageArchive(ImageError::Archive {
                path: path.clone(),
                message: format!("{name} is also in {}", first.path.display()),
            }));
        }
        given.push(GivenImage {
            path: path.clone(),
            name,
            digest,
        });
    }
    Ok(given)
}

/// Puts the images of `opts` into `out/images/` — the operator's archives as they are, and a
/// verified copy of the cache (built when missing) of what they do not name: the busybox image,
/// the pause image under each of `pause_names` and the control-plane images of `components` —
/// and returns the bundle manifest entries covering them.
pub fn add_images(
    out: &Path,
    opts: &ImageOptions,
    pause_names: &[String],
    components: &[images::ComponentInput],
) -> Result<Vec<BundleFile>, BundleError> {
    let is_given = |image: &str| opts.given.iter().any(|g| g.name == image);
    let pause: Vec<String> = pause_names
        .iter()
        .filter(|n| !is_given(n))
        .cloned()
        .collect();
    let build: Vec<images::ComponentInput> = components
        .iter()
        .filter(|c| !is_given(&c.image))
        .cloned()
        .collect();
    let mut cached = images::ensure(&opts.cache, &opts.sources, &pause)?;
    cached
        .images
        .extend(images::ensure_components(&opts.cache, &build)?);
    let dir = out.join("images");
    std::fs::create_dir_all(&dir).map_err(file_err(&dir))?;
    let mut files = Vec::new();
    let mut listed = Vec::new();
    for i in &cached.images {
        let (sha256, size) = place(&opts.cache.join(&i.file), &dir.join(&i.file), true)?;
        if sha256 != i.sha256 || size != i.size {
            return Err(ImageError::Mismatch {
                path: dir.join(&i.file),
                manifest: opts.cache.join(images::MANIFEST_FILE),
            }
            .into());
        }
        listed.push(i.clone());
    }
    for GivenImage { path, name, digest } in opts.given.iter().cloned() {
        let file = images::file_name(&name);
        let (sha256, size) = place(&path, &dir.join(&file), false)?;
        listed.push(images::ImageEntry {
            component: images::component_of(&name),
            name,
            file,
            sha256,
            size,
            digest,
            recipe: images::RECIPE,
            source: None,
        });
    }
    for i in &listed {
        files.push(BundleFile {
            name: format!("image:{}", i.name),
            file: format!("images/{}", i.file),
            sha256: i.sha256.clone(),
            size: i.size,
            version: None,
        });
    }
    // Only the images just placed: a cache that holds more stays out of the bundle's listing.
    let manifest = images::ImageManifest {
        format: cached.format,
        images: listed,
    };
    let path = dir.join(images::MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
    std::fs::write(&path, text).map_err(file_err(&path))?;
    let (sha256, size) = sha256_file(&path)?;
    files.push(BundleFile {
        name: "images-manifest".into(),
        file: format!("images/{}", images::MANIFEST_FILE),
        sha256,
        size,
        version: None,
    });
    Ok(files)
}

/// Puts `src` at `dest` — hard-linked when `link` (the image cache's own files) and possible,
/// else copied (an operator's file, which may change later) — replacing what is there (a stale
/// tarball from an older bundle must not survive); returns the sha256 and size `dest` holds.
fn place(src: &Path, dest: &Path, link: bool) -> Result<(String, u64), BundleError> {
    if dest.exists() {
        std::fs::remove_file(dest).map_err(file_err(dest))?;
    }
    if !link || std::fs::hard_link(src, dest).is_err() {
        std::fs::copy(src, dest).map_err(file_err(dest))?;
    }
    sha256_file(dest)
}

/// The default base: the sandbox's cached rootfs.
pub fn default_base_status() -> PathBuf {
    let cache = std::env::var_os("CLUSTERKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/clusterkit"));
    cache.join("rootfs/bookworm/var/lib/dpkg/status")
}

fn run(cmd: &mut Command) -> Result<String, BundleError> {
    Ok(String::from_utf8_lossy(&local::run(cmd)?).into_owned())
}

/// `(name, version, arch)` apt would install onto the base for `package`, in order.
pub fn closure(
    package: &str,
    base_status: &Path,
) -> Result<Vec<(String, String, String)>, BundleError> {
    let out = Command::new("apt-get")
        .args(["-s", "-q", "--no-install-recommends"])
        .arg("-o")
        .arg("Debug::NoLocking=1")
        .arg("-o")
        .arg(format!("Dir::State::status={}", base_status.display()))
        .args(["install", package])
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| ToolError {
            command: "apt-get -s install".into(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BundleError::Unresolvable {
            package: package.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(parse_simulation(&String::from_utf8_lossy(&out.stdout)))
}

/// `Inst runc (1.1.5+ds1-1+deb12u1 Debian:12.15/oldstable [amd64])` → (runc, 1.1.5+…, amd64).
pub fn parse_simulation(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            // An upgrade shows `[old]` before the parenthesis.
            let inner = rest.split_once('(')?.1;
            let version = inner.split_whitespace().next()?;
            let arch = inner.rsplit_once('[')?.1.trim_end_matches([']', ')']);
            Some((name.to_string(), version.to_string(), arch.to_string()))
        })
        .collect()
}

fn sha256_file(path: &Path) -> Result<(String, u64), BundleError> {
    let size = std::fs::metadata(path).map_err(file_err(path))?.len();
    Ok((release::sha256_file(path)?, size))
}

/// The first dpkg that installs zstd-compressed packages (Debian 12 has 1.21.22).
const DPKG_WITH_ZSTD: &str = "1.21.18";

/// Whether the nodes' dpkg (its version in the base system's status file) installs packages
/// whose members are zstd-compressed.
fn dpkg_reads_zstd(base_status: &Path) -> Result<bool, BundleError> {
    let status = std::fs::read_to_string(base_status).map_err(file_err(base_status))?;
    let version = status
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|l| l == "Package: dpkg"))
        .and_then(|stanza| stanza.lines().find_map(|l| l.strip_prefix("Version: ")));
    let Some(version) = version else {
        return Ok(false);
    };
    Ok(Command::new("dpkg")
        .args(["--compare-versions", version, "ge", DPKG_WITH_ZSTD])
        .status()
        .is_ok_and(|s| s.success()))
}

/// The names of the members of an ar archive (a .deb): `debian-binary`, `control.tar.*`,
/// `data.tar.*`. Empty when the file is not one.
fn deb_members(path: &Path) -> Result<Vec<String>, BundleError> {
    use std::io::{Read, Seek, SeekFrom};
    // Only the 60-byte member headers are read; the members themselves are skipped.
    let mut file = std::fs::File::open(path).map_err(file_err(path))?;
    let mut members = Vec::new();
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || &magic != b"!<arch>\n" {
        return Ok(members);
    }
    let mut header = [0u8; 60];
    while file.read_exact(&mut header).is_ok() {
        let name = String::from_utf8_lossy(&header[..16])
            .trim()
            .trim_end_matches('/')
            .to_string();
        let Some(size) = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        else {
            break;
        };
        members.push(name);
        // Members are padded to an even size.
        file.seek(SeekFrom::Current(size + size % 2))
            .map_err(file_err(path))?;
    }
    Ok(members)
}

/// Re-compresses a package's members with zstd (in place, via `dpkg-deb`): the same files,
/// scripts and metadata, but unpacking costs each node about a fifth of the CPU of Debian's
/// xz (containerd: 0.33 s instead of 1.55 s). Packages already in zstd are left alone.
fn repack_zstd(path: &Path) -> Result<(), BundleError> {
    let members = deb_members(path)?;
    if !members.iter().any(|m| m.starts_with("data.tar.xz")) {
        return Ok(());
    }
    let dir = path.with_extension("repack");
    let tmp = path.with_extension("deb.tmp");
    let _ = std::fs::remove_dir_all(&dir);
    let repacked = run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(path)
        .arg(&dir))
    .and_then(|_| {
        run(Command::new("dpkg-deb")
            .args(["-Zzstd", "-z3", "--build"])
            .arg(&dir)
            .arg(&tmp))
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = repacked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(std::fs::rename(&tmp, path).map_err(file_err(path))?)
}

/// Fills `out/bin/` with the downloaded release (when asked for) and the files of
/// `binary_dirs`, removes what an older build left there, and returns the manifest entries.
/// Every download is verified before `bin/` changes, so a failed build leaves it as it was.
/// Downloads are kept in `out/.downloads/` (hard-linked into `bin/`), so a rebuild of the
/// same release only fetches the checksums.
fn add_binaries(
    opts: &BuildOptions,
    arch: &str,
) -> Result<(Vec<BundleFile>, Option<KubeVersion>), BundleError> {
    let bin = opts.out.join("bin");
    let downloads = opts.out.join(".downloads");
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut release_dir = None;
    let mut verified: BTreeMap<String, String> = BTreeMap::new();
    if let Some(r) = &opts.release {
        let arch = release::release_arch(arch)?;
        let dir = downloads.join(format!("kubernetes-{}-{arch}", r.version));
        for (path, sha256) in release::fetch(&r.base, r.version, arch, &release::BINARIES, &dir)? {
            // Verified against this digest just now: no second pass over the file.
            if let Some(name) = path.file_name() {
                verified.insert(name.to_string_lossy().into_owned(), sha256);
            }
            sources.push(path);
        }
        release_dir = Some(dir);
    }
    for dir in &opts.binary_dirs {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| BundleError::BinaryDir {
                dir: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for src in entries {
            if sources.iter().any(|s| s.file_name() == src.file_name()) {
                return Err(BundleError::TwoSources {
                    name: src
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    dir: dir.clone(),
                });
            }
            sources.push(src);
        }
    }
    let mut names: Vec<String> = sources
        .iter()
        .filter_map(|s| s.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    // What each Kubernetes binary says it is, read before bin/ changes: a set of several
    // releases is refused with the bundle as it was, and install can later refuse a bundle of
    // another release without running anything.
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    for (src, name) in sources.iter().zip(&names) {
        if versions::KUBERNETES_BINARIES.contains(&name.as_str()) {
            let v = versions::binary_version(src).map_err(|source| BundleError::Version {
                binary: name.clone(),
                source,
            })?;
            reported.insert(name.clone(), v.to_string());
        }
    }
    let kubernetes_version = kubernetes_version(&reported, opts.release.as_ref())?;
    if !sources.is_empty() {
        std::fs::create_dir_all(&bin).map_err(file_err(&bin))?;
    }
    for (src, name) in sources.iter().zip(&names) {
        // Replace, never reuse: a binary of an older build must not survive.
        let dest = bin.join(name);
        if dest.exists() {
            std::fs::remove_file(&dest).map_err(file_err(&dest))?;
        }
        if std::fs::hard_link(src, &dest).is_err() {
            std::fs::copy(src, &dest).map_err(file_err(&dest))?;
        }
    }
    // Anything else in bin/ is from an older build, and the install would find it by name;
    // downloads of other releases are not needed any more.
    remove_entries(&bin, |p| {
        p.file_name()
            .is_some_and(|n| names.iter().any(|name| n == name.as_str()))
    })?;
    remove_entries(&downloads, |p| release_dir.as_deref() == Some(p))?;
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = bin.join(&name);
            let (sha256, size) = match verified.remove(&name) {
                Some(sha256) => (
                    sha256,
                    std::fs::metadata(&path).map_err(file_err(&path))?.len(),
                ),
                None => sha256_file(&path)?,
            };
            let version = reported.get(&name).cloned();
            Ok(BundleFile {
                file: format!("bin/{name}"),
                name,
                sha256,
                size,
                version,
            })
        })
        .collect::<Result<Vec<_>, BundleError>>()
        .map(|files| (files, kubernetes_version))
}

/// Refuses, before anything is downloaded, a binaries directory that cannot be read, and
/// directories that hold none of the Kubernetes binaries when no release is downloaded either:
/// a parent directory or a typo, which would give a bundle that fails only at install time.
fn check_binary_dirs(opts: &BuildOptions) -> Result<(), BundleError> {
    let mut any_kubernetes = false;
    for dir in &opts.binary_dirs {
        let entries = std::fs::read_dir(dir).map_err(|source| BundleError::BinaryDir {
            dir: dir.clone(),
            source,
        })?;
        any_kubernetes |= entries.flatten().any(|e| {
            versions::KUBERNETES_BINARIES.contains(&e.file_name().to_string_lossy().as_ref())
        });
    }
    if opts.binary_dirs.is_empty() || opts.release.is_some() || any_kubernetes {
        return Ok(());
    }
    Err(BundleError::NoKubernetesBinaries {
        dirs: opts.binary_dirs.clone(),
    })
}

/// Removes every file or directory in `dir` (if it exists) that `keep` does not want.
fn remove_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<(), BundleError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for path in entries.flatten().map(|e| e.path()) {
        if keep(&path) {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(file_err(&path))?;
    }
    Ok(())
}

/// The one Kubernetes release the bundle's Kubernetes binaries report (binary → version;
/// `None` without any): they must agree with each other, and with `--kubernetes` when the
/// release was downloaded.
fn kubernetes_version(
    reported: &BTreeMap<String, String>,
    release: Option<&ReleaseOptions>,
) -> Result<Option<KubeVersion>, BundleError> {
    let mut found: Option<(KubeVersion, &str)> = None;
    for (name, v) in reported {
        let v = KubeVersion::parse(v).map_err(|source| BundleError::Version {
            binary: name.clone(),
            source: source.into(),
        })?;
        match found {
            Some((first, first_name)) if first != v => {
                return Err(BundleError::MixedVersions {
                    first: format!("{first_name} is {first}"),
                    second: format!("{name} is {v}"),
                })
            }
            Some(_) => {}
            None => found = Some((v, name)),
        }
    }
    if let (Some((v, name)), Some(r)) = (found, release) {
        if v != r.version {
            return Err(BundleError::MixedVersions {
                first: format!("--kubernetes is {}", r.version),
                second: format!("{name} is {v}"),
            });
        }
    }
    Ok(found.map(|(v, _)| v))
}

/// The control-plane images a bundle for Kubernetes `version` carries: one per Kubernetes
/// component binary in `out/bin/`, and etcd's from the bundle's `etcd-server` package
/// (unpacked into `out/.downloads/etcd-server/`), named as kubeadm names them in the default
/// repository.
fn component_inputs(
    out: &Path,
    version: KubeVersion,
    packages: &[BundlePackage],
) -> Result<Vec<images::ComponentInput>, BundleError> {
    let repo = clusterkit_core::release::DEFAULT_IMAGE_REPOSITORY;
    let mut inputs: Vec<images::ComponentInput> = images::KUBE_COMPONENTS
        .iter()
        .map(|name| images::ComponentInput {
            image: images::component_image(repo, name, &version.to_string()),
            binary: out.join("bin").join(name),
        })
        .filter(|i| i.binary.is_file())
        .collect();
    if let Some(etcd) = packages.iter().find(|p| p.name == "etcd-server") {
        let dir = out.join(".downloads/etcd-server");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(file_err(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(file_err(&dir))?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(out.join(&etcd.file))
            .arg(&dir))?;
        inputs.push(images::ComponentInput {
            image: images::etcd_image(repo, version),
            binary: dir.join("usr/bin/etcd"),
        });
    }
    Ok(inputs)
}

/// Builds (or refreshes) a bundle; returns its manifest, also written to `out/manifest.json`.
pub fn build(opts: &BuildOptions) -> Result<BundleManifest, BundleError> {
    check_binary_dirs(opts)?;
    if !opts.base_status.is_file() {
        return Err(BundleError::NoBase {
            path: opts.base_status.clone(),
        });
    }
    let debs = opts.out.join("debs");
    std::fs::create_dir_all(&debs).map_err(file_err(&debs))?;
    let mut roots = BTreeMap::new();
    let mut wanted: BTreeMap<String, (String, String)> = BTreeMap::new();
    for p in &opts.packages {
        let c = closure(p, &opts.base_status)?;
        if c.is_empty() {
            tracing::warn!(package = %p, "already on the base system; nothing to bundle");
        }
        roots.insert(
            p.clone(),
            c.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>(),
        );
        for (n, v, a) in c {
            wanted.insert(n, (v, a));
        }
    }
    // Download what is not there yet (apt-get download writes name_version_arch.deb).
    let file_of = |n: &str, v: &str, a: &str| format!("{n}_{}_{a}.deb", v.replace(':', "%3a"));
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(n, (v, a))| !debs.join(file_of(n, v, a)).is_file())
        .map(|(n, (v, _))| format!("{n}={v}"))
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get")
            .arg("download")
            .arg("-q")
            .args(&missing)
            .current_dir(&debs)
            .env("LC_ALL", "C"))?;
    }
    let zstd = dpkg_reads_zstd(&opts.base_status)?;
    let mut packages = Vec::new();
    for (n, (v, a)) in &wanted {
        let file = file_of(n, v, a);
        let path = debs.join(&file);
        if zstd {
            repack_zstd(&path)?;
        }
        let (sha256, size) = sha256_file(&path)?;
        packages.push(BundlePackage {
            name: n.clone(),
            version: v.clone(),
            arch: a.clone(),
            file: format!("debs/{file}"),
            sha256,
            size,
        });
    }
    // Architecture-independent packages ("all") say nothing about the nodes.
    let arch = packages
        .iter()
        .find(|p| p.arch != "all")
        .map(|p| p.arch.clone())
        .unwrap_or_else(|| "amd64".into());
    let (mut binaries, kubernetes_version) = add_binaries(opts, &arch)?;
    if let Some(img) = &opts.images {
        // The pause image under the tag the bundle's release asks for; a bundle without
        // Kubernetes binaries does not say which release it serves, so it carries every tag.
        let pause = match kubernetes_version {
            Some(v) => vec![images::pause_image_for(v.minor, v.patch)],
            None => images::every_pause_image(),
        };
        let components = match kubernetes_version {
            Some(v) => component_inputs(&opts.out, v, &packages)?,
            None => Vec::new(),
        };
        binaries.extend(add_images(&opts.out, img, &pause, &components)?);
    } else {
        // A bundle rebuilt without images must not keep an old images/ the phase would import.
        let old = opts.out.join("images");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(file_err(&old))?;
        }
    }
    let manifest = BundleManifest {
        format: 1,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        os: "debian-12".into(),
        arch,
        packages,
        roots,
        binaries,
        kubernetes_version: kubernetes_version.map(|v| v.to_string()),
    };
    let path = opts.out.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    std::fs::write(&path, text + "\n").map_err(file_err(&path))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{ImageEntry, ImageManifest, BUSYBOX_IMAGE};

    const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.2";
    use sha2::{Digest, Sha256};

    /// An ar archive of `(name, contents)` members, as a .deb is laid out.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn binaries_directories_without_kubernetes_are_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |dirs: Vec<PathBuf>, release: Option<ReleaseOptions>| BuildOptions {
            out: dir.path().join("bundle"),
            packages: vec![],
            // Missing: the binaries are checked before the base system is looked at.
            base_status: dir.path().join("no-status"),
            binary_dirs: dirs,
            images: None,
            release,
        };
        let missing = dir.path().join("missing");
        let e = build(&opts(vec![missing.clone()], None)).unwrap_err();
        assert!(
            matches!(&e, BundleError::BinaryDir { dir, .. } if *dir == missing),
            "{e:?}"
        );
        // The parent of the binaries (what a build leaves next to bin/).
        let parent = dir.path().join("kube");
        std::fs::create_dir_all(parent.join("bin")).unwrap();
        std::fs::write(parent.join("BUILD-INFO"), "v1.20.2").unwrap();
        let e = build(&opts(vec![parent.clone()], None)).unwrap_err();
        assert!(
            matches!(&e, BundleError::NoKubernetesBinaries { dirs } if *dirs == [parent.clone()]),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("kube-apiserver") && text.contains(&parent.display().to_string()),
            "{text}"
        );
        // With a release downloaded, a directory of other tools is fine; so is one with a
        // Kubernetes binary: the build then goes on to the base system.
        let release = ReleaseOptions {
            version: KubeVersion::parse("v1.30.2").unwrap(),
            base: String::new(),
        };
        for (dirs, release) in [
            (vec![parent.clone()], Some(release)),
            (vec![parent.join("bin")], None),
        ] {
            std::fs::write(parent.join("bin/kubelet"), "").unwrap();
            let e = build(&opts(dirs, release)).unwrap_err();
            assert!(matches!(e, BundleError::NoBase { .. }), "{e:?}");
        }
        // An image archive that is not there: refused when the options are made (before any
        // build), naming it.
        let e = ImageOptions::from_env(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(e, BundleError::ImageArchive(_)), "{e:?}");
        assert!(e.to_string().starts_with("--image: "), "{e}");
    }

    #[test]
    fn reads_deb_members_and_the_nodes_dpkg() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("x.deb");
        let data: &[u8] = b"odd";
        std::fs::write(
            &deb,
            ar(&[
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", data),
                ("data.tar.xz", b"even"),
            ]),
        )
        .unwrap();
        assert_eq!(
            deb_members(&deb).unwrap(),
            ["debian-binary", "control.tar.xz", "data.tar.xz"]
        );
        std::fs::write(&deb, b"not an archive").unwrap();
        assert!(deb_members(&deb).unwrap().is_empty());
        // Not a package: nothing to repack, the file is left alone.
        repack_zstd(&deb).unwrap();
        assert_eq!(std::fs::read(&deb).unwrap(), b"not an archive");

        let status = dir.path().join("status");
        let stanza = |v: &str| {
            format!("Package: dash\nVersion: 9.9\n\nPackage: dpkg\nStatus: install ok installed\nVersion: {v}\n")
        };
        std::fs::write(&status, stanza("1.21.22")).unwrap();
        assert!(dpkg_reads_zstd(&status).unwrap(), "Debian 12");
        std::fs::write(&status, stanza("1.20.13")).unwrap();
        assert!(!dpkg_reads_zstd(&status).unwrap(), "Debian 11");
        std::fs::write(&status, "Package: dash\nVersion: 1\n").unwrap();
        assert!(!dpkg_reads_zstd(&status).unwrap(), "no dpkg listed");
    }

    /// A cache holding both image names (so `ensure` reuses it and builds nothing).
    fn fake_cache(dir: &Path) -> ImageManifest {
        let mut entries = Vec::new();
        for (name, data) in [(PAUSE_IMAGE, &b"pause bytes"[..]), (BUSYBOX_IMAGE, b"bb")] {
            let file = images::file_name(name);
            std::fs::write(dir.join(&file), data).unwrap();
            entries.push(ImageEntry {
                name: name.into(),
                file,
                sha256: hex::encode(Sha256::digest(data)),
                size: data.len() as u64,
                digest: "sha256:00".into(),
                recipe: images::RECIPE,
                component: None,
                source: None,
            });
        }
        let m = ImageManifest {
            format: 1,
            images: entries,
        };
        std::fs::write(
            dir.join(images::MANIFEST_FILE),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        m
    }

    #[test]
    fn images_are_copied_and_covered_by_the_bundle_manifest() {
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let cached = fake_cache(cache.path());
        let opts = ImageOptions {
            cache: cache.path().to_path_buf(),
            sources: Sources {
                kube_src: "/nonexistent".into(),
                busybox: "/nonexistent".into(),
            },
            given: vec![],
        };
        let files = add_images(out.path(), &opts, &[PAUSE_IMAGE.to_string()], &[]).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "image:registry.k8s.io/pause:3.2",
                "image:docker.io/library/busybox:clusterkit",
                "images-manifest"
            ]
        );
        // What the images phase reads: the same listing, every tarball verified.
        let in_bundle = out.path().join("images");
        let m = images::load(&in_bundle).unwrap();
        assert_eq!(m, cached);
        images::verify(&in_bundle, &m).unwrap();
        let bundle = Bundle {
            dir: out.path().to_path_buf(),
            manifest: BundleManifest {
                format: 1,
                binaries: files,
                ..Default::default()
            },
        };
        bundle.verify().unwrap();
        // Tampering with a tarball or with images/manifest.json is caught by `bundle verify`.
        std::fs::remove_file(in_bundle.join("pause_3.2.oci.tar")).unwrap();
        std::fs::write(in_bundle.join("pause_3.2.oci.tar"), b"pause bytez").unwrap();
        assert!(bundle
            .verify()
            .unwrap_err()
            .to_string()
            .contains("pause_3.2.oci.tar"));
        // Rebuilding replaces the stale file.
        let files = add_images(out.path(), &opts, &[PAUSE_IMAGE.to_string()], &[]).unwrap();
        let bundle = Bundle {
            manifest: BundleManifest {
                binaries: files,
                ..Default::default()
            },
            ..bundle
        };
        bundle.verify().unwrap();
        std::fs::write(in_bundle.join(images::MANIFEST_FILE), b"{}").unwrap();
        assert!(bundle
            .verify()
            .unwrap_err()
            .to_string()
            .contains("manifest.json"));
    }

    #[test]
    fn an_operators_image_archive_is_carried_as_it_is_and_not_built() {
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mine = tempfile::tempdir().unwrap();
        fake_cache(cache.path());
        // A registry export stand-in: an OCI archive named as upstream names the image.
        let name = "registry.k8s.io/kube-scheduler:v1.20.2";
        let upstream = images::build_image(&images::component_spec(
            name,
            "kube-scheduler",
            vec![("usr/local/bin/kube-scheduler".into(), b"upstream".to_vec())],
        ));
        let archive = mine.path().join("kube-scheduler.tar");
        std::fs::write(&archive, &upstream.archive).unwrap();
        let mut opts = without_sources(cache.path());
        opts.given = read_archives(std::slice::from_ref(&archive)).unwrap();
        // Its binary does not exist: building the image would fail.
        let input = images::ComponentInput {
            image: name.into(),
            binary: mine.path().join("no-binary/kube-scheduler"),
        };
        let files = add_images(out.path(), &opts, &[PAUSE_IMAGE.to_string()], &[input]).unwrap();
        assert!(
            files.iter().any(|f| f.name == format!("image:{name}")),
            "{files:#?}"
        );
        let in_bundle = out.path().join("images");
        let m = images::load(&in_bundle).unwrap();
        images::verify(&in_bundle, &m).unwrap();
        let e = m.images.iter().find(|i| i.name == name).expect("listed");
        assert_eq!(e.digest, upstream.manifest_digest);
        assert_eq!(e.component.as_deref(), Some("kube-scheduler"));
        assert_eq!(
            std::fs::read(in_bundle.join(&e.file)).unwrap(),
            upstream.archive
        );
        // Copied, not linked: the operator's file may change later.
        std::fs::write(&archive, b"changed").unwrap();
        images::verify(&in_bundle, &m).unwrap();

        // The same image twice, something not an archive, an archive without a name: refused,
        // naming the file.
        std::fs::write(&archive, &upstream.archive).unwrap();
        let twice = mine.path().join("again.tar");
        std::fs::write(&twice, &upstream.archive).unwrap();
        let e = read_archives(&[archive.clone(), twice.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("again.tar") && e.contains("also in"), "{e}");
        let junk = mine.path().join("junk.tar");
        std::fs::write(&junk, b"not a tar at all").unwrap();
        let e = images::read_archive(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.tar") && e.contains("OCI image archive"),
            "{e}"
        );
        let unnamed = images::build_image(&images::ImageSpec {
            name: "v1.20.2".into(),
            ..images::component_spec("x", "x", vec![])
        });
        std::fs::write(&junk, &unnamed.archive).unwrap();
        let e = images::read_archive(&junk).unwrap_err().to_string();
        assert!(e.contains("has no full name"), "{e}");
        assert_eq!(
            images::component_of("mirror.example/k8s/etcd:3.4.13-0").as_deref(),
            Some("etcd")
        );
        assert_eq!(
            images::component_of("registry.k8s.io/coredns/coredns:v1.8.0"),
            None
        );
    }

    /// Image options whose cache is `cache` and whose sources do not exist: anything the cache
    /// lacks cannot be built.
    fn without_sources(cache: &Path) -> ImageOptions {
        ImageOptions {
            cache: cache.to_path_buf(),
            sources: Sources {
                kube_src: cache.join("no-src"),
                busybox: "/nonexistent".into(),
            },
            given: vec![],
        }
    }

    #[test]
    fn missing_image_sources_name_the_way_out() {
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let opts = without_sources(cache.path());
        let e = add_images(out.path(), &opts, &[PAUSE_IMAGE.to_string()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--no-images"), "{e}");
    }

    #[test]
    fn a_cache_without_the_release_s_pause_tag_builds_it() {
        // The cache holds pause:3.2 and busybox; a v1.28 bundle wants pause:3.9, which must be
        // built (here it cannot be: no sources), never replaced by the 3.2 at hand.
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        fake_cache(cache.path());
        let opts = without_sources(cache.path());
        let e = add_images(out.path(), &opts, &[images::pause_image_for(28, 7)], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Kubernetes source"), "{e}");
        assert!(!out.path().join("images/pause_3.2.oci.tar").exists());
    }

    #[test]
    fn images_of_an_older_recipe_are_rebuilt() {
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut m = fake_cache(cache.path());
        for i in &mut m.images {
            i.recipe = images::RECIPE - 1;
        }
        std::fs::write(
            cache.path().join(images::MANIFEST_FILE),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        let opts = without_sources(cache.path());
        // Same names, verified bytes, older recipe: rebuilt (here it cannot be: no sources).
        let e = add_images(out.path(), &opts, &[PAUSE_IMAGE.to_string()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Kubernetes source"), "{e}");
    }

    #[test]
    fn one_release_per_bundle() {
        let reported = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let same = reported(&[("kubelet", "v1.28.7"), ("kubectl", "v1.28.7")]);
        assert_eq!(
            kubernetes_version(&same, None).unwrap(),
            Some(KubeVersion::new(1, 28, 7))
        );
        assert_eq!(kubernetes_version(&reported(&[]), None).unwrap(), None);
        let mixed = reported(&[("kubelet", "v1.28.7"), ("kubectl", "v1.20.2")]);
        let e = kubernetes_version(&mixed, None).unwrap_err().to_string();
        assert!(
            e.contains("kubelet is v1.28.7") && e.contains("kubectl is v1.20.2"),
            "{e}"
        );
        let release = ReleaseOptions {
            version: KubeVersion::new(1, 29, 0),
            base: String::new(),
        };
        let e = kubernetes_version(&same, Some(&release))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--kubernetes is v1.29.0") && e.contains("v1.28.7"),
            "{e}"
        );
    }

    #[test]
    fn parses_apt_simulation() {
        let out = "NOTE: This is only a simulation!\n\
                   Inst runc (1.1.5+ds1-1+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])\n\
                   Inst libx [1.0] (1.1 Debian:12 [amd64])\n\
                   Conf runc (1.1.5+ds1-1+deb12u1 Debian:12.15/oldstable [amd64])\n";
        let p = parse_simulation(out);
        assert_eq!(
            p,
            vec![
                (
                    "runc".to_string(),
                    "1.1.5+ds1-1+deb12u1".to_string(),
                    "amd64".to_string()
                ),
                ("libx".to_string(), "1.1".to_string(), "amd64".to_string()),
            ]
        );
    }
}
