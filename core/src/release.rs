//! What each Kubernetes minor release's kubeadm pulls besides the Kubernetes binaries: the
//! pause (pod sandbox) image tag, the etcd image tag and the CoreDNS image — the one table
//! clusterkit keeps of them, so the resolved defaults (`runtime.sandbox_image`), the images the
//! offline bundle builds, the addons and the version checks agree.
//!
//! Every value is what `kubeadm config images list --kubernetes-version vX.Y.Z` prints for
//! that release (kubeadm's `PauseVersion`, `SupportedEtcdVersion`/`DefaultEtcdVersion` and
//! `CoreDNSVersion` constants), including the etcd and CoreDNS bumps kubeadm made in patch
//! releases.
//!
//! Limits: v1.20 to v1.34, the releases clusterkit installs ([`MIN_MINOR`]..=[`MAX_MINOR`]);
//! a release outside that range gets its nearest neighbour's values (validation refuses it
//! before anything is installed).

/// The registry kubeadm's images come from unless `kubernetes.image_repository` says otherwise.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "registry.k8s.io";

/// The oldest minor release clusterkit installs (Debian 12 builds v1.20.2 from source).
pub const MIN_MINOR: u32 = 20;

/// The newest minor release whose rules clusterkit knows.
pub const MAX_MINOR: u32 = 34;

/// A version that is not one, or one clusterkit does not install.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `[v]MAJOR.MINOR.PATCH[-suffix]` ([`KubeVersion::parse`]).
    #[error("invalid Kubernetes version {input:?}: {reason} (expected vMAJOR.MINOR.PATCH, e.g. v1.30.0)")]
    Invalid {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not exactly `vMAJOR.MINOR.PATCH`, as cluster.yaml must write it ([`KubeVersion`]'s
    /// `FromStr`).
    #[error("{input:?} is not a version like v1.26.3")]
    NotExact {
        /// What was given.
        input: String,
    },
    /// A version outside [`KubeVersion::MIN_SUPPORTED`] to `v1.<MAX_MINOR>.x`.
    #[error(
        "{version} is not supported: clusterkit installs {} through v1.{MAX_MINOR}.x",
        KubeVersion::MIN_SUPPORTED
    )]
    Unsupported {
        /// The refused version.
        version: KubeVersion,
    },
}

/// A Kubernetes release version, e.g. `v1.20.2`: cluster.yaml's `kubernetes.version`, what a
/// binary reports, what a bundle records. Every version rule is decided on it
/// (`clusterkit_installer::versions::rules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Always 1 so far.
    pub major: u32,
    /// The minor release, the one that decides the rules.
    pub minor: u32,
    /// The patch release.
    pub patch: u32,
}

impl KubeVersion {
    /// The oldest version clusterkit installs: the one Debian 12 builds (see DESIGN.md).
    pub const MIN_SUPPORTED: KubeVersion = KubeVersion::new(1, MIN_MINOR, 0);

    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses a version as tools print it: `v1.20.2` or `1.20.2`; pre-release and build
    /// suffixes (`-rc.0`, `+k3s1`) are accepted and ignored because the rules only depend on
    /// major.minor. cluster.yaml's stricter form is [`KubeVersion`]'s `FromStr`.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let invalid = |reason| VersionError::Invalid {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut num = |what| -> Result<u32, VersionError> {
            parts
                .next()
                .ok_or_else(|| invalid(what))?
                .parse::<u32>()
                .map_err(|_| invalid("a part is not a number"))
        };
        let major = num("missing major version")?;
        let minor = num("missing minor version")?;
        let patch = num("missing patch version")?;
        if parts.next().is_some() {
            return Err(invalid("more than three parts"));
        }
        Ok(Self::new(major, minor, patch))
    }

    /// True when this version is `1.minor` or newer.
    pub fn at_least(&self, minor: u32) -> bool {
        (self.major, self.minor) >= (1, minor)
    }

    /// Fails for versions clusterkit does not install.
    pub fn check_supported(&self) -> Result<(), VersionError> {
        if *self < Self::MIN_SUPPORTED || (self.major, self.minor) > (1, MAX_MINOR) {
            return Err(VersionError::Unsupported { version: *self });
        }
        Ok(())
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = VersionError;
    /// Accepts exactly `vMAJOR.MINOR.PATCH` (leading `v` required, digits only), as
    /// cluster.yaml must write it.
    fn from_str(s: &str) -> Result<Self, VersionError> {
        let bad = || VersionError::NotExact {
            input: s.to_string(),
        };
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let n = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u32>().map_err(|_| bad())
        };
        let mut parts = rest.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(major), Some(minor), Some(patch), None) => {
                Ok(KubeVersion::new(n(major)?, n(minor)?, n(patch)?))
            }
            _ => Err(bad()),
        }
    }
}

impl serde::Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The images kubeadm of one release uses, as tags (the repository is the cluster's
/// `image_repository`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseImages {
    /// `pause:<tag>`, the pod sandbox image.
    pub pause: &'static str,
    /// `etcd:<tag>`: the etcd release (`3.5.10`) with kubeadm's image revision (`-0`).
    pub etcd: &'static str,
    /// The CoreDNS image tag (`v1.10.1`; `1.7.0` without the `v` before v1.21).
    pub coredns: &'static str,
}

impl ReleaseImages {
    /// The etcd release without kubeadm's image revision (`3.5.10-0` → `3.5.10`).
    pub fn etcd_version(&self) -> &'static str {
        self.etcd.split('-').next().unwrap_or(self.etcd)
    }

    /// The CoreDNS image path under the image repository: `coredns` before v1.21, then
    /// `coredns/coredns` (kubeadm moved it when CoreDNS moved its images).
    pub fn coredns_path(minor: u32) -> &'static str {
        if minor <= 20 {
            "coredns"
        } else {
            "coredns/coredns"
        }
    }
}

/// kubeadm's images for Kubernetes `1.<minor>.<patch>`.
pub fn images(minor: u32, patch: u32) -> ReleaseImages {
    let minor = minor.clamp(MIN_MINOR, MAX_MINOR);
    // (first patch with this etcd tag, tag), newest last.
    let etcd: &[(u32, &'static str)] = match minor {
        20 | 21 => &[(0, "3.4.13-0")],
        22 => &[(0, "3.5.0-0"), (17, "3.5.6-0")],
        23 => &[(0, "3.5.1-0"), (14, "3.5.5-0"), (15, "3.5.6-0")],
        24 => &[(0, "3.5.3-0"), (8, "3.5.5-0"), (9, "3.5.6-0")],
        25 => &[
            (0, "3.5.4-0"),
            (4, "3.5.5-0"),
            (5, "3.5.6-0"),
            (15, "3.5.9-0"),
        ],
        26 => &[(0, "3.5.6-0"), (10, "3.5.9-0"), (13, "3.5.10-0")],
        27 => &[
            (0, "3.5.7-0"),
            (7, "3.5.9-0"),
            (10, "3.5.10-0"),
            (12, "3.5.12-0"),
        ],
        28 => &[
            (0, "3.5.9-0"),
            (6, "3.5.10-0"),
            (8, "3.5.12-0"),
            (14, "3.5.15-0"),
        ],
        29 => &[
            (0, "3.5.10-0"),
            (3, "3.5.12-0"),
            (9, "3.5.15-0"),
            (11, "3.5.16-0"),
        ],
        30 => &[(0, "3.5.12-0"), (5, "3.5.15-0")],
        31 => &[(0, "3.5.15-0"), (14, "3.5.24-0")],
        32 => &[(0, "3.5.16-0"), (10, "3.5.24-0")],
        33 => &[(0, "3.5.21-0"), (6, "3.5.24-0")],
        _ => &[(0, "3.6.4-0"), (2, "3.6.5-0")],
    };
    let coredns: &[(u32, &'static str)] = match minor {
        20 => &[(0, "1.7.0")],
        21 => &[(0, "v1.8.0")],
        22 => &[(0, "v1.8.4")],
        23 | 24 => &[(0, "v1.8.6")],
        25 | 26 => &[(0, "v1.9.3")],
        27 | 28 => &[(0, "v1.10.1")],
        29 => &[(0, "v1.11.1")],
        30 => &[(0, "v1.11.1"), (5, "v1.11.3")],
        31 => &[(0, "v1.11.1"), (1, "v1.11.3")],
        32 => &[(0, "v1.11.3")],
        33 => &[(0, "v1.12.0")],
        _ => &[(0, "v1.12.1")],
    };
    let pause = match minor {
        20 => "3.2",
        21 => "3.4.1",
        22 => "3.5",
        23 => "3.6",
        24 => "3.7",
        25 => "3.8",
        26..=30 => "3.9",
        31..=33 => "3.10",
        _ => "3.10.1",
    };
    let at = |table: &[(u32, &'static str)]| {
        table
            .iter()
            .rev()
            .find(|(from, _)| patch >= *from)
            .map(|(_, tag)| *tag)
            .unwrap_or(table[0].1)
    };
    ReleaseImages {
        pause,
        etcd: at(etcd),
        coredns: at(coredns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses_only_v_major_minor_patch() {
        let v: KubeVersion = "v1.26.3".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 26, 3));
        assert_eq!(v.to_string(), "v1.26.3");
        assert!(v.at_least(24) && !v.at_least(27));
        for bad in [
            "1.26.3",
            "v1.26",
            "v1.26.3.4",
            "v1.x.3",
            "v1.26.3-rc.1",
            "v1..3",
            "",
        ] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            KubeVersion::parse("v1.20.2").unwrap(),
            KubeVersion::new(1, 20, 2)
        );
        assert_eq!(
            KubeVersion::parse("1.30.0-rc.1").unwrap(),
            KubeVersion::new(1, 30, 0)
        );
        assert_eq!(
            KubeVersion::parse("v1.26.3").unwrap().to_string(),
            "v1.26.3"
        );
        for bad in ["", "v1", "v1.20", "v1.x.0", "v1.2.3.4", "latest"] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(KubeVersion::new(1, 19, 9).check_supported().is_err());
        assert!(KubeVersion::new(1, 20, 0).check_supported().is_ok());
        assert!(KubeVersion::new(1, 34, 9).check_supported().is_ok());
        let e = KubeVersion::new(1, 35, 0).check_supported().unwrap_err();
        assert!(e.to_string().contains("v1.20.0 through v1.34.x"), "{e}");
    }

    #[test]
    fn kubeadm_images_per_release() {
        // (minor, patch) → (pause, etcd, coredns), as `kubeadm config images list` prints them.
        let table = [
            ((20, 2), ("3.2", "3.4.13-0", "1.7.0")),
            ((21, 0), ("3.4.1", "3.4.13-0", "v1.8.0")),
            ((24, 0), ("3.7", "3.5.3-0", "v1.8.6")),
            ((24, 9), ("3.7", "3.5.6-0", "v1.8.6")),
            ((27, 0), ("3.9", "3.5.7-0", "v1.10.1")),
            ((28, 0), ("3.9", "3.5.9-0", "v1.10.1")),
            ((28, 7), ("3.9", "3.5.10-0", "v1.10.1")),
            ((29, 0), ("3.9", "3.5.10-0", "v1.11.1")),
            ((30, 0), ("3.9", "3.5.12-0", "v1.11.1")),
            ((30, 5), ("3.9", "3.5.15-0", "v1.11.3")),
            ((31, 0), ("3.10", "3.5.15-0", "v1.11.1")),
            ((32, 0), ("3.10", "3.5.16-0", "v1.11.3")),
            ((33, 0), ("3.10", "3.5.21-0", "v1.12.0")),
            ((34, 0), ("3.10.1", "3.6.4-0", "v1.12.1")),
            ((34, 2), ("3.10.1", "3.6.5-0", "v1.12.1")),
        ];
        for ((minor, patch), (pause, etcd, coredns)) in table {
            let got = images(minor, patch);
            assert_eq!(
                (got.pause, got.etcd, got.coredns),
                (pause, etcd, coredns),
                "v1.{minor}.{patch}"
            );
        }
        assert_eq!(images(28, 7).etcd_version(), "3.5.10");
        assert_eq!(ReleaseImages::coredns_path(20), "coredns");
        assert_eq!(ReleaseImages::coredns_path(21), "coredns/coredns");
    }

    #[test]
    fn outside_the_range_takes_the_nearest_release() {
        assert_eq!(images(19, 0), images(20, 0));
        assert_eq!(images(40, 0).pause, images(34, 0).pause);
    }
}
