use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Count, Decision, Item, Pin, Policy, Reason};
use crate::duration::CalendarDuration;

const BERLIN: Tz = Tz::Europe__Berlin;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn policy(toml_text: &str) -> Policy {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
}

fn items(list: &[(&'static str, &str)]) -> Vec<Item<&'static str>> {
    list.iter()
        .map(|(id, time)| Item {
            id: *id,
            time: utc(time),
        })
        .collect()
}

/// One table row: a policy (as TOML) applied to items (id, time) in a zone at `now`, with the
/// items that must be kept (newest first) and the words of every reason; every other item
/// must be removed.
struct Case {
    name: &'static str,
    policy: &'static str,
    tz: Tz,
    now: &'static str,
    items: &'static [(&'static str, &'static str)],
    pins: &'static [(&'static str, &'static str)],
    keep: &'static [(&'static str, &'static [&'static str])],
}

/// restic's own example in its forget documentation: weekdays for two weeks, an extra
/// backup on Fridays, a missed Wednesday.
const RESTIC_DOC_SNAPSHOTS: &[(&str, &str)] = &[
    ("60e5c031", "2025-04-21T11:00:00Z"),
    ("1dccffe9", "2025-04-22T11:00:00Z"),
    ("90a5c949", "2025-04-23T11:00:00Z"),
    ("79580708", "2025-04-24T11:00:00Z"),
    ("8a603ddf", "2025-04-25T11:00:00Z"),
    ("ae33bf10", "2025-04-25T23:00:00Z"),
    ("fb8b1418", "2025-04-28T11:00:00Z"),
    ("1db188b4", "2025-04-29T11:00:00Z"),
    ("7baa4f28", "2025-05-01T11:00:00Z"),
    ("05c48af3", "2025-05-02T11:00:00Z"),
    ("ad72e262", "2025-05-02T23:00:00Z"),
];

const CASES: &[Case] = &[
    Case {
        name: "restic doc: keep-daily 5 keeps the newest of the 5 most recent days that have one",
        policy: "keep-daily = 5",
        tz: Tz::UTC,
        now: "2025-05-03T00:00:00Z",
        items: RESTIC_DOC_SNAPSHOTS,
        pins: &[],
        // The doc's table labels the kept 25 April 23:00 snapshot 8a603ddf; by its time it is
        // ae33bf10 (the listing above it), a typo in the doc.
        keep: &[
            ("ad72e262", &["daily snapshot"]),
            ("7baa4f28", &["daily snapshot"]),
            ("1db188b4", &["daily snapshot"]),
            ("fb8b1418", &["daily snapshot"]),
            ("ae33bf10", &["daily snapshot"]),
        ],
    },
    Case {
        name: "restic doc: keep-within-daily 7d; the snapshot exactly 7d before the newest is out",
        policy: "keep-within-daily = \"7d\"",
        tz: Tz::UTC,
        now: "2025-05-03T00:00:00Z",
        items: RESTIC_DOC_SNAPSHOTS,
        pins: &[],
        keep: &[
            ("ad72e262", &["daily within 7d"]),
            ("7baa4f28", &["daily within 7d"]),
            ("1db188b4", &["daily within 7d"]),
            ("fb8b1418", &["daily within 7d"]),
        ],
    },
    Case {
        name: "a survivor lists every rule that keeps it",
        policy: "keep-last = 2\nkeep-daily = 2\nkeep-within = \"1d\"",
        tz: Tz::UTC,
        now: "2025-05-03T00:00:00Z",
        items: RESTIC_DOC_SNAPSHOTS,
        pins: &[],
        keep: &[
            ("ad72e262", &["within 1d", "last snapshot", "daily snapshot"]),
            ("05c48af3", &["within 1d", "last snapshot"]),
            ("7baa4f28", &["daily snapshot"]),
        ],
    },
    Case {
        name: "count left at the oldest snapshot keeps it as the oldest of its bucket",
        policy: "keep-daily = 7",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[
            ("d1-morning", "2026-12-01T08:00:00Z"),
            ("d1-evening", "2026-12-01T20:00:00Z"),
            ("d2", "2026-12-02T08:00:00Z"),
            ("d3", "2026-12-03T08:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("d3", &["daily snapshot"]),
            ("d2", &["daily snapshot"]),
            ("d1-evening", &["daily snapshot"]),
            ("d1-morning", &["oldest daily snapshot"]),
        ],
    },
    Case {
        name: "unlimited keeps every bucket and the oldest",
        policy: "keep-monthly = \"unlimited\"",
        tz: Tz::UTC,
        now: "2027-01-01T00:00:00Z",
        items: &[
            ("oct-a", "2026-10-03T00:00:00Z"),
            ("oct-b", "2026-10-20T00:00:00Z"),
            ("nov-a", "2026-11-02T00:00:00Z"),
            ("nov-b", "2026-11-29T00:00:00Z"),
            ("dec-a", "2026-12-01T00:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("dec-a", &["monthly snapshot"]),
            ("nov-b", &["monthly snapshot"]),
            ("oct-b", &["monthly snapshot"]),
            ("oct-a", &["oldest monthly snapshot"]),
        ],
    },
    Case {
        name: "keep-within is measured from the newest snapshot, not from now",
        policy: "keep-within = \"7d\"",
        tz: Tz::UTC,
        now: "2026-12-06T00:00:00Z",
        items: &[
            ("old", "2020-05-01T00:00:00Z"),
            ("recent-1", "2020-05-26T00:00:00Z"),
            ("recent-2", "2020-05-30T00:00:00Z"),
            ("newest", "2020-06-01T00:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("newest", &["within 7d"]),
            ("recent-2", &["within 7d"]),
            ("recent-1", &["within 7d"]),
        ],
    },
    Case {
        name: "a snapshot dated in the future is kept and does not count as the newest",
        policy: "keep-within = \"3d\"",
        tz: Tz::UTC,
        now: "2026-12-06T12:00:00Z",
        items: &[
            ("c", "2026-11-20T02:00:00Z"),
            ("b", "2026-12-04T02:00:00Z"),
            ("a", "2026-12-06T02:00:00Z"),
            ("future", "2026-12-10T02:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("future", &["within 3d"]),
            ("a", &["within 3d"]),
            ("b", &["within 3d"]),
        ],
    },
    Case {
        name: "keep-within 1d across spring-forward is a calendar day (23 real hours)",
        policy: "keep-within = \"1d\"",
        tz: BERLIN,
        now: "2026-03-30T00:00:00Z",
        items: &[
            ("outside", "2026-03-28T10:30:00Z"),  // 11:30 CET
            ("boundary", "2026-03-28T11:00:00Z"), // 12:00 CET: exactly 1d before, out
            ("inside", "2026-03-28T11:30:00Z"),   // 12:30 CET
            ("newest", "2026-03-29T10:00:00Z"),   // 12:00 CEST
        ],
        pins: &[],
        keep: &[("newest", &["within 1d"]), ("inside", &["within 1d"])],
    },
    Case {
        name: "keep-within 24h across spring-forward is 24 real hours",
        policy: "keep-within = \"24h\"",
        tz: BERLIN,
        now: "2026-03-30T00:00:00Z",
        items: &[
            ("exactly-24h-before", "2026-03-28T10:00:00Z"), // out: the bound is exclusive
            ("23h-before", "2026-03-28T11:00:00Z"),
            ("22h30-before", "2026-03-28T11:30:00Z"),
            ("newest", "2026-03-29T10:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("newest", &["within 24h"]),
            ("22h30-before", &["within 24h"]),
            ("23h-before", &["within 24h"]),
        ],
    },
    Case {
        name: "the 25-hour fall-back day is one daily bucket, split from its neighbours at local midnight",
        policy: "keep-daily = 3",
        tz: BERLIN,
        now: "2026-11-01T00:00:00Z",
        items: &[
            ("24th-2330", "2026-10-24T21:30:00Z"), // 23:30 CEST on the 24th
            ("25th-0030", "2026-10-24T22:30:00Z"), // 00:30 CEST on the 25th
            ("25th-0230-cest", "2026-10-25T00:30:00Z"),
            ("25th-0230-cet", "2026-10-25T01:30:00Z"),
            ("25th-2330", "2026-10-25T22:30:00Z"), // 23:30 CET
            ("26th-0030", "2026-10-25T23:30:00Z"), // 00:30 CET on the 26th
        ],
        pins: &[],
        keep: &[
            ("26th-0030", &["daily snapshot"]),
            ("25th-2330", &["daily snapshot"]),
            ("24th-2330", &["daily snapshot"]),
        ],
    },
    Case {
        name: "the 23-hour spring-forward day is one daily bucket",
        policy: "keep-daily = 3",
        tz: BERLIN,
        now: "2026-04-01T00:00:00Z",
        items: &[
            ("28th-2330", "2026-03-28T22:30:00Z"), // 23:30 CET
            ("29th-0030", "2026-03-28T23:30:00Z"), // 00:30 CET on the 29th
            ("29th-0330", "2026-03-29T01:30:00Z"), // 03:30 CEST
            ("29th-2330", "2026-03-29T21:30:00Z"), // 23:30 CEST
            ("30th-0030", "2026-03-29T22:30:00Z"), // 00:30 CEST on the 30th
        ],
        pins: &[],
        keep: &[
            ("30th-0030", &["daily snapshot"]),
            ("29th-2330", &["daily snapshot"]),
            ("28th-2330", &["daily snapshot"]),
        ],
    },
    Case {
        name: "days split at Berlin's midnight, not UTC's",
        policy: "keep-daily = 2",
        tz: BERLIN,
        now: "2026-06-03T00:00:00Z",
        items: &[
            ("may31", "2026-05-31T12:00:00Z"),
            ("jun1-2330", "2026-06-01T21:30:00Z"),
            ("jun2-0030", "2026-06-01T22:30:00Z"),
        ],
        pins: &[],
        keep: &[
            ("jun2-0030", &["daily snapshot"]),
            ("jun1-2330", &["daily snapshot"]),
        ],
    },
    Case {
        name: "the same items in UTC: both evening snapshots fall on 1 June",
        policy: "keep-daily = 2",
        tz: Tz::UTC,
        now: "2026-06-03T00:00:00Z",
        items: &[
            ("may31", "2026-05-31T12:00:00Z"),
            ("jun1-2330", "2026-06-01T21:30:00Z"),
            ("jun2-0030", "2026-06-01T22:30:00Z"),
        ],
        pins: &[],
        keep: &[
            ("jun2-0030", &["daily snapshot"]),
            ("may31", &["daily snapshot"]),
        ],
    },
    Case {
        name: "the repeated hour on fall-back is two hourly buckets, one per real hour",
        policy: "keep-hourly = 2",
        tz: BERLIN,
        now: "2026-10-26T00:00:00Z",
        items: &[
            ("0150-cest", "2026-10-24T23:50:00Z"),
            ("0210-cest", "2026-10-25T00:10:00Z"),
            ("0250-cest", "2026-10-25T00:50:00Z"),
            ("0210-cet", "2026-10-25T01:10:00Z"),
            ("0250-cet", "2026-10-25T01:50:00Z"),
        ],
        pins: &[],
        keep: &[
            ("0250-cet", &["hourly snapshot"]),
            ("0250-cest", &["hourly snapshot"]),
        ],
    },
    Case {
        name: "ISO weeks and years across New Year: 3 January 2027 is in week 53 of 2026",
        policy: "keep-weekly = 2\nkeep-yearly = 2",
        tz: Tz::UTC,
        now: "2027-01-10T00:00:00Z",
        items: &[
            ("2026-12-27-sun-w52", "2026-12-27T12:00:00Z"),
            ("2026-12-31-thu-w53", "2026-12-31T12:00:00Z"),
            ("2027-01-03-sun-w53", "2027-01-03T12:00:00Z"),
            ("2027-01-04-mon-w01", "2027-01-04T12:00:00Z"),
        ],
        pins: &[],
        keep: &[
            (
                "2027-01-04-mon-w01",
                &["weekly snapshot", "yearly snapshot"],
            ),
            ("2027-01-03-sun-w53", &["weekly snapshot"]),
            ("2026-12-31-thu-w53", &["yearly snapshot"]),
        ],
    },
    Case {
        name: "30 December 2024 is in week 1 of 2025, with New Year's Day",
        policy: "keep-weekly = 2",
        tz: Tz::UTC,
        now: "2025-01-10T00:00:00Z",
        items: &[
            ("2024-12-29-sun", "2024-12-29T12:00:00Z"),
            ("2024-12-30-mon", "2024-12-30T12:00:00Z"),
            ("2025-01-01-wed", "2025-01-01T12:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("2025-01-01-wed", &["weekly snapshot"]),
            ("2024-12-29-sun", &["weekly snapshot"]),
        ],
    },
    Case {
        name: "weeks start at Monday 00:00 in the policy's zone",
        policy: "keep-weekly = 2",
        tz: BERLIN,
        now: "2026-12-10T00:00:00Z",
        items: &[
            ("sun-1200", "2026-12-06T11:00:00Z"),
            ("sun-2330", "2026-12-06T22:30:00Z"),
            ("mon-0030", "2026-12-06T23:30:00Z"),
        ],
        pins: &[],
        keep: &[
            ("mon-0030", &["weekly snapshot"]),
            ("sun-2330", &["weekly snapshot"]),
        ],
    },
    Case {
        name: "months and years split at local midnight: 31 Dec 23:30 UTC is January in Berlin",
        policy: "keep-monthly = 2\nkeep-yearly = 2",
        tz: BERLIN,
        now: "2027-02-01T00:00:00Z",
        items: &[
            ("dec-30", "2026-12-30T12:00:00Z"),
            ("jan-1-0030", "2026-12-31T23:30:00Z"),
        ],
        pins: &[],
        keep: &[
            ("jan-1-0030", &["monthly snapshot", "yearly snapshot"]),
            ("dec-30", &["monthly snapshot", "yearly snapshot"]),
        ],
    },
    Case {
        name: "duplicate timestamps: the greater id counts as newer",
        policy: "keep-daily = 1",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[
            ("snap-a", "2026-12-06T02:00:00Z"),
            ("snap-b", "2026-12-06T02:00:00Z"),
            ("earlier", "2026-12-06T01:00:00Z"),
        ],
        pins: &[],
        keep: &[("snap-b", &["daily snapshot"])],
    },
    Case {
        name: "duplicate timestamps with keep-last 2 keep both",
        policy: "keep-last = 2",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[
            ("snap-a", "2026-12-06T02:00:00Z"),
            ("snap-b", "2026-12-06T02:00:00Z"),
            ("earlier", "2026-12-06T01:00:00Z"),
        ],
        pins: &[],
        keep: &[
            ("snap-b", &["last snapshot"]),
            ("snap-a", &["last snapshot"]),
        ],
    },
    Case {
        name: "an empty policy keeps everything",
        policy: "",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[("a", "2026-12-01T00:00:00Z"), ("b", "2026-12-02T00:00:00Z")],
        pins: &[],
        keep: &[
            ("b", &["no keep rule set: everything is kept"]),
            ("a", &["no keep rule set: everything is kept"]),
        ],
    },
    Case {
        name: "a policy of zeros is empty too",
        policy: "keep-last = 0\nkeep-daily = 0\nkeep-within = \"0d\"",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[("a", "2026-12-01T00:00:00Z")],
        pins: &[],
        keep: &[("a", &["no keep rule set: everything is kept"])],
    },
    Case {
        name: "a pinned base of the next incremental survives the policy",
        policy: "keep-last = 1",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[
            ("s1", "2026-12-01T02:00:00Z"),
            ("s2", "2026-12-02T02:00:00Z"),
            ("s3", "2026-12-03T02:00:00Z"),
        ],
        pins: &[
            ("s2", "base of the next incremental"),
            ("not-an-item", "ignored"),
        ],
        keep: &[
            ("s3", &["last snapshot"]),
            ("s2", &["pinned: base of the next incremental"]),
        ],
    },
    Case {
        name: "a pin on an item the rules keep adds its reason first",
        policy: "keep-last = 1",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[("s1", "2026-12-01T02:00:00Z"), ("s2", "2026-12-02T02:00:00Z")],
        pins: &[("s2", "base of the next incremental")],
        keep: &[(
            "s2",
            &["pinned: base of the next incremental", "last snapshot"],
        )],
    },
    Case {
        name: "no items, no decision",
        policy: "keep-daily = 7",
        tz: Tz::UTC,
        now: "2026-12-10T00:00:00Z",
        items: &[],
        pins: &[],
        keep: &[],
    },
];

fn run(case: &Case, order: impl Fn(&mut Vec<Item<&'static str>>)) -> Decision<&'static str> {
    let mut list = items(case.items);
    order(&mut list);
    let pins: Vec<Pin<&'static str>> = case
        .pins
        .iter()
        .map(|(id, why)| Pin::new(*id, *why))
        .collect();
    policy(case.policy).apply(&list, &pins, case.tz, utc(case.now))
}

#[test]
fn policies_keep_and_remove_what_restic_would_in_the_policy_zone() {
    for case in CASES {
        let decision = run(case, |_| {});
        let got: Vec<(&str, Vec<String>)> = decision
            .keep
            .iter()
            .map(|(id, reasons)| (*id, reasons.iter().map(Reason::to_string).collect()))
            .collect();
        let want: Vec<(&str, Vec<String>)> = case
            .keep
            .iter()
            .map(|(id, reasons)| (*id, reasons.iter().map(|r| r.to_string()).collect()))
            .collect();
        assert_eq!(got, want, "{}", case.name);

        // Every item is in exactly one list; removals are newest first.
        let kept: BTreeSet<&str> = case.keep.iter().map(|(id, _)| *id).collect();
        let mut want_removed: Vec<(DateTime<Utc>, &str)> = case
            .items
            .iter()
            .filter(|(id, _)| !kept.contains(id))
            .map(|(id, t)| (utc(t), *id))
            .collect();
        want_removed.sort_by(|a, b| b.cmp(a));
        let want_removed: Vec<&str> = want_removed.into_iter().map(|(_, id)| id).collect();
        assert_eq!(decision.remove, want_removed, "{}", case.name);
    }
}

#[test]
fn decisions_do_not_depend_on_the_order_items_are_listed_in() {
    for case in CASES {
        let sorted = run(case, |_| {});
        assert_eq!(run(case, |l| l.reverse()), sorted, "{}", case.name);
        let half_turn = |l: &mut Vec<Item<&'static str>>| {
            let half = l.len() / 2;
            l.rotate_left(half);
        };
        assert_eq!(run(case, half_turn), sorted, "{}", case.name);
    }
}

/// restic's documented long example: one backup a day for a century, `--keep-daily 7
/// --keep-weekly 5 --keep-monthly 12 --keep-yearly 75` keeps 7 dailies, 4 more weeklies (the
/// newest is both), 12 or 11 more monthlies and 75 or 74 more yearlies.
#[test]
fn a_century_of_dailies_keeps_what_restics_documentation_counts() {
    let newest = Utc.with_ymd_and_hms(2026, 12, 6, 2, 0, 0).unwrap(); // a Sunday
    let list: Vec<Item<i64>> = (0..365 * 100)
        .map(|n| Item {
            id: n,
            time: newest - Duration::days(n),
        })
        .collect();
    let p = Policy {
        keep_daily: Count::Limit(7),
        keep_weekly: Count::Limit(5),
        keep_monthly: Count::Limit(12),
        keep_yearly: Count::Limit(75),
        ..Policy::default()
    };
    let d = p.apply(&list, &[], Tz::UTC, newest + Duration::hours(1));
    let with = |word: &str| {
        d.keep
            .iter()
            .filter(|(_, rs)| {
                rs.iter()
                    .any(|r| r.to_string() == format!("{word} snapshot"))
            })
            .count()
    };
    assert_eq!(
        (
            with("daily"),
            with("weekly"),
            with("monthly"),
            with("yearly")
        ),
        (7, 5, 12, 75)
    );
    // 7 days (30 Nov .. 6 Dec); Sundays 8..29 Nov add 4 (6 Dec is daily); month ends
    // Jan..Oct 2026 add 10 (30 Nov and 6 Dec are daily); 31 Dec 1952..2025 add 74.
    assert_eq!(d.keep.len(), 7 + 4 + 10 + 74);
    assert_eq!(d.keep.len() + d.remove.len(), list.len());
}

/// The service passes only what its job made, recognised by name; a snapshot made by a
/// person or by another job never reaches the policy and so is never removed.
#[test]
fn foreign_snapshots_filtered_out_by_name_are_never_removed() {
    /// The service's own naming (`diskferry.JOB.YYYYMMDDTHHMMSSZ`), for this test.
    fn own(job: &str, name: &str) -> Option<DateTime<Utc>> {
        let stamp = name
            .strip_prefix("diskferry.")?
            .strip_prefix(job)?
            .strip_prefix('.')?;
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc())
    }
    let on_the_image = [
        "before-upgrade",
        "diskferry.nightly.20261201T020000Z",
        "diskferry.nightly.20261202T020000Z",
        "diskferry.nightly-2.20261130T020000Z",
        "diskferry.weekly.20261129T020000Z",
        "diskferry.nightly.20261203T020000Z",
        "diskferry.nightly.garbage",
    ];
    let mine: Vec<Item<&str>> = on_the_image
        .iter()
        .filter_map(|name| own("nightly", name).map(|time| Item { id: *name, time }))
        .collect();
    assert_eq!(mine.len(), 3);
    let keep_last_one = Policy {
        keep_last: Count::Limit(1),
        ..Policy::default()
    };
    let d = keep_last_one.apply(&mine, &[], Tz::UTC, utc("2026-12-10T00:00:00Z"));
    assert_eq!(
        d.remove,
        [
            "diskferry.nightly.20261202T020000Z",
            "diskferry.nightly.20261201T020000Z"
        ]
    );
    for foreign in [
        "before-upgrade",
        "diskferry.nightly-2.20261130T020000Z",
        "diskferry.weekly.20261129T020000Z",
        "diskferry.nightly.garbage",
    ] {
        assert!(
            !d.remove.contains(&foreign),
            "{foreign} must never be removed"
        );
    }
}

#[test]
fn policy_reads_from_toml_and_refuses_mistakes_by_name() {
    let p = policy(
        "keep-last = 3\nkeep-hourly = 24\nkeep-daily = 7\nkeep-weekly = 4\nkeep-monthly = \"unlimited\"\n\
         keep-yearly = 2\nkeep-within = \"36h\"\nkeep-within-daily = \"1m\"",
    );
    assert_eq!(
        p,
        Policy {
            keep_last: Count::Limit(3),
            keep_hourly: Count::Limit(24),
            keep_daily: Count::Limit(7),
            keep_weekly: Count::Limit(4),
            keep_monthly: Count::Unlimited,
            keep_yearly: Count::Limit(2),
            keep_within: CalendarDuration {
                hours: 36,
                ..CalendarDuration::default()
            },
            keep_within_daily: CalendarDuration {
                months: 1,
                ..CalendarDuration::default()
            },
            ..Policy::default()
        }
    );
    assert_eq!(
        p.to_string(),
        "keep 3 latest, 24 hourly, 7 daily, 4 weekly, all monthly, 2 yearly snapshots, \
         daily snapshots within 1m and all snapshots within 36h of the newest"
    );
    assert_eq!(
        Policy::default().to_string(),
        "keep everything (no keep rule set)"
    );

    let cases: &[(&str, &[&str])] = &[
        ("keep-dayly = 7", &["keep-dayly", "unknown field"]),
        (
            "keep-daily = -1",
            &["keep-daily", "-1 is negative", "\"unlimited\""],
        ),
        (
            "keep-daily = \"lots\"",
            &["keep-daily", "\"lots\" is not a number"],
        ),
        (
            "keep-daily = 4294967296",
            &["keep-daily", "4294967296 is too large"],
        ),
        (
            "keep-within = \"1w\"",
            &["keep-within", "\"1w\"", "unknown unit 'w'"],
        ),
        ("keep-within = 7", &["keep-within"]),
    ];
    for (text, words) in cases {
        let err = toml::from_str::<Policy>(text).unwrap_err().to_string();
        for word in *words {
            assert!(err.contains(word), "{text}: {err:?} lacks {word:?}");
        }
    }
}

#[test]
fn policy_round_trips_through_toml() {
    let p = policy("keep-daily = 7\nkeep-monthly = \"unlimited\"\nkeep-within = \"1y6m\"");
    let text = toml::to_string(&p).unwrap();
    assert_eq!(toml::from_str::<Policy>(&text).unwrap(), p, "{text}");
}
