//! `clusterkit monitor deploy`: node-exporter on every host, Prometheus and Alertmanager on the
//! `monitor` hosts (the first host when none has that role), configured with what
//! `clusterkit monitor config` generates, then a check through Prometheus's HTTP API that the
//! scrape targets are up.
//!
//! How: the configs are generated locally into `<state>/monitor/` (with
//! `/etc/prometheus/clusterkit` as their install directory), then the embedded playbook
//! `playbooks/monitor.yaml` installs the Debian packages (from the offline bundle when
//! cluster.yaml has one), copies the generated files (private ones — client keys, receiver
//! secrets, alertmanager.yml — 0600 and owned by `prometheus`, the user both daemons run as),
//! writes the daemons' arguments into `/etc/default/<unit>` (Debian's units read `$ARGS` from
//! there) and restarts a daemon only when its arguments or configuration changed. A rerun on
//! an unchanged cluster changes nothing.
//!
//! Limits:
//! - Grafana is installed only when the offline bundle carries a `grafana` package: Debian 12
//!   has none (Grafana's own apt repository does). Without it the provisioning files are still
//!   generated next to the dashboards, for an existing Grafana.
//! - The clusterkit exporter itself (`monitor serve`) is not deployed: it needs the cluster's
//!   state directory and SSH access to the nodes, so it runs where clusterkit runs. Its job is
//!   therefore not among the jobs checked by default.
//! - Prometheus is queried from where clusterkit runs, at `<monitor host>:<ports.prometheus>`
//!   (with `monitor.tls`: over HTTPS verified against the monitoring CA, with the web login).
//!
//! Security (`monitor.tls`, on by default): every daemon gets `--web.config.file` (generated
//! under `web/`), each host its own serving pair of the monitoring CA (`tls/`, keys 0600
//! owned by `prometheus`), node-exporter requires Prometheus's client certificate, Prometheus
//! and Alertmanager require the web login. With `monitor.tls: false` they listen on every
//! address without TLS or authentication (Debian's defaults): a closed lab network only.
//! - Files a previous deploy wrote and this one no longer generates are left in place
//!   (Prometheus only reads the files prometheus.yml names).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clusterkit_core::inventory;
use clusterkit_core::layout::StateLayout;
use clusterkit_core::playbook::{self, Library, RunOptions, RunReport};
use clusterkit_installer::phases;
use clusterkit_installer::pki::{self, monitoring};

use clusterkit_core::config::Role;
use serde_json::{json, Value};

use crate::error::{ApiError, HttpError, MonitorError, Result};
use crate::exporter::collectors::controlplane::http1_get;
use crate::generate::{self, prometheus::files};
use crate::topology::{endpoint, Topology};

/// Where the generated configuration lives on a monitor host (node-exporter's files on every
/// host).
pub const CONFIG_DIR: &str = monitoring::DIR;

/// Where Debian's Grafana package reads provisioning files.
pub const GRAFANA_PROVISIONING_DIR: &str = "/etc/grafana/provisioning";

/// The user Debian's prometheus, prometheus-alertmanager and node-exporter units run as.
pub const DAEMON_USER: &str = monitoring::DAEMON_USER;

/// The user Debian's (Grafana's) grafana-server runs as.
const GRAFANA_USER: &str = "grafana";

/// The exporter's job: `deploy` does not run the exporter (see the module docs).
pub const EXPORTER_JOB: &str = "clusterkit";

/// The playbook, compiled in (an override directory may replace it).
pub const PLAYBOOK: (&str, &str) = (
    "playbooks/monitor.yaml",
    include_str!("../../playbooks/monitor.yaml"),
);

/// Role given to the monitor hosts when Grafana is installed too.
const GRAFANA_ROLE: &str = "monitor-grafana";

/// How a deploy behaves.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Report what would change; change nothing and query nothing.
    pub check: bool,
    /// Jobs whose every target must be up; `None`: every generated job but the exporter's.
    pub check_jobs: Option<Vec<String>>,
    /// How long to wait for the targets to come up.
    pub wait: Duration,
    /// Hosts worked on at once (default: ssh.concurrency).
    pub concurrency: Option<usize>,
    /// Override directories for the playbook.
    pub library: Vec<PathBuf>,
    /// Print task progress to stderr.
    pub progress: bool,
    pub verbose: bool,
    /// Command-line settings of the generated files.
    pub tuning: generate::Tuning,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            check: false,
            check_jobs: None,
            wait: Duration::from_secs(180),
            concurrency: None,
            library: Vec::new(),
            progress: false,
            verbose: false,
            tuning: generate::Tuning::default(),
        }
    }
}

/// One scrape target as Prometheus reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetHealth {
    /// Which Prometheus reported it (`host:port`).
    pub prometheus: String,
    pub job: String,
    pub instance: String,
    /// The `host` label (the cluster.yaml host name), when the target has one.
    pub host: Option<String>,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
    /// Whether this target had to be up for the deploy to succeed.
    pub required: bool,
}

/// What a deploy did.
#[derive(Debug, serde::Serialize)]
pub struct DeployReport {
    /// The playbook run, per host.
    pub run: RunReport,
    /// Generation warnings (e.g. a certificate not issued yet).
    pub warnings: Vec<String>,
    /// Prometheus URLs (one per monitor host).
    pub prometheus: Vec<String>,
    /// How to log in to Prometheus and Alertmanager (`monitor.tls`): the user and where the
    /// password is (never the password).
    pub login: Option<String>,
    /// Whether Grafana was part of the deploy.
    pub grafana: bool,
    /// Every active target at the end of the check (empty in check mode or after a failure).
    pub targets: Vec<TargetHealth>,
    /// The jobs that had to be up.
    pub checked_jobs: Vec<String>,
}

/// A generated file to copy: local source, remote destination, mode and owner.
#[derive(Debug, Clone, serde::Serialize)]
struct FileCopy {
    src: String,
    dest: String,
    mode: String,
    owner: String,
}

/// The generated files by what uses them (the playbook's loops).
#[derive(Debug, Default, serde::Serialize)]
struct FileSets {
    /// Every host's (node-exporter's web config).
    node_exporter: Vec<FileCopy>,
    targets: Vec<FileCopy>,
    prometheus: Vec<FileCopy>,
    alertmanager: Vec<FileCopy>,
    dashboards: Vec<FileCopy>,
    grafana: Vec<FileCopy>,
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf, u32)>) -> Result<()> {
    let here = dir.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .map_err(|e| MonitorError::io(&here, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| MonitorError::io(&here, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a generator's temporary file
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = e
            .metadata()
            .map_err(|err| MonitorError::io(e.path(), err))?;
        if meta.is_dir() {
            walk(dir, &child, out)?;
        } else {
            out.push((child, e.path(), meta.permissions().mode() & 0o777));
        }
    }
    Ok(())
}

/// Sorts the generated directory's files into the playbook's sets.
fn file_sets(stage: &Path, grafana: bool) -> Result<FileSets> {
    let mut all = Vec::new();
    walk(stage, "", &mut all)?;
    let mut sets = FileSets::default();
    for (rel, path, mode) in all {
        // Private files (keys, passwords) belong to the daemons' user, readable by it alone.
        let private = mode & 0o077 == 0;
        let copy_as = |dest: String, user: &str| FileCopy {
            src: path.to_string_lossy().into_owned(),
            dest,
            mode: format!("{mode:04o}"),
            owner: if private { user } else { "root" }.to_string(),
        };
        let copy = |dest: String| copy_as(dest, DAEMON_USER);
        let in_config = copy(format!("{CONFIG_DIR}/{rel}"));
        if monitoring::is_pki_file(&rel) {
            // Per host, from the state directory (host_files).
            continue;
        } else if rel == generate::web::NODE_EXPORTER {
            sets.node_exporter.push(in_config);
        } else if rel.starts_with("targets/") {
            sets.targets.push(in_config);
        } else if rel == "alertmanager.yml"
            || rel == generate::web::ALERTMANAGER
            || rel == generate::web::ALERTMANAGER_CLUSTER
            || (rel.starts_with("secrets/")
                && rel != files::EXPORTER_PASSWORD
                && rel != files::WEB_PASSWORD)
        {
            sets.alertmanager.push(in_config);
        } else if rel.starts_with("grafana/dashboards/") {
            sets.dashboards.push(in_config);
        } else if let Some(p) = rel.strip_prefix("grafana/provisioning/") {
            if grafana {
                sets.grafana.push(copy_as(
                    format!("{GRAFANA_PROVISIONING_DIR}/{p}"),
                    GRAFANA_USER,
                ));
            }
        } else {
            sets.prometheus.push(in_config);
        }
    }
    Ok(sets)
}

/// A host's monitoring PKI files (from the state directory), split by the daemon that reads
/// them: node-exporter's (the monitoring CA and its pair) and Prometheus's and Alertmanager's
/// (monitor hosts).
fn host_files(layout: &StateLayout, host: &str) -> (Vec<FileCopy>, Vec<FileCopy>) {
    let mut node = Vec::new();
    let mut server = Vec::new();
    for f in pki::monitoring_files(layout, host) {
        let dest = f.remote.to_string_lossy().into_owned();
        let copy = FileCopy {
            src: f.local.to_string_lossy().into_owned(),
            mode: format!("{:04o}", f.mode),
            owner: f.owner.unwrap_or("root").to_string(),
            dest: dest.clone(),
        };
        let rel = dest
            .strip_prefix(CONFIG_DIR)
            .unwrap_or(&dest)
            .trim_start_matches('/');
        if monitoring::units_reading(rel).contains(&monitoring::NODE_EXPORTER_UNIT) {
            node.push(copy);
        } else {
            server.push(copy);
        }
    }
    (node, server)
}

/// `ARGS="…"` for an /etc/default file (arguments never hold quotes or secrets).
fn defaults_file(what: &str, args: &[String]) -> String {
    format!(
        "# Written by `clusterkit monitor deploy`: the arguments of {what}.\nARGS=\"{}\"\n",
        args.join(" ")
    )
}

/// The `monitor` object the playbook sees.
fn playbook_vars(topology: &Topology, sets: &FileSets) -> Value {
    let m = topology.monitor();
    let ports = &m.ports;
    let web = |rel: &str| {
        m.tls
            .then(|| format!("--web.config.file={CONFIG_DIR}/{rel}"))
    };
    let mut node_exporter = vec![
        format!("--web.listen-address=:{}", ports.node_exporter),
        // NodeSystemdUnitFailed reads the systemd collector (off by default).
        "--collector.systemd".to_string(),
    ];
    node_exporter.extend(web(generate::web::NODE_EXPORTER));
    let mut prometheus = vec![
        format!("--config.file={CONFIG_DIR}/prometheus.yml"),
        format!("--web.listen-address=:{}", ports.prometheus),
        // Debian's default storage path, given explicitly since ARGS replaces the defaults.
        "--storage.tsdb.path=/var/lib/prometheus/metrics2/".to_string(),
    ];
    prometheus.extend(web(generate::web::PROMETHEUS));
    let monitors = topology.monitor_hosts();
    let mut alertmanager = vec![
        format!("--config.file={CONFIG_DIR}/alertmanager.yml"),
        format!("--web.listen-address=:{}", ports.alertmanager),
        "--storage.path=/var/lib/prometheus/alertmanager/".to_string(),
    ];
    alertmanager.extend(web(generate::web::ALERTMANAGER));
    if monitors.len() < 2 {
        // One Alertmanager: no gossip cluster to form (and no port 9094 opened).
        alertmanager.push("--cluster.listen-address=".to_string());
    } else {
        alertmanager.push("--cluster.listen-address=0.0.0.0:9094".to_string());
        for h in &monitors {
            alertmanager.push(format!("--cluster.peer={}", endpoint(h, 9094)));
        }
        if m.tls {
            alertmanager.push(format!(
                "--cluster.tls-config={CONFIG_DIR}/{}",
                generate::web::ALERTMANAGER_CLUSTER
            ));
        }
    }
    json!({
        "config_dir": CONFIG_DIR,
        "node_exporter_defaults": defaults_file(monitoring::NODE_EXPORTER_UNIT, &node_exporter),
        "prometheus_defaults": defaults_file(monitoring::PROMETHEUS_UNIT, &prometheus),
        "alertmanager_defaults": defaults_file(monitoring::ALERTMANAGER_UNIT, &alertmanager),
        "files": sets,
    })
}

/// The library: the installer's embedded playbooks and templates, this module's playbook, and
/// the override directories searched first.
pub fn library(overrides: &[PathBuf]) -> Library {
    let mut lib = phases::library(overrides);
    lib.embed(PLAYBOOK.0, PLAYBOOK.1);
    lib
}

/// What a failure of the installer's run preparation (the offline bundle) becomes.
fn install(what: &'static str) -> impl FnOnce(phases::InstallError) -> MonitorError {
    move |source| MonitorError::Install { what, source }
}

/// Whether the offline bundle carries Grafana.
fn bundle_has_grafana(bundle: Option<&playbook::modules::Bundle>) -> bool {
    bundle.is_some_and(|b| b.manifest.packages.iter().any(|p| p.name == "grafana"))
}

/// Runs the deploy; see the module docs. Host failures are in `report.run` (the caller turns
/// them into an error); targets that stay down are an error naming them.
pub async fn deploy(topology: &Topology, opts: &DeployOptions) -> Result<DeployReport> {
    let cluster = &topology.cluster;
    let m = topology.monitor();
    let playbook_error = |source| MonitorError::Playbook { source };

    // 1. The configs, generated where clusterkit runs.
    let layout = StateLayout::from_cluster(cluster);
    let stage = layout.monitor_dir();
    let generated = generate::generate(
        topology,
        &stage,
        &generate::Options {
            install_dir: Some(PathBuf::from(CONFIG_DIR)),
            tuning: opts.tuning.clone(),
        },
    )?;
    // The installer's engine options (offline bundle, concurrency); no journal: a deploy is
    // not an install, and opening the journal would empty what `install --resume` needs.
    let install_options = phases::InstallOptions {
        check: opts.check,
        concurrency: opts.concurrency,
        progress: opts.progress,
        verbose: opts.verbose,
        ..Default::default()
    };
    let run_options = RunOptions {
        journal_dir: None,
        ..phases::run_options(cluster, &install_options).map_err(install("the offline bundle"))?
    };
    let grafana = bundle_has_grafana(run_options.bundle.as_ref());
    let sets = file_sets(&stage, grafana)?;
    let api = ApiClient::for_topology(topology)?;
    let login = if m.tls {
        let l = crate::security::WebLogin::load_or_create(topology)?;
        Some(match (&l.password_file, &m.web_auth.password) {
            (Some(file), _) => format!("user {}, password in {}", l.username, file.display()),
            (None, Some(secret)) => format!("user {}, password from ${}", l.username, secret.var),
            (None, None) => format!("user {}", l.username),
        })
    } else {
        None
    };

    // 2. The playbook, on every host; the monitor hosts get the roles its plays select. The
    // context is the inventory's plus `monitor` (nothing of the installer's `install`).
    let library = library(&opts.library);
    let pb = playbook::load(&library, "monitor").map_err(playbook_error)?;
    let hosts: Vec<&clusterkit_core::config::Host> = cluster.hosts.iter().collect();
    let mut context = inventory::context(cluster);
    context["monitor"] = playbook_vars(topology, &sets);
    let (engine, mut targets) = inventory::engine(cluster, &hosts, context, run_options)
        .map_err(|source| MonitorError::Inventory { source })?;
    let monitor_names: BTreeSet<String> = topology
        .monitor_hosts()
        .iter()
        .map(|h| h.name.clone())
        .collect();
    let monitor_role = Role::Monitor.as_str();
    for t in &mut targets {
        if m.tls {
            let (node, server) = host_files(&layout, &t.name);
            t.vars["monitor_files"] = json!({ "node_exporter": node, "server": server });
        } else {
            t.vars["monitor_files"] = json!({ "node_exporter": [], "server": [] });
        }
        if monitor_names.contains(&t.name) {
            for r in [monitor_role, GRAFANA_ROLE] {
                if (r == monitor_role || grafana) && !t.roles.iter().any(|x| x == r) {
                    t.roles.push(r.to_string());
                }
            }
        }
    }
    engine.run(&pb, &targets).await;
    let run = engine.finish();

    let monitors: Vec<String> = topology
        .monitor_hosts()
        .iter()
        .map(|h| endpoint(h, m.ports.prometheus))
        .collect();
    let all_jobs: Vec<String> = generate::prometheus::jobs(topology)
        .iter()
        .map(|j| j.name.to_string())
        .collect();
    let checked_jobs: Vec<String> = match &opts.check_jobs {
        Some(jobs) => {
            for j in jobs {
                if !all_jobs.contains(j) {
                    return Err(MonitorError::UnknownJob {
                        job: j.clone(),
                        jobs: all_jobs,
                    });
                }
            }
            jobs.clone()
        }
        None => all_jobs
            .iter()
            .filter(|j| *j != EXPORTER_JOB)
            .cloned()
            .collect(),
    };
    let mut report = DeployReport {
        run,
        warnings: generated.warnings,
        prometheus: monitors
            .iter()
            .map(|m| format!("{}://{m}", api.scheme()))
            .collect(),
        login,
        grafana,
        targets: Vec::new(),
        checked_jobs,
    };
    if opts.check || !report.run.failed_hosts().is_empty() {
        return Ok(report);
    }

    // 3. Every required target up, as each Prometheus sees it.
    let expected: BTreeMap<String, usize> = generate::prometheus::jobs(topology)
        .iter()
        .filter(|j| report.checked_jobs.iter().any(|c| c == j.name))
        .map(|j| (j.name.to_string(), j.targets.len()))
        .collect();
    let deadline = Instant::now() + opts.wait;
    for prom in &monitors {
        report
            .targets
            .extend(wait_for_targets(&api, prom, &expected, deadline).await?);
    }
    let down: Vec<String> = report
        .targets
        .iter()
        .filter(|t| t.required && t.health != "up")
        .map(|t| {
            format!(
                "{}/{} ({}){}",
                t.job,
                t.instance,
                t.health,
                if t.last_error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.last_error)
                }
            )
        })
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .flat_map(|(job, n)| {
            let have = report.targets.iter().filter(|t| &t.job == job).count();
            (have < n * monitors.len())
                .then(|| format!("{job}: {have} of {} targets", n * monitors.len()))
        })
        .collect();
    if !down.is_empty() || !missing.is_empty() {
        return Err(MonitorError::TargetsDown {
            waited_secs: opts.wait.as_secs(),
            down: down.into_iter().chain(missing).collect(),
        });
    }
    Ok(report)
}

/// Polls one Prometheus until every expected job has all its targets up, or the deadline;
/// returns the last view of the active targets.
async fn wait_for_targets(
    api: &ApiClient,
    prometheus: &str,
    expected: &BTreeMap<String, usize>,
    deadline: Instant,
) -> Result<Vec<TargetHealth>> {
    loop {
        let failure = match api.get(prometheus, "/api/v1/targets?state=active").await {
            Ok((200, body)) => match parse_targets(prometheus, &body, expected) {
                Ok(targets) => {
                    let ready = expected.iter().all(|(job, n)| {
                        targets
                            .iter()
                            .filter(|t| &t.job == job && t.health == "up")
                            .count()
                            >= *n
                    });
                    if ready || Instant::now() >= deadline {
                        return Ok(targets);
                    }
                    None
                }
                Err(e) => Some(e),
            },
            Ok((status, body)) => Some(ApiError::Status {
                status,
                body: body.chars().take(200).collect(),
            }),
            Err(e) => Some(e),
        };
        if let Some(source) = failure {
            if Instant::now() >= deadline {
                return Err(MonitorError::PrometheusApi {
                    address: prometheus.to_string(),
                    source,
                });
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// `/api/v1/targets` → the active targets.
fn parse_targets(
    prometheus: &str,
    body: &str,
    expected: &BTreeMap<String, usize>,
) -> std::result::Result<Vec<TargetHealth>, ApiError> {
    let v: Value = serde_json::from_str(body).map_err(ApiError::NotJson)?;
    if v["status"] != "success" {
        return Err(ApiError::Failed(v["status"].to_string()));
    }
    let active = v["data"]["activeTargets"]
        .as_array()
        .ok_or(ApiError::NoActiveTargets)?;
    Ok(active
        .iter()
        .map(|t| {
            let label = |k: &str| t["labels"][k].as_str().map(str::to_string);
            let job = label("job").unwrap_or_default();
            TargetHealth {
                prometheus: prometheus.to_string(),
                required: expected.contains_key(&job),
                job,
                instance: label("instance").unwrap_or_default(),
                host: label("host"),
                health: t["health"].as_str().unwrap_or("unknown").to_string(),
                last_error: t["lastError"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect())
}

/// How clusterkit queries Prometheus's API: plain HTTP, or (`monitor.tls`) HTTPS verified
/// against the monitoring CA with the web login.
#[derive(Clone)]
pub struct ApiClient {
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, String)>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ApiClient {
    /// The client for a topology (reads the login and the monitoring CA).
    pub fn for_topology(topology: &Topology) -> Result<ApiClient> {
        if !topology.monitor().tls {
            return Ok(ApiClient { tls: None });
        }
        let login = crate::security::WebLogin::load_or_create(topology)?;
        Ok(ApiClient {
            tls: Some((
                crate::security::client_config(topology)?,
                login.authorization(),
            )),
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// GET of `path` on `address` (`ip:port`), within [`API_TIMEOUT`].
    pub async fn get(
        &self,
        address: &str,
        path: &str,
    ) -> std::result::Result<(u16, String), ApiError> {
        let request = async {
            let tcp = tokio::net::TcpStream::connect(address)
                .await
                .map_err(HttpError::Connect)?;
            let (status, body) = match &self.tls {
                None => http1_get(tcp, address, path, None).await?,
                Some((config, authorization)) => {
                    let ip = tcp.peer_addr().map_err(HttpError::Connect)?.ip();
                    let name = rustls::pki_types::ServerName::IpAddress(ip.into());
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(HttpError::Tls)?;
                    http1_get(tls, address, path, Some(authorization)).await?
                }
            };
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(API_TIMEOUT, request)
            .await
            .map_err(|_| ApiError::Timeout {
                secs: API_TIMEOUT.as_secs(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_playbook_validates() {
        let lib = library(&[]);
        playbook::load(&lib, "monitor").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn private_files_go_to_the_daemon_user() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cluster.yaml");
        std::fs::write(
            &cfg,
            "name: demo\nkubernetes: { version: v1.26.3 }\nhosts:\n  - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { agent: true } }\n  - { name: m1, address: 10.0.0.3, roles: [worker, monitor], auth: { agent: true } }\nmonitor: { alertmanager: { receivers: [ { name: ops, webhook: { url: \"http://127.0.0.1:9/hook\" } } ] } }\n",
        )
        .unwrap();
        let t = Topology::load(&cfg).unwrap();
        let pki = t.cluster.state_dir.join("pki/etcd");
        std::fs::create_dir_all(&pki).unwrap();
        for f in ["ca.crt", "healthcheck-client.crt", "healthcheck-client.key"] {
            std::fs::write(pki.join(f), "x").unwrap();
        }
        let stage = dir.path().join("stage");
        generate::generate(
            &t,
            &stage,
            &generate::Options {
                install_dir: Some(PathBuf::from(CONFIG_DIR)),
                tuning: generate::Tuning::default(),
            },
        )
        .unwrap();
        let sets = file_sets(&stage, false).unwrap();
        let key = sets
            .prometheus
            .iter()
            .find(|f| f.dest.ends_with(files::ETCD_CLIENT_KEY))
            .expect("etcd client key copied");
        assert_eq!(
            (key.mode.as_str(), key.owner.as_str()),
            ("0600", "prometheus")
        );
        let conf = sets
            .prometheus
            .iter()
            .find(|f| f.dest == format!("{CONFIG_DIR}/prometheus.yml"))
            .unwrap();
        assert_eq!((conf.mode.as_str(), conf.owner.as_str()), ("0644", "root"));
        let am = &sets.alertmanager[0];
        assert!(am.dest.ends_with("alertmanager.yml") && am.owner == "prometheus");
        assert!(sets
            .targets
            .iter()
            .any(|f| f.dest.ends_with("targets/node.json")));
        assert!(sets.grafana.is_empty(), "no Grafana without the package");
        assert!(file_sets(&stage, true).unwrap().grafana.len() == 2);
        let vars = playbook_vars(&t, &sets);
        let am_args = vars["alertmanager_defaults"].as_str().unwrap();
        assert!(
            am_args.contains("--cluster.listen-address=\"\n"),
            "{am_args}"
        );
    }

    #[test]
    fn targets_api_is_read() {
        let body = r#"{"status":"success","data":{"activeTargets":[
          {"labels":{"job":"node","instance":"10.0.0.1:9100","host":"cp1"},"health":"up","lastError":""},
          {"labels":{"job":"etcd","instance":"10.0.0.1:2379","host":"cp1"},"health":"down","lastError":"connection refused"}]}}"#;
        let expected = BTreeMap::from([("node".to_string(), 1)]);
        let t = parse_targets("p:9090", body, &expected).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].required && t[0].health == "up" && t[0].host.as_deref() == Some("cp1"));
        assert!(!t[1].required && t[1].last_error == "connection refused");
    }
}
