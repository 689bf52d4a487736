//! The operator's two ways in, run exactly as the README writes them: from source (`cargo
//! install`, the example unit) and from the Debian package. Each ends with the daemon started
//! the way its installed unit starts it (its `ExecStart`, `User=`, `Environment=` and
//! directories, read from the unit file), serving the frontend on a private Tor network to a
//! C tor client, and `onionbalance status` answering as root with no flags and with `-c`.
//! Then the container image made from the package runs against the same network.
//!
//! It installs system-wide (`/usr/local/bin`, `/etc/onionbalance`, a system user, the
//! package), so it runs only when asked: `scripts/ci-deb` runs it as root on CI's throwaway
//! machine, after building the package (`cargo test --test operator_install -- --ignored`).
//! Everything it installs is removed when it ends, pass or fail.
//!
//! There is no systemd here (CI runs in a container): the README's `systemctl` lines are the
//! only ones not run as written. `daemon-reload` has nothing to do; `enable --now` starts the
//! daemon as the unit says and waits for READY=1, as `systemctl` does; `status` checks that it
//! runs and shows its last STATUS= line. Two things model what an operator does between the
//! README's lines: the backends' `ob_config` is pointed at the frontend the wizard made (the
//! README's "Backends" steps), and a drop-in adds `--arti-config` for the private network to
//! the unit's `ExecStart` (what an operator of such a network would add).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use onionbalance_testnet::frontend::{
    first_page_load, page_loads, tolerated_failures, with_storage,
};
use onionbalance_testnet::systemd::SystemdStandIn;
use onionbalance_testnet::TestNet;

const README: &str = include_str!("../README.md");
/// Where the drop-in for the private network goes, for either layout.
const DROP_IN_DIR: &str = "/etc/systemd/system/onionbalance.service.d";
/// The private network's Arti configuration, readable by the daemon's user.
const TESTNET_ARTI: &str = "/etc/onionbalance/testnet-arti.toml";
/// systemd's readiness socket stand-in (the daemon's user must be able to write to it).
const NOTIFY_SOCKET: &str = "/run/onionbalance-test-notify.sock";
/// How long `systemctl enable --now` may take: the daemon is ready once Tor is bootstrapped.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The shell lines of the README's fenced block that follows `<!-- steps: NAME -->`, with
/// comments and blank lines dropped and `\` continuations joined.
fn readme_steps(name: &str) -> Result<Vec<String>> {
    let marker = format!("<!-- steps: {name} -->");
    let after = README
        .split_once(&marker)
        .with_context(|| format!("README.md has no {marker}"))?
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .with_context(|| format!("no ```sh block after {marker}"))?
        .0;
    let mut steps = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let step = std::mem::take(&mut pending);
        // A comment after the command stays: bash ignores it.
        if !step.trim().is_empty() && !step.trim_start().starts_with('#') {
            steps.push(step.trim().to_owned());
        }
    }
    ensure!(!steps.is_empty(), "the {name} steps are empty");
    Ok(steps)
}

/// Runs `script` with bash (`set -euo pipefail`) in `dir` with `env`; fails with its output.
fn shell(script: &str, dir: &Path, env: &[(&str, String)]) -> Result<String> {
    eprintln!("$ {}", script.replace('\n', "\n$ "));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .context("cannot run bash")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    ensure!(
        out.status.success(),
        "failed ({}):\n{script}\n{text}",
        out.status
    );
    Ok(text)
}

/// The `[Service]` settings of a unit file and its drop-ins, as systemd merges them: a list
/// setting (`Environment=`, `ExecStart=`) accumulates, an empty assignment resets it.
fn unit_settings(unit: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let mut files = vec![unit.to_owned()];
    if let Ok(entries) = std::fs::read_dir(DROP_IN_DIR) {
        let mut drop_ins: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service || line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let values = settings.entry(key.to_owned()).or_default();
            if value.is_empty() {
                values.clear();
            } else {
                values.push(value.to_owned());
            }
        }
    }
    Ok(settings)
}

/// The one value of `key` (the last one given).
fn setting<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> Result<&'a str> {
    settings
        .get(key)
        .and_then(|v| v.last())
        .map(String::as_str)
        .with_context(|| format!("the unit has no {key}="))
}

/// The daemon, started as its unit says.
struct UnitProcess {
    /// The daemon (setpriv execs it, so this is its PID).
    child: Child,
    /// What it told "systemd".
    notify: SystemdStandIn,
}

impl UnitProcess {
    /// `systemctl start`: the directories the unit asks for, its user, environment, umask
    /// and `ExecStart`; returns once READY=1 arrives (or fails after [`READY_WITHIN`]).
    async fn start(unit: &Path) -> Result<UnitProcess> {
        let s = unit_settings(unit)?;
        ensure!(setting(&s, "Type")? == "notify", "Type= is not notify");
        let user = setting(&s, "User")?.to_owned();
        let group = setting(&s, "Group")?.to_owned();
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("USER".into(), user.clone()),
            ("LOGNAME".into(), user.clone()),
            ("HOME".into(), "/".into()),
            ("NOTIFY_SOCKET".into(), NOTIFY_SOCKET.into()),
        ];
        for (key, base, var) in [
            ("StateDirectory", "/var/lib", "STATE_DIRECTORY"),
            ("RuntimeDirectory", "/run", "RUNTIME_DIRECTORY"),
            ("ConfigurationDirectory", "/etc", "CONFIGURATION_DIRECTORY"),
        ] {
            let Ok(name) = setting(&s, key) else { continue };
            let dir = Path::new(base).join(name);
            let mode = setting(&s, &format!("{key}Mode")).unwrap_or("0755");
            let dir_s = dir.display().to_string();
            // As systemd (exec_directory setup): a missing directory is made with the mode
            // asked for; State/Runtime directories are then given to User= (recursively),
            // while a ConfigurationDirectory= is made root's and an existing one left as it
            // is (a service does not own its configuration).
            let configuration = key == "ConfigurationDirectory";
            if !dir.exists() {
                std::fs::create_dir_all(&dir)?;
                run_ok("chmod", &[mode, dir_s.as_str()])?;
                if configuration {
                    run_ok("chown", &["root:root", dir_s.as_str()])?;
                }
            }
            if !configuration {
                let owner = format!("{user}:{group}");
                run_ok("chown", &["-R", owner.as_str(), dir_s.as_str()])?;
            }
            env.push((var.into(), dir_s));
        }
        for assignment in s.get("Environment").into_iter().flatten() {
            for pair in assignment.split_whitespace() {
                if let Some((k, v)) = pair.split_once('=') {
                    env.push((k.into(), v.trim_matches('"').into()));
                }
            }
        }
        let exec = setting(&s, "ExecStart")?;
        let argv: Vec<&str> = exec.split_whitespace().collect();
        let umask = setting(&s, "UMask").unwrap_or("0022");
        let _ = std::fs::remove_file(NOTIFY_SOCKET);
        let notify = SystemdStandIn::bind(Path::new(NOTIFY_SOCKET))?;
        run_ok("chmod", &["0666", NOTIFY_SOCKET])?;
        eprintln!("starting as {user}:{group}, umask {umask}: {exec}");
        let child = Command::new("setpriv")
            .args([
                "--reuid",
                &user,
                "--regid",
                &group,
                "--init-groups",
                "--",
                "sh",
                "-c",
                &format!("umask {umask} && exec \"$@\""),
                "sh",
            ])
            .args(&argv)
            .current_dir("/")
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot run setpriv (util-linux)")?;
        let mut started = UnitProcess { child, notify };
        let begun = Instant::now();
        if let Err(e) = started
            .notify
            .wait_for(0, |m| m.contains("READY=1"), READY_WITHIN)
            .await
        {
            started.stop();
            return Err(e.context("`systemctl enable --now` would still be waiting"));
        }
        eprintln!(
            "READY=1 after {:.1} s; systemd was told {:?}",
            begun.elapsed().as_secs_f64(),
            started.notify.messages()
        );
        Ok(started)
    }

    /// `systemctl status`: the daemon runs; its last STATUS= line.
    fn status(&mut self) -> Result<String> {
        ensure!(
            self.child.try_wait()?.is_none(),
            "the daemon is not running"
        );
        let last = self
            .notify
            .messages()
            .iter()
            .rev()
            .find_map(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("STATUS="))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        eprintln!("     Active: active (running); Status: \"{last}\"");
        Ok(last)
    }

    /// `systemctl stop`: SIGTERM, as the unit's KillMode, then wait.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UnitProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd args`; fails unless it succeeds.
fn run_ok(cmd: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {cmd}"))?;
    ensure!(status.success(), "{cmd} {args:?} failed: {status}");
    Ok(())
}

/// Removes what a layout installed, when dropped (pass or fail).
struct Uninstall(&'static str);

impl Drop for Uninstall {
    fn drop(&mut self) {
        eprintln!("== removing the {} install", self.0);
        let script = match self.0 {
            "source" => {
                "cargo uninstall --root /usr/local onionbalance >/dev/null 2>&1 || true
                 rm -f /etc/systemd/system/onionbalance.service
                 userdel onionbalance 2>/dev/null || true"
            }
            _ => {
                "dpkg --purge onionbalance-arti >/dev/null 2>&1 || true
                 userdel onionbalance 2>/dev/null || true"
            }
        };
        let common = format!(
            "rm -rf {DROP_IN_DIR} /etc/onionbalance /var/lib/onionbalance /run/onionbalance {NOTIFY_SOCKET}"
        );
        let _ = Command::new("sh")
            .args(["-c", &format!("{script}\n{common}")])
            .status();
    }
}

/// The frontend address of the config the wizard wrote.
fn frontend_of(config: &Path) -> Result<String> {
    let cfg = onionbalance::Config::load(config)
        .with_context(|| format!("cannot load {}", config.display()))?;
    let svc = cfg.services.first().context("no service in the config")?;
    Ok(svc.address().to_string())
}

/// Runs one layout's README steps, then checks the frontend through a C tor client and
/// `onionbalance status`.
async fn walk(net: &mut TestNet, layout: &'static str, steps: &[String]) -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo.join("target"));
    let env: Vec<(&str, String)> = vec![
        // The README's steps name the backends by these.
        ("NODE1", net.backend_address(0).to_owned()),
        ("NODE2", net.backend_address(1).to_owned()),
        // `cargo install` reuses the release build `scripts/build-deb` just made.
        ("CARGO_TARGET_DIR", target.display().to_string()),
        ("DEBIAN_FRONTEND", "noninteractive".to_owned()),
    ];
    let _uninstall = Uninstall(layout);
    let mut daemon: Option<UnitProcess> = None;
    let mut batch: Vec<&str> = Vec::new();
    for step in steps {
        let Some(systemctl) = step.strip_prefix("systemctl ") else {
            batch.push(step);
            continue;
        };
        if !batch.is_empty() {
            shell(&batch.join("\n"), repo, &env)?;
            batch.clear();
        }
        eprintln!("$ systemctl {systemctl}   (emulated: no systemd here)");
        let words: Vec<&str> = systemctl.split_whitespace().collect();
        match words.as_slice() {
            ["daemon-reload"] => {}
            ["enable", "--now", "onionbalance"] => {
                let config = Path::new("/etc/onionbalance/config.yaml");
                // The README's "Backends" steps: each backend's ob_config names the
                // frontend the wizard made, and its tor is restarted.
                let frontend = frontend_of(config)?;
                net.set_frontend(&frontend).await?;
                // The private network's Arti configuration, for the daemon's user, and a
                // drop-in giving it to the unit's ExecStart.
                let unit = installed_unit()?;
                let settings = unit_settings(&unit)?;
                let exec = setting(&settings, "ExecStart")?.to_owned();
                std::fs::write(
                    TESTNET_ARTI,
                    with_storage(net.arti_toml(), Path::new("/var/lib/onionbalance/testnet"))?,
                )?;
                run_ok("chown", &["onionbalance:onionbalance", TESTNET_ARTI])?;
                std::fs::create_dir_all(DROP_IN_DIR)?;
                std::fs::write(
                    Path::new(DROP_IN_DIR).join("testnet.conf"),
                    format!(
                        "[Service]\nExecStart=\nExecStart={exec} --arti-config {TESTNET_ARTI}\n"
                    ),
                )?;
                daemon = Some(UnitProcess::start(&unit).await?);
            }
            ["status", .., "onionbalance"] => {
                daemon
                    .as_mut()
                    .context("`systemctl status` before the daemon was started")?
                    .status()?;
            }
            other => bail!("a README step this test cannot emulate: systemctl {other:?}"),
        }
    }
    if !batch.is_empty() {
        shell(&batch.join("\n"), repo, &env)?;
    }
    let mut daemon = daemon.context("the README's steps never start the daemon")?;
    // Users come once the descriptor is out: wait for systemd to hear that every backend is
    // in it and every HSDir holds it (a C tor client that asks an HSDir too early does not
    // ask it again for 15 minutes).
    daemon
        .notify
        .wait_for(
            0,
            |m| {
                m.lines().any(|l| {
                    l.strip_prefix("STATUS=published 1/1 services: 2/2 backends, ")
                        .and_then(|rest| rest.strip_suffix(" HSDirs"))
                        .and_then(|n| n.split_once('/'))
                        .is_some_and(|(a, b)| a == b)
                })
            },
            Duration::from_secs(60),
        )
        .await?;

    // A C tor client reaches the frontend, and every backend answers.
    let frontend = net.frontend_address().to_owned();
    first_page_load(net, &frontend).await?;
    let loads = page_loads(net, &frontend, 10, &format!("{layout}: page loads")).await;
    eprintln!("{}", loads.summary());
    loads.check_failures(tolerated_failures(10), "through the installed daemon")?;

    // `onionbalance status` as root, from a directory without a config.yaml: with no flags
    // (the packaged default socket) and with -c.
    let elsewhere = tempfile::tempdir()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for args in [
        vec!["status"],
        vec!["status", "-c", "/etc/onionbalance/config.yaml"],
    ] {
        loop {
            let out = Command::new("onionbalance")
                .args(&args)
                .current_dir(elsewhere.path())
                .env_remove("ONIONBALANCE_CONFIG")
                .env_remove("ONIONBALANCE_STATUS_SOCKET_LOCATION")
                .output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && text.contains(&frontend) {
                eprintln!("$ onionbalance {}\n{text}", args.join(" "));
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "`onionbalance {}` as root: {}\n{text}",
                args.join(" "),
                out.status
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let said = daemon.status()?;
    ensure!(
        said.starts_with("published 1/1 services"),
        "systemctl status would show {said:?}"
    );
    daemon.stop();
    Ok(())
}

/// podman as `scripts/container-test` runs it (runc, explicit ulimits: see that script).
const PODMAN: &[&str] = &["podman", "--runtime", "runc"];
const PODMAN_RUN: &[&str] = &[
    "run",
    "--network=host",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
];

/// Runs podman with `args`; its stdout, or an error with its output.
fn podman(args: &[&str]) -> Result<String> {
    let out = Command::new(PODMAN[0])
        .args(&PODMAN[1..])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run podman")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "podman {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The container image built from the package (`scripts/container-test`), run against the
/// private network: its volumes are a config directory written by the image's own wizard
/// and a state directory, as docs/packaging.md shows; a C tor client reaches the frontend
/// and `onionbalance status` inside the container answers.
async fn container(net: &mut TestNet, image: &str) -> Result<()> {
    let work = tempfile::tempdir()?;
    let etc = work.path().join("etc");
    let state = work.path().join("state");
    std::fs::create_dir_all(&etc)?;
    std::fs::create_dir_all(&state)?;
    // The image's user owns both volumes (its uid comes from the package's sysusers.d).
    let id = |flag: &'static str| {
        let mut args = PODMAN_RUN.to_vec();
        args.extend(["--rm", "--entrypoint", "id", image, flag]);
        podman(&args)
    };
    let (uid, gid) = (id("-u")?, id("-g")?);
    let owner = format!("{}:{}", uid.trim(), gid.trim());
    for dir in [&etc, &state] {
        run_ok("chown", &[owner.as_str(), &dir.display().to_string()])?;
    }
    let etc_volume = format!("{}:/etc/onionbalance", etc.display());
    let state_volume = format!("{}:/var/lib/onionbalance", state.display());
    let volumes = ["-v", etc_volume.as_str(), "-v", state_volume.as_str()];
    let mut wizard = PODMAN_RUN.to_vec();
    wizard.extend(["--rm"]);
    wizard.extend(volumes);
    wizard.extend([
        image,
        "config",
        "--output",
        "/etc/onionbalance",
        "--no-interactive",
    ]);
    eprintln!("{}", podman(&wizard)?);
    // As the README's steps: the backends' addresses in place of the placeholders, with a
    // status socket in the state volume; the backends pointed at the new frontend.
    let config = etc.join("config.yaml");
    let text = std::fs::read_to_string(&config)?
        .replace("TODO-node1-onion-address", net.backend_address(0))
        .replace("TODO-node2-onion-address", net.backend_address(1));
    std::fs::write(
        &config,
        format!("status-socket-location: /var/lib/onionbalance/status.sock\n{text}"),
    )?;
    let frontend = frontend_of(&config)?;
    net.set_frontend(&frontend).await?;
    let arti = etc.join("testnet-arti.toml");
    std::fs::write(
        &arti,
        with_storage(net.arti_toml(), Path::new("/var/lib/onionbalance/testnet"))?,
    )?;
    for f in [&config, &arti] {
        run_ok("chown", &[owner.as_str(), &f.display().to_string()])?;
    }
    let name = format!("onionbalance-test-{}", std::process::id());
    let mut daemon = PODMAN_RUN.to_vec();
    daemon.extend(["-d", "--name", name.as_str()]);
    daemon.extend(volumes);
    daemon.extend([
        image,
        "run",
        "-c",
        "/etc/onionbalance/config.yaml",
        "--data-dir",
        "/var/lib/onionbalance",
        "--arti-config",
        "/etc/onionbalance/testnet-arti.toml",
    ]);
    podman(&daemon)?;
    /// Removes the container, pass or fail.
    struct Remove<'a>(&'a str);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = podman(&["rm", "-f", "-t", "5", self.0]);
        }
    }
    let _remove = Remove(&name);
    // Published, as the status inside the container says; then a client's page loads.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = podman(&["exec", &name, "onionbalance", "status", "--json"]);
        let published = status.as_ref().is_ok_and(|s| {
            serde_json::from_str::<serde_json::Value>(s)
                .is_ok_and(|v| onionbalance_testnet::frontend::all_backends_published(&v))
        });
        if published {
            break;
        }
        if Instant::now() > deadline {
            let logs = podman(&["logs", &name]).unwrap_or_default();
            bail!("the container did not publish within 90 s: {status:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    first_page_load(net, &frontend).await?;
    let loads = page_loads(net, &frontend, 10, "container: page loads").await;
    eprintln!("{}", loads.summary());
    loads.check_failures(tolerated_failures(10), "through the container")?;
    eprintln!(
        "$ podman exec {name} onionbalance status\n{}",
        podman(&["exec", &name, "onionbalance", "status"])?
    );
    // SIGTERM (the image's STOPSIGNAL) stops it within the grace time, exit status 0.
    podman(&["stop", "-t", "10", &name])?;
    let exit = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name])?;
    ensure!(
        exit.trim() == "0",
        "the container exited {} on SIGTERM:\n{}",
        exit.trim(),
        podman(&["logs", &name]).unwrap_or_default()
    );
    Ok(())
}

/// The unit file the layout installed: the operator's copy in /etc, else the package's.
fn installed_unit() -> Result<PathBuf> {
    [
        "/etc/systemd/system/onionbalance.service",
        "/usr/lib/systemd/system/onionbalance.service",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .context("no onionbalance.service installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs onionbalance system-wide as root: scripts/ci-deb runs it"]
async fn readme_install_paths_work_as_written() -> Result<()> {
    let whoami = Command::new("id").arg("-u").output()?;
    ensure!(
        String::from_utf8_lossy(&whoami.stdout).trim() == "0",
        "run as root (it installs system-wide): scripts/ci-deb does"
    );
    for busy in [
        "/etc/onionbalance",
        "/usr/local/bin/onionbalance",
        "/usr/bin/onionbalance",
    ] {
        ensure!(
            !Path::new(busy).exists(),
            "{busy} exists: this machine has an onionbalance install, which this test would remove"
        );
    }
    let source = readme_steps("source")?;
    let package = readme_steps("package")?;
    let mut net = TestNet::builder().backends(2).start().await?;
    let tor_pids = net.tor_pids();
    eprintln!("== from source, as the README says");
    walk(&mut net, "source", &source).await?;
    eprintln!("== from the Debian package, as the README says");
    walk(&mut net, "package", &package).await?;
    // scripts/ci-deb builds the image from the package first and names it here.
    let image = std::env::var("ONIONBALANCE_TEST_IMAGE").context(
        "ONIONBALANCE_TEST_IMAGE is not set: scripts/ci-deb builds the container image \
         (scripts/container-test) and gives its name",
    )?;
    eprintln!("== the container image {image}, as docs/packaging.md runs it");
    container(&mut net, &image).await?;
    drop(net);
    onionbalance_testnet::frontend::assert_no_process_left(&tor_pids);
    Ok(())
}
