//! `clusterkit bundle build --kubernetes VERSION --kubernetes-mirror URL` downloads a release's
//! binaries into the bundle, for real: the real binary and curl against a release server on
//! loopback laid out like dl.k8s.io (`/release/<version>/bin/linux/<arch>/<name>` and
//! `<name>.sha256`), which, like dl.k8s.io, answers with a redirect to its "CDN". The files it
//! serves are small stand-ins for the binaries (the download does not care what they are).
//!
//! Checked: all seven binaries land in `bin/`, byte-equal, executable, listed in the manifest
//! with their sha256; a rebuild fetches only the checksums; a binary that does not match its
//! published sha256 fails the build naming the URL and keeps nothing of it (the previous
//! bundle is intact); a missing release fails naming the URL; `--binaries` with a clashing
//! name next to `--kubernetes` is refused. The stand-ins answer their version commands like
//! the real binaries: the manifest records each one's version and the bundle's release, and a
//! download whose binaries report different releases is refused naming them.
//!
//! Needs apt access for the packages part of the bundle, like the other bundle tests.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use clusterkit_installer::release::BINARIES;
use common::{clusterkit, run_fail, run_ok, stderr};
use sha2::{Digest, Sha256};

/// A release server on loopback: `files` by path; `/release/…` redirects to `/cdn/release/…`.
/// Records every path asked for.
struct Mirror {
    url: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start() -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, l) = (files.clone(), log.clone());
        // Detached: it only ever answers on loopback and ends with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split(' ').nth(1).unwrap_or("").to_string();
                l.lock().unwrap().push(path.clone());
                let mut out = &stream;
                let response = if let Some(rest) = path.strip_prefix("/release/") {
                    format!("HTTP/1.1 302 Found\r\nLocation: /cdn/release/{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
                } else if let Some(body) = f.lock().unwrap().get(&path) {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                };
                let _ = out.write_all(&response);
            }
        });
        Mirror { url, files, log }
    }

    /// Publishes a binary and its checksum file (`published` overrides the checksum).
    fn publish(&self, version: &str, name: &str, body: &[u8], published: Option<String>) {
        let path = format!("/cdn/release/{version}/bin/linux/amd64/{name}");
        let sum = published.unwrap_or_else(|| hex(body));
        let mut files = self.files.lock().unwrap();
        files.insert(format!("{path}.sha256"), sum.into_bytes());
        files.insert(path, body.to_vec());
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stand-in binary that answers its version command the way the real one does (kubectl
/// with `version --client -o json`, the others with a "Kubernetes vX.Y.Z" line).
fn stand_in(version: &str, name: &str) -> Vec<u8> {
    let answer = if name == "kubectl" {
        format!(r#"echo '{{"clientVersion": {{"gitVersion": "{version}"}}}}'"#)
    } else {
        format!("echo 'Kubernetes {version}'")
    };
    format!("#!/bin/sh\n# stand-in for {name} {version}\n{answer}\n").into_bytes()
}

fn build(out: &Path, mirror: &str, version: &str) -> std::process::Command {
    let mut c = clusterkit();
    c.env_remove("CLUSTERKIT_KUBE_BIN_DIR")
        .args(["bundle", "build", "--no-images", "--kubernetes", version])
        .args(["--kubernetes-mirror", mirror, "--out"])
        .arg(out);
    c
}

#[test]
fn bundle_downloads_a_verified_release() {
    let mirror = Mirror::start();
    for name in BINARIES {
        mirror.publish("v1.30.2", name, &stand_in("v1.30.2", name), None);
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("bundle");

    run_ok(&mut build(&out, &mirror.url, "v1.30.2"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    for name in BINARIES {
        let path = out.join("bin").join(name);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data, stand_in("v1.30.2", name), "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} not executable: {mode:o}");
        let entry = manifest["binaries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from the manifest: {manifest:#}"));
        assert_eq!(entry["sha256"], hex(&data), "{name}");
        assert_eq!(entry["file"], format!("bin/{name}"));
        // What the binary reports, read at build time for install to check.
        assert_eq!(entry["version"], "v1.30.2", "{name}");
    }
    assert_eq!(manifest["kubernetes_version"], "v1.30.2", "{manifest:#}");
    let log = mirror.take_log();
    // Each binary and checksum asked at /release/ and fetched at /cdn/ after the redirect.
    assert_eq!(log.len(), 4 * BINARIES.len(), "{log:#?}");
    assert!(log.iter().any(|p| p.starts_with("/cdn/release/v1.30.2/")));
    run_ok(clusterkit().args(["bundle", "verify"]).arg(&out));

    // Rebuild: the binaries are current, only their checksums are fetched.
    run_ok(&mut build(&out, &mirror.url, "v1.30.2"));
    let log = mirror.take_log();
    assert!(
        log.iter().all(|p| p.ends_with(".sha256")),
        "a current binary was downloaded again: {log:#?}"
    );

    // A binary that does not match its published checksum: refused, nothing kept, the
    // previous bundle intact.
    for name in BINARIES {
        let published = (name == "kubelet").then(|| "0".repeat(64));
        mirror.publish("v1.30.3", name, &stand_in("v1.30.3", name), published);
    }
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let err = run_fail(&mut build(&out, &mirror.url, "v1.30.3"));
    let msg = stderr(&err);
    assert!(
        msg.contains("does not match the published")
            && msg.contains("/release/v1.30.3/bin/linux/amd64/kubelet"),
        "{msg}"
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    assert_eq!(
        std::fs::read(out.join("bin/kubelet")).unwrap(),
        stand_in("v1.30.2", "kubelet")
    );
    let leftovers: Vec<_> = std::fs::read_dir(out.join(".downloads/kubernetes-v1.30.3-amd64"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial downloads left: {leftovers:?}"
    );
    run_ok(clusterkit().args(["bundle", "verify"]).arg(&out));

    // A release the server does not have.
    let err = run_fail(&mut build(&out, &mirror.url, "v1.31.0"));
    assert!(
        stderr(&err).contains("/release/v1.31.0/bin/linux/amd64/kube-apiserver.sha256"),
        "{}",
        stderr(&err)
    );

    // A release whose kubelet reports another version than the one asked for: refused.
    for name in BINARIES {
        let says = if name == "kubelet" {
            "v1.30.1"
        } else {
            "v1.30.4"
        };
        mirror.publish("v1.30.4", name, &stand_in(says, name), None);
    }
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let err = run_fail(&mut build(&out, &mirror.url, "v1.30.4"));
    assert!(
        stderr(&err).contains("kubelet is v1.30.1"),
        "{}",
        stderr(&err)
    );
    // ...with the bundle as it was.
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    assert_eq!(
        std::fs::read(out.join("bin/kubelet")).unwrap(),
        stand_in("v1.30.2", "kubelet")
    );

    // Two sources for one binary.
    let extra = work.path().join("extra");
    std::fs::create_dir(&extra).unwrap();
    std::fs::write(extra.join("kubelet"), b"other").unwrap();
    let err = run_fail(
        build(&out, &mirror.url, "v1.30.2")
            .arg("--binaries")
            .arg(&extra),
    );
    assert!(
        stderr(&err).contains("kubelet would come both from"),
        "{}",
        stderr(&err)
    );
}
