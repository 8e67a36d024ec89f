//! The collectors behind `clusterkit monitor serve`. Each one runs on its own interval in the
//! background, writes its metrics into a fresh [`Metrics`] set, and the exporter caches the
//! encoded text: a scrape never waits for etcd, an HTTP probe or SSH.
//!
//! A collector reports what it observed even when the observed thing is down (that is a
//! metric, e.g. `clusterkit_etcd_member_up 0`); it returns an error only when it could not do
//! its job at all (unreadable certificates, a broken store), which sets
//! `clusterkit_collector_up{collector} 0`.

pub mod backups;
pub mod certs;
pub mod controlplane;
pub mod etcd;
pub mod nodes;
pub mod synthetic;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

/// Why a collector run failed (logged with its causes; never contains secrets).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The collector misused its metrics (a bug: bad name, wrong label count).
    #[error("metrics: {0}")]
    Metrics(String),
    /// Loading a certificate or reading a file failed.
    #[error(transparent)]
    Monitor(#[from] crate::MonitorError),
    /// The state directory is not there at all.
    #[error("{}: state directory does not exist (has the PKI phase run?)", path.display())]
    NoStateDir { path: std::path::PathBuf },
    /// A blocking task of the collector did not finish.
    #[error("{what} task failed")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The backup store could not be opened or read; `what` says which step.
    #[error("{what}")]
    Backup {
        what: String,
        #[source]
        source: crate::error::Cause,
    },
}

/// One source of metrics.
#[async_trait]
pub trait Collector: Send + Sync {
    /// Short name: the `collector` label of the self metrics.
    fn name(&self) -> &'static str;
    /// How often it runs.
    fn interval(&self) -> Duration;
    /// Observes and records its metrics into `metrics` (a fresh set per run).
    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError>;
}

/// The gauges of one collector run, kept as the text-format lines they will be served as.
///
/// Why not a `prometheus::Registry` per run (as before): a registry holds every child of a
/// vector, and `gather()` builds a protobuf copy of all of them before the text encoder runs —
/// several hundred bytes per series that malloc keeps after the run. With 5,000 series that was
/// most of the exporter's anonymous memory (bench/monitor/RESULTS.md). Here a series costs its
/// rendered label set and a float. Kept from the registry: names and label counts are checked
/// (an error fails the run instead of panicking), setting the same label values again keeps
/// the last value, families without samples are left out, output is sorted by family name and
/// label values. Only gauges (everything the collectors report is a gauge).
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Vec<Family>>,
    error: Mutex<Option<String>>,
}

struct Family {
    name: String,
    help: String,
    labels: Vec<String>,
    /// Rendered label set (`{a="x",b="y"}`, or empty) → value.
    samples: BTreeMap<String, f64>,
}

/// A gauge family in a [`Metrics`]; `with_label_values(..).set(v)` like the prometheus crate.
pub struct Gauge<'a> {
    metrics: &'a Metrics,
    index: usize,
}

/// One series of a [`Gauge`], ready to be set.
pub struct Series<'a> {
    gauge: &'a Gauge<'a>,
    labels: Option<String>,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Escapes a label value (`\\`, `\"`, `\n`) or HELP text (`\\`, `\n`) for the text format.
fn escape(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

impl Metrics {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Family>> {
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, message: String) {
        self.error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(message);
    }

    /// The text format (`# HELP`, `# TYPE`, samples) of every family with samples, or the
    /// first misuse (bad name, wrong label count) the run made.
    pub fn encode(self) -> Result<String, CollectError> {
        if let Some(e) = self.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(CollectError::Metrics(e));
        }
        let mut families = self
            .families
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        families.sort_by(|a, b| a.name.cmp(&b.name));
        let size: usize = families
            .iter()
            .map(|f| {
                f.help.len()
                    + 2 * f.name.len()
                    + 32
                    + f.samples
                        .keys()
                        .map(|k| f.name.len() + k.len() + 24)
                        .sum::<usize>()
            })
            .sum();
        let mut out = String::with_capacity(size);
        for f in families.iter().filter(|f| !f.samples.is_empty()) {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            escape(&mut out, &f.help, false);
            let _ = write!(out, "\n# TYPE {} gauge\n", f.name);
            for (labels, value) in &f.samples {
                out.push_str(&f.name);
                out.push_str(labels);
                out.push(' ');
                if value.is_nan() {
                    out.push_str("NaN");
                } else if value.is_infinite() {
                    out.push_str(if *value > 0.0 { "+Inf" } else { "-Inf" });
                } else {
                    let _ = write!(out, "{value}");
                }
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// Declares a gauge family with the given label names.
pub fn gauge<'a>(
    metrics: &'a Metrics,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<Gauge<'a>, CollectError> {
    if !valid_name(name, true) {
        return Err(CollectError::Metrics(format!(
            "invalid metric name `{name}`"
        )));
    }
    if let Some(l) = labels
        .iter()
        .find(|l| !valid_name(l, false) || l.starts_with("__"))
    {
        return Err(CollectError::Metrics(format!(
            "{name}: invalid label name `{l}`"
        )));
    }
    let mut families = metrics.lock();
    if families.iter().any(|f| f.name == name) {
        return Err(CollectError::Metrics(format!("{name} declared twice")));
    }
    families.push(Family {
        name: name.to_string(),
        help: help.to_string(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        samples: BTreeMap::new(),
    });
    Ok(Gauge {
        metrics,
        index: families.len() - 1,
    })
}

impl Gauge<'_> {
    /// The series with these label values (in the order of the family's label names).
    pub fn with_label_values<V: AsRef<str>>(&self, values: &[V]) -> Series<'_> {
        let families = self.metrics.lock();
        let family = &families[self.index];
        if values.len() != family.labels.len() {
            let message = format!(
                "{}: {} label values for {} labels",
                family.name,
                values.len(),
                family.labels.len()
            );
            drop(families);
            self.metrics.fail(message);
            return Series {
                gauge: self,
                labels: None,
            };
        }
        let mut rendered = String::new();
        for (i, (name, value)) in family.labels.iter().zip(values).enumerate() {
            rendered.push(if i == 0 { '{' } else { ',' });
            rendered.push_str(name);
            rendered.push_str("=\"");
            escape(&mut rendered, value.as_ref(), true);
            rendered.push('"');
        }
        if !rendered.is_empty() {
            rendered.push('}');
        }
        Series {
            gauge: self,
            labels: Some(rendered),
        }
    }
}

impl Series<'_> {
    /// Sets the value (a later set of the same series wins).
    pub fn set(self, value: f64) {
        if let Some(labels) = self.labels {
            self.gauge.metrics.lock()[self.gauge.index]
                .samples
                .insert(labels, value);
        }
    }
}

/// 1.0 for true.
pub fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_text_format() {
        let m = Metrics::new();
        let b = gauge(
            &m,
            "b_metric",
            "Help with \\ and\nnewline.",
            &["host", "unit"],
        )
        .unwrap();
        let a = gauge(&m, "a_metric", "No labels.", &[]).unwrap();
        let _empty = gauge(&m, "c_metric", "Never set: left out.", &["host"]).unwrap();
        b.with_label_values(&["n2", "kubelet"]).set(0.0);
        b.with_label_values(&["n1", "say \"hi\"\\\n"]).set(1.5);
        b.with_label_values(&["n2", "kubelet"]).set(1.0); // the last set wins
        a.with_label_values::<&str>(&[]).set(f64::INFINITY);
        assert_eq!(
            m.encode().unwrap(),
            "# HELP a_metric No labels.\n# TYPE a_metric gauge\na_metric +Inf\n\
             # HELP b_metric Help with \\\\ and\\nnewline.\n# TYPE b_metric gauge\n\
             b_metric{host=\"n1\",unit=\"say \\\"hi\\\"\\\\\\n\"} 1.5\n\
             b_metric{host=\"n2\",unit=\"kubelet\"} 1\n"
        );
    }

    #[test]
    fn misuse_fails_the_run_instead_of_panicking() {
        let m = Metrics::new();
        assert!(gauge(&m, "bad-name", "", &[]).is_err());
        assert!(gauge(&m, "ok", "", &["bad label"]).is_err());
        let g = gauge(&m, "ok", "", &["host"]).unwrap();
        assert!(gauge(&m, "ok", "", &["host"]).is_err(), "declared twice");
        g.with_label_values(&["a", "b"]).set(1.0);
        let err = m.encode().unwrap_err().to_string();
        assert!(err.contains("ok: 2 label values for 1 labels"), "{err}");
    }
}
