//! `GET /audit/metadata`, `GET /audit/metadata/properties` (what can be
//! queried) and `GET`/`PUT /audit/settings` (the tenant's retention).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use audit_core::auth::Caller;
use audit_core::error::parse_json_body;
use audit_core::event::format_time;
use audit_core::event::queryable_fields;
use audit_core::metadata::{ObservedProperty, MAX_LISTED_PROPERTIES};
use audit_core::pivot::PIVOT_INDEXES;
use audit_core::query::{operators_for_json_type, FieldPath, FieldType};
use audit_core::routes::{self_audit_event_types, Route};
use audit_core::selfaudit::{read_record_properties, SelfAuditor, SELF_AUDIT_SERVICE};
use audit_core::settings::{validate_retention, TenantSettings};
use audit_core::{ApiError, Config, EventStore};
use audit_http::request::{authorised, facts, not_served, query_parameters, require_json};
use audit_http::response::json_response;
use audit_http::runtime::HttpHandler;
use audit_http::telemetry::count_self_audit_failure;
use chrono::Utc;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

/// Tries of a settings change that finds the settings changed under it
/// before it answers 503: each try loses only to a change that landed.
const SETTINGS_ATTEMPTS: u32 = 50;

pub const TARGETS: &[&str] = &["event", "data", "indexedData"];

pub struct PropertiesQuery {
    target: String,
    service: String,
    event_type: Option<String>,
}

fn parse_properties(request: &Request) -> Result<PropertiesQuery, ApiError> {
    let params = query_parameters(request, Route::Properties.spec().query)?;
    let target = params
        .get("target")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "target",
                "`target` is required (event, data or indexedData)",
            )
        })?;
    if !TARGETS.contains(&target.as_str()) {
        return Err(ApiError::bad_request(
            "target",
            "`target` is event, data or indexedData",
        ));
    }
    let service = params
        .get("serviceName")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("serviceName", "`serviceName` is required"))?;
    Ok(PropertiesQuery {
        target: target.clone(),
        service: service.clone(),
        event_type: match params.get("eventType") {
            // No event type is empty, so `eventType=` can only be a mistake.
            Some(empty) if empty.is_empty() => {
                return Err(ApiError::bad_request(
                    "eventType",
                    "`eventType` may not be empty; leave it out for every event type",
                ))
            }
            other => other.cloned(),
        },
    })
}

pub struct MetadataHandler<S> {
    store: Arc<S>,
    auditor: SelfAuditor<S>,
    tenant_claim: String,
    default_retention_days: u32,
    extended: bool,
}

fn operators(field_type: FieldType) -> Vec<&'static str> {
    field_type.operators().iter().map(|o| o.name()).collect()
}

/// The operators that apply to an observed JSON type under `data.*`.
fn operators_for_json(json_type: &str) -> Vec<&'static str> {
    operators_for_json_type(json_type)
        .iter()
        .map(|o| o.name())
        .collect()
}

/// A property as both metadata routes list it: top-level fields with their
/// field type (`time` for times), observed `data` and `indexedData` paths
/// with their JSON type. `None` for a name no query could use.
fn describe(property: &ObservedProperty) -> Option<Value> {
    FieldPath::parse(&property.name)?;
    let top_level = queryable_fields().find(|(name, _)| *name == property.name);
    let (type_name, ops) = match (property.target(), top_level) {
        ("event", Some((_, field_type))) => (field_type.name(), operators(field_type)),
        _ => (
            property.json_type.as_str(),
            operators_for_json(&property.json_type),
        ),
    };
    Some(json!({"name": property.name, "type": type_name, "operators": ops}))
}

impl<S: EventStore + 'static> HttpHandler for MetadataHandler<S> {
    async fn respond(&self, request: Request) -> Result<Response<Body>, ApiError> {
        self.try_handle(&request).await
    }
}

impl<S: EventStore> MetadataHandler<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        let auditor = SelfAuditor::for_config(Arc::clone(&store), config)
            .counting_failures_with(count_self_audit_failure);
        Self {
            store,
            auditor,
            tenant_claim: config.tenant_claim.clone(),
            default_retention_days: config.default_retention_days,
            extended: config.metadata_extended,
        }
    }

    async fn try_handle(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let (route, caller) = authorised(request, &self.tenant_claim)?;
        // Only authorised, well-formed reads are recorded: bad input changes nothing.
        match route {
            Route::Metadata => {
                self.auditor
                    .around(&caller, facts(request, route), self.metadata(&caller))
                    .await
            }
            Route::Properties => {
                let wanted = parse_properties(request)?;
                self.auditor
                    .around(
                        &caller,
                        facts(request, route),
                        self.properties(&caller, wanted),
                    )
                    .await
            }
            Route::GetSettings => {
                self.auditor
                    .around(&caller, facts(request, route), self.get_settings(&caller))
                    .await
            }
            Route::PutSettings => self.put_settings(request, route, &caller).await,
            other => Err(not_served(other)),
        }
    }

    async fn metadata(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
        let mut observed = self
            .store
            .read_properties(&caller.tenant, None, None)
            .await?;
        let truncated = observed.len() > MAX_LISTED_PROPERTIES;
        observed.truncate(MAX_LISTED_PROPERTIES);
        // Reads' own records are listed, not recorded (`record_properties`).
        observed.extend(read_record_properties(|_| true));
        let mut services: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        // The API's own records are in every tenant's trail.
        services.insert(SELF_AUDIT_SERVICE, self_audit_event_types().collect());
        let mut by_target: BTreeMap<&str, BTreeMap<(String, String), Value>> = BTreeMap::new();
        for property in &observed {
            services
                .entry(&property.service_name)
                .or_default()
                .insert(&property.event_type);
            if property.target() != "event" {
                if let Some(described) = describe(property) {
                    by_target.entry(property.target()).or_default().insert(
                        (property.name.clone(), property.json_type.clone()),
                        described,
                    );
                }
            }
        }
        let event_fields: Vec<Value> = queryable_fields()
            .map(|(name, field_type)| {
                json!({"name": name, "type": field_type.name(), "operators": operators(field_type), "indexed": PIVOT_INDEXES.iter().any(|i| i.field == name)})
            })
            .collect();
        let observed_fields = |target: &str| -> Vec<Value> {
            by_target
                .get(target)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        Ok(json_response(
            200,
            &json!({
                "extended": self.extended,
                "truncated": truncated,
                "targets": [
                    {"target": "event", "description": "top-level event fields", "fields": event_fields},
                    {"target": "data", "description": "data.<path>: properties seen in this tenant's events, and those of the API's own read records", "fields": observed_fields("data")},
                    {"target": "indexedData", "description": "indexedData.<key>: string properties seen in this tenant's events", "fields": observed_fields("indexedData")},
                ],
                "services": services.iter().map(|(service, types)| json!({"serviceName": service, "eventTypes": types})).collect::<Vec<_>>(),
            }),
        ))
    }

    async fn properties(
        &self,
        caller: &Caller,
        wanted: PropertiesQuery,
    ) -> Result<Response<Body>, ApiError> {
        let PropertiesQuery {
            target,
            service,
            event_type,
        } = wanted;
        let mut observed = self
            .store
            .read_properties(&caller.tenant, Some(&service), event_type.as_deref())
            .await?;
        let truncated = observed.len() > MAX_LISTED_PROPERTIES;
        observed.truncate(MAX_LISTED_PROPERTIES);
        if service == SELF_AUDIT_SERVICE {
            observed.extend(read_record_properties(|kind| {
                event_type.as_deref().is_none_or(|wanted| wanted == kind)
            }));
        }
        let mut unique: BTreeMap<(String, String), Value> = BTreeMap::new();
        for property in observed.iter().filter(|p| p.target() == target) {
            if let Some(described) = describe(property) {
                unique
                    .entry((property.name.clone(), property.json_type.clone()))
                    .or_insert(described);
            }
        }
        Ok(json_response(
            200,
            &json!({"properties": unique.into_values().collect::<Vec<_>>(), "truncated": truncated}),
        ))
    }

    /// The tenant's settings, and whether they are the default. `consistent`
    /// for a change, which must start from the latest.
    async fn current_settings(
        &self,
        tenant: &str,
        consistent: bool,
    ) -> Result<(TenantSettings, bool), ApiError> {
        let stored = if consistent {
            self.store.get_settings_consistent(tenant).await?
        } else {
            self.store.get_settings(tenant).await?
        };
        Ok(match stored {
            Some(settings) => (settings, false),
            None => (
                TenantSettings {
                    retention_days: self.default_retention_days,
                    updated_at: None,
                    updated_by: None,
                    change_cursor: None,
                },
                true,
            ),
        })
    }

    async fn get_settings(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
        let (settings, is_default) = self.current_settings(&caller.tenant, false).await?;
        let mut body = serde_json::to_value(&settings).unwrap_or_default();
        body["default"] = json!(is_default);
        Ok(json_response(200, &body))
    }

    async fn put_settings(
        &self,
        request: &Request,
        route: Route,
        caller: &Caller,
    ) -> Result<Response<Body>, ApiError> {
        require_json(request)?;
        let body = parse_json_body(request.body().as_ref(), "{\"retentionDays\": n}")?;
        let retention_days = validate_retention(&body)?;
        // Read, then write only over what was read, with the change's record
        // in the same transaction: of concurrent changes, each records the
        // value it really replaced, and none lands unrecorded.
        let facts = facts(request, route);
        let mut attempt = 0u32;
        let (settings, record) = loop {
            let (before, is_default) = self.current_settings(&caller.tenant, true).await?;
            let record = self
                .auditor
                .change_record(
                    caller,
                    &facts,
                    json!({"retentionDays": {"from": before.retention_days, "to": retention_days}}),
                    // Both are known here: the retention read back after
                    // the change may still be the old one.
                    before.retention_days.max(retention_days),
                )
                .await?;
            let settings = TenantSettings {
                retention_days,
                updated_at: Some(format_time(Utc::now())),
                updated_by: caller.subject.clone().or_else(|| caller.client_id.clone()),
                change_cursor: Some(record.cursor.clone()),
            };
            let expected = (!is_default).then_some(&before);
            let written = self
                .store
                .replace_settings(&caller.tenant, &settings, expected, &record)
                .await;
            if matches!(written, Ok(true)) {
                break (settings, record);
            }
            // Refused, or no answer: a write whose answer was lost may have
            // landed (the SDK's retry of it is then refused by the write
            // itself). Its cursor in the settings says so.
            let landed = self.store.get_settings_consistent(&caller.tenant).await?;
            if landed.is_some_and(|landed| landed.change_cursor == settings.change_cursor) {
                break (settings, record);
            }
            written?;
            attempt += 1;
            if attempt >= SETTINGS_ATTEMPTS {
                return Err(ApiError::Unavailable {
                    retry_after_seconds: 1,
                });
            }
            // Apart, so racing changes don't meet again at once.
            // (The clock's nanoseconds are jitter enough for this.)
            let jitter = 5 + u64::from(Utc::now().timestamp_subsec_nanos() % 20);
            tokio::time::sleep(std::time::Duration::from_millis(
                jitter * u64::from(attempt.min(8)),
            ))
            .await;
        };
        self.auditor.retention().forget(&caller.tenant);
        self.auditor.change_recorded(&record).await;
        let mut body = serde_json::to_value(&settings).unwrap_or_default();
        body["default"] = json!(false);
        Ok(json_response(200, &body))
    }
}
