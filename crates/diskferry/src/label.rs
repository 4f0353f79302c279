//! Labels a user gives as `KEY=VALUE` (VM bundle manifests, Longhorn backups).

use crate::{Error, Result};

/// Splits a `KEY=VALUE` label at its first `=`.
///
/// The rules, one for every command that takes labels: the key must not be empty; the value
/// may be empty and may itself contain `=` (`a=b=c` is key `a`, value `b=c`); neither is
/// trimmed. What a key may further contain is for the place that stores it to check (a VM
/// manifest allows fewer characters than a Longhorn backup).
pub fn parse_label(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(Error::InvalidOption(format!(
            "label {text:?} is not KEY=VALUE with a non-empty KEY"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_splits_at_the_first_equals_sign() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(parse_label("vm=web1").unwrap(), pair("vm", "web1"));
        assert_eq!(parse_label("a=b=c").unwrap(), pair("a", "b=c"));
        assert_eq!(parse_label("empty=").unwrap(), pair("empty", ""));
        assert_eq!(parse_label(" k = v ").unwrap(), pair(" k ", " v "));
    }

    #[test]
    fn a_label_needs_an_equals_sign_and_a_key() {
        for bad in ["novalue", "=x", "", "="] {
            let err = parse_label(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("label {bad:?} is not KEY=VALUE")),
                "{err}"
            );
        }
    }
}
