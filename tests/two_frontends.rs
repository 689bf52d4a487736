//! Two frontends with one key, on a live private network (`docs/two-frontends.md`).
//!
//! Three backends; two daemons with the same frontend key and config, each with its own data
//! directory and Arti state, as on two machines. The HSDirs keep whichever descriptor has
//! the higher revision counter; the daemons list the same intro points, so whichever is
//! kept serves clients alike, and neither overwrites the other for nothing. In order:
//!
//! 1. **Both running, 10 minutes**: new C tor clients (NEWNYM before each load) and Arti
//!    clients (a new isolation group per load) are answered; every copy of the frontend's
//!    descriptor the HSDirs serve lists all 3 backends (fetched by an observer client from
//!    every HSDir, every 30 s); uploads and refusals per HSDir are counted from the HSDirs'
//!    own logs and bounded; the status of at least one daemon shows the other.
//! 2. **A backend restarts** (new intro points) while both run: within 120 s every HSDir's
//!    copy lists its new intro points and none of its old ones, and for 2 minutes after no
//!    copy goes back to the old ones.
//! 3. **One daemon is killed** (SIGKILL): for 15 minutes, across a time-period rollover,
//!    clients are answered and the HSDirs keep being served the survivor's descriptors,
//!    for each period.
//! 4. **The killed daemon restarts** on its state: it rejoins with no refusal loop (counted
//!    at the HSDirs) and no refusal alarm, and every HSDir holds its descriptor or an
//!    equivalent one.
//!
//! Takes about 35 minutes. Needs C tor (`apt-get install tor`); without it this test fails,
//! it never skips.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use arti_client::TorClient;
use onionbalance_testnet::fixtures::{TIME_PERIOD_LENGTH_SECS, TIME_PERIOD_OFFSET_SECS};
use onionbalance_testnet::frontend::{
    arti_client, arti_page_load, assert_no_process_left, become_new_client, page_load,
    period_position, tolerated_failures, wait_for_room_in_period, with_storage, Daemon, PageLoads,
    PERIOD_SWITCH_LAG,
};
use onionbalance_testnet::testnet::{read_descriptor, HsDirAnswer, HsDirCopy, Observer};
use onionbalance_testnet::TestNet;

/// Phase 1: both daemons running (the 10 minutes).
const BOTH_RUNNING: Duration = Duration::from_secs(10 * 60);
/// Phase 3: the survivor alone (the 15 minutes: at least one 8-minute period ends).
const SURVIVOR_ALONE: Duration = Duration::from_secs(15 * 60);
/// Phase 2: a restarted backend's new intro points on every HSDir within this (the issue's
/// 120 s: a fetch interval and the rebuild, with room for the backend's own upload).
const NEW_INTRO_POINTS_WITHIN: Duration = Duration::from_secs(120);
/// Phase 2: how long to watch for a copy going back to the old intro points afterwards.
const NO_REVERT_WATCH: Duration = Duration::from_secs(120);
/// Phase 4: how long to watch the restarted daemon rejoin.
const REJOIN_WATCH: Duration = Duration::from_secs(3 * 60);
/// Between two observer rounds (each asks every HSDir for 4 descriptors).
const OBSERVE_EVERY: Duration = Duration::from_secs(30);
/// How long the observer waits for every HSDir to answer one round.
const HSFETCH_WITHIN: Duration = Duration::from_secs(20);
/// Refusals an HSDir may log per time period published while both daemons run: the two
/// daemons' first uploads of a period race (each builds when the period appears), and the
/// one that arrives second with a lower counter is refused, once. A fight (each overwriting
/// the other's) would be refused again at every rebuild, once a minute.
const REFUSALS_PER_PERIOD: usize = 1;

/// What every HSDir served for the frontend, read against what the backends publish.
#[derive(Debug)]
struct Round {
    /// When the round ended.
    at: SystemTime,
    /// The observer's time period.
    period: u64,
    /// Per HSDir that holds a copy of the frontend's descriptor for `period`: its name, the
    /// copy's revision, and per backend how many of its current intro points it lists.
    copies: Vec<(String, u64, Vec<usize>)>,
    /// Intro point keys listed by any copy, per HSDir.
    listed: BTreeMap<String, BTreeSet<String>>,
    /// Per backend, its current intro point keys (from its own copies on the HSDirs).
    owners: Vec<BTreeSet<String>>,
}

impl Round {
    /// Copies that miss a backend, as "HSDir: counts".
    fn missing_a_backend(&self) -> Vec<String> {
        self.copies
            .iter()
            .filter(|(_, _, per)| per.contains(&0))
            .map(|(name, rev, per)| format!("{name} (revision {rev}): {per:?}"))
            .collect()
    }
}

/// One observer round: the frontend's and the backends' descriptors from every HSDir.
/// `None` when the round straddles a time-period change (copies of several periods, or
/// within [`PERIOD_SWITCH_LAG`] and a half of a boundary, when the daemon and the backends
/// may still be publishing for the new period).
async fn observe(observer: &Observer, front: &str, backends: &[String]) -> Result<Option<Round>> {
    let (_, since, until) = period_position();
    if since < PERIOD_SWITCH_LAG.as_secs() * 3 / 2 || until < 25 {
        return Ok(None);
    }
    let mut addresses: Vec<&str> = vec![front];
    addresses.extend(backends.iter().map(String::as_str));
    let all = observer.hsdir_copies(&addresses, HSFETCH_WITHIN).await?;
    let read = |address: &str, copies: &[HsDirCopy]| {
        copies
            .iter()
            .filter_map(|c| match &c.answer {
                HsDirAnswer::Descriptor { text, at } => read_descriptor(text, address, *at)
                    .ok()
                    .map(|d| (c.name.clone(), d)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let frontend = read(front, &all[0]);
    let periods: BTreeSet<u64> = frontend.iter().map(|(_, d)| d.period).collect();
    let [period] = periods.iter().copied().collect::<Vec<_>>()[..] else {
        return Ok(None);
    };
    let owners: Vec<BTreeSet<String>> = backends
        .iter()
        .zip(&all[1..])
        .map(|(address, copies)| {
            read(address, copies)
                .into_iter()
                .filter(|(_, d)| d.period == period)
                .flat_map(|(_, d)| d.intro_points.into_iter().map(|i| i.auth_key))
                .collect()
        })
        .collect();
    let mut copies = Vec::new();
    let mut listed = BTreeMap::new();
    for (name, d) in frontend {
        let keys: BTreeSet<String> = d.intro_points.into_iter().map(|i| i.auth_key).collect();
        let per = owners
            .iter()
            .map(|o| o.intersection(&keys).count())
            .collect();
        copies.push((name.clone(), d.revision, per));
        listed.insert(name, keys);
    }
    Ok(Some(Round {
        at: SystemTime::now(),
        period,
        copies,
        listed,
        owners,
    }))
}

/// Page loads by both kinds of new clients, and observer rounds, for `how_long`; every
/// round must find every copy listing all backends. Returns the rounds.
async fn serve_and_watch(
    net: &TestNet,
    arti: &TorClient<tor_rtcompat::PreferredRuntime>,
    observer: &Observer,
    backends: &[String],
    how_long: Duration,
    what: &str,
) -> Result<Vec<Round>> {
    let front = net.frontend_address().to_owned();
    let mut ctor = PageLoads::new(format!("{what}: C tor, a new client per load (NEWNYM)"));
    let mut by_arti = PageLoads::new(format!("{what}: Arti, a new isolation group per load"));
    let mut rounds: Vec<Round> = Vec::new();
    let mut last_newnym = None;
    let mut last_round: Option<Instant> = None;
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        if last_round.is_none_or(|t| t.elapsed() >= OBSERVE_EVERY) {
            last_round = Some(Instant::now());
            if let Some(round) = observe(observer, &front, backends).await? {
                let missing = round.missing_a_backend();
                ensure!(
                    missing.is_empty(),
                    "{what}: copies of the frontend's descriptor (period {}) that miss a \
                     backend: {missing:?}",
                    round.period
                );
                rounds.push(round);
            }
        }
        // Each load is a new user: NEWNYM empties the C tor client's descriptor cache (a
        // user who never fetched the frontend's descriptor takes whatever the HSDirs serve
        // now, which is what this test is about), and each Arti load is a new isolation
        // group, which fetches the descriptor afresh. One attempt each, recorded; a failed
        // load is never retried.
        become_new_client(net, &front, &mut last_newnym).await?;
        ctor.record(page_load(net, &front).await);
        by_arti.record(arti_page_load(arti, &front).await);
    }
    eprintln!("{}\n{}", ctor.summary(), by_arti.summary());
    let why = "a rendezvous stall now and then on this loopback network (design §5)";
    ctor.check_failures(tolerated_failures(ctor.attempts()), why)?;
    by_arti.check_failures(tolerated_failures(by_arti.attempts()), why)?;
    let names: Vec<&str> = (0..backends.len()).map(|i| net.backend_name(i)).collect();
    ctor.check_every_backend_answered(&names)?;
    ensure!(
        !rounds.is_empty(),
        "{what}: no observer round away from a period boundary"
    );
    eprintln!(
        "{what}: {} observer rounds, every copy lists all {} backends",
        rounds.len(),
        backends.len()
    );
    Ok(rounds)
}

/// Per HSDir, the frontends' uploads it stored and the uploads it refused (equal or higher
/// revision held) within `since..until`, from its own log.
fn uploads_and_refusals(
    net: &TestNet,
    since: SystemTime,
    until: SystemTime,
) -> Result<Vec<(String, usize, usize)>> {
    Ok(net
        .hsdir_uploads_stored()?
        .into_iter()
        .map(|h| {
            let refused = h
                .refused_revision
                .iter()
                .filter(|r| r.at >= since && r.at <= until)
                .count();
            (
                h.name.clone(),
                h.not_from_backends(since, until).len(),
                refused,
            )
        })
        .collect())
}

/// Time periods the daemons publish for within `since..until`: at every moment the current
/// one and the next.
fn periods_published(since: SystemTime, until: SystemTime) -> usize {
    let period = |t: SystemTime| {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        secs.saturating_sub(TIME_PERIOD_OFFSET_SECS) / TIME_PERIOD_LENGTH_SECS
    };
    usize::try_from(period(until) - period(since) + 2).unwrap_or(2)
}

/// The frontend's status document's first service.
async fn service_status(d: &Daemon) -> Result<serde_json::Value> {
    Ok(d.status().await?["services"][0].clone())
}

/// Starts a daemon in `dir` with its own data directory there.
fn start_frontend(net: &TestNet, dir: &Path, first_time: bool) -> Result<Daemon> {
    let data = dir.join("data").display().to_string();
    let args = ["--data-dir", data.as_str()];
    if first_time {
        Daemon::start_with(net, dir, &[0, 1, 2], &args, &[])
    } else {
        Daemon::launch(net, dir, &args, &[])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_with_one_key_share_the_address() -> Result<()> {
    let mut net = TestNet::builder()
        .backends(3)
        .observer(true)
        .start()
        .await?;
    let tor_pids = net.tor_pids();
    let front = net.frontend_address().to_owned();
    let backends = net.backend_addresses();
    let observer = net.observer()?;
    let dirs: Vec<PathBuf> = ["frontend-a", "frontend-b"]
        .iter()
        .map(|d| net.run_dir().join(d))
        .collect();
    let mut a = start_frontend(&net, &dirs[0], true)?;
    let b = start_frontend(&net, &dirs[1], true)?;
    a.wait_all_backends_published().await?;
    b.wait_all_backends_published().await?;
    let arti_dir = net.run_dir().join("arti-client");
    let arti = arti_client(&with_storage(net.arti_toml(), &arti_dir)?).await?;

    // 1. Both running.
    let since = SystemTime::now();
    serve_and_watch(
        &net,
        &arti,
        &observer,
        &backends,
        BOTH_RUNNING,
        "both running",
    )
    .await?;
    let until = SystemTime::now();
    let counts = uploads_and_refusals(&net, since, until)?;
    let periods = periods_published(since, until);
    eprintln!(
        "both running, {} s, {periods} time periods published: per HSDir (name, frontend \
         uploads stored, uploads refused): {counts:?}",
        BOTH_RUNNING.as_secs()
    );
    for (name, stored, refused) in &counts {
        // One frontend uploads each period's descriptor once to each HSDir when nothing
        // changes (its refresh is an hour away); two at most twice, plus one upload each
        // for an HSDir ring change within the window.
        ensure!(
            *stored <= 2 * periods + 2,
            "HSDir {name} stored {stored} frontend uploads over {periods} periods: {counts:?}"
        );
        ensure!(
            *refused <= REFUSALS_PER_PERIOD * periods,
            "HSDir {name} refused {refused} uploads over {periods} periods (a fight): {counts:?}"
        );
    }
    let statuses = [service_status(&a).await?, service_status(&b).await?];
    for st in &statuses {
        for p in st["periods"].as_array().into_iter().flatten() {
            ensure!(
                p["refusalsInARow"].as_u64() < Some(5),
                "refusal alarm: {p:#}"
            );
        }
    }
    let seen: Vec<&serde_json::Value> = statuses
        .iter()
        .filter_map(|s| s.get("otherPublisher"))
        .collect();
    eprintln!("other publisher seen: {seen:?}");
    ensure!(
        !seen.is_empty(),
        "neither daemon shows the other in its status: {statuses:#?}"
    );
    for o in &seen {
        ensure!(
            o["sameListing"] == true,
            "the other listed something else: {o:#}"
        );
    }

    // 2. A backend restarts while both run: new intro points, published by whichever daemon
    //    sees them first, and not reverted by the other.
    // The convergence is watched within one time period (rounds near a boundary are
    // skipped: the backends and daemons are then between periods).
    wait_for_room_in_period(
        NEW_INTRO_POINTS_WITHIN + Duration::from_secs(150),
        "the restart",
    )
    .await?;
    let before = loop {
        if let Some(r) = observe(&observer, &front, &backends).await? {
            break r;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let old_keys = before.owners[1].clone();
    net.stop_backend(1).await?;
    net.start_backend(1).await?;
    let restarted = Instant::now();
    let converged = loop {
        if let Some(r) = observe(&observer, &front, &backends).await? {
            let has_old = r.listed.values().any(|k| !k.is_disjoint(&old_keys));
            let new_keys: BTreeSet<String> = r.owners[1].difference(&old_keys).cloned().collect();
            let all_new = !new_keys.is_empty()
                && r.copies.iter().all(|(_, _, per)| per[1] > 0)
                && r.listed.values().all(|k| !k.is_disjoint(&new_keys));
            if !has_old && all_new {
                break r;
            }
        }
        if restarted.elapsed() > NEW_INTRO_POINTS_WITHIN + HSFETCH_WITHIN {
            bail!(
                "backend 1's new intro points are not on every HSDir {} s after its restart",
                restarted.elapsed().as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    eprintln!(
        "backend 1 restarted: its new intro points on every HSDir ({} copies) after {} s",
        converged.copies.len(),
        restarted.elapsed().as_secs()
    );
    let watch_end = Instant::now() + NO_REVERT_WATCH;
    while Instant::now() < watch_end {
        if let Some(r) = observe(&observer, &front, &backends).await? {
            let reverted: Vec<&String> = r
                .listed
                .iter()
                .filter(|(_, k)| !k.is_disjoint(&old_keys))
                .map(|(name, _)| name)
                .collect();
            ensure!(
                reverted.is_empty(),
                "copies went back to backend 1's old intro points: {reverted:?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }

    // 3. One daemon dies; the survivor keeps the address up across a rollover.
    a.kill()?;
    let killed_at = SystemTime::now();
    eprintln!("daemon A killed (SIGKILL)");
    let rounds = serve_and_watch(
        &net,
        &arti,
        &observer,
        &backends,
        SURVIVOR_ALONE,
        "survivor alone",
    )
    .await?;
    let periods_seen: BTreeSet<u64> = rounds.iter().map(|r| r.period).collect();
    ensure!(
        periods_seen.len() >= 2,
        "the survivor's descriptors were observed for {periods_seen:?} only: no rollover"
    );
    let survivor_stores: usize = uploads_and_refusals(&net, killed_at, SystemTime::now())?
        .iter()
        .map(|(_, s, _)| s)
        .sum();
    let last = rounds.last().context("rounds")?;
    eprintln!(
        "survivor alone: descriptors observed for periods {periods_seen:?}, {survivor_stores} \
         uploads stored at the HSDirs since the kill; last round at {:?}: {} copies",
        last.at,
        last.copies.len()
    );
    ensure!(
        survivor_stores > 0,
        "no HSDir stored anything from the survivor"
    );

    // 4. The killed daemon comes back on its state and rejoins without a refusal loop.
    let rejoined_at = SystemTime::now();
    let a = start_frontend(&net, &dirs[0], false)?;
    tokio::time::sleep(REJOIN_WATCH).await;
    let counts = uploads_and_refusals(&net, rejoined_at, SystemTime::now())?;
    eprintln!("after A's restart, per HSDir (name, stored, refused): {counts:?}");
    let periods = periods_published(rejoined_at, SystemTime::now());
    for (name, _, refused) in &counts {
        ensure!(
            *refused <= REFUSALS_PER_PERIOD * periods,
            "HSDir {name} refused {refused} uploads after A's restart: {counts:?}"
        );
    }
    let st = service_status(&a).await?;
    for p in st["periods"].as_array().into_iter().flatten() {
        ensure!(
            p["hsdirsAccepted"] == p["hsdirs"] && p["refusalsInARow"].as_u64() < Some(5),
            "A has not rejoined cleanly: {p:#}\n{}",
            a.log_text()
        );
    }
    ensure!(
        !a.log_text().contains("descriptors in a row"),
        "A reported a refusal alarm:\n{}",
        a.log_text()
    );

    drop(a);
    drop(b);
    drop(net);
    assert_no_process_left(&tor_pids);
    Ok(())
}
