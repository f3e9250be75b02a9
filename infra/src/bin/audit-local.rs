//! `audit-local`: the whole Audit Trail API on one port, over the embedded
//! DynamoDB-compatible store (or any endpoint, e.g. DynamoDB Local).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use audit_core::Config;
use audit_dynamo::table;
use audit_infra::app::Functions;
use audit_infra::devauth::{parse_ttl, DevAuth};
use audit_infra::embedded::EmbeddedStore;
use audit_infra::gateway::Gateway;
use clap::{Parser, Subcommand};

/// `eprintln!` that never panics: a closed stderr only loses the line.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "audit-local",
    about = "Run the Audit Trail API on your machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route on http://127.0.0.1:<port>.
    Serve {
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// SQLite file of the embedded store (kept across restarts).
        #[arg(long, default_value = ".local/audit-trail.sqlite", conflicts_with_all = ["memory", "endpoint"])]
        data: String,
        /// Keep the embedded store in memory only.
        #[arg(long, conflicts_with = "endpoint")]
        memory: bool,
        /// Use this DynamoDB endpoint (e.g. DynamoDB Local) instead of the embedded store.
        #[arg(long)]
        endpoint: Option<String>,
        /// Where the stream relay delivers events: `stdout` (NDJSON) and/or
        /// an http(s) URL that receives each as a POST. Repeatable.
        #[arg(long = "subscriber", default_value = "stdout")]
        subscribers: Vec<audit_infra::relay::Subscriber>,
        /// Don't run the stream relay.
        #[arg(long)]
        no_relay: bool,
        /// Where the relay keeps what it gives up on, one JSON line each (the
        /// template's StreamFailureQueue): entries a subscriber refuses with
        /// a status EventBridge doesn't retry, and records the stream
        /// handler fails 10 retries running.
        #[arg(long, default_value = ".local/dead-letters.ndjson")]
        dead_letters: String,
        /// How often the sealer appends settled events to each tenant's
        /// integrity log and signs a checkpoint (e.g. 5s, 1m).
        #[arg(long, default_value = "5s")]
        seal_every: String,
        /// Don't run the sealer.
        #[arg(long)]
        no_seal: bool,
        /// Serve although this machine's clock is behind what the stored
        /// log has sealed (events written until it catches up may never be
        /// sealed: `audit verify` calls them forged).
        #[arg(long)]
        clock_behind_ok: bool,
        /// Table name.
        #[arg(long, env = "TABLE_NAME", default_value = "audit-trail")]
        table: String,
    },
    /// Print a development token that `serve` accepts.
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "audit:read audit:write")]
        scope: String,
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The token's `client_id` (e.g. `siem`, to try `selfAudit=others`).
        #[arg(long, default_value = audit_infra::devauth::DEV_CLIENT_ID)]
        client: String,
        /// The token's subject (`sub`); default `dev-user@<tenant>`.
        #[arg(long)]
        subject: Option<String>,
    },
}

/// Refuses to serve when this machine's clock is behind what the stored
/// log has already sealed (a restart after the clock stepped back): new
/// events would get cursors the sealer has passed, and be stored but never
/// sealed, which `audit verify` reports as forged.
async fn refuse_a_clock_behind_the_sealer(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    allowed: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use audit_core::integrity::LogStore;
    let store = audit_dynamo::DynamoStore::new(client.clone(), table);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let sealed_ms = store
        .seal_queue()
        .await?
        .iter()
        .map(|mark| mark.sealed_through_ms)
        .max()
        .unwrap_or(0);
    if sealed_ms > now_ms {
        let at = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(audit_core::event::format_time)
                .unwrap_or_default()
        };
        let why = format!(
            "this machine's clock ({}) is behind what the stored log has sealed ({}): events written now may be stored but never sealed (audit verify would call them forged)",
            at(now_ms),
            at(sealed_ms)
        );
        if allowed {
            tracing::warn!("{why}; serving anyway (--clock-behind-ok)");
            return Ok(());
        }
        return Err(format!(
            "{why}. Set the clock right, start after {}, or pass --clock-behind-ok",
            at(sealed_ms)
        )
        .into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token {
            tenant,
            scope,
            ttl,
            client,
            subject,
        } => {
            let ttl = parse_ttl(&ttl)?;
            if !audit_core::auth::is_valid_tenant(&tenant) {
                return Err("--tenant: letters, digits and - _ . : @ only".into());
            }
            let subject = subject.unwrap_or_else(|| format!("dev-user@{tenant}"));
            let token = DevAuth::default().mint_as(&tenant, &scope, ttl, &subject, &client);
            // A closed stdout (`token | head -c0`) is no reason to panic.
            let _ = writeln!(std::io::stdout().lock(), "{token}");
            Ok(())
        }
        Command::Serve {
            port,
            data,
            memory,
            endpoint,
            table: table_name,
            subscribers,
            no_relay,
            dead_letters,
            seal_every,
            no_seal,
            clock_behind_ok,
        } => {
            let seal_every = parse_ttl(&seal_every)?;
            audit_http::telemetry::init();
            let mut config = Config::from_env()?;
            config.table_name = table_name;
            if !no_seal {
                // The functions' sealing marks and an unsealed proof's
                // `Retry-After` follow the sealer this process runs.
                config.seal_interval = seal_every.max(Duration::from_secs(1));
            }
            let endpoint_given = endpoint.clone();
            // The bus entries' `source`: EVENT_SOURCE when it is set, as a
            // deployed stack reads it; `audit-trail.local` otherwise.
            let event_source = std::env::var("EVENT_SOURCE")
                .ok()
                .filter(|source| !source.trim().is_empty())
                .unwrap_or_else(|| "audit-trail.local".to_string());
            let _embedded = match endpoint {
                Some(endpoint) => {
                    config.dynamodb_endpoint = Some(endpoint);
                    None
                }
                None => {
                    let path = if memory { None } else { Some(data.as_str()) };
                    if let Some(parent) = path.and_then(|p| std::path::Path::new(p).parent()) {
                        std::fs::create_dir_all(parent)?;
                    }
                    let store = EmbeddedStore::start(path).await?;
                    config.dynamodb_endpoint = Some(store.endpoint.clone());
                    Some(store)
                }
            };
            let client = audit_dynamo::client(&config).await;
            table::ensure_table(&client, &table::definition(&config.table_name)).await?;
            refuse_a_clock_behind_the_sealer(&client, &config.table_name, clock_behind_ok).await?;
            let auth = DevAuth::default();
            let token = auth.mint(
                "acme",
                "audit:read audit:write audit:admin",
                Duration::from_secs(12 * 3600),
            );
            if let Some(parent) = std::path::Path::new(&dead_letters).parent() {
                std::fs::create_dir_all(parent)?;
            }
            // What the relay and the sealer's publisher give up on.
            let dead_letters = audit_infra::relay::DeadLetters::to_file(&dead_letters);
            if !no_relay {
                let endpoint = config.dynamodb_endpoint.clone().unwrap_or_default();
                let handler = std::sync::Arc::new(stream::StreamHandler::new(
                    audit_infra::relay::LocalPublisher::new(subscribers.clone())
                        .with_dead_letters(dead_letters.clone()),
                    &event_source,
                ));
                audit_infra::relay::Relay {
                    streams: audit_infra::relay::streams_client(&endpoint).await,
                    dynamo: client.clone(),
                    table: config.table_name.clone(),
                    handler,
                    poll: Duration::from_millis(200),
                    max_pause: audit_infra::relay::MAX_RETRY_PAUSE,
                    from_start: false,
                    // Beside the data it relays, so a restart goes on where
                    // the last run stopped (kept in memory with --memory).
                    position_file: (endpoint_given.is_none() && !memory).then(|| {
                        std::path::PathBuf::from(format!(
                            "{data}.{}.relay-position.json",
                            config.table_name
                        ))
                    }),
                    dead_letters: dead_letters.clone(),
                }
                // Positioned before the listener opens: no event stored
                // after start-up is missed.
                .start()
                .await?;
                say!("Stream relay: each new event is delivered to {subscribers:?} (NDJSON on stdout); what a subscriber refuses for good goes to {}", dead_letters.path().map(|p| p.display().to_string()).unwrap_or_default());
            }
            if !no_seal {
                // The same sealer the seal function runs, on a timer; its
                // checkpoints go where the relay's events go.
                let store = std::sync::Arc::new(audit_dynamo::DynamoStore::new(
                    client.clone(),
                    &config.table_name,
                ));
                let publisher = audit_infra::relay::LocalPublisher::new(if no_relay {
                    Vec::new()
                } else {
                    subscribers.clone()
                })
                .with_dead_letters(dead_letters.clone());
                let sealer = seal::SealHandler::new(store, &config, publisher, &event_source);
                say!(
                    "Sealer: every {}s; verifier key {}",
                    seal_every.as_secs(),
                    sealer.verifier_key()
                );
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(seal_every.max(Duration::from_secs(1)));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        if let Err(err) = sealer.run(chrono::Utc::now()).await {
                            tracing::warn!(error = %err, "sealing run failed; the next one retries");
                        }
                    }
                });
            }
            let gateway = Gateway {
                functions: Functions::new(client, config.clone()),
                auth: auth.into(),
                base_path: config.api_base_path.clone(),
            };
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            // Under the API mapping's path, when `API_BASE_PATH` names one.
            let url = format!("http://127.0.0.1:{port}{}", config.api_base_path);
            say!("Audit Trail API on {url} (table `{}`)", config.table_name);
            say!("Development token for tenant `acme` (12 h):\n  export TOKEN={token}");
            say!("Try:");
            say!("  curl -s -X POST {url}/audit/events -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"eventType\":\"user.login\",\"serviceName\":\"idp\",\"userId\":\"u-1\"}}'");
            say!("  curl -s {url}/audit/events/<cursor> -H \"Authorization: Bearer $TOKEN\"");
            axum::serve(
                listener,
                gateway
                    .router()
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(())
        }
    }
}
