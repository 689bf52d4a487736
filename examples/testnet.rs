//! Starts a private Tor network on 127.0.0.1 (the integration tests' harness) and keeps it
//! running until Ctrl-C (or SIGTERM), for trying onionbalance by hand:
//!
//! ```text
//! cargo run --example testnet -- --backends 3
//! cargo run --example testnet -- --frontend <address>.onion
//! cargo run --example testnet -- --plain-backends 1 --capture-fixtures tests/fixtures/ctor-0.4.9
//! ```
//!
//! It prints the frontend address the backends serve, a ready onionbalance `config.yaml`,
//! the Arti TOML for the network and the SOCKS port of a C tor client to curl through.
//! Needs C tor (`apt-get install tor`).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use onionbalance_testnet::{fixtures, TestNet};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Run a private Tor network with onion-service backends until Ctrl-C")]
struct Args {
    /// Backends in Onionbalance instance mode.
    #[arg(long, default_value_t = 2)]
    backends: usize,
    /// Extra ordinary onion services (no instance mode).
    #[arg(long, default_value_t = 0)]
    plain_backends: usize,
    /// Directory authorities.
    #[arg(long, default_value_t = 3)]
    authorities: usize,
    /// Relays besides the authorities.
    #[arg(long, default_value_t = 5)]
    relays: usize,
    /// Frontend address the backends serve (`MasterOnionAddress`); default: a fresh key,
    /// saved as PEM in the run directory.
    #[arg(long)]
    frontend: Option<String>,
    /// Write `[vanguards] mode = "disabled"` into the Arti TOML.
    #[arg(long)]
    disable_vanguards: bool,
    /// Keep the run directory (logs, keys) after exit.
    #[arg(long)]
    keep: bool,
    /// Capture every backend's descriptor into this directory, then exit.
    #[arg(long, value_name = "DIR")]
    capture_fixtures: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let net = TestNet::builder()
        .authorities(args.authorities)
        .relays(args.relays)
        .backends(args.backends)
        .plain_backends(args.plain_backends)
        .frontend_address(args.frontend.clone())
        .disable_vanguards(args.disable_vanguards)
        .keep_run_dir(args.keep)
        .start()
        .await?;

    if let Some(dir) = &args.capture_fixtures {
        let files = fixtures::capture(&net, dir).await?;
        println!("wrote {} files to {}", files.len(), dir.display());
        return Ok(());
    }

    println!();
    println!(
        "Private Tor network is up (run directory {}).",
        net.run_dir().display()
    );
    println!();
    println!(
        "Frontend address the instances serve: {}",
        net.frontend_address()
    );
    if let Some(key) = net.frontend_key_path() {
        println!("Its key (PKCS#8 PEM):                 {}", key.display());
    }
    println!(
        "Arti configuration for this network:  {}",
        net.arti_toml_path().display()
    );
    println!(
        "C tor client SOCKS port:              127.0.0.1:{}",
        net.socks_port()
    );
    println!();
    println!("Backends:");
    for i in 0..net.backend_count() {
        let kind = if net.backend_is_instance(i) {
            "instance"
        } else {
            "plain"
        };
        println!(
            "  {}  {}  ({kind})",
            net.backend_name(i),
            net.backend_address(i)
        );
    }
    println!();
    println!("An onionbalance config.yaml for it:");
    println!("---");
    println!("services:");
    let key = net
        .frontend_key_path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<the key of your --frontend address>".to_owned());
    println!("- key: {key}");
    println!("  instances:");
    for i in (0..net.backend_count()).filter(|&i| net.backend_is_instance(i)) {
        println!("  - address: {}", net.backend_address(i));
        println!("    name: {}", net.backend_name(i));
    }
    println!("---");
    println!();
    if net.backend_count() > 0 {
        println!(
            "Try:  curl --socks5-hostname 127.0.0.1:{} http://{}/",
            net.socks_port(),
            net.backend_address(0)
        );
    }
    println!("Ctrl-C stops the network.");

    // SIGTERM too (`timeout`, `kill`): stop the network properly rather than leave it to
    // `__OwningControllerProcess`, which takes tor up to ~15 s to notice.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("wait for Ctrl-C")?,
        _ = term.recv() => {}
    }
    eprintln!("stopping...");
    drop(net);
    Ok(())
}
