//! Images without a registry, end to end: the pause and busybox OCI tarballs built from Debian
//! material (`clusterkit_installer::images`), checked with independent tools (`tar`,
//! `sha256sum`, running the built pause binary), then `clusterkit install --phase
//! prepare|runtime|images` on a real 3-node sandbox: every node's containerd lists both images
//! under their names and manifest digests, a container of the busybox image runs, a rerun
//! changes nothing, and a node that lost an image gets exactly that image back (`--check`
//! first reports it without changing anything). A static-pod cluster with another
//! `kubernetes.image_repository` gets the bundle's images under its own names. An image
//! exported with `ctr images export` and given to `bundle build --image` is imported on every
//! node as it is (its name, its digest).
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the offline
//! bundle, gcc + libc6-dev, busybox-static and the Kubernetes source package that
//! scripts/build-kube.sh keeps in `$CLUSTERKIT_CACHE/kube-src`; fails with the reason otherwise.

mod common;

use std::path::Path;
use std::process::Command;

use clusterkit_installer::images::{self, Sources, BUSYBOX_IMAGE};
use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{clusterkit, describe, install_json, run_ok, ssh, stdout};
use serde_json::Value;

fn sources() -> Sources {
    let s = Sources::from_env();
    assert!(
        s.kube_src.is_dir(),
        "{} does not exist: run scripts/build-kube.sh (it keeps Debian's kubernetes source package there) or set CLUSTERKIT_KUBE_SRC",
        s.kube_src.display()
    );
    assert!(
        s.busybox.is_file(),
        "{} does not exist: install busybox-static (scripts/deps.sh) or set CLUSTERKIT_BUSYBOX",
        s.busybox.display()
    );
    s
}

/// `tar -xOf archive member`.
fn tar_member(archive: &Path, member: &str) -> Vec<u8> {
    run_ok(Command::new("tar").arg("-xOf").arg(archive).arg(member)).stdout
}

/// The blob `digest` (`sha256:…`) of an OCI image tarball.
fn blob(archive: &Path, digest: &str) -> Vec<u8> {
    tar_member(
        archive,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    )
}

/// The first layer of the image whose manifest is the blob `manifest_digest` of the tarball.
fn first_layer(archive: &Path, manifest_digest: &str) -> Vec<u8> {
    let manifest: Value = serde_json::from_slice(&blob(archive, manifest_digest)).unwrap();
    blob(archive, manifest["layers"][0]["digest"].as_str().unwrap())
}

fn sha256sum(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    std::fs::write(&f, data).unwrap();
    let out = stdout(&run_ok(Command::new("sha256sum").arg(&f)));
    format!("sha256:{}", out.split_whitespace().next().unwrap())
}

/// The image's name and manifest digest as the tarball itself says, checked blob by blob.
fn inspect(archive: &Path) -> (String, String, Value) {
    let index: Value = serde_json::from_slice(&tar_member(archive, "index.json")).unwrap();
    let entry = &index["manifests"][0];
    let name = entry["annotations"]["io.containerd.image.name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        name.as_str()
    );
    let digest = entry["digest"].as_str().unwrap().to_string();
    let manifest_bytes = blob(archive, &digest);
    assert_eq!(sha256sum(&manifest_bytes), digest, "manifest blob digest");
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config_bytes = blob(archive, config_digest);
    assert_eq!(sha256sum(&config_bytes), config_digest);
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer = blob(archive, layer_digest);
    assert_eq!(sha256sum(&layer), layer_digest);
    assert_eq!(
        config["rootfs"]["diff_ids"][0], layer_digest,
        "plain tar layer: diff_id = digest"
    );
    (name, digest, config)
}

#[test]
fn images_are_built_from_debian_material_deterministically() {
    let src = sources();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let pause = images::pause_image("3.2");
    let ma = images::build(a.path(), &src, std::slice::from_ref(&pause))
        .unwrap_or_else(|e| panic!("{e}"));
    let mb = images::build(b.path(), &src, std::slice::from_ref(&pause))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ma, mb, "same inputs, same tarballs and digests");
    let names: Vec<&str> = ma.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [pause.as_str(), BUSYBOX_IMAGE]);
    // Another release's tag is the same image under its own name: one more tarball, the
    // others kept as they are.
    let more = images::build(a.path(), &src, &[images::pause_image("3.9")])
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = more.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [pause.as_str(), "registry.k8s.io/pause:3.9", BUSYBOX_IMAGE]
    );
    assert_eq!(more.images[0], ma.images[0]);
    let (name, _, _) = inspect(&a.path().join("pause_3.9.oci.tar"));
    assert_eq!(name, "registry.k8s.io/pause:3.9");
    for i in &ma.images {
        let path = a.path().join(&i.file);
        assert_eq!(
            sha256sum(&std::fs::read(&path).unwrap()),
            format!("sha256:{}", i.sha256)
        );
        let (name, digest, config) = inspect(&path);
        assert_eq!(name, i.name);
        assert_eq!(digest, i.digest);
        if name == pause {
            assert_eq!(
                config["config"]["Entrypoint"],
                serde_json::json!(["/pause"])
            );
        } else {
            assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
        }
    }
    // The pause binary inside the image is static and is the one from pause.c.
    let pause = a.path().join(&ma.images[0].file);
    let layer = first_layer(&pause, &ma.images[0].digest);
    let x = tempfile::tempdir().unwrap();
    std::fs::write(x.path().join("layer.tar"), layer).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(x.path().join("layer.tar"))
            .arg("-C")
            .arg(x.path()),
    );
    let version = stdout(&run_ok(Command::new(x.path().join("pause")).arg("-v")));
    assert!(version.starts_with("pause.c v"), "{version}");
    let file = stdout(&run_ok(Command::new("file").arg(x.path().join("pause"))));
    assert!(file.contains("statically linked"), "{file}");
    // The busybox layer has the applets the tests use.
    let bb = a.path().join(&ma.images[1].file);
    let layer = first_layer(&bb, &ma.images[1].digest);
    std::fs::write(x.path().join("bb.tar"), layer).unwrap();
    let listing = stdout(&run_ok(
        Command::new("tar").arg("-tvf").arg(x.path().join("bb.tar")),
    ));
    // wget is the wrapper that gives Debian's busybox wget its -T (see below, run for real).
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" bin/wget")),
        "bin/wget is not the wrapper script:\n{listing}"
    );
    for applet in ["sh", "httpd", "nc", "timeout", "sleep", "ping"] {
        assert!(
            listing
                .lines()
                .any(|l| l.contains(&format!(" bin/{applet} -> busybox"))),
            "bin/{applet} missing:\n{listing}"
        );
    }
}

/// The image config and manifest of every image clusterkit builds, from stand-in inputs (fixed
/// bytes instead of the real binaries, so the digests are fixed too), against the golden files
/// in tests/data/images/: entrypoint, user, env, platform and the layer's diff_id.
#[test]
fn image_configs_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images");
    let stand_in = |what: &str| format!("stand-in {what} binary\n").into_bytes();
    let mut specs = vec![
        images::pause_spec(stand_in("pause"), &images::pause_image("3.2")),
        images::busybox_spec(stand_in("busybox"), &["sh".into(), "httpd".into()]),
    ];
    for c in images::KUBE_COMPONENTS {
        specs.push(images::component_spec(
            &images::component_image("registry.k8s.io", c, "v1.20.2"),
            c,
            vec![(format!("{}/{c}", images::COMPONENT_BIN_DIR), stand_in(c))],
        ));
    }
    // etcd as Debian builds it: dynamically linked, its libraries beside it.
    specs.push(images::component_spec(
        "registry.k8s.io/etcd:3.4.13-0",
        "etcd",
        vec![
            ("lib/x86_64-linux-gnu/libc.so.6".into(), stand_in("libc")),
            ("lib64/ld-linux-x86-64.so.2".into(), stand_in("ld.so")),
            (
                format!("{}/etcd", images::COMPONENT_BIN_DIR),
                stand_in("etcd"),
            ),
        ],
    ));
    for mut spec in specs {
        // The golden files are for one architecture; the builder uses this machine's.
        spec.architecture = "amd64".into();
        let built = images::build_image(&spec);
        let x = tempfile::tempdir().unwrap();
        let archive = x.path().join("image.tar");
        std::fs::write(&archive, &built.archive).unwrap();
        let pretty = |v: Vec<u8>| {
            let v: Value = serde_json::from_slice(&v).unwrap();
            serde_json::to_string_pretty(&v).unwrap() + "\n"
        };
        let config = pretty(blob(&archive, &built.config_digest));
        let manifest = pretty(blob(&archive, &built.manifest_digest));
        let base = images::file_name(&spec.name).replace(".oci.tar", "");
        for (suffix, got) in [("config.json", config), ("manifest.json", manifest)] {
            if let Err(e) = common::golden::check(&dir.join(format!("{base}.{suffix}")), &got) {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn images_phase_on_three_nodes() {
    let _ = sources();
    let sb = SandboxGuard::up(UpOptions::new("img3", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    // With v1.20.2's binaries the bundle is for that release: its pause image is 3.2.
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, Some(&common::kube_bin()), &[]);
    let cfg = common::sandbox_config(&sb, "images.yaml", &bundle, "");

    install_json(&cfg, &["--phase", "prepare"]);
    install_json(&cfg, &["--phase", "runtime"]);
    let first = install_json(&cfg, &["--phase", "images"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(first["hosts"][n]["failed"], 0, "{first:#}");
        assert!(
            first["hosts"][n]["changed"].as_u64().unwrap() > 0,
            "{first:#}"
        );
    }

    // What the tarballs say (read with tar and sha256sum), against what containerd lists.
    let in_bundle = bundle.join("images");
    let manifest = images::load(&in_bundle).unwrap();
    let mut expected = Vec::new();
    let mut control_plane = Vec::new();
    for i in &manifest.images {
        let (name, digest, _) = inspect(&in_bundle.join(&i.file));
        if i.component.is_some() {
            control_plane.push(name);
        } else {
            expected.push((name, digest));
        }
    }
    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["registry.k8s.io/pause:3.2", BUSYBOX_IMAGE]);
    assert!(
        control_plane.contains(&"registry.k8s.io/kube-apiserver:v1.20.2".to_string()),
        "{control_plane:?}"
    );
    for n in ["node1", "node2", "node3"] {
        let listed = common::node_images(&sb, n);
        for e in &expected {
            assert!(
                listed.contains(e),
                "{n}: containerd lacks {e:?}; it lists {listed:?}"
            );
        }
        // The sandbox runs its control plane under systemd: no host imports its images.
        for c in &control_plane {
            assert!(
                !listed.iter().any(|(l, _)| l == c),
                "{n}: {c} imported in systemd mode: {listed:?}"
            );
        }
    }

    // A container of the imported busybox image runs (runtime + image + the sandbox profile).
    let out = ssh(
        &sb,
        "node1",
        "ctr -n k8s.io run --rm docker.io/library/busybox:clusterkit t1 /bin/busybox echo ok",
    );
    assert_eq!(out.trim(), "ok", "{out}");
    // wget with a timeout, as an operator runs it in a test pod (`kubectl exec POD -- wget -T 5
    // …` finds /bin/wget on PATH; Debian's busybox alone crashes on -T): it fetches a page from
    // httpd in the same container. busybox's own sh runs its built-in applet instead of
    // /bin/wget, hence the path here.
    let out = ssh(
        &sb,
        "node1",
        "ctr -n k8s.io run --rm docker.io/library/busybox:clusterkit t3 /bin/sh -c \
         'mkdir -p /tmp/www && echo hello-wget > /tmp/www/i && httpd -p 127.0.0.1:8080 -h /tmp/www && /bin/wget -q -T 5 -O - http://127.0.0.1:8080/i'",
    );
    assert_eq!(out.trim(), "hello-wget", "{out}");
    // The pause image runs too (it is the pod sandbox): `pause -v` prints its version.
    let out = ssh(
        &sb,
        "node2",
        "ctr -n k8s.io run --rm registry.k8s.io/pause:3.2 t2 /pause -v",
    );
    assert!(out.starts_with("pause.c v"), "{out}");

    // Idempotent: a rerun changes nothing anywhere.
    let again = install_json(&cfg, &["--phase", "images"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(again["hosts"][n]["changed"], 0, "{again:#}");
        assert_eq!(again["hosts"][n]["failed"], 0, "{again:#}");
    }

    // node2 loses the busybox image: --check reports it and changes nothing; a run re-imports.
    ssh(
        &sb,
        "node2",
        &format!("ctr -n k8s.io images rm {BUSYBOX_IMAGE}"),
    );
    let check = install_json(&cfg, &["--phase", "images", "--check"]);
    assert_eq!(check["hosts"]["node1"]["changed"], 0, "{check:#}");
    assert_eq!(check["hosts"]["node2"]["changed"], 1, "{check:#}");
    assert!(!common::node_images(&sb, "node2")
        .iter()
        .any(|(n, _)| n == BUSYBOX_IMAGE));
    let fix = install_json(&cfg, &["--phase", "images"]);
    assert_eq!(
        fix["hosts"]["node2"]["changed"], 1,
        "re-import only: {fix:#}"
    );
    assert_eq!(fix["hosts"]["node3"]["changed"], 0, "{fix:#}");
    assert!(common::node_images(&sb, "node2").contains(&expected[1]));

    // An image the cluster needs that is neither imported nor pullable (the nodes reach no
    // registry) fails every node in this phase, naming the image and the way out, before a
    // kubelet could wait on it forever.
    let absent = "registry.k8s.io/pause:0.0-absent";
    let missing = common::sandbox_config(
        &sb,
        "images-missing.yaml",
        &bundle,
        &format!("runtime: {{ sandbox_image: {absent} }}\n"),
    );
    let mut c = clusterkit();
    c.arg("-f")
        .arg(&missing)
        .args(["-o", "json", "install", "--phase", "images"]);
    let out = common::run_fail(&mut c);
    let text = format!("{}{}", stdout(&out), common::stderr(&out));
    assert!(
        text.contains(&format!(
            "{absent} is not in containerd and cannot be pulled"
        )) && text.contains("offline bundle"),
        "{}",
        describe(&c, &out, "the missing image named")
    );
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "expected a JSON summary")));
    for n in ["node1", "node2", "node3"] {
        assert_eq!(summary["hosts"][n]["failed"], 1, "{summary:#}");
    }

    // A static-pod cluster whose kubernetes.image_repository is not the one `bundle build`
    // tags in: the bundle's images are imported and tagged under the cluster's names (its
    // manifests, kube-proxy's DaemonSet and the sandbox image name them there), with the
    // bundle's digests; the images the phase requires are then present, and a rerun changes
    // nothing.
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    assert!(base.contains("control_plane_mode: systemd"), "{base}");
    let mirror = sb.dir().join("images-mirror.yaml");
    std::fs::write(
        &mirror,
        format!(
            "{}\npackages: {{ bundle: {} }}\n",
            base.replace(
                "control_plane_mode: systemd",
                "control_plane_mode: static-pod\n  image_repository: mirror.example/k8s"
            ),
            bundle.display()
        ),
    )
    .unwrap();
    let renamed = install_json(&mirror, &["--phase", "images"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(renamed["hosts"][n]["failed"], 0, "{renamed:#}");
    }
    let as_mirror = |name: &str| name.replace("registry.k8s.io/", "mirror.example/k8s/");
    let node1 = common::node_images(&sb, "node1");
    for name in [
        "registry.k8s.io/pause:3.2",
        "registry.k8s.io/kube-apiserver:v1.20.2",
        "registry.k8s.io/kube-controller-manager:v1.20.2",
        "registry.k8s.io/kube-scheduler:v1.20.2",
        "registry.k8s.io/etcd:3.4.13-0",
        "registry.k8s.io/kube-proxy:v1.20.2",
    ] {
        let want = (as_mirror(name), common::image_digest(&manifest, name));
        assert!(node1.contains(&want), "node1 lacks {want:?}: {node1:?}");
    }
    // A worker imports kube-proxy's image (the DaemonSet runs everywhere), not the control
    // plane's.
    let node2 = common::node_images(&sb, "node2");
    let proxy = "registry.k8s.io/kube-proxy:v1.20.2";
    assert!(
        node2.contains(&(as_mirror(proxy), common::image_digest(&manifest, proxy))),
        "{node2:?}"
    );
    assert!(
        !node2.iter().any(|(n, _)| n.contains("kube-apiserver")),
        "{node2:?}"
    );
    let again = install_json(&mirror, &["--phase", "images"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(again["hosts"][n]["changed"], 0, "{again:#}");
    }

    // An operator's own image, exported by a real tool (containerd's `ctr images export` on
    // node1, standing in for a registry export): `bundle build --image` carries the archive as
    // it is, and the images phase imports it on every node under its name and digest.
    let mine = "example.org/ops/pause:mine";
    let out = common::ssh_cmd(
        &sb,
        "node1",
        &format!(
            "ctr -n k8s.io images tag registry.k8s.io/pause:3.2 {mine} >/dev/null && \
             ctr -n k8s.io images export /tmp/mine.tar {mine} && \
             ctr -n k8s.io images rm {mine} >/dev/null && cat /tmp/mine.tar"
        ),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let archive = work.path().join("mine.tar");
    std::fs::write(&archive, &out.stdout).unwrap();
    let bundle2 = work.path().join("bundle2");
    common::build_bundle(
        &bundle2,
        Some(&common::kube_bin()),
        &["--image", archive.to_str().unwrap()],
    );
    let manifest2 = images::load(&bundle2.join("images")).unwrap();
    let digest = common::image_digest(&manifest2, mine);
    assert!(
        common::node_images(&sb, "node1")
            .iter()
            .all(|(n, _)| n != mine),
        "node1 still lists {mine}"
    );
    let cfg2 = common::sandbox_config(&sb, "images-mine.yaml", &bundle2, "");
    let carried = install_json(&cfg2, &["--phase", "images"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(carried["hosts"][n]["failed"], 0, "{carried:#}");
        let listed = common::node_images(&sb, n);
        assert!(
            listed.contains(&(mine.to_string(), digest.clone())),
            "{n} lacks {mine}@{digest}: {listed:?}"
        );
    }
}
