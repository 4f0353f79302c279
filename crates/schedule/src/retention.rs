//! Retention with the semantics of `restic forget`, in an explicit time zone.

use std::fmt;

use chrono::{DateTime, Datelike, Offset, Timelike, Utc};
use chrono_tz::Tz;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::CalendarDuration;

/// The word that stands for "no limit" in a count, as in restic.
const UNLIMITED: &str = "unlimited";

/// How many buckets a keep-* rule keeps: a number, or every bucket (`"unlimited"`).
///
/// In TOML: `keep-daily = 7` or `keep-daily = "unlimited"`. `0` (the default) turns the rule
/// off. restic's `-1` for "unlimited" is refused with a message that says to write
/// `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// Keep at most this many (0: the rule is off).
    Limit(u32),
    /// Keep every bucket.
    Unlimited,
}

impl Default for Count {
    fn default() -> Self {
        Self::Limit(0)
    }
}

impl Count {
    /// Whether the rule is on (a limit above zero, or unlimited).
    pub fn is_active(&self) -> bool {
        *self != Self::Limit(0)
    }

    /// One bucket was kept: a limit counts down, unlimited stays.
    fn spend(&mut self) {
        if let Self::Limit(n) = self {
            *n = n.saturating_sub(1);
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limit(n) => write!(f, "{n}"),
            Self::Unlimited => f.write_str("all"),
        }
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Limit(n) => s.serialize_u32(*n),
            Self::Unlimited => s.serialize_str(UNLIMITED),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a count of 0 or more, or {UNLIMITED:?}")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                u32::try_from(n)
                    .map(Count::Limit)
                    .map_err(|_| E::custom(format_args!("count {n} is too large")))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format_args!(
                        "count {n} is negative: write 0 or more, or {UNLIMITED:?} to keep every bucket"
                    ))),
                }
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Count, E> {
                if s == UNLIMITED {
                    Ok(Count::Unlimited)
                } else {
                    Err(E::custom(format_args!(
                        "count {s:?} is not a number: write 0 or more, or {UNLIMITED:?}"
                    )))
                }
            }
        }

        d.deserialize_any(CountVisitor)
    }
}

/// A calendar period that buckets snapshots for keep-hourly/-daily/-weekly/-monthly/-yearly
/// and their keep-within-* forms.
///
/// Buckets are read from each snapshot's wall-clock time in the policy's time zone:
/// - **hourly**: date, hour and UTC offset. On the fall-back night the repeated hour is two
///   buckets, one per real hour (restic, which reads the hour in each snapshot's recorded
///   offset, merges them); a skipped hour is no bucket.
/// - **daily**: the calendar date (a day of 23 or 25 hours on a DST change is one bucket).
/// - **weekly**: the ISO 8601 week-numbering year and week (Monday to Sunday), as restic's Go
///   `ISOWeek`: 31 December 2026 and 3 January 2027 are both in week 53 of 2026.
/// - **monthly**, **yearly**: the calendar month and year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// An hour of the wall clock (at one UTC offset).
    Hourly,
    /// A calendar day.
    Daily,
    /// An ISO 8601 week.
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

/// Identifies a bucket: fields that do not apply to a period are zero.
type BucketKey = (i32, u32, u32, u32, i32);

impl Period {
    /// The adjective restic prints (`daily`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    /// The bucket `time` falls in, on the wall clock of `tz`.
    fn bucket(&self, time: DateTime<Utc>, tz: Tz) -> BucketKey {
        let local = time.with_timezone(&tz);
        match self {
            Self::Hourly => (
                local.year(),
                local.month(),
                local.day(),
                local.hour(),
                local.offset().fix().local_minus_utc(),
            ),
            Self::Daily => (local.year(), local.month(), local.day(), 0, 0),
            Self::Weekly => {
                let week = local.iso_week();
                (week.year(), week.week(), 0, 0, 0)
            }
            Self::Monthly => (local.year(), local.month(), 0, 0, 0),
            Self::Yearly => (local.year(), 0, 0, 0, 0),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A retention policy: which snapshots (or stored backups) of one job and image to keep.
///
/// The semantics are those of `restic forget` (its documentation and
/// `internal/data/snapshot_policy.go`):
/// - Rules are OR'ed: a snapshot is kept if any rule keeps it, and [`Decision::keep`] lists
///   every rule that did.
/// - Snapshots are walked newest first. **keep-last n** keeps the newest n.
/// - **keep-hourly/-daily/-weekly/-monthly/-yearly n**: a snapshot is kept when its bucket
///   (see [`Period`]) differs from the bucket of the last snapshot that rule kept, and the
///   rule's count drops by one; so "keep-daily 7" keeps the newest snapshot of each of the 7
///   most recent days **that have one** (days without a snapshot do not count).
/// - If a count rule still has count left when the walk reaches the oldest snapshot, that one
///   is kept too ("oldest daily snapshot"), which keeps the longest history the counts allow.
/// - **keep-within d** keeps every snapshot strictly newer than `d` before the newest
///   snapshot (not before *now*: a job that stopped running does not lose its last backups).
///   Snapshots dated after `now` (clock skew) do not count as the newest, and are always kept
///   by keep-within.
/// - **keep-within-hourly/-daily/… d**: the bucket rule without a count, applied to the
///   snapshots within `d` of the newest; the oldest snapshot within `d` is also kept.
///
/// Deliberate differences from restic:
/// - An **empty policy keeps everything** ([`Reason::EmptyPolicy`]) instead of being refused:
///   a missing or mistyped retention section must never delete anything.
/// - Buckets and calendar durations are computed in the explicit time zone passed to
///   [`Policy::apply`], not in each snapshot's recorded offset; hourly buckets keep the two
///   passes of a repeated hour apart (see [`Period`]).
/// - Snapshots with the same time are ordered by id (the greater id counts as newer), so the
///   decision does not depend on the order in which a store listed them. Two instances of the
///   service that list the same snapshots therefore agree on what to remove.
/// - Callers can pin snapshots ([`Pin`]), e.g. the base of the next incremental backup.
///
/// In TOML (kebab-case fields, all optional, unknown fields refused):
///
/// ```toml
/// keep-last = 3
/// keep-daily = 7
/// keep-weekly = 4
/// keep-monthly = "unlimited"
/// keep-within = "36h"
/// keep-within-daily = "1m"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest n snapshots.
    pub keep_last: Count,
    /// Keep the newest snapshot of each of the n most recent hours that have one.
    pub keep_hourly: Count,
    /// Keep the newest snapshot of each of the n most recent days that have one.
    pub keep_daily: Count,
    /// Keep the newest snapshot of each of the n most recent ISO weeks that have one.
    pub keep_weekly: Count,
    /// Keep the newest snapshot of each of the n most recent months that have one.
    pub keep_monthly: Count,
    /// Keep the newest snapshot of each of the n most recent years that have one.
    pub keep_yearly: Count,
    /// Keep every snapshot newer than this before the newest snapshot (zero: off).
    pub keep_within: CalendarDuration,
    /// Keep the newest snapshot of each hour within this of the newest snapshot.
    pub keep_within_hourly: CalendarDuration,
    /// Keep the newest snapshot of each day within this of the newest snapshot.
    pub keep_within_daily: CalendarDuration,
    /// Keep the newest snapshot of each ISO week within this of the newest snapshot.
    pub keep_within_weekly: CalendarDuration,
    /// Keep the newest snapshot of each month within this of the newest snapshot.
    pub keep_within_monthly: CalendarDuration,
    /// Keep the newest snapshot of each year within this of the newest snapshot.
    pub keep_within_yearly: CalendarDuration,
}

/// One snapshot or stored backup that the policy decides on.
///
/// Pass only items the job itself made (recognised by its own naming, e.g. snapshot names
/// `diskferry.JOB.20261206T020000Z` or the job's object-key prefix), one job and image at a
/// time. The policy cannot tell a foreign snapshot from its own: whatever is passed in may be
/// removed, and whatever is not passed in is never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<I> {
    /// The caller's name for it (snapshot name, object key, backup name).
    pub id: I,
    /// When it was taken.
    pub time: DateTime<Utc>,
}

/// A caller's order to keep one item whatever the policy says, with the reason to show.
///
/// A Longhorn job pins the snapshot that its next incremental backup is computed from.
/// A pin keeps the item but takes no count from any rule (like restic's `--keep-tag`); a pin
/// whose id is not among the items has no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin<I> {
    /// The item to keep.
    pub id: I,
    /// Why, in words (shown as `pinned: WHY`).
    pub why: String,
}

impl<I> Pin<I> {
    /// A pin of `id`, kept because of `why`.
    pub fn new(id: I, why: impl Into<String>) -> Self {
        Self {
            id,
            why: why.into(),
        }
    }
}

/// Why an item is kept. [`fmt::Display`] prints restic's wording (`daily snapshot`,
/// `oldest monthly snapshot`, `within 7d`, `daily within 1m`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The caller pinned it ([`Pin`]).
    Pinned(String),
    /// The policy has no rule, so everything is kept.
    EmptyPolicy,
    /// keep-within: newer than this before the newest snapshot.
    Within(CalendarDuration),
    /// keep-last: among the newest n.
    Last,
    /// keep-hourly/-daily/…: the newest snapshot of its bucket, or (`oldest`) the oldest
    /// snapshot kept because the count was not used up.
    Period {
        /// The rule's period.
        period: Period,
        /// Kept as the oldest snapshot, not as a new bucket.
        oldest: bool,
    },
    /// keep-within-hourly/-daily/…: the newest snapshot of its bucket within the duration,
    /// or (`oldest`) the oldest snapshot within it.
    PeriodWithin {
        /// The rule's period.
        period: Period,
        /// The rule's duration.
        within: CalendarDuration,
        /// Kept as the oldest snapshot, not as a new bucket.
        oldest: bool,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let oldest = |o: bool| if o { "oldest " } else { "" };
        match self {
            Self::Pinned(why) => write!(f, "pinned: {why}"),
            Self::EmptyPolicy => f.write_str("no keep rule set: everything is kept"),
            Self::Within(d) => write!(f, "within {d}"),
            Self::Last => f.write_str("last snapshot"),
            Self::Period { period, oldest: o } => write!(f, "{}{period} snapshot", oldest(*o)),
            Self::PeriodWithin {
                period,
                within,
                oldest: o,
            } => write!(f, "{}{period} within {within}", oldest(*o)),
        }
    }
}

/// What a policy decided: every item is in exactly one of the two lists, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<I> {
    /// Items to keep, each with every reason that keeps it (never empty).
    pub keep: Vec<(I, Vec<Reason>)>,
    /// Items to remove.
    pub remove: Vec<I>,
}

impl Policy {
    /// Whether no rule is set (every count 0, every duration zero). Such a policy keeps
    /// everything.
    pub fn is_empty(&self) -> bool {
        !self.keep_last.is_active()
            && self.keep_within.is_zero()
            && self
                .periods()
                .iter()
                .all(|(_, count, within)| !count.is_active() && within.is_zero())
    }

    /// Per period, shortest first (restic's order): its count rule and its keep-within rule.
    fn periods(&self) -> [(Period, Count, CalendarDuration); 5] {
        [
            (Period::Hourly, self.keep_hourly, self.keep_within_hourly),
            (Period::Daily, self.keep_daily, self.keep_within_daily),
            (Period::Weekly, self.keep_weekly, self.keep_within_weekly),
            (Period::Monthly, self.keep_monthly, self.keep_within_monthly),
            (Period::Yearly, self.keep_yearly, self.keep_within_yearly),
        ]
    }

    /// Decides which of `items` to keep and which to remove (see the type's docs for the
    /// rules), with calendar buckets and durations on the wall clock of `tz`. `now` only
    /// decides which items are dated in the future (they do not count as the newest for
    /// keep-within); the crate never reads the clock itself.
    ///
    /// `items` must hold only what the caller's job made (see [`Item`]); `pins` are kept
    /// whatever the rules say. Items may be given in any order; ids should be unique.
    pub fn apply<I: Clone + Ord>(
        &self,
        items: &[Item<I>],
        pins: &[Pin<I>],
        tz: Tz,
        now: DateTime<Utc>,
    ) -> Decision<I> {
        let mut order: Vec<&Item<I>> = items.iter().collect();
        order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        let pinned = |id: &I| -> Vec<Reason> {
            pins.iter()
                .filter(|p| p.id == *id)
                .map(|p| Reason::Pinned(p.why.clone()))
                .collect()
        };
        let mut decision = Decision {
            keep: Vec::new(),
            remove: Vec::new(),
        };
        if self.is_empty() {
            for item in order {
                let mut reasons = pinned(&item.id);
                reasons.push(Reason::EmptyPolicy);
                decision.keep.push((item.id.clone(), reasons));
            }
            return decision;
        }

        // keep-within is measured from the newest snapshot that is not in the future. A
        // cutoff of `None` (no such snapshot, or a duration reaching past the calendar) puts
        // every item within.
        let newest = order.iter().map(|i| i.time).find(|t| *t < now);
        let cutoff = |d: &CalendarDuration| newest.and_then(|n| d.before(n, tz));
        let is_within = |t: DateTime<Utc>, cut: Option<DateTime<Utc>>| cut.is_none_or(|c| t > c);
        let within_cutoff = cutoff(&self.keep_within);
        let mut last_left = self.keep_last;
        let mut counted = self.periods().map(|(period, count, _)| CountRule {
            buckets: Buckets::new(period),
            left: count,
        });
        let mut windows = self.periods().map(|(period, _, within)| WithinRule {
            buckets: Buckets::new(period),
            within,
            cutoff: cutoff(&within),
        });

        let oldest_index = order.len().saturating_sub(1);
        for (nr, item) in order.into_iter().enumerate() {
            let is_oldest = nr == oldest_index;
            let mut reasons = pinned(&item.id);
            if !self.keep_within.is_zero() && is_within(item.time, within_cutoff) {
                reasons.push(Reason::Within(self.keep_within));
            }
            if last_left.is_active() {
                last_left.spend();
                reasons.push(Reason::Last);
            }
            for rule in counted.iter_mut().filter(|r| r.left.is_active()) {
                if let Some(oldest) = rule.buckets.keeps(item.time, tz, is_oldest) {
                    rule.left.spend();
                    reasons.push(Reason::Period {
                        period: rule.buckets.period,
                        oldest,
                    });
                }
            }
            for rule in &mut windows {
                if rule.within.is_zero() || !is_within(item.time, rule.cutoff) {
                    continue;
                }
                if let Some(oldest) = rule.buckets.keeps(item.time, tz, is_oldest) {
                    reasons.push(Reason::PeriodWithin {
                        period: rule.buckets.period,
                        within: rule.within,
                        oldest,
                    });
                }
            }
            if reasons.is_empty() {
                decision.remove.push(item.id.clone());
            } else {
                decision.keep.push((item.id.clone(), reasons));
            }
        }
        decision
    }
}

/// The bucket step that count and keep-within-* rules share, walking newest to oldest.
struct Buckets {
    period: Period,
    /// The bucket of the last snapshot the rule kept.
    last: Option<BucketKey>,
}

impl Buckets {
    fn new(period: Period) -> Self {
        Self { period, last: None }
    }

    /// Whether the rule keeps a snapshot taken at `time`: when it opens a new bucket, or when
    /// it is the oldest of all (then `Some(true)` if its bucket was already kept).
    fn keeps(&mut self, time: DateTime<Utc>, tz: Tz, is_oldest: bool) -> Option<bool> {
        let bucket = self.period.bucket(time, tz);
        let same = self.last == Some(bucket);
        if same && !is_oldest {
            return None;
        }
        self.last = Some(bucket);
        Some(same)
    }
}

/// The walk's state for one keep-hourly/-daily/… rule.
struct CountRule {
    buckets: Buckets,
    /// Buckets it may still keep.
    left: Count,
}

/// The walk's state for one keep-within-* rule.
struct WithinRule {
    buckets: Buckets,
    within: CalendarDuration,
    /// Items at or before this are outside the window (`None`: all are inside).
    cutoff: Option<DateTime<Utc>>,
}

impl fmt::Display for Policy {
    /// restic's summary: `keep 7 daily snapshots, all monthly snapshots, daily snapshots
    /// within 1m and all snapshots within 36h of the newest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("keep everything (no keep rule set)");
        }
        let mut parts = Vec::new();
        if self.keep_last.is_active() {
            parts.push(format!("{} latest", self.keep_last));
        }
        for (period, count, _) in self.periods() {
            if count.is_active() {
                parts.push(format!("{count} {period}"));
            }
        }
        let mut text = String::new();
        if !parts.is_empty() {
            text = format!("{} snapshots", parts.join(", "));
        }
        for (period, _, within) in self.periods() {
            if !within.is_zero() {
                if !text.is_empty() {
                    text.push_str(", ");
                }
                text.push_str(&format!("{period} snapshots within {within}"));
            }
        }
        if !self.keep_within.is_zero() {
            if !text.is_empty() {
                text.push_str(" and ");
            }
            text.push_str(&format!(
                "all snapshots within {} of the newest",
                self.keep_within
            ));
        }
        write!(f, "keep {text}")
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
