//! `onionbalance backend`: what each backend's tor needs, printed or written to files.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use onionbalance::config::Config;
use onionbalance::wizard::{backend_setup, BackendLayout};

/// Options of `onionbalance backend`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The config file naming the frontends and their instances (default: ./config.yaml,
    /// else /etc/onionbalance/config.yaml).
    #[arg(short = 'c', long, env = onionbalance::config::ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Parent directory of the backends' HiddenServiceDir.
    #[arg(long, default_value = "/var/lib/tor", value_name = "DIR")]
    pub hs_dir_base: PathBuf,
    /// The onion service's virtual port.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Where each backend's tor forwards connections (its web server).
    #[arg(long, default_value = "127.0.0.1:80", value_name = "ADDR:PORT")]
    pub target: String,
    /// Write `<DIR>/<instance>/torrc` and `<DIR>/<instance>/ob_config` instead of printing.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// Prints or writes every instance's files.
pub fn run(args: &BackendArgs) -> Result<bool> {
    // Backend setup is wanted before the addresses are known: accept placeholders.
    let path =
        super::config_path::resolve(args.config.as_deref(), super::config_path::Announce::Stderr)?;
    let cfg = Config::load_allowing_placeholders(&path)?;
    let layout = BackendLayout {
        hs_dir_base: args.hs_dir_base.clone(),
        virtual_port: args.port,
        target: args.target.clone(),
    };
    for svc in &cfg.services {
        let names = svc
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.address.to_string()))
            .chain(
                svc.pending
                    .iter()
                    .map(|n| (n.clone(), "address not filled in yet".to_owned())),
            );
        for (name, address) in names {
            let setup = backend_setup(svc.address(), &name, &layout);
            match &args.write {
                Some(dir) => {
                    // Names are checked by the config loader; never leave `dir` whatever.
                    anyhow::ensure!(
                        onionbalance::config::is_valid_instance_name(&name),
                        "instance name {name:?} cannot be a directory name under {}",
                        dir.display()
                    );
                    let d = dir.join(&name);
                    std::fs::create_dir_all(&d)
                        .with_context(|| format!("cannot create {}", d.display()))?;
                    std::fs::write(d.join("torrc"), &setup.torrc)?;
                    std::fs::write(d.join("ob_config"), &setup.ob_config)?;
                    println!(
                        "{}: wrote {0}/torrc (add to the backend's torrc) and {0}/ob_config (copy to {})",
                        d.display(),
                        setup.hs_dir.join("ob_config").display()
                    );
                }
                None => {
                    println!("==== backend {name} ({address}) ====");
                    println!("-- add to its torrc:\n{}", setup.torrc);
                    println!(
                        "-- create {} containing:\n{}",
                        setup.hs_dir.join("ob_config").display(),
                        setup.ob_config
                    );
                }
            }
        }
    }
    Ok(true)
}
