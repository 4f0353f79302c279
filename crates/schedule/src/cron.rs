//! Cron schedules in an explicit IANA time zone.

use std::fmt;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, CronPattern};

/// Field names of a 5-field expression, in order.
const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
/// Field names of a 6-field expression (leading seconds), in order.
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];
/// Nicknames accepted, with the 5-field expression each stands for (as in Vixie cron;
/// `@reboot` has no meaning for a service and is refused).
const NICKNAMES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];
/// Fields 0..N of an expression (seconds, minutes, hours when there are 6) decide whether a
/// job follows the clock through a DST change; see [`Schedule`].
const TIME_OF_DAY_FIELDS_5: usize = 2;
/// As [`TIME_OF_DAY_FIELDS_5`] for 6-field expressions.
const TIME_OF_DAY_FIELDS_6: usize = 3;
/// The instant from which [`Schedule::parse`] checks that an expression can match at all.
const NEVER_MATCHES_PROBE: (i32, u32, u32) = (2000, 1, 1);

/// A cron expression bound to an IANA time zone: when a job runs.
///
/// # Syntax
/// - Standard 5 fields: `minute hour day-of-month month day-of-week` (`30 2 * * *`), with
///   lists, ranges, steps (`*/15`, `0-30/10`; a bare `5/5` is refused: write `5-59/5`), month
///   and weekday names, and day-of-week `0` or `7` for Sunday. When both day fields are
///   restricted, a day matches either (Vixie cron's rule).
/// - 6 fields: a leading seconds field (`*/5 * * * * *`), meant for tests.
/// - Nicknames: `@yearly`/`@annually`, `@monthly`, `@weekly` (Sunday 00:00), `@daily`/
///   `@midnight`, `@hourly`.
/// - The extensions of the `croner` crate are accepted too: `L` (last day of month or last
///   weekday), `W` (nearest weekday), `#` (nth weekday), `?`, and `+` before day-of-week to
///   require both day fields.
///
/// # Daylight-saving changes
/// Times are wall-clock times in the schedule's zone. Around a change, the rule is Vixie
/// cron's (also Debian's cron), chosen because a backup job must run exactly once per
/// scheduled time: never skipped on the spring-forward night, never doubled on the fall-back
/// night (a doubled nightly run is the Kubernetes CronJob bug 121594).
/// - **Fixed-time jobs**: the second, minute and hour fields contain no `*` (`30 2 * * *`,
///   `0 2,14 * * *`, `@daily`). A time that the clock skips (02:30 on the spring-forward day in
///   Europe/Berlin, where 02:00 jumps to 03:00) runs once, at the first instant after the gap
///   (03:00 CEST), so the day still gets its run; several skipped times run once together. A
///   time that the clock shows twice (02:30 on the fall-back day) runs only the first time
///   (02:30 CEST), not again at 02:30 CET. Formally: the run for wall time `w` is the first
///   instant at which the clock reads `w` or later.
/// - **Clock-following jobs**: the second, minute or hour field starts with `*` (`*/15 * * * *`,
///   `0 */2 * * *`, `@hourly`). They run whenever the clock shows a matching time: matching
///   times in a skipped hour do not happen, and a repeated hour runs again, so `@hourly` runs
///   23, 24 or 25 times a day, once per real hour.
///
/// The `croner` crate alone treats only single-valued times as fixed, so `0 2,14 * * *` would
/// miss its 02:00 run on the spring-forward day and run twice on the fall-back day; this type
/// applies the rule above itself, using croner for the calendar matching.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as given (trimmed).
    expr: String,
    tz: Tz,
    cron: Cron,
    /// Whether the job follows the clock through DST changes (see the type's docs).
    follows_clock: bool,
}

/// Why a cron expression was refused. Each variant names the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is empty or blank.
    #[error(
        "empty cron expression: write 5 fields (minute hour day-of-month month day-of-week), \
         6 with a leading seconds field, or a nickname such as @daily"
    )]
    Empty,
    /// The expression has the wrong number of fields.
    #[error(
        "cron expression {expr:?} has {found} field(s): expected 5 (minute hour day-of-month \
         month day-of-week) or 6 (a leading seconds field, then those 5)"
    )]
    FieldCount {
        /// The expression as given.
        expr: String,
        /// How many whitespace-separated fields it has.
        found: usize,
    },
    /// An `@` nickname that is not known.
    #[error(
        "cron expression {expr:?} is not a known nickname: use @yearly, @annually, @monthly, \
         @weekly, @daily, @midnight or @hourly"
    )]
    UnknownNickname {
        /// The expression as given.
        expr: String,
    },
    /// One field is malformed or out of range.
    #[error("cron expression {expr:?}: {field} field {value:?} is invalid: {reason}")]
    Field {
        /// The expression as given.
        expr: String,
        /// The field's name (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`,
        /// `second`).
        field: &'static str,
        /// The field's text.
        value: String,
        /// What the parser said is wrong.
        reason: String,
    },
    /// The expression is malformed in a way no single field explains.
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Invalid {
        /// The expression as given.
        expr: String,
        /// What the parser said is wrong.
        reason: String,
    },
    /// The expression is well formed but names no time that exists (e.g. `0 0 30 2 *`).
    #[error("cron expression {expr:?} never runs: no date matches it (for example 30 February)")]
    NeverMatches {
        /// The expression as given.
        expr: String,
    },
}

impl Schedule {
    /// Parses `expr` (see the type's docs for the syntax), evaluated in `tz`.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let expanded = if trimmed.starts_with('@') {
            NICKNAMES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| ScheduleError::UnknownNickname {
                    expr: trimmed.to_owned(),
                })?
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (names, time_of_day): (&[&str], usize) = match fields.len() {
            5 => (&FIELDS_5, TIME_OF_DAY_FIELDS_5),
            6 => (&FIELDS_6, TIME_OF_DAY_FIELDS_6),
            found => {
                return Err(ScheduleError::FieldCount {
                    expr: trimmed.to_owned(),
                    found,
                })
            }
        };
        let cron = parser()
            .parse(expanded)
            .map_err(|e| field_error(trimmed, &fields, names, e))?;
        empty_time_field(&cron, trimmed, &fields, names)?;
        let probe = NaiveDate::from_ymd_opt(
            NEVER_MATCHES_PROBE.0,
            NEVER_MATCHES_PROBE.1,
            NEVER_MATCHES_PROBE.2,
        )
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("the probe date is valid");
        if cron.find_next_occurrence(&probe, true).is_err() {
            return Err(ScheduleError::NeverMatches {
                expr: trimmed.to_owned(),
            });
        }
        let follows_clock = fields[..time_of_day].iter().any(|f| f.starts_with('*'));
        Ok(Self {
            expr: trimmed.to_owned(),
            tz,
            cron,
            follows_clock,
        })
    }

    /// The expression as given (trimmed; a nickname stays a nickname).
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The time zone the expression is evaluated in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Whether the job follows the clock through DST changes (a `*` in the second, minute or
    /// hour field) rather than running at fixed wall-clock times; see the type's docs.
    pub fn follows_clock(&self) -> bool {
        self.follows_clock
    }

    /// The first run strictly after `instant`, or `None` when there is none (croner searches
    /// up to the year 5000).
    ///
    /// Stateless: any instant may be passed, including one inside a repeated hour, and the
    /// answer follows the DST rule in the type's docs (a fixed-time job whose first pass
    /// already happened is not run again in the second).
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Runs are whole seconds: from 02:30:00.5 the 02:30:00 run is already past, and from
        // 02:29:59.5 it is still ahead, which comparing against the floored instant gives.
        let after = instant.with_nanosecond(0)?;
        if self.follows_clock {
            return self
                .cron
                .find_next_occurrence(&after.with_timezone(&self.tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc));
        }
        // Fixed-time jobs: walk matching wall-clock times and map each to the first instant
        // the clock reaches it. That map never decreases, so the first wall time whose run is
        // after `after` gives the answer; wall times skipped over are those the clock already
        // reached in the first pass of a repeated hour.
        let mut wall = after.with_timezone(&self.tz).naive_local();
        loop {
            wall = self.cron.find_next_occurrence(&wall, false).ok()?;
            if let Some(run) = first_reaching(self.tz, wall) {
                if run > after {
                    return Some(run);
                }
            }
        }
    }

    /// The next `n` runs strictly after `instant`, in order (fewer if the schedule ends).
    pub fn upcoming(&self, instant: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut runs = Vec::with_capacity(n);
        let mut from = instant;
        while runs.len() < n {
            match self.next_after(from) {
                Some(next) => {
                    runs.push(next);
                    from = next;
                }
                None => break,
            }
        }
        runs
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.tz.name())
    }
}

/// The parser for our syntax: optional seconds, no year field.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// The time-of-day fields with the values each can take, and croner's test for one value.
type TimeField = (
    &'static str,
    u32,
    fn(&CronPattern, u32) -> Result<bool, CronError>,
);
/// Seconds, minutes and hours, the fields [`empty_time_field`] checks.
const TIME_FIELDS: [TimeField; 3] = [
    ("second", 60, CronPattern::second_match),
    ("minute", 60, CronPattern::minute_match),
    ("hour", 24, CronPattern::hour_match),
];

/// Refuses a second, minute or hour field that selects no value (croner accepts a field of bare
/// commas, `,`, as an empty list), naming it. Checked before the "never runs" probe because
/// croner would search every day, hour or minute up to its year 5000 for such an expression:
/// seconds to minutes of CPU for a 10-byte typo.
fn empty_time_field(
    cron: &Cron,
    expr: &str,
    fields: &[&str],
    names: &[&'static str],
) -> Result<(), ScheduleError> {
    for (name, values, matches) in TIME_FIELDS {
        if (0..values).any(|v| matches(&cron.pattern, v).unwrap_or(false)) {
            continue;
        }
        // A 5-field expression has no second field: croner fixes it at 0, which matches.
        return Err(match names.iter().position(|n| *n == name) {
            Some(i) => ScheduleError::Field {
                expr: expr.to_owned(),
                field: name,
                value: fields[i].to_owned(),
                reason: "it selects no value (an empty list)".to_owned(),
            },
            None => ScheduleError::NeverMatches {
                expr: expr.to_owned(),
            },
        });
    }
    Ok(())
}

/// Turns croner's error for the whole expression into one that names the first field that
/// fails on its own (the others replaced by `*`), or the whole expression if none does.
fn field_error(
    expr: &str,
    fields: &[&str],
    names: &[&'static str],
    whole: croner::errors::CronError,
) -> ScheduleError {
    for (i, (value, name)) in fields.iter().zip(names).enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { *value } else { "*" })
            .collect();
        if let Err(e) = parser().parse(&alone.join(" ")) {
            return ScheduleError::Field {
                expr: expr.to_owned(),
                field: name,
                value: (*value).to_owned(),
                reason: e.to_string(),
            };
        }
    }
    ScheduleError::Invalid {
        expr: expr.to_owned(),
        reason: whole.to_string(),
    }
}

/// The first instant at which the clock in `tz` reads `wall` or later: the instant itself
/// when `wall` happens once, the first of the two when it happens twice, and the end of the
/// gap when the clock skips it.
fn first_reaching(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => gap_end(tz, wall),
    }
}

/// For a wall time that the clock skips, the instant at which the skip happens (the first
/// instant whose wall time is later than `wall`).
fn gap_end(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let wall_as_utc = Utc.from_utc_datetime(&wall);
    let day = Duration::days(1);
    let offset_at =
        |t: DateTime<Utc>| -> Duration { t.with_timezone(&tz).naive_local() - t.naive_utc() };
    let after_wall = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local() > wall;
    // The offsets a day before and after bracket the jump: before it the clock reads
    // `wall - offset_after + offset_before < wall`, after it more than `wall`.
    let mut lo = wall_as_utc - offset_at(wall_as_utc + day);
    let mut hi = wall_as_utc - offset_at(wall_as_utc - day);
    if after_wall(lo) || !after_wall(hi) {
        return None;
    }
    // Binary search to the second: offsets change on whole seconds.
    while hi - lo > Duration::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if after_wall(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
