//! `onionbalance check`: validate a config and its keys offline.

use std::path::Path;

use anyhow::Result;
use onionbalance::config::{Config, ConfigError};

/// Validates `path` and prints each service; returns whether it is valid.
pub fn run(path: &Path) -> Result<bool> {
    match Config::load(path) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            println!("{}: valid", cfg.path.display());
            for (i, s) in cfg.services.iter().enumerate() {
                println!(
                    "service {}: frontend {} (key {})",
                    i + 1,
                    s.address(),
                    s.key_path.display()
                );
                for inst in &s.instances {
                    println!("  instance {:<12} {}", inst.name, inst.address);
                }
            }
            if let Some(sock) = &cfg.status_socket_location {
                println!("status socket: {}", sock.display());
            }
            Ok(true)
        }
        Err(ConfigError::Invalid { path, problems }) => {
            let todo: Vec<_> = problems.iter().filter(|p| p.placeholder).collect();
            let other: Vec<_> = problems.iter().filter(|p| !p.placeholder).collect();
            if !todo.is_empty() {
                eprintln!("{}: instance addresses still to be filled in:", path.display());
                for p in &todo {
                    eprintln!("  - {}", p.location);
                }
            }
            if !other.is_empty() {
                eprintln!("{}: problems:", path.display());
                for p in &other {
                    eprintln!("  - {p}");
                }
            }
            Ok(false)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(false)
        }
    }
}
