//! `onionbalance check`: validate a config and its keys offline, and with `--online` walk
//! the path a client takes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client_auth::ClientSecret;
use crate::config::{Config, ConfigError};
use crate::selftest::{self, Outcome};
use anyhow::{Context as _, Result};

/// Options of `onionbalance check`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CheckArgs {
    /// The config file (default: ./config.yaml, else /etc/onionbalance/config.yaml).
    #[arg(short = 'c', long, env = crate::config::ENV_CONFIG, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Also check over Tor: backends' descriptors and addresses, the frontend's descriptor,
    /// connections through the frontend.
    #[arg(long)]
    pub(crate) online: bool,
    /// Arti's configuration for --online (default: the public Tor network).
    #[command(flatten)]
    pub(crate) arti: super::arti_args::ArtiArgs,
    /// Arti state/cache directory for --online without --arti-config.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Virtual port to connect to on backends and frontend.
    #[arg(long, default_value_t = 80)]
    pub(crate) port: u16,
    /// Connections to make through the frontend.
    #[arg(long, default_value_t = 4)]
    pub(crate) attempts: usize,
    /// For a frontend with restricted discovery: an authorized client's private key (a C tor
    /// `.auth_private` file, as `onionbalance client-auth add` writes), to read the
    /// frontend's descriptor and connect through it.
    #[arg(long, value_name = "FILE", requires = "online")]
    pub(crate) client_key: Option<PathBuf>,
}

/// Validates the config (and with `--online`, the deployment); returns whether all passed.
/// An invalid config is a configuration error (exit 78), a failed online check is not.
pub(crate) fn run(args: &CheckArgs) -> Result<bool> {
    let path =
        super::config_path::resolve(args.config.as_deref(), super::config_path::Announce::Stderr)?;
    let Some(cfg) = offline(&path) else {
        return Err(super::exit::config(anyhow::anyhow!(
            "{} is not usable as it is (see above)",
            path.display()
        )));
    };
    if !args.online {
        return Ok(true);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(online(args, &cfg))
}

/// The offline part: prints the config or its problems.
fn offline(path: &Path) -> Option<Config> {
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
                    let mut notes = Vec::new();
                    if let Some(h) = &inst.health_check {
                        notes.push(describe_health_check(h));
                    }
                    if inst.drain {
                        notes.push("drained".to_owned());
                    }
                    let notes = if notes.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", notes.join("; "))
                    };
                    println!("  instance {:<12} {}{notes}", inst.name, inst.address);
                }
                if let Some(p) = &s.backend_port {
                    println!(
                        "  backend port: {} -> {} (for `onionbalance backend`)",
                        p.virtual_port, p.target
                    );
                }
                if let Some(auth) = &s.client_auth {
                    println!(
                        "  restricted discovery: {} authorized client(s)",
                        auth.clients.len()
                    );
                    println!("{}", describe_client_room(auth.clients.len()));
                }
            }
            if let Some(sock) = &cfg.status_socket_location {
                println!("status socket: {}", sock.display());
            }
            Some(cfg)
        }
        Err(ConfigError::Invalid { path, problems }) => {
            let todo: Vec<_> = problems.iter().filter(|p| p.placeholder).collect();
            let other: Vec<_> = problems.iter().filter(|p| !p.placeholder).collect();
            if !todo.is_empty() {
                eprintln!(
                    "{}: instance addresses still to be filled in:",
                    path.display()
                );
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
            None
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// The online part: bootstrap, then every step's verdict.
async fn online(args: &CheckArgs, cfg: &Config) -> Result<bool> {
    let started = Instant::now();
    let arti = super::run_cmd::arti_client_config(&args.arti, args.data_dir.as_deref())?;
    let client = crate::balancer::create_client(arti)?;
    match tokio::time::timeout(Duration::from_secs(180), client.bootstrap()).await {
        Ok(Ok(())) => println!(
            "[PASS] Tor bootstrap: {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Ok(Err(e)) => {
            println!("[FAIL] Tor bootstrap: {e}\n       fix: check network access, or --arti-config for a private network");
            return Ok(false);
        }
        Err(_) => {
            println!("[FAIL] Tor bootstrap: not done after 180 s\n       fix: check network access, or --arti-config for a private network");
            return Ok(false);
        }
    }
    let client_key = match &args.client_key {
        Some(path) => {
            let key = ClientSecret::load(path)
                .with_context(|| format!("--client-key {}", path.display()))?;
            if !cfg.services.iter().any(|s| s.address() == key.frontend) {
                anyhow::bail!(
                    "--client-key {}: the key is for {}, which is not a frontend of {}",
                    path.display(),
                    key.frontend,
                    cfg.path.display()
                );
            }
            Some(std::sync::Arc::new(key))
        }
        None => None,
    };
    let opts = selftest::Options {
        port: args.port,
        attempts: args.attempts,
        client_key,
        ..Default::default()
    };
    let verdicts = selftest::run(cfg, &client, &opts).await;
    for v in &verdicts {
        println!("{v}");
    }
    let failed = verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Fail)
        .count();
    let warned = verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Warn)
        .count();
    println!(
        "{}: {} checks, {failed} failed, {warned} warning(s)",
        if failed == 0 { "PASS" } else { "FAIL" },
        verdicts.len()
    );
    Ok(failed == 0)
}

/// A health check as `check` shows it, e.g. "probed: GET /healthz on port 80 every 30s,
/// timeout 20s, down after 2, up after 1".
/// How many authorized clients fit in a descriptor beside 20, 10 and 5 intro points, and
/// what `clients` means for this service: built with the real encoder
/// ([`crate::descriptor::clients_that_fit`]) at the network's default size limit.
fn describe_client_room(clients: usize) -> String {
    use crate::descriptor::{
        clients_that_fit, intro_points_for_clients, DEFAULT_MAX_DESCRIPTOR_LEN, MAX_INTRO_POINTS,
    };
    let room = |n: usize| clients_that_fit(n, DEFAULT_MAX_DESCRIPTOR_LEN);
    let mut parts = Vec::new();
    for n in [MAX_INTRO_POINTS, 10, 5] {
        match room(n) {
            Ok(k) => parts.push(format!("{k} beside {n} intro points")),
            Err(e) => return format!("  client room: cannot compute it: {e}"),
        }
    }
    let mut text = format!(
        "  client room ({DEFAULT_MAX_DESCRIPTOR_LEN}-byte descriptors): {}",
        parts.join(", ")
    );
    // With more clients than fit beside 20, descriptors list fewer intro points: say how many.
    match intro_points_for_clients(clients, DEFAULT_MAX_DESCRIPTOR_LEN) {
        Ok(n) if n < MAX_INTRO_POINTS => text.push_str(&format!(
            "\n  with {clients} clients each descriptor lists at most {n} intro points"
        )),
        _ => {}
    }
    text
}

fn describe_health_check(h: &crate::config::HealthCheckConfig) -> String {
    let what = match &h.http_path {
        Some(path) => format!("GET {path} on port {}", h.port),
        None => format!("connect to port {}", h.port),
    };
    format!(
        "probed: {what} every {}, timeout {}, down after {}, up after {}",
        humantime::format_duration(h.interval),
        humantime::format_duration(h.timeout),
        h.down_after,
        h.up_after
    )
}
