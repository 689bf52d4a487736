//! `onionbalance run`: the daemon, on an embedded Arti client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::arti_toml::{ArtiSources, Storage};
use crate::balancer::create_client;
use crate::status::BackendHealth;
use crate::status_socket::{StatusSocket, StatusSource};
use crate::{Balancer, BalancerHandle, Config, ServiceStatus};
use anyhow::{Context as _, Result};
use arti_client::TorClientConfig;
use futures::StreamExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::arti_args::ArtiArgs;
use super::exit;
use super::logging::{Level, LogFormat, LogOptions};
use super::upstream::parse_hs_version;

/// How long shutdown may take before we exit anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Options of the daemon (also accepted at the top level, as upstream's `onionbalance -c`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RunArgs {
    /// The config file (upstream Onionbalance v3 YAML); default: ./config.yaml when it
    /// exists, as upstream.
    #[arg(short = 'c', long, env = crate::config::ENV_CONFIG, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Arti's configuration: files and `-o` overrides.
    #[command(flatten)]
    pub(crate) arti: ArtiArgs,
    /// Directory for our state (the last revision counter published per time period, under
    /// publish/) and, when --arti-config is not given, Arti's state and cache (default:
    /// $STATE_DIRECTORY, else $XDG_DATA_HOME/onionbalance, else ~/.local/share/onionbalance).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9035); off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Log level: debug, info, warning, error or critical (as upstream; `warn` too);
    /// RUST_LOG overrides.
    #[arg(
        short = 'v',
        long = "verbosity",
        value_name = "LEVEL",
        env = "ONIONBALANCE_LOG_LEVEL",
        default_value = "info",
        value_parser = Level::parse
    )]
    pub(crate) verbosity: Level,
    /// Append the log to this file instead of writing it to stderr.
    #[arg(long, value_name = "FILE", env = "ONIONBALANCE_LOG_LOCATION")]
    pub(crate) log_location: Option<PathBuf>,
    /// Log format: text, or json (one object per line) for log shippers.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Upstream's onion service version: only v3 exists here (and in Tor since 2021).
    #[arg(long, value_name = "VERSION", default_value = "v3", value_parser = parse_hs_version, hide_default_value = true)]
    #[allow(dead_code)] // accepted for upstream's command lines; the parser lets only v3 in
    pub(crate) hs_version: String,
    /// Upstream's test-network switch: give the test network's Arti configuration with
    /// --arti-config instead (`onionbalance arti-config --chutney` writes one).
    #[arg(long)]
    pub(crate) is_testnet: bool,
    /// Upstream's control-port address: not needed (there is no system tor); ignored.
    #[arg(short = 'i', long = "ip", value_name = "ADDR", hide = true)]
    pub(crate) ip: Option<String>,
    /// Upstream's control port: not needed; ignored.
    #[arg(short = 'p', long = "port", value_name = "PORT", hide = true)]
    pub(crate) port: Option<String>,
    /// Upstream's control socket: not needed; ignored.
    #[arg(short = 's', long = "socket", value_name = "PATH", hide = true)]
    pub(crate) socket: Option<String>,
}

impl RunArgs {
    /// The tracing filter for `--verbosity`: our crate at that level, Arti's a notch quieter.
    pub(crate) fn log_filter(&self) -> String {
        let level = self.verbosity.directive();
        let arti = if level == "debug" { "info" } else { "warn" };
        // tor_netdir warns every second on small (test) networks that it cannot find enough
        // relays for vanguards; that is expected there and says nothing on the public network.
        let netdir = if level == "debug" { "info" } else { "error" };
        format!("{level},arti_client={arti},tor_dirmgr={arti},tor_circmgr={arti},tor_guardmgr={arti},tor_chanmgr={arti},tor_proto={arti},tor_netdir={netdir}")
    }

    /// Where and how the daemon logs.
    pub(crate) fn log_options(&self) -> LogOptions {
        LogOptions {
            filter: self.log_filter(),
            format: self.log_format,
            file: self.log_location.clone(),
        }
    }

    /// The config file: see [`super::config_path`].
    fn config_path(&self) -> Result<PathBuf> {
        super::config_path::resolve(self.config.as_deref(), super::config_path::Announce::Log)
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub(crate) fn run(args: &RunArgs) -> Result<bool> {
    for (flag, v) in [
        ("--ip", &args.ip),
        ("--port", &args.port),
        ("--socket", &args.socket),
    ] {
        if v.is_some() {
            warn!("{flag} is ignored: onionbalance embeds its own Tor client and needs no control port");
        }
    }
    if args.is_testnet {
        if args.arti.files.is_empty() {
            return Err(exit::usage(anyhow::anyhow!(
                "--is-testnet: onionbalance reaches a test network through its Arti \
                 configuration; give it with --arti-config FILE (`onionbalance arti-config \
                 --chutney DIR` writes one for a chutney network)"
            )));
        }
        info!("--is-testnet is not needed: the network is the one --arti-config describes");
    }
    let path = args.config_path()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run_async(args, &path));
    // Do not wait for Arti's background work (it may be mid-way through a circuit or a
    // state write): the services have stopped, and the promise is to exit within seconds.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result?;
    Ok(true)
}

/// The daemon's life: config, Arti bootstrap, balancer, signals, shutdown.
async fn run_async(args: &RunArgs, path: &Path) -> Result<()> {
    let started = Instant::now();
    let config = Config::load(path)?;
    for w in &config.warnings {
        warn!("{}: {w}", path.display());
    }
    for s in &config.services {
        info!(
            "service {} with {} instance(s)",
            s.address(),
            s.instances.len()
        );
    }
    let arti_config = arti_client_config(&args.arti, args.data_dir.as_deref())?;
    let client = create_client(arti_config)?;
    let mut events = client.bootstrap_events();
    let progress = tokio::spawn(async move {
        let mut last = String::new();
        while let Some(status) = events.next().await {
            let s = status.to_string();
            if s != last {
                info!("Tor bootstrap: {s}");
                notify(&format!("STATUS=bootstrapping Tor: {s}"));
                last = s;
            }
            if status.ready_for_traffic() {
                break;
            }
        }
    });
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    // Status for the socket and metrics: empty until the balancer runs, then the balancer's
    // status watch, forwarded (the metrics endpoint starts before the balancer exists).
    let (status_tx, status_source): (_, StatusSource) = tokio::sync::watch::channel(Vec::new());
    let bootstrapped = Arc::new(AtomicBool::new(false));
    let _metrics_task = match args.metrics_listen {
        Some(addr) => {
            let listener = crate::metrics::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let (src, flag) = (status_source.clone(), bootstrapped.clone());
            info!("metrics on http://{addr}/metrics");
            if !addr.ip().is_loopback() {
                warn!(
                    "metrics on {addr}, not a loopback address: every metric names the frontend's onion address, so anyone who can connect learns it; bind 127.0.0.1 or firewall the port"
                );
            }
            Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(
                listener, src, flag,
            ))))
        }
        None => None,
    };
    tokio::select! {
        r = client.bootstrap() => r.context("Tor bootstrap failed: check network access and --arti-config")?,
        _ = tokio::signal::ctrl_c() => { info!("interrupted during bootstrap"); return Ok(()) }
        _ = sigterm.recv() => { info!("terminated during bootstrap"); return Ok(()) }
    }
    progress.abort();
    bootstrapped.store(true, Ordering::Relaxed);
    info!(
        "Tor client bootstrapped in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let socket_path = config
        .status_socket_location
        .clone()
        .or_else(systemd_runtime_socket);
    let mut balancer = Balancer::new(config);
    match args.data_dir.clone().map_or_else(default_data_dir, Ok) {
        Ok(dir) => balancer = balancer.with_state_dir(dir.join("publish")),
        Err(e) => warn!("revision counters are not kept across restarts: {e:#}"),
    }
    let mut handle = balancer.launch(&client)?;
    let _forward_task = AbortOnDrop(tokio::spawn(forward_status(
        handle.status_watch(),
        status_tx,
    )));
    let _socket_task = match &socket_path {
        Some(p) => {
            let sock = StatusSocket::bind(p)
                .with_context(|| format!("cannot create the status socket {}", p.display()))?;
            info!("status socket at {}", p.display());
            Some(AbortOnDrop(tokio::spawn(sock.serve(status_source.clone()))))
        }
        None => None,
    };
    let mut sighup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    // systemd readiness: the daemon is ready once Tor is bootstrapped and every service's
    // runner is started (they are, here) — not once descriptors are published, which depends
    // on backends that may not be up yet and would hold a boot for as long as they are not.
    // What publication has reached goes to systemd as STATUS= lines from then on, read from
    // the same channel as the status socket and the metrics so that it never runs ahead of
    // what they show.
    notify(&format!(
        "READY=1\nSTATUS=started: {}",
        systemd_status(&handle.status())
    ));
    info!(
        "ready: Tor bootstrapped and {} service(s) started ({:.1}s after start)",
        handle.status().len(),
        started.elapsed().as_secs_f64()
    );
    let mut progress_watch = status_source.clone();
    let mut last_status = String::new();
    let mut all_published_logged = false;
    // Configs are read off this loop (a slow filesystem must not hold up SIGTERM); each
    // read's outcome comes back on this channel.
    let (loaded_tx, mut loaded_rx) = tokio::sync::mpsc::channel::<LoadOutcome>(1);
    let mut reload_in_progress = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("SIGINT received, stopping"); break }
            _ = sigterm.recv() => { info!("SIGTERM received, stopping"); break }
            _ = sighup.recv() => {
                if reload_in_progress {
                    info!("SIGHUP received while a reload is in progress: ignored");
                } else {
                    info!("SIGHUP received: reloading {}", path.display());
                    // With MONOTONIC_USEC systemd (253 and later) can tell this reload from
                    // an earlier one (`Type=notify-reload`).
                    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                    reload_in_progress = true;
                    start_load(path.to_owned(), loaded_tx.clone());
                }
            }
            Some(outcome) = loaded_rx.recv() => {
                reload_in_progress = false;
                apply_reload(path, outcome, &mut handle).await;
            }
            Ok(()) = progress_watch.changed() => {
                let services = progress_watch.borrow_and_update().clone();
                let line = systemd_status(&services);
                if line != last_status {
                    notify(&format!("STATUS={line}"));
                    last_status = line;
                }
                if !all_published_logged && crate::status::all_published(&services) {
                    all_published_logged = true;
                    info!("every service is published ({:.1}s after start)", started.elapsed().as_secs_f64());
                }
            }
        }
    }
    notify("STOPPING=1");
    if tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown())
        .await
        .is_err()
    {
        warn!("services did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    Ok(())
}
/// One line for `systemctl status`: how far publication has got, e.g. "published 2/2
/// services: 3/3 backends, 8/8 HSDirs", or what it waits for.
fn systemd_status(services: &[ServiceStatus]) -> String {
    let backends: usize = services.iter().map(|s| s.instances.len()).sum();
    // A config always lists backends: none yet means the runners have not reported.
    if backends == 0 {
        return "starting the services".to_owned();
    }
    let fetched: usize = services
        .iter()
        .flat_map(|s| &s.instances)
        .filter(|i| i.descriptor_received.is_some())
        .count();
    let published = services
        .iter()
        .filter(|s| s.first_published.is_some())
        .count();
    // HSDirs holding our descriptor, over every period published for.
    let (accepted, hsdirs) = services
        .iter()
        .flat_map(|s| &s.periods)
        .fold((0, 0), |(a, h), p| (a + p.hsdirs_accepted, h + p.hsdirs));
    if published == 0 {
        if fetched == 0 {
            return format!("waiting for backend descriptors (0/{backends} backends fetched)");
        }
        return format!(
            "publishing: {fetched}/{backends} backends fetched, {accepted}/{hsdirs} HSDirs hold our descriptor"
        );
    }
    let mut line = format!(
        "published {published}/{} services: {fetched}/{backends} backends, {accepted}/{hsdirs} HSDirs",
        services.len()
    );
    let count = |h: BackendHealth| {
        services
            .iter()
            .flat_map(|s| &s.instances)
            .filter(|i| i.health == h)
            .count()
    };
    for (n, what) in [
        (count(BackendHealth::Down), "down"),
        (count(BackendHealth::Draining), "draining"),
    ] {
        if n > 0 {
            line.push_str(&format!(", {n} {what}"));
        }
    }
    if services.iter().any(|s| s.fail_open) {
        line.push_str(" (failing open: every backend down or drained)");
    }
    line
}

/// Where the status socket goes under systemd when neither the config nor the environment
/// names one: `status.sock` in the unit's `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`), which
/// for the packaged unit is where `onionbalance status` looks by default.
fn systemd_runtime_socket() -> Option<PathBuf> {
    systemd_directory("RUNTIME_DIRECTORY").map(|d| d.join("status.sock"))
}

/// The directory systemd names in `var` (`STATE_DIRECTORY`, `RUNTIME_DIRECTORY`, ...), set
/// from the unit's `StateDirectory=` and the like: it may list several, colon-separated, and
/// the first is ours.
fn systemd_directory(var: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os(var).filter(|d| !d.is_empty())?;
    let first = dirs.to_string_lossy().split(':').next()?.to_owned();
    Some(PathBuf::from(first))
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd wants it with `RELOADING=1`.
fn monotonic_usec() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // Both fields are non-negative for the monotonic clock.
    u128::from(t.tv_sec.unsigned_abs()) * 1_000_000 + u128::from(t.tv_nsec.unsigned_abs()) / 1_000
}

/// Copies every change of the balancer's status into the daemon's own status channel (read
/// by the status socket and the metrics endpoint), until the balancer stops.
async fn forward_status(
    mut from: tokio::sync::watch::Receiver<Vec<ServiceStatus>>,
    to: tokio::sync::watch::Sender<Vec<ServiceStatus>>,
) {
    loop {
        to.send_replace(from.borrow_and_update().clone());
        if from.changed().await.is_err() {
            break;
        }
    }
}

/// How long reading a config (with its keys and client files) may take on reload.
const RELOAD_READ_LIMIT: Duration = Duration::from_secs(30);

/// What reading the config on reload gave.
type LoadOutcome = Result<Config, String>;

/// Reads the config at `path` on a blocking thread and sends the outcome (or, after
/// [`RELOAD_READ_LIMIT`], that it took too long) to `done`.
fn start_load(path: PathBuf, done: tokio::sync::mpsc::Sender<LoadOutcome>) {
    tokio::spawn(async move {
        let read = tokio::task::spawn_blocking(move || Config::load(&path));
        let outcome = match tokio::time::timeout(RELOAD_READ_LIMIT, read).await {
            Ok(Ok(Ok(cfg))) => Ok(cfg),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("reading the config failed: {e}")),
            Err(_) => Err(format!(
                "reading the config took more than {RELOAD_READ_LIMIT:?} (a file on a hung filesystem?)"
            )),
        };
        let _ = done.send(outcome).await;
    });
}

/// SIGHUP, second half: applies a config that was read; an invalid one is rejected and the
/// running one kept.
async fn apply_reload(path: &Path, outcome: LoadOutcome, handle: &mut BalancerHandle) {
    match outcome {
        Err(e) => warn!("config reload rejected, the running configuration stays: {e}"),
        Ok(cfg) => {
            for w in &cfg.warnings {
                warn!("{}: {w}", path.display());
            }
            match handle.reload(cfg).await {
                Ok(s) => info!(
                    "config reloaded: {} added, {} removed, {} changed, {} unchanged",
                    s.added.len(),
                    s.removed.len(),
                    s.changed.len(),
                    s.unchanged.len()
                ),
                Err(e) => warn!("config reload failed, the running configuration stays: {e}"),
            }
        }
    }
    notify("READY=1");
}

/// Tells systemd, logging (not failing) if that is impossible.
fn notify(state: &str) {
    if let Err(e) = super::sd_notify::notify(state) {
        warn!("cannot notify systemd ({state:?}): {e}");
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Arti configuration: the `--arti-config` files and `-o` overrides if given, on top
/// of our own storage directories when no file is given (the public network).
pub(crate) fn arti_client_config(
    arti: &ArtiArgs,
    data_dir: Option<&Path>,
) -> Result<TorClientConfig> {
    let mut sources = ArtiSources::new().balancer_defaults();
    if arti.files.is_empty() {
        let dir = match data_dir {
            Some(d) => d.to_path_buf(),
            None => default_data_dir()?,
        };
        sources = sources.storage(Storage::under(&dir));
    }
    for f in &arti.files {
        sources = sources.file(f);
    }
    for o in &arti.options {
        sources = sources.option(o);
    }
    let loaded = sources.load().map_err(exit::config)?;
    loaded.warn_disregarded();
    Ok(loaded.config)
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_DATA_HOME/onionbalance`, else
/// `~/.local/share/onionbalance`.
fn default_data_dir() -> Result<PathBuf> {
    if let Some(d) = systemd_directory("STATE_DIRECTORY") {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("onionbalance"));
    }
    let home =
        std::env::var_os("HOME").context("cannot find a data directory: set --data-dir or HOME")?;
    Ok(PathBuf::from(home).join(".local/share/onionbalance"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// READY=1 must not go out before the first status arrives: the daemon's status channel
    /// starts empty, and "every service of none" is not a publication.
    /// What `systemctl status` shows follows publication: waiting, publishing, published.
    #[test]
    fn systemd_status_says_how_far_publication_got() {
        use crate::status::{InstanceStatus, PeriodStatus};
        assert_eq!(systemd_status(&[]), "starting the services");
        let mut svc = ServiceStatus {
            instances: vec![InstanceStatus::default(), InstanceStatus::default()],
            ..Default::default()
        };
        assert_eq!(
            systemd_status(std::slice::from_ref(&svc)),
            "waiting for backend descriptors (0/2 backends fetched)"
        );
        svc.instances[0].descriptor_received = Some(std::time::SystemTime::now());
        svc.periods = vec![PeriodStatus {
            hsdirs: 8,
            hsdirs_accepted: 0,
            ..Default::default()
        }];
        assert_eq!(
            systemd_status(std::slice::from_ref(&svc)),
            "publishing: 1/2 backends fetched, 0/8 HSDirs hold our descriptor"
        );
        svc.first_published = Some(std::time::SystemTime::now());
        svc.periods[0].hsdirs_accepted = 8;
        assert_eq!(
            systemd_status(std::slice::from_ref(&svc)),
            "published 1/1 services: 1/2 backends, 8/8 HSDirs"
        );
        svc.instances[0].health = BackendHealth::Down;
        svc.instances[1].health = BackendHealth::Draining;
        svc.fail_open = true;
        assert_eq!(
            systemd_status(&[svc]),
            "published 1/1 services: 1/2 backends, 8/8 HSDirs, 1 down, 1 draining (failing open: every backend down or drained)"
        );
    }

    #[test]
    fn monotonic_clock_is_read() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}
