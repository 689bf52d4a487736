//! `examples/embed.rs` on a private Tor network: one Arti `TorClient` runs the application's
//! own onion service and balances the frontend of two C tor backends; a C tor client reaches
//! both; the balancer's event stream reports what happened; Ctrl-C stops it cleanly.
//!
//! The example binary is the one `cargo test` builds beside the tests (examples are built by
//! default; `scripts/test-all` builds every target first). Needs C tor (`apt-get install
//! tor`); without it the test fails, it never skips.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use onionbalance_testnet::frontend::{first_page_load, with_storage, Daemon, PUBLISH_DEADLINE};
use onionbalance_testnet::TestNet;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

/// The greeting the example's own onion service answers with.
const GREETING: &str = "hello from the embedding application's own onion service\n";
/// How long the example may take to bootstrap and print its own service's address (it
/// prints it when it launches the service, before the balancer starts).
const OWN_SERVICE_DEADLINE: Duration = Duration::from_secs(120);
/// How long the example may take to exit after SIGINT.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// The example binary built beside this test (`target/<profile>/examples/embed`).
fn example_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary outside target/<profile>/deps")?;
    let path = profile_dir.join("examples").join(name);
    ensure!(
        path.exists(),
        "{} is missing: build the examples first (`cargo test` builds them; `cargo test --test \
         embed_example` alone does not: run `cargo build --example {name}`)",
        path.display()
    );
    Ok(path)
}

/// The example's stdout, line by line, as it comes.
struct Output {
    /// Lines not yet looked at.
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line so far, for messages.
    seen: Vec<String>,
}

impl Output {
    /// The first line containing `needle`, printed already or within `deadline` from now.
    async fn wait_for(&mut self, needle: &str, deadline: Duration) -> Result<String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(line.clone());
        }
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => {
                    eprintln!("embed: {line}");
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Ok(None) => bail!(
                    "the example exited before printing {needle:?}: {:?}",
                    self.seen
                ),
                Err(_) => bail!(
                    "no {needle:?} within {deadline:?}; printed: {:?}",
                    self.seen
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_application_serves_and_balances_on_one_client() -> Result<()> {
    let net = TestNet::builder().backends(2).start().await?;
    let work = net.run_dir().join("embed");
    Daemon::write_config(&net, &work, &[0, 1])?;
    let arti_toml = work.join("arti.toml");
    std::fs::write(
        &arti_toml,
        with_storage(net.arti_toml(), &work.join("arti"))?,
    )?;
    let log = std::fs::File::create(work.join("embed.log"))?;

    let mut child = tokio::process::Command::new(example_binary("embed")?)
        .arg("--arti-config")
        .arg(&arti_toml)
        .arg(work.join("config.yaml"))
        .env("RUST_LOG", "info,tor_netdir=error")
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the embed example")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = Output {
        lines,
        seen: Vec::new(),
    };

    // The balancer's events: both backends join, then the frontend is published.
    let published = out
        .wait_for(
            "published revision",
            PUBLISH_DEADLINE + Duration::from_secs(60),
        )
        .await?;
    eprintln!("first publication event: {published}");
    for i in 0..2 {
        let name = net.backend_name(i);
        ensure!(
            out.seen
                .iter()
                .any(|l| l.contains(&format!("backend {name} joined"))),
            "no BackendJoined event for {name} before the publication: {:?}",
            out.seen
        );
    }
    // Balancing on the application's client: the frontend answers from a backend.
    let (body, _) = first_page_load(&net, net.frontend_address()).await?;
    ensure!(
        (0..2).any(|i| body.contains(net.backend_name(i))),
        "the frontend answered with something no backend serves: {body:?}"
    );

    // The application's own onion service, on the same client.
    let own = out
        .wait_for("own onion service: ", OWN_SERVICE_DEADLINE)
        .await?;
    let own_address = own
        .split_whitespace()
        .find(|w| w.ends_with(".onion"))
        .context("no address in the example's line")?
        .to_owned();
    // Arti uploads its descriptor within a second of the launch on this network, long before
    // the frontend's first publication; the first page load reloads as a user would if it
    // were not there yet.
    let (own_body, _) = first_page_load(&net, &own_address).await?;
    ensure!(own_body == GREETING, "own service answered {own_body:?}");

    // Ctrl-C: the balancer stops, then the service, and the process exits 0.
    let pid = child.id().context("no pid")?;
    let stopped_at = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    ensure!(kill.success(), "kill -INT {pid} failed");
    out.wait_for("stopped", EXIT_DEADLINE).await?;
    let status = tokio::time::timeout(EXIT_DEADLINE, child.wait())
        .await
        .context("the example did not exit after SIGINT")??;
    ensure!(status.success(), "the example exited with {status}");
    eprintln!(
        "stopped {:.1} s after SIGINT",
        stopped_at.elapsed().as_secs_f64()
    );
    Ok(())
}
