//! Strict JSON: every request body is read here, so that two readers of the
//! same bytes can never see different values.
//!
//! `serde_json` alone keeps the last of two equal keys and rounds numbers
//! beyond `f64` silently. This reader parses with `serde_json` all the same,
//! but looks at each object's keys and each number's literal text (through
//! `RawValue`) and reports every duplicate key and every number that would
//! not be kept exactly, with the path where it sits.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// Deepest nesting of objects and lists a body may have. Deeper than
/// anything the API keeps (`data` nests at most 31 levels) and shallow
/// enough that reading a body can never exhaust a thread's stack.
pub const MAX_NESTING: usize = 64;

/// A value that reads fine as JSON but can't be kept as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Defect {
    /// Where it sits, as a field path (`events[3].data["k8s.pod"]`).
    pub path: String,
    pub message: String,
}

/// The body is not JSON at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
}

/// Parses `text`; returns the value and what in it can't be kept exactly.
pub fn parse(text: &[u8]) -> Result<(Value, Vec<Defect>), SyntaxError> {
    let raw: Box<RawValue> = serde_json::from_slice(text).map_err(|err| SyntaxError {
        line: err.line(),
        column: err.column(),
    })?;
    let mut defects = Vec::new();
    let value = read(&raw, &mut String::new(), &mut defects, 0);
    Ok((value, defects))
}

/// An object's members in the order sent, duplicates included.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// How a path is named in a message: the body itself has no path.
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the body"
    } else {
        path
    }
}

/// Records that the value at `path` could not be read as text although the
/// body is JSON. Its syntax was checked as a whole first, so what is left is
/// a string (or key) whose `\u` escapes are not Unicode: half of a surrogate
/// pair alone. It is a defect of that value alone, so a batch refuses only
/// the event it sits in, and the message says where it is.
fn unreadable(path: &str, defects: &mut Vec<Defect>, what: &str) {
    defects.push(Defect {
        path: path.to_string(),
        message: format!(
            "{what}{} holds a \\u escape that is not Unicode text (half of a surrogate pair without its other half); send the character itself, or both halves",
            if path.is_empty() {
                "the body".to_string()
            } else {
                format!("`{path}`")
            }
        ),
    });
}

/// Reads one value at `depth` levels of nesting. (A value deeper than
/// [`MAX_NESTING`], or one that can't be read as text, is a defect, read as
/// `null`: its request is refused.)
fn read(raw: &RawValue, path: &mut String, defects: &mut Vec<Defect>, depth: usize) -> Value {
    let text = raw.get().trim_start();
    if depth >= MAX_NESTING && matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
        defects.push(Defect {
            path: path.clone(),
            message: format!(
                "`{}` nests objects and lists more than {MAX_NESTING} levels deep",
                shown(path)
            ),
        });
        return Value::Null;
    }
    match text.as_bytes().first() {
        Some(b'{') => {
            let members = match serde_json::from_str(text) {
                Ok(Members(members)) => members,
                Err(_) => {
                    unreadable(path, defects, "a key of ");
                    return Value::Null;
                }
            };
            let mut seen = HashSet::with_capacity(members.len());
            let mut map = Map::new();
            for (key, member) in members {
                let len = path.len();
                push_key(path, &key);
                if !seen.insert(key.clone()) {
                    defects.push(Defect {
                        path: path.clone(),
                        message: format!(
                            "`{path}` is given twice; a key may appear only once in an object"
                        ),
                    });
                } else {
                    let value = read(&member, path, defects, depth + 1);
                    map.insert(key, value);
                }
                path.truncate(len);
            }
            Value::Object(map)
        }
        Some(b'[') => {
            let items: Vec<Box<RawValue>> = match serde_json::from_str(text) {
                Ok(items) => items,
                Err(_) => {
                    unreadable(path, defects, "");
                    return Value::Null;
                }
            };
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                values.push(read(item, path, defects, depth + 1));
                path.truncate(len);
            }
            Value::Array(values)
        }
        Some(b'-' | b'0'..=b'9') => {
            let literal = text.trim_end();
            match kept_number(literal) {
                Some(number) => Value::Number(number),
                None => {
                    let shown = if path.is_empty() {
                        "the number"
                    } else {
                        path.as_str()
                    };
                    defects.push(Defect {
                        path: path.clone(),
                        message: format!(
                            "`{shown}` holds {literal}, which can't be kept exactly: whole numbers must fit 64 bits (-9223372036854775808 to 18446744073709551615), fractions a double (at most 17 significant digits); where the field takes text (in `data`, say), send it as a string"
                        ),
                    });
                    Value::Null
                }
            }
        }
        _ => match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) => {
                unreadable(path, defects, "");
                Value::Null
            }
        },
    }
}

/// Appends an object key to a field path: `.key` for plain keys, `["key"]`
/// (a JSON string) for keys that hold anything else.
pub fn push_key(path: &mut String, key: &str) {
    if is_plain_key(key) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::to_string(key).unwrap_or_default());
        path.push(']');
    }
}

/// A key that can be written bare in a field path.
pub fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && !key.bytes().all(|b| b.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '@' | '$'))
}

/// A decimal as sign, significant digits and exponent; zero has no digits.
/// `None` for what is not a decimal, or an exponent past `i64`.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent_text) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    // Zero, whatever its exponent.
    if trimmed.is_empty() {
        return Some((false, String::new(), 0));
    }
    let exponent = match exponent_text {
        Some(text) => text.parse::<i64>().ok()?,
        None => 0,
    };
    let exponent = exponent
        .checked_sub(fraction.len() as i64)?
        .checked_add((significant.len() - trimmed.len()) as i64)?;
    Some((negative, trimmed.to_string(), exponent))
}

/// The number rule, the same for every body: a whole number (whatever its
/// spelling: `100`, `1e2`, `100.0`) must fit a 64-bit integer, and is kept
/// as that integer; a fraction must be exactly the double it parses to.
/// Anything else would be changed by storing it: `None`, it is refused.
fn kept_number(literal: &str) -> Option<Number> {
    let (negative, digits, exponent) = decimal(literal)?;
    if digits.is_empty() {
        return Some(Number::from(0u64)); // zero, `-0.0` included
    }
    if exponent >= 0 {
        // Whole: at most 20 digits, and within i64/u64.
        if (digits.len() as i64)
            .checked_add(exponent)
            .is_none_or(|width| width > 20)
        {
            return None;
        }
        let whole = format!(
            "{}{digits}{}",
            if negative { "-" } else { "" },
            "0".repeat(exponent as usize)
        );
        return match whole.parse::<u64>() {
            Ok(n) => Some(Number::from(n)),
            Err(_) => whole.parse::<i64>().ok().map(Number::from),
        };
    }
    let parsed: Number = serde_json::from_str(literal).ok()?;
    (decimal(&parsed.to_string()) == Some((negative, digits, exponent))).then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn defects(text: &str) -> Vec<Defect> {
        parse(text.as_bytes()).unwrap().1
    }

    #[test]
    fn numbers_that_would_change_are_reported_with_their_path() {
        let found = defects(r#"{"data":{"n":123456789012345678901234567890}}"#);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "data.n");
        assert_eq!(defects(r#"[0.10000000000000001]"#)[0].path, "[0]");
        for exact in [
            "0",
            "-0",
            "0.1",
            "1e2",
            "100.0",
            "-9223372036854775808",
            "18446744073709551615",
            "1.5e-300",
            "1E+18",
            "0.000",
        ] {
            assert!(defects(exact).is_empty(), "{exact} is kept exactly");
        }
        for changed in [
            "1e20",
            "18446744073709551616",
            "-9223372036854775809",
            "1180591620717411303424",
            "0.10000000000000001",
        ] {
            assert_eq!(defects(changed).len(), 1, "{changed} is refused");
        }
    }

    #[test]
    fn whole_numbers_however_spelt_read_back_as_integers() {
        for (sent, kept) in [
            ("100.0", "100"),
            ("1e2", "100"),
            ("1.00E+2", "100"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0e5", "0"),
            ("9007199254740993.0", "9007199254740993"),
            ("9.007199254740993e15", "9007199254740993"),
            ("1.8446744073709551615e19", "18446744073709551615"),
            ("-9.223372036854775808e18", "-9223372036854775808"),
            ("-12.000", "-12"),
            ("0.5", "0.5"),
            ("1.5e-300", "1.5e-300"),
        ] {
            let (value, found) = parse(sent.as_bytes()).unwrap();
            assert!(found.is_empty(), "{sent}: {found:?}");
            assert_eq!(value.to_string(), kept, "{sent}");
        }
    }

    #[test]
    fn extreme_exponents_are_refused_or_zero_never_a_crash() {
        for refused in [
            "1e9223372036854775807",
            "1e+9223372036854775807",
            "12e9223372036854775806",
            "-1e9223372036854775807",
            "1e99999999999999999999",
            "1e-9223372036854775808",
            "1.5e-9223372036854775808",
        ] {
            assert_eq!(defects(refused).len(), 1, "{refused}");
        }
        for zero in [
            "0.0e-9223372036854775808",
            "0e9223372036854775807",
            "-0.000e99999999999999999999",
        ] {
            let (value, found) = parse(zero.as_bytes()).unwrap();
            assert!(found.is_empty(), "{zero}: {found:?}");
            assert_eq!(value.to_string(), "0", "{zero}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_a_defect_never_a_crash() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(defects(&nested(MAX_NESTING)).is_empty());
        let found = defects(&format!(
            r#"{{"events":[{{"data":{}}}]}}"#,
            nested(MAX_NESTING)
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].path.starts_with("events[0].data"), "{found:?}");
        // Far deeper than any stack allows recursion: refused, not a crash.
        for depth in [MAX_NESTING + 1, 10_000, 1_000_000] {
            let text = nested(depth);
            // A syntax error is a refusal too.
            if let Ok((_, found)) = parse(text.as_bytes()) {
                assert!(!found.is_empty(), "depth {depth}");
            }
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            // A syntax error is a refusal too.
            if let Ok((_, found)) = parse(objects.as_bytes()) {
                assert!(!found.is_empty(), "depth {depth}");
            }
        }
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_first_is_kept() {
        let (value, found) =
            parse(br#"{"eventType":"a","serviceName":"s","eventType":"b"}"#).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "eventType");
        assert_eq!(value["eventType"], "a");
        let nested = defects(r#"{"events":[{"data":{"k8s.pod":1,"k8s.pod":2}}]}"#);
        assert_eq!(nested[0].path, r#"events[0].data["k8s.pod"]"#);
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = parse(b"{\n  \"a\": }").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn a_lone_surrogate_is_a_defect_where_it_sits_not_a_syntax_error() {
        for (text, path) in [
            (r#"{"a":{"b":"\ud800"}}"#, "a.b"),
            (r#"{"a":["x","\udc00"]}"#, "a[1]"),
            (r#"{"a":{"\ud800":1}}"#, "a"),
            (r#""\ud800\ud800""#, ""),
        ] {
            let found = defects(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].path, path, "{text}");
            assert!(found[0].message.contains("surrogate"), "{found:?}");
        }
        // Its neighbours are read as usual.
        let (value, found) = parse(br#"{"a":"\ud800","b":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(value["b"], "\u{1F600}");
    }

    proptest! {
        /// Any sequence of UTF-16 code units, escaped, as a value and as a
        /// key: read back as sent when it is Unicode, else a defect at its
        /// path. Never a syntax error, never another value.
        #[test]
        fn escaped_code_units_read_back_or_are_a_defect_at_their_path(
            units in proptest::collection::vec(
                prop_oneof![0u16..0x80, 0xd800u16..0xe000, any::<u16>()], 0..6),
        ) {
            let escaped: String = units.iter().map(|unit| format!("\\u{unit:04x}")).collect();
            let sent = String::from_utf16(&units).ok();
            let as_value = format!(r#"{{"ok":1,"v":"{escaped}"}}"#);
            let (value, found) = parse(as_value.as_bytes()).unwrap();
            prop_assert_eq!(&value["ok"], &Value::from(1));
            match &sent {
                Some(text) => {
                    prop_assert!(found.is_empty());
                    prop_assert_eq!(&value["v"], &Value::from(text.as_str()));
                }
                None => {
                    prop_assert_eq!(found.len(), 1);
                    prop_assert_eq!(found[0].path.as_str(), "v");
                }
            }
            let as_key = format!(r#"{{"ok":1,"d":{{"{escaped}":1}}}}"#);
            let (value, found) = parse(as_key.as_bytes()).unwrap();
            prop_assert_eq!(&value["ok"], &Value::from(1));
            match &sent {
                Some(text) => {
                    prop_assert!(found.is_empty());
                    prop_assert_eq!(&value["d"][text.as_str()], &Value::from(1));
                }
                None => {
                    prop_assert_eq!(found.len(), 1);
                    prop_assert_eq!(found[0].path.as_str(), "d");
                }
            }
        }

        /// Any bytes: no panic, and either a syntax error or a value.
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        /// A value without duplicates and with f64-exact numbers reads back unchanged.
        #[test]
        fn plain_json_reads_back_unchanged(value in crate::testing::json_value()) {
            let text = serde_json::to_vec(&value).unwrap();
            let (read, found) = parse(&text).unwrap();
            prop_assert!(found.is_empty(), "{:?}", found);
            prop_assert_eq!(read, value);
        }

        /// A 64-bit integer spelt with a fraction or an exponent reads back
        /// as that integer.
        #[test]
        fn any_64_bit_integer_however_spelt_is_kept(
            n in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), any::<u64>().prop_map(|n| n.to_string())],
            zeros in 0usize..4,
            spelling in 0usize..3,
        ) {
            let (sign, digits) = match n.strip_prefix('-') {
                Some(rest) => ("-", rest.to_string()),
                None => ("", n.clone()),
            };
            let sent = match spelling {
                0 => format!("{n}.{}", "0".repeat(zeros + 1)),
                1 => format!("{n}e0"),
                // d.ddd e(len-1): the decimal point moved to after the first digit.
                _ => format!("{sign}{}.{}{}0e{}", &digits[..1], &digits[1..], "0".repeat(zeros), digits.len() - 1),
            };
            let (value, found) = parse(sent.as_bytes()).unwrap();
            prop_assert!(found.is_empty(), "{}: {:?}", sent, found);
            prop_assert_eq!(value.to_string(), n, "{}", sent);
        }

        /// Any number, however long its digits or exponent: read or
        /// refused, never a panic.
        #[test]
        fn any_number_literal_is_read_or_refused(
            literal in "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,22})?"
        ) {
            let _ = parse(literal.as_bytes());
        }

        /// Whole numbers: kept when they fit 64 bits, reported when they don't.
        #[test]
        fn whole_numbers_fit_64_bits_or_are_reported(digits in "-?[1-9][0-9]{0,24}") {
            let found = defects(&digits);
            let fits = digits.parse::<u64>().is_ok() || digits.parse::<i64>().is_ok();
            prop_assert_eq!(found.is_empty(), fits);
        }
    }
}
