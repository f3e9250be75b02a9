//! Deployment configuration, read once per process from the environment.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `TABLE_NAME`: the one DynamoDB table.
    pub table_name: String,
    /// `TENANT_CLAIM`: the JWT claim that names the tenant (default `tenant_id`).
    pub tenant_claim: String,
    /// `DEFAULT_RETENTION_DAYS`: retention for tenants without their own (default 90).
    pub default_retention_days: u32,
    /// `DYNAMODB_ENDPOINT`: an alternative endpoint (DynamoDB Local, the embedded store).
    pub dynamodb_endpoint: Option<String>,
    /// `WRITE_DEADLINE_MS`: after this long from cursor assignment ingest starts no
    /// new write attempt (default 6000). Bounds how late an assigned cursor can commit.
    pub write_deadline: Duration,
    /// `DYNAMODB_ATTEMPT_TIMEOUT_MS`: one SDK attempt (default 2000).
    pub attempt_timeout: Duration,
    /// `DYNAMODB_OPERATION_TIMEOUT_MS`: one SDK operation with its retries (default 5000).
    pub operation_timeout: Duration,
    /// `SETTLE_HORIZON_MS`: `GET /audit` serves only events whose cursor is
    /// older than this. Must exceed the latest an assigned cursor can commit
    /// (write deadline + one attempt); default that plus 2 s.
    pub settle_horizon: Duration,
    /// `QUERY_READ_BUDGET`: most items one query request reads (default 3000).
    pub query_read_budget: usize,
    /// `QUERY_TIME_BUDGET_MS`: most time one query request reads (default 8000).
    pub query_time_budget: Duration,
    /// `LIST_DATA_MAX_BYTES`: `data` beyond this is shortened in pages (default 8192).
    pub list_data_max_bytes: usize,
    /// `CURSOR_SIGNING_KEY`: HMAC key for query cursors.
    pub cursor_signing_key: String,
    /// `POLL_HINT_SECONDS`: `Retry-After` on a tail page that reached the horizon (default 5).
    pub poll_hint_seconds: u64,
    /// `TAIL_MAX_WAIT_SECONDS`: the longest a long-poll (`wait`) is held,
    /// whatever the request asks, 0..=20 (default 20). Lower it to pay for
    /// less Lambda time per idle poller; a poller then just polls sooner.
    pub tail_max_wait: Duration,
    /// `RETENTION_CACHE_SECONDS`: how long a process trusts a tenant's
    /// retention setting before reading it again (default 60).
    pub retention_cache: Duration,
    /// `SELF_AUDIT_REQUIRED`: answer 503 when a read's own audit record
    /// can't be written (default false: answer, log, count).
    pub self_audit_required: bool,
    /// `METADATA_EXTENDED`: record `data.*` properties for metadata (default true).
    pub metadata_extended: bool,
}

/// The key used when none is configured: fine locally, refused nowhere, but
/// logged, because anyone could forge cursors with it.
pub const DEVELOPMENT_SIGNING_KEY: &str = "audit-trail-development-cursor-key";

impl Config {
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let millis = |key: &str, default: u64| {
            Duration::from_millis(lookup(key).and_then(|v| v.parse().ok()).unwrap_or(default))
        };
        let write_deadline = millis("WRITE_DEADLINE_MS", 6000);
        let attempt_timeout = millis("DYNAMODB_ATTEMPT_TIMEOUT_MS", 2000);
        let default_horizon =
            (write_deadline + attempt_timeout + Duration::from_secs(2)).as_millis() as u64;
        let number =
            |key: &str, default: usize| lookup(key).and_then(|v| v.parse().ok()).unwrap_or(default);
        Config {
            table_name: lookup("TABLE_NAME").unwrap_or_else(|| "audit-trail".to_string()),
            tenant_claim: lookup("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_string()),
            default_retention_days: lookup("DEFAULT_RETENTION_DAYS")
                .and_then(|v| v.parse().ok())
                .filter(|days| (1..=3650).contains(days))
                .unwrap_or(90),
            dynamodb_endpoint: lookup("DYNAMODB_ENDPOINT").filter(|v| !v.is_empty()),
            write_deadline,
            attempt_timeout,
            operation_timeout: millis("DYNAMODB_OPERATION_TIMEOUT_MS", 5000),
            settle_horizon: millis("SETTLE_HORIZON_MS", default_horizon),
            query_read_budget: number("QUERY_READ_BUDGET", 3000).max(100),
            query_time_budget: millis("QUERY_TIME_BUDGET_MS", 8000),
            list_data_max_bytes: number("LIST_DATA_MAX_BYTES", 8192),
            cursor_signing_key: lookup("CURSOR_SIGNING_KEY")
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| DEVELOPMENT_SIGNING_KEY.to_string()),
            poll_hint_seconds: number("POLL_HINT_SECONDS", 5) as u64,
            tail_max_wait: Duration::from_secs(number("TAIL_MAX_WAIT_SECONDS", 20).min(20) as u64),
            retention_cache: Duration::from_secs(number("RETENTION_CACHE_SECONDS", 60) as u64),
            self_audit_required: lookup("SELF_AUDIT_REQUIRED")
                .is_some_and(|v| v == "true" || v == "1"),
            metadata_extended: !lookup("METADATA_EXTENDED")
                .is_some_and(|v| v == "false" || v == "0"),
        }
    }

    pub fn for_table(table_name: impl Into<String>) -> Self {
        let mut config = Self::from_lookup(|_| None);
        config.table_name = table_name.into();
        config
    }
}
