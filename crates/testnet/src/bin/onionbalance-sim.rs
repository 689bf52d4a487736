//! `onionbalance-sim`: the simulation's own programs (`scripts/simulate`, `docs/simulation.md`).
//!
//! * `generate`: writes a Shadow simulation ([`onionbalance_testnet::sim`]).
//! * `web`: a backend's web server, inside the simulation.
//! * `load`: a client loading the frontend at a steady rate, each load as a new client,
//!   inside the simulation; one line per load in its log.
//! * `report`: reads a finished simulation's logs and prints what it measured.

#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use onionbalance_testnet::sim::{Programs, Scenario};
use onionbalance_testnet::{control::ControlConnection, http, sim, socks};

/// How long one page load may take before it counts as failed: a C tor client gives up on
/// an onion service after about two minutes of retries; a user sooner.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The value following `--name` in `args`, if any.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Like [`flag`], required.
fn required(args: &[String], name: &str) -> Result<String> {
    flag(args, name).with_context(|| format!("{name} is required"))
}

/// Like [`flag`], parsed, with a default.
fn number<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match flag(args, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .with_context(|| format!("{name} {v}: not a number")),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") => generate(&args[1..]),
        Some("web") => web(&args[1..]),
        Some("scrape") => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(scrape(&args[1..]))
        }
        Some("report") => {
            let data = PathBuf::from(required(&args[1..], "--data")?);
            print!("{}", onionbalance_testnet::sim_report::report(&data)?);
            Ok(())
        }
        Some("load") => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(load(&args[1..]))
        }
        _ => bail!(
            "usage: onionbalance-sim generate --out DIR [--hours H] [--relays N] [--backends N] \
             --onionbalance PATH [--tor PATH] [--sim PATH] [--frontend-arg ARG]...\n\
             \x20      onionbalance-sim web --port PORT --body TEXT\n\
             \x20      onionbalance-sim report --data SHADOW_DATA_DIR\n\
             \x20      onionbalance-sim scrape --port PORT --every SECS --log FILE\n\
             \x20      onionbalance-sim load --onion ADDRESS --every SECS --log FILE \
             (--socks PORT --control PORT --cookie FILE | --arti-config FILE)"
        ),
    }
}

/// `generate`: the simulation's files.
fn generate(args: &[String]) -> Result<()> {
    let out = PathBuf::from(required(args, "--out")?);
    let mut scenario = Scenario::standard(
        number(args, "--hours", 72)?,
        number(args, "--relays", 20)?,
        number(args, "--backends", 6)?,
    );
    scenario.frontend_args = args
        .windows(2)
        .filter(|w| w[0] == "--frontend-arg")
        .map(|w| w[1].clone())
        .collect();
    let absolute = |p: String| std::path::absolute(PathBuf::from(p));
    let programs = Programs {
        tor: absolute(flag(args, "--tor").unwrap_or_else(|| "/usr/bin/tor".into()))?,
        onionbalance: absolute(required(args, "--onionbalance")?)?,
        sim: match flag(args, "--sim") {
            Some(p) => absolute(p)?,
            None => std::env::current_exe()?,
        },
    };
    let g = scenario.generate(&out, &programs)?;
    println!(
        "wrote {} ({} hours, {} relays, {} backends); frontend {}",
        g.shadow_yaml.display(),
        scenario.hours,
        scenario.relays,
        scenario.backends,
        g.frontend
    );
    Ok(())
}

/// `web`: answers every request with `200` and the body, one thread per connection.
fn web(args: &[String]) -> Result<()> {
    let port: u16 = number(args, "--port", sim::WEB_PORT)?;
    let body = required(args, "--body")?;
    let listener =
        TcpListener::bind(("127.0.0.1", port)).with_context(|| format!("bind port {port}"))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        });
    }
    Ok(())
}

/// Opens a log for appending, creating it: the simulation's programs each keep one.
fn append_to(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Metrics kept by `scrape`: the process's own, and what the daemon did.
const SCRAPED: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "onionbalance_fetches_total",
    "onionbalance_uploads_total",
    "onionbalance_builds_total",
];

/// `scrape`: the frontend's metrics endpoint every `--every` seconds, one line per kept
/// sample in `--log`: `<unix seconds> <metric{labels}> <value>` (nothing while it is down).
async fn scrape(args: &[String]) -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let port: u16 = number(args, "--port", sim::METRICS_PORT)?;
    let every = Duration::from_secs(number(args, "--every", 300)?);
    let log_path = PathBuf::from(required(args, "--log")?);
    let mut log = append_to(&log_path)?;
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let answer = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
            let mut text = String::new();
            s.read_to_string(&mut text).await?;
            Ok::<_, std::io::Error>(text)
        };
        let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(10), answer).await else {
            continue;
        };
        for line in text.lines() {
            if SCRAPED.iter().any(|m| line.starts_with(m)) {
                writeln!(log, "{at} {line}")?;
            }
        }
        log.flush()?;
    }
}

/// How a `load` client reaches the network.
enum Via {
    /// A C tor client: its SOCKS port, and its control port with the cookie file.
    Tor {
        /// SOCKS port on 127.0.0.1.
        socks: u16,
        /// Control port on 127.0.0.1.
        control: u16,
        /// The control cookie file.
        cookie: PathBuf,
    },
    /// An embedded Arti client with this config.
    Arti(std::sync::Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>),
}

/// `load`: one load of `http://ONION/` every `--every` seconds, each as a new client, one line
/// per load in `--log`: `<unix seconds> ok <ms> <body>` or `<unix seconds> fail <ms> <why>`.
async fn load(args: &[String]) -> Result<()> {
    let onion = required(args, "--onion")?;
    let every = Duration::from_secs(number(args, "--every", 60)?);
    let log_path = PathBuf::from(required(args, "--log")?);
    let via = match flag(args, "--arti-config") {
        Some(path) => {
            let toml = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
            Via::Arti(onionbalance_testnet::frontend::arti_client(&toml).await?)
        }
        None => Via::Tor {
            socks: number(args, "--socks", sim::SOCKS_PORT)?,
            control: number(args, "--control", sim::CONTROL_PORT)?,
            cookie: PathBuf::from(required(args, "--cookie")?),
        },
    };
    let mut log = append_to(&log_path)?;
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let started = Instant::now();
        let result = tokio::time::timeout(LOAD_TIMEOUT, load_once(&via, &onion)).await;
        let ms = started.elapsed().as_millis();
        let line = match result {
            Ok(Ok(body)) => format!("{at} ok {ms} {}", body.trim()),
            Ok(Err(e)) => format!("{at} fail {ms} {}", format!("{e:#}").replace('\n', " ")),
            Err(_) => format!(
                "{at} fail {ms} no answer within {} s",
                LOAD_TIMEOUT.as_secs()
            ),
        };
        writeln!(log, "{line}")?;
        log.flush()?;
    }
}

/// One load as a new client: for C tor, NEWNYM first (new circuits, descriptor cache
/// dropped: what a new Tor Browser session has); for Arti, a new isolation group (Arti keeps
/// onion-service state per isolation).
async fn load_once(via: &Via, onion: &str) -> Result<String> {
    let isolation = format!("load-{:016x}", rand::random::<u64>());
    let response = match via {
        Via::Tor {
            socks,
            control,
            cookie,
        } => {
            let mut ctl = ControlConnection::connect(*control, cookie).await?;
            let reply = ctl.command("SIGNAL NEWNYM").await?;
            if !reply.is_ok() {
                bail!("NEWNYM refused: {}", reply.summary());
            }
            let mut stream = socks::connect(*socks, onion, 80, &isolation).await?;
            http::get(&mut stream, onion, "/").await?
        }
        Via::Arti(client) => {
            let mut prefs = arti_client::StreamPrefs::new();
            prefs.new_isolation_group();
            let mut stream = client.connect_with_prefs((onion, 80), &prefs).await?;
            http::get(&mut stream, onion, "/").await?
        }
    };
    if response.status != 200 {
        bail!("HTTP status {}", response.status);
    }
    Ok(response.body)
}
