//! `GET /audit/events/{cursor}`: one event of the caller's tenant, whole.

use std::sync::Arc;

use audit_core::cursor::parse_cursor;
use audit_core::selfaudit::SelfAuditor;
use audit_core::{ApiError, Config, EventStore};
use audit_http::request::{authorised, facts};
use audit_http::response::json_response;
use audit_http::runtime::HttpHandler;
use audit_http::telemetry::count_self_audit_failure;
use chrono::Utc;
use lambda_http::{Body, Request, RequestExt, Response};

pub struct CursorHandler<S> {
    store: Arc<S>,
    tenant_claim: String,
    auditor: SelfAuditor<S>,
}

impl<S: EventStore + 'static> HttpHandler for CursorHandler<S> {
    async fn respond(&self, request: Request) -> Result<Response<Body>, ApiError> {
        self.try_handle(&request).await
    }
}

impl<S: EventStore> CursorHandler<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        let auditor = SelfAuditor::for_config(Arc::clone(&store), config)
            .counting_failures_with(count_self_audit_failure);
        Self {
            store,
            tenant_claim: config.tenant_claim.clone(),
            auditor,
        }
    }

    async fn try_handle(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let (route, caller) = authorised(request, &self.tenant_claim)?;
        let params = request.path_parameters();
        let raw = params
            .first("cursor")
            .ok_or_else(|| ApiError::bad_request("cursor", "the path must name a cursor"))?;
        let cursor = parse_cursor("cursor", raw)?.to_string();
        // Only an authorised, well-formed read is recorded (bad input changes nothing).
        self.auditor
            .around(
                &caller,
                facts(request, route),
                self.lookup(&caller.tenant, cursor),
            )
            .await
    }

    async fn lookup(&self, tenant: &str, cursor: String) -> Result<Response<Body>, ApiError> {
        // Another tenant's cursor looks exactly like an unknown one.
        let not_found = || ApiError::NotFound(format!("no event with cursor {cursor}"));
        let event = self
            .store
            .get_event(tenant, &cursor)
            .await?
            .filter(|event| !event.is_expired(Utc::now()))
            .ok_or_else(not_found)?;
        Ok(json_response(200, &event))
    }
}
