//! The integrity routes: checkpoints, inclusion and consistency proofs, and
//! entry records, from the tenant's log (docs/INTEGRITY.md).

use std::collections::HashMap;
use std::num::IntErrorKind;

use audit_core::integrity::proofs::{seconds_until_sealed, Placement};
use audit_core::integrity::{CheckpointRecord, LogStore};
use audit_core::routes::Route;
use audit_core::{ApiError, EventStore};
use audit_http::request::{link, parse_limit, query_parameters};
use audit_http::response::json_response;
use chrono::Utc;
use lambda_http::{Body, Request, Response};
use serde_json::json;
use ulid::Ulid;

use crate::CursorHandler;

/// Most checkpoints or entry records per page.
const MAX_PAGE: usize = 1000;

/// A tree size parameter: any whole number. One past every possible tree
/// (beyond 2^64 - 1) is read as the largest, so it is answered like any size
/// the log has not reached: the schema allows it, and it names no tree.
pub fn optional_size(
    params: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|text| match text.parse::<u64>() {
            Ok(size) => Ok(size),
            Err(error) if *error.kind() == IntErrorKind::PosOverflow => Ok(u64::MAX),
            Err(_) => Err(ApiError::bad_request(
                name,
                format!("`{name}` must be a whole number (a tree size)"),
            )),
        })
        .transpose()
}

/// A tree the log has not reached: not found, like any resource not there.
fn no_tree(size: u64, latest: u64) -> ApiError {
    // Sizes past 2^64 - 1 were read as the largest: name none of them.
    let asked = if size == u64::MAX {
        "that many".to_string()
    } else {
        size.to_string()
    };
    ApiError::NotFound(format!(
        "the log has no tree of {asked} leaves: the latest checkpoint has {latest}"
    ))
}

pub struct CheckpointPage {
    from_size: u64,
    after: Option<String>,
    limit: usize,
}

impl CheckpointPage {
    pub fn parse(request: &Request) -> Result<Self, ApiError> {
        let params = query_parameters(request, Route::Checkpoints.spec().query)?;
        // The timestamp of the last checkpoint of the previous page, written
        // as checkpoint times are (UTC, milliseconds): it is compared as
        // text with theirs, so `+02:00` or a missing fraction must not page
        // differently from the same instant as the page wrote it.
        let after = match params.get("after") {
            None => None,
            Some(text) => Some(
                audit_core::event::parse_time(text)
                    .map(audit_core::event::format_time)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "after",
                            "`after` is the timestamp of the last checkpoint of the previous page",
                        )
                    })?,
            ),
        };
        Ok(Self {
            from_size: optional_size(&params, "fromSize")?.unwrap_or(0),
            after,
            limit: parse_limit(params.get("limit"), 100, MAX_PAGE)?,
        })
    }
}

pub struct EntryPage {
    start: u64,
    limit: usize,
}

impl EntryPage {
    pub fn parse(request: &Request) -> Result<Self, ApiError> {
        let params = query_parameters(request, Route::Entries.spec().query)?;
        Ok(Self {
            start: optional_size(&params, "start")?.unwrap_or(0),
            limit: parse_limit(params.get("limit"), MAX_PAGE, MAX_PAGE)?,
        })
    }
}

fn no_checkpoint() -> ApiError {
    ApiError::NotFound("no checkpoint yet: the log's first is published within a minute of its first settled event".into())
}

impl<S: EventStore + LogStore> CursorHandler<S> {
    async fn latest(&self, tenant: &str) -> Result<CheckpointRecord, ApiError> {
        self.proofs.latest(tenant).await?.ok_or_else(no_checkpoint)
    }

    fn not_sealed_yet(&self, cursor: Ulid) -> ApiError {
        ApiError::NotSealedYet {
            retry_after_seconds: seconds_until_sealed(
                cursor,
                Utc::now(),
                self.config.settle_horizon,
                self.config.seal_interval,
            ),
        }
    }

    pub(crate) async fn checkpoint(&self, tenant: &str) -> Result<Response<Body>, ApiError> {
        Ok(json_response(200, &self.latest(tenant).await?))
    }

    pub(crate) async fn inclusion(
        &self,
        tenant: &str,
        cursor: Ulid,
        tree_size: Option<u64>,
    ) -> Result<Response<Body>, ApiError> {
        self.live_event(tenant, cursor).await?;
        let Some(latest) = self.proofs.latest(tenant).await? else {
            return Err(self.not_sealed_yet(cursor));
        };
        let index = match self.proofs.place(tenant, cursor, &latest).await? {
            Placement::Leaf(index, _) => index,
            Placement::NotSealedYet => return Err(self.not_sealed_yet(cursor)),
            Placement::Absent => {
                // The table holds an event the log never sealed: written
                // behind the API. Said plainly, and logged for operators.
                tracing::error!(%cursor, "an event within the sealed range is not in the log");
                return Err(ApiError::NotFound(format!(
                    "the event {cursor} is not in the integrity log although the log covers its time: it was not written through the API"
                )));
            }
        };
        let at = match tree_size {
            None => latest.clone(),
            Some(size) if size > latest.tree_size => {
                return Err(no_tree(size, latest.tree_size))
            }
            // The leaf is not in a tree that ends before it.
            Some(size) if size <= index => {
                return Err(ApiError::NotFound(format!(
                    "the event {cursor} is leaf {index}, so it is in trees of {} leaves or more, not {size}",
                    index + 1
                )))
            }
            Some(size) => self
                .proofs
                .checkpoint_of_size(tenant, size)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no checkpoint was published for a tree of {size}"))
                })?,
        };
        let proof = self
            .proofs
            .inclusion(tenant, index, at, latest.tree_size)
            .await?;
        Ok(json_response(200, &proof))
    }

    pub(crate) async fn checkpoints(
        &self,
        request: &Request,
        tenant: &str,
        page: CheckpointPage,
    ) -> Result<Response<Body>, ApiError> {
        let checkpoints = self
            .proofs
            .checkpoints(tenant, page.from_size, page.after.as_deref(), page.limit)
            .await?;
        let mut next_query = vec![("limit", page.limit.to_string())];
        match checkpoints.last() {
            Some(last) => {
                next_query.push(("fromSize", last.tree_size.to_string()));
                next_query.push(("after", last.timestamp.clone()));
            }
            None => {
                next_query.push(("fromSize", page.from_size.to_string()));
                if let Some(after) = &page.after {
                    next_query.push(("after", after.clone()));
                }
            }
        }
        // Like the tail, a page always names the next: new checkpoints come.
        Ok(json_response(
            200,
            &json!({
                "checkpoints": checkpoints,
                "_links": {"next": {"href": link(request, &self.config.api_base_path, &next_query)}},
            }),
        ))
    }

    pub(crate) async fn consistency(
        &self,
        tenant: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<Response<Body>, ApiError> {
        let latest = self.latest(tenant).await?;
        let to = to.unwrap_or(latest.tree_size);
        if let Some(size) = [from, to].into_iter().find(|&size| size > latest.tree_size) {
            return Err(no_tree(size, latest.tree_size));
        }
        // `to` given below `from` was refused before the read; defaulted to
        // the latest size, `from` above it is no tree of that size (above).
        if from > to {
            return Err(no_tree(from, latest.tree_size));
        }
        let proof = self
            .proofs
            .consistency(tenant, from, to, latest.tree_size)
            .await?;
        Ok(json_response(200, &proof))
    }

    pub(crate) async fn entries(
        &self,
        request: &Request,
        tenant: &str,
        page: EntryPage,
    ) -> Result<Response<Body>, ApiError> {
        let latest = self.latest(tenant).await?;
        let entries = self
            .proofs
            .entries(tenant, page.start, page.limit as u64, latest.tree_size)
            .await?;
        let next_start = page.start + entries.len() as u64;
        let mut links = json!({});
        if next_start < latest.tree_size {
            links["next"] = json!({"href": link(request, &self.config.api_base_path, &[("start", next_start.to_string()), ("limit", page.limit.to_string())])});
        }
        Ok(json_response(
            200,
            &json!({"treeSize": latest.tree_size, "entries": entries, "_links": links}),
        ))
    }
}
