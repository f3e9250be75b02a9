//! `audit tail`: the gap-free trail, page by page, following `next` and
//! nothing else; with `--follow` forever; with `--state` resumable.
//!
//! Exactly once: after each page is written and flushed, the state file is
//! replaced atomically (written beside, then renamed) with the `next` link
//! and the last cursor written. A restart resumes from that `next` and
//! skips anything at or before that cursor, so a repeated page (a crash
//! after the flush, before the rename) is written once. The one window left
//! is a kill between the flush of a page and the rename of its state, a few
//! microseconds: the restart then writes that page again, and a consumer
//! that dedupes by `cursor` (every event has one) sees it once.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::{Client, Failure, EXIT_FAILED, EXIT_USAGE};
use crate::format::{Format, Printer};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The next page to fetch (a link the API gave).
    pub next: Option<String>,
    /// The last cursor written.
    pub last_cursor: Option<String>,
    /// The tenant whose trail it is (every event's `accountId`): a resume
    /// with another tenant's token is refused, not read from this position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

pub fn read_state(path: &Path) -> Result<State, Failure> {
    let not_a_state = |why: String| {
        Failure::new(
            EXIT_USAGE,
            format!(
                "{} is not a state file of `audit tail`: {why}",
                path.display()
            ),
        )
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let state: State =
                serde_json::from_str(&text).map_err(|e| not_a_state(e.to_string()))?;
            // What the tail skips and where it goes on come from this file:
            // a cursor that is none, or one from the future, would skip
            // events for good, so only what a tail can have written is taken.
            if let Some(last) = &state.last_cursor {
                let written_ms = ulid::Ulid::from_string(last)
                    .ok()
                    .filter(|cursor| cursor.to_string() == *last)
                    .map(|cursor| cursor.timestamp_ms());
                let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
                match written_ms {
                    None => {
                        return Err(not_a_state(format!(
                            "`lastCursor` {last:?} is not a cursor"
                        )))
                    }
                    Some(ms) if ms > now_ms + 60_000 => {
                        return Err(not_a_state(format!(
                            "`lastCursor` {last} is from the future; no tail wrote it"
                        )))
                    }
                    Some(_) => {}
                }
            }
            if let Some(next) = &state.next {
                let path_of = |link: &str| -> Option<String> {
                    if link.starts_with('/') {
                        return Some(link.split('?').next().unwrap_or_default().to_string());
                    }
                    let url = reqwest::Url::parse(link).ok()?;
                    matches!(url.scheme(), "http" | "https").then(|| url.path().to_string())
                };
                // The tail's route, under a base path a `--url` may have.
                if !path_of(next).is_some_and(|p| p == "/audit" || p.ends_with("/audit")) {
                    return Err(not_a_state(format!(
                        "`next` {next:?} is not a link of the tail"
                    )));
                }
            }
            Ok(state)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(err) => Err(Failure::new(
            EXIT_FAILED,
            format!("{}: {err}", path.display()),
        )),
    }
}

/// Replaces the state file atomically: a reader (or a restart) sees the
/// old state or the new one, never half of one.
pub fn write_state(path: &Path, state: &State) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display()));
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(serde_json::to_string(state).unwrap_or_default().as_bytes())
        .map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

pub struct Options {
    pub follow: bool,
    pub state: Option<PathBuf>,
    pub self_audit: String,
    pub format: Format,
    pub from: Option<String>,
    pub after: Option<String>,
    pub limit: u32,
}

/// A link (a path, or a full URL as a state may hold) as a URL to read.
fn resolve_link(link: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse("http://tail.invalid/")
        .ok()?
        .join(link)
        .ok()
}

/// A query parameter of a link.
fn link_parameter(link: &str, name: &str) -> Option<String> {
    resolve_link(link)?
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `link` with this run's own `limit`, `selfAudit` and `wait` (present
/// only with `--follow`): a resumed tail takes its position (`from`,
/// `after`) from the state, but its options from the command line. Kept
/// from the state's link, `--self-audit others` added to a running unit
/// was ignored and its poller's own reads flooded the SIEM.
fn with_run_options(link: &str, options: &Options) -> String {
    const RUN_OPTIONS: [&str; 3] = ["limit", "selfAudit", "wait"];
    let Some(mut url) = resolve_link(link) else {
        return link.to_string();
    };
    let position: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| !RUN_OPTIONS.contains(&name.as_ref()))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.set_query(None);
    {
        let mut query = url.query_pairs_mut();
        query.extend_pairs(position);
        query.append_pair("limit", &options.limit.to_string());
        query.append_pair("selfAudit", &options.self_audit);
        if options.follow {
            query.append_pair("wait", "20");
        }
    }
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// Where a resumed tail goes on: the state's link with this run's options;
/// but the saved link's `from` is past the events its run's filter left
/// out, so a run that takes in more (`exclude` → `include`) goes on from
/// the last event written instead, or it would skip those.
fn resume_link(state: &State, options: &Options) -> Option<String> {
    let link = state.next.as_deref()?;
    Some(match &state.last_cursor {
        Some(last)
            if link_parameter(link, "selfAudit").as_deref()
                != Some(options.self_audit.as_str()) =>
        {
            with_run_options(&format!("/audit?after={last}"), options)
        }
        _ => with_run_options(link, options),
    })
}

/// Where a tail holds its lock: beside the state, which is replaced on
/// every page (a lock on the state itself would go with the old file).
fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

pub async fn run(client: &Client, options: Options) -> Result<(), Failure> {
    // Held until the run ends: a second tail on the same state is refused.
    let _lock = match &options.state {
        Some(path) => {
            let lock = lock_path(path);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock)
                .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", lock.display())))?;
            crate::hold_exclusively(&file, path)?;
            Some(file)
        }
        None => None,
    };
    let mut state = match &options.state {
        Some(path) => read_state(path)?,
        None => State::default(),
    };
    let first = {
        let mut query = format!("limit={}&selfAudit={}", options.limit, options.self_audit);
        if let Some(from) = &options.from {
            query.push_str(&format!("&from={from}"));
        }
        if let Some(after) = &options.after {
            query.push_str(&format!("&after={after}"));
        }
        if options.follow {
            query.push_str("&wait=20");
        }
        format!("/audit?{query}")
    };
    if let Some(path) = options.state.as_ref().filter(|_| state.next.is_some()) {
        let what = format!("the state file {}", path.display());
        match &state.account_id {
            Some(account) => client.check_same_tenant(account, &what).await?,
            // An older `audit` saved no tenant from a trail with no event
            // yet; its position could be another tenant's, and would skip
            // this one's events.
            None => {
                return Err(Failure::new(
                    EXIT_USAGE,
                    format!("{what} names no tenant, so it cannot be checked against this token's (an older audit wrote it): start a new one"),
                ))
            }
        }
    }
    let mut next = resume_link(&state, &options).unwrap_or(first);
    let stdout = std::io::stdout();
    // Follow mode never ends, so a JSON array never closes: NDJSON then.
    let format = match options.format {
        Format::Json | Format::Table if options.follow => Format::Ndjson,
        other => other,
    };
    let mut printer = Printer::new(format, stdout.lock()).on_terminal(stdout.is_terminal());
    if state.next.is_some() {
        // Resumed: its output goes on from the last run's (`>> trail.csv`),
        // so a CSV header is not written again.
        printer = printer.continuing();
    }
    let write_failed = Failure::stdout;
    // Without --follow, the trail as it stood when the first page was
    // answered: each page read adds its own record to the trail, and a
    // small page (`--limit 1`) would chase them for ever.
    let mut end_ms: Option<i64> = None;
    let mut order = crate::trail::TrailOrder::new(state.account_id.clone())
        .resuming(state.last_cursor.as_deref());
    order.follow(&next, false, false)?;
    loop {
        let page = client.get_page(&next).await?;
        if !options.follow && end_ms.is_none() {
            end_ms = Some(crate::trail::walk_end(page.date_ms));
        }
        let events = crate::client::answer_list(&page.body, "events")?.clone();
        // The page names its tenant, even when empty: the state keeps it, so
        // a state saved from an empty trail is checked like any other.
        order.page(&page.body)?;
        // Checked whole before anything of it is written or skipped: a page
        // out of order, or of another tenant, is not the API's.
        let seen = order.page_events(&events, page.date_ms)?;
        let mut written_here = 0;
        let mut reached_end = false;
        for (event, seen) in events.into_iter().zip(seen) {
            let crate::trail::Seen::New(cursor) = seen else {
                // Written before a restart.
                continue;
            };
            if end_ms.is_some_and(|end| cursor.timestamp_ms() as i64 > end) {
                reached_end = true;
                break;
            }
            // A page shortens large `data`; a forwarder ships whole events.
            let event = crate::trail::whole_event(client, event).await?;
            order.of_tenant(&event)?;
            printer.write(&event).map_err(write_failed)?;
            state.last_cursor = Some(cursor.to_string());
            written_here += 1;
        }
        state.account_id = order.tenant().map(str::to_string);
        printer.flush().map_err(write_failed)?;
        if reached_end {
            // The state keeps this page's link: a resumed tail reads it
            // again and skips what was written.
            state.next = Some(next.clone());
            if let Some(path) = &options.state {
                write_state(path, &state)?;
            }
            break;
        }
        let Some(link) = page.body["_links"]["next"]["href"].as_str() else {
            // The tail always links its next page, caught up or not.
            return Err(crate::client::not_the_api("a tail page without `next`"));
        };
        let caught_up = page.retry_after.is_some();
        // A page that is not caught up always moves on; one that links
        // itself, or links that go round, would be read for ever.
        order.follow(link, written_here > 0, caught_up)?;
        next = link.to_string();
        state.next = Some(next.clone());
        if let Some(path) = &options.state {
            write_state(path, &state)?;
        }
        if caught_up && !options.follow {
            break;
        }
        if caught_up && written_here == 0 {
            // The long-poll already waited; pause as the API asks before
            // the next one.
            let wait = page.retry_after.unwrap_or(1).min(60);
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        }
    }
    printer.finish().map_err(write_failed)
}

#[cfg(test)]
mod run_option_tests {
    use super::*;

    fn options(follow: bool, self_audit: &str, limit: u32) -> Options {
        Options {
            follow,
            state: None,
            self_audit: self_audit.into(),
            format: Format::Ndjson,
            from: None,
            after: None,
            limit,
        }
    }

    /// A resumed tail keeps the state's position and takes this run's
    /// options: `--self-audit`, `--limit`, and `wait` only with `--follow`.
    #[test]
    fn a_resumed_link_takes_this_runs_options() {
        let saved = "http://127.0.0.1:3000/audit?limit=2&selfAudit=include&wait=20&after=01KB0000000000000000000001";
        assert_eq!(
            with_run_options(saved, &options(false, "others", 100)),
            "/audit?after=01KB0000000000000000000001&limit=100&selfAudit=others"
        );
        assert_eq!(
            with_run_options(
                "/audit?from=01KB0000000000000000000001&limit=5&selfAudit=exclude",
                &options(true, "include", 7)
            ),
            "/audit?from=01KB0000000000000000000001&limit=7&selfAudit=include&wait=20"
        );
        assert_eq!(
            link_parameter(saved, "selfAudit").as_deref(),
            Some("include")
        );
        assert_eq!(link_parameter("/audit?limit=1", "selfAudit"), None);
    }

    /// The same filter goes on from the saved link; another goes on from
    /// the last event written, since the saved `from` is past what the
    /// old filter left out; no state, no link.
    #[test]
    fn a_changed_filter_resumes_after_the_last_event_written() {
        let state = State {
            next: Some("/audit?from=01KB0000000000000000000009&limit=100&selfAudit=exclude".into()),
            last_cursor: Some("01KB0000000000000000000005".into()),
            account_id: None,
        };
        assert_eq!(
            resume_link(&state, &options(false, "exclude", 100)).as_deref(),
            Some("/audit?from=01KB0000000000000000000009&limit=100&selfAudit=exclude")
        );
        assert_eq!(
            resume_link(&state, &options(false, "include", 100)).as_deref(),
            Some("/audit?after=01KB0000000000000000000005&limit=100&selfAudit=include")
        );
        assert_eq!(
            resume_link(&State::default(), &options(false, "include", 100)),
            None
        );
    }
}
