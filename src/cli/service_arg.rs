//! `--service N|ADDRESS`: one reading for every command that acts on one service of a
//! config (`client-auth`, `drain`, `undrain`).

use crate::config::Config;
use anyhow::{bail, Context as _, Result};

/// The index in `cfg.services` of the service `wanted` names: its number in the config
/// (from 1) or its frontend address (with or without `.onion`).
pub(crate) fn index(cfg: &Config, wanted: &str) -> Result<usize> {
    match wanted.parse::<usize>() {
        Ok(n) if (1..=cfg.services.len()).contains(&n) => Ok(n - 1),
        Ok(n) => bail!(
            "--service {n}: {} has services 1 to {}",
            cfg.path.display(),
            cfg.services.len()
        ),
        Err(_) => {
            let address = wanted.trim().trim_end_matches(".onion");
            cfg.services
                .iter()
                .position(|svc| svc.address().to_string().trim_end_matches(".onion") == address)
                .with_context(|| {
                    format!(
                        "--service {wanted}: no service of {} has this frontend address",
                        cfg.path.display()
                    )
                })
        }
    }
}
