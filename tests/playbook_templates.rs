//! Golden-file tests for every built-in template: `tests/data/templates/<case>/case.json`
//! names a template and the context to render it with; `expected` is what it must produce.
//! Regenerate after an intended change with `CLUSTERKIT_UPDATE_GOLDEN=1 cargo test --test
//! playbook_templates`, then review the diff.
//!
//! A second test renders every template with the context the installer builds from a real
//! cluster.yaml, so a variable renamed on one side fails here and not on a node.

mod common;

use std::path::{Path, PathBuf};

use clusterkit_installer::phases;
use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/templates")
}

fn render(template: &str, context: &Value) -> Result<String, String> {
    let lib = phases::library(&[]);
    let source = lib.template(template).map_err(|e| e.to_string())?;
    clusterkit_core::playbook::render::render_text(&source.text, context).map_err(|e| e.to_string())
}

#[test]
fn templates_match_golden_files() {
    let mut covered = std::collections::BTreeSet::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    for dir in cases {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let template = case["template"].as_str().unwrap();
        covered.insert(format!("templates/{template}"));
        let got =
            render(template, &case["context"]).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        if let Err(e) = common::golden::check(&dir.join("expected"), &got) {
            panic!("{}: {e}", dir.display());
        }
    }
    // Every built-in template has at least one golden case.
    for name in phases::library(&[]).embedded_names("templates/") {
        assert!(
            covered.contains(&name),
            "{name} has no golden case under tests/data/templates"
        );
    }
}

#[test]
fn golden_configs_are_valid_toml_and_yaml_shapes() {
    // containerd refuses a config it cannot parse; check the structure our tests rely on.
    let out =
        std::fs::read_to_string(cases_dir().join("containerd-config-sandbox/expected")).unwrap();
    assert!(out.contains("SystemdCgroup = true"));
    assert!(out.contains("restrict_oom_score_adj = true"));
    assert!(out.contains("config_path = \"/etc/containerd/certs.d\""));
    let prod =
        std::fs::read_to_string(cases_dir().join("containerd-config-production/expected")).unwrap();
    assert!(
        !prod.contains("restrict_oom_score_adj"),
        "sandbox-only setting leaked into production"
    );
    // containerd 1.6/1.7 get configuration version 2, containerd 2.x version 3 (the CRI
    // plugin split into images and runtime, the sandbox image pinned).
    assert!(
        prod.contains("version = 2\n") && prod.contains("sandbox_image = "),
        "{prod}"
    );
    for case in [
        "containerd-config-v3-sandbox",
        "containerd-config-v3-production",
    ] {
        let v3 = std::fs::read_to_string(cases_dir().join(case).join("expected")).unwrap();
        assert!(v3.contains("version = 3\n"), "{case}: {v3}");
        assert!(!v3.contains("io.containerd.grpc.v1.cri"), "{case}: {v3}");
        assert!(!v3.contains("sandbox_image"), "{case}: {v3}");
        assert!(v3.contains("[plugins.'io.containerd.cri.v1.images'.pinned_images]\n      # The pod sandbox image, pinned: never garbage-collected, never pulled when present.\n      sandbox = \"registry.k8s.io/pause:"), "{case}: {v3}");
        assert!(v3.contains("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n          # kubelet uses the systemd cgroup driver: both must agree.\n          SystemdCgroup = true"), "{case}: {v3}");
        assert!(v3.contains("[plugins.'io.containerd.cri.v1.images'.registry]\n      # Mirrors and insecure registries: one hosts.toml per registry below this directory.\n      config_path = \"/etc/containerd/certs.d\""), "{case}: {v3}");
        assert_eq!(
            v3.contains("restrict_oom_score_adj = true"),
            case.ends_with("sandbox"),
            "{case}: {v3}"
        );
    }
    let hosts = std::fs::read_to_string(cases_dir().join("hosts-toml-insecure/expected")).unwrap();
    assert!(
        hosts.contains("skip_verify = true") && hosts.contains("[host.\"http://reg.local:5000\"]"),
        "{hosts}"
    );
}

#[test]
fn every_template_renders_with_the_installer_context() {
    let tmp = tempfile::tempdir().unwrap();
    common::stand_in_key(&tmp.path().join("id_ed25519"));
    let yaml = "\
name: demo
hosts:
  - { name: cp1, address: 10.213.0.11, roles: [control-plane, etcd, worker], auth: { key_file: ./id_ed25519 } }
kubernetes: { version: v1.26.3, proxy_mode: iptables }
runtime:
  registry_mirrors: { docker.io: [ \"https://mirror.example\" ] }
  insecure_registries: [ \"reg.local:5000\" ]
profile: sandbox
";
    let path = tmp.path().join("cluster.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cluster = clusterkit_core::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .cluster;
    let mut ctx = phases::context(&cluster);
    ctx["host"] = clusterkit_core::inventory::host_vars(&cluster.hosts[0]);
    // Registered by the runtime playbook's "containerd version" task on each node.
    ctx["containerd_version"] = serde_json::json!({ "stdout": "1.6.20\n" });
    let registries = ctx["install"]["registries"].as_array().unwrap().clone();
    assert_eq!(registries.len(), 2);
    let config = render("containerd/config.toml", &ctx).unwrap();
    assert!(
        config.contains("sandbox_image = \"registry.k8s.io/pause:"),
        "{config}"
    );
    assert!(config.contains("restrict_oom_score_adj = true"));
    for item in registries {
        ctx["item"] = item;
        let hosts = render("containerd/hosts.toml", &ctx).unwrap();
        assert!(hosts.starts_with("# /etc/containerd/certs.d/"), "{hosts}");
    }
    render("crictl.yaml", &ctx).unwrap();
}
