//! `audit-bench`: measures the product on this machine and writes
//! docs/BENCHMARKS.md. Ratios, counts and sizes are the results; absolute
//! local times are shown for context only.

use std::time::{Duration, Instant};

use audit_infra::bench;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "audit-bench", about = "Benchmarks of the Audit Trail API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where to write the report.
    #[arg(long, default_value = "docs/BENCHMARKS.md", global = true)]
    out: String,
}

#[derive(Subcommand)]
enum Command {
    /// Write and read capacity units per event (ReturnConsumedCapacity).
    Capacity,
    /// Query selectivity and handler overhead over a loaded tenant.
    Reads {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// The same reads on DynamoDB Local, a store serving requests concurrently.
    ReadsDynamodbLocal {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
    },
    /// The read handlers under Lambda's 128 MB CPU share, against the raw calls.
    HandlerCpu {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
    },
    /// The integrity log: sealing cost, proofs, the verifier.
    Integrity,
    /// The first request after a cold start, under Lambda's 128 MB CPU share.
    FirstRequest,
    /// Write units and bytes per ~1 KB event under each cost lever, and the
    /// cost per million events that quotes them.
    Levers,
    /// One tenant's write ceiling under a per-partition-key limit.
    Ceiling,
    /// The `audit` CLI's export and tail over a loaded tenant.
    Cli {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// Everything, into --out (one command alone refreshes its own section).
    All {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
}

#[tokio::main]
async fn main() -> Result<(), audit_infra::bench::BenchError> {
    let cli = Cli::parse();
    let started = Instant::now();
    let command = cli.command.unwrap_or(Command::All { events: 100_000 });
    let whole = matches!(command, Command::All { .. });
    let sections = match command {
        Command::Capacity => vec![bench::capacity().await?],
        Command::Reads { events } => vec![bench::reads(events).await?],
        Command::ReadsDynamodbLocal { events } => {
            vec![bench::reads_on_dynamodb_local(events).await?]
        }
        Command::HandlerCpu { events } => vec![bench::handler_cpu(events).await?],
        Command::Integrity => vec![bench::integrity().await?],
        Command::FirstRequest => vec![bench::first_request().await?],
        // The cost section quotes the levers' figures: written with them.
        Command::Levers => vec![bench::levers().await?, bench::cost()],
        Command::Ceiling => vec![bench::ceiling().await?],
        Command::Cli { events } => vec![bench::cli(events).await?],
        Command::All { events } => bench::all(events).await?,
    };
    let report = match std::fs::read_to_string(&cli.out) {
        Ok(existing) if !whole => bench::merge(&existing, &sections),
        _ => bench::report(&sections, started.elapsed().max(Duration::from_millis(1))),
    };
    if let Some(parent) = std::path::Path::new(&cli.out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, &report)?;
    println!("{report}");
    eprintln!("written to {}", cli.out);
    Ok(())
}
