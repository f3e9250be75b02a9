//! `audit ingest`: a backfill from NDJSON, in batches of up to 1000, each
//! event with a `messageId` (derived from its line when it has none), so a
//! rerun of the same file, killed or not, stores every line exactly once.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client::{Client, Failure, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE};
use crate::terminal::for_terminal;

const BATCH: usize = 1000;
/// Well under the API's 6 MB request limit, counted as Lambda's payload
/// holds the body: escaped again as a JSON string.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The bytes `line` takes inside Lambda's invocation payload, where the
/// request body is a JSON string: every `"` and `\` of it doubles (a line
/// of quotes took twice its size there, and a batch cut at 4 MiB of them
/// passed Lambda's 6 MB and was refused whole).
fn payload_len(line: &str) -> usize {
    line.len()
        + line
            .bytes()
            .filter(|b| matches!(b, b'"' | b'\\' | b'\t' | b'\r'))
            .count()
}
const ATTEMPTS: u32 = 8;

/// The `messageId` of a line without one: its number and content, hashed,
/// so the same line of the same file is the same event on every run.
pub fn derived_message_id(occurrence: usize, line: &str) -> String {
    let digest = Sha256::new()
        .chain_update(occurrence.to_string().as_bytes())
        .chain_update(b"\n")
        .chain_update(line.trim().as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("ingest-{hex}")
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub stored: u64,
    pub duplicates: u64,
    pub refused: u64,
}

struct Pending {
    line: usize,
    /// The line as sent: its own text, so the API's strict checks see what
    /// the file holds (duplicate keys, every digit of a number).
    event: Box<RawValue>,
}

/// The event to send for one line: the line's own text, with a derived
/// `messageId` written in after its `{` when it has none. `Err`: why the
/// line is not a JSON object.
/// `occurrence`: how many lines of the file with the same text came before
/// this one. The derived `messageId` hangs on the line's text and that count,
/// not on where the line is, so a rerun after lines were removed or added
/// (a refused one fixed or deleted) stores nothing twice.
pub fn event_text(occurrence: usize, line: &str) -> Result<Box<RawValue>, String> {
    let (value, defects) = audit_core::json::parse(line.as_bytes()).map_err(|err| {
        format!(
            "not JSON (it breaks off or goes wrong at column {})",
            err.column
        )
    })?;
    // A line whose own keys can't be read is null with a defect saying why.
    if let (Value::Null, Some(defect)) = (&value, defects.first()) {
        return Err(defect.message.clone());
    }
    let kind = match &value {
        Value::Object(_) => "",
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    let Value::Object(map) = value else {
        return Err(format!("{kind}, not a JSON object"));
    };
    let text = line.trim();
    let derived = || json!(derived_message_id(occurrence, line));
    let event = match map.get("messageId") {
        Some(Value::Null) if defects.is_empty() => {
            // The whole line reads exactly as a value, so printing it
            // again with the id in place of `null` changes nothing else.
            let mut map = map;
            map.insert("messageId".into(), derived());
            Value::Object(map).to_string()
        }
        // Sent as it is (a line with a defect is refused by the API, which
        // names it).
        Some(_) => text.to_string(),
        None => {
            let inside = text
                .strip_prefix('{')
                .ok_or_else(|| "not a JSON object".to_string())?;
            let separator = if inside.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{{\"messageId\":{}{separator}{inside}", derived())
        }
    };
    RawValue::from_string(event).map_err(|e| format!("not JSON: {e}"))
}

/// The lines of a file, for the progress bar: its line ends counted in a
/// buffer's worth at a time (no line is held whole, however long).
fn count_lines(file: std::fs::File) -> std::io::Result<u64> {
    let mut reader = BufReader::new(file);
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let chunk = reader.fill_buf()?;
        let Some(&end) = chunk.last() else { break };
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        last = end;
        let len = chunk.len();
        reader.consume(len);
    }
    // A last line without its line end is a line too.
    Ok(lines + u64::from(last != b'\n'))
}

pub async fn run(client: &Client, source: &str) -> Result<Outcome, Failure> {
    let (reader, total): (Box<dyn Read>, Option<u64>) = if source == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let count = count_lines(
            std::fs::File::open(source)
                .map_err(|e| Failure::new(EXIT_USAGE, format!("{source}: {e}")))?,
        )
        .map_err(|e| Failure::new(EXIT_FAILED, format!("{source}: {e}")))?;
        let file = std::fs::File::open(source)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("{source}: {e}")))?;
        (Box::new(file), Some(count))
    };
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} lines {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let started = std::time::Instant::now();
    let mut outcome = Outcome::default();
    let mut batch: Vec<Pending> = Vec::new();
    let mut occurrences: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut batch_bytes = 0;
    // Lines as bytes: one that is not UTF-8 is refused alone, not the file.
    // Each is read up to one byte past what a request may hold: a longer
    // one is skipped to its end unread, so no line, however long, is held
    // in memory.
    let mut reader = BufReader::new(reader);
    let read_failed = |e: std::io::Error| Failure::new(EXIT_FAILED, format!("{source}: {e}"));
    let mut number = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(BATCH_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(read_failed)?;
        if read == 0 {
            break;
        }
        number += 1;
        let mut skipped = 0;
        if line.len() > BATCH_BYTES && line.last() != Some(&b'\n') {
            skipped = reader.skip_until(b'\n').map_err(read_failed)?;
            line.truncate(BATCH_BYTES + 1);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        // A CRLF line reads as `lines()` read it (its derived messageId with it).
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let refuse = |why: String, outcome: &mut Outcome| {
            bar.suspend(|| crate::say(&format!("line {number}: refused: {}", for_terminal(&why))));
            outcome.refused += 1;
            bar.inc(1);
        };
        if skipped > 0 {
            refuse(
                format!(
                    "the line is more than {BATCH_BYTES} bytes; an event may take at most {} bytes",
                    audit_core::event::MAX_EVENT_BYTES
                ),
                &mut outcome,
            );
            continue;
        }
        let line = match String::from_utf8(line) {
            Ok(line) => line,
            Err(err) => {
                refuse(format!("not UTF-8 ({err})"), &mut outcome);
                continue;
            }
        };
        if line.trim().is_empty() {
            bar.inc(1);
            continue;
        }
        // Larger than a whole request may be: the API would refuse the
        // batch it went in (413), and every rerun with it. Measured as
        // Lambda's payload holds it (escaped again): a line of quotes under
        // 4 MiB could pass 6 MB there alone.
        if payload_len(&line) > BATCH_BYTES {
            refuse(
                format!(
                    "the line is {} bytes; an event may take at most {} bytes",
                    line.len(),
                    audit_core::event::MAX_EVENT_BYTES
                ),
                &mut outcome,
            );
            continue;
        }
        // A file saved with a byte-order mark starts with one.
        let line = match number {
            1 => line.strip_prefix('\u{feff}').unwrap_or(&line).to_string(),
            _ => line,
        };
        // Lines are told apart by their text; identical lines by how many
        // came before (8 bytes of a hash each: memory grows ~40 bytes a
        // distinct line).
        let occurrence = {
            let digest = Sha256::digest(line.trim().as_bytes());
            let mut key = [0u8; 8];
            key.copy_from_slice(&digest[..8]);
            let seen = occurrences.entry(u64::from_le_bytes(key)).or_insert(0usize);
            *seen += 1;
            *seen - 1
        };
        let event = match event_text(occurrence, &line) {
            Ok(event) => event,
            Err(why) => {
                refuse(why, &mut outcome);
                continue;
            }
        };
        let size = payload_len(&line) + 1;
        if batch.len() == BATCH || batch_bytes + size > BATCH_BYTES {
            send(client, std::mem::take(&mut batch), &mut outcome, &bar).await?;
            batch_bytes = 0;
        }
        batch_bytes += size;
        batch.push(Pending {
            line: number,
            event,
        });
        let rate = (outcome.stored + outcome.duplicates) as f64
            / started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!("{rate:.0} events/s"));
    }
    send(client, batch, &mut outcome, &bar).await?;
    bar.finish_and_clear();
    crate::say(&format!(
        "stored {}, duplicates {}, refused {} ({:.0} events/s)",
        outcome.stored,
        outcome.duplicates,
        outcome.refused,
        (outcome.stored + outcome.duplicates) as f64 / started.elapsed().as_secs_f64().max(0.001)
    ));
    Ok(outcome)
}

/// Sends one batch; retries the events the API answers `failed` (the same
/// `messageId`, so a retry can't duplicate) with backoff.
async fn send(
    client: &Client,
    mut batch: Vec<Pending>,
    outcome: &mut Outcome,
    bar: &ProgressBar,
) -> Result<(), Failure> {
    let mut attempt = 0;
    while !batch.is_empty() {
        #[derive(serde::Serialize)]
        struct Batch<'a> {
            events: Vec<&'a RawValue>,
        }
        let body = Batch {
            events: batch.iter().map(|p| p.event.as_ref()).collect(),
        };
        let (status, answer) = client.post_json("/audit/events", &body).await?;
        let Some(results) = answer["results"].as_array() else {
            if status == 503 && attempt < ATTEMPTS {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                continue;
            }
            if (200..300).contains(&status) {
                return Err(crate::client::not_the_api("no `results` list"));
            }
            return Err(crate::client::status_failure(status, &answer));
        };
        // One result per event sent, in order: fewer would leave events
        // unanswered, neither counted nor retried.
        if results.len() != batch.len() {
            return Err(crate::client::not_the_api(&format!(
                "{} results for {} events",
                results.len(),
                batch.len()
            )));
        }
        // A refusal names its event (`events[7]…`): results in another
        // order would pin each refusal on the wrong line. A repeat of an
        // earlier event's `messageId` in the batch gets that event's answer,
        // naming it: an earlier position with the same refusal.
        if let Some(index) = results.iter().enumerate().find_map(|(index, result)| {
            let at = result["error"]["field"].as_str()?.strip_prefix("events[")?;
            let named: usize = at.split(']').next()?.parse().ok()?;
            let same_as_earlier =
                named < index && results.get(named).map(|r| &r["error"]) == Some(&result["error"]);
            (named != index && !same_as_earlier).then_some(index)
        }) {
            return Err(crate::client::not_the_api(&format!(
                "result {index} names another event"
            )));
        }
        let mut retry = Vec::new();
        for (index, (pending, result)) in batch.into_iter().zip(results).enumerate() {
            match result["status"].as_str() {
                Some("stored") => outcome.stored += 1,
                Some("duplicate") => outcome.duplicates += 1,
                Some("refused") => {
                    outcome.refused += 1;
                    // The API names fields within its batch (`events[7].data.n`);
                    // the line is named already.
                    let message = result["error"]["message"]
                        .as_str()
                        .unwrap_or("refused")
                        .replace(&format!("`events[{index}]`"), "the event")
                        .replace(&format!("events[{index}]."), "")
                        .replace(&format!("events[{index}]["), "[");
                    bar.suspend(|| {
                        crate::say(&format!(
                            "line {}: refused: {}",
                            pending.line,
                            for_terminal(&message)
                        ))
                    });
                }
                _ => {
                    retry.push(pending);
                    continue;
                }
            }
            bar.inc(1);
        }
        batch = retry;
        if !batch.is_empty() {
            attempt += 1;
            if attempt > ATTEMPTS {
                return Err(Failure::new(
                    EXIT_UNAVAILABLE,
                    format!("{} events could not be stored after {ATTEMPTS} attempts; rerun to retry them (nothing is duplicated)", batch.len()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(number: usize, line: &str) -> String {
        event_text(number, line)
            .map(|raw| raw.get().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_line_is_sent_as_written_with_a_derived_message_id() {
        // What the API's strict checks refuse must reach them as written:
        // a repeated key, a number no double holds.
        let line = r#" {"eventType":"a","serviceName":"s","data":{"x":1,"x":2,"f":0.1000000000000000055511151231257827}} "#;
        let id = derived_message_id(7, line);
        assert_eq!(
            sent(7, line),
            format!(
                r#"{{"messageId":"{id}","eventType":"a","serviceName":"s","data":{{"x":1,"x":2,"f":0.1000000000000000055511151231257827}}}}"#
            )
        );
        assert_eq!(
            sent(3, "{}"),
            format!(r#"{{"messageId":"{}"}}"#, derived_message_id(3, "{}"))
        );
        assert_eq!(
            sent(3, "{ }"),
            format!(r#"{{"messageId":"{}" }}"#, derived_message_id(3, "{ }"))
        );
    }

    #[test]
    fn a_line_with_its_own_message_id_is_sent_unchanged() {
        let line =
            r#"{"messageId":"m-1","eventType":"a","serviceName":"s","data":{"n":1e2,"n":3}}"#;
        assert_eq!(sent(1, line), line);
    }

    #[test]
    fn a_null_message_id_is_replaced_by_the_derived_one() {
        let line = r#"{"eventType":"a","serviceName":"s","messageId":null,"data":{"n":100.0}}"#;
        let event: Value = serde_json::from_str(&sent(4, line)).unwrap_or_default();
        assert_eq!(event["messageId"], json!(derived_message_id(4, line)));
        assert_eq!(event["data"]["n"], json!(100));
        // With a defect elsewhere, it goes as written, for the API to refuse.
        let broken = r#"{"eventType":"a","eventType":"b","serviceName":"s","messageId":null}"#;
        assert_eq!(sent(4, broken), broken);
    }

    #[test]
    fn lines_are_counted_by_their_ends_and_a_last_one_without() {
        let dir = std::env::temp_dir().join(format!("audit-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (text, lines) in [
            ("", 0),
            ("a", 1),
            ("a\n", 1),
            ("a\nb", 2),
            ("\n\n", 2),
            ("a\r\nb\r\n", 2),
        ] {
            let path = dir.join("f");
            std::fs::write(&path, text).unwrap();
            assert_eq!(
                count_lines(std::fs::File::open(&path).unwrap()).unwrap(),
                lines,
                "{text:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_line_that_is_not_an_object_is_refused_here_saying_why() {
        for (line, why) in [
            ("[1]", "an array, not a JSON object"),
            ("\"text\"", "a string, not a JSON object"),
            ("12", "a number, not a JSON object"),
            (
                "{\"a\":",
                "not JSON (it breaks off or goes wrong at column 5)",
            ),
            ("nul", "not JSON"),
            (r#"{"\ud800":1}"#, "a key of the body holds a \\u escape"),
        ] {
            let refused = event_text(1, line).err().unwrap_or_default();
            assert!(refused.starts_with(why), "{line}: {refused}");
        }
    }
}
