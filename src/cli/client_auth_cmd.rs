//! `onionbalance client-auth add|list|remove`: manage the clients allowed to discover a
//! frontend (restricted discovery), as files in the service's `authorized-clients-dir`.
//!
//! The frontend keeps only public keys. `add` generates the client's keypair (unless the
//! client generated its own and gives `--key`), writes the public part, and hands the private
//! part to the operator once, on standard output or in a 0600 file; it is never kept here.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::reload;
use crate::client_auth::{self, ClientSecret};
use crate::config::{Config, ServiceConfig};
use anyhow::{bail, Context as _, Result};

/// Options of `onionbalance client-auth`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientAuthArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) action: Action,
}

/// The `client-auth` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum Action {
    /// Authorize a new client: generate its keypair (or take its public key with --key),
    /// store the public key in the service's authorized-clients-dir, and print what the
    /// client needs.
    Add {
        /// The config file and service.
        #[command(flatten)]
        target: Target,
        /// The client's name (its file is `<NAME>.auth`).
        #[arg(long)]
        name: String,
        /// The client's own public key (`descriptor:x25519:...`, as C tor's `.auth` files
        /// hold it), for a client that generated its keypair itself, instead of generating
        /// one here.
        #[arg(long, value_name = "PUBLIC_KEY")]
        key: Option<String>,
        /// Write the client's private key (a C tor `.auth_private` line) to this new file,
        /// mode 0600, instead of printing it.
        #[arg(long, value_name = "FILE", conflicts_with = "key")]
        output: Option<PathBuf>,
    },
    /// List the authorized clients of a service (names and public keys).
    List {
        /// The config file and service.
        #[command(flatten)]
        target: Target,
    },
    /// Remove a client: it cannot read descriptors built after the daemon reloads.
    Remove {
        /// The config file and service.
        #[command(flatten)]
        target: Target,
        /// The client's name.
        #[arg(long)]
        name: String,
    },
}

/// Which config file and service.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// The config file (default: ./config.yaml, else /etc/onionbalance/config.yaml).
    #[arg(short = 'c', long, env = crate::config::ENV_CONFIG, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The service: its number in the config (from 1) or its frontend address; needed only
    /// when the config has several.
    #[arg(long, value_name = "N|ADDRESS")]
    pub(crate) service: Option<String>,
    /// Only change the files: do not reload the running daemon (to reload once after
    /// several changes).
    #[arg(long)]
    pub(crate) no_reload: bool,
}

/// Runs the subcommand.
pub(crate) fn run(args: &ClientAuthArgs) -> Result<bool> {
    match &args.action {
        Action::Add {
            target,
            name,
            key,
            output,
        } => add(target, name, key.as_deref(), output.as_deref()),
        Action::List { target } => list(target),
        Action::Remove { target, name } => remove(target, name),
    }
}

/// Loads the config and picks the service.
fn load(target: &Target) -> Result<(Config, usize)> {
    let path = super::config_path::resolve(
        target.config.as_deref(),
        super::config_path::Announce::Stderr,
    )?;
    let cfg = Config::load(&path)?;
    let index = match target.service.as_deref() {
        None if cfg.services.len() == 1 => 0,
        None => bail!(
            "{} has {} services: say which with --service N (1 to {}) or --service <frontend address>",
            cfg.path.display(),
            cfg.services.len(),
            cfg.services.len()
        ),
        Some(s) => super::service_arg::index(&cfg, s)?,
    };
    Ok((cfg, index))
}

/// The service's authorized-clients directory, or what to add to the config.
fn auth_dir(cfg: &Config, index: usize) -> Result<PathBuf> {
    let svc = &cfg.services[index];
    match svc.client_auth.as_ref().and_then(|c| c.dir.clone()) {
        Some(d) => Ok(d),
        None => bail!(
            "service {} ({}) has no `authorized-clients-dir:`: add the line `authorized-clients-dir: authorized_clients` to it in {} (a path relative to that file; it is created), then run this again. \
             Note that a service with authorized clients can be discovered only by them.",
            index + 1,
            svc.address(),
            cfg.path.display()
        ),
    }
}

/// `client-auth add`.
fn add(target: &Target, name: &str, key: Option<&str>, output: Option<&Path>) -> Result<bool> {
    let (cfg, index) = load(target)?;
    let svc = &cfg.services[index];
    let dir = auth_dir(&cfg, index)?;
    let file = client_auth::auth_file(&dir, name)?;
    let existing = svc
        .client_auth
        .as_ref()
        .map(|c| &c.clients[..])
        .unwrap_or_default();
    if existing.iter().any(|c| c.name == name) {
        bail!("a client named {name:?} is already authorized for {}: choose another name, or remove it first", svc.address());
    }
    let (public, secret) = match key {
        Some(text) => (client_auth::parse_public_key(text)?, None),
        None => {
            let secret = ClientSecret::generate(svc.address(), &mut rand::rng());
            (secret.public(), Some(secret))
        }
    };
    if let Some(other) = existing.iter().find(|c| c.key == public) {
        bail!("this key is already authorized as {:?}", other.name);
    }
    // The private key goes out first: if it cannot be written, nothing is authorized.
    if let (Some(secret), Some(path)) = (&secret, output) {
        write_new_private(path, secret.auth_private_line().as_bytes()).with_context(|| {
            format!(
                "cannot write the client's private key to {}",
                path.display()
            )
        })?;
    }
    create_private_dir(&dir)?;
    write_new_private(&file, format!("{public}\n").as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "authorized client {name:?} for {} (service {}): wrote {}",
        svc.address(),
        index + 1,
        file.display()
    );
    reload_unless(target, &cfg, "the new client");
    if let Some(secret) = secret {
        print_client_instructions(svc, name, &secret, output);
    }
    Ok(true)
}

/// Tells the operator what to give the client, with the private key unless it went to a file.
fn print_client_instructions(
    svc: &ServiceConfig,
    name: &str,
    secret: &ClientSecret,
    output: Option<&Path>,
) {
    let file_name = format!("{name}.auth_private");
    println!();
    match output {
        Some(path) => println!(
            "the client's private key is in {} (mode 0600); it is not kept here. Give it to the client as {file_name}.",
            path.display()
        ),
        None => {
            println!("the client's private key (shown once, not kept here; give it to the client privately):");
            println!();
            // Written with the line's zeroizing buffer; stdout is the operator's terminal.
            let line = secret.auth_private_line();
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            println!();
        }
    }
    println!("C tor client: save that line as <ClientOnionAuthDir>/{file_name} (mode 0600), with");
    println!("  `ClientOnionAuthDir /var/lib/tor/onion_auth` in its torrc, and reload tor.");
    println!(
        "Arti client: put the file in a directory of its own (mode 0700) and add to arti.toml:"
    );
    println!("  [[storage.keystore.ctor.clients]]");
    println!("  id = \"onion-auth\"");
    println!("  path = \"/path/to/that/directory\"");
    println!("  (a Rust program can instead call TorClient::insert_service_discovery_key).");
    println!("Then connect to {} as usual.", svc.address());
}

/// `client-auth list`.
fn list(target: &Target) -> Result<bool> {
    let (cfg, index) = load(target)?;
    let svc = &cfg.services[index];
    let Some(auth) = &svc.client_auth else {
        println!(
            "{} (service {}): discovery is not restricted: anyone who knows the address can connect",
            svc.address(),
            index + 1
        );
        return Ok(true);
    };
    println!(
        "{} (service {}): {} authorized client(s){}",
        svc.address(),
        index + 1,
        auth.clients.len(),
        auth.dir
            .as_ref()
            .map(|d| format!(", directory {}", d.display()))
            .unwrap_or_default()
    );
    for c in &auth.clients {
        let from_dir = auth
            .dir
            .as_ref()
            .is_some_and(|d| client_auth::auth_file(d, &c.name).is_ok_and(|f| f.is_file()));
        println!(
            "  {:<20} {}  ({})",
            c.name,
            c.key,
            if from_dir {
                "file"
            } else {
                "inline in the config"
            }
        );
    }
    Ok(true)
}

/// `client-auth remove`.
fn remove(target: &Target, name: &str) -> Result<bool> {
    let (cfg, index) = load(target)?;
    let svc = &cfg.services[index];
    let clients = svc
        .client_auth
        .as_ref()
        .map(|c| &c.clients[..])
        .unwrap_or_default();
    if !clients.iter().any(|c| c.name == name) {
        bail!(
            "no client named {name:?} is authorized for {} (see `onionbalance client-auth list`)",
            svc.address()
        );
    }
    let dir = auth_dir(&cfg, index)?;
    let file = client_auth::auth_file(&dir, name)?;
    if !file.is_file() {
        bail!(
            "client {name:?} is listed inline under `authorized-clients:` in {}: delete its entry there, then reload the daemon",
            cfg.path.display()
        );
    }
    std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    println!("removed client {name:?} ({})", file.display());
    reload_unless(target, &cfg, "the removal");
    println!(
        "(a client keeps a descriptor it already fetched until it fails or its time period ends)"
    );
    if clients.len() == 1 {
        println!(
            "warning: no client is authorized any more: after the reload nobody can discover {}",
            svc.address()
        );
    }
    Ok(true)
}

/// Reloads the daemon serving `cfg` unless `target` says not to, and says what happened.
fn reload_unless(target: &Target, cfg: &Config, what: &str) {
    if target.no_reload {
        println!(
            "not reloaded (--no-reload): reload the daemon to apply {what}: {}",
            reload::BY_HAND
        );
    } else {
        reload::report(&reload::reload_daemon(cfg), what);
    }
}

/// Creates `dir` (mode 0700) if missing.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `bytes` to a new file `path` (mode 0600), refusing to replace an existing file.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists: choose another name or path",
                path.display()
            )
        } else {
            anyhow::Error::new(e)
        }
    })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
