//! JSON logs for CloudWatch, one line per event; level from `RUST_LOG`.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
