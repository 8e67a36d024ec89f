//! etcd, member by member, over TLS with the metrics client certificate (verified against the
//! etcd CA): up, leader, database size and use, revision, raft index/term, active alarms, and
//! the member count each member reports.
//!
//! Each member is asked directly (one endpoint per client), so a partitioned member shows up
//! as itself rather than being hidden behind a load-balanced connection. Members are probed
//! concurrently; one slow member costs at most the timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    AlarmAction, AlarmType, Certificate, Client, ConnectOptions, Identity, TlsOptions,
};

use clusterkit_core::config::Role;

use super::{flag, gauge, CollectError, Collector, Metrics};
use crate::error::MonitorError;
use crate::topology::{endpoint, Topology};
use clusterkit_core::error_chain as chain;

/// A member to probe.
#[derive(Debug, Clone)]
pub struct Member {
    /// Host name from cluster.yaml (the `member` label).
    pub name: String,
    /// `https://address:port`.
    pub endpoint: String,
}

pub struct EtcdCollector {
    pub members: Vec<Member>,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub quota_bytes: u64,
    pub interval: Duration,
    pub timeout: Duration,
}

impl EtcdCollector {
    pub fn new(topology: &Topology) -> Self {
        let pki = topology.pki();
        let client = pki.etcd_metrics_client();
        let m = topology.monitor();
        EtcdCollector {
            members: topology
                .hosts_with(Role::Etcd)
                .map(|h| Member {
                    name: h.name.clone(),
                    endpoint: format!("https://{}", endpoint(h, m.ports.etcd)),
                })
                .collect(),
            ca: pki.etcd_ca(),
            cert: client.cert,
            key: client.key,
            quota_bytes: m.etcd_quota_bytes,
            interval: Duration::from_secs(m.intervals.etcd_secs),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Why a member gave no status.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("etcd")]
    Etcd(#[source] etcd_client::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What one member said.
#[derive(Debug, Default)]
struct MemberStatus {
    id: u64,
    leader: u64,
    db_size: i64,
    db_in_use: i64,
    revision: i64,
    raft_index: u64,
    raft_applied_index: u64,
    raft_term: u64,
    members: usize,
    /// (member id, alarm) pairs, cluster-wide.
    alarms: Vec<(u64, AlarmType)>,
    /// member id → name, from member_list.
    names: BTreeMap<u64, String>,
}

async fn probe(
    member: &Member,
    options: ConnectOptions,
) -> Result<MemberStatus, etcd_client::Error> {
    let mut client = Client::connect([member.endpoint.as_str()], Some(options)).await?;
    let status = client.status().await?;
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await?;
    let list = client.member_list().await?;
    let header = status.header();
    Ok(MemberStatus {
        id: header.map(|h| h.member_id()).unwrap_or(0),
        leader: status.leader(),
        db_size: status.db_size(),
        db_in_use: status.raft_used_db_size(),
        revision: header.map(|h| h.revision()).unwrap_or(0),
        raft_index: status.raft_index(),
        raft_applied_index: status.raft_applied_index(),
        raft_term: status.raft_term(),
        members: list.members().len(),
        alarms: alarms
            .alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect(),
        names: list
            .members()
            .iter()
            .map(|m| (m.id(), m.name().to_string()))
            .collect(),
    })
}

#[async_trait]
impl Collector for EtcdCollector {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError> {
        let up = gauge(
            metrics,
            "clusterkit_etcd_member_up",
            "1 when the member answered a status call over TLS.",
            &["member"],
        )?;
        let duration = gauge(
            metrics,
            "clusterkit_etcd_probe_duration_seconds",
            "Time to connect and ask the member for status, alarms and members.",
            &["member"],
        )?;
        let quota = gauge(
            metrics,
            "clusterkit_etcd_quota_bytes",
            "The backend quota the cluster is configured with.",
            &[],
        )?;
        quota
            .with_label_values::<&str>(&[])
            .set(self.quota_bytes as f64);
        if self.members.is_empty() {
            return Ok(());
        }
        let has_leader = gauge(
            metrics,
            "clusterkit_etcd_member_has_leader",
            "1 when the member knows a leader.",
            &["member"],
        )?;
        let is_leader = gauge(
            metrics,
            "clusterkit_etcd_member_is_leader",
            "1 when the member is the leader.",
            &["member"],
        )?;
        let leader_info = gauge(
            metrics,
            "clusterkit_etcd_leader_info",
            "Always 1; the leader's member id (hex) as this member sees it.",
            &["member", "leader_id"],
        )?;
        let db_size = gauge(
            metrics,
            "clusterkit_etcd_db_size_bytes",
            "Size of the member's backend database file.",
            &["member"],
        )?;
        let db_in_use = gauge(
            metrics,
            "clusterkit_etcd_db_size_in_use_bytes",
            "Logically used part of the backend database.",
            &["member"],
        )?;
        let revision = gauge(
            metrics,
            "clusterkit_etcd_revision",
            "Current store revision.",
            &["member"],
        )?;
        let raft_index = gauge(
            metrics,
            "clusterkit_etcd_raft_index",
            "Raft committed index.",
            &["member"],
        )?;
        let raft_applied = gauge(
            metrics,
            "clusterkit_etcd_raft_applied_index",
            "Raft applied index.",
            &["member"],
        )?;
        let raft_term = gauge(
            metrics,
            "clusterkit_etcd_raft_term",
            "Raft term.",
            &["member"],
        )?;
        let members = gauge(
            metrics,
            "clusterkit_etcd_members",
            "Members in the cluster as this member reports them.",
            &["member"],
        )?;
        let alarm = gauge(
            metrics,
            "clusterkit_etcd_alarm_active",
            "1 while an alarm (NOSPACE, CORRUPT) is raised on the member.",
            &["member", "alarm"],
        )?;

        let read =
            |path: &std::path::Path| std::fs::read(path).map_err(|e| MonitorError::io(path, e));
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        let options = ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout);

        let probes = self.members.iter().map(|m| {
            let options = options.clone();
            async move {
                let start = Instant::now();
                let result = tokio::time::timeout(self.timeout * 2, probe(m, options)).await;
                let result = match result {
                    Ok(r) => r.map_err(ProbeError::Etcd),
                    Err(_) => Err(ProbeError::Timeout(self.timeout * 2)),
                };
                (m, start.elapsed(), result)
            }
        });
        let results = futures::future::join_all(probes).await;
        // Alarms are cluster-wide: collect them from any member that answered, keyed by the
        // member name clusterkit knows (etcd member names are host names when clusterkit
        // installed them; the id is shown otherwise).
        let mut alarms: BTreeMap<String, Vec<AlarmType>> = BTreeMap::new();
        for (m, elapsed, result) in &results {
            let name = m.name.as_str();
            duration
                .with_label_values(&[name])
                .set(elapsed.as_secs_f64());
            match result {
                Ok(s) => {
                    up.with_label_values(&[name]).set(1.0);
                    has_leader
                        .with_label_values(&[name])
                        .set(flag(s.leader != 0));
                    is_leader
                        .with_label_values(&[name])
                        .set(flag(s.leader != 0 && s.leader == s.id));
                    leader_info
                        .with_label_values(&[name, format!("{:x}", s.leader).as_str()])
                        .set(1.0);
                    db_size.with_label_values(&[name]).set(s.db_size as f64);
                    db_in_use.with_label_values(&[name]).set(s.db_in_use as f64);
                    revision.with_label_values(&[name]).set(s.revision as f64);
                    raft_index
                        .with_label_values(&[name])
                        .set(s.raft_index as f64);
                    raft_applied
                        .with_label_values(&[name])
                        .set(s.raft_applied_index as f64);
                    raft_term.with_label_values(&[name]).set(s.raft_term as f64);
                    members.with_label_values(&[name]).set(s.members as f64);
                    for (id, a) in &s.alarms {
                        let who = s
                            .names
                            .get(id)
                            .filter(|n| !n.is_empty())
                            .cloned()
                            .unwrap_or_else(|| format!("{id:x}"));
                        alarms.entry(who).or_default().push(*a);
                    }
                }
                Err(e) => {
                    tracing::debug!(member = %name, error = %chain(e), "etcd member did not answer");
                    up.with_label_values(&[name]).set(0.0);
                }
            }
        }
        for m in &self.members {
            let raised = alarms.get(&m.name).cloned().unwrap_or_default();
            for (label, kind) in [
                ("NOSPACE", AlarmType::Nospace),
                ("CORRUPT", AlarmType::Corrupt),
            ] {
                alarm
                    .with_label_values(&[m.name.as_str(), label])
                    .set(flag(raised.contains(&kind)));
            }
        }
        Ok(())
    }
}
