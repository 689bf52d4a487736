//! The frontend under test: the `onionbalance` binary as a child process; page loads through
//! the network's C tor client, counted; what that client holds in its descriptor cache; and an
//! Arti client to reach onion services with.
//!
//! # Counting, not retrying
//! A test that retries until one request succeeds passes however often clients fail. Here a
//! page load is one request on fresh circuits with no retry ([`page_load`]), series of them
//! are counted ([`PageLoads`]), and each test bounds the failures it tolerates with a number
//! it justifies ([`tolerated_failures`]). Where a helper does retry ([`first_page_load`],
//! [`arti_fetch`]) it counts and bounds the failures too, and says which real-client
//! behaviour the retry stands for; a series that measures how often clients get through
//! records single loads ([`page_load`], [`arti_page_load`]), never such a helper's result.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _, Result};
use arti_client::config::TorClientConfigBuilder;
use arti_client::{StreamPrefs, TorClient};
use tor_hscrypto::time::TimePeriod;

use crate::fixtures::{self, TIME_PERIOD_LENGTH_SECS, TIME_PERIOD_OFFSET_SECS};
use crate::{http, socks, TestNet};

/// How long the daemon may take to have every service published.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);
/// How long a stopped daemon may take to exit (the requirement is 5 s).
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The `onionbalance` binary the calling test runs against.
///
/// Cargo builds a package's binaries before its integration tests and gives their paths to
/// the tests only (`CARGO_BIN_EXE_<name>`, at compile time), not to their dependencies such
/// as this crate. A test binary lives in `<target>/<profile>/deps/`, the binary one level up,
/// which is where that variable points; `ONIONBALANCE_BIN` overrides it.
pub fn onionbalance_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ONIONBALANCE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("the test's own path")?;
    let mut dir = exe.parent().context("the test's directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("the profile directory")?;
    }
    let bin = dir.join("onionbalance");
    if !bin.is_file() {
        bail!(
            "no onionbalance binary at {} (cargo builds it for integration tests; \
             elsewhere set ONIONBALANCE_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `onionbalance run` process; killed by PID when dropped.
pub struct Daemon {
    /// The process.
    child: Option<Child>,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its status socket.
    pub socket: PathBuf,
    /// When it was started.
    pub started: Instant,
    /// Its working directory (config, key, Arti state).
    pub dir: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `net` for its backends `instances`, in `dir` (reused across
    /// restarts: same key, same Arti state).
    pub fn start(net: &TestNet, dir: &Path, instances: &[usize]) -> Result<Daemon> {
        Self::start_with(net, dir, instances, &[], &[])
    }

    /// Writes `dir/config.yaml` listing backends `instances` of `net` (and the key, once).
    pub fn write_config(net: &TestNet, dir: &Path, instances: &[usize]) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let key = dir.join("frontend.key");
        if !key.exists() {
            let src = net
                .frontend_key_path()
                .context("the network generated no frontend key")?;
            std::fs::copy(src, &key)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        }
        let socket = dir.join("status.sock");
        let mut yaml = format!(
            "status-socket-location: {}\nservices:\n- key: frontend.key\n  instances:\n",
            socket.display()
        );
        for &i in instances {
            yaml.push_str(&format!(
                "  - address: {}\n    name: {}\n",
                net.backend_address(i),
                net.backend_name(i)
            ));
        }
        std::fs::write(dir.join("config.yaml"), yaml)?;
        Ok(())
    }

    /// Like [`Daemon::start`], with extra arguments and environment variables.
    pub fn start_with(
        net: &TestNet,
        dir: &Path,
        instances: &[usize],
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Daemon> {
        Self::write_config(net, dir, instances)?;
        Self::launch(net, dir, args, envs)
    }

    /// Starts the daemon on `net` with the `dir/config.yaml` already there (see
    /// [`Daemon::write_config`]), with extra arguments and environment variables.
    pub fn launch(
        net: &TestNet,
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Daemon> {
        let socket = dir.join("status.sock");
        let arti = with_storage(net.arti_toml(), &dir.join("arti"))?;
        std::fs::write(dir.join("arti.toml"), arti)?;
        let log = dir.join(format!(
            "onionbalance-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        ));
        let started = Instant::now();
        let child = Command::new(onionbalance_bin()?)
            .arg("run")
            .arg("-c")
            .arg(dir.join("config.yaml"))
            .arg("--arti-config")
            .arg(dir.join("arti.toml"))
            .args(args)
            .env("RUST_LOG", "info,tor_netdir=error")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start onionbalance")?;
        Ok(Daemon {
            child: Some(child),
            log,
            socket,
            started,
            dir: dir.to_owned(),
        })
    }

    /// Sends SIGHUP (reload the config).
    pub fn sighup(&self) -> Result<()> {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()?
            .success();
        if !ok {
            bail!("kill -HUP {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits until the log contains `needle` (after `from` bytes), up to `within`.
    pub async fn wait_log(&self, from: usize, needle: &str, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log_text();
            if let Some(rest) = text.get(from..) {
                if let Some(line) = rest.lines().find(|l| l.contains(needle)) {
                    return Ok(line.to_owned());
                }
            }
            if Instant::now() > deadline {
                bail!("no log line with {needle:?} within {within:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id (0 once [`Daemon::stop`] has reaped it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log so far (empty if it cannot be read).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status document, parsed.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let text = onionbalance::status_socket::query(&self.socket).await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until every service has a descriptor on some HSDir; returns the time since start.
    pub async fn wait_published(&self) -> Result<Duration> {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        loop {
            if let Ok(doc) = self.status().await {
                let services = doc["services"].as_array().cloned().unwrap_or_default();
                if !services.is_empty() && services.iter().all(|s| !s["firstPublished"].is_null()) {
                    return Ok(self.started.elapsed());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "not published within {PUBLISH_DEADLINE:?}; daemon log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the daemon reports every configured backend in every descriptor it
    /// publishes: each backend has intro points, and every period's descriptor lists every
    /// backend (`periods[].backends`) and is held by every HSDir of that period. Returns the
    /// time since start.
    ///
    /// This is the daemon's view. It changes nothing for a client that already holds a
    /// descriptor: a C tor client keeps the one it fetched until the next time period
    /// starts or all its intro points fail (design §3), so a test that wants to know what
    /// such a client reaches must ask the client (page loads, [`client_descriptor`]).
    pub async fn wait_all_backends_published(&self) -> Result<Duration> {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        let mut last = None;
        loop {
            if let Ok(doc) = self.status().await {
                if all_backends_published(&doc) {
                    return Ok(self.started.elapsed());
                }
                last = Some(doc);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not report every backend in every published descriptor \
                     within {PUBLISH_DEADLINE:?}; last status:\n{}\ndaemon log:\n{}",
                    last.map_or("(none)".to_owned(), |d| format!("{d:#}")),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first service's instances from the status document.
    pub async fn instances(&self) -> Result<Vec<serde_json::Value>> {
        let doc = self.status().await?;
        Ok(doc["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Peak resident memory so far (VmHWM), in kB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, and the time it took to exit (SIGKILL after the deadline).
    pub fn stop(&mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let t = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        loop {
            if child.try_wait()?.is_some() {
                return Ok(t.elapsed());
            }
            if t.elapsed() > STOP_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                bail!("onionbalance did not exit within {STOP_DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemon {
    /// Kills the daemon with SIGKILL (a crash or a lost machine: nothing is closed in
    /// order) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL onionbalance")?;
            child.wait().context("reap onionbalance")?;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The network's Arti TOML with storage moved to `dir` (two Arti clients must not share it).
pub fn with_storage(toml_text: &str, dir: &Path) -> Result<String> {
    let mut v: toml::Value = toml::from_str(toml_text)?;
    let table = v.as_table_mut().context("arti toml is not a table")?;
    let mut storage = toml::map::Map::new();
    storage.insert(
        "cache_dir".into(),
        dir.join("cache").display().to_string().into(),
    );
    storage.insert(
        "state_dir".into(),
        dir.join("state").display().to_string().into(),
    );
    table.insert("storage".into(), toml::Value::Table(storage));
    Ok(toml::to_string(&v)?)
}

/// An Arti client bootstrapped from `toml_text`.
pub async fn arti_client(
    toml_text: &str,
) -> Result<std::sync::Arc<TorClient<tor_rtcompat::PreferredRuntime>>> {
    let mut v: toml::Value = toml::from_str(toml_text)?;
    if let Some(t) = v.as_table_mut() {
        let af = t
            .entry("address_filter")
            .or_insert(toml::Value::Table(Default::default()));
        if let Some(af) = af.as_table_mut() {
            af.insert("allow_onion_addrs".into(), true.into());
        }
    }
    let builder: TorClientConfigBuilder = toml::from_str(&toml::to_string(&v)?)?;
    Ok(TorClient::create_bootstrapped(builder.build()?).await?)
}

/// Failed loads [`arti_fetch`] tolerates before the one that must succeed.
///
/// Each load is what a user's page load through Arti is: one `connect` (in which Arti itself
/// already tries further HSDirs and intro points) and one HTTP request. On this small
/// loopback network a rendezvous stalls now and then (design §5), so one failed load,
/// reloaded, is tolerated; a second one in a row from a healthy frontend is what a user would
/// call broken.
pub const ARTI_TOLERATED_FAILURES: usize = 1;
/// How long one Arti page load may take: a working one takes seconds here; a stalled
/// rendezvous never completes.
pub const ARTI_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// One page load: `GET /` from `onion` through Arti, in a new isolation group (fresh
/// circuits, and in Arti a descriptor fetched for that group), within
/// [`ARTI_ATTEMPT_TIMEOUT`]; no retry. What a series of loads records, one result each.
pub async fn arti_page_load(
    client: &TorClient<tor_rtcompat::PreferredRuntime>,
    onion: &str,
) -> Result<String> {
    let mut prefs = StreamPrefs::new();
    prefs.new_isolation_group();
    let attempt = tokio::time::timeout(ARTI_ATTEMPT_TIMEOUT, async {
        let mut stream = client.connect_with_prefs((onion, 80), &prefs).await?;
        http::get(&mut stream, onion, "/").await
    })
    .await;
    match attempt {
        Ok(Ok(resp)) if resp.status == 200 => Ok(resp.body),
        Ok(Ok(resp)) => bail!("HTTP status {}", resp.status),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("no answer within {ARTI_ATTEMPT_TIMEOUT:?}"),
    }
}

/// One user's page through Arti, reloaded as that user would reload a page that failed: at
/// most [`ARTI_TOLERATED_FAILURES`] failed [`arti_page_load`]s before the one that must
/// succeed. Every load is recorded and the counts printed; more failures fail.
///
/// For a single page a test needs (a new client got through). A series that measures how
/// often clients get through records each [`arti_page_load`] instead: a retry inside one
/// recorded result would hide failures from its bar.
pub async fn arti_fetch(
    client: &TorClient<tor_rtcompat::PreferredRuntime>,
    onion: &str,
) -> Result<String> {
    let mut loads = PageLoads::new(format!("Arti page load of {onion}, reloaded on failure"));
    loop {
        match arti_page_load(client, onion).await {
            Ok(body) => {
                loads.record(Ok(body.clone()));
                eprintln!(
                    "{} (tolerated failures: {ARTI_TOLERATED_FAILURES})",
                    loads.summary()
                );
                return Ok(body);
            }
            Err(e) => loads.record(Err(e)),
        }
        loads.check_failures(ARTI_TOLERATED_FAILURES, "one stalled rendezvous, reloaded")?;
        // A user does not reload within the same instant.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Revision counters per time period of the first service in the status document.
pub fn revisions(doc: &serde_json::Value) -> Vec<(u64, u64)> {
    doc["services"][0]["periods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["timePeriod"].as_u64()?, p["revisionCounter"].as_u64()?)))
        .collect()
}

/// Whether `doc` (the status document) shows every configured backend in every published
/// descriptor of its first service, each descriptor on every HSDir of its period (see
/// [`Daemon::wait_all_backends_published`]).
pub fn all_backends_published(doc: &serde_json::Value) -> bool {
    let svc = &doc["services"][0];
    let instances = svc["instances"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = instances
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    let all_have = !instances.is_empty()
        && names.len() == instances.len()
        && instances
            .iter()
            .all(|i| i["introPointsNum"].as_u64() > Some(0));
    let periods = svc["periods"].as_array().cloned().unwrap_or_default();
    let complete = !periods.is_empty()
        && periods.iter().all(|p| {
            let listed: Vec<&str> = p["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b.as_str())
                .collect();
            names.iter().all(|n| listed.contains(n))
                && p["introPoints"].as_u64() > Some(0)
                && p["hsdirs"].as_u64() > Some(0)
                && p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
        });
    all_have && complete
}

/// How long one page load through the C tor client may take. A working rendezvous on this
/// loopback network takes a second or two; one that has not completed within 10 s has
/// stalled and never completes (design §5): the user has a page that does not load.
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Failed page loads tolerated in `page_loads` loads through the C tor client of a healthy
/// frontend (every backend up and in the descriptor the client holds): one per started ten.
///
/// Each failure is a page a real user would have to reload. The frontend never carries
/// traffic, so with a correct descriptor failures come from the network: on this 8-relay
/// loopback network a rendezvous stalls now and then (design §5). One in ten allows for that
/// and no more; a descriptor with intro points the backends no longer serve, on the wrong
/// HSDirs or missing a backend fails far more often than that (or, for a missing backend,
/// fails the check that every backend answers).
pub fn tolerated_failures(page_loads: usize) -> usize {
    page_loads.div_ceil(10)
}

/// Page loads through the C tor client, counted.
#[derive(Debug, Clone)]
pub struct PageLoads {
    /// What they were, for messages.
    pub what: String,
    /// Bodies of the answered loads, trimmed, in order.
    pub bodies: Vec<String>,
    /// The failed loads: when (since the first) and why.
    pub failures: Vec<String>,
    /// When the first began.
    started: Instant,
}

impl PageLoads {
    /// No page loads yet.
    pub fn new(what: impl Into<String>) -> Self {
        PageLoads {
            what: what.into(),
            bodies: Vec::new(),
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Records the outcome of one load.
    pub fn record(&mut self, outcome: Result<String>) {
        let at = self.started.elapsed().as_secs_f64();
        match outcome {
            Ok(body) => self.bodies.push(body.trim().to_owned()),
            Err(e) => {
                eprintln!("{}: page load failed after {at:.1} s: {e:#}", self.what);
                self.failures.push(format!("{at:.1} s: {e:#}"));
            }
        }
    }

    /// Loads made.
    pub fn attempts(&self) -> usize {
        self.bodies.len() + self.failures.len()
    }

    /// One line: how many loads, answered, failed, and who answered how often.
    pub fn summary(&self) -> String {
        let mut who: Vec<(String, usize)> = Vec::new();
        for b in &self.bodies {
            match who.iter_mut().find(|(w, _)| w == b) {
                Some((_, n)) => *n += 1,
                None => who.push((b.clone(), 1)),
            }
        }
        who.sort();
        format!(
            "{}: {} page loads, {} answered, {} failed; answers {who:?}",
            self.what,
            self.attempts(),
            self.bodies.len(),
            self.failures.len()
        )
    }

    /// Prints the counts; fails if more than `tolerated` loads failed (`why`: the
    /// justification of that number, for the message).
    pub fn check_failures(&self, tolerated: usize, why: &str) -> Result<()> {
        eprintln!("{} (tolerated failures: {tolerated})", self.summary());
        if self.failures.len() > tolerated {
            bail!(
                "{}: {} of {} page loads failed, {tolerated} tolerated ({why}):\n  {}",
                self.what,
                self.failures.len(),
                self.attempts(),
                self.failures.join("\n  ")
            );
        }
        Ok(())
    }

    /// Whether each of `names` answered at least once.
    pub fn every_backend_answered(&self, names: &[&str]) -> bool {
        names
            .iter()
            .all(|n| self.bodies.contains(&format!("hello from backend {n}")))
    }

    /// Fails unless each of `names` answered at least once, and nothing else answered.
    pub fn check_every_backend_answered(&self, names: &[&str]) -> Result<()> {
        for b in &self.bodies {
            if !names
                .iter()
                .any(|n| *b == format!("hello from backend {n}"))
            {
                bail!("{}: unexpected answer {b:?}\n{}", self.what, self.summary());
            }
        }
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !self.bodies.contains(&format!("hello from backend {n}")))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: {missing:?} never answered in {} answered page loads. The client made \
                 them all through the descriptor it holds; a C tor client keeps the one it \
                 fetched until the next time period or until all its intro points fail, so a \
                 backend missing from it stays unreachable for that client.\n{}",
                self.what,
                self.bodies.len(),
                self.summary()
            );
        }
        Ok(())
    }
}

/// One page load: `GET /` from `onion` through the network's C tor client, on fresh circuits
/// (a random SOCKS username), within [`PAGE_LOAD_TIMEOUT`]; no retry. The client's
/// descriptor cache is left alone: it is used, or filled, as a real client's would be.
pub async fn page_load(net: &TestNet, onion: &str) -> Result<String> {
    let isolation = format!("load-{:016x}", rand::random::<u64>());
    let attempt = tokio::time::timeout(PAGE_LOAD_TIMEOUT, async {
        let mut stream = socks::connect(net.socks_port(), onion, 80, &isolation).await?;
        http::get(&mut stream, onion, "/").await
    })
    .await;
    match attempt {
        Ok(Ok(resp)) if resp.status == 200 => Ok(resp.body),
        Ok(Ok(resp)) => bail!("HTTP status {}", resp.status),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("no answer within {PAGE_LOAD_TIMEOUT:?}"),
    }
}

/// `n` page loads of `onion`, one after the other, each a single attempt; counted, never
/// retried.
pub async fn page_loads(net: &TestNet, onion: &str, n: usize, what: &str) -> PageLoads {
    let mut loads = PageLoads::new(what);
    for _ in 0..n {
        loads.record(page_load(net, onion).await);
    }
    loads
}

/// "Descriptor not found" answers tolerated in [`first_page_load`]: a C tor client fetches
/// from one of the 6 HSDirs of its fetch set (`hsdir_spread_fetch` 3 × 2 replicas) and does
/// not ask an HSDir again for 15 minutes after a failed fetch, so a user reloading right after
/// the first publication can meet each HSDir that has not got the descriptor yet once.
pub const FIRST_LOAD_NOT_FOUND_TOLERATED: usize = 6;
/// Other failures tolerated in [`first_page_load`]: the one stalled rendezvous in ten loads
/// of [`tolerated_failures`].
pub const FIRST_LOAD_OTHER_FAILURES_TOLERATED: usize = 1;

/// How long [`first_page_load`] keeps reloading: design §5 allows ~30 s per client request on
/// this network.
pub const FIRST_LOAD_BUDGET: Duration = Duration::from_secs(30);

/// The first page load of a new user, right after the frontend's first publication: reloads
/// on failure, as that user would, for up to [`FIRST_LOAD_BUDGET`]. While the first descriptor is still reaching the HSDirs, the
/// client may be told "descriptor not found" ([`FIRST_LOAD_NOT_FOUND_TOLERATED`] times at
/// most); other failures are bounded by [`FIRST_LOAD_OTHER_FAILURES_TOLERATED`]. Returns the
/// body and the counted loads (printed).
pub async fn first_page_load(net: &TestNet, onion: &str) -> Result<(String, PageLoads)> {
    let budget = FIRST_LOAD_BUDGET;
    let mut loads = PageLoads::new(format!("first page load of {onion}"));
    let deadline = Instant::now() + budget;
    let (mut not_found, mut other) = (0, 0);
    loop {
        match page_load(net, onion).await {
            Ok(body) => {
                loads.record(Ok(body.clone()));
                eprintln!(
                    "{}; of the failures {not_found} \"descriptor not found\" (tolerated \
                     {FIRST_LOAD_NOT_FOUND_TOLERATED}), {other} other (tolerated \
                     {FIRST_LOAD_OTHER_FAILURES_TOLERATED})",
                    loads.summary()
                );
                return Ok((body, loads));
            }
            Err(e) => {
                // tor's extended SOCKS error 0xF0 (see socks::reply_meaning).
                if format!("{e:#}").contains("(0xF0)") {
                    not_found += 1;
                } else {
                    other += 1;
                }
                loads.record(Err(e));
            }
        }
        if not_found > FIRST_LOAD_NOT_FOUND_TOLERATED
            || other > FIRST_LOAD_OTHER_FAILURES_TOLERATED
            || Instant::now() > deadline
        {
            bail!(
                "a new client could not load {onion} after the first publication: \
                 {not_found} \"descriptor not found\" ({FIRST_LOAD_NOT_FOUND_TOLERATED} \
                 tolerated), {other} other failures ({FIRST_LOAD_OTHER_FAILURES_TOLERATED} \
                 tolerated), budget {budget:?}:\n  {}",
                loads.failures.join("\n  ")
            );
        }
        // A user does not reload within the same instant; this also keeps instant refusals
        // from using up the budget in a spin.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The descriptor a C tor client holds for a service, decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldDescriptor {
    /// The time period whose blinded key signed it.
    pub period: u64,
    /// Its revision counter.
    pub revision: u64,
    /// Intro points listed in it.
    pub intro_points: usize,
}

/// The descriptor of `onion` the network's C tor client holds in its cache (`GETINFO
/// hs/client/desc/id/<address>`), verified and decrypted; `None` if it holds none — C tor
/// also answers so once the one it has expired (its consensus reached the next time period).
pub async fn client_descriptor(net: &TestNet, onion: &str) -> Result<Option<HeldDescriptor>> {
    let bare = onion.strip_suffix(".onion").unwrap_or(onion);
    let key = format!("hs/client/desc/id/{bare}");
    let mut ctl = net.client_control().await?;
    let reply = ctl.command(&format!("GETINFO {key}")).await?;
    if !reply.is_ok() {
        if reply.summary().contains("Not found in cache") {
            return Ok(None);
        }
        bail!("GETINFO {key}: {}", reply.summary());
    }
    let prefix = format!("{key}=");
    let text = reply
        .lines
        .iter()
        .find_map(|l| {
            let inline = l.text.strip_prefix(&prefix)?;
            Some(l.data.clone().unwrap_or_else(|| inline.to_owned()))
        })
        .with_context(|| format!("GETINFO {key}: no value in {}", reply.summary()))?;
    let now = SystemTime::now();
    let current = wall_clock_period_at(now)?;
    for period in [current.prev(), Some(current), current.next()]
        .into_iter()
        .flatten()
    {
        if let Ok(d) = fixtures::decrypt(&text, onion, period, now) {
            return Ok(Some(HeldDescriptor {
                period: period.interval_num(),
                revision: d.revision_counter,
                intro_points: d.intro_points,
            }));
        }
    }
    bail!("the C tor client holds a descriptor of {onion} that verifies for no period near now")
}

/// The test network's time period at `when` by the wall clock (C tor test networks: 8-minute
/// periods, see [`fixtures::TIME_PERIOD_LENGTH_SECS`]).
fn wall_clock_period_at(when: SystemTime) -> Result<TimePeriod> {
    TimePeriod::new(
        Duration::from_secs(TIME_PERIOD_LENGTH_SECS),
        when,
        Duration::from_secs(TIME_PERIOD_OFFSET_SECS),
    )
    .map_err(|e| anyhow!("time period: {e}"))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wall-clock time period now, and the seconds since it began and until the next begins.
pub fn period_position() -> (u64, u64, u64) {
    let now = unix_now();
    let current = (now - TIME_PERIOD_OFFSET_SECS) / TIME_PERIOD_LENGTH_SECS;
    let start = current * TIME_PERIOD_LENGTH_SECS + TIME_PERIOD_OFFSET_SECS;
    (current, now - start, start + TIME_PERIOD_LENGTH_SECS - now)
}

/// How long after a period begins by the wall clock the daemon and the C tor client may
/// still be in the previous one: they move when a consensus whose valid-after is past the
/// boundary reaches them (20 s voting here; clients fetch a new consensus up to about a
/// minute after it is made).
pub const PERIOD_SWITCH_LAG: Duration = Duration::from_secs(60);

/// Waits (printing why) until the wall clock is at least [`PERIOD_SWITCH_LAG`] into a time
/// period and at least `room` before its end, so that a check needing `room` runs within one
/// period for the daemon and the client alike; returns that period. `room` must leave some of
/// the 480-s period.
///
/// This models nothing and hides nothing: it only places a check where a period change cannot
/// make it meaningless (a C tor client refetches at a period start, which would replace the
/// descriptor whose content the check is about).
pub async fn wait_for_room_in_period(room: Duration, why: &str) -> Result<u64> {
    let lag = PERIOD_SWITCH_LAG.as_secs();
    if lag + room.as_secs() >= TIME_PERIOD_LENGTH_SECS {
        bail!("no period has {room:?} after a {lag}-s switch lag");
    }
    loop {
        let (current, since, until) = period_position();
        if since >= lag && until >= room.as_secs() {
            return Ok(current);
        }
        let wait = if since < lag {
            lag - since
        } else {
            until + lag
        };
        eprintln!(
            "waiting {wait} s so that {why} runs within one time period (period {current}: \
             {since} s in, next in {until} s; the check needs {} s)",
            room.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Between two NEWNYMs. tor applies at most one NEWNYM per 10 s and delays the next one
/// (design §3): a load sent sooner would reuse the previous client's descriptor and circuits.
/// The wait models the time between two new users' visits; nothing in the product waits.
pub const NEWNYM_GAP: Duration = Duration::from_millis(10_500);

/// How long the C tor client may take to apply a NEWNYM (it empties its descriptor cache).
/// The NEWNYM models a new user: a client that never fetched the frontend's descriptor and
/// must take whatever the HSDirs serve now. Only checked, never retried.
pub const NEWNYM_APPLIED_WITHIN: Duration = Duration::from_secs(3);

/// Makes the network's C tor client a new user of `onion`: waits out [`NEWNYM_GAP`] since
/// `last_newnym`, sends NEWNYM (recorded in `last_newnym`) and waits until its descriptor
/// cache no longer holds `onion`'s, failing if that takes more than [`NEWNYM_APPLIED_WITHIN`].
///
/// Before that, no new client starts from 10 s before a time-period boundary until
/// [`PERIOD_SWITCH_LAG`] after it; returns the seconds paused for that, which callers say.
/// These networks are young: without a shared random value nobody publishes a period before
/// the consensus begins it (a C tor service neither), so a client whose consensus moved
/// first finds no descriptor (SOCKS 0xF0) for those seconds. On a network with a shared
/// random value, as the public one, the next period's descriptor is on its HSDirs hours
/// before it begins.
pub async fn become_new_client(
    net: &TestNet,
    onion: &str,
    last_newnym: &mut Option<Instant>,
) -> Result<u64> {
    if let Some(t) = *last_newnym {
        tokio::time::sleep_until((t + NEWNYM_GAP).into()).await;
    }
    let (_, since, until) = period_position();
    let lag = PERIOD_SWITCH_LAG.as_secs();
    let pause = if until < 10 {
        until + lag
    } else {
        lag.saturating_sub(since)
    };
    if pause > 0 {
        tokio::time::sleep(Duration::from_secs(pause)).await;
    }
    net.newnym().await?;
    *last_newnym = Some(Instant::now());
    let applied_by = Instant::now() + NEWNYM_APPLIED_WITHIN;
    while net.client_cached_descriptor(onion).await?.is_some() {
        if Instant::now() > applied_by {
            bail!(
                "the C tor client still holds the descriptor of {onion} \
                 {NEWNYM_APPLIED_WITHIN:?} after NEWNYM"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(pause)
}

/// Asserts that none of `pids` (a network's tor processes) is still running.
pub fn assert_no_process_left(pids: &[u32]) {
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "tor process {pid} is still running");
    }
}
