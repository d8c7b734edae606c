//! Durations as people write them in the policy: `90s`, `15m`, `4h`, `1h30m`.
//!
//! The same units as Go's `time.ParseDuration` (and so as `kubectl --timeout`), restricted
//! to whole seconds and up: `h`, `m`, `s`. A policy never needs finer than a second.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration (write it like 90s, 15m, 4h or 1h30m)")]
    Empty,
    /// A part without a number in front of its unit.
    #[error("expected a number at position {position} of {input:?}")]
    ExpectedNumber {
        /// The whole input.
        input: String,
        /// Byte offset (1-based) of the problem.
        position: usize,
    },
    /// A number not followed by `h`, `m` or `s`.
    #[error("unknown or missing unit at position {position} of {input:?} (use h, m or s)")]
    BadUnit {
        /// The whole input.
        input: String,
        /// Byte offset (1-based) of the problem.
        position: usize,
    },
    /// The value does not fit in a u64 number of seconds.
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

/// Parses `1h30m`-style durations.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(DurationError::ExpectedNumber {
                input: input.to_string(),
                position: start + 1,
            });
        }
        let n: u64 = s[start..i]
            .parse()
            .map_err(|_| DurationError::Overflow(input.to_string()))?;
        let unit = match bytes.get(i) {
            Some(b'h') => 3600,
            Some(b'm') => 60,
            Some(b's') => 1,
            _ => {
                return Err(DurationError::BadUnit {
                    input: input.to_string(),
                    position: i + 1,
                });
            }
        };
        i += 1;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way [`parse_duration`] reads it, largest units first (`1h30m`).
pub fn format_duration(d: Duration) -> String {
    HumanDuration(d).to_string()
}

/// Display adapter for [`format_duration`].
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(" 2m5s "), Ok(Duration::from_secs(125)));
    }

    #[test]
    fn rejects_garbage_naming_the_position() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        let e = parse_duration("15x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown or missing unit at position 3 of \"15x\" (use h, m or s)"
        );
        let e = parse_duration("h5").unwrap_err();
        assert_eq!(e.to_string(), "expected a number at position 1 of \"h5\"");
        assert!(matches!(
            parse_duration("15"),
            Err(DurationError::BadUnit { position: 3, .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_round_trip() {
        for s in ["0s", "90s", "15m", "4h", "1h30m", "2h0m5s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
    }
}
