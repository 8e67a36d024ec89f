//! `clusterkit monitor deploy` on a 3-node sandbox, all real: Debian 12 nspawn nodes over SSH,
//! an offline bundle with Debian's prometheus, prometheus-alertmanager and
//! prometheus-node-exporter packages, and a 3-member TLS etcd installed first by the real
//! `install --phase pki` and `--phase etcd` so the etcd scrape job (client certificate, CA
//! verification) has something to scrape. node3 has the `monitor` role.
//!
//! The stack is the secured default (`monitor.tls`). Checked from this machine, as a stranger
//! would try: plain HTTP gets no metrics anywhere; node-exporter and the exporter refuse a TLS
//! client without a certificate, or with one of another CA, at the handshake; Prometheus and
//! Alertmanager answer 401 without the login and 200 with it; `amtool silence add` fails
//! without it and works with it. Through Prometheus's own HTTP API on node3 (HTTPS, the
//! login): node-exporter is up on all 3 nodes and etcd on all 3 members, node-exporter over
//! TLS. While the deploy runs (with -vvv), `ps` on every node and the deploy's own output never
//! show the password or key material. The apiserver is not installed, so asking `deploy` to
//! require it fails and names the down targets. The keys on the nodes are 0600 and owned by
//! `prometheus`. A second deploy changes nothing and restarts nothing (same main PIDs: the
//! bcrypt hash is kept). `monitor serve` reads the certificates live from the nodes over SSH:
//! node2's etcd serving certificate is exported with the expiry openssl reads on node2, and
//! node1's node-exporter certificate is among them. Finally `certs check-expiration` lists the
//! monitoring certificates, and `certs renew` of node-exporter's, Prometheus's and the
//! exporter's certificates makes node1's node-exporter and the running exporter serve the new
//! serials while every target stays up.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh) and apt access for the bundle;
//! fails with the reason when one is missing.

mod common;
mod monitor_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{ck, describe, json_of, run_fail, run_ok, ssh, stderr, wait_until, NODES};
use monitor_support::{amtool, curl, make_ca, make_leaf};
use serde_json::Value;

/// Alerts go to a webhook on the monitor node's own loopback, where nothing listens: this test
/// checks scraping, not delivery (tests/monitor_e2e.rs does that).
const MONITOR: &str = "monitor:\n  alertmanager:\n    receivers:\n      - { name: ops, webhook: { url: \"http://127.0.0.1:9/hook\" } }\n";

/// What the test holds of the monitoring PKI and login (from the state directory).
struct Creds {
    ca: PathBuf,
    /// `admin:<password>`.
    user: String,
    client: (PathBuf, PathBuf),
}

impl Creds {
    fn client(&self) -> Option<(&Path, &Path)> {
        Some((self.client.0.as_path(), self.client.1.as_path()))
    }
}

/// GET over HTTPS with the login; the body of a 200 answer.
fn api_get(creds: &Creds, addr: &str, path: &str) -> Option<String> {
    let (code, body) = curl(
        &format!("https://{addr}{path}"),
        &creds.ca,
        Some(&creds.user),
        None,
    );
    (code == "200").then_some(body)
}

/// `(job, host label, health)` of every active target, and whether each was scraped over
/// HTTPS (the scrape URL's scheme).
fn targets(creds: &Creds, prom: &str) -> Vec<(String, String, String)> {
    let Some(body) = api_get(creds, prom, "/api/v1/targets?state=active") else {
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
            let https = s(&t["scrapeUrl"]).starts_with("https://");
            (
                s(&t["labels"]["job"]),
                s(&t["labels"]["host"]),
                if https {
                    s(&t["health"])
                } else {
                    "not-https".into()
                },
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

/// Collects every command line seen on the nodes (`ps`) until stopped: the sandbox's SSH key
/// and known_hosts, the nodes' addresses.
struct PsWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PsWatch {
    fn start(sb: &SandboxGuard) -> PsWatch {
        let key = sb.key_file();
        let known = sb.known_hosts();
        let addrs: Vec<String> = NODES
            .iter()
            .map(|n| sb.node(n).unwrap().address.to_string())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for a in &addrs {
                    let out = Command::new("ssh")
                        .arg("-i")
                        .arg(&key)
                        .arg("-o")
                        .arg(format!("UserKnownHostsFile={}", known.display()))
                        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
                        .arg(format!("root@{a}"))
                        .arg("ps -eww -o args=")
                        .output();
                    if let Ok(o) = out {
                        let text = String::from_utf8_lossy(&o.stdout).into_owned();
                        sn.lock().unwrap().extend(text.lines().map(str::to_string));
                    }
                }
            }
        });
        PsWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The serial a TLS server presents (`openssl s_client`), with the client pair given.
fn served_serial(addr: &str, creds: &Creds) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -CAfile {} -cert {} -key {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            creds.ca.display(),
            creds.client.0.display(),
            creds.client.1.display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The serial of a certificate file.
fn file_serial(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `amtool silence add` against `am`, with an http config holding the CA and, when `login`,
/// the user and a password file.
fn amtool_silence(work: &Path, am: &str, creds: &Creds, login: bool) -> std::process::Output {
    let mut cfg = format!("tls_config:\n  ca_file: {}\n", creds.ca.display());
    if login {
        let (user, password) = creds.user.split_once(':').unwrap();
        let pw = work.join("am-password");
        std::fs::write(&pw, password).unwrap();
        cfg.push_str(&format!(
            "basic_auth:\n  username: {user}\n  password_file: {}\n",
            pw.display()
        ));
    }
    let file = work.join(format!("amtool-{login}.yml"));
    std::fs::write(&file, cfg).unwrap();
    Command::new(amtool())
        .arg(format!("--alertmanager.url=https://{am}"))
        .arg(format!("--http.config.file={}", file.display()))
        .args([
            "silence",
            "add",
            "alertname=Watchdog",
            "--comment=monitor_deploy test",
            "--author=clusterkit-test",
            "--duration=5m",
        ])
        .output()
        .unwrap()
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
    // What `install --resume` would read; a deploy is not an install and leaves it alone.
    let journal = || -> Vec<(PathBuf, String)> {
        let dir = sb.dir().join("mondep-state/journal");
        let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let p = e.unwrap().path();
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect();
        files.sort();
        files
    };
    let install_journal = journal();
    assert!(
        install_journal.iter().any(|(_, text)| !text.is_empty()),
        "the etcd phase left no journal: {install_journal:?}"
    );

    // 1. Deploy (-vvv) while watching every command line on the nodes; node-exporter and etcd
    //    must be up.
    let watch = PsWatch::start(&sb);
    let deploy = [
        "-o",
        "json",
        "monitor",
        "deploy",
        "--check-jobs",
        "node,etcd",
    ];
    let mut c = ck(&cfg, &[&["-vvv"][..], &deploy].concat());
    let out = run_ok(&mut c);
    let seen = watch.finish();
    let first: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "expected JSON")));
    assert!(changed_total(&first) > 0, "{first:#}");
    assert_eq!(first["grafana"], false, "{first:#}");
    assert!(
        journal() == install_journal,
        "monitor deploy changed the install's journal"
    );

    let state = sb.dir().join("mondep-state");
    let password = std::fs::read_to_string(state.join("monitor-auth/web-password")).unwrap();
    let password = password.trim().to_string();
    assert!(password.len() >= 20, "generated password too short");
    let creds = Creds {
        ca: state.join("pki/monitoring/ca.crt"),
        user: format!("admin:{password}"),
        client: (
            state.join("pki/monitoring/prometheus-client.crt"),
            state.join("pki/monitoring/prometheus-client.key"),
        ),
    };
    // 1a. Secrets: not on any command line during the deploy, not in its -vvv output.
    assert!(
        seen.iter()
            .any(|l| l.contains("prometheus-node-exporter") && l.contains("--web.config.file")),
        "the ps watch saw no secured node-exporter (it saw {} lines)",
        seen.len()
    );
    let key_line =
        std::fs::read_to_string(state.join("hosts/node1/pki/monitoring/node-exporter.key"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
    let hash = std::fs::read_to_string(state.join("monitor-auth/web-password.bcrypt")).unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    for (what, secret) in [
        ("the password", password.as_str()),
        ("a private key line", key_line.as_str()),
        ("the bcrypt hash", hash.trim()),
        ("a PEM key", "PRIVATE KEY"),
    ] {
        assert!(
            !output.contains(secret),
            "{what} in the deploy's -vvv output"
        );
        let shown: Vec<&String> = seen.iter().filter(|l| l.contains(secret)).collect();
        assert!(shown.is_empty(), "{what} on a command line: {shown:?}");
    }

    // 2. Prometheus on node3, asked directly over HTTPS with the login.
    let node3 = sb.node("node3").unwrap().address.to_string();
    let node1 = sb.node("node1").unwrap().address.to_string();
    let prom = format!("{node3}:9090");
    let am = format!("{node3}:9093");
    let mut seen_targets = Vec::new();
    let ready = wait_until(Duration::from_secs(120), || {
        seen_targets = targets(&creds, &prom);
        up_hosts(&seen_targets, "node") == NODES && up_hosts(&seen_targets, "etcd") == NODES
    });
    assert!(
        ready,
        "targets through {prom}/api/v1/targets: {seen_targets:?}"
    );
    // Only what was installed is up: no apiserver runs.
    assert!(
        up_hosts(&seen_targets, "apiserver").is_empty(),
        "{seen_targets:?}"
    );

    // 3. What a stranger gets. Plain HTTP: no metrics, no API anywhere.
    for url in [
        format!("http://{node1}:9100/metrics"),
        format!("http://{prom}/api/v1/targets"),
        format!("http://{am}/api/v2/status"),
    ] {
        let (code, body) = curl(&url, &creds.ca, Some(&creds.user), None);
        assert_ne!(code, "200", "{url} answered plain HTTP: {body}");
        assert!(!body.contains("node_cpu_seconds_total"), "{url}: {body}");
    }
    // node-exporter: no client certificate, or one of another CA: refused at the handshake.
    let stranger = work.path().join("stranger");
    make_ca(&stranger, "ca", "stranger-ca");
    make_leaf(&stranger, "ca", "client", "clusterkit-prometheus", &[], 30);
    let node_url = format!("https://{node1}:9100/metrics");
    let (code, why) = curl(&node_url, &creds.ca, None, None);
    assert_eq!(code, "000", "no client certificate: {why}");
    let (code, why) = curl(
        &node_url,
        &creds.ca,
        None,
        Some((&stranger.join("client.crt"), &stranger.join("client.key"))),
    );
    assert_eq!(code, "000", "a certificate of another CA: {why}");
    let (code, body) = curl(&node_url, &creds.ca, None, creds.client());
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("node_cpu_seconds_total"));
    // Prometheus and Alertmanager: 401 without the login, 200 with it.
    for url in [
        format!("https://{prom}/api/v1/targets"),
        format!("https://{am}/api/v2/status"),
    ] {
        assert_eq!(curl(&url, &creds.ca, None, None).0, "401", "{url}");
        let wrong = format!("admin:{password}x");
        assert_eq!(curl(&url, &creds.ca, Some(&wrong), None).0, "401", "{url}");
        assert_eq!(
            curl(&url, &creds.ca, Some(&creds.user), None).0,
            "200",
            "{url}"
        );
    }
    // amtool: silencing needs the login.
    let denied = amtool_silence(work.path(), &am, &creds, false);
    assert!(
        !denied.status.success(),
        "silence added without credentials"
    );
    let added = amtool_silence(work.path(), &am, &creds, true);
    assert!(
        added.status.success(),
        "amtool with the login: {}",
        String::from_utf8_lossy(&added.stderr)
    );

    // 4. The keys on the nodes: private, readable by the daemons' user only.
    let key = ssh(
        &sb,
        "node3",
        "stat -c '%a %U' /etc/prometheus/clusterkit/tls/etcd-metrics-client.key /etc/prometheus/clusterkit/tls/prometheus.key /etc/prometheus/clusterkit/web/prometheus.yml",
    );
    assert_eq!(key.lines().collect::<Vec<_>>(), ["600 prometheus"; 3]);
    let key = ssh(
        &sb,
        "node1",
        "stat -c '%a %U' /etc/prometheus/clusterkit/tls/node-exporter.key",
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

    // 5. A rerun changes nothing and restarts nothing (the bcrypt hash is kept).
    let daemons = [
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
    ];
    let before = pids(&sb, "node3", &daemons);
    let before1 = pids(&sb, "node1", &["prometheus-node-exporter"]);
    let second = json_of(&mut ck(&cfg, &deploy));
    assert_eq!(changed_total(&second), 0, "rerun changed: {second:#}");
    assert_eq!(pids(&sb, "node3", &daemons), before);
    assert_eq!(pids(&sb, "node1", &["prometheus-node-exporter"]), before1);

    // 6. Requiring what is not installed fails, naming the down targets.
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
    let cp = format!("apiserver/{node1}:6443");
    assert!(err.contains(&cp) && err.contains("down"), "{err}");

    // 7. The exporter reads the certificates live from the nodes: node2's etcd serving
    //    certificate, with the expiry openssl reads on node2 itself; node1's node-exporter
    //    certificate too. It serves HTTPS to a client of the monitoring CA only.
    let port = common::free_port();
    let exporter_addr = format!("127.0.0.1:{port}");
    let mut c = ck(&cfg, &["monitor", "serve", "--listen", &exporter_addr]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let exporter = Exporter(c.spawn().expect("start monitor serve"));
    let exporter_url = format!("https://{exporter_addr}/metrics");
    let wanted = "clusterkit_certificate_not_after_timestamp_seconds{host=\"node2\",path=\"/etc/kubernetes/pki/etcd/server.crt\"";
    let mut metrics = String::new();
    let found = wait_until(Duration::from_secs(90), || {
        let (code, body) = curl(&exporter_url, &creds.ca, None, creds.client());
        metrics = body;
        code == "200" && metrics.contains(wanted)
    });
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
    assert!(
        metrics.contains(
            "clusterkit_certificate_expiry_seconds{host=\"node1\",path=\"/etc/prometheus/clusterkit/tls/node-exporter.crt\""
        ),
        "node-exporter's certificate is not watched:\n{metrics}"
    );
    assert_eq!(
        curl(
            &format!("http://{exporter_addr}/metrics"),
            &creds.ca,
            None,
            None
        )
        .0,
        "000"
    );
    assert_eq!(curl(&exporter_url, &creds.ca, None, None).0, "000");

    // 8. check-expiration shows the monitoring certificates; renew serves new serials, the
    //    targets stay up.
    let out = run_ok(&mut ck(&cfg, &["-o", "json", "certs", "check-expiration"]));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows["certificates"].as_array().unwrap();
    let status = |host: &str, name: &str| {
        rows.iter()
            .find(|r| r["host"] == host && r["name"] == name)
            .map(|r| r["status"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        status("node1", "monitoring-node-exporter").as_deref(),
        Some("ok"),
        "{rows:#?}"
    );
    assert_eq!(
        status("node3", "monitoring-prometheus").as_deref(),
        Some("ok")
    );
    assert_eq!(status("local", "monitoring-ca").as_deref(), Some("ok"));
    let node1_cert = state.join("hosts/node1/pki/monitoring/node-exporter.crt");
    let old_node1 = served_serial(&format!("{node1}:9100"), &creds);
    assert_eq!(old_node1, file_serial(&node1_cert));
    let old_exporter = served_serial(&exporter_addr, &creds);
    assert!(old_exporter.starts_with("serial="), "{old_exporter}");
    let np = pids(&sb, "node3", &["prometheus"]);
    run_ok(&mut ck(
        &cfg,
        &[
            "certs",
            "renew",
            "monitoring-node-exporter",
            "monitoring-prometheus",
            "monitoring-exporter",
        ],
    ));
    let new_node1 = file_serial(&node1_cert);
    assert_ne!(new_node1, old_node1);
    assert_eq!(served_serial(&format!("{node1}:9100"), &creds), new_node1);
    assert_ne!(
        pids(&sb, "node3", &["prometheus"]),
        np,
        "Prometheus not restarted"
    );
    let new_exporter = served_serial(&exporter_addr, &creds);
    assert_eq!(
        new_exporter,
        file_serial(&state.join("pki/monitoring/exporter.crt"))
    );
    assert_ne!(
        new_exporter, old_exporter,
        "the exporter still serves the old certificate"
    );
    drop(exporter);
    let still = wait_until(Duration::from_secs(90), || {
        seen_targets = targets(&creds, &prom);
        up_hosts(&seen_targets, "node") == NODES && up_hosts(&seen_targets, "etcd") == NODES
    });
    assert!(still, "targets after the renewal: {seen_targets:?}");
}

/// Stops the exporter started by the test (by its PID) even when an assertion fails.
struct Exporter(std::process::Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
