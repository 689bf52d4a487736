//! The command line of both binaries: argument parsing, logging setup, dispatch. Each
//! command lives in its own file; the work itself is in the rest of the library. Private:
//! the binaries reach it through [`crate::main`] and [`crate::config_main`] only.

mod arti_args;
mod arti_config_cmd;
mod backend_cmd;
mod check_cmd;
mod client_auth_cmd;
mod config_cmd;
mod config_path;
mod drain_cmd;
mod drain_edit;
mod exit;
mod gen_cmd;
mod logging;
mod reload;
mod run_cmd;
mod sd_notify;
mod service_arg;
mod status_cmd;
mod status_table;
mod upstream;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use logging::{LogFormat, LogOptions};

/// The environment variables the commands read, with what each does: `--help` and the
/// manual pages are both written from this table.
pub(crate) const ENVIRONMENT: &[(&str, &str)] = &[
    (
        crate::config::ENV_CONFIG,
        "the config file, when -c is not given (else ./config.yaml, else /etc/onionbalance/config.yaml)",
    ),
    (
        "ONIONBALANCE_LOG_LEVEL",
        "the log level, when -v is not given",
    ),
    (
        "ONIONBALANCE_LOG_LOCATION",
        "append the log to this file instead of stderr",
    ),
    (
        crate::config::ENV_STATUS_SOCKET,
        "the status socket (overrides the config's)",
    ),
    ("RUST_LOG", "a tracing filter that replaces the -v level"),
    ("STATE_DIRECTORY", "the default --data-dir (set by systemd)"),
    (
        "RUNTIME_DIRECTORY",
        "the daemon's status socket is status.sock in it when no other is named (set by systemd)",
    ),
    ("JOURNAL_STREAM", "set by systemd: log lines carry journal priorities, no timestamps"),
];

/// What `--help` says after the options: the environment and the exit statuses, from
/// [`ENVIRONMENT`] and [`exit::TABLE`]. (The man pages give them sections of their own.)
fn after_help() -> String {
    let width = ENVIRONMENT.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    let mut text = String::from("Environment:\n");
    for (var, what) in ENVIRONMENT {
        text.push_str(&format!("  {var:width$}  {what}\n"));
    }
    text.push_str("\nExit status:");
    for (code, what) in exit::TABLE {
        text.push_str(&format!("\n  {code:<3} {what}"));
    }
    text
}

/// Load balancer for Tor v3 onion services, on an embedded Arti client (no system tor).
///
/// Without a subcommand it runs the daemon, as upstream's `onionbalance -c CONFIG`.
#[derive(Debug, Parser)]
#[command(
    name = "onionbalance",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = after_help()
)]
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
    #[command(after_help = after_help())]
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
    /// 0 when everything passed, 78 when the config is not valid.
    Check(check_cmd::CheckArgs),
    /// Manage the clients allowed to discover a frontend (restricted discovery).
    ClientAuth(client_auth_cmd::ClientAuthArgs),
    /// Take a backend out of every descriptor on purpose (maintenance): gives its entry in
    /// the config `drain: true`, keeping the file's comments and layout; the daemon applies
    /// it on reload.
    Drain(drain_cmd::DrainArgs),
    /// Put a drained backend back: takes `drain: true` away from its entry in the config;
    /// the daemon applies it on reload.
    Undrain(drain_cmd::DrainArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(gen_cmd::CompletionsArgs),
    /// Write the manual pages (for packagers).
    #[command(hide = true)]
    Man(gen_cmd::ManArgs),
}

/// `onionbalance`: parses the command line, runs the command and maps the outcome to an
/// exit code by category (see [`exit`]).
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(&e),
    };
    match dispatch(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(exit::RUNTIME),
        Err(e) => exit::report(&e),
    }
}

/// `onionbalance-config`, the wizard under its upstream name: the same as `onionbalance
/// config`, with the same exit codes.
pub(crate) fn config_main() -> ExitCode {
    let args = match config_cmd::ConfigArgs::try_parse() {
        Ok(args) => args,
        Err(e) => return exit::clap_error(&e),
    };
    quiet_logging(args.verbosity.directive());
    match config_cmd::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

/// Renders a status document as `onionbalance status` prints it.
#[cfg(feature = "testing")]
pub(crate) fn status_table(doc: &serde_json::Value) -> String {
    status_table::table(doc)
}

/// Sets up logging for the command and runs it.
fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Some(Command::Run(args)) => run_daemon(&args),
        None => run_daemon(&cli.run),
        Some(Command::Config(args)) => {
            quiet_logging(args.verbosity.directive());
            config_cmd::run(&args).map(|()| true)
        }
        Some(Command::Backend(args)) => {
            quiet_logging("warn");
            backend_cmd::run(&args)
        }
        Some(Command::ArtiConfig(args)) => {
            quiet_logging("warn");
            arti_config_cmd::run(&args)
        }
        Some(Command::Status(args)) => {
            quiet_logging("warn");
            status_cmd::run(&args)
        }
        Some(Command::ClientAuth(args)) => {
            quiet_logging("warn");
            client_auth_cmd::run(&args)
        }
        Some(Command::Drain(args)) => {
            quiet_logging("warn");
            drain_cmd::run(&args, true)
        }
        Some(Command::Undrain(args)) => {
            quiet_logging("warn");
            drain_cmd::run(&args, false)
        }
        Some(Command::Check(args)) => {
            quiet_logging("warn,tor_netdir=error");
            check_cmd::run(&args)
        }
        Some(Command::Completions(args)) => gen_cmd::completions(&args, commands()),
        Some(Command::Man(args)) => gen_cmd::man(&args, commands()),
    }
}

/// The daemon, with its logging options; a log file that cannot be opened is a
/// configuration error.
fn run_daemon(args: &run_cmd::RunArgs) -> anyhow::Result<bool> {
    logging::init(&args.log_options()).map_err(exit::config)?;
    run_cmd::run(args)
}

/// Text on stderr with `filter`, for the short-lived commands.
fn quiet_logging(filter: &str) {
    let opts = LogOptions {
        filter: filter.to_owned(),
        format: LogFormat::Text,
        file: None,
    };
    // Without a file nothing can fail.
    let _ = logging::init(&opts);
}

/// Both binaries' command definitions, for completions and man pages.
fn commands() -> gen_cmd::Commands {
    gen_cmd::Commands {
        onionbalance: Cli::command(),
        onionbalance_config: <config_cmd::ConfigArgs as clap::CommandFactory>::command(),
    }
}
