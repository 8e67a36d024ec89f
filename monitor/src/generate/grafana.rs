//! Grafana provisioning: a datasource pointing at the cluster's Prometheus and five dashboards
//! (overview, etcd, nodes, certificates, backups) built from the same metric names the
//! exporter and the alert rules use.
//!
//! Queries use no dashboard variables, so each one is a plain PromQL expression that tests can
//! parse with promtool and run against a real Prometheus.

use serde_json::{json, Value};

use crate::security::WebLogin;

/// The datasource UID every panel refers to.
pub const DATASOURCE_UID: &str = "clusterkit-prometheus";

/// One panel: a title, a query and how to show it.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: &'static str,
    pub expr: String,
    pub kind: &'static str,
    pub unit: &'static str,
    pub legend: &'static str,
}

/// One dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Stable UID and file name (`<uid>.json`).
    pub uid: &'static str,
    pub title: &'static str,
    pub panels: Vec<Panel>,
}

fn p(
    title: &'static str,
    expr: impl Into<String>,
    kind: &'static str,
    unit: &'static str,
    legend: &'static str,
) -> Panel {
    Panel {
        title,
        expr: expr.into(),
        kind,
        unit,
        legend,
    }
}

const FS: &str = r#"job="node",fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs|fuse.*""#;

/// All dashboards clusterkit provisions.
pub fn dashboards() -> Vec<Dashboard> {
    vec![
        Dashboard {
            uid: "clusterkit-overview",
            title: "clusterkit / Cluster overview",
            panels: vec![
                p("Scrape targets up", "sum by (job) (up)", "stat", "short", "{{job}}"),
                p("Firing alerts", r#"sum by (severity) (ALERTS{alertstate="firing"})"#, "stat", "short", "{{severity}}"),
                p("etcd members answering clusterkit", "sum(clusterkit_etcd_member_up)", "stat", "short", "members"),
                p("etcd members reported by the cluster", "max(clusterkit_etcd_members)", "stat", "short", "members"),
                p("Control-plane components healthy", "clusterkit_controlplane_up", "table", "short", "{{host}} {{component}}"),
                p("Soonest certificate expiry", "min(clusterkit_certificate_expiry_seconds)", "stat", "s", "expiry"),
                p("Collectors", "clusterkit_collector_up", "table", "short", "{{collector}}"),
                p("Backups stored", "sum by (kind) (clusterkit_backup_count)", "stat", "short", "{{kind}}"),
            ],
        },
        Dashboard {
            uid: "clusterkit-etcd",
            title: "clusterkit / etcd",
            panels: vec![
                p("Members up (scrape)", r#"up{job="etcd"}"#, "stat", "short", "{{host}}"),
                p("Has leader", r#"etcd_server_has_leader{job="etcd"}"#, "stat", "short", "{{host}}"),
                p("Leader changes (1h)", r#"increase(etcd_server_leader_changes_seen_total{job="etcd"}[1h])"#, "timeseries", "short", "{{host}}"),
                p("Database size", r#"etcd_mvcc_db_total_size_in_bytes{job="etcd"}"#, "timeseries", "bytes", "{{host}} total"),
                p("Database in use", r#"etcd_mvcc_db_total_size_in_use_in_bytes{job="etcd"}"#, "timeseries", "bytes", "{{host}} in use"),
                p("Database size (clusterkit, per member)", "clusterkit_etcd_db_size_bytes", "timeseries", "bytes", "{{member}}"),
                p("Quota used", "max by (member) (clusterkit_etcd_db_size_bytes) / on () group_left () max(clusterkit_etcd_quota_bytes)", "timeseries", "percentunit", "{{member}}"),
                p("WAL fsync p99", r#"histogram_quantile(0.99, sum by (instance, le) (rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="etcd"}[5m])))"#, "timeseries", "s", "{{instance}}"),
                p("Backend commit p99", r#"histogram_quantile(0.99, sum by (instance, le) (rate(etcd_disk_backend_commit_duration_seconds_bucket{job="etcd"}[5m])))"#, "timeseries", "s", "{{instance}}"),
                p("Failed proposals", r#"rate(etcd_server_proposals_failed_total{job="etcd"}[5m])"#, "timeseries", "ops", "{{host}}"),
                p("Raft index", "clusterkit_etcd_raft_index", "timeseries", "short", "{{member}}"),
                p("Revision", "clusterkit_etcd_revision", "timeseries", "short", "{{member}}"),
                p("Active alarms", "clusterkit_etcd_alarm_active", "table", "short", "{{member}} {{alarm}}"),
            ],
        },
        Dashboard {
            uid: "clusterkit-nodes",
            title: "clusterkit / Nodes",
            panels: vec![
                p("node-exporter up", r#"up{job="node"}"#, "stat", "short", "{{host}}"),
                p("Filesystem free", format!("node_filesystem_avail_bytes{{{FS}}} / node_filesystem_size_bytes{{{FS}}} * 100"), "timeseries", "percent", "{{host}} {{mountpoint}}"),
                p("CPU busy", r#"1 - avg by (host) (rate(node_cpu_seconds_total{job="node",mode="idle"}[5m]))"#, "timeseries", "percentunit", "{{host}}"),
                p("Memory available", r#"node_memory_MemAvailable_bytes{job="node"}"#, "timeseries", "bytes", "{{host}}"),
                p("Load (1m)", r#"node_load1{job="node"}"#, "timeseries", "short", "{{host}}"),
                p("Clock offset (NTP)", r#"node_timex_offset_seconds{job="node"}"#, "timeseries", "s", "{{host}}"),
                p("Reachable over SSH", "clusterkit_node_reachable", "stat", "short", "{{host}}"),
                p("Node problems (units, swap, sysctls, modules)", "count(clusterkit_node_unit_active == 0 or clusterkit_node_swap_enabled == 1 or clusterkit_node_sysctl_matches == 0 or clusterkit_node_module_present == 0) or vector(0)", "stat", "short", "problems"),
            ],
        },
        Dashboard {
            uid: "clusterkit-certificates",
            title: "clusterkit / Certificates",
            panels: vec![
                p("Time until expiry", "clusterkit_certificate_expiry_seconds", "table", "s", "{{host}} {{path}}"),
                p("Lifetime left", "clusterkit_certificate_lifetime_remaining_ratio", "table", "percentunit", "{{host}} {{path}}"),
                p("Expiring within 30 days", "count(clusterkit_certificate_expiry_seconds < 30 * 86400) or vector(0)", "stat", "short", "certificates"),
                p("Certificates watched", "count(clusterkit_certificate_expiry_seconds)", "stat", "short", "certificates"),
            ],
        },
        Dashboard {
            uid: "clusterkit-backups",
            title: "clusterkit / Backups",
            panels: vec![
                p("Backups stored", "clusterkit_backup_count", "stat", "short", "{{kind}}"),
                p("Age of the last successful backup", "time() - clusterkit_backup_last_success_timestamp_seconds", "stat", "s", "{{kind}}"),
                p("Age of the newest verified backup", "clusterkit_backup_newest_verified_age_seconds", "stat", "s", "{{kind}}"),
                p("Size of the last backup", "clusterkit_backup_last_stored_bytes", "stat", "bytes", "{{kind}}"),
                p("Duration of the last backup", "clusterkit_backup_last_duration_seconds", "stat", "s", "{{kind}}"),
            ],
        },
    ]
}

/// A dashboard as Grafana's JSON model.
pub fn dashboard_json(d: &Dashboard) -> Value {
    let datasource = json!({ "type": "prometheus", "uid": DATASOURCE_UID });
    let panels: Vec<Value> = d
        .panels
        .iter()
        .enumerate()
        .map(|(i, panel)| {
            json!({
                "id": i + 1,
                "type": panel.kind,
                "title": panel.title,
                "datasource": datasource,
                "gridPos": { "h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8 },
                "fieldConfig": { "defaults": { "unit": panel.unit }, "overrides": [] },
                "options": {},
                "targets": [{
                    "refId": "A",
                    "datasource": datasource,
                    "expr": panel.expr,
                    "legendFormat": panel.legend,
                    "instant": panel.kind != "timeseries",
                }],
            })
        })
        .collect();
    json!({
        "uid": d.uid,
        "title": d.title,
        "tags": ["clusterkit"],
        "timezone": "browser",
        "schemaVersion": 36,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "panels": panels,
    })
}

/// Grafana's datasource provisioning file; with `secured` (the web login and the monitoring
/// CA's PEM) Grafana logs in and verifies Prometheus's certificate against that CA.
pub fn datasource(prometheus_url: &str, secured: Option<(&WebLogin, &str)>) -> Value {
    let mut ds = json!({
        "name": "clusterkit-prometheus",
        "uid": DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": true,
    });
    if let Some((login, ca_pem)) = secured {
        ds["basicAuth"] = json!(true);
        ds["basicAuthUser"] = json!(login.username);
        ds["jsonData"] = json!({ "tlsAuthWithCACert": true });
        ds["secureJsonData"] = json!({
            "basicAuthPassword": login.password(),
            "tlsCACert": ca_pem,
        });
    }
    json!({ "apiVersion": 1, "datasources": [ds] })
}

/// Grafana's dashboard provider file; `dashboards_dir` is where the JSON files live on the
/// Grafana host.
pub fn dashboard_provider(dashboards_dir: &str) -> Value {
    json!({
        "apiVersion": 1,
        "providers": [{
            "name": "clusterkit",
            "folder": "clusterkit",
            "type": "file",
            "disableDeletion": false,
            "options": { "path": dashboards_dir },
        }],
    })
}
