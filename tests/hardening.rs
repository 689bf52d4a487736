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

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use onionbalance_testnet::frontend::{assert_no_process_left, Daemon};
use onionbalance_testnet::TestNet;

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

/// The secret-looking tokens of a key file: every run of 16 or more base64/base32
/// characters in its text, and for a binary key the hex and base64 of its secret bytes.
fn secret_tokens(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut tokens: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .filter(|t| t.len() >= 16)
        .map(str::to_owned)
        .collect();
    if let Some(secret) = bytes.strip_prefix(b"== ed25519v1-secret: type0 ==\0\0\0") {
        tokens.push(hex::encode(secret)[..32].to_owned());
        tokens.push(data_encoding::BASE64.encode(secret)[..32].to_owned());
    }
    tokens
}

/// No message quotes a key: every key format (PKCS#8 PEM, C tor secret key, a client's
/// `.auth_private` and `.auth`) given as the config, an Arti TOML file, a frontend key or a
/// client file is refused with a configuration error (78) where it does not belong, and no
/// part of the key appears on stdout or stderr, whether refused or accepted.
#[test]
fn no_key_content_in_any_message() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let mut rng = rand::rng();
    let frontend = onionbalance::FrontendKey::generate(&mut rng);
    let pem = frontend.to_pkcs8_pem()?;
    let ctor = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys/ctor/hs_ed25519_secret_key"),
    )?;
    let client = onionbalance::client_auth::ClientSecret::generate(frontend.address(), &mut rng);
    let auth_private = client.auth_private_line();
    let auth = format!("{}\n", client.public());
    let keys: [(&str, &[u8]); 4] = [
        ("pkcs8.pem", pem.as_bytes()),
        ("hs_ed25519_secret_key", &ctor),
        ("alice.auth_private", auth_private.as_bytes()),
        ("alice.auth", auth.as_bytes()),
    ];
    std::fs::write(dir.join("frontend.key"), pem.as_bytes())?;
    let mut runs = 0;
    for (name, bytes) in keys {
        // The onion address in an `.auth_private` line is public (and the daemon names its
        // frontend in its log): only the key material counts.
        let frontend_host = frontend.address().to_string().replace(".onion", "");
        let tokens: Vec<String> = secret_tokens(bytes)
            .into_iter()
            .filter(|t| *t != frontend_host)
            .collect();
        ensure!(!tokens.is_empty(), "{name}: no tokens to look for");
        let key_dir = dir.join(format!("case-{name}"));
        std::fs::create_dir_all(key_dir.join("clients"))?;
        let key_path = key_dir.join(name);
        std::fs::write(&key_path, bytes)?;
        let key_arg = key_path.to_str().context("utf-8 path")?;
        // As a client file: the key's content as `clients/bob.auth`.
        std::fs::write(key_dir.join("clients/bob.auth"), bytes)?;
        std::fs::copy(dir.join("frontend.key"), key_dir.join("frontend.key"))?;
        config_with_key(
            &key_dir,
            "frontend.key",
            "  authorized-clients-dir: clients\n",
        )?;
        // As the frontend's key.
        let wrong_key_dir = key_dir.join("as-frontend-key");
        std::fs::create_dir_all(&wrong_key_dir)?;
        std::fs::write(wrong_key_dir.join("front.key"), bytes)?;
        config_with_key(&wrong_key_dir, "front.key", "")?;
        let good_config = dir.join("good");
        std::fs::create_dir_all(&good_config)?;
        std::fs::copy(dir.join("frontend.key"), good_config.join("frontend.key"))?;
        config_with_key(&good_config, "frontend.key", "")?;
        let good = good_config.join("config.yaml");
        let good = good.to_str().context("utf-8 path")?;
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("as -c of check", vec!["check", "-c", key_arg]),
            ("as -c of run", vec!["run", "-c", key_arg]),
            (
                "as --arti-config",
                vec!["run", "-c", good, "--arti-config", key_arg],
            ),
            ("as a client file", vec!["check", "-c", "config.yaml"]),
            (
                "as the frontend key",
                vec!["check", "-c", "as-frontend-key/config.yaml"],
            ),
        ];
        for (how, args) in cases {
            let out = Command::new(OB)
                .args(&args)
                .current_dir(&key_dir)
                .env_remove("ONIONBALANCE_CONFIG")
                .env("HOME", dir)
                .stdin(Stdio::null())
                .output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "{name} {how}: exit {:?}: {}",
                out.status.code(),
                text.trim()
            );
            for t in &tokens {
                ensure!(
                    !text.contains(t.as_str()),
                    "{name} {how}: the output quotes the key ({t}):\n{text}"
                );
            }
            // Where the key is the right kind for the slot, the command passes: a public
            // `.auth` file as a client file, a frontend key (either format) as the frontend key.
            let right_slot = (name == "alice.auth" && how == "as a client file")
                || (how == "as the frontend key" && !name.starts_with("alice"));
            if right_slot {
                ensure!(out.status.success(), "{name} {how}: refused:\n{text}");
            } else {
                ensure!(
                    out.status.code() == Some(78),
                    "{name} {how}: expected exit 78 (configuration error), got {:?}:\n{text}",
                    out.status.code()
                );
            }
            runs += 1;
        }
    }
    ensure!(runs == 20, "{runs} runs");
    Ok(())
}
