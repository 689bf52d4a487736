//! The command line: argument parsing, logging setup, dispatch. Each command lives in its
//! own file; the work itself is in the library.

pub mod arti_config_cmd;
pub mod backend_cmd;
pub mod check_cmd;
pub mod client_auth_cmd;
pub mod config_cmd;
pub mod run_cmd;
mod sd_notify;
pub mod status_cmd;
mod status_table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load balancer for Tor v3 onion services, on an embedded Arti client (no system tor).
///
/// Without a subcommand it runs the daemon, as upstream's `onionbalance -c CONFIG`.
#[derive(Debug, Parser)]
#[command(name = "onionbalance", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    command: Option<Command>,
    /// Daemon options when no subcommand is given.
    #[command(flatten)]
    run: run_cmd::RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: keep every configured frontend published.
    Run(run_cmd::RunArgs),
    /// Generate a config file and frontend key(s) (the upstream `onionbalance-config`).
    Config(config_cmd::ConfigArgs),
    /// Print (or write) each backend's torrc lines and ob_config file.
    Backend(backend_cmd::BackendArgs),
    /// Write an Arti TOML for a chutney network (from its net/nodes directory).
    ArtiConfig(arti_config_cmd::ArtiConfigArgs),
    /// Show a running daemon's status (through its status socket).
    Status(status_cmd::StatusArgs),
    /// Validate a config file and its keys (offline, or with --online over Tor); exit status
    /// 0 when everything passed.
    Check(check_cmd::CheckArgs),
    /// Manage the clients allowed to discover a frontend (restricted discovery).
    ClientAuth(client_auth_cmd::ClientAuthArgs),
}

/// Entry point: runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(args)) => {
            init_logging(&args.log_filter());
            run_cmd::run(&args)
        }
        None => {
            init_logging(&cli.run.log_filter());
            run_cmd::run(&cli.run)
        }
        Some(Command::Config(args)) => {
            init_logging("info");
            config_cmd::run(&args).map(|()| true)
        }
        Some(Command::Backend(args)) => {
            init_logging("warn");
            backend_cmd::run(&args)
        }
        Some(Command::ArtiConfig(args)) => {
            init_logging("warn");
            arti_config_cmd::run(&args)
        }
        Some(Command::Status(args)) => {
            init_logging("warn");
            status_cmd::run(&args)
        }
        Some(Command::ClientAuth(args)) => {
            init_logging("warn");
            client_auth_cmd::run(&args)
        }
        Some(Command::Check(args)) => {
            init_logging("warn,tor_netdir=error");
            check_cmd::run(&args)
        }
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

/// Logs to stderr with `default` as the filter; `RUST_LOG` overrides it.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
