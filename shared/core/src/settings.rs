//! Per-tenant settings (retention), cached per process for a short time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{ApiError, StoreError};
use crate::store::EventStore;
pub use crate::store::TenantSettings;

pub const MIN_RETENTION_DAYS: u32 = 1;
pub const MAX_RETENTION_DAYS: u32 = 3650;

pub fn validate_retention(value: &serde_json::Value) -> Result<u32, ApiError> {
    let Some(map) = value.as_object() else {
        return Err(ApiError::bad_request("body", "send {\"retentionDays\": n}"));
    };
    if let Some(unknown) = map.keys().find(|k| k.as_str() != "retentionDays") {
        return Err(ApiError::bad_request(
            unknown.clone(),
            format!("unknown field `{unknown}`; settings take `retentionDays`"),
        ));
    }
    // A whole number in any spelling (`30`, `30.0`), as JSON Schema's integer.
    let whole = map.get("retentionDays").and_then(|v| {
        v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e6)
                .map(|f| f as u64)
        })
    });
    match whole {
        Some(days) if (u64::from(MIN_RETENTION_DAYS)..=u64::from(MAX_RETENTION_DAYS)).contains(&days) => Ok(days as u32),
        _ => Err(ApiError::bad_request(
            "retentionDays",
            format!("`retentionDays` must be a whole number from {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}"),
        )),
    }
}

/// The tenant's retention, read through a short per-process cache so ingest
/// doesn't read the settings item for every request. A change takes effect
/// within `ttl` in every process.
pub struct RetentionCache<S> {
    store: Arc<S>,
    default_days: u32,
    ttl: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl<S: EventStore> RetentionCache<S> {
    pub fn new(store: Arc<S>, default_days: u32, ttl: Duration) -> Self {
        Self {
            store,
            default_days,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn retention_days(&self, tenant: &str) -> Result<u32, StoreError> {
        if let Ok(entries) = self.entries.lock() {
            if let Some((days, at)) = entries.get(tenant) {
                if at.elapsed() < self.ttl {
                    return Ok(*days);
                }
            }
        }
        let days = self
            .store
            .get_settings(tenant)
            .await?
            .map(|s| s.retention_days)
            .unwrap_or(self.default_days);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(tenant.to_string(), (days, Instant::now()));
        }
        Ok(days)
    }

    /// After this process changed a tenant's settings.
    pub fn forget(&self, tenant: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(tenant);
        }
    }
}
