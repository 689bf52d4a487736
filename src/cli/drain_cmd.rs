//! `onionbalance drain INSTANCE` and `onionbalance undrain INSTANCE`: take a backend out of
//! every descriptor on purpose (maintenance) and put it back, by giving its entry in the
//! config file `drain: true` or taking that away.
//!
//! The file is edited as text, so that its comments and layout stay (see
//! [`super::drain_edit`]); the new text is then read as the daemon will read it, and written
//! only if it loads and exactly the instances asked for changed their drain flag. The file
//! is replaced atomically, with its mode and owner kept (under the package it belongs to the
//! daemon's user, who must still read it). As with `client-auth`, the running daemon applies
//! the change when it reloads (SIGHUP, `systemctl reload onionbalance`), and the command
//! says so.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use anyhow::{bail, Context as _, Result};

use super::config_path::{self, Announce};
use super::drain_edit::{self, Outcome, Place};
use super::exit;
use super::reload;

/// Options of `onionbalance drain` and `onionbalance undrain`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DrainArgs {
    /// The backend: its instance name (as `onionbalance status` shows it) or its onion
    /// address.
    #[arg(value_name = "INSTANCE")]
    pub(crate) instance: String,
    /// The config file (default: ./config.yaml, else /etc/onionbalance/config.yaml).
    #[arg(short = 'c', long, env = crate::config::ENV_CONFIG, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Only in this service: its number in the config (from 1) or its frontend address.
    /// Default: every service that lists the backend.
    #[arg(long, value_name = "N|ADDRESS")]
    pub(crate) service: Option<String>,
    /// Only edit the config: do not reload the running daemon (to reload once after
    /// several changes).
    #[arg(long)]
    pub(crate) no_reload: bool,
}

/// Drains (`drained`) or undrains the instance `args` names.
pub(crate) fn run(args: &DrainArgs, drained: bool) -> Result<bool> {
    let path = config_path::resolve(args.config.as_deref(), Announce::Stderr)?;
    // Read as the daemon reads it first (a regular file, a valid config), then take the text
    // that is edited and read that again: what is checked is what is edited.
    Config::load(&path)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let cfg = Config::parse(&text, &path)?;
    let places = find(&cfg, args)?;

    let mut new_text = text.clone();
    let mut changed = Vec::new();
    for &place in &places {
        match drain_edit::set_drain(&new_text, place, drained) {
            Ok(Outcome::Changed(t)) => {
                new_text = t;
                changed.push(place);
            }
            Ok(Outcome::Unchanged) => {}
            Err(e) => return Err(by_hand(&cfg, place, drained, &e.to_string())),
        }
    }
    let word = if drained { "drained" } else { "undrained" };
    if changed.is_empty() {
        for &place in &places {
            println!(
                "{} is {word} already in {}: nothing changed",
                describe(&cfg, place),
                cfg.path.display()
            );
        }
        println!("(if the daemon has not reloaded since the file changed: `systemctl reload onionbalance`, or send SIGHUP to its process)");
        return Ok(true);
    }
    check(&cfg, &new_text, &changed, drained)?;
    replace_file(&path, new_text.as_bytes())
        .with_context(|| format!("cannot write {} (nothing was changed)", path.display()))?;

    for &place in &changed {
        let what = if drained {
            "gave it `drain: true`"
        } else {
            "took its `drain: true` away"
        };
        println!(
            "{word} {} in {}: {what}",
            describe(&cfg, place),
            cfg.path.display()
        );
    }
    if args.no_reload {
        println!(
            "not reloaded (--no-reload): reload the daemon to apply it: {}",
            reload::BY_HAND
        );
    } else {
        reload::report(&reload::reload_daemon(&cfg), "the change");
    }
    let names: BTreeSet<&str> = changed
        .iter()
        .map(|p| cfg.services[p.service].instances[p.instance].name.as_str())
        .collect();
    let names = names.into_iter().collect::<Vec<_>>().join(", ");
    if drained {
        println!(
            "then watch `onionbalance status`: {names} shows as draining once the daemon has \
             reloaded, and the HSDirs get descriptors without it. Clients that fetched a \
             descriptor earlier may still come to it for a while: keep it serving until its own \
             traffic has died down (README, \"Health checks\")."
        );
        warn_if_all_drained(&cfg, &changed);
    } else {
        println!(
            "then watch `onionbalance status`: {names} is listed again once the daemon has \
             published descriptors with it (unless its health checks find it down)."
        );
    }
    Ok(true)
}

/// The places of the instances `args` names: by name or address, in the service given or in
/// every service. A usage error when there is none, or when the name means several backends.
fn find(cfg: &Config, args: &DrainArgs) -> Result<Vec<Place>> {
    let services: Vec<usize> = match args.service.as_deref() {
        Some(s) => vec![super::service_arg::index(cfg, s).map_err(exit::usage)?],
        None => (0..cfg.services.len()).collect(),
    };
    let wanted = args.instance.trim();
    let wanted_address = wanted.trim_end_matches(".onion").to_ascii_lowercase();
    let mut places = Vec::new();
    for &s in &services {
        for (i, inst) in cfg.services[s].instances.iter().enumerate() {
            let address = inst.address.to_string();
            if inst.name == wanted || address.trim_end_matches(".onion") == wanted_address {
                places.push(Place {
                    service: s,
                    instance: i,
                });
            }
        }
    }
    if places.is_empty() {
        let known: Vec<String> = services
            .iter()
            .flat_map(|&s| cfg.services[s].instances.iter())
            .map(|i| format!("{} ({})", i.name, i.address))
            .collect();
        return Err(exit::usage(anyhow::anyhow!(
            "no instance named {wanted:?} or with that address in {}{}: its instances are {}",
            cfg.path.display(),
            args.service
                .as_deref()
                .map(|s| format!(" (service {s})"))
                .unwrap_or_default(),
            known.join(", ")
        )));
    }
    let backends: BTreeSet<String> = places
        .iter()
        .map(|p| {
            cfg.services[p.service].instances[p.instance]
                .address
                .to_string()
        })
        .collect();
    if backends.len() > 1 {
        let which: Vec<String> = places.iter().map(|&p| describe(cfg, p)).collect();
        return Err(exit::usage(anyhow::anyhow!(
            "{wanted:?} names {} different backends: {}. Say which with its onion address, or with --service N",
            backends.len(),
            which.join("; ")
        )));
    }
    Ok(places)
}

/// `node1 (<address>) of service 1 (<frontend>)`.
fn describe(cfg: &Config, place: Place) -> String {
    let svc = &cfg.services[place.service];
    let inst = &svc.instances[place.instance];
    format!(
        "{} ({}) of service {} ({})",
        inst.name,
        inst.address,
        place.service + 1,
        svc.address()
    )
}

/// The error for a file this command cannot edit: what to do by hand.
fn by_hand(cfg: &Config, place: Place, drained: bool, why: &str) -> anyhow::Error {
    let inst = &cfg.services[place.service].instances[place.instance];
    let todo = if drained {
        "add the line `drain: true` to its entry, indented as its `address:`"
    } else {
        "delete its `drain: true` line"
    };
    anyhow::anyhow!(
        "{}: {why}. Nothing was written. Edit it by hand: in service {}, find the instance with \
         `address: {}` and {todo}; then `onionbalance check -c {}` and reload the daemon",
        cfg.path.display(),
        place.service + 1,
        inst.address,
        cfg.path.display()
    )
}

/// Reads `new_text` as the daemon will, and refuses it unless it loads and the drain flag of
/// exactly the instances at `changed` became `drained`, every other instance unchanged.
fn check(old: &Config, new_text: &str, changed: &[Place], drained: bool) -> Result<()> {
    let new = Config::parse(new_text, &old.path)
        .context("the edited config would not load (nothing was written); edit the file by hand")?;
    let flags = |cfg: &Config| -> Vec<Vec<(String, bool)>> {
        cfg.services
            .iter()
            .map(|s| {
                s.instances
                    .iter()
                    .map(|i| (i.address.to_string(), i.drain))
                    .collect()
            })
            .collect()
    };
    let mut expected = flags(old);
    for p in changed {
        if let Some(slot) = expected
            .get_mut(p.service)
            .and_then(|s| s.get_mut(p.instance))
        {
            slot.1 = drained;
        }
    }
    if flags(&new) != expected {
        bail!(
            "the edited config would not say what was asked for (nothing was written); edit {} by hand",
            old.path.display()
        );
    }
    Ok(())
}

/// Warns when `changed` left a service with no backend that is not drained.
fn warn_if_all_drained(cfg: &Config, changed: &[Place]) {
    let services: BTreeSet<usize> = changed.iter().map(|p| p.service).collect();
    for s in services {
        let svc = &cfg.services[s];
        let undrained = svc.instances.iter().enumerate().any(|(i, inst)| {
            !inst.drain
                && !changed.contains(&Place {
                    service: s,
                    instance: i,
                })
        });
        if !undrained {
            eprintln!(
                "warning: every backend of service {} ({}) is drained now: after the reload the daemon keeps them all listed (it fails open) until one is undrained",
                s + 1,
                svc.address()
            );
        }
    }
}

/// Replaces the file at `path` (a symbolic link's target) with `contents`, atomically: a new
/// file in the same directory, with the old one's mode, owner and group, synced, then
/// renamed over it. Nothing is replaced if any step fails.
fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    let target = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&target)?;
    let dir = target
        .parent()
        .context("the config file has no directory")?;
    let name = target
        .file_name()
        .context("the config file has no name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.onionbalance-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = (|| -> Result<()> {
        file.write_all(contents)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let ours = file.metadata()?;
            if (ours.uid(), ours.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).with_context(
                    || {
                        format!(
                            "cannot give the new file the old one's owner (uid {}, gid {}): run this as root or as that user",
                            meta.uid(),
                            meta.gid()
                        )
                    },
                )?;
            }
        }
        file.set_permissions(meta.permissions())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        Ok(())
    })();
    if written.is_err() {
        // Nothing may be left behind; the old file is untouched.
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename itself, on disk; the file is replaced already, whatever this says.
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}
