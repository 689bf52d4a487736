//! `onionbalance backend`: what each backend's tor needs, printed or written to files.

use std::path::PathBuf;

use crate::config::{BackendPort, Config};
use crate::wizard::{backend_setup, BackendLayout};
use anyhow::{Context as _, Result};

/// Options of `onionbalance backend`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackendArgs {
    /// The config file naming the frontends and their instances (default: ./config.yaml,
    /// else /etc/onionbalance/config.yaml).
    #[arg(short = 'c', long, env = crate::config::ENV_CONFIG, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Parent directory of the backends' HiddenServiceDir.
    #[arg(long, default_value = "/var/lib/tor", value_name = "DIR")]
    pub(crate) hs_dir_base: PathBuf,
    /// The onion service's virtual port (default: the service's `backend-port:` in the
    /// config, else 80).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,
    /// Where each backend's tor forwards connections, its web server (default: the
    /// service's `backend-port:` in the config, else 127.0.0.1:80).
    #[arg(long, value_name = "ADDR:PORT", value_parser = super::upstream::parse_service_target)]
    pub(crate) target: Option<String>,
    /// Write `<DIR>/<instance>/torrc` and `<DIR>/<instance>/ob_config` instead of printing.
    #[arg(long, value_name = "DIR")]
    pub(crate) write: Option<PathBuf>,
}

/// A service's layout: the flags, else its `backend-port:`, else the defaults.
fn layout(args: &BackendArgs, configured: Option<&BackendPort>) -> BackendLayout {
    let default = BackendLayout::default();
    BackendLayout {
        hs_dir_base: args.hs_dir_base.clone(),
        virtual_port: args
            .port
            .or(configured.map(|p| p.virtual_port))
            .unwrap_or(default.virtual_port),
        target: args
            .target
            .clone()
            .or(configured.map(|p| p.target.clone()))
            .unwrap_or(default.target),
    }
}

/// Prints or writes every instance's files.
pub(crate) fn run(args: &BackendArgs) -> Result<bool> {
    // Backend setup is wanted before the addresses are known: accept placeholders.
    let path =
        super::config_path::resolve(args.config.as_deref(), super::config_path::Announce::Stderr)?;
    let cfg = Config::load_allowing_placeholders(&path)?;
    for svc in &cfg.services {
        let layout = layout(args, svc.backend_port.as_ref());
        let names = svc
            .instances
            .iter()
            .map(|i| (i.name.clone(), Some(i.address)))
            .chain(svc.pending.iter().map(|n| (n.clone(), None)));
        for (name, address) in names {
            let setup = backend_setup(svc.address(), &name, address, &layout);
            let place = setup.ob_config_place(address);
            match &args.write {
                Some(dir) => {
                    // Names are checked by the config loader; never leave `dir` whatever.
                    anyhow::ensure!(
                        crate::config::is_valid_instance_name(&name),
                        "instance name {name:?} cannot be a directory name under {}",
                        dir.display()
                    );
                    let d = dir.join(&name);
                    std::fs::create_dir_all(&d)
                        .with_context(|| format!("cannot create {}", d.display()))?;
                    std::fs::write(d.join("torrc"), &setup.torrc)?;
                    std::fs::write(d.join("ob_config"), &setup.ob_config)?;
                    println!(
                        "{}: wrote {0}/torrc (add to the backend's torrc) and {0}/ob_config (copy to {place})",
                        d.display(),
                    );
                }
                None => {
                    match address {
                        Some(a) => println!("==== backend {name} ({a}) ===="),
                        None => println!(
                            "==== backend {name} (address not filled in yet: a new onion service) ===="
                        ),
                    }
                    println!("-- add to its torrc:\n{}", setup.torrc);
                    println!("-- create {place} containing:\n{}", setup.ob_config);
                }
            }
        }
    }
    Ok(true)
}
