//! The command line, offline: the wizard and `check` (with placeholders, then filled in),
//! `onionbalance-config`, `backend`, `arti-config --chutney`, and exit codes.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Output};

const OB: &str = env!("CARGO_BIN_EXE_onionbalance");
const OB_CONFIG: &str = env!("CARGO_BIN_EXE_onionbalance-config");
const BACKEND_A: &str = "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad.onion";
const BACKEND_B: &str = "nbvwr3rbofr42gr47qfcjohqxq75h7xbzi4oywh2rvigbmqmizqjodid.onion";

fn run(cmd: &str, args: &[&str], dir: &Path) -> (Output, String) {
    run_env(cmd, args, dir, &[])
}

/// [`run`] with environment variables set.
fn run_env(cmd: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> (Output, String) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .env_remove("ONIONBALANCE_CONFIG")
        .env_remove("ONIONBALANCE_STATUS_SOCKET_LOCATION")
        .env_remove("ONIONBALANCE_LOG_LEVEL")
        .env_remove("ONIONBALANCE_LOG_LOCATION")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Replaces the wizard's placeholder of each named instance with an address, as an operator
/// does once the backends are set up.
fn fill_in(config: &Path, addresses: &[(&str, &str)]) {
    let mut yaml = std::fs::read_to_string(config).expect("config");
    for (name, address) in addresses {
        yaml = yaml.replace(&format!("TODO-{name}-onion-address"), address);
    }
    std::fs::write(config, yaml).expect("write config");
}

/// `config --no-interactive` writes a 0600 key named after the address it prints and a
/// config; `check` names the instances still to fill in and fails; once filled in it passes
/// and lists them; the wizard never overwrites.
#[test]
fn wizard_then_check() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &[
            "config",
            "--no-interactive",
            "--output",
            "cfg",
            "-n",
            "2",
            "-t",
            "web",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let addr = text
        .split_whitespace()
        .find(|w| w.len() == 62 && w.ends_with(".onion"))
        .expect("the wizard prints the frontend address")
        .to_owned();
    let key = tmp
        .path()
        .join("cfg")
        .join(format!("{}.key", addr.trim_end_matches(".onion")));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        text.contains("HiddenServiceOnionBalanceInstance 1")
            && text.contains(&format!("MasterOnionAddress {addr}")),
        "{text}"
    );

    let (out, text) = run(OB, &["check", "-c", "cfg/config.yaml"], tmp.path());
    assert_eq!(
        out.status.code(),
        Some(78),
        "an invalid config is a config error: {text}"
    );
    assert!(text.contains("still to be filled in"), "{text}");
    assert!(
        text.contains("instance 1 \"web1\"") && text.contains("instance 2 \"web2\""),
        "{text}"
    );

    fill_in(
        &tmp.path().join("cfg/config.yaml"),
        &[("web1", BACKEND_A), ("web2", BACKEND_B)],
    );
    let (out, text) = run(OB, &["check", "-c", "cfg/config.yaml"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("frontend {addr}"))
            && text.contains(BACKEND_A)
            && text.contains(BACKEND_B),
        "{text}"
    );

    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "cfg"],
        tmp.path(),
    );
    assert!(
        !out.status.success() && text.contains("already exists"),
        "{text}"
    );
}

/// `onionbalance-config` is the same wizard under upstream's name, and imports keys.
#[test]
fn onionbalance_config_binary_imports_a_ctor_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/ctor");
    let key = fixture.join("hs_ed25519_secret_key");
    let hostname = std::fs::read_to_string(fixture.join("hostname")).expect("hostname");
    let (out, text) = run(
        OB_CONFIG,
        &[
            "--no-interactive",
            "--key",
            key.to_str().expect("utf-8"),
            "--output",
            "out",
            "-n",
            "1",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(hostname.trim()), "{text}");
}

/// `backend` prints each instance's torrc lines and ob_config, also before the addresses
/// are known, and writes them with `--write`.
#[test]
fn backend_setup_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "cfg"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let (out, text) = run(
        OB,
        &[
            "backend",
            "-c",
            "cfg/config.yaml",
            "--target",
            "127.0.0.1:8080",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("HiddenServicePort 80 127.0.0.1:8080"),
        "{text}"
    );
    assert_eq!(
        text.matches("HiddenServiceOnionBalanceInstance 1").count(),
        2,
        "{text}"
    );
    let (out, text) = run(
        OB,
        &["backend", "-c", "cfg/config.yaml", "--write", "be"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let ob = std::fs::read_to_string(tmp.path().join("be/node2/ob_config")).expect("ob_config");
    assert!(
        ob.starts_with("MasterOnionAddress ") && ob.trim_end().ends_with(".onion"),
        "{ob}"
    );
    assert!(std::fs::read_to_string(tmp.path().join("be/node1/torrc"))
        .expect("torrc")
        .contains("HiddenServiceDir"));
}

/// `arti-config --chutney` turns a chutney `net/nodes` directory into an Arti TOML with the
/// authorities, the 8-minute time period of a 20 s voting interval, and loopback settings.
#[test]
fn arti_config_from_chutney_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nodes = tmp.path().join("net/nodes");
    for i in 0..3u8 {
        let dir = nodes.join(format!("00{i}a"));
        std::fs::create_dir_all(dir.join("keys")).expect("mkdir");
        let hex = |b: u8| format!("{b:02X}").repeat(20);
        std::fs::write(
            dir.join("keys/authority_certificate"),
            format!(
                "dir-key-certificate-version 3\nfingerprint {}\n",
                hex(0xa0 + i)
            ),
        )
        .expect("cert");
        std::fs::write(
            dir.join("fingerprint"),
            format!("test00{i}a {}\n", hex(0xb0 + i)),
        )
        .expect("fp");
        std::fs::write(
            dir.join("fingerprint-ed25519"),
            format!("test00{i}a {}\n", "A".repeat(43)),
        )
        .expect("ed");
        std::fs::write(
            dir.join("torrc"),
            format!(
                "TestingTorNetwork 1\nAddress 127.0.0.1\nOrPort 500{i}\nV3AuthVotingInterval 20\n"
            ),
        )
        .expect("torrc");
    }
    let (out, text) = run(
        OB,
        &[
            "arti-config",
            "--chutney",
            "net/nodes",
            "--output",
            "arti.toml",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let toml = std::fs::read_to_string(tmp.path().join("arti.toml")).expect("toml");
    assert!(toml.contains("hsdir_interval = 8"), "{toml}");
    assert!(
        toml.contains(&"A1".repeat(20)) && toml.contains("127.0.0.1:5002"),
        "{toml}"
    );
    assert!(toml.contains("allow_local_addrs = true"), "{toml}");
    // never overwrites
    let (out, _) = run(
        OB,
        &[
            "arti-config",
            "--chutney",
            "net/nodes",
            "--output",
            "arti.toml",
        ],
        tmp.path(),
    );
    assert!(!out.status.success());
}

/// Upstream's control-port flags are accepted (with a warning), and a missing config is a
/// clear error with a non-zero exit.
#[test]
fn upstream_flags_and_missing_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &[
            "-c",
            "nope.yaml",
            "-i",
            "127.0.0.1",
            "-p",
            "9051",
            "-v",
            "info",
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("needs no control port"), "{text}");
    assert!(
        text.contains("cannot read config file") && text.contains("onionbalance config"),
        "{text}"
    );
}

/// A key file others can read is used, with a warning naming the file and the `chmod`.
#[test]
fn readable_key_file_gets_a_chmod_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "cfg", "-n", "1"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    fill_in(&tmp.path().join("cfg/config.yaml"), &[("node1", BACKEND_A)]);
    let key = std::fs::read_dir(tmp.path().join("cfg"))
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .expect("key file");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (out, text) = run(OB, &["check", "-c", "cfg/config.yaml"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("chmod 600 {}", key.display())) || text.contains("chmod 600 cfg/"),
        "{text}"
    );
}

/// `client-auth`, offline: `add` refuses a service without an authorized-clients directory
/// and says what to add; with one it writes `<name>.auth` (0600, directory 0700) and prints
/// the private line once (or writes it 0600 with `--output`, or takes the client's own public
/// key with `--key`); `check` counts the clients; names and keys are not reused; `remove`
/// deletes a file client, refuses an inline one, and warns when nobody is left; `--service`
/// is required with several services.
#[test]
fn client_auth_add_list_remove() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "cfg", "-n", "1"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let config = tmp.path().join("cfg/config.yaml");
    fill_in(&config, &[("node1", BACKEND_A)]);
    let c = config.display().to_string();

    let (out, text) = run(
        OB,
        &["client-auth", "add", "-c", &c, "--name", "alice"],
        tmp.path(),
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("authorized-clients-dir: authorized_clients"),
        "{text}"
    );
    assert!(!tmp.path().join("cfg/authorized_clients").exists());

    let yaml = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{yaml}  authorized-clients-dir: authorized_clients\n"),
    )
    .expect("write");
    let (out, text) = run(OB, &["check", "-c", &c], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("does not exist: no client is authorized yet"),
        "{text}"
    );
    assert!(
        text.contains("restricted discovery: 0 authorized client(s)"),
        "{text}"
    );

    let (out, text) = run(
        OB,
        &["client-auth", "add", "-c", &c, "--name", "alice"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let dir = tmp.path().join("cfg/authorized_clients");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let alice = dir.join("alice.auth");
    assert_eq!(mode(&alice), 0o600);
    let public = std::fs::read_to_string(&alice).expect("alice.auth");
    assert!(public.starts_with("descriptor:x25519:"), "{public}");
    let private_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(":descriptor:x25519:"))
        .collect();
    assert_eq!(
        private_lines.len(),
        1,
        "the private key is printed once:\n{text}"
    );
    let secret = onionbalance::client_auth::ClientSecret::parse(private_lines[0]).expect("line");
    assert_eq!(
        secret.public().to_string(),
        public.trim(),
        "printed key matches the stored one"
    );

    let out_file = tmp.path().join("bob.auth_private");
    let o = out_file.display().to_string();
    let (out, text) = run(
        OB,
        &[
            "client-auth",
            "add",
            "-c",
            &c,
            "--name",
            "bob",
            "--output",
            &o,
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(":descriptor:x25519:"), "{text}");
    assert_eq!(mode(&out_file), 0o600);
    let (out, text) = run(
        OB,
        &[
            "client-auth",
            "add",
            "-c",
            &c,
            "--name",
            "bob2",
            "--output",
            &o,
        ],
        tmp.path(),
    );
    assert!(
        !out.status.success() && text.contains("already exists"),
        "{text}"
    );
    assert!(
        !dir.join("bob2.auth").exists(),
        "nothing is authorized when the key cannot be written"
    );

    let carol =
        onionbalance::client_auth::ClientSecret::generate(secret.frontend, &mut rand::rng());
    let carol_pub = carol.public().to_string();
    let (out, text) = run(
        OB,
        &[
            "client-auth",
            "add",
            "-c",
            &c,
            "--name",
            "carol",
            "--key",
            &carol_pub,
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains(":descriptor:x25519:"),
        "no private key to print: {text}"
    );
    for (name, key, why) in [
        ("alice", carol_pub.as_str(), "already authorized"),
        (
            "dave",
            carol_pub.as_str(),
            "already authorized as \"carol\"",
        ),
        ("../x", carol_pub.as_str(), "not usable"),
        ("erin", "descriptor:x25519:nope", "base32"),
    ] {
        let (out, text) = run(
            OB,
            &["client-auth", "add", "-c", &c, "--name", name, "--key", key],
            tmp.path(),
        );
        assert!(
            !out.status.success() && text.contains(why),
            "{name}: {text}"
        );
    }

    let (out, text) = run(OB, &["client-auth", "list", "-c", &c], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 authorized client(s)"), "{text}");
    assert!(text.contains(&carol_pub), "{text}");
    let (_, text) = run(OB, &["check", "-c", &c], tmp.path());
    assert!(
        text.contains("restricted discovery: 3 authorized client(s)"),
        "{text}"
    );
    // How many clients fit, as the encoder measures it (the library's answer, not ours).
    let room = |n| {
        onionbalance::descriptor::clients_that_fit(
            n,
            onionbalance::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN,
        )
        .expect("capacity")
    };
    let line = format!(
        "client room (50000-byte descriptors): {} beside 20 intro points, {} beside 10 intro points, {} beside 5 intro points",
        room(20),
        room(10),
        room(5)
    );
    assert!(text.contains(&line), "{line}\n{text}");
    assert!(!text.contains("each descriptor lists at most"), "{text}");
    // Past what fits beside 20 intro points, `check` says how many a descriptor will list.
    let extra: Vec<std::path::PathBuf> = (0..197)
        .map(|i| {
            let secret = onionbalance::client_auth::ClientSecret::generate(
                BACKEND_A.parse().expect("address"), // only the key pair matters here
                &mut rand::rng(),
            );
            let path = dir.join(format!("extra{i}.auth"));
            std::fs::write(&path, secret.public().to_string()).expect("write");
            path
        })
        .collect();
    let (_, text) = run(OB, &["check", "-c", &c], tmp.path());
    let limit = onionbalance::descriptor::intro_points_for_clients(
        200,
        onionbalance::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN,
    )
    .expect("limit");
    assert!(limit < 20, "200 clients fit beside {limit}");
    assert!(
        text.contains(&format!(
            "with 200 clients each descriptor lists at most {limit} intro points"
        )),
        "{text}"
    );
    for path in extra {
        std::fs::remove_file(path).expect("remove");
    }

    for name in ["alice", "bob"] {
        let (out, text) = run(
            OB,
            &["client-auth", "remove", "-c", &c, "--name", name],
            tmp.path(),
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("warning"), "{text}");
    }
    let (out, text) = run(
        OB,
        &["client-auth", "remove", "-c", &c, "--name", "carol"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("nobody can discover"), "{text}");
    assert!(std::fs::read_dir(&dir).expect("dir").next().is_none());
    let (out, text) = run(
        OB,
        &["client-auth", "remove", "-c", &c, "--name", "carol"],
        tmp.path(),
    );
    assert!(
        !out.status.success() && text.contains("no client named"),
        "{text}"
    );

    // An inline client is the config's to remove.
    let yaml = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{yaml}  authorized-clients:\n  - name: frank\n    key: {carol_pub}\n"),
    )
    .expect("write");
    let (out, text) = run(
        OB,
        &["client-auth", "remove", "-c", &c, "--name", "frank"],
        tmp.path(),
    );
    assert!(!out.status.success() && text.contains("inline"), "{text}");

    // Two services: say which.
    let yaml = std::fs::read_to_string(&config).expect("config");
    let second = tmp.path().join("cfg2");
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "cfg2", "-n", "1"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let key2 = std::fs::read_dir(&second)
        .expect("cfg2")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .expect("second key");
    std::fs::write(
        &config,
        format!(
            "{yaml}- key: {}\n  instances:\n  - address: {BACKEND_B}\n",
            key2.display()
        ),
    )
    .expect("write");
    let (out, text) = run(OB, &["client-auth", "list", "-c", &c], tmp.path());
    assert!(
        !out.status.success() && text.contains("--service"),
        "{text}"
    );
    let (out, text) = run(
        OB,
        &["client-auth", "list", "-c", &c, "--service", "2"],
        tmp.path(),
    );
    assert!(
        out.status.success() && text.contains("not restricted"),
        "{text}"
    );
}

/// A wizard-made config in `dir/cfg` with both instances filled in; returns its path.
fn valid_config(dir: &Path) -> std::path::PathBuf {
    let (out, text) = run(OB, &["config", "--no-interactive", "--output", "cfg"], dir);
    assert!(out.status.success(), "{text}");
    let config = dir.join("cfg/config.yaml");
    fill_in(&config, &[("node1", BACKEND_A), ("node2", BACKEND_B)]);
    config
}

/// The drain flag of each instance of each service, as the daemon reads the config.
fn drain_flags(config: &Path) -> Vec<Vec<(String, bool)>> {
    onionbalance::config::Config::load(config)
        .expect("the config loads")
        .services
        .iter()
        .map(|s| {
            s.instances
                .iter()
                .map(|i| (i.name.clone(), i.drain))
                .collect()
        })
        .collect()
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `drain` and `undrain` edit the config's text: by name or address, comments and layout
/// kept, mode and owner kept, nothing left behind; the daemon's loader sees exactly that
/// instance's flag change, and undraining gives back the file byte for byte. What they
/// cannot do is refused with the file untouched: an unknown instance, a name that means two
/// backends, an entry they cannot edit safely.
#[test]
fn drain_and_undrain_edit_the_config() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = valid_config(tmp.path());
    let dir = config.parent().expect("dir").to_owned();
    let c = config.to_str().expect("utf-8").to_owned();
    // The operator's own comments and mode; as root, another owner (the daemon's user).
    let original = std::fs::read_to_string(&config)
        .expect("config")
        .replace("  instances:\n", "  instances:   # the web servers\n")
        .replace(
            "  - address: nbvw",
            "  # node2 is in the other building\n  - address: nbvw",
        );
    std::fs::write(&config, &original).expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let as_root = std::fs::metadata(&config).expect("meta").uid() == 0;
    if as_root {
        std::os::unix::fs::chown(&config, Some(65534), Some(65533)).expect("chown");
    }
    let owner = |path: &Path| {
        let m = std::fs::metadata(path).expect("meta");
        (m.uid(), m.gid(), m.mode() & 0o777)
    };
    let before = owner(&config);
    let files = file_names(&dir);

    let (out, text) = run(OB, &["drain", "-c", &c, "node2"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("drained node2 (nbvw")
            && text.contains("`systemctl reload onionbalance`")
            && text.contains("`onionbalance status`")
            && text.contains("\"Health checks\""),
        "{text}"
    );
    let drained = std::fs::read_to_string(&config).expect("config");
    assert_eq!(
        drained,
        original.replace("    name: node2\n", "    name: node2\n    drain: true\n")
    );
    assert_eq!(
        drain_flags(&config),
        vec![vec![
            ("node1".to_owned(), false),
            ("node2".to_owned(), true)
        ]]
    );
    assert_eq!(owner(&config), before, "mode and owner kept");
    assert_eq!(file_names(&dir), files, "nothing left behind");
    let (out, text) = run(OB, &["check", "-c", &c], tmp.path());
    assert!(out.status.success() && !text.contains("warning"), "{text}");

    // Again: nothing to do.
    let (out, text) = run(OB, &["drain", "-c", &c, "node2"], tmp.path());
    assert!(
        out.status.success() && text.contains("drained already"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), drained);

    // By address, in capitals and without `.onion`: the last backend, with a warning.
    let upper = BACKEND_A.trim_end_matches(".onion").to_uppercase();
    let (out, text) = run(OB, &["drain", "-c", &c, &upper], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(text.contains("every backend of service 1"), "{text}");
    assert_eq!(
        drain_flags(&config),
        vec![vec![("node1".to_owned(), true), ("node2".to_owned(), true)]]
    );

    // Undrain both: the file as it was, byte for byte, mode and owner too.
    for name in ["node1", "node2"] {
        let (out, text) = run(OB, &["undrain", "-c", &c, name], tmp.path());
        assert!(out.status.success(), "{text}");
        assert!(text.contains(&format!("undrained {name} (")), "{text}");
    }
    assert_eq!(std::fs::read_to_string(&config).expect("config"), original);
    assert_eq!(owner(&config), before);
    let (out, text) = run(OB, &["undrain", "-c", &c, "node1"], tmp.path());
    assert!(
        out.status.success() && text.contains("undrained already"),
        "{text}"
    );

    // An unknown instance is a usage error that lists the known ones.
    let (out, text) = run(OB, &["drain", "-c", &c, "node3"], tmp.path());
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("no instance named \"node3\"") && text.contains("node1 (az6z"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), original);
}

/// With two services, `node1` is two backends: `drain node1` asks which, `--service` says
/// it. An entry shared by two services through a YAML anchor cannot be drained in one
/// without the other: refused, with what to do by hand, and the file untouched.
#[test]
fn drain_asks_which_backend_and_refuses_what_it_cannot_edit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &[
            "config",
            "--no-interactive",
            "--output",
            "cfg",
            "-s",
            "2",
            "-n",
            "1",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let config = tmp.path().join("cfg/config.yaml");
    let yaml = std::fs::read_to_string(&config).expect("config");
    let at = yaml.find("TODO-node1").expect("first");
    let yaml = format!(
        "{}{}",
        &yaml[..at],
        yaml[at..]
            .replacen("TODO-node1-onion-address", BACKEND_A, 1)
            .replacen("TODO-node1-onion-address", BACKEND_B, 1)
    );
    std::fs::write(&config, &yaml).expect("write");
    let c = config.to_str().expect("utf-8");

    let (out, text) = run(OB, &["drain", "-c", c, "node1"], tmp.path());
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("names 2 different backends") && text.contains("--service"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), yaml);
    let (out, text) = run(
        OB,
        &["drain", "-c", c, "--service", "2", "node1"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        drain_flags(&config),
        vec![
            vec![("node1".to_owned(), false)],
            vec![("node1".to_owned(), true)]
        ]
    );
    let (out, text) = run(OB, &["undrain", "-c", c, BACKEND_B], tmp.path());
    assert!(out.status.success(), "{text}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), yaml);

    // One entry in both services (an anchor and its alias).
    let shared = yaml
        .replacen(
            &format!("  - address: {BACKEND_A}\n    name: node1\n"),
            &format!("  - &web {{address: {BACKEND_A}, name: node1}}\n"),
            1,
        )
        .replacen(
            &format!("  - address: {BACKEND_B}\n    name: node1\n"),
            "  - *web\n",
            1,
        );
    assert_ne!(shared, yaml);
    std::fs::write(&config, &shared).expect("write");
    let (out, text) = run(OB, &["check", "-c", c], tmp.path());
    assert!(out.status.success(), "{text}");
    let (out, text) = run(
        OB,
        &["drain", "-c", c, "--service", "1", "node1"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot edit the instance's entry safely")
            && text.contains("Nothing was written")
            && text.contains("Edit it by hand")
            && text.contains("`drain: true`"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), shared);
}

/// Exit codes by category: usage 64, configuration 78, run time 1, help and version 0; for
/// both binaries.
#[test]
fn exit_codes_by_category() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = valid_config(tmp.path());
    let config = config.to_str().expect("utf-8 path");
    std::fs::write(tmp.path().join("broken.yaml"), "services: [\n").expect("write");
    std::fs::write(tmp.path().join("bad-arti.toml"), "[storage\n").expect("write");
    let cases: &[(&str, &[&str], i32, &str)] = &[
        (OB, &["--help"], 0, "Exit status"),
        (OB, &["--version"], 0, "onionbalance"),
        (OB_CONFIG, &["--help"], 0, "--service-target"),
        (OB, &["--no-such-flag"], 64, "--no-such-flag"),
        (
            OB,
            &["run", "-c", config, "-v", "loud"],
            64,
            "unknown log level",
        ),
        (OB, &["-c", config, "--hs-version", "v2"], 64, "only v3"),
        (OB, &["run"], 64, "no config file"),
        (
            OB,
            &["run", "-c", config, "--is-testnet"],
            64,
            "--arti-config",
        ),
        (OB, &["completions", "tcsh"], 64, "tcsh"),
        (OB_CONFIG, &["--hs-version", "v2"], 64, "only v3"),
        (OB_CONFIG, &["-v", "chatty"], 64, "unknown log level"),
        (
            OB_CONFIG,
            &["--service-target", "nowhere"],
            64,
            "not a service target",
        ),
        (
            OB,
            &["run", "-c", "missing.yaml"],
            78,
            "cannot read config file",
        ),
        (OB, &["-c", "broken.yaml"], 78, "broken.yaml"),
        (OB, &["check", "-c", "broken.yaml"], 78, "broken.yaml"),
        (
            OB,
            &["run", "-c", config, "--arti-config", "bad-arti.toml"],
            78,
            "bad-arti.toml",
        ),
        (
            OB,
            &["run", "-c", config, "-o", "storage.state_dir=[1, 2]"],
            78,
            "Arti rejects the configuration",
        ),
        (
            OB,
            &["run", "-c", config, "--log-location", "no/such/dir/ob.log"],
            78,
            "cannot open the log file",
        ),
        (
            OB,
            &["status", "--socket", "no-such.sock"],
            1,
            "is the daemon running?",
        ),
    ];
    for (cmd, args, code, says) in cases {
        let (out, text) = run(cmd, args, tmp.path());
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{cmd} {args:?} should exit {code}: {text}"
        );
        assert!(
            text.contains(says),
            "{cmd} {args:?} should say {says:?}: {text}"
        );
    }
    // The variable is checked like the flag: no silent fallback to `info`.
    let (out, text) = run_env(
        OB,
        &["run", "-c", config],
        tmp.path(),
        &[("ONIONBALANCE_LOG_LEVEL", "loud")],
    );
    assert_eq!(out.status.code(), Some(64), "{text}");
}

/// Runs the daemon with `extra` arguments (the `--arti-config` files of
/// [`arti_sources_and_log_formats`], whose storage lies under a regular file) until creating
/// its Tor client fails: a run-time error right after the Arti configuration was loaded,
/// with no network needed. Returns the exit status and stderr.
fn daemon_until_client_fails(
    tmp: &Path,
    config: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, String) {
    let config = config.to_str().expect("utf-8 path");
    let mut args = vec!["run", "-c", config];
    args.extend_from_slice(extra);
    let (out, _) = run_env(OB, &args, tmp, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

/// `--arti-config` goes through Arti's own loader: several files, `-o` overrides, unknown
/// keys warned by name and file; `--log-format json`, `ONIONBALANCE_LOG_LOCATION`, and no
/// timestamps of ours when stderr is the journal.
#[test]
fn arti_sources_and_log_formats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = valid_config(tmp.path());
    // Arti's storage under a regular file: the client cannot be created, and the daemon
    // stops right after loading the configuration.
    std::fs::write(tmp.path().join("blocker"), "").expect("write");
    let arti_dir = tmp.path().join("blocker");
    std::fs::write(
        tmp.path().join("base.toml"),
        format!(
            "[storage]\nstate_dir = {:?}\ncache_dir = {:?}\n[path_rules]\nipv4_subnet_familly_prefix = 33\n",
            arti_dir.join("state"),
            arti_dir.join("cache")
        ),
    )
    .expect("write");
    std::fs::write(
        tmp.path().join("more.toml"),
        "[address_filter]\nallow_local_addrs = true\nallow_lokal = true\n",
    )
    .expect("write");
    let files = [
        "--arti-config",
        "base.toml",
        "--arti-config",
        "more.toml",
        "-o",
        "circuit_timing.no_such_knob=3",
    ];
    let (out, stderr) = daemon_until_client_fails(tmp.path(), &config, &files, &[]);
    assert_eq!(out.status.code(), Some(1), "a run-time error: {stderr}");
    // The files' storage (under a regular file) was used: that is what failed.
    assert!(stderr.contains("persistent state"), "{stderr}");
    for (key, source) in [
        ("path_rules.ipv4_subnet_familly_prefix", "base.toml"),
        ("address_filter.allow_lokal", "more.toml"),
        (
            "circuit_timing.no_such_knob",
            "-o circuit_timing.no_such_knob=3",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("unrecognized key {key} (in {source})"))),
            "no warning naming {key} in {source}: {stderr}"
        );
    }

    // JSON: every line an object with the level and the message.
    let (_, stderr) = daemon_until_client_fails(
        tmp.path(),
        &config,
        &["--arti-config", "base.toml", "--log-format", "json"],
        &[],
    );
    let warning = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON log line"))
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ipv4_subnet_familly_prefix"))
        })
        .unwrap_or_else(|| panic!("no JSON warning: {stderr}"));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(warning["timestamp"].is_string(), "{warning}");

    // ONIONBALANCE_LOG_LOCATION: the log goes to that file, appended.
    let log = tmp.path().join("ob.log");
    std::fs::write(&log, "earlier line\n").expect("write");
    let (_, stderr) = daemon_until_client_fails(
        tmp.path(),
        &config,
        &["--arti-config", "base.toml"],
        &[("ONIONBALANCE_LOG_LOCATION", log.to_str().expect("utf-8"))],
    );
    let logged = std::fs::read_to_string(&log).expect("log file");
    assert!(logged.starts_with("earlier line\n"), "{logged}");
    assert!(logged.contains("ipv4_subnet_familly_prefix"), "{logged}");
    assert!(!stderr.contains("ipv4_subnet_familly_prefix"), "{stderr}");

    // The journal: stderr is the stream $JOURNAL_STREAM names, so no timestamp of ours.
    // A file stands in for the journal's socket: the check compares device and inode.
    let journal = tmp.path().join("journal");
    let file = std::fs::File::create(&journal).expect("create");
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().expect("metadata");
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let cfg = config.to_str().expect("utf-8");
    let status = Command::new(OB)
        .args(["run", "-c", cfg, "--arti-config", "base.toml"])
        .current_dir(tmp.path())
        .env_remove("RUST_LOG")
        .env_remove("ONIONBALANCE_LOG_LOCATION")
        .env("JOURNAL_STREAM", &stream)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .status()
        .expect("run");
    assert_eq!(status.code(), Some(1));
    // Each line starts with the priority the journal files it under (`<N>`, sd-daemon(3)),
    // then the level, with no timestamp: a warning is 4, information 6, and the final error
    // that ends the daemon (printed outside the logger) 3.
    let text = std::fs::read_to_string(&journal).expect("read");
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let (priority, rest) = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("a journal line without a priority: {line:?}\n{text}"));
        let expected = match rest.trim_start().split([' ', ':']).next() {
            Some("ERROR") | Some("error") => "3",
            Some("WARN") => "4",
            Some("INFO") => "6",
            Some("DEBUG") | Some("TRACE") => "7",
            other => {
                panic!("a journal line without a level after its priority ({other:?}): {line:?}")
            }
        };
        assert_eq!(priority, expected, "{line:?}");
        seen.insert(priority.to_owned());
    }
    for p in ["3", "4", "6"] {
        assert!(seen.contains(p), "no line of priority {p}: {text}");
    }
    // Not the journal (another stream): timestamps as usual.
    let (_, stderr) = daemon_until_client_fails(
        tmp.path(),
        &config,
        &["--arti-config", "base.toml"],
        &[("JOURNAL_STREAM", "1:1")],
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "a line starts with its timestamp: {stderr}"
    );
}

/// Without -c, ./config.yaml is used when it exists, as upstream; upstream's
/// `--hs-version v3` is accepted.
#[test]
fn default_config_in_working_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = valid_config(tmp.path());
    let cfg_dir = config.parent().expect("dir");
    std::fs::write(cfg_dir.join("bad-arti.toml"), "[storage\n").expect("write");
    // Reaching the Arti configuration means the config was found and valid.
    let (out, text) = run(
        OB,
        &["--hs-version", "v3", "--arti-config", "bad-arti.toml"],
        cfg_dir,
    );
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("using ./config.yaml") && text.contains("bad-arti.toml"),
        "{text}"
    );
}

/// onionbalance-config takes upstream's flags: the virtual port and target make the
/// backends' HiddenServicePort line; a password is refused with a warning.
#[test]
fn onionbalance_config_upstream_flags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB_CONFIG,
        &[
            "--hs-version",
            "v3",
            "--no-interactive",
            "--output",
            "cfg",
            "-n",
            "2",
            "-v",
            "warning",
            "--service-virtual-port",
            "8080",
            "--service-target",
            "127.0.0.1:8081",
            "-p",
            "secret",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("HiddenServicePort 8080 127.0.0.1:8081")
            .count(),
        2,
        "one line per backend: {text}"
    );
    assert!(text.contains("--password is ignored"), "{text}");
    assert!(tmp.path().join("cfg/config.yaml").is_file());
}

/// Man pages and completions come from the clap definitions of both binaries.
#[test]
fn man_pages_and_completions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(OB, &["man", "--output", "man"], tmp.path());
    assert!(out.status.success(), "{text}");
    let page = |name: &str| {
        std::fs::read_to_string(tmp.path().join("man").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let main = page("onionbalance.1");
    assert!(main.contains(".TH onionbalance 1"), "{main}");
    // The sections an operator looks for, in the usual order, after the options.
    let order = [
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"EXIT STATUS\"",
        ".SH \"SEE ALSO\"",
        ".SH VERSION",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|h| {
            main.find(h)
                .unwrap_or_else(|| panic!("onionbalance.1 lacks {h}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "sections out of order");
    for needle in [
        // ENVIRONMENT: every variable `--help` lists (the same table).
        "ONIONBALANCE_CONFIG",
        "ONIONBALANCE_LOG_LEVEL",
        "ONIONBALANCE_LOG_LOCATION",
        "ONIONBALANCE_STATUS_SOCKET_LOCATION",
        "RUST_LOG",
        "STATE_DIRECTORY",
        // FILES
        "/etc/onionbalance/config.yaml",
        "/var/lib/onionbalance",
        "publish/revisions/",
        "/run/onionbalance/status.sock",
        "./config.yaml",
        // EXIT STATUS
        ".B 64",
        ".B 78",
        // SEE ALSO
        "\\fBonionbalance.yaml\\fR(5)",
        "\\fBonionbalance\\-run\\fR(1)",
        "arti\\-config",
    ] {
        assert!(main.contains(needle), "onionbalance.1 lacks {needle:?}");
    }
    // --help says the same as the page: one table for both.
    let (_, help) = run(OB, &["--help"], tmp.path());
    for line in help
        .lines()
        .skip_while(|l| *l != "Environment:")
        .filter(|l| l.starts_with("  "))
    {
        let first = line.split_whitespace().next().unwrap_or_default();
        assert!(
            main.contains(first),
            "onionbalance.1 lacks {first} from --help"
        );
    }
    // The clap text after the options is replaced by the sections, not repeated.
    assert!(!main.contains(".SH EXTRA"), "{main}");
    let run_page = page("onionbalance-run.1");
    assert!(run_page.contains("log\\-format"));
    for needle in [".SH ENVIRONMENT", ".SH FILES", ".SH \"EXIT STATUS\""] {
        assert!(
            run_page.contains(needle),
            "onionbalance-run.1 lacks {needle}"
        );
    }
    assert!(page("onionbalance-check.1").contains("online"));
    for sub in [
        "check",
        "status",
        "backend",
        "client-auth",
        "client-auth-add",
        "drain",
        "undrain",
    ] {
        let text = page(&format!("onionbalance-{sub}.1"));
        assert!(
            text.contains(".SH \"SEE ALSO\"\n\\fBonionbalance\\fR(1)"),
            "onionbalance-{sub}.1: {text}"
        );
    }
    // The wizard's binary's own page, not the `config` subcommand's.
    let wizard = page("onionbalance-config.1");
    assert!(wizard.contains(".TH onionbalance-config 1"), "{wizard}");
    assert!(wizard.contains("service\\-virtual\\-port"), "{wizard}");
    for needle in [".SH \"EXIT STATUS\"", ".B 78", ".SH \"SEE ALSO\""] {
        assert!(
            wizard.contains(needle),
            "onionbalance-config.1 lacks {needle}"
        );
    }
    // The config file's page, written by hand, written out with the others.
    let config_page = page("onionbalance.yaml.5");
    assert!(
        config_page.contains(".TH ONIONBALANCE.YAML 5"),
        "{config_page}"
    );
    for needle in [".SH FILES", ".SH EXAMPLES", ".SH \"SEE ALSO\""] {
        assert!(
            config_page.contains(needle),
            "onionbalance.yaml.5 lacks {needle}"
        );
    }
    // Every page renders without a warning, where groff is installed (the Debian
    // package's test reads them with man(1) too).
    let pages: Vec<_> = std::fs::read_dir(tmp.path().join("man"))
        .expect("man dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(pages.len() >= 13, "{pages:?}");
    match Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .args(&pages)
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("groff not run ({e}): pages not checked for warnings"),
    }
    assert!(
        !tmp.path().join("man/onionbalance-man.1").exists(),
        "the hidden command has no page"
    );

    let (out, text) = run(OB, &["completions", "bash"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("_onionbalance()") && text.contains("--arti-config"),
        "{text}"
    );
    for (shell, files) in [
        ("bash", ["onionbalance.bash", "onionbalance-config.bash"]),
        ("zsh", ["_onionbalance", "_onionbalance-config"]),
        ("fish", ["onionbalance.fish", "onionbalance-config.fish"]),
    ] {
        let dir = format!("completions/{shell}");
        let (out, text) = run(OB, &["completions", shell, "--output", &dir], tmp.path());
        assert!(out.status.success(), "{text}");
        for f in files {
            let text = std::fs::read_to_string(tmp.path().join(&dir).join(f))
                .unwrap_or_else(|e| panic!("{shell} {f}: {e}"));
            assert!(
                text.contains("service-virtual-port") || text.contains("arti-config"),
                "{f}"
            );
        }
    }
    // bash accepts the script it is given.
    let status = Command::new("bash")
        .arg("-n")
        .arg(tmp.path().join("completions/bash/onionbalance.bash"))
        .status()
        .expect("bash");
    assert!(status.success());
}

/// True when this machine has a system-wide config (a package test may have installed
/// one): then "no config anywhere" cannot be tested here.
fn system_config_exists() -> bool {
    Path::new("/etc/onionbalance/config.yaml").exists()
}

/// `check`, `backend`, `client-auth` and `status` find the config as the daemon does: -c,
/// else ./config.yaml (saying so), else /etc/onionbalance/config.yaml, else a usage error
/// naming both.
#[test]
fn every_command_defaults_to_the_same_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = valid_config(tmp.path());
    let cfg_dir = config.parent().expect("dir");
    std::fs::write(cfg_dir.join("broken.yaml"), "services: [\n").expect("write");
    for args in [
        &["check"][..],
        &["backend"][..],
        &["client-auth", "list"][..],
    ] {
        let (out, text) = run(OB, args, cfg_dir);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("no -c given: using ./config.yaml"),
            "{args:?}: {text}"
        );
        // -c wins over ./config.yaml, and nothing is announced.
        let mut with_c = args.to_vec();
        with_c.extend(["-c", "broken.yaml"]);
        let (out, text) = run(OB, &with_c, cfg_dir);
        assert_eq!(out.status.code(), Some(78), "{with_c:?}: {text}");
        assert!(!text.contains("no -c given"), "{with_c:?}: {text}");
        if !system_config_exists() {
            let (out, text) = run(OB, args, tmp.path());
            assert_eq!(out.status.code(), Some(64), "{args:?}: {text}");
            assert!(
                text.contains("./config.yaml") && text.contains("/etc/onionbalance/config.yaml"),
                "{args:?}: {text}"
            );
        }
    }
}

/// Serves one status document on a Unix socket at `path`, for `answers` connections.
fn fake_status_socket(path: &Path, answers: usize) -> std::thread::JoinHandle<()> {
    use std::io::Write as _;
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        for _ in 0..answers {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(br#"{"services": [{"onionAddress": "fake.onion", "instances": []}]}"#)
                .expect("write");
        }
    })
}

/// `status` finds the socket: --socket, else the environment, else the config's
/// status-socket-location (the config found as every command finds it), else the packaged
/// default; without any, it names what it tried.
#[test]
fn status_finds_the_socket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = valid_config(tmp.path());
    let cfg_dir = config.parent().expect("dir");
    let sock = tmp.path().join("ob.sock");
    let server = fake_status_socket(&sock, 3);
    let sock_s = sock.to_str().expect("utf-8");
    let (out, text) = run(OB, &["status", "--json", "--socket", sock_s], tmp.path());
    assert!(
        out.status.success() && text.contains("fake.onion"),
        "{text}"
    );
    let (out, text) = run_env(
        OB,
        &["status", "--json", "-c", "cfg/config.yaml"],
        tmp.path(),
        &[("ONIONBALANCE_STATUS_SOCKET_LOCATION", sock_s)],
    );
    assert!(
        out.status.success() && text.contains("fake.onion"),
        "{text}"
    );
    let with_socket = format!(
        "{}status-socket-location: {sock_s}\n",
        std::fs::read_to_string(&config).expect("read")
    );
    std::fs::write(&config, with_socket).expect("write");
    // No flags: ./config.yaml, and its socket.
    let (out, text) = run(OB, &["status", "--json"], cfg_dir);
    assert!(
        out.status.success() && text.contains("fake.onion"),
        "{text}"
    );
    assert!(text.contains("no -c given: using ./config.yaml"), "{text}");
    server.join().expect("server");
    // A config without a socket, and no packaged daemon here: what was tried.
    if !Path::new("/run/onionbalance/status.sock").exists() {
        std::fs::create_dir(tmp.path().join("other")).expect("mkdir");
        let plain = valid_config(&tmp.path().join("other"));
        let (out, text) = run(
            OB,
            &["status", "-c", plain.to_str().expect("utf-8")],
            tmp.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("has no status-socket-location")
                && text.contains("/run/onionbalance/status.sock"),
            "{text}"
        );
    }
}

/// Hostile tags: each is refused up front (exit 64, saying which characters are allowed,
/// nothing written), or the config written passes `check` once filled in, with the names
/// the wizard printed. None writes a config that does not parse or names instances wrongly.
#[test]
fn wizard_tags_are_refused_or_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let long = "x".repeat(62);
    let too_long = "x".repeat(63);
    let tags: &[&str] = &[
        "x: y", "[z", "*ref", "&anchor", "!tag", "a #b", "#c", "a b", "a/b", "../up", ".hidden",
        "", "'q", "\"q", "{m}", "- x", "?x", "|x", ">x", "%x", "@x", "`x", "a,b", "é", "a\nb",
        "tab\t", "1", "1e", "0x", "0o", "1_", "true", "null", "~", "yes", "on", "-", "_", "1.",
        "node.", &long, &too_long, "web",
    ];
    let (mut refused, mut accepted) = (0, 0);
    for (i, tag) in tags.iter().enumerate() {
        let out_dir = format!("out{i}");
        // `--tag=` so that a tag starting with `-` is a value, not a flag.
        let tag_arg = format!("--tag={tag}");
        let (out, text) = run(
            OB,
            &[
                "config",
                "--no-interactive",
                "--output",
                &out_dir,
                "-n",
                "2",
                &tag_arg,
            ],
            tmp.path(),
        );
        let config = tmp.path().join(&out_dir).join("config.yaml");
        match out.status.code() {
            Some(64) => {
                refused += 1;
                assert!(
                    text.contains("A-Z, a-z, 0-9, `-`, `_` and `.`"),
                    "{tag:?}: the refusal says what is allowed: {text}"
                );
                assert!(!config.exists(), "{tag:?}: refused but wrote {config:?}");
            }
            Some(0) => {
                accepted += 1;
                let names = [format!("{tag}1"), format!("{tag}2")];
                fill_in(
                    &config,
                    &[
                        (names[0].as_str(), BACKEND_A),
                        (names[1].as_str(), BACKEND_B),
                    ],
                );
                let (out, text) = run(
                    OB,
                    &["check", "-c", config.to_str().expect("utf-8")],
                    tmp.path(),
                );
                assert!(out.status.success(), "{tag:?}: check fails: {text}");
                for name in &names {
                    assert!(
                        text.contains(&format!("instance {name}")),
                        "{tag:?}: {name} not in {text}"
                    );
                }
            }
            other => panic!("{tag:?}: exit {other:?}: {text}"),
        }
    }
    // The table has both kinds.
    assert!(
        refused > 20 && accepted > 10,
        "{refused} refused, {accepted} accepted"
    );
}

/// The wizard's exit codes, for both binaries: a key file that is missing or not a key is
/// a configuration error (78); `-n 0`, `-s 0` and a bad tag are usage errors (64).
#[test]
fn wizard_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("junk.key"), "not a key").expect("write");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--key", "/nonexistent"],
            78,
            "cannot read key file /nonexistent",
        ),
        (
            &["--key", "junk.key"],
            78,
            "not a key onionbalance understands",
        ),
        (&["-n", "0"], 64, "at least 1"),
        (&["-s", "0"], 64, "at least 1"),
        (&["-t", "a/b"], 64, "--tag"),
        (&["--key", "junk.key", "-s", "2"], 64, "--services 1"),
        (
            &["--health-check-path", "healthz"],
            64,
            "--health-check-path \"healthz\": an HTTP path must start with `/`",
        ),
        (&["--health-check-port", "0"], 64, "1 to 65535"),
    ];
    for (cmd, prefix) in [(OB, &["config"][..]), (OB_CONFIG, &[][..])] {
        for (i, (args, code, says)) in cases.iter().enumerate() {
            let out_dir = format!("out{i}");
            let mut all = prefix.to_vec();
            all.extend(["--no-interactive", "--output", &out_dir]);
            all.extend_from_slice(args);
            let (out, text) = run(cmd, &all, tmp.path());
            assert_eq!(out.status.code(), Some(*code), "{cmd} {all:?}: {text}");
            assert!(
                text.contains(says),
                "{cmd} {all:?} should say {says:?}: {text}"
            );
            assert!(
                !tmp.path().join(&out_dir).exists(),
                "{cmd} {all:?} wrote {out_dir}"
            );
        }
    }
    let (out, text) = run(OB_CONFIG, &["--help"], tmp.path());
    assert!(out.status.success() && text.contains("78"), "{text}");
}

/// The ports given to the wizard are stored in the config (`backend-port:`, ours); `check`
/// accepts them without a warning; `backend` prints them unless its own flags override.
#[test]
fn wizard_ports_reach_backend() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &[
            "config",
            "--no-interactive",
            "--output",
            "cfg",
            "--service-virtual-port",
            "443",
            "--service-target",
            "127.0.0.1:8080",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("HiddenServicePort 443 127.0.0.1:8080").count(),
        2,
        "{text}"
    );
    let (out, text) = run(OB, &["backend", "-c", "cfg/config.yaml"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("HiddenServicePort 443 127.0.0.1:8080").count(),
        2,
        "{text}"
    );
    assert!(!text.contains("HiddenServicePort 80 "), "{text}");
    // Each flag overrides its half.
    let (out, text) = run(
        OB,
        &["backend", "-c", "cfg/config.yaml", "--port", "8443"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("HiddenServicePort 8443 127.0.0.1:8080")
            .count(),
        2,
        "{text}"
    );
    let (out, text) = run(
        OB,
        &[
            "backend",
            "-c",
            "cfg/config.yaml",
            "--target",
            "unix:/run/web.sock",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("HiddenServicePort 443 unix:/run/web.sock")
            .count(),
        2,
        "{text}"
    );
    let (out, text) = run(
        OB,
        &["backend", "-c", "cfg/config.yaml", "--target", "a b"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(64), "{text}");
    fill_in(
        &tmp.path().join("cfg/config.yaml"),
        &[("node1", BACKEND_A), ("node2", BACKEND_B)],
    );
    let (out, text) = run(OB, &["check", "-c", "cfg/config.yaml"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("warning"), "{text}");
    assert!(
        text.contains("backend port: 443 -> 127.0.0.1:8080"),
        "{text}"
    );
}

/// Health checks asked for with the wizard's flags are written as the service's
/// `health-check:` (port defaulting to the virtual port, the HTTP path if given, nothing
/// else); `check` reads them back without a warning. Both binaries take the flags.
#[test]
fn wizard_turns_on_health_checks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config_text = |dir: &str| {
        std::fs::read_to_string(tmp.path().join(dir).join("config.yaml")).expect("config")
    };
    let (out, text) = run(
        OB,
        &[
            "config",
            "--no-interactive",
            "--output",
            "http",
            "--service-virtual-port",
            "8080",
            "--health-check-path",
            "/healthz",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Health checks are on")
            && text.contains("an HTTP GET of /healthz at port 8080")
            && !text.contains("must serve port"),
        "{text}"
    );
    let yaml = config_text("http");
    assert!(
        yaml.contains("  health-check:\n    port: 8080\n    http-path: /healthz\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("interval"), "defaults are left out: {yaml}");
    let config = tmp.path().join("http/config.yaml");
    fill_in(&config, &[("node1", BACKEND_A), ("node2", BACKEND_B)]);
    let (out, text) = run(OB, &["check", "-c", "http/config.yaml"], tmp.path());
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("warning"), "{text}");
    // `check` shows each instance's resolved check (the defaults filled in).
    assert!(
        text.contains(
            "(probed: GET /healthz on port 8080 every 30s, timeout 20s, down after 2, up after 1)"
        ),
        "{text}"
    );

    // On with the defaults: the virtual port, a bare connect.
    let (out, text) = run(
        OB_CONFIG,
        &["--no-interactive", "--output", "tcp", "--health-check"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let yaml = config_text("tcp");
    assert!(yaml.contains("  health-check:\n    port: 80\n"), "{yaml}");
    assert!(!yaml.contains("http-path"), "{yaml}");

    // A port of its own: the backends must serve it too.
    let (out, text) = run(
        OB,
        &[
            "config",
            "--no-interactive",
            "--output",
            "port",
            "--service-virtual-port",
            "443",
            "--health-check-port",
            "8443",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("must serve port 8443 too"), "{text}");
    assert!(
        config_text("port").contains("  health-check:\n    port: 8443\n"),
        "{}",
        config_text("port")
    );

    // Off unless asked for.
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "off"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Health checks"), "{text}");
    assert!(!config_text("off").contains("health-check"));
}

/// `backend` on an instance whose address is filled in never invents a HiddenServiceDir
/// (that would make a new address): it says to add instance mode in the block of the
/// HiddenServiceDir that holds that address's key, and the ob_config goes there. A
/// placeholder still gets a new HiddenServiceDir. The same with `--write`.
#[test]
fn backend_keeps_an_existing_hidden_service_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "cfg"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    fill_in(&tmp.path().join("cfg/config.yaml"), &[("node1", BACKEND_A)]);
    let (out, text) = run(OB, &["backend", "-c", "cfg/config.yaml"], tmp.path());
    assert!(out.status.success(), "{text}");
    let (node1, node2) = text
        .split_once("==== backend node2")
        .expect("node2 after node1");
    assert!(node1.contains(BACKEND_A), "{node1}");
    assert!(
        !node1.lines().any(|l| l.starts_with("HiddenServiceDir")),
        "{node1}"
    );
    assert!(
        node1.contains(&format!("HiddenServiceDir that holds {BACKEND_A}'s key")),
        "{node1}"
    );
    assert!(
        node1.contains("\nHiddenServiceOnionBalanceInstance 1\n")
            && node1.contains("MasterOnionAddress "),
        "{node1}"
    );
    assert!(
        node2.contains("\nHiddenServiceDir /var/lib/tor/onionbalance-node2\n")
            && node2.contains("/var/lib/tor/onionbalance-node2/ob_config"),
        "{node2}"
    );
    let (out, text) = run(
        OB,
        &["backend", "-c", "cfg/config.yaml", "--write", "be"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    let torrc = std::fs::read_to_string(tmp.path().join("be/node1/torrc")).expect("torrc");
    assert!(
        !torrc.lines().any(|l| l.starts_with("HiddenServiceDir")),
        "{torrc}"
    );
    assert!(
        torrc.contains("HiddenServiceOnionBalanceInstance 1"),
        "{torrc}"
    );
    assert!(
        text.contains(&format!(
            "in the HiddenServiceDir that holds {BACKEND_A}'s key"
        )),
        "{text}"
    );
    assert!(std::fs::read_to_string(tmp.path().join("be/node2/torrc"))
        .expect("torrc")
        .contains("\nHiddenServiceDir /var/lib/tor/onionbalance-node2\n"));
}

/// As root, `config --output` into an existing directory of another user (the package's
/// /etc/onionbalance, onionbalance:onionbalance 0750) gives the config and keys to that
/// user and group (mode 0600 kept), and says so.
#[test]
fn wizard_as_root_gives_files_to_the_directory_owner() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    if std::fs::metadata(tmp.path()).expect("meta").uid() != 0 {
        eprintln!("not root: skipping");
        return;
    }
    let dir = tmp.path().join("etc-onionbalance");
    std::fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    let (out, text) = run(
        OB,
        &["config", "--no-interactive", "--output", "etc-onionbalance"],
        tmp.path(),
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("to uid 65534, gid 65534, the owner of etc-onionbalance"),
        "{text}"
    );
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 2, "config.yaml and one key: {files:?}");
    for f in files {
        let m = std::fs::metadata(&f).expect("meta");
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (65534, 65534, 0o600),
            "{f:?}"
        );
    }
}
