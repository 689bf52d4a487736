//! A private Tor network on 127.0.0.1 for integration tests: C tor directory authorities,
//! relays, onion-service backends (Onionbalance instances) with in-process HTTP servers, and
//! a C tor client to reach them.
//!
//! ```ignore
//! let net = TestNet::builder().backends(2).start().await?;
//! let body = net.fetch(net.backend_address(0), "/").await?;
//! ```
//!
//! # How it starts (phases, each timed and printed to stderr)
//! 1. **setup**: a fresh temp dir, every port of the run allocated up front, authority keys
//!    (`tor-gencert`) and fingerprints (`tor --list-fingerprint`), torrcs, the Arti TOML.
//! 2. **authorities**: started; ready when their DirPorts accept connections.
//! 3. **relays**: started at once after the authorities.
//! 4. **consensus**: wait until every authority serves a consensus listing every authority
//!    and relay as `Running` and `HSDir`, and all its microdescriptors. Starting services
//!    earlier works too, but then they upload to the HSDirs of a partial ring or wait for
//!    missing directory documents, and timing becomes unpredictable.
//! 5. **client + backends**: started together; ready when the client reports 100 %
//!    bootstrap and every backend's descriptor uploads have all been answered (at least one
//!    acknowledged), watched through `HS_DESC` control events.
//!
//! # Requests
//! [`TestNet::fetch`] retries on fresh circuits, as a user reloads a stalled page, at most
//! [`FETCH_TOLERATED_FAILURES`] times within a time budget, and returns every failed attempt
//! with the body ([`Fetched`]); a failure is a [`FetchFailed`] listing them.
//! [`TestNet::fetch_once`] is one page load, never retried: the one to measure availability
//! with.
//!
//! # Failures a test can cause
//! [`TestNet::stop_backend`] / [`TestNet::kill_backend`] / [`TestNet::start_backend`] for a
//! backend's tor; [`TestNet::stop_backend_web`] / [`TestNet::start_backend_web`] for its web
//! server alone (tor keeps running and forwards to a port that refuses connections; the
//! server comes back on the same port). [`TestNetBuilder::web_health_path`] gives the web
//! servers a path a health check can ask for.
//!
//! # What it records
//! * Every `HS_DESC` event of every backend, across restarts
//!   ([`TestNet::backend_uploads_acknowledged`]).
//! * The descriptor uploads each HSDir stored or refused, from its own log, attributed to the
//!   backends or else to the frontend ([`TestNet::hsdir_uploads_stored`], which says exactly
//!   how it counts).
//! * The descriptor the C tor client holds for an address
//!   ([`TestNet::client_cached_descriptor`]), readable with [`read_descriptor`] (period,
//!   revision, intro points with their relays).
//! * What reached each backend's web server: every connection it accepted, with the request
//!   on it ([`TestNet::backend_web_requests`]), across restarts of the server.
//! * With [`TestNetBuilder::observer`]: what every HSDir serves for an address, fetched by a
//!   second C tor client that does nothing else ([`Observer::hsdir_copies`]), so that the
//!   client the requests go through keeps the cache a real client would have.
//! * A backend's circuits, from its tor's `CIRC` events ([`TestNet::watch_backend_circuits`]):
//!   its rendezvous circuits are what connections to it cost it.
//!
//! # What C tor 0.4.9 backends publish here (measured, 8-minute periods)
//! Time period `k` starts at `480 k + 240` (Unix seconds); shared-random runs start at
//! multiples of 480, half a period later. A backend always holds two descriptors with three
//! intro points each (6 intro circuits): "current" and "next". Their intro points are
//! distinct objects (disjoint authentication keys) but may sit on the same relays. At the
//! start of a time period nothing happens at the backend. At the start of each
//! shared-random run (2–11 s later, when a consensus says so) it rotates: the descriptor of
//! the period that ended 4 minutes earlier is dropped and its intro circuits closed, the
//! other becomes "current" (intro points kept, not uploaded again), and a new "next"
//! descriptor for the following period is built with new intro points and uploaded to all 8
//! HSDirs 1–2 s later. A dropped descriptor stays on the HSDirs (180-minute lifetime), its
//! intro points dead. Right after start-up a backend uploads both descriptors (~1 s).
//!
//! # How it stops
//! Every tor is our direct child (`RunAsDaemon 0`). Dropping the [`TestNet`] — also during a
//! panic — sends SIGTERM to each by PID, waits up to 5 s, then SIGKILLs what is left, and
//! reaps them all. If the test process is killed outright, `__OwningControllerProcess` makes
//! every tor exit by itself within seconds. Nothing is ever stopped by name.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use onionbalance::arti_toml::{self, Authority, PrivateNetwork, Storage};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};
use tor_llcrypto::pk::ed25519::Ed25519Identity;
use tor_llcrypto::pk::rsa::RsaIdentity;

use crate::control::ControlConnection;
use crate::http::{self, HttpServer};
use crate::socks;
use crate::torrc::{self, Torrc};

/// The C tor binary (Debian package `tor`).
const TOR: &str = "tor";
/// The authority key generator (Debian package `tor`).
const TOR_GENCERT: &str = "tor-gencert";
/// What tor logs when a port it should listen on is taken.
const PORT_TAKEN: &str = "Address already in use";

/// Deadline for the authorities' DirPorts to listen.
const AUTHORITIES_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline for every authority to serve a complete consensus (measured here: 9–20 s).
const CONSENSUS_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for the client to bootstrap (once a consensus exists).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for a backend to have its descriptor uploaded (once a consensus exists).
const BACKEND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped tor gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Default time budget of one [`TestNet::fetch`], retries included.
pub const FETCH_BUDGET: Duration = Duration::from_secs(30);
/// Failed attempts one [`TestNet::fetch`] tolerates before the one that must succeed: a
/// user reloads a stalled page (rendezvous on this small network stall now and then, design
/// §5), twice at most; a third failure in a row from a working service is what that user
/// calls broken.
pub const FETCH_TOLERATED_FAILURES: usize = 2;
/// The longest a single fetch attempt may take before we retry on fresh circuits: on a
/// loopback network a working rendezvous takes a second or two; a stalled one never ends.
pub const FETCH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Set this environment variable to keep every run directory, for debugging.
pub const KEEP_ENV: &str = "ONIONBALANCE_TESTNET_KEEP";
/// How many log lines an error message quotes.
const LOG_TAIL_LINES: usize = 30;

/// Configures and starts a [`TestNet`].
#[derive(Debug, Clone)]
pub struct TestNetBuilder {
    /// Number of directory authorities.
    authorities: usize,
    /// Number of (exit) relays besides the authorities.
    relays: usize,
    /// Number of backends in Onionbalance instance mode.
    backends: usize,
    /// Number of extra ordinary onion services (no instance mode), after the instances.
    plain_backends: usize,
    /// The frontend address for the instances' `ob_config`; random if `None`.
    frontend_address: Option<String>,
    /// Whether the Arti TOML disables vanguards.
    disable_vanguards: bool,
    /// Keep the run directory after the network stops.
    keep_run_dir: bool,
    /// A path the backends' HTTP servers answer with `200 ok` (a health check's path).
    web_health_path: Option<String>,
    /// Whether to start a second C tor client, the observer.
    observer: bool,
}

impl Default for TestNetBuilder {
    fn default() -> Self {
        TestNetBuilder {
            authorities: 3,
            relays: 5,
            backends: 2,
            plain_backends: 0,
            frontend_address: None,
            disable_vanguards: false,
            keep_run_dir: std::env::var_os(KEEP_ENV).is_some(),
            web_health_path: None,
            observer: false,
        }
    }
}

impl TestNetBuilder {
    /// Number of directory authorities (default 3; at least 1).
    pub fn authorities(mut self, n: usize) -> Self {
        self.authorities = n;
        self
    }

    /// Number of relays besides the authorities (default 5). With 3 authorities, 5 relays
    /// carry Arti's default vanguards-lite for clients and frontends alike (`design.md` §5);
    /// an Arti client also got through with 2 or 3 here, but frontends, intro-point choice and
    /// failover tests want relays to spare.
    pub fn relays(mut self, n: usize) -> Self {
        self.relays = n;
        self
    }

    /// Number of onion-service backends in Onionbalance instance mode (default 2).
    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    /// Number of additional onion services *without* instance mode (default 0); they come
    /// after the instances in the backend numbering.
    pub fn plain_backends(mut self, n: usize) -> Self {
        self.plain_backends = n;
        self
    }

    /// The frontend (`MasterOnionAddress`) the instances serve, with or without `.onion`.
    /// `None` (the default): a fresh random key, whose PEM file the network keeps
    /// ([`TestNet::frontend_key_path`]).
    pub fn frontend_address(mut self, address: Option<String>) -> Self {
        self.frontend_address = address;
        self
    }

    /// Write `[vanguards] mode = "disabled"` into the Arti TOML (default: vanguards stay on).
    pub fn disable_vanguards(mut self, disable: bool) -> Self {
        self.disable_vanguards = disable;
        self
    }

    /// Keep the run directory (logs, torrcs, keys) after the network stops (default: delete,
    /// unless the environment variable `ONIONBALANCE_TESTNET_KEEP` is set).
    pub fn keep_run_dir(mut self, keep: bool) -> Self {
        self.keep_run_dir = keep;
        self
    }

    /// A path (`/healthz`) that every backend's HTTP server answers with `200` and
    /// [`http::HEALTH_BODY`], for health checks to ask (default: none; every path, this one
    /// too, gets the page `hello from backend <name>`).
    pub fn web_health_path(mut self, path: Option<&str>) -> Self {
        self.web_health_path = path.map(str::to_owned);
        self
    }

    /// Also start the observer: a second C tor client that only fetches descriptors from
    /// HSDirs ([`TestNet::hsdir_copies`]), so that watching what the HSDirs serve never
    /// touches the descriptor cache or circuits of the client the page loads go through
    /// (default: no observer).
    pub fn observer(mut self, observer: bool) -> Self {
        self.observer = observer;
        self
    }

    /// Builds the network and waits until every backend is reachable in principle (see the
    /// module docs for the phases). On failure, everything started so far is stopped.
    ///
    /// A port is held until the instant before its tor binds it (see the port allocator in
    /// the source); with several networks starting and stopping on one machine (CI runs
    /// five at once), another process can take it in that instant, and that tor exits with
    /// "Address already in use" (seen once in CI, an authority's three ports at once). That is the harness
    /// losing a race, not anything under test: the network is then built once more from the
    /// start, with new ports, and said so. Any other failure, or a second one, is returned.
    pub async fn start(self) -> Result<TestNet> {
        match TestNet::start(self.clone()).await {
            Err(e) if format!("{e:#}").contains(PORT_TAKEN) => {
                eprintln!(
                    "testnet: a tor could not bind a port reserved for it (another process \
                     took it as it was released): building the network once more with new \
                     ports. The first attempt: {e:#}"
                );
                TestNet::start(self).await
            }
            result => result,
        }
    }
}

/// One tor process of the network and its files.
#[derive(Debug)]
struct TorNode {
    /// Name in messages and directory name (`auth0`, `relay2`, `client`, `backend1`).
    name: String,
    /// Its data directory (holding its torrc and logs too).
    dir: PathBuf,
    /// Its control port on 127.0.0.1.
    control_port: u16,
    /// The running process, if started and not stopped.
    child: Option<Child>,
    /// Its ports, held bound until the moment tor starts (see [`PortAllocator`]).
    reserved: Vec<TcpListener>,
}

impl TorNode {
    /// The torrc path.
    fn torrc(&self) -> PathBuf {
        self.dir.join("torrc")
    }

    /// Starts tor on this node's torrc.
    fn spawn(&mut self) -> Result<()> {
        let out = fs::File::create(self.dir.join("stdout.log")).context("create stdout.log")?;
        let err = out.try_clone().context("clone stdout.log handle")?;
        // Free its ports now, not before: until here another test network on this machine
        // could not have taken them.
        self.reserved.clear();
        let child = Command::new(TOR)
            .arg("-f")
            .arg(self.torrc())
            // Never read the system's defaults file: the network must be what the torrc says.
            .args(["--defaults-torrc", "/dev/null"])
            // tor stamps log lines in local time without a zone or year; in UTC we can read
            // them back as instants (`hsdir_uploads_stored`).
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start tor for {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The PID, if running.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails (with the log tail) if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                bail!("{} exited ({status}).\n{}", self.name, self.log_tail())
            }
            Err(e) => bail!("cannot check on {}: {e}", self.name),
        }
    }

    /// The last lines of the node's notice log (or of its stdout, if tor failed so early
    /// that it never opened the log), as a block for error messages.
    fn log_tail(&self) -> String {
        let mut out = String::new();
        for file in ["notice.log", "stdout.log"] {
            let path = self.dir.join(file);
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            let _ = writeln!(
                out,
                "--- last {} lines of {} ---",
                tail.len(),
                path.display()
            );
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
            break;
        }
        if out.is_empty() {
            let _ = writeln!(
                out,
                "--- {} wrote no log in {} ---",
                self.name,
                self.dir.display()
            );
        }
        out
    }

    /// An authenticated control connection, waiting up to `deadline` for tor to open it.
    async fn control(&self, deadline: Instant) -> Result<ControlConnection> {
        ControlConnection::connect_when_ready(
            self.control_port,
            &self.dir.join("control_auth_cookie"),
            deadline,
        )
        .await
        .with_context(|| format!("control port of {}", self.name))
    }
}

/// An onion service of the network.
#[derive(Debug)]
struct Backend {
    /// Its tor process.
    node: TorNode,
    /// Its HTTP server: runs while the network exists, also while tor is stopped, unless a
    /// test stops it ([`TestNet::stop_backend_web`]).
    http: HttpServer,
    /// Its address, with `.onion` (known once tor has started the first time).
    address: String,
    /// Whether it runs in Onionbalance instance mode.
    instance: bool,
    /// Every `HS_DESC` event about its own address since it first started, across restarts
    /// (see [`TestNet::backend_uploads_acknowledged`]).
    hs_desc_events: Arc<Mutex<Vec<HsDescEvent>>>,
}

/// The run directory: deleted on drop, unless the builder asked to keep it.
#[derive(Debug)]
enum RunDir {
    /// Deleted when dropped.
    Temp(tempfile::TempDir),
    /// Kept.
    Kept(PathBuf),
}

impl RunDir {
    /// The directory.
    fn path(&self) -> &Path {
        match self {
            RunDir::Temp(t) => t.path(),
            RunDir::Kept(p) => p,
        }
    }
}

/// A running private Tor network. Dropping it stops every process it started.
#[derive(Debug)]
pub struct TestNet {
    /// Authorities, then relays.
    relays: Vec<TorNode>,
    /// The SOCKS client.
    client: TorNode,
    /// The client's SOCKS port.
    socks_port: u16,
    /// The observer, a second C tor client, if the builder asked for it.
    observer: Option<TorNode>,
    /// The onion services.
    backends: Vec<Backend>,
    /// The frontend address (with `.onion`) the instances serve.
    frontend_address: String,
    /// PEM (PKCS#8) file of the frontend key, if we generated it.
    frontend_key_path: Option<PathBuf>,
    /// The Arti configuration for this network.
    arti_toml: String,
    /// Where it is written.
    arti_toml_path: PathBuf,
    /// Everything on disk. Declared last: dropped after the processes are stopped.
    run_dir: RunDir,
}

/// Prints phase durations.
struct PhaseClock {
    /// When the whole start began.
    started: Instant,
    /// When the current phase began.
    phase_started: Instant,
}

impl PhaseClock {
    /// Starts the clock.
    fn new() -> Self {
        let now = Instant::now();
        PhaseClock {
            started: now,
            phase_started: now,
        }
    }

    /// Ends the current phase.
    fn done(&mut self, phase: &str) {
        let took = self.phase_started.elapsed();
        eprintln!(
            "testnet: {phase:<18} {:>6.1} s   (since start {:>5.1} s)",
            took.as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        self.phase_started = Instant::now();
    }
}

/// Ports of the run, each held bound until the tor that uses it starts, so that neither
/// another node of this network nor another test network running beside it (CI runs
/// several at once) can be given the same one.
struct PortAllocator {
    /// The reserved ports.
    held: Vec<(u16, TcpListener)>,
    /// Range to choose from.
    range: std::ops::Range<u16>,
}

impl PortAllocator {
    /// An allocator choosing below the kernel's ephemeral port range.
    ///
    /// Why not port 0: a port is released the moment before its tor binds it, and in that
    /// moment an outgoing connection of any tor on this machine could take it if it were in
    /// the ephemeral range, which makes that tor fail with "Address already in use". Below
    /// the range, only another explicit bind can collide, and other test networks probe
    /// ports by binding them, so they skip ours while we hold them.
    fn new() -> Self {
        let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        // Never an empty range, whatever the kernel says.
        let end = ephemeral_start.max(4096);
        let low = 10_000u16.min(end / 2);
        PortAllocator {
            held: Vec::new(),
            range: low..end,
        }
    }

    /// A port that is free now and not given out before in this run.
    fn allocate(&mut self) -> Result<u16> {
        for _ in 0..1000 {
            let port = rand::random_range(self.range.clone());
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(listener) => {
                    self.held.push((port, listener));
                    return Ok(port);
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e).context("probe a free port"),
            }
        }
        // Fall back to the kernel's choice rather than fail.
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a free loopback port")?;
        let port = listener.local_addr().context("local address")?.port();
        self.held.push((port, listener));
        Ok(port)
    }

    /// Hands over the listeners holding `ports`, for the node that will use them.
    fn take(&mut self, ports: &[u16]) -> Vec<TcpListener> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(p, _)| ports.contains(p));
        self.held = rest;
        mine.into_iter().map(|(_, l)| l).collect()
    }
}

/// Ports of one authority or relay.
#[derive(Debug, Clone, Copy)]
struct RelayPorts {
    /// ORPort.
    or_port: u16,
    /// DirPort.
    dir_port: u16,
    /// ControlPort.
    control_port: u16,
}

impl TestNet {
    /// A builder with the defaults: 3 authorities, 5 relays, 2 instance backends, random
    /// frontend address.
    pub fn builder() -> TestNetBuilder {
        TestNetBuilder::default()
    }

    /// See [`TestNetBuilder::start`].
    async fn start(cfg: TestNetBuilder) -> Result<TestNet> {
        if cfg.authorities == 0 {
            bail!("a test network needs at least one authority");
        }
        check_tools()?;
        let mut clock = PhaseClock::new();

        let run_dir = tempfile::Builder::new()
            .prefix("onionbalance-testnet-")
            .tempdir()
            .context("create the run directory")?;
        let run_dir = if cfg.keep_run_dir {
            RunDir::Kept(run_dir.keep())
        } else {
            RunDir::Temp(run_dir)
        };
        let root = run_dir.path().to_owned();
        if root
            .to_str()
            .is_none_or(|s| s.contains(char::is_whitespace))
        {
            bail!(
                "the run directory {} has spaces or non-UTF-8 characters, which torrc paths \
                 cannot hold: set TMPDIR to a plain path",
                root.display()
            );
        }
        eprintln!("testnet: run directory {}", root.display());

        // Every port of the run, chosen now (see PortAllocator for why not port 0).
        let mut ports = PortAllocator::new();
        let n_relays = cfg.authorities + cfg.relays;
        let mut relay_ports = Vec::with_capacity(n_relays);
        for _ in 0..n_relays {
            relay_ports.push(RelayPorts {
                or_port: ports.allocate()?,
                dir_port: ports.allocate()?,
                control_port: ports.allocate()?,
            });
        }
        let client_control = ports.allocate()?;
        let socks_port = ports.allocate()?;
        let observer_ports = if cfg.observer {
            Some((ports.allocate()?, ports.allocate()?))
        } else {
            None
        };
        let n_backends = cfg.backends + cfg.plain_backends;
        let mut backend_controls = Vec::with_capacity(n_backends);
        for _ in 0..n_backends {
            backend_controls.push(ports.allocate()?);
        }

        // Authority identities.
        let auth_dirs: Vec<PathBuf> = (0..cfg.authorities)
            .map(|i| root.join(format!("auth{i}")))
            .collect();
        let authorities = make_authority_keys(&auth_dirs, &relay_ports[..cfg.authorities])?;
        let dir_authority_lines: Vec<String> = authorities
            .iter()
            .zip(&relay_ports)
            .map(|(a, p)| {
                format!(
                    "{} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
                    a.nickname,
                    p.or_port,
                    a.v3ident.as_hex_upper(),
                    p.dir_port,
                    a.rsa_identity.as_hex_upper()
                )
            })
            .collect();

        // Frontend address for the instances' ob_config.
        let (frontend_address, frontend_key_path) = match &cfg.frontend_address {
            Some(addr) => {
                let addr = with_onion_suffix(addr);
                // C tor would only say "invalid ob_config" in a log: fail here, clearly.
                addr.parse::<tor_hscrypto::pk::HsId>().map_err(|e| {
                    anyhow!("frontend address {addr:?} is not a v3 onion address: {e}")
                })?;
                (addr, None)
            }
            None => {
                let path = root.join("frontend.pem");
                (generate_frontend_key(&path)?, Some(path))
            }
        };

        let owner_pid = std::process::id();
        let common = |dir: &Path, nickname: &str, control_port: u16| {
            torrc::common(&torrc::Common {
                data_dir: dir,
                nickname,
                control_port,
                owner_pid,
                dir_authorities: &dir_authority_lines,
            })
        };

        // Authorities and relays.
        let mut relays = Vec::with_capacity(n_relays);
        for (i, p) in relay_ports.iter().enumerate() {
            let is_authority = i < cfg.authorities;
            let name = if is_authority {
                format!("auth{i}")
            } else {
                format!("relay{}", i - cfg.authorities)
            };
            let dir = root.join(&name);
            make_private_dir(&dir)?;
            let mut t = common(&dir, &name, p.control_port);
            let contact = format!("{name}@test.invalid");
            if is_authority {
                torrc::authority(&mut t, p.or_port, p.dir_port, &contact);
            } else {
                torrc::relay(&mut t, p.or_port, p.dir_port, &contact);
            }
            let mut node = write_node(name, dir, p.control_port, &t)?;
            node.reserved = ports.take(&[p.or_port, p.dir_port, p.control_port]);
            relays.push(node);
        }

        // Client.
        let client_dir = root.join("client");
        make_private_dir(&client_dir)?;
        let mut t = common(&client_dir, "client", client_control);
        torrc::client(&mut t, socks_port);
        let mut client = write_node("client".into(), client_dir, client_control, &t)?;
        client.reserved = ports.take(&[client_control, socks_port]);

        // The observer: a client like the one above, used only for descriptor fetches.
        let observer = match observer_ports {
            Some((control, socks)) => {
                let dir = root.join("observer");
                make_private_dir(&dir)?;
                let mut t = common(&dir, "observer", control);
                torrc::client(&mut t, socks);
                let mut node = write_node("observer".into(), dir, control, &t)?;
                node.reserved = ports.take(&[control, socks]);
                Some(node)
            }
            None => None,
        };

        // Backends, with their HTTP servers and ob_config files.
        let mut backends = Vec::with_capacity(n_backends);
        for (i, &control_port) in backend_controls.iter().enumerate() {
            let instance = i < cfg.backends;
            let name = format!("backend{i}");
            let http = HttpServer::start_with_health(
                format!("hello from backend {name}\n"),
                cfg.web_health_path.clone(),
            )?;
            let dir = root.join(&name);
            make_private_dir(&dir)?;
            let hs_dir = dir.join("hs");
            make_private_dir(&hs_dir)?;
            if instance {
                fs::write(
                    hs_dir.join("ob_config"),
                    format!("MasterOnionAddress {frontend_address}\n"),
                )
                .context("write ob_config")?;
            }
            let mut t = common(&dir, &name, control_port);
            torrc::backend(&mut t, &hs_dir, http.port(), instance);
            let mut node = write_node(name, dir, control_port, &t)?;
            node.reserved = ports.take(&[control_port]);
            backends.push(Backend {
                node,
                http,
                address: String::new(),
                instance,
                hs_desc_events: Arc::default(),
            });
        }

        // Arti configuration for this network.
        let network = PrivateNetwork {
            authorities,
            storage: Storage::under(&root.join("arti")),
            hsdir_interval_minutes: arti_toml::testing_hsdir_interval_minutes(
                torrc::VOTING_INTERVAL_SECS,
            )
            .context("voting interval")?,
            disable_vanguards: cfg.disable_vanguards,
        };
        let arti_toml = network.render();
        let arti_toml_path = root.join("arti.toml");
        fs::write(&arti_toml_path, &arti_toml).context("write arti.toml")?;
        clock.done("setup");

        // From here on, `net` owns the processes: an early return drops it and stops them.
        let mut net = TestNet {
            relays,
            client,
            socks_port,
            observer,
            backends,
            frontend_address,
            frontend_key_path,
            arti_toml,
            arti_toml_path,
            run_dir,
        };
        net.start_phases(&mut clock, cfg.authorities, &relay_ports)
            .await?;
        Ok(net)
    }

    /// Phases 2–5 of the module docs.
    async fn start_phases(
        &mut self,
        clock: &mut PhaseClock,
        n_authorities: usize,
        relay_ports: &[RelayPorts],
    ) -> Result<()> {
        for node in &mut self.relays[..n_authorities] {
            node.spawn()?;
        }
        let deadline = Instant::now() + AUTHORITIES_TIMEOUT;
        for (i, p) in relay_ports[..n_authorities].iter().enumerate() {
            loop {
                self.relays[i].check_alive()?;
                if TcpStream::connect(("127.0.0.1", p.dir_port)).await.is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "authority {} did not open its DirPort {} within {AUTHORITIES_TIMEOUT:?}\n{}",
                        self.relays[i].name,
                        p.dir_port,
                        self.relays[i].log_tail()
                    );
                }
                sleep(Duration::from_millis(100)).await;
            }
        }
        clock.done("authorities");

        for node in &mut self.relays[n_authorities..] {
            node.spawn()?;
        }
        clock.done("relays started");

        let deadline = Instant::now() + CONSENSUS_TIMEOUT;
        let authority_dir_ports: Vec<u16> = relay_ports[..n_authorities]
            .iter()
            .map(|p| p.dir_port)
            .collect();
        self.wait_for_consensus(&authority_dir_ports, deadline)
            .await?;
        clock.done("consensus");

        self.client.spawn()?;
        if let Some(observer) = &mut self.observer {
            observer.spawn()?;
        }
        for i in 0..self.backends.len() {
            self.backends[i].node.spawn()?;
        }
        let client_deadline = Instant::now() + CLIENT_TIMEOUT;
        let backend_deadline = Instant::now() + BACKEND_TIMEOUT;
        let spawned = Instant::now();
        let mut controls = Vec::with_capacity(self.backends.len());
        for i in 0..self.backends.len() {
            controls.push(self.enable_backend(i, backend_deadline).await?);
        }
        // Watched one after the other, but all running meanwhile: the total is the slowest
        // backend, not the sum.
        for (i, ctl) in controls.into_iter().enumerate() {
            self.wait_for_upload(i, ctl, backend_deadline).await?;
            eprintln!(
                "testnet: {} ({}) published {:.1} s after start",
                self.backends[i].node.name,
                self.backends[i].address,
                spawned.elapsed().as_secs_f64()
            );
        }
        self.wait_for_client(client_deadline).await?;
        eprintln!(
            "testnet: client bootstrapped {:.1} s after start",
            spawned.elapsed().as_secs_f64()
        );
        if self.observer.is_some() {
            self.wait_for_observer(client_deadline).await?;
            eprintln!(
                "testnet: observer bootstrapped {:.1} s after start",
                spawned.elapsed().as_secs_f64()
            );
        }
        clock.done("client + backends");
        Ok(())
    }

    /// Waits until every authority serves a (microdescriptor) consensus in which every
    /// authority and relay is `Running` with the `HSDir` flag, and serves all of its
    /// microdescriptors.
    ///
    /// Why every authority and every microdescriptor: clients and services fetch from the
    /// authorities (`FetchDirInfoEarly`, see `torrc.rs`), and a consensus needs only two of
    /// three votes, so one authority may still lack a relay's descriptor. A client that asks
    /// it gets 7 of 8 microdescriptors, is below `PathsNeededToBuildCircuits`, and retries
    /// only ~10 s later.
    async fn wait_for_consensus(&mut self, dir_ports: &[u16], deadline: Instant) -> Result<()> {
        let expected = self.relays.len();
        let mut last = String::from("no consensus yet");
        loop {
            for node in &mut self.relays {
                node.check_alive()?;
            }
            let mut ready = 0;
            for (i, &port) in dir_ports.iter().enumerate() {
                match timeout(Duration::from_secs(5), authority_is_ready(port, expected)).await {
                    Ok(Ok(summary)) => {
                        ready += 1;
                        if ready == dir_ports.len() {
                            eprintln!("testnet: consensus: {}", summary.describe());
                            return Ok(());
                        }
                    }
                    Ok(Err(e)) => {
                        last = format!("{}: {e:#}", self.relays[i].name);
                        break;
                    }
                    Err(_) => {
                        last = format!("{}: no answer", self.relays[i].name);
                        break;
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the authorities do not all serve a consensus with all {expected} relays as \
                     running HSDirs, and their microdescriptors, within {CONSENSUS_TIMEOUT:?} \
                     (last seen: {last})\n{}",
                    self.relays[0].log_tail()
                );
            }
            sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the client reports 100 % bootstrap.
    async fn wait_for_client(&mut self, deadline: Instant) -> Result<()> {
        wait_for_bootstrap(&mut self.client, deadline).await
    }

    /// Waits until the observer (if any) reports 100 % bootstrap.
    async fn wait_for_observer(&mut self, deadline: Instant) -> Result<()> {
        match &mut self.observer {
            Some(node) => wait_for_bootstrap(node, deadline).await,
            None => Ok(()),
        }
    }

    /// For a backend whose tor was just spawned: learns its address, subscribes to its
    /// descriptor events and lets it connect. Returns the control connection to watch with
    /// [`wait_for_upload`](Self::wait_for_upload).
    async fn enable_backend(&mut self, i: usize, deadline: Instant) -> Result<ControlConnection> {
        let backend = &mut self.backends[i];
        let mut ctl = backend.node.control(deadline).await?;

        // tor writes `hostname` while loading its configuration, before the control port opens.
        let hostname_path = backend.node.dir.join("hs").join("hostname");
        let address = fs::read_to_string(&hostname_path)
            .with_context(|| format!("read {}", hostname_path.display()))?
            .trim()
            .to_owned();
        if !backend.address.is_empty() && backend.address != address {
            bail!(
                "{} changed address from {} to {address}",
                backend.node.name,
                backend.address
            );
        }
        backend.address = address;

        // Subscribe first, then let it connect: no upload can happen before we listen.
        ctl.command_ok("SETEVENTS HS_DESC").await?;
        ctl.command_ok("SETCONF DisableNetwork=0").await?;
        Ok(ctl)
    }

    /// Waits until the descriptor uploads of backend `i` (watched on `ctl`, see
    /// [`enable_backend`](Self::enable_backend)) have all been answered, at least one of them
    /// acknowledged.
    async fn wait_for_upload(
        &mut self,
        i: usize,
        mut ctl: ControlConnection,
        deadline: Instant,
    ) -> Result<()> {
        let backend = &mut self.backends[i];
        let bare = backend
            .address
            .strip_suffix(".onion")
            .unwrap_or(&backend.address)
            .to_owned();
        // Uploads not yet answered, per HSDir (one HSDir may get the descriptors of two
        // time periods).
        let mut pending: HashMap<String, usize> = HashMap::new();
        let mut acknowledged = 0usize;
        let mut failures = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = match timeout(remaining, ctl.next_event()).await {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => {
                    // Most likely tor died: say so, with its log.
                    backend.node.check_alive()?;
                    return Err(e.context(format!("watching {}", backend.node.name)));
                }
                Err(_) => {
                    backend.node.check_alive()?;
                    bail!(
                        "{} did not get its descriptor uploaded in time ({acknowledged} \
                         acknowledged, {} pending, failures: {failures:?})\n{}",
                        backend.node.name,
                        pending.len(),
                        backend.node.log_tail()
                    );
                }
            };
            let Some(text) = event.lines.first().map(|l| l.text.as_str()) else {
                continue;
            };
            let Some(recorded) = HsDescEvent::parse(text, &bare) else {
                continue;
            };
            push_event(&backend.hs_desc_events, recorded);
            // "HS_DESC <action> <address> <auth> <hsdir> ..."
            let words: Vec<&str> = text.split_whitespace().collect();
            let hsdir = words[4].to_owned();
            let answered = |pending: &mut HashMap<String, usize>| {
                if let Some(n) = pending.get_mut(&hsdir) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(&hsdir);
                    }
                }
            };
            match words[1] {
                "UPLOAD" => *pending.entry(hsdir.clone()).or_default() += 1,
                "UPLOADED" => {
                    answered(&mut pending);
                    acknowledged += 1;
                }
                "FAILED" => {
                    answered(&mut pending);
                    failures.push(text.to_owned());
                }
                _ => {}
            }
            if acknowledged > 0 && pending.is_empty() {
                // From here on a task keeps recording this backend's events, until its tor
                // closes the connection (it stopped).
                tokio::spawn(record_hs_desc_events(
                    ctl,
                    bare,
                    Arc::clone(&backend.hs_desc_events),
                ));
                return Ok(());
            }
        }
    }

    /// Fetches `http://<onion_host><path>` through the C tor client: the body of a `200`
    /// response, with every failed attempt before it ([`Fetched`]). Each attempt uses fresh
    /// circuits (a random SOCKS username) and may take up to [`FETCH_ATTEMPT_TIMEOUT`]; a
    /// failed one is retried as a user reloads a page that stalled, at most
    /// [`FETCH_TOLERATED_FAILURES`] times and within [`FETCH_BUDGET`].
    ///
    /// For a page a test needs, not for measuring: a series that measures availability
    /// records single loads ([`fetch_once`](Self::fetch_once)). Failing, the error is a
    /// [`FetchFailed`] (reach it with `anyhow::Error::downcast_ref`) listing every attempt.
    pub async fn fetch(&self, onion_host: &str, path: &str) -> Result<Fetched> {
        self.fetch_bounded(onion_host, path, FETCH_BUDGET, FETCH_TOLERATED_FAILURES)
            .await
    }

    /// [`fetch`](Self::fetch) with a time budget and at most `max_failed_attempts` failed
    /// attempts: the one after them must succeed, or the fetch fails (with a
    /// [`FetchFailed`]) without trying again.
    async fn fetch_bounded(
        &self,
        onion_host: &str,
        path: &str,
        budget: Duration,
        max_failed_attempts: usize,
    ) -> Result<Fetched> {
        let started = Instant::now();
        let deadline = started + budget;
        let mut failed = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || failed.len() > max_failed_attempts {
                return Err(FetchFailed {
                    url: format!("http://{onion_host}{path}"),
                    budget,
                    max_failed_attempts,
                    attempts: failed,
                }
                .into());
            }
            let attempt_started = Instant::now();
            match self
                .fetch_attempt(onion_host, path, remaining.min(FETCH_ATTEMPT_TIMEOUT))
                .await
            {
                Ok(body) => {
                    return Ok(Fetched {
                        body,
                        failed_attempts: failed,
                        took: started.elapsed(),
                    })
                }
                Err(error) => {
                    let attempt = FailedAttempt {
                        began: attempt_started - started,
                        took: attempt_started.elapsed(),
                        error,
                    };
                    eprintln!("testnet: fetch {onion_host}{path}: {attempt}");
                    failed.push(attempt);
                }
            }
            // Do not spin on instant failures (a descriptor not uploaded yet); a user does
            // not reload within the same instant either.
            sleep(Duration::from_millis(500)).await;
        }
    }

    /// One attempt, never retried: `GET path` from `onion_host` through the C tor client on
    /// fresh circuits, answered with `200` within `within`. This is one page load of a real
    /// client; whatever tor does inside it (trying other intro points, refetching the
    /// descriptor after all failed) is that client's own behaviour. The client's descriptor
    /// cache is left alone. Failing, the error is a [`FetchFailed`] with that one attempt.
    pub async fn fetch_once(
        &self,
        onion_host: &str,
        path: &str,
        within: Duration,
    ) -> Result<Fetched> {
        let started = Instant::now();
        match self.fetch_attempt(onion_host, path, within).await {
            Ok(body) => Ok(Fetched {
                body,
                failed_attempts: Vec::new(),
                took: started.elapsed(),
            }),
            Err(error) => Err(FetchFailed {
                url: format!("http://{onion_host}{path}"),
                budget: within,
                max_failed_attempts: 0,
                attempts: vec![FailedAttempt {
                    began: Duration::ZERO,
                    took: started.elapsed(),
                    error,
                }],
            }
            .into()),
        }
    }

    /// One attempt on fresh circuits within `within`: the body of a `200`, or why not.
    async fn fetch_attempt(
        &self,
        onion_host: &str,
        path: &str,
        within: Duration,
    ) -> std::result::Result<String, String> {
        let isolation = format!("fetch-{:016x}", rand::random::<u64>());
        let attempt = timeout(within, async {
            let mut stream = socks::connect(self.socks_port, onion_host, 80, &isolation).await?;
            http::get(&mut stream, onion_host, path).await
        })
        .await;
        match attempt {
            Ok(Ok(resp)) if resp.status == 200 => Ok(resp.body),
            Ok(Ok(resp)) => Err(format!("HTTP status {}", resp.status)),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {within:?}")),
        }
    }

    /// Stops backend `i`'s tor (its HTTP server keeps running). Its keys stay on disk.
    pub async fn stop_backend(&mut self, i: usize) -> Result<()> {
        let node = &mut self.backend_mut(i)?.node;
        let name = node.name.clone();
        let mut children: Vec<(String, Child)> =
            node.child.take().map(|c| (name, c)).into_iter().collect();
        tokio::task::spawn_blocking(move || stop_children(&mut children))
            .await
            .context("stop task panicked")?;
        Ok(())
    }

    /// Kills backend `i`'s tor with SIGKILL (a crash: nothing is closed in order) and reaps
    /// it; its HTTP server keeps running and its keys stay on disk.
    pub async fn kill_backend(&mut self, i: usize) -> Result<()> {
        let node = &mut self.backend_mut(i)?.node;
        let Some(mut child) = node.child.take() else {
            bail!("{} is not running", node.name);
        };
        tokio::task::spawn_blocking(move || {
            let _ = child.kill();
            child.wait()
        })
        .await
        .context("kill task panicked")?
        .context("reap a killed backend")?;
        Ok(())
    }

    /// Stops backend `i`'s HTTP server, as when an operator's web server crashes: its tor
    /// keeps running, and connections it forwards to the server are refused. The port stays
    /// reserved for [`start_backend_web`](Self::start_backend_web).
    pub fn stop_backend_web(&mut self, i: usize) -> Result<()> {
        self.backend_mut(i)?.http.stop()
    }

    /// Starts backend `i`'s stopped HTTP server again, on the same port (the one its tor
    /// forwards to), with the same answers.
    pub fn start_backend_web(&mut self, i: usize) -> Result<()> {
        self.backend_mut(i)?.http.start_again()
    }

    /// Whether backend `i`'s HTTP server runs.
    pub fn backend_web_is_running(&self, i: usize) -> bool {
        self.backend(i).is_ok_and(|b| b.http.is_running())
    }

    /// Every connection backend `i`'s HTTP server accepted since the network started (across
    /// its restarts), with the request on each, in the order they were accepted: what reached
    /// the web server, counted from its side.
    pub fn backend_web_requests(&self, i: usize) -> Result<Vec<http::Request>> {
        Ok(self.backend(i)?.http.requests())
    }

    /// Whether backend `i`'s tor was started and not stopped (it may have exited by itself).
    pub fn backend_is_running(&self, i: usize) -> bool {
        self.backend(i).is_ok_and(|b| b.node.child.is_some())
    }

    /// Starts backend `i`'s tor again (same keys, same address) and waits until its
    /// descriptor is uploaded.
    pub async fn start_backend(&mut self, i: usize) -> Result<()> {
        let backend = self.backend_mut(i)?;
        if backend.node.child.is_some() {
            bail!("{} is already running", backend.node.name);
        }
        backend.node.spawn()?;
        let deadline = Instant::now() + BACKEND_TIMEOUT;
        let ctl = self.enable_backend(i, deadline).await?;
        self.wait_for_upload(i, ctl, deadline).await
    }

    /// Points every instance backend at another frontend, as an operator does once the
    /// frontend's key exists: rewrites each one's `ob_config` and restarts its tor (a
    /// frontend added by SIGHUP is not usable until a restart: see design notes), waiting
    /// until each has uploaded its descriptor again.
    pub async fn set_frontend(&mut self, address: &str) -> Result<()> {
        for i in 0..self.backends.len() {
            if !self.backends[i].instance {
                continue;
            }
            self.stop_backend(i).await?;
            let hs_dir = self.backends[i].node.dir.join("hs");
            fs::write(
                hs_dir.join("ob_config"),
                format!("MasterOnionAddress {address}\n"),
            )
            .context("rewrite ob_config")?;
            self.start_backend(i).await?;
        }
        self.frontend_address = address.to_owned();
        Ok(())
    }

    /// The descriptor backend `i` currently publishes, exactly as its tor returns it
    /// (`GETINFO hs/service/desc/id/<address>`; lines end in `\n`).
    pub async fn backend_descriptor(&self, i: usize) -> Result<String> {
        let backend = self.backend(i)?;
        let bare = backend
            .address
            .strip_suffix(".onion")
            .unwrap_or(&backend.address);
        let mut ctl = backend.node.control(Instant::now()).await?;
        ctl.getinfo(&format!("hs/service/desc/id/{bare}")).await
    }

    /// Asks the client for new circuits and to forget cached onion-service descriptors
    /// (`SIGNAL NEWNYM`; tor rate-limits it to one every 10 s and delays extra ones).
    pub async fn newnym(&self) -> Result<()> {
        let mut ctl = self.client.control(Instant::now()).await?;
        ctl.command_ok("SIGNAL NEWNYM").await?;
        Ok(())
    }

    /// An authenticated control connection to the client.
    pub async fn client_control(&self) -> Result<ControlConnection> {
        self.client.control(Instant::now()).await
    }

    /// An authenticated control connection to backend `i`.
    pub async fn backend_control(&self, i: usize) -> Result<ControlConnection> {
        self.backend(i)?.node.control(Instant::now()).await
    }

    /// The tor version the network runs (`GETINFO version` of the client).
    pub async fn tor_version(&self) -> Result<String> {
        self.client_control().await?.getinfo("version").await
    }

    /// Number of backends (instances first, then plain services).
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Backend `i`'s onion address, with `.onion`. Panics if there is no backend `i` (a bug
    /// in the test).
    pub fn backend_address(&self, i: usize) -> &str {
        match self.backend(i) {
            Ok(b) => &b.address,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every backend's onion address, with `.onion`, in order.
    pub fn backend_addresses(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.address.clone()).collect()
    }

    /// Backend `i`'s name (`backend<i>`), which its HTTP server puts in every response
    /// (`hello from backend backend<i>`).
    pub fn backend_name(&self, i: usize) -> &str {
        match self.backend(i) {
            Ok(b) => &b.node.name,
            Err(e) => panic!("{e}"),
        }
    }

    /// Whether backend `i` runs in Onionbalance instance mode.
    pub fn backend_is_instance(&self, i: usize) -> bool {
        self.backend(i).map(|b| b.instance).unwrap_or(false)
    }

    /// The frontend address (with `.onion`) the instances accept introductions for.
    pub fn frontend_address(&self) -> &str {
        &self.frontend_address
    }

    /// The generated frontend key (PKCS#8 PEM, as upstream Onionbalance stores it), if the
    /// builder was not given a frontend address.
    pub fn frontend_key_path(&self) -> Option<&Path> {
        self.frontend_key_path.as_deref()
    }

    /// The client's SOCKS port on 127.0.0.1.
    pub fn socks_port(&self) -> u16 {
        self.socks_port
    }

    /// The directory holding every node's files, logs and the Arti TOML.
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The Arti configuration file for this network.
    pub fn arti_toml_path(&self) -> &Path {
        &self.arti_toml_path
    }

    /// The Arti configuration for this network, as text.
    pub fn arti_toml(&self) -> &str {
        &self.arti_toml
    }

    /// PIDs of every running tor of the network.
    pub fn tor_pids(&self) -> Vec<u32> {
        self.all_nodes().filter_map(TorNode::pid).collect()
    }

    /// The C tor client's notice and info logs, concatenated (what the client says about
    /// the services it was asked to reach).
    pub fn client_log_text(&self) -> String {
        ["notice.log", "info.log"]
            .iter()
            .filter_map(|f| fs::read_to_string(self.client.dir.join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last lines of every node's notice log, for a failing test to print.
    pub fn log_tails(&self) -> String {
        self.all_nodes().map(TorNode::log_tail).collect()
    }

    /// Every tor node.
    fn all_nodes(&self) -> impl Iterator<Item = &TorNode> {
        self.relays
            .iter()
            .chain(std::iter::once(&self.client))
            .chain(self.observer.iter())
            .chain(self.backends.iter().map(|b| &b.node))
    }

    /// Backend `i`, or an error naming the valid range.
    fn backend(&self, i: usize) -> Result<&Backend> {
        let n = self.backends.len();
        self.backends
            .get(i)
            .ok_or_else(|| anyhow!("no backend {i}: the network has {n}"))
    }

    /// Backend `i`, mutably.
    fn backend_mut(&mut self, i: usize) -> Result<&mut Backend> {
        let n = self.backends.len();
        self.backends
            .get_mut(i)
            .ok_or_else(|| anyhow!("no backend {i}: the network has {n}"))
    }
}

/// What the network itself records: descriptor uploads as the HSDirs logged them and as the
/// backends' tors reported them, and the descriptors the C tor client holds.
impl TestNet {
    /// The identities of the authorities and relays (every one of them is an HSDir here:
    /// `TestingDirAuthVoteHSDir *`), in order, with their names (`auth0`, `relay3`), read from
    /// the `fingerprint` file each tor writes into its data directory.
    pub fn relay_identities(&self) -> Result<Vec<(String, RsaIdentity)>> {
        self.relays
            .iter()
            .map(|node| Ok((node.name.clone(), read_fingerprint(&node.dir)?)))
            .collect()
    }

    /// The name (`relay3`) of the relay with identity `id`, or its fingerprint if none has it.
    pub fn relay_name(&self, id: &RsaIdentity) -> String {
        self.relay_identities()
            .ok()
            .and_then(|all| all.into_iter().find(|(_, r)| r == id))
            .map_or_else(|| id.as_hex_upper(), |(name, _)| name)
    }

    /// Every descriptor upload a backend's tor reported acknowledged by an HSDir (`HS_DESC
    /// UPLOADED`, sent when the HSDir answered `200`), for all backends, in time order.
    pub fn backend_uploads_acknowledged(&self) -> Vec<BackendUpload> {
        let mut all = Vec::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let events = backend
                .hs_desc_events
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            all.extend(
                events
                    .iter()
                    .filter(|e| e.action == "UPLOADED")
                    .filter_map(|e| {
                        Some(BackendUpload {
                            backend: i,
                            hsdir: e.hsdir?,
                            at: e.at,
                        })
                    }),
            );
        }
        all.sort_by_key(|u| u.at);
        all
    }

    /// The HSDirs that refused uploads for their revision counter, with how many each
    /// refused (from their own logs, see [`TestNet::hsdir_uploads_stored`]); empty when none
    /// did.
    pub fn revision_refusals(&self) -> Result<Vec<(String, usize)>> {
        Ok(self
            .hsdir_uploads_stored()?
            .into_iter()
            .filter(|h| !h.refused_revision.is_empty())
            .map(|h| (h.name, h.refused_revision.len()))
            .collect())
    }

    /// The descriptor uploads each HSDir stored and refused, from its own log, each stored
    /// one attributed to the backend that made it or to nobody (then: the frontend).
    ///
    /// # How it counts
    /// * **Stored**: each line `Publish request for HS descriptor handled successfully.` in
    ///   the HSDir's [`torrc::REND_LOG`] (C tor 0.4.9 `handle_post_hs_descriptor()`, log level
    ///   info, domain `rend`). tor writes it after the descriptor went into its HSDir cache and
    ///   before it answers `200`; it is the only line a C tor HSDir writes per stored upload.
    ///   It names neither the service nor the blinded key: C tor logs no key when it stores
    ///   (it does so only when it drops one from its cache, hours later).
    /// * **Refused for its revision counter**: each line `Descriptor revision counter in our
    ///   cache is greater or equal than the one we received (<cached>/<received>).
    ///   Rejecting!` (`cache_store_v3_as_dir()`, info, `rend`); the HSDir answers `400`. The
    ///   two counters are printed by tor as 32-bit signed integers. Uploads refused for
    ///   other reasons (unparseable, too large) leave no info line and are not counted.
    /// * **Attribution**: only the backends and the frontend upload descriptors on this
    ///   network (clients only fetch). Each backend's tor reports every upload an HSDir
    ///   acknowledged (`HS_DESC UPLOADED <address> UNKNOWN $<fingerprint>`, recorded by the
    ///   harness since that tor first connected; see
    ///   [`backend_uploads_acknowledged`](Self::backend_uploads_acknowledged)). Each such
    ///   acknowledgement is matched to the latest not yet matched stored line of that HSDir
    ///   logged at most [`ACK_MATCH_WINDOW`] before it (tor logs the line before it answers,
    ///   so never after it). Stored lines left unmatched are uploads by someone other than
    ///   the backends: the frontend. Acknowledgements that match no line are listed in
    ///   [`HsDirUploads::unmatched_backend_acks`] (expected empty; if not, the attribution is
    ///   off by that many).
    /// * **Exactness**: counts are exact while every backend upload that an HSDir stored
    ///   reaches its backend's tor as `200`. A backend stopped while an upload of it is in
    ///   flight, or a C tor upload cancelled by a newer one of the same descriptor (C tor
    ///   closes pending uploads of a descriptor it re-uploads), can leave a stored line
    ///   without an acknowledgement, counted as the frontend's: an over-count, never an
    ///   under-count. With backends left running, it does not happen.
    ///
    /// Timestamps are tor's (`LogTimeGranularity 1`: milliseconds; tors run with `TZ=UTC`),
    /// on the same clock as the harness'.
    pub fn hsdir_uploads_stored(&self) -> Result<Vec<HsDirUploads>> {
        let acks = self.backend_uploads_acknowledged();
        let mut out = Vec::new();
        for node in &self.relays {
            let identity = read_fingerprint(&node.dir)?;
            let path = node.dir.join(torrc::REND_LOG);
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            };
            let mut stored = Vec::new();
            let mut refused_revision = Vec::new();
            for line in text.lines() {
                if line.contains(HSDIR_STORED_LINE) {
                    let at = parse_tor_log_time(line)
                        .with_context(|| format!("{}: log line {line:?}", path.display()))?;
                    stored.push(StoredUpload { at, by: None });
                } else if let Some(rest) = line.split(HSDIR_REFUSED_REVISION_LINE).nth(1) {
                    let at = parse_tor_log_time(line)
                        .with_context(|| format!("{}: log line {line:?}", path.display()))?;
                    let (cached, received) = rest
                        .trim_start_matches(" (")
                        .split(')')
                        .next()
                        .and_then(|pair| pair.split_once('/'))
                        .and_then(|(c, r)| Some((c.trim().parse().ok()?, r.trim().parse().ok()?)))
                        .with_context(|| format!("{}: log line {line:?}", path.display()))?;
                    refused_revision.push(RefusedUpload {
                        at,
                        cached,
                        received,
                    });
                }
            }
            stored.sort_by_key(|s| s.at);
            let mut unmatched_backend_acks = Vec::new();
            for ack in acks.iter().filter(|a| a.hsdir == identity) {
                let earliest = ack.at.checked_sub(ACK_MATCH_WINDOW).unwrap_or(UNIX_EPOCH);
                let candidate = stored
                    .iter_mut()
                    .rev()
                    .find(|s| s.by.is_none() && s.at <= ack.at && s.at >= earliest);
                match candidate {
                    Some(s) => s.by = Some(ack.backend),
                    None => unmatched_backend_acks.push(ack.clone()),
                }
            }
            out.push(HsDirUploads {
                name: node.name.clone(),
                identity,
                stored,
                refused_revision,
                unmatched_backend_acks,
            });
        }
        Ok(out)
    }

    /// The descriptor of `onion` the C tor client holds in its cache, exactly as `GETINFO
    /// hs/client/desc/id/<address>` returns it; `None` if it holds none (C tor also answers
    /// so once the one it has expired: its consensus reached the next time period).
    /// Asking changes nothing in the client.
    pub async fn client_cached_descriptor(&self, onion: &str) -> Result<Option<String>> {
        let bare = onion.trim().strip_suffix(".onion").unwrap_or(onion.trim());
        let key = format!("hs/client/desc/id/{bare}");
        let mut ctl = self.client_control().await?;
        let reply = ctl.command(&format!("GETINFO {key}")).await?;
        if !reply.is_ok() {
            if reply.summary().contains("Not found") {
                return Ok(None);
            }
            bail!("GETINFO {key}: {}", reply.summary());
        }
        let prefix = format!("{key}=");
        reply
            .lines
            .into_iter()
            .find_map(|l| {
                let inline = l.text.strip_prefix(&prefix)?.to_owned();
                Some(l.data.unwrap_or(inline))
            })
            .map(Some)
            .with_context(|| format!("GETINFO {key}: no value in the reply"))
    }
}

/// What one HSDir answered the observer's fetch of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsDirAnswer {
    /// A descriptor, as the HSDir served it, and when it arrived.
    Descriptor {
        /// The descriptor text.
        text: String,
        /// When the observer reported it (`HS_DESC_CONTENT`).
        at: SystemTime,
    },
    /// `404`: it holds no descriptor of the address for the observer's time period.
    NotFound,
    /// Anything else (another status, a failed circuit, no answer in time): why.
    Failed(String),
}

/// One HSDir's answer to the observer for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDirCopy {
    /// The HSDir's name (`auth0`, `relay3`).
    pub name: String,
    /// Its RSA identity.
    pub hsdir: RsaIdentity,
    /// What it answered.
    pub answer: HsDirAnswer,
}

/// A C tor `CIRC` control event (control-spec), as a backend's tor sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircEvent {
    /// When the harness read it.
    pub at: SystemTime,
    /// The circuit's ID (per tor process).
    pub id: String,
    /// `LAUNCHED`, `BUILT`, `EXTENDED`, `FAILED`, `CLOSED`.
    pub status: String,
    /// Its `PURPOSE=` (`HS_SERVICE_REND` for a service's rendezvous circuits), if given.
    pub purpose: Option<String>,
}

/// The `CIRC` events of one backend's tor, recorded from the moment
/// [`TestNet::watch_backend_circuits`] was called until that tor stops.
#[derive(Debug, Clone, Default)]
pub struct CircuitLog(Arc<Mutex<Vec<CircEvent>>>);

impl CircuitLog {
    /// Every event so far, in order.
    pub fn events(&self) -> Vec<CircEvent> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Circuits launched with `purpose` within `since..until`.
    pub fn launched(&self, purpose: &str, since: SystemTime, until: SystemTime) -> usize {
        self.events()
            .iter()
            .filter(|e| {
                e.status == "LAUNCHED"
                    && e.purpose.as_deref() == Some(purpose)
                    && e.at >= since
                    && e.at < until
            })
            .count()
    }
}

/// The observer of a network (see [`TestNetBuilder::observer`]): a C tor client that only
/// fetches descriptors. A handle that can be cloned and moved into tasks; it holds no
/// connection (each call opens its own).
#[derive(Debug, Clone)]
pub struct Observer {
    /// Its control port on 127.0.0.1.
    control_port: u16,
    /// Its control cookie.
    cookie: PathBuf,
    /// Every HSDir of the network (all authorities and relays), with its name.
    relays: Vec<(String, RsaIdentity)>,
}

impl Observer {
    /// Has the observer fetch the descriptor of each of
    /// `onions` from every HSDir of the network (`HSFETCH <address> SERVER=...`, one 3-hop
    /// directory fetch per HSDir, as any C tor client makes for the time period its consensus
    /// is in), and returns each HSDir's answer as it came (`HS_DESC_CONTENT`), per address in
    /// the order given, HSDirs in [`TestNet::relay_identities`] order. An
    /// HSDir not responsible for an address answers [`HsDirAnswer::NotFound`]; one that has
    /// not answered within `within` is [`HsDirAnswer::Failed`].
    ///
    /// The observer's descriptor cache takes what it fetches (C tor stores a fetched
    /// descriptor unless it holds a higher revision), but the answers are what each HSDir
    /// sent, not what the cache keeps. The client the page loads go through is not involved.
    pub async fn hsdir_copies(
        &self,
        onions: &[&str],
        within: Duration,
    ) -> Result<Vec<Vec<HsDirCopy>>> {
        let relays = &self.relays;
        let mut ctl = ControlConnection::connect_when_ready(
            self.control_port,
            &self.cookie,
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .context("control port of the observer")?;
        ctl.command_ok("SETEVENTS HS_DESC HS_DESC_CONTENT").await?;
        let bares: Vec<String> = onions
            .iter()
            .map(|o| {
                o.trim()
                    .strip_suffix(".onion")
                    .unwrap_or(o.trim())
                    .to_owned()
            })
            .collect();
        let servers: Vec<String> = relays
            .iter()
            .map(|(_, id)| format!("SERVER=${}", id.as_hex_upper()))
            .collect();
        for bare in &bares {
            ctl.command_ok(&format!("HSFETCH {bare} {}", servers.join(" ")))
                .await?;
        }
        // (address index, HSDir index) -> final answer; a FAILED event waits for the
        // content event that C tor sends after it (empty then), which ends the fetch.
        let mut answers: HashMap<(usize, usize), HsDirAnswer> = HashMap::new();
        let mut failed: HashMap<(usize, usize), String> = HashMap::new();
        let total = bares.len() * relays.len();
        let deadline = Instant::now() + within;
        let locate = |address: &str, hsdir: &str| {
            let a = bares.iter().position(|b| b == address)?;
            let fp = hsdir.strip_prefix('$')?.get(..40)?;
            let h = relays
                .iter()
                .position(|(_, id)| id.as_hex_upper().eq_ignore_ascii_case(fp))?;
            Some((a, h))
        };
        while answers.len() < total {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(event) = timeout(left, ctl.next_event()).await else {
                break;
            };
            let event = event.context("the observer's control connection")?;
            let Some(first) = event.lines.first() else {
                continue;
            };
            let words: Vec<&str> = first.text.split_whitespace().collect();
            match words.as_slice() {
                ["HS_DESC_CONTENT", address, _desc_id, hsdir, ..] => {
                    let Some(key) = locate(address, hsdir) else {
                        continue;
                    };
                    let text = first.data.clone().unwrap_or_default();
                    let answer = if !text.trim().is_empty() {
                        HsDirAnswer::Descriptor {
                            text,
                            at: SystemTime::now(),
                        }
                    } else {
                        match failed.remove(&key) {
                            Some(reason) if reason == "REASON=NOT_FOUND" => HsDirAnswer::NotFound,
                            Some(reason) => HsDirAnswer::Failed(reason),
                            None => HsDirAnswer::Failed("an empty answer".into()),
                        }
                    };
                    answers.entry(key).or_insert(answer);
                }
                ["HS_DESC", "FAILED", address, _auth, hsdir, rest @ ..] => {
                    if let Some(key) = locate(address, hsdir) {
                        let reason = rest
                            .iter()
                            .find(|w| w.starts_with("REASON="))
                            .map_or("FAILED", |w| w);
                        failed.insert(key, (*reason).to_owned());
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(bares.len());
        for a in 0..bares.len() {
            let mut copies = Vec::with_capacity(relays.len());
            for (h, (name, id)) in relays.iter().enumerate() {
                let answer = answers.remove(&(a, h)).unwrap_or_else(|| {
                    HsDirAnswer::Failed(match failed.remove(&(a, h)) {
                        Some(reason) => format!("{reason} (no content event within {within:?})"),
                        None => format!("no answer within {within:?}"),
                    })
                });
                copies.push(HsDirCopy {
                    name: name.clone(),
                    hsdir: *id,
                    answer,
                });
            }
            out.push(copies);
        }
        Ok(out)
    }
}

/// How the observer and the backends' circuits are watched.
impl TestNet {
    /// A handle on the observer (see [`TestNetBuilder::observer`]) that can be moved into a
    /// task of its own: [`Observer::hsdir_copies`].
    pub fn observer(&self) -> Result<Observer> {
        let node = self
            .observer
            .as_ref()
            .context("the network has no observer (TestNetBuilder::observer)")?;
        Ok(Observer {
            control_port: node.control_port,
            cookie: node.dir.join("control_auth_cookie"),
            relays: self.relay_identities()?,
        })
    }

    /// [`Observer::hsdir_copies`] on this network's observer.
    pub async fn hsdir_copies(
        &self,
        onions: &[&str],
        within: Duration,
    ) -> Result<Vec<Vec<HsDirCopy>>> {
        self.observer()?.hsdir_copies(onions, within).await
    }

    /// Records backend `i`'s `CIRC` events (every circuit its tor launches, builds and
    /// closes, with its purpose) from now until its tor stops: a service's rendezvous
    /// circuits (`HS_SERVICE_REND`) are what connections to it cost it, counted from its
    /// side.
    pub async fn watch_backend_circuits(&self, i: usize) -> Result<CircuitLog> {
        let mut ctl = self.backend_control(i).await?;
        ctl.command_ok("SETEVENTS CIRC").await?;
        let log = CircuitLog::default();
        let into = Arc::clone(&log.0);
        tokio::spawn(async move {
            while let Ok(event) = ctl.next_event().await {
                for line in &event.lines {
                    let words: Vec<&str> = line.text.split_whitespace().collect();
                    if words.len() < 3 || words[0] != "CIRC" {
                        continue;
                    }
                    let purpose = words
                        .iter()
                        .find_map(|w| w.strip_prefix("PURPOSE="))
                        .map(str::to_owned);
                    into.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(CircEvent {
                            at: SystemTime::now(),
                            id: words[1].to_owned(),
                            status: words[2].to_owned(),
                            purpose,
                        });
                }
            }
        });
        Ok(log)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let mut children: Vec<(String, Child)> = Vec::new();
        let nodes = self
            .relays
            .iter_mut()
            .chain(std::iter::once(&mut self.client))
            .chain(self.observer.iter_mut())
            .chain(self.backends.iter_mut().map(|b| &mut b.node));
        for node in nodes {
            if let Some(child) = node.child.take() {
                children.push((node.name.clone(), child));
            }
        }
        stop_children(&mut children);
        if let RunDir::Kept(dir) = &self.run_dir {
            eprintln!("testnet: run directory kept: {}", dir.display());
        }
    }
}

/// Stops processes we started: SIGTERM to each by PID, up to [`STOP_GRACE`] to exit, then
/// SIGKILL; reaps all. Blocking (runs in `Drop`).
fn stop_children(children: &mut Vec<(String, Child)>) {
    for (_, child) in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            // std has no SIGTERM; kill(1) sends it to exactly this PID.
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !sent.is_ok_and(|s| s.success()) {
                let _ = child.kill();
            }
        }
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    loop {
        children.retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
        if children.is_empty() || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, child) in children.iter_mut() {
        eprintln!(
            "testnet: {name} (pid {}) ignored SIGTERM for {STOP_GRACE:?}: SIGKILL",
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

/// Fails with installation advice if `tor` or `tor-gencert` cannot be run.
fn check_tools() -> Result<()> {
    for (tool, arg) in [(TOR, "--version"), (TOR_GENCERT, "--help")] {
        let run = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = run {
            bail!(
                "cannot run `{tool}` ({e}): the private-network tests need C tor. \
                 Install it with `apt-get install tor` (it brings `tor-gencert` too)."
            );
        }
    }
    Ok(())
}

/// Creates a directory readable by us only (tor refuses group/world-readable data dirs).
fn make_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Writes a node's torrc and returns the (not yet started) node.
fn write_node(name: String, dir: PathBuf, control_port: u16, t: &Torrc) -> Result<TorNode> {
    let node = TorNode {
        name,
        dir,
        control_port,
        child: None,
        reserved: Vec::new(),
    };
    fs::write(node.torrc(), t.render())
        .with_context(|| format!("write {}", node.torrc().display()))?;
    Ok(node)
}

/// Generates every authority's keys (in parallel) and reads their identities.
fn make_authority_keys(dirs: &[PathBuf], ports: &[RelayPorts]) -> Result<Vec<Authority>> {
    // tor-gencert: the v3 identity and signing keys and the certificate. The passphrase only
    // protects the identity key file on disk; it is read from stdin.
    let mut gencerts = Vec::new();
    for (dir, p) in dirs.iter().zip(ports) {
        let keys = dir.join("keys");
        make_private_dir(&keys)?;
        let mut child = Command::new(TOR_GENCERT)
            .args(["--create-identity-key", "--passphrase-fd", "0", "-m", "12"])
            .arg("-i")
            .arg(keys.join("authority_identity_key"))
            .arg("-s")
            .arg(keys.join("authority_signing_key"))
            .arg("-c")
            .arg(keys.join("authority_certificate"))
            .arg("-a")
            .arg(format!("127.0.0.1:{}", p.dir_port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run tor-gencert")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin
                .write_all(b"testnet\n")
                .context("give tor-gencert its passphrase")?;
        }
        gencerts.push(child);
    }
    for child in gencerts {
        let out = child.wait_with_output().context("wait for tor-gencert")?;
        if !out.status.success() {
            bail!(
                "tor-gencert failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // tor --list-fingerprint: the relay identity keys, and the `fingerprint` files.
    let mut listers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let child = Command::new(TOR)
            .args(["--ignore-missing-torrc", "-f", "/dev/null"])
            .args(["--defaults-torrc", "/dev/null"])
            .args(["--orport", "1", "--nickname", &format!("auth{i}")])
            .arg("--datadirectory")
            .arg(dir)
            .arg("--list-fingerprint")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run tor --list-fingerprint")?;
        listers.push(child);
    }
    for child in listers {
        let out = child
            .wait_with_output()
            .context("wait for tor --list-fingerprint")?;
        if !out.status.success() {
            bail!(
                "tor --list-fingerprint failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    let mut authorities = Vec::new();
    for (dir, p) in dirs.iter().zip(ports) {
        authorities.push(read_authority(dir, p.or_port)?);
    }
    Ok(authorities)
}

/// Reads an authority's identities from the files tor and tor-gencert wrote.
fn read_authority(dir: &Path, or_port: u16) -> Result<Authority> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    };
    let cert = read("keys/authority_certificate")?;
    let v3ident = cert
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .and_then(|hex| RsaIdentity::from_hex(hex.trim()))
        .context("no fingerprint line in authority_certificate")?;
    let fp = read("fingerprint")?;
    let (nickname, rsa_hex) = fp
        .trim()
        .split_once(' ')
        .context("malformed fingerprint file")?;
    let rsa_identity = RsaIdentity::from_hex(rsa_hex.trim()).context("malformed fingerprint")?;
    let ed = read("fingerprint-ed25519")?;
    let ed25519_identity = ed
        .split_whitespace()
        .nth(1)
        .and_then(Ed25519Identity::from_base64)
        .context("malformed fingerprint-ed25519")?;
    Ok(Authority {
        nickname: nickname.to_owned(),
        v3ident,
        rsa_identity,
        ed25519_identity,
        orport: SocketAddr::from((Ipv4Addr::LOCALHOST, or_port)),
    })
}

/// Generates a random ed25519 frontend key, writes it as PKCS#8 PEM (the upstream
/// Onionbalance key format) to `path`, and returns its onion address (with `.onion`).
fn generate_frontend_key(path: &Path) -> Result<String> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, KeypairBytes};
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let seed = rand::random::<[u8; 32]>();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    // PKCS#8 v1 (seed only), as Python's `cryptography` writes it for upstream Onionbalance.
    let pem = KeypairBytes {
        secret_key: seed,
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| anyhow!("encode frontend key: {e}"))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(onion_address(&public))
}

/// The v3 onion address (with `.onion`) of an ed25519 public key.
pub fn onion_address(public_key: &[u8; 32]) -> String {
    use safelog::DisplayRedacted as _;
    tor_hscrypto::pk::HsId::from(*public_key)
        .display_unredacted()
        .to_string()
}

/// `address` with a `.onion` suffix.
fn with_onion_suffix(address: &str) -> String {
    let address = address.trim();
    if address.ends_with(".onion") {
        address.to_owned()
    } else {
        format!("{address}.onion")
    }
}

/// Path of the microdescriptor consensus (the flavor clients use) on a DirPort.
const MD_CONSENSUS: &str = "/tor/status-vote/current/consensus-microdesc";

/// `GET path` from the DirPort at `127.0.0.1:dir_port`; the body of a 200 answer.
async fn dir_get(dir_port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", dir_port)).await?;
    let resp = http::get(&mut stream, &format!("127.0.0.1:{dir_port}"), path).await?;
    if resp.status != 200 {
        bail!("HTTP {} for {path}", resp.status);
    }
    Ok(resp.body)
}

/// Whether the authority at `dir_port` serves a complete consensus and every
/// microdescriptor it lists; the consensus summary if so.
async fn authority_is_ready(dir_port: u16, expected: usize) -> Result<ConsensusSummary> {
    let summary = ConsensusSummary::parse(&dir_get(dir_port, MD_CONSENSUS).await?);
    if !summary.is_complete(expected) {
        bail!("incomplete consensus: {}", summary.describe());
    }
    // Digests are unpadded base64, as the `/tor/micro/d/` URL wants them.
    let path = format!("/tor/micro/d/{}", summary.microdescs.join("-"));
    let served = dir_get(dir_port, &path)
        .await?
        .lines()
        .filter(|l| l.starts_with("ntor-onion-key "))
        .count();
    if served < summary.microdescs.len() {
        bail!(
            "serves {served} of {} microdescriptors",
            summary.microdescs.len()
        );
    }
    Ok(summary)
}

/// What a consensus says about the relays, as far as readiness is concerned.
#[derive(Debug, Default)]
struct ConsensusSummary {
    /// Number of routers listed.
    routers: usize,
    /// Routers with both `Running` and `HSDir`.
    hsdirs_running: usize,
    /// How many routers carry each flag.
    flags: std::collections::BTreeMap<String, usize>,
    /// The consensus' valid-after time.
    valid_after: String,
    /// Microdescriptor digests (`m` lines of a microdescriptor consensus).
    microdescs: Vec<String>,
}

impl ConsensusSummary {
    /// Reads the `r`, `s` and `valid-after` lines.
    fn parse(text: &str) -> Self {
        let mut s = ConsensusSummary::default();
        for line in text.lines() {
            if line.starts_with("r ") {
                s.routers += 1;
            } else if let Some(flags) = line.strip_prefix("s ") {
                let flags: Vec<&str> = flags.split_whitespace().collect();
                if flags.contains(&"Running") && flags.contains(&"HSDir") {
                    s.hsdirs_running += 1;
                }
                for f in flags {
                    *s.flags.entry(f.to_owned()).or_default() += 1;
                }
            } else if let Some(digest) = line.strip_prefix("m ") {
                s.microdescs.push(digest.trim().to_owned());
            } else if let Some(va) = line.strip_prefix("valid-after ") {
                s.valid_after = va.to_owned();
            }
        }
        s
    }

    /// Whether all `expected` routers are listed, each as a running HSDir.
    fn is_complete(&self, expected: usize) -> bool {
        self.routers == expected && self.hsdirs_running == expected
    }

    /// One line for logs.
    fn describe(&self) -> String {
        let flags: Vec<String> = self.flags.iter().map(|(f, n)| format!("{f}:{n}")).collect();
        format!(
            "valid-after {}, {} routers, {} running HSDirs; flags {}",
            self.valid_after,
            self.routers,
            self.hsdirs_running,
            flags.join(" ")
        )
    }
}

/// The line a C tor HSDir logs (info, domain `rend`) for each descriptor upload it stored.
const HSDIR_STORED_LINE: &str = "Publish request for HS descriptor handled successfully.";
/// The start of the line a C tor HSDir logs (info, domain `rend`) for an upload it refused
/// because its cached descriptor has an equal or higher revision counter; `(<cached>/<received>)`
/// follows.
const HSDIR_REFUSED_REVISION_LINE: &str =
    "Descriptor revision counter in our cache is greater or equal than the one we received";
/// How long before a backend's `HS_DESC UPLOADED` event the HSDir's stored line may be
/// logged: the answer travels back over the backend's 3-hop circuit (milliseconds on
/// loopback), and the harness reads the event when its task next runs.
pub const ACK_MATCH_WINDOW: Duration = Duration::from_secs(30);

/// A fetch that succeeded, and the attempts that failed before it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body of the `200` answer.
    pub body: String,
    /// Every attempt that failed before the one that succeeded, in order.
    pub failed_attempts: Vec<FailedAttempt>,
    /// From the first attempt's start to the answer.
    pub took: Duration,
}

/// Derefs to the body, so that `net.fetch(..).await?.trim()` reads as before.
impl std::ops::Deref for Fetched {
    type Target = String;

    fn deref(&self) -> &String {
        &self.body
    }
}

impl fmt::Display for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.body)
    }
}

/// One failed fetch attempt.
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    /// When it began, since the fetch began.
    pub began: Duration,
    /// How long it took to fail.
    pub took: Duration,
    /// Why (tor's SOCKS error, HTTP status, or the timeout).
    pub error: String,
}

impl fmt::Display for FailedAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt at {:.1} s failed after {:.1} s: {}",
            self.began.as_secs_f64(),
            self.took.as_secs_f64(),
            self.error
        )
    }
}

/// A fetch that did not succeed within its budget or its bound on failed attempts.
#[derive(Debug, Clone)]
pub struct FetchFailed {
    /// What was fetched.
    pub url: String,
    /// Its time budget.
    pub budget: Duration,
    /// Its bound on failed attempts.
    pub max_failed_attempts: usize,
    /// Every attempt, all failed.
    pub attempts: Vec<FailedAttempt>,
}

impl fmt::Display for FetchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not fetch {} within {:?} and {} failed attempts",
            self.url, self.budget, self.max_failed_attempts
        )?;
        write!(f, " ({} attempts, all failed):", self.attempts.len())?;
        for a in &self.attempts {
            write!(f, "\n  {a}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FetchFailed {}

/// One `HS_DESC` control event of a backend about its own descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDescEvent {
    /// When the harness read it.
    pub at: SystemTime,
    /// The action: `UPLOAD`, `UPLOADED`, `FAILED`, ... (control-spec `HS_DESC`).
    pub action: String,
    /// The HSDir it concerns, if it names one (`$<fingerprint>~<nickname>`).
    pub hsdir: Option<RsaIdentity>,
    /// The event as tor sent it.
    pub line: String,
}

impl HsDescEvent {
    /// Reads `HS_DESC <action> <address> <auth> <hsdir> ...` if it is about `bare` (an
    /// address without `.onion`), stamping it with the current time.
    fn parse(text: &str, bare: &str) -> Option<Self> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() < 5 || words[0] != "HS_DESC" || words[2] != bare {
            return None;
        }
        Some(HsDescEvent {
            at: SystemTime::now(),
            action: words[1].to_owned(),
            hsdir: words[4]
                .strip_prefix('$')
                .and_then(|s| s.get(..40))
                .and_then(RsaIdentity::from_hex),
            line: text.to_owned(),
        })
    }
}

/// A descriptor upload a backend's tor reported acknowledged (`HS_DESC UPLOADED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUpload {
    /// The backend's index.
    pub backend: usize,
    /// The HSDir that acknowledged it.
    pub hsdir: RsaIdentity,
    /// When the harness read the event.
    pub at: SystemTime,
}

/// One HSDir's record of the descriptor uploads it received (see
/// [`TestNet::hsdir_uploads_stored`] for how each is read and attributed).
#[derive(Debug, Clone)]
pub struct HsDirUploads {
    /// Its name (`auth0`, `relay3`).
    pub name: String,
    /// Its RSA identity.
    pub identity: RsaIdentity,
    /// Uploads it stored, in time order.
    pub stored: Vec<StoredUpload>,
    /// Uploads it refused because it held an equal or higher revision counter.
    pub refused_revision: Vec<RefusedUpload>,
    /// Acknowledgements a backend's tor reported from this HSDir with no stored line to
    /// match (expected none).
    pub unmatched_backend_acks: Vec<BackendUpload>,
}

impl HsDirUploads {
    /// When it stored uploads made by no backend (by the frontend), within `since..until`.
    pub fn not_from_backends(&self, since: SystemTime, until: SystemTime) -> Vec<SystemTime> {
        self.stored
            .iter()
            .filter(|s| s.by.is_none() && s.at >= since && s.at < until)
            .map(|s| s.at)
            .collect()
    }

    /// Uploads by backend `i` it stored within `since..until`.
    pub fn stored_by_backend(&self, i: usize, since: SystemTime, until: SystemTime) -> usize {
        self.stored
            .iter()
            .filter(|s| s.by == Some(i) && s.at >= since && s.at < until)
            .count()
    }
}

/// A descriptor upload an HSDir stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredUpload {
    /// When the HSDir logged it.
    pub at: SystemTime,
    /// The backend that made it, or `None`: no backend did (the frontend).
    pub by: Option<usize>,
}

/// A descriptor upload an HSDir refused for its revision counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedUpload {
    /// When the HSDir logged it.
    pub at: SystemTime,
    /// The revision counter it holds, as tor prints it (32-bit signed).
    pub cached: i64,
    /// The revision counter it was sent, as tor prints it (32-bit signed).
    pub received: i64,
}

/// Appends an event, even if a panicking holder poisoned the lock.
fn push_event(into: &Mutex<Vec<HsDescEvent>>, event: HsDescEvent) {
    into.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(event);
}

/// Records the `HS_DESC` events about `bare` that arrive on `ctl` (subscribed already)
/// until tor closes the connection.
async fn record_hs_desc_events(
    mut ctl: ControlConnection,
    bare: String,
    into: Arc<Mutex<Vec<HsDescEvent>>>,
) {
    while let Ok(event) = ctl.next_event().await {
        for line in &event.lines {
            if let Some(e) = HsDescEvent::parse(&line.text, &bare) {
                push_event(&into, e);
            }
        }
    }
}

/// Waits until the C tor client `node` reports 100 % bootstrap.
async fn wait_for_bootstrap(node: &mut TorNode, deadline: Instant) -> Result<()> {
    let mut ctl = node.control(deadline).await?;
    let mut phase = String::new();
    loop {
        node.check_alive()?;
        phase = ctl.getinfo("status/bootstrap-phase").await.unwrap_or(phase);
        if phase.contains("PROGRESS=100") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the {} did not bootstrap in time (last: {phase})\n{}",
                node.name,
                node.log_tail()
            );
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// A relay's RSA identity, from the `fingerprint` file tor writes into its data directory.
fn read_fingerprint(dir: &Path) -> Result<RsaIdentity> {
    let path = dir.join("fingerprint");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.split_whitespace()
        .nth(1)
        .and_then(RsaIdentity::from_hex)
        .with_context(|| format!("malformed {}", path.display()))
}

/// The instant a tor log line was written: its prefix `Mon DD HH:MM:SS.mmm` read as UTC (the
/// harness runs tor with `TZ=UTC`) in the year that puts it no later than a day from now
/// (tor logs no year).
fn parse_tor_log_time(line: &str) -> Result<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut words = line.split_whitespace();
    let (Some(month), Some(day), Some(clock)) = (words.next(), words.next(), words.next()) else {
        bail!("no timestamp");
    };
    let month = MONTHS
        .iter()
        .position(|m| *m == month)
        .context("no month")? as u32
        + 1;
    let day: u32 = day.parse().context("no day")?;
    let (hms, millis) = clock.split_once('.').unwrap_or((clock, "0"));
    let hms: Vec<u64> = hms
        .split(':')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .context("bad time of day")?;
    let [h, m, sec] = hms[..] else {
        bail!("bad time of day");
    };
    let millis: u64 = millis.parse().context("bad milliseconds")?;
    let now = SystemTime::now();
    let now_secs = now.duration_since(UNIX_EPOCH)?.as_secs();
    let this_year = year_of_unix_day(now_secs / 86_400);
    for year in [this_year, this_year - 1] {
        let days = days_from_civil(year, month, day);
        let secs = u64::try_from(days).context("before 1970")? * 86_400 + h * 3600 + m * 60 + sec;
        let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        if at <= now + Duration::from_secs(86_400) {
            return Ok(at);
        }
    }
    bail!("timestamp in the future")
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count years from March, so that the leap day ends a year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The calendar year of the day `unix_day` days after 1970-01-01.
fn year_of_unix_day(unix_day: u64) -> i64 {
    let day = i64::try_from(unix_day).unwrap_or(i64::MAX / 2);
    let mut year = 1970 + day / 366;
    while days_from_civil(year + 1, 1, 1) <= day {
        year += 1;
    }
    year
}

/// A descriptor read with its service's address (verified, decrypted, valid now).
#[derive(Debug, Clone)]
pub struct ReadDescriptor {
    /// The time period whose blinded key signed it.
    pub period: u64,
    /// Its revision counter.
    pub revision: u64,
    /// Its intro points, in the order listed.
    pub intro_points: Vec<ListedIntroPoint>,
}

impl ReadDescriptor {
    /// Relays (by RSA identity) that carry more than one of its intro points, with how many.
    pub fn relays_listed_twice(&self) -> Vec<(RsaIdentity, usize)> {
        let mut count: HashMap<RsaIdentity, usize> = HashMap::new();
        for ip in &self.intro_points {
            if let Some(r) = ip.relay {
                *count.entry(r).or_default() += 1;
            }
        }
        let mut twice: Vec<(RsaIdentity, usize)> =
            count.into_iter().filter(|(_, n)| *n > 1).collect();
        twice.sort();
        twice
    }
}

/// One intro point of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedIntroPoint {
    /// Its authentication key (`KP_hs_ipt_sid`), hex: what tells intro points apart.
    pub auth_key: String,
    /// The relay it is on, by the RSA identity in its link specifiers (what a C tor client
    /// matches an intro circuit by); `None` if it lists none.
    pub relay: Option<RsaIdentity>,
}

/// Verifies and decrypts `text` as a descriptor of `onion` for the test network's time
/// period at `when` (by the wall clock: 24 voting intervals from an offset of 12), the one
/// before or the one after, whichever verifies; it must be valid at `when`.
pub fn read_descriptor(text: &str, onion: &str, when: SystemTime) -> Result<ReadDescriptor> {
    use onionbalance::descriptor::{intake, BackendKeys, DEFAULT_MAX_DESCRIPTOR_LEN};
    use tor_hscrypto::time::TimePeriod;

    let address: onionbalance::OnionAddress = onion
        .trim()
        .parse()
        .map_err(|e| anyhow!("bad onion address {onion}: {e}"))?;
    let voting = u64::from(torrc::VOTING_INTERVAL_SECS);
    let current = TimePeriod::new(
        Duration::from_secs(24 * voting),
        when,
        Duration::from_secs(12 * voting),
    )
    .map_err(|e| anyhow!("time period: {e}"))?;
    let mut errors = Vec::new();
    for period in [current.prev(), Some(current), current.next()]
        .into_iter()
        .flatten()
    {
        let keys = BackendKeys::derive(address, period).map_err(|e| anyhow!("{e}"))?;
        match intake(&keys, text, when, DEFAULT_MAX_DESCRIPTOR_LEN) {
            Ok(snapshot) => {
                return Ok(ReadDescriptor {
                    period: period.interval_num(),
                    revision: u64::from(snapshot.revision),
                    intro_points: snapshot
                        .intro_points
                        .iter()
                        .map(|ip| ListedIntroPoint {
                            auth_key: hex::encode(ip.ipt_sid_key().as_bytes()),
                            relay: ip.link_specifiers().iter().find_map(|ls| match ls.parse() {
                                Ok(tor_linkspec::LinkSpec::RsaId(id)) => Some(id),
                                _ => None,
                            }),
                        })
                        .collect(),
                });
            }
            Err(e) => errors.push(format!("period {}: {e}", period.interval_num())),
        }
    }
    bail!(
        "not a valid descriptor of {onion} near now: {}",
        errors.join("; ")
    )
}
