//! `audit`: the command-line client of the Audit Trail API. Output goes to
//! stdout; logs and progress to stderr. Exit codes: 0 ok, 1 verification
//! failed, 2 usage, 3 auth, 4 not found, 5 unavailable.

mod client;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use client::{Client, Failure, EXIT_FAILED};

#[derive(Parser)]
#[command(name = "audit", version, about = "The Audit Trail API from a terminal")]
struct Cli {
    /// The API's base URL.
    #[arg(
        long,
        env = "AUDIT_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    url: String,
    /// A bearer token (scope audit:read for reading).
    #[arg(long, env = "AUDIT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    },
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Verify {
            online,
            bundle,
            verifier_key,
            trusted,
            save,
            json,
        } => {
            let client = online.then(|| Client::new(&cli.url, cli.token.clone()));
            let report = verify::run(
                client.as_ref(),
                verify::Options {
                    verifier_key,
                    bundle,
                    trusted,
                    save,
                },
            )
            .await?;
            verify::print(&report, json);
            Ok(if report.ok() { 0 } else { EXIT_FAILED })
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("audit: {}", failure.message);
            failure.code
        }
    };
    std::process::exit(code);
}
