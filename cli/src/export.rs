//! `audit export`: a time range of the trail into a file, streaming (one
//! page in memory at a time), resumable, with progress on stderr.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::{Client, Failure, EXIT_FAILED, EXIT_USAGE};
use crate::format::{Format, Printer, COLUMNS};
use crate::query::parse_time;

pub struct Options {
    pub from: String,
    pub to: Option<String>,
    pub format: Format,
    pub out: PathBuf,
}

fn io_failure(path: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // A reader that closed the pipe wanted no more.
            Failure::stdout(e)
        } else {
            Failure::new(EXIT_FAILED, format!("{}: {e}", path.display()))
        }
    }
}

/// The fields of one CSV record (quoted as the csv crate writes them).
fn csv_fields(record: &str) -> Option<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(record.as_bytes())
        .records()
        .next()?
        .ok()
        .map(|fields| fields.iter().map(str::to_string).collect())
}

/// The cursor and the tenant (`accountId`) of a record as this format
/// writes it; `None` for a record it does not write (another format's, or
/// not one of `audit export`'s at all). `account_column` is the CSV
/// header's `accountId` column.
fn record_identity(
    format: Format,
    record: &str,
    account_column: Option<usize>,
) -> Option<(String, String)> {
    let text = |value: &Value| value.as_str().map(str::to_string);
    match format {
        Format::Csv => {
            let mut fields = csv_fields(record)?;
            let account = fields.get(account_column?)?.clone();
            let cursor = fields.drain(..).next()?;
            ulid::Ulid::from_string(&cursor).ok()?;
            Some((cursor, account))
        }
        Format::Ocsf => {
            let value: Value = serde_json::from_str(record).ok()?;
            if value["class_uid"] != 6003 {
                return None;
            }
            let metadata = &value["metadata"];
            Some((text(&metadata["uid"])?, text(&metadata["tenant_uid"])?))
        }
        _ => {
            let value: Value = serde_json::from_str(record).ok()?;
            if value.get("class_uid").is_some() {
                return None;
            }
            Some((text(&value["cursor"])?, text(&value["accountId"])?))
        }
    }
}

/// What an earlier run left.
struct ResumePoint {
    /// The length of its complete records: a partial last one (a run
    /// killed mid-write) is cut off there before the run goes on.
    complete_len: u64,
    /// The last cursor written.
    last: Option<String>,
    /// The tenant whose trail the file holds.
    account: Option<String>,
    /// A CSV file's header.
    header: Option<Vec<String>>,
}

/// What an earlier run left: the last cursor written, its tenant and, for
/// CSV, the header. A partial last record (a run killed mid-write) is cut
/// off. A complete record this format does not write (another format's,
/// another file's) is refused: appending would mix two kinds of record. A
/// CSV record may span lines (a quoted field holding a newline): it is
/// whole at a line end with an even count of `"` (quotes inside a quoted
/// field are doubled).
fn resume_point(path: &Path, format: Format) -> Result<ResumePoint, Failure> {
    let mut point = ResumePoint {
        complete_len: 0,
        last: None,
        account: None,
        header: None,
    };
    let Ok(file) = File::open(path) else {
        return Ok(point);
    };
    let mut reader = BufReader::new(file);
    let (mut account_column, mut number) = (None, 0usize);
    let mut line = String::new();
    let mut record = String::new();
    let not_ours = |why: String| {
        Failure::new(
            EXIT_USAGE,
            format!("{}: {why}; export to a new file", path.display()),
        )
    };
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(io_failure(path))?;
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        record.push_str(&line);
        if format == Format::Csv && record.matches('"').count() % 2 == 1 {
            continue;
        }
        point.complete_len += record.len() as u64;
        number += 1;
        let text = std::mem::take(&mut record);
        if format == Format::Csv && point.header.is_none() {
            let header = csv_fields(&text)
                .ok_or_else(|| not_ours("its first line is not a CSV header".into()))?;
            account_column = header.iter().position(|c| c == "accountId");
            point.header = Some(header);
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        let (cursor, account) = record_identity(format, text.trim_end(), account_column)
            .ok_or_else(|| {
                not_ours(format!(
                    "record {number} is not what `audit export --format {}` writes",
                    format_name(format)
                ))
            })?;
        match &point.account {
            Some(seen) if *seen != account => {
                return Err(not_ours(format!(
                    "it holds the trails of tenants {seen} and {account}"
                )))
            }
            _ => point.account = Some(account),
        }
        point.last = Some(cursor);
    }
    // A resume asks for events after the last record: one from the future
    // (written from a server's lying answer) would skip every event until
    // then, for good.
    if let Some(last) = &point.last {
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let future = ulid::Ulid::from_string(last)
            .map_or(true, |cursor| cursor.timestamp_ms() > now_ms + 60_000);
        if future {
            return Err(not_ours(format!(
                "its last record's cursor {last} is not one an export can have written (from the future)"
            )));
        }
    }
    Ok(point)
}

/// Cuts a partial last record off (a run killed mid-write).
fn cut_to(path: &Path, complete_len: u64) -> Result<(), Failure> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_failure(path))?;
    file.set_len(complete_len).map_err(io_failure(path))
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::Ocsf => "ocsf",
        _ => "ndjson",
    }
}

/// The smallest cursor of a time: where a range starts.
fn cursor_at(time: &str) -> Result<String, Failure> {
    let at = DateTime::parse_from_rfc3339(time)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("{time}: {e}")))?;
    let ms = at.timestamp_millis().max(0) as u64;
    Ok(ulid::Ulid::from_parts(ms, 0).to_string())
}

pub async fn run(client: &Client, options: Options) -> Result<u64, Failure> {
    if matches!(options.format, Format::Table | Format::Json) {
        return Err(Failure::new(
            EXIT_USAGE,
            "export writes ndjson, csv or ocsf",
        ));
    }
    let from = parse_time("--from", &options.from)?;
    let to = match &options.to {
        Some(to) => parse_time("--to", to)?,
        None => audit_core::event::format_time(Utc::now()),
    };
    let (from_at, to_at) = (
        DateTime::parse_from_rfc3339(&from).map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?,
        DateTime::parse_from_rfc3339(&to).map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?,
    );
    // Only a regular file can be read back and resumed. `-` is stdout; a
    // pipe, a device or `/dev/stdout` is written straight through (reading
    // it for a resume point would wait on it for ever).
    let to_stdout = options.out.as_os_str() == "-";
    let resumable =
        !to_stdout && std::fs::metadata(&options.out).map_or(true, |meta| meta.is_file());
    // Held until the run ends: a second export to the same file is refused.
    let _lock = if resumable {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&options.out)
            .map_err(io_failure(&options.out))?;
        crate::hold_exclusively(&file, &options.out)?;
        Some(file)
    } else {
        None
    };
    let (resume_after, header, tenant) = if resumable {
        let point = resume_point(&options.out, options.format)?;
        if let Some(account) = &point.account {
            let what = format!("{}", options.out.display());
            client.check_same_tenant(account, &what).await?;
        }
        // Only a file this run goes on with is changed.
        if std::fs::metadata(&options.out).is_ok() {
            cut_to(&options.out, point.complete_len)?;
        }
        (point.last, point.header, point.account)
    } else {
        (None, None, None)
    };
    let out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else if resumable {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&options.out)
            .map_err(io_failure(&options.out))?;
        file.seek(SeekFrom::End(0))
            .map_err(io_failure(&options.out))?;
        Box::new(file)
    } else {
        Box::new(
            OpenOptions::new()
                .write(true)
                .open(&options.out)
                .map_err(io_failure(&options.out))?,
        )
    };
    let out = BufWriter::new(out);
    // `--out -` on a terminal is shown: escaped as every format is there.
    let on_terminal = to_stdout && std::io::stdout().is_terminal();
    let mut printer = if options.format == Format::Csv {
        let (columns, new_file) = match header {
            // The file's own columns: the top-level ones, then its data
            // columns, in the order the first run wrote them.
            Some(header)
                if header.len() >= COLUMNS.len() && header[..COLUMNS.len()] == *COLUMNS =>
            {
                (header[COLUMNS.len()..].to_vec(), false)
            }
            Some(_) => {
                return Err(Failure::new(
                    EXIT_USAGE,
                    format!(
                        "{}: its header is not one `audit export` writes; export to a new file",
                        options.out.display()
                    ),
                ))
            }
            None => {
                let mut columns = data_columns(client).await?;
                if on_terminal {
                    // Names from metadata, shown: escaped like the cells.
                    columns = columns
                        .iter()
                        .map(|c| crate::terminal::for_terminal(c).into_owned())
                        .collect();
                }
                (columns, true)
            }
        };
        Printer::csv(out, columns, new_file)
            .map_err(io_failure(&options.out))?
            .on_terminal(on_terminal)
    } else {
        Printer::new(options.format, out).on_terminal(on_terminal)
    };
    let span = (to_at - from_at).num_seconds().max(1) as u64;
    let bar = ProgressBar::new(span);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let started = std::time::Instant::now();
    let mut next = match &resume_after {
        Some(cursor) => format!("/audit?limit=1000&after={cursor}"),
        None => format!("/audit?limit=1000&from={}", cursor_at(&from)?),
    };
    let mut written = 0u64;
    let failed = io_failure(&options.out);
    // Only after what the file holds, in order, of its tenant: a server
    // that ignored `after=` had every record appended again.
    let mut order = crate::trail::TrailOrder::new(tenant).after(resume_after.as_deref());
    order.follow(&next, false, false)?;
    'pages: loop {
        let page = client.get_page(&next).await?;
        let events = crate::client::answer_list(&page.body, "events")?.clone();
        order.page(&page.body)?;
        // Checked whole before anything of it is written.
        let seen = order.page_events(&events, page.date_ms)?;
        let written_before = written;
        for (event, seen) in events.into_iter().zip(seen) {
            let crate::trail::Seen::New(cursor) = seen else {
                continue;
            };
            // The range ends by the checked cursor (when the event was
            // written), not by a `timestamp` the answer could set.
            let written_ms = cursor.timestamp_ms() as i64;
            if written_ms >= to_at.timestamp_millis() {
                break 'pages;
            }
            // A page shortens large `data`; the export holds whole events.
            let event = crate::trail::whole_event(client, event).await?;
            order.of_tenant(&event)?;
            printer.write(&event).map_err(&failed)?;
            written += 1;
            bar.set_position(((written_ms - from_at.timestamp_millis()) / 1000).max(0) as u64);
        }
        printer.flush().map_err(&failed)?;
        let rate = written as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!("{written} events, {rate:.0}/s"));
        if page.retry_after.is_some() {
            // Caught up with the settled trail: nothing later exists yet.
            break;
        }
        match page.body["_links"]["next"]["href"].as_str() {
            Some(link) => {
                order.follow(link, written > written_before, false)?;
                next = link.to_string();
            }
            // The tail always links its next page, caught up or not.
            None => return Err(crate::client::not_the_api("a tail page without `next`")),
        }
    }
    printer.finish().map_err(&failed)?;
    bar.finish_and_clear();
    crate::say(&format!(
        "exported {written} events to {} ({:.0} events/s)",
        options.out.display(),
        written as f64 / started.elapsed().as_secs_f64().max(0.001)
    ));
    Ok(written)
}

/// The CSV's data columns: `data` whole, as JSON (so nothing is lost that
/// the property columns can't hold), then every `data` and `indexedData`
/// path metadata has seen, sorted, so every export of a tenant has the
/// same order.
async fn data_columns(client: &Client) -> Result<Vec<String>, Failure> {
    let metadata = client.get("/audit/metadata").await?;
    let mut columns: Vec<String> = crate::client::answer_list(&metadata, "targets")?
        .iter()
        .filter(|t| t["target"] != "event")
        .flat_map(|t| t["fields"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["type"] != "object")
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    columns.sort();
    columns.dedup();
    columns.insert(0, crate::format::WHOLE_DATA_COLUMN.to_string());
    Ok(columns)
}
