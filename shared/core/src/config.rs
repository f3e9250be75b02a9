//! Deployment configuration, read once per process from the environment.

use std::time::Duration;

/// Longest `wait` a tail request may ask for, and the most
/// `TAIL_MAX_WAIT_SECONDS` may hold one: well inside API Gateway's 29 s.
pub const MAX_TAIL_WAIT_SECONDS: u64 = 20;
/// How long past its client's last attempt a write may still commit at the
/// table: the settle horizon is at least this past the latest commit.
const COMMIT_MARGIN: Duration = Duration::from_secs(2);

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
    /// (write deadline + one attempt, or one operation if longer); default
    /// that plus 2 s.
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
    /// `WARM_IN_INIT`: open the connection to the table during a cold
    /// start's init, not on its first request (default true).
    pub warm_in_init: bool,
    /// `CURSOR_SIGNING_KEY_SECRET_ARN`: the list function reads
    /// `cursor_signing_key` from this Secrets Manager secret at start.
    pub cursor_signing_key_secret_arn: Option<String>,
    /// `CHECKPOINT_KEY_SECRET_ARN`: the seal function reads
    /// `checkpoint_signing_key` from this Secrets Manager secret at start.
    pub checkpoint_key_secret_arn: Option<String>,
    /// `EVENT_BUS_NAME`: the EventBridge bus the stream and seal functions
    /// put entries on (default `default`).
    pub event_bus_name: String,
    /// `EVENT_SOURCE`: the `source` of those entries (default `audit-trail`).
    pub event_source: String,
    /// `API_BASE_PATH`: the path of the API mapping clients reach the API
    /// under on a custom domain (`/v1`), or empty. API Gateway leaves it
    /// out of `rawPath`, so the `_links` a page builds from the request
    /// would lack it, and a poller following `next` got a 404.
    pub api_base_path: String,
    /// `CHECKPOINT_ORIGIN`: the deployment's name in checkpoints; a tenant's
    /// log is `<origin>/<tenant>`, and the key is named `<origin>`
    /// (default `audit-trail.local`).
    pub checkpoint_origin: String,
    /// `CHECKPOINT_SIGNING_KEY`: secret text the Ed25519 checkpoint key is
    /// derived from (the seal function reads it from Secrets Manager).
    pub checkpoint_signing_key: String,
    /// `CHECKPOINT_VERIFIER_KEY`: the C2SP verifier key the API publishes;
    /// derived from the signing key when unset (locally).
    pub checkpoint_verifier_key: Option<String>,
    /// `SEAL_INTERVAL_SECONDS`: how often the sealer runs, 1..=3600 (default
    /// 60); writers mark a tenant for sealing once per interval.
    pub seal_interval: Duration,
    /// `CHECKPOINT_HEARTBEAT_SECONDS`: the longest a tenant with events goes
    /// without a new checkpoint, 60..=86400 (default 3600).
    pub checkpoint_heartbeat: Duration,
    /// `POSTING_BATCH_EVENTS`: the sealer writes a tenant's pivot postings
    /// once this many settled events wait for them, 1..=100000 (default
    /// 1000: a posting then lists about as many cursors as an item holds).
    pub posting_batch: u64,
    /// `POSTING_MAX_LAG_SECONDS`: ... or once they were last written this long ago,
    /// 0..=315360000 (default 3650 days, the longest retention; 0 posts every run).
    pub posting_max_lag: Duration,
}

/// As long as an event can be kept (3650 days): a tenant's postings wait
/// for a batch however slowly it writes, so each lists as many cursors as a
/// busy tenant's. Pivot reads scan the events waiting, at most a batch
/// however long they wait, so the lag bounds no read (docs/KEY-DESIGN.md,
/// "Posting cadence"). A week until 2026-12-05, an hour until 2026-12-04.
pub const DEFAULT_POSTING_MAX_LAG_SECONDS: u64 = MAX_POSTING_MAX_LAG_SECONDS;

/// The longest lag a deployment may set: the longest retention.
pub const MAX_POSTING_MAX_LAG_SECONDS: u64 = crate::settings::MAX_RETENTION_DAYS as u64 * 24 * 3600;

/// The checkpoint key used when none is configured (locally).
pub const DEVELOPMENT_CHECKPOINT_KEY: &str = "audit-trail-development-checkpoint-key";

/// The key used when none is configured: fine locally, refused nowhere, but
/// logged, because anyone could forge cursors with it.
pub const DEVELOPMENT_SIGNING_KEY: &str = "audit-trail-development-cursor-key";

/// A setting that is present but not valid: the process refuses to start
/// rather than run on a default the operator didn't choose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Reads settings from a lookup; each reader refuses an invalid value.
struct EnvReader<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> EnvReader<F> {
    /// The value if set and not empty.
    fn text(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable).filter(|v| !v.is_empty())
    }

    /// A number in `range`, or `default` when unset.
    fn number(
        &self,
        variable: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        match self.text(variable) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or(ConfigError {
                    variable,
                    value,
                    expected,
                }),
        }
    }

    fn millis(
        &self,
        variable: &'static str,
        default: u64,
        expected: &'static str,
    ) -> Result<Duration, ConfigError> {
        self.number(variable, default, 1..=3_600_000, expected)
            .map(Duration::from_millis)
    }

    fn seconds(
        &self,
        variable: &'static str,
        default: u64,
        max: u64,
        expected: &'static str,
    ) -> Result<Duration, ConfigError> {
        self.number(variable, default, 0..=max, expected)
            .map(Duration::from_secs)
    }

    fn flag(&self, variable: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(variable).as_deref() {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(ConfigError {
                variable,
                value: other.to_string(),
                expected: "true or false",
            }),
        }
    }
}

impl Config {
    /// The configuration from the process environment; `Err` names the
    /// first variable whose value is invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = EnvReader { lookup };
        const MS: &str = "milliseconds from 1 to 3600000";
        let write_deadline = settings.millis("WRITE_DEADLINE_MS", 6000, MS)?;
        let attempt_timeout = settings.millis("DYNAMODB_ATTEMPT_TIMEOUT_MS", 2000, MS)?;
        let operation_timeout = settings.millis("DYNAMODB_OPERATION_TIMEOUT_MS", 5000, MS)?;
        // The latest a write can commit: a deadline-bound write by the
        // deadline plus one attempt; a single put (the self-audit record,
        // started as its cursor is assigned) by one operation.
        let latest_commit = (write_deadline + attempt_timeout).max(operation_timeout);
        // An attempt the client gave up on may still commit at the table a
        // little later: the margin covers it.
        let shortest_horizon = latest_commit + COMMIT_MARGIN;
        let default_horizon = shortest_horizon.as_millis() as u64;
        let settle_horizon = settings.millis("SETTLE_HORIZON_MS", default_horizon, MS)?;
        // A horizon an assigned cursor can still commit behind would let the
        // tail hand out `next` past an event it never served.
        if settle_horizon < shortest_horizon {
            return Err(ConfigError {
                variable: "SETTLE_HORIZON_MS",
                value: settle_horizon.as_millis().to_string(),
                expected: "milliseconds at least 2000 past the latest a write can commit: WRITE_DEADLINE_MS + DYNAMODB_ATTEMPT_TIMEOUT_MS, or DYNAMODB_OPERATION_TIMEOUT_MS if that is longer",
            });
        }
        Ok(Config {
            table_name: settings
                .text("TABLE_NAME")
                .unwrap_or_else(|| "audit-trail".to_string()),
            tenant_claim: settings
                .text("TENANT_CLAIM")
                .unwrap_or_else(|| "tenant_id".to_string()),
            default_retention_days: settings.number(
                "DEFAULT_RETENTION_DAYS",
                90,
                1..=3650,
                "whole days from 1 to 3650",
            )? as u32,
            dynamodb_endpoint: settings.text("DYNAMODB_ENDPOINT"),
            write_deadline,
            attempt_timeout,
            operation_timeout,
            settle_horizon,
            query_read_budget: settings.number(
                "QUERY_READ_BUDGET",
                3000,
                100..=1_000_000,
                "items from 100 to 1000000",
            )? as usize,
            query_time_budget: settings.millis("QUERY_TIME_BUDGET_MS", 8000, MS)?,
            list_data_max_bytes: settings.number(
                "LIST_DATA_MAX_BYTES",
                8192,
                0..=400_000,
                "bytes from 0 to 400000",
            )? as usize,
            cursor_signing_key: settings
                .text("CURSOR_SIGNING_KEY")
                .unwrap_or_else(|| DEVELOPMENT_SIGNING_KEY.to_string()),
            poll_hint_seconds: settings.number(
                "POLL_HINT_SECONDS",
                5,
                0..=3600,
                "seconds from 0 to 3600",
            )?,
            tail_max_wait: settings.seconds(
                "TAIL_MAX_WAIT_SECONDS",
                MAX_TAIL_WAIT_SECONDS,
                MAX_TAIL_WAIT_SECONDS,
                "seconds from 0 to 20",
            )?,
            retention_cache: settings.seconds(
                "RETENTION_CACHE_SECONDS",
                60,
                86_400,
                "seconds from 0 to 86400",
            )?,
            self_audit_required: settings.flag("SELF_AUDIT_REQUIRED", false)?,
            metadata_extended: settings.flag("METADATA_EXTENDED", true)?,
            warm_in_init: settings.flag("WARM_IN_INIT", true)?,
            cursor_signing_key_secret_arn: settings.text("CURSOR_SIGNING_KEY_SECRET_ARN"),
            checkpoint_key_secret_arn: settings.text("CHECKPOINT_KEY_SECRET_ARN"),
            event_bus_name: settings
                .text("EVENT_BUS_NAME")
                .unwrap_or_else(|| "default".to_string()),
            event_source: settings
                .text("EVENT_SOURCE")
                .unwrap_or_else(|| "audit-trail".to_string()),
            api_base_path: match settings.text("API_BASE_PATH") {
                None => String::new(),
                Some(path) => {
                    let trimmed = path.trim_end_matches('/');
                    let segment_ok = |segment: &str| {
                        !segment.is_empty()
                            && segment
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
                    };
                    if trimmed.is_empty() {
                        String::new()
                    } else if trimmed.starts_with('/') && trimmed[1..].split('/').all(segment_ok) {
                        trimmed.to_string()
                    } else {
                        return Err(ConfigError {
                            variable: "API_BASE_PATH",
                            value: path,
                            expected: "empty, or a path such as /v1 or /audit/v1 (letters, digits, - . _ ~)",
                        });
                    }
                }
            },
            checkpoint_origin: match settings.text("CHECKPOINT_ORIGIN") {
                None => "audit-trail.local".to_string(),
                // A note's first line and a key name: no spaces, no `+`.
                Some(origin) if origin.chars().all(|c| c.is_ascii_graphic() && c != '+') => origin,
                Some(value) => {
                    return Err(ConfigError {
                        variable: "CHECKPOINT_ORIGIN",
                        value,
                        expected: "visible ASCII without spaces or `+`, e.g. audit.example.com",
                    })
                }
            },
            checkpoint_signing_key: settings
                .text("CHECKPOINT_SIGNING_KEY")
                .unwrap_or_else(|| DEVELOPMENT_CHECKPOINT_KEY.to_string()),
            checkpoint_verifier_key: settings.text("CHECKPOINT_VERIFIER_KEY"),
            seal_interval: Duration::from_secs(settings.number(
                "SEAL_INTERVAL_SECONDS",
                60,
                1..=3600,
                "seconds from 1 to 3600",
            )?),
            checkpoint_heartbeat: Duration::from_secs(settings.number(
                "CHECKPOINT_HEARTBEAT_SECONDS",
                3600,
                60..=86_400,
                "seconds from 60 to 86400",
            )?),
            posting_batch: settings.number(
                "POSTING_BATCH_EVENTS",
                1000,
                1..=100_000,
                "events from 1 to 100000",
            )?,
            posting_max_lag: Duration::from_secs(settings.number(
                "POSTING_MAX_LAG_SECONDS",
                DEFAULT_POSTING_MAX_LAG_SECONDS,
                0..=MAX_POSTING_MAX_LAG_SECONDS,
                "seconds from 0 to 315360000 (3650 days)",
            )?),
        })
    }

    /// The defaults, for one table (tests and tools).
    pub fn for_table(table_name: impl Into<String>) -> Self {
        let mut config = Self::defaults();
        config.table_name = table_name.into();
        config
    }

    /// Every setting at its default.
    pub fn defaults() -> Self {
        match Self::from_lookup(|_| None) {
            Ok(config) => config,
            // Unreachable: every default is within its own range.
            Err(err) => panic!("a default setting is invalid: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_base_path_is_a_plain_path_or_nothing() {
        let read = |value: &str| {
            let value = value.to_string();
            Config::from_lookup(move |key| (key == "API_BASE_PATH").then(|| value.clone()))
                .map(|c| c.api_base_path)
        };
        assert_eq!(read("").ok().as_deref(), Some(""));
        assert_eq!(read("/").ok().as_deref(), Some(""));
        assert_eq!(read("/v1").ok().as_deref(), Some("/v1"));
        assert_eq!(read("/audit/v1/").ok().as_deref(), Some("/audit/v1"));
        for bad in [
            "v1",
            "/v 1",
            "//v1",
            "/v1?x",
            "/v1#x",
            "/v%31",
            "https://x/v1",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_defaults_are_valid_and_documented_values() {
        let config = with(&[]).expect("defaults");
        assert_eq!(config.default_retention_days, 90);
        assert_eq!(config.settle_horizon, Duration::from_secs(10));
        assert_eq!(config.tail_max_wait, Duration::from_secs(20));
        assert!(!config.self_audit_required);
        assert!(config.metadata_extended);
        assert!(config.warm_in_init);
        // docs/CONFIGURATION.md: 3650 days, so a tenant of one event an
        // hour fills a batch of postings before the lag runs out.
        assert_eq!(config.posting_batch, 1000);
        assert_eq!(config.posting_max_lag, Duration::from_secs(315_360_000));
    }

    #[test]
    fn the_posting_lag_runs_from_every_run_to_the_longest_retention() {
        for (text, seconds) in [("0", 0), ("3600", 3600), ("315360000", 315_360_000)] {
            let config = with(&[("POSTING_MAX_LAG_SECONDS", text)]).expect(text);
            assert_eq!(config.posting_max_lag, Duration::from_secs(seconds));
        }
        for text in ["315360001", "-1", "a week"] {
            let err = with(&[("POSTING_MAX_LAG_SECONDS", text)]).expect_err(text);
            assert_eq!(err.variable, "POSTING_MAX_LAG_SECONDS");
        }
    }

    #[test]
    fn an_invalid_value_is_refused_naming_its_variable() {
        for (variable, value) in [
            ("DEFAULT_RETENTION_DAYS", "0"),
            ("DEFAULT_RETENTION_DAYS", "ninety"),
            ("WRITE_DEADLINE_MS", "-5"),
            ("SETTLE_HORIZON_MS", "10s"),
            ("QUERY_READ_BUDGET", "50"),
            ("TAIL_MAX_WAIT_SECONDS", "21"),
            ("SELF_AUDIT_REQUIRED", "yes"),
            ("METADATA_EXTENDED", "off"),
        ] {
            let err = with(&[(variable, value)]).expect_err(variable);
            assert_eq!(err.variable, variable);
            assert_eq!(err.value, value);
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn valid_values_are_taken() {
        let config = with(&[
            ("DEFAULT_RETENTION_DAYS", "30"),
            ("WRITE_DEADLINE_MS", "100"),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "50"),
            ("DYNAMODB_OPERATION_TIMEOUT_MS", "120"),
            ("SETTLE_HORIZON_MS", "2200"),
            ("SELF_AUDIT_REQUIRED", "true"),
            ("TABLE_NAME", "t"),
        ])
        .expect("valid");
        assert_eq!(config.default_retention_days, 30);
        assert_eq!(config.settle_horizon, Duration::from_millis(2200));
        assert!(config.self_audit_required);
        assert_eq!(config.table_name, "t");
    }

    /// The horizon must lie at least the margin past the latest a write can
    /// commit, however the timeouts that bound it are set: else the tail
    /// could pass an event by.
    #[test]
    fn a_settle_horizon_a_write_can_commit_behind_stops_the_process() {
        // Defaults: a write commits by 6000 + 2000 ms at the latest.
        for horizon in ["200", "8000", "9999"] {
            let err = with(&[("SETTLE_HORIZON_MS", horizon)]).expect_err(horizon);
            assert_eq!(err.variable, "SETTLE_HORIZON_MS");
            assert!(err.to_string().contains("WRITE_DEADLINE_MS"), "{err}");
        }
        assert!(with(&[("SETTLE_HORIZON_MS", "10000")]).is_ok());
        // The operation timeout bounds a single put when it is the longer.
        let err = with(&[
            ("DYNAMODB_OPERATION_TIMEOUT_MS", "20000"),
            ("SETTLE_HORIZON_MS", "15000"),
        ])
        .expect_err("an operation outlasts the horizon");
        assert_eq!(err.variable, "SETTLE_HORIZON_MS");
        // Lowering the timeouts is what allows a shorter horizon.
        assert!(with(&[
            ("WRITE_DEADLINE_MS", "100"),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "50"),
            ("DYNAMODB_OPERATION_TIMEOUT_MS", "120"),
            ("SETTLE_HORIZON_MS", "2150"),
        ])
        .is_ok());
    }

    /// The secrets' ARNs and the bus are read here like every setting: an
    /// empty value is unset, and the defaults are written once.
    #[test]
    fn the_secret_arns_and_the_bus_are_settings_like_the_others() {
        let defaults = with(&[
            ("CURSOR_SIGNING_KEY_SECRET_ARN", ""),
            ("CHECKPOINT_KEY_SECRET_ARN", ""),
            ("EVENT_BUS_NAME", ""),
        ])
        .expect("valid");
        assert_eq!(defaults.cursor_signing_key_secret_arn, None);
        assert_eq!(defaults.checkpoint_key_secret_arn, None);
        assert_eq!(defaults.event_bus_name, "default");
        assert_eq!(defaults.event_source, "audit-trail");
        let set = with(&[
            ("CURSOR_SIGNING_KEY_SECRET_ARN", "arn:cursor"),
            ("CHECKPOINT_KEY_SECRET_ARN", "arn:checkpoint"),
            ("EVENT_BUS_NAME", "audit"),
            ("EVENT_SOURCE", "acme.audit"),
        ])
        .expect("valid");
        assert_eq!(
            set.cursor_signing_key_secret_arn.as_deref(),
            Some("arn:cursor")
        );
        assert_eq!(
            set.checkpoint_key_secret_arn.as_deref(),
            Some("arn:checkpoint")
        );
        assert_eq!(
            (set.event_bus_name.as_str(), set.event_source.as_str()),
            ("audit", "acme.audit")
        );
    }
}
