//! The Arti configuration options shared by `run` and `check --online`, spelled as the
//! `arti` program spells them.

use std::path::PathBuf;

/// Arti's configuration: TOML files, then `-o` overrides.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ArtiArgs {
    /// Arti configuration (TOML), e.g. for a private or chutney network; may be given
    /// several times, later files overriding earlier ones. Keys Arti does not know are
    /// warned about by name. Default: the public Tor network with state and cache under
    /// --data-dir.
    #[arg(long = "arti-config", value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Override one Arti setting, as `arti -o`: KEY=VALUE with KEY a dotted TOML path and
    /// VALUE a TOML value (a bare word is a string), e.g. `-o
    /// path_rules.ipv4_subnet_family_prefix=33`; may be repeated; applied after the files.
    #[arg(short = 'o', long = "arti-option", value_name = "KEY=VALUE")]
    pub(crate) options: Vec<String>,
}
