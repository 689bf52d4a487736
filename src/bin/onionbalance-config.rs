//! `onionbalance-config`: the config wizard under its upstream name (same as `onionbalance config`).

#![forbid(unsafe_code)]

// The wizard and the parts of the CLI it shares with `onionbalance` (exit codes, logging,
// upstream's flags); it uses only some of each.
#[path = "../cli/config_cmd.rs"]
mod config_cmd;
#[allow(dead_code)]
#[path = "../cli/exit.rs"]
mod exit;
#[allow(dead_code)]
#[path = "../cli/logging.rs"]
mod logging;
#[allow(dead_code)]
#[path = "../cli/upstream.rs"]
mod upstream;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = match config_cmd::ConfigArgs::try_parse() {
        Ok(args) => args,
        Err(e) => return exit::clap_error(&e),
    };
    let log = logging::LogOptions {
        filter: args.verbosity.directive().to_owned(),
        ..Default::default()
    };
    // Without a log file nothing can fail.
    let _ = logging::init(&log);
    match config_cmd::run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}
