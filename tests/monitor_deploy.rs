//! `clusterkit monitor deploy` on a 3-node sandbox, all real: Debian 12 nspawn nodes over SSH,
//! an offline bundle with Debian's prometheus, prometheus-alertmanager and
//! prometheus-node-exporter packages, and a 3-member TLS etcd installed first by the real
//! `install --phase pki` and `--phase etcd` so the etcd scrape job (client certificate, CA
//! verification) has something to scrape. node3 has the `monitor` role.
//!
//! Checked through Prometheus's own HTTP API on node3 (queried by this test, not trusted from
//! clusterkit's output): node-exporter is up on all 3 nodes and etcd on all 3 members. The
//! apiserver is not installed, so asking `deploy` to require it fails and names the down
//! targets. The etcd client key on node3 is 0600 and owned by `prometheus`. A second deploy
//! changes nothing and restarts nothing (same main PIDs). Finally `monitor serve` reads the
//! certificates live from the nodes over SSH: node2's etcd serving certificate is exported with
//! the expiry openssl reads on node2.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh) and apt access for the bundle;
//! fails with the reason when one is missing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{clusterkit, describe, run_fail, run_ok, ssh, stderr, wait_until};
use serde_json::Value;

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Alerts go to a webhook on the monitor node's own loopback, where nothing listens: this test
/// checks scraping, not delivery (tests/monitor_e2e.rs does that).
const MONITOR: &str = "monitor:\n  alertmanager:\n    receivers:\n      - { name: ops, webhook: { url: \"http://127.0.0.1:9/hook\" } }\n";

fn ck(cfg: &Path, args: &[&str]) -> Command {
    let mut c = clusterkit();
    c.arg("-f").arg(cfg).args(args);
    c
}

/// GET on a plain-HTTP server; the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.lines().next()?.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// `(job, host label, health)` of every active target.
fn targets(prom: &str) -> Vec<(String, String, String)> {
    let Some(body) = http_get(prom, "/api/v1/targets?state=active") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&t["labels"]["job"]),
                s(&t["labels"]["host"]),
                s(&t["health"]),
            )
        })
        .collect()
}

fn up_hosts(targets: &[(String, String, String)], job: &str) -> Vec<String> {
    let mut h: Vec<String> = targets
        .iter()
        .filter(|(j, _, health)| j == job && health == "up")
        .map(|(_, host, _)| host.clone())
        .collect();
    h.sort();
    h
}

fn changed_total(report: &Value) -> u64 {
    report["run"]["hosts"]
        .as_object()
        .unwrap_or_else(|| panic!("no run.hosts in {report:#}"))
        .values()
        .map(|h| h["changed"].as_u64().unwrap())
        .sum()
}

/// Main PIDs of the monitoring daemons on a node (a restart changes them).
fn pids(sb: &SandboxGuard, node: &str, units: &[&str]) -> String {
    ssh(
        sb,
        node,
        &format!("systemctl show -p MainPID --value {}", units.join(" ")),
    )
}

#[test]
fn deploy_three_nodes() {
    let sb = SandboxGuard::up(UpOptions::new("mondep", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    // Packages only: the images are not needed, so no dependency on the image cache.
    common::build_bundle(
        &bundle,
        None,
        &[
            "--no-images",
            "--package",
            "etcd-server",
            "--package",
            "prometheus",
            "--package",
            "prometheus-alertmanager",
            "--package",
            "prometheus-node-exporter",
        ],
    );
    // node3 also runs Prometheus and Alertmanager.
    let base = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "- name: node3")
        .expect("node3 in the sandbox's cluster.yaml");
    let roles = (at..lines.len())
        .find(|&i| lines[i].trim_start().starts_with("roles:"))
        .unwrap();
    lines[roles] = lines[roles].replace(']', ", monitor]");
    let cfg = sb.dir().join("mondep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}\npackages: {{ bundle: {} }}\n{MONITOR}",
            lines.join("\n"),
            bundle.display()
        ),
    )
    .unwrap();
    for phase in ["pki", "etcd"] {
        run_ok(&mut ck(&cfg, &["install", "--phase", phase]));
    }

    // 1. Deploy; node-exporter and etcd must be up.
    let mut c = ck(
        &cfg,
        &[
            "-o",
            "json",
            "monitor",
            "deploy",
            "--check-jobs",
            "node,etcd",
        ],
    );
    let out = run_ok(&mut c);
    let first: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "expected JSON")));
    assert!(changed_total(&first) > 0, "{first:#}");
    assert_eq!(first["grafana"], false, "{first:#}");

    // 2. Prometheus on node3, asked directly.
    let prom = format!("{}:9090", sb.node("node3").unwrap().address);
    let mut seen = Vec::new();
    let ready = wait_until(Duration::from_secs(120), || {
        seen = targets(&prom);
        up_hosts(&seen, "node") == NODES && up_hosts(&seen, "etcd") == NODES
    });
    assert!(ready, "targets through {prom}/api/v1/targets: {seen:?}");
    // Only what was installed is up: no apiserver runs.
    assert!(up_hosts(&seen, "apiserver").is_empty(), "{seen:?}");

    // 3. The etcd client key: private, readable by Prometheus's user only.
    let key = ssh(
        &sb,
        "node3",
        "stat -c '%a %U' /etc/prometheus/clusterkit/tls/etcd-metrics-client.key",
    );
    assert_eq!(key.trim(), "600 prometheus");
    // node-exporter only on node1 and node2, Prometheus only on node3.
    let units = ssh(
        &sb,
        "node1",
        "systemctl is-active prometheus-node-exporter; systemctl is-active prometheus || true",
    );
    assert_eq!(
        units.split_whitespace().collect::<Vec<_>>(),
        ["active", "inactive"]
    );

    // 4. A rerun changes nothing and restarts nothing.
    let daemons = [
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
    ];
    let before = pids(&sb, "node3", &daemons);
    let before1 = pids(&sb, "node1", &["prometheus-node-exporter"]);
    let mut c = ck(
        &cfg,
        &[
            "-o",
            "json",
            "monitor",
            "deploy",
            "--check-jobs",
            "node,etcd",
        ],
    );
    let out = run_ok(&mut c);
    let second: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "expected JSON")));
    assert_eq!(changed_total(&second), 0, "rerun changed: {second:#}");
    assert_eq!(pids(&sb, "node3", &daemons), before);
    assert_eq!(pids(&sb, "node1", &["prometheus-node-exporter"]), before1);

    // 5. Requiring what is not installed fails, naming the down targets.
    let out = run_fail(&mut ck(
        &cfg,
        &[
            "monitor",
            "deploy",
            "--check-jobs",
            "node,apiserver",
            "--wait-secs",
            "20",
        ],
    ));
    let err = stderr(&out);
    let cp = format!("apiserver/{}:6443", sb.node("node1").unwrap().address);
    assert!(err.contains(&cp) && err.contains("down"), "{err}");

    // 6. The exporter reads the certificates live from the nodes: node2's etcd serving
    //    certificate, with the expiry openssl reads on node2 itself.
    let port = common::free_port();
    let mut c = ck(
        &cfg,
        &["monitor", "serve", "--listen", &format!("127.0.0.1:{port}")],
    );
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let exporter = Exporter(c.spawn().expect("start monitor serve"));
    let wanted = "clusterkit_certificate_not_after_timestamp_seconds{host=\"node2\",path=\"/etc/kubernetes/pki/etcd/server.crt\"";
    let mut metrics = String::new();
    let found = wait_until(Duration::from_secs(90), || {
        metrics = http_get(&format!("127.0.0.1:{port}"), "/metrics").unwrap_or_default();
        metrics.contains(wanted)
    });
    drop(exporter);
    assert!(found, "no {wanted} in:\n{metrics}");
    let line = metrics.lines().find(|l| l.starts_with(wanted)).unwrap();
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let on_node = ssh(
        &sb,
        "node2",
        "date -d \"$(openssl x509 -noout -enddate -in /etc/kubernetes/pki/etcd/server.crt | cut -d= -f2)\" +%s",
    );
    assert_eq!(
        value as i64,
        on_node.trim().parse::<i64>().unwrap(),
        "{line}"
    );
    assert!(
        metrics.contains("clusterkit_certificate_read_success{host=\"node3\"} 1"),
        "{metrics}"
    );
}

/// Stops the exporter started by the test (by its PID) even when an assertion fails.
struct Exporter(std::process::Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
