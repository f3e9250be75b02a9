//! `POST /audit/events`: the HTTP edge of ingest. Parsing and storing live in
//! `audit_core::ingest`; this maps requests and results to HTTP.

use std::sync::Arc;

use audit_core::ingest::{summarize, IngestRequest, IngestService, ItemResult};
use audit_core::routes::Route;
use audit_core::{ApiError, Config, EventStore};
use audit_http::request::{authorised, not_served, require_json};
use audit_http::response::{error_response, json_response, json_response_retry_after, status_of};
use audit_http::runtime::HttpHandler;
use lambda_http::{Body, Request, Response};
use serde_json::json;

pub struct IngestHandler<S> {
    service: IngestService<S>,
    tenant_claim: String,
}

/// The `Idempotency-Key` header: one value of visible ASCII. A header given
/// twice arrives joined with a comma (API Gateway joins repeated headers), so
/// a comma is refused, as a query parameter given twice is: never one key
/// made of two.
fn idempotency_header(request: &Request) -> Result<Option<String>, ApiError> {
    let mut values = request.headers().get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refused = |message: &str| ApiError::bad_request("Idempotency-Key", message);
    if values.next().is_some() {
        return Err(refused(
            "the Idempotency-Key header is given more than once",
        ));
    }
    let bytes = value.as_bytes();
    if bytes.contains(&b',') {
        return Err(refused(
            "the Idempotency-Key header holds a comma: one key, without commas (a header given twice arrives joined by one)",
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(key) if bytes.iter().all(|b| b.is_ascii_graphic()) => Ok(Some(key.to_string())),
        _ => Err(refused(
            "the Idempotency-Key header must be visible ASCII, without spaces or tabs",
        )),
    }
}

impl<S: EventStore + 'static> HttpHandler for IngestHandler<S> {
    async fn respond(&self, request: Request) -> Result<Response<Body>, ApiError> {
        self.try_handle(request).await
    }
}

impl<S: EventStore> IngestHandler<S> {
    pub fn new(store: Arc<S>, config: Config) -> Self {
        let tenant_claim = config.tenant_claim.clone();
        Self {
            service: IngestService::new(store, config),
            tenant_claim,
        }
    }

    async fn try_handle(&self, request: Request) -> Result<Response<Body>, ApiError> {
        let (route, caller) = authorised(&request, &self.tenant_claim)?;
        if route != Route::Ingest {
            return Err(not_served(route));
        }
        require_json(&request)?;
        let idempotency_key = idempotency_header(&request)?;
        match IngestRequest::from_body(request.body().as_ref(), idempotency_key)? {
            IngestRequest::Single {
                event,
                idempotency_key,
            } => {
                let result = self
                    .service
                    .ingest_one(&caller, event, idempotency_key)
                    .await?;
                Ok(single_response(result))
            }
            IngestRequest::Batch { events } => {
                let results = self.service.ingest_batch(&caller, events).await?;
                Ok(batch_response(results))
            }
        }
    }
}

fn single_response(result: ItemResult) -> Response<Body> {
    match result {
        stored @ ItemResult::Stored { .. } => json_response(201, &stored),
        duplicate @ ItemResult::Duplicate { .. } => json_response(200, &duplicate),
        ItemResult::Refused { error } | ItemResult::Failed { error } => error_response(&error),
    }
}

/// 200 when every event is stored or a duplicate; 207 when some were
/// refused; the refusal's status when all were; 503 (with `Retry-After`)
/// when any could not be stored, so a caller retries exactly those.
fn batch_response(results: Vec<ItemResult>) -> Response<Body> {
    let summary = summarize(&results);
    let refusals: Vec<(u16, &str)> = results
        .iter()
        .filter_map(|r| match r {
            ItemResult::Refused { error } => Some((status_of(error), error.code())),
            _ => None,
        })
        .collect();
    let body = json!({ "results": results, "summary": summary });
    if summary.failed > 0 {
        // The status and code of the typed error, as a single event's would be.
        let unavailable = ApiError::Unavailable {
            retry_after_seconds: 1,
        };
        let mut body = body;
        body["error"] = json!({
            "code": unavailable.code(),
            "message": format!("{} of {} events could not be stored; retry those marked failed", summary.failed, results.len()),
        });
        return json_response_retry_after(status_of(&unavailable), &body, 1);
    }
    if summary.refused == results.len() {
        // One status for all: its code; mixed refusals: a plain 400.
        let mixed = ApiError::bad_input("mixed refusals");
        let (status, code) = match refusals.first() {
            Some((first, code)) if refusals.iter().all(|(s, _)| s == first) => (*first, *code),
            _ => (status_of(&mixed), mixed.code()),
        };
        let mut body = body;
        body["error"] =
            json!({ "code": code, "message": "every event of the batch was refused; see results" });
        return json_response(status, &body);
    }
    json_response(if summary.refused > 0 { 207 } else { 200 }, &body)
}
