//! `onionbalance config`: the wizard's command line and terminal prompts.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use crate::config::{BackendPort, HealthCheckConfig};
use crate::wizard::{self, BackendLayout, WizardError, WizardHealthCheck, WizardOptions};
use crate::OnionAddress;
use anyhow::Result;

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
pub(crate) struct ConfigArgs {
    /// Import an existing frontend key (PKCS#8 PEM or C tor hs_ed25519_secret_key) instead of
    /// generating one.
    #[arg(long, value_name = "PATH")]
    pub(crate) key: Option<PathBuf>,
    /// Number of backend instances per service.
    #[arg(short = 'n', long, default_value_t = 2, value_name = "N")]
    pub(crate) instances: usize,
    /// Number of frontend services.
    #[arg(short = 's', long, default_value_t = 1, value_name = "N")]
    pub(crate) services: usize,
    /// Prefix of instance names (node -> node1, node2, ...): letters, digits, `-`, `_` and
    /// `.`, not starting with `.`.
    #[arg(short = 't', long, default_value = "node", value_name = "TAG")]
    pub(crate) tag: String,
    /// Directory to write config.yaml and the key files into.
    #[arg(long, default_value = "config", value_name = "DIR")]
    pub(crate) output: PathBuf,
    /// Never prompt, even on a terminal; missing backend addresses become TODO placeholders.
    #[arg(long)]
    pub(crate) no_interactive: bool,
    /// The onion service port clients connect to, for the backends' HiddenServicePort
    /// lines printed at the end (upstream's flag); stored in the config for
    /// `onionbalance backend` when not 80.
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    pub(crate) service_virtual_port: u16,
    /// Where each backend's tor forwards connections (ADDR:PORT, PORT or unix:PATH), for
    /// the backends' HiddenServicePort lines (upstream's flag); stored in the config for
    /// `onionbalance backend` when not 127.0.0.1:80.
    #[arg(long, default_value = "127.0.0.1:80", value_name = "TARGET", value_parser = parse_service_target)]
    pub(crate) service_target: String,
    /// Turn on health checks (ours): the daemon probes each backend through Tor, at its own
    /// onion address, and leaves the ones that fail out of the descriptor. A probe opens a
    /// connection to --health-check-port (default: --service-virtual-port), or requests
    /// --health-check-path.
    #[arg(long)]
    pub(crate) health_check: bool,
    /// The backends' port to probe (implies --health-check); default: --service-virtual-port.
    #[arg(long, value_name = "PORT")]
    pub(crate) health_check_port: Option<u16>,
    /// Probe with an HTTP GET of this path, e.g. /healthz, which passes on a status below
    /// 400 (implies --health-check); default: a probe passes when the connection opens.
    #[arg(long, value_name = "PATH")]
    pub(crate) health_check_path: Option<String>,
    /// Log level: debug, info, warning, error or critical (upstream's -v).
    #[arg(short = 'v', long = "verbosity", value_name = "LEVEL", default_value = "info", value_parser = Level::parse)]
    pub(crate) verbosity: Level,
    /// Upstream's onion service version: only v3 exists here.
    #[arg(long, value_name = "VERSION", default_value = "v3", value_parser = parse_hs_version, hide_default_value = true)]
    #[allow(dead_code)] // accepted for upstream's command lines; the parser lets only v3 in
    pub(crate) hs_version: String,
    /// Upstream's password for encrypting the key: upstream encrypts only v2 keys, and
    /// neither it nor this wizard encrypts a v3 key; accepted (with a warning) for upstream
    /// scripts.
    #[arg(short = 'p', long, value_name = "PASSWORD", hide = true)]
    pub(crate) password: Option<String>,
}

/// Runs the wizard, prompting on a terminal unless `--no-interactive`.
pub(crate) fn run(args: &ConfigArgs) -> Result<()> {
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
        health_check: health_check(args),
    };
    if !args.no_interactive && std::io::stdin().is_terminal() {
        prompt(&mut opts, args.service_virtual_port)?;
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
    if let Some(check) = &opts.health_check {
        print!(
            "\n{}",
            health_check_summary(check, args.service_virtual_port)
        );
    }
    println!(
        "\nThen check the config with:  onionbalance check -c {}",
        report.config_path.display()
    );
    Ok(())
}

/// The health checks the flags ask for: any of the three turns them on.
fn health_check(args: &ConfigArgs) -> Option<WizardHealthCheck> {
    (args.health_check || args.health_check_port.is_some() || args.health_check_path.is_some())
        .then(|| WizardHealthCheck {
            port: args.health_check_port.unwrap_or(args.service_virtual_port),
            http_path: args.health_check_path.clone(),
        })
}

/// What the health checks written mean for the backends.
fn health_check_summary(check: &WizardHealthCheck, virtual_port: u16) -> String {
    let probe = match &check.http_path {
        Some(path) => format!(
            "an HTTP GET of {path} at port {} (a status below 400 passes)",
            check.port
        ),
        None => format!(
            "a connection to port {} (it passes when it opens)",
            check.port
        ),
    };
    let mut text = format!(
        "Health checks are on: every {} the daemon probes each backend through Tor, at the \
         backend's own onion address, with {probe}; a backend that fails {} probes in a row \
         leaves the descriptor until it passes again (`onionbalance status` shows each \
         backend's health).\n",
        humantime::format_duration(HealthCheckConfig::DEFAULT_INTERVAL),
        HealthCheckConfig::DEFAULT_DOWN_AFTER,
    );
    if check.port != virtual_port {
        text.push_str(&format!(
            "The backends must serve port {} too: add a `HiddenServicePort {} <target>` line \
             to each backend's onion service.\n",
            check.port, check.port
        ));
    }
    text
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

/// Asks for each option on the terminal, with the flags' values as defaults;
/// `virtual_port` is the port clients connect to, the default port to probe.
fn prompt(opts: &mut WizardOptions, virtual_port: u16) -> Result<()> {
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
    opts.health_check = prompt_health_check(opts.health_check.take(), virtual_port)?;
    Ok(())
}

/// Asks whether to turn on health checks and, if so, the port and the HTTP path, with
/// `given` (from the flags) as the defaults.
fn prompt_health_check(
    given: Option<WizardHealthCheck>,
    virtual_port: u16,
) -> Result<Option<WizardHealthCheck>> {
    let on = ask_yes_no(
        "Turn on health checks (probe each backend through Tor; leave out the ones that fail)?",
        given.is_some(),
    )?;
    if !on {
        return Ok(None);
    }
    let default_port = given.as_ref().map_or(virtual_port, |g| g.port);
    let port = loop {
        match ask("Port to probe on each backend", &default_port.to_string())?.parse::<u16>() {
            Ok(p) if p > 0 => break p,
            _ => eprintln!("  please enter a port, 1 to 65535"),
        }
    };
    let default_path = given.and_then(|g| g.http_path).unwrap_or_default();
    let http_path = loop {
        let path = ask(
            "HTTP path to request, e.g. /healthz (empty: only open a connection)",
            &default_path,
        )?;
        if path.is_empty() {
            break None;
        }
        if wizard::is_valid_http_path(&path) {
            break Some(path);
        }
        eprintln!("  {path:?}: a path starts with `/` and has no spaces");
    };
    Ok(Some(WizardHealthCheck { port, http_path }))
}

/// Asks a yes/no question; an empty answer is `default`.
fn ask_yes_no(question: &str, default: bool) -> Result<bool> {
    let hint = if default { "Y/n" } else { "y/N" };
    loop {
        let answer = ask(&format!("{question} [{hint}]"), "")?;
        match answer.to_ascii_lowercase().as_str() {
            "" => return Ok(default),
            "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => eprintln!("  please answer y or n"),
        }
    }
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
