//! Which config file a command reads when `-c` is not given: one rule for `run`, `check`,
//! `backend`, `client-auth` and `status`.
//!
//! `-c FILE` (or `$ONIONBALANCE_CONFIG`, which clap reads into the same flag), else
//! `./config.yaml` if it exists (as upstream), else `/etc/onionbalance/config.yaml` if it
//! exists (where the Debian package and the README's systemd steps put it), else a usage
//! error naming both.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::exit;

/// The config file in the working directory, tried first (upstream's default).
pub(crate) const LOCAL_CONFIG: &str = "config.yaml";
/// The system-wide config file, tried second (the packaged daemon's).
pub(crate) const SYSTEM_CONFIG: &str = "/etc/onionbalance/config.yaml";

/// How to tell the operator which default was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    /// Through the log, at level info (the daemon, whose log is its output).
    Log,
    /// On stderr (the short commands, whose stdout is their result).
    Stderr,
}

/// The config file to read: `explicit` (from `-c` or the environment) when given, else the
/// first default that exists, saying which; a usage error when there is none.
pub(crate) fn resolve(explicit: Option<&Path>, announce: Announce) -> Result<PathBuf> {
    match find(explicit, &default_candidates()) {
        Some((path, explicit)) => {
            if !explicit {
                let text = format!("no -c given: using {}", shown(&path));
                match announce {
                    Announce::Log => tracing::info!("{text}"),
                    Announce::Stderr => eprintln!("{text}"),
                }
            }
            Ok(path)
        }
        None => Err(exit::usage(anyhow::anyhow!(
            "no config file: give -c FILE (or set {}); without them ./{LOCAL_CONFIG} or \
             {SYSTEM_CONFIG} is used, and neither exists. Create one with \
             `onionbalance config`",
            crate::config::ENV_CONFIG
        ))),
    }
}

/// Like [`resolve`], but `None` instead of an error when no config file is found (for
/// `status`, which can reach the packaged daemon without one).
pub(crate) fn resolve_optional(explicit: Option<&Path>, announce: Announce) -> Option<PathBuf> {
    if explicit.is_none() && find(None, &default_candidates()).is_none() {
        return None;
    }
    resolve(explicit, announce).ok()
}

/// The defaults, in order.
fn default_candidates() -> [PathBuf; 2] {
    [PathBuf::from(LOCAL_CONFIG), PathBuf::from(SYSTEM_CONFIG)]
}

/// The rule itself: `explicit`, else the first of `candidates` that is a file. The flag says
/// whether the path was explicit.
fn find(explicit: Option<&Path>, candidates: &[PathBuf]) -> Option<(PathBuf, bool)> {
    if let Some(p) = explicit {
        return Some((p.to_owned(), true));
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .map(|c| (c.clone(), false))
}

/// A path as the operator would type it (`./config.yaml` rather than `config.yaml`).
fn shown(path: &Path) -> String {
    if path.is_relative() && !path.starts_with(".") {
        format!("./{}", path.display())
    } else {
        path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_local_then_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("config.yaml");
        let system = dir.path().join("etc-config.yaml");
        let candidates = [local.clone(), system.clone()];
        let given = Path::new("given.yaml");
        // Nothing exists: only an explicit path is found, even one that does not exist
        // (loading it then says why).
        assert_eq!(find(None, &candidates), None);
        assert_eq!(
            find(Some(given), &candidates),
            Some((given.to_owned(), true))
        );
        std::fs::write(&system, "").expect("write");
        assert_eq!(find(None, &candidates), Some((system.clone(), false)));
        std::fs::write(&local, "").expect("write");
        assert_eq!(find(None, &candidates), Some((local.clone(), false)));
        assert_eq!(
            find(Some(given), &candidates),
            Some((given.to_owned(), true))
        );
        // A directory is not a config file.
        std::fs::remove_file(&local).expect("rm");
        std::fs::create_dir(&local).expect("mkdir");
        assert_eq!(find(None, &candidates), Some((system, false)));
    }

    #[test]
    fn shown_paths() {
        assert_eq!(shown(Path::new("config.yaml")), "./config.yaml");
        assert_eq!(
            shown(Path::new("/etc/onionbalance/config.yaml")),
            "/etc/onionbalance/config.yaml"
        );
    }
}
