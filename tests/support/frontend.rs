//! The frontend under test: the `onionbalance` binary as a child process, and an Arti client
//! to reach onion services with.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use arti_client::config::TorClientConfigBuilder;
use arti_client::{StreamPrefs, TorClient};

use super::{http, TestNet};

/// How long the daemon may take to have every service published.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);
/// How long a stopped daemon may take to exit (the requirement is 5 s).
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

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
        let child = Command::new(env!("CARGO_BIN_EXE_onionbalance"))
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

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

    /// Waits until the published descriptors list the intro points of every configured
    /// backend (each has a descriptor, every period's descriptor holds all their intro points,
    /// and every HSDir of every period holds it); returns the time since start.
    ///
    /// [`Daemon::wait_published`] is enough to reach the frontend; this is for tests that
    /// need every backend to be reachable through it.
    pub async fn wait_all_backends_published(&self) -> Result<Duration> {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        loop {
            if let Ok(doc) = self.status().await {
                let svc = &doc["services"][0];
                let instances = svc["instances"].as_array().cloned().unwrap_or_default();
                let ipts: u64 = instances
                    .iter()
                    .filter_map(|i| i["introPointsNum"].as_u64())
                    .sum();
                let all_have = !instances.is_empty()
                    && instances
                        .iter()
                        .all(|i| i["introPointsNum"].as_u64() > Some(0));
                let periods = svc["periods"].as_array().cloned().unwrap_or_default();
                let complete = !periods.is_empty()
                    && periods.iter().all(|p| {
                        p["introPoints"].as_u64() == Some(ipts.min(20))
                            && p["hsdirs"].as_u64() > Some(0)
                            && p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
                    });
                if all_have && complete {
                    return Ok(self.started.elapsed());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "not every backend published within {PUBLISH_DEADLINE:?}; daemon log:\n{}",
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

/// GET / from `onion` through Arti, retrying on fresh isolation for up to 60 s.
pub async fn arti_fetch(
    client: &TorClient<tor_rtcompat::PreferredRuntime>,
    onion: &str,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut errors = Vec::new();
    while Instant::now() < deadline {
        let mut prefs = StreamPrefs::new();
        prefs.new_isolation_group();
        let attempt = tokio::time::timeout(Duration::from_secs(15), async {
            let mut stream = client.connect_with_prefs((onion, 80), &prefs).await?;
            http::get(&mut stream, onion, "/").await
        })
        .await;
        match attempt {
            Ok(Ok(resp)) if resp.status == 200 => return Ok(resp.body),
            Ok(Ok(resp)) => errors.push(format!("HTTP {}", resp.status)),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(_) => errors.push("attempt timed out".into()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("Arti could not reach {onion}: {errors:?}")
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
