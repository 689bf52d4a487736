//! `onionbalance status`: ask a running daemon for its status over the status socket.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use onionbalance::config::{Config, ENV_STATUS_SOCKET};
use serde_json::Value;

/// Options of `onionbalance status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The daemon's config file (its `status-socket-location` names the socket).
    #[arg(short = 'c', long, env = onionbalance::config::ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The status socket (overrides the config file's).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the status; false if the daemon could not be reached.
pub fn run(args: &StatusArgs) -> Result<bool> {
    let path = match (
        &args.socket,
        std::env::var_os(ENV_STATUS_SOCKET),
        &args.config,
    ) {
        (Some(p), _, _) => p.clone(),
        (None, Some(p), _) if !p.is_empty() => PathBuf::from(p),
        (None, _, Some(c)) => Config::load(c)?
            .status_socket_location
            .context("the config has no status-socket-location; give --socket PATH")?,
        _ => anyhow::bail!("give --socket PATH or -c CONFIG (with status-socket-location)"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime
        .block_on(onionbalance::status_socket::query(&path))
        .with_context(|| {
            format!(
                "cannot read the status socket {} (is the daemon running?)",
                path.display()
            )
        })?;
    if args.json {
        print!("{text}");
        return Ok(true);
    }
    let doc: Value = serde_json::from_str(&text).context("the status socket sent invalid JSON")?;
    print!("{}", super::status_table::table(&doc));
    Ok(true)
}
