//! The alert rules clusterkit ships, built from the cluster's real numbers: etcd's backend
//! quota, the kubelet's eviction and image-GC levels, the backup schedule's maximum age.
//!
//! The etcd alerts follow the upstream etcd mixin (same names and meaning; thresholds kept,
//! `for:` shortened where the mixin's were chosen for large fleets). Control-plane liveness is
//! alerted from clusterkit's own probe (`clusterkit_controlplane_up`), never from the absence
//! of a scrape job, so a component that is simply not scraped raises no false alarm.
//! Every alert has a `severity` label: `critical`, `warning`, or `none` (Watchdog only).

use serde_json::{json, Value};

use std::collections::BTreeMap;

use clusterkit_core::config::{KubeletDisk, Monitor};

use crate::duration::PromDuration;
use crate::topology::Topology;

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: &'static str,
    pub severity: &'static str,
    pub expr: String,
    /// Default pending duration; `--alert-for` overrides it per alert name.
    pub for_: Option<PromDuration>,
    pub summary: &'static str,
    pub description: String,
}

/// A named group of rules (one `groups:` entry).
#[derive(Debug, Clone)]
pub struct Group {
    pub name: &'static str,
    pub alerts: Vec<Alert>,
}

/// Filesystems that are not node disks (the kubelet does not evict on them either).
const FS_SELECTOR: &str = r#"job="node",fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs|fuse.*""#;

/// Filesystem thresholds in percent of space available: (warning, critical).
///
/// The kubelet starts image GC when usage passes `image_gc_high_percent` and evicts pods when
/// less than `eviction_nodefs_available_percent` is free. Critical fires 5 points before the
/// eviction level; warning 10 points before image GC begins, so an operator hears about a
/// filling disk before the kubelet starts acting on it.
pub fn filesystem_thresholds(k: &KubeletDisk) -> (f64, f64) {
    let gc_free = 100.0 - k.image_gc_high_percent;
    let critical = (k.eviction_nodefs_available_percent + 5.0).min(99.0);
    let warning = (gc_free.max(critical) + 10.0).min(99.5);
    (warning, critical)
}

fn d(secs: u64) -> Option<PromDuration> {
    Some(PromDuration::secs(secs))
}

fn alert(
    name: &'static str,
    severity: &'static str,
    expr: impl Into<String>,
    for_: Option<PromDuration>,
    summary: &'static str,
    description: impl Into<String>,
) -> Alert {
    Alert {
        name,
        severity,
        expr: expr.into(),
        for_,
        summary,
        description: description.into(),
    }
}

/// All alert groups for this cluster's `monitor:` settings; `alert_for` overrides pending
/// durations by alert name.
pub fn groups(m: &Monitor, alert_for: &BTreeMap<String, PromDuration>) -> Vec<Group> {
    let quota = m.etcd_quota_bytes;
    let quota_gib = quota as f64 / (1024.0 * 1024.0 * 1024.0);
    let (fs_warn, fs_crit) = filesystem_thresholds(&m.kubelet_disk);
    let backup_max_age_secs = m.backup_max_age_secs;
    let backup_max_age = PromDuration::secs(backup_max_age_secs);
    let fs_expr = |pct: f64| {
        format!(
            "(node_filesystem_avail_bytes{{{FS_SELECTOR}}} / node_filesystem_size_bytes{{{FS_SELECTOR}}} * 100 < {pct} and node_filesystem_readonly{{{FS_SELECTOR}}} == 0)"
        )
    };
    let quota_expr = |pct: u32| {
        format!("etcd_mvcc_db_total_size_in_bytes{{job=\"etcd\"}} / {quota} * 100 > {pct}")
    };
    let mut groups = vec![
        Group {
            name: "etcd",
            alerts: vec![
                alert(
                    "EtcdMembersDown",
                    "critical",
                    r#"up{job="etcd"} == 0"#,
                    d(180),
                    "An etcd member is down.",
                    "etcd member {{ $labels.host }} ({{ $labels.instance }}) has not answered scrapes.",
                ),
                alert(
                    "EtcdInsufficientMembers",
                    "critical",
                    r#"sum without (instance, host) (up{job="etcd"} == bool 1) < ((count without (instance, host) (up{job="etcd"}) + 1) / 2)"#,
                    d(180),
                    "etcd has lost quorum.",
                    "Fewer than a majority of etcd members are up: the cluster cannot accept writes.",
                ),
                alert(
                    "EtcdNoLeader",
                    "critical",
                    r#"etcd_server_has_leader{job="etcd"} == 0"#,
                    d(60),
                    "An etcd member has no leader.",
                    "etcd member {{ $labels.host }} ({{ $labels.instance }}) has no leader.",
                ),
                alert(
                    "EtcdHighNumberOfLeaderChanges",
                    "warning",
                    r#"increase(etcd_server_leader_changes_seen_total{job="etcd"}[15m]) >= 4"#,
                    d(300),
                    "etcd leader changes too often.",
                    "etcd member {{ $labels.host }} saw {{ $value | printf \"%.0f\" }} leader changes in 15 minutes: look at disk and network latency.",
                ),
                alert(
                    "EtcdHighNumberOfFailedProposals",
                    "warning",
                    r#"rate(etcd_server_proposals_failed_total{job="etcd"}[15m]) > 5"#,
                    d(900),
                    "etcd proposals fail.",
                    "etcd member {{ $labels.host }} fails {{ $value | printf \"%.1f\" }} proposals per second.",
                ),
                alert(
                    "EtcdHighFsyncDurations",
                    "warning",
                    r#"histogram_quantile(0.99, rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="etcd"}[5m])) > 0.5"#,
                    d(600),
                    "etcd WAL fsync is slow.",
                    "99th percentile WAL fsync on {{ $labels.host }} is {{ $value | printf \"%.2f\" }}s.",
                ),
                alert(
                    "EtcdHighFsyncDurations",
                    "critical",
                    r#"histogram_quantile(0.99, rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="etcd"}[5m])) > 1"#,
                    d(600),
                    "etcd WAL fsync is very slow.",
                    "99th percentile WAL fsync on {{ $labels.host }} is {{ $value | printf \"%.2f\" }}s.",
                ),
                alert(
                    "EtcdHighCommitDurations",
                    "warning",
                    r#"histogram_quantile(0.99, rate(etcd_disk_backend_commit_duration_seconds_bucket{job="etcd"}[5m])) > 0.25"#,
                    d(600),
                    "etcd backend commits are slow.",
                    "99th percentile backend commit on {{ $labels.host }} is {{ $value | printf \"%.2f\" }}s.",
                ),
                alert(
                    "EtcdDatabaseQuotaLowSpace",
                    "warning",
                    quota_expr(80),
                    d(600),
                    "etcd database is filling its quota.",
                    format!("etcd on {{{{ $labels.host }}}} uses {{{{ $value | printf \"%.0f\" }}}}% of its {quota_gib:.1} GiB quota; compact and defragment, or raise the quota."),
                ),
                alert(
                    "EtcdDatabaseQuotaLowSpace",
                    "critical",
                    quota_expr(95),
                    d(600),
                    "etcd database is about to reach its quota.",
                    format!("etcd on {{{{ $labels.host }}}} uses {{{{ $value | printf \"%.0f\" }}}}% of its {quota_gib:.1} GiB quota; at 100% it raises NOSPACE and refuses writes."),
                ),
                alert(
                    "EtcdAlarmActive",
                    "critical",
                    "clusterkit_etcd_alarm_active == 1",
                    d(60),
                    "An etcd alarm is raised.",
                    "etcd member {{ $labels.member }} raised alarm {{ $labels.alarm }}.",
                ),
            ],
        },
        Group {
            name: "nodes",
            alerts: vec![
                alert(
                    "NodeExporterDown",
                    "warning",
                    r#"up{job="node"} == 0"#,
                    d(300),
                    "node-exporter does not answer.",
                    "node-exporter on {{ $labels.host }} ({{ $labels.instance }}) is down.",
                ),
                alert(
                    "NodeFilesystemAlmostOutOfSpace",
                    "warning",
                    fs_expr(fs_warn),
                    d(300),
                    "A filesystem is filling up.",
                    format!("{{{{ $labels.mountpoint }}}} on {{{{ $labels.host }}}} has {{{{ $value | printf \"%.1f\" }}}}% free; the kubelet starts image GC at {:.0}% free.", 100.0 - m.kubelet_disk.image_gc_high_percent),
                ),
                alert(
                    "NodeFilesystemAlmostOutOfSpace",
                    "critical",
                    fs_expr(fs_crit),
                    d(300),
                    "A filesystem is almost full.",
                    format!("{{{{ $labels.mountpoint }}}} on {{{{ $labels.host }}}} has {{{{ $value | printf \"%.1f\" }}}}% free; the kubelet evicts pods below {:.0}% free.", m.kubelet_disk.eviction_nodefs_available_percent),
                ),
                alert(
                    "NodeClockSkewDetected",
                    "warning",
                    r#"(node_timex_offset_seconds{job="node"} > 0.05 and deriv(node_timex_offset_seconds{job="node"}[5m]) >= 0) or (node_timex_offset_seconds{job="node"} < -0.05 and deriv(node_timex_offset_seconds{job="node"}[5m]) <= 0)"#,
                    d(600),
                    "A node's clock is skewed.",
                    "The clock on {{ $labels.host }} is off by {{ $value | printf \"%.3f\" }}s; etcd and certificates need synchronised clocks.",
                ),
                alert(
                    "NodeClockNotSynchronising",
                    "warning",
                    r#"min_over_time(node_timex_sync_status{job="node"}[5m]) == 0 and node_timex_maxerror_seconds{job="node"} >= 16"#,
                    d(600),
                    "A node's clock is not synchronising.",
                    "NTP is not synchronising the clock on {{ $labels.host }}.",
                ),
                alert(
                    "NodeSystemdUnitFailed",
                    "warning",
                    r#"node_systemd_unit_state{job="node",state="failed"} == 1"#,
                    d(300),
                    "A systemd unit failed.",
                    "{{ $labels.name }} on {{ $labels.host }} is in the failed state.",
                ),
            ],
        },
        Group {
            name: "control-plane",
            alerts: vec![
                alert(
                    "ControlPlaneComponentDown",
                    "critical",
                    "clusterkit_controlplane_up == 0",
                    d(120),
                    "A control-plane component is down.",
                    "{{ $labels.component }} on {{ $labels.host }} fails its health checks (probed by clusterkit).",
                ),
                alert(
                    "KubeletDown",
                    "warning",
                    r#"up{job="kubelet"} == 0"#,
                    d(300),
                    "A kubelet does not answer.",
                    "The kubelet on {{ $labels.host }} ({{ $labels.instance }}) cannot be scraped.",
                ),
            ],
        },
        Group {
            name: "certificates",
            alerts: vec![
                alert(
                    "CertificateExpiringSoon",
                    "warning",
                    "clusterkit_certificate_expiry_seconds / 86400 < 30",
                    d(600),
                    "A certificate expires within 30 days.",
                    "{{ $labels.path }} on {{ $labels.host }} expires in {{ $value | printf \"%.1f\" }} days: run `clusterkit certs renew`.",
                ),
                alert(
                    "CertificateExpiringSoon",
                    "critical",
                    "clusterkit_certificate_expiry_seconds / 86400 < 7",
                    d(600),
                    "A certificate expires within 7 days.",
                    "{{ $labels.path }} on {{ $labels.host }} expires in {{ $value | printf \"%.1f\" }} days: run `clusterkit certs renew`.",
                ),
                alert(
                    "CertificateLifetimeLow",
                    "warning",
                    "clusterkit_certificate_lifetime_remaining_ratio * 100 < 20",
                    d(600),
                    "A certificate has used 80% of its lifetime.",
                    "{{ $labels.path }} on {{ $labels.host }} has {{ $value | printf \"%.0f\" }}% of its lifetime left.",
                ),
                alert(
                    "CertificateExpired",
                    "critical",
                    "clusterkit_certificate_expiry_seconds <= 0",
                    None,
                    "A certificate has expired.",
                    "{{ $labels.path }} on {{ $labels.host }} has expired.",
                ),
            ],
        },
        Group {
            name: "backups",
            alerts: vec![
                alert(
                    "BackupStale",
                    "warning",
                    format!("time() - clusterkit_backup_last_success_timestamp_seconds > {backup_max_age_secs}"),
                    d(600),
                    "The last successful backup is too old.",
                    format!("The newest successful {{{{ $labels.kind }}}} backup is older than {backup_max_age}."),
                ),
                alert(
                    "BackupDrillFailed",
                    "critical",
                    "clusterkit_backup_drill_last_failed == 1",
                    None,
                    "The newest restore drill failed.",
                    "The newest {{ $labels.kind }} restore drill in {{ $labels.store }} failed: that backup may not restore (`clusterkit backup list` shows which, `backup drill ID` says what differed).",
                ),
                alert(
                    "BackupDrillStale",
                    "warning",
                    format!("time() - clusterkit_backup_drill_last_success_timestamp_seconds > {backup_max_age_secs}"),
                    d(600),
                    "No restore drill passed recently.",
                    format!("No {{{{ $labels.kind }}}} restore drill in {{{{ $labels.store }}}} has passed for longer than {backup_max_age}."),
                ),
                alert(
                    "BackupAbsent",
                    "critical",
                    r#"clusterkit_backup_count{kind="etcd"} == 0"#,
                    d(1800),
                    "There is no etcd backup.",
                    "The backup store holds no etcd backup of this cluster.",
                ),
            ],
        },
        Group {
            name: "clusterkit",
            alerts: vec![
                alert(
                    "ClusterkitExporterDown",
                    "critical",
                    r#"up{job="clusterkit"} == 0"#,
                    d(120),
                    "The clusterkit exporter does not answer.",
                    "{{ $labels.instance }} cannot be scraped: etcd, control-plane, certificate and backup checks are blind.",
                ),
                alert(
                    "ClusterkitCollectorFailing",
                    "warning",
                    "clusterkit_collector_up == 0",
                    d(300),
                    "A clusterkit collector fails.",
                    "The {{ $labels.collector }} collector of {{ $labels.instance }} failed its last run.",
                ),
                alert(
                    "ClusterkitEtcdMemberUnreachable",
                    "critical",
                    "clusterkit_etcd_member_up == 0",
                    d(120),
                    "clusterkit cannot reach an etcd member over TLS.",
                    "etcd member {{ $labels.member }} does not answer clusterkit's status call with the metrics client certificate.",
                ),
                alert(
                    "ClusterkitNodeUnreachable",
                    "critical",
                    "clusterkit_node_reachable == 0",
                    d(180),
                    "A node does not answer over SSH.",
                    "clusterkit cannot run commands on {{ $labels.host }} over SSH.",
                ),
                alert(
                    "ClusterkitNodeUnitInactive",
                    "critical",
                    "clusterkit_node_unit_active == 0",
                    d(180),
                    "A cluster service is not running.",
                    "{{ $labels.unit }} is not active on {{ $labels.host }}.",
                ),
                alert(
                    "ClusterkitNodeSwapOn",
                    "warning",
                    "clusterkit_node_swap_enabled == 1",
                    d(600),
                    "Swap is on.",
                    "Swap is enabled on {{ $labels.host }}; the kubelet expects it off.",
                ),
                alert(
                    "ClusterkitNodeSysctlDrift",
                    "warning",
                    "clusterkit_node_sysctl_matches == 0",
                    d(600),
                    "A sysctl differs from cluster.yaml.",
                    "{{ $labels.key }} on {{ $labels.host }} differs from the value in cluster.yaml.",
                ),
                alert(
                    "ClusterkitNodeModuleMissing",
                    "warning",
                    "clusterkit_node_module_present == 0",
                    d(600),
                    "A required kernel module is missing.",
                    "Kernel module {{ $labels.module }} is not available on {{ $labels.host }}.",
                ),
                alert(
                    "ClusterkitNodeClockOffset",
                    "warning",
                    "abs(clusterkit_node_clock_offset_seconds) > 0.5",
                    d(600),
                    "A node's clock differs from clusterkit's.",
                    "The clock on {{ $labels.host }} is {{ $value | printf \"%.3f\" }}s away from the exporter's.",
                ),
                alert(
                    "Watchdog",
                    "none",
                    "vector(1)",
                    None,
                    "Always firing: proves the alerting pipeline works.",
                    "This alert always fires. If it stops arriving, Prometheus or Alertmanager is broken.",
                ),
            ],
        },
    ];
    for group in &mut groups {
        for a in &mut group.alerts {
            if let Some(over) = alert_for.get(a.name) {
                a.for_ = Some(*over);
            }
        }
    }
    groups
}

/// Every alert name clusterkit ships (for validating overrides and for tests).
pub fn alert_names(m: &Monitor) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for g in groups(m, &BTreeMap::new()) {
        for a in g.alerts {
            if !names.contains(&a.name) {
                names.push(a.name);
            }
        }
    }
    names
}

/// The rule file (`groups:` document) as a value ready to serialise.
pub fn rule_file(topology: &Topology, alert_for: &BTreeMap<String, PromDuration>) -> Value {
    let groups: Vec<Value> = groups(topology.monitor(), alert_for)
        .into_iter()
        .map(|g| {
            let rules: Vec<Value> = g
                .alerts
                .into_iter()
                .map(|a| {
                    let mut rule = json!({
                        "alert": a.name,
                        "expr": a.expr,
                    });
                    if let Some(f) = a.for_ {
                        rule["for"] = json!(f.to_string());
                    }
                    rule["labels"] = json!({ "severity": a.severity });
                    rule["annotations"] = json!({
                        "summary": a.summary,
                        "description": a.description,
                    });
                    rule
                })
                .collect();
            json!({ "name": format!("clusterkit-{}", g.name), "rules": rules })
        })
        .collect();
    json!({ "groups": groups })
}
