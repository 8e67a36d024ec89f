//! Golden tests of the rendered component flags per Kubernetes version
//! (`installer/tests/golden/flags/<version>/<component>.flags`, one flag per line).
//!
//! To accept a deliberate change: `CLUSTERKIT_UPDATE_GOLDEN=1 cargo test -p
//! clusterkit-installer --test versions`, then review the diff of the golden files.

use std::path::PathBuf;

use clusterkit_installer::versions::{self, Component, FlagInput, KubeVersion};

fn input(version: &str) -> FlagInput {
    let mut i = FlagInput::new(
        KubeVersion::parse(version).unwrap(),
        "cp1",
        "10.213.0.11".parse().unwrap(),
    );
    i.etcd_servers = (11..=13)
        .map(|n| format!("https://10.213.0.{n}:2379"))
        .collect();
    i.cluster_name = "demo".into();
    i.sandbox_image = "registry.k8s.io/pause:3.9".into();
    i
}

fn golden_dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/flags")
        .join(version)
}

fn check_golden(version: &str) {
    let update = std::env::var_os("CLUSTERKIT_UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for c in Component::ALL {
        let rendered = versions::render_flags(c, &input(version))
            .unwrap()
            .join("\n")
            + "\n";
        let path = golden_dir(version).join(format!("{}.flags", c.name()));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (CLUSTERKIT_UPDATE_GOLDEN=1 creates it)",
                path.display()
            )
        });
        if want != rendered {
            mismatches.push(format!(
                "{}:\n--- golden\n{want}--- rendered\n{rendered}",
                path.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn golden_flags_v1_20() {
    check_golden("v1.20.2");
}

#[test]
fn golden_flags_v1_30() {
    check_golden("v1.30.0");
}

fn has(flags: &[String], prefix: &str) -> bool {
    flags.iter().any(|f| f.starts_with(prefix))
}

#[test]
fn removed_flags_are_not_rendered_after_their_removal() {
    let render = |c, v| versions::render_flags(c, &input(v)).unwrap();
    // 1.20: the insecure ports are switched off explicitly; kubelet needs the remote runtime.
    assert!(has(
        &render(Component::KubeApiserver, "v1.20.2"),
        "--insecure-port=0"
    ));
    assert!(has(
        &render(Component::KubeScheduler, "v1.20.2"),
        "--port=0"
    ));
    assert!(has(
        &render(Component::KubeControllerManager, "v1.20.2"),
        "--port=0"
    ));
    let kubelet = render(Component::Kubelet, "v1.20.2");
    assert!(has(&kubelet, "--container-runtime=remote"));
    assert!(has(
        &kubelet,
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock"
    ));
    // 1.23 still accepts --insecure-port; 1.24 refuses it ("unknown flag").
    assert!(has(
        &render(Component::KubeApiserver, "v1.23.17"),
        "--insecure-port"
    ));
    assert!(!has(
        &render(Component::KubeApiserver, "v1.24.0"),
        "--insecure-port"
    ));
    // 1.30: none of the removed flags.
    for c in Component::ALL {
        let flags = render(c, "v1.30.0");
        for gone in [
            "--insecure-port",
            "--port=",
            "--container-runtime=",
            "--container-runtime-endpoint",
            "--pod-infra-container-image",
        ] {
            assert!(!has(&flags, gone), "{c} v1.30.0 renders {gone}: {flags:?}");
        }
    }
    // 1.26 still takes --container-runtime=remote; 1.27 removed it.
    assert!(has(
        &render(Component::Kubelet, "v1.26.3"),
        "--container-runtime=remote"
    ));
    assert!(!has(
        &render(Component::Kubelet, "v1.27.0"),
        "--container-runtime="
    ));
    assert!(versions::render_flags(Component::Kubelet, &input("v1.19.16")).is_err());
}

#[test]
fn the_real_1_20_binaries_accept_every_rendered_flag() {
    // Each binary parses its whole command line before acting on --help: an unknown (removed)
    // flag fails there, as it would at start. Deprecated flags are hidden from the help text
    // but still parsed, so this checks what matters: the component would start.
    let Some(dir) = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR").map(PathBuf::from) else {
        panic!(
            "CLUSTERKIT_KUBE_BIN_DIR is not set: run `bash scripts/deps.sh` and `. scripts/env.sh`"
        );
    };
    for c in Component::ALL {
        let flags = versions::render_flags(c, &input("v1.20.2")).unwrap();
        let out = std::process::Command::new(dir.join(c.name()))
            .args(&flags)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", dir.join(c.name()).display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("unknown flag"),
            "{c} refused its rendered flags ({}): {}",
            out.status,
            text.lines().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    // And a removed flag is indeed refused, so the check above can fail.
    let out = std::process::Command::new(dir.join("kube-apiserver"))
        .args(["--no-such-flag=1", "--help"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn binaries_are_located_and_their_version_checked() {
    let Some(dir) = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR").map(PathBuf::from) else {
        panic!(
            "CLUSTERKIT_KUBE_BIN_DIR is not set: run `bash scripts/deps.sh` and `. scripts/env.sh`"
        );
    };
    let empty = tempfile::tempdir().unwrap();
    let names = versions::required_binaries(true, true);
    assert_eq!(names.len(), 6);
    let found =
        versions::locate_binaries(&names, &[empty.path().to_path_buf(), dir.clone()]).unwrap();
    let v1_20_2 = KubeVersion::new(1, 20, 2);
    for (name, path) in &found {
        assert_eq!(path, &dir.join(name));
        versions::check_binary_version(path, v1_20_2).unwrap_or_else(|e| panic!("{e}"));
    }
    let e =
        versions::check_binary_version(&found["kubectl"], KubeVersion::new(1, 30, 0)).unwrap_err();
    assert!(e.to_string().contains("v1.20.2"), "{e}");
    // A missing binary names itself and every directory searched.
    let e = versions::locate_binaries(
        &["kubelet", "kube-nothing"],
        &[empty.path().to_path_buf(), dir.clone()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("kube-nothing")
            && !e.contains("kubelet,")
            && e.contains(&dir.display().to_string()),
        "{e}"
    );
    assert!(e.contains(&empty.path().display().to_string()), "{e}");
}

#[test]
fn package_pins_and_repositories() {
    use versions::PackageFormat::{Deb, Rpm};
    let v = KubeVersion::new(1, 30, 0);
    assert_eq!(
        versions::package_spec("kubelet", v, Deb),
        "kubelet=1.30.0-*"
    );
    assert_eq!(
        versions::package_spec("kubeadm", KubeVersion::new(1, 23, 0), Rpm),
        "kubeadm-1.23.0"
    );
    assert_eq!(
        versions::pkgs_k8s_io_repository(v, Deb).unwrap(),
        "https://pkgs.k8s.io/core:/stable:/v1.30/deb/"
    );
    assert!(versions::pkgs_k8s_io_repository(KubeVersion::new(1, 20, 2), Deb).is_err());
}
