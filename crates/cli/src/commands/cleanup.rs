//! `diskferry cleanup SCOPE` (or `--longhorn TARGET [--volume V]`): finds what killed runs
//! left and removes what is provably abandoned ([`diskferry::ops::cleanup`]).

use std::time::Duration;

use diskferry::ops::cleanup::{self, Action, CleanupItem, CleanupOptions, CleanupReport, Scope};

use super::CommandError;
use crate::ui::{ConnectArgs, OutputArgs};

/// Seconds in the units `--older-than` takes.
const UNITS: [(char, u64); 4] = [('s', 1), ('m', 60), ('h', 3600), ('d', 86400)];

/// Arguments of `cleanup`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "What is removed: temporary snapshots (diskferry-export-*, \
diskferry-backup-*), import working images (IMAGE.diskferry-new-*), export-vm groups \
(diskferry-export-vm-*, with their snapshots; their images stay), multipart uploads, local \
*.diskferry-tmp files, and Longhorn in-progress backups, their locks, expired locks and blocks \
no backup references. Only what a process of this host that no longer runs left is removed at \
once; what another host (or an unrecorded writer) left only once untouched for --older-than. \
Everything found is listed with why it is removed or kept."
)]
pub struct Args {
    /// Where to look: rbd:POOL, rbd:POOL/IMAGE, s3://BUCKET[/PREFIX] or a directory.
    #[arg(required_unless_present = "longhorn", conflicts_with = "longhorn")]
    scope: Option<String>,
    /// A Longhorn backup target (s3://BUCKET@REGION/PATH/, vfs:///DIR/) instead of SCOPE.
    #[arg(long, value_name = "TARGET")]
    longhorn: Option<String>,
    /// With --longhorn: only this backup volume.
    #[arg(long, requires = "longhorn")]
    volume: Option<String>,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long what another host's process (or an unrecorded one) left must be untouched
    /// before it is removed, e.g. 30m, 12h, 2d; `never` removes only what dead processes of
    /// this host left.
    #[arg(long, value_parser = parse_age, default_value = "24h")]
    older_than: MinAge,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// `--older-than`: a duration, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MinAge(Option<Duration>);

/// Parses `90s`, `30m`, `12h`, `2d`, a bare number of seconds, or `never`.
fn parse_age(text: &str) -> Result<MinAge, String> {
    if text == "never" {
        return Ok(MinAge(None));
    }
    let (digits, scale) = match UNITS.iter().find(|(u, _)| text.ends_with(*u)) {
        Some((u, scale)) => (text.trim_end_matches(*u), *scale),
        None => (text, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30m, 12h, 2d or never"))?;
    Ok(MinAge(Some(Duration::from_secs(n.saturating_mul(scale)))))
}

/// Runs `cleanup`.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let scope = match (&args.scope, &args.longhorn) {
        (_, Some(target)) => Scope::longhorn(target, args.volume.as_deref())?,
        (Some(scope), None) => Scope::parse(scope)?,
        (None, None) => unreachable!("clap requires a scope or --longhorn"),
    };
    let options = CleanupOptions {
        dry_run: args.dry_run,
        min_age: args.older_than.0,
    };
    let ctx = args.connect.context();
    let report = cleanup::cleanup(&ctx, &scope, &options).await?;
    args.output.print(&report, || describe(&report))?;
    match report.failed() {
        0 => Ok(()),
        n => Err(format!("{n} leftover(s) could not be removed (see above)").into()),
    }
}

/// One line per item, then a count.
fn describe(report: &CleanupReport) -> String {
    let mut out: Vec<String> = report.items.iter().map(line).collect();
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    out.push(format!(
        "{}: {verb} {}, kept {}, failed {}",
        report.scope,
        report.removed(),
        report
            .items
            .iter()
            .filter(|i| i.action == Action::Kept)
            .count(),
        report.failed()
    ));
    out.join("\n")
}

fn line(item: &CleanupItem) -> String {
    let action = match item.action {
        Action::Removed => "removed",
        Action::WouldRemove => "would remove",
        Action::Kept => "kept",
        Action::Failed => "FAILED to remove",
    };
    let kind = serde_json::to_value(item.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let error = item
        .error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    format!("{action} {kind} {}: {}{error}", item.location, item.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskferry::ops::cleanup::DEFAULT_MIN_AGE;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("90"), Ok(MinAge(Some(Duration::from_secs(90)))));
        assert_eq!(
            parse_age("30m"),
            Ok(MinAge(Some(Duration::from_secs(1800))))
        );
        assert_eq!(parse_age("24h"), Ok(MinAge(Some(DEFAULT_MIN_AGE))));
        assert_eq!(parse_age("never"), Ok(MinAge(None)));
        for bad in ["", "h", "1w", "-1s"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }
}
