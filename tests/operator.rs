//! Operator features on a private Tor network: systemd readiness, the status socket and
//! `onionbalance status`, metrics, SIGHUP reload (unchanged / changed / invalid), and
//! `onionbalance check --online`, including a backend configured without instance mode.
//!
//! Needs C tor (`apt-get install tor`); without it this test fails, it never skips.

#![forbid(unsafe_code)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use onionbalance_testnet::fixtures::TIME_PERIOD_LENGTH_SECS;
use onionbalance_testnet::frontend::{assert_no_process_left, Daemon};
use onionbalance_testnet::systemd::SystemdStandIn;
use onionbalance_testnet::TestNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_onionbalance");

/// The frontend's (first period's) revision counter and accepted uploads, from the status.
async fn published_state(d: &Daemon) -> Result<(Vec<(u64, u64)>, u64, usize)> {
    let doc = d.status().await?;
    let svc = &doc["services"][0];
    let revs = period_revisions(svc);
    let uploads = svc["counters"]["uploadsOk"].as_u64().unwrap_or(0);
    let instances = svc["instances"].as_array().map_or(0, Vec::len);
    Ok((revs, uploads, instances))
}

/// The daemon's rebuild gap (`Timing::min_rebuild_interval`): a build for changed inputs
/// waits until this long after the period's previous build.
const REBUILD_GAP: Duration = Duration::from_secs(60);
/// A build due because a backend's listing changed waits this long for other verdicts
/// (`HEALTH_COALESCE`); one for changed authorized clients is made at once.
const LISTING_COALESCE: Duration = Duration::from_secs(5);
/// From a build being due to its revision counter in the status: a build and signature take
/// well under a second here; the rest is margin.
const BUILD_SHOWS_WITHIN: Duration = Duration::from_secs(10);
/// Something happens on the test network every half period (Unix multiples of 240 s): time
/// periods start at 480 k + 240, shared-random runs at 480 k.
const HALF_PERIOD_SECS: u64 = TIME_PERIOD_LENGTH_SECS / 2;
/// How long after such a boundary the daemon may still rebuild for a reason of the
/// network's: at a shared-random run the backends rotate intro points 2–11 s in (design
/// §5); the daemon fetches a backend's descriptor of each of two periods every 120 s and
/// rebuilds at once, then uploads for a few seconds (≤ ~140 s). At a period start the new
/// period arrives with a consensus (≤ ~60 s) and waits ≤ 30 s for the backends' fetches
/// (≤ ~100 s).
const QUIET_AFTER_BOUNDARY_SECS: u64 = 160;
/// How long [`quiet_watch`] may wait for room: three half periods.
const QUIET_WATCH_WAIT_MAX: Duration = Duration::from_secs(3 * HALF_PERIOD_SECS);

/// The latest `builtAt` of the first service's periods.
fn last_built(doc: &serde_json::Value) -> Result<SystemTime> {
    let mut latest = None;
    for p in doc["services"][0]["periods"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(t) = p["builtAt"].as_str() {
            let t = humantime::parse_rfc3339(t).with_context(|| format!("builtAt {t:?}"))?;
            latest = Some(latest.map_or(t, |l: SystemTime| l.max(t)));
        }
    }
    latest.context("no period has a builtAt")
}

/// Finds the watch for "a reload changes nothing": returns when it can end. A wrong rebuild
/// caused by a reload made now lands at the latest when the rebuild gap since the last
/// build is over (or [`LISTING_COALESCE`] after the reload, if that is later), and shows
/// within [`BUILD_SHOWS_WITHIN`]. The whole watch must lie where the network gives the daemon
/// no reason of its own to rebuild ([`QUIET_AFTER_BOUNDARY_SECS`] after a half-period
/// boundary, up to the next one), so that any build seen is the reload's: this waits for
/// such a stretch if now is not in one. Models nothing; it places a check.
async fn quiet_watch(d: &Daemon) -> Result<Instant> {
    let give_up = Instant::now() + QUIET_WATCH_WAIT_MAX;
    loop {
        let doc = d.status().await?;
        let now = SystemTime::now();
        let gap_over = last_built(&doc)? + REBUILD_GAP;
        let watch_end = gap_over.max(now + LISTING_COALESCE) + BUILD_SHOWS_WITHIN;
        let now_unix = now.duration_since(UNIX_EPOCH)?.as_secs();
        let end_unix = watch_end.duration_since(UNIX_EPOCH)?.as_secs() + 1;
        let since = now_unix % HALF_PERIOD_SECS;
        let next_boundary = now_unix - since + HALF_PERIOD_SECS;
        if since >= QUIET_AFTER_BOUNDARY_SECS && end_unix <= next_boundary {
            let watch = watch_end.duration_since(now).unwrap_or_default();
            eprintln!(
                "unchanged reload: watching {:.0} s, {since} s after a half-period boundary \
                 (the rebuild gap since the last build ends within it)",
                watch.as_secs_f64()
            );
            return Ok(Instant::now() + watch);
        }
        if Instant::now() > give_up {
            bail!(
                "no quiet stretch for the unchanged-reload check within {QUIET_WATCH_WAIT_MAX:?}"
            );
        }
        let wait = if since < QUIET_AFTER_BOUNDARY_SECS {
            QUIET_AFTER_BOUNDARY_SECS - since
        } else {
            HALF_PERIOD_SECS - since + QUIET_AFTER_BOUNDARY_SECS
        };
        eprintln!(
            "unchanged reload: waiting {wait} s for a stretch without network-caused rebuilds \
             ({since} s after a half-period boundary, the watch would end at +{} s)",
            end_unix.saturating_sub(now_unix - since)
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// How long a reload may take to reach every HSDir: the daemon rebuilds a period's descriptor
/// at most once a minute (`Timing::min_rebuild_interval`, so that a flapping backend or a
/// reload loop cannot make it rebuild in a loop), plus the new backend's fetch and the
/// uploads, a few seconds here.
const RELOAD_PUBLISHED_WITHIN: Duration = Duration::from_secs(60 + 30);

/// (time period, revision counter) of each period a service's status lists.
fn period_revisions(svc: &serde_json::Value) -> Vec<(u64, u64)> {
    svc["periods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["timePeriod"].as_u64()?, p["revisionCounter"].as_u64()?)))
        .collect()
}

/// Waits until every HSDir of every period holds a descriptor built after `after_revs`, the
/// (period, revision) pairs of before (with none given: holds the current descriptor).
/// Revision counters count from each period's shared-random start, so they compare only
/// within one period: a period that was not there before (the network rolled over to a new
/// one meanwhile) has had only descriptors built since.
async fn wait_republished(
    d: &Daemon,
    after_revs: &[(u64, u64)],
    within: Duration,
) -> Result<Vec<(u64, u64)>> {
    let deadline = Instant::now() + within;
    loop {
        let doc = d.status().await?;
        let periods = doc["services"][0]["periods"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let revs = period_revisions(&doc["services"][0]);
        let newer = !revs.is_empty()
            && revs.iter().all(|(tp, r)| {
                after_revs
                    .iter()
                    .find(|(before_tp, _)| before_tp == tp)
                    .is_none_or(|(_, before)| r > before)
            });
        let everywhere = periods.iter().all(|p| {
            p["hsdirs"].as_u64() > Some(0) && p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
        });
        if newer && everywhere {
            return Ok(revs);
        }
        if Instant::now() > deadline {
            bail!(
                "no republication within {within:?}: {doc:#}\n{}",
                d.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `onionbalance check --online` for `config` on the network; (exit success, output).
fn check_online(d: &Daemon, config: &std::path::Path, attempts: &str) -> Result<(bool, String)> {
    let out = Command::new(BIN)
        .args(["check", "--online", "--attempts", attempts, "-c"])
        .arg(config)
        .arg("--arti-config")
        .arg(d.dir.join("check-arti.toml"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_features_on_a_private_network() -> Result<()> {
    // Backends 0 and 1 are instances of the frontend; backend 2 is a plain onion service.
    let mut net = TestNet::builder()
        .backends(2)
        .plain_backends(1)
        .start()
        .await?;
    let tor_pids = net.tor_pids();
    assert!(!net.backend_is_instance(2));
    let dir = net.run_dir().join("frontend");
    std::fs::create_dir_all(&dir)?;

    // systemd stand-in and a free port for metrics.
    let notify_path = dir.join("notify.sock");
    let notify = SystemdStandIn::bind(&notify_path)?;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let notify_env = notify_path.display().to_string();
    let mut d = Daemon::start_with(
        &net,
        &dir,
        &[0],
        &["--metrics-listen", &metrics_addr],
        &[("NOTIFY_SOCKET", &notify_env)],
    )?;

    // 1. Readiness: READY=1 once Tor is bootstrapped and the runners started (publication
    // does not hold up a boot), then STATUS= lines that follow publication until it says
    // the service is published, which the status socket confirms.
    let ready = notify
        .wait_for(0, |m| m.contains("READY=1"), Duration::from_secs(60))
        .await?;
    eprintln!("READY=1 after {:.2} s", d.started.elapsed().as_secs_f64());
    assert!(
        notify.messages()[ready].contains("STATUS=started"),
        "{:?}",
        notify.messages()
    );
    notify
        .wait_for(
            ready,
            |m| m.contains("STATUS=published 1/1 services"),
            Duration::from_secs(60),
        )
        .await?;
    let doc = d.status().await?;
    assert!(
        !doc["services"][0]["firstPublished"].is_null(),
        "systemd was told 'published' before the status socket says so: {doc:#}"
    );
    eprintln!("systemd saw: {:?}", notify.messages());

    // 2. Status socket: mode 0600, upstream fields; `onionbalance status` prints a table.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&d.socket)?.permissions().mode() & 0o777,
        0o600
    );
    let svc = &doc["services"][0];
    assert_eq!(svc["onionAddress"], net.frontend_address());
    assert!(svc.get("publishAttemptFirstDescriptor").is_some());
    let inst = &svc["instances"][0];
    assert_eq!(inst["onionAddress"], net.backend_address(0));
    assert!(inst["introPointsNum"].as_u64() > Some(0));
    assert!(!inst["descriptorReceived"].is_null());
    let out = Command::new(BIN)
        .args(["status", "-c"])
        .arg(dir.join("config.yaml"))
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains(net.frontend_address()) && table.contains(net.backend_name(0)),
        "{table}"
    );
    let out = Command::new(BIN)
        .args(["status", "--json", "--socket"])
        .arg(&d.socket)
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["services"][0]["onionAddress"], net.frontend_address());

    // 3. Metrics.
    let mut s = tokio::net::TcpStream::connect(&metrics_addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    let svc_label = format!("service=\"{}\"", net.frontend_address());
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains("onionbalance_bootstrapped 1"), "{text}");
    assert!(
        text.contains(&format!("onionbalance_backends_healthy{{{svc_label}}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "onionbalance_uploads_total{{{svc_label},result=\"ok\"}}"
        )),
        "{text}"
    );

    // 4. Reload with the same config: nothing is republished. Uploads finish one by one
    // (READY comes with the first HSDir that accepts), so first let every HSDir of every
    // period hold the descriptor: only then is "no new upload" meaningful.
    wait_republished(&d, &[], Duration::from_secs(30)).await?;
    // A wrong rebuild need not show at once: one for changed inputs waits out the rebuild
    // gap since the last build. So the check watches until that gap is over, in a stretch
    // where the network itself gives no reason to rebuild (see `quiet_watch`).
    let watch_end = quiet_watch(&d).await?;
    let (revs, uploads, _) = published_state(&d).await?;
    let builds = d.status().await?["services"][0]["counters"]["builds"].clone();
    let mark = d.log_text().len();
    let heard_before = notify.messages().len();
    let reloaded = Instant::now();
    d.sighup()?;
    let line = d
        .wait_log(mark, "removed,", Duration::from_secs(10))
        .await?;
    assert!(line.contains("1 unchanged"), "{line}");
    // systemd heard of the reload: RELOADING=1 with the monotonic time, then READY=1.
    let reloading = notify
        .wait_for(
            heard_before,
            |m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="),
            Duration::from_secs(10),
        )
        .await?;
    notify
        .wait_for(
            reloading + 1,
            |m| m.contains("READY=1"),
            Duration::from_secs(10),
        )
        .await?;
    tokio::time::sleep_until(
        watch_end
            .max(reloaded + LISTING_COALESCE + BUILD_SHOWS_WITHIN)
            .into(),
    )
    .await;
    let (revs2, uploads2, _) = published_state(&d).await?;
    let builds2 = d.status().await?["services"][0]["counters"]["builds"].clone();
    assert_eq!(
        (revs2, uploads2, builds2),
        (revs.clone(), uploads, builds),
        "an unchanged reload rebuilt or republished (revisions, uploads, builds; watched {:.0} s)",
        reloaded.elapsed().as_secs_f64()
    );

    // 5. Reload adding backend 1: it is fetched and published, the rest keeps its state.
    Daemon::write_config(&net, &dir, &[0, 1])?;
    let mark = d.log_text().len();
    d.sighup()?;
    let line = d
        .wait_log(mark, "removed,", Duration::from_secs(10))
        .await?;
    assert!(line.contains("1 changed"), "{line}");
    let revs = wait_republished(&d, &revs, RELOAD_PUBLISHED_WITHIN).await?;
    let instances = d.instances().await?;
    assert_eq!(instances.len(), 2);
    assert!(
        instances
            .iter()
            .all(|i| i["introPointsNum"].as_u64() > Some(0)),
        "{instances:#?}"
    );

    // 6. An invalid config is rejected and the running one stays.
    let good = std::fs::read_to_string(dir.join("config.yaml"))?;
    std::fs::write(
        dir.join("config.yaml"),
        "services:\n- key: missing.key\n  instances: []\n",
    )?;
    let mark = d.log_text().len();
    d.sighup()?;
    d.wait_log(mark, "config reload rejected", Duration::from_secs(10))
        .await?;
    let said = d.log_text()[mark..].to_owned();
    assert!(said.contains("missing.key"), "{said}");
    assert!(d.is_running());
    let (_, _, n) = published_state(&d).await?;
    assert_eq!(
        n, 2,
        "the running configuration changed after a rejected reload"
    );
    std::fs::write(dir.join("config.yaml"), &good)?;

    // 6b. `drain` edits the config and reloads the daemon itself (found by its status socket,
    // signalled only because it is an onionbalance process); `undrain` puts the file back as
    // it was, byte for byte, and reloads again.
    let name = net.backend_name(1).to_owned();
    for (command, health) in [("drain", "draining"), ("undrain", "unchecked")] {
        let mark = d.log_text().len();
        let out = Command::new(BIN)
            .args([command, name.as_str(), "-c"])
            .arg(dir.join("config.yaml"))
            .env_remove("ONIONBALANCE_STATUS_SOCKET_LOCATION")
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{command}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains(&format!("reloaded the daemon (process {}, ", d.pid())),
            "{command}: {said}"
        );
        let line = d
            .wait_log(mark, "removed,", Duration::from_secs(10))
            .await?;
        assert!(line.contains("1 changed"), "{command}: {line}");
        // The runner takes the new instances just after the reload's summary is logged.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let instances = d.instances().await?;
            let shown = instances
                .iter()
                .find(|i| i["name"] == name.as_str())
                .map(|i| i["health"].clone());
            if shown == Some(serde_json::json!(health)) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{command}: {name} is not {health} 10 s after the reload: {instances:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(std::fs::read_to_string(dir.join("config.yaml"))?, good);

    // 7. check --online passes for the instance backends.
    std::fs::write(
        dir.join("check-arti.toml"),
        onionbalance_testnet::frontend::with_storage(net.arti_toml(), &dir.join("check-arti"))?,
    )?;
    // Three runs: the first with a fresh Arti state directory (a cold start), the others
    // from the state and cache the first left (the start that once failed: a consensus at
    // once, vanguards a moment later). Each must pass.
    for run in 1..=3 {
        let (ok, out) = check_online(&d, &dir.join("config.yaml"), "2")?;
        eprintln!("check --online, run {run}:\n{out}");
        assert!(
            ok,
            "check --online run {run} failed on a working deployment:\n{out}"
        );
        assert!(
            out.contains("[PASS] frontend") && out.contains("through the frontend"),
            "{out}"
        );
    }

    // 8. A backend without instance mode: publish a frontend with only backend 2; it answers
    // at its own address but not through the frontend, and the check says why.
    Daemon::write_config(&net, &dir, &[2])?;
    let mark = d.log_text().len();
    d.sighup()?;
    d.wait_log(mark, "removed,", Duration::from_secs(10))
        .await?;
    wait_republished(&d, &revs, RELOAD_PUBLISHED_WITHIN).await?;
    let (ok, out) = check_online(&d, &dir.join("config.yaml"), "1")?;
    eprintln!("{out}");
    assert!(
        !ok,
        "check --online passed with a backend that is not an instance:\n{out}"
    );
    assert!(out.contains("own address: port 80 answered"), "{out}");
    assert!(
        out.contains("[FAIL] frontend") && out.contains("HiddenServiceOnionBalanceInstance 1"),
        "{out}"
    );

    // 8b. A backend that is really down (its tor stopped; its descriptor still sits on the
    // HSDirs, as it would for hours): the check, run as an operator would after the outage,
    // fails and names that backend's own address.
    net.stop_backend(1).await?;
    let down = dir.join("down");
    Daemon::write_config(&net, &down, &[0, 1])?;
    let (ok, out) = check_online(&d, &down.join("config.yaml"), "1")?;
    eprintln!("{out}");
    assert!(!ok, "check --online passed with a backend down:\n{out}");
    let failed_own_address = out.lines().any(|l| {
        l.starts_with("[FAIL]") && l.contains(net.backend_name(1)) && l.contains("own address")
    });
    assert!(
        failed_own_address,
        "no failure for the stopped backend's own address:\n{out}"
    );

    // 9. SIGTERM stops it promptly; no tor process of the network is left afterwards.
    let took = d.stop()?;
    assert!(took < Duration::from_secs(5));
    drop(net);
    assert_no_process_left(&tor_pids);
    Ok(())
}
