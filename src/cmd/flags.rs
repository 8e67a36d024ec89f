//! Value parsers for the numeric and duration flags: every number has a range, checked by clap
//! while parsing, so a value outside it fails before anything runs with an error naming the
//! flag and the range (`invalid value '0' for '--concurrency <N>': 0 is not in 1..=1024`).
//!
//! Ranges cluster.yaml shares come from `clusterkit_core::config::grammar`; the ones only a
//! flag has live here. Limits: clap checks the number, not what it means together with other
//! flags (a command does that).

use std::ops::RangeInclusive;

use clap::builder::{RangedI64ValueParser, RangedU64ValueParser};
use clusterkit_core::config::grammar::{self, Range};

/// A flag counted in `T` (u64, usize, u32), inside `range`.
fn ranged<T>(range: RangeInclusive<u64>) -> RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    RangedU64ValueParser::<T>::new().range(range)
}

/// A flag with the same range as a cluster.yaml setting.
fn shared<T>(range: &Range) -> RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    ranged(range.bounds.clone())
}

/// `--concurrency` (hosts at once): as `ssh.concurrency`.
pub fn concurrency() -> RangedU64ValueParser<usize> {
    shared(&grammar::CONCURRENCY)
}

/// `exec --timeout` (seconds): as `ssh.command_timeout_secs`.
pub fn command_timeout_secs() -> RangedU64ValueParser<u64> {
    shared(&grammar::COMMAND_TIMEOUT_SECS)
}

/// `--part-size-mib`: as `backup.s3.part_size_mib`.
pub fn part_size_mib() -> RangedU64ValueParser<u64> {
    shared(&grammar::PART_SIZE_MIB)
}

/// `--parts-in-flight`: as `backup.s3.parts_in_flight`.
pub fn parts_in_flight() -> RangedU64ValueParser<usize> {
    shared(&grammar::PARTS_IN_FLIGHT)
}

/// `--compression-level`: as `backup.compression_level`.
pub fn compression_level() -> RangedI64ValueParser<i32> {
    let b = &grammar::COMPRESSION_LEVEL.bounds;
    RangedI64ValueParser::<i32>::new()
        .range(i64::try_from(*b.start()).unwrap_or(1)..=i64::try_from(*b.end()).unwrap_or(22))
}

/// `--keep-last`, `--hourly`, …: as `backup.retention.*`, except that 0 turns a rule off.
pub fn retention_count() -> RangedU64ValueParser<u32> {
    ranged(0..=*grammar::RETENTION_COUNT.bounds.end())
}

/// `--lock-ttl-secs`: the store lock lives 10 s to a day without renewal (it is renewed
/// while the backup runs, so a long backup needs no long TTL).
pub fn lock_ttl_secs() -> RangedU64ValueParser<u64> {
    ranged(10..=86_400)
}

/// `--once-window-secs`: a backup finished at most a day ago counts for this tick.
pub fn once_window_secs() -> RangedU64ValueParser<u64> {
    ranged(0..=86_400)
}

/// `node remove --drain-timeout` and `monitor deploy --wait-secs`: a second to a day.
pub fn wait_secs() -> RangedU64ValueParser<u64> {
    ranged(1..=86_400)
}

/// `certs check-expiration --fail-within` (days): up to the longest certificate life.
pub fn fail_within_days() -> RangedI64ValueParser<i64> {
    let end = i64::try_from(*grammar::CA_VALIDITY_DAYS.bounds.end()).unwrap_or(36_500);
    RangedI64ValueParser::<i64>::new().range(0..=end)
}

/// `monitor serve --synthetic-series` (benchmarks): at most ten million series.
pub fn synthetic_series() -> RangedU64ValueParser<usize> {
    ranged(0..=10_000_000)
}

/// `--cron`: an expression `config validate` accepts for `backup.schedule` (every field's
/// range checked: a minute of 61 is refused here, not at the first tick).
pub fn cron(s: &str) -> Result<String, grammar::GrammarError> {
    grammar::parse_cron(s).map(|_| s.trim().to_string())
}

/// `--on-calendar`: one line without control characters (it is written into a unit file;
/// systemd checks the calendar syntax when the timer is installed).
pub fn unit_line(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.contains(|c: char| c.is_control()) {
        return Err("needs one non-empty line without control characters".into());
    }
    Ok(s.to_string())
}

/// `sandbox up --nodes`: 1 to the sandbox's node limit.
pub fn sandbox_nodes() -> RangedU64ValueParser<usize> {
    ranged(1..=u64::try_from(clusterkit_sandbox::MAX_NODES).unwrap_or(99))
}

#[cfg(test)]
mod tests {
    //! The second fuzz target: every numeric and duration flag, given proptest-generated
    //! values (integer limits, signs, spaces, other digits, durations with every unit and
    //! huge counts), through clap and then through what the command builds from the value.
    //! Property: a value clap accepts is inside the documented range and converts without a
    //! panic; a refused one gets an error naming the flag. Fixed seed and bounded cases in
    //! the normal suite; `CLUSTERKIT_FUZZ_CASES` and `CLUSTERKIT_FUZZ_SEED` make a longer run.

    use clap::Parser;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use crate::Cli;

    /// How a flag's accepted value is checked after parsing.
    #[derive(Clone, Copy, Debug)]
    enum Then {
        /// An integer inside this range.
        Range(i128, i128),
        /// A Prometheus duration, printed back and converted.
        PromDuration,
        /// A bootstrap-token TTL, turned into an expiration date.
        TokenTtl,
        /// Seconds turned into a signed duration (`--lock-ttl-secs`, `--once-window-secs`).
        Seconds(i128, i128),
        /// MiB turned into a part size for a store.
        PartSize,
        /// A cron expression the scheduler parses.
        Cron,
    }

    /// (argv before the flag, the flag, argv after it, the check).
    fn flags() -> Vec<(Vec<&'static str>, &'static str, Vec<&'static str>, Then)> {
        use Then::*;
        vec![
            (
                vec!["exec"],
                "--concurrency",
                vec!["--", "true"],
                Range(1, 1024),
            ),
            (
                vec!["exec"],
                "--timeout",
                vec!["--", "true"],
                Range(1, 604_800),
            ),
            (vec!["install"], "--concurrency", vec![], Range(1, 1024)),
            (vec!["backup", "etcd"], "--part-size-mib", vec![], PartSize),
            (
                vec!["backup", "etcd"],
                "--parts-in-flight",
                vec![],
                Range(1, 64),
            ),
            (
                vec!["backup", "etcd"],
                "--compression-level",
                vec![],
                Range(1, 22),
            ),
            (
                vec!["backup", "etcd"],
                "--lock-ttl-secs",
                vec![],
                Seconds(10, 86_400),
            ),
            (
                vec!["backup", "prune"],
                "--keep-last",
                vec![],
                Range(0, 100_000),
            ),
            (
                vec!["backup", "prune"],
                "--monthly",
                vec![],
                Range(0, 100_000),
            ),
            (
                vec!["backup", "schedule", "--once"],
                "--once-window-secs",
                vec![],
                Seconds(0, 86_400),
            ),
            (
                vec!["backup", "namespace", "-A"],
                "--page-size",
                vec![],
                Range(1, 10_000),
            ),
            (
                vec!["restore", "namespace", "x"],
                "--concurrency",
                vec![],
                Range(1, 1024),
            ),
            (
                vec!["certs", "check-expiration"],
                "--fail-within",
                vec![],
                Range(0, 36_500),
            ),
            (
                vec!["node", "remove", "n1"],
                "--drain-timeout",
                vec![],
                Range(1, 86_400),
            ),
            (
                vec!["monitor", "deploy"],
                "--wait-secs",
                vec![],
                Range(1, 86_400),
            ),
            (
                vec!["monitor", "serve"],
                "--synthetic-series",
                vec![],
                Range(0, 10_000_000),
            ),
            (vec!["sandbox", "up"], "--nodes", vec![], Range(1, 99)),
            (
                vec!["monitor", "config", "-d", "/nonexistent"],
                "--scrape-interval",
                vec![],
                PromDuration,
            ),
            (
                vec!["monitor", "config", "-d", "/nonexistent"],
                "--group-wait",
                vec![],
                PromDuration,
            ),
            (vec!["token", "create"], "--ttl", vec![], TokenTtl),
            (vec!["backup", "schedule"], "--cron", vec![], Cron),
            (
                vec!["backup", "install-timer", "--print-cronjob"],
                "--cron",
                vec![],
                Cron,
            ),
        ]
    }

    /// Values that have broken number and duration parsers before.
    const AWKWARD: &[&str] = &[
        "",
        "0",
        "-0",
        "+1",
        "1",
        "-1",
        " 5",
        "5 ",
        "1_000",
        "1e3",
        "0x10",
        "٣",
        "10",
        "4294967296",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "340282366920938463463374607431768211456",
        "1s",
        "0s",
        "1ms",
        "24h",
        "3650d",
        "3651d",
        "1y",
        "1h30m",
        "18446744073709551615y",
        "340282366920938463463374607431768211455ms",
        "5x",
        "s",
        "1.5m",
        "1d1d1d1d",
    ];

    fn value() -> impl Strategy<Value = String> {
        let units = ["", "ms", "s", "m", "h", "d", "w", "y", "x"];
        prop_oneof![
            3 => (0..AWKWARD.len()).prop_map(|i| AWKWARD[i].to_string()),
            2 => any::<u64>().prop_map(|n| n.to_string()),
            2 => any::<i64>().prop_map(|n| n.to_string()),
            2 => (0u64..200_000).prop_map(|n| n.to_string()),
            2 => (any::<u64>(), 0..units.len()).prop_map(move |(n, u)| format!("{}{}", n % 100_000, units[u])),
            1 => (any::<u64>(), 0..units.len()).prop_map(move |(n, u)| format!("{n}{}", units[u])),
            1 => proptest::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
        ]
    }

    fn check(pre: &[&str], flag: &str, post: &[&str], then: Then, v: &str) -> Result<(), String> {
        let arg = format!("{flag}={v}");
        let mut argv = vec!["clusterkit"];
        argv.extend_from_slice(pre);
        argv.push(&arg);
        argv.extend_from_slice(post);
        let parsed = std::panic::catch_unwind(|| Cli::try_parse_from(&argv).map(|_| ()))
            .map_err(|_| format!("clap panicked on {argv:?}"))?;
        if let Err(e) = parsed {
            let text = e.to_string();
            return if text.contains(flag) {
                Ok(())
            } else {
                Err(format!("{argv:?} refused without naming {flag}: {text}"))
            };
        }
        let converted = std::panic::catch_unwind(|| accepted(then, v))
            .map_err(|_| format!("converting {v:?} for {flag} panicked"))?;
        converted.map_err(|e| format!("{flag}={v:?} accepted but {e}"))
    }

    fn accepted(then: Then, v: &str) -> Result<(), String> {
        let int = || {
            v.parse::<i128>()
                .map_err(|e| format!("not an integer: {e}"))
        };
        match then {
            Then::Range(lo, hi) => {
                let n = int()?;
                (lo..=hi)
                    .contains(&n)
                    .then_some(())
                    .ok_or(format!("{n} is outside {lo}..={hi}"))
            }
            Then::Seconds(lo, hi) => {
                let n = int()?;
                if !(lo..=hi).contains(&n) {
                    return Err(format!("{n} is outside {lo}..={hi}"));
                }
                let secs = u64::try_from(n).map_err(|e| e.to_string())?;
                let d = crate::cmd::backup::seconds(secs, "--flag").map_err(|e| e.to_string())?;
                clusterkit_backup::chrono::Utc::now()
                    .checked_sub_signed(d)
                    .map(|_| ())
                    .ok_or_else(|| "the window reaches before the earliest date".into())
            }
            Then::PartSize => {
                let n = u64::try_from(int()?).map_err(|e| e.to_string())?;
                let flags = clusterkit_backup::settings::StoreOverrides {
                    store: Some("file:///nonexistent".into()),
                    part_size_mib: Some(n),
                    ..Default::default()
                };
                clusterkit_backup::settings::store(&flags, None)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Then::PromDuration => {
                let d = clusterkit_monitor::duration::PromDuration::parse(v)
                    .map_err(|e| e.to_string())?;
                let _ = d.to_string();
                let _ = d.as_duration();
                Ok(())
            }
            Then::Cron => clusterkit_backup::schedule::parse_cron(v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Then::TokenTtl => {
                let ttl = clusterkit_installer::token::parse_ttl(v).map_err(|e| e.to_string())?;
                clusterkit_installer::token::expires_at(ttl, clusterkit_backup::chrono::Utc::now())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The values that once crashed or wrapped, each refused before anything runs, with the
    /// flag and its range in the message.
    #[test]
    fn values_that_once_crashed_are_refused_with_flag_and_range() {
        for (argv, needle) in [
            (
                &[
                    "exec",
                    "--concurrency",
                    "18446744073709551615",
                    "--",
                    "true",
                ][..],
                "'--concurrency <CONCURRENCY>': 18446744073709551615 is not in 1..=1024",
            ),
            (
                &["backup", "etcd", "--part-size-mib", "99999999"][..],
                "'--part-size-mib <PART_SIZE_MIB>': 99999999 is not in 5..=5120",
            ),
            (
                &["backup", "etcd", "--lock-ttl-secs", "18446744073709551615"][..],
                "'--lock-ttl-secs <LOCK_TTL_SECS>': 18446744073709551615 is not in 10..=86400",
            ),
            (
                &["backup", "schedule", "--cron", "61 * * * *"][..],
                "'--cron <CRON>': \"61 * * * *\" is not a cron expression",
            ),
        ] {
            let Err(e) =
                Cli::try_parse_from(std::iter::once("clusterkit").chain(argv.iter().copied()))
            else {
                panic!("{argv:?} accepted");
            };
            let text = e.to_string();
            assert!(text.contains(needle), "{argv:?}: {text}");
        }
    }

    #[test]
    fn every_awkward_value_for_every_flag() {
        for (pre, flag, post, then) in flags() {
            for v in AWKWARD {
                if let Err(e) = check(&pre, flag, &post, then, v) {
                    panic!("{e}");
                }
            }
        }
    }

    #[test]
    fn generated_values_for_every_flag() {
        let mut run = crate::fuzz::runner(400, 0x0066_6c61_6773, 256);
        let table = flags();
        let result = run.runner.run(&(0..table.len(), value()), |(i, v)| {
            let (pre, flag, post, then) = &table[i];
            check(pre, flag, post, *then, &v).map_err(TestCaseError::fail)
        });
        run.report("fuzz_flags", "");
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
