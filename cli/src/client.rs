//! The API client: bearer token, JSON, retries on 429/503 and network
//! errors, and the documented exit codes.

use std::time::Duration;

use serde_json::Value;

/// Exit codes (README "The `audit` CLI").
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_AUTH: i32 = 3;
pub const EXIT_NOT_FOUND: i32 = 4;
pub const EXIT_UNAVAILABLE: i32 = 5;

/// A failure with the exit code it ends the program with.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Writing to stdout failed. A reader that closed the pipe (`| head`)
    /// wanted no more: that ends the command quietly, with 0, as `cat`
    /// and `rg` do. A tail's state is written only after a page is
    /// flushed whole, so a resumed tail prints the cut page again (what
    /// the reader took of it included: dedupe by `cursor`).
    pub fn stdout(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            Self::new(0, "")
        } else {
            Self::new(EXIT_FAILED, format!("stdout: {err}"))
        }
    }
}

/// The most an answer's body may hold. The API's largest is a page of
/// about 3 MB (Lambda answers at most 6 MB); a server sending more, or
/// without end, is not the API, and held whole it exhausted memory.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// An answer as it came: its status, the headers the CLI reads, the body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    date_ms: Option<i64>,
    location: Option<String>,
    bytes: Vec<u8>,
    /// The body passed `MAX_ANSWER_BYTES` and was not read on.
    too_large: bool,
}

impl Answer {
    /// What no request of the API's is answered with: a body past the
    /// limit, or a redirect (the client follows none).
    fn refused(&self) -> Option<Failure> {
        if self.too_large {
            return Some(not_the_api(&format!(
                "an answer of more than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        (300..400).contains(&self.status).then(|| {
            Failure::new(
                EXIT_UNAVAILABLE,
                format!(
                    "HTTP {}: the server redirects{}; give --url the API's own address",
                    self.status,
                    self.location
                        .as_deref()
                        .map(|to| format!(" to {}", crate::terminal::for_terminal(to)))
                        .unwrap_or_default()
                ),
            )
        })
    }
}

/// A response body and its `Retry-After`.
pub struct Page {
    pub body: Value,
    pub retry_after: Option<u64>,
    /// The server's clock when it answered (its `Date` header), epoch ms.
    pub date_ms: Option<i64>,
}

/// The exit code of an unexpected answer: the one map every command uses
/// (README, "Exit codes"). A 429 or 503 gets here once its retries are spent.
pub fn status_failure(status: u16, body: &Value) -> Failure {
    let code = match status {
        401 | 403 => return auth_failure(status, body),
        404 => EXIT_NOT_FOUND,
        429 => EXIT_UNAVAILABLE,
        400..=499 => EXIT_USAGE,
        _ => EXIT_UNAVAILABLE,
    };
    Failure::new(code, reason(status, body))
}

/// 401/403 with what to do about it.
fn auth_failure(status: u16, body: &Value) -> Failure {
    let hint = if status == 401 {
        "the token was refused (expired, or not for this API): get a new one and set AUDIT_TOKEN"
    } else {
        "the token lacks the scope this needs"
    };
    Failure::new(EXIT_AUTH, format!("{} ({hint})", reason(status, body)))
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Retries network errors, 429 and 5xx for as long as it takes
    /// (`tail --follow`), backing off to once a minute.
    patient: bool,
}

/// The longest pause between a patient client's attempts.
const PATIENT_MAX_PAUSE: Duration = Duration::from_secs(60);

/// A 2xx answer that is not what the API answers: `--url` names another
/// site (one that answers every path with a page, say). It is said so, with
/// exit 5, never taken as an empty result or as tampering.
pub fn not_the_api(what: &str) -> Failure {
    Failure::new(
        EXIT_UNAVAILABLE,
        format!("the answer is not the Audit Trail API's ({what}): does AUDIT_URL or --url name the API?"),
    )
}

/// The list `key` of an answer that always has one (`events`, `data`,
/// `checkpoints`, ...).
pub fn answer_list<'a>(body: &'a Value, key: &str) -> Result<&'a Vec<Value>, Failure> {
    body[key]
        .as_array()
        .ok_or_else(|| not_the_api(&format!("no `{key}` list")))
}

/// The body of a 2xx answer: the API always answers a JSON object.
fn answer_body(status: u16, bytes: &[u8]) -> Result<Value, Failure> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(body) if body.is_object() => Ok(body),
        // An error status is told by its status; its body may be anything.
        Ok(body) if !(200..300).contains(&status) => Ok(body),
        Err(_) if !(200..300).contains(&status) => Ok(Value::Null),
        Ok(_) => Err(not_the_api("JSON, but not an object")),
        Err(_) => Err(not_the_api("not JSON")),
    }
}

/// A network error as a person reads it: a timeout says so (a body
/// trickling past the limit read as "error decoding response body").
fn network_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "no whole answer within 60 s".to_string()
    } else {
        err.to_string()
    }
}

/// The message of an API error body, or the status.
fn reason(status: u16, body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["message"].as_str())
        .map(|m| format!("{status}: {m}"))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        // A long-poll is held at most 20 s: a minute without an answer is a
        // dead connection, retried like any network error.
        // The API never redirects: a redirect's answer is another server's
        // (`status_failure` says where it pointed).
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            patient: false,
        }
    }

    /// The same client, retrying reads through any outage, however long.
    pub fn patient(mut self) -> Self {
        self.patient = true;
        self
    }

    /// The pause before retry `attempt` (1, 2, ...), or `None` when the
    /// attempts are spent: five, unless patient.
    fn retry_pause(&self, attempt: u32, asked: Option<u64>) -> Option<Duration> {
        if attempt > 5 && !self.patient {
            return None;
        }
        let backoff = Duration::from_millis(250u64 << attempt.min(8));
        let asked = asked.map(|seconds| Duration::from_secs(seconds.min(30)));
        Some(if self.patient {
            // Never faster than asked or than the backoff (a `Retry-After:
            // 0` had it retry without a pause), at least a second, at most
            // a minute.
            asked
                .unwrap_or_default()
                .max(backoff)
                .max(Duration::from_secs(1))
                .min(PATIENT_MAX_PAUSE)
        } else {
            asked.unwrap_or(backoff)
        })
    }

    /// Where to send a request for a path, or for a full URL from a `next`
    /// link or a `--state` file. A link is only ever a path and a query on
    /// the origin of `--url`: a full URL keeps its path and query, and
    /// anything else is a path (`@host/…`, `.host/…` or `:port/…` glued to
    /// `--url` named another host), so the token is never sent anywhere the
    /// user did not name.
    fn url(&self, path_or_url: &str) -> Result<String, Failure> {
        let absolute = reqwest::Url::parse(path_or_url)
            .ok()
            .filter(|link| matches!(link.scheme(), "http" | "https"));
        let url = match (absolute, reqwest::Url::parse(&self.base)) {
            (Some(link), Ok(mut url)) => {
                // The API's links name its routes (`/audit`); a `--url`
                // with a path (a custom domain's base path mapping) keeps it.
                let prefix = url.path().trim_end_matches('/').to_string();
                if link.path().starts_with(&format!("{prefix}/")) {
                    url.set_path(link.path());
                } else {
                    url.set_path(&format!("{prefix}{}", link.path()));
                }
                url.set_query(link.query());
                url.set_fragment(None);
                url.to_string()
            }
            // A base that is no URL fails on the request itself, saying so.
            (Some(_), Err(_)) => return Ok(self.base.clone()),
            (None, base) => {
                let path = path_or_url.split('#').next().unwrap_or_default();
                let slash = if path.starts_with('/') { "" } else { "/" };
                // A link under `--url`'s own path already names it.
                let prefix = base
                    .map(|b| b.path().trim_end_matches('/').to_string())
                    .unwrap_or_default();
                if !prefix.is_empty() && path.starts_with(&format!("{prefix}/")) {
                    let origin = self.base.strip_suffix(&prefix).unwrap_or(&self.base);
                    format!("{origin}{path}")
                } else {
                    format!("{}{slash}{path}", self.base)
                }
            }
        };
        // Belt and braces: whatever the link, the origin is `--url`'s.
        let origin = |text: &str| reqwest::Url::parse(text).ok().map(|u| u.origin());
        if origin(&url) != origin(&self.base) {
            return Err(not_the_api("a link to another host"));
        }
        Ok(url)
    }

    /// GET a path (or a full URL from a `next` link), with retries.
    pub async fn get(&self, path_or_url: &str) -> Result<Value, Failure> {
        Ok(self.get_page(path_or_url).await?.body)
    }

    /// The tenant this token reads, as a tail page names it: a resumed run
    /// checks it goes on with the trail it began with. (It was read from the
    /// trail's first event, so a token whose trail was still empty took
    /// over another tenant's state file.) A server from before pages named
    /// their tenant still gives it by its first event: an empty page may
    /// not be the last (its read budget spent on expired items), so pages
    /// are followed to the first event or the caught-up end, 20 at most.
    pub async fn tenant(&self) -> Result<Option<String>, Failure> {
        let mut next = "/audit?limit=1&selfAudit=include".to_string();
        for _ in 0..20 {
            let page = self.get_page(&next).await?;
            let events = answer_list(&page.body, "events")?;
            // A page names its tenant, even an empty one; an older server's
            // does not, and the first event's does.
            if let Some(account) = page.body["accountId"]
                .as_str()
                .or_else(|| events.first().and_then(|event| event["accountId"].as_str()))
            {
                return Ok(Some(account.to_string()));
            }
            match page.body["_links"]["next"]["href"].as_str() {
                Some(link) if page.retry_after.is_none() => next = link.to_string(),
                _ => break,
            }
        }
        Ok(None)
    }

    /// Refuses to go on from `what` (a state or an export file) written
    /// from `written_for`'s trail when this token reads another tenant's.
    pub async fn check_same_tenant(&self, written_for: &str, what: &str) -> Result<(), Failure> {
        match self.tenant().await? {
            Some(reads) if reads != written_for => Err(Failure::new(
                EXIT_USAGE,
                format!(
                    "{what} holds the trail of tenant {written_for}, and this token reads tenant {reads}'s: start a new one"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// POST JSON; the status and body as they are (the caller reads
    /// per-item results), with retries only for network errors and 429.
    pub async fn post_json<B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, Value), Failure> {
        let url = self.url(path)?;
        let mut attempt = 0u32;
        loop {
            match self.exchange(self.http.post(&url).json(body)).await {
                Ok(answer) => {
                    if let Some(failure) = answer.refused() {
                        return Err(failure);
                    }
                    let body = answer_body(answer.status, &answer.bytes)?;
                    match answer.status {
                        401 | 403 => return Err(auth_failure(answer.status, &body)),
                        429 if attempt < 8 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(250 << attempt.min(6))).await;
                        }
                        status => return Ok((status, body)),
                    }
                }
                Err(err) if attempt < 8 => {
                    crate::say(&format!("audit: {}; retrying", network_reason(&err)));
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(6))).await;
                }
                Err(err) => {
                    return Err(Failure::new(
                        EXIT_UNAVAILABLE,
                        format!("cannot reach {url}: {}", network_reason(&err)),
                    ))
                }
            }
        }
    }

    /// One request and its whole answer: a connection lost while the body
    /// is read is a network error like any other, retried the same way.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        // An HTTP date is RFC 2822's form, in GMT.
        let date_ms = header("date")
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(&v).ok())
            .map(|t| t.timestamp_millis());
        let status = response.status().as_u16();
        let location = header("location");
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Ok(Answer {
                    status,
                    retry_after,
                    date_ms,
                    location,
                    bytes: Vec::new(),
                    too_large: true,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            retry_after,
            date_ms,
            location,
            bytes,
            too_large: false,
        })
    }

    /// GET with the `Retry-After` it came with.
    pub async fn get_page(&self, path_or_url: &str) -> Result<Page, Failure> {
        let url = self.url(path_or_url)?;
        let mut attempt = 0u32;
        loop {
            let (status, retry_after, date_ms, body) =
                match self.exchange(self.http.get(&url)).await {
                    Ok(answer) => {
                        if let Some(failure) = answer.refused() {
                            return Err(failure);
                        }
                        (
                            answer.status,
                            answer.retry_after,
                            answer.date_ms,
                            answer_body(answer.status, &answer.bytes)?,
                        )
                    }
                    Err(err) => {
                        attempt += 1;
                        let Some(pause) = self.retry_pause(attempt, None) else {
                            return Err(Failure::new(
                                EXIT_UNAVAILABLE,
                                format!("cannot reach {url}: {}", network_reason(&err)),
                            ));
                        };
                        crate::say(&format!(
                            "audit: {}; retrying in {} s",
                            network_reason(&err),
                            pause.as_secs_f32().ceil()
                        ));
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
            // Busy, or out: 429 and 503 always; any 5xx for a patient
            // client, which outlasts a deploy or an outage.
            let retried = matches!(status, 429 | 503) || (self.patient && status >= 500);
            match status {
                200..=299 => {
                    return Ok(Page {
                        body,
                        retry_after,
                        date_ms,
                    })
                }
                _ if retried => {
                    attempt += 1;
                    // As asked; else a second, or the patient backoff.
                    let asked = match (retry_after, self.patient) {
                        (Some(seconds), _) => Some(seconds),
                        (None, false) => Some(1),
                        (None, true) => None,
                    };
                    let Some(pause) = self.retry_pause(attempt, asked) else {
                        return Err(status_failure(status, &body));
                    };
                    if self.patient {
                        crate::say(&format!(
                            "audit: HTTP {status}; retrying in {} s",
                            pause.as_secs_f32().ceil()
                        ));
                    }
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(status_failure(status, &body)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_followed_on_the_origin_the_user_named_only() {
        let client = Client::new("http://127.0.0.1:3000/", None);
        for (link, expected) in [
            (
                "/audit/events?limit=5",
                "http://127.0.0.1:3000/audit/events?limit=5",
            ),
            (
                "http://127.0.0.1:3000/audit/events?cursor=a%2Bb",
                "http://127.0.0.1:3000/audit/events?cursor=a%2Bb",
            ),
            (
                "https://evil.example/audit/events?cursor=x",
                "http://127.0.0.1:3000/audit/events?cursor=x",
            ),
            (
                "http://user@evil.example:8080/audit/events#frag",
                "http://127.0.0.1:3000/audit/events",
            ),
            // Glued to `--url` as they came, these named another host or
            // port (and sent the token there).
            (
                "@127.0.0.2:3999/audit?limit=5",
                "http://127.0.0.1:3000/@127.0.0.2:3999/audit?limit=5",
            ),
            (
                ".evil.example/audit",
                "http://127.0.0.1:3000/.evil.example/audit",
            ),
            (":8443/audit", "http://127.0.0.1:3000/:8443/audit"),
            (
                "//evil.example/audit",
                "http://127.0.0.1:3000//evil.example/audit",
            ),
            ("audit?limit=1", "http://127.0.0.1:3000/audit?limit=1"),
        ] {
            let url = client.url(link).expect("a link on the origin");
            assert_eq!(url, expected, "{link}");
            let parsed = reqwest::Url::parse(&url).expect("a URL");
            assert_eq!(
                (parsed.host_str(), parsed.port()),
                (Some("127.0.0.1"), Some(3000)),
                "{link}"
            );
        }
        // A `--url` with a base path keeps it for the API's links, which
        // name only the route.
        let client = Client::new("https://api.example.com/audit-v1", None);
        for (link, expected) in [
            (
                "https://api.example.com/audit?limit=5",
                "https://api.example.com/audit-v1/audit?limit=5",
            ),
            (
                "https://api.example.com/audit-v1/audit?limit=5",
                "https://api.example.com/audit-v1/audit?limit=5",
            ),
            (
                "/audit?limit=5",
                "https://api.example.com/audit-v1/audit?limit=5",
            ),
            (
                "/audit-v1/audit?limit=5",
                "https://api.example.com/audit-v1/audit?limit=5",
            ),
        ] {
            assert_eq!(client.url(link).expect("a link"), expected, "{link}");
        }
        // Without a port, a glued link changed the host itself.
        let client = Client::new("https://api.example.com", None);
        for link in [".evil.example/audit", "@evil.example/audit", ":8443/audit"] {
            let url = client.url(link).expect("a link on the origin");
            let parsed = reqwest::Url::parse(&url).expect("a URL");
            assert_eq!(parsed.host_str(), Some("api.example.com"), "{link}");
            assert_eq!(parsed.port_or_known_default(), Some(443), "{link}");
        }
    }

    /// Five retries, as asked or backing off; a patient client for ever,
    /// never without a pause, backing off to once a minute.
    #[test]
    fn retries_pause_as_asked_and_a_patient_client_backs_off() {
        let client = Client::new("http://127.0.0.1:3000", None);
        assert_eq!(client.retry_pause(1, Some(2)), Some(Duration::from_secs(2)));
        assert_eq!(
            client.retry_pause(1, None),
            Some(Duration::from_millis(500))
        );
        assert_eq!(client.retry_pause(6, None), None);
        let patient = Client::new("http://127.0.0.1:3000", None).patient();
        assert_eq!(
            patient.retry_pause(1, Some(0)),
            Some(Duration::from_secs(1))
        );
        let pauses: Vec<Duration> = (1..40)
            .map(|attempt| patient.retry_pause(attempt, Some(1)).expect("patient"))
            .collect();
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses.last(), Some(&PATIENT_MAX_PAUSE));
        assert_eq!(patient.retry_pause(u32::MAX, None), Some(PATIENT_MAX_PAUSE));
    }

    /// The README's exit codes, for every status an answer can have.
    #[test]
    fn every_status_has_the_exit_code_the_readme_gives() {
        let body = serde_json::json!({"error": {"code": "x", "message": "m"}});
        for (status, exit) in [
            (400, EXIT_USAGE),
            (401, EXIT_AUTH),
            (403, EXIT_AUTH),
            (404, EXIT_NOT_FOUND),
            (405, EXIT_USAGE),
            (409, EXIT_USAGE),
            (413, EXIT_USAGE),
            (415, EXIT_USAGE),
            (429, EXIT_UNAVAILABLE),
            (500, EXIT_UNAVAILABLE),
            (502, EXIT_UNAVAILABLE),
            (503, EXIT_UNAVAILABLE),
        ] {
            assert_eq!(status_failure(status, &body).code, exit, "{status}");
        }
    }
}
