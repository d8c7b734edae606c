//! Version pins: which versions a pool may run, in one syntax for both OS families.
//!
//! A pin is a comma-separated list of comparators that must all hold:
//!
//! | pin | means |
//! |---|---|
//! | `4081.2.0` | exactly 4081.2.0 |
//! | `<=4230` | any version whose first component is at most 4230 (4230.9.9 included) |
//! | `4081.*` | any 4081.x.y |
//! | `>=41.20241109.3.0, <42` | from that CoreOS build up to, not including, Fedora 42 |
//!
//! A comparator with fewer components than the version compares only that prefix, so
//! `<=4230` admits every 4230.x.y and `<42` every 41.*. For CoreOS, a comparator that names
//! the stream (three or more components) only compares with versions of that stream: the
//! stream is checked first and a mismatch is an error (versions do not order across
//! streams); shorter comparators (`<42`, `>=41.20241109`) compare the Fedora major and date
//! of any stream.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::version::{OsVersion, VersionError};

/// Why a pin was refused; names the column of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version pin {input:?}, column {column}: {what}")]
pub struct PinError {
    /// The whole pin text.
    pub input: String,
    /// 1-based column of the problem.
    pub column: usize,
    /// What is wrong there.
    pub what: String,
}

/// A comparison operator in a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOp {
    /// `=` (or no operator): prefix equal.
    Eq,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl PinOp {
    fn as_str(self) -> &'static str {
        match self {
            PinOp::Eq => "",
            PinOp::Lt => "<",
            PinOp::Le => "<=",
            PinOp::Gt => ">",
            PinOp::Ge => ">=",
        }
    }
}

/// One `OP PREFIX[.*]` term of a pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparator {
    /// The operator.
    pub op: PinOp,
    /// The numeric components written (empty for a bare `*`).
    pub parts: Vec<u64>,
    /// Whether the term ended in `*`.
    pub wildcard: bool,
}

impl Comparator {
    fn matches(&self, version: &OsVersion) -> Result<bool, VersionError> {
        let comps = version.components();
        if let OsVersion::CoreOs(v) = version
            && self.parts.len() >= 3
            && self.parts[2] != u64::from(v.stream)
        {
            return Err(VersionError::CrossStream {
                a: version.to_string(),
                b: self.to_string(),
                sa: v.stream,
                sb: u16::try_from(self.parts[2]).unwrap_or(u16::MAX),
            });
        }
        let n = self.parts.len().min(comps.len());
        let ord = comps[..n].cmp(&self.parts[..n]);
        // A comparator longer than the version (5 parts against semver) compares as if the
        // version were padded with zeros.
        let ord = if ord == Ordering::Equal && self.parts.len() > comps.len() {
            if self.parts[comps.len()..].iter().all(|p| *p == 0) {
                Ordering::Equal
            } else {
                Ordering::Less
            }
        } else {
            ord
        };
        Ok(match self.op {
            PinOp::Eq => ord == Ordering::Equal,
            PinOp::Lt => ord == Ordering::Less,
            PinOp::Le => ord != Ordering::Greater,
            PinOp::Gt => ord == Ordering::Greater,
            PinOp::Ge => ord != Ordering::Less,
        })
    }
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        let parts: Vec<String> = self.parts.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))?;
        if self.wildcard {
            f.write_str(if self.parts.is_empty() { "*" } else { ".*" })?;
        }
        Ok(())
    }
}

/// A parsed version pin (see the module docs for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPin {
    text: String,
    comparators: Vec<Comparator>,
}

impl VersionPin {
    /// Parses a pin.
    pub fn parse(input: &str) -> Result<Self, PinError> {
        let err = |column: usize, what: &str| PinError {
            input: input.to_string(),
            column,
            what: what.to_string(),
        };
        let mut comparators = Vec::new();
        let mut offset = 0;
        for term in input.split(',') {
            let lead = term.len() - term.trim_start().len();
            let body = term.trim();
            let col = offset + lead + 1;
            let term_start = offset + 1;
            offset += term.len() + 1;
            if body.is_empty() {
                return Err(err(
                    term_start,
                    "empty comparator (expected something like <=4230 or 4081.*)",
                ));
            }
            let (op, rest, oplen) = if let Some(r) = body.strip_prefix("<=") {
                (PinOp::Le, r, 2)
            } else if let Some(r) = body.strip_prefix(">=") {
                (PinOp::Ge, r, 2)
            } else if let Some(r) = body.strip_prefix("==") {
                (PinOp::Eq, r, 2)
            } else if let Some(r) = body.strip_prefix('<') {
                (PinOp::Lt, r, 1)
            } else if let Some(r) = body.strip_prefix('>') {
                (PinOp::Gt, r, 1)
            } else if let Some(r) = body.strip_prefix('=') {
                (PinOp::Eq, r, 1)
            } else {
                (PinOp::Eq, body, 0)
            };
            let rest_lead = rest.len() - rest.trim_start().len();
            let rest = rest.trim_start();
            let mut col = col + oplen + rest_lead;
            if rest.is_empty() {
                return Err(err(col, "expected a version after the operator"));
            }
            let mut parts = Vec::new();
            let mut wildcard = false;
            let segments: Vec<&str> = rest.split('.').collect();
            for (i, seg) in segments.iter().enumerate() {
                if *seg == "*" {
                    if i + 1 != segments.len() {
                        return Err(err(col, "a wildcard * may only come last"));
                    }
                    if op != PinOp::Eq {
                        return Err(err(
                            col,
                            "a wildcard only makes sense without an operator (write 4081.* or <=4081)",
                        ));
                    }
                    wildcard = true;
                } else if seg.is_empty() {
                    return Err(err(col, "empty version component"));
                } else if let Some(bad) = seg.find(|c: char| !c.is_ascii_digit()) {
                    return Err(err(
                        col + bad,
                        &format!(
                            "unexpected {:?} (version components are numbers)",
                            &seg[bad..=bad]
                        ),
                    ));
                } else {
                    parts.push(
                        seg.parse()
                            .map_err(|_| err(col, "version component too large"))?,
                    );
                }
                col += seg.len() + 1;
            }
            if parts.len() > 5 {
                return Err(err(col, "too many version components"));
            }
            comparators.push(Comparator {
                op,
                parts,
                wildcard,
            });
        }
        Ok(VersionPin {
            text: input.trim().to_string(),
            comparators,
        })
    }

    /// Whether `version` satisfies every comparator. An error when a comparator names a
    /// different CoreOS stream than the version's.
    pub fn allows(&self, version: &OsVersion) -> Result<bool, VersionError> {
        for c in &self.comparators {
            if !c.matches(version)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The comparators, in the order written.
    pub fn comparators(&self) -> &[Comparator] {
        &self.comparators
    }

    /// The pin as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for VersionPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for VersionPin {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VersionPin::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::OsFamily;

    fn allows(pin: &str, v: &str) -> bool {
        VersionPin::parse(pin)
            .unwrap()
            .allows(&OsVersion::parse_any(v).unwrap())
            .unwrap()
    }

    #[test]
    fn exact_pin_admits_only_that_version() {
        assert!(allows("4081.2.0", "4081.2.0"));
        assert!(!allows("4081.2.0", "4081.2.1"));
        assert!(allows("=4081.2.0", "4081.2.0"));
    }

    #[test]
    fn upper_bound_on_the_major_admits_its_minor_releases() {
        assert!(allows("<=4230", "4230.9.9"));
        assert!(allows("<=4230", "4081.2.0"));
        assert!(!allows("<=4230", "4231.0.0"));
        assert!(!allows("<4230", "4230.0.0"));
    }

    #[test]
    fn wildcard_admits_a_major() {
        assert!(allows("4081.*", "4081.3.0"));
        assert!(!allows("4081.*", "4082.0.0"));
        assert!(allows("*", "4082.0.0"));
    }

    #[test]
    fn a_range_over_coreos_versions() {
        let pin = ">=41.20241109.3.0, <42";
        assert!(allows(pin, "41.20241109.3.0"));
        assert!(allows(pin, "41.20241201.3.1"));
        assert!(!allows(pin, "41.20241101.3.0"));
        assert!(!allows(pin, "42.20250101.3.0"));
    }

    #[test]
    fn a_pin_naming_a_stream_refuses_other_streams() {
        let pin = VersionPin::parse(">=41.20241109.3.0").unwrap();
        let testing = OsVersion::parse(OsFamily::Fcos, "41.20241201.2.0").unwrap();
        assert!(matches!(
            pin.allows(&testing),
            Err(VersionError::CrossStream { .. })
        ));
        // A pin on the major only compares any stream.
        assert!(VersionPin::parse("<42").unwrap().allows(&testing).unwrap());
    }

    #[test]
    fn errors_name_the_column() {
        let e = VersionPin::parse("<=42x0").unwrap_err();
        assert_eq!(e.column, 5);
        assert!(e.to_string().contains("unexpected \"x\""), "{e}");
        let e = VersionPin::parse(">=41.1, ").unwrap_err();
        assert_eq!(e.column, 8);
        assert!(e.what.contains("empty comparator"));
        let e = VersionPin::parse("<=4081.*").unwrap_err();
        assert!(e.what.contains("wildcard only makes sense"), "{e}");
        let e = VersionPin::parse("4081.*.1").unwrap_err();
        assert!(e.what.contains("only come last"), "{e}");
        let e = VersionPin::parse("<=").unwrap_err();
        assert_eq!(e.column, 3);
        let e = VersionPin::parse("4081..1").unwrap_err();
        assert!(e.what.contains("empty version component"));
    }

    #[test]
    fn display_keeps_what_was_written() {
        assert_eq!(VersionPin::parse(" <=4230 ").unwrap().to_string(), "<=4230");
        assert_eq!(
            VersionPin::parse("4081.*").unwrap().comparators()[0].to_string(),
            "4081.*"
        );
    }
}
