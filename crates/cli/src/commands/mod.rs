//! One module per subcommand.

pub mod cleanup;
pub mod convert;
pub mod export;
pub mod hooks;
pub mod images;
pub mod import;
pub mod longhorn;
pub mod serve;
pub mod verify;
pub mod vm;

use std::str::FromStr;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

/// Error type of subcommands: each returns its own error, printed with its sources.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// A parser of one of `names` (each listed with its meaning in `--help`, as clap lists a
/// `ValueEnum`'s), into `T` by `T`'s `FromStr`: the library's names, parsed by the library.
pub fn named<T>(names: &'static [(&'static str, &'static str)]) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(
        names
            .iter()
            .map(|(name, meaning)| PossibleValue::new(name).help(meaning)),
    )
    .try_map(|name| name.parse::<T>())
}

/// Parses a disk format: `qcow2`, `raw` or `raw.zst`.
pub fn parse_format(text: &str) -> Result<diskferry::ObjectFormat, String> {
    text.parse().map_err(|e: diskferry::Error| e.to_string())
}

/// Parses a `KEY=VALUE` label by the library's rules ([`diskferry::parse_label`]).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    diskferry::parse_label(text).map_err(|e| e.to_string())
}

/// ", format guessed from its content" when nothing but the magic bytes said it: the user
/// should know, and can give `-f` to be sure.
pub fn origin_note(origin: diskferry::FormatOrigin) -> &'static str {
    match origin {
        diskferry::FormatOrigin::Guessed => ", guessed from its content: give -f to be sure",
        _ => "",
    }
}

/// The figures every copy's report ends with, in the same words and order: "SIZE virtual,
/// READ read, DESTINATION, SECONDS s" and a line with the digest. `$report` is any job report
/// with the fields `size`, `bytes_read`, `seconds`, `digest` and `digest_algorithm`;
/// `$destination` says what the destination got.
macro_rules! copy_figures {
    ($report:expr, $destination:expr) => {
        format!(
            "{} virtual, {} read, {}, {:.1} s\ndigest {} ({})",
            $crate::ui::bytes($report.size),
            $crate::ui::bytes($report.bytes_read),
            $destination,
            $report.seconds,
            $report.digest,
            $report.digest_algorithm,
        )
    };
}
pub(crate) use copy_figures;

/// ", zstd clusters" for a qcow2 output with compressed clusters; nothing otherwise.
pub fn clusters_note(format: &str, compression: &str) -> String {
    match compression {
        "none" => String::new(),
        c if format == "qcow2" => format!(", {c} clusters"),
        _ => String::new(),
    }
}
