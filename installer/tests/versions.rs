//! Golden tests of the rendered component flags per Kubernetes version
//! (`installer/tests/golden/flags/<version>/<component>.flags`, one flag per line).
//!
//! To accept a deliberate change: `CLUSTERKIT_UPDATE_GOLDEN=1 cargo test -p
//! clusterkit-installer --test versions`, then review the diff of the golden files.

#[path = "../../tests/common/golden.rs"]
mod golden;

use std::path::PathBuf;

use clusterkit_core::layout::Component;
use clusterkit_core::release::KubeVersion;
use clusterkit_installer::versions::{self, FlagInput};

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
    // kubeadm's pause image of the release, as cluster.yaml resolves it by default.
    i.sandbox_image =
        clusterkit_installer::images::pause_image_for(i.version.minor, i.version.patch);
    i
}

fn golden_dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/flags")
        .join(version)
}

fn check_golden(version: &str) {
    let mut mismatches = Vec::new();
    for c in Component::ALL {
        let rendered = versions::render_flags(c, &input(version))
            .unwrap()
            .join("\n")
            + "\n";
        let path = golden_dir(version).join(format!("{}.flags", c.name()));
        if let Err(e) = golden::check(&path, &rendered) {
            mismatches.push(e);
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

/// One golden set per minor release where the rules change or kubeadm's output was read:
/// v1.24 (insecure ports gone), v1.27 (runtime endpoint in the kubelet config), v1.28,
/// v1.29 (super-admin.conf), v1.32, v1.34 (the newest supported).
#[test]
fn golden_flags_of_every_rule_boundary() {
    for v in [
        "v1.24.17", "v1.27.16", "v1.28.7", "v1.29.0", "v1.32.0", "v1.34.0",
    ] {
        check_golden(v);
    }
}

/// The flag names kubeadm of a release writes for the three control-plane components
/// (cmd/kubeadm/app/phases/controlplane/manifests.go with kubeadm's defaults and a pod subnet),
/// without the ones that changed between releases.
fn kubeadm_control_plane_flags(c: Component) -> Vec<&'static str> {
    match c {
        Component::KubeApiserver => vec![
            "advertise-address",
            "allow-privileged",
            "authorization-mode",
            "client-ca-file",
            "enable-admission-plugins",
            "enable-bootstrap-token-auth",
            "etcd-cafile",
            "etcd-certfile",
            "etcd-keyfile",
            "etcd-servers",
            "kubelet-client-certificate",
            "kubelet-client-key",
            "kubelet-preferred-address-types",
            "proxy-client-cert-file",
            "proxy-client-key-file",
            "requestheader-allowed-names",
            "requestheader-client-ca-file",
            "requestheader-extra-headers-prefix",
            "requestheader-group-headers",
            "requestheader-username-headers",
            "secure-port",
            "service-account-issuer",
            "service-account-key-file",
            "service-account-signing-key-file",
            "service-cluster-ip-range",
            "tls-cert-file",
            "tls-private-key-file",
        ],
        Component::KubeControllerManager => vec![
            "allocate-node-cidrs",
            "authentication-kubeconfig",
            "authorization-kubeconfig",
            "bind-address",
            "client-ca-file",
            "cluster-cidr",
            "cluster-name",
            "cluster-signing-cert-file",
            "cluster-signing-key-file",
            "controllers",
            "kubeconfig",
            "leader-elect",
            "requestheader-client-ca-file",
            "root-ca-file",
            "service-account-private-key-file",
            "service-cluster-ip-range",
            "use-service-account-credentials",
        ],
        Component::KubeScheduler => vec![
            "authentication-kubeconfig",
            "authorization-kubeconfig",
            "bind-address",
            "kubeconfig",
            "leader-elect",
        ],
        Component::Kubelet | Component::KubeProxy => vec![],
    }
}

#[test]
fn control_plane_flags_are_kubeadm_s_plus_what_clusterkit_adds_on_purpose() {
    // What clusterkit adds to kubeadm's flags, and why:
    // - kube-apiserver verifies kubelets' serving certificates against the cluster CA
    //   (kubelets ask for them with serverTLSBootstrap; kubeadm leaves that to the operator);
    // - controller manager and scheduler serve with the API server's CA-signed certificate,
    //   not a self-signed one, so Prometheus verifies them.
    let added = |c: Component| -> Vec<&'static str> {
        match c {
            Component::KubeApiserver => vec!["kubelet-certificate-authority"],
            Component::KubeControllerManager | Component::KubeScheduler => {
                vec!["tls-cert-file", "tls-private-key-file"]
            }
            _ => vec![],
        }
    };
    // kubeadm wrote --insecure-port=0 (apiserver) until v1.22 and --port=0 (controller
    // manager, scheduler) until v1.23; clusterkit writes them as long as the binaries accept
    // them (v1.23 and v1.22), which switches off the same insecure ports.
    let insecure = |c: Component, minor: u32| -> Vec<&'static str> {
        match c {
            Component::KubeApiserver if minor < 24 => vec!["insecure-port"],
            Component::KubeControllerManager | Component::KubeScheduler if minor < 23 => {
                vec!["port"]
            }
            _ => vec![],
        }
    };
    for v in [
        "v1.20.2", "v1.24.17", "v1.27.16", "v1.28.7", "v1.29.0", "v1.30.0", "v1.32.0", "v1.34.0",
    ] {
        let version = KubeVersion::parse(v).unwrap();
        let mut i = input(v);
        // kubeadm with a pod subnet, as the controller manager's allocation flags assume.
        i.pod_cidr = Some("10.244.0.0/16".into());
        for c in [
            Component::KubeApiserver,
            Component::KubeControllerManager,
            Component::KubeScheduler,
        ] {
            let rendered: std::collections::BTreeSet<String> = versions::render_flags(c, &i)
                .unwrap()
                .iter()
                .map(|f| {
                    f.trim_start_matches("--")
                        .split('=')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect();
            let want: std::collections::BTreeSet<String> = kubeadm_control_plane_flags(c)
                .into_iter()
                .chain(added(c))
                .chain(insecure(c, version.minor))
                .map(str::to_string)
                .collect();
            assert_eq!(rendered, want, "{c} {v}");
        }
    }
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
    // 1.30 and 1.34: none of the removed flags.
    for v in ["v1.30.0", "v1.34.0"] {
        for c in Component::ALL {
            let flags = render(c, v);
            for gone in [
                "--insecure-port",
                "--port=",
                "--container-runtime=",
                "--container-runtime-endpoint",
            ] {
                assert!(!has(&flags, gone), "{c} {v} renders {gone}: {flags:?}");
            }
        }
    }
    // --pod-infra-container-image: deprecated, but through v1.34 it still keeps the kubelet's
    // image garbage collector off the pause image (kubeadm writes it too); v1.35's kubelet
    // refuses it, and clusterkit does not install v1.35.
    assert!(has(
        &render(Component::Kubelet, "v1.34.0"),
        "--pod-infra-container-image=registry.k8s.io/pause:3.10.1"
    ));
    assert!(versions::render_flags(Component::Kubelet, &input("v1.35.0")).is_err());
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

/// Runs each of `dir`'s component binaries with the flags clusterkit renders for `version`
/// and `--help`. Each binary parses its whole command line before acting on --help: an
/// unknown (removed) flag fails there, as it would at start. Deprecated flags are hidden from
/// the help text but still parsed, so this checks what matters: the component would start.
fn binaries_accept_rendered_flags(dir: &std::path::Path, version: &str) {
    for c in Component::ALL {
        let flags = versions::render_flags(c, &input(version)).unwrap();
        let out = std::process::Command::new(dir.join(c.name()))
            .args(&flags)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", dir.join(c.name()).display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("unknown flag"),
            "{c} {version} refused its rendered flags ({}): {}",
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
fn the_real_1_20_binaries_accept_every_rendered_flag() {
    let Some(dir) = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR").map(PathBuf::from) else {
        panic!(
            "CLUSTERKIT_KUBE_BIN_DIR is not set: run `bash scripts/deps.sh` and `. scripts/env.sh`"
        );
    };
    binaries_accept_rendered_flags(&dir, "v1.20.2");
}

#[test]
#[ignore = "needs Kubernetes binaries newer than v1.20.2 (CLUSTERKIT_KUBE_BIN_DIR_NEWER); Debian ships only v1.20.2"]
fn newer_binaries_report_their_version_and_accept_every_rendered_flag() {
    let dir = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR_NEWER")
        .map(PathBuf::from)
        .expect("CLUSTERKIT_KUBE_BIN_DIR_NEWER: a directory with kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl and kubeadm of one release newer than v1.20.2");
    // Every binary reports the same release, read the way bundle build and install read it
    // (kubectl 1.28 has no `version --short` any more).
    let version = versions::binary_version(&dir.join("kube-apiserver")).unwrap();
    assert!(version > KubeVersion::new(1, 20, 2), "{version}");
    for name in versions::KUBERNETES_BINARIES {
        versions::check_binary_version(&dir.join(name), version).unwrap_or_else(|e| panic!("{e}"));
    }
    binaries_accept_rendered_flags(&dir, &version.to_string());
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
