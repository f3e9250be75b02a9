//! `audit ingest`: a backfill from NDJSON, in batches of up to 1000, each
//! event with a `messageId` (derived from its line when it has none), so a
//! rerun of the same file, killed or not, stores every line exactly once.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client::{Client, Failure, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE};

const BATCH: usize = 1000;
/// Well under the API's 6 MB request limit.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
const ATTEMPTS: u32 = 8;

/// The `messageId` of a line without one: its number and content, hashed,
/// so the same line of the same file is the same event on every run.
pub fn derived_message_id(line_number: usize, line: &str) -> String {
    let digest = Sha256::new()
        .chain_update(line_number.to_string().as_bytes())
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
    event: Value,
}

pub async fn run(client: &Client, source: &str) -> Result<Outcome, Failure> {
    let (reader, total): (Box<dyn Read>, Option<u64>) = if source == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let count = BufReader::new(
            std::fs::File::open(source)
                .map_err(|e| Failure::new(EXIT_USAGE, format!("{source}: {e}")))?,
        )
        .lines()
        .count() as u64;
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
    let mut batch_bytes = 0;
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| Failure::new(EXIT_FAILED, format!("{source}: {e}")))?;
        if line.trim().is_empty() {
            bar.inc(1);
            continue;
        }
        let mut event: Value = match serde_json::from_str(&line) {
            Ok(Value::Object(map)) => Value::Object(map),
            _ => {
                eprintln!("line {number}: refused: not a JSON object");
                outcome.refused += 1;
                bar.inc(1);
                continue;
            }
        };
        if event.get("messageId").is_none_or(Value::is_null) {
            event["messageId"] = json!(derived_message_id(number, &line));
        }
        if batch.len() == BATCH || batch_bytes + line.len() > BATCH_BYTES {
            send(client, std::mem::take(&mut batch), &mut outcome, &bar).await?;
            batch_bytes = 0;
        }
        batch_bytes += line.len() + 1;
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
    eprintln!(
        "stored {}, duplicates {}, refused {} ({:.0} events/s)",
        outcome.stored,
        outcome.duplicates,
        outcome.refused,
        (outcome.stored + outcome.duplicates) as f64 / started.elapsed().as_secs_f64().max(0.001)
    );
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
        let body = json!({ "events": batch.iter().map(|p| &p.event).collect::<Vec<_>>() });
        let (status, answer) = client.post_json("/audit/events", &body).await?;
        let Some(results) = answer["results"].as_array() else {
            if status == 503 && attempt < ATTEMPTS {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                continue;
            }
            return Err(crate::client::status_failure(status, &answer));
        };
        let mut retry = Vec::new();
        for (pending, result) in batch.into_iter().zip(results) {
            match result["status"].as_str() {
                Some("stored") => outcome.stored += 1,
                Some("duplicate") => outcome.duplicates += 1,
                Some("refused") => {
                    outcome.refused += 1;
                    let message = result["error"]["message"].as_str().unwrap_or("refused");
                    bar.suspend(|| eprintln!("line {}: refused: {message}", pending.line));
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
