//! `package`: make sure packages are installed (apt or dnf), from the online repositories or
//! from an offline bundle.
//!
//! The check is one remote `dpkg-query` (or `rpm -q`) over every package involved. With an
//! offline bundle (`packages: { bundle: DIR }` in cluster.yaml, built by `clusterkit bundle
//! build`), the module installs the missing part of each package's dependency closure recorded
//! in the bundle's `manifest.json`: it uploads those `.deb` files over SSH and runs `dpkg -i` on
//! them, so nodes never need to reach a mirror. Without a bundle it runs `apt-get install` or
//! `dnf install` with the requested version pins (`name=version`).
//!
//! Limits: bundles hold Debian packages only; removal (`state: absent`) uses the package
//! manager online or offline alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{flex, sh_quote, ArgsError, ModuleError, Outcome, TaskCx};
use crate::exec::UploadOptions;

/// Where `.deb` files from a bundle are put on a node before `dpkg -i`.
pub const REMOTE_PACKAGE_DIR: &str = "/var/cache/clusterkit/packages";

/// `manifest.json` of an offline bundle.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BundleManifest {
    /// Manifest format version (1).
    pub format: u32,
    /// When the bundle was built (RFC 3339).
    pub created: String,
    /// The node OS the packages are for (`debian-12`).
    pub os: String,
    /// Debian architecture (`amd64`).
    pub arch: String,
    /// Every package file in the bundle.
    pub packages: Vec<BundlePackage>,
    /// Requested package → every bundle package it needs (itself included), in install order.
    #[serde(default)]
    pub roots: BTreeMap<String, Vec<String>>,
    /// Other files (e.g. Kubernetes binaries), checksummed too.
    #[serde(default)]
    pub binaries: Vec<BundleFile>,
    /// The Kubernetes release of the bundle's Kubernetes binaries (`v1.28.7`), as they report
    /// it; `None` for a bundle without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
}

impl BundleManifest {
    /// [`BundleManifest::kubernetes_version`] as a release; `None` without Kubernetes binaries
    /// (or with a version that does not parse, which no `bundle build` writes).
    pub fn kubernetes_release(&self) -> Option<crate::release::KubeVersion> {
        self.kubernetes_version
            .as_deref()
            .and_then(|v| crate::release::KubeVersion::parse(v).ok())
    }
}

/// One `.deb` in a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundlePackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Path relative to the bundle directory.
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

/// One other file in a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleFile {
    pub name: String,
    /// Path relative to the bundle directory.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// The version a Kubernetes binary reports (`v1.28.7`), read when the bundle was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A bundle that cannot be read, does not match its manifest, or lacks a package.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle manifest {path}: {source}")]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {source}")]
    ParseManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} does not match the bundle manifest (size or sha256 differs): rebuild the bundle"
    )]
    Mismatch { path: PathBuf },

    #[error(
        "package {name} is not in the offline bundle {dir} (it holds: {holds}); rebuild it with \
         `clusterkit bundle build`"
    )]
    NotInBundle {
        name: String,
        dir: PathBuf,
        holds: String,
    },

    #[error("bundle manifest lists {package} for {name} but has no file for it")]
    MissingFile { package: String, name: String },
}

/// A bundle on the operator's machine.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: BundleManifest,
}

impl Bundle {
    /// Reads `DIR/manifest.json` (does not hash the files; see [`Bundle::verify`]).
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(BundleError::ReadManifest { path, source }),
        };
        let manifest: BundleManifest = match serde_json::from_str(&text) {
            Ok(manifest) => manifest,
            Err(source) => return Err(BundleError::ParseManifest { path, source }),
        };
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Checks every file against its recorded size and sha256.
    pub fn verify(&self) -> Result<(), BundleError> {
        let files = self
            .manifest
            .packages
            .iter()
            .map(|p| (&p.file, &p.sha256, p.size))
            .chain(
                self.manifest
                    .binaries
                    .iter()
                    .map(|b| (&b.file, &b.sha256, b.size)),
            );
        for (file, sha, size) in files {
            let path = self.dir.join(file);
            let data = match std::fs::read(&path) {
                Ok(data) => data,
                Err(source) => return Err(BundleError::ReadFile { path, source }),
            };
            if data.len() as u64 != size || &super::files::sha256_hex(&data) != sha {
                return Err(BundleError::Mismatch { path });
            }
        }
        Ok(())
    }

    /// The bundle packages `name` needs, itself included.
    pub fn closure(&self, name: &str) -> Result<Vec<&BundlePackage>, BundleError> {
        let names: Vec<String> = match self.manifest.roots.get(name) {
            Some(c) => c.clone(),
            None if self.package(name).is_some() => vec![name.to_string()],
            None => {
                return Err(BundleError::NotInBundle {
                    name: name.to_string(),
                    dir: self.dir.clone(),
                    holds: self
                        .manifest
                        .roots
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        };
        names
            .iter()
            .map(|n| {
                self.package(n).ok_or_else(|| BundleError::MissingFile {
                    package: n.clone(),
                    name: name.to_string(),
                })
            })
            .collect()
    }

    /// The manifest entry of the bundle file at `path` (any path that resolves to it).
    pub fn binary_at(&self, path: &Path) -> Option<&BundleFile> {
        let path = std::fs::canonicalize(path).ok()?;
        self.manifest
            .binaries
            .iter()
            .find(|b| std::fs::canonicalize(self.dir.join(&b.file)).is_ok_and(|p| p == path))
    }

    fn package(&self, name: &str) -> Option<&BundlePackage> {
        self.manifest.packages.iter().find(|p| p.name == name)
    }
}

/// present or absent.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    #[default]
    Present,
    Absent,
}

/// Where packages come from.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    /// The bundle when cluster.yaml configures one, else the repositories.
    #[default]
    Auto,
    Bundle,
    Repo,
}

/// Arguments of `package`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageArgs {
    /// Package names, optionally pinned: `containerd=1.6.20~ds1-1+b1`.
    #[serde(deserialize_with = "flex::strings")]
    pub names: Vec<String>,
    #[serde(default)]
    pub state: PackageState,
    #[serde(default)]
    pub source: PackageSource,
}

/// `name=version` → (name, Some(version)).
fn split_pin(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('=') {
        Some((n, v)) if !v.is_empty() => (n, Some(v)),
        _ => (spec.trim_end_matches('='), None),
    }
}

fn check_name(name: &str) -> Result<(), ModuleError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.:~_".contains(&b))
    {
        Ok(())
    } else {
        Err(ArgsError::Invalid(format!("`{name}` is not a package name")).into())
    }
}

/// What the package database says: name → version, for installed packages only.
async fn installed(
    cx: &TaskCx<'_>,
    rpm: bool,
    names: &[&str],
) -> Result<BTreeMap<String, String>, ModuleError> {
    let list = names
        .iter()
        .map(|n| sh_quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let line = if rpm {
        format!("rpm -q --qf '%{{NAME}}\\t%{{VERSION}}-%{{RELEASE}}\\tii\\n' {list} 2>/dev/null | grep -v 'is not installed'; true")
    } else {
        format!("dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{db:Status-Abbrev}}\\n' {list} 2>/dev/null; true")
    };
    let out = cx.sh(&line).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (n, v, s) = (f.next()?, f.next()?, f.next()?);
            s.starts_with("ii").then(|| (n.to_string(), v.to_string()))
        })
        .collect())
}

pub async fn run(args: PackageArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let family = cx
        .facts
        .pointer("/os/family")
        .and_then(|v| v.as_str())
        .unwrap_or("debian");
    let rpm = family == "rhel";
    let specs: Vec<(&str, Option<&str>)> = args.names.iter().map(|s| split_pin(s)).collect();
    for (n, _) in &specs {
        check_name(n)?;
    }
    let bundle =
        match (args.source, cx.bundle) {
            (PackageSource::Repo, _) => None,
            (PackageSource::Bundle, None) => return Err(ModuleError::Failed(
                "`source: bundle` but cluster.yaml configures no offline bundle (packages.bundle)"
                    .into(),
            )),
            (_, b) => b,
        };
    if bundle.is_some() && rpm {
        return Err(ModuleError::Failed(
            "offline bundles hold Debian packages; this host is RHEL-family".into(),
        ));
    }

    if args.state == PackageState::Absent {
        let names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
        let have = installed(cx, rpm, &names).await?;
        let remove: Vec<&str> = names
            .into_iter()
            .filter(|n| have.contains_key(*n))
            .collect();
        if remove.is_empty() {
            return Ok(Outcome::ok("not installed"));
        }
        if cx.check {
            return Ok(Outcome::changed(format!(
                "would remove {}",
                remove.join(", ")
            )));
        }
        let list = remove
            .iter()
            .map(|n| sh_quote(n))
            .collect::<Vec<_>>()
            .join(" ");
        let line = if rpm {
            format!("dnf remove -y {list}")
        } else {
            format!("DEBIAN_FRONTEND=noninteractive apt-get remove -y {list}")
        };
        cx.sh(&line).await?;
        return Ok(Outcome::changed(format!("removed {}", remove.join(", "))));
    }

    // Every package involved, queried in one command.
    let mut query: Vec<String> = specs.iter().map(|(n, _)| n.to_string()).collect();
    if let Some(b) = bundle {
        for (n, _) in &specs {
            for p in b.closure(n)? {
                if !query.contains(&p.name) {
                    query.push(p.name.clone());
                }
            }
        }
    }
    let have = installed(
        cx,
        rpm,
        &query.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    let wanted_ok = |n: &str, v: Option<&str>| match (have.get(n), v) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(iv), Some(v)) => iv == v,
    };
    let missing: Vec<(&str, Option<&str>)> = specs
        .iter()
        .copied()
        .filter(|(n, v)| !wanted_ok(n, *v))
        .collect();
    if missing.is_empty() {
        let versions: Vec<String> = specs
            .iter()
            .map(|(n, _)| format!("{n} {}", have.get(*n).map(String::as_str).unwrap_or("?")))
            .collect();
        return Ok(Outcome::ok(format!("installed: {}", versions.join(", "))));
    }
    let describe = |list: &[(&str, Option<&str>)]| {
        list.iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v}"),
                None => n.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };

    match bundle {
        Some(b) => {
            // The closure members not installed yet, in the bundle's order, each once.
            let mut debs: Vec<&BundlePackage> = Vec::new();
            for (n, v) in &missing {
                for p in b.closure(n)? {
                    if p.name == *n {
                        if let Some(v) = v {
                            if &p.version != v {
                                return Err(ModuleError::Failed(format!(
                                    "{n}={v} was requested but the offline bundle has {n} {}",
                                    p.version
                                )));
                            }
                        }
                    }
                    let needed = p.name == *n || !have.contains_key(&p.name);
                    if needed && !debs.iter().any(|d| d.name == p.name) {
                        debs.push(p);
                    }
                }
            }
            let names: Vec<String> = debs
                .iter()
                .map(|d| format!("{} {}", d.name, d.version))
                .collect();
            if cx.check {
                return Ok(Outcome::changed(format!(
                    "would install from the bundle: {}",
                    names.join(", ")
                )));
            }
            let mut remote = Vec::new();
            for d in &debs {
                let local = b.dir.join(&d.file);
                let data = std::fs::read(&local).map_err(|e| {
                    ModuleError::Failed(format!("cannot read {}: {e}", local.display()))
                })?;
                let file_name = Path::new(&d.file)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("{}.deb", d.name));
                let path = format!("{REMOTE_PACKAGE_DIR}/{file_name}");
                cx.exec
                    .upload(
                        &data,
                        &path,
                        &UploadOptions {
                            mode: 0o644,
                            owner: None,
                            create_parents: true,
                        },
                    )
                    .await?;
                remote.push(sh_quote(&path));
            }
            cx.sh(&format!(
                "DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold {} && rm -f {}",
                remote.join(" "),
                remote.join(" ")
            ))
            .await?;
            Ok(Outcome::changed(format!(
                "installed from the bundle: {}",
                names.join(", ")
            )))
        }
        None => {
            if cx.check {
                return Ok(Outcome::changed(format!(
                    "would install {}",
                    describe(&missing)
                )));
            }
            let list = missing
                .iter()
                .map(|(n, v)| match (v, rpm) {
                    (Some(v), false) => sh_quote(&format!("{n}={v}")),
                    (Some(v), true) => sh_quote(&format!("{n}-{v}")),
                    (None, _) => sh_quote(n),
                })
                .collect::<Vec<_>>()
                .join(" ");
            let line = if rpm {
                format!("dnf install -y {list}")
            } else {
                format!(
                    "export DEBIAN_FRONTEND=noninteractive; ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq; \
                     apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold {list}"
                )
            };
            cx.sh(&line).await?;
            Ok(Outcome::changed(format!(
                "installed {}",
                describe(&missing)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_split() {
        assert_eq!(
            split_pin("containerd=1.6.20~ds1-1"),
            ("containerd", Some("1.6.20~ds1-1"))
        );
        assert_eq!(split_pin("runc"), ("runc", None));
    }

    #[test]
    fn closure_from_manifest() {
        let pkg = |n: &str| BundlePackage {
            name: n.into(),
            version: "1".into(),
            arch: "amd64".into(),
            file: format!("debs/{n}.deb"),
            sha256: String::new(),
            size: 0,
        };
        let mut roots = BTreeMap::new();
        roots.insert(
            "containerd".to_string(),
            vec!["runc".to_string(), "containerd".to_string()],
        );
        let b = Bundle {
            dir: PathBuf::from("/b"),
            manifest: BundleManifest {
                format: 1,
                packages: vec![pkg("containerd"), pkg("runc")],
                roots,
                ..Default::default()
            },
        };
        let c: Vec<&str> = b
            .closure("containerd")
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(c, ["runc", "containerd"]);
        assert_eq!(b.closure("runc").unwrap().len(), 1);
        assert!(b
            .closure("kubelet")
            .unwrap_err()
            .to_string()
            .contains("not in the offline bundle"));
    }
}
