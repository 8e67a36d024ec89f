//! Durations written the way Prometheus writes them (`15s`, `2m`, `1h30m`, `7d`): what the
//! command line's tuning flags take and what the generated configs print.
//!
//! Only the units Prometheus accepts are allowed: ms, s, m, h, d, w, y (y = 365 d).

use std::fmt;
use std::time::Duration;

/// A duration that prints back in Prometheus syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    pub const fn secs(s: u64) -> Self {
        PromDuration(Duration::from_secs(s))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// Parses `1h30m`, `15s`, `500ms`; an empty string or a zero total is an error.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let text = text.trim();
        let err = |problem| DurationError {
            text: text.to_string(),
            problem,
        };
        if text.is_empty() {
            return Err(err(Problem::Empty));
        }
        let mut total_ms: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(err(Problem::NotADuration));
            }
            let number: u128 = rest[..digits].parse().map_err(|_| err(Problem::TooLarge))?;
            rest = &rest[digits..];
            let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let factor: u128 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                "y" => 365 * 86_400_000,
                "" => return Err(err(Problem::MissingUnit)),
                other => return Err(err(Problem::UnknownUnit(other.to_string()))),
            };
            total_ms = number
                .checked_mul(factor)
                .and_then(|n| total_ms.checked_add(n))
                .ok_or_else(|| err(Problem::TooLarge))?;
        }
        if total_ms == 0 {
            return Err(err(Problem::Zero));
        }
        let ms = u64::try_from(total_ms).map_err(|_| err(Problem::TooLarge))?;
        Ok(PromDuration(Duration::from_millis(ms)))
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {problem}")]
pub struct DurationError {
    /// The text as given (trimmed).
    pub text: String,
    pub problem: Problem,
}

/// What is wrong with a duration's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("empty duration")]
    Empty,
    #[error("not a duration like 30s, 5m, 1h")]
    NotADuration,
    #[error("missing unit (ms, s, m, h, d, w, y)")]
    MissingUnit,
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    #[error("too large")]
    TooLarge,
    #[error("is zero")]
    Zero,
}

impl fmt::Display for PromDuration {
    /// The shortest exact form in the largest units: 90s prints as `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for PromDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        for (text, secs, shown) in [
            ("15s", 15, "15s"),
            ("90s", 90, "1m30s"),
            ("1h30m", 5400, "1h30m"),
            ("7d", 7 * 86400, "7d"),
            ("1w", 7 * 86400, "7d"),
        ] {
            let d = PromDuration::parse(text).unwrap();
            assert_eq!(d.0.as_secs(), secs, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        assert_eq!(PromDuration::parse("500ms").unwrap().to_string(), "500ms");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "10",
            "s",
            "5x",
            "0s",
            "-1s",
            "1.5m",
            "340282366920938463463374607431768211455y",
            "18446744073709551615w",
        ] {
            assert!(PromDuration::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
