//! A Tor network for Shadow, the discrete-event network simulator, at the public network's
//! timescales (`scripts/simulate`, `docs/simulation.md`).
//!
//! [`Scenario::generate`] writes everything a run needs into one directory: Shadow's
//! `shadow.yaml`, and a template of every simulated host's working directory (`hosts/<name>/`:
//! torrc, keys, the frontend's config), which Shadow copies into its data directory before it
//! starts. Every process runs unmodified: Debian's `tor` for the authorities, relays, backends
//! and the C tor clients; the release `onionbalance` for the frontend; this crate's
//! `onionbalance-sim` binary for the backends' web servers and the clients' page loads.
//!
//! Why it is built this way:
//! * **Public-network timing.** The authorities vote every hour (after a first consensus
//!   within minutes, from `TestingV3AuthInitial*`). Under `TestingTorNetwork 1` C tor makes the
//!   onion-service time period 24 voting intervals long, offset by 12: 24 hours rolling over at
//!   12:00 UTC, as on the public network, with a new shared random value daily. Arti reads the
//!   period's length from the consensus parameter `hsdir_interval`, which such a network does
//!   not publish; its default, 1440 minutes, is the same. HSDir parameters are the defaults.
//! * **The simulated clock starts on 2000-01-01.** Keys and certificates made on this machine
//!   today would be from the future there, and Arti and tor refuse them. The authorities'
//!   keys are made under `faketime` at [`KEYS_MADE_AT`], the day before the simulation starts;
//!   relays, backends and clients make their own keys inside the simulation.
//! * **Backend keys are made here** (C tor's `hs_ed25519_secret_key`), because the frontend's
//!   config must name the backends' addresses before anything runs.
//! * **Events are processes**: a restart is a process stopped (`shutdown_time`, SIGTERM or
//!   SIGKILL) and another started later in the same host directory, so state is kept.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use onionbalance::keys::FrontendKey;
use onionbalance::onion::OnionAddress;
use rand::SeedableRng as _;
use tor_llcrypto::pk::ed25519::{self, ExpandedKeypair};

use crate::torrc::{Torrc, REND_LOG};

/// When the authorities' keys are made (`faketime`): a day before Shadow's clock starts
/// (2000-01-01 00:00:00 UTC), so that their certificates are already valid then.
pub const KEYS_MADE_AT: &str = "1999-12-31 00:00:00";
/// The authorities' voting interval: the public network's.
pub const VOTING_INTERVAL_SECS: u64 = 3600;
/// Shadow's simulated clock at the start of every simulation (2000-01-01 00:00:00 UTC).
pub const SIMULATION_START_UNIX: u64 = 946_684_800;

/// The ORPort of every relay and authority (each host has its own address).
const OR_PORT: u16 = 9001;
/// The DirPort of every relay and authority.
const DIR_PORT: u16 = 9030;
/// The SOCKS port of the C tor clients.
pub const SOCKS_PORT: u16 = 9050;
/// The control port of the C tor clients.
pub const CONTROL_PORT: u16 = 9051;
/// The backends' web servers (on each backend host's loopback).
pub const WEB_PORT: u16 = 8080;
/// The frontend's metrics endpoint (on its host's loopback).
pub const METRICS_PORT: u16 = 9035;

/// The file (beside `shadow.yaml`) listing the scenario's events for the report: one line
/// each, `<simulated second> <host> <stop|start>`.
pub const EVENTS_FILE: &str = "events.txt";

/// One timed event: a process of a host stopped and started again.
#[derive(Debug, Clone)]
pub struct Outage {
    /// When it is stopped, in seconds since the start.
    pub stop_at: u64,
    /// How long it stays down, in seconds.
    pub down_for: u64,
    /// `SIGKILL` (a crash) rather than `SIGTERM` (a clean stop).
    pub kill: bool,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Simulated hours.
    pub hours: u64,
    /// Relays besides the 3 authorities (all HSDirs and guards).
    pub relays: usize,
    /// C tor backends in instance mode.
    pub backends: usize,
    /// C tor clients, each loading the frontend as a new client.
    pub tor_clients: usize,
    /// Seconds between two loads of one client.
    pub load_every: u64,
    /// Per backend, its outages (its tor stopped and started again, with new intro points).
    pub backend_outages: Vec<Vec<Outage>>,
    /// The frontend's outages (restarted on its state).
    pub frontend_outages: Vec<Outage>,
    /// Seed of the keys made here, so that two runs of one scenario have the same addresses.
    pub seed: u64,
    /// Extra arguments of the frontend's `onionbalance run` (e.g. `-o KEY=VALUE`).
    pub frontend_args: Vec<String>,
}

/// Number of directory authorities.
const AUTHORITIES: usize = 3;

impl Scenario {
    /// The issue's scenario over `hours`: backends started 5 minutes apart from the first
    /// hour on; one backend restarted every 4 hours in turn; backend 1 killed for 6 hours on
    /// the second day; the frontend restarted once, 30 hours in.
    pub fn standard(hours: u64, relays: usize, backends: usize) -> Self {
        let mut backend_outages = vec![Vec::new(); backends];
        // Backend 2 (index 1) crashes for 6 hours on the second day, when there is one.
        let long = (backends > 1 && hours > 40).then_some(Outage {
            stop_at: 26 * 3600 + 10 * 60,
            down_for: 6 * 3600,
            kill: true,
        });
        let overlaps =
            |o: &Outage, at: u64| at + 120 >= o.stop_at && at <= o.stop_at + o.down_for + 120;
        let mut at = 4 * 3600 + 17 * 60;
        let mut turn = 0;
        while backends > 0 && at + 3600 < hours * 3600 {
            let mut target = turn % backends;
            if target == 1 && long.as_ref().is_some_and(|o| overlaps(o, at)) {
                turn += 1;
                target = turn % backends;
            }
            backend_outages[target].push(Outage {
                stop_at: at,
                down_for: 60,
                kill: false,
            });
            turn += 1;
            at += 4 * 3600;
        }
        if let Some(o) = long {
            backend_outages[1].push(o);
        }
        let frontend_outages = if hours > 31 {
            vec![Outage {
                stop_at: 30 * 3600 + 5 * 60,
                down_for: 120,
                kill: false,
            }]
        } else {
            Vec::new()
        };
        Scenario {
            hours,
            relays,
            backends,
            tor_clients: 2,
            load_every: 60,
            backend_outages,
            frontend_outages,
            seed: 22,
            frontend_args: Vec::new(),
        }
    }
}

impl Scenario {
    /// The scenario's stops and starts, as [`EVENTS_FILE`] lists them, in time order.
    pub fn events(&self) -> String {
        let mut events: Vec<(u64, String, &str)> = Vec::new();
        let hosts = self
            .backend_outages
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("backend{}", i + 1), o))
            .chain(std::iter::once((
                "frontend".to_owned(),
                &self.frontend_outages,
            )));
        for (host, outages) in hosts {
            for o in outages {
                events.push((
                    o.stop_at,
                    host.clone(),
                    if o.kill { "kill" } else { "stop" },
                ));
                events.push((o.stop_at + o.down_for, host.clone(), "start"));
            }
        }
        events.sort();
        events
            .into_iter()
            .map(|(at, host, what)| format!("{at} {host} {what}\n"))
            .collect()
    }
}

/// Paths of the programs the simulation runs (absolute: Shadow starts them directly).
#[derive(Debug, Clone)]
pub struct Programs {
    /// Debian's `tor`.
    pub tor: PathBuf,
    /// The release `onionbalance`.
    pub onionbalance: PathBuf,
    /// This crate's `onionbalance-sim` (web servers and page loads).
    pub sim: PathBuf,
}

/// An authority as the others and the clients need to know it.
struct AuthorityId {
    /// Host name and nickname.
    name: String,
    /// Its address in the simulation.
    ip: String,
    /// `fingerprint` of its `authority_certificate` (v3 identity).
    v3ident: String,
    /// Its relay RSA identity.
    fingerprint: String,
}

/// A simulated host: its name, address and processes (YAML, already indented).
struct Host {
    /// Host name (also the template directory's name).
    name: String,
    /// Its IPv4 address.
    ip: String,
    /// Its `processes:` entries.
    processes: Vec<String>,
}

/// One `processes:` entry.
fn process(
    path: &Path,
    args: &str,
    env: &[(&str, &str)],
    start: u64,
    stop: Option<(u64, bool)>,
) -> String {
    let mut p = format!(
        "    - path: {}\n      args: {}\n      start_time: {start}s\n",
        path.display(),
        yaml_string(args)
    );
    if !env.is_empty() {
        p.push_str("      environment:\n");
        for (k, v) in env {
            let _ = writeln!(p, "        {k}: {}", yaml_string(v));
        }
    }
    match stop {
        Some((at, kill)) => {
            let _ = writeln!(p, "      shutdown_time: {at}s");
            // tor and onionbalance exit cleanly on SIGTERM; SIGKILL is a crash.
            if kill {
                p.push_str("      shutdown_signal: SIGKILL\n");
                p.push_str("      expected_final_state: {signaled: SIGKILL}\n");
            } else {
                p.push_str("      shutdown_signal: SIGTERM\n");
                p.push_str("      expected_final_state: {exited: 0}\n");
            }
        }
        None => p.push_str("      expected_final_state: running\n"),
    }
    p
}

/// A YAML double-quoted string.
fn yaml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The processes of one long-running program with outages: one entry per uptime.
fn with_outages(
    path: &Path,
    args: &str,
    env: &[(&str, &str)],
    first_start: u64,
    outages: &[Outage],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = first_start;
    let mut sorted = outages.to_vec();
    sorted.sort_by_key(|o| o.stop_at);
    for o in sorted {
        if o.stop_at <= start {
            continue;
        }
        out.push(process(path, args, env, start, Some((o.stop_at, o.kill))));
        start = o.stop_at + o.down_for;
    }
    out.push(process(path, args, env, start, None));
    out
}

/// Settings every tor of the network shares.
fn common_torrc(t: &mut Torrc, nickname: &str, ip: &str, authorities: &[AuthorityId]) {
    t.comment("Written by onionbalance-sim (crates/testnet/src/sim.rs).")
        .opt("TestingTorNetwork", 1)
        .opt("DataDirectory", ".")
        .opt("Nickname", nickname)
        .opt("Address", ip)
        .opt("RunAsDaemon", 0)
        // Shadow does not let a process attach a debugger to itself.
        .opt("DisableDebuggerAttachment", 0)
        .opt("SafeLogging", 0)
        .opt("LogTimeGranularity", 1)
        .opt("Log", "notice stdout")
        .opt("Log", format!("[rend]info file {REND_LOG}"))
        // A simulated machine has one core; no worker threads to wait for.
        .opt("NumCPUs", 1)
        .opt("ConnLimit", 64);
    for a in authorities {
        t.opt(
            "DirAuthority",
            format!(
                "{} orport={OR_PORT} no-v2 v3ident={} {}:{DIR_PORT} {}",
                a.name, a.v3ident, a.ip, a.fingerprint
            ),
        );
    }
}

/// Settings of a relay (and of an authority).
fn relay_torrc(t: &mut Torrc) {
    // Shadow's hosts have no IPv6.
    t.opt("ORPort", format!("{OR_PORT} IPv4Only"))
        .opt("DirPort", DIR_PORT)
        .opt("SocksPort", 0)
        .opt("ExitRelay", 0)
        .opt("ExitPolicy", "reject *:*")
        .opt("AssumeReachable", 1)
        .opt("ContactInfo", "onionbalance-sim");
}

/// Settings of an authority.
fn authority_torrc(t: &mut Torrc) {
    t.opt("AuthoritativeDirectory", 1)
        .opt("V3AuthoritativeDirectory", 1)
        .opt("V3AuthVotingInterval", VOTING_INTERVAL_SECS)
        .opt("V3AuthVoteDelay", 300)
        .opt("V3AuthDistDelay", 300)
        // The first consensus within minutes, then hourly.
        .opt("TestingV3AuthInitialVotingInterval", 300)
        .opt("TestingV3AuthInitialVoteDelay", 20)
        .opt("TestingV3AuthInitialDistDelay", 20)
        // The flags a small network would otherwise wait days for.
        .opt("TestingDirAuthVoteGuard", "*")
        .opt("TestingDirAuthVoteHSDir", "*")
        .opt("TestingDirAuthVoteGuardIsStrict", 0)
        .opt("AuthDirMaxServersPerAddr", 0);
}

/// Runs `program args` under `faketime` at [`KEYS_MADE_AT`], failing with its output.
fn run_at_key_time(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let mut cmd = Command::new("faketime");
    cmd.arg(KEYS_MADE_AT)
        .arg(program)
        .args(args)
        .env("TZ", "UTC")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run faketime {program} (apt-get install faketime)"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "faketime {program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes an authority's keys in `dir` (as of [`KEYS_MADE_AT`]) and reads its identities.
fn make_authority(dir: &Path, name: &str, ip: &str) -> Result<AuthorityId> {
    let keys = dir.join("keys");
    fs::create_dir_all(&keys)?;
    let path = |f: &str| keys.join(f).display().to_string();
    run_at_key_time(
        "tor-gencert",
        &[
            "--create-identity-key",
            "--passphrase-fd",
            "0",
            "-m",
            "24",
            "-i",
            &path("authority_identity_key"),
            "-s",
            &path("authority_signing_key"),
            "-c",
            &path("authority_certificate"),
            "-a",
            &format!("{ip}:{DIR_PORT}"),
        ],
        Some(b"simulation\n"),
    )?;
    let data = dir.display().to_string();
    run_at_key_time(
        "tor",
        &[
            "--ignore-missing-torrc",
            "-f",
            "/dev/null",
            "--defaults-torrc",
            "/dev/null",
            "--orport",
            "1",
            "--nickname",
            name,
            "--datadirectory",
            &data,
            "--list-fingerprint",
        ],
        None,
    )?;
    let cert = fs::read_to_string(keys.join("authority_certificate"))?;
    let v3ident = cert
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .context("authority_certificate has no fingerprint line")?
        .trim()
        .to_owned();
    let fp = fs::read_to_string(dir.join("fingerprint"))?;
    let fingerprint = fp
        .split_whitespace()
        .nth(1)
        .context("fingerprint file has no fingerprint")?
        .to_owned();
    Ok(AuthorityId {
        name: name.to_owned(),
        ip: ip.to_owned(),
        v3ident,
        fingerprint,
    })
}

/// Writes C tor's `hs_ed25519_secret_key` (and `hostname`) for a new onion service key in
/// `hs_dir`, and returns its address.
fn make_backend_key(hs_dir: &Path, rng: &mut rand::rngs::StdRng) -> Result<String> {
    fs::create_dir_all(hs_dir)?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::Rng::fill_bytes(rng, &mut seed[..]);
    let expanded = ExpandedKeypair::from(&ed25519::Keypair::from_bytes(&seed));
    let address = OnionAddress::from_public_key(expanded.public()).to_string();
    let mut file = b"== ed25519v1-secret: type0 ==\0\0\0".to_vec();
    file.extend_from_slice(&expanded.to_secret_key_bytes());
    onionbalance::keys::write_secret_file(&hs_dir.join("hs_ed25519_secret_key"), &file)?;
    fs::write(hs_dir.join("hostname"), format!("{address}\n"))?;
    set_mode(hs_dir, 0o700)?;
    Ok(address)
}

/// The Arti TOML for a host of this network: `onionbalance arti-config` reads the
/// authorities from the template's host directories (as from a chutney network's), with the
/// host's Arti storage under `storage` (inside Shadow's data directory).
fn arti_config(programs: &Programs, hosts_dir: &Path, storage: &Path) -> Result<Vec<u8>> {
    let out = Command::new(&programs.onionbalance)
        .arg("arti-config")
        .arg("--chutney")
        .arg(hosts_dir)
        .arg("--storage")
        .arg(storage)
        .output()
        .context("run onionbalance arti-config")?;
    if !out.status.success() {
        bail!(
            "onionbalance arti-config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// Sets a path's permission bits (tor refuses group- or world-readable key directories).
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// What [`Scenario::generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Shadow's config.
    pub shadow_yaml: PathBuf,
    /// The hosts' template directory (`--template-directory`).
    pub template: PathBuf,
    /// The frontend's address.
    pub frontend: String,
    /// The backends' addresses.
    pub backends: Vec<String>,
}

impl Scenario {
    /// Writes the simulation into `out` (which must not exist): `shadow.yaml`, `template/`.
    /// The simulation's data directory is to be `out/shadow.data` (absolute paths in the
    /// frontend's Arti config point there).
    pub fn generate(&self, out: &Path, programs: &Programs) -> Result<Generated> {
        if out.exists() {
            bail!("{} exists already: give a new directory", out.display());
        }
        let out = std::path::absolute(out)?;
        let template = out.join("template");
        let hosts_dir = template.join("hosts");
        let data_hosts = out.join("shadow.data").join("hosts");
        fs::create_dir_all(&hosts_dir)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut hosts = Vec::new();
        let tor = programs.tor.as_path();

        // Authorities.
        let mut authorities = Vec::new();
        for i in 1..=AUTHORITIES {
            let (name, ip) = (format!("auth{i}"), format!("100.0.0.{i}"));
            authorities.push(make_authority(&hosts_dir.join(&name), &name, &ip)?);
        }
        for a in &authorities {
            let mut t = Torrc::new();
            common_torrc(&mut t, &a.name, &a.ip, &authorities);
            relay_torrc(&mut t);
            authority_torrc(&mut t);
            fs::write(hosts_dir.join(&a.name).join("torrc"), t.render())?;
            hosts.push(Host {
                name: a.name.clone(),
                ip: a.ip.clone(),
                processes: vec![process(
                    tor,
                    "-f torrc --defaults-torrc /dev/null",
                    &[],
                    1,
                    None,
                )],
            });
        }

        // Relays: all of them HSDirs (as every relay with a DirPort and a day of uptime on the
        // public network).
        for i in 1..=self.relays {
            let (name, ip) = (
                format!("relay{i}"),
                format!("100.0.{}.{}", 1 + i / 200, 1 + i % 200),
            );
            let dir = hosts_dir.join(&name);
            fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o700)?;
            let mut t = Torrc::new();
            common_torrc(&mut t, &name, &ip, &authorities);
            relay_torrc(&mut t);
            fs::write(dir.join("torrc"), t.render())?;
            hosts.push(Host {
                name,
                ip,
                processes: vec![process(
                    tor,
                    "-f torrc --defaults-torrc /dev/null",
                    &[],
                    30,
                    None,
                )],
            });
        }

        // The frontend's key, then the backends (which name it in their ob_config).
        let front_dir = hosts_dir.join("frontend");
        fs::create_dir_all(&front_dir)?;
        let front_key = FrontendKey::generate(&mut rng);
        let frontend = front_key.address().to_string();
        front_key.save_pem(&front_dir.join("frontend.key"))?;

        let mut backends = Vec::new();
        for i in 1..=self.backends {
            let (name, ip) = (format!("backend{i}"), format!("100.1.0.{i}"));
            let dir = hosts_dir.join(&name);
            fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o700)?;
            let address = make_backend_key(&dir.join("hs"), &mut rng)?;
            fs::write(
                dir.join("hs").join("ob_config"),
                format!("MasterOnionAddress {frontend}\n"),
            )?;
            let mut t = Torrc::new();
            common_torrc(&mut t, &name, &ip, &authorities);
            t.opt("SocksPort", 0)
                .opt("HiddenServiceDir", "hs")
                .opt("HiddenServicePort", format!("80 127.0.0.1:{WEB_PORT}"))
                .opt("HiddenServiceOnionBalanceInstance", 1);
            fs::write(dir.join("torrc"), t.render())?;
            let start = backend_start(i, self.backends);
            let mut processes = vec![process(
                &programs.sim,
                &format!("web --port {WEB_PORT} --body backend{i}"),
                &[],
                start - 10,
                None,
            )];
            let outages = self
                .backend_outages
                .get(i - 1)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            processes.extend(with_outages(
                tor,
                "-f torrc --defaults-torrc /dev/null",
                &[],
                start,
                outages,
            ));
            hosts.push(Host {
                name,
                ip,
                processes,
            });
            backends.push(address);
        }

        // The frontend: its config, its Arti config (authorities read from the template, the
        // same reader as for chutney networks), its processes.
        // No status socket: Shadow has no Unix sockets bound to a path (the metrics endpoint,
        // on TCP, is served and scraped instead).
        let mut yaml = String::from("services:\n- key: frontend.key\n  instances:\n");
        for (i, b) in backends.iter().enumerate() {
            let _ = writeln!(yaml, "  - address: {b}\n    name: backend{}", i + 1);
        }
        fs::write(front_dir.join("config.yaml"), yaml)?;
        let arti_toml =
            |host: &str| arti_config(programs, &hosts_dir, &data_hosts.join(host).join("arti"));
        fs::write(front_dir.join("arti.toml"), arti_toml("frontend")?)?;
        // The data directory keeps the revision counters across the restart (Shadow gives
        // processes no HOME to find the default one under).
        let mut front_args = format!(
            "run -c config.yaml --arti-config arti.toml --data-dir {} \
             --metrics-listen 127.0.0.1:{METRICS_PORT}",
            data_hosts.join("frontend").join("data").display()
        );
        for a in &self.frontend_args {
            front_args.push(' ');
            front_args.push_str(a);
        }
        let mut processes = with_outages(
            &programs.onionbalance,
            &front_args,
            &[("RUST_LOG", "info,tor_netdir=error")],
            10 * 60,
            &self.frontend_outages,
        );
        processes.push(process(
            &programs.sim,
            &format!("scrape --port {METRICS_PORT} --every 300 --log metrics.log"),
            &[],
            10 * 60 + 30,
            None,
        ));
        hosts.push(Host {
            name: "frontend".into(),
            ip: "100.2.0.1".into(),
            processes,
        });

        // Clients: C tor clients with a loader each, and an Arti loader.
        let first_load = 45 * 60;
        for i in 1..=self.tor_clients {
            let (name, ip) = (format!("torclient{i}"), format!("100.3.0.{i}"));
            let dir = hosts_dir.join(&name);
            fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o700)?;
            let mut t = Torrc::new();
            common_torrc(&mut t, &name, &ip, &authorities);
            t.opt("SocksPort", format!("127.0.0.1:{SOCKS_PORT}"))
                .opt("ControlPort", format!("127.0.0.1:{CONTROL_PORT}"))
                .opt("CookieAuthentication", 1)
                .opt("ClientOnly", 1);
            fs::write(dir.join("torrc"), t.render())?;
            hosts.push(Host {
                name,
                ip,
                processes: vec![
                    process(tor, "-f torrc --defaults-torrc /dev/null", &[], 60, None),
                    process(
                        &programs.sim,
                        &format!(
                            "load --onion {frontend} --every {} --socks {SOCKS_PORT} --control {CONTROL_PORT} --cookie control_auth_cookie --log loads.log",
                            self.load_every
                        ),
                        &[],
                        first_load + 7 * i as u64,
                        None,
                    ),
                ],
            });
        }
        let arti_dir = hosts_dir.join("articlient");
        fs::create_dir_all(&arti_dir)?;
        fs::write(arti_dir.join("arti.toml"), arti_toml("articlient")?)?;
        hosts.push(Host {
            name: "articlient".into(),
            ip: "100.3.1.1".into(),
            processes: vec![process(
                &programs.sim,
                &format!(
                    "load --onion {frontend} --every {} --arti-config arti.toml --log loads.log",
                    self.load_every
                ),
                &[],
                first_load + 3,
                None,
            )],
        });

        // Shadow's config.
        let mut y = String::new();
        let _ = writeln!(
            y,
            "# Written by onionbalance-sim (crates/testnet/src/sim.rs): {self:?}"
        );
        let _ = writeln!(
            y,
            "general:\n  stop_time: {}h\n  model_unblocked_syscall_latency: true\n  progress: true\n  heartbeat_interval: 1h\n  log_level: warning",
            self.hours
        );
        // One network node for every host: 20 ms between any two hosts (a path of the public
        // network takes several such hops), 1 Gbit/s each way. The latency is also what
        // lets Shadow run hosts apart for longer between synchronisations.
        y.push_str(
            "network:\n  graph:\n    type: gml\n    inline: |\n      graph [\n        directed 0\n        \
             node [\n          id 0\n          host_bandwidth_down \"1 Gbit\"\n          \
             host_bandwidth_up \"1 Gbit\"\n        ]\n        edge [\n          source 0\n          \
             target 0\n          latency \"20 ms\"\n          packet_loss 0.0\n        ]\n      ]\n",
        );
        y.push_str("experimental:\n  use_dynamic_runahead: true\n");
        y.push_str("hosts:\n");
        for h in &hosts {
            let _ = writeln!(
                y,
                "  {}:\n    network_node_id: 0\n    ip_addr: {}\n    processes:",
                h.name, h.ip
            );
            for p in &h.processes {
                y.push_str(p);
            }
        }
        let shadow_yaml = out.join("shadow.yaml");
        fs::write(&shadow_yaml, y)?;
        fs::write(
            out.join("addresses.txt"),
            format!(
                "frontend {frontend}\n{}",
                backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("backend{} {b}\n", i + 1))
                    .collect::<String>()
            ),
        )?;
        fs::write(out.join(EVENTS_FILE), self.events())?;
        Ok(Generated {
            shadow_yaml,
            template,
            frontend,
            backends,
        })
    }
}

/// When backend `i` (from 1) of `backends` comes up, in simulated seconds: 5 minutes apart
/// once the network has its first consensus (at 15 minutes), or closer when there are many,
/// so that all are up within the first hour and a short run of a large network sees every one.
fn backend_start(i: usize, backends: usize) -> u64 {
    let gap = (5 * 60).min(3600 / backends.max(1) as u64);
    15 * 60 + (i as u64 - 1) * gap
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six backends come up 5 minutes apart; sixty within the first hour and a quarter.
    #[test]
    fn backends_come_up_apart_and_within_the_first_hour() {
        let six: Vec<u64> = (1..=6).map(|i| backend_start(i, 6)).collect();
        assert_eq!(six, vec![900, 1200, 1500, 1800, 2100, 2400]);
        let last = backend_start(60, 60);
        assert!(last < 75 * 60, "backend 60 of 60 at {last} s");
        assert!(backend_start(59, 60) < last, "still one after the other");
    }

    /// The issue's 72-hour scenario: a backend restart every 4 hours, backend 2 down for 6
    /// hours with none of its restarts inside, the frontend restarted once.
    #[test]
    fn the_standard_scenario_has_the_issues_events() {
        let s = Scenario::standard(72, 20, 6);
        let restarts: usize = s
            .backend_outages
            .iter()
            .flatten()
            .filter(|o| !o.kill)
            .count();
        assert!(restarts >= 15, "{restarts} restarts");
        let long: Vec<&Outage> = s.backend_outages[1].iter().filter(|o| o.kill).collect();
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].down_for, 6 * 3600);
        assert_eq!(s.frontend_outages.len(), 1);
        // Whatever the number of backends (with 5, backend 2's turn falls inside its crash),
        // no restart of the crashed backend is planned inside its crash.
        for backends in 2..=8 {
            let s = Scenario::standard(72, 20, backends);
            let long = s.backend_outages[1]
                .iter()
                .find(|o| o.kill)
                .expect("the long outage");
            for o in s.backend_outages[1].iter().filter(|o| !o.kill) {
                assert!(
                    o.stop_at + o.down_for < long.stop_at
                        || o.stop_at > long.stop_at + long.down_for,
                    "{backends} backends: a restart inside the long outage: {o:?}"
                );
            }
        }
        // A short run has no long outage and no frontend restart.
        let short = Scenario::standard(24, 20, 6);
        assert!(short.backend_outages.iter().flatten().all(|o| !o.kill));
        assert!(short.frontend_outages.is_empty());
    }

    /// A program with outages is one process per uptime: each stopped at its outage, the next
    /// started when the outage ends, the last one left running.
    #[test]
    fn outages_become_processes() {
        let outages = [
            Outage {
                stop_at: 500,
                down_for: 60,
                kill: true,
            },
            Outage {
                stop_at: 100,
                down_for: 10,
                kill: false,
            },
        ];
        let p = with_outages(Path::new("/usr/bin/tor"), "-f torrc", &[], 50, &outages);
        assert_eq!(p.len(), 3);
        assert!(p[0].contains("start_time: 50s") && p[0].contains("shutdown_time: 100s"));
        assert!(p[0].contains("{exited: 0}"));
        assert!(p[1].contains("start_time: 110s") && p[1].contains("shutdown_time: 500s"));
        assert!(p[1].contains("{signaled: SIGKILL}"));
        assert!(
            p[2].contains("start_time: 560s") && p[2].contains("expected_final_state: running")
        );
    }
}
