//! `clusterkit install --phase prepare|runtime` on real sandbox nodes (systemd-nspawn Debian 12
//! with sshd, no route to package mirrors — so packages come from an offline bundle built by
//! `clusterkit bundle build`), then the real state read back over SSH.
//!
//! One sandbox of 3 nodes is shared by the steps of one test (bringing nodes up is the slow
//! part): converge; read state back; rerun → 0 changed everywhere; drift one node → `--check`
//! reports exactly that drift and changes nothing → a normal run repairs it; a node whose sshd
//! disappears in the middle of a run fails alone and `--resume` finishes it, skipping the tasks
//! it had done. Needs root, systemd-nspawn, debootstrap (scripts/deps.sh) and apt access for
//! the bundle; the test fails with the reason when they are missing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{clusterkit, describe, run_ok, ssh};
use serde_json::Value;

/// The sandbox's cluster.yaml plus the bundle, mirrors, an insecure registry and a sysctl.
fn write_cluster_yaml(sb: &SandboxGuard, bundle: &Path) -> PathBuf {
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    let extra = format!(
        "packages: {{ bundle: {} }}\n\
         runtime:\n  registry_mirrors: {{ docker.io: [ \"https://mirror.example.invalid\" ] }}\n  insecure_registries: [ \"registry.sandbox.invalid:5000\" ]\n\
         sysctls: {{ net.core.somaxconn: \"1024\" }}\n",
        bundle.display()
    );
    let path = sb.dir().join("install.yaml");
    std::fs::write(&path, base + &extra).unwrap();
    path
}

/// Runs `install --phase prepare` then `--phase runtime` (explicit phases: later phases are
/// not this test's business) and returns the summaries added up per host, whether both
/// succeeded, and stderr. With `events`, each phase writes `<events>.<phase>`.
fn install(cfg: &Path, args: &[&str], events: Option<&Path>) -> (Value, bool, String) {
    let mut total = serde_json::json!({"hosts": {}, "check": false});
    let mut ok = true;
    let mut stderr = String::new();
    for phase in ["prepare", "runtime"] {
        let mut c = clusterkit();
        c.arg("-f")
            .arg(cfg)
            .args(["-o", "json", "install", "--phase", phase])
            .args(args);
        if let Some(e) = events {
            c.arg("--events").arg(format!("{}.{phase}", e.display()));
        }
        let out = c.output().unwrap();
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "expected a JSON summary")));
        ok &= out.status.success();
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        total["check"] = json["check"].clone();
        for (host, r) in json["hosts"].as_object().unwrap() {
            let t = total["hosts"]
                .as_object_mut()
                .unwrap()
                .entry(host.clone())
                .or_insert(serde_json::json!({}));
            for k in ["ok", "changed", "failed", "skipped"] {
                let sum = t[k].as_u64().unwrap_or(0) + r[k].as_u64().unwrap_or(0);
                t[k] = sum.into();
            }
        }
    }
    (total, ok, stderr)
}

/// The events of both phases.
fn phase_events(base: &Path) -> Vec<Value> {
    ["prepare", "runtime"]
        .iter()
        .flat_map(|p| read_events(Path::new(&format!("{}.{p}", base.display()))))
        .collect()
}

fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(host, task)` of every task event with this status.
fn tasks_with(events: &[Value], status: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = events
        .iter()
        .filter(|e| (e["kind"] == "task" || e["kind"] == "handler") && e["status"] == status)
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["task"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn prepare_and_runtime_on_three_nodes() {
    let mut sb = SandboxGuard::up(UpOptions::new("inst3", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();

    // The offline bundle: the nodes cannot reach a mirror.
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, None, &[]);
    run_ok(clusterkit().args(["bundle", "verify"]).arg(&bundle));
    let cfg = write_cluster_yaml(&sb, &bundle);

    // Something for prepare to fix: a wrong hostname and an active-looking swap line.
    ssh(
        &sb,
        "node1",
        "hostname wrongname && echo wrongname > /etc/hostname",
    );
    ssh(
        &sb,
        "node2",
        "echo '/swapfile none swap sw 0 0' >> /etc/fstab",
    );

    // 1. Converge.
    let events = work.path().join("first.jsonl");
    let (summary, ok, stderr) = install(&cfg, &[], Some(&events));
    assert!(ok, "{stderr}");
    for node in ["node1", "node2", "node3"] {
        let h = &summary["hosts"][node];
        assert_eq!(h["failed"], 0, "{summary:#}");
        assert!(h["changed"].as_u64().unwrap() > 0, "{summary:#}");
    }
    let ev = phase_events(&events);
    assert!(ev
        .iter()
        .filter(|e| e["kind"] == "task")
        .all(|e| e["duration_ms"].is_u64()));

    // 2. Real state, read back over SSH.
    let all_hosts: Vec<String> = sb
        .nodes()
        .iter()
        .map(|n| format!("{} {}", n.address, n.name))
        .collect();
    for n in ["node1", "node2", "node3"] {
        let sysctls = ssh(&sb, n, "sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward net.core.somaxconn");
        assert_eq!(
            sysctls.split_whitespace().collect::<Vec<_>>(),
            ["1", "1", "1", "1024"],
            "{n}"
        );
        assert_eq!(ssh(&sb, n, "hostname").trim(), n);
        assert_eq!(ssh(&sb, n, "cat /etc/hostname").trim(), n);
        let hosts = ssh(&sb, n, "cat /etc/hosts");
        for line in &all_hosts {
            assert!(
                hosts.lines().any(|l| l == line),
                "{n}: /etc/hosts lacks `{line}`:\n{hosts}"
            );
        }
        let dump = ssh(&sb, n, "containerd config dump");
        assert!(dump.contains("SystemdCgroup = true"), "{n}: {dump}");
        assert!(
            dump.contains("config_path = \"/etc/containerd/certs.d\""),
            "{n}"
        );
        assert!(
            dump.contains("restrict_oom_score_adj = true"),
            "{n}: sandbox profile"
        );
        let mirror = ssh(&sb, n, "cat /etc/containerd/certs.d/docker.io/hosts.toml");
        assert!(
            mirror.contains("[host.\"https://mirror.example.invalid\"]"),
            "{mirror}"
        );
        let insecure = ssh(
            &sb,
            n,
            "cat '/etc/containerd/certs.d/registry.sandbox.invalid:5000/hosts.toml'",
        );
        assert!(insecure.contains("skip_verify = true"), "{insecure}");
        assert_eq!(
            ssh(&sb, n, "systemctl is-active containerd").trim(),
            "active"
        );
        assert_eq!(
            ssh(&sb, n, "systemctl is-enabled containerd").trim(),
            "enabled"
        );
        assert!(
            ssh(&sb, n, "cat /etc/crictl.yaml").contains("unix:///run/containerd/containerd.sock")
        );
    }
    let fstab = ssh(&sb, "node2", "cat /etc/fstab");
    assert!(
        fstab
            .lines()
            .any(|l| l.starts_with('#') && l.contains("/swapfile none swap")),
        "{fstab}"
    );
    assert!(
        !fstab.lines().any(|l| l.starts_with("/swapfile")),
        "{fstab}"
    );
    assert!(ssh(&sb, "node2", "cat /etc/fstab.clusterkit-backup")
        .lines()
        .any(|l| l.starts_with("/swapfile")));
    assert_eq!(ssh(&sb, "node2", "tail -n +2 /proc/swaps").trim(), "");

    // 3. Idempotent: a second run changes nothing anywhere.
    let (summary, ok, stderr) = install(&cfg, &[], None);
    assert!(ok, "{stderr}");
    for n in ["node1", "node2", "node3"] {
        assert_eq!(summary["hosts"][n]["changed"], 0, "{summary:#}");
        assert_eq!(summary["hosts"][n]["failed"], 0, "{summary:#}");
    }

    // 4. Drift node2; --check reports exactly that and changes nothing.
    ssh(&sb, "node2", "sed -i 's/^net.ipv4.ip_forward = 1/net.ipv4.ip_forward = 0/' /etc/sysctl.d/90-clusterkit.conf && systemctl stop containerd");
    let events = work.path().join("check.jsonl");
    let (summary, ok, stderr) = install(&cfg, &["--check"], Some(&events));
    assert!(ok, "{stderr}");
    assert_eq!(summary["check"], true);
    let changed = tasks_with(&phase_events(&events), "changed");
    assert_eq!(
        changed,
        vec![
            (
                "node2".to_string(),
                "containerd enabled and running".to_string()
            ),
            (
                "node2".to_string(),
                "sysctls for Kubernetes networking and from cluster.yaml".to_string()
            ),
        ],
        "check mode must report exactly the drift"
    );
    assert_eq!(summary["hosts"]["node1"]["changed"], 0);
    assert_eq!(
        ssh(&sb, "node2", "systemctl is-active containerd || true").trim(),
        "inactive"
    );
    assert!(ssh(&sb, "node2", "cat /etc/sysctl.d/90-clusterkit.conf")
        .contains("net.ipv4.ip_forward = 0"));

    // ... and a normal run repairs it.
    let (summary, ok, stderr) = install(&cfg, &[], None);
    assert!(ok, "{stderr}");
    assert_eq!(summary["hosts"]["node2"]["changed"], 2, "{summary:#}");
    assert_eq!(
        ssh(&sb, "node2", "systemctl is-active containerd").trim(),
        "active"
    );
    assert!(ssh(&sb, "node2", "cat /etc/sysctl.d/90-clusterkit.conf")
        .contains("net.ipv4.ip_forward = 1"));

    // 5. A node whose sshd goes away mid-run fails alone; --resume finishes it.
    let pb = work.path().join("slow.yaml");
    std::fs::write(
        &pb,
        "- name: slow\n  hosts: all\n  tasks:\n\
         \x20   - name: before\n      copy: { content: \"1\\n\", dest: /root/before }\n\
         \x20   - name: count runs of before\n      shell: \"echo x >> /root/runs\"\n\
         \x20   - name: wait\n      shell: { cmd: \"sleep 8 && touch /root/waited\", creates: /root/waited }\n\
         \x20   - name: after\n      copy: { content: \"2\\n\", dest: /root/after }\n",
    )
    .unwrap();
    let events = work.path().join("slow.jsonl");
    let mut run = clusterkit();
    run.arg("-f")
        .arg(&cfg)
        .args(["-o", "json", "run"])
        .arg(&pb)
        .arg("--events")
        .arg(&events);
    let child = run
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until node3 is inside `wait`, then take its sshd away (the whole node stops).
    assert!(
        common::wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&events)
                .map(|t| {
                    t.lines()
                        .any(|l| l.contains("\"node3\"") && l.contains("count runs of before"))
                })
                .unwrap_or(false)
        }),
        "node3 never reached the slow task"
    );
    sb.stop_node("node3").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the run must fail because node3 failed"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["hosts"]["node1"]["failed"], 0, "{summary:#}");
    assert_eq!(summary["hosts"]["node2"]["failed"], 0, "{summary:#}");
    let err = summary["hosts"]["node3"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        err.contains("wait"),
        "node3 must fail in `wait` with a clear error: {summary:#}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 of 3 hosts failed: node3"), "{stderr}");
    assert_eq!(ssh(&sb, "node1", "cat /root/after").trim(), "2");

    sb.start_node("node3").unwrap();
    let events = work.path().join("resume.jsonl");
    let mut resume = clusterkit();
    resume
        .arg("-f")
        .arg(&cfg)
        .args(["-o", "json", "run"])
        .arg(&pb)
        .args(["--resume", "--events"])
        .arg(&events);
    let summary: Value = serde_json::from_slice(&run_ok(&mut resume).stdout).unwrap();
    assert_eq!(summary["hosts"]["node3"]["failed"], 0, "{summary:#}");
    assert_eq!(ssh(&sb, "node3", "cat /root/after").trim(), "2");
    assert_eq!(
        ssh(&sb, "node3", "cat /root/runs").trim(),
        "x",
        "finished tasks must not run again"
    );
    let skipped = tasks_with(&read_events(&events), "skipped");
    assert!(
        skipped.contains(&("node3".into(), "before".into())),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("node3".into(), "count runs of before".into())),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("node1".into(), "after".into())),
        "{skipped:?}"
    );
}

#[test]
fn bad_playbook_fails_before_touching_hosts() {
    // No sandbox: the hosts below do not exist, so any attempt to reach them would fail
    // differently (connection refused). The error must be the playbook's, with file and line.
    let dir = tempfile::tempdir().unwrap();
    common::stand_in_key(&dir.path().join("id_ed25519"));
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(
        &cfg,
        "name: bad\nhosts:\n  - { name: n1, address: 192.0.2.1, port: 1, roles: [worker], auth: { key_file: ./id_ed25519 } }\nkubernetes: { version: v1.26.3 }\n",
    )
    .unwrap();
    let cases = [
        ("- name: p\n  hosts: all\n  tasks:\n    - name: ok\n      shell: 'true'\n    - name: t\n      frobnicate: {}\n", "bad.yaml:6:", "frobnicate"),
        ("- name: p\n  hosts: all\n  tasks:\n    - name: t\n      sysctl: { name: a.b, value: 1, colour: x }\n", "bad.yaml:4:", "colour"),
        ("- name: p\n  hosts: all\n  tasks:\n    - name: t\n      shell: \"echo {{ broken\"\n", "bad.yaml:4:", "template"),
    ];
    for (text, at, needle) in cases {
        let pb = dir.path().join("bad.yaml");
        std::fs::write(&pb, text).unwrap();
        let out = common::run_fail(clusterkit().arg("-f").arg(&cfg).arg("run").arg(&pb));
        let err = common::stderr(&out);
        assert!(err.contains(at) && err.contains(needle), "{err}");
        assert!(
            !err.contains("192.0.2.1"),
            "no host may be contacted: {err}"
        );
    }
    // `install` too, although it reads what runs on the control-plane hosts before it changes
    // anything: its playbooks are checked first.
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(lib.join("playbooks")).unwrap();
    std::fs::write(lib.join("playbooks/runtime.yaml"), cases[0].0).unwrap();
    let cp = dir.path().join("cp.yaml");
    std::fs::write(
        &cp,
        "name: bad\nhosts:\n  - { name: n1, address: 192.0.2.1, port: 1, roles: [control-plane, etcd], auth: { key_file: ./id_ed25519 } }\nkubernetes: { version: v1.26.3 }\n",
    )
    .unwrap();
    let out = common::run_fail(
        clusterkit()
            .arg("-f")
            .arg(&cp)
            .args(["install", "--phase", "runtime", "--library"])
            .arg(&lib),
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("runtime.yaml:6:") && err.contains("frobnicate"),
        "{err}"
    );
    assert!(
        !err.contains("192.0.2.1"),
        "no host may be contacted: {err}"
    );
}
