//! `audit` against a served API (the embedded store, or DynamoDB Local in
//! the test script): exit codes and messages, and the tail that survives
//! being killed while writers write.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use audit_infra::testkit::{EnvOptions, TestEnv};
use common::*;
use serde_json::{json, Value};

mod common;

#[tokio::test]
async fn exit_codes_and_messages_say_what_went_wrong() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    // A bad token: 3, and what to do.
    let (code, _, stderr) =
        audit(&base, "not-a-token", &["get", "01KB0000000000000000000001"]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("token"), "{stderr}");
    // A wrong URL (a port nothing listens on): 5 after retries, naming it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, stderr) = audit(&nowhere, &token, &["get", "01KB0000000000000000000001"]).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    // An unknown cursor: 4.
    let (code, _, stderr) = audit(&base, &token, &["get", "01KB0000000000000000000001"]).await;
    assert_eq!(code, 4, "{stderr}");
    // Something that is not a cursor names no event: 2, and no request.
    for not_a_cursor in [
        "../../audit/settings",
        "01KB0000000000000000000001/proof",
        "x",
    ] {
        let (code, stdout, stderr) = audit(&base, &token, &["get", not_a_cursor]).await;
        assert_eq!(code, 2, "{not_a_cursor}: {stdout}{stderr}");
        assert!(stderr.contains("is not a cursor"), "{stderr}");
    }
    // A malformed condition: 2, naming the part.
    let (code, _, stderr) = audit(&base, &token, &["query", "userId", "~", "u-1"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`~` is not an operator"), "{stderr}");
    // A condition the API refuses: 2 with the API's reason.
    let (code, _, stderr) = audit(&base, &token, &["query", "nosuchfield", "=", "1"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refused the query") && stderr.contains("nosuchfield"),
        "{stderr}"
    );
    // And a good query works, as NDJSON when piped.
    post(&base, &token, vec![json!({"eventType": "user.login", "serviceName": "idp", "userId": "u-1", "data": {"mfa": false}})]).await;
    let (code, stdout, stderr) = audit(
        &base,
        &token,
        &["query", "userId", "=", "u-1", "data.mfa = false"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["userId"], "u-1");
    // Every format every command offers prints: CSV from a query, a header
    // and one row.
    let (code, stdout, stderr) = audit(
        &base,
        &token,
        &["query", "userId", "=", "u-1", "--format", "csv"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("cursor,timestamp,"), "{stdout}");
    assert!(rows[1].contains(",u-1,"), "{stdout}");
    // A number the API could not keep exactly is a usage error, never
    // rounded on the way into another number (1e-400 went out as 0.0 and
    // matched every zero); quoted, it is text.
    post(
        &base,
        &token,
        vec![json!({"eventType": "n", "serviceName": "s", "data": {"v": 0}})],
    )
    .await;
    for number in [
        "1e-400",
        "1e400",
        "18446744073709551616",
        "0.1000000000000000055511151231257827",
    ] {
        let (code, stdout, stderr) = audit(&base, &token, &["query", "data.v", "=", number]).await;
        assert_eq!(code, 2, "{number}: {stdout}{stderr}");
        assert!(stderr.contains("kept exactly"), "{number}: {stderr}");
        assert!(stdout.is_empty(), "{number}: {stdout}");
        let quoted = format!("\"{number}\"");
        let (code, _, stderr) = audit(&base, &token, &["query", "data.v", "=", &quoted]).await;
        assert_eq!(code, 0, "{quoted}: {stderr}");
    }
    let (code, stdout, _) = audit(&base, &token, &["query", "data.v", "=", "0"]).await;
    assert_eq!((code, stdout.lines().count()), (0, 1), "{stdout}");
    // A --url that is no http(s) URL is a usage error, not an outage.
    for url in ["not a url", "ftp://example.com", "http//127.0.0.1:3000"] {
        let (code, _, stderr) = audit(url, &token, &["get", "01KB0000000000000000000001"]).await;
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stderr.contains("--url"), "{url}: {stderr}");
    }
    // Out-of-range counts are usage errors, before any request.
    for args in [
        &["tail", "--limit", "0"][..],
        &["tail", "--limit", "1001"],
        &["query", "--limit", "0"],
    ] {
        let (code, _, stderr) = audit(&base, &token, args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
}

/// `audit ingest` sends each line as the file holds it: what the API's
/// strict reading refuses (a repeated key, a number no double holds) is
/// refused, line by line, never quietly changed on the way.
#[tokio::test]
async fn ingest_sends_each_line_as_written() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let lines = [
        r#"{"eventType":"cli.ok","serviceName":"cli","data":{"n":100.0,"f":0.1}}"#,
        r#"{"eventType":"cli.dup","serviceName":"cli","data":{"x":1,"x":2}}"#,
        r#"{"eventType":"cli.num","serviceName":"cli","data":{"f":0.1000000000000000055511151231257827}}"#,
        r#"{"eventType":"cli.a","serviceName":"cli","eventType":"cli.b"}"#,
    ];
    let dir = std::env::temp_dir().join(format!("audit-ingest-lines-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("events.ndjson");
    // Saved as some editors save: a byte-order mark, CRLF line ends; then
    // a line that is not UTF-8, one larger than a request may be, a good
    // one, and a last line cut short.
    let mut text = format!("\u{feff}{}\r\n", lines.join("\r\n")).into_bytes();
    text.extend_from_slice(b"{\"eventType\":\"cli.bad\",\"serviceName\":\"\xff\xfe\"}\n");
    text.extend_from_slice(
        format!(
            "{{\"eventType\":\"cli.huge\",\"serviceName\":\"cli\",\"data\":\"{}\"}}\n",
            "x".repeat(5 * 1024 * 1024)
        )
        .as_bytes(),
    );
    text.extend_from_slice(b"{\"eventType\":\"cli.ok2\",\"serviceName\":\"cli\"}\n{\"eventType\":");
    std::fs::write(&file, text).expect("file");
    let path = file.display().to_string();
    let (code, _, stderr) = audit(&base, &token, &["ingest", &path]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("stored 2,"), "{stderr}");
    assert!(stderr.contains("line 5: refused: not UTF-8"), "{stderr}");
    assert!(stderr.contains("line 6: refused: the line is"), "{stderr}");
    assert!(
        stderr.contains("line 2: refused") && stderr.contains("given twice"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3: refused") && stderr.contains("kept exactly"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4: refused") && stderr.contains("given twice"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 8: refused: not JSON (it breaks off"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("events["),
        "lines are named, not batch positions: {stderr}"
    );
    let (code, stdout, stderr) = audit(&base, &token, &["query", "serviceName", "=", "cli"]).await;
    assert_eq!(code, 0, "{stderr}");
    let stored: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(stored.len(), 2, "{stdout}");
    assert!(
        stored.iter().any(|e| e["eventType"] == "cli.ok2"),
        "{stdout}"
    );
    let stored: Vec<Value> = stored
        .into_iter()
        .filter(|e| e["eventType"] == "cli.ok")
        .collect();
    assert_eq!(stored[0]["data"], json!({"n": 100, "f": 0.1}));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writers post while `tail --follow --state` runs; it is killed three
/// times at random moments and restarted. The concatenated output holds
/// every acknowledged event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_tail_writes_every_event_exactly_once() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let dir = std::env::temp_dir().join(format!("audit-tail-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let writers = {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..30 {
                let events = (0..20)
                    .map(|i| json!({"eventType": "tail.test", "serviceName": "writer", "data": {"round": round, "i": i}}))
                    .collect();
                acknowledged.extend(post(&base, &token, events).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acknowledged
        })
    };
    let start_tail = |n: usize| {
        let out = std::fs::File::create(dir.join(format!("out-{n}.ndjson"))).unwrap();
        Command::new(AUDIT)
            .args([
                "tail",
                "--follow",
                "--self-audit",
                "exclude",
                "--limit",
                "7",
                "--state",
            ])
            .arg(&state)
            .env("AUDIT_URL", &base)
            .env("AUDIT_TOKEN", &token)
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for (n, pause) in [700u64, 1300, 400].iter().enumerate() {
        let mut child = start_tail(n);
        tokio::time::sleep(Duration::from_millis(*pause + rand::random_range(0..500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let acknowledged = writers.await.unwrap();
    // Each run's output, as the cursors of its whole lines (a line cut by
    // the kill is not an event written).
    let outputs = |runs: usize| -> Vec<Vec<String>> {
        (0..runs)
            .map(|n| {
                std::fs::read_to_string(dir.join(format!("out-{n}.ndjson")))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .filter_map(|event| event["cursor"].as_str().map(str::to_string))
                    .collect()
            })
            .collect()
    };
    // The last run catches up after the writers stop: it is stopped once
    // everything acknowledged is written, however slow the machine.
    let mut last = start_tail(3);
    let started = std::time::Instant::now();
    loop {
        let written: std::collections::HashSet<String> = outputs(4).into_iter().flatten().collect();
        if acknowledged.iter().all(|c| written.contains(c))
            || started.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last.kill().unwrap();
    last.wait().unwrap();
    let runs = outputs(4);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for cursor in runs.iter().flatten() {
        *seen.entry(cursor.clone()).or_default() += 1;
    }
    // Writes that missed their deadline are answered `failed`; the
    // property is about what was acknowledged, and most of it was.
    assert!(acknowledged.len() >= 500, "{}", acknowledged.len());
    // A repeat only of the documented kind: a run killed between writing a
    // page and saving its state leaves that page (at most 7 events, the
    // last it wrote) to be written again first by the next run.
    let page_again = |cursor: &str| {
        runs.windows(2).any(|pair| {
            let tail = &pair[0][pair[0].len().saturating_sub(7)..];
            let head = &pair[1][..pair[1].len().min(7)];
            tail.iter().any(|c| c == cursor) && head.iter().any(|c| c == cursor)
        })
    };
    let repeated: Vec<_> = seen
        .iter()
        .filter(|(cursor, n)| **n > 2 || (**n == 2 && !page_again(cursor)))
        .collect();
    assert!(repeated.is_empty(), "written more than once: {repeated:?}");
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|c| !seen.contains_key(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never written",
        missing.len()
    );
    assert!(Path::new(&state).exists());
    std::fs::remove_dir_all(&dir).ok();
}

fn cursors_of(ndjson: &str) -> Vec<String> {
    ndjson
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["cursor"].as_str().map(str::to_string))
        .collect()
}

/// Without --follow, a tail prints the trail as it stood when it started
/// and ends, even one event a page with its own reads' records included
/// (each page read adds one: with more settled events waiting than it reads
/// in a settle horizon, it used to chase them for ever); a resumed
/// tail goes on from there, writing nothing twice.
#[tokio::test]
async fn a_tail_without_follow_ends_at_the_trail_as_it_started() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    // More events than one-a-page reads within a settle horizon, so its
    // reads' records settle as fast as it reads.
    let mut posted = Vec::new();
    for batch in 0..2 {
        posted.extend(
            post(
                &base,
                &token,
                (0..300)
                    .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("u-{batch}-{i}")}))
                    .collect(),
            )
            .await,
        );
    }
    assert_eq!(posted.len(), 600);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let state = std::env::temp_dir().join(format!("tail-end-{}.json", ulid::Ulid::new()));
    let state_arg = state.to_string_lossy().to_string();
    let args = [
        "tail",
        "--limit",
        "1",
        "--format",
        "ndjson",
        "--state",
        state_arg.as_str(),
    ];
    let started_ms = chrono::Utc::now().timestamp_millis();
    let (code, stdout, stderr) =
        tokio::time::timeout(Duration::from_secs(60), audit(&base, &token, &args))
            .await
            .expect("the tail ends");
    assert_eq!(code, 0, "{stderr}");
    let first = cursors_of(&stdout);
    for cursor in &posted {
        assert!(first.contains(cursor), "{cursor} in {stdout}");
    }
    // The tail's first read is the first `audit.list` record it printed
    // (the process can take a second to start on a loaded machine); its
    // end is that answer's `Date` (whole seconds) and the rest of that
    // second, so nothing it printed is much later than its first read.
    let cursor_ms = |cursor: &str| ulid::Ulid::from_string(cursor).unwrap().timestamp_ms() as i64;
    let began_ms = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["eventType"] == "audit.list")
        .filter_map(|event| event["cursor"].as_str().map(cursor_ms))
        .min()
        .unwrap_or(started_ms);
    for cursor in &first {
        assert!(
            cursor_ms(cursor) <= began_ms + 3000,
            "{cursor} written after the tail began"
        );
    }
    // The first run's own reads are in the trail now: a resumed tail
    // prints them, after what it printed before and none of it again.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (code, stdout, stderr) =
        tokio::time::timeout(Duration::from_secs(60), audit(&base, &token, &args))
            .await
            .expect("the resumed tail ends");
    assert_eq!(code, 0, "{stderr}");
    let second = cursors_of(&stdout);
    assert!(!second.is_empty(), "the first run's reads are recorded");
    let last_first = first.last().cloned().unwrap_or_default();
    assert!(
        second.iter().all(|c| *c > last_first),
        "{second:?} after {last_first}"
    );
    let _ = std::fs::remove_file(&state);
}

/// A page shortens `data` over `LIST_DATA_MAX_BYTES`; what the CLI writes
/// from pages (a tail a forwarder ships, an export, a query's answer) holds
/// every event whole, in every format that carries `data`.
#[tokio::test]
async fn a_tail_and_an_export_write_events_whole() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let big = "x".repeat(20_000);
    let posted = post(
        &base,
        &token,
        vec![
            json!({"eventType": "file.upload", "serviceName": "drive", "data": {"big": big}}),
            json!({"eventType": "file.view", "serviceName": "drive", "data": {"small": 1}}),
        ],
    )
    .await;
    assert_eq!(posted.len(), 2);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let runs: [&[&str]; 4] = [
        &["tail", "--self-audit", "exclude", "--format", "ndjson"],
        &["tail", "--self-audit", "exclude", "--format", "ocsf"],
        &["export", "--from", "1h", "--format", "ndjson", "--out", "-"],
        &["query", "serviceName", "=", "drive", "--format", "ndjson"],
    ];
    for args in runs {
        let (code, stdout, stderr) = audit(&base, &token, args).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let lines: Vec<Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .filter(|line: &Value| line.to_string().contains("file."))
            .collect();
        assert_eq!(lines.len(), 2, "{args:?}: {stdout}");
        assert!(
            stdout.contains(&big) && !stdout.contains("mayHaveMoreData"),
            "{args:?}: the large event is whole"
        );
    }
}

/// A resumed run goes on only with what it began: an export file of
/// another format or another tenant's trail, or a tail state another
/// tenant's token wrote, is exit 2 and left as it was (a resume read from
/// its position exported nothing, or mixed records). A resumed CSV tail
/// writes no second header.
#[tokio::test]
async fn a_resumed_run_goes_on_only_with_the_format_and_the_tenant_it_began() {
    let (env, base) = served().await;
    let acme = env.token("acme", "audit:read audit:write");
    let beta = env.token("beta", "audit:read audit:write");
    for token in [&acme, &beta] {
        let event = json!({"eventType": "user.login", "serviceName": "idp"});
        assert_eq!(
            post(&base, token, vec![event.clone(), event]).await.len(),
            2
        );
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let dir = std::env::temp_dir().join(format!("audit-resume-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    for format in ["ndjson", "csv", "ocsf"] {
        let out = file(&format!("acme.{format}"));
        let args = [
            "export",
            "--from",
            "1h",
            "--format",
            format,
            "--out",
            out.as_str(),
        ];
        let (code, _, stderr) = audit(&base, &acme, &args).await;
        assert_eq!(code, 0, "{stderr}");
        // A partial last record, as a run killed mid-write leaves: a run
        // that is refused leaves it too.
        let mut written = std::fs::read(&out).expect("export");
        written.extend_from_slice(b"{\"cursor\":\"01");
        std::fs::write(&out, &written).expect("partial");
        // Another tenant's token, the same arguments.
        let (code, _, stderr) = audit(&base, &beta, &args).await;
        assert_eq!(code, 2, "{format} with beta's token: {stderr}");
        assert!(stderr.contains("tenant acme"), "{stderr}");
        // The same file as another format.
        for other in ["ndjson", "csv", "ocsf"]
            .into_iter()
            .filter(|f| *f != format)
        {
            let args = [
                "export",
                "--from",
                "1h",
                "--format",
                other,
                "--out",
                out.as_str(),
            ];
            let (code, _, stderr) = audit(&base, &acme, &args).await;
            assert_eq!(code, 2, "a {format} file resumed as {other}: {stderr}");
        }
        assert_eq!(std::fs::read(&out).expect("export"), written, "{format}");
    }
    let state = file("state.json");
    let tail = ["tail", "--state", state.as_str(), "--format", "csv"];
    let (code, first, stderr) = audit(&base, &acme, &tail).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(first.starts_with("cursor,"), "{first}");
    let (code, stdout, stderr) = audit(&base, &beta, &tail).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("tenant acme"), "{stderr}");
    // A tenant whose trail is still empty is refused too, and the state is
    // left as it was: its tenant came from the trail's first event, so such
    // a token went on with acme's state and rewrote it as its own.
    let saved = std::fs::read(&state).expect("state");
    let fresh = env.token("fresh", "audit:read");
    for args in [
        &tail[..],
        &[
            "export",
            "--from",
            "1h",
            "--out",
            file("acme.ndjson").as_str(),
        ][..],
    ] {
        let (code, stdout, stderr) = audit(&base, &fresh, args).await;
        assert_eq!((code, stdout.as_str()), (2, ""), "{args:?}: {stderr}");
        assert!(
            stderr.contains("tenant acme") && stderr.contains("fresh"),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read(&state).expect("state"), saved);
    // And the other way: a state saved from a trail with no event yet names
    // its tenant, so another tenant's token is refused with it. One that
    // names none (as an older `audit` saved it) is refused whoever reads.
    let empty_state = file("empty-state.json");
    let empty_tail = [
        "tail",
        "--state",
        empty_state.as_str(),
        "--self-audit",
        "exclude",
    ];
    let (code, stdout, stderr) = audit(&base, &env.token("empty", "audit:read"), &empty_tail).await;
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&empty_state).expect("state")).expect("json");
    assert_eq!(saved["accountId"], "empty", "{saved}");
    let (code, stdout, stderr) = audit(&base, &beta, &empty_tail).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("tenant empty"), "{stderr}");
    let mut unnamed = saved.clone();
    unnamed
        .as_object_mut()
        .expect("an object")
        .remove("accountId");
    std::fs::write(&empty_state, unnamed.to_string()).expect("state");
    let (code, stdout, stderr) = audit(&base, &beta, &empty_tail).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("names no tenant"), "{stderr}");
    let event = json!({"eventType": "user.logout", "serviceName": "idp"});
    assert_eq!(post(&base, &acme, vec![event]).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (code, second, stderr) = audit(&base, &acme, &tail).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(second.contains("user.logout"), "{second}");
    assert!(!second.contains("cursor,"), "one header in all: {second}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader that closes the pipe (`audit query ... | head -1`) ends the
/// command quietly with 0, whatever it was printing: no "Broken pipe"
/// error, no panic.
#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    post(
        &base,
        &token,
        vec![json!({"eventType": "user.login", "serviceName": "idp", "userId": "u-1"})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Every output format of both streaming commands (CSV's writer wrapped
    // the error, and a closed pipe exited 1), and the rest.
    let mut commands: Vec<Vec<&str>> = Vec::new();
    for format in ["ndjson", "csv", "json", "table", "ocsf"] {
        commands.push(vec!["query", "userId", "=", "u-1", "--format", format]);
        commands.push(vec!["tail", "--format", format]);
    }
    commands.push(vec!["get", "--help"]);
    commands.push(vec!["completions", "bash"]);
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = tokio::process::Command::new(AUDIT)
            .args(&args)
            .env("AUDIT_URL", &base)
            .env("AUDIT_TOKEN", &token)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("audit runs")
            .wait_with_output()
            .await
            .expect("audit ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// A closed standard error (`audit … 2>&1 | head -c 10`) never panics the
/// client: its messages are dropped and the exit code still says what
/// happened (5: the API could not be reached, after retries it reported).
#[tokio::test]
async fn a_closed_stderr_does_not_panic() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = tokio::process::Command::new(AUDIT)
        .args(["get", "01KB0000000000000000000001"])
        .env("AUDIT_URL", &nowhere)
        .env("AUDIT_TOKEN", "t")
        .stdout(Stdio::piped())
        .stderr(writer)
        .spawn()
        .expect("audit runs")
        .wait_with_output()
        .await
        .expect("audit ends");
    assert_eq!(output.status.code(), Some(5));
}

/// `audit verify` end to end: online it passes and saves a bundle; offline
/// the bundle passes as of now, is `stale` judged hours later unless the
/// age check is off, and a second, altered copy of an event fails it.
#[tokio::test]
async fn verify_checks_a_saved_bundle_offline_and_names_what_is_wrong() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    post(
        &base,
        &token,
        (0..5)
            .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("u-{i}")}))
            .collect(),
    )
    .await;
    seal_settled(&env).await;
    let key: Value = get_json(&base, &token, "/audit/verifier-key").await;
    let key = key["verifierKey"].as_str().unwrap().to_string();
    let bundle = std::env::temp_dir().join(format!("bundle-{}", ulid::Ulid::new()));
    let bundle_arg = bundle.to_string_lossy().to_string();
    let (code, stdout, stderr) = audit(
        &base,
        &token,
        &[
            "verify",
            "--online",
            "--verifier-key",
            &key,
            "--save",
            &bundle_arg,
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let offline = |extra: &'static [&'static str]| {
        let mut args = vec![
            "verify",
            "--bundle",
            bundle_arg.as_str(),
            "--verifier-key",
            key.as_str(),
            "--json",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let base = base.clone();
        let token = token.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            audit(&base, &token, &args).await
        }
    };
    let (code, stdout, _) = run(offline(&[])).await;
    assert_eq!(code, 0, "{stdout}");
    // The bundle says when it was saved, and what the walk saw when: it is
    // judged then, and no later (a later `--as-of` turned a deletion into
    // an expiry).
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("saved.json")).unwrap()).unwrap();
    assert!(
        saved["savedAt"].is_string() && saved["pageClock"].is_array(),
        "{saved}"
    );
    let hours_later = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    let mut late = offline(&[]);
    late.extend(["--as-of".to_string(), hours_later.clone()]);
    let (code, stdout, stderr) = run(late.clone()).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("after the bundle was saved"), "{stderr}");
    // A bundle saved before `saved.json` existed is judged at `--as-of`.
    std::fs::remove_file(bundle.join("saved.json")).unwrap();
    let (code, stdout, _) = run(late.clone()).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("\"stale\""), "{stdout}");
    late.extend(["--max-checkpoint-age".to_string(), "0".to_string()]);
    let (code, stdout, _) = run(late).await;
    assert_eq!(code, 0, "{stdout}");
    // A save time before the bundle's newest event is one it did not
    // exist at: a usage error, not a verdict.
    let mut early = offline(&[]);
    let day_before = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    early.extend(["--as-of".to_string(), day_before]);
    let (code, stdout, stderr) = run(early).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("before the newest event"), "{stderr}");
    // A key the event type does not know, or `null` where the lookup
    // leaves a field out, is altered (serde dropped both before hashing,
    // and such a bundle verified); the file as saved verifies.
    let events_path = bundle.join("events.ndjson");
    let events = std::fs::read_to_string(&events_path).unwrap();
    let first = events.lines().next().unwrap();
    let rest: String = events.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let mut added: Value = serde_json::from_str(first).unwrap();
    for (key, value) in [
        ("approvedBy", json!("ceo")),
        ("Message", json!("forged")),
        ("userEmail", Value::Null),
    ] {
        let mut tampered = added.clone();
        if tampered.get(key).is_some() {
            continue;
        }
        tampered[key] = value;
        std::fs::write(&events_path, format!("{tampered}\n{rest}")).unwrap();
        let (code, stdout, _) = run(offline(&[])).await;
        assert_eq!(code, 1, "{key}: {stdout}");
        assert!(stdout.contains("\"altered\""), "{key}: {stdout}");
    }
    // A key given twice: `Value` kept the last copy (the genuine one) and
    // verified, while a reader taking the first saw the forgery.
    let twice = first.replacen('{', "{\"userId\":\"mallory\",", 1);
    let twice = if added.get("userId").is_some() {
        twice
    } else {
        twice.replacen('{', "{\"userId\":\"alice\",", 1)
    };
    std::fs::write(&events_path, format!("{twice}\n{rest}")).unwrap();
    let (code, stdout, stderr) = run(offline(&[])).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    added = serde_json::from_str(first).unwrap();
    std::fs::write(&events_path, format!("{added}\n{rest}")).unwrap();
    let (code, stdout, _) = run(offline(&[])).await;
    assert_eq!(code, 0, "the event as saved: {stdout}");
    // A second copy of the first event, altered, ahead of the original.
    let mut altered: Value = serde_json::from_str(first).unwrap();
    altered["userId"] = json!("TAMPERED");
    std::fs::write(&events_path, format!("{altered}\n{events}")).unwrap();
    let (code, stdout, _) = run(offline(&[])).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("duplicate_event"), "{stdout}");
    // A line that no longer reads as an event is an altered bundle: a
    // failed verification (1), never a usage error (2).
    let mut no_cursor: Value = serde_json::from_str(first).unwrap();
    no_cursor.as_object_mut().unwrap().remove("cursor");
    let mut wrong_type: Value = serde_json::from_str(first).unwrap();
    wrong_type["sandbox"] = json!("yes");
    for line in [
        "{garbage".to_string(),
        "[1,2]".to_string(),
        no_cursor.to_string(),
        wrong_type.to_string(),
    ] {
        std::fs::write(&events_path, format!("{line}\n{rest}")).unwrap();
        let (code, stdout, stderr) = run(offline(&[])).await;
        assert_eq!(code, 1, "{line}: {stdout}{stderr}");
        assert!(stderr.contains("line 1: altered"), "{line}: {stderr}");
    }
    std::fs::write(&events_path, &events).unwrap();
    // A trusted checkpoint saved as text with the newline `jq -r` and
    // `echo` add is the same checkpoint.
    let checkpoint: Value = get_json(&base, &token, "/audit/checkpoint").await;
    let note_path = bundle.with_extension("note");
    std::fs::write(
        &note_path,
        format!("{}\n", checkpoint["note"].as_str().unwrap()),
    )
    .unwrap();
    let mut trusting = offline(&[]);
    trusting.extend([
        "--trusted".to_string(),
        note_path.to_string_lossy().to_string(),
    ]);
    let (code, stdout, stderr) = run(trusting).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let _ = std::fs::remove_file(&note_path);
    let _ = std::fs::remove_dir_all(&bundle);
}

/// `audit verify --online` follows the tail's `next` links to its caught-up
/// end: a page cut short at 3 MB is not the last (it was taken as the last,
/// and 99 of 150 untouched events were reported missing).
#[tokio::test]
async fn verify_online_reads_every_page_of_a_trail_of_large_events() {
    let (env, base) = served().await;
    let token = env.token("wide", "audit:read audit:write");
    // About 58 KB of JSON each: a page of 1000 stops near 51 events.
    let large = |i: usize| {
        let indexed: serde_json::Map<String, Value> = (0..50)
            .map(|j| (format!("k{j:02}"), json!("v".repeat(1000))))
            .collect();
        json!({"eventType": "wide", "serviceName": "s", "message": "m".repeat(8000),
               "indexedData": indexed, "data": {"i": i}})
    };
    let mut cursors = Vec::new();
    for batch in 0..3 {
        cursors.extend(
            post(
                &base,
                &token,
                (batch * 50..batch * 50 + 50).map(large).collect(),
            )
            .await,
        );
    }
    assert_eq!(cursors.len(), 150);
    seal_settled(&env).await;
    let first_page: Value = get_json(&base, &token, "/audit?limit=1000").await;
    let first_count = first_page["events"].as_array().unwrap().len();
    assert!(
        first_count < 150,
        "the first page is cut short: {first_count}"
    );
    let key: Value = get_json(&base, &token, "/audit/verifier-key").await;
    let (code, stdout, stderr) = audit(
        &base,
        &token,
        &[
            "verify",
            "--online",
            "--json",
            "--verifier-key",
            key["verifierKey"].as_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // One line per event, then the summary. Every event stored is
    // verified; the reads' own records written after the sealing run may
    // be unsealed, by how fast this ran.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    let verified: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["status"] == "verified")
        .filter_map(|l| l["cursor"].as_str())
        .collect();
    for cursor in &cursors {
        assert!(verified.contains(cursor.as_str()), "{cursor}: {stdout}");
    }
    assert!(
        lines.iter().all(|l| l["status"].is_null()
            || l["status"] == "verified"
            || l["status"] == "unsealed"),
        "{stdout}"
    );
    assert_eq!(lines.last().unwrap()["ok"], true, "{stdout}");
}

/// A 200 that is not the API's answer (`--url` naming a site that answers
/// every path with a page) is said so, with exit 5: never printed as an
/// empty result with 0, nor reported as tampering with 1.
#[tokio::test]
async fn an_answer_that_is_not_the_apis_ends_with_5_and_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lines = std::env::temp_dir().join(format!("one-{}.ndjson", ulid::Ulid::new()));
    std::fs::write(&lines, "{\"eventType\":\"a\",\"serviceName\":\"s\"}\n").unwrap();
    let lines_arg = lines.to_string_lossy().to_string();
    for body in [
        "<html>oops</html>",
        "{}",
        "null",
        "[1]",
        r#"{"results":[]}"#,
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0u8; 65536];
                    let _ = socket.read(&mut request).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        for args in [
            &["get", "01KB0000000000000000000001"][..],
            &["query", "userId", "=", "x", "--format", "ndjson"],
            &["metadata"],
            &["tail"],
            &[
                "verify",
                "--online",
                "--verifier-key",
                "audit-trail.local+00000000+AQ",
            ],
            // A 2xx without one result per event sent: nothing is taken
            // as stored.
            &["ingest", lines_arg.as_str()],
        ] {
            let (code, stdout, stderr) = audit(&base, "x", args).await;
            assert_eq!(code, 5, "{body} {args:?}: {stdout}{stderr}");
            assert!(
                stderr.contains("not the Audit Trail API"),
                "{body} {args:?}: {stderr}"
            );
            assert_eq!(stdout, "", "{body} {args:?}");
        }
        server.abort();
    }
}

fn csv_records(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| {
            r.expect("a CSV record")
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// A CSV export fills every column metadata names, bracketed keys
/// included, and one resumed from any cut (mid-line, inside a quoted field
/// that holds a newline, after the header) ends as the whole export does.
#[tokio::test]
async fn a_csv_export_fills_every_column_and_resumes_from_any_cut() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let from = audit_core::event::format_time(chrono::Utc::now() - chrono::Duration::seconds(5));
    post(
        &base,
        &token,
        (0..30)
            .map(|i| json!({
                "eventType": "deploy", "serviceName": "ci", "userId": format!("u-{i}"),
                "message": format!("line one of {i}\nline \"two\", with a comma"),
                "indexedData": {"team name": format!("team-{i}")},
                "data": {"k8s.pod": format!("pod-{i}"), "display name": "Zoë", "nested": {"x.y": i, "plain": true}, "é": "accent"},
            }))
            // `data` no property column holds: a list, a string, deeper
            // than metadata records; the `data` column holds it whole.
            .chain([
                json!({"eventType": "odd", "serviceName": "ci", "data": ["evidence-A", 1]}),
                json!({"eventType": "odd", "serviceName": "ci", "data": "evidence-C"}),
                json!({"eventType": "odd", "serviceName": "ci", "data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": "evidence-D"}}}}}}}}),
            ])
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let to = audit_core::event::format_time(chrono::Utc::now() - chrono::Duration::seconds(1));
    let dir = std::env::temp_dir().join(format!("export-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let export = |name: &str| {
        let out = dir.join(name).to_string_lossy().to_string();
        let (base, token, from, to) = (base.clone(), token.clone(), from.clone(), to.clone());
        async move {
            let args = [
                "export", "--from", &from, "--to", &to, "--format", "csv", "--out", &out,
            ];
            let (code, _, stderr) = audit(&base, &token, &args).await;
            assert_eq!(code, 0, "{stderr}");
            std::fs::read_to_string(&out).unwrap()
        }
    };
    let whole = export("whole.csv").await;
    let records = csv_records(&whole);
    assert_eq!(records.len(), 34, "a header and 33 rows");
    let header = &records[0];
    let column = |name: &str| {
        header
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let deploys: Vec<&Vec<String>> = records[1..]
        .iter()
        .filter(|r| r[column("eventType")] == "deploy")
        .collect();
    assert_eq!(deploys.len(), 30);
    let whole_data: Vec<Value> = records[1..]
        .iter()
        .filter(|r| r[column("eventType")] == "odd")
        .map(|r| serde_json::from_str(&r[column("data")]).expect("the data column is JSON"))
        .collect();
    assert_eq!(
        whole_data,
        [
            json!(["evidence-A", 1]),
            json!("evidence-C"),
            json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": "evidence-D"}}}}}}})
        ]
    );
    for row in &deploys {
        let n: usize = row[column("userId")]
            .trim_start_matches("u-")
            .parse()
            .unwrap();
        assert_eq!(row[column("data[\"k8s.pod\"]")], format!("pod-{n}"));
        assert_eq!(row[column("data[\"display name\"]")], "Zoë");
        assert_eq!(row[column("data.nested[\"x.y\"]")], n.to_string());
        assert_eq!(row[column("data.nested.plain")], "true");
        assert_eq!(
            row[column("indexedData[\"team name\"]")],
            format!("team-{n}")
        );
        assert!(row[column("message")].contains('\n'));
    }
    let accent = header
        .iter()
        .position(|c| c.contains('é'))
        .expect("a column for é");
    assert!(deploys.iter().all(|r| r[accent] == "accent"));
    // Cuts: after the header, mid-row, and inside the first multi-line message.
    let header_end = whole.find('\n').unwrap() + 1;
    let inside_message = whole.find("line one of").unwrap() + 5;
    let mid_row = whole.len() / 2;
    for (n, cut) in [header_end, inside_message, mid_row]
        .into_iter()
        .enumerate()
    {
        let name = format!("cut-{n}.csv");
        std::fs::write(dir.join(&name), &whole.as_bytes()[..cut]).unwrap();
        let resumed = export(&name).await;
        assert_eq!(csv_records(&resumed), records, "cut at byte {cut}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--out -`, `/dev/stdout` or a pipe is written straight through, never
/// read back for a resume point (reading `/dev/stdout` piped waited on the
/// pipe for ever).
#[tokio::test]
async fn export_writes_to_stdout_or_a_pipe_straight_through() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let cursors = post(
        &base,
        &token,
        (0..3)
            .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("u-{i}")}))
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for out in ["-", "/dev/stdout"] {
        let args = ["export", "--from", "1h", "--out", out];
        let run = audit(&base, &token, &args);
        let (code, stdout, stderr) = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("--out {out} hung"));
        assert_eq!(code, 0, "{out}: {stderr}");
        let written: Vec<String> = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["serviceName"] == "idp")
            .filter_map(|event| event["cursor"].as_str().map(str::to_string))
            .collect();
        assert_eq!(written, cursors, "{out}");
        assert!(!Path::new("-").exists(), "no file named `-`");
    }
}

/// A duration too long for the calendar is a usage error (exit 2), never
/// a panic, in every option that takes one.
#[tokio::test]
async fn durations_too_long_for_the_calendar_are_usage_errors() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read");
    for duration in [
        "99999999d",
        "2562047788015d",
        "106751991167301d",
        "9223372036854775807s",
        "99999999999999999999d",
        "1000000w",
    ] {
        for args in [
            vec!["query", "--from", duration, "userId", "=", "x"],
            vec!["query", "--to", duration, "userId", "=", "x"],
            vec!["export", "--from", duration, "--out", "/dev/null"],
        ] {
            let (code, _, stderr) = audit(&base, &token, &args).await;
            assert_eq!(code, 2, "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        }
    }
    for age in ["9223372036854775807d", "99999999999999999999h"] {
        let (code, _, stderr) = audit(
            &base,
            &token,
            &["verify", "--online", "--max-checkpoint-age", age],
        )
        .await;
        assert!(!stderr.contains("panicked"), "{age}: {stderr}");
        assert_ne!(code, 101, "{age}: {stderr}");
    }
}

/// A state file the tail can't have written is refused (exit 2), never
/// followed: a `lastCursor` that is no cursor or is from the future would
/// skip events for good, and a `next` that is no link of the tail would be
/// fetched.
#[tokio::test]
async fn a_state_file_no_tail_wrote_is_refused() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    post(
        &base,
        &token,
        vec![json!({"eventType": "user.login", "serviceName": "idp"})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let dir = std::env::temp_dir().join(format!("audit-state-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.json");
    let state_arg = state.to_string_lossy().into_owned();
    let good_next = format!("{base}/audit?limit=5&from=00000000000000000000000000");
    for (written, refused) in [
        (json!({"next": good_next, "lastCursor": "garbage"}), true),
        (
            json!({"next": good_next, "lastCursor": "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"}),
            true,
        ),
        (
            json!({"next": good_next, "lastCursor": "01arz3ndektsv4rrffq69g5fav"}),
            true,
        ),
        (
            json!({"next": "javascript:alert(1)", "lastCursor": null}),
            true,
        ),
        (
            json!({"next": format!("{base}/audit/settings"), "lastCursor": null}),
            true,
        ),
        // Valid, but naming no tenant: an older `audit` saved it from an
        // empty trail, and it could be another tenant's position.
        (
            json!({"next": good_next, "lastCursor": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
            true,
        ),
        (
            json!({"next": good_next, "lastCursor": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "accountId": "acme"}),
            false,
        ),
    ] {
        std::fs::write(&state, written.to_string()).expect("state");
        let (code, stdout, stderr) = audit(
            &base,
            &token,
            &["tail", "--state", &state_arg, "--format", "ndjson"],
        )
        .await;
        if refused {
            assert_eq!(code, 2, "{written}: {stderr}");
            assert!(stdout.is_empty(), "{written}: {stdout}");
        } else {
            assert_eq!(code, 0, "{written}: {stderr}");
            assert!(stdout.contains("user.login"), "{written}: {stdout}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rerun stores nothing twice when lines were removed, added or fixed in
/// between: the derived `messageId` hangs on a line's text (and, for
/// identical lines, how many came before), not on where it is. (Deleting a
/// refused line stored every line below it again.) Identical lines are
/// each stored once.
#[tokio::test]
async fn an_ingest_rerun_after_lines_moved_stores_nothing_twice() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let dir = std::env::temp_dir().join(format!("audit-ingest-rerun-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("events.ndjson");
    let path = file.display().to_string();
    let line = |name: &str| format!(r#"{{"eventType":"cli.{name}","serviceName":"cli"}}"#);
    let stored = |stderr: &str| {
        stderr
            .split("stored ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let runs = [
        // a, a refused line, b, c, and c again
        vec![line("a"), "[1]".into(), line("b"), line("c"), line("c")],
        // the refused line deleted
        vec![line("a"), line("b"), line("c"), line("c")],
        // a blank line and a new event at the top
        vec![
            String::new(),
            line("new"),
            line("a"),
            line("b"),
            line("c"),
            line("c"),
        ],
    ];
    let mut expected_stored = [4u64, 0, 1].into_iter();
    for lines in runs {
        std::fs::write(&file, lines.join("\n") + "\n").expect("file");
        let (_, _, stderr) = audit(&base, &token, &["ingest", &path]).await;
        assert_eq!(
            stored(&stderr),
            expected_stored.next(),
            "{lines:?}: {stderr}"
        );
    }
    let stored_in_all = env.events_by_tenant().await.get("acme").map_or(0, Vec::len);
    assert_eq!(stored_in_all, 5, "a, b, c twice, new");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One run at a time goes on with a state or an export file: a second tail
/// on the same state, or a second export to the same file, is refused with
/// 2 and changes nothing (two tails sharing a state wrote every event
/// twice; two exports interleaved their records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_or_an_export_file_is_used_by_one_run_at_a_time() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    post(
        &base,
        &token,
        vec![json!({"eventType": "user.login", "serviceName": "idp"})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let dir = std::env::temp_dir().join(format!("one-run-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let state_arg = state.to_string_lossy().to_string();
    let mut follower = tokio::process::Command::new(AUDIT)
        .args([
            "tail", "--follow", "--format", "ndjson", "--state", &state_arg,
        ])
        .env("AUDIT_URL", &base)
        .env("AUDIT_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("a follower");
    // The follower has read a page once its state exists.
    for _ in 0..100 {
        if state.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(state.exists(), "the follower saved its state");
    let (code, stdout, stderr) = audit(
        &base,
        &token,
        &["tail", "--format", "ndjson", "--state", &state_arg],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("one at a time"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    follower.kill().await.expect("killed");
    let _ = follower.wait().await;
    // Once it is gone, the state goes on.
    let (code, _, stderr) = audit(
        &base,
        &token,
        &["tail", "--format", "ndjson", "--state", &state_arg],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");

    let out = dir.join("export.ndjson");
    let out_arg = out.to_string_lossy().to_string();
    let export = ["export", "--from", "1h", "--out", out_arg.as_str()];
    let (code, _, stderr) = audit(&base, &token, &export).await;
    assert_eq!(code, 0, "{stderr}");
    let exported = std::fs::read_to_string(&out).unwrap();
    // Another run holds the file (this test, as a second export would).
    let held = std::fs::File::open(&out).unwrap();
    held.try_lock().expect("the first export let go of it");
    let (code, _, stderr) = audit(&base, &token, &export).await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), exported);
    drop(held);
    let (code, _, stderr) = audit(&base, &token, &export).await;
    assert_eq!(code, 0, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A batch that repeats a `messageId` gets the first event's answer for
/// the repeat, naming the first: a refusal of that kind (here the table
/// refuses the first event's item) is the API's own order, and `ingest`
/// reports both lines refused (exit 1), not an answer that is not the
/// API's (5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_takes_the_answer_a_repeated_message_id_gets() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        ..Default::default()
    })
    .await;
    env.proxy
        .as_ref()
        .expect("a proxy")
        .set(audit_infra::proxy::Faults {
            refuse_writes_containing: Some("unstorable-marker".into()),
            ..Default::default()
        });
    let base = env.serve().await;
    let token = env.token("acme", "audit:read audit:write");
    let line = json!({"eventType": "a", "serviceName": "idp", "messageId": "m-dup", "message": "unstorable-marker"});
    let file = std::env::temp_dir().join(format!("dup-{}.ndjson", ulid::Ulid::new()));
    std::fs::write(&file, format!("{line}\n{line}\n")).unwrap();
    let file_arg = file.to_string_lossy().to_string();
    let (code, _, stderr) = audit(&base, &token, &["ingest", file_arg.as_str()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("line 1: refused"), "{stderr}");
    assert!(stderr.contains("line 2: refused"), "{stderr}");
    let _ = std::fs::remove_file(&file);
}

/// `tail --follow` keeps going through an outage, however long (the
/// README's "forever"): it gave up with 5 after about 15 s without the
/// server. Here the API is unreachable for 20 s, then comes back, and an
/// event written then is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_outlasts_an_outage() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    // A port that drops every connection (the outage), then forwards them
    // to the API. Held the whole time, so no other test takes it meanwhile.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let outage_url = format!("http://{}", listener.local_addr().unwrap());
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let upstream = base.trim_start_matches("http://").to_string();
        let up = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }
    let mut follower = tokio::process::Command::new(AUDIT)
        .args([
            "tail",
            "--follow",
            "--format",
            "ndjson",
            "--self-audit",
            "exclude",
        ])
        .env("AUDIT_URL", &outage_url)
        .env("AUDIT_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("a follower");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        follower.try_wait().expect("the follower").is_none(),
        "the follower gave up during the outage"
    );
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let cursors = post(
        &base,
        &token,
        vec![json!({"eventType": "after.outage", "serviceName": "idp"})],
    )
    .await;
    let mut stdout = follower.stdout.take().expect("stdout");
    let mut printed = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(90), async {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        loop {
            let read = stdout.read(&mut chunk).await.unwrap_or(0);
            if read == 0 {
                return false;
            }
            printed.extend_from_slice(&chunk[..read]);
            if String::from_utf8_lossy(&printed).contains(&cursors[0]) {
                return true;
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "{}", String::from_utf8_lossy(&printed));
    follower.kill().await.expect("killed");
}

/// Behind a custom domain's API mapping (`API_BASE_PATH=/v1`), API Gateway
/// gives the functions the path without it: the links pages give put it
/// back, so a poller (and `audit` given that URL) follows `next` to the
/// API, where it got a 404 at the domain's root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_lead_back_under_the_api_mappings_path() {
    let (env, root) = served_with(|config| {
        settling_fast(config);
        config.api_base_path = "/v1".to_string();
    })
    .await;
    let base = format!("{root}/v1");
    let token = env.token("acme", "audit:read audit:write");
    let cursors = post(
        &base,
        &token,
        (0..3)
            .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("u-{i}")}))
            .collect(),
    )
    .await;
    assert_eq!(cursors.len(), 3);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let page = get_json(&base, &token, "/audit?limit=1&selfAudit=exclude").await;
    let next = page["_links"]["next"]["href"]
        .as_str()
        .expect("a next link");
    assert!(next.starts_with(&format!("{base}/audit?")), "{next}");
    let followed = reqwest::Client::new()
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(followed.status(), 200);
    // Outside the mapping's path is not the API.
    let outside = reqwest::Client::new()
        .get(format!("{root}/audit"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(outside.status(), 404);
    // Only paths under the mapping: not a longer segment, not the mapping
    // alone.
    for path in ["/v1x/audit", "/v1", "/v1/"] {
        let status = reqwest::Client::new()
            .get(format!("{root}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer")
            .status();
        assert_eq!(status, 404, "{path}");
    }
    let (code, stdout, stderr) = audit(
        &base,
        &token,
        &[
            "tail",
            "--limit",
            "1",
            "--format",
            "ndjson",
            "--self-audit",
            "exclude",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    for cursor in &cursors {
        assert!(stdout.contains(cursor.as_str()), "{cursor}: {stdout}");
    }
}

/// `ingest` cuts its batches by what they take inside Lambda's payload,
/// where the body is escaped again: 4 MiB of lines full of quotes took 8
/// there, past Lambda's 6 MB, and every line of the batch was refused.
#[tokio::test]
async fn ingest_cuts_batches_by_what_lambda_receives() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let file = std::env::temp_dir().join(format!("quotes-{}.ndjson", ulid::Ulid::new()));
    let lines: String = (0..400)
        .map(|i| {
            format!(
                "{}\n",
                json!({"eventType": "quoted", "serviceName": "s", "message": "\"".repeat(6500), "data": {"i": i}})
            )
        })
        .collect();
    assert!(lines.len() > 4 << 20, "more than one old batch");
    std::fs::write(&file, lines).unwrap();
    let file_arg = file.to_string_lossy().to_string();
    let (code, _, stderr) = audit(&base, &token, &["ingest", file_arg.as_str()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("stored 400,"), "{stderr}");
    let _ = std::fs::remove_file(&file);
}

/// A line under 4 MiB that passes Lambda's 6 MB once escaped again (all
/// quotes) is refused alone, as a line too large: sent, it was a 413 for
/// the whole request, and the ingest (and every rerun) stopped there.
#[tokio::test]
async fn ingest_refuses_alone_a_line_too_large_once_escaped() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let good = |i: usize| json!({"eventType": "ok", "serviceName": "s", "data": {"i": i}});
    let quotes =
        json!({"eventType": "quoted", "serviceName": "s", "message": "\"".repeat(1_600_000)});
    let file = std::env::temp_dir().join(format!("big-{}.ndjson", ulid::Ulid::new()));
    std::fs::write(&file, format!("{}\n{quotes}\n{}\n", good(1), good(2))).unwrap();
    let file_arg = file.to_string_lossy().to_string();
    let (code, _, stderr) = audit(&base, &token, &["ingest", file_arg.as_str()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("line 2: refused"), "{stderr}");
    assert!(stderr.contains("stored 2,"), "{stderr}");
    let _ = std::fs::remove_file(&file);
}
