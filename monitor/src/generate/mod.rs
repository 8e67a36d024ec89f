//! `clusterkit monitor config`: every file Prometheus, Alertmanager and Grafana need for this
//! cluster, written into one directory:
//!
//! ```text
//! prometheus.yml                 scrape jobs, rule files, Alertmanager
//! targets/<job>.json             file_sd targets (rewritten when hosts change)
//! rules/clusterkit-alerts.yml    alert rules
//! tls/                           CA and client certificates copied from the cluster's PKI (keys 0600)
//! secrets/                       passwords read from environment variables (0600)
//! web/<daemon>.yml               --web.config.file of node-exporter, Prometheus, Alertmanager;
//!                                alertmanager-cluster.yml: Alertmanager's gossip TLS
//! alertmanager.yml               routes, inhibition, receivers (0600: may hold a WeCom secret)
//! grafana/provisioning/…         datasource and dashboard provider
//! grafana/dashboards/*.json      dashboards
//! ```
//!
//! Files whose content did not change are left alone, so a second run reports nothing changed
//! and Prometheus only reloads what differs.
//!
//! With `monitor.tls` (the default) this first makes sure the monitoring CA and its
//! certificates exist in the state directory ([`crate::security`]) and copies into `tls/` the
//! monitoring CA and the client pairs Prometheus uses; each host's own serving pair
//! (node-exporter, Prometheus, Alertmanager) stays in `<state>/hosts/<host>/pki/monitoring/`,
//! where `monitor deploy` takes it from.

pub mod alertmanager;
pub mod grafana;
pub mod prometheus;
pub mod rules;
pub mod tuning;
pub mod web;

pub use tuning::Tuning;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::atomic::write_atomic;
use crate::error::{MonitorError, Result};
use crate::security::{self, MonitoringPki, WebLogin};
use crate::topology::{endpoint, ClientCert, Topology};

use prometheus::files;

/// What one generation run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written because they were new or different (relative paths).
    pub changed: Vec<String>,
    /// Files already up to date.
    pub unchanged: Vec<String>,
    /// Things an operator should know (e.g. a certificate not issued yet).
    pub warnings: Vec<String>,
}

/// How a generation run behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the generated directory will live when it is used (for the few absolute paths
    /// that Alertmanager and Grafana need). Defaults to the output directory itself.
    pub install_dir: Option<PathBuf>,
    /// Command-line settings of the generated files.
    pub tuning: Tuning,
}

/// Renders a value as YAML.
pub fn to_yaml(file: &str, value: &Value) -> Result<String> {
    serde_saphyr::to_string(value).map_err(|e| MonitorError::render(file, e))
}

fn to_json(file: &str, value: &Value) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| MonitorError::render(file, e))
}

/// Writes `content` to `dir/rel` with `mode` unless it already has exactly that content and
/// mode. Private files are created with their final mode (never briefly world-readable).
fn write_file(dir: &Path, rel: &str, content: &[u8], mode: u32, report: &mut Report) -> Result<()> {
    let path = dir.join(rel);
    if let Ok(existing) = std::fs::read(&path) {
        let same_mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777 == mode)
            .unwrap_or(false);
        if existing == content && same_mode {
            report.unchanged.push(rel.to_string());
            return Ok(());
        }
    }
    write_atomic(&path, content, mode)?;
    report.changed.push(rel.to_string());
    Ok(())
}

/// Copies a CA and a client certificate with its key (0600) to `[ca, cert, key]` in the output
/// directory, as [`copy_pki`] does.
fn copy_client(
    dir: &Path,
    [ca_rel, cert_rel, key_rel]: [&str; 3],
    ca: &Path,
    client: &ClientCert,
    report: &mut Report,
) -> Result<()> {
    copy_pki(dir, ca_rel, ca, 0o644, report)?;
    copy_pki(dir, cert_rel, &client.cert, 0o644, report)?;
    copy_pki(dir, key_rel, &client.key, 0o600, report)
}

/// Copies a PKI file into the output directory; a missing source becomes a warning (the PKI
/// phase may not have run yet), any other failure an error.
fn copy_pki(dir: &Path, rel: &str, source: &Path, mode: u32, report: &mut Report) -> Result<()> {
    match std::fs::read(source) {
        Ok(bytes) => write_file(dir, rel, &bytes, mode, report),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.warnings.push(format!(
                "{} does not exist yet (run `clusterkit install --phase pki`); {rel} was not written",
                source.display()
            ));
            Ok(())
        }
        Err(e) => Err(MonitorError::io(source, e)),
    }
}

/// Generates everything into `out_dir`.
pub fn generate(topology: &Topology, out_dir: &Path, options: &Options) -> Result<Report> {
    options.tuning.check(topology)?;
    let tuning = &options.tuning;
    let mut report = Report::default();
    std::fs::create_dir_all(out_dir).map_err(|e| MonitorError::io(out_dir, e))?;
    let install_dir = match &options.install_dir {
        Some(d) => d.clone(),
        None => std::fs::canonicalize(out_dir).map_err(|e| MonitorError::io(out_dir, e))?,
    };

    let login = if topology.monitor().tls {
        security::ensure_pki(topology)?;
        Some(WebLogin::load_or_create(topology)?)
    } else {
        None
    };

    // Prometheus.
    let jobs = prometheus::jobs(topology);
    for job in &jobs {
        let rel = format!("targets/{}.json", job.name);
        let text = to_json(&rel, &prometheus::targets_file(job))?;
        write_file(out_dir, &rel, text.as_bytes(), 0o644, &mut report)?;
    }
    let prom = prometheus::config(
        topology,
        &jobs,
        login.as_ref().map(|l| l.username.as_str()),
        tuning,
    );
    write_file(
        out_dir,
        "prometheus.yml",
        to_yaml("prometheus.yml", &prom)?.as_bytes(),
        0o644,
        &mut report,
    )?;
    let rules = rules::rule_file(topology, &tuning.alert_for);
    write_file(
        out_dir,
        files::RULES,
        to_yaml(files::RULES, &rules)?.as_bytes(),
        0o644,
        &mut report,
    )?;

    // Certificates the scrape jobs use.
    let pki = topology.pki();
    let names: Vec<&str> = jobs.iter().map(|j| j.name).collect();
    if names.contains(&"etcd") {
        let names = [
            files::ETCD_CA,
            files::ETCD_CLIENT_CERT,
            files::ETCD_CLIENT_KEY,
        ];
        let client = pki.etcd_metrics_client();
        copy_client(out_dir, names, &pki.etcd_ca(), &client, &mut report)?;
    }
    if names.iter().any(|n| {
        [
            "apiserver",
            "kubelet",
            "kube-scheduler",
            "kube-controller-manager",
        ]
        .contains(n)
    }) {
        let names = [
            files::KUBE_CA,
            files::KUBE_CLIENT_CERT,
            files::KUBE_CLIENT_KEY,
        ];
        copy_client(out_dir, names, &pki.ca(), &pki.kube_client(), &mut report)?;
    }
    if let Some(login) = &login {
        let mon = MonitoringPki::of(topology);
        copy_pki(out_dir, files::MONITORING_CA, &mon.ca, 0o644, &mut report)?;
        for (base, (cert, key)) in [
            (
                clusterkit_installer::pki::monitoring::PROMETHEUS_CLIENT,
                &mon.prometheus_client,
            ),
            (
                clusterkit_installer::pki::monitoring::ALERTMANAGER_CLIENT,
                &mon.alertmanager_client,
            ),
        ] {
            let (c, k) = files::pair(base);
            copy_pki(out_dir, &c, cert, 0o644, &mut report)?;
            copy_pki(out_dir, &k, key, 0o600, &mut report)?;
        }
        write_file(
            out_dir,
            files::WEB_PASSWORD,
            login.password().as_bytes(),
            0o600,
            &mut report,
        )?;
        let node = web::render(web::NODE_EXPORTER, &web::node_exporter_context())?;
        write_file(
            out_dir,
            web::NODE_EXPORTER,
            node.as_bytes(),
            0o644,
            &mut report,
        )?;
        let gossip = web::render_template(
            web::CLUSTER_TEMPLATE.1,
            web::ALERTMANAGER_CLUSTER,
            &web::alertmanager_cluster_context(&install_dir),
        )?;
        write_file(
            out_dir,
            web::ALERTMANAGER_CLUSTER,
            gossip.as_bytes(),
            0o644,
            &mut report,
        )?;
        // The bcrypt hash is no password, but it allows guessing one offline: private.
        for (rel, ctx) in [
            (web::PROMETHEUS, web::prometheus_context(login)),
            (web::ALERTMANAGER, web::alertmanager_context(login)),
        ] {
            let text = web::render(rel, &ctx)?;
            write_file(out_dir, rel, text.as_bytes(), 0o600, &mut report)?;
        }
    }
    if let Some(auth) = &topology.monitor().basic_auth {
        let password = auth.password.read()?;
        write_file(
            out_dir,
            files::EXPORTER_PASSWORD,
            password.expose().as_bytes(),
            0o600,
            &mut report,
        )?;
    }

    // Alertmanager.
    let (am, secrets) = alertmanager::config(topology, &install_dir.join("secrets"), tuning)?;
    for (rel, content) in &secrets {
        write_file(
            out_dir,
            rel,
            content.expose().as_bytes(),
            0o600,
            &mut report,
        )?;
    }
    write_file(
        out_dir,
        "alertmanager.yml",
        to_yaml("alertmanager.yml", &am)?.as_bytes(),
        0o600,
        &mut report,
    )?;

    // Grafana.
    // The first monitor host's Prometheus.
    let prometheus_port = topology.monitor().ports.prometheus;
    let prometheus_url = format!(
        "{}://{}",
        if login.is_some() { "https" } else { "http" },
        topology
            .monitor_hosts()
            .first()
            .map(|h| endpoint(h, prometheus_port))
            .unwrap_or_else(|| format!("127.0.0.1:{prometheus_port}"))
    );
    let rel = "grafana/provisioning/datasources/clusterkit.yaml";
    let datasource = match &login {
        Some(login) => {
            let ca = std::fs::read_to_string(&MonitoringPki::of(topology).ca)
                .map_err(|e| MonitorError::io(MonitoringPki::of(topology).ca, e))?;
            grafana::datasource(&prometheus_url, Some((login, &ca)))
        }
        None => grafana::datasource(&prometheus_url, None),
    };
    // With the login in it, only Grafana may read it.
    let mode = if login.is_some() { 0o600 } else { 0o644 };
    write_file(
        out_dir,
        rel,
        to_yaml(rel, &datasource)?.as_bytes(),
        mode,
        &mut report,
    )?;
    let dashboards_dir = install_dir.join("grafana/dashboards");
    let rel = "grafana/provisioning/dashboards/clusterkit.yaml";
    let provider = grafana::dashboard_provider(&dashboards_dir.to_string_lossy());
    write_file(
        out_dir,
        rel,
        to_yaml(rel, &provider)?.as_bytes(),
        0o644,
        &mut report,
    )?;
    for d in grafana::dashboards() {
        let rel = format!("grafana/dashboards/{}.json", d.uid);
        write_file(
            out_dir,
            &rel,
            to_json(&rel, &grafana::dashboard_json(&d))?.as_bytes(),
            0o644,
            &mut report,
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::PromDuration;

    const YAML: &str = r#"
name: demo
kubernetes: { version: v1.26.3 }
hosts:
  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: w1, address: 10.0.0.2, roles: [worker], auth: { agent: true } }
  - { name: m1, address: 10.0.0.3, roles: [monitor], auth: { agent: true } }
monitor:
  listen: "0.0.0.0:9842"
  basic_auth: { username: prom, password_env: CK_TEST_EXPORTER_PW }
  alertmanager:
    receivers:
      - { name: ops, webhook: { url: "http://127.0.0.1:9999/hook" } }
      - { name: mail, email: { to: a@example.com, from: ck@example.com, smarthost: "smtp.example.com:587", auth_username: ck, auth_password_env: CK_TEST_SMTP_PW } }
    critical_receiver: mail
    warning_receiver: ops
"#;

    #[test]
    fn writes_everything_once_with_private_modes() {
        std::env::set_var("CK_TEST_EXPORTER_PW", "exporter-secret");
        std::env::set_var("CK_TEST_SMTP_PW", "smtp-secret");
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cluster.yaml");
        std::fs::write(&cfg, YAML).unwrap();
        let t = Topology::load(&cfg).unwrap();
        let out = dir.path().join("out");
        let first = generate(&t, &out, &Options::default()).unwrap();
        assert!(first.changed.contains(&"prometheus.yml".to_string()));
        assert!(
            first.warnings.iter().any(|w| w.contains("pki")),
            "{:?}",
            first.warnings
        );
        let mode = |rel: &str| {
            std::fs::metadata(out.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("alertmanager.yml"), 0o600);
        assert_eq!(mode("secrets/mail-smtp-password"), 0o600);
        assert_eq!(mode(files::EXPORTER_PASSWORD), 0o600);
        let am = std::fs::read_to_string(out.join("alertmanager.yml")).unwrap();
        assert!(!am.contains("smtp-secret"), "password inlined:\n{am}");
        let targets = std::fs::read_to_string(out.join("targets/kubelet.json")).unwrap();
        assert!(targets.contains("10.0.0.1:10250") && targets.contains("10.0.0.2:10250"));
        assert!(
            !targets.contains("10.0.0.3"),
            "monitor-only host has no kubelet: {targets}"
        );
        let second = generate(&t, &out, &Options::default()).unwrap();
        assert!(
            second.changed.is_empty(),
            "second run changed {:?}",
            second.changed
        );
    }

    #[test]
    fn tuning_is_checked_and_applied() {
        let t = Topology::from_yaml(Path::new("/etc/ck/cluster.yaml"), YAML).unwrap();
        let mut tuning = Tuning::default();
        tuning
            .alert_for
            .insert("NoSuchAlert".into(), PromDuration::secs(1));
        let err = tuning.check(&t).unwrap_err();
        assert!(err.to_string().contains("NoSuchAlert"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            install_dir: None,
            tuning: tuning.clone(),
        };
        let err = generate(&t, dir.path(), &options).unwrap_err();
        assert!(err.to_string().contains("NoSuchAlert"), "{err}");
        let mut tuning = Tuning::default();
        tuning
            .alert_for
            .insert("EtcdMembersDown".into(), PromDuration::secs(2));
        tuning.scrape_interval = Some(PromDuration::secs(1));
        tuning.check(&t).unwrap();
        assert_eq!(tuning.scrape_interval(&t).to_string(), "1s");
        assert_eq!(tuning.evaluation_interval(&t).to_string(), "15s");
        let jobs = prometheus::jobs(&t);
        let prom = prometheus::config(&t, &jobs, None, &tuning);
        assert_eq!(prom["global"]["scrape_interval"], "1s");
        let rules = rules::rule_file(&t, &tuning.alert_for);
        let down = rules["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == "EtcdMembersDown")
            .unwrap();
        assert_eq!(down["for"], "2s");
    }
}
