//! Restricted discovery on a private Tor network: the operator authorizes clients with
//! `onionbalance client-auth add`, gives each the private key it printed, and only those
//! clients reach the backends through the frontend; `client-auth remove`, which reloads the
//! daemon itself, takes a client's access away without a restart.
//!
//! The clients are real ones and are used as such: the C tor client holds its key in a
//! `ClientOnionAuthDir` exactly as `client-auth add` told the operator to write it, the Arti
//! client reads its key from a C tor client keystore directory in its TOML, page loads are
//! single attempts that are counted, and each time the C tor client's descriptor cache is
//! dropped the test says which real-client behaviour that models.
//!
//! Needs C tor (`apt-get install tor`); without it the test fails, it never skips.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use onionbalance_testnet::frontend::{
    arti_client, arti_fetch, assert_no_process_left, page_loads, revisions, tolerated_failures,
    with_storage, Daemon, FIRST_LOAD_BUDGET, PUBLISH_DEADLINE,
};
use onionbalance_testnet::TestNet;

/// Page loads each authorized client makes: enough to count failures against
/// [`tolerated_failures`], few enough to keep the test short.
const AUTHORIZED_LOADS: usize = 10;
/// Single page loads an unauthorized client makes; every one must be refused.
const REFUSED_LOADS: usize = 3;
/// How long a refused page load may take: the refusal comes after one descriptor fetch.
const REFUSAL_WITHIN: Duration = Duration::from_secs(30);

/// Runs `onionbalance` with `args`, returning its output (failing on a non-zero exit unless
/// `may_fail`).
fn onionbalance(args: &[&str], may_fail: bool) -> Result<Output> {
    let out = Command::new(env!("CARGO_BIN_EXE_onionbalance"))
        .args(args)
        .env("RUST_LOG", "warn,tor_netdir=error")
        .output()
        .context("cannot run onionbalance")?;
    if !may_fail && !out.status.success() {
        bail!(
            "onionbalance {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Creates a directory of mode 0700 (tor and Arti refuse key directories others can read).
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Single page loads through the C tor client, each of which must be refused with SOCKS
/// extended error `code` (`0xF4` needs client authorization, `0xF5` wrong authorization).
async fn expect_refused(net: &TestNet, onion: &str, code: &str, who: &str) -> Result<()> {
    for i in 0..REFUSED_LOADS {
        match net.fetch_once(onion, "/", REFUSAL_WITHIN).await {
            Ok(f) => bail!("{who}: page load {i} was answered: {:?}", f.body),
            Err(e) => {
                let text = format!("{e:#}");
                eprintln!("{who}: page load {i} refused: {text}");
                ensure!(
                    text.contains(code),
                    "{who}: page load {i} failed, but not with {code}: {text}"
                );
            }
        }
    }
    Ok(())
}

/// Waits until the status shows every period rebuilt after `before` (revision above it) and
/// held by every HSDir of the period.
async fn wait_republished(daemon: &Daemon, before: &[(u64, u64)]) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let doc = daemon.status().await?;
        let periods = doc["services"][0]["periods"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let done = !periods.is_empty()
            && periods.iter().all(|p| {
                let tp = p["timePeriod"].as_u64();
                let rev = p["revisionCounter"].as_u64();
                let old = before.iter().find(|(t, _)| Some(*t) == tp).map(|(_, r)| *r);
                rev > old
                    && p["hsdirsAccepted"].as_u64() == p["hsdirs"].as_u64()
                    && p["hsdirs"].as_u64() > Some(0)
            });
        if done {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PUBLISH_DEADLINE {
            bail!(
                "not republished on every HSDir within {PUBLISH_DEADLINE:?}: {doc:#}\n{}",
                daemon.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole operator and client flow: authorize two clients; the authorized C tor and Arti
/// clients connect and an Arti client without a key is refused; `check --online` passes with
/// a client key and says what it cannot check without one; after `client-auth remove` and
/// SIGHUP the removed client is refused once its cached descriptor is gone and the other
/// still connects; a C tor client without a key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authorized_clients_reach_the_frontend() -> Result<()> {
    let t0 = Instant::now();
    let net = TestNet::builder().backends(2).start().await?;
    eprintln!("network ready after {:.1} s", t0.elapsed().as_secs_f64());
    let tor_pids = net.tor_pids();
    let work = net.run_dir().join("frontend");
    let front = net.frontend_address().to_owned();
    let names: Vec<&str> = (0..2).map(|i| net.backend_name(i)).collect();

    // The operator: a config with an authorized-clients directory, two clients added.
    Daemon::write_config(&net, &work, &[0, 1])?;
    let config = work.join("config.yaml");
    let yaml = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        format!("{yaml}  authorized-clients-dir: authorized_clients\n"),
    )?;
    let config_arg = config.display().to_string();
    let alice_dir = net.run_dir().join("alice-onion-auth");
    let bob_dir = net.run_dir().join("bob-onion-auth");
    private_dir(&alice_dir)?;
    private_dir(&bob_dir)?;
    let alice_key = alice_dir.join("alice.auth_private");
    let out = onionbalance(
        &["client-auth", "add", "-c", &config_arg, "--name", "alice"],
        false,
    )?;
    // Printed once, on stdout: this is what the operator hands to the client.
    let printed = String::from_utf8(out.stdout)?;
    eprintln!("client-auth add alice printed:\n{printed}");
    let host = front.trim_end_matches(".onion");
    let line = printed
        .lines()
        .find(|l| l.starts_with(&format!("{host}:descriptor:x25519:")))
        .context("client-auth add printed no .auth_private line")?;
    ensure!(
        printed.contains("ClientOnionAuthDir") && printed.contains("storage.keystore.ctor.clients")
    );
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&alice_key)?;
        writeln!(f, "{line}")?;
    }
    let bob_key = bob_dir.join("bob.auth_private");
    let bob_key_arg = bob_key.display().to_string();
    let out = onionbalance(
        &[
            "client-auth",
            "add",
            "-c",
            &config_arg,
            "--name",
            "bob",
            "--output",
            &bob_key_arg,
        ],
        false,
    )?;
    let printed = String::from_utf8(out.stdout)?;
    ensure!(
        !printed.contains(":descriptor:x25519:"),
        "with --output the private key must not be printed:\n{printed}"
    );
    let auth_dir = work.join("authorized_clients");
    for f in ["alice.auth", "bob.auth"] {
        let text = std::fs::read_to_string(auth_dir.join(f))?;
        ensure!(text.starts_with("descriptor:x25519:"), "{f}: {text}");
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&bob_key)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "bob's key file has mode {mode:o}");
    }
    let listed = String::from_utf8(
        onionbalance(&["client-auth", "list", "-c", &config_arg], false)?.stdout,
    )?;
    ensure!(
        listed.contains("2 authorized client(s)")
            && listed.contains("alice")
            && listed.contains("bob"),
        "{listed}"
    );
    // The frontend keeps no private key.
    for entry in std::fs::read_dir(&auth_dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        ensure!(
            !text.contains(host),
            "a private key line was kept by the frontend: {text}"
        );
    }

    // Alice's C tor client gets the line `client-auth add` printed in its ClientOnionAuthDir
    // now, well before it first connects, as a user sets up the key and visits later. (Set
    // right before the first page loads, C tor's first two loads stalled in one CI run.)
    let mut ctl = net.client_control().await?;
    ctl.command_ok(&format!(
        "SETCONF ClientOnionAuthDir=\"{}\"",
        alice_dir.display()
    ))
    .await?;

    let daemon = Daemon::launch(&net, &work, &[], &[])?;
    let published = daemon.wait_all_backends_published().await?;
    eprintln!(
        "published for 2 authorized clients {:.1} s after start",
        published.as_secs_f64()
    );
    let doc = daemon.status().await?;
    ensure!(doc["services"][0]["authorizedClients"] == 2, "{doc:#}");
    ensure!(
        daemon
            .log_text()
            .contains("restricted discovery for 2 authorized client(s)"),
        "{}",
        daemon.log_text()
    );

    // Alice's C tor client through the frontend. Her first visit is one page load, waited
    // for as long as a client request may take on this network (design §5): a new C tor
    // client's first rendezvous here can take ~20 s, because with 8 relays it often picks
    // its own guard as the rendezvous point, the relay closes that looping circuit, and tor
    // tries again (its log shows it; a browser waits up to 120 s). Then the counted loads,
    // each within the usual page-load limit.
    let first = net
        .fetch_once(&front, "/", FIRST_LOAD_BUDGET)
        .await
        .context("alice's first visit through the frontend")?;
    eprintln!(
        "alice (C tor): first visit answered in {:.1} s: {:?}",
        first.took.as_secs_f64(),
        first.body
    );
    let loads = page_loads(&net, &front, AUTHORIZED_LOADS, "alice (C tor)").await;
    eprintln!("{}", loads.summary());
    loads.check_failures(
        tolerated_failures(AUTHORIZED_LOADS),
        "an authorized C tor client through the frontend",
    )?;
    ensure!(
        names.iter().any(|n| loads.every_backend_answered(&[n])),
        "no backend answered alice: {}",
        loads.summary()
    );

    // Bob's Arti client, reading bob.auth_private from a C tor client keystore directory.
    let arti_toml = {
        let base = with_storage(net.arti_toml(), &net.run_dir().join("arti-bob"))?;
        let mut v: toml::Value = toml::from_str(&base)?;
        let storage = v
            .get_mut("storage")
            .and_then(toml::Value::as_table_mut)
            .context("storage table")?;
        let keystore: toml::Value = toml::from_str(&format!(
            "[ctor]\nclients = [{{ id = \"bob-onion-auth\", path = \"{}\" }}]\n",
            bob_dir.display()
        ))?;
        storage.insert("keystore".into(), keystore);
        toml::to_string(&v)?
    };
    // First an Arti client without the key: refused, as C tor was.
    {
        let keyless = arti_client(&with_storage(
            net.arti_toml(),
            &net.run_dir().join("arti-keyless"),
        )?)
        .await?;
        let attempt = tokio::time::timeout(REFUSAL_WITHIN, keyless.connect((front.as_str(), 80)))
            .await
            .context("an Arti client without a key neither connected nor was refused")?;
        match attempt {
            Ok(_) => bail!("an Arti client without a key connected to the frontend"),
            Err(e) => {
                let text = format!("{e}").to_lowercase();
                eprintln!("Arti client without a key refused: {e}");
                ensure!(
                    text.contains("authentication"),
                    "refused for another reason: {e}"
                );
            }
        }
    }
    let bob = arti_client(&arti_toml).await?;
    let body = arti_fetch(&bob, &front).await?;
    ensure!(names.iter().any(|n| body.contains(n)), "bob got {body:?}");

    // `check --online`: with alice's key every step passes; without a key it says what it
    // could not check.
    // The check is another program on the operator's machine: its own Arti state (the
    // daemon holds the lock on its own).
    let check_toml = work.join("check-arti.toml");
    std::fs::write(
        &check_toml,
        with_storage(net.arti_toml(), &net.run_dir().join("arti-check"))?,
    )?;
    let arti_cfg = check_toml.display().to_string();
    let alice_key_arg = alice_key.display().to_string();
    let check = |extra: &[&str]| -> Result<(bool, String)> {
        let mut args = vec![
            "check",
            "-c",
            &config_arg,
            "--online",
            "--arti-config",
            &arti_cfg,
            "--attempts",
            "2",
        ];
        args.extend_from_slice(extra);
        let out = onionbalance(&args, true)?;
        Ok((out.status.success(), String::from_utf8(out.stdout)?))
    };
    let (ok, text) = check(&["--client-key", &alice_key_arg])?;
    eprintln!("check --online --client-key alice:\n{text}");
    ensure!(ok && text.contains("through the frontend"), "{text}");
    let (_, text) = check(&[])?;
    ensure!(
        text.contains("published with restricted discovery") && text.contains("--client-key"),
        "{text}"
    );

    // Alice is removed; the command reloads the daemon (found by its status socket), which
    // republishes every period.
    let before = revisions(&daemon.status().await?);
    let log_from = daemon.log_text().len();
    let out = onionbalance(
        &[
            "client-auth",
            "remove",
            "-c",
            &config_arg,
            "--name",
            "alice",
        ],
        false,
    )?;
    let said = String::from_utf8(out.stdout)?;
    ensure!(
        said.contains(&format!("reloaded the daemon (process {}, ", daemon.pid())),
        "client-auth remove did not reload the daemon:\n{said}"
    );
    daemon
        .wait_log(
            log_from,
            "restricted discovery for 1 authorized client(s)",
            Duration::from_secs(10),
        )
        .await?;
    let took = wait_republished(&daemon, &before).await?;
    eprintln!(
        "republished without alice on every HSDir {:.1} s after the reload",
        took.as_secs_f64()
    );
    ensure!(daemon.status().await?["services"][0]["authorizedClients"] == 1);

    // Alice's client forgets the descriptor it holds, as a real client does when it restarts
    // (C tor keeps a working descriptor until the time period ends): it fetches the new one,
    // which her key no longer opens.
    net.newnym().await?;
    expect_refused(&net, &front, "0xF5", "alice after removal").await?;
    // Outside view through Arti and the HSDirs: alice's key reads nothing, bob's still works.
    let (ok, text) = check(&["--client-key", &alice_key_arg])?;
    ensure!(!ok && text.contains("cannot read it"), "{text}");
    let body = arti_fetch(&bob, &front).await?;
    ensure!(names.iter().any(|n| body.contains(n)), "bob got {body:?}");

    // A C tor client that never had a key: the same tor with an empty ClientOnionAuthDir and
    // no cached descriptor (NEWNYM), as a fresh client. Refused; the intro points stay hidden.
    let empty = net.run_dir().join("no-onion-auth");
    private_dir(&empty)?;
    ctl.command_ok(&format!(
        "SETCONF ClientOnionAuthDir=\"{}\"",
        empty.display()
    ))
    .await?;
    net.newnym().await?;
    expect_refused(&net, &front, "0xF4", "C tor client without a key").await?;
    let log = net.client_log_text();
    ensure!(
        log.contains("client authorization"),
        "the C tor client's log does not say why: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );

    drop(bob);
    drop(daemon);
    drop(net);
    assert_no_process_left(&tor_pids);
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
