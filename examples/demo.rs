//! The one-command demo: a private Tor network on 127.0.0.1 with three backends (C tor
//! onion services in Onionbalance instance mode), onionbalance balancing them under one
//! frontend address, and page loads of that address showing which backend answered each.
//!
//! ```text
//! cargo run --release --example demo
//! cargo run --release --example demo -- --requests 30 --keep
//! ```
//!
//! Nothing to configure; it needs C tor for the network (`apt-get install tor`, which
//! `scripts/test-all` installs). Everything listens on 127.0.0.1 only, and every tor it
//! started is stopped when it ends (also on Ctrl-C or an error).

#![forbid(unsafe_code)]

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Parser;
use onionbalance_testnet::{demo, TestNet};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Onionbalance on a private Tor network with 3 backends, in one command")]
struct Args {
    /// Backends (C tor onion services in instance mode).
    #[arg(long, default_value_t = 3)]
    backends: usize,
    /// Page loads of the frontend to make (more if some backend has not answered yet).
    #[arg(long, default_value_t = 12)]
    requests: usize,
    /// Keep the run directory (tor logs, keys, the config) after exit.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(missing) = missing_tool() {
        eprintln!(
            "demo: cannot run `{missing}`: the demo's private Tor network needs C tor.\n\
             Install it with:  apt-get install tor   (it brings tor-gencert; \
             scripts/test-all installs it too), then run the demo again."
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The tool of the network that is missing, if one is.
fn missing_tool() -> Option<&'static str> {
    [("tor", "--version"), ("tor-gencert", "--help")]
        .into_iter()
        .find(|(tool, arg)| {
            Command::new(tool)
                .arg(arg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .map(|(tool, _)| tool)
}

/// Starts the network, runs the demo on it, and stops it (also when interrupted).
async fn run(args: &Args) -> Result<bool> {
    let started = Instant::now();
    println!(
        "Starting a private Tor network on 127.0.0.1: 3 directory authorities, 5 relays, \
         {} backends (about a minute; tor's progress goes to stderr)...",
        args.backends
    );
    let net = TestNet::builder()
        .backends(args.backends)
        .keep_run_dir(args.keep)
        .start()
        .await
        .context("starting the private Tor network")?;
    println!(
        "Network up in {:.0} s. Backends:",
        started.elapsed().as_secs_f64()
    );
    for i in 0..net.backend_count() {
        println!("  {}  {}", net.backend_name(i), net.backend_address(i));
    }
    let mut say = |line: &str| println!("{line}");
    let outcome = tokio::select! {
        r = demo::run(&net, args.requests, &mut say) => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the network");
            return Ok(false);
        }
    };
    let ok = outcome.every_backend_answered();
    if ok {
        println!(
            "Every backend answered under the one frontend address: that is onionbalance at \
             work. ({:.0} s in all.)",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("Not every backend answered: see the failures above.");
    }
    if args.keep {
        println!("Run directory kept: {}", net.run_dir().display());
    }
    println!("Stopping the network...");
    drop(net);
    Ok(ok)
}
