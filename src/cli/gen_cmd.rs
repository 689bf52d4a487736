//! `onionbalance completions` and `onionbalance man`: shell completions and manual pages,
//! generated from the same clap definitions that parse the command line, so they never
//! drift from it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap_complete::Shell;

/// Options of `onionbalance completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
    /// Write the completion files of both `onionbalance` and `onionbalance-config` into
    /// this directory (named as the shell looks them up) instead of printing
    /// `onionbalance`'s.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// Options of `onionbalance man` (for packagers; hidden from `--help`).
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into: onionbalance.1, one page per subcommand
    /// (onionbalance-run.1, ...), and onionbalance-config.1 for the wizard's own binary.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
}

/// The commands to document: `onionbalance` and `onionbalance-config`.
pub struct Commands {
    /// `onionbalance`'s command tree.
    pub onionbalance: clap::Command,
    /// The `onionbalance-config` binary's command.
    pub onionbalance_config: clap::Command,
}

/// Prints or writes shell completions.
pub fn completions(args: &CompletionsArgs, cmds: Commands) -> Result<bool> {
    let Commands {
        mut onionbalance,
        mut onionbalance_config,
    } = cmds;
    match &args.output {
        None => {
            clap_complete::generate(
                args.shell,
                &mut onionbalance,
                "onionbalance",
                &mut std::io::stdout(),
            );
        }
        Some(dir) => {
            create_dir(dir)?;
            for (cmd, name) in [
                (&mut onionbalance, "onionbalance"),
                (&mut onionbalance_config, "onionbalance-config"),
            ] {
                let path = clap_complete::generate_to(args.shell, cmd, name, dir)
                    .with_context(|| format!("cannot write completions into {}", dir.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(true)
}

/// Writes the manual pages.
pub fn man(args: &ManArgs, cmds: Commands) -> Result<bool> {
    let dir = &args.output;
    create_dir(dir)?;
    let err = || format!("cannot write manual pages into {}", dir.display());
    // onionbalance(1) and a page per subcommand. The `config` subcommand's page,
    // onionbalance-config.1, is then replaced by the page of the binary of that name: the
    // same wizard, under the name upstream's users look up.
    clap_mangen::generate_to(cmds.onionbalance, dir).with_context(err)?;
    clap_mangen::Man::new(cmds.onionbalance_config)
        .generate_to(dir)
        .with_context(err)?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .with_context(err)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    println!("wrote {} into {}", pages.join(", "), dir.display());
    Ok(true)
}

/// Creates `dir` and its parents if missing.
fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
