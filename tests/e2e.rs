//! End to end on a private Tor network: the `onionbalance` binary, on its embedded Arti
//! client, publishes a frontend for C tor backends in instance mode; C tor and Arti clients
//! reach the backends through the frontend address.
//!
//! Needs C tor (`apt-get install tor`); without it these tests fail, they never skip.
//! Each test prints its timings: network start, daemon start to first answered request,
//! the daemon's peak RSS.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use support::frontend::{arti_client, arti_fetch, assert_no_process_left, with_storage, Daemon};
use support::TestNet;

/// Fetches `/` from `onion` through the C tor client `n` times on fresh circuits; returns the
/// bodies.
async fn fetch_many(net: &TestNet, onion: &str, n: usize) -> Result<Vec<String>> {
    let mut bodies = Vec::new();
    for k in 0..n {
        let body = net
            .fetch(onion, "/")
            .await
            .with_context(|| format!("request {k} to the frontend"))?;
        bodies.push(body.trim().to_owned());
    }
    Ok(bodies)
}

/// Asserts that every backend in `names` answered at least once.
fn assert_all_answered(bodies: &[String], names: &[&str]) {
    for name in names {
        let want = format!("hello from backend {name}");
        assert!(
            bodies.contains(&want),
            "{name} never answered in {} requests: {bodies:?}",
            bodies.len()
        );
    }
    for b in bodies {
        assert!(
            names
                .iter()
                .any(|n| *b == format!("hello from backend {n}")),
            "unexpected answer {b:?}"
        );
    }
}

/// Revision counters per time period from the status document.
fn revisions(doc: &serde_json::Value) -> Vec<(u64, u64)> {
    doc["services"][0]["periods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["timePeriod"].as_u64()?, p["revisionCounter"].as_u64()?)))
        .collect()
}

/// Two backends: C tor reaches both through the frontend; an Arti client reaches the
/// frontend; the daemon stops within 5 s and, restarted, publishes a higher revision that
/// HSDirs accept; when a backend dies the other serves every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_balances_two_backends() -> Result<()> {
    let t0 = Instant::now();
    let mut net = TestNet::builder().backends(2).start().await?;
    eprintln!("network ready after {:.1} s", t0.elapsed().as_secs_f64());
    let tor_pids = net.tor_pids();
    let work = net.run_dir().join("frontend");
    let front = net.frontend_address().to_owned();

    // 1. Start the daemon; time until published, and until a client request is answered.
    let mut daemon = Daemon::start(&net, &work, &[0, 1])?;
    let published = daemon.wait_published().await?;
    net.fetch(&front, "/")
        .await
        .with_context(|| format!("first request\n{}", daemon.log_text()))?;
    let answered = daemon.started.elapsed();
    eprintln!(
        "daemon start -> published {:.2} s, -> first request answered {:.2} s",
        published.as_secs_f64(),
        answered.as_secs_f64()
    );

    // 2. Over 20 isolated requests both backends answer. (Wait until both are in the
    // descriptor: the first publication may lack a backend whose descriptor came late, and
    // the client would keep that descriptor.)
    daemon.wait_all_backends_published().await?;
    net.newnym().await?;
    let bodies = fetch_many(&net, &front, 20).await?;
    assert_all_answered(&bodies, &[net.backend_name(0), net.backend_name(1)]);

    // 3. An Arti client reaches the frontend.
    let arti_dir = net.run_dir().join("arti-client");
    let arti = arti_client(&with_storage(net.arti_toml(), &arti_dir)?).await?;
    let body = arti_fetch(&arti, &front).await?;
    assert!(body.trim().starts_with("hello from backend"), "{body:?}");
    eprintln!("Arti client reached the frontend: {:?}", body.trim());

    // 4. Stop within 5 s; restart; the new descriptors carry higher revision counters and
    // are accepted everywhere.
    let before = revisions(&daemon.status().await?);
    assert!(!before.is_empty());
    eprintln!("daemon peak RSS: {} kB", daemon.peak_rss_kb().unwrap_or(0));
    let took = daemon.stop()?;
    eprintln!("daemon stopped {:.2} s after SIGTERM", took.as_secs_f64());
    let first_log = daemon.log_text();
    let mut daemon = Daemon::start(&net, &work, &[0, 1])?;
    daemon.wait_published().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let doc = daemon.status().await?;
        let periods = doc["services"][0]["periods"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all_there = !periods.is_empty()
            && periods.iter().all(|p| {
                p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
                    && p["hsdirs"].as_u64() > Some(0)
            });
        if all_there {
            break revisions(&doc);
        }
        if Instant::now() > deadline {
            bail!(
                "after restart not every HSDir accepted: {doc:#}\n{}",
                daemon.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (tp, rev) in &before {
        if let Some((_, new)) = after.iter().find(|(t, _)| t == tp) {
            assert!(
                new > rev,
                "period {tp}: revision {new} after restart, {rev} before"
            );
        }
    }
    assert!(
        !daemon.log_text().contains("rejected our descriptor"),
        "{}",
        daemon.log_text()
    );
    assert!(!first_log.contains("panicked"), "{first_log}");

    // 5. Failover: backend 1 dies; soon every request is answered by backend 0.
    net.stop_backend(1).await?;
    let t = Instant::now();
    let mut streak = 0;
    while streak < 10 {
        if t.elapsed() > Duration::from_secs(180) {
            bail!("requests still failing 180 s after backend 1 stopped");
        }
        match net
            .fetch_with_budget(&front, "/", Duration::from_secs(30))
            .await
        {
            Ok(b) if b.trim() == format!("hello from backend {}", net.backend_name(0)) => {
                streak += 1
            }
            Ok(b) => bail!("a stopped backend answered: {b:?}"),
            Err(_) => streak = 0,
        }
    }
    eprintln!(
        "failover: 10 consecutive requests served by backend 0, {:.1} s after backend 1 stopped",
        t.elapsed().as_secs_f64()
    );

    eprintln!(
        "daemon peak RSS (second run): {} kB",
        daemon.peak_rss_kb().unwrap_or(0)
    );
    daemon.stop()?;
    drop(arti);
    drop(net);
    assert_no_process_left(&tor_pids);
    Ok(())
}

/// Three backends: over 20 requests each one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_balances_three_backends() -> Result<()> {
    let net = TestNet::builder().backends(3).start().await?;
    let tor_pids = net.tor_pids();
    let front = net.frontend_address().to_owned();
    let mut daemon = Daemon::start(&net, &net.run_dir().join("frontend"), &[0, 1, 2])?;
    daemon.wait_all_backends_published().await?;
    let bodies = fetch_many(&net, &front, 24).await?;
    assert_all_answered(
        &bodies,
        &[
            net.backend_name(0),
            net.backend_name(1),
            net.backend_name(2),
        ],
    );
    let instances = daemon.instances().await?;
    assert_eq!(instances.len(), 3);
    assert!(
        instances
            .iter()
            .all(|i| i["introPointsNum"].as_u64() > Some(0)),
        "{instances:#?}"
    );
    daemon.stop()?;
    drop(net);
    assert_no_process_left(&tor_pids);
    Ok(())
}
