//! Kubernetes release binaries from a download server laid out like dl.k8s.io, for offline
//! bundles of any version (`clusterkit bundle build --kubernetes v1.30.2`).
//!
//! Each binary is `<base>/release/<version>/bin/linux/<arch>/<name>` and its checksum is the
//! `<name>.sha256` next to it (what dl.k8s.io publishes). A binary is stored only after its
//! sha256 matches; a cached binary whose sha256 still matches is not downloaded again. The
//! transfer is `curl` (redirects: dl.k8s.io answers with one to its CDN; proxies from the usual
//! environment variables; retries), because the operator's machine has it and it handles all of
//! that better than a hand-written client would.
//!
//! Limits: Linux binaries only; the checksum comes from the same server as the binary, so it
//! guards against corruption and truncation, not against a hostile mirror — use https and a
//! mirror you trust.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::local::{file_err, FileError};
use clusterkit_core::release::KubeVersion;

/// The official download server.
pub const DEFAULT_BASE: &str = "https://dl.k8s.io";

/// The binaries a cluster needs from a release: the control plane in systemd mode, the node
/// components, and kubectl/kubeadm for the operator and for `token create --print-join-command`.
pub const BINARIES: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
    "kubectl",
    "kubeadm",
];

/// What can go wrong fetching release binaries.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("downloading {url} failed ({status}): {stderr}")]
    Download {
        url: String,
        status: String,
        stderr: String,
    },

    #[error("{url} is not a sha256 checksum: {found:?}")]
    BadChecksumFile { url: String, found: String },

    #[error("{url}: sha256 {found} does not match the published {published}; nothing was kept")]
    Mismatch {
        url: String,
        found: String,
        published: String,
    },

    #[error(transparent)]
    Io(#[from] FileError),

    #[error("no Kubernetes release binaries for the node architecture {arch}")]
    Arch { arch: String },
}

/// The release server's name for a Debian architecture.
pub fn release_arch(debian_arch: &str) -> Result<&'static str, ReleaseError> {
    Ok(match debian_arch {
        "amd64" => "amd64",
        "arm64" => "arm64",
        "armhf" => "arm",
        "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        other => {
            return Err(ReleaseError::Arch {
                arch: other.to_string(),
            })
        }
    })
}

/// The URL of one binary of a release.
pub fn url(base: &str, version: KubeVersion, arch: &str, name: &str) -> String {
    format!(
        "{}/release/{version}/bin/linux/{arch}/{name}",
        base.trim_end_matches('/')
    )
}

/// Makes `dir/<name>` hold each binary of release `version` for `arch` (executable, sha256
/// checked against the published one) and returns each path with its sha256. Binaries already
/// there with the published sha256 are kept as they are.
pub fn fetch(
    base: &str,
    version: KubeVersion,
    arch: &str,
    names: &[&str],
    dir: &Path,
) -> Result<Vec<(PathBuf, String)>, ReleaseError> {
    fs::create_dir_all(dir).map_err(file_err(dir))?;
    let mut paths = Vec::new();
    for name in names {
        let url = url(base, version, arch, name);
        let published = published_sha256(&url)?;
        let dest = dir.join(name);
        if sha256_file(&dest).ok().as_deref() != Some(published.as_str()) {
            let part = dir.join(format!(".{name}.part"));
            let fetched = curl(&url, &part).and_then(|()| {
                let found = sha256_file(&part)?;
                if found == published {
                    Ok(())
                } else {
                    Err(ReleaseError::Mismatch {
                        url: url.clone(),
                        found,
                        published: published.clone(),
                    })
                }
            });
            if let Err(e) = fetched {
                let _ = fs::remove_file(&part);
                return Err(e);
            }
            fs::set_permissions(&part, fs::Permissions::from_mode(0o755))
                .map_err(file_err(&part))?;
            fs::rename(&part, &dest).map_err(file_err(&dest))?;
            tracing::info!(%url, "downloaded and verified");
        }
        paths.push((dest, published));
    }
    Ok(paths)
}

/// The hex digest in `<url>.sha256` (a bare digest, or `digest  filename`).
fn published_sha256(url: &str) -> Result<String, ReleaseError> {
    let sum_url = format!("{url}.sha256");
    let text = curl_text(&sum_url)?;
    parse_sha256(&text).ok_or(ReleaseError::BadChecksumFile {
        url: sum_url,
        found: text.chars().take(80).collect(),
    })
}

/// The first word of a checksum file when it is 64 hex digits, lower-cased.
pub fn parse_sha256(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    (word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}

fn curl_command(url: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--fail",
        "--silent",
        "--show-error",
        "--location",
        "--retry",
        "3",
        "--connect-timeout",
        "20",
    ])
    .arg(url);
    cmd
}

fn run_curl(mut cmd: Command, url: &str) -> Result<Vec<u8>, ReleaseError> {
    let out = cmd.output().map_err(|e| ReleaseError::Download {
        url: url.to_string(),
        status: "curl not started (apt-get install curl)".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ReleaseError::Download {
            url: url.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn curl_text(url: &str) -> Result<String, ReleaseError> {
    let body = run_curl(curl_command(url), url)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn curl(url: &str, to: &Path) -> Result<(), ReleaseError> {
    let mut cmd = curl_command(url);
    cmd.arg("--output").arg(to);
    run_curl(cmd, url).map(drop)
}

/// The hex sha256 of a file, read in 1 MiB pieces.
pub(crate) fn sha256_file(path: &Path) -> Result<String, ReleaseError> {
    let mut file = fs::File::open(path).map_err(file_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(file_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_release_layout() {
        let v = KubeVersion::new(1, 30, 2);
        assert_eq!(
            url("https://dl.k8s.io/", v, "amd64", "kubelet"),
            "https://dl.k8s.io/release/v1.30.2/bin/linux/amd64/kubelet"
        );
        assert_eq!(release_arch("ppc64el").unwrap(), "ppc64le");
        assert!(release_arch("mips64el").is_err());
    }

    #[test]
    fn checksum_files() {
        let d = "A".repeat(64);
        assert_eq!(parse_sha256(&format!("{d}\n")), Some("a".repeat(64)));
        assert_eq!(
            parse_sha256(&format!("{d}  kubelet\n")),
            Some("a".repeat(64))
        );
        assert_eq!(parse_sha256("<html>not found</html>"), None);
        assert_eq!(parse_sha256(""), None);
    }
}
