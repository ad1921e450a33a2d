//! `gen`: traffic for clicktrail.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gen::http::{run, HttpConfig};
use lake::Lake;

#[derive(Parser)]
#[command(name = "gen", version, about = "clicktrail traffic generator")]
struct Cli {
    /// The lake (its registry names the offers and links to use)
    #[arg(long, env = "CLICKTRAIL_LAKE", default_value = lake::DEFAULT_LAKE, global = true)]
    lake: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulated customers and brand servers through a running collector, over HTTP; writes the ground truth as JSON
    Http {
        /// Base URL of the collector
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        collector: String,
        /// Number of customers (and bots) to simulate
        #[arg(long, default_value_t = 500)]
        customers: usize,
        /// Seed of the customers' choices
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Customers in flight at once
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Where to write the ground truth (JSON)
        #[arg(long)]
        truth: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(lake::cli::log_ansi())
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(go(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn go(cli: Cli) -> anyhow::Result<()> {
    let lake = Lake::open(&cli.lake).context("while opening the lake (--lake / CLICKTRAIL_LAKE)")?;
    match cli.command {
        Command::Http { collector, customers, seed, concurrency, truth } => {
            let t = run(&lake, &HttpConfig { collector, customers, seed, concurrency }).await?;
            let clicks: u64 = t.clicks.values().sum();
            let bots: u64 = t.bot_clicks.values().sum();
            eprintln!(
                "sent {clicks} clicks, {bots} bot clicks, {} conversion reports, {} adjustments; {} refused",
                t.conversions.len(),
                t.adjustments.len(),
                t.refused
            );
            if let Some(path) = truth {
                std::fs::write(&path, serde_json::to_vec_pretty(&t)?).with_context(|| format!("while writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}
