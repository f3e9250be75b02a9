//! `GET /audit` (the gap-free tail) and `POST /audit/query` (filtered
//! queries): one Lambda binary, two routes.

use std::sync::Arc;
use std::time::Duration;

use audit_core::auth::Caller;
use audit_core::config::MAX_TAIL_WAIT_SECONDS;
use audit_core::cursor::parse_cursor;
use audit_core::error::parse_json_body;
use audit_core::query::{Query, QueryCursor};
use audit_core::read::{Start, TrailReader, DEFAULT_QUERY_PAGE, DEFAULT_TAIL_PAGE, MAX_PAGE};
use audit_core::routes::Route;
use audit_core::selfaudit::{SelfAuditFilter, SelfAuditor};
use audit_core::{ApiError, Config, EventStore};
use audit_http::request::{
    authorised, facts, link, not_served, parse_limit, query_parameters, require_json,
};
use audit_http::response::json_response;
use audit_http::runtime::HttpHandler;
use audit_http::telemetry::count_self_audit_failure;
use chrono::Utc;
use lambda_http::{Body, Request, Response};
use serde_json::json;

pub struct TailParams {
    limit: usize,
    start: Start,
    wait: u64,
    filter: SelfAuditFilter,
}

pub struct QueryParams {
    query: Query,
    limit: usize,
    cursor: Option<QueryCursor>,
}

/// Validates a tail request completely before anything runs.
fn parse_tail(request: &Request) -> Result<TailParams, ApiError> {
    let params = query_parameters(request, Route::Tail.spec().query)?;
    let filter = SelfAuditFilter::parse(params.get("selfAudit"))?;
    let limit = parse_limit(params.get("limit"), DEFAULT_TAIL_PAGE, MAX_PAGE)?;
    let start = match (params.get("from"), params.get("after")) {
        // Both bounds apply: the page starts at the later of the two.
        (Some(from), Some(after)) => {
            let (from, after) = (parse_cursor("from", from)?, parse_cursor("after", after)?);
            if after >= from {
                Start::After(after)
            } else {
                Start::From(from)
            }
        }
        (Some(from), None) => Start::From(parse_cursor("from", from)?),
        (None, Some(after)) => Start::After(parse_cursor("after", after)?),
        (None, None) => Start::Beginning,
    };
    let wait = match params.get("wait") {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_TAIL_WAIT_SECONDS)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "wait",
                    format!("`wait` must be whole seconds from 0 to {MAX_TAIL_WAIT_SECONDS}"),
                )
            })?,
    };
    Ok(TailParams {
        limit,
        start,
        wait,
        filter,
    })
}

pub struct ListHandler<S> {
    reader: TrailReader<S>,
    tenant_claim: String,
    auditor: SelfAuditor<S>,
}

impl<S: EventStore + 'static> HttpHandler for ListHandler<S> {
    async fn respond(&self, request: Request) -> Result<Response<Body>, ApiError> {
        self.try_handle(&request).await
    }
}

impl<S: EventStore> ListHandler<S> {
    pub fn new(store: Arc<S>, config: Config) -> Self {
        let tenant_claim = config.tenant_claim.clone();
        let auditor = SelfAuditor::for_config(Arc::clone(&store), &config)
            .counting_failures_with(count_self_audit_failure);
        Self {
            reader: TrailReader::new(store, config),
            tenant_claim,
            auditor,
        }
    }

    async fn try_handle(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let (route, caller) = authorised(request, &self.tenant_claim)?;
        // Only authorised, well-formed reads are recorded: bad input changes nothing.
        match route {
            Route::Query => {
                let parsed = self.parse_query(request, &caller)?;
                self.auditor
                    .around(
                        &caller,
                        facts(request, route),
                        self.query(request, &caller, parsed),
                    )
                    .await
            }
            Route::Tail => {
                let parsed = parse_tail(request)?;
                self.auditor
                    .around(
                        &caller,
                        facts(request, route),
                        self.tail(request, &caller, parsed),
                    )
                    .await
            }
            other => Err(not_served(other)),
        }
    }

    async fn tail(
        &self,
        request: &Request,
        caller: &Caller,
        parsed: TailParams,
    ) -> Result<Response<Body>, ApiError> {
        let TailParams {
            limit,
            start,
            wait,
            filter,
        } = parsed;
        let keep = |event: &audit_core::Event| filter.keeps(event, caller);
        let held = Duration::from_secs(wait).min(self.reader.config().tail_max_wait);
        let deadline = tokio::time::Instant::now() + held;
        let mut page = self
            .reader
            .tail(&caller.tenant, start, limit, Utc::now(), keep)
            .await?;
        // Long-poll: an empty, caught-up page waits (up to `wait`) for the
        // horizon to pass new events, checking once a second.
        while page.events.is_empty() && page.caught_up && tokio::time::Instant::now() < deadline {
            let pause = Duration::from_secs(1).min(deadline - tokio::time::Instant::now());
            tokio::time::sleep(pause).await;
            page = self
                .reader
                .tail(&caller.tenant, start, limit, Utc::now(), keep)
                .await?;
        }
        let mut self_query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        match start {
            Start::From(c) => self_query.push(("from", c.to_string())),
            Start::After(c) => self_query.push(("after", c.to_string())),
            Start::Beginning => {}
        }
        let mut next_query: Vec<(&str, String)> = vec![
            ("limit", limit.to_string()),
            ("from", page.next_from.to_string()),
        ];
        if wait > 0 {
            self_query.push(("wait", wait.to_string()));
            next_query.push(("wait", wait.to_string()));
        }
        if filter != SelfAuditFilter::Include {
            self_query.push(("selfAudit", filter.name().to_string()));
            next_query.push(("selfAudit", filter.name().to_string()));
        }
        let base_path = &self.reader.config().api_base_path;
        let body = TailBody {
            account_id: &caller.tenant,
            events: &page.events,
            links: json!({
                "self": {"href": link(request, base_path, &self_query)},
                "next": {"href": link(request, base_path, &next_query)},
            }),
        };
        let mut response = json_response(200, &body);
        if page.caught_up {
            // Nothing newer is settled yet: tell the poller when to come back.
            if let Ok(value) = self.reader.config().poll_hint_seconds.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
        }
        Ok(response)
    }

    /// Validates a query request completely, cursor included, before anything runs.
    fn parse_query(&self, request: &Request, caller: &Caller) -> Result<QueryParams, ApiError> {
        let params = query_parameters(request, Route::Query.spec().query)?;
        let limit = parse_limit(params.get("limit"), DEFAULT_QUERY_PAGE, MAX_PAGE)?;
        require_json(request)?;
        let body = parse_json_body(request.body().as_ref(), "a query such as {\"and\":[]}")?;
        let query = Query::parse(&body, Utc::now())?;
        let cursor = params
            .get("cursor")
            .map(|token| self.reader.verify_cursor(token, &caller.tenant, &query))
            .transpose()?;
        Ok(QueryParams {
            query,
            limit,
            cursor,
        })
    }

    async fn query(
        &self,
        request: &Request,
        caller: &Caller,
        parsed: QueryParams,
    ) -> Result<Response<Body>, ApiError> {
        let QueryParams {
            query,
            limit,
            cursor,
        } = parsed;
        let page = self
            .reader
            .query(&caller.tenant, &query, cursor, limit)
            .await?;
        let next = page.next.map(|token| {
            link(
                request,
                &self.reader.config().api_base_path,
                &[("limit", limit.to_string()), ("cursor", token)],
            )
        });
        Ok(json_response(
            200,
            &QueryBody {
                data: &page.events,
                next,
                from: audit_core::event::format_time(page.from),
                to: audit_core::event::format_time(page.to),
            },
        ))
    }
}

// Pages are serialised from the events themselves (not through a
// `serde_json::Value`, which would sort their fields), so each event reads
// byte for byte as the lookup and the stream return it.
#[derive(serde::Serialize)]
struct TailBody<'a> {
    /// The tenant whose trail this is, stated even on an empty page: a
    /// client resuming a saved position checks it against the one it saved.
    #[serde(rename = "accountId")]
    account_id: &'a str,
    events: &'a [audit_core::event::PageEvent],
    #[serde(rename = "_links")]
    links: serde_json::Value,
}

#[derive(serde::Serialize)]
struct QueryBody<'a> {
    data: &'a [audit_core::event::PageEvent],
    next: Option<String>,
    from: String,
    to: String,
}
