//! `onionbalance config`: the wizard's command line and terminal prompts.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Result;
use onionbalance::config::BackendPort;
use onionbalance::wizard::{self, BackendLayout, WizardError, WizardOptions};
use onionbalance::OnionAddress;

use super::logging::Level;
use super::upstream::{parse_hs_version, parse_service_target};

/// Generate a config file and frontend key(s), and print how to set up the backends.
///
/// On a terminal it asks for each setting (the flags give the defaults) unless
/// --no-interactive.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "onionbalance-config",
    version,
    after_help = "Exit status:\n  0   success\n  1   failure at run time (e.g. the output directory already has a config, or cannot be written)\n  64  usage error: unknown flag, bad value (e.g. -n 0, a --tag that makes invalid instance names) or missing argument\n  78  configuration error: the --key file is missing, unreadable or not a key"
)]
pub struct ConfigArgs {
    /// Import an existing frontend key (PKCS#8 PEM or C tor hs_ed25519_secret_key) instead of
    /// generating one.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Number of backend instances per service.
    #[arg(short = 'n', long, default_value_t = 2, value_name = "N")]
    pub instances: usize,
    /// Number of frontend services.
    #[arg(short = 's', long, default_value_t = 1, value_name = "N")]
    pub services: usize,
    /// Prefix of instance names (node -> node1, node2, ...): letters, digits, `-`, `_` and
    /// `.`, not starting with `.`.
    #[arg(short = 't', long, default_value = "node", value_name = "TAG")]
    pub tag: String,
    /// Directory to write config.yaml and the key files into.
    #[arg(long, default_value = "config", value_name = "DIR")]
    pub output: PathBuf,
    /// Never prompt, even on a terminal; missing backend addresses become TODO placeholders.
    #[arg(long)]
    pub no_interactive: bool,
    /// The onion service port clients connect to, for the backends' HiddenServicePort
    /// lines printed at the end (upstream's flag); stored in the config for
    /// `onionbalance backend` when not 80.
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    pub service_virtual_port: u16,
    /// Where each backend's tor forwards connections (ADDR:PORT, PORT or unix:PATH), for
    /// the backends' HiddenServicePort lines (upstream's flag); stored in the config for
    /// `onionbalance backend` when not 127.0.0.1:80.
    #[arg(long, default_value = "127.0.0.1:80", value_name = "TARGET", value_parser = parse_service_target)]
    pub service_target: String,
    /// Log level: debug, info, warning, error or critical (upstream's -v).
    #[arg(short = 'v', long = "verbosity", value_name = "LEVEL", default_value = "info", value_parser = Level::parse)]
    pub verbosity: Level,
    /// Upstream's onion service version: only v3 exists here.
    #[arg(long, value_name = "VERSION", default_value = "v3", value_parser = parse_hs_version, hide_default_value = true)]
    #[allow(dead_code)] // accepted for upstream's command lines; the parser lets only v3 in
    pub hs_version: String,
    /// Upstream's password for encrypting the key: upstream encrypts only v2 keys, and
    /// neither it nor this wizard encrypts a v3 key; accepted (with a warning) for upstream
    /// scripts.
    #[arg(short = 'p', long, value_name = "PASSWORD", hide = true)]
    pub password: Option<String>,
}

/// Runs the wizard, prompting on a terminal unless `--no-interactive`.
pub fn run(args: &ConfigArgs) -> Result<()> {
    if args.password.is_some() {
        eprintln!(
            "warning: --password is ignored: v3 keys are written unencrypted (mode 0600), as \
             upstream writes them; protect the key file instead"
        );
    }
    let mut opts = WizardOptions {
        output: args.output.clone(),
        services: args.services,
        instances: args.instances,
        tag: args.tag.clone(),
        import_key: args.key.clone(),
        addresses: Vec::new(),
        backend_port: backend_port(args),
    };
    if !args.no_interactive && std::io::stdin().is_terminal() {
        prompt(&mut opts)?;
    }
    let report = wizard::run(&opts, &mut rand::rng()).map_err(categorize)?;
    println!("Wrote {}", report.config_path.display());
    if let Some((uid, gid)) = report.owner {
        println!(
            "Gave {} and the key file(s) to uid {uid}, gid {gid}, the owner of {} (still mode \
             0600), so that the daemon's user can read them",
            report.config_path.display(),
            opts.output.display()
        );
    }
    for (s, (address, key_path, names)) in report.services.iter().enumerate() {
        println!(
            "\nKey for {address}: {} (mode 0600; back it up, keep it secret)",
            key_path.display()
        );
        print!("{}", wizard::backend_instructions(*address, names));
        let layout = BackendLayout {
            virtual_port: args.service_virtual_port,
            target: args.service_target.clone(),
            ..BackendLayout::default()
        };
        let given = opts.addresses.get(s).map(Vec::as_slice).unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            let setup = wizard::backend_setup(*address, name, given.get(i).copied(), &layout);
            print!("\n{}", setup.torrc);
        }
    }
    println!(
        "\nThen check the config with:  onionbalance check -c {}",
        report.config_path.display()
    );
    Ok(())
}

/// The ports to store in the config: `None` for the defaults (the file then stays in
/// upstream's format, and `onionbalance backend` prints the same defaults).
fn backend_port(args: &ConfigArgs) -> Option<BackendPort> {
    let default = BackendLayout::default();
    (args.service_virtual_port != default.virtual_port || args.service_target != default.target)
        .then(|| BackendPort {
            virtual_port: args.service_virtual_port,
            target: args.service_target.clone(),
        })
}

/// The wizard's error with its exit category: bad options are usage errors (64), a key to
/// import that cannot be used is a configuration error (78), anything else a failure (1).
fn categorize(e: WizardError) -> anyhow::Error {
    let usage = matches!(e, WizardError::BadOptions(_));
    let config = matches!(e, WizardError::ImportKey(_));
    let e = anyhow::Error::new(e).context("the config wizard failed");
    if usage {
        super::exit::usage(e)
    } else if config {
        super::exit::config(e)
    } else {
        e
    }
}

/// Asks for each option on the terminal, with the flags' values as defaults.
fn prompt(opts: &mut WizardOptions) -> Result<()> {
    let out = ask("Output directory", &opts.output.display().to_string())?;
    opts.output = PathBuf::from(out);
    if opts.import_key.is_none() {
        let k = ask(
            "Existing frontend key to import (empty: generate a new one)",
            "",
        )?;
        if !k.is_empty() {
            opts.import_key = Some(PathBuf::from(k));
        }
    }
    if opts.import_key.is_none() {
        opts.services = ask_number("Number of frontend services", opts.services)?;
    }
    opts.instances = ask_number("Backend instances per service", opts.instances)?;
    loop {
        let tag = ask("Instance name prefix", &opts.tag)?;
        if wizard::is_valid_tag(&tag, opts.instances) {
            opts.tag = tag;
            break;
        }
        eprintln!(
            "  {tag:?}: use letters, digits, `-`, `_` and `.` (not starting with `.`), at most {} characters",
            63 - opts.instances.to_string().len()
        );
    }
    for s in 0..opts.services {
        let mut addrs = Vec::new();
        for i in 0..opts.instances {
            loop {
                let a = ask(
                    &format!(
                        "Service {} instance {}{} onion address (empty: fill in later)",
                        s + 1,
                        opts.tag,
                        i + 1
                    ),
                    "",
                )?;
                if a.is_empty() {
                    break;
                }
                match a.parse::<OnionAddress>() {
                    Ok(addr) => {
                        addrs.push(addr);
                        break;
                    }
                    Err(e) => eprintln!("  \"{a}\" {e}; try again"),
                }
            }
            if addrs.len() <= i {
                break; // later instances stay placeholders too, keeping names in order
            }
        }
        opts.addresses.push(addrs);
    }
    Ok(())
}

/// Prints `question [default]: ` and reads a line.
fn ask(question: &str, default: &str) -> Result<String> {
    if default.is_empty() {
        print!("{question}: ");
    } else {
        print!("{question} [{default}]: ");
    }
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim();
    Ok(if line.is_empty() { default } else { line }.to_owned())
}

/// Like [`ask`], for a positive number.
fn ask_number(question: &str, default: usize) -> Result<usize> {
    loop {
        match ask(question, &default.to_string())?.parse::<usize>() {
            Ok(n) if n > 0 => return Ok(n),
            _ => eprintln!("  please enter a number of at least 1"),
        }
    }
}
