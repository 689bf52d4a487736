//! A time-period rollover on a live private network (C tor test networks use 8-minute
//! periods): the daemon publishes the new period's descriptor on its ring; a C tor client
//! that cached the old period's descriptor moves to the new one by itself, as a real client
//! does (its cached descriptor expires when its consensus reaches the new period; nothing is
//! dropped for it), and reaches every backend through it; a new Arti client reaches the
//! frontend too. The network is young, so it still runs on the disaster shared random value
//! (one period published at a time); two-period publishing is covered in simulated time
//! (`tests/scheduling.rs`). Takes up to ~10 minutes.
//!
//! Needs C tor (`apt-get install tor`); without it this test fails, it never skips.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use onionbalance_testnet::frontend::{
    arti_client, arti_fetch, client_descriptor, first_page_load, page_loads, tolerated_failures,
    unix_now, with_storage, Daemon,
};
use onionbalance_testnet::{fixtures, TestNet};

/// Page loads after the rollover. For each new introduction C tor picks one of the
/// descriptor's usable intro points at random: with every listed intro point working and the
/// two backends' shares differing by at most one, a backend is missed in 20 loads with a
/// probability of about (3/5)^20 < 0.01 % for a 2-of-5 share. (A listed intro point that fails
/// is skipped within the same load, so a backend whose intro points fail answers rarely or
/// never.)
const LOADS_AFTER_ROLLOVER: usize = 20;
/// How long after the new period's descriptor is on every HSDir the C tor client may still
/// hold the old one: it moves when a consensus with a valid-after past the period start
/// reaches it (made every 20 s here, fetched by clients up to about a minute later), and the
/// daemon's own move is itself that late. Two minutes leaves a margin.
const CLIENT_MOVE_DEADLINE: Duration = Duration::from_secs(120);

/// The time periods in the status with a descriptor on every HSDir of theirs.
async fn fully_published_periods(d: &Daemon) -> Result<Vec<u64>> {
    let doc = d.status().await?;
    Ok(doc["services"][0]["periods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["hsdirs"].as_u64() > Some(0) && p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
        })
        .filter_map(|p| p["timePeriod"].as_u64())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_survives_a_time_period_rollover() -> Result<()> {
    let net = TestNet::builder().backends(2).start().await?;
    let front = net.frontend_address().to_owned();
    let names = [
        net.backend_name(0).to_owned(),
        net.backend_name(1).to_owned(),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = Daemon::start(&net, &net.run_dir().join("frontend"), &[0, 1])?;
    d.wait_published().await?;
    // The network's C tor client has never asked for the frontend: a new client arriving
    // right after the first publication. It keeps what it fetches for the rest of the test.
    first_page_load(&net, &front).await?;
    let held = client_descriptor(&net, &front)
        .await?
        .context("after its first page load the C tor client holds no descriptor")?;
    let current = held.period;
    let before = fully_published_periods(&d).await?;
    assert!(
        before.contains(&current),
        "the period {current} of the client's descriptor is not on every HSDir: {before:?}"
    );
    // On this network a period is 480 s, starting 240 s after each multiple of 480 s.
    let (len, offset) = (
        fixtures::TIME_PERIOD_LENGTH_SECS,
        fixtures::TIME_PERIOD_OFFSET_SECS,
    );
    let next_start = (current + 1) * len + offset;
    eprintln!(
        "published for periods {before:?}; the client holds period {current}'s descriptor \
         (revision {}, {} intro points); period {} starts in {} s",
        held.revision,
        held.intro_points,
        current + 1,
        next_start.saturating_sub(unix_now())
    );

    // Time passes, as it does for a real client: wait for the new period, plus time for a
    // consensus that says so.
    while unix_now() < next_start + 30 {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let t = Instant::now();
    let after = loop {
        // Polls the daemon's state only; no client is involved.
        let now = fully_published_periods(&d).await?;
        if now.contains(&(current + 1)) {
            break now;
        }
        if t.elapsed() > Duration::from_secs(90) {
            bail!(
                "period {} not published 2 minutes after it began: {:#}\n{}",
                current + 1,
                d.status().await?,
                d.log_text()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "periods {before:?} -> {after:?}: period {} on every HSDir of its ring",
        current + 1
    );

    // The same C tor client, its cache untouched. A real C tor client stops using its cached
    // descriptor once its own consensus reaches the period the descriptor expires at (the
    // start of the next one); until then it keeps using the old one. Wait for that, only
    // asking the client what it holds (no request, nothing dropped).
    let t = Instant::now();
    loop {
        match client_descriptor(&net, &front).await? {
            Some(h) if h.period == current => {}
            other => {
                eprintln!(
                    "the C tor client let go of period {current}'s descriptor {:.1} s after \
                     period {} was published (now holds {other:?})",
                    t.elapsed().as_secs_f64(),
                    current + 1
                );
                break;
            }
        }
        if t.elapsed() > CLIENT_MOVE_DEADLINE {
            bail!(
                "the C tor client still uses period {current}'s descriptor {} s after period {} \
                 began",
                unix_now().saturating_sub(next_start),
                current + 1
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Its next page load fetches the new period's descriptor; over 20 loads it reaches both
    // backends through it.
    let loads = page_loads(
        &net,
        &front,
        LOADS_AFTER_ROLLOVER,
        "C tor client after the rollover (same client, cache kept)",
    )
    .await;
    let now_held = client_descriptor(&net, &front).await?;
    eprintln!("after the loads the client holds {now_held:?}");
    match now_held {
        Some(h) if h.period == current + 1 => {}
        other => bail!(
            "after the rollover the C tor client does not hold period {}'s descriptor but \
             {other:?}\n{}",
            current + 1,
            loads.summary()
        ),
    }
    loads.check_every_backend_answered(&names)?;
    loads.check_failures(
        tolerated_failures(LOADS_AFTER_ROLLOVER),
        "one rendezvous stall per started ten loads",
    )?;

    // A new Arti client (its own state and cache) computes the new period's blinded key
    // itself.
    let arti_dir = net.run_dir().join("arti-after-rollover");
    let arti = arti_client(&with_storage(net.arti_toml(), &arti_dir)?).await?;
    let body = arti_fetch(&arti, &front).await?;
    assert!(body.trim().starts_with("hello from backend"), "{body:?}");
    // Counted where refusals happen: an HSDir logs each upload it refuses for its revision
    // counter, and across a rollover nothing (the daemon's nor the backends') is refused.
    let refused = net.revision_refusals()?;
    assert!(
        refused.is_empty(),
        "HSDirs refused uploads for their revision counter: {refused:?}\n{}",
        d.log_text()
    );
    Ok(())
}
