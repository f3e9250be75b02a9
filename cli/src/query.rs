//! `audit query`: conditions written `field op value`, times as durations
//! or RFC 3339, results followed through `next`.

use std::io::IsTerminal;

use audit_core::event::{queryable_fields, FieldType};
use serde_json::{json, Value};

use crate::client::{Client, Failure, EXIT_USAGE};
use crate::format::{Format, Printer};

/// `=` `!=` `in` `^=` `contains` `exists` `>` `>=` `<` `<=`, and the API's
/// own names.
pub fn operator(token: &str) -> Option<&'static str> {
    Some(match token {
        "=" | "==" | "eq" => "eq",
        "!=" | "ne" => "ne",
        "in" => "in",
        "^=" | "startsWith" | "startswith" => "startsWith",
        "contains" => "contains",
        "exists" | "!exists" => "exists",
        ">" | "gt" => "gt",
        ">=" | "gte" => "gte",
        "<" | "lt" => "lt",
        "<=" | "lte" => "lte",
        _ => return None,
    })
}

/// A value as the field's type needs it (the field table's type for a
/// top-level field): `true`/`false` for a boolean field (`sandbox`); text
/// for a string or time field and under `indexedData.` (always strings),
/// where a value in double quotes is a JSON string (`""` is the empty
/// string); under `data.` a JSON literal (`false`, `10`, `"10"`) is that
/// literal, anything else text.
fn value_for(field: &str, text: &str) -> Result<Value, Failure> {
    let quoted = || match serde_json::from_str::<Value>(text) {
        Ok(Value::String(inner)) => Some(inner),
        _ => None,
    };
    let top_level = queryable_fields().find(|(name, _)| *name == field);
    let is_data = field == "data" || field.starts_with("data.") || field.starts_with("data[");
    Ok(match top_level {
        Some((_, FieldType::Boolean)) => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            // The API names the type it needs.
            _ => Value::String(text.to_string()),
        },
        Some(_) => Value::String(quoted().unwrap_or_else(|| text.to_string())),
        None if !is_data => Value::String(quoted().unwrap_or_else(|| text.to_string())),
        // Read as the API reads a body: a number that can't be kept exactly
        // (1e-400, 0.1000000000000000055511151231257827) would be rounded
        // on the way and compare as another number, so it is refused.
        None => match audit_core::json::parse(text.as_bytes()) {
            Ok((_, defects)) if !defects.is_empty() && is_number_literal(text) => {
                return Err(Failure::new(
                    EXIT_USAGE,
                    format!(
                        "condition on `{field}`: {text} can't be kept exactly (whole numbers fit 64 bits, fractions a double); to compare it as text, quote it: '\"{text}\"'"
                    ),
                ))
            }
            Ok((value @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Null), defects))
                if defects.is_empty() =>
            {
                value
            }
            _ => Value::String(text.to_string()),
        },
    })
}

/// A JSON number as written (`-1`, `1e-400`): the only literal the API
/// reads that a round trip through a double could change.
fn is_number_literal(text: &str) -> bool {
    text.trim_start()
        .starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// Conditions from the words of the command line: `field op value` (or
/// `field exists`); a quoted argument may hold a whole condition.
pub fn parse_conditions(args: &[String]) -> Result<Vec<Value>, Failure> {
    let words: Vec<String> = args
        .iter()
        .flat_map(|a| split_condition(a).unwrap_or_else(|| vec![a.clone()]))
        .collect();
    let mut conditions = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let field = &words[i];
        let Some(op_word) = words.get(i + 1) else {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("condition `{field}`: an operator must follow the field (= != in ^= contains exists > >= < <=)"),
            ));
        };
        let Some(op) = operator(op_word) else {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("condition `{field} {op_word}`: `{op_word}` is not an operator (= != in ^= contains exists > >= < <=)"),
            ));
        };
        if op == "exists" {
            // `exists`, `exists true`, `exists false`, or `!exists`.
            let (present, used) = match words.get(i + 2).map(String::as_str) {
                _ if op_word == "!exists" => (false, 2),
                Some("true") => (true, 3),
                Some("false") => (false, 3),
                _ => (true, 2),
            };
            conditions.push(json!({"field": field, "operator": "exists", "value": present}));
            i += used;
            continue;
        }
        let Some(text) = words.get(i + 2) else {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("condition `{field} {op_word}`: a value must follow `{op_word}`"),
            ));
        };
        let value = if op == "in" {
            Value::Array(
                text.split(',')
                    .map(|v| value_for(field, v))
                    .collect::<Result<_, _>>()?,
            )
        } else if op == "startsWith" {
            // A prefix is always text (a quoted one a JSON string).
            match serde_json::from_str::<Value>(text) {
                Ok(Value::String(inner)) => Value::String(inner),
                _ => Value::String(text.clone()),
            }
        } else {
            value_for(field, text)?
        };
        conditions.push(json!({"field": field, "operator": op, "value": value}));
        i += 3;
    }
    Ok(conditions)
}

/// One argument holding a whole condition (`userId = u-1`,
/// `indexedData["display name"] = n1`): the field (which may hold spaces
/// inside `["..."]`), the operator, and the value kept whole. `None` when
/// the argument is not such a condition.
fn split_condition(arg: &str) -> Option<Vec<String>> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut field_end = None;
    for (at, c) in arg.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                field_end = Some(at);
                break;
            }
            _ => {}
        }
    }
    let (field, rest) = arg.split_at(field_end?);
    let rest = rest.trim_start();
    let (op, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    operator(op)?;
    let mut words = vec![field.to_string(), op.to_string()];
    let value = value.trim_start();
    if !value.is_empty() {
        words.push(value.to_string());
    }
    Some(words)
}

/// `7d`, `12h`, `30m`, `45s` ago, or RFC 3339.
pub fn parse_time(flag: &str, text: &str) -> Result<String, Failure> {
    // Read as the API reads a bound and written back as it writes times
    // (UTC, milliseconds), so `export` can compare an event's `timestamp`
    // with it as text: `+02:00` as typed compared two hours off.
    if let Some(at) = audit_core::event::parse_bound(text) {
        return Ok(audit_core::event::format_time(at));
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let unit_seconds = match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        "w" => Some(604_800),
        _ => None,
    };
    let (Ok(count), Some(unit_seconds)) = (number.parse::<i64>(), unit_seconds) else {
        return Err(Failure::new(
            EXIT_USAGE,
            format!("{flag} `{text}`: give a duration ago (7d, 12h, 30m, 45s) or an RFC 3339 time (years 0000-9999 in UTC, no leap second)"),
        ));
    };
    // Checked all the way: a huge count is a usage error, never a panic.
    count
        .checked_mul(unit_seconds)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago))
        .filter(|at| chrono::Datelike::year(at) >= 0)
        .map(audit_core::event::format_time)
        .ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                format!("{flag} `{text}`: that is before the year 0000; give a shorter duration"),
            )
        })
}

pub struct Options {
    pub conditions: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub format: Format,
}

pub async fn run(client: &Client, options: Options) -> Result<(), Failure> {
    let mut body = json!({ "and": parse_conditions(&options.conditions)? });
    if let Some(from) = &options.from {
        body["from"] = json!(parse_time("--from", from)?);
    }
    if let Some(to) = &options.to {
        body["to"] = json!(parse_time("--to", to)?);
    }
    let stdout = std::io::stdout();
    let mut printer = Printer::new(options.format, stdout.lock()).on_terminal(stdout.is_terminal());
    let write_failed = Failure::stdout;
    let mut written = 0usize;
    let mut next = Some("/audit/query?limit=1000".to_string());
    // Newest first, of one tenant, and no page read twice: links that went
    // round were read for ever, writing their events each time.
    let mut order = crate::trail::TrailOrder::new(None).newest_first();
    let mut moved_on = false;
    while let Some(url) = next.take() {
        order.follow(&url, moved_on, false)?;
        let (status, page) = client.post_json(&url, &body).await?;
        if status == 400 {
            let message = page["error"]["message"].as_str().unwrap_or("invalid query");
            return Err(Failure::new(
                EXIT_USAGE,
                format!("the API refused the query: {message}"),
            ));
        }
        if status != 200 {
            return Err(crate::client::status_failure(status, &page));
        }
        let events = crate::client::answer_list(&page, "data")?.clone();
        // Checked whole before anything of it is written.
        order.page_events(&events, None)?;
        moved_on = !events.is_empty();
        for event in events {
            if options.limit.is_some_and(|limit| written >= limit) {
                break;
            }
            // A page shortens large `data`; what the CLI writes is whole.
            let event = crate::trail::whole_event(client, event).await?;
            order.of_tenant(&event)?;
            printer.write(&event).map_err(write_failed)?;
            written += 1;
        }
        if options.limit.is_some_and(|limit| written >= limit) {
            break;
        }
        next = page["next"].as_str().map(str::to_string);
    }
    printer.finish().map_err(write_failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditions the command-line words make, as one JSON array.
    fn conditions_of(args: &[&str]) -> Value {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Value::Array(parse_conditions(&args).unwrap())
    }

    #[test]
    fn conditions_read_as_the_api_needs_them() {
        let conditions = conditions_of(&[
            "userId",
            "=",
            "u-1",
            "data.mfa = false",
            "eventType",
            "in",
            "user.login,user.logout",
            "traceId",
            "exists",
            "data.score",
            ">=",
            "10",
        ]);
        assert_eq!(
            conditions,
            json!([
                {"field": "userId", "operator": "eq", "value": "u-1"},
                {"field": "data.mfa", "operator": "eq", "value": false},
                {"field": "eventType", "operator": "in", "value": ["user.login", "user.logout"]},
                {"field": "traceId", "operator": "exists", "value": true},
                {"field": "data.score", "operator": "gte", "value": 10},
            ])
        );
    }

    /// Every field gets a value of its own type: each top-level field's
    /// from the field table (`sandbox` a boolean: it could not be queried
    /// from the CLI), `indexedData` always text, `data` JSON literals; a
    /// quoted value is a JSON string, so `""` is the empty string.
    #[test]
    fn each_field_gets_a_value_of_its_type() {
        for (field, field_type) in queryable_fields() {
            let value = &conditions_of(&[field, "=", "true"])[0]["value"];
            match field_type {
                FieldType::Boolean => assert_eq!(value, &json!(true), "{field}"),
                _ => assert_eq!(value, &json!("true"), "{field}"),
            }
            let empty = &conditions_of(&[field, "=", "\"\""])[0]["value"];
            if field_type != FieldType::Boolean {
                assert_eq!(empty, &json!(""), "{field}");
            }
        }
        for (text, expected) in [
            ("10", json!("10")),
            ("true", json!("true")),
            ("\"x y\"", json!("x y")),
        ] {
            assert_eq!(
                conditions_of(&["indexedData.team", "=", text])[0]["value"],
                expected
            );
        }
        for (text, expected) in [
            ("10", json!(10)),
            ("true", json!(true)),
            ("\"10\"", json!("10")),
            ("x", json!("x")),
        ] {
            assert_eq!(conditions_of(&["data.n", "=", text])[0]["value"], expected);
        }
        assert_eq!(
            conditions_of(&[
                "sandbox", "!=", "false", "traceId", "exists", "false", "userId", "!exists",
                "data.x", "exists", "true"
            ]),
            json!([
                {"field": "sandbox", "operator": "ne", "value": false},
                {"field": "traceId", "operator": "exists", "value": false},
                {"field": "userId", "operator": "exists", "value": false},
                {"field": "data.x", "operator": "exists", "value": true},
            ])
        );
    }

    #[test]
    fn a_whole_condition_in_one_argument_keeps_its_field_and_value_whole() {
        let conditions = conditions_of(&[
            r#"indexedData["display name"] = n 1"#,
            r#"data["a \" b"] exists"#,
            "message ^= two words",
            "userId   =   u-1",
        ]);
        assert_eq!(
            conditions,
            json!([
                {"field": r#"indexedData["display name"]"#, "operator": "eq", "value": "n 1"},
                {"field": r#"data["a \" b"]"#, "operator": "exists", "value": true},
                {"field": "message", "operator": "startsWith", "value": "two words"},
                {"field": "userId", "operator": "eq", "value": "u-1"},
            ])
        );
    }

    #[test]
    fn a_malformed_condition_names_its_part() {
        let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let err = parse_conditions(&words("userId ~ u-1")).unwrap_err();
        assert!(
            err.message.contains("`~` is not an operator"),
            "{}",
            err.message
        );
        let err = parse_conditions(&words("userId =")).unwrap_err();
        assert!(
            err.message.contains("a value must follow"),
            "{}",
            err.message
        );
        let err = parse_conditions(&words("userId")).unwrap_err();
        assert!(
            err.message.contains("an operator must follow"),
            "{}",
            err.message
        );
        assert!(parse_time("--from", "7x").is_err());
        assert!(parse_time("--from", "7d").is_ok());
        // Times are written back as the API writes them, so `export`'s text
        // comparison is one of instants: an offset, a missing fraction and
        // a bound inside a millisecond all land where the API puts them.
        for (typed, written) in [
            ("2026-01-02T00:00:00+02:00", "2026-01-01T22:00:00.000Z"),
            ("2026-01-02T00:00:00Z", "2026-01-02T00:00:00.000Z"),
            ("2026-01-02T00:00:00.0001Z", "2026-01-02T00:00:00.001Z"),
        ] {
            assert_eq!(parse_time("--to", typed).ok().as_deref(), Some(written));
        }
        for refused in ["2016-12-31T23:59:60Z", "9999-12-31T23:59:59.9999Z"] {
            assert!(parse_time("--to", refused).is_err(), "{refused}");
        }
    }
}
