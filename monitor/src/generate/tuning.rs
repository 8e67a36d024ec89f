//! The generated files' settings that are not keys of cluster.yaml, given on the command line
//! (`--scrape-interval`, `--evaluation-interval`, `--alert-for`, `--group-wait`,
//! `--group-interval`). Everything else comes from cluster.yaml through core's resolved model.
//!
//! Limits: an override is checked only against the alert names clusterkit ships.

use std::collections::BTreeMap;

use crate::duration::PromDuration;
use crate::error::{MonitorError, Result};
use crate::generate::rules;
use crate::topology::Topology;

/// Settings of the generated files that are not keys of cluster.yaml, given on the command
/// line. Everything else comes from cluster.yaml through core's resolved model.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Prometheus's scrape interval instead of `monitor.intervals.scrape_secs`.
    pub scrape_interval: Option<PromDuration>,
    /// Prometheus's evaluation interval instead of `monitor.intervals.evaluation_secs`.
    pub evaluation_interval: Option<PromDuration>,
    /// `ALERT=DURATION` pairs overriding an alert's `for:`.
    pub alert_for: BTreeMap<String, PromDuration>,
    /// Alertmanager's wait before the first notification of a group (default 30s).
    pub group_wait: Option<PromDuration>,
    /// Alertmanager's wait before notifying about changes in a group (default 5m).
    pub group_interval: Option<PromDuration>,
}

impl Tuning {
    /// Refuses an `alert_for` entry naming an alert clusterkit does not ship.
    pub fn check(&self, topology: &Topology) -> Result<()> {
        let known = rules::alert_names(topology.monitor());
        match self.alert_for.keys().find(|n| !known.contains(&n.as_str())) {
            Some(name) => Err(MonitorError::UnknownAlert {
                name: name.clone(),
                known,
            }),
            None => Ok(()),
        }
    }

    /// Prometheus's scrape interval: the command line's, else cluster.yaml's.
    pub fn scrape_interval(&self, topology: &Topology) -> PromDuration {
        self.scrape_interval
            .unwrap_or(PromDuration::secs(topology.monitor().intervals.scrape_secs))
    }

    /// Prometheus's rule evaluation interval: the command line's, else cluster.yaml's.
    pub fn evaluation_interval(&self, topology: &Topology) -> PromDuration {
        self.evaluation_interval.unwrap_or(PromDuration::secs(
            topology.monitor().intervals.evaluation_secs,
        ))
    }
}
