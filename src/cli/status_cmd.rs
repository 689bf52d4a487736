//! `onionbalance status`: ask a running daemon for its status over the status socket.
//!
//! The socket, first found first: `--socket`, else `$ONIONBALANCE_STATUS_SOCKET_LOCATION`,
//! else the config file's `status-socket-location` (the config as every command finds it:
//! `-c`, `./config.yaml`, `/etc/onionbalance/config.yaml`), else the packaged daemon's
//! [`DEFAULT_STATUS_SOCKET`] when it exists. So `onionbalance status`, with no flags or with
//! `-c /etc/onionbalance/config.yaml`, reaches the daemon the systemd unit runs.

use std::path::{Path, PathBuf};

use crate::config::{Config, ENV_STATUS_SOCKET};
use crate::status_socket::DEFAULT_STATUS_SOCKET;
use anyhow::{Context as _, Result};
use serde_json::Value;

use super::config_path::{self, Announce};

/// Options of `onionbalance status`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "The socket: --socket, else $ONIONBALANCE_STATUS_SOCKET_LOCATION, else the config's \
                  status-socket-location (config: -c, else ./config.yaml, else \
                  /etc/onionbalance/config.yaml), else /run/onionbalance/status.sock (the \
                  packaged daemon's) when it exists."
)]
pub(crate) struct StatusArgs {
    /// The daemon's config file (its `status-socket-location` names the socket); default:
    /// ./config.yaml, else /etc/onionbalance/config.yaml.
    #[arg(short = 'c', long, env = crate::config::ENV_CONFIG, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The status socket (overrides the config file's).
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Print the raw JSON document instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prints the status; false if the daemon could not be reached.
pub(crate) fn run(args: &StatusArgs) -> Result<bool> {
    let path = socket_path(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime
        .block_on(crate::status_socket::query(&path))
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

/// The socket to ask, in the order of the module's documentation.
fn socket_path(args: &StatusArgs) -> Result<PathBuf> {
    let env = std::env::var_os(ENV_STATUS_SOCKET)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if args.socket.is_some() || env.is_some() {
        return choose(
            args.socket.clone(),
            env,
            None,
            Path::new(DEFAULT_STATUS_SOCKET),
        );
    }
    let config = config_path::resolve_optional(args.config.as_deref(), Announce::Stderr);
    let from_config = match &config {
        Some(c) => Some((c.clone(), Config::load(c)?.status_socket_location)),
        None => None,
    };
    choose(None, None, from_config, Path::new(DEFAULT_STATUS_SOCKET))
}

/// The rule: `flag`, else `env`, else the config's socket, else `default` if it exists.
/// `config` is the config file found, with its `status-socket-location`.
fn choose(
    flag: Option<PathBuf>,
    env: Option<PathBuf>,
    config: Option<(PathBuf, Option<PathBuf>)>,
    default: &Path,
) -> Result<PathBuf> {
    if let Some(p) = flag.or(env) {
        return Ok(p);
    }
    if let Some((_, Some(p))) = &config {
        return Ok(p.clone());
    }
    if default.exists() {
        return Ok(default.to_owned());
    }
    let which = match &config {
        Some((c, _)) => format!("{} has no status-socket-location", c.display()),
        None => format!(
            "no config file found (./{}, {})",
            config_path::LOCAL_CONFIG,
            config_path::SYSTEM_CONFIG
        ),
    };
    anyhow::bail!(
        "no status socket: {which}, and the packaged daemon's {} does not exist (is the \
         daemon running?); give --socket PATH",
        default.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("status.sock");
        let p = |s: &str| Some(PathBuf::from(s));
        let cfg = |s: Option<PathBuf>| Some((PathBuf::from("c.yaml"), s));
        std::fs::write(&default, "").expect("write");
        assert_eq!(choose(p("f"), p("e"), cfg(p("c")), &default).ok(), p("f"));
        assert_eq!(choose(None, p("e"), cfg(p("c")), &default).ok(), p("e"));
        assert_eq!(choose(None, None, cfg(p("c")), &default).ok(), p("c"));
        // A config without a socket, or no config at all: the packaged default.
        assert_eq!(
            choose(None, None, cfg(None), &default).ok(),
            Some(default.clone())
        );
        assert_eq!(
            choose(None, None, None, &default).ok(),
            Some(default.clone())
        );
        // ... only when it exists; the error says what was tried.
        std::fs::remove_file(&default).expect("rm");
        let e = choose(None, None, cfg(None), &default).expect_err("nothing");
        let e = e.to_string();
        assert!(
            e.contains("c.yaml has no status-socket-location")
                && e.contains(&default.display().to_string()),
            "{e}"
        );
        let e = choose(None, None, None, &default).expect_err("nothing");
        assert!(e.to_string().contains("no config file found"), "{e}");
    }
}
