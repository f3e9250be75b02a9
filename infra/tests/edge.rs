//! The local runner is as strict as API Gateway and as safe as a server:
//! no input panics it, methods and parameters are exact, tokens are checked
//! like the JWT authorizer checks them.

mod common;

use common::*;
use serde_json::{json, Value};

async fn raw(
    api: &Api,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut request = api.http.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        format!("{}{path}", api.base),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, response.text().await.unwrap_or_default(), allow)
}

/// One request written byte for byte on a socket (no client re-encodes it).
async fn raw_bytes(api: &Api, target: &[u8], token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = api.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    socket.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn raw_non_ascii_after_a_percent_does_not_panic_the_gateway() {
    let api = Api::start().await;
    let token = api.token("acme");
    for target in [
        b"/audit/events/%a\xc3\xa9".as_slice(),
        b"/audit/events/%\xc3\xa9x",
        b"/audit?limit=%a\xc3\xa9",
        b"/audit/events/%ff",
    ] {
        let answer = raw_bytes(&api, target, &token).await;
        let status_line = answer.lines().next().unwrap_or_default().to_string();
        assert!(
            status_line.contains(" 400 ") || status_line.contains(" 404 "),
            "{}: {answer}",
            String::from_utf8_lossy(target)
        );
        assert!(answer.contains("\"error\""), "{answer}");
    }
    let (status, _, _) = raw(&api, "GET", "/audit/metadata", Some(&token)).await;
    assert_eq!(status, 200, "still serving");
}

#[tokio::test]
async fn malformed_percent_encoding_is_a_400_and_the_server_lives_on() {
    let api = Api::start().await;
    let token = api.token("acme");
    // Sent as raw bytes: a `%` before a multi-byte character, invalid UTF-8,
    // a lone `%`, and the same in the query string.
    for path in [
        "/audit/events/%a\u{e9}",
        "/audit/events/%ff%fe",
        "/audit/events/%",
        "/audit?limit=%a\u{e9}",
        "/audit?from=%c3%28",
    ] {
        let url = format!("{}{}", api.base, path);
        let response = api
            .http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.expect("a JSON error");
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        error_code(&body);
    }
    let (status, _, _) = raw(&api, "GET", "/audit/metadata", Some(&token)).await;
    assert_eq!(status, 200, "still serving");
}

#[tokio::test]
async fn an_undeclared_method_on_a_known_route_is_405_with_allow() {
    let api = Api::start().await;
    let token = api.token("acme");
    for (method, path, allow) in [
        ("PATCH", "/audit/events", "POST"),
        ("DELETE", "/audit/settings", "GET, PUT"),
        ("POST", "/audit", "GET"),
        ("GET", "/audit/query", "POST"),
        ("PUT", "/audit/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", "GET"),
    ] {
        let (status, body, allowed) = raw(&api, method, path, Some(&token)).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(error_code(&body), "method_not_allowed");
    }
    let (status, _, _) = raw(&api, "GET", "/audit/nothing", Some(&token)).await;
    assert_eq!(status, 404);
}

/// A route's method on `target` (path and query) with a JSON body of `{}`.
async fn call_route(api: &Api, method: &str, target: &str, token: &str) -> (u16, Value) {
    let response = api
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{target}", api.base),
        )
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    json_of(response).await
}

/// Every route of the route table refuses, before it runs, a query
/// parameter it doesn't take and one it takes given twice (`limit=1&%6Cimit=2`
/// too): a 400 naming it, whatever the function behind the route.
#[tokio::test]
async fn every_route_refuses_unknown_and_repeated_query_parameters() {
    let api = Api::start().await;
    let token = api.env.token("acme", "audit:read audit:write audit:admin");
    let cursor = ulid::Ulid::new().to_string();
    for spec in audit_core::routes::ROUTES {
        let (method, template) = spec.key.split_once(' ').expect("METHOD /path");
        let path = template.replace("{cursor}", &cursor);
        let mut cases = vec![("bogus".to_string(), format!("{path}?bogus=1"))];
        if let Some(taken) = spec.query.first() {
            // The same name however it is spelled: plain, or with its first
            // (or every) character percent-encoded, as the name is decoded.
            let first_encoded = format!("%{:02X}{}", taken.as_bytes()[0], &taken[1..]);
            let all_encoded: String = taken.bytes().map(|b| format!("%{b:02x}")).collect();
            for other in [taken.to_string(), first_encoded, all_encoded] {
                cases.push((taken.to_string(), format!("{path}?{taken}=1&{other}=2")));
            }
        }
        for (field, target) in cases {
            let (status, body) = call_route(&api, method, &target, &token).await;
            assert_eq!(status, 400, "{method} {target}: {body}");
            assert_eq!(
                body["error"]["field"],
                field.as_str(),
                "{method} {target}: {body}"
            );
        }
    }
}

/// A read refused as bad input records nothing, whichever of its values is
/// bad and however the check is made (a consistency proof asked `from=5`
/// `to=3` was checked inside the read, while its record was being
/// written). Every parameter of every self-audited route is given values
/// that are bad for most of them; each answer that is not a 400 is one
/// record, and a 400 is none.
#[tokio::test]
async fn a_read_refused_as_bad_input_records_nothing() {
    let api = Api::start().await;
    let token = api.env.token("acme", "audit:read audit:write audit:admin");
    let events: Vec<Value> = (0..6)
        .map(|_| json!({"eventType": "a", "serviceName": "b"}))
        .collect();
    let cursor = api.store_all(&token, &events).await[0].clone();
    // A log of 6 to prove in, so sizes up to 6 are well-formed.
    let store = std::sync::Arc::new(audit_dynamo::DynamoStore::new(
        api.env.direct.clone(),
        &api.env.config.table_name,
    ));
    let later = chrono::Utc::now()
        + chrono::Duration::from_std(api.env.config.settle_horizon).expect("horizon")
        + chrono::Duration::seconds(1);
    let (checkpoint, added) = audit_core::integrity::seal::Sealer::new(store, &api.env.config)
        .seal_tenant("acme", later, false)
        .await
        .expect("sealed");
    assert!(checkpoint.is_some() && added == 6, "sealed {added}");
    let records = || async {
        api.env
            .all_items()
            .await
            .iter()
            .filter(|item| {
                item.get("serviceName")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some("audit-api")
            })
            .count()
    };
    let mut answered = 0;
    let mut refused = 0;
    for spec in audit_core::routes::ROUTES {
        if spec.route.self_audit().is_none() {
            continue;
        }
        let (method, template) = spec.key.split_once(' ').expect("METHOD /path");
        let path = template.replace("{cursor}", &cursor);
        let mut targets: Vec<String> = spec
            .query
            .iter()
            .flat_map(|name| {
                ["-1", "0", "x", "", "99999999999999999999"]
                    .map(|value| format!("{path}?{name}={value}"))
            })
            .collect();
        if spec.query.contains(&"from") && spec.query.contains(&"to") {
            targets.push(format!("{path}?from=5&to=3"));
            targets.push(format!("{path}?from=1&to=0"));
        }
        for target in targets {
            let before = records().await;
            let (status, body) = call_route(&api, method, &target, &token).await;
            let added = records().await - before;
            if status == 400 {
                refused += 1;
                assert_eq!(
                    added, 0,
                    "{method} {target} was refused and recorded: {body}"
                );
            } else {
                answered += 1;
                assert_eq!(added, 1, "{method} {target} answered {status}: {body}");
            }
        }
    }
    assert!(
        refused > 20 && answered > 0,
        "{refused} refused, {answered} answered"
    );
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused_like_api_gateway_does() {
    let api = Api::start().await;
    let now = chrono::Utc::now().timestamp();
    for claim in ["nbf", "iat"] {
        let mut claims = json!({"tenant_id": "acme", "scope": "audit:read",
            "iss": api.env.auth.issuer, "aud": api.env.auth.audience, "exp": now + 600});
        claims[claim] = json!(now + 300);
        let token = api.env.auth.mint_claims(claims);
        let (status, body) = json_of(api.get(&token, "/audit/metadata").await).await;
        assert_eq!(status, 401, "{claim}: {body}");
    }
}

#[tokio::test]
async fn an_all_refused_batch_carries_the_code_of_its_status() {
    let api = Api::start().await;
    let token = api.token("acme");
    let (status, body) = json_of(
        api.post_json(
            &token,
            "/audit/events",
            &json!({"events": [
                {"eventType": "a", "serviceName": "s", "accountId": "globex"},
                {"eventType": "b", "serviceName": "s", "accountId": "initech"},
            ]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "forbidden");
    let (status, body) = json_of(
        api.post_json(
            &token,
            "/audit/events",
            &json!({"events": [{"eventType": "a"}, {"eventType": "b", "serviceName": "s", "accountId": "globex"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_request");
}

/// One GET of `/audit?limit=1` with these `Host` and `X-Forwarded-Proto`
/// lines, written byte for byte; the status and the body.
async fn get_with_host(api: &Api, host: &str, proto: Option<&str>, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = api.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let proto = proto
        .map(|p| format!("X-Forwarded-Proto: {p}\r\n"))
        .unwrap_or_default();
    // `None`'s stand-in: no Host line at all.
    let host = match host {
        "<none>" => String::new(),
        host => format!("Host: {host}\r\n"),
    };
    let request = format!(
        "GET /audit?limit=1 HTTP/1.1\r\n{host}{proto}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A missing `Host`, or one that names no host (empty, with a path, a user, a space, a
/// quote, a port out of range, a name the URL parser reads as a bad IPv4
/// address) is a JSON 400, as API Gateway never routes it; it panicked the
/// request's conversion, or bent the links' paths. A plain host is taken,
/// and links use only `http` or `https` (any other `X-Forwarded-Proto` is
/// taken as the `http` the local server is).
#[tokio::test]
async fn a_host_header_that_names_no_host_is_a_400_and_links_stay_whole() {
    let api = Api::start().await;
    let token = api.token("acme");
    for host in [
        "<none>",
        "",
        "a b",
        "x\"y",
        "h:99999",
        "127.0.0.1:1/../x?",
        "user@example.com",
        "exa%6dple.com",
        "[::1",
        "1.2.3.256",
        "1.2.3.4.5",
        "h:+80",
        "h:",
    ] {
        let (status, body) = get_with_host(&api, host, None, &token).await;
        assert_eq!(status, 400, "Host `{host}`: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(body["error"]["code"], "invalid_request", "{host}");
    }
    for (host, proto, prefix) in [
        ("api.example.com", None, "http://api.example.com/audit?"),
        ("[::1]:8080", Some("https"), "https://[::1]:8080/audit?"),
        (
            "localhost:3000",
            Some("javascript"),
            "http://localhost:3000/audit?",
        ),
        (
            "localhost:3000",
            Some("a b"),
            "http://localhost:3000/audit?",
        ),
        ("localhost:3000", Some(""), "http://localhost:3000/audit?"),
        (
            "localhost:3000",
            Some("http, https"),
            "http://localhost:3000/audit?",
        ),
        ("1.2.3.4:80", None, "http://1.2.3.4:80/audit?"),
    ] {
        let (status, body) = get_with_host(&api, host, proto, &token).await;
        assert_eq!(status, 200, "Host `{host}`: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("a page");
        for link in ["self", "next"] {
            let href = body["_links"][link]["href"].as_str().unwrap_or_default();
            assert!(href.starts_with(prefix), "{host} {proto:?}: {href}");
        }
    }
    // The server lives on.
    let (status, _) = get_with_host(&api, "localhost", None, &token).await;
    assert_eq!(status, 200);
}

/// A tenant claim that names no tenant is a 401: `null` (it became the
/// tenant `null`, shared by every such token), a name with spaces around
/// it (trimmed, ` acme ` was `acme`), or a claim given twice in the token
/// (its last copy was read).
#[tokio::test]
async fn a_tenant_claim_that_names_no_tenant_is_refused() {
    let api = Api::start().await;
    let now = chrono::Utc::now().timestamp();
    let (issuer, audience) = (&api.env.auth.issuer, &api.env.auth.audience);
    for tenant in [json!(null), json!(" acme "), json!("\tacme\n"), json!("")] {
        let token = api
            .env
            .auth
            .mint_claims(json!({"tenant_id": tenant, "scope": "audit:read",
            "iss": issuer, "aud": audience, "exp": now + 600}));
        let (status, body) = json_of(api.get(&token, "/audit/metadata").await).await;
        assert_eq!(status, 401, "{tenant}: {body}");
    }
    // Signed by hand: the same claim twice in one payload.
    let token = signed_by_hand(&format!(
        r#"{{"tenant_id":"globex","tenant_id":"acme","scope":"audit:read","iss":"{issuer}","aud":"{audience}","exp":{}}}"#,
        now + 600
    ));
    let (status, body) = json_of(api.get(&token, "/audit/metadata").await).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("twice"),
        "{body}"
    );
    // The same token with the claim once is taken.
    let token = signed_by_hand(&format!(
        r#"{{"tenant_id":"acme","scope":"audit:read","iss":"{issuer}","aud":"{audience}","exp":{}}}"#,
        now + 600
    ));
    let (status, body) = json_of(api.get(&token, "/audit/metadata").await).await;
    assert_eq!(status, 200, "{body}");
}

/// A token signed with the test secret over `payload` exactly as written
/// (a payload no JSON library would write, such as a key given twice).
fn signed_by_hand(payload: &str) -> String {
    use base64::Engine;
    let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let message = format!(
        "{}.{}",
        encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(b"test-secret"),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("signed");
    format!("{message}.{signature}")
}

/// A body the connection cannot deliver (a chunk size that is no number) is
/// a 400, not a 413: only a body over the 6 MB limit is too large.
#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_and_only_a_large_one_a_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = Api::start().await;
    let token = api.token("acme");
    let address = api.base.trim_start_matches("http://").to_string();
    let big_chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", 7 << 20, "x".repeat(7 << 20));
    for (chunks, status, code) in [
        ("zz\r\n{}\r\n0\r\n\r\n".to_string(), 400, "invalid_request"),
        (big_chunk, 413, "payload_too_large"),
    ] {
        let mut socket = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let head = format!(
            "POST /audit/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.expect("write");
        // The server may answer and close before reading a large body.
        let _ = socket.write_all(chunks.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let body: serde_json::Value = answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or_default();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{}",
            &answer[..answer.len().min(300)]
        );
        assert_eq!(error_code(&body), code, "{body}");
    }
    assert!(!api.env.events_by_tenant().await.contains_key("acme"));
}

/// A body declared over the 6 MB limit is refused before it is read: a
/// client waiting for `100 Continue` gets the 413 instead, and sends nothing.
#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = Api::start().await;
    let token = api.token("acme");
    let address = api.base.trim_start_matches("http://").to_string();
    for length in [(6u64 << 20) + 1, 1_000_000_000_000] {
        let mut socket = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let head = format!(
            "POST /audit/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.read_to_end(&mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 413"), "{length}: {answer}");
        assert!(!answer.contains("100 Continue"), "{length}: {answer}");
        assert!(answer.contains("payload_too_large"), "{length}: {answer}");
    }
}

/// Requests API Gateway would refuse for their size (request line and
/// header values over 10240 bytes) are refused locally too, with a JSON
/// error; one just under it is served.
#[tokio::test]
async fn requests_over_api_gateways_header_quota_are_refused_as_json() {
    let api = Api::start().await;
    let token = api.token("acme");
    let get = |path: String, header: String| {
        let request = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(&token)
            .header("x-padding", header);
        async move { request.send().await.expect("sent") }
    };
    let long_header = get("/audit?limit=1".into(), "p".repeat(10_240)).await;
    let long_query = get(
        format!("/audit?limit=1&from={}", "9".repeat(10_240)),
        "p".into(),
    )
    .await;
    for response in [long_header, long_query] {
        let (status, body) = json_of(response).await;
        assert_eq!(status, 431, "{body}");
        assert_eq!(error_code(&body), "headers_too_large", "{body}");
    }
    let (status, body) = json_of(get("/audit?limit=1".into(), "p".repeat(8_000)).await).await;
    assert_eq!(status, 200, "{body}");
}

/// API Gateway's JWT authorizer takes the token alone or after `Bearer` in
/// any case; so does the local one.
#[tokio::test]
async fn a_token_is_taken_alone_or_after_bearer_in_any_case() {
    let api = Api::start().await;
    let token = api.token("acme");
    for value in [
        token.clone(),
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER  {token}"),
    ] {
        let response = api
            .http
            .get(format!("{}/audit?limit=1", api.base))
            .header("authorization", &value)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200, "{}", &value[..10]);
    }
    for value in [
        "Basic abc".to_string(),
        format!("Token {token}"),
        String::new(),
    ] {
        let (status, body) = json_of(
            api.http
                .get(format!("{}/audit?limit=1", api.base))
                .header("authorization", &value)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(status, 401, "{value}: {body}");
    }
}

/// `audit-local serve` starts, and takes a duplicate, without a warning:
/// the store's and the SDK's expected error answers (the table not there
/// yet at start-up, a duplicate's failed condition) are not a new user's
/// problem, and are not logged as one.
#[tokio::test]
async fn the_local_runner_logs_no_warning_for_what_is_expected() {
    use std::process::{Command, Stdio};
    let binary = env!("CARGO_BIN_EXE_audit-local");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let log = std::env::temp_dir().join(format!("audit-local-{port}.log"));
    let mut server = Command::new(binary)
        .args([
            "serve",
            "--memory",
            "--no-seal",
            "--port",
            &port.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("audit-local starts");
    let token = String::from_utf8(
        Command::new(binary)
            .args([
                "token",
                "--tenant",
                "acme",
                "--scope",
                "audit:read audit:write",
            ])
            .output()
            .expect("a token")
            .stdout,
    )
    .expect("text");
    let token = token.trim();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/audit/events");
    let mut statuses = Vec::new();
    // Up to 30 s for the server to start on a loaded machine.
    for _ in 0..300 {
        if let Ok(response) = http
            .post(&url)
            .bearer_auth(token)
            .json(&json!({"eventType": "a", "serviceName": "s", "messageId": "m-1"}))
            .send()
            .await
        {
            statuses.push(response.status().as_u16());
            if statuses.len() == 2 {
                break;
            }
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(statuses, vec![201, 200], "stored, then a duplicate");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let _ = std::fs::remove_file(&log);
}

/// A body under the functions' 6 MB whose escaping makes Lambda's payload
/// pass 6 MB (a quote in a JSON body is `\"`, and `\\\"` once the body is
/// a string of the event) never reaches a function on AWS: refused here
/// too, with 413, and nothing stored. Before, the local gateway stored it.
#[tokio::test]
async fn a_body_whose_escaping_passes_lambdas_payload_is_refused_as_on_aws() {
    let api = Api::start().await;
    let token = api.token("acme");
    let events: Vec<Value> = (0..250)
        .map(|i| json!({"eventType": "quoted", "serviceName": "s", "message": "\"".repeat(6500), "data": {"i": i}}))
        .collect();
    let body = json!({ "events": events });
    let sent = body.to_string().len();
    assert!(sent < 6 << 20, "the body alone is under 6 MB: {sent}");
    let response = api.post_json(&token, "/audit/events", &body).await;
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["error"]["code"], "payload_too_large", "{answer}");
    let query = json!({"and": [{"field": "eventType", "operator": "eq", "value": "quoted"}]});
    let page: Value = api
        .post_json(&token, "/audit/query", &query)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(0), "{page}");
}
