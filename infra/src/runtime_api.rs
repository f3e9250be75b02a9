//! A small stand-in for the Lambda Runtime API, so a built `bootstrap`
//! binary can be started as Lambda starts it and handed events: proves the
//! `main.rs` wiring, and times cold starts (exec → first `next`).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

#[derive(Default)]
struct Shared {
    queued: Vec<Value>,
    first_next: Option<Instant>,
    /// When the invocation being served was handed out.
    handed_out: Option<Instant>,
    responses: Vec<(u16, Value, Duration)>,
}

#[derive(Clone)]
pub struct RuntimeApi {
    pub address: String,
    shared: Arc<Mutex<Shared>>,
}

async fn next(State(api): State<RuntimeApi>) -> (StatusCode, HeaderMap, String) {
    if let Ok(mut shared) = api.shared.lock() {
        shared.first_next.get_or_insert_with(Instant::now);
    }
    loop {
        let event = api.shared.lock().ok().and_then(|mut s| {
            (!s.queued.is_empty()).then(|| {
                s.handed_out = Some(Instant::now());
                s.queued.remove(0)
            })
        });
        if let Some(event) = event {
            let mut headers = HeaderMap::new();
            let id = ulid::Ulid::new().to_string();
            let deadline = (chrono::Utc::now() + chrono::Duration::seconds(30))
                .timestamp_millis()
                .to_string();
            for (name, value) in [
                ("lambda-runtime-aws-request-id", id.as_str()),
                ("lambda-runtime-deadline-ms", deadline.as_str()),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:000000000000:function:local",
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000",
                ),
            ] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            return (StatusCode::OK, headers, event.to_string());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn respond(
    State(api): State<RuntimeApi>,
    UrlPath(_id): UrlPath<String>,
    body: String,
) -> StatusCode {
    record(&api, 200, &body);
    StatusCode::ACCEPTED
}

async fn fail(State(api): State<RuntimeApi>, body: String) -> StatusCode {
    record(&api, 500, &body);
    StatusCode::ACCEPTED
}

async fn fail_invocation(
    State(api): State<RuntimeApi>,
    UrlPath(_id): UrlPath<String>,
    body: String,
) -> StatusCode {
    record(&api, 500, &body);
    StatusCode::ACCEPTED
}

/// The invocation ends when its response has arrived: it is timed before
/// this process parses it (a 1 MB page took it a few ms), which Lambda
/// would not charge to the function.
fn record(api: &RuntimeApi, status: u16, body: &str) {
    let took = api
        .shared
        .lock()
        .ok()
        .and_then(|shared| shared.handed_out)
        .map(|t| t.elapsed())
        .unwrap_or_default();
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    if let Ok(mut shared) = api.shared.lock() {
        shared.responses.push((status, value, took));
    }
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = RuntimeApi {
            address: listener.local_addr()?.to_string(),
            shared: Arc::default(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(fail_invocation),
            )
            .route("/2018-06-01/runtime/init/error", post(fail))
            .with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(api)
    }

    pub fn queue(&self, event: Value) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.queued.push(event);
        }
    }

    fn first_next(&self) -> Option<Instant> {
        self.shared.lock().ok().and_then(|s| s.first_next)
    }

    fn take_response(&self) -> Option<(u16, Value, Duration)> {
        self.shared
            .lock()
            .ok()
            .and_then(|mut s| (!s.responses.is_empty()).then(|| s.responses.remove(0)))
    }
}

/// The environment Lambda gives a function (plus the deployment's own).
pub fn lambda_environment(
    runtime_api: &str,
    function: &str,
    extra: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", function),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/local"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "local"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_SESSION_TOKEN", "local"),
        ("_HANDLER", "bootstrap"),
        ("PATH", "/usr/bin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(extra.clone());
    env
}

pub struct Invocation {
    /// From exec to the binary's first `GET /next`: its init time.
    pub init: Duration,
    pub status: u16,
    pub response: Value,
    /// From handing the event out to receiving the response.
    pub duration: Duration,
    /// Peak resident memory of the process, kB (from /proc while it ran).
    pub peak_rss_kb: u64,
    /// CPU time the process used while it served this invocation, every
    /// thread, from the scheduler's nanosecond counters.
    pub cpu: Duration,
}

/// Starts `binary` as Lambda would, hands it `events` one by one, and
/// returns each response. The process is stopped afterwards.
pub async fn run_binary(
    binary: &Path,
    env: HashMap<String, String>,
    events: Vec<Value>,
) -> Result<Vec<Invocation>, String> {
    run_binary_in(binary, env, events, CpuShare::Unlimited).await
}

/// Where a process runs under a CPU share (a cgroup directory: v1 `cpu`
/// controller, or v2).
#[derive(Clone, Copy, Debug)]
pub enum CpuShare<'a> {
    /// No limit.
    Unlimited,
    /// In the cgroup from its first instruction: init is throttled too.
    FromExec(&'a Path),
    /// Moved into the cgroup once init is done (its first `GET /next`), as
    /// Lambda gives init a full CPU burst and requests the memory's share.
    AfterInit(&'a Path),
}

/// As [`run_binary`], with the process under a CPU share.
pub async fn run_binary_in(
    binary: &Path,
    env: HashMap<String, String>,
    events: Vec<Value>,
    share: CpuShare<'_>,
) -> Result<Vec<Invocation>, String> {
    run_binary_paced(binary, env, events, share, Duration::ZERO).await
}

/// As [`run_binary_in`], idle for `pause` after each answer before the next
/// event, as a function is between requests that do not arrive back to back.
pub async fn run_binary_paced(
    binary: &Path,
    env: HashMap<String, String>,
    events: Vec<Value>,
    share: CpuShare<'_>,
    pause: Duration,
) -> Result<Vec<Invocation>, String> {
    let api = RuntimeApi::start().await.map_err(|e| e.to_string())?;
    let mut env = env;
    env.insert("AWS_LAMBDA_RUNTIME_API".into(), api.address.clone());
    let started = Instant::now();
    let mut command = match share {
        // The shell joins the cgroup, then becomes the binary.
        CpuShare::FromExec(cgroup) => {
            let mut command = tokio::process::Command::new("/bin/sh");
            command
                .arg("-c")
                .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$1\"")
                .arg(cgroup)
                .arg(binary);
            command
        }
        CpuShare::Unlimited | CpuShare::AfterInit(_) => tokio::process::Command::new(binary),
    };
    let mut child = command
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id().unwrap_or(0);
    if let CpuShare::AfterInit(cgroup) = share {
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.first_next().is_none() {
            if Instant::now() > deadline {
                return Err(format!("{} never asked for an event", binary.display()));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{} exited: {status}", binary.display()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // `cgroup.procs` moves every thread of the process.
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move {pid} into {}: {e}", cgroup.display()))?;
    }
    let mut results = Vec::new();
    let mut peak = 0;
    for (i, event) in events.into_iter().enumerate() {
        // Read before the pause: what the process spends after an answer
        // (dropping the response, asking for the next event) counts for
        // the next invocation, as it did back to back.
        let cpu_before = cpu_time(pid);
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        api.queue(event);
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            peak = peak.max(rss_kb(pid));
            if let Some(answer) = api.take_response() {
                break answer;
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(format!("{} gave no response", binary.display()));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{} exited: {status}", binary.display()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        peak = peak.max(rss_kb(pid));
        let cpu = cpu_time(pid).saturating_sub(cpu_before);
        let init = api
            .first_next()
            .map(|t| t.duration_since(started))
            .unwrap_or_default();
        results.push(Invocation {
            init,
            status: answer.0,
            response: answer.1,
            duration: answer.2,
            peak_rss_kb: peak,
            cpu,
        });
    }
    let _ = child.kill().await;
    Ok(results)
}

/// CPU time a process has used so far, every thread: the first field of
/// each `/proc/<pid>/task/*/schedstat` (ns; finer than `stat`'s ticks).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// VmHWM (peak resident set) of a process, kB; 0 when unknown.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
