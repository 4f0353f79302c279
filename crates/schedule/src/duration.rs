//! restic's calendar durations (`2y5m7d3h`) for keep-within rules.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Months in a year, for calendar arithmetic.
const MONTHS_PER_YEAR: i64 = 12;
/// Seconds in an hour.
const SECONDS_PER_HOUR: i64 = 3600;

/// A span of years, months, days and hours, written as restic writes it: `7d`, `36h`,
/// `1y6m`, `2y5m7d3h`.
///
/// Years, months and days are calendar units counted on the wall clock of the policy's time
/// zone (so `1d` back from 12:00 is 12:00 the day before, 23 or 25 real hours across a DST
/// change); hours are real hours. This is how restic subtracts a duration (Go's `AddDate`
/// for the calendar part, then hours), including its normalisation of a day past the month's
/// end: 31 March minus `1m` is "31 February", i.e. 3 March (2 March in a leap year).
///
/// Parsing is stricter than restic: units are `y`, `m`, `d`, `h` (there is no `w`: write
/// `7d`), each at most once, numbers are not negative, and the text is not empty. An all-zero
/// duration (`0d`) turns its rule off, as in restic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CalendarDuration {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Calendar days.
    pub days: u32,
    /// Real hours.
    pub hours: u32,
}

/// A keep-within duration that could not be parsed. Names the text and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duration {text:?} is invalid: {problem} (write e.g. \"7d\", \"36h\" or \"1y6m\"; units y, m, d, h)")]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
}

impl CalendarDuration {
    /// Whether every unit is zero (the rule that carries it is off).
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The instant this duration before `from`, with the calendar part counted on the wall
    /// clock of `tz`. `None` if that lies outside the representable range (then everything
    /// is within it).
    ///
    /// When the resulting wall time happens twice (a repeated hour) or not at all (a skipped
    /// hour), the earlier candidate instant is taken, so the window is the wider one and the
    /// rule keeps more rather than less. Go leaves this choice unspecified.
    pub(crate) fn before(&self, from: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let wall = from.with_timezone(&tz).naive_local();
        let months = i64::from(wall.year()) * MONTHS_PER_YEAR + i64::from(wall.month0())
            - (i64::from(self.years) * MONTHS_PER_YEAR + i64::from(self.months));
        let year = i32::try_from(months.div_euclid(MONTHS_PER_YEAR)).ok()?;
        let month0 = u32::try_from(months.rem_euclid(MONTHS_PER_YEAR)).ok()?;
        // Go's normalisation: the first of the target month, then the day-of-month minus one
        // and minus the days, so an overflowing day rolls into the following month.
        let first = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
        let date = first.checked_add_signed(Duration::try_days(
            i64::from(wall.day()) - 1 - i64::from(self.days),
        )?)?;
        let calendar = earliest_instant(tz, date.and_time(wall.time()))?;
        calendar.checked_sub_signed(Duration::try_seconds(
            i64::from(self.hours) * SECONDS_PER_HOUR,
        )?)
    }
}

/// The earliest instant whose wall time in `tz` is `wall`, or for a skipped wall time the
/// earlier of the two readings with the offsets around the gap.
fn earliest_instant(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            let as_utc = Utc.from_utc_datetime(&wall);
            let day = Duration::days(1);
            [as_utc - day, as_utc + day]
                .into_iter()
                .map(|t| as_utc - (t.with_timezone(&tz).naive_local() - t.naive_utc()))
                .min()
        }
    }
}

impl FromStr for CalendarDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| DurationError {
            text: text.to_owned(),
            problem,
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(err("it is empty".to_owned()));
        }
        let mut d = Self::default();
        let mut seen = [false; 4];
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                let c = rest.chars().next().unwrap_or_default();
                return Err(err(format!("expected a number, found {c:?}")));
            }
            let number: u32 = rest[..digits]
                .parse()
                .map_err(|_| err(format!("{} is too large", &rest[..digits])))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(err(format!("{number} has no unit")));
            };
            let (slot, index) = match unit {
                'y' => (&mut d.years, 0),
                'm' => (&mut d.months, 1),
                'd' => (&mut d.days, 2),
                'h' => (&mut d.hours, 3),
                other => return Err(err(format!("unknown unit {other:?} after {number}"))),
            };
            if seen[index] {
                return Err(err(format!("unit {unit:?} is given twice")));
            }
            seen[index] = true;
            *slot = number;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for CalendarDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CalendarDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restic_durations_and_prints_them_back() {
        /// (text, (years, months, days, hours), printed back as).
        type Case = (&'static str, (u32, u32, u32, u32), &'static str);
        let cases: &[Case] = &[
            ("7d", (0, 0, 7, 0), "7d"),
            ("36h", (0, 0, 0, 36), "36h"),
            ("2y5m7d3h", (2, 5, 7, 3), "2y5m7d3h"),
            ("3h7d", (0, 0, 7, 3), "7d3h"),
            (" 1y ", (1, 0, 0, 0), "1y"),
            ("0d", (0, 0, 0, 0), "0h"),
        ];
        for (text, (years, months, days, hours), shown) in cases {
            let d: CalendarDuration = text.parse().unwrap();
            let want = CalendarDuration {
                years: *years,
                months: *months,
                days: *days,
                hours: *hours,
            };
            assert_eq!(d, want, "{text}");
            assert_eq!(d.to_string(), *shown, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_durations_naming_text_and_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "it is empty"),
            ("1w", "unknown unit 'w' after 1"),
            ("7", "7 has no unit"),
            ("d", "expected a number, found 'd'"),
            ("-1d", "expected a number, found '-'"),
            ("1d2d", "unit 'd' is given twice"),
            ("1d 2h", "expected a number, found ' '"),
            ("99999999999h", "99999999999 is too large"),
        ];
        for (text, problem) in cases {
            let err = text.parse::<CalendarDuration>().unwrap_err();
            assert_eq!(err.problem, *problem, "{text:?}");
            assert!(
                err.to_string().contains(&format!("{text:?}")),
                "{err} names {text:?}"
            );
        }
    }

    #[test]
    fn before_counts_calendar_units_on_the_wall_clock_and_hours_in_real_time() {
        let berlin = Tz::Europe__Berlin;
        let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let cases: &[(&str, &str, Tz, &str)] = &[
            // 1d across spring-forward (29 March 2026): 12:00 CEST back to 12:00 CET, 23 h.
            ("1d", "2026-03-29T10:00:00Z", berlin, "2026-03-28T11:00:00Z"),
            // 24h across it is 24 real hours.
            (
                "24h",
                "2026-03-29T10:00:00Z",
                berlin,
                "2026-03-28T10:00:00Z",
            ),
            // 1d across fall-back (25 October 2026): 25 real hours.
            ("1d", "2026-10-25T11:00:00Z", berlin, "2026-10-24T10:00:00Z"),
            // Go's month normalisation: 31 March - 1m = "31 February" = 3 March (2026).
            (
                "1m",
                "2026-03-31T12:00:00Z",
                Tz::UTC,
                "2026-03-03T12:00:00Z",
            ),
            // ... 2 March in a leap year.
            (
                "1m",
                "2028-03-31T12:00:00Z",
                Tz::UTC,
                "2028-03-02T12:00:00Z",
            ),
            // Across a year boundary.
            (
                "1y2m",
                "2027-01-15T00:00:00Z",
                Tz::UTC,
                "2025-11-15T00:00:00Z",
            ),
            (
                "1d12h",
                "2027-01-01T06:00:00Z",
                Tz::UTC,
                "2026-12-30T18:00:00Z",
            ),
            // Lands on a repeated wall time (02:30 on 25 October 2026): the first, CEST.
            ("1d", "2026-10-26T01:30:00Z", berlin, "2026-10-25T00:30:00Z"),
            // Lands on a skipped wall time (02:30 on 29 March 2026): the earlier reading,
            // 02:30 at +02:00.
            ("1d", "2026-03-30T00:30:00Z", berlin, "2026-03-29T00:30:00Z"),
        ];
        for (text, from, tz, want) in cases {
            let d: CalendarDuration = text.parse().unwrap();
            assert_eq!(
                d.before(utc(from), *tz),
                Some(utc(want)),
                "{text} before {from} in {tz}"
            );
        }
        let huge = CalendarDuration {
            years: u32::MAX,
            ..CalendarDuration::default()
        };
        assert_eq!(huge.before(utc("2026-01-01T00:00:00Z"), Tz::UTC), None);
    }
}
