//! End to end, all real: etcd with TLS, node-exporter, `clusterkit monitor serve`, Prometheus and
//! Alertmanager with the configs `clusterkit monitor config` generated, and a webhook receiver
//! run by this test. The stack is the secured default: node-exporter and the exporter serve
//! HTTPS and require Prometheus's client certificate of the monitoring CA, Prometheus and
//! Alertmanager serve HTTPS with the generated web login (every daemon with the generated
//! `--web.config.file`). Every target the test runs is up over TLS, every dashboard query
//! returns data; stopping etcd fires EtcdMembersDown, which Alertmanager (reached by Prometheus
//! over HTTPS with the login) delivers to the webhook.
//!
//! Everything listens on a loopback address of its own (127.88.x.y, derived from the PID), so
//! the default ports (2379, 9100, 9093, 9842) cannot collide with anything else on the machine.
//! (`profile: sandbox` is what lets a loopback address be a host's address.)

mod common;
mod monitor_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clusterkit, free_port, run_ok, wait_until, Child};
use monitor_support::*;

/// Starts a process with its output in `log`, killed by PID on drop.
fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    Child(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

/// How many glibc malloc arenas besides the main one process `pid` has: each is an anonymous
/// 64 MiB reservation aligned to 64 MiB, its used part `rw-p` and the rest `---p`.
fn malloc_arenas(pid: u32) -> usize {
    const HEAP_MAX: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let rows: Vec<(u64, u64, &str)> = maps
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-')?;
            let anonymous = f.len() == 5;
            let range = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            anonymous.then_some((range.0, range.1, f[1]))
        })
        .collect();
    rows.iter()
        .enumerate()
        .filter(|&(i, &(start, end, perms))| {
            let reserved_end = match rows.get(i + 1) {
                Some(&(next, next_end, "---p")) if next == end => next_end,
                _ => end,
            };
            perms == "rw-p" && start % HEAP_MAX == 0 && reserved_end - start == HEAP_MAX
        })
        .count()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How the test reaches Prometheus: HTTPS verified against the monitoring CA, with the
/// generated login (given to curl on stdin, never on its command line).
struct Api {
    ca: std::path::PathBuf,
    user: String,
}

impl Api {
    /// GET `https://{addr}{path}`; the body of a 200 answer.
    fn get(&self, addr: &str, path: &str) -> Option<String> {
        let (code, body) = curl(
            &format!("https://{addr}{path}"),
            &self.ca,
            Some(&self.user),
            None,
        );
        (code == "200").then_some(body)
    }
}

fn prom_query(api: &Api, prom: &str, expr: &str) -> Option<Vec<serde_json::Value>> {
    let body = api.get(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array().cloned()
}

/// A webhook receiver: records every POST body.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, st) = (bodies.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        if let Some(body) = read_request(&mut conn) {
                            b.lock().unwrap().push(body);
                        }
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Hook { port, bodies, stop }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < pos + 4 + len {
                let n = conn.read(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(String::from_utf8_lossy(&buf[pos + 4..]).into_owned());
        }
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in [
        "etcd",
        "node-exporter",
        "exporter",
        "prometheus",
        "alertmanager",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("--- {name}.log (last lines) ---\n"));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn prometheus_scrapes_everything_and_a_stopped_etcd_member_pages_the_webhook() {
    let pid = std::process::id();
    let ip = format!("127.88.{}.{}", (pid >> 8) & 0xff, (pid & 0xfe) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = dir.join("e2e-state/pki");
    make_pki(&pki, &[&ip]);

    // etcd with client and peer TLS, client certificates required.
    let mut etcd_proc = Some(spawn(
        Command::new(etcd())
            .arg("--name")
            .arg("h1")
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .arg("--listen-client-urls")
            .arg(format!("https://{ip}:2379"))
            .arg("--advertise-client-urls")
            .arg(format!("https://{ip}:2379"))
            .arg("--listen-peer-urls")
            .arg(format!("https://{ip}:2380"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("https://{ip}:2380"))
            .arg("--initial-cluster")
            .arg(format!("h1=https://{ip}:2380"))
            .arg("--cert-file")
            .arg(pki.join("etcd/server.crt"))
            .arg("--key-file")
            .arg(pki.join("etcd/server.key"))
            .arg("--trusted-ca-file")
            .arg(pki.join("etcd/ca.crt"))
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(pki.join("etcd/server.crt"))
            .arg("--peer-key-file")
            .arg(pki.join("etcd/server.key"))
            .arg("--peer-trusted-ca-file")
            .arg(pki.join("etcd/ca.crt"))
            .arg("--peer-client-cert-auth"),
        &dir.join("etcd.log"),
    ));
    let hook = Hook::start();
    // The exporter also requires basic auth (on top of the client certificate).
    let password = format!("pw-{pid}-e2e");

    let cfg = dir.join("cluster.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"name: e2e
profile: sandbox
kubernetes: {{ version: v1.26.3 }}
hosts:
  - {{ name: h1, address: {ip}, roles: [control-plane, etcd, monitor], auth: {{ agent: true }} }}
backup: {{ store: "file://{backups}" }}
monitor:
  listen: "{ip}:9842"
  basic_auth: {{ username: prometheus, password_env: CK_E2E_EXPORTER_PASSWORD }}
  intervals: {{ etcd_secs: 1, control_plane_secs: 1, certificates_secs: 2, backups_secs: 1 }}
  alertmanager:
    receivers:
      - {{ name: test-hook, webhook: {{ url: "http://127.0.0.1:{hook}/alerts" }} }}
    critical_receiver: test-hook
"#,
            backups = dir.join("backups").display(),
            hook = hook.port
        ),
    )
    .unwrap();

    // etcd answers over TLS with the backup's client certificate; take a real backup so the
    // backup panels have something to show.
    let ready = wait_until(Duration::from_secs(20), || {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{ip}:2379"))
            .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
            .arg(format!(
                "--cert={}",
                pki.join("etcd/metrics-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                pki.join("etcd/metrics-client.key").display()
            ))
            .args(["endpoint", "health"])
            .output();
        matches!(out, Ok(o) if o.status.success())
    });
    assert!(ready, "etcd did not become healthy\n{}", logs(dir));
    run_ok(clusterkit().args(["backup", "etcd", "-f"]).arg(&cfg));

    let out = dir.join("monitoring");
    run_ok(
        clusterkit()
            .args(["monitor", "config", "-f"])
            .arg(&cfg)
            .arg("--dir")
            .arg(&out)
            .env("CK_E2E_EXPORTER_PASSWORD", &password)
            .args([
                "--scrape-interval",
                "1s",
                "--evaluation-interval",
                "1s",
                "--alert-for",
                "EtcdMembersDown=2s",
                "--group-wait",
                "1s",
                "--group-interval",
                "1s",
            ]),
    );
    // Each host's own serving pairs live in the state directory (`monitor deploy` copies them
    // to the hosts); here h1 is this machine, so they go next to the generated files, where
    // the generated web configs look for them.
    for what in ["node-exporter", "prometheus", "alertmanager"] {
        for ext in ["crt", "key"] {
            std::fs::copy(
                dir.join(format!("e2e-state/hosts/h1/pki/monitoring/{what}.{ext}")),
                out.join(format!("tls/{what}.{ext}")),
            )
            .unwrap();
        }
    }
    let web = |daemon: &str| {
        format!(
            "--web.config.file={}",
            out.join(format!("web/{daemon}.yml")).display()
        )
    };
    let _node_exporter = spawn(
        Command::new(node_exporter())
            .arg(format!("--web.listen-address={ip}:9100"))
            .arg(web("node-exporter"))
            .arg("--no-collector.systemd"),
        &dir.join("node-exporter.log"),
    );
    let ca = dir.join("e2e-state/pki/monitoring/ca.crt");
    let login = std::fs::read_to_string(dir.join("e2e-state/monitor-auth/web-password")).unwrap();
    let api = Api {
        ca: ca.clone(),
        user: format!("admin:{}", login.trim()),
    };
    let exporter = spawn(
        clusterkit()
            .args(["monitor", "serve", "-f"])
            .arg(&cfg)
            .env("CK_E2E_EXPORTER_PASSWORD", &password),
        &dir.join("exporter.log"),
    );
    let _alertmanager = spawn(
        alertmanager_cmd(&out, &dir.join("am-data"), &ip)
            .arg(web("alertmanager"))
            .arg("--cluster.listen-address="),
        &dir.join("alertmanager.log"),
    );
    let prom = format!("127.0.0.1:{}", free_port());
    let _prometheus = spawn(
        Command::new(prometheus())
            .arg(format!(
                "--config.file={}",
                out.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .arg(web("prometheus")),
        &dir.join("prometheus.log"),
    );

    // Every target this test runs is up; the control-plane targets (nothing runs there) are
    // down, and clusterkit's own probe says so too.
    let mut last = String::new();
    let all_up = wait_until(Duration::from_secs(40), || {
        let Some(body) = api.get(&prom, "/api/v1/targets") else {
            return false;
        };
        last = body.clone();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let targets = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let health = |job: &str| -> Vec<String> {
            targets
                .iter()
                .filter(|t| t["labels"]["job"] == job)
                .map(|t| t["health"].as_str().unwrap_or("").to_string())
                .collect()
        };
        // Scraped over HTTPS: the scrape URLs say so.
        let https = |job: &str| {
            targets
                .iter()
                .filter(|t| t["labels"]["job"] == job)
                .all(|t| {
                    t["scrapeUrl"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("https://")
                })
        };
        ["clusterkit", "node", "etcd"]
            .iter()
            .all(|j| health(j) == vec!["up"] && https(j))
            && [
                "apiserver",
                "kube-scheduler",
                "kube-controller-manager",
                "kubelet",
            ]
            .iter()
            .all(|j| health(j) == vec!["down"])
    });
    assert!(all_up, "targets not as expected:\n{last}\n{}", logs(dir));
    // The exporter's threads (runtime workers, blocking pool) have all allocated by now, and
    // share the main malloc arena: one arena each would be heap the exporter keeps.
    assert_eq!(
        malloc_arenas(exporter.0.id()),
        0,
        "monitor serve has per-thread malloc arenas"
    );
    // The exporter: no client certificate, no TLS; with Prometheus's certificate, still the
    // password (or a wrong one) decides; TLS is verified against the monitoring CA.
    let client_crt = dir.join("e2e-state/pki/monitoring/prometheus-client.crt");
    let client_key = dir.join("e2e-state/pki/monitoring/prometheus-client.key");
    let exporter_url = format!("https://{ip}:9842/metrics");
    let scrape = |user: Option<&str>, cert: bool| -> String {
        let pair = cert.then_some((client_crt.as_path(), client_key.as_path()));
        curl(&exporter_url, &ca, user, pair).0
    };
    assert_eq!(
        scrape(Some(&format!("prometheus:{password}")), false),
        "000"
    );
    assert_eq!(scrape(None, true), "401");
    assert_eq!(scrape(Some("prometheus:wrong"), true), "401");
    assert_eq!(scrape(Some(&format!("prometheus:{password}")), true), "200");

    let probe = prom_query(&api, &prom, "clusterkit_controlplane_up == 0").unwrap_or_default();
    assert_eq!(probe.len(), 3, "control-plane probe: {probe:?}");

    // Every dashboard query returns data.
    let (_, exprs) = dashboard_rules(&out.join("grafana/dashboards"));
    let mut empty: Vec<String> = Vec::new();
    let all_data = wait_until(Duration::from_secs(30), || {
        empty = exprs
            .iter()
            .filter(|e| {
                prom_query(&api, &prom, e)
                    .map(|r| r.is_empty())
                    .unwrap_or(true)
            })
            .cloned()
            .collect();
        empty.is_empty()
    });
    assert!(
        all_data,
        "dashboard queries without data: {empty:#?}\n{}",
        logs(dir)
    );

    // Stop the etcd member: the alert fires in Prometheus and reaches the webhook.
    assert!(hook
        .bodies
        .lock()
        .unwrap()
        .iter()
        .all(|b| !b.contains("EtcdMembersDown")));
    drop(etcd_proc.take());
    let fired = wait_until(Duration::from_secs(30), || {
        prom_query(
            &api,
            &prom,
            r#"ALERTS{alertname="EtcdMembersDown",alertstate="firing"}"#,
        )
        .map(|r| !r.is_empty())
        .unwrap_or(false)
    });
    assert!(fired, "EtcdMembersDown did not fire\n{}", logs(dir));
    let delivered = wait_until(Duration::from_secs(30), || {
        hook.bodies.lock().unwrap().iter().any(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
            v["alerts"].as_array().into_iter().flatten().any(|a| {
                a["labels"]["alertname"] == "EtcdMembersDown"
                    && a["status"] == "firing"
                    && a["labels"]["severity"] == "critical"
                    && a["labels"]["host"] == "h1"
            })
        })
    });
    assert!(
        delivered,
        "the webhook did not receive EtcdMembersDown; it got {:#?}\n{}",
        hook.bodies.lock().unwrap(),
        logs(dir)
    );
    let member_down = prom_query(&api, &prom, "clusterkit_etcd_member_up == 0").unwrap_or_default();
    assert_eq!(
        member_down.len(),
        1,
        "the exporter's own etcd probe should see the member down"
    );
}

/// Alertmanager with the generated `alertmanager.yml` in `out`, its data in `data`, its API
/// on `ip:9093`.
fn alertmanager_cmd(out: &Path, data: &Path, ip: &str) -> Command {
    let mut c = Command::new(alertmanager());
    c.arg(format!(
        "--config.file={}",
        out.join("alertmanager.yml").display()
    ))
    .arg(format!("--storage.path={}", data.display()))
    .arg(format!("--web.listen-address={ip}:9093"));
    c
}

/// Alertmanager's status through its API: the addresses of the peers it gossips with.
fn am_peers(status: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(status).unwrap_or_default();
    v["cluster"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["address"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Two monitor hosts' Alertmanagers (here: two local processes on addresses of their own, each
/// with the files `monitor config` generates for its host and that host's own certificate)
/// gossip over mutual TLS and find each other; a third Alertmanager that trusts the
/// monitoring CA but presents a certificate of another CA is not let in.
#[test]
fn alertmanagers_gossip_only_over_mutual_tls() {
    let pid = std::process::id();
    let ip = |last: u32| format!("127.87.{}.{last}", (pid >> 8) & 0xff);
    let slot = (pid & 0x3f) * 3;
    let (ip_a, ip_b, ip_c) = (ip(slot + 1), ip(slot + 2), ip(slot + 3));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = dir.join("cluster.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"name: gossip
profile: sandbox
kubernetes: {{ version: v1.26.3 }}
hosts:
  - {{ name: a, address: {ip_a}, roles: [control-plane, etcd, monitor], auth: {{ agent: true }} }}
  - {{ name: b, address: {ip_b}, roles: [monitor], auth: {{ agent: true }} }}
monitor:
  alertmanager:
    receivers: [ {{ name: hook, webhook: {{ url: "http://127.0.0.1:9/alerts" }} }} ]
"#
        ),
    )
    .unwrap();
    let mut procs = Vec::new();
    for (host, me, peer) in [("a", &ip_a, &ip_b), ("b", &ip_b, &ip_a)] {
        let out = dir.join(format!("am-{host}"));
        run_ok(
            clusterkit()
                .args(["monitor", "config", "-f"])
                .arg(&cfg)
                .arg("--dir")
                .arg(&out)
                .arg("--install-dir")
                .arg(&out),
        );
        for ext in ["crt", "key"] {
            std::fs::copy(
                dir.join(format!(
                    "gossip-state/hosts/{host}/pki/monitoring/alertmanager.{ext}"
                )),
                out.join(format!("tls/alertmanager.{ext}")),
            )
            .unwrap();
        }
        let gossip = std::fs::read_to_string(out.join("web/alertmanager-cluster.yml")).unwrap();
        assert!(gossip.contains("RequireAndVerifyClientCert"), "{gossip}");
        procs.push(spawn(
            alertmanager_cmd(&out, &dir.join(format!("data-{host}")), me)
                .arg(format!(
                    "--web.config.file={}",
                    out.join("web/alertmanager.yml").display()
                ))
                .arg(format!("--cluster.listen-address={me}:9094"))
                .arg(format!("--cluster.peer={peer}:9094"))
                .arg(format!(
                    "--cluster.tls-config={}",
                    out.join("web/alertmanager-cluster.yml").display()
                )),
            &dir.join(format!("alertmanager-{host}.log")),
        ));
    }
    // A stranger: trusts the monitoring CA (so it accepts a's certificate and only a's check of
    // the stranger's own can keep it out), but presents a certificate of another CA.
    let monitoring_ca = dir.join("gossip-state/pki/monitoring/ca.crt");
    let stranger = dir.join("stranger");
    make_ca(&stranger, "ca", "stranger-ca");
    make_leaf(&stranger, "ca", "am", "c", &[format!("IP:{ip_c}")], 30);
    let stranger_cfg = stranger.join("cluster-tls.yml");
    std::fs::write(
        &stranger_cfg,
        format!(
            "tls_server_config:\n  cert_file: {s}/am.crt\n  key_file: {s}/am.key\ntls_client_config:\n  cert_file: {s}/am.crt\n  key_file: {s}/am.key\n  ca_file: {ca}\n",
            s = stranger.display(),
            ca = monitoring_ca.display()
        ),
    )
    .unwrap();
    procs.push(spawn(
        alertmanager_cmd(&dir.join("am-a"), &dir.join("data-c"), &ip_c)
            .arg(format!("--cluster.listen-address={ip_c}:9094"))
            .arg(format!("--cluster.peer={ip_a}:9094"))
            .arg(format!("--cluster.tls-config={}", stranger_cfg.display())),
        &dir.join("alertmanager-c.log"),
    ));

    let login =
        std::fs::read_to_string(dir.join("gossip-state/monitor-auth/web-password")).unwrap();
    let api = Api {
        ca: monitoring_ca.clone(),
        user: format!("admin:{}", login.trim()),
    };
    let am_log = || {
        ["a", "b", "c"]
            .iter()
            .map(|h| {
                std::fs::read_to_string(dir.join(format!("alertmanager-{h}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let status = |ip: &str| {
        am_peers(
            &api.get(&format!("{ip}:9093"), "/api/v2/status")
                .unwrap_or_default(),
        )
    };
    let (mut peers_a, mut peers_b) = (Vec::new(), Vec::new());
    let joined = wait_until(Duration::from_secs(60), || {
        peers_a = status(&ip_a);
        peers_b = status(&ip_b);
        peers_a.len() == 2 && peers_b.len() == 2
    });
    assert!(
        joined,
        "a sees {peers_a:?}, b sees {peers_b:?}\n{}",
        am_log()
    );
    // The stranger keeps trying; it stays alone and a still sees only b.
    std::thread::sleep(Duration::from_secs(10));
    let (code, status_c) = curl(
        &format!("http://{ip_c}:9093/api/v2/status"),
        &api.ca,
        None,
        None,
    );
    assert_eq!(code, "200", "{status_c}");
    assert_eq!(
        am_peers(&status_c).len(),
        1,
        "the stranger joined: {status_c}"
    );
    let peers_a = status(&ip_a);
    assert_eq!(peers_a.len(), 2, "{peers_a:?}\n{}", am_log());
    assert!(!peers_a.iter().any(|p| p.contains(&ip_c)), "{peers_a:?}");
    drop(procs);
}
