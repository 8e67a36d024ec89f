//! What the strings of a cluster file must be, one function per kind: OCI image references,
//! Linux user names, cron expressions, and the numeric ranges every number is checked against.
//!
//! Validation (`validate.rs`) calls these and adds the position; the backup scheduler parses
//! cron expressions with [`parse_cron`] too, so what validation accepts is what runs.
//!
//! Limits: an image reference is checked by its grammar only (nothing is pulled); a user name
//! by the portable shadow-utils rule, not by what one host's `useradd` happens to allow.

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

/// A value that does not fit its grammar or range. Validation adds the position in the file.
#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    #[error(
        "{value} is outside {lo}..={hi}{} ({why})",
        if unit.is_empty() { String::new() } else { format!(" {unit}") }
    )]
    OutOfRange {
        value: u64,
        lo: u64,
        hi: u64,
        unit: &'static str,
        why: &'static str,
    },

    #[error(
        "{value:?} is not an image {kind} ({why}; grammar: [registry[:port]/]path[:tag][@digest], \
         lowercase path)"
    )]
    Image {
        value: String,
        /// `reference` or `repository`.
        kind: &'static str,
        why: &'static str,
    },

    #[error(
        "{0:?} is not a Linux user name (a lowercase letter or '_', then lowercase letters, \
         digits, '_' or '-'; at most {USER_MAX})"
    )]
    UserName(String),

    #[error(
        "{expr:?} is not a cron expression: {fields} fields, expected 5 (minute hour \
         day-of-month month day-of-week) or 6 (seconds first)"
    )]
    CronFields { expr: String, fields: usize },

    #[error("{expr:?} is not a cron expression: {source}")]
    Cron {
        expr: String,
        #[source]
        source: cron::error::Error,
    },
}

/// A closed range of a numeric setting, with the unit its error message uses.
#[derive(Clone, Debug)]
pub struct Range {
    /// Smallest and largest allowed value.
    pub bounds: RangeInclusive<u64>,
    /// What the number counts ("seconds", "days", "hosts"), for messages.
    pub unit: &'static str,
    /// Why the bound is what it is, for messages.
    pub why: &'static str,
}

impl Range {
    const fn new(lo: u64, hi: u64, unit: &'static str, why: &'static str) -> Self {
        Range {
            bounds: lo..=hi,
            unit,
            why,
        }
    }

    /// `Ok(v)` inside the range, else the message naming the range.
    pub fn check(&self, v: u64) -> Result<u64, GrammarError> {
        if self.bounds.contains(&v) {
            Ok(v)
        } else {
            Err(GrammarError::OutOfRange {
                value: v,
                lo: *self.bounds.start(),
                hi: *self.bounds.end(),
                unit: self.unit,
                why: self.why,
            })
        }
    }
}

/// `ssh.concurrency` and `--concurrency`: hosts worked on at once. Each is an SSH connection
/// and a few file descriptors; beyond a thousand the operator's machine runs out first.
pub const CONCURRENCY: Range = Range::new(1, 1024, "hosts", "SSH connections at once");
/// `ssh.connect_timeout_secs`: at most an hour.
pub const CONNECT_TIMEOUT_SECS: Range = Range::new(1, 3600, "seconds", "an SSH connection attempt");
/// `ssh.command_timeout_secs` and `exec --timeout`: at most a week.
pub const COMMAND_TIMEOUT_SECS: Range = Range::new(
    1,
    7 * 86_400,
    "seconds",
    "one remote command, at most a week",
);
/// `pki.ca_validity_days`: at most 100 years (X.509 dates end in 9999; a CA that outlives
/// its operators helps nobody).
pub const CA_VALIDITY_DAYS: Range = Range::new(1, 36_500, "days", "at most 100 years");
/// `pki.cert_validity_days` and `pki.renew_before_days` share the CA's ceiling.
pub const CERT_VALIDITY_DAYS: Range = Range::new(1, 36_500, "days", "at most 100 years");
/// `backup.s3.part_size_mib` and `--part-size-mib`: S3's part size limits.
pub const PART_SIZE_MIB: Range = Range::new(5, 5120, "MiB", "S3 part size limits");
/// `backup.s3.parts_in_flight` and `--parts-in-flight`: each part is held in memory.
pub const PARTS_IN_FLIGHT: Range = Range::new(1, 64, "parts", "each one is held in memory");
/// `backup.compression_level` and `--compression-level`: zstd's levels.
pub const COMPRESSION_LEVEL: Range = Range::new(1, 22, "", "zstd levels");
/// `backup.retention.*`: how many backups a rule keeps.
pub const RETENTION_COUNT: Range = Range::new(1, 100_000, "backups", "a retention rule");
/// `monitor.intervals.*`: how often something is scraped or collected, at most a day.
pub const INTERVAL_SECS: Range = Range::new(1, 86_400, "seconds", "at most a day");
/// `monitor.etcd_quota_bytes`: etcd caps its backend quota at 8 GiB.
pub const ETCD_QUOTA_BYTES: Range = Range::new(
    1 << 20,
    8 << 30,
    "bytes",
    "etcd's backend quota, 1 MiB to 8 GiB",
);
/// `monitor.backup_max_age_secs`: at most a year.
pub const BACKUP_MAX_AGE_SECS: Range = Range::new(60, 366 * 86_400, "seconds", "at most a year");

static IMAGE_REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    // The grammar of github.com/distribution/reference (regexp.go), ASCII only.
    let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
    let ipv6 = r"\[[a-fA-F0-9:]+\]";
    let host = format!("(?:{domain_name}|{ipv6})");
    let domain = format!("{host}(?::[0-9]+)?");
    let alnum = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]+)";
    let path_component = format!("{alnum}(?:{separator}{alnum})*");
    let remote = format!("{path_component}(?:/{path_component})*");
    let name = format!("(?:{domain}/)?{remote}");
    let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    let pattern = format!("^(?P<name>{name})(?::{tag})?(?:@{digest})?$");
    #[allow(
        clippy::expect_used,
        reason = "a constant pattern; the tests compile it"
    )]
    Regex::new(&pattern).expect("the image reference grammar compiles")
});

/// Longest repository name the distribution spec allows.
const NAME_MAX: usize = 255;

/// An image reference (`registry.k8s.io/pause:3.9`, `repo@sha256:…`) by the OCI distribution
/// grammar. `Err` says what is wrong.
pub fn image_reference(s: &str) -> Result<(), GrammarError> {
    image(s, true)
}

/// A repository without tag or digest (`registry.k8s.io`, `10.0.0.1:5000/k8s`), the prefix
/// image names are built on.
pub fn image_repository(s: &str) -> Result<(), GrammarError> {
    image(s, false)
}

fn image(s: &str, tag_allowed: bool) -> Result<(), GrammarError> {
    let bad = |why: &'static str| GrammarError::Image {
        value: s.to_string(),
        kind: if tag_allowed {
            "reference"
        } else {
            "repository"
        },
        why,
    };
    let Some(caps) = IMAGE_REFERENCE.captures(s) else {
        return Err(bad("does not match the OCI reference grammar"));
    };
    let name_len = caps.name("name").map_or(0, |m| m.as_str().len());
    if name_len > NAME_MAX {
        return Err(bad("the name is longer than 255 characters"));
    }
    if !tag_allowed && name_len != s.len() {
        return Err(bad("no tag or digest here"));
    }
    Ok(())
}

/// Longest user name shadow-utils accepts.
const USER_MAX: usize = 32;

/// A Linux user name by the portable rule: a lowercase letter or `_`, then lowercase letters,
/// digits, `_` or `-`, at most 32 characters (the name reaches `sudo -u` and paths).
pub fn user_name(s: &str) -> Result<(), GrammarError> {
    let ok = !s.is_empty()
        && s.len() <= USER_MAX
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(GrammarError::UserName(s.to_string()))
    }
}

/// Parses a cron expression: five fields (minute first) or six (seconds first), or an `@`
/// shortcut. Every field's range is checked (a minute of 61 is refused).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, GrammarError> {
    let expr = expr.trim();
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(GrammarError::CronFields {
            expr: expr.to_string(),
            fields,
        });
    }
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|source| GrammarError::Cron {
        expr: expr.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        for ok in [
            "registry.k8s.io/pause:3.9",
            "pause",
            "docker.io/library/busybox:1.36",
            "localhost:5000/a/b_c__d-e.f:v1",
            "10.0.0.1:5000/pause:3.2",
            "[fd00::1]:5000/pause",
            "pause@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "r.io/p:t@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(
                image_reference(ok).map_err(|e| e.to_string()),
                Ok(()),
                "{ok}"
            );
        }
        for bad in [
            "::::",
            "",
            "Registry.k8s.io/Pause:3.9",
            "registry.k8s.io/pause:",
            "registry.k8s.io//pause",
            "https://registry.k8s.io/pause",
            "pause:3.9 ",
            "pause@sha256:abc",
            "-pause",
            "pause:.tag",
        ] {
            assert!(image_reference(bad).is_err(), "{bad:?} accepted");
        }
        assert!(image_reference(&format!("r.io/{}", "a".repeat(260))).is_err());
        assert_eq!(
            image_repository("registry.k8s.io").map_err(|e| e.to_string()),
            Ok(())
        );
        assert_eq!(
            image_repository("10.0.0.1:5000/k8s").map_err(|e| e.to_string()),
            Ok(())
        );
        assert!(image_repository("registry.k8s.io/pause:3.9").is_err());
    }

    #[test]
    fn user_names_are_portable_linux_names() {
        for ok in ["root", "ops", "_svc", "deploy-1", "a_b"] {
            assert_eq!(user_name(ok).map_err(|e| e.to_string()), Ok(()), "{ok}");
        }
        for bad in [
            "root;rm -rf /",
            "",
            "Root",
            "1abc",
            "-x",
            "a b",
            "üser",
            &"a".repeat(33),
        ] {
            assert!(user_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cron_fields_are_range_checked() {
        for ok in ["0 */6 * * *", "@daily", "0 0 */6 * * *", "30 2 * * 1-5"] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in [
            "61 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "@sometimes",
            "* * *",
            "x y z a b",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ranges_name_their_bounds() {
        assert_eq!(CONCURRENCY.check(16).map_err(|e| e.to_string()), Ok(16));
        let e = CONCURRENCY.check(u64::MAX).unwrap_err().to_string();
        assert!(e.contains("1..=1024"), "{e}");
    }
}
