//! More backends than one descriptor can serve, on a private Tor network: 24 C tor backends
//! with 3 intro points each (72) on 16 relays. One descriptor lists at most one intro point
//! per relay, so at most 16 backends; the daemon publishes a variant per HSDir that clients
//! fetch from, and new clients reach every backend.
//!
//! "New clients" are modelled from the client's side of the protocol:
//! * a C tor client fetches the frontend's descriptor from one HSDir of the fetch set, picked
//!   at random, and keeps it. A new client is a new such pick: before each page load the test
//!   picks an HSDir of the fetch set uniformly at random and has the network's C tor client
//!   fetch the descriptor from it (`HSFETCH … SERVER=`), which replaces the cached one (same
//!   revision counter). The fetch set is computed by Arti's own `hs_dirs_download` from an
//!   Arti client's consensus, not by the daemon. (NEWNYM would make C tor pick for itself,
//!   but tor accepts one NEWNYM per 10 s, and it skips HSDirs it asked in the last 15 minutes.)
//! * an Arti client keeps onion-service state, descriptor included, per isolation group: each
//!   page load in a new isolation group fetches the descriptor afresh from a random HSDir of
//!   its fetch set, as a new client would.
//!
//! Every page load is one attempt and one result: nothing is retried, so the bar on failures
//! ([`tolerated_failures`]) is a bar on attempts. Besides every backend answering, each
//! backend's count of answers must fit its share of new clients as the daemon computed it
//! (the status document's `shares`): a backend answering far more often than its share says
//! the variants give clients something other than the daemon claims (see
//! [`check_answer_counts`]).
//!
//! Needs C tor (`apt-get install tor`); without it the test fails, it never skips.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use arti_client::TorClient;
use onionbalance::OnionAddress;
use onionbalance_testnet::frontend::{
    arti_client, arti_page_load, assert_no_process_left, page_load, tolerated_failures,
    with_storage, Daemon, PageLoads,
};
use onionbalance_testnet::TestNet;
use rand::seq::IndexedRandom as _;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::Timeliness;

/// Backends: more than the 16 relays can carry in one descriptor.
const BACKENDS: usize = 24;
/// Relays besides the 3 authorities: 16 HSDirs in all, enough for 6 distinct fetch HSDirs.
const RELAYS: usize = 13;
/// Page loads within which every backend must have answered, per client kind (the issue's
/// bound). With equal shares of 1/24, the chance that a given backend is still missing after
/// 200 uniform picks is (23/24)^200 ≈ 2e-4, about 0.5 % that any of 24 is.
const MAX_LOADS: usize = 200;
/// How long the C tor client may take to fetch the descriptor from the HSDir it was told.
const HSFETCH_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_is_reached_through_the_variants() -> Result<()> {
    let run = Run {
        backends: BACKENDS,
        relays: RELAYS,
        loads: MAX_LOADS,
        until_every_backend: true,
    };
    run.go().await
}

/// The figures in docs/design.md for 60 backends (not in CI: 76 tors and 600 page loads, ~20 minutes):
/// 300 page loads per client kind, every one counted, with the daemon's CPU time and peak
/// RSS. `cargo test --release --test many_backends -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "20 minutes, 76 tors: run by hand for docs/design.md's figures"]
async fn sixty_backends_landing_counts() -> Result<()> {
    let run = Run {
        backends: 60,
        relays: RELAYS,
        loads: 300,
        until_every_backend: false,
    };
    run.go().await
}

/// One run: a network, the daemon, and page loads by both client kinds.
struct Run {
    /// C tor backends.
    backends: usize,
    /// Relays besides the 3 authorities.
    relays: usize,
    /// Page loads per client kind, at most.
    loads: usize,
    /// Stop a client kind's loads once every backend answered.
    until_every_backend: bool,
}

impl Run {
    async fn go(&self) -> Result<()> {
        let started = Instant::now();
        let net = TestNet::builder()
            .relays(self.relays)
            .backends(self.backends)
            .start()
            .await?;
        let tor_pids = net.tor_pids();
        let front = net.frontend_address().to_owned();
        let names: Vec<String> = (0..self.backends)
            .map(|i| net.backend_name(i).to_owned())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let all: Vec<usize> = (0..self.backends).collect();
        let mut daemon = Daemon::start(&net, &net.run_dir().join("frontend"), &all)?;
        let published = daemon.wait_all_backends_published().await?;
        eprintln!(
            "network and {} backends ready, daemon published every backend {:.1} s after its \
             start ({:.0} s since the test began)",
            self.backends,
            published.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        let doc = daemon.status().await?;
        report_variants(&doc, self.backends, self.relays)?;
        let cpu_before = daemon_cpu_seconds(daemon.pid());
        let loads_started = Instant::now();

        let arti_dir = net.run_dir().join("arti-client");
        let arti = arti_client(&with_storage(net.arti_toml(), &arti_dir)?).await?;
        let more = |loads: &PageLoads| {
            loads.attempts() < self.loads
                && !(self.until_every_backend && loads.every_backend_answered(&names))
        };

        // C tor: a new client per load (see the module documentation).
        let mut ctl = net.client_control().await?;
        ctl.command_ok("SETEVENTS HS_DESC").await?;
        let bare = front.trim_end_matches(".onion").to_owned();
        let mut ctor = PageLoads::new("C tor client, a new HSDir pick per load");
        let mut fetches_failed = 0;
        while more(&ctor) {
            let fetch_set = fetch_set(&arti, &front)?;
            let hsdir = fetch_set
                .choose(&mut rand::rng())
                .context("empty fetch set")?;
            let fp = hex::encode_upper(hsdir.as_bytes());
            ctl.command_ok(&format!("HSFETCH {bare} SERVER=${fp}"))
                .await?;
            if !wait_fetched(&mut ctl, &bare, &fp).await? {
                fetches_failed += 1;
            }
            ctor.record(page_load(&net, &front).await);
        }
        eprintln!("C tor: {fetches_failed} HSFETCH without a descriptor");
        report_counts(&ctor, &names);

        // Arti: a new isolation group per load, so a descriptor fetched afresh each time. One
        // attempt per load, recorded: a failed load is not reloaded.
        let mut by_arti = PageLoads::new("Arti client, a new isolation group per load");
        while more(&by_arti) {
            by_arti.record(arti_page_load(&arti, &front).await);
        }
        report_counts(&by_arti, &names);
        if let (Some(before), Some(after)) = (cpu_before, daemon_cpu_seconds(daemon.pid())) {
            eprintln!(
                "daemon CPU time: {:.1} s during the {} page loads ({:.0} s), {after:.1} s since \
                 its start {:.0} s ago; peak RSS {} kB",
                after - before,
                ctor.attempts() + by_arti.attempts(),
                loads_started.elapsed().as_secs_f64(),
                daemon.started.elapsed().as_secs_f64(),
                daemon.peak_rss_kb().unwrap_or(0)
            );
        }

        let why = "one rendezvous stall per started ten loads";
        ctor.check_every_backend_answered(&names)?;
        ctor.check_failures(tolerated_failures(ctor.attempts()), why)?;
        if fetches_failed > tolerated_failures(ctor.attempts()) {
            bail!(
                "{fetches_failed} of {} HSFETCH got no descriptor",
                ctor.attempts()
            );
        }
        by_arti.check_every_backend_answered(&names)?;
        by_arti.check_failures(tolerated_failures(by_arti.attempts()), why)?;
        // The shares of every period the loads may have met: listed at the start and now.
        let shares = max_shares(&[&doc, &daemon.status().await?]);
        check_answer_counts(&ctor, &names, &shares)?;
        check_answer_counts(&by_arti, &names, &shares)?;
        daemon.stop()?;
        drop(net);
        assert_no_process_left(&tor_pids);
        Ok(())
    }
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn daemon_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks: 100 per second on Linux.
    Some((utime + stime) / 100.0)
}

/// The frontend's fetch set for the current period, by Arti's own ring computation over the
/// Arti client's consensus.
fn fetch_set(
    arti: &TorClient<tor_rtcompat::PreferredRuntime>,
    onion: &str,
) -> Result<Vec<RsaIdentity>> {
    let netdir = arti
        .dirmgr()
        .map_err(|e| anyhow::anyhow!("Arti's directory manager: {e}"))?
        .netdir(Timeliness::Timely)
        .context("the Arti client has no usable consensus")?;
    let period = netdir.hs_time_period();
    let address: OnionAddress = onion.parse().context("frontend address")?;
    let (blinded, _) = address
        .hs_id_key()?
        .compute_blinded_key(period)
        .context("blind the frontend key")?;
    let dirs = netdir
        .hs_dirs_download(blinded.id(), period, &mut rand::rng())
        .map_err(|e| anyhow::anyhow!("fetch set: {e}"))?;
    Ok(dirs.iter().map(|r| *r.rsa_id()).collect())
}

/// Waits for the C tor client's `HS_DESC RECEIVED` (true) or `FAILED` (false) for `bare`
/// from the HSDir `fp`.
async fn wait_fetched(
    ctl: &mut onionbalance_testnet::control::ControlConnection,
    bare: &str,
    fp: &str,
) -> Result<bool> {
    let deadline = Instant::now() + HSFETCH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = tokio::time::timeout(left, ctl.next_event()).await else {
            return Ok(false);
        };
        for line in event?.lines {
            let words: Vec<&str> = line.text.split_whitespace().collect();
            if words.len() >= 5 && words[0] == "HS_DESC" && words[2] == bare {
                let from_it = words[4].trim_start_matches('$').starts_with(fp);
                match words[1] {
                    "RECEIVED" if from_it => return Ok(true),
                    "FAILED" if from_it => return Ok(false),
                    _ => {}
                }
            }
        }
    }
}

/// Prints each variant of each period and each backend's computed share; fails unless there
/// are several variants (`backends` on `relays` + 3 routers need them).
fn report_variants(doc: &serde_json::Value, backends: usize, relays: usize) -> Result<()> {
    let periods = doc["services"][0]["periods"]
        .as_array()
        .context("no periods in the status")?;
    for p in periods {
        let variants = p["variants"].as_array().map_or(&[][..], |v| &v[..]);
        eprintln!(
            "period {}: {} variant(s), {} intro points in all, left out: {}",
            p["timePeriod"],
            variants.len(),
            p["introPoints"],
            p["leftOut"]
        );
        for v in variants {
            let backends: Vec<&str> = v["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b[0].as_str())
                .collect();
            eprintln!(
                "  {} HSDir(s), {} fetched from: {} intro points [{}]",
                v["hsdirs"].as_array().map_or(0, Vec::len),
                v["fetchedFrom"],
                v["introPoints"],
                backends.join(" ")
            );
        }
        if variants.len() < 2 {
            bail!(
                "period {}: {backends} backends on {} relays need several variants, the daemon \
                 published {}",
                p["timePeriod"],
                relays + 3,
                variants.len()
            );
        }
        let shares: Vec<String> = p["shares"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{} {:.1}%",
                    s["name"].as_str().unwrap_or("?"),
                    s["share"].as_f64().unwrap_or(0.0) * 100.0
                )
            })
            .collect();
        eprintln!("  computed shares: {}", shares.join(", "));
    }
    Ok(())
}

/// Each backend's largest share of new clients in any period of the status documents `docs`.
fn max_shares(docs: &[&serde_json::Value]) -> BTreeMap<String, f64> {
    let mut shares = BTreeMap::new();
    for doc in docs {
        for p in doc["services"][0]["periods"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for s in p["shares"].as_array().into_iter().flatten() {
                if let (Some(name), Some(share)) = (s["name"].as_str(), s["share"].as_f64()) {
                    let max = shares.entry(name.to_owned()).or_insert(0.0_f64);
                    *max = max.max(share);
                }
            }
        }
    }
    shares
}

/// The chance of a false alarm that [`check_answer_counts`] accepts, per backend and client
/// kind: 48 such checks in a run make a false failure about one run in 2,000.
const ANSWER_COUNT_ALPHA: f64 = 1e-5;

/// Fails if a backend answered more often than its share allows: with `n` answered loads,
/// each reaching backend `b` with probability `share_b` (a new client picks a fetch HSDir,
/// so a variant, uniformly, then an intro point of it uniformly), the chance of `k` or more
/// answers from `b` is the binomial tail; below [`ANSWER_COUNT_ALPHA`] the daemon's shares
/// do not describe what clients get. Uses each backend's largest share over the periods the
/// loads may span (an upper tail: the larger share can only make the check more lenient).
/// Only the upper side: the lower side is the every-backend-answered check.
fn check_answer_counts(
    loads: &PageLoads,
    names: &[&str],
    shares: &BTreeMap<String, f64>,
) -> Result<()> {
    let n = loads.bodies.len();
    for name in names {
        let share = *shares
            .get(*name)
            .with_context(|| format!("{name} has no computed share in the status: {shares:?}"))?;
        let answer = format!("hello from backend {name}");
        let k = loads.bodies.iter().filter(|b| **b == answer).count();
        let tail = binomial_upper_tail(n, share, k);
        if tail < ANSWER_COUNT_ALPHA {
            bail!(
                "{}: {name} answered {k} of {n} answered loads, with a computed share of                  {:.1} % (expected {:.1}); that many or more has probability {tail:.1e}, below                  {ANSWER_COUNT_ALPHA:e}: clients do not get the shares the daemon computed",
                loads.what,
                share * 100.0,
                share * n as f64
            );
        }
    }
    Ok(())
}

/// P(X ≥ k) for X binomial with `n` trials of probability `p`.
fn binomial_upper_tail(n: usize, p: f64, k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    // ln C(n, j), built up from ln C(n, 0) = 0.
    let mut ln_choose = 0.0;
    let mut tail = 0.0;
    for j in 0..=n {
        if j > 0 {
            ln_choose += ((n - j + 1) as f64).ln() - (j as f64).ln();
        }
        if j >= k {
            tail += (ln_choose + j as f64 * p.ln() + (n - j) as f64 * (1.0 - p).ln()).exp();
        }
    }
    tail
}

/// Prints how often each backend answered.
fn report_counts(loads: &PageLoads, names: &[&str]) {
    let mut counts: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    for b in &loads.bodies {
        if let Some(name) = b.strip_prefix("hello from backend ") {
            if let Some(c) = counts.get_mut(name) {
                *c += 1;
            }
        }
    }
    let line: Vec<String> = counts.iter().map(|(n, c)| format!("{n}:{c}")).collect();
    eprintln!("{}: {}", loads.summary(), line.join(" "));
}

/// What health checks cost, for the README (not in CI: 76 tors, about 30 minutes): 60
/// backends, the daemon without checks for [`COST_BASELINE`], then with HTTP checks at the
/// defaults for [`COST_WINDOW`] after a warm-up. Counted from outside the daemon: the
/// rendezvous circuits each backend's tor built for the probes and the bytes on them (its
/// control port's `CIRC`/`CIRC_BW` events, purpose `HS_SERVICE_REND`: no client connects
/// during the run, so every such circuit is a probe's); from the daemon's own status, the
/// probes it made; and its CPU time and peak RSS with and without checks.
/// `cargo test --release --test many_backends -- --ignored --nocapture sixty_backends_probe_cost`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 minutes, 76 tors: run by hand for the README's figures"]
async fn sixty_backends_probe_cost() -> Result<()> {
    const N: usize = 60;
    let net = TestNet::builder()
        .relays(RELAYS)
        .backends(N)
        .start()
        .await?;
    let tor_pids = net.tor_pids();
    let all: Vec<usize> = (0..N).collect();

    let off_dir = net.run_dir().join("frontend-unchecked");
    let mut off = Daemon::start(&net, &off_dir, &all)?;
    off.wait_all_backends_published().await?;
    let cpu0 = daemon_cpu_seconds(off.pid()).context("daemon CPU time")?;
    tokio::time::sleep(COST_BASELINE).await;
    let cpu1 = daemon_cpu_seconds(off.pid()).context("daemon CPU time")?;
    let off_rss = off.peak_rss_kb().unwrap_or(0);
    off.stop()?;
    let per_hour = |x: f64, over: Duration| x * 3600.0 / over.as_secs_f64();
    let off_cpu_hour = per_hour(cpu1 - cpu0, COST_BASELINE);

    let on_dir = net.run_dir().join("frontend-checked");
    Daemon::write_config(&net, &on_dir, &all)?;
    let config = on_dir.join("config.yaml");
    let yaml = std::fs::read_to_string(&config)?.replacen(
        "- key: frontend.key\n",
        "- key: frontend.key\n  health-check:\n    port: 80\n    http-path: /\n",
        1,
    );
    std::fs::write(&config, yaml)?;
    let mut on = Daemon::launch(&net, &on_dir, &[], &[])?;
    on.wait_all_backends_published().await?;
    tokio::time::sleep(COST_WARM_UP).await;
    let before = on.status().await?;
    let down: Vec<&str> = before["services"][0]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["health"] != "up")
        .filter_map(|i| i["name"].as_str())
        .collect();
    if !down.is_empty() {
        bail!("after the warm-up, backends not up: {down:?}\n{before:#}");
    }
    let mut watchers = Vec::new();
    for i in 0..N {
        let ctl = net.backend_control(i).await?;
        watchers.push(tokio::spawn(count_rend_circuits(ctl, COST_WINDOW)));
    }
    let cpu0 = daemon_cpu_seconds(on.pid()).context("daemon CPU time")?;
    let mut counts = Vec::new();
    for w in watchers {
        counts.push(w.await.context("watcher task")??);
    }
    let cpu1 = daemon_cpu_seconds(on.pid()).context("daemon CPU time")?;
    let after = on.status().await?;
    let probes = |doc: &serde_json::Value| -> u64 {
        doc["services"][0]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["probes"].as_object().into_iter().flatten())
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    };
    let probes = probes(&after) - probes(&before);
    let new_circuits: usize = counts.iter().map(|c| c.built).sum();
    let bytes: u64 = counts.iter().map(|c| c.bytes).sum();
    let backends_hours = N as f64 * COST_WINDOW.as_secs_f64() / 3600.0;
    eprintln!(
        "probe cost over {:.0} min with {N} backends (HTTP GET every 30 s):\n  \
         {:.0} probes per backend per hour (daemon's count)\n  \
         {:.2} new rendezvous circuits per backend per hour (backends' tors; {} in all, open \
         at the start: {})\n  \
         {:.0} kB per backend per hour on those circuits ({:.0} cells of 509 bytes)\n  \
         daemon CPU: {:.1} s per hour with checks, {:.1} s per hour without\n  \
         daemon peak RSS: {} kB with checks, {} kB without",
        COST_WINDOW.as_secs_f64() / 60.0,
        probes as f64 / backends_hours,
        new_circuits as f64 / backends_hours,
        new_circuits,
        counts.iter().map(|c| c.open_at_start).sum::<usize>(),
        bytes as f64 / 1000.0 / backends_hours,
        bytes as f64 / 509.0 / backends_hours,
        per_hour(cpu1 - cpu0, COST_WINDOW),
        off_cpu_hour,
        on.peak_rss_kb().unwrap_or(0),
        off_rss
    );
    on.stop()?;
    drop(net);
    assert_no_process_left(&tor_pids);
    Ok(())
}

/// How long the daemon runs without checks, for the baseline.
const COST_BASELINE: Duration = Duration::from_secs(5 * 60);
/// Time for every backend's first probes (circuits built) before counting.
const COST_WARM_UP: Duration = Duration::from_secs(2 * 60);
/// How long circuits and bytes are counted with checks on: longer than Arti's 10-minute
/// retention of an unused rendezvous circuit, so a circuit rebuilt by design would show.
const COST_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What one backend's tor saw of rendezvous circuits during a window.
struct RendCircuits {
    /// Service-side rendezvous circuits open when the window began.
    open_at_start: usize,
    /// Service-side rendezvous circuits built during the window.
    built: usize,
    /// Bytes read and written on service-side rendezvous circuits during the window.
    bytes: u64,
}

/// Counts a backend's service-side rendezvous circuits (`PURPOSE=HS_SERVICE_REND`) and
/// their traffic for `window`, from its control port.
async fn count_rend_circuits(
    mut ctl: onionbalance_testnet::control::ControlConnection,
    window: Duration,
) -> Result<RendCircuits> {
    ctl.command_ok("SETEVENTS CIRC CIRC_BW").await?;
    let status = ctl.getinfo("circuit-status").await?;
    let mut rend: std::collections::HashSet<String> = status
        .lines()
        .filter(|l| l.contains("PURPOSE=HS_SERVICE_REND"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let open_at_start = rend.len();
    let (mut built, mut bytes) = (0, 0);
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = tokio::time::timeout(left, ctl.next_event()).await else {
            break;
        };
        for line in event?.lines {
            let words: Vec<&str> = line.text.split_whitespace().collect();
            match words.as_slice() {
                ["CIRC", id, "BUILT", rest @ ..] if rest.contains(&"PURPOSE=HS_SERVICE_REND") => {
                    built += 1;
                    rend.insert((*id).to_owned());
                }
                ["CIRC_BW", rest @ ..] => {
                    let field = |k: &str| {
                        rest.iter()
                            .find_map(|w| w.strip_prefix(k))
                            .map(str::to_owned)
                    };
                    if field("ID=").is_some_and(|id| rend.contains(&id)) {
                        for k in ["READ=", "WRITTEN="] {
                            bytes += field(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(RendCircuits {
        open_at_start,
        built,
        bytes,
    })
}
