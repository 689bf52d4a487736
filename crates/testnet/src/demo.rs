//! The demo's core (`examples/demo.rs`, checked end to end by `tests/demo.rs`): on a running
//! private network ([`TestNet`]) it starts onionbalance in-process for every instance
//! backend, waits until each backend is in every published descriptor, then makes page loads
//! of the frontend address through the network's C tor client and says which backend
//! answered each one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use arti_client::TorClient;
use onionbalance::arti_toml::ArtiSources;
use onionbalance::{Balancer, Config};

use crate::TestNet;

/// How long the balancer may take, once its Tor client has bootstrapped, to have every
/// backend in every descriptor it published, on every HSDir.
pub const PUBLISH_BUDGET: Duration = Duration::from_secs(120);
/// How long one page load may take: seconds on this network; one that takes longer has
/// stalled (a rendezvous on a small loopback network does, now and then).
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on page loads: after the requested ones, the demo goes on only until every
/// backend has answered once, and never beyond this.
pub const MAX_PAGE_LOADS: usize = 60;

/// What the demo saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The frontend's onion address.
    pub frontend: String,
    /// Answers per backend name (every instance backend is listed, possibly with 0).
    pub answers: BTreeMap<String, usize>,
    /// Page loads made.
    pub loads: usize,
    /// Page loads that failed, with why.
    pub failures: Vec<String>,
    /// From the balancer's start to every backend being published.
    pub publish_time: Duration,
}

impl Outcome {
    /// Whether every backend answered at least once.
    pub fn every_backend_answered(&self) -> bool {
        !self.answers.is_empty() && self.answers.values().all(|&n| n > 0)
    }
}

/// Runs onionbalance for `net`'s instance backends and makes at least `requests` page loads
/// of its frontend (more, up to [`MAX_PAGE_LOADS`], until every backend answered), printing
/// each step with `say`. The balancer is shut down before returning.
pub async fn run(net: &TestNet, requests: usize, say: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let dir = net.run_dir().join("demo");
    let backends: Vec<usize> = (0..net.backend_count())
        .filter(|&i| net.backend_is_instance(i))
        .collect();
    if backends.is_empty() {
        bail!("the network has no instance backend to balance");
    }
    let config_path = write_config(net, &dir, &backends)?;
    say(&format!(
        "onionbalance config ({}):\n{}",
        config_path.display(),
        indent(&std::fs::read_to_string(&config_path)?)
    ));
    let config = Config::load(&config_path)?;

    // The network's Arti configuration, with state and cache of our own: the same
    // `--arti-config FILE -o KEY=VALUE` loading that `onionbalance run` does.
    let storage = |key: &str, sub: &str| {
        let path = dir.join("arti").join(sub);
        format!(
            "storage.{key}={}",
            toml::Value::String(path.display().to_string())
        )
    };
    let arti = ArtiSources::new()
        .file(net.arti_toml_path())
        .option(storage("state_dir", "state"))
        .option(storage("cache_dir", "cache"))
        .load()?;
    if let Some(k) = arti.unrecognized.iter().chain(&arti.deprecated).next() {
        bail!("the network's Arti configuration has a key Arti disregards: {k}");
    }
    say("bootstrapping onionbalance's embedded Arti client on the private network...");
    let client = TorClient::create_bootstrapped(arti.config)
        .await
        .context("bootstrapping the balancer's Arti client")?;
    let started = Instant::now();
    let handle = Balancer::new(config).launch(&client)?;
    say(&format!(
        "balancer started: fetching the {} backends' descriptors and publishing the frontend's",
        backends.len()
    ));

    let names: Vec<String> = backends
        .iter()
        .map(|&i| net.backend_name(i).to_owned())
        .collect();
    let mut outcome = Outcome {
        answers: names.iter().map(|n| (n.clone(), 0)).collect(),
        ..Outcome::default()
    };
    let result = async {
        loop {
            let status = handle.status();
            if let Some(s) = status.first() {
                outcome.frontend = s.onion_address.clone();
            }
            // Every backend in every period's descriptor, held by every HSDir of that
            // period: from then on a new client can reach each backend.
            let published = status.first().is_some_and(|s| {
                s.first_published.is_some()
                    && !s.periods.is_empty()
                    && s.periods.iter().all(|p| {
                        names.iter().all(|n| p.backends.contains(n))
                            && p.hsdirs > 0
                            && p.hsdirs_accepted == p.hsdirs
                    })
            });
            if published {
                break;
            }
            if started.elapsed() > PUBLISH_BUDGET {
                bail!(
                    "the frontend was not published with every backend within \
                     {PUBLISH_BUDGET:?}; last status: {status:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        outcome.publish_time = started.elapsed();
        say(&format!(
            "frontend {} published with all {} backends, {:.1} s after the balancer started",
            outcome.frontend,
            names.len(),
            outcome.publish_time.as_secs_f64()
        ));
        say(&format!(
            "page loads of http://{}/ through a C tor client (fresh circuits each):",
            outcome.frontend
        ));
        while outcome.loads < MAX_PAGE_LOADS
            && (outcome.loads < requests || !outcome.every_backend_answered())
        {
            outcome.loads += 1;
            let n = outcome.loads;
            match net
                .fetch_once(&outcome.frontend, "/", PAGE_LOAD_TIMEOUT)
                .await
            {
                Ok(page) => {
                    let body = page.body.trim();
                    let who = names
                        .iter()
                        .find(|name| body == format!("hello from backend {name}"))
                        .with_context(|| format!("an answer from no known backend: {body:?}"))?;
                    *outcome.answers.entry(who.clone()).or_default() += 1;
                    say(&format!(
                        "  request {n:>2}: answered by {who} ({:.1} s)",
                        page.took.as_secs_f64()
                    ));
                }
                Err(e) => {
                    say(&format!("  request {n:>2}: failed: {e:#}"));
                    outcome.failures.push(format!("{e:#}"));
                }
            }
        }
        Ok(())
    }
    .await;
    handle.shutdown().await;
    result?;
    let tally: Vec<String> = outcome
        .answers
        .iter()
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    say(&format!(
        "{} page loads, {} failed; answers per backend: {}",
        outcome.loads,
        outcome.failures.len(),
        tally.join(", ")
    ));
    Ok(outcome)
}

/// Writes `dir/config.yaml` for backends `instances`, with a copy of the network's frontend
/// key (mode 0600).
fn write_config(net: &TestNet, dir: &Path, instances: &[usize]) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key = dir.join("frontend.key");
    let src = net
        .frontend_key_path()
        .context("the network generated no frontend key")?;
    std::fs::copy(src, &key).with_context(|| format!("copy the key to {}", key.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let mut yaml = String::from("services:\n- key: frontend.key\n  instances:\n");
    for &i in instances {
        yaml.push_str(&format!(
            "  - address: {}\n    name: {}\n",
            net.backend_address(i),
            net.backend_name(i)
        ));
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// `text` with every line indented by four spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
