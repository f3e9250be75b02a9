//! `GET /audit/events/{cursor}`: one event of the caller's tenant, whole.

use std::sync::Arc;

use audit_shared::auth::{Caller, SCOPE_READ};
use audit_shared::cursor::parse_cursor;
use audit_shared::http::{error_response, json_response};
use audit_shared::runtime::HttpHandler;
use audit_shared::selfaudit::{RequestFacts, SelfAuditor};
use audit_shared::{ApiError, Config, EventStore};
use chrono::Utc;
use lambda_http::{Body, Request, RequestExt, Response};

pub struct CursorHandler<S> {
    store: Arc<S>,
    tenant_claim: String,
    auditor: SelfAuditor<S>,
}

impl<S: EventStore + 'static> HttpHandler for CursorHandler<S> {
    fn handle(&self, request: Request) -> impl std::future::Future<Output = Response<Body>> + Send {
        CursorHandler::handle(self, request)
    }
}

impl<S: EventStore> CursorHandler<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        let auditor = SelfAuditor::for_config(Arc::clone(&store), config);
        Self {
            store,
            tenant_claim: config.tenant_claim.clone(),
            auditor,
        }
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        match self.try_handle(&request).await {
            Ok(response) => response,
            Err(err) => error_response(&err),
        }
    }

    async fn try_handle(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let caller = Caller::from_request(request, &self.tenant_claim)?;
        caller.require(SCOPE_READ)?;
        let params = request.path_parameters();
        let raw = params
            .first("cursor")
            .ok_or_else(|| ApiError::bad_request("cursor", "the path must name a cursor"))?;
        let cursor = parse_cursor("cursor", raw)?.to_string();
        // Only an authorised, well-formed read is recorded (bad input changes nothing).
        let facts = RequestFacts::from_request(request, "audit.lookup");
        self.auditor
            .around(&caller, facts, self.lookup(&caller.tenant, cursor))
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
