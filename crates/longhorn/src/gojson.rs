//! The parts of Go's `encoding/json` that Longhorn's files depend on.
//!
//! Writing reproduces `json.Marshal` byte for byte: compact, fields in declaration order, map
//! keys sorted, HTML escaping of `&`, `<`, `>` (and U+2028/U+2029), `,string` int64 fields as
//! strings and `,string` string fields double-encoded. Reading is as tolerant as
//! `json.Decoder.Decode`: keys match case-insensitively, the last duplicate wins, unknown keys
//! are ignored, missing fields keep their zero value, data after the first value is ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::error::{Error, Result};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string the way Go's `json.Marshal` writes it (HTML escaping on).
pub fn push_string(out: &mut String, s: &str, escape_html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Go >= 1.22 writes \b and \f (older versions wrote \u0008 and \u000c; both decode
            // the same).
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' if escape_html => push_u_escape(out, c as u32),
            c if (c as u32) < 0x20 => push_u_escape(out, c as u32),
            // JSONP safety: Go always escapes the line and paragraph separators.
            '\u{2028}' | '\u{2029}' => push_u_escape(out, c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_u_escape(out: &mut String, cp: u32) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX_DIGITS[((cp >> shift) & 0xf) as usize] as char);
    }
}

/// A Go `,string` string field: the JSON string of the JSON string of `s`.
pub fn push_double_encoded(out: &mut String, s: &str) {
    let mut inner = String::with_capacity(s.len() + 2);
    push_string(&mut inner, s, true);
    // Go escapes HTML only in the inner encoding.
    push_string(out, &inner, false);
}

/// A Go `,string` int64 field.
pub fn push_string_int(out: &mut String, v: u64) {
    out.push('"');
    out.push_str(&v.to_string());
    out.push('"');
}

/// A Go `map[string]string`: `null` when nil, otherwise keys sorted.
pub fn push_string_map(out: &mut String, m: &Option<BTreeMap<String, String>>) {
    match m {
        None => out.push_str("null"),
        Some(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(out, k, true);
                out.push(':');
                push_string(out, v, true);
            }
            out.push('}');
        }
    }
}

/// Builder for a compact JSON object in field order.
#[derive(Debug, Default)]
pub struct ObjectWriter {
    out: String,
}

impl ObjectWriter {
    /// Starts an object.
    pub fn new() -> Self {
        Self {
            out: String::from("{"),
        }
    }

    /// Writes the key and returns the buffer to write the value into.
    pub fn key(&mut self, name: &str) -> &mut String {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, name, true);
        self.out.push(':');
        &mut self.out
    }

    /// A plain string field.
    pub fn string(&mut self, name: &str, v: &str) {
        push_string(self.key(name), v, true);
    }

    /// Closes the object.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// The top-level JSON object of a file, entries in document order (duplicates kept).
#[derive(Debug, Default)]
pub struct Fields {
    entries: Vec<(String, Value)>,
    path: String,
}

struct EntriesVisitor;

struct Entries(Option<Vec<(String, Value)>>);

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_unit<E>(self) -> std::result::Result<Entries, E> {
        Ok(Entries(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
        let mut v = Vec::new();
        while let Some((k, val)) = map.next_entry::<String, Value>()? {
            v.push((k, val));
        }
        Ok(Entries(Some(v)))
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(EntriesVisitor)
    }
}

impl Fields {
    /// Parses the first JSON value of `data` (as `json.Decoder.Decode` does); `null` gives no
    /// fields.
    pub fn parse(data: &[u8], path: &str) -> Result<Self> {
        let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<Entries>();
        let entries = match stream.next() {
            Some(Ok(Entries(e))) => e.unwrap_or_default(),
            Some(Err(e)) => {
                return Err(Error::Json {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
            None => {
                return Err(Error::Json {
                    path: path.to_owned(),
                    reason: "empty file (EOF)".to_owned(),
                })
            }
        };
        Ok(Self {
            entries,
            path: path.to_owned(),
        })
    }

    /// Wraps an already parsed object (a nested struct).
    pub fn from_object(obj: &serde_json::Map<String, Value>, path: &str) -> Self {
        Self {
            entries: obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            path: path.to_owned(),
        }
    }

    /// The last value whose key equals `name` ignoring ASCII case.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn bad(&self, field: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidConfig {
            path: self.path.clone(),
            field,
            reason: reason.into(),
        }
    }

    /// A plain string field; `null` or absent → empty.
    pub fn string(&self, field: &'static str) -> Result<String> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.bad(field, format!("expected a string, found {}", kind(v)))),
        }
    }

    /// A Go `,string` string field: accepts the double-encoded form Longhorn writes and, more
    /// tolerant than Go, the plain form; `null`, absent or `"null"` → empty.
    pub fn double_encoded_string(&self, field: &'static str) -> Result<String> {
        let s = self.string(field)?;
        if s == "null" {
            return Ok(String::new());
        }
        if s.starts_with('"') {
            return serde_json::from_str::<String>(&s)
                .map_err(|e| self.bad(field, format!("bad double-encoded string {s:?}: {e}")));
        }
        Ok(s)
    }

    /// A Go `,string` int64 field that must not be negative: accepts `"123"` and, more
    /// tolerant than Go, a bare number; `null` or absent → 0.
    pub fn string_u64(&self, field: &'static str) -> Result<u64> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => value_u64(v).map_err(|r| self.bad(field, r)),
        }
    }

    /// A bool field; `null` or absent → false.
    pub fn boolean(&self, field: &'static str) -> Result<bool> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.bad(field, format!("expected a bool, found {}", kind(v)))),
        }
    }

    /// A `map[string]string` field: `null` or absent → `None`.
    pub fn string_map(&self, field: &'static str) -> Result<Option<BTreeMap<String, String>>> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Null => Ok((k.clone(), String::new())),
                    v => Err(self.bad(
                        field,
                        format!("value of {k:?} is {}, not a string", kind(v)),
                    )),
                })
                .collect::<Result<_>>()
                .map(Some),
            Some(v) => Err(self.bad(field, format!("expected an object, found {}", kind(v)))),
        }
    }

    /// Whether an object-typed field is present as an object (not `null`, not absent).
    pub fn is_object(&self, field: &'static str) -> bool {
        matches!(self.get(field), Some(Value::Object(_)))
    }

    /// The file path, for error messages.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A non-negative Go int64 given as a JSON number or as a decimal string.
pub fn value_u64(v: &Value) -> std::result::Result<u64, String> {
    let n = value_u64_unchecked(v)?;
    if n > i64::MAX as u64 {
        return Err(format!("{n} overflows Go's int64"));
    }
    Ok(n)
}

fn value_u64_unchecked(v: &Value) -> std::result::Result<u64, String> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            if let Ok(n) = t.parse::<u64>() {
                Ok(n)
            } else if t.parse::<i64>().is_ok() {
                Err(format!("negative value {s:?}"))
            } else {
                Err(format!("{s:?} is not an integer"))
            }
        }
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            if n.as_i64().is_some() {
                format!("negative value {n}")
            } else {
                format!("{n} is not a 64-bit integer")
            }
        }),
        v => Err(format!("expected an integer, found {}", kind(v))),
    }
}

/// The JSON type of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_string_escaping() {
        let mut s = String::new();
        push_string(&mut s, "a&b<c>d\"e\\f\n\u{1}\u{2028}é", true);
        assert_eq!(s, r#""a\u0026b\u003cc\u003ed\"e\\f\n\u0001\u2028é""#);
        let mut s = String::new();
        push_double_encoded(&mut s, "lz4");
        assert_eq!(s, r#""\"lz4\"""#);
        let mut s = String::new();
        push_double_encoded(&mut s, "");
        assert_eq!(s, r#""\"\"""#);
        let mut s = String::new();
        push_double_encoded(&mut s, "a<b");
        assert_eq!(s, r#""\"a\\u003cb\"""#);
    }

    #[test]
    fn tolerant_reading() {
        let f = Fields::parse(
            br#"{"name":"x","NAME":"y","Size":"12","N":7,"Q":"\"lz4\"","P":"gzip","Z":null,"Unknown":[1]} trailing"#,
            "t",
        )
        .unwrap();
        assert_eq!(f.string("Name").unwrap(), "y");
        assert_eq!(f.string_u64("size").unwrap(), 12);
        assert_eq!(f.string_u64("N").unwrap(), 7);
        assert_eq!(f.double_encoded_string("Q").unwrap(), "lz4");
        assert_eq!(f.double_encoded_string("P").unwrap(), "gzip");
        assert_eq!(f.double_encoded_string("Z").unwrap(), "");
        assert_eq!(f.string("Missing").unwrap(), "");
        assert!(f.string("N").is_err());
        assert!(Fields::parse(b"[1]", "t").is_err());
        assert!(Fields::parse(b"", "t").is_err());
        assert!(Fields::parse(b"null", "t").unwrap().get("x").is_none());
        let f = Fields::parse(br#"{"S":"-1"}"#, "t").unwrap();
        assert!(f
            .string_u64("S")
            .unwrap_err()
            .to_string()
            .contains("negative"));
    }
}
