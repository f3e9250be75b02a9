//! The `audit` CLI against a tenant of 100 000 events: export and tail
//! throughput and the client's peak resident memory.

use super::*;

/// Runs the release `audit` binary with `args`; (seconds, peak RSS kB).
async fn run_cli(binary: &std::path::Path, args: &[String]) -> Result<(f64, u64), BenchError> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let mut peak = 0;
    let status = loop {
        peak = peak.max(crate::runtime_api::rss_kb(pid));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if !status.success() {
        return Err(format!("audit {} exited with {status}", args.join(" ")).into());
    }
    Ok((started.elapsed().as_secs_f64(), peak))
}

pub async fn cli(events: usize) -> Result<Section, BenchError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "audit-cli",
            "--bin",
            "audit",
        ])
        .status()?;
    if !built.success() {
        return Err("cargo build --release -p audit-cli failed".into());
    }
    let binary = release_binary("audit");
    let env = TestEnv::start().await;
    let tenant = "exported";
    let now = Utc::now();
    let first = now - chrono::Duration::days(2);
    let step = chrono::Duration::days(1).num_milliseconds() / events.max(1) as i64;
    let items: Vec<Item> = (0..events)
        .map(|i| -> Result<Item, BenchError> {
            let at = first + chrono::Duration::milliseconds(step * i as i64);
            let fields = json!({"userId": format!("user-{:03}", i % 100), "eventType": format!("kind.{}", i % 10), "data": {"bucket": i % 1000, "path": format!("/v1/things/{i}")}});
            Ok(event_to_item(&sized_event(
                ulid::Ulid::from_datetime(at.into()).to_string(),
                tenant,
                at,
                700,
                fields,
            )?)?)
        })
        .collect::<Result<_, _>>()?;
    load_items(&env, items).await?;
    let base = env.serve().await;
    let token = env.token(tenant, "audit:read");
    let dir = std::env::temp_dir().join(format!("audit-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let from = format_time(first - chrono::Duration::seconds(1));
    let to = format_time(now);
    let mut rows = Vec::new();
    for format in ["ndjson", "csv", "ocsf"] {
        let out = dir.join(format!("export.{format}"));
        let args: Vec<String> = [
            "export", "--url", &base, "--token", &token, "--from", &from, "--to", &to, "--format",
            format, "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect();
        let (seconds, peak) = run_cli(&binary, &args).await?;
        let lines = std::fs::read_to_string(&out)?.lines().count();
        rows.push(format!(
            "| `audit export --format {format}` | {lines} lines | {:.0} | {:.1} MiB |",
            events as f64 / seconds,
            peak as f64 / 1024.0
        ));
    }
    let tail_args: Vec<String> = [
        "tail",
        "--url",
        &base,
        "--token",
        &token,
        "--self-audit",
        "exclude",
        "--format",
        "ndjson",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (seconds, peak) = run_cli(&binary, &tail_args).await?;
    rows.push(format!(
        "| `audit tail` (to the end of the settled trail, no `--follow`) | {events} events | {:.0} | {:.1} MiB |",
        events as f64 / seconds,
        peak as f64 / 1024.0
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let body = format!(
        "The release `audit` binary against the local gateway over the embedded store, one tenant of {events} ~700-byte events over a day (loaded by bulk import). Events/s is the whole command's wall time, the server's pages included, on this 2-core machine; peak RSS is the client's (VmHWM). The export streams page by page, so its memory does not grow with the range.\n\n| command | output | events/s | client peak RSS |\n| --- | --- | --- | --- |\n{}\n",
        rows.join("\n")
    );
    Ok(Section {
        title: "The `audit` CLI at volume".into(),
        body,
    })
}
