//! Maintenance windows: when a pool may start new disruptions.
//!
//! A window opens on each listed weekday at a local wall-clock time in its IANA time zone
//! and stays open for `length` of real (elapsed) time, so a window may run past midnight
//! into the next day ("wraps midnight"); the listed day is the day it opens.
//!
//! Daylight-saving changes, defined once here:
//! - a start time that does not exist that day (it falls in the spring-forward gap) opens
//!   the window at the same offset after the gap, e.g. 02:30 becomes 03:30;
//! - a start time that happens twice (the autumn fold) opens it at the first occurrence;
//! - the length is always elapsed time: a 4h window is open for exactly four hours even
//!   on the night the clocks change, so it may end at a different wall-clock time.
//!
//! These are the "compatible" rules of RFC 5545 and of jiff, whose bundled time-zone
//! database is used so results do not depend on the host's `/usr/share/zoneinfo`.

use std::fmt;
use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// The longest window accepted: a week. Longer is "always", which is no `windows` at all.
pub const MAX_WINDOW_LENGTH_SECS: u64 = 7 * 24 * 3600;

/// One weekly maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    days: Vec<Weekday>,
    start: Time,
    length: Duration,
    tz: TimeZone,
    tz_name: String,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.days == other.days
            && self.start == other.start
            && self.length == other.length
            && self.tz_name == other.tz_name
    }
}

/// Why a window definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `start` is not `HH:MM`.
    #[error("start {0:?} is not a time of day as HH:MM (00:00 to 23:59)")]
    BadStart(String),
    /// Unknown day name.
    #[error("day {0:?} is not one of Mon, Tue, Wed, Thu, Fri, Sat, Sun")]
    BadDay(String),
    /// No days listed.
    #[error("a window needs at least one day")]
    NoDays,
    /// Zero or too long.
    #[error("length must be more than 0 and at most 168h (a week), not {0}")]
    BadLength(String),
    /// Not in the IANA database.
    #[error("time zone {0:?} is not an IANA time zone name (like Europe/Berlin or UTC)")]
    BadTimeZone(String),
}

/// Reads a day name: `Mon`…`Sun`, or the full English name, any case.
pub fn parse_weekday(s: &str) -> Result<Weekday, WindowError> {
    let lower = s.to_ascii_lowercase();
    let day = match lower.as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return Err(WindowError::BadDay(s.to_string())),
    };
    Ok(day)
}

fn weekday_short(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

/// Reads `HH:MM`.
pub fn parse_start(s: &str) -> Result<Time, WindowError> {
    let bad = || WindowError::BadStart(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Looks up an IANA time zone in the bundled database.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, WindowError> {
    TimeZone::get(name).map_err(|_| WindowError::BadTimeZone(name.to_string()))
}

impl Window {
    /// Builds a window from already-parsed parts.
    pub fn new(
        days: Vec<Weekday>,
        start: Time,
        length: Duration,
        tz_name: &str,
    ) -> Result<Self, WindowError> {
        if days.is_empty() {
            return Err(WindowError::NoDays);
        }
        if length.is_zero() || length.as_secs() > MAX_WINDOW_LENGTH_SECS {
            return Err(WindowError::BadLength(crate::duration::format_duration(
                length,
            )));
        }
        let tz = parse_time_zone(tz_name)?;
        Ok(Window {
            days,
            start,
            length,
            tz,
            tz_name: tz_name.to_string(),
        })
    }

    /// Opening instants of this window on local dates from `from` to `to` inclusive.
    fn openings(&self, from: Date, to: Date) -> impl Iterator<Item = Timestamp> + '_ {
        let mut d = Some(from);
        std::iter::from_fn(move || {
            while let Some(date) = d {
                if date > to {
                    return None;
                }
                d = date.tomorrow().ok();
                if self.days.contains(&date.weekday()) {
                    // `compatible`: gap → after the gap, fold → the earlier instant.
                    if let Ok(z) = self
                        .tz
                        .to_ambiguous_zoned(date.to_datetime(self.start))
                        .compatible()
                    {
                        return Some(z.timestamp());
                    }
                }
            }
            None
        })
    }

    fn length_signed(&self) -> SignedDuration {
        SignedDuration::try_from(self.length).unwrap_or(SignedDuration::MAX)
    }

    fn search_range(&self, now: Timestamp) -> (Date, Date) {
        let today = now.to_zoned(self.tz.clone()).date();
        // Look back far enough to catch a window that opened days ago and is still open.
        let back = (self.length.as_secs() / 86_400) as i64 + 2;
        let from = today
            .checked_sub(jiff::Span::new().days(back))
            .unwrap_or(today);
        let to = today
            .checked_add(jiff::Span::new().days(8))
            .unwrap_or(today);
        (from, to)
    }

    /// If the window is open at `now`, the instant it closes.
    pub fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        let (from, to) = self.search_range(now);
        let len = self.length_signed();
        self.openings(from, to)
            .filter_map(|open| open.checked_add(len).ok().map(|close| (open, close)))
            .filter(|(open, close)| *open <= now && now < *close)
            .map(|(_, close)| close)
            .max()
    }

    /// The next instant after `now` at which the window opens.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let (from, to) = self.search_range(now);
        self.openings(from, to).filter(|open| *open > now).min()
    }

    /// The IANA zone name, as written.
    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    /// `Sat 01:00 Europe/Berlin`-style text for an instant, in this window's zone.
    pub fn describe_instant(&self, at: Timestamp) -> String {
        let z = at.to_zoned(self.tz.clone());
        format!(
            "{} {:02}:{:02} {}",
            weekday_short(z.weekday()),
            z.hour(),
            z.minute(),
            self.tz_name
        )
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = self.days.iter().map(|d| weekday_short(*d)).collect();
        write!(
            f,
            "{} {:02}:{:02} for {} ({})",
            days.join(","),
            self.start.hour(),
            self.start.minute(),
            crate::duration::format_duration(self.length),
            self.tz_name
        )
    }
}

/// When a pool may start disruptions: always, or inside any of its windows.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Schedule {
    /// No windows configured: any time.
    #[default]
    Always,
    /// Only inside one of these windows.
    Windows(Vec<Window>),
}

/// Whether a schedule allows starting work now, and when that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// Open; `closes` is when the current window ends (None: always open).
    Open {
        /// End of the current window.
        closes: Option<Timestamp>,
    },
    /// Closed; when and where the next window opens (None: never, which validation forbids).
    Closed {
        /// Next opening.
        opens: Option<Timestamp>,
        /// `Sat 01:00 Europe/Berlin`.
        description: String,
    },
}

impl Schedule {
    /// Evaluates the schedule at `now`.
    pub fn state(&self, now: Timestamp) -> WindowState {
        match self {
            Schedule::Always => WindowState::Open { closes: None },
            Schedule::Windows(ws) => {
                if let Some(closes) = ws.iter().filter_map(|w| w.open_until(now)).max() {
                    return WindowState::Open {
                        closes: Some(closes),
                    };
                }
                let next = ws
                    .iter()
                    .filter_map(|w| w.next_open(now).map(|t| (t, w)))
                    .min_by_key(|(t, _)| *t);
                match next {
                    Some((t, w)) => WindowState::Closed {
                        opens: Some(t),
                        description: w.describe_instant(t),
                    },
                    None => WindowState::Closed {
                        opens: None,
                        description: "no window ever opens".into(),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(days: &[&str], start: &str, hours: u64, tz: &str) -> Window {
        Window::new(
            days.iter().map(|d| parse_weekday(d).unwrap()).collect(),
            parse_start(start).unwrap(),
            Duration::from_secs(hours * 3600),
            tz,
        )
        .unwrap()
    }

    #[test]
    fn a_weekend_window_in_berlin() {
        // 2026-11-28 is a Saturday; Berlin is UTC+1 in November.
        let w = window(&["Sat", "Sun"], "01:00", 4, "Europe/Berlin");
        assert_eq!(
            w.open_until(ts("2026-11-28T00:30:00Z")),
            Some(ts("2026-11-28T04:00:00Z"))
        );
        assert_eq!(w.open_until(ts("2026-11-27T23:59:59Z")), None);
        assert_eq!(
            w.open_until(ts("2026-11-28T04:00:00Z")),
            None,
            "the end is exclusive"
        );
        assert_eq!(
            w.next_open(ts("2026-11-25T12:00:00Z")),
            Some(ts("2026-11-28T00:00:00Z"))
        );
        let s = Schedule::Windows(vec![w]);
        assert_eq!(
            s.state(ts("2026-11-25T12:00:00Z")),
            WindowState::Closed {
                opens: Some(ts("2026-11-28T00:00:00Z")),
                description: "Sat 01:00 Europe/Berlin".into()
            }
        );
    }

    #[test]
    fn a_window_wrapping_midnight_stays_open_the_next_morning() {
        // Friday 22:00 UTC for 6h: open until Saturday 04:00.
        let w = window(&["Fri"], "22:00", 6, "UTC");
        assert_eq!(
            w.open_until(ts("2026-11-28T03:00:00Z")),
            Some(ts("2026-11-28T04:00:00Z"))
        );
        assert_eq!(w.open_until(ts("2026-11-28T05:00:00Z")), None);
        // Opening day is Friday: a Saturday 23:00 is closed.
        assert_eq!(w.open_until(ts("2026-11-28T23:00:00Z")), None);
    }

    #[test]
    fn a_start_in_the_spring_forward_gap_opens_after_the_gap() {
        // Europe/Berlin jumps 02:00 → 03:00 on Sunday 2026-03-29. A 02:30 start does not
        // exist that night; it opens at 03:30 local (01:30Z) and lasts 1h of real time.
        let w = window(&["Sun"], "02:30", 1, "Europe/Berlin");
        assert_eq!(
            w.next_open(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            w.open_until(ts("2026-03-29T01:45:00Z")),
            Some(ts("2026-03-29T02:30:00Z"))
        );
    }

    #[test]
    fn a_start_in_the_autumn_fold_opens_at_the_first_occurrence_and_lasts_elapsed_time() {
        // Europe/Berlin falls back 03:00 → 02:00 on Sunday 2026-10-25: 02:30 happens twice,
        // first at 00:30Z (CEST). A 2h window then closes at 02:30Z = 03:30 CET local.
        let w = window(&["Sun"], "02:30", 2, "Europe/Berlin");
        assert_eq!(
            w.next_open(ts("2026-10-24T12:00:00Z")),
            Some(ts("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            w.open_until(ts("2026-10-25T02:00:00Z")),
            Some(ts("2026-10-25T02:30:00Z"))
        );
    }

    #[test]
    fn a_long_window_that_opened_days_ago_is_still_open() {
        let w = window(&["Mon"], "00:00", 100, "UTC");
        // 2026-11-23 is a Monday; 100h later is Friday 04:00.
        assert_eq!(
            w.open_until(ts("2026-11-26T12:00:00Z")),
            Some(ts("2026-11-27T04:00:00Z"))
        );
    }

    #[test]
    fn bad_parts_are_refused_with_what_is_wrong() {
        assert_eq!(
            parse_start("25:00"),
            Err(WindowError::BadStart("25:00".into()))
        );
        assert_eq!(parse_start("1:5"), Err(WindowError::BadStart("1:5".into())));
        assert!(parse_start("1:05").is_ok());
        assert_eq!(
            parse_weekday("Caturday"),
            Err(WindowError::BadDay("Caturday".into()))
        );
        assert!(matches!(
            parse_time_zone("Mars/Olympus"),
            Err(WindowError::BadTimeZone(_))
        ));
        let e = Window::new(
            vec![Weekday::Monday],
            Time::midnight(),
            Duration::from_secs(0),
            "UTC",
        )
        .unwrap_err();
        assert_eq!(e, WindowError::BadLength("0s".into()));
    }

    #[test]
    fn always_is_open() {
        assert_eq!(
            Schedule::Always.state(ts("2026-01-01T00:00:00Z")),
            WindowState::Open { closes: None }
        );
    }
}
