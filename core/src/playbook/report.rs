//! The per-host summary of a run: ok/changed/failed/skipped counts, time, remote commands and
//! the error that stopped a host — printed as a table, or as JSON/YAML with `-o`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::modules::Status;

/// One host's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostReport {
    pub ok: u32,
    pub changed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Wall time spent on this host, all plays.
    pub duration_ms: u64,
    /// Remote round trips issued to this host.
    pub commands: u64,
    /// What stopped the host (task and error), if anything did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostReport {
    pub fn count(&mut self, status: Status) {
        match status {
            Status::Ok => self.ok += 1,
            Status::Changed => self.changed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Whether this was a check-mode run (nothing was changed).
    pub check: bool,
    /// Per host, by name.
    pub hosts: BTreeMap<String, HostReport>,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}

impl RunReport {
    /// Hosts that failed.
    pub fn failed_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|(_, r)| r.failed > 0 && r.error.is_some())
            .map(|(h, _)| h.as_str())
            .collect()
    }

    /// Total changed tasks over all hosts.
    pub fn changed(&self) -> u32 {
        self.hosts.values().map(|r| r.changed).sum()
    }

    /// A table for people, with "N of M hosts failed" at the end.
    pub fn table(&self) -> String {
        let width = self.hosts.keys().map(String::len).max().unwrap_or(4).max(4);
        let mut out = format!(
            "{:width$}  {:>4} {:>7} {:>6} {:>7} {:>8} {:>8}\n",
            "HOST", "OK", "CHANGED", "FAILED", "SKIPPED", "TIME", "COMMANDS"
        );
        for (host, r) in &self.hosts {
            let _ = writeln!(
                out,
                "{host:width$}  {:>4} {:>7} {:>6} {:>7} {:>7.1}s {:>8}",
                r.ok,
                r.changed,
                r.failed,
                r.skipped,
                r.duration_ms as f64 / 1000.0,
                r.commands
            );
        }
        for (host, r) in &self.hosts {
            if let Some(e) = &r.error {
                let _ = writeln!(out, "{host}: {e}");
            }
        }
        let failed = self.failed_hosts().len();
        let _ = writeln!(
            out,
            "{failed} of {} hosts failed{} ({:.1}s)",
            self.hosts.len(),
            if self.check {
                "; check mode: nothing was changed"
            } else {
                ""
            },
            self.duration_ms as f64 / 1000.0
        );
        out
    }
}
