//! `clusterkit bundle build` carries the container images, for real: the real binary builds a
//! bundle (apt closure of the install's packages, downloaded from this machine's Debian
//! mirror), and the pause and busybox images (from the image cache, built from Debian material
//! by `scripts/build-kube.sh`'s source tarball and busybox-static when missing) land in
//! `images/` with their own manifest; its packages are repacked with zstd (no xz member left,
//! name and version intact); the bundle's manifest lists every image file with a
//! sha256 that matches, `bundle verify` passes and catches a tampered tarball; a rebuild with
//! `--no-images` leaves no `images/` behind (the images phase would otherwise import it).
//!
//! Needs apt access and the sandbox's cached base rootfs (`clusterkit sandbox up` once, or
//! scripts/deps.sh) for the package part; fails with the command's message when missing. No
//! sandbox nodes are started.

mod common;

use std::path::Path;

use clusterkit_core::playbook::modules::files::sha256_hex;
use clusterkit_installer::images;
use common::{clusterkit, run_fail, run_ok, stdout};

#[test]
fn bundle_build_carries_checksummed_images() {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    // With v1.20.2's binaries the bundle is for that release, so its pause image is 3.2.
    let out = run_ok(
        clusterkit()
            .env("CLUSTERKIT_KUBE_BIN_DIR", common::kube_bin())
            .args(["bundle", "build", "--out"])
            .arg(&bundle),
    );
    let text = stdout(&out);
    assert!(
        text.contains("(image)"),
        "listing shows the images:\n{text}"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();

    // The packages are repacked with zstd for Debian 12 nodes (cheaper to unpack than xz),
    // and are still packages dpkg reads: same name and version, every member present.
    for p in manifest["packages"].as_array().expect("packages listed") {
        let deb = bundle.join(p["file"].as_str().unwrap());
        let members = stdout(&run_ok(std::process::Command::new("ar").arg("t").arg(&deb)));
        assert!(
            !members.contains("data.tar.xz"),
            "{}: {members}",
            deb.display()
        );
        let field = |f: &str| {
            stdout(&run_ok(
                std::process::Command::new("dpkg-deb")
                    .args(["-f"])
                    .arg(&deb)
                    .arg(f),
            ))
            .trim()
            .to_string()
        };
        assert_eq!(field("Package"), p["name"].as_str().unwrap());
        assert_eq!(field("Version"), p["version"].as_str().unwrap());
        if p["name"] == "containerd" {
            assert!(members.contains("data.tar.zst"), "{members}");
            run_ok(
                std::process::Command::new("dpkg-deb")
                    .arg("--contents")
                    .arg(&deb),
            );
        }
    }
    let files = manifest["binaries"].as_array().expect("binaries listed");
    let images: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("images/manifest.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"registry.k8s.io/pause:3.2"), "{names:?}");
    assert!(
        names.contains(&"docker.io/library/busybox:clusterkit"),
        "{names:?}"
    );
    // The control-plane images from the bundle's own binaries, under the names kubeadm's
    // manifests give them.
    for c in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ] {
        let name = format!("registry.k8s.io/{c}:v1.20.2");
        assert!(names.contains(&name.as_str()), "{names:?}");
        let entry = images["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name.as_str())
            .unwrap();
        assert_eq!(entry["component"], c);
        // One layer around the binary: the image is the binary's size plus a few KiB, and
        // for kube-proxy the iptables it runs (this machine's, with its modules and libraries),
        // each extra file with at most 1 KiB of tar header and padding.
        let mut carried = std::fs::metadata(bundle.join("bin").join(c)).unwrap().len();
        let mut overhead = 64 * 1024;
        if c == images::KUBE_PROXY {
            let iptables = images::iptables_files(Path::new(images::IPTABLES)).unwrap();
            assert!(
                iptables
                    .iter()
                    .any(|(p, _)| p == "usr/sbin/iptables-restore"),
                "{:?}",
                iptables.iter().map(|(p, _)| p).collect::<Vec<_>>()
            );
            carried += iptables.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
            overhead += 1024 * iptables.len() as u64;
        }
        let size = entry["size"].as_u64().unwrap();
        assert!(
            size > carried && size < carried + overhead,
            "{c}: {size} vs {carried} + at most {overhead}"
        );
    }
    // etcd's from the bundle's etcd-server package (dynamically linked: its libc and loader
    // ride along), under kubeadm's etcd tag for v1.20.
    let etcd = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "registry.k8s.io/etcd:3.4.13-0")
        .unwrap_or_else(|| panic!("no etcd image: {names:?}"));
    assert_eq!(etcd["component"], "etcd");
    // Every image tarball and images/manifest.json itself are in the bundle manifest, and the
    // recorded sha256 and size are those of the files on disk.
    let mut expected: Vec<String> = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("images/{}", i["file"].as_str().unwrap()))
        .collect();
    expected.push("images/manifest.json".into());
    for want in &expected {
        let entry = files
            .iter()
            .find(|f| f["file"] == want.as_str())
            .unwrap_or_else(|| panic!("{want} missing from the bundle manifest"));
        let data = std::fs::read(bundle.join(want)).unwrap();
        assert_eq!(entry["size"], data.len() as u64, "{want}");
        assert_eq!(entry["sha256"], sha256_hex(&data), "{want}");
    }
    for i in images["images"].as_array().unwrap() {
        let data = std::fs::read(bundle.join("images").join(i["file"].as_str().unwrap())).unwrap();
        assert_eq!(i["sha256"], sha256_hex(&data));
        // An OCI layout tar (what `ctr images import` takes): starts with a tar header.
        assert_eq!(&data[257..262], b"ustar", "{}", i["file"]);
    }

    let ok = run_ok(clusterkit().args(["bundle", "verify"]).arg(&bundle));
    assert!(stdout(&ok).contains("8 image files"), "{}", stdout(&ok));

    // A tampered tarball fails verification, naming the file.
    let pause = bundle.join("images/pause_3.2.oci.tar");
    let mut data = std::fs::read(&pause).unwrap();
    let last = data.len() - 1;
    data[last] ^= 1;
    // Replace (the tarball may be a hard link to the image cache: never write through it).
    std::fs::remove_file(&pause).unwrap();
    std::fs::write(&pause, &data).unwrap();
    let bad = run_fail(clusterkit().args(["bundle", "verify"]).arg(&bundle));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("pause_3.2.oci.tar"), "{err}");

    // Rebuilt without images: none left behind, and the manifest lists none.
    run_ok(
        clusterkit()
            .env_remove("CLUSTERKIT_KUBE_BIN_DIR")
            .args(["bundle", "build", "--no-images", "--out"])
            .arg(&bundle),
    );
    assert!(!bundle.join("images").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert!(!manifest["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["file"].as_str().unwrap().starts_with("images/")));
    run_ok(clusterkit().args(["bundle", "verify"]).arg(&bundle));
}
