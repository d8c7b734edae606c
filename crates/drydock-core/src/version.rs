//! Operating-system versions of the two families drydock updates.
//!
//! Flatcar Container Linux numbers its releases with semver (`4081.2.0`): the major number
//! grows with every new build, so any two Flatcar versions compare. Fedora and RHEL CoreOS
//! use `MAJOR.DATE.STREAM.RESPIN` (`41.20241109.3.0`): the Fedora major, the date the
//! content was snapshotted, a stream code (1 next, 2 testing, 3 stable, 10/20 their
//! development streams, ...) and a respin counter. Such versions only order within one
//! stream — a `testing` build is not "older" or "newer" than a `stable` one — so comparing
//! across streams is an error, never a guess.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which OS a node runs; decides how its versions are read and how it is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Flatcar Container Linux, updated by update_engine (A/B USR partitions).
    Flatcar,
    /// Fedora CoreOS or RHEL CoreOS, updated by rpm-ostree deployments.
    Fcos,
}

impl OsFamily {
    /// The name used on the wire (`flatcar`, `fcos`).
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Flatcar => "flatcar",
            OsFamily::Fcos => "fcos",
        }
    }
}

impl fmt::Display for OsFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OsFamily {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flatcar" => Ok(OsFamily::Flatcar),
            "fcos" => Ok(OsFamily::Fcos),
            other => Err(VersionError::UnknownFamily(other.to_string())),
        }
    }
}

/// Why a version could not be read or compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not a Flatcar (semver) version.
    #[error(
        "{input:?} is not a Flatcar version (expected MAJOR.MINOR.PATCH like 4081.2.0): {detail}"
    )]
    BadFlatcar {
        /// The rejected text.
        input: String,
        /// What the semver parser said.
        detail: String,
    },
    /// Not a CoreOS version.
    #[error(
        "{input:?} is not a CoreOS version (expected MAJOR.YYYYMMDD.STREAM.RESPIN like 41.20241109.3.0): {detail}"
    )]
    BadCoreOs {
        /// The rejected text.
        input: String,
        /// Which part is wrong.
        detail: String,
    },
    /// Not an OS family drydock knows.
    #[error("unknown OS family {0:?} (expected flatcar or fcos)")]
    UnknownFamily(String),
    /// Two CoreOS versions from different streams.
    #[error("{a} and {b} are on different CoreOS streams ({sa} and {sb}) and do not order")]
    CrossStream {
        /// First version.
        a: String,
        /// Second version.
        b: String,
        /// Stream code of the first.
        sa: u16,
        /// Stream code of the second.
        sb: u16,
    },
    /// A Flatcar version against a CoreOS one.
    #[error("{a} ({fa}) and {b} ({fb}) belong to different OS families")]
    CrossFamily {
        /// First version.
        a: String,
        /// Its family.
        fa: OsFamily,
        /// Second version.
        b: String,
        /// Its family.
        fb: OsFamily,
    },
}

/// A Fedora/RHEL CoreOS version: `MAJOR.DATE.STREAM.RESPIN`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoreOsVersion {
    /// Fedora (or RHEL-derived) major release.
    pub major: u32,
    /// Snapshot date as `YYYYMMDD`.
    pub date: u32,
    /// Stream code (1 next, 2 testing, 3 stable, ...).
    pub stream: u16,
    /// Respin counter within the same date and stream.
    pub respin: u32,
}

impl CoreOsVersion {
    /// Parses `41.20241109.3.0`.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let bad = |detail: String| VersionError::BadCoreOs {
            input: input.to_string(),
            detail,
        };
        let parts: Vec<&str> = input.split('.').collect();
        if parts.len() != 4 {
            return Err(bad(format!(
                "has {} dot-separated parts, not 4",
                parts.len()
            )));
        }
        let names = ["major", "date", "stream", "respin"];
        let mut nums = [0u64; 4];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("the {} part {p:?} is not a number", names[i])));
            }
            nums[i] = p
                .parse()
                .map_err(|_| bad(format!("the {} part {p:?} is too large", names[i])))?;
        }
        let date = nums[1];
        let (y, m, d) = (date / 10_000, (date / 100) % 100, date % 100);
        if parts[1].len() != 8 || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 2000 {
            return Err(bad(format!(
                "the date part {:?} is not a YYYYMMDD date",
                parts[1]
            )));
        }
        let major =
            u32::try_from(nums[0]).map_err(|_| bad("the major part is too large".into()))?;
        let stream =
            u16::try_from(nums[2]).map_err(|_| bad("the stream part is too large".into()))?;
        let respin =
            u32::try_from(nums[3]).map_err(|_| bad("the respin part is too large".into()))?;
        Ok(CoreOsVersion {
            major,
            date: date as u32,
            stream,
            respin,
        })
    }

    /// Orders two versions of the same stream; an error across streams.
    pub fn compare(&self, other: &Self) -> Result<Ordering, VersionError> {
        if self.stream != other.stream {
            return Err(VersionError::CrossStream {
                a: self.to_string(),
                b: other.to_string(),
                sa: self.stream,
                sb: other.stream,
            });
        }
        Ok((self.major, self.date, self.respin).cmp(&(other.major, other.date, other.respin)))
    }
}

impl fmt::Display for CoreOsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.major, self.date, self.stream, self.respin
        )
    }
}

/// A version of either family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OsVersion {
    /// Flatcar: semver.
    Flatcar(semver::Version),
    /// Fedora/RHEL CoreOS.
    CoreOs(CoreOsVersion),
}

impl OsVersion {
    /// Parses a version of a known family.
    pub fn parse(family: OsFamily, input: &str) -> Result<Self, VersionError> {
        match family {
            OsFamily::Flatcar => semver::Version::parse(input)
                .map(OsVersion::Flatcar)
                .map_err(|e| VersionError::BadFlatcar {
                    input: input.to_string(),
                    detail: e.to_string(),
                }),
            OsFamily::Fcos => CoreOsVersion::parse(input).map(OsVersion::CoreOs),
        }
    }

    /// Parses a version whose family is not known: four parts with an 8-digit second part
    /// are CoreOS, anything else must be semver.
    pub fn parse_any(input: &str) -> Result<Self, VersionError> {
        let parts: Vec<&str> = input.split('.').collect();
        if parts.len() == 4 && parts[1].len() == 8 {
            OsVersion::parse(OsFamily::Fcos, input)
        } else {
            OsVersion::parse(OsFamily::Flatcar, input)
        }
    }

    /// The family this version belongs to.
    pub fn family(&self) -> OsFamily {
        match self {
            OsVersion::Flatcar(_) => OsFamily::Flatcar,
            OsVersion::CoreOs(_) => OsFamily::Fcos,
        }
    }

    /// The numeric components, most significant first; what version pins compare against.
    pub fn components(&self) -> Vec<u64> {
        match self {
            OsVersion::Flatcar(v) => vec![v.major, v.minor, v.patch],
            OsVersion::CoreOs(v) => vec![
                u64::from(v.major),
                u64::from(v.date),
                u64::from(v.stream),
                u64::from(v.respin),
            ],
        }
    }

    /// Orders two versions; an error across families or CoreOS streams.
    pub fn compare(&self, other: &Self) -> Result<Ordering, VersionError> {
        match (self, other) {
            (OsVersion::Flatcar(a), OsVersion::Flatcar(b)) => Ok(a.cmp(b)),
            (OsVersion::CoreOs(a), OsVersion::CoreOs(b)) => a.compare(b),
            _ => Err(VersionError::CrossFamily {
                a: self.to_string(),
                fa: self.family(),
                b: other.to_string(),
                fb: other.family(),
            }),
        }
    }
}

impl fmt::Display for OsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OsVersion::Flatcar(v) => v.fmt(f),
            OsVersion::CoreOs(v) => v.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fl(s: &str) -> OsVersion {
        OsVersion::parse(OsFamily::Flatcar, s).unwrap()
    }
    fn co(s: &str) -> OsVersion {
        OsVersion::parse(OsFamily::Fcos, s).unwrap()
    }

    #[test]
    fn flatcar_versions_order_as_semver() {
        assert_eq!(fl("4081.2.0").compare(&fl("4081.2.1")), Ok(Ordering::Less));
        assert_eq!(
            fl("4230.0.0").compare(&fl("4081.10.0")),
            Ok(Ordering::Greater)
        );
        assert_eq!(fl("4081.2.0").compare(&fl("4081.2.0")), Ok(Ordering::Equal));
    }

    #[test]
    fn coreos_versions_order_within_a_stream() {
        assert_eq!(
            co("41.20241109.3.0").compare(&co("41.20241122.3.0")),
            Ok(Ordering::Less)
        );
        assert_eq!(
            co("41.20241109.3.1").compare(&co("41.20241109.3.0")),
            Ok(Ordering::Greater)
        );
        assert_eq!(
            co("40.20241230.3.0").compare(&co("41.20241109.3.0")),
            Ok(Ordering::Less)
        );
    }

    #[test]
    fn comparing_across_streams_or_families_is_an_error() {
        let e = co("41.20241109.3.0")
            .compare(&co("41.20241109.2.0"))
            .unwrap_err();
        assert!(
            matches!(e, VersionError::CrossStream { sa: 3, sb: 2, .. }),
            "{e}"
        );
        let e = fl("4081.2.0").compare(&co("41.20241109.3.0")).unwrap_err();
        assert!(matches!(e, VersionError::CrossFamily { .. }), "{e}");
    }

    #[test]
    fn parse_errors_say_which_part_is_wrong() {
        let e = CoreOsVersion::parse("41.2024119.3.0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the date part \"2024119\" is not a YYYYMMDD date"),
            "{e}"
        );
        let e = CoreOsVersion::parse("41.20241109.x.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the stream part \"x\" is not a number"), "{e}");
        let e = CoreOsVersion::parse("41.20241109.3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 dot-separated parts, not 4"), "{e}");
        let e = OsVersion::parse(OsFamily::Flatcar, "4081.2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a Flatcar version"), "{e}");
    }

    #[test]
    fn parse_any_tells_the_families_apart() {
        assert_eq!(
            OsVersion::parse_any("41.20241109.3.0").unwrap().family(),
            OsFamily::Fcos
        );
        assert_eq!(
            OsVersion::parse_any("4081.2.0").unwrap().family(),
            OsFamily::Flatcar
        );
    }

    proptest! {
        #[test]
        fn coreos_display_round_trips(major in 30u32..100, y in 2000u32..2100, m in 1u32..=12, d in 1u32..=28, stream in 0u16..100, respin in 0u32..50) {
            let v = CoreOsVersion { major, date: y * 10_000 + m * 100 + d, stream, respin };
            prop_assert_eq!(CoreOsVersion::parse(&v.to_string()), Ok(v));
        }

        #[test]
        fn coreos_ordering_is_antisymmetric_within_a_stream(a in (30u32..50, 0u32..5), b in (30u32..50, 0u32..5)) {
            let va = CoreOsVersion { major: a.0, date: 20240101, stream: 3, respin: a.1 };
            let vb = CoreOsVersion { major: b.0, date: 20240101, stream: 3, respin: b.1 };
            prop_assert_eq!(va.compare(&vb).unwrap(), vb.compare(&va).unwrap().reverse());
        }
    }
}
