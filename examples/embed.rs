//! An Arti application that balances onion services as a side job.
//!
//! The application owns its `TorClient` (here from an Arti TOML, e.g. the one the `testnet`
//! example writes); onionbalance borrows it, so there is one Tor client for everything.
//!
//! ```text
//! cargo run --example embed -- ARTI_TOML ONIONBALANCE_YAML
//! ```
//!
//! It prints each service's status every 5 seconds until Ctrl-C, then shuts down cleanly.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use arti_client::TorClient;
use onionbalance::arti_toml::load_arti_config;
use onionbalance::{Balancer, Config};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(arti_toml), Some(config_path)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: embed ARTI_TOML ONIONBALANCE_YAML");
    };

    // The application's own Tor client.
    let client = TorClient::create_bootstrapped(load_arti_config(&arti_toml)?)
        .await
        .context("bootstrapping Tor")?;

    // Hand it to onionbalance, with a config loaded from YAML (or built in code).
    let config = Config::load(&config_path)?;
    let handle = Balancer::new(config).launch(&client)?;

    // The application goes on with its own work; here it just reports.
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                for s in handle.status() {
                    let accepted: usize = s.periods.iter().map(|p| p.hsdirs_accepted).sum();
                    let slots: usize = s.periods.iter().map(|p| p.hsdirs).sum();
                    println!(
                        "{}: {:?}, {} backend(s) with descriptors, {accepted}/{slots} HSDir slots hold ours",
                        s.onion_address,
                        s.phase,
                        s.instances.iter().filter(|i| i.descriptor_received.is_some()).count(),
                    );
                }
            }
        }
    }
    handle.shutdown().await;
    Ok(())
}
