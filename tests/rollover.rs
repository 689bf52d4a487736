//! A time-period rollover on a live private network (C tor test networks use 8-minute
//! periods): the daemon publishes the new period's descriptor on its ring, and clients that
//! forget their cached descriptor still reach the frontend — through C tor and through Arti.
//! The network is young, so it still runs on the disaster shared random value (one period
//! published at a time); two-period publishing is covered in simulated time
//! (`tests/scheduling.rs`). Takes up to ~9 minutes.
//!
//! Needs C tor (`apt-get install tor`); without it this test fails, it never skips.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use support::frontend::{arti_client, arti_fetch, with_storage, Daemon};
use support::{fixtures, TestNet};

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
    let d = Daemon::start(&net, &net.run_dir().join("frontend"), &[0, 1])?;
    d.wait_published().await?;
    net.fetch(&front, "/").await?;
    let before = fully_published_periods(&d).await?;
    // On this network a period is 480 s, starting 240 s after each multiple of 480 s.
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let (len, offset) = (
        fixtures::TIME_PERIOD_LENGTH_SECS,
        fixtures::TIME_PERIOD_OFFSET_SECS,
    );
    let current = (unix() - offset) / len;
    let next_start = (current + 1) * len + offset;
    eprintln!(
        "published for periods {before:?}; period {} starts in {} s",
        current + 1,
        next_start.saturating_sub(unix())
    );
    assert!(
        before.contains(&current),
        "the current period {current} is not published: {before:?}"
    );

    // Wait for the new period, plus time for a consensus that says so.
    while unix() < next_start + 30 {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let t = Instant::now();
    let after = loop {
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

    // The client forgets its cached descriptor and fetches the new period's.
    net.newnym().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let body = net.fetch(&front, "/").await?;
    assert!(body.trim().starts_with("hello from backend"), "{body:?}");
    // A fresh Arti client computes the new period's blinded key itself.
    let arti_dir = net.run_dir().join("arti-after-rollover");
    let arti = arti_client(&with_storage(net.arti_toml(), &arti_dir)?).await?;
    let body = arti_fetch(&arti, &front).await?;
    assert!(body.trim().starts_with("hello from backend"), "{body:?}");
    assert!(
        !d.log_text().contains("rejected our descriptor"),
        "{}",
        d.log_text()
    );
    Ok(())
}
