//! prometheus.yml and its file_sd target files.
//!
//! Targets live in `targets/<job>.json` (file_sd), so adding or removing a node only rewrites
//! those files and Prometheus picks them up without a reload. Every TLS job verifies the server
//! against the cluster's CA (no `insecure_skip_verify` anywhere) and authenticates with a client
//! certificate copied into `tls/`. Paths are relative: Prometheus resolves them against the
//! directory of prometheus.yml, so the generated directory can be moved or uploaded as a whole.

use std::time::Duration;

use serde_json::{json, Value};

use crate::duration::PromDuration;
use crate::topology::{role, Host, Topology};

/// File names under the output directory, shared by the generator and `deploy`.
pub mod files {
    pub const ETCD_CA: &str = "tls/etcd-ca.crt";
    pub const ETCD_CLIENT_CERT: &str = "tls/etcd-metrics-client.crt";
    pub const ETCD_CLIENT_KEY: &str = "tls/etcd-metrics-client.key";
    pub const KUBE_CA: &str = "tls/ca.crt";
    pub const KUBE_CLIENT_CERT: &str = "tls/kube-metrics-client.crt";
    pub const KUBE_CLIENT_KEY: &str = "tls/kube-metrics-client.key";
    pub const EXPORTER_CA: &str = "tls/exporter-ca.crt";
    pub const EXPORTER_PASSWORD: &str = "secrets/exporter-password";
    pub const RULES: &str = "rules/clusterkit-alerts.yml";
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
    pub ca_file: &'static str,
    pub client: Option<(&'static str, &'static str)>,
    pub server_name: Option<String>,
}

fn host_targets<'a>(
    hosts: impl Iterator<Item = &'a Host>,
    port: u16,
) -> Vec<(String, Option<String>)> {
    hosts
        .map(|h| (h.endpoint(port), Some(h.name.clone())))
        .collect()
}

/// The scrape jobs for this cluster; jobs without targets are left out.
pub fn jobs(topology: &Topology) -> Vec<Job> {
    let ports = &topology.monitor.ports;
    let kube_tls = || {
        Some(JobTls {
            ca_file: files::KUBE_CA,
            client: Some((files::KUBE_CLIENT_CERT, files::KUBE_CLIENT_KEY)),
            server_name: None,
        })
    };
    let exporter_tls = topology.monitor.tls.as_ref().map(|t| JobTls {
        ca_file: files::EXPORTER_CA,
        client: None,
        server_name: t.server_name.clone(),
    });
    let jobs = vec![
        Job {
            name: "clusterkit",
            targets: topology.exporter_targets(),
            tls: exporter_tls,
            metrics_path: "/metrics",
        },
        Job {
            name: "node",
            targets: host_targets(topology.hosts.iter(), ports.node_exporter),
            tls: None,
            metrics_path: "/metrics",
        },
        Job {
            name: "etcd",
            targets: host_targets(topology.hosts_with(role::ETCD), ports.etcd),
            tls: Some(JobTls {
                ca_file: files::ETCD_CA,
                client: Some((files::ETCD_CLIENT_CERT, files::ETCD_CLIENT_KEY)),
                server_name: None,
            }),
            metrics_path: "/metrics",
        },
        Job {
            name: "apiserver",
            targets: host_targets(topology.hosts_with(role::CONTROL_PLANE), ports.apiserver),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
        Job {
            name: "kube-scheduler",
            targets: host_targets(topology.hosts_with(role::CONTROL_PLANE), ports.scheduler),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
        Job {
            name: "kube-controller-manager",
            targets: host_targets(
                topology.hosts_with(role::CONTROL_PLANE),
                ports.controller_manager,
            ),
            tls: kube_tls(),
            metrics_path: "/metrics",
        },
        Job {
            name: "kubelet",
            targets: host_targets(
                topology.hosts.iter().filter(|h| h.runs_kubelet()),
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

/// prometheus.yml.
pub fn config(topology: &Topology, jobs: &[Job]) -> Value {
    let m = &topology.monitor;
    let alertmanagers: Vec<String> = topology
        .monitor_hosts()
        .into_iter()
        .map(|h| h.endpoint(m.ports.alertmanager))
        .collect();
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
                if let Some((cert, key)) = tls.client {
                    t["cert_file"] = json!(cert);
                    t["key_file"] = json!(key);
                }
                if let Some(name) = &tls.server_name {
                    t["server_name"] = json!(name);
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
            "scrape_interval": m.intervals.scrape.to_string(),
            "scrape_timeout": scrape_timeout(m.intervals.scrape).to_string(),
            "evaluation_interval": m.intervals.evaluation.to_string(),
            "external_labels": { "cluster": topology.name },
        },
        "rule_files": [files::RULES],
        "alerting": {
            "alertmanagers": [{ "static_configs": [{ "targets": alertmanagers }] }],
        },
        "scrape_configs": scrape_configs,
    })
}
