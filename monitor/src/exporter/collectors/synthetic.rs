//! Synthetic series for benchmarks only (`--synthetic-series N` or
//! `CLUSTERKIT_MONITOR_SYNTHETIC_SERIES=N`): N gauges with two labels each, refreshed like a
//! real collector, so scrape cost can be measured at a realistic size without a large cluster.

use std::time::Duration;

use async_trait::async_trait;

use super::{gauge, CollectError, Collector, Metrics};

pub struct SyntheticCollector {
    pub series: usize,
    pub interval: Duration,
}

#[async_trait]
impl Collector for SyntheticCollector {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn collect(&self, metrics: &Metrics) -> Result<(), CollectError> {
        let g = gauge(
            metrics,
            "clusterkit_synthetic_series",
            "Benchmark-only synthetic series.",
            &["group", "index"],
        )?;
        let now = chrono::Utc::now().timestamp() as f64;
        for i in 0..self.series {
            let group = (i % 50).to_string();
            let index = i.to_string();
            g.with_label_values(&[group.as_str(), index.as_str()])
                .set(now + i as f64);
        }
        Ok(())
    }
}
