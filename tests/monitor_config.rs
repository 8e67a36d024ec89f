//! `clusterkit monitor config` checked by the real tools: promtool (config, rules, web
//! configs, a unit test for every alert, every dashboard query), amtool (config, routes); the
//! web config template against its golden files.

mod common;
mod monitor_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clusterkit_monitor::generate::rules;
use clusterkit_monitor::Topology;
use common::{clusterkit, run_ok};
use monitor_support::*;

const CLUSTER: &str = r#"
name: demo
kubernetes: { version: v1.26.3 }
hosts:
  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: w1, address: 10.0.0.2, roles: [worker], auth: { agent: true } }
  - { name: m1, address: 10.0.0.3, roles: [monitor], auth: { agent: true } }
monitor:
  listen: "0.0.0.0:9842"
  basic_auth: { username: prometheus, password_env: CK_MON_TEST_EXPORTER_PW }
  alertmanager:
    receivers:
      - { name: ops-hook, webhook: { url: "http://127.0.0.1:9/hook" } }
      - { name: oncall-mail, email: { to: oncall@example.com, from: ck@example.com, smarthost: "smtp.example.com:587", auth_username: ck, auth_password_env: CK_MON_TEST_SMTP_PW } }
      - { name: wecom-ops, wecom: { corp_id: ww1, agent_id: "1000002", to_party: "2", api_secret_env: CK_MON_TEST_WECOM } }
      - { name: ding, dingtalk: { webhook_url: "http://127.0.0.1:8060/dingtalk/ops/send" } }
    critical_receiver: oncall-mail
    warning_receiver: ops-hook
"#;

/// A cluster directory with cluster.yaml and a real PKI; returns (tempdir, cluster.yaml).
fn cluster_dir(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    make_pki(&dir.path().join("demo-state/pki"), &["10.0.0.1"]);
    (dir, cfg)
}

fn generate(cfg: &Path, out: &Path) -> serde_json::Value {
    let output = run_ok(
        clusterkit()
            .args(["monitor", "config", "-o", "json", "-f"])
            .arg(cfg)
            .arg("--dir")
            .arg(out)
            .env("CK_MON_TEST_EXPORTER_PW", "exporter-pw-1")
            .env("CK_MON_TEST_SMTP_PW", "smtp-pw-2")
            .env("CK_MON_TEST_WECOM", "wecom-secret-3"),
    );
    serde_json::from_slice(&output.stdout).expect("json report")
}

#[test]
fn generated_configs_pass_promtool_and_amtool() {
    let (dir, cfg) = cluster_dir(CLUSTER);
    let out = dir.path().join("monitoring");
    let report = generate(&cfg, &out);
    assert!(
        report["warnings"].as_array().unwrap().is_empty(),
        "{report}"
    );

    let check = tool_ok(
        Command::new(promtool())
            .arg("check")
            .arg("config")
            .arg(out.join("prometheus.yml")),
    );
    assert!(check.contains("SUCCESS"), "{check}");
    tool_ok(
        Command::new(promtool())
            .arg("check")
            .arg("rules")
            .arg(out.join("rules/clusterkit-alerts.yml")),
    );
    tool_ok(
        Command::new(amtool())
            .arg("check-config")
            .arg(out.join("alertmanager.yml")),
    );

    // TLS is verified everywhere, never skipped.
    let prom = std::fs::read_to_string(out.join("prometheus.yml")).unwrap();
    assert!(!prom.contains("insecure_skip_verify"), "{prom}");
    let etcd_targets = std::fs::read_to_string(out.join("targets/etcd.json")).unwrap();
    assert!(etcd_targets.contains("10.0.0.1:2379"), "{etcd_targets}");
    // Secrets: files 0600, never inlined (except WeCom's, which Alertmanager 0.25 can only
    // take inline; that is why alertmanager.yml is 0600).
    use std::os::unix::fs::PermissionsExt;
    for rel in [
        "alertmanager.yml",
        "secrets/oncall-mail-smtp-password",
        "secrets/exporter-password",
        "secrets/web-password",
        "tls/etcd-metrics-client.key",
        "tls/kube-metrics-client.key",
        "tls/prometheus-client.key",
        "tls/alertmanager-client.key",
        "web/prometheus.yml",
        "web/alertmanager.yml",
        "grafana/provisioning/datasources/clusterkit.yaml",
    ] {
        let mode = std::fs::metadata(out.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{rel}");
    }
    assert!(!prom.contains("exporter-pw-1"));
    let am = std::fs::read_to_string(out.join("alertmanager.yml")).unwrap();
    assert!(!am.contains("smtp-pw-2"), "{am}");

    // Secured by default: node-exporter and the exporter over HTTPS with Prometheus's client
    // certificate of the monitoring CA; alerts to Alertmanager over HTTPS with the login.
    let v: serde_json::Value = serde_saphyr::from_str(&prom).unwrap();
    let job = |name: &str| {
        v["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("no job {name}"))
            .clone()
    };
    for name in ["node", "clusterkit"] {
        let j = job(name);
        assert_eq!(j["scheme"], "https", "{name}");
        assert_eq!(
            j["tls_config"]["ca_file"], "tls/monitoring-ca.crt",
            "{name}"
        );
        assert_eq!(
            j["tls_config"]["cert_file"], "tls/prometheus-client.crt",
            "{name}"
        );
    }
    let am_cfg = &v["alerting"]["alertmanagers"][0];
    assert_eq!(am_cfg["scheme"], "https");
    assert_eq!(am_cfg["basic_auth"]["username"], "admin");
    assert_eq!(
        am_cfg["basic_auth"]["password_file"],
        "secrets/web-password"
    );
    let password = std::fs::read_to_string(out.join("secrets/web-password")).unwrap();
    let state_password =
        std::fs::read_to_string(dir.path().join("demo-state/monitor-auth/web-password")).unwrap();
    assert_eq!(password, state_password);
    // promtool validates the three web configs (bcrypt hash, TLS files that exist).
    let mut web = Command::new(promtool());
    web.args(["check", "web-config"]);
    for f in ["node-exporter", "prometheus", "alertmanager"] {
        web.arg(out.join(format!("web/{f}.yml")));
    }
    // The serving pairs are per host; the check reads them next to the generated files.
    for (host, what) in [
        ("cp1", "node-exporter"),
        ("m1", "prometheus"),
        ("m1", "alertmanager"),
    ] {
        for ext in ["crt", "key"] {
            std::fs::copy(
                dir.path().join(format!(
                    "demo-state/hosts/{host}/pki/monitoring/{what}.{ext}"
                )),
                out.join(format!("tls/{what}.{ext}")),
            )
            .unwrap();
        }
    }
    let checked = web.output().expect("promtool");
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{said}");
    assert_eq!(said.matches("SUCCESS").count(), 3, "{said}");
    for f in ["prometheus", "alertmanager"] {
        let text = std::fs::read_to_string(out.join(format!("web/{f}.yml"))).unwrap();
        assert!(text.contains("\"admin\": \"$2b$10$"), "{text}");
        assert!(!text.contains(password.trim()), "password inlined in {f}");
    }
    for text in [&prom, &am] {
        assert!(!text.contains(password.trim()));
    }
}

#[test]
fn tls_false_generates_the_plain_stack_and_warns() {
    let (dir, cfg) = cluster_dir(&CLUSTER.replace("monitor:\n", "monitor:\n  tls: false\n"));
    let out = dir.path().join("monitoring");
    let output = run_ok(
        clusterkit()
            .args(["monitor", "config", "-f"])
            .arg(&cfg)
            .arg("--dir")
            .arg(&out)
            .env("CK_MON_TEST_EXPORTER_PW", "exporter-pw-1")
            .env("CK_MON_TEST_SMTP_PW", "smtp-pw-2")
            .env("CK_MON_TEST_WECOM", "wecom-secret-3"),
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("warning: monitor.tls: false") && err.contains("closed lab network"),
        "{err}"
    );
    let prom = std::fs::read_to_string(out.join("prometheus.yml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&prom).unwrap();
    let node = v["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "node")
        .unwrap()
        .clone();
    assert_eq!(node["scheme"], "http");
    assert!(v["alerting"]["alertmanagers"][0]["basic_auth"].is_null());
    assert!(!out.join("web").exists());
    assert!(!dir.path().join("demo-state/pki/monitoring").exists());
}

/// The web config templates against their golden files (`tests/data/monitor-web/<case>/`):
/// `case.json` names the template and its context, `expected` is the output.
/// `CLUSTERKIT_UPDATE_GOLDEN=1` rewrites them.
#[test]
fn web_config_template_matches_golden_files() {
    use clusterkit_monitor::generate::web;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/monitor-web");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut covered = std::collections::BTreeSet::new();
    for case in cases {
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap())
                .unwrap();
        let name = spec["template"].as_str().unwrap();
        let template = [web::TEMPLATE, web::CLUSTER_TEMPLATE]
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{}: no template {name}", case.display()))
            .1;
        covered.insert(name.to_string());
        let got = web::render_template(template, "case", &spec["context"]).unwrap();
        if let Err(e) = common::golden::check(&case.join("expected"), &got) {
            panic!("{}: {e}", case.display());
        }
    }
    assert_eq!(
        covered.len(),
        2,
        "a template without a golden case: {covered:?}"
    );
    // The cases are what the generator builds.
    let node: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("node-exporter/case.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(node["context"], web::node_exporter_context());
    let gossip: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("alertmanager-cluster/case.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        gossip["context"],
        web::alertmanager_cluster_context(Path::new("/etc/prometheus/clusterkit"))
    );
}

#[test]
fn routes_reach_the_configured_receivers() {
    let (dir, cfg) = cluster_dir(CLUSTER);
    let out = dir.path().join("monitoring");
    generate(&cfg, &out);
    let route = |labels: &[&str]| {
        let mut cmd = Command::new(amtool());
        cmd.args(["config", "routes", "test", "--config.file"])
            .arg(out.join("alertmanager.yml"))
            .args(labels);
        tool_ok(&mut cmd).trim().to_string()
    };
    assert_eq!(
        route(&["alertname=EtcdMembersDown", "severity=critical"]),
        "oncall-mail"
    );
    assert_eq!(
        route(&[
            "alertname=NodeFilesystemAlmostOutOfSpace",
            "severity=warning"
        ]),
        "ops-hook"
    );
    assert_eq!(
        route(&["alertname=Watchdog", "severity=none"]),
        "clusterkit-null"
    );
    // Anything else still reaches a real receiver.
    assert_eq!(route(&["alertname=Other"]), "ops-hook");
}

#[test]
fn adding_a_node_only_rewrites_target_files() {
    let (dir, cfg) = cluster_dir(CLUSTER);
    let out = dir.path().join("monitoring");
    generate(&cfg, &out);
    let again = generate(&cfg, &out);
    assert!(again["changed"].as_array().unwrap().is_empty(), "{again}");
    let bigger = CLUSTER.replace(
        "  - { name: m1,",
        "  - { name: w2, address: 10.0.0.4, roles: [worker], auth: { agent: true } }\n  - { name: m1,",
    );
    std::fs::write(&cfg, bigger).unwrap();
    let after = generate(&cfg, &out);
    let changed: Vec<&str> = after["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        vec!["targets/node.json", "targets/kubelet.json"],
        "{after}"
    );
    let node = std::fs::read_to_string(out.join("targets/node.json")).unwrap();
    assert!(node.contains("10.0.0.4:9100"), "{node}");
}

#[test]
fn every_dashboard_query_parses() {
    let (dir, cfg) = cluster_dir(CLUSTER);
    let out = dir.path().join("monitoring");
    generate(&cfg, &out);
    let (text, exprs) = dashboard_rules(&out.join("grafana/dashboards"));
    assert!(exprs.len() >= 30, "only {} queries", exprs.len());
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, text).unwrap();
    let check = tool_ok(
        Command::new(promtool())
            .arg("check")
            .arg("rules")
            .arg(&file),
    );
    assert!(
        check.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{check}"
    );
    for name in [
        "clusterkit-overview",
        "clusterkit-etcd",
        "clusterkit-nodes",
        "clusterkit-certificates",
        "clusterkit-backups",
    ] {
        assert!(
            out.join(format!("grafana/dashboards/{name}.json")).exists(),
            "{name}"
        );
    }
    let ds = std::fs::read_to_string(out.join("grafana/provisioning/datasources/clusterkit.yaml"))
        .unwrap();
    assert!(ds.contains("https://10.0.0.3:9090"), "{ds}");
    assert!(
        ds.contains("tlsAuthWithCACert: true") && ds.contains("basicAuthUser: admin"),
        "{ds}"
    );
}

// ---------------------------------------------------------------------------------------------
// A promtool unit test for every alert.

/// One expected alert: its severity, labels (besides alertname/severity) and value.
struct Expect {
    severity: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    value: f64,
}

/// One alert's test: series that fire it, series that do not, and when to look.
struct Case {
    alert: &'static str,
    eval_time: &'static str,
    firing: Vec<(&'static str, &'static str)>,
    expect: Vec<Expect>,
    /// `None` only for the Watchdog, which has no healthy state.
    healthy: Option<Vec<(&'static str, &'static str)>>,
}

/// A case with one series `series`: its values `values.0` make `alert` fire as `expect`
/// says, its values `values.1` keep it silent.
fn one_series(
    alert: &'static str,
    eval_time: &'static str,
    series: &'static str,
    values: (&'static str, &'static str),
    expect: Vec<Expect>,
) -> Case {
    Case {
        alert,
        eval_time,
        firing: vec![(series, values.0)],
        expect,
        healthy: Some(vec![(series, values.1)]),
    }
}

fn e(severity: &'static str, labels: &[(&'static str, &'static str)], value: f64) -> Expect {
    Expect {
        severity,
        labels: labels.to_vec(),
        value,
    }
}

const ETCD: &[(&str, &str)] = &[
    ("job", "etcd"),
    ("instance", "10.0.0.1:2379"),
    ("host", "cp1"),
];
const NODE: &[(&str, &str)] = &[
    ("job", "node"),
    ("instance", "10.0.0.1:9100"),
    ("host", "cp1"),
];
const CK: &[(&str, &str)] = &[("job", "clusterkit"), ("instance", "10.0.0.3:9842")];

fn with(
    base: &[(&'static str, &'static str)],
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    base.iter().chain(extra.iter()).copied().collect()
}

fn cases() -> Vec<Case> {
    let etcd = |s: &'static str| -> &'static str { s };
    let fs_series = |avail: &'static str| {
        vec![
            (
                r#"node_filesystem_avail_bytes{job="node",instance="10.0.0.1:9100",host="cp1",device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
                avail,
            ),
            (
                r#"node_filesystem_size_bytes{job="node",instance="10.0.0.1:9100",host="cp1",device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
                "100x20",
            ),
            (
                r#"node_filesystem_readonly{job="node",instance="10.0.0.1:9100",host="cp1",device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
                "0x20",
            ),
            // A nearly full tmpfs is not a node disk: never alerted.
            (
                r#"node_filesystem_avail_bytes{job="node",instance="10.0.0.1:9100",host="cp1",device="tmpfs",fstype="tmpfs",mountpoint="/run"}"#,
                "1x20",
            ),
            (
                r#"node_filesystem_size_bytes{job="node",instance="10.0.0.1:9100",host="cp1",device="tmpfs",fstype="tmpfs",mountpoint="/run"}"#,
                "100x20",
            ),
            (
                r#"node_filesystem_readonly{job="node",instance="10.0.0.1:9100",host="cp1",device="tmpfs",fstype="tmpfs",mountpoint="/run"}"#,
                "0x20",
            ),
        ]
    };
    let fs_labels: &[(&str, &str)] = &[
        ("job", "node"),
        ("instance", "10.0.0.1:9100"),
        ("host", "cp1"),
        ("device", "/dev/sda1"),
        ("fstype", "ext4"),
        ("mountpoint", "/"),
    ];
    let hist = |metric: &'static str,
                buckets: [(&'static str, &'static str); 4]|
     -> Vec<(&'static str, &'static str)> {
        buckets
            .iter()
            .map(|(le, values)| {
                let s: &'static str = Box::leak(
                    format!(
                        r#"{metric}{{job="etcd",instance="10.0.0.1:2379",host="cp1",le="{le}"}}"#
                    )
                    .into_boxed_str(),
                );
                (s, *values)
            })
            .collect()
    };
    let _ = etcd;
    const UP_ETCD: &str = r#"up{job="etcd",instance="10.0.0.1:2379",host="cp1"}"#;
    let quota = 2147483648.0_f64;
    vec![
        one_series(
            "EtcdMembersDown",
            "5m",
            UP_ETCD,
            ("0x10", "1x10"),
            vec![e("critical", ETCD, 0.0)],
        ),
        Case {
            alert: "EtcdInsufficientMembers",
            eval_time: "5m",
            firing: vec![
                (r#"up{job="etcd",instance="a:2379",host="e1"}"#, "0x10"),
                (r#"up{job="etcd",instance="b:2379",host="e2"}"#, "0x10"),
                (r#"up{job="etcd",instance="c:2379",host="e3"}"#, "1x10"),
            ],
            expect: vec![e("critical", &[("job", "etcd")], 1.0)],
            healthy: Some(vec![
                (r#"up{job="etcd",instance="a:2379",host="e1"}"#, "0x10"),
                (r#"up{job="etcd",instance="b:2379",host="e2"}"#, "1x10"),
                (r#"up{job="etcd",instance="c:2379",host="e3"}"#, "1x10"),
            ]),
        },
        one_series(
            "EtcdNoLeader",
            "3m",
            r#"etcd_server_has_leader{job="etcd",instance="10.0.0.1:2379",host="cp1"}"#,
            ("0x10", "1x10"),
            vec![e("critical", ETCD, 0.0)],
        ),
        one_series(
            "EtcdHighNumberOfLeaderChanges",
            "25m",
            r#"etcd_server_leader_changes_seen_total{job="etcd",instance="10.0.0.1:2379",host="cp1"}"#,
            ("0+1x40", "3x40"),
            vec![e("warning", ETCD, 15.0)],
        ),
        one_series(
            "EtcdHighNumberOfFailedProposals",
            "40m",
            r#"etcd_server_proposals_failed_total{job="etcd",instance="10.0.0.1:2379",host="cp1"}"#,
            ("0+600x60", "0+60x60"),
            vec![e("warning", ETCD, 10.0)],
        ),
        Case {
            alert: "EtcdHighFsyncDurations",
            eval_time: "20m",
            firing: hist(
                "etcd_disk_wal_fsync_duration_seconds_bucket",
                [
                    ("0.5", "0x30"),
                    ("1", "0x30"),
                    ("2", "0+10x30"),
                    ("+Inf", "0+10x30"),
                ],
            ),
            expect: vec![e("warning", ETCD, 1.99), e("critical", ETCD, 1.99)],
            healthy: Some(hist(
                "etcd_disk_wal_fsync_duration_seconds_bucket",
                [
                    ("0.1", "0+10x30"),
                    ("1", "0+10x30"),
                    ("2", "0+10x30"),
                    ("+Inf", "0+10x30"),
                ],
            )),
        },
        Case {
            alert: "EtcdHighCommitDurations",
            eval_time: "20m",
            firing: hist(
                "etcd_disk_backend_commit_duration_seconds_bucket",
                [
                    ("0.1", "0x30"),
                    ("0.25", "0x30"),
                    ("0.5", "0+10x30"),
                    ("+Inf", "0+10x30"),
                ],
            ),
            expect: vec![e("warning", ETCD, 0.4975)],
            healthy: Some(hist(
                "etcd_disk_backend_commit_duration_seconds_bucket",
                [
                    ("0.1", "0+10x30"),
                    ("0.25", "0+10x30"),
                    ("0.5", "0+10x30"),
                    ("+Inf", "0+10x30"),
                ],
            )),
        },
        one_series(
            "EtcdDatabaseQuotaLowSpace",
            "15m",
            r#"etcd_mvcc_db_total_size_in_bytes{job="etcd",instance="10.0.0.1:2379",host="cp1"}"#,
            ("2083059139x20", "1073741824x20"),
            vec![
                e("warning", ETCD, 2083059139.0 / quota * 100.0),
                e("critical", ETCD, 2083059139.0 / quota * 100.0),
            ],
        ),
        one_series(
            "EtcdAlarmActive",
            "3m",
            r#"clusterkit_etcd_alarm_active{job="clusterkit",instance="10.0.0.3:9842",member="cp1",alarm="NOSPACE"}"#,
            ("1x10", "0x10"),
            vec![e(
                "critical",
                &with(CK, &[("member", "cp1"), ("alarm", "NOSPACE")]),
                1.0,
            )],
        ),
        one_series(
            "NodeExporterDown",
            "7m",
            r#"up{job="node",instance="10.0.0.1:9100",host="cp1"}"#,
            ("0x10", "1x10"),
            vec![e("warning", NODE, 0.0)],
        ),
        Case {
            alert: "NodeFilesystemAlmostOutOfSpace",
            eval_time: "7m",
            firing: fs_series("10x20"),
            expect: vec![
                e("warning", fs_labels, 10.0),
                e("critical", fs_labels, 10.0),
            ],
            healthy: Some(fs_series("50x20")),
        },
        one_series(
            "NodeClockSkewDetected",
            "15m",
            r#"node_timex_offset_seconds{job="node",instance="10.0.0.1:9100",host="cp1"}"#,
            ("0.1x30", "0.001x30"),
            vec![e("warning", NODE, 0.1)],
        ),
        Case {
            alert: "NodeClockNotSynchronising",
            eval_time: "15m",
            firing: vec![
                (
                    r#"node_timex_sync_status{job="node",instance="10.0.0.1:9100",host="cp1"}"#,
                    "0x30",
                ),
                (
                    r#"node_timex_maxerror_seconds{job="node",instance="10.0.0.1:9100",host="cp1"}"#,
                    "16x30",
                ),
            ],
            expect: vec![e("warning", NODE, 0.0)],
            healthy: Some(vec![
                (
                    r#"node_timex_sync_status{job="node",instance="10.0.0.1:9100",host="cp1"}"#,
                    "1x30",
                ),
                (
                    r#"node_timex_maxerror_seconds{job="node",instance="10.0.0.1:9100",host="cp1"}"#,
                    "0.1x30",
                ),
            ]),
        },
        Case {
            alert: "NodeSystemdUnitFailed",
            eval_time: "7m",
            firing: vec![(
                r#"node_systemd_unit_state{job="node",instance="10.0.0.1:9100",host="cp1",name="kubelet.service",state="failed"}"#,
                "1x10",
            )],
            expect: vec![e(
                "warning",
                &with(NODE, &[("name", "kubelet.service"), ("state", "failed")]),
                1.0,
            )],
            healthy: Some(vec![
                (
                    r#"node_systemd_unit_state{job="node",instance="10.0.0.1:9100",host="cp1",name="kubelet.service",state="failed"}"#,
                    "0x10",
                ),
                (
                    r#"node_systemd_unit_state{job="node",instance="10.0.0.1:9100",host="cp1",name="kubelet.service",state="active"}"#,
                    "1x10",
                ),
            ]),
        },
        one_series(
            "ControlPlaneComponentDown",
            "5m",
            r#"clusterkit_controlplane_up{job="clusterkit",instance="10.0.0.3:9842",host="cp1",component="kube-scheduler"}"#,
            ("0x10", "1x10"),
            vec![e(
                "critical",
                &with(CK, &[("host", "cp1"), ("component", "kube-scheduler")]),
                0.0,
            )],
        ),
        one_series(
            "KubeletDown",
            "7m",
            r#"up{job="kubelet",instance="10.0.0.2:10250",host="w1"}"#,
            ("0x10", "1x10"),
            vec![e(
                "warning",
                &[
                    ("job", "kubelet"),
                    ("instance", "10.0.0.2:10250"),
                    ("host", "w1"),
                ],
                0.0,
            )],
        ),
        one_series(
            "CertificateExpiringSoon",
            "15m",
            r#"clusterkit_certificate_expiry_seconds{job="clusterkit",instance="10.0.0.3:9842",host="cp1",path="/etc/kubernetes/pki/apiserver.crt"}"#,
            ("259200x20", "8640000x20"),
            vec![
                e(
                    "warning",
                    &with(
                        CK,
                        &[
                            ("host", "cp1"),
                            ("path", "/etc/kubernetes/pki/apiserver.crt"),
                        ],
                    ),
                    3.0,
                ),
                e(
                    "critical",
                    &with(
                        CK,
                        &[
                            ("host", "cp1"),
                            ("path", "/etc/kubernetes/pki/apiserver.crt"),
                        ],
                    ),
                    3.0,
                ),
            ],
        ),
        one_series(
            "CertificateLifetimeLow",
            "15m",
            r#"clusterkit_certificate_lifetime_remaining_ratio{job="clusterkit",instance="10.0.0.3:9842",host="cp1",path="/etc/kubernetes/pki/ca.crt"}"#,
            ("0.1x20", "0.5x20"),
            vec![e(
                "warning",
                &with(
                    CK,
                    &[("host", "cp1"), ("path", "/etc/kubernetes/pki/ca.crt")],
                ),
                10.0,
            )],
        ),
        one_series(
            "CertificateExpired",
            "1m",
            r#"clusterkit_certificate_expiry_seconds{job="clusterkit",instance="10.0.0.3:9842",host="cp1",path="/etc/kubernetes/pki/apiserver.crt"}"#,
            ("-10x5", "1000x5"),
            vec![e(
                "critical",
                &with(
                    CK,
                    &[
                        ("host", "cp1"),
                        ("path", "/etc/kubernetes/pki/apiserver.crt"),
                    ],
                ),
                -10.0,
            )],
        ),
        one_series(
            "BackupStale",
            "20m",
            r#"clusterkit_backup_last_success_timestamp_seconds{job="clusterkit",instance="10.0.0.3:9842",kind="etcd"}"#,
            ("-100000x30", "0+60x30"),
            vec![e("warning", &with(CK, &[("kind", "etcd")]), 101200.0)],
        ),
        Case {
            alert: "BackupDrillFailed",
            eval_time: "5m",
            firing: vec![
                (
                    r#"clusterkit_backup_drill_last_failed{job="clusterkit",instance="10.0.0.3:9842",store="s3://b/p",kind="etcd"}"#,
                    "0 0 1x10",
                ),
                // A passing drill of the other kind is not an alert.
                (
                    r#"clusterkit_backup_drill_last_failed{job="clusterkit",instance="10.0.0.3:9842",store="s3://b/p",kind="namespace"}"#,
                    "0x12",
                ),
            ],
            expect: vec![e(
                "critical",
                &with(CK, &[("store", "s3://b/p"), ("kind", "etcd")]),
                1.0,
            )],
            healthy: Some(vec![(
                r#"clusterkit_backup_drill_last_failed{job="clusterkit",instance="10.0.0.3:9842",store="s3://b/p",kind="etcd"}"#,
                "0x12",
            )]),
        },
        one_series(
            "BackupDrillStale",
            "20m",
            r#"clusterkit_backup_drill_last_success_timestamp_seconds{job="clusterkit",instance="10.0.0.3:9842",store="s3://b/p",kind="etcd"}"#,
            ("-100000x30", "0+60x30"),
            vec![e(
                "warning",
                &with(CK, &[("store", "s3://b/p"), ("kind", "etcd")]),
                101200.0,
            )],
        ),
        Case {
            alert: "BackupAbsent",
            eval_time: "40m",
            firing: vec![
                (
                    r#"clusterkit_backup_count{job="clusterkit",instance="10.0.0.3:9842",kind="etcd"}"#,
                    "0x50",
                ),
                // No namespace backups configured is not an alert.
                (
                    r#"clusterkit_backup_count{job="clusterkit",instance="10.0.0.3:9842",kind="namespace"}"#,
                    "0x50",
                ),
            ],
            expect: vec![e("critical", &with(CK, &[("kind", "etcd")]), 0.0)],
            healthy: Some(vec![(
                r#"clusterkit_backup_count{job="clusterkit",instance="10.0.0.3:9842",kind="etcd"}"#,
                "3x50",
            )]),
        },
        one_series(
            "ClusterkitExporterDown",
            "5m",
            r#"up{job="clusterkit",instance="10.0.0.3:9842"}"#,
            ("0x10", "1x10"),
            vec![e("critical", CK, 0.0)],
        ),
        one_series(
            "ClusterkitCollectorFailing",
            "7m",
            r#"clusterkit_collector_up{job="clusterkit",instance="10.0.0.3:9842",collector="etcd"}"#,
            ("0x10", "1x10"),
            vec![e("warning", &with(CK, &[("collector", "etcd")]), 0.0)],
        ),
        one_series(
            "ClusterkitEtcdMemberUnreachable",
            "5m",
            r#"clusterkit_etcd_member_up{job="clusterkit",instance="10.0.0.3:9842",member="cp1"}"#,
            ("0x10", "1x10"),
            vec![e("critical", &with(CK, &[("member", "cp1")]), 0.0)],
        ),
        one_series(
            "ClusterkitNodeUnreachable",
            "5m",
            r#"clusterkit_node_reachable{job="clusterkit",instance="10.0.0.3:9842",host="w1"}"#,
            ("0x10", "1x10"),
            vec![e("critical", &with(CK, &[("host", "w1")]), 0.0)],
        ),
        one_series(
            "ClusterkitNodeUnitInactive",
            "5m",
            r#"clusterkit_node_unit_active{job="clusterkit",instance="10.0.0.3:9842",host="w1",unit="kubelet"}"#,
            ("0x10", "1x10"),
            vec![e(
                "critical",
                &with(CK, &[("host", "w1"), ("unit", "kubelet")]),
                0.0,
            )],
        ),
        one_series(
            "ClusterkitNodeSwapOn",
            "15m",
            r#"clusterkit_node_swap_enabled{job="clusterkit",instance="10.0.0.3:9842",host="w1"}"#,
            ("1x20", "0x20"),
            vec![e("warning", &with(CK, &[("host", "w1")]), 1.0)],
        ),
        one_series(
            "ClusterkitNodeSysctlDrift",
            "15m",
            r#"clusterkit_node_sysctl_matches{job="clusterkit",instance="10.0.0.3:9842",host="w1",key="net.ipv4.ip_forward"}"#,
            ("0x20", "1x20"),
            vec![e(
                "warning",
                &with(CK, &[("host", "w1"), ("key", "net.ipv4.ip_forward")]),
                0.0,
            )],
        ),
        one_series(
            "ClusterkitNodeModuleMissing",
            "15m",
            r#"clusterkit_node_module_present{job="clusterkit",instance="10.0.0.3:9842",host="w1",module="br_netfilter"}"#,
            ("0x20", "1x20"),
            vec![e(
                "warning",
                &with(CK, &[("host", "w1"), ("module", "br_netfilter")]),
                0.0,
            )],
        ),
        one_series(
            "ClusterkitNodeClockOffset",
            "15m",
            r#"clusterkit_node_clock_offset_seconds{job="clusterkit",instance="10.0.0.3:9842",host="w1"}"#,
            ("-0.8x20", "0.01x20"),
            vec![e("warning", &with(CK, &[("host", "w1")]), 0.8)],
        ),
        Case {
            alert: "Watchdog",
            eval_time: "1m",
            firing: vec![],
            expect: vec![e("none", &[], 1.0)],
            healthy: None,
        },
    ]
}

/// Renders an annotation template the way Prometheus does, for the subset clusterkit's rules
/// use: `{{ $labels.NAME }}` and `{{ $value | printf "%.Nf" }}`.
fn render(template: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed {{") + start;
        let inner = rest[start + 2..end].trim();
        if let Some(name) = inner.strip_prefix("$labels.") {
            out.push_str(labels.get(name).map(String::as_str).unwrap_or("<no value>"));
        } else if let Some(fmt) = inner
            .strip_prefix("$value | printf \"%.")
            .and_then(|f| f.strip_suffix("f\""))
        {
            let digits: usize = fmt.parse().unwrap();
            out.push_str(&format!("{value:.digits$}"));
        } else {
            panic!("template form not supported by this test: {{{{ {inner} }}}} — keep annotations to $labels and printf");
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn every_alert_fires_on_bad_series_and_stays_silent_on_healthy_ones() {
    let (dir, cfg) = cluster_dir(CLUSTER);
    let out = dir.path().join("monitoring");
    generate(&cfg, &out);
    let topology = Topology::load(&cfg).unwrap();
    let groups = rules::groups(topology.monitor(), &BTreeMap::new());
    let cases = cases();

    // Coverage: every alert and every severity of it is exercised.
    let tested: Vec<(&str, &str)> = cases
        .iter()
        .flat_map(|c| c.expect.iter().map(move |x| (c.alert, x.severity)))
        .collect();
    for g in &groups {
        for a in &g.alerts {
            assert!(
                tested.contains(&(a.name, a.severity)),
                "no unit test fires {} ({})",
                a.name,
                a.severity
            );
            if a.name != "Watchdog" {
                assert!(
                    cases
                        .iter()
                        .any(|c| c.alert == a.name && c.healthy.is_some()),
                    "no healthy test for {}",
                    a.name
                );
            }
        }
    }

    let mut text = format!(
        "rule_files: [{}]\nevaluation_interval: 1m\ntests:\n",
        yaml_str(&out.join("rules/clusterkit-alerts.yml").to_string_lossy())
    );
    let series_yaml = |series: &[(&str, &str)]| -> String {
        if series.is_empty() {
            return "    input_series: []\n".into();
        }
        let mut s = String::from("    input_series:\n");
        for (name, values) in series {
            s.push_str(&format!(
                "      - series: {}\n        values: {}\n",
                yaml_str(name),
                yaml_str(values)
            ));
        }
        s
    };
    for c in &cases {
        // Firing.
        text.push_str("  - interval: 1m\n");
        text.push_str(&series_yaml(&c.firing));
        text.push_str(&format!("    alert_rule_test:\n      - eval_time: {}\n        alertname: {}\n        exp_alerts:\n", c.eval_time, c.alert));
        for x in &c.expect {
            let rule = groups
                .iter()
                .flat_map(|g| g.alerts.iter())
                .find(|a| a.name == c.alert && a.severity == x.severity)
                .unwrap_or_else(|| panic!("no rule {} ({})", c.alert, x.severity));
            let mut labels: BTreeMap<String, String> = x
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.insert("severity".into(), x.severity.into());
            text.push_str("          - exp_labels:\n");
            for (k, v) in &labels {
                text.push_str(&format!("              {k}: {}\n", yaml_str(v)));
            }
            text.push_str("            exp_annotations:\n");
            text.push_str(&format!(
                "              summary: {}\n",
                yaml_str(rule.summary)
            ));
            text.push_str(&format!(
                "              description: {}\n",
                yaml_str(&render(&rule.description, &labels, x.value))
            ));
        }
        // Healthy.
        if let Some(healthy) = &c.healthy {
            text.push_str("  - interval: 1m\n");
            text.push_str(&series_yaml(healthy));
            text.push_str(&format!("    alert_rule_test:\n      - eval_time: {}\n        alertname: {}\n        exp_alerts: []\n", c.eval_time, c.alert));
        }
    }
    let file = dir.path().join("alert-tests.yml");
    std::fs::write(&file, &text).unwrap();
    let mut cmd = Command::new(promtool());
    cmd.arg("test").arg("rules").arg(&file);
    let output = cmd.output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool test rules failed:\n{}\n{}\n--- test file ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
