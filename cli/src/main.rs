//! `audit`: the command-line client of the Audit Trail API. Output goes to
//! stdout; logs and progress to stderr. Exit codes: 0 ok; 1 failed (a
//! verification found tampering, events were refused); 2 usage (including a
//! request the API refused as invalid); 3 auth (401/403); 4 not found;
//! 5 unavailable after retries.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use audit_cli::client::{Client, Failure, EXIT_FAILED, EXIT_USAGE};
use audit_cli::format::Format;
use audit_cli::{export, ingest, metadata_tree, query, tail, verify};
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "audit", version, about = "The Audit Trail API from a terminal")]
struct Cli {
    /// The API's base URL.
    #[arg(
        long,
        env = "AUDIT_URL",
        default_value = "http://127.0.0.1:3000",
        global = true,
        value_parser = api_url
    )]
    url: String,
    /// A bearer token.
    #[arg(long, env = "AUDIT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The formats a file of events can be resumed in: streamed records, one
/// per event (a JSON array or a table is for a finite answer).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Ndjson,
    Csv,
    Ocsf,
}

impl From<ExportFormat> for Format {
    fn from(format: ExportFormat) -> Self {
        match format {
            ExportFormat::Ndjson => Format::Ndjson,
            ExportFormat::Csv => Format::Csv,
            ExportFormat::Ocsf => Format::Ocsf,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The gap-free trail, oldest first; with --follow, forever.
    Tail {
        /// Keep going: long-poll for new events, never stop.
        #[arg(long)]
        follow: bool,
        /// Resume from (and record to) this file, atomically after each page.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The API's own records: include, exclude, or others (not caused by this token).
        #[arg(long, default_value = "include", value_parser = ["include", "exclude", "others"])]
        self_audit: String,
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Start at this cursor (inclusive).
        #[arg(long, conflicts_with = "after")]
        from: Option<String>,
        /// Start after this cursor.
        #[arg(long)]
        after: Option<String>,
        /// Events per page (1-1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Events matching conditions: `field op value`, e.g. `userId = u-1`,
    /// `data.mfa = false`, `eventType in a,b`, `message contains denied`,
    /// `data.score >= 10`, `traceId exists`. Operators: = != in ^= contains
    /// exists > >= < <=.
    Query {
        conditions: Vec<String>,
        /// A duration ago (7d, 12h) or an RFC 3339 time. Default: 30 days ago.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// At most this many results (at least 1).
        #[arg(long, conflicts_with = "all", default_value_t = 100, value_parser = at_least_one)]
        limit: usize,
        /// Every result.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// One event, whole, as pretty JSON.
    Get { cursor: String },
    /// The services, their event types and the queryable properties, as a tree.
    Metadata,
    /// A time range into a file: streaming, resumable, with progress.
    Export {
        /// A duration ago (7d) or an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// Default: now.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ExportFormat,
        /// A file, resumed where an earlier run stopped; `-` (stdout), a
        /// pipe or a device is written straight through, never resumed.
        #[arg(long)]
        out: PathBuf,
    },
    /// Store events from NDJSON (a file or `-`); safe to rerun.
    Ingest { source: String },
    /// Verify events against the integrity log: every leaf recomputed,
    /// every checkpoint's signature and root checked. Exit 1 when anything
    /// is altered, missing or forged, or a checkpoint fails.
    Verify {
        /// Walk the API (events, entry records, checkpoints) instead of files.
        #[arg(long, conflicts_with = "bundle")]
        online: bool,
        /// A directory with events.ndjson, entries.ndjson and
        /// checkpoints.ndjson (as `--online --save` writes them).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The trusted C2SP verifier key (from the stack output).
        #[arg(long, env = "AUDIT_VERIFIER_KEY")]
        verifier_key: Option<String>,
        /// Checkpoints you hold yourself (from the bus, your SIEM): NDJSON of
        /// checkpoint records or bus envelopes, or one signed note. Repeatable.
        #[arg(long)]
        trusted: Vec<PathBuf>,
        /// With --online: also write what was fetched as a bundle here.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Findings as NDJSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// Judge the evidence as of this time (RFC 3339): when an archived
        /// bundle was saved. Default: now.
        #[arg(long)]
        as_of: Option<String>,
        /// A log whose newest checkpoint, or an event in none, is older than
        /// this is `stale` (the sealer gives every tenant one each hour, so
        /// older means the newest events may have been removed); 0: off.
        #[arg(long, default_value = "2h")]
        max_checkpoint_age: String,
        /// The log to verify, as its checkpoints name it
        /// (`<CheckpointOrigin>/<tenant>`): a checkpoint of any other is
        /// `wrong_origin`. Default: the first checkpoint's, printed with
        /// the result.
        #[arg(long)]
        origin: Option<String>,
    },
    /// Shell completions (bash, zsh, fish, ...) on stdout.
    Completions { shell: clap_complete::Shell },
}

/// A table on a terminal, NDJSON when piped.
/// A count of at least one.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("a whole number of at least 1".to_string()),
    }
}

/// `--url`: an http(s) URL, refused as a usage error (exit 2) when it is
/// not one, rather than retried as if the API were down.
fn api_url(text: &str) -> Result<String, String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(text.to_string())
        }
        Ok(url) => Err(format!(
            "`{}` is not an http(s) URL with a host",
            url.scheme()
        )),
        Err(err) => Err(format!("not a URL ({err}); e.g. https://api.example.com")),
    }
}

fn default_format(chosen: Option<Format>) -> Format {
    chosen.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Ndjson
    })
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    let client = Client::new(&cli.url, cli.token.clone());
    let print = |text: &str| {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(Failure::stdout)
    };
    match cli.command {
        Command::Tail {
            follow,
            state,
            self_audit,
            format,
            from,
            after,
            limit,
        } => {
            // A follower keeps going through any outage (the README's
            // "forever"): it stopped after about 15 s without the server.
            let client = if follow { client.patient() } else { client };
            tail::run(
                &client,
                tail::Options {
                    follow,
                    state,
                    self_audit,
                    format: format.unwrap_or(Format::Ndjson),
                    from,
                    after,
                    limit,
                },
            )
            .await?;
            Ok(0)
        }
        Command::Query {
            conditions,
            from,
            to,
            limit,
            all,
            format,
        } => {
            query::run(
                &client,
                query::Options {
                    conditions,
                    from,
                    to,
                    limit: (!all).then_some(limit),
                    format: default_format(format),
                },
            )
            .await?;
            Ok(0)
        }
        Command::Get { cursor } => {
            // A cursor is a ULID: anything else would be a path of its own
            // (`../settings`), not an event.
            let Ok(asked) = ulid::Ulid::from_string(&cursor) else {
                return Err(Failure::new(
                    EXIT_USAGE,
                    format!("`{cursor}` is not a cursor (26 characters of Crockford base32)"),
                ));
            };
            // The event asked for, not another.
            let event = audit_cli::trail::looked_up(
                client.get(&format!("/audit/events/{cursor}")).await?,
                &asked.to_string(),
            )?;
            // On a terminal, what could reorder or control it is escaped.
            let text = if std::io::stdout().is_terminal() {
                audit_cli::terminal::terminal_json(&event, true)
            } else {
                serde_json::to_string_pretty(&event).unwrap_or_default()
            };
            print(&format!("{text}\n"))?;
            Ok(0)
        }
        Command::Metadata => {
            let metadata = client.get("/audit/metadata").await?;
            audit_cli::client::answer_list(&metadata, "services")?;
            audit_cli::client::answer_list(&metadata, "targets")?;
            print(&metadata_tree(&metadata))?;
            Ok(0)
        }
        Command::Export {
            from,
            to,
            format,
            out,
        } => {
            export::run(
                &client,
                export::Options {
                    from,
                    to,
                    format: format.into(),
                    out,
                },
            )
            .await?;
            Ok(0)
        }
        Command::Ingest { source } => {
            let outcome = ingest::run(&client, &source).await?;
            Ok(if outcome.refused > 0 { EXIT_FAILED } else { 0 })
        }
        Command::Verify {
            online,
            bundle,
            verifier_key,
            trusted,
            save,
            json,
            as_of,
            max_checkpoint_age,
            origin,
        } => {
            let as_of_given = as_of.is_some();
            let as_of_ms = match as_of {
                None => chrono::Utc::now().timestamp_millis(),
                Some(text) => audit_core::event::parse_time(&text)
                    .map(|t| t.timestamp_millis())
                    .ok_or_else(|| {
                        Failure::new(
                            EXIT_USAGE,
                            format!("--as-of: `{text}` is not an RFC 3339 time (years 0000-9999 in UTC, no leap second)"),
                        )
                    })?,
            };
            let max_checkpoint_age_ms = verify::parse_age(&max_checkpoint_age)
                .map_err(|e| Failure::new(EXIT_USAGE, format!("--max-checkpoint-age: {e}")))?;
            let api = online.then_some(&client);
            let verified = verify::run(
                api,
                verify::Options {
                    verifier_key,
                    bundle,
                    trusted,
                    save,
                    as_of_ms,
                    as_of_given,
                    max_checkpoint_age_ms,
                    origin,
                },
            )
            .await?;
            verify::print(&verified, json);
            Ok(if verified.report.ok() { 0 } else { EXIT_FAILED })
        }
        Command::Completions { shell } => {
            // Generated into memory: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "audit", &mut script);
            print(&String::from_utf8_lossy(&script))?;
            Ok(0)
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // clap's own codes: 0 for --help/--version, 2 for usage.
            std::process::exit(err.exit_code());
        }
    };
    let code = match run(cli).await {
        Ok(code) => code,
        Err(failure) => {
            if !failure.message.is_empty() {
                audit_cli::say(&format!(
                    "audit: {}",
                    audit_cli::terminal::for_terminal(&failure.message)
                ));
            }
            failure.code
        }
    };
    std::process::exit(code);
}
