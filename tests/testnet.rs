//! The private test network of `crates/testnet` works: C tor onion services in Onionbalance
//! instance mode come up, a C tor client reaches each by its own address, and an Arti
//! client configured by the generated `arti.toml` (vanguards-lite, Arti's default) does too.
//! A restarted backend keeps its address and is reachable again. When the network is
//! dropped, no tor process of it is left.
//!
//! Needs C tor: `apt-get install tor`. Without it the test fails (it never skips).
//!
//! Also here: an offline check that the committed descriptor fixtures
//! (`tests/fixtures/ctor-0.4.9/`) verify and decrypt with their metadata.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use arti_client::config::TorClientConfigBuilder;
use arti_client::TorClient;
use onionbalance_testnet::frontend::arti_fetch;
use onionbalance_testnet::{fixtures, http, TestNet};

/// The path the backends' web servers answer with `200 ok`.
const HEALTH_PATH: &str = "/healthz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_reachable_on_a_private_network() -> Result<()> {
    let t0 = Instant::now();
    let mut net = TestNet::builder()
        .authorities(3)
        .relays(5)
        .backends(2)
        .web_health_path(Some(HEALTH_PATH))
        .start()
        .await?;
    let ready = t0.elapsed();
    eprintln!("network ready after {:.1} s", ready.as_secs_f64());
    assert_eq!(net.backend_count(), 2);

    // Through the C tor client, each backend by its own address.
    let phase = Instant::now();
    for i in 0..net.backend_count() {
        let t = Instant::now();
        let body = net
            .fetch(net.backend_address(i), "/")
            .await
            .with_context(|| format!("C tor client to backend {i}\n{}", net.log_tails()))?;
        assert_eq!(
            body.trim(),
            format!("hello from backend {}", net.backend_name(i)),
            "backend {i} ({}) answered for someone else",
            net.backend_address(i)
        );
        eprintln!(
            "C tor client reached {} in {:.1} s",
            net.backend_name(i),
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "phase c-tor fetches: {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // Through an Arti client using the generated configuration, vanguards left at Arti's
    // default (lite): proves the TOML and that 3 authorities + 5 relays suffice for vanguards.
    let phase = Instant::now();
    let arti = arti_client_for(net.arti_toml_path()).await?;
    eprintln!(
        "phase arti bootstrap: {:.1} s",
        phase.elapsed().as_secs_f64()
    );
    let phase = Instant::now();
    for i in 0..net.backend_count() {
        let t = Instant::now();
        let body = arti_fetch(&arti, net.backend_address(i))
            .await
            .with_context(|| format!("Arti client to backend {i}"))?;
        assert_eq!(
            body.trim(),
            format!("hello from backend {}", net.backend_name(i))
        );
        eprintln!(
            "Arti client reached {} in {:.1} s",
            net.backend_name(i),
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!("phase arti fetches: {:.1} s", phase.elapsed().as_secs_f64());
    drop(arti);

    // The harness's own controls: a backend's descriptor, restarting a backend (same keys,
    // same address), and NEWNYM so the client forgets the old descriptor.
    let desc = net.backend_descriptor(1).await?;
    assert!(
        desc.starts_with("hs-descriptor 3\n"),
        "not a v3 descriptor: {:?}",
        &desc[..desc.len().min(80)]
    );
    let phase = Instant::now();
    let address = net.backend_address(1).to_owned();
    net.stop_backend(1).await?;
    net.start_backend(1).await?;
    assert_eq!(
        net.backend_address(1),
        address,
        "restart changed the address"
    );
    net.newnym().await?;
    let body = net.fetch(&address, "/").await?;
    assert_eq!(
        body.trim(),
        format!("hello from backend {}", net.backend_name(1))
    );
    eprintln!(
        "phase backend restart + fetch: {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // A backend's web server alone stops and starts again on the same port while its tor
    // runs on: a page load fails at once in between (the backend's tor cannot connect; C tor
    // 0.4.9 answers the client's SOCKS request with "general failure", 0x01, measured here),
    // and the server counts every request it got, by path. (Each load is one attempt: the
    // harness must show the failure, not retry past it.)
    let phase = Instant::now();
    let address = net.backend_address(0).to_owned();
    let before = net.backend_web_requests(0)?.len();
    let health = net
        .fetch_once(&address, HEALTH_PATH, Duration::from_secs(30))
        .await?;
    assert_eq!(health.body, http::HEALTH_BODY, "the health path's answer");
    net.stop_backend_web(0)?;
    assert!(!net.backend_web_is_running(0));
    let t = Instant::now();
    let refused = net
        .fetch_once(&address, "/", Duration::from_secs(30))
        .await
        .err()
        .context("a page load reached a stopped web server")?;
    assert!(
        format!("{refused:#}").contains("SOCKS CONNECT")
            && format!("{refused:#}").contains("(0x01)"),
        "not refused at the backend: {refused:#}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a stopped web server should fail a page load at once, not stall it: {:?}",
        t.elapsed()
    );
    net.start_backend_web(0)?;
    let body = net
        .fetch_once(&address, "/", Duration::from_secs(30))
        .await?;
    assert_eq!(
        body.trim(),
        format!("hello from backend {}", net.backend_name(0))
    );
    let requests: Vec<Option<String>> = net.backend_web_requests(0)?[before..]
        .iter()
        .map(|r| r.path().map(str::to_owned))
        .collect();
    assert_eq!(
        requests,
        [Some(HEALTH_PATH.to_owned()), Some("/".to_owned())],
        "what the web server counted"
    );
    eprintln!(
        "phase web server stop + start: {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // Teardown: every tor we started must be gone, and nothing else may hold the run dir.
    let pids = net.tor_pids();
    assert_eq!(pids.len(), 3 + 5 + 1 + 2, "one tor per node");
    let run_dir = net.run_dir().to_string_lossy().into_owned();
    let phase = Instant::now();
    drop(net);
    eprintln!("phase teardown: {:.1} s", phase.elapsed().as_secs_f64());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "tor pid {pid} still exists after teardown"
        );
    }
    let leftovers = processes_mentioning(&run_dir);
    assert!(
        leftovers.is_empty(),
        "processes still use the run dir: {leftovers:?}"
    );
    eprintln!("total: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// A bootstrapped Arti client for the configuration file at `path`.
async fn arti_client_for(
    path: &Path,
) -> Result<std::sync::Arc<TorClient<tor_rtcompat::PreferredRuntime>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let builder: TorClientConfigBuilder = toml::from_str(&text).context("parse arti.toml")?;
    let config = builder.build().context("build Arti config")?;
    let client = tokio::time::timeout(
        Duration::from_secs(60),
        TorClient::create_bootstrapped(config),
    )
    .await
    .context("Arti bootstrap timed out")?
    .context("Arti bootstrap")?;
    Ok(client)
}

/// PIDs and command lines of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// The committed C tor descriptors verify and decrypt offline with their metadata (blinded
/// key of the recorded time period, the backend's subcredential, validity at capture time),
/// and not with a neighbouring period. No network needed.
#[test]
fn committed_descriptor_fixtures_are_consistent() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctor-0.4.9");
    let all = fixtures::load_all(&dir)?;
    let instances = all.iter().filter(|(m, _)| m.instance_mode).count();
    assert!(
        instances >= 2,
        "expected 2 instance fixtures in {}",
        dir.display()
    );
    for (meta, text) in &all {
        let period = meta.time_period()?;
        let got = fixtures::decrypt(text, &meta.onion_address, period, meta.captured_at())
            .with_context(|| format!("fixture {}", meta.name))?;
        assert_eq!(got.revision_counter, meta.revision_counter, "{}", meta.name);
        assert_eq!(got.intro_points, meta.intro_points, "{}", meta.name);
        assert!(got.intro_points >= 1, "{}", meta.name);
        if let Some(next) = period.next() {
            assert!(
                fixtures::decrypt(text, &meta.onion_address, next, meta.captured_at()).is_err(),
                "{} verifies for the wrong time period too",
                meta.name
            );
        }
        assert_eq!(meta.instance_mode, meta.master_onion_address.is_some());
        if let (Some(file), Some(master)) = (&meta.master_key_file, &meta.master_onion_address) {
            use ed25519_dalek::pkcs8::DecodePrivateKey as _;
            let pem = std::fs::read_to_string(dir.join(file))?;
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            let address =
                onionbalance_testnet::testnet::onion_address(&key.verifying_key().to_bytes());
            assert_eq!(&address, master, "{file} is not the key of {master}");
        }
    }
    Ok(())
}
