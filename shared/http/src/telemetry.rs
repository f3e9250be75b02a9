//! JSON logs for CloudWatch, one line per event; level from `RUST_LOG`.

/// The default filter. The SDK logs every error answer at WARN, expected
/// ones too (a missing table at start-up, a duplicate's failed condition),
/// and so does the embedded store `audit-local` serves (`dynoxide`): the
/// code classifies and logs what matters itself.
pub const DEFAULT_FILTER: &str =
    "info,aws_smithy_runtime=error,aws_smithy_runtime_api=error,dynoxide=error";

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time() // Lambda stamps every line itself
        // stdout stays free for output (the local relay prints events there)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Counts a self-audit record that could not be written: a CloudWatch
/// embedded-metric line (`AuditTrail/SelfAuditFailures` by `Route`). On
/// stderr, which Lambda sends to CloudWatch Logs like stdout, so that stdout
/// stays free for what a program streams (the local relay's events).
pub fn count_self_audit_failure(route: &'static str) {
    use std::io::Write;
    // Never `eprintln!`: it panics when stderr is closed, here on a request.
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        serde_json::json!({
            "_aws": {"Timestamp": epoch_millis(), "CloudWatchMetrics": [{
                "Namespace": "AuditTrail", "Dimensions": [["Route"]],
                "Metrics": [{"Name": "SelfAuditFailures", "Unit": "Count"}]}]},
            "Route": route,
            "SelfAuditFailures": 1,
        })
    );
}

/// Counts a stream record that is not a readable event, which the stream
/// function skips (`AuditTrail/UnreadableStreamRecords`): an embedded-metric
/// line, as [`count_self_audit_failure`] writes.
pub fn count_unreadable_stream_record() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        serde_json::json!({
            "_aws": {"Timestamp": epoch_millis(), "CloudWatchMetrics": [{
                "Namespace": "AuditTrail", "Dimensions": [[]],
                "Metrics": [{"Name": "UnreadableStreamRecords", "Unit": "Count"}]}]},
            "UnreadableStreamRecords": 1,
        })
    );
}

fn epoch_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
