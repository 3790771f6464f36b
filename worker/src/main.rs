//! The `payflow` command line. Thin: parsing and dispatch only.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use payflow::config::{Config, LogFormat};
use payflow::startup::App;

mod cli_keys;

#[derive(Parser)]
#[command(name = "payflow", version, about = "Payment orchestration on Temporal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything locally: Temporal dev server, worker, ingress, sandbox channel, demo merchant.
    Dev {
        #[arg(long, default_value = "config/payflow.dev.toml")]
        config: PathBuf,
        /// Where dev keys and databases live (git-ignored).
        #[arg(long, default_value = ".data")]
        data_dir: PathBuf,
        /// Run one payment end to end, print each step, stop everything and exit.
        #[arg(long)]
        demo: bool,
    },
    /// Run the worker and the channel ingress against a Temporal cluster.
    Worker {
        #[arg(long, env = "PAYFLOW_CONFIG", default_value = "payflow.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long, default_value = "payflow.toml")]
        config: PathBuf,
    },
    /// Ledger queries: account balance, entries of an order, trial balance.
    Ledger {
        #[command(subcommand)]
        command: payflow::cli_ledger::LedgerCommand,
    },
    /// A payment as its workflow reports it.
    Payment {
        #[command(subcommand)]
        command: payflow::cli_payment::PaymentCommand,
    },
    /// Reconciliation: run a channel's day, show its stored report, retry a parked run.
    Recon {
        #[command(subcommand)]
        command: payflow::cli_recon::ReconCommand,
    },
    /// Merchant callbacks: list by state, resend, retry now.
    Notify {
        #[command(subcommand)]
        command: payflow::cli_notify::NotifyCommand,
    },
    /// Platform keys: the public key merchants verify `payflow-signature-rsa` with.
    Keys {
        #[command(subcommand)]
        command: cli_keys::KeysCommand,
    },
    /// Serve the Temporal codec server protocol (`/encode`, `/decode`) with the `[codec]` keys,
    /// so the Temporal UI and CLI show decrypted payloads to operators holding the token.
    CodecServer(payflow::codec_server::CodecServerArgs),
    /// Cluster administration: `setup` registers payflow's search attributes (and creates
    /// the namespace with `--create-namespace`).
    Admin {
        #[command(subcommand)]
        command: payflow::cli_admin::AdminCommand,
    },
    /// Benchmarks (they print figures; they are not tests).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Postings per second into one hot account vs spread over many, per database.
    Ledger(payflow::bench_ledger::BenchLedgerArgs),
    /// First-attempt callback latency of healthy merchants with and without a hanging one.
    Notify(payflow::bench_notify::BenchNotifyArgs),
    /// Payments end to end against a no-op workflow baseline on the same server.
    E2e(payflow::bench_e2e::BenchE2eArgs),
    /// Reconciliation of a generated statement (default 100 000 lines): phase times, memory.
    Recon(payflow::bench_recon::BenchReconArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The benches print figures on stdout; logs only when asked for (stderr).
    if matches!(cli.command, Command::Bench { .. }) && std::env::var_os("RUST_LOG").is_some() {
        payflow::telemetry::init_stderr(LogFormat::Pretty);
    }
    match cli.command {
        Command::Dev {
            config,
            data_dir,
            demo,
        } => {
            payflow::telemetry::init(LogFormat::Pretty);
            payflow::dev::run(payflow::dev::DevArgs {
                config,
                data_dir,
                demo,
            })
            .await
        }
        Command::Worker { config } => {
            let config = Config::load(&config)?;
            payflow::telemetry::init(config.telemetry.log_format);
            let app = App::build(config).await?;
            app.run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("worker")
        }
        Command::CheckConfig { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Ledger { command } => payflow::cli_ledger::run(command).await,
        Command::Notify { command } => payflow::cli_notify::run(command).await,
        Command::Recon { command } => payflow::cli_recon::run(command).await,
        Command::Payment { command } => payflow::cli_payment::run(command).await,
        Command::Keys { command } => cli_keys::run(command),
        Command::Admin { command } => payflow::cli_admin::run(command).await,
        Command::CodecServer(args) => {
            payflow::telemetry::init(LogFormat::Pretty);
            payflow::codec_server::run(args).await
        }
        Command::Bench {
            command: BenchCommand::Ledger(args),
        } => payflow::bench_ledger::run(args).await,
        Command::Bench {
            command: BenchCommand::Notify(args),
        } => payflow::bench_notify::run(args).await,
        Command::Bench {
            command: BenchCommand::E2e(args),
        } => payflow::bench_e2e::run(args).await,
        Command::Bench {
            command: BenchCommand::Recon(args),
        } => payflow::bench_recon::run(args).await,
    }
}
