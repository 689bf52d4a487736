//! The command line: argument parsing, logging setup, dispatch. Each command lives in its
//! own file; the work itself is in the library.

pub mod check_cmd;
pub mod config_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load balancer for Tor v3 onion services, on an embedded Arti client.
#[derive(Debug, Parser)]
#[command(name = "onionbalance", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a config file and frontend key(s) (the upstream `onionbalance-config`).
    Config(config_cmd::ConfigArgs),
    /// Validate a config file and its keys offline; exit status 0 when valid.
    Check {
        /// The config file.
        #[arg(short = 'c', long, env = onionbalance::config::ENV_CONFIG, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Entry point: runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Config(args) => config_cmd::run(&args).map(|()| true),
        Command::Check { config } => check_cmd::run(&config),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
