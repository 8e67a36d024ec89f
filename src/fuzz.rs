//! The fuzz targets' shared runner (test builds only): proptest with a fixed seed and a
//! bounded number of cases, so the normal suite replays the same inputs every time;
//! `CLUSTERKIT_FUZZ_CASES` and `CLUSTERKIT_FUZZ_SEED` override both for a longer run.
//!
//! Used by the flag target (`cmd::flags`) and, through `#[path]`, by `tests/fuzz_config.rs`,
//! so both read the variables and report their rate the same way.

use std::time::Instant;

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A configured runner and what it was configured with.
pub struct Run {
    pub runner: TestRunner,
    /// Cases to run.
    pub cases: u32,
    /// The seed of the deterministic generator.
    pub seed: u64,
    started: Instant,
}

/// A runner of `default_cases` cases from `default_seed`, unless the environment says
/// otherwise. Failures are not persisted to files (the printed input is what to keep).
pub fn runner(default_cases: u32, default_seed: u64, max_shrink_iters: u32) -> Run {
    let cases = std::env::var("CLUSTERKIT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let seed = std::env::var("CLUSTERKIT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_seed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    Run {
        runner,
        cases,
        seed,
        started: Instant::now(),
    }
}

impl Run {
    /// Prints `name: N cases (seed S) in T s, R execs/s` and anything `extra` adds.
    pub fn report(&self, name: &str, extra: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {} cases (seed {}) in {secs:.1} s, {:.0} execs/s{extra}",
            self.cases,
            self.seed,
            f64::from(self.cases) / secs
        );
    }
}
