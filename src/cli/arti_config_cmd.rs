//! `onionbalance arti-config --chutney DIR`: an Arti TOML for a chutney network.

use std::path::PathBuf;

use crate::arti_toml::{PrivateNetwork, Storage};
use anyhow::{Context as _, Result};

/// Options of `onionbalance arti-config`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ArtiConfigArgs {
    /// A chutney network's `net/nodes` directory (authorities are read from it).
    #[arg(long, value_name = "DIR")]
    pub(crate) chutney: PathBuf,
    /// Where onionbalance's Arti keeps its cache and state for that network.
    #[arg(long, value_name = "DIR", default_value = "onionbalance-arti")]
    pub(crate) storage: PathBuf,
    /// Disable vanguards (only for networks too small to choose them from).
    #[arg(long)]
    pub(crate) disable_vanguards: bool,
    /// Write the TOML here instead of standard output (never overwrites).
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

/// Prints or writes the TOML.
pub(crate) fn run(args: &ArtiConfigArgs) -> Result<bool> {
    let storage_root = std::path::absolute(&args.storage)
        .with_context(|| format!("cannot resolve {}", args.storage.display()))?;
    let mut net = PrivateNetwork::from_chutney_nodes(&args.chutney, Storage::under(&storage_root))?;
    net.disable_vanguards = args.disable_vanguards;
    let toml = net.render();
    match &args.output {
        None => print!("{toml}"),
        Some(path) => {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|mut f| f.write_all(toml.as_bytes()))
                .with_context(|| {
                    format!("cannot write {} (it must not exist yet)", path.display())
                })?;
            eprintln!(
                "wrote {} ({} authorities, {}-minute time periods); use it with --arti-config",
                path.display(),
                net.authorities.len(),
                net.hsdir_interval_minutes
            );
        }
    }
    Ok(true)
}
