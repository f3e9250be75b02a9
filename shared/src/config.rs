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
}

impl Config {
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let millis = |key: &str, default: u64| {
            Duration::from_millis(lookup(key).and_then(|v| v.parse().ok()).unwrap_or(default))
        };
        Config {
            table_name: lookup("TABLE_NAME").unwrap_or_else(|| "audit-trail".to_string()),
            tenant_claim: lookup("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_string()),
            default_retention_days: lookup("DEFAULT_RETENTION_DAYS")
                .and_then(|v| v.parse().ok())
                .filter(|days| (1..=3650).contains(days))
                .unwrap_or(90),
            dynamodb_endpoint: lookup("DYNAMODB_ENDPOINT").filter(|v| !v.is_empty()),
            write_deadline: millis("WRITE_DEADLINE_MS", 6000),
            attempt_timeout: millis("DYNAMODB_ATTEMPT_TIMEOUT_MS", 2000),
            operation_timeout: millis("DYNAMODB_OPERATION_TIMEOUT_MS", 5000),
        }
    }

    pub fn for_table(table_name: impl Into<String>) -> Self {
        let mut config = Self::from_lookup(|_| None);
        config.table_name = table_name.into();
        config
    }
}
