//! `audit` against a server that is not the API, or something between that
//! tampers with its answers: the CLI never sends the token elsewhere,
//! never writes, skips or verifies what the trail could not have been, and
//! never holds an answer without bound. Each case is a class a hostile
//! pass found (a tampering proxy in front of a served API).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_infra::testkit::TestEnv;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

mod common;

/// What the proxy does to an answer: the request's path and query, the
/// answer's headers and its JSON body.
type Tamper = Arc<dyn Fn(&str, &mut HeaderMap, &mut Value) + Send + Sync>;

/// A proxy to `upstream` that passes every request on (the token swapped
/// for `token` when given) and `tamper`s with each JSON answer.
async fn tampering(upstream: String, token: Option<String>, tamper: Tamper) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: Request| {
        let (client, upstream, token, tamper) = (
            client.clone(),
            upstream.clone(),
            token.clone(),
            tamper.clone(),
        );
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let authorization = match token {
                Some(token) => format!("Bearer {token}"),
                None => request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            };
            let method = request.method().clone();
            let body = axum::body::to_bytes(request.into_body(), 64 << 20)
                .await
                .unwrap_or_default();
            let answer = client
                .request(method, format!("{upstream}{path}"))
                .header("authorization", authorization)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("upstream answers");
            let status = answer.status();
            let mut headers = HeaderMap::new();
            for name in ["retry-after", "date", "content-type"] {
                if let Some(value) = answer.headers().get(name) {
                    headers.insert(name, value.clone());
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            let body = match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut value) => {
                    tamper(&path, &mut headers, &mut value);
                    value.to_string().into_bytes()
                }
                Err(_) => bytes.to_vec(),
            };
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap();
            *response.headers_mut() = headers;
            response
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}")
}

/// `count` events of `tenant`, settled and sealed; their cursors.
async fn stored(env: &TestEnv, base: &str, token: &str, count: usize) -> Vec<String> {
    let events: Vec<Value> = (0..count)
        .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("u-{i}")}))
        .collect();
    let cursors = post(base, token, events).await;
    assert_eq!(cursors.len(), count);
    seal_settled(env).await;
    cursors
}

fn is_tail_page(path: &str) -> bool {
    path.starts_with("/audit?") || path == "/audit"
}

/// The `next` link of every list answer, replaced.
fn every_next(link: &'static str) -> Tamper {
    Arc::new(move |_, headers, body| {
        if body["_links"]["next"]["href"].is_string() {
            body["_links"]["next"]["href"] = json!(link);
            headers.remove("retry-after");
        }
        if body["next"].is_string() {
            body["next"] = json!(link);
        }
    })
}

/// A link glued to `--url` as it came named another host: the token went
/// there. Every command that follows links keeps to `--url`'s origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_never_takes_the_token_to_another_host() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    stored(&env, &base, &token, 3).await;
    // Whatever reaches 127.0.0.2 is recorded.
    let catcher = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let caught_port = catcher.local_addr().unwrap().port();
    let caught = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let caught = caught.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let caught = caught.clone();
            async move {
                caught.lock().unwrap().push(format!("{headers:?}"));
                axum::Json(json!({"events": [], "_links": {"next": {"href": "/audit"}}}))
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(catcher, app).await;
        });
    }
    let link: &'static str =
        Box::leak(format!("@127.0.0.2:{caught_port}/audit?limit=5").into_boxed_str());
    let proxy = tampering(base.clone(), None, every_next(link)).await;
    let export = std::env::temp_dir().join(format!("hostile-{}.ndjson", ulid::Ulid::new()));
    let export_arg = export.to_string_lossy().to_string();
    // (A `:port/…` link glued to a `--url` without a port changed the port;
    // every `--url` here has one, so that case is a unit test of `url`.)
    for proxy in [&proxy] {
        for args in [
            vec!["tail", "--limit", "1", "--format", "ndjson"],
            vec![
                "query",
                "userId exists",
                "--all",
                "--limit",
                "1",
                "--format",
                "ndjson",
            ],
            vec!["export", "--from", "1h", "--out", export_arg.as_str()],
            vec!["verify", "--online"],
        ] {
            let (code, _, stderr) = audit(proxy, &token, &args).await;
            assert_ne!(code, 0, "{args:?}: {stderr}");
            let _ = std::fs::remove_file(&export);
        }
    }
    assert!(
        caught.lock().unwrap().is_empty(),
        "{:?}",
        caught.lock().unwrap()
    );
}

/// A page out of order, with a cursor not of the API's form, or holding
/// another tenant's event, stops the tail with 5 before anything past it
/// is written or saved: a reversed page was written as its first event
/// alone, and the state moved past the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_the_trail_could_not_be_stops_the_tail_before_its_state_moves() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let cursors = stored(&env, &base, &token, 6).await;
    let tampers: Vec<(&str, Tamper)> = vec![
        (
            "reversed",
            Arc::new(|path: &str, _: &mut HeaderMap, body: &mut Value| {
                if is_tail_page(path) {
                    if let Some(events) = body["events"].as_array_mut() {
                        events.reverse();
                    }
                }
            }),
        ),
        (
            "lowercase",
            Arc::new(|path: &str, _: &mut HeaderMap, body: &mut Value| {
                if is_tail_page(path) {
                    if let Some(first) = body["events"].get_mut(0) {
                        let lower = first["cursor"].as_str().unwrap_or_default().to_lowercase();
                        first["cursor"] = json!(lower);
                    }
                }
            }),
        ),
        (
            "another tenant",
            Arc::new(|path: &str, _: &mut HeaderMap, body: &mut Value| {
                if is_tail_page(path) {
                    if let Some(last) = body["events"].as_array_mut().and_then(|e| e.last_mut()) {
                        last["accountId"] = json!("globex");
                    }
                }
            }),
        ),
    ];
    for (name, tamper) in tampers {
        let proxy = tampering(base.clone(), None, tamper).await;
        let state = std::env::temp_dir().join(format!("hostile-{}.json", ulid::Ulid::new()));
        let state_arg = state.to_string_lossy().to_string();
        let args = [
            "tail",
            "--format",
            "ndjson",
            "--self-audit",
            "exclude",
            "--state",
            state_arg.as_str(),
        ];
        let (code, stdout, stderr) = audit(&proxy, &token, &args).await;
        assert_eq!(code, 5, "{name}: {stderr}");
        assert!(
            stderr.contains("not the Audit Trail API"),
            "{name}: {stderr}"
        );
        // The page is checked whole before any of it is written.
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert!(
            !state.exists(),
            "{name}: no state saved past a page not written"
        );
        // The honest API then writes every event, once.
        let (code, stdout, stderr) = audit(&base, &token, &args).await;
        assert_eq!(code, 0, "{name}: {stderr}");
        let written: Vec<String> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e["cursor"].as_str().map(str::to_string))
            .collect();
        for cursor in &cursors {
            assert_eq!(written.iter().filter(|c| *c == cursor).count(), 1, "{name}");
        }
        let _ = std::fs::remove_file(&state);
    }
}

/// A lookup answered with another event than the one asked for: `get`,
/// and a tail fetching a shortened event whole, stop with 5 (the tail
/// wrote the wrong event twice and the right one never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_answered_with_another_event_is_refused() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let cursors = stored(&env, &base, &token, 3).await;
    let other = cursors[0].clone();
    let proxy = tampering(
        base.clone(),
        None,
        Arc::new(move |path: &str, _: &mut HeaderMap, body: &mut Value| {
            if is_tail_page(path) {
                for event in body["events"].as_array_mut().into_iter().flatten() {
                    event["mayHaveMoreData"] = json!(true);
                }
            } else if path.starts_with("/audit/events/") {
                body["cursor"] = json!(other.clone());
            }
        }),
    )
    .await;
    let (code, _, stderr) = audit(&proxy, &token, &["get", &cursors[2]]).await;
    assert_eq!(code, 5, "{stderr}");
    let (code, stdout, stderr) = audit(
        &proxy,
        &token,
        &["tail", "--format", "ndjson", "--self-audit", "exclude"],
    )
    .await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stdout.lines().count() <= 1, "{stdout}");
    // Asked for by its lowercase form, the API's answer is the same event.
    let (code, _, stderr) = audit(&base, &token, &["get", &cursors[2].to_lowercase()]).await;
    assert_eq!(code, 0, "{stderr}");
}

/// Links that go round, and a server that ignores `after=`, end an export
/// with 5: it read two links in turn for ever, writing their events each
/// time, and a resume appended every record again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_never_writes_an_event_twice() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let cursors = stored(&env, &base, &token, 4).await;
    let out = std::env::temp_dir().join(format!("hostile-{}.ndjson", ulid::Ulid::new()));
    let out_arg = out.to_string_lossy().to_string();
    let export = ["export", "--from", "1h", "--out", out_arg.as_str()];
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // Every page links back to the first.
    let round = tampering(
        base.clone(),
        None,
        every_next("/audit?limit=1000&from=00000000000000000000000000"),
    )
    .await;
    let (code, _, stderr) = audit(&round, &token, &export).await;
    assert_eq!(code, 5, "{stderr}");
    let after_round = lines();
    assert!(after_round <= cursors.len() + 8, "{after_round} lines");
    let _ = std::fs::remove_file(&out);
    // Empty pages linking each other in turn, never caught up: nothing to
    // write twice, and still read for ever.
    let empty_round = tampering(
        base.clone(),
        None,
        Arc::new(|path: &str, headers: &mut HeaderMap, body: &mut Value| {
            if is_tail_page(path) {
                let other = if path.contains("selfAudit=include") {
                    "/audit?limit=1000&selfAudit=exclude"
                } else {
                    "/audit?limit=1000&selfAudit=include"
                };
                body["events"] = json!([]);
                body["_links"]["next"]["href"] = json!(other);
                headers.remove("retry-after");
            }
        }),
    )
    .await;
    let (code, _, stderr) = audit(&empty_round, &token, &export).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("go round"), "{stderr}");
    let _ = std::fs::remove_file(&out);
    // A file whose last record's cursor is from the future (written from a
    // server's lying answer) would have every resume ask for events after
    // it, and find none, for good.
    let future = ulid::Ulid::from_parts(4_102_444_800_000, 1).to_string();
    std::fs::write(
        &out,
        format!(
            "{}\n",
            json!({"cursor": future, "accountId": "acme", "eventType": "x", "serviceName": "s"})
        ),
    )
    .unwrap();
    let (code, _, stderr) = audit(&base, &token, &export).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("from the future"), "{stderr}");
    let _ = std::fs::remove_file(&out);
    // A first run, honest; a resume through a server that ignores `after`.
    let (code, _, stderr) = audit(&base, &token, &export).await;
    assert_eq!(code, 0, "{stderr}");
    let first = lines();
    // A server that ignores `after=`: every tail request is answered with
    // the first page.
    let first_page = get_json(
        &base,
        &token,
        "/audit?limit=1000&from=00000000000000000000000000&selfAudit=include",
    )
    .await;
    let replay = tampering(
        base.clone(),
        None,
        Arc::new(
            move |path: &str, headers: &mut HeaderMap, body: &mut Value| {
                if is_tail_page(path) {
                    *body = first_page.clone();
                    headers.insert("retry-after", HeaderValue::from_static("1"));
                }
            },
        ),
    )
    .await;
    let (code, _, stderr) = audit(&replay, &token, &export).await;
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(lines(), first, "nothing appended again");
    let _ = std::fs::remove_file(&out);
}

/// `verify --online` judges an absent event at no later time than this
/// machine's clock allows: pages dated 2100 had a deleted event pass as
/// `expired`. It names the log it verified, and holds it to `--origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_believes_no_server_clock_far_ahead_and_names_its_log() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let cursors = stored(&env, &base, &token, 4).await;
    let key: Value = get_json(&base, &token, "/audit/verifier-key").await;
    let key = key["verifierKey"].as_str().unwrap().to_string();
    let deleted = cursors[1].clone();
    let proxy = tampering(
        base.clone(),
        None,
        Arc::new(
            move |path: &str, headers: &mut HeaderMap, body: &mut Value| {
                if is_tail_page(path) {
                    headers.insert(
                        "date",
                        HeaderValue::from_static("Fri, 01 Jan 2100 00:00:00 GMT"),
                    );
                    if let Some(events) = body["events"].as_array_mut() {
                        events.retain(|e| e["cursor"] != json!(deleted.clone()));
                    }
                }
            },
        ),
    )
    .await;
    let verify = ["verify", "--online", "--verifier-key", key.as_str()];
    let (code, stdout, stderr) = audit(&proxy, &token, &verify).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Missing {}", cursors[1])),
        "{stdout}"
    );
    // Honest: OK, naming the log.
    let (code, stdout, stderr) = audit(&base, &token, &verify).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let checkpoint: Value = get_json(&base, &token, "/audit/checkpoint").await;
    let origin = checkpoint["origin"].as_str().unwrap().to_string();
    assert!(origin.ends_with("/acme"), "{origin}");
    assert!(stdout.contains(&format!("log {origin}")), "{stdout}");
    // Another tenant's trail and log, behind acme's token, pass only
    // unpinned; pinned to acme's log they are `wrong_origin`.
    let globex = env.token("globex", "audit:read audit:write");
    stored(&env, &base, &globex, 2).await;
    let swapped = tampering(
        base.clone(),
        Some(globex),
        Arc::new(|_: &str, _: &mut HeaderMap, _: &mut Value| {}),
    )
    .await;
    let mut pinned = verify.to_vec();
    pinned.extend(["--origin", origin.as_str()]);
    let (code, stdout, stderr) = audit(&swapped, &token, &pinned).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("wrong_origin"), "{stdout}");
    let (code, stdout, _) = audit(&swapped, &token, &verify).await;
    assert_eq!(code, 0, "{stdout}");
    let globex_origin = format!("{}/globex", origin.trim_end_matches("/acme"));
    assert!(stdout.contains(&format!("log {globex_origin}")), "{stdout}");
    // Offline, a bundle of acme's log holding events of globex written
    // after it was sealed: unsealed in acme's log, and not acme's at all.
    let bundle = std::env::temp_dir().join(format!("hostile-bundle-{}", ulid::Ulid::new()));
    let bundle_arg = bundle.to_string_lossy().to_string();
    let mut save = verify.to_vec();
    save.extend(["--save", bundle_arg.as_str()]);
    let (code, stdout, stderr) = audit(&base, &token, &save).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let offline = [
        "verify",
        "--bundle",
        bundle_arg.as_str(),
        "--verifier-key",
        key.as_str(),
    ];
    let (code, stdout, stderr) = audit(&base, &token, &offline).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let globex_token = env.token("globex", "audit:read audit:write");
    let posted = post(
        &base,
        &globex_token,
        vec![json!({"eventType": "late", "serviceName": "idp"})],
    )
    .await;
    let foreign = get_json(
        &base,
        &globex_token,
        &format!("/audit/events/{}", posted[0]),
    )
    .await;
    let events_file = bundle.join("events.ndjson");
    let mut events = std::fs::read_to_string(&events_file).unwrap();
    events.push_str(&format!("{foreign}\n"));
    std::fs::write(&events_file, events).unwrap();
    let (code, stdout, stderr) = audit(&base, &token, &offline).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("wrong_origin") && stdout.contains("tenant globex"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&bundle);
}

/// An answer without end, or a redirect, ends a command with 5: a
/// chunked body without end was held whole (7.5 GB in 16 s), and a
/// redirect's answer was taken as the API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_or_a_redirect_ends_with_5() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/audit",
            axum::routing::get(|| async {
                let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
                let endless = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
                Response::new(Body::from_stream(endless))
            }),
        )
        .route(
            "/audit/metadata",
            axum::routing::get(|| async {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                response.headers_mut().insert(
                    "location",
                    HeaderValue::from_static("http://127.0.0.2:9/audit/metadata"),
                );
                response
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let base = format!("http://{address}");
    let (code, _, stderr) = audit(&base, "t", &["tail", "--format", "ndjson"]).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("MiB"), "{stderr}");
    let (code, _, stderr) = audit(&base, "t", &["metadata"]).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("redirects"), "{stderr}");
}

/// Results in another order than the events sent: a refusal was pinned on
/// the wrong line. A refusal names its event, so `ingest` sees the order
/// is not the API's and stops with 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_results_in_another_order_are_refused() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let proxy = tampering(
        base.clone(),
        None,
        Arc::new(|path: &str, _: &mut HeaderMap, body: &mut Value| {
            if path.starts_with("/audit/events") {
                if let Some(results) = body["results"].as_array_mut() {
                    results.reverse();
                }
            }
        }),
    )
    .await;
    let file = std::env::temp_dir().join(format!("hostile-{}.ndjson", ulid::Ulid::new()));
    std::fs::write(
        &file,
        "{\"serviceName\":\"idp\"}\n{\"eventType\":\"a\",\"serviceName\":\"idp\"}\n{\"eventType\":\"b\",\"serviceName\":\"idp\"}\n",
    )
    .unwrap();
    let file_arg = file.to_string_lossy().to_string();
    let (code, _, stderr) = audit(&proxy, &token, &["ingest", file_arg.as_str()]).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(!stderr.contains("line 3: refused"), "{stderr}");
    // The API's own order names line 1.
    let (code, _, stderr) = audit(&base, &token, &["ingest", file_arg.as_str()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("line 1: refused"), "{stderr}");
    let _ = std::fs::remove_file(&file);
}

/// `verify --online` reads the trail as it stood when its first page was
/// answered (that page's `Date` and the rest of its second), as `tail`
/// does: a tenant writing faster than it reads would otherwise be chased
/// for ever. Here the pages are dated between two groups of events, so
/// the later group is what a fast writer adds during the walk: not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_online_ends_at_the_trail_its_first_page_dates() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    let before = stored(&env, &base, &token, 5).await;
    let newest_ms = before
        .iter()
        .map(|c| ulid::Ulid::from_string(c).unwrap().timestamp_ms() as i64)
        .max()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = post(
        &base,
        &token,
        (0..5)
            .map(|i| json!({"eventType": "late", "serviceName": "idp", "userId": format!("l-{i}")}))
            .collect(),
    )
    .await;
    assert_eq!(later.len(), 5);
    // Settled, so an honest walk reads them (unsealed).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let key: Value = get_json(&base, &token, "/audit/verifier-key").await;
    let verify = [
        "verify",
        "--online",
        "--json",
        "--verifier-key",
        key["verifierKey"].as_str().unwrap(),
    ];
    let read = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|l| l["cursor"].as_str().map(str::to_string))
            .collect()
    };
    let (code, stdout, stderr) = audit(&base, &token, &verify).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(later.iter().all(|c| read(&stdout).contains(c)), "{stdout}");
    // Dated in the second of the first group's newest event.
    let dated = chrono::DateTime::from_timestamp_millis(newest_ms)
        .unwrap()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let proxy = tampering(
        base.clone(),
        None,
        Arc::new(move |path: &str, headers: &mut HeaderMap, _: &mut Value| {
            if is_tail_page(path) {
                headers.insert("date", HeaderValue::from_str(&dated).unwrap());
            }
        }),
    )
    .await;
    let (code, stdout, stderr) = audit(&proxy, &token, &verify).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let walked = read(&stdout);
    assert!(before.iter().all(|c| walked.contains(c)), "{stdout}");
    assert!(later.iter().all(|c| !walked.contains(c)), "{stdout}");
}

/// A query's pages go back from the newest event and never come round:
/// reversed, or linking back to the first page, `query --all` stops with 5
/// (it read the same links for ever, writing their events each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_page_out_of_order_or_going_round_stops() {
    let (env, base) = served().await;
    let token = env.token("acme", "audit:read audit:write");
    stored(&env, &base, &token, 4).await;
    let query = [
        "query",
        "eventType = user.login",
        "--all",
        "--format",
        "ndjson",
    ];
    let (code, stdout, stderr) = audit(&base, &token, &query).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    let reversed = tampering(
        base.clone(),
        None,
        Arc::new(|path: &str, _: &mut HeaderMap, body: &mut Value| {
            if path.starts_with("/audit/query") {
                if let Some(data) = body["data"].as_array_mut() {
                    data.reverse();
                }
            }
        }),
    )
    .await;
    let (code, _, stderr) = audit(&reversed, &token, &query).await;
    assert_eq!(code, 5, "{stderr}");
    // Every page links back to the first one.
    let round = tampering(
        base.clone(),
        None,
        Arc::new(|path: &str, _: &mut HeaderMap, body: &mut Value| {
            if path.starts_with("/audit/query") {
                body["next"] = json!("/audit/query?limit=1000");
            }
        }),
    )
    .await;
    let (code, stdout, stderr) = audit(&round, &token, &query).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stdout.lines().count() <= 4, "{stdout}");
}
