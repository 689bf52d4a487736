//! Moving a frontend address mid-period from another publisher whose revision counters run
//! ahead of ours, on a live private network.
//!
//! C tor and Python Onionbalance derive their revision counters from another key than Arti
//! and we do, so the descriptors they leave on the HSDirs may carry counters above ours for
//! the rest of the period; so may those of a frontend whose clock was ahead. The "old
//! publisher" here is an onionbalance daemon whose revision store says it already used
//! 2,000,000,000 in this period: every HSDir then holds a counter far above what the new
//! daemon's clock gives, deterministically (a C tor service's counters are above ours only
//! by chance, a few seconds' worth either way). It lists another backend than the new one,
//! as the service before a move lists its own intro points: what it left is not equivalent
//! to the new descriptor (an equivalent one would count as published, see
//! `tests/two_frontends.rs`). After the old one stops, the new one (fresh state, same key)
//! must be refused once per HSDir, read what the HSDir holds, publish above it at its next
//! rebuild, and not be refused again: counted from the HSDirs' own logs, not from the
//! daemon's counters. A new C tor client then reaches the new backend. Takes about 5
//! minutes.
//!
//! Needs C tor (`apt-get install tor`); without it this test fails, it never skips.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use onionbalance_testnet::frontend::{first_page_load, wait_for_room_in_period, Daemon};
use onionbalance_testnet::testnet::HsDirUploads;
use onionbalance_testnet::TestNet;

/// The counter the old publisher's store claims for this period: far above anything the
/// clock gives on this network (about 33,000 per second since the shared-random period
/// began), below 2^31 so that C tor's logs print it as it is.
const OLD_COUNTER: u64 = 2_000_000_000;
/// Time the whole move needs within one period: the old daemon's start and first
/// publication (~45 s), the new one's start, refusal, rebuild after the 60-s rebuild gap
/// (~75 s), and 75 s of watching for further refusals.
const ROOM: Duration = Duration::from_secs(240);
/// How long after its start the new daemon may take to have every HSDir of the period hold
/// its descriptor: bootstrap, first build, refusals, the 60-s rebuild gap, uploads.
const CONVERGENCE: Duration = Duration::from_secs(150);
/// How long to watch for refusals after convergence: a loop would rebuild and be refused
/// again at least once a minute.
const WATCH: Duration = Duration::from_secs(75);

/// Writes the revision store of a daemon whose data directory is `data`, saying that
/// `counter` was published for `periods` (8-minute periods) of `frontend`.
fn write_revision_store(data: &Path, frontend: &str, periods: &[u64], counter: u64) -> Result<()> {
    let dir = data.join("publish").join("revisions");
    std::fs::create_dir_all(&dir)?;
    let entries: Vec<serde_json::Value> = periods
        .iter()
        .map(|p| serde_json::json!({"length_minutes": 8, "interval": p, "revision": counter}))
        .collect();
    let doc = serde_json::json!({"version": 1, "periods": entries});
    let bare = frontend.trim_end_matches(".onion");
    let path = dir.join(format!("{bare}.onion.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Refusals of uploads that met the old publisher's counter, logged since `since`, per HSDir.
fn refusals_below_old(hsdirs: &[HsDirUploads], since: SystemTime) -> Vec<(String, usize)> {
    hsdirs
        .iter()
        .map(|h| {
            let n = h
                .refused_revision
                .iter()
                .filter(|r| r.at >= since && r.cached >= OLD_COUNTER as i64)
                .count();
            (h.name.clone(), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The status of the period `tp`, if the daemon publishes for it.
async fn period_status(d: &Daemon, tp: u64) -> Result<Option<serde_json::Value>> {
    let doc = d.status().await?;
    Ok(doc["services"][0]["periods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["timePeriod"].as_u64() == Some(tp))
        .cloned())
}

/// Whether every HSDir of `p` holds the current descriptor.
fn all_hold(p: &serde_json::Value) -> bool {
    p["hsdirs"].as_u64() > Some(0) && p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_from_a_publisher_ahead_is_refused_once_per_hsdir() -> Result<()> {
    let net = TestNet::builder().backends(2).start().await?;
    let front = net.frontend_address().to_owned();
    let tp = wait_for_room_in_period(ROOM, "the move").await?;

    // The old publisher: its store says it already published OLD_COUNTER in this period; it
    // lists backend 1 (the new frontend lists backend 0).
    let old_dir = net.run_dir().join("old-frontend");
    let old_data = old_dir.join("data");
    write_revision_store(&old_data, &front, &[tp, tp + 1], OLD_COUNTER)
        .context("writing the old publisher's revision store")?;
    let data_arg = old_data.display().to_string();
    let mut old = Daemon::start_with(&net, &old_dir, &[1], &["--data-dir", &data_arg], &[])
        .context("starting the old publisher")?;
    let t = Instant::now();
    loop {
        if let Some(p) = period_status(&old, tp).await.ok().flatten() {
            if all_hold(&p) {
                let rev = p["revisionCounter"].as_u64().unwrap_or(0);
                ensure!(rev > OLD_COUNTER, "the old publisher used {rev}: {p:#}");
                break;
            }
        }
        if t.elapsed() > CONVERGENCE {
            bail!(
                "the old publisher's descriptor is not on every HSDir of period {tp}:\n{}",
                old.log_text()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    old.stop()?;
    eprintln!("the old publisher left revision > {OLD_COUNTER} on every HSDir of period {tp}");

    // The new frontend: same key and backends, its own (empty) state.
    let new_dir = net.run_dir().join("new-frontend");
    let new_data = new_dir.join("data").display().to_string();
    let since = SystemTime::now();
    let new = Daemon::start_with(&net, &new_dir, &[0], &["--data-dir", &new_data], &[])?;
    let t = Instant::now();
    let converged = loop {
        if let Some(p) = period_status(&new, tp).await.ok().flatten() {
            if all_hold(&p) && p["revisionCounter"].as_u64() > Some(OLD_COUNTER) {
                break p;
            }
        }
        if t.elapsed() > CONVERGENCE {
            bail!(
                "the new frontend's descriptor is not on every HSDir of period {tp} {} s after \
                 its start:\n{:#}\n{}",
                CONVERGENCE.as_secs(),
                new.status().await?,
                new.log_text()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = t.elapsed();
    let hsdirs = converged["hsdirs"].as_u64().unwrap_or(0) as usize;
    let refused = refusals_below_old(&net.hsdir_uploads_stored()?, since);
    let total: usize = refused.iter().map(|(_, n)| n).sum();
    eprintln!(
        "new frontend: every one of {hsdirs} HSDirs holds revision {} after {} s; refusals \
         logged by the HSDirs: {refused:?}",
        converged["revisionCounter"],
        took.as_secs()
    );
    // The scenario happened: the HSDirs refused the new frontend's first counters.
    ensure!(
        total >= 1,
        "no HSDir refused the new frontend: the old counters did not bite"
    );
    // Once per HSDir (at most one more where a retry of the same descriptor raced the look
    // at what it holds), never a refusal per rebuild.
    for (name, n) in &refused {
        ensure!(*n <= 2, "HSDir {name} refused the new frontend {n} times");
    }
    let doc = new.status().await?;
    let outranked = doc["services"][0]["counters"]["outranked"]
        .as_u64()
        .context("no outranked counter in the status")?;
    ensure!(
        outranked >= 1,
        "the daemon did not see the other publisher: {doc:#}"
    );

    // No loop: nothing more is refused while we watch.
    tokio::time::sleep(WATCH).await;
    let later = refusals_below_old(&net.hsdir_uploads_stored()?, since);
    ensure!(
        later == refused,
        "refusals went on after every HSDir held ours: {refused:?} -> {later:?}\n{}",
        new.log_text()
    );

    // A new user reaches the new frontend's backend through the frontend.
    let (body, _) = first_page_load(&net, &front).await?;
    ensure!(
        body.trim().ends_with(net.backend_name(0)),
        "answered by {body:?}, not by the new frontend's backend {}",
        net.backend_name(0)
    );
    Ok(())
}
