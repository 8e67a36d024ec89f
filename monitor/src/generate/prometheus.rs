//! prometheus.yml and its file_sd target files.
//!
//! Targets live in `targets/<job>.json` (file_sd), so adding or removing a node only rewrites
//! those files and Prometheus picks them up without a reload. Every TLS job verifies the server
//! against the cluster's CA (no `insecure_skip_verify` anywhere) and authenticates with a client
//! certificate copied into `tls/`. Paths are relative: Prometheus resolves them against the
//! directory of prometheus.yml, so the generated directory can be moved or uploaded as a whole.
//!
//! With `monitor.tls` (the default) node-exporter and the exporter are scraped over HTTPS with
//! Prometheus's client certificate of the monitoring CA and verified against that CA, and
//! Prometheus sends alerts to Alertmanager over HTTPS with the web login.

use std::time::Duration;

use serde_json::{json, Value};

use clusterkit_core::config::{Host, Role};
use clusterkit_installer::pki::monitoring;

use crate::duration::PromDuration;
use crate::generate::tuning::Tuning;
use crate::topology::{endpoint, runs_kubelet, Topology};

/// File names under the output directory, shared by the generator and `deploy`.
pub mod files {
    // Copies of the cluster PKI: `certs` keeps them in line on the monitor hosts
    // (`clusterkit_installer::pki::prometheus_copies`).
    pub const ETCD_CA: &str = super::monitoring::ETCD_CA;
    pub const ETCD_CLIENT_CERT: &str = super::monitoring::ETCD_CLIENT_CERT;
    pub const ETCD_CLIENT_KEY: &str = super::monitoring::ETCD_CLIENT_KEY;
    pub const KUBE_CA: &str = super::monitoring::KUBE_CA;
    pub const KUBE_CLIENT_CERT: &str = super::monitoring::KUBE_CLIENT_CERT;
    pub const KUBE_CLIENT_KEY: &str = super::monitoring::KUBE_CLIENT_KEY;
    pub const EXPORTER_PASSWORD: &str = "secrets/exporter-password";
    pub const RULES: &str = "rules/clusterkit-alerts.yml";
    /// The web login's password (Prometheus's credentials for Alertmanager).
    pub const WEB_PASSWORD: &str = "secrets/web-password";
    /// The monitoring CA certificate.
    pub const MONITORING_CA: &str = super::monitoring::CA;

    /// A monitoring pair's certificate and key (`tls/<name>.crt`, `.key`).
    pub fn pair(base: &str) -> (String, String) {
        (format!("{base}.crt"), format!("{base}.key"))
    }
}

/// One scrape job: its name, which hosts and port, and how to talk to it.
pub struct Job {
    pub name: &'static str,
    pub targets: Vec<(String, Option<String>)>,
    pub tls: Option<JobTls>,
    pub metrics_path: &'static str,
}

/// TLS settings of a job, as paths relative to the output directory.
pub struct JobTls {
    pub ca_file: String,
    pub client: Option<(String, String)>,
}

/// Scraped with Prometheus's client certificate, verified against the monitoring CA.
fn monitoring_tls() -> JobTls {
    JobTls {
        ca_file: files::MONITORING_CA.to_string(),
        client: Some(files::pair(monitoring::PROMETHEUS_CLIENT)),
    }
}

fn host_targets<'a>(
    hosts: impl Iterator<Item = &'a Host>,
    port: u16,
) -> Vec<(String, Option<String>)> {
    hosts
        .map(|h| (endpoint(h, port), Some(h.name.clone())))
        .collect()
}

/// The scrape jobs for this cluster; jobs without targets are left out.
pub fn jobs(topology: &Topology) -> Vec<Job> {
    let ports = &topology.monitor().ports;
    let kube_tls = || {
        Some(JobTls {
            ca_file: files::KUBE_CA.to_string(),
            client: Some((
                files::KUBE_CLIENT_CERT.to_string(),
                files::KUBE_CLIENT_KEY.to_string(),
            )),
        })
    };
    let secured = topology.monitor().tls;
    let jobs = vec![
        Job {
            name: "clusterkit",
            targets: topology.exporter_targets(),
            tls: secured.then(monitoring_tls),
            metrics_path: "/metrics",
        },
        Job {
            name: "node",
            targets: host_targets(topology.cluster.hosts.iter(), ports.node_exporter),
            tls: secured.then(monitoring_tls),
            metrics_path: "/metrics",
        },
        Job {
            name: "etcd",
            targets: host_targets(topology.hosts_with(Role::Etcd), ports.etcd),
            tls: Some(JobTls {
                ca_file: files::ETCD_CA.to_string(),
                client: Some((
                    files::ETCD_CLIENT_CERT.to_string(),
                    files::ETCD_CLIENT_KEY.to_string(),
                )),
            }),
            metrics_path: "/metrics",
        },
        Job {
            name: "apiserver",
            targets: host_targets(topology.hosts_with(Role::ControlPlane), ports.apiserver),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
        Job {
            name: "kube-scheduler",
            targets: host_targets(topology.hosts_with(Role::ControlPlane), ports.scheduler),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
        Job {
            name: "kube-controller-manager",
            targets: host_targets(
                topology.hosts_with(Role::ControlPlane),
                ports.controller_manager,
            ),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
        Job {
            name: "kubelet",
            targets: host_targets(
                topology.cluster.hosts.iter().filter(|h| runs_kubelet(h)),
                ports.kubelet,
            ),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
    ];
    jobs.into_iter().filter(|j| !j.targets.is_empty()).collect()
}

/// The file_sd document for one job: one entry per target, labelled with its host.
pub fn targets_file(job: &Job) -> Value {
    Value::Array(
        job.targets
            .iter()
            .map(|(target, host)| match host {
                Some(h) => json!({ "targets": [target], "labels": { "host": h } }),
                None => json!({ "targets": [target] }),
            })
            .collect(),
    )
}

/// Scrape timeout: Prometheus refuses one longer than the interval.
fn scrape_timeout(interval: PromDuration) -> PromDuration {
    PromDuration(interval.as_duration().min(Duration::from_secs(10)))
}

/// prometheus.yml; `web_user`: the login Prometheus uses with Alertmanager (`monitor.tls`).
pub fn config(topology: &Topology, jobs: &[Job], web_user: Option<&str>, tuning: &Tuning) -> Value {
    let m = topology.monitor();
    let alertmanagers: Vec<String> = topology
        .monitor_hosts()
        .into_iter()
        .map(|h| endpoint(h, m.ports.alertmanager))
        .collect();
    let mut alertmanager = json!({ "static_configs": [{ "targets": alertmanagers }] });
    if let Some(user) = web_user {
        let (cert, key) = files::pair(monitoring::ALERTMANAGER_CLIENT);
        alertmanager["scheme"] = json!("https");
        alertmanager["basic_auth"] = json!({
            "username": user,
            "password_file": files::WEB_PASSWORD,
        });
        alertmanager["tls_config"] = json!({
            "ca_file": files::MONITORING_CA,
            "cert_file": cert,
            "key_file": key,
        });
    }
    let scrape_configs: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let mut sc = json!({
                "job_name": job.name,
                "metrics_path": job.metrics_path,
                "scheme": if job.tls.is_some() { "https" } else { "http" },
                "file_sd_configs": [{ "files": [format!("targets/{}.json", job.name)] }],
            });
            if let Some(tls) = &job.tls {
                let mut t = json!({ "ca_file": tls.ca_file });
                if let Some((cert, key)) = &tls.client {
                    t["cert_file"] = json!(cert);
                    t["key_file"] = json!(key);
                }
                sc["tls_config"] = t;
            }
            if job.name == "clusterkit" {
                if let Some(auth) = &m.basic_auth {
                    sc["basic_auth"] = json!({
                        "username": auth.username,
                        "password_file": files::EXPORTER_PASSWORD,
                    });
                }
            }
            sc
        })
        .collect();
    json!({
        "global": {
            "scrape_interval": tuning.scrape_interval(topology).to_string(),
            "scrape_timeout": scrape_timeout(tuning.scrape_interval(topology)).to_string(),
            "evaluation_interval": tuning.evaluation_interval(topology).to_string(),
            "external_labels": { "cluster": topology.cluster.name },
        },
        "rule_files": [files::RULES],
        "alerting": { "alertmanagers": [alertmanager] },
        "scrape_configs": scrape_configs,
    })
}
