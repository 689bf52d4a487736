//! Hostile local input, tried as an attacker with write access to the config or key files (or
//! the directory they are in) would try it: each attack is made against the real binary, and
//! each must end in bounded time and memory with a clear error, the daemon still serving.
//!
//! Memory is bounded by running each offline command under `prlimit --as` (a process that
//! needed more would fail to allocate and abort, which the test reports); time by a deadline
//! after which the process is killed and the test fails. Before these defences the alias
//! fan-out below took 4.9 GB and aborted, the deep nesting took 20 s, `/dev/zero` allocated
//! a gigabyte, and a FIFO hung the command for good.

#![forbid(unsafe_code)]

mod support;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use support::frontend::{assert_no_process_left, Daemon};
use support::TestNet;

const OB: &str = env!("CARGO_BIN_EXE_onionbalance");
const BACKEND_A: &str = "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad.onion";
/// Address space allowed to an offline command: ten times what a normal `check` uses.
const ADDRESS_SPACE: u64 = 1 << 30;
/// Time allowed to an offline command: a normal `check` takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `onionbalance args` with at most [`ADDRESS_SPACE`] bytes of address space, killed
/// after [`DEADLINE`]: (exit success, stdout + stderr, time taken).
fn bounded(args: &[&str], dir: &Path) -> Result<(bool, String, Duration)> {
    let started = Instant::now();
    let mut child = Command::new("prlimit")
        .arg(format!("--as={ADDRESS_SPACE}"))
        .arg("--")
        .arg(OB)
        .args(args)
        .current_dir(dir)
        .env_remove("ONIONBALANCE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run prlimit (util-linux)")?;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut text = String::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut text)?;
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut text)?;
            }
            ensure!(
                status.code().is_some(),
                "onionbalance {args:?} was killed by a signal ({status}): out of memory?\n{text}"
            );
            return Ok((status.success(), text, started.elapsed()));
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("onionbalance {args:?} still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A config in `dir` for one service whose key is `key` (a file name in `dir`).
fn config_with_key(dir: &Path, key: &str, extra: &str) -> Result<()> {
    std::fs::write(
        dir.join("config.yaml"),
        format!("services:\n- key: {key}\n  instances:\n  - address: {BACKEND_A}\n    name: node1\n{extra}"),
    )?;
    Ok(())
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) -> Result<()> {
    ensure!(
        Command::new("mkfifo").arg(path).status()?.success(),
        "mkfifo failed"
    );
    Ok(())
}

/// Every offline attack on the config and key files, through `onionbalance check`.
#[test]
fn hostile_config_and_key_files_fail_fast_and_small() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (ok, text, _) = bounded(
        &["config", "--no-interactive", "--output", "k", "-n", "1"],
        dir,
    )?;
    ensure!(ok, "{text}");
    let key = std::fs::read_dir(dir.join("k"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .context("no key written")?;
    std::fs::copy(&key, dir.join("frontend.key"))?;

    // A 96 KB file: one anchor of 4,000 values, referenced 8,000 times under an unknown key.
    let anchor: Vec<String> = (0..4000).map(|i| format!("{i}")).collect();
    let fan_out = format!(
        "x: &a [{}]\ny: [{}]\n",
        anchor.join(","),
        vec!["*a"; 8000].join(",")
    );
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("alias fan-out", fan_out, "aliases"),
        (
            "deep lists",
            format!("y: {}", "[".repeat(100_000)),
            "nest deeper",
        ),
        (
            "deep mappings",
            format!("y: {}", "{a: ".repeat(100_000)),
            "nest deeper",
        ),
    ];
    for (what, extra, expect) in cases.drain(..) {
        config_with_key(dir, "frontend.key", &extra)?;
        let (ok, text, took) = bounded(&["check", "-c", "config.yaml"], dir)?;
        eprintln!("{what}: refused in {:.2} s", took.as_secs_f64());
        ensure!(!ok && text.contains(expect), "{what}: {text}");
    }

    // Key paths that are not small regular files.
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.key"))?;
    mkfifo(&dir.join("fifo.key"))?;
    std::fs::File::create(dir.join("sparse.key"))?.set_len(3 << 30)?;
    for (key, expect) in [
        ("zero.key", "character device"),
        ("fifo.key", "FIFO"),
        ("sparse.key", "larger than"),
    ] {
        config_with_key(dir, key, "")?;
        let (ok, text, took) = bounded(&["check", "-c", "config.yaml"], dir)?;
        eprintln!("key {key}: refused in {:.2} s", took.as_secs_f64());
        ensure!(!ok && text.contains(expect), "{key}: {text}");
    }

    // Config paths that are not small regular files.
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml"))?;
    mkfifo(&dir.join("fifo.yaml"))?;
    for (cfg, expect) in [("zero.yaml", "character device"), ("fifo.yaml", "FIFO")] {
        let (ok, text, took) = bounded(&["check", "-c", cfg], dir)?;
        eprintln!("config {cfg}: refused in {:.2} s", took.as_secs_f64());
        ensure!(!ok && text.contains(expect), "{cfg}: {text}");
    }

    // Instance names that would inject torrc lines or escape `backend --write DIR`.
    for name in [
        "\"a\\nHiddenServiceNonAnonymousMode 1\"",
        "/tmp/escape",
        "../escape",
    ] {
        std::fs::write(
            dir.join("config.yaml"),
            format!("services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n    name: {name}\n"),
        )?;
        let (ok, text, _) = bounded(&["backend", "-c", "config.yaml", "--write", "out"], dir)?;
        ensure!(!ok && text.contains("`name:` must be"), "{name}: {text}");
    }
    ensure!(!dir.join("out").exists() && !Path::new("/tmp/escape").exists());
    ensure!(!dir.join("escape").exists());
    Ok(())
}

/// The running daemon under hostile reloads: SIGHUP while the config path is a FIFO, then
/// while it is an alias bomb; each reload is rejected with the reason, the daemon keeps
/// serving its status, and SIGTERM still stops it within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_reloads_leave_the_daemon_serving() -> Result<()> {
    let net = TestNet::builder().backends(1).start().await?;
    let tor_pids = net.tor_pids();
    let work = net.run_dir().join("frontend");
    let mut daemon = Daemon::start(&net, &work, &[0])?;
    daemon.wait_published().await?;
    let config = work.join("config.yaml");
    let good = std::fs::read_to_string(&config)?;

    // The config path becomes a FIFO nobody writes to.
    std::fs::remove_file(&config)?;
    mkfifo(&config)?;
    let from = daemon.log_text().len();
    daemon.sighup()?;
    let line = daemon
        .wait_log(from, "config reload rejected", Duration::from_secs(10))
        .await?;
    ensure!(line.contains("FIFO"), "{line}");
    ensure!(daemon.status().await?["services"][0]["onionAddress"].is_string());

    // An alias bomb.
    std::fs::remove_file(&config)?;
    let anchor: Vec<String> = (0..4000).map(|i| format!("{i}")).collect();
    std::fs::write(
        &config,
        format!(
            "{good}x: &a [{}]\ny: [{}]\n",
            anchor.join(","),
            vec!["*a"; 8000].join(",")
        ),
    )?;
    let from = daemon.log_text().len();
    daemon.sighup()?;
    let line = daemon
        .wait_log(from, "config reload rejected", Duration::from_secs(10))
        .await?;
    ensure!(line.contains("aliases"), "{line}");
    ensure!(daemon.status().await?["services"][0]["onionAddress"].is_string());
    if let Some(kb) = daemon.peak_rss_kb() {
        eprintln!("daemon peak RSS after the hostile reloads: {kb} kB");
        ensure!(kb < 200_000, "the daemon grew to {kb} kB");
    }

    // A FIFO again, and SIGTERM right after the SIGHUP: the stop is not held up.
    std::fs::remove_file(&config)?;
    mkfifo(&config)?;
    daemon.sighup()?;
    let took = daemon.stop()?;
    eprintln!("stopped {:.2} s after SIGTERM", took.as_secs_f64());
    drop(daemon);
    drop(net);
    assert_no_process_left(&tor_pids);
    Ok(())
}
