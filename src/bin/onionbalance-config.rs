//! `onionbalance-config`: the config wizard under its upstream name (same as `onionbalance config`).

#![forbid(unsafe_code)]

#[path = "../cli/config_cmd.rs"]
mod config_cmd;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = config_cmd::ConfigArgs::parse();
    match config_cmd::run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
