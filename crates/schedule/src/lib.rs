//! Pure logic under `diskferry serve`: when jobs run, and which of their results to keep.
//!
//! - [`Schedule`]: a cron expression (5 fields, or 6 with a leading seconds field, or a
//!   nickname such as `@daily`) evaluated in an explicit IANA time zone, with a documented rule
//!   for daylight-saving changes (a daily job runs exactly once on both change days).
//! - [`Policy`]: a retention policy with the semantics of `restic forget` (keep-last,
//!   keep-hourly/-daily/-weekly/-monthly/-yearly, keep-within and keep-within-*), whose calendar
//!   buckets are computed in an explicit time zone, returning a [`Decision`] that lists every
//!   rule that keeps each survivor.
//!
//! The crate does no I/O and never reads the system clock: every "now" is a parameter, so the
//! same inputs always give the same answer (and tests run on a fixed clock). Time-zone rules
//! are compiled in (the IANA database bundled by `chrono-tz`), not read from the host.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use schedule::{time_zone, Count, Item, Policy, Schedule};
//!
//! let tz = time_zone("Europe/Berlin")?;
//! let nightly = Schedule::parse("0 2 * * *", tz)?;
//! let after = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
//! assert_eq!(nightly.next_after(after), Some(Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap()));
//!
//! let policy = Policy { keep_daily: Count::Limit(7), ..Policy::default() };
//! let items = [Item { id: "diskferry.nightly.20261206T010000Z", time: after }];
//! let decision = policy.apply(&items, &[], tz, after);
//! assert!(decision.remove.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod cron;
mod duration;
mod retention;

pub use chrono_tz::Tz;
pub use cron::{Schedule, ScheduleError};
pub use duration::{CalendarDuration, DurationError};
pub use retention::{Count, Decision, Item, Period, Pin, Policy, Reason};

/// A time-zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown time zone {name:?}: give an IANA name such as \"Europe/Berlin\" or \"UTC\" \
     (names are case-sensitive)"
)]
pub struct TimeZoneError {
    /// The name as given.
    pub name: String,
}

/// Looks up an IANA time-zone name (`"Europe/Berlin"`, `"UTC"`), exactly as spelt in the
/// database. There is deliberately no "local" zone: a schedule or policy that silently took
/// the host's zone would change meaning when the service moves to another machine.
pub fn time_zone(name: &str) -> Result<Tz, TimeZoneError> {
    name.parse::<Tz>().map_err(|_| TimeZoneError {
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_accepts_iana_names_and_names_a_wrong_one() {
        assert_eq!(time_zone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(time_zone("UTC"), Ok(Tz::UTC));
        for wrong in ["europe/berlin", "Local", "", "CEST", "Europe/Berlin "] {
            let err = time_zone(wrong).unwrap_err();
            assert_eq!(err.name, wrong);
            assert!(
                err.to_string().contains(&format!("{wrong:?}")),
                "{err} names {wrong:?}"
            );
        }
    }
}
