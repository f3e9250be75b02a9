//! `audit verify`: checks events against the integrity log, offline from a
//! bundle of files or online through the API (docs/INTEGRITY.md).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use audit_core::integrity::note::NoteVerifier;
use audit_core::integrity::verify::{verify, Evidence, LogFinding, Report};
use audit_core::integrity::{CheckpointRecord, EntryView};
use audit_core::Event;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{answer_list, Client, Failure, EXIT_FAILED, EXIT_USAGE};

/// The files of a bundle: what `--online --save DIR` writes and the
/// offline mode reads.
pub const EVENTS_FILE: &str = "events.ndjson";
pub const ENTRIES_FILE: &str = "entries.ndjson";
pub const CHECKPOINTS_FILE: &str = "checkpoints.ndjson";
/// When the bundle was saved and what the walk saw when: an offline run
/// judges at that time by default, and no later (a later `--as-of` turned a
/// deletion into an expiry).
pub const SAVED_FILE: &str = "saved.json";

/// `saved.json`: the time the evidence was judged at when saved, and per
/// tail page the last cursor it covered and the server's time then.
#[derive(serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    saved_at: String,
    as_of_ms: i64,
    page_clock: Vec<(String, i64)>,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::new(EXIT_USAGE, message)
}

/// Each non-empty line of an NDJSON file read by `read`, which is told
/// where the line is (`file line N`) to name it in its error.
fn read_lines<T>(
    path: &Path,
    mut read: impl FnMut(&str, &str) -> Result<T, Failure>,
) -> Result<Vec<T>, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let mut items = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| usage(format!("{}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        items.push(read(
            &line,
            &format!("{} line {}", path.display(), number + 1),
        )?);
    }
    Ok(items)
}

/// A bundle's line that no longer reads as what `verify --save` wrote
/// there: the bundle was altered, which is a failed verification (exit 1),
/// not a usage error.
fn damaged(at: &str, what: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_FAILED, format!("{at}: altered: {what}"))
}

/// Reads a bundle's NDJSON, one `T` per non-empty line, naming the line of
/// a bad one.
fn read_ndjson<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, Failure> {
    read_lines(path, |line, at| {
        serde_json::from_str(line).map_err(|e| damaged(at, e))
    })
}

fn write_ndjson<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<(), Failure> {
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for item in items {
            serde_json::to_writer(&mut out, item)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write().map_err(|e| Failure::new(EXIT_FAILED, format!("cannot write {}: {e}", path.display())))
}

/// Checkpoints from a file of records (NDJSON, as the API and the bus
/// give them), or one signed note as plain text.
pub fn read_notes(path: &Path) -> Result<Vec<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let mut notes = Vec::new();
    if text.trim_start().starts_with('{') {
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let value: Value = serde_json::from_str(line)
                .map_err(|e| usage(format!("{} line {}: {e}", path.display(), number + 1)))?;
            // A checkpoint record, or an EventBridge envelope holding one.
            let note = value["note"]
                .as_str()
                .or_else(|| value["detail"]["note"].as_str())
                .ok_or_else(|| {
                    usage(format!("{} line {}: no `note`", path.display(), number + 1))
                })?;
            notes.push(note.to_string());
        }
    } else {
        // A note ends with one newline; `echo`, `jq -r` and editors add
        // another, which would read as a note without signatures.
        notes.push(format!("{}\n", text.trim_end_matches(['\n', '\r'])));
    }
    Ok(notes)
}

pub struct Options {
    pub verifier_key: Option<String>,
    pub bundle: Option<PathBuf>,
    pub trusted: Vec<PathBuf>,
    pub save: Option<PathBuf>,
    /// The time the evidence is judged at (epoch ms): now, or when an
    /// archived bundle was saved.
    pub as_of_ms: i64,
    /// Whether `as_of_ms` was given (`--as-of`), not the clock's.
    pub as_of_given: bool,
    /// `stale` beyond this (ms); `None`: not checked.
    pub max_checkpoint_age_ms: Option<i64>,
    /// The log to verify (`--origin`), pinned: `<CheckpointOrigin>/<tenant>`.
    /// `None`: the first checkpoint's, printed with the result.
    pub origin: Option<String>,
}

/// A verification's report, and the log it verified.
pub struct Verified {
    pub report: Report,
    /// The origin every checkpoint was held to.
    pub origin: Option<String>,
}

/// `--max-checkpoint-age`: `2h`, `90m`, `1d`, `45s`; `0` turns the check off.
pub fn parse_age(text: &str) -> Result<Option<i64>, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let seconds = number.parse::<i64>().ok().and_then(|n| match unit {
        "s" | "" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    });
    match seconds.and_then(|s| s.checked_mul(1000)) {
        Some(0) => Ok(None),
        Some(ms) => Ok(Some(ms)),
        None => Err(format!("`{text}` is not an age such as 2h, 90m or 1d")),
    }
}

/// Walks the API: checkpoints and entry records first, then the events (so
/// every sealed event is old enough to be served).
/// What the walk found, and the server's clock when it last answered.
struct Walked {
    checkpoints: Vec<CheckpointRecord>,
    entries: Vec<EntryView>,
    events: Vec<Value>,
    /// Per tail page, the last cursor it covered and the end of the second
    /// its `Date` names: when the absence of an event up to there was seen.
    page_clock: Vec<(ulid::Ulid, i64)>,
}

async fn fetch(client: &Client) -> Result<Walked, Failure> {
    // A walk reads no link twice: links that went round were read for ever.
    let mut walk = crate::trail::TrailOrder::new(None);
    let mut checkpoints: Vec<CheckpointRecord> = Vec::new();
    let mut next = Some("/audit/checkpoints?limit=1000".to_string());
    while let Some(url) = next.take() {
        walk.follow(&url, false, false)?;
        let page = client.get(&url).await?;
        let batch: Vec<CheckpointRecord> = records(&page, "checkpoints")?;
        if batch.is_empty() {
            break;
        }
        checkpoints.extend(batch);
        next = next_link(&page);
    }
    let mut entries: Vec<EntryView> = Vec::new();
    if !checkpoints.is_empty() {
        let mut next = Some("/audit/entries?limit=1000".to_string());
        while let Some(url) = next.take() {
            walk.follow(&url, false, false)?;
            let page = client.get(&url).await?;
            let batch = records::<EntryView>(&page, "entries")?;
            if batch.is_empty() {
                break;
            }
            entries.extend(batch);
            next = next_link(&page);
        }
    }
    // Kept as the JSON the API gave, every key of it: the leaf is hashed
    // from that, not from what an `Event` keeps of it. The tail is followed
    // by its `next` links to the caught-up end (its `Retry-After`): a page
    // can hold fewer events than asked and not be the last (cut at 3 MB, or
    // its read budget spent on expired items). It ends, too, at the trail
    // as it stood when the first page was answered (as `tail` without
    // `--follow` does): a tenant writing faster than this reads would
    // never be caught up with, and what it writes later is unsealed anyway.
    let mut events: Vec<Value> = Vec::new();
    let mut next = Some("/audit?limit=1000".to_string());
    let mut end_ms: Option<i64> = None;
    let mut page_clock: Vec<(ulid::Ulid, i64)> = Vec::new();
    // The tail only goes forward, of one tenant: an event the server
    // omitted and showed later, out of order, would not be judged.
    let mut order = crate::trail::TrailOrder::new(None);
    while let Some(url) = next.take() {
        let page = client.get_page(&url).await?;
        order.page(&page.body)?;
        // The server filtered expiry at its own time, within the second
        // `Date` names; but never at a time later than this machine's clock
        // allows: a page dated in 2100 had a deleted event judged `expired`.
        let latest_believed =
            chrono::Utc::now().timestamp_millis() + crate::trail::SERVER_CLOCK_AHEAD_MS;
        let seen_at = page.date_ms.map(|ms| (ms + 999).min(latest_believed));
        // `Date` has whole seconds: the rest of that second is kept.
        let end = *end_ms.get_or_insert(crate::trail::walk_end(page.date_ms));
        let mut reached_end = false;
        let batch = answer_list(&page.body, "events")?
            .iter()
            .cloned()
            .map(checked_event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Failure::new(EXIT_FAILED, format!("a page did not read as events: {e}"))
            })?;
        for event in batch {
            let crate::trail::Seen::New(cursor) = order.event(&event, page.date_ms)? else {
                continue;
            };
            if cursor.timestamp_ms() as i64 > end {
                reached_end = true;
                break;
            }
            // Pages may shorten `data`; the leaf is of the whole event.
            if event["mayHaveMoreData"] == Value::Bool(true) {
                let cursor = event["cursor"].as_str().unwrap_or_default().to_string();
                let whole = crate::trail::whole_event(client, event).await?;
                order.of_tenant(&whole)?;
                events.push(
                    checked_event(whole)
                        .map_err(|e| Failure::new(EXIT_FAILED, format!("event {cursor}: {e}")))?,
                );
            } else {
                events.push(event);
            }
        }
        if let Some(seen_at) = seen_at {
            let covered = events
                .last()
                .and_then(|e| e["cursor"].as_str())
                .and_then(|c| ulid::Ulid::from_string(c).ok())
                .unwrap_or(ulid::Ulid::nil());
            page_clock.push((covered, seen_at));
        }
        if page.retry_after.is_none() && !reached_end {
            next = next_link(&page.body);
            if let Some(link) = &next {
                walk.follow(link, false, false)?;
            }
        }
    }
    // The last page saw the absence of everything above it.
    if let Some((_, seen_at)) = page_clock.last().copied() {
        page_clock.push((ulid::Ulid(u128::MAX), seen_at));
    }
    Ok(Walked {
        checkpoints,
        entries,
        events,
        page_clock,
    })
}

/// The `next` link of a page, if it has one.
fn next_link(page: &Value) -> Option<String> {
    page["_links"]["next"]["href"].as_str().map(str::to_string)
}

/// The records of a list answer: a list that is missing is not the API's
/// answer; a record that does not read is an answer the API never gives.
fn records<T: serde::de::DeserializeOwned>(page: &Value, key: &str) -> Result<Vec<T>, Failure> {
    serde_json::from_value(Value::Array(answer_list(page, key)?.clone()))
        .map_err(|e| Failure::new(EXIT_FAILED, format!("a `{key}` record did not read: {e}")))
}

/// A bundle's events, each line read as the API reads a body
/// (`audit_core::json`): a key given twice or a number no double holds is
/// refused, naming the line, for a reader that took the other copy would
/// see another event than the one hashed.
fn read_bundle_events(path: &Path) -> Result<Vec<Value>, Failure> {
    read_lines(path, |line, at| {
        let (value, defects) = audit_core::json::parse(line.as_bytes())
            .map_err(|e| damaged(at, format!("not JSON (column {})", e.column)))?;
        if let Some(defect) = defects.first() {
            return Err(damaged(at, &defect.message));
        }
        checked_event(value).map_err(|e| damaged(at, e))
    })
}

/// An event as a JSON value, if it reads as an event (so a line that is no
/// event at all is named, as before); the value is kept whole.
fn checked_event(value: Value) -> Result<Value, String> {
    Event::deserialize(&value).map_err(|e| e.to_string())?;
    Ok(value)
}

pub async fn run(client: Option<&Client>, mut options: Options) -> Result<Verified, Failure> {
    let mut page_clock: Vec<(ulid::Ulid, i64)> = Vec::new();
    let (checkpoints, entries, events) = match (&options.bundle, client) {
        (Some(dir), _) => {
            let saved_path = dir.join(SAVED_FILE);
            // A bundle saved before `saved.json` existed has none: it is
            // judged at `--as-of`, or now, as before.
            if saved_path.exists() {
                let at = saved_path.display().to_string();
                let text = std::fs::read_to_string(&saved_path).map_err(|e| damaged(&at, e))?;
                let saved: Saved = serde_json::from_str(&text).map_err(|e| damaged(&at, e))?;
                if options.as_of_given && options.as_of_ms > saved.as_of_ms {
                    return Err(usage(format!(
                        "--as-of is after the bundle was saved ({}): what it lacks was seen missing only until then",
                        saved.saved_at
                    )));
                }
                if !options.as_of_given {
                    options.as_of_ms = saved.as_of_ms;
                    page_clock = saved
                        .page_clock
                        .iter()
                        .map(|(cursor, ms)| {
                            ulid::Ulid::from_string(cursor)
                                .map(|c| (c, *ms))
                                .map_err(|e| damaged(&at, e))
                        })
                        .collect::<Result<_, _>>()?;
                }
            }
            (
                read_ndjson::<CheckpointRecord>(&dir.join(CHECKPOINTS_FILE))?,
                read_ndjson::<EntryView>(&dir.join(ENTRIES_FILE))?,
                read_bundle_events(&dir.join(EVENTS_FILE))?,
            )
        }
        (None, Some(client)) => {
            let walked = fetch(client).await?;
            // Online, a missing event's expiry is judged at the server's
            // time when the page that should have held it was read, not by
            // this machine's clock at the start: the server hides an event
            // from its own `expiresAt` on, and an event that expired during
            // the walk, or a clock behind the server's, read as `missing`
            // (tampering). Staleness takes the later of the two clocks: a
            // server answering with an old `Date` hides no frozen log.
            if !options.as_of_given {
                page_clock = walked.page_clock;
                let server_ms = page_clock.last().map(|(_, at)| *at);
                options.as_of_ms = options
                    .as_of_ms
                    .max(chrono::Utc::now().timestamp_millis())
                    .max(server_ms.unwrap_or(i64::MIN));
            }
            (walked.checkpoints, walked.entries, walked.events)
        }
        (None, None) => return Err(usage("give --bundle DIR, or --online")),
    };
    if options.as_of_given {
        // A bundle holds no event written after it was saved: an earlier
        // `--as-of` would judge expiry and staleness at a time the bundle
        // did not exist yet, and pass what it should not.
        let newest_ms = events
            .iter()
            .filter_map(|e| e["cursor"].as_str())
            .filter_map(|c| ulid::Ulid::from_string(c).ok())
            .map(|c| c.timestamp_ms() as i64)
            .max();
        if let Some(newest_ms) = newest_ms.filter(|ms| *ms > options.as_of_ms) {
            let at = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(audit_core::event::format_time)
                    .unwrap_or_default()
            };
            return Err(usage(format!(
                "--as-of {} is before the newest event the evidence holds ({}): give the time the bundle was saved",
                at(options.as_of_ms),
                at(newest_ms)
            )));
        }
    }
    if let Some(dir) = &options.save {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", dir.display())))?;
        write_ndjson(&dir.join(CHECKPOINTS_FILE), &checkpoints)?;
        write_ndjson(&dir.join(ENTRIES_FILE), &entries)?;
        write_ndjson(&dir.join(EVENTS_FILE), &events)?;
        let saved = Saved {
            saved_at: chrono::DateTime::from_timestamp_millis(options.as_of_ms)
                .map(audit_core::event::format_time)
                .unwrap_or_default(),
            as_of_ms: options.as_of_ms,
            page_clock: page_clock
                .iter()
                .map(|(cursor, ms)| (cursor.to_string(), *ms))
                .collect(),
        };
        std::fs::write(
            dir.join(SAVED_FILE),
            serde_json::to_string(&saved).unwrap_or_default(),
        )
        .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot write {}: {e}", dir.display())))?;
    }
    let key_text = match (&options.verifier_key, client) {
        (Some(key), _) => key.clone(),
        (None, Some(client)) => {
            crate::say("audit: no --verifier-key given: trusting the key the API serves (keep your own copy from the stack output)");
            client.get("/audit/verifier-key").await?["verifierKey"]
                .as_str()
                .ok_or_else(|| crate::client::not_the_api("no `verifierKey`"))?
                .to_string()
        }
        (None, None) => return Err(usage("--verifier-key is required offline")),
    };
    let key = NoteVerifier::parse(&key_text).map_err(|e| usage(format!("--verifier-key: {e}")))?;
    let notes: Vec<String> = checkpoints.iter().map(|c| c.note.clone()).collect();
    let mut trusted = Vec::new();
    for path in &options.trusted {
        trusted.extend(read_notes(path)?);
    }
    // Pinned, or the first checkpoint's: the server names it, so the
    // result says which log it was.
    let origin = options
        .origin
        .clone()
        .or_else(|| checkpoints.first().map(|c| c.origin.clone()));
    let evidence = Evidence {
        key: &key,
        origin: origin.as_deref(),
        entries: &entries,
        checkpoints: &notes,
        trusted: &trusted,
        now_ms: options.as_of_ms,
        absence_seen_at: &page_clock,
        stale_after_ms: options.max_checkpoint_age_ms,
    };
    // Every event is the log's tenant's (`<origin>/<tenant>`): a server
    // answering with another tenant's trail and log passed as this one's.
    let log_tenant = origin
        .as_deref()
        .and_then(|o| o.rsplit_once('/'))
        .map(|(_, tenant)| tenant.to_string());
    let foreign: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["accountId"].as_str())
        .filter(|account| log_tenant.as_deref().is_some_and(|t| t != *account))
        .map(str::to_string)
        .collect();
    let mut report = verify(
        &evidence,
        events
            .into_iter()
            .map(audit_core::integrity::verify::GivenEvent::from_json),
    );
    for account in foreign {
        report.log.push(LogFinding {
            problem: "wrong_origin",
            detail: format!(
                "events of tenant {account} in the log of {}",
                origin.as_deref().unwrap_or_default()
            ),
            tree_size: None,
        });
    }
    Ok(Verified { report, origin })
}

/// Prints the report: NDJSON findings (`--json`) or a summary; failures
/// and log problems are always named.
pub fn print(verified: &Verified, json: bool) {
    let report = &verified.report;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        for finding in &report.log {
            let _ = writeln!(out, "{}", serde_json::json!({"log": finding}));
        }
        for finding in &report.events {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(finding).unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"summary": report.counts, "verifiedTreeSize": report.verified_tree_size, "origin": verified.origin, "ok": report.ok()})
        );
        return;
    }
    for finding in &report.log {
        // A finding's detail quotes the server's text (a note's lines).
        let _ = writeln!(
            out,
            "LOG {}: {}",
            finding.problem,
            crate::terminal::for_terminal(&finding.detail)
        );
    }
    for finding in report.events.iter().filter(|f| f.status.is_failure()) {
        let _ = writeln!(
            out,
            "{:?} {}{}",
            finding.status,
            crate::terminal::for_terminal(&finding.cursor),
            finding
                .leaf_index
                .map(|i| format!(" (leaf {i})"))
                .unwrap_or_default()
        );
    }
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "{}: {} (checkpoints verified up to {} leaves{})",
        if report.ok() { "OK" } else { "FAILED" },
        if counts.is_empty() {
            "no events".to_string()
        } else {
            counts.join(", ")
        },
        report.verified_tree_size,
        verified
            .origin
            .as_deref()
            .map(|o| format!(", log {}", crate::terminal::for_terminal(o)))
            .unwrap_or_default()
    );
}
