//! Node checks over SSH (through `clusterkit_core`'s executor, so known_hosts verification,
//! jump hosts and sudo work as everywhere else): reachable, swap on, sysctl drift from the
//! desired values, kernel module presence, state of containerd/kubelet/etcd, clock offset.
//!
//! One shell round trip per host and run; hosts are probed concurrently (bounded by
//! `ssh.concurrency`). A host that cannot be reached is a metric (`clusterkit_node_reachable 0`),
//! not a collector failure. The clock offset is the host's clock minus the midpoint of the
//! exporter's clock around the command, so it includes up to half the round trip.
//!
//! Limits: a module counts as present when `/sys/module/M` exists, or `M` is a filesystem in
//! `/proc/filesystems`, or (br_netfilter) `/proc/sys/net/bridge` exists — built-in modules
//! leave no trace in `lsmod`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clusterkit_core::exec::{Command, Executor};

use clusterkit_core::config::{Host, Role};

use super::{flag, gauge, CollectError, Collector, Metrics};
use crate::topology::{runs_kubelet, Topology};

/// Kernel modules Kubernetes networking needs.
pub const MODULES: &[&str] = &["overlay", "br_netfilter"];

/// Sysctls every Kubernetes node needs, checked in addition to cluster.yaml's `sysctls`.
pub const REQUIRED_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
];

/// One host to check.
pub struct NodeTarget {
    pub host: String,
    pub executor: Arc<dyn Executor>,
    /// systemd units expected active on this host.
    pub units: Vec<&'static str>,
}

pub struct NodeCollector {
    pub targets: Vec<NodeTarget>,
    /// Desired sysctls (key → value).
    pub sysctls: BTreeMap<String, String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
}

/// The units a host should run, from its roles.
pub fn expected_units(host: &Host) -> Vec<&'static str> {
    let mut units = Vec::new();
    if runs_kubelet(host) {
        units.extend(["containerd", "kubelet"]);
    }
    if host.has_role(Role::Etcd) {
        units.push("etcd");
    }
    units
}

impl NodeCollector {
    /// One lazily connecting SSH executor per host of the cluster.
    pub fn new(topology: &Topology) -> Self {
        let cluster = &topology.cluster;
        let targets = cluster
            .hosts
            .iter()
            .filter_map(|h| {
                let target = match clusterkit_core::inventory::ssh_target(cluster, h) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(host = %h.name, error = %e, "node checks disabled for this host");
                        return None;
                    }
                };
                Some(NodeTarget {
                    host: h.name.clone(),
                    executor: Arc::new(clusterkit_core::exec::ssh::SshExecutor::lazy(target)) as Arc<dyn Executor>,
                    units: expected_units(h),
                })
            })
            .collect();
        let mut sysctls: BTreeMap<String, String> = REQUIRED_SYSCTLS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sysctls.extend(cluster.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())));
        NodeCollector {
            targets,
            sysctls,
            interval: Duration::from_secs(topology.monitor().intervals.nodes_secs),
            timeout: Duration::from_secs(15),
            concurrency: cluster.ssh.concurrency.max(1),
        }
    }
}

/// Only characters sysctl names and unit names use, so the script needs no quoting games.
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

/// The shell script run on each host; prints `KIND NAME=VALUE` lines.
pub fn script(sysctls: &BTreeMap<String, String>, units: &[&str]) -> String {
    let mut s = String::from("echo \"now $(date +%s.%N)\"\necho \"swap $(awk 'NR>1{n++} END{print n+0}' /proc/swaps 2>/dev/null)\"\n");
    for key in sysctls.keys().filter(|k| safe(k)) {
        let path = key.replace('.', "/");
        s.push_str(&format!(
            "echo \"sysctl {key}=$(cat /proc/sys/{path} 2>/dev/null | tr -s '\\t ' ' ')\"\n"
        ));
    }
    for m in MODULES {
        let mut test = format!("[ -d /sys/module/{m} ] || grep -qw {m} /proc/filesystems");
        if *m == "br_netfilter" {
            test.push_str(" || [ -d /proc/sys/net/bridge ]");
        }
        s.push_str(&format!(
            "if {test}; then echo 'module {m}=1'; else echo 'module {m}=0'; fi\n"
        ));
    }
    for u in units.iter().filter(|u| safe(u)) {
        s.push_str(&format!(
            "echo \"unit {u}=$(systemctl is-active {u} 2>/dev/null)\"\n"
        ));
    }
    s
}

/// What one host reported.
#[derive(Debug, Default, PartialEq)]
pub struct NodeReport {
    pub now: Option<f64>,
    pub swap_devices: Option<u64>,
    pub sysctls: BTreeMap<String, String>,
    pub modules: BTreeMap<String, bool>,
    pub units: BTreeMap<String, String>,
}

/// Parses the script's output; unknown lines are ignored.
pub fn parse(output: &str) -> NodeReport {
    let mut r = NodeReport::default();
    for line in output.lines() {
        let Some((kind, rest)) = line.split_once(' ') else {
            continue;
        };
        match kind {
            "now" => r.now = rest.trim().parse().ok(),
            "swap" => r.swap_devices = rest.trim().parse().ok(),
            "sysctl" | "module" | "unit" => {
                let Some((name, value)) = rest.split_once('=') else {
                    continue;
                };
                let value = value.trim().to_string();
                match kind {
                    "sysctl" => {
                        r.sysctls.insert(name.to_string(), value);
                    }
                    "module" => {
                        r.modules.insert(name.to_string(), value == "1");
                    }
                    _ => {
                        r.units.insert(name.to_string(), value);
                    }
                }
            }
            _ => {}
        }
    }
    r
}

fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

#[async_trait]
impl Collector for NodeCollector {
    fn name(&self) -> &'static str {
        "nodes"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError> {
        let reachable = gauge(
            metrics,
            "clusterkit_node_reachable",
            "1 when the host answered a command over SSH.",
            &["host"],
        )?;
        let duration = gauge(
            metrics,
            "clusterkit_node_probe_duration_seconds",
            "Time the node checks took (connect included).",
            &["host"],
        )?;
        let swap = gauge(
            metrics,
            "clusterkit_node_swap_enabled",
            "1 when any swap device is active.",
            &["host"],
        )?;
        let sysctl = gauge(
            metrics,
            "clusterkit_node_sysctl_matches",
            "1 when the sysctl has the value cluster.yaml (or Kubernetes) needs.",
            &["host", "key"],
        )?;
        let module = gauge(
            metrics,
            "clusterkit_node_module_present",
            "1 when the kernel module is loaded or built in.",
            &["host", "module"],
        )?;
        let unit = gauge(
            metrics,
            "clusterkit_node_unit_active",
            "1 when the systemd unit is active.",
            &["host", "unit"],
        )?;
        let offset = gauge(
            metrics,
            "clusterkit_node_clock_offset_seconds",
            "Host clock minus the exporter's clock.",
            &["host"],
        )?;
        let semaphore = tokio::sync::Semaphore::new(self.concurrency);
        let runs = self.targets.iter().map(|t| {
            let semaphore = &semaphore;
            async move {
                let _permit = semaphore.acquire().await.ok();
                let command = Command::new(script(&self.sysctls, &t.units)).timeout(self.timeout);
                let before = now_secs();
                let result =
                    tokio::time::timeout(self.timeout * 2, t.executor.run_checked(&command)).await;
                let after = now_secs();
                (t, before, after, result)
            }
        });
        for (t, before, after, result) in futures::future::join_all(runs).await {
            let host = t.host.as_str();
            duration.with_label_values(&[host]).set(after - before);
            let output = match result {
                Ok(Ok(o)) => o.stdout_str(),
                Ok(Err(e)) => {
                    tracing::debug!(host, error = %e, "node checks failed");
                    reachable.with_label_values(&[host]).set(0.0);
                    continue;
                }
                Err(_) => {
                    reachable.with_label_values(&[host]).set(0.0);
                    continue;
                }
            };
            let r = parse(&output);
            reachable.with_label_values(&[host]).set(1.0);
            if let Some(n) = r.swap_devices {
                swap.with_label_values(&[host]).set(flag(n > 0));
            }
            if let Some(now) = r.now {
                offset
                    .with_label_values(&[host])
                    .set(now - (before + after) / 2.0);
            }
            for (key, want) in &self.sysctls {
                let matches = r
                    .sysctls
                    .get(key)
                    .map(|got| got.split_whitespace().eq(want.split_whitespace()))
                    .unwrap_or(false);
                sysctl
                    .with_label_values(&[host, key.as_str()])
                    .set(flag(matches));
            }
            for (m, present) in &r.modules {
                module
                    .with_label_values(&[host, m.as_str()])
                    .set(flag(*present));
            }
            for u in &t.units {
                let active = r.units.get(*u).map(|s| s == "active").unwrap_or(false);
                unit.with_label_values(&[host, u]).set(flag(active));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit_core::exec::local::LocalExecutor;

    #[test]
    fn parses_the_report() {
        let r = parse("now 1700000000.5\nswap 0\nsysctl net.ipv4.ip_forward=1\nmodule overlay=1\nmodule br_netfilter=0\nunit kubelet=inactive\ngarbage\n");
        assert_eq!(r.now, Some(1700000000.5));
        assert_eq!(r.swap_devices, Some(0));
        assert_eq!(r.sysctls["net.ipv4.ip_forward"], "1");
        assert!(r.modules["overlay"] && !r.modules["br_netfilter"]);
        assert_eq!(r.units["kubelet"], "inactive");
    }

    /// Runs the real script on this machine through the local executor.
    #[tokio::test]
    async fn checks_this_machine() {
        let mut sysctls = BTreeMap::new();
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim()
            .to_string();
        sysctls.insert("net.ipv4.ip_forward".to_string(), forward);
        sysctls.insert(
            "kernel.hostname".to_string(),
            "surely-not-this-hostname".to_string(),
        );
        let c = NodeCollector {
            targets: vec![NodeTarget {
                host: "local".into(),
                executor: Arc::new(LocalExecutor::new("local", Duration::from_secs(10))),
                units: vec!["clusterkit-no-such-unit"],
            }],
            sysctls,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            concurrency: 1,
        };
        let metrics = Metrics::new();
        c.collect(&metrics).await.unwrap();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("clusterkit_node_reachable{host=\"local\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "clusterkit_node_sysctl_matches{host=\"local\",key=\"net.ipv4.ip_forward\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "clusterkit_node_sysctl_matches{host=\"local\",key=\"kernel.hostname\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "clusterkit_node_unit_active{host=\"local\",unit=\"clusterkit-no-such-unit\"} 0"
            ),
            "{text}"
        );
        let offset_line = text
            .lines()
            .find(|l| l.starts_with("clusterkit_node_clock_offset_seconds"))
            .expect(&text);
        let offset: f64 = offset_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(offset.abs() < 1.0, "same clock, offset {offset}");
    }
}
