//! One event and its proof: `GET /audit/events/{cursor}` (the lookup) and
//! the integrity routes (checkpoints, inclusion and consistency proofs,
//! entry records, the verifier key).

use std::sync::Arc;

use audit_core::cursor::parse_cursor;
use audit_core::integrity::note::NoteSigner;
use audit_core::integrity::proofs::ProofReader;
use audit_core::integrity::LogStore;
use audit_core::routes::Route;
use audit_core::selfaudit::SelfAuditor;
use audit_core::{ApiError, Config, EventStore};
use audit_http::request::{authorised, facts, not_served, query_parameters};
use audit_http::response::json_response;
use audit_http::runtime::HttpHandler;
use audit_http::telemetry::count_self_audit_failure;
use chrono::Utc;
use lambda_http::{Body, Request, RequestExt, Response};
use ulid::Ulid;

mod proofs;

pub struct CursorHandler<S> {
    store: Arc<S>,
    tenant_claim: String,
    auditor: SelfAuditor<S>,
    proofs: ProofReader<S>,
    config: Config,
    verifier_key: String,
}

impl<S: EventStore + LogStore + 'static> HttpHandler for CursorHandler<S> {
    async fn respond(&self, request: Request) -> Result<Response<Body>, ApiError> {
        self.try_handle(&request).await
    }
}

/// The `{cursor}` path parameter, checked.
fn path_cursor(request: &Request) -> Result<Ulid, ApiError> {
    let params = request.path_parameters();
    let raw = params
        .first("cursor")
        .ok_or_else(|| ApiError::bad_request("cursor", "the path must name a cursor"))?;
    parse_cursor("cursor", raw)
}

impl<S: EventStore + LogStore> CursorHandler<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        let auditor = SelfAuditor::for_config(Arc::clone(&store), config)
            .counting_failures_with(count_self_audit_failure);
        // Deployed, the public key is given (the function never sees the
        // private one); locally it is derived from the development secret.
        let verifier_key = config.checkpoint_verifier_key.clone().unwrap_or_else(|| {
            NoteSigner::from_secret(&config.checkpoint_origin, &config.checkpoint_signing_key)
                .verifier()
                .vkey()
        });
        Self {
            proofs: ProofReader::new(Arc::clone(&store)),
            store,
            tenant_claim: config.tenant_claim.clone(),
            auditor,
            config: config.clone(),
            verifier_key,
        }
    }

    async fn try_handle(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let (route, caller) = authorised(request, &self.tenant_claim)?;
        let tenant = caller.tenant.as_str();
        // Only an authorised, well-formed read is recorded (bad input changes nothing).
        let facts = facts(request, route);
        match route {
            Route::Lookup => {
                let cursor = path_cursor(request)?;
                self.auditor
                    .around(&caller, facts, self.lookup(tenant, cursor))
                    .await
            }
            Route::Proof => {
                let cursor = path_cursor(request)?;
                let params = query_parameters(request, Route::Proof.spec().query)?;
                let size = proofs::optional_size(&params, "treeSize")?;
                self.auditor
                    .around(&caller, facts, self.inclusion(tenant, cursor, size))
                    .await
            }
            Route::Checkpoint => {
                self.auditor
                    .around(&caller, facts, self.checkpoint(tenant))
                    .await
            }
            Route::Checkpoints => {
                let page = proofs::CheckpointPage::parse(request)?;
                self.auditor
                    .around(&caller, facts, self.checkpoints(request, tenant, page))
                    .await
            }
            Route::Consistency => {
                let params = query_parameters(request, Route::Consistency.spec().query)?;
                let from = proofs::optional_size(&params, "from")?.ok_or_else(|| {
                    ApiError::bad_request("from", "`from` (a tree size) is required")
                })?;
                let to = proofs::optional_size(&params, "to")?;
                // Bad input, refused before the read and its record.
                if to.is_some_and(|to| from > to) {
                    return Err(ApiError::bad_request("from", "`from` may not exceed `to`"));
                }
                self.auditor
                    .around(&caller, facts, self.consistency(tenant, from, to))
                    .await
            }
            Route::Entries => {
                let page = proofs::EntryPage::parse(request)?;
                self.auditor
                    .around(&caller, facts, self.entries(request, tenant, page))
                    .await
            }
            Route::VerifierKey => {
                let key = serde_json::json!({ "verifierKey": self.verifier_key });
                self.auditor
                    .around(&caller, facts, async move { Ok(json_response(200, &key)) })
                    .await
            }
            other => Err(not_served(other)),
        }
    }

    async fn lookup(&self, tenant: &str, cursor: Ulid) -> Result<Response<Body>, ApiError> {
        let event = self.live_event(tenant, cursor).await?;
        Ok(json_response(200, &event))
    }

    /// The tenant's event, unexpired; another tenant's cursor looks exactly
    /// like an unknown one.
    async fn live_event(&self, tenant: &str, cursor: Ulid) -> Result<audit_core::Event, ApiError> {
        self.store
            .get_event(tenant, &cursor.to_string())
            .await?
            .filter(|event| !event.is_expired(Utc::now()))
            .ok_or_else(|| ApiError::NotFound(format!("no event with cursor {cursor}")))
    }
}
