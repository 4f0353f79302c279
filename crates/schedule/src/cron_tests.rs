use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::{Schedule, ScheduleError};

const BERLIN: Tz = Tz::Europe__Berlin;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// (case, zone, expression, from, the next runs): the runs are `upcoming(from, len)`.
type RunCase = (
    &'static str,
    Tz,
    &'static str,
    &'static str,
    &'static [&'static str],
);

#[test]
fn upcoming_runs_follow_the_dst_rule_and_the_calendar() {
    // Europe/Berlin 2026: spring forward 29 March 02:00 CET -> 03:00 CEST (01:00Z);
    // fall back 25 October 03:00 CEST -> 02:00 CET (01:00Z). CET = UTC+1, CEST = UTC+2.
    let cases: &[RunCase] = &[
        (
            "daily 02:30 on spring-forward day runs once, at the end of the gap (03:00 CEST)",
            BERLIN,
            "30 2 * * *",
            "2026-03-28T12:00:00Z",
            &[
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z",
            ],
        ),
        (
            "daily 02:30 on fall-back day runs once, at the first 02:30 (CEST)",
            BERLIN,
            "30 2 * * *",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "from inside the first pass of the repeated hour (02:45 CEST): not again at 02:30 CET",
            BERLIN,
            "30 2 * * *",
            "2026-10-25T00:45:00Z",
            &["2026-10-26T01:30:00Z"],
        ),
        (
            "from inside the second pass (02:10 CET), e.g. after a restart: not again at 02:30 CET",
            BERLIN,
            "30 2 * * *",
            "2026-10-25T01:10:00Z",
            &["2026-10-26T01:30:00Z"],
        ),
        (
            "from the spring-forward run itself: the next day",
            BERLIN,
            "30 2 * * *",
            "2026-03-29T01:00:00Z",
            &["2026-03-30T00:30:00Z"],
        ),
        (
            "from just before the gap (01:59:59 CET): the end of the gap",
            BERLIN,
            "30 2 * * *",
            "2026-03-29T00:59:59Z",
            &["2026-03-29T01:00:00Z"],
        ),
        (
            "6-field seconds form behaves the same on fall-back",
            BERLIN,
            "0 30 2 * * *",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "a list of hours is fixed-time too: 02:00 is not skipped on spring-forward",
            BERLIN,
            "0 2,14 * * *",
            "2026-03-28T20:00:00Z",
            &[
                "2026-03-29T01:00:00Z",
                "2026-03-29T12:00:00Z",
                "2026-03-30T00:00:00Z",
            ],
        ),
        (
            "a list of hours is fixed-time too: 02:00 is not doubled on fall-back",
            BERLIN,
            "0 2,14 * * *",
            "2026-10-24T20:00:00Z",
            &[
                "2026-10-25T00:00:00Z",
                "2026-10-25T13:00:00Z",
                "2026-10-26T01:00:00Z",
            ],
        ),
        (
            "several skipped times run once together at the end of the gap",
            BERLIN,
            "0,30 2-3 * * *",
            "2026-03-28T23:00:00Z",
            &[
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-30T00:00:00Z",
            ],
        ),
        (
            "clock-following (*) job runs in both passes of the repeated hour",
            BERLIN,
            "30 * * * *",
            "2026-10-24T23:00:00Z",
            &[
                "2026-10-24T23:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:30:00Z",
            ],
        ),
        (
            "clock-following (*) job skips times in the gap",
            BERLIN,
            "30 * * * *",
            "2026-03-28T23:00:00Z",
            &[
                "2026-03-28T23:30:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:30:00Z",
            ],
        ),
        (
            "clock-following job from inside the first pass goes on into the second pass",
            BERLIN,
            "*/30 * * * *",
            "2026-10-25T00:45:00Z",
            &[
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z",
            ],
        ),
        (
            "@daily is local midnight, on both sides of fall-back",
            BERLIN,
            "@daily",
            "2026-10-24T12:00:00Z",
            &["2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"],
        ),
        (
            "midnight in London on spring-forward day runs once (croner issue 67 regression)",
            Tz::Europe__London,
            "0 0 * * *",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T00:00:00Z", "2026-03-29T23:00:00Z"],
        ),
        (
            "New York spring-forward: 02:30 runs at 03:00 EDT",
            Tz::America__New_York,
            "30 2 * * *",
            "2026-03-07T12:00:00Z",
            &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
        ),
        (
            "Lord Howe's 30-minute gap (02:00 -> 02:30, 4 October 2026): 02:15 runs at 02:30",
            Tz::Australia__Lord_Howe,
            "15 2 * * *",
            "2026-10-03T00:00:00Z",
            &["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"],
        ),
        (
            "strictly after: from midnight exactly, the next midnight",
            Tz::UTC,
            "0 0 * * *",
            "2026-01-01T00:00:00Z",
            &["2026-01-02T00:00:00Z"],
        ),
        (
            "one second before midnight across the year boundary",
            Tz::UTC,
            "0 0 * * *",
            "2025-12-31T23:59:59Z",
            &["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
        ),
        (
            "a fraction of a second before a run still gets it",
            Tz::UTC,
            "30 2 * * *",
            "2026-01-01T02:29:59.500Z",
            &["2026-01-01T02:30:00Z"],
        ),
        (
            "a fraction of a second after a run does not get it again",
            Tz::UTC,
            "30 2 * * *",
            "2026-01-01T02:30:00.500Z",
            &["2026-01-02T02:30:00Z"],
        ),
        (
            "a fraction of a second after a run of a clock-following job",
            Tz::UTC,
            "*/20 * * * * *",
            "2026-01-01T00:00:20.250Z",
            &["2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"],
        ),
        (
            "6-field every 20 seconds, for tests",
            Tz::UTC,
            "*/20 * * * * *",
            "2026-01-01T00:00:00Z",
            &[
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z",
            ],
        ),
        (
            "@weekly is Sunday 00:00",
            Tz::UTC,
            "@weekly",
            "2026-12-02T12:00:00Z",
            &["2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"],
        ),
        (
            "@monthly across the year boundary",
            Tz::UTC,
            "@monthly",
            "2026-12-15T00:00:00Z",
            &["2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"],
        ),
        (
            "@yearly in Berlin is local New Year",
            BERLIN,
            "@yearly",
            "2026-06-01T00:00:00Z",
            &["2026-12-31T23:00:00Z", "2027-12-31T23:00:00Z"],
        ),
        (
            "29 February only in leap years",
            Tz::UTC,
            "0 0 29 2 *",
            "2026-01-01T00:00:00Z",
            &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
        ),
        (
            "weekday names and ranges",
            Tz::UTC,
            "0 2 * * MON-FRI",
            "2026-12-04T03:00:00Z",
            &["2026-12-07T02:00:00Z", "2026-12-08T02:00:00Z"],
        ),
    ];
    for (name, tz, expr, from, want) in cases {
        let schedule = Schedule::parse(expr, *tz).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = schedule.upcoming(utc(from), want.len());
        let want: Vec<DateTime<Utc>> = want.iter().map(|s| utc(s)).collect();
        assert_eq!(got, want, "{name}: {schedule} from {from}");
        assert_eq!(
            schedule.next_after(utc(from)),
            want.first().copied(),
            "{name}"
        );
    }
}

/// Counts a schedule's runs per local calendar day over 2026 in `tz`.
fn runs_per_local_day(expr: &str, tz: Tz) -> BTreeMap<NaiveDate, usize> {
    let schedule = Schedule::parse(expr, tz).unwrap();
    let start = utc("2025-12-31T00:00:00Z");
    let end = utc("2027-01-02T00:00:00Z");
    let mut days = BTreeMap::new();
    let mut at = start;
    while let Some(next) = schedule.next_after(at) {
        if next >= end {
            break;
        }
        *days
            .entry(next.with_timezone(&tz).date_naive())
            .or_default() += 1;
        at = next;
    }
    days
}

#[test]
fn fixed_time_jobs_run_exactly_n_times_on_every_day_of_a_year_with_two_dst_changes() {
    for (expr, per_day) in [
        ("30 2 * * *", 1),
        ("0 2 * * *", 1),
        ("0 2,14 * * *", 2),
        ("@daily", 1),
    ] {
        let days = runs_per_local_day(expr, BERLIN);
        let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        for day in first.iter_days().take_while(|d| d.year() == 2026) {
            assert_eq!(days.get(&day), Some(&per_day), "{expr} on {day}");
        }
    }
}

#[test]
fn hourly_runs_once_per_real_hour_on_dst_days() {
    let days = runs_per_local_day("@hourly", BERLIN);
    let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    assert_eq!(days[&day(3, 28)], 24);
    assert_eq!(days[&day(3, 29)], 23, "spring-forward day has 23 hours");
    assert_eq!(days[&day(10, 25)], 25, "fall-back day has 25 hours");
    assert_eq!(days[&day(10, 26)], 24);
    let runs = Schedule::parse("@hourly", BERLIN)
        .unwrap()
        .upcoming(utc("2026-10-24T22:00:00Z"), 25);
    for pair in runs.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::hours(1), "{pair:?}");
    }
}

#[test]
fn parse_accepts_nicknames_and_says_which_jobs_follow_the_clock() {
    let cases: &[(&str, bool)] = &[
        ("30 2 * * *", false),
        (" 0 2,14 * * * ", false),
        ("0 0 * * MON-FRI", false),
        ("0 0 L * *", false),
        ("0 30 2 * * *", false),
        ("@daily", false),
        ("@DAILY", false),
        ("@midnight", false),
        ("@weekly", false),
        ("@monthly", false),
        ("@yearly", false),
        ("@annually", false),
        ("@hourly", true),
        ("*/15 * * * *", true),
        ("0 */2 * * *", true),
        ("*/5 * * * * *", true),
    ];
    for (expr, follows) in cases {
        let s = Schedule::parse(expr, BERLIN).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(s.expression(), expr.trim());
        assert_eq!(s.time_zone(), BERLIN);
        assert_eq!(s.follows_clock(), *follows, "{expr}");
        assert_eq!(s.to_string(), format!("{} (Europe/Berlin)", expr.trim()));
    }
}

/// A time-of-day field of bare commas selects no value (croner accepts it). Before this check
/// the "never runs" probe walked every day (hour field), hour (minute field) or minute (second
/// field) up to croner's year 5000: 2 s, 6 s and 93 s in a debug build (found by the
/// `serve_config` fuzz target, `fuzz/corpus/serve_config/regress-empty-hour-field-slow-probe`).
#[test]
fn a_time_field_that_selects_no_value_is_refused_at_once_naming_the_field() {
    // Generous: the check is a few dozen bit lookups.
    const AT_ONCE: std::time::Duration = std::time::Duration::from_secs(1);
    let cases = [
        ("29 , * * *", "hour", ","),
        (", 1 * * *", "minute", ","),
        (", * * * * *", "second", ","),
        ("0 ,, 1 * * *", "minute", ",,"),
    ];
    for (expr, field, value) in cases {
        let started = std::time::Instant::now();
        let err = Schedule::parse(expr, BERLIN).unwrap_err();
        let took = started.elapsed();
        match &err {
            ScheduleError::Field {
                expr: e,
                field: f,
                value: v,
                reason,
            } => {
                assert_eq!((e.as_str(), *f, v.as_str()), (expr, field, value), "{err}");
                assert!(reason.contains("selects no value"), "{err}");
            }
            other => panic!("{expr}: expected a {field} field error, got {other:?}"),
        }
        assert!(took < AT_ONCE, "{expr}: refused after {took:?}");
    }
}

#[test]
fn parse_refuses_bad_expressions_naming_expression_and_problem() {
    let field = |expr: &str, field: &'static str, value: &str| ScheduleError::Field {
        expr: expr.to_owned(),
        field,
        value: value.to_owned(),
        reason: String::new(),
    };
    let cases: Vec<(&str, ScheduleError)> = vec![
        ("", ScheduleError::Empty),
        ("   ", ScheduleError::Empty),
        (
            "* * *",
            ScheduleError::FieldCount {
                expr: "* * *".into(),
                found: 3,
            },
        ),
        (
            "0 0 1 1 * 2027 x",
            ScheduleError::FieldCount {
                expr: "0 0 1 1 * 2027 x".into(),
                found: 7,
            },
        ),
        (
            "@reboot",
            ScheduleError::UnknownNickname {
                expr: "@reboot".into(),
            },
        ),
        ("61 * * * *", field("61 * * * *", "minute", "61")),
        ("0 25 * * *", field("0 25 * * *", "hour", "25")),
        ("0 0 32 * *", field("0 0 32 * *", "day-of-month", "32")),
        ("0 0 * 13 *", field("0 0 * 13 *", "month", "13")),
        ("0 0 * * 8", field("0 0 * * 8", "day-of-week", "8")),
        (
            "0 0 * * FUNDAY",
            field("0 0 * * FUNDAY", "day-of-week", "FUNDAY"),
        ),
        ("5/5 * * * *", field("5/5 * * * *", "minute", "5/5")),
        ("60 0 0 * * *", field("60 0 0 * * *", "second", "60")),
        (
            "0 0 30 2 *",
            ScheduleError::NeverMatches {
                expr: "0 0 30 2 *".into(),
            },
        ),
    ];
    for (expr, want) in cases {
        let err = Schedule::parse(expr, BERLIN).unwrap_err();
        // The parser's wording is its own; compare everything else.
        let mut got = err.clone();
        if let ScheduleError::Field { reason, .. } = &mut got {
            assert!(!reason.is_empty(), "{expr}: {err}");
            reason.clear();
        }
        assert_eq!(got, want, "{expr}: {err}");
        if !expr.trim().is_empty() {
            assert!(err.to_string().contains(&format!("{expr:?}")), "{err}");
        }
    }
}
