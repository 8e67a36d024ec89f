//! Run one operation on many hosts in parallel, bounded, with per-host progress and a summary.
//!
//! The pieces, smallest useful API first:
//! - [`Fanout::run`]: runs an async operation once per host, at most `concurrency` at a time
//!   (one `tokio::sync::Semaphore`), shows a progress line per host on stderr (indicatif;
//!   hidden when stderr is not a terminal), and returns one [`HostResult`] per host, in input
//!   order, each with its duration.
//! - [`check`]: turns the results into `Err(FanoutError)` — "2 of 5 hosts failed: w1, w2" —
//!   when any host failed; a command then exits non-zero with that message.
//! - [`summary_table`] / [`summary_json`]: the per-host summary (ok/failed, duration, error) for
//!   stdout; [`table`] renders any rows as aligned columns.
//! - [`connect_all`]: from the resolved cluster.yaml to connected [`SshExecutor`]s (each
//!   host's target from [`inventory::ssh_target`](crate::inventory::ssh_target)).
//!
//! ```no_run
//! # async fn demo(cluster: &clusterkit_core::config::Cluster) -> Result<(), Box<dyn std::error::Error>> {
//! use clusterkit_core::exec::Executor;
//! use clusterkit_core::fanout::{self, Fanout};
//! let hosts = cluster.select(&[], &[])?;
//! let fan = Fanout::new("uptime", cluster.ssh.concurrency);
//! let connected = fanout::connect_all(cluster, &hosts, &fan).await;
//! let ready: Vec<_> = connected.iter().filter_map(|r| r.result.as_ref().ok()).map(|e| (e.host().to_string(), e.clone())).collect();
//! let results = fan.run(ready, |ssh| async move { ssh.sh("uptime").await }).await;
//! print!("{}", fanout::summary_table(&results));
//! fanout::check(&results)?;
//! # Ok(()) }
//! ```
//!
//! Limits: operations run as futures of the calling task (no `tokio::spawn`), so they may
//! borrow; a panicking operation aborts the whole fan-out like any panic.

use std::fmt::Display;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::config::{Cluster, Host};
use crate::exec::ssh::SshExecutor;
use crate::exec::ExecError;
use crate::inventory::ssh_target;

/// How one host's operation ended.
#[derive(Debug)]
pub struct HostResult<T, E> {
    /// The host's name.
    pub host: String,
    /// Wall time of the operation on this host (waiting for a concurrency slot excluded).
    pub duration: Duration,
    pub result: Result<T, E>,
}

impl<T, E> HostResult<T, E> {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Some hosts failed. The message names them: "2 of 5 hosts failed: w1, w2".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} of {total} hosts failed: {}", failed.len(), failed.join(", "))]
pub struct FanoutError {
    /// The failed hosts, in input order.
    pub failed: Vec<String>,
    /// How many hosts took part.
    pub total: usize,
}

/// Runs operations on many hosts, bounded by a concurrency limit.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// What is being done, shown on each progress line ("ping", "exec", "install etcd").
    label: String,
    /// Most hosts worked on at once (at least 1).
    concurrency: usize,
    /// Whether to draw progress lines (only ever on a terminal).
    progress: bool,
}

impl Fanout {
    /// A fan-out doing `label` on at most `concurrency` hosts at once (at least 1, and never
    /// more than a semaphore can count, whatever the caller passes). Progress is drawn on
    /// stderr when it is a terminal.
    pub fn new(label: impl Into<String>, concurrency: usize) -> Self {
        Fanout {
            label: label.into(),
            concurrency: concurrency.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// No progress lines, even on a terminal (for nested fan-outs or quiet modes).
    pub fn quiet(mut self) -> Self {
        self.progress = false;
        self
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Runs `op` once per `(host name, item)`, at most `concurrency` at a time, and returns
    /// the results in the order of `items`.
    pub async fn run<I, T, E, F, Fut>(
        &self,
        items: Vec<(String, I)>,
        op: F,
    ) -> Vec<HostResult<T, E>>
    where
        F: Fn(I) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        let semaphore = tokio::sync::Semaphore::new(self.concurrency);
        let multi = MultiProgress::with_draw_target(if self.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let width = items.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
        let style = ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let op = &op;
        let semaphore = &semaphore;
        let tasks = items.into_iter().map(|(host, item)| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{host:width$}"));
            bar.set_message("waiting");
            let label = self.label.clone();
            async move {
                // The semaphore lives as long as this function and is never closed.
                let _permit = semaphore.acquire().await.ok();
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                let started = Instant::now();
                let result = op(item).await;
                let duration = started.elapsed();
                match &result {
                    Ok(_) => bar.finish_with_message(format!("{label}: ok ({duration:.1?})")),
                    Err(err) => {
                        let first = err.to_string();
                        let first = first.lines().next().unwrap_or_default().to_string();
                        bar.finish_with_message(format!("{label}: FAILED ({duration:.1?}) {first}"))
                    }
                }
                HostResult {
                    host,
                    duration,
                    result,
                }
            }
        });
        futures::future::join_all(tasks).await
    }
}

/// `Err` naming the failed hosts when any failed.
pub fn check<T, E>(results: &[HostResult<T, E>]) -> Result<(), FanoutError> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.result.is_err())
        .map(|r| r.host.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(FanoutError {
            failed,
            total: results.len(),
        })
    }
}

/// One row of the summary, as printed and as serialized for `-o json`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub host: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    pub duration_ms: u128,
    pub error: Option<String>,
}

/// The summary rows of a fan-out.
pub fn summary<T, E: Display>(results: &[HostResult<T, E>]) -> Vec<SummaryRow> {
    results
        .iter()
        .map(|r| SummaryRow {
            host: r.host.clone(),
            status: if r.result.is_ok() { "ok" } else { "failed" },
            duration_ms: r.duration.as_millis(),
            error: r.result.as_ref().err().map(|e| e.to_string()),
        })
        .collect()
}

/// The summary as an aligned table (HOST STATUS DURATION ERROR) for stdout.
pub fn summary_table<T, E: Display>(results: &[HostResult<T, E>]) -> String {
    let rows: Vec<Vec<String>> = summary(results)
        .into_iter()
        .map(|r| {
            vec![
                r.host,
                r.status.to_string(),
                format!("{:.2}s", r.duration_ms as f64 / 1000.0),
                r.error
                    .map(|e| e.lines().next().unwrap_or_default().to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(&["HOST", "STATUS", "DURATION", "ERROR"], &rows)
}

/// The summary as pretty JSON (an array of [`SummaryRow`]).
pub fn summary_json<T, E: Display>(results: &[HostResult<T, E>]) -> String {
    serde_json::to_string_pretty(&summary(results)).unwrap_or_else(|_| "[]".into())
}

/// Renders rows under headers as left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            text.push_str(&format!("{cell:width$}  "));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Connects to every host in `hosts` through `fanout` (progress shown as "connect").
/// Each result holds a ready executor or why the host could not be reached.
pub async fn connect_all(
    cluster: &Cluster,
    hosts: &[&Host],
    fanout: &Fanout,
) -> Vec<HostResult<Arc<SshExecutor>, ExecError>> {
    let items = hosts
        .iter()
        .map(|h| (h.name.clone(), ssh_target(cluster, h)))
        .collect();
    fanout
        .run(items, |target| async move {
            Ok(Arc::new(SshExecutor::connect(target?).await?))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_checked() {
        let running = std::sync::atomic::AtomicUsize::new(0);
        let peak = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<(String, usize)> = (0..10).map(|i| (format!("h{i}"), i)).collect();
        let fan = Fanout::new("test", 3).quiet();
        let results = fan
            .run(items, |i| {
                let (running, peak) = (&running, &peak);
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, SeqCst);
                    if i % 4 == 1 {
                        Err(format!("boom {i}"))
                    } else {
                        Ok(i * 2)
                    }
                }
            })
            .await;
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
        let hosts: Vec<_> = results.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(
            hosts,
            ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"]
        );
        assert_eq!(results[2].result.as_ref().unwrap(), &4);
        let err = check(&results).unwrap_err();
        assert_eq!(err.to_string(), "3 of 10 hosts failed: h1, h5, h9");
        let text = summary_table(&results);
        assert!(text.starts_with("HOST"), "{text}");
        assert!(text.contains("h5    failed"), "{text}");
        assert!(text.contains("boom 5"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&summary_json(&results)).unwrap();
        assert_eq!(json[1]["status"], "failed");
        assert_eq!(json[0]["error"], serde_json::Value::Null);
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }
}
