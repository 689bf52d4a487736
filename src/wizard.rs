//! `onionbalance config`: writes a config file and frontend keys, and says how to set up the
//! backends.
//!
//! The flags follow upstream `onionbalance-config` so existing habits keep working. The wizard
//! never overwrites: an existing `config.yaml` or key file stops it before anything is written.
//! Instance addresses not given are written as `TODO-…` placeholders that
//! `onionbalance check` lists as still to be filled in.
//!
//! Health checks (ours) are off unless asked for; when on, the service gets a
//! `health-check:` mapping with the port (and the HTTP path, if any) and nothing else: the
//! other keys keep their defaults, which the loader supplies.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{
    is_valid_instance_name, is_valid_service_target, BackendPort, PLACEHOLDER_PREFIX,
};
use crate::keys::{write_secret_file, FrontendKey, KeyError, KeyFormat};
use crate::onion::OnionAddress;
use zeroize::Zeroizing;

/// What to generate.
#[derive(Debug, Clone)]
pub struct WizardOptions {
    /// Output directory (created 0700 if missing).
    pub output: PathBuf,
    /// Number of frontend services.
    pub services: usize,
    /// Number of backend instances per service.
    pub instances: usize,
    /// Instance name prefix (`node` gives `node1`, `node2`, ...).
    pub tag: String,
    /// An existing key to use for the (single) service instead of a new one.
    pub import_key: Option<PathBuf>,
    /// Backend addresses, per service, in order; missing ones become placeholders.
    pub addresses: Vec<Vec<OnionAddress>>,
    /// The backends' port, written as every service's `backend-port:` (for
    /// `onionbalance backend`); `None` writes nothing (the defaults, upstream's format).
    pub backend_port: Option<BackendPort>,
    /// Health checks, written as every service's `health-check:`; `None` writes nothing
    /// (no checks, upstream's format).
    pub health_check: Option<WizardHealthCheck>,
}

/// The health checks the wizard turns on: what it asks for. The other keys of
/// `health-check:` (interval, timeout, thresholds) are left out of the file, so they keep
/// the defaults of [`crate::config::HealthCheckConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WizardHealthCheck {
    /// The backends' onion-service port to probe (`port:`), 1 to 65535: usually the port
    /// clients connect to.
    pub port: u16,
    /// An HTTP path to `GET` (`http-path:`; a status below 400 passes); `None`: a probe
    /// passes when the connection opens.
    pub http_path: Option<String>,
}

impl Default for WizardOptions {
    fn default() -> Self {
        WizardOptions {
            output: PathBuf::from("config"),
            services: 1,
            instances: 2,
            tag: "node".into(),
            import_key: None,
            addresses: Vec::new(),
            backend_port: None,
            health_check: None,
        }
    }
}

/// What the wizard wrote.
#[derive(Debug, Clone)]
pub struct WizardReport {
    /// The config file.
    pub config_path: PathBuf,
    /// Per service: frontend address, key file, instance names.
    pub services: Vec<(OnionAddress, PathBuf, Vec<String>)>,
    /// The user and group ids the files were given: the output directory's, when it
    /// existed already, belongs to someone else and the wizard ran as root (so that the
    /// daemon's user, which owns the directory, can read its config and keys).
    pub owner: Option<(u32, u32)>,
}

/// Why the wizard stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WizardError {
    /// The config file exists already.
    #[error("{0} already exists: choose another --output directory or move the old config away")]
    ConfigExists(PathBuf),
    /// Options do not make sense (a usage error: nothing was read or written).
    #[error("{0}")]
    BadOptions(String),
    /// The key to import is missing, unreadable or not a key (a configuration error:
    /// nothing was written).
    #[error(transparent)]
    ImportKey(KeyError),
    /// A key could not be written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `config.yaml` and one key file per service into `opts.output`.
pub fn run<R: rand::Rng + rand::CryptoRng>(
    opts: &WizardOptions,
    rng: &mut R,
) -> Result<WizardReport, WizardError> {
    if opts.services == 0 || opts.instances == 0 {
        return Err(WizardError::BadOptions(
            "--services and --instances must be at least 1".into(),
        ));
    }
    if opts.import_key.is_some() && opts.services != 1 {
        return Err(WizardError::BadOptions(
            "--key imports one key, so it needs --services 1".into(),
        ));
    }
    check_tag(&opts.tag, opts.instances)?;
    if let Some(port) = &opts.backend_port {
        if port.virtual_port == 0 || !is_valid_service_target(&port.target) {
            return Err(WizardError::BadOptions(format!(
                "backend port {} {:?}: the port must be 1 to 65535 and the target ADDR:PORT, PORT or unix:PATH",
                port.virtual_port, port.target
            )));
        }
    }
    if let Some(check) = &opts.health_check {
        check_health_check(check)?;
    }
    let config_path = opts.output.join("config.yaml");
    if config_path.exists() {
        return Err(WizardError::ConfigExists(config_path));
    }
    // Load or create every key before writing anything, so a bad key leaves no half-written
    // output behind.
    let mut keys: Vec<(FrontendKey, Option<Zeroizing<Vec<u8>>>)> = Vec::new();
    for _ in 0..opts.services {
        match &opts.import_key {
            Some(path) => {
                let bytes = crate::files::read_regular(path, crate::files::MAX_KEY_LEN)
                    .map_err(|e| WizardError::ImportKey(KeyError::Read(e)))?;
                let key = FrontendKey::from_bytes(&bytes, path).map_err(WizardError::ImportKey)?;
                // A C tor key has no seed, so we keep its original bytes.
                let raw = (key.format() == KeyFormat::CTorSecretKey).then_some(bytes);
                keys.push((key, raw));
            }
            None => keys.push((FrontendKey::generate(rng), None)),
        }
    }
    // An existing directory's owner, before we create anything: see `WizardReport::owner`.
    let dir_owner = existing_owner(&opts.output);
    create_private_dir(&opts.output)?;
    let mut file = ConfigFile {
        services: Vec::new(),
    };
    let mut services = Vec::new();
    for (s, (key, _)) in keys.iter().enumerate() {
        let address = key.address();
        let key_name = format!("{}.key", address.base32());
        let key_path = opts.output.join(&key_name);
        let mut instances = Vec::new();
        let mut names = Vec::new();
        for i in 0..opts.instances {
            let name = format!("{}{}", opts.tag, i + 1);
            let addr = opts
                .addresses
                .get(s)
                .and_then(|a| a.get(i))
                .map(|a| a.to_string())
                .unwrap_or_else(|| format!("{PLACEHOLDER_PREFIX}{name}-onion-address"));
            instances.push(ConfigInstance {
                address: addr,
                name: name.clone(),
            });
            names.push(name);
        }
        file.services.push(ConfigService {
            key: key_name,
            instances,
            backend_port: opts.backend_port.as_ref().map(|p| ConfigBackendPort {
                virtual_port: p.virtual_port,
                target: p.target.clone(),
            }),
            health_check: opts.health_check.as_ref().map(|h| ConfigHealthCheck {
                port: h.port,
                http_path: h.http_path.clone(),
            }),
        });
        services.push((address, key_path, names));
    }
    // Plain strings and lists always serialize; say so rather than panic if not.
    let yaml = serde_yaml::to_string(&file).map_err(|e| WizardError::Io {
        path: config_path.clone(),
        source: std::io::Error::other(format!("cannot write the config as YAML: {e}")),
    })?;
    let yaml = format!("{CONFIG_HEADER}{yaml}");
    for ((key, raw), (_, key_path, _)) in keys.iter().zip(&services) {
        match raw {
            Some(bytes) => write_secret_file(key_path, bytes)?,
            None => key.save_pem(key_path)?,
        }
    }
    write_new_file(&config_path, yaml.as_bytes())?;
    let mut written: Vec<&Path> = services.iter().map(|(_, k, _)| k.as_path()).collect();
    written.push(&config_path);
    let owner = give_to_directory_owner(dir_owner, &written)?;
    Ok(WizardReport {
        config_path,
        services,
        owner,
    })
}

/// The comment the wizard puts at the top of `config.yaml`.
const CONFIG_HEADER: &str =
    "# Written by `onionbalance config`. Check it with `onionbalance check -c <this file>`.\n";

/// The config file as the wizard writes it: upstream's format, through the YAML serializer
/// (so that no name or path can change the document's structure).
#[derive(Debug, Serialize)]
struct ConfigFile {
    /// `services:`.
    services: Vec<ConfigService>,
}

/// One `services:` entry.
#[derive(Debug, Serialize)]
struct ConfigService {
    /// `key:`, relative to the config file.
    key: String,
    /// `instances:`.
    instances: Vec<ConfigInstance>,
    /// `backend-port:` (ours), when the ports are not the defaults.
    #[serde(rename = "backend-port", skip_serializing_if = "Option::is_none")]
    backend_port: Option<ConfigBackendPort>,
    /// `health-check:` (ours), when health checks are on.
    #[serde(rename = "health-check", skip_serializing_if = "Option::is_none")]
    health_check: Option<ConfigHealthCheck>,
}

/// A service's `health-check:`, with only the keys the wizard asks for.
#[derive(Debug, Serialize)]
struct ConfigHealthCheck {
    /// `port:`.
    port: u16,
    /// `http-path:`, when probes are HTTP requests.
    #[serde(rename = "http-path", skip_serializing_if = "Option::is_none")]
    http_path: Option<String>,
}

/// A service's `backend-port:`.
#[derive(Debug, Serialize)]
struct ConfigBackendPort {
    /// `virtual:`.
    #[serde(rename = "virtual")]
    virtual_port: u16,
    /// `target:`.
    target: String,
}

/// One `instances:` entry.
#[derive(Debug, Serialize)]
struct ConfigInstance {
    /// `address:`, or a placeholder.
    address: String,
    /// `name:`.
    name: String,
}

/// Refuses a tag that would make instance names the config loader rejects (`<tag>1` to
/// `<tag><instances>`), before anything is read or written.
fn check_tag(tag: &str, instances: usize) -> Result<(), WizardError> {
    let first = format!("{tag}1");
    let last = format!("{tag}{instances}");
    if is_valid_instance_name(&first) && is_valid_instance_name(&last) {
        return Ok(());
    }
    Err(WizardError::BadOptions(format!(
        "--tag {tag:?}: instance names are the tag followed by a number ({first:?}, ...), and a \
         name must be 1 to 63 characters from A-Z, a-z, 0-9, `-`, `_` and `.`, not starting \
         with `.`: choose a tag of those characters"
    )))
}

/// True when `tag` makes valid instance names for `instances` instances (for prompts).
pub fn is_valid_tag(tag: &str, instances: usize) -> bool {
    check_tag(tag, instances).is_ok()
}

/// True when `path` is an `http-path:` the config loader accepts (see
/// [`crate::config::is_valid_http_path`]).
pub fn is_valid_http_path(path: &str) -> bool {
    crate::config::is_valid_http_path(path)
}

/// Refuses health checks the config loader would refuse, before anything is read or
/// written.
fn check_health_check(check: &WizardHealthCheck) -> Result<(), WizardError> {
    if check.port == 0 {
        return Err(WizardError::BadOptions(
            "--health-check-port 0: the port to probe must be 1 to 65535".into(),
        ));
    }
    match &check.http_path {
        Some(path) if !is_valid_http_path(path) => Err(WizardError::BadOptions(format!(
            "--health-check-path {path:?}: an HTTP path must start with `/` and have no spaces or control characters, at most 1024 bytes (e.g. /healthz)"
        ))),
        _ => Ok(()),
    }
}

/// The instructions an operator needs for each backend of `frontend`.
pub fn backend_instructions(frontend: OnionAddress, instance_names: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Frontend address: {frontend}");
    let _ = writeln!(
        out,
        "On each backend (C tor 0.4.8 or later), for instances {}:",
        instance_names.join(", ")
    );
    let _ = writeln!(
        out,
        "  1. in its torrc, next to its HiddenServiceDir / HiddenServicePort lines:"
    );
    let _ = writeln!(out, "       HiddenServiceOnionBalanceInstance 1");
    let _ = writeln!(
        out,
        "  2. create the file <HiddenServiceDir>/ob_config containing the line:"
    );
    let _ = writeln!(out, "       MasterOnionAddress {frontend}");
    let _ = writeln!(
        out,
        "  3. reload tor, then put the backend's own address (<HiddenServiceDir>/hostname)"
    );
    let _ = writeln!(
        out,
        "     into the config in place of its TODO- placeholder."
    );
    let _ = writeln!(
        out,
        "  (`onionbalance backend -c <config>` prints each instance's torrc lines and ob_config.)"
    );
    out
}

/// How a backend's tor serves its instance: where its keys live and what it forwards.
#[derive(Debug, Clone)]
pub struct BackendLayout {
    /// Parent of the backends' `HiddenServiceDir`s (`/var/lib/tor` on Debian).
    pub hs_dir_base: PathBuf,
    /// The onion service's virtual port.
    pub virtual_port: u16,
    /// Where tor forwards connections (the web server), e.g. `127.0.0.1:8080`.
    pub target: String,
}

impl Default for BackendLayout {
    fn default() -> Self {
        BackendLayout {
            hs_dir_base: PathBuf::from("/var/lib/tor"),
            virtual_port: 80,
            target: "127.0.0.1:80".into(),
        }
    }
}

/// The files one backend instance needs: its torrc lines and its `ob_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSetup {
    /// The instance's name.
    pub name: String,
    /// A new `HiddenServiceDir` to create, for an instance whose address is not filled in
    /// yet; `None` for an existing backend, whose `HiddenServiceDir` is wherever its key
    /// already is (a new one would make a new address).
    pub hs_dir: Option<PathBuf>,
    /// Lines for its torrc: a whole new onion service for a new backend; only
    /// `HiddenServiceOnionBalanceInstance 1`, for the existing service's block, otherwise.
    pub torrc: String,
    /// Contents of `<HiddenServiceDir>/ob_config`.
    pub ob_config: String,
}

impl BackendSetup {
    /// Where `ob_config` goes, in words: a path for a new backend; for an existing one,
    /// "the HiddenServiceDir that holds `<address>`'s key".
    pub fn ob_config_place(&self, address: Option<OnionAddress>) -> String {
        match (&self.hs_dir, address) {
            (Some(dir), _) => dir.join("ob_config").display().to_string(),
            (None, Some(a)) => format!("ob_config in the HiddenServiceDir that holds {a}'s key"),
            (None, None) => "ob_config in the backend's HiddenServiceDir".to_owned(),
        }
    }
}

/// What backend `name` of `frontend` needs, laid out as `layout` says. `address` is the
/// backend's address when the config has it: its tor then runs that onion service already,
/// and only needs instance mode and `ob_config` (no new `HiddenServiceDir` is suggested,
/// since that would create a different address). Without it, a new onion service is laid
/// out under `layout.hs_dir_base`.
pub fn backend_setup(
    frontend: OnionAddress,
    name: &str,
    address: Option<OnionAddress>,
    layout: &BackendLayout,
) -> BackendSetup {
    let ob_config = format!("MasterOnionAddress {frontend}\n");
    match address {
        Some(address) => BackendSetup {
            name: name.to_owned(),
            hs_dir: None,
            torrc: format!(
                "# Onionbalance backend \"{name}\" ({address}) of {frontend}:\n\
                 # add to the block of the HiddenServiceDir that holds {address}'s key\n\
                 # (keep its HiddenServiceDir line; clients of the frontend connect to port {},\n\
                 # so it needs a line like `HiddenServicePort {} {}`):\n\
                 HiddenServiceOnionBalanceInstance 1\n",
                layout.virtual_port, layout.virtual_port, layout.target
            ),
            ob_config,
        },
        None => {
            let hs_dir = layout.hs_dir_base.join(format!("onionbalance-{name}"));
            let torrc = format!(
                "# Onionbalance backend \"{name}\" of {frontend} (a new onion service)\n\
                 HiddenServiceDir {}\n\
                 HiddenServicePort {} {}\n\
                 HiddenServiceOnionBalanceInstance 1\n",
                hs_dir.display(),
                layout.virtual_port,
                layout.target
            );
            BackendSetup {
                name: name.to_owned(),
                hs_dir: Some(hs_dir),
                torrc,
                ob_config,
            }
        }
    }
}

/// The user and group of `dir` if it exists (as a directory).
fn existing_owner(dir: &Path) -> Option<(u32, u32)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(dir)
            .ok()
            .filter(fs::Metadata::is_dir)
            .map(|m| (m.uid(), m.gid()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// When we run as root (the files we wrote belong to uid 0) and the output directory
/// existed with another owner or group, gives `files` that owner and group: the directory
/// is the daemon's (the Debian package makes /etc/onionbalance onionbalance:onionbalance
/// 0750), and its user must read the 0600 files. Returns the ids given, if any.
fn give_to_directory_owner(
    dir_owner: Option<(u32, u32)>,
    files: &[&Path],
) -> Result<Option<(u32, u32)>, WizardError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let Some((uid, gid)) = dir_owner else {
            return Ok(None);
        };
        let Some(first) = files.first() else {
            return Ok(None);
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WizardError::Io { path, source }
        };
        let ours = fs::symlink_metadata(first).map_err(io(first))?;
        if ours.uid() != 0 || (ours.uid(), ours.gid()) == (uid, gid) {
            return Ok(None);
        }
        for f in files {
            // lchown: never follow a link that the directory's owner might have put in place
            // of a file we wrote.
            std::os::unix::fs::lchown(f, Some(uid), Some(gid)).map_err(io(f))?;
        }
        Ok(Some((uid, gid)))
    }
    #[cfg(not(unix))]
    {
        let _ = (dir_owner, files);
        Ok(None)
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing.
fn create_private_dir(dir: &Path) -> Result<(), WizardError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| WizardError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Writes a new (never existing) file, mode 0600: a config names the backends, which is
/// worth keeping from other local users even when the directory is open to them.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<(), WizardError> {
    use std::io::Write as _;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .map_err(|source| WizardError::Io {
            path: path.to_owned(),
            source,
        })
}

impl crate::error::HasKind for WizardError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            WizardError::Key(e) | WizardError::ImportKey(e) => e.kind(),
            WizardError::Io { .. } => crate::error::ErrorKind::LocalIo,
            _ => crate::error::ErrorKind::Config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use rand::SeedableRng as _;

    #[test]
    fn writes_config_and_key_then_check_lists_placeholders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("cfg");
        // An output directory that exists already, open to everyone to read: the files in it
        // must still be private.
        fs::create_dir(&out).expect("mkdir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let opts = WizardOptions {
            output: out.clone(),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(9)).expect("wizard");
        let (addr, key_path, names) = &report.services[0];
        assert_eq!(names, &["node1", "node2"]);
        assert_eq!(key_path, &out.join(format!("{}.key", addr.base32())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in [key_path, &report.config_path] {
                let m = fs::metadata(f).expect("meta").permissions().mode();
                assert_eq!(m & 0o777, 0o600, "{}", f.display());
            }
        }
        assert_eq!(FrontendKey::load(key_path).expect("key").address(), *addr);
        match Config::load_with_env(&report.config_path, |_| None) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert_eq!(problems.len(), 2);
                assert!(problems.iter().all(|p| p.placeholder));
                assert!(problems[1].location.contains("\"node2\""));
            }
            other => panic!("expected placeholders, got {other:?}"),
        }
        // never overwrites
        assert!(matches!(
            run(&opts, &mut rand::rngs::StdRng::seed_from_u64(9)),
            Err(WizardError::ConfigExists(_))
        ));
    }

    /// The ports given to the wizard are stored, read back by the loader without a warning.
    #[test]
    fn stores_the_backend_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = BackendPort {
            virtual_port: 443,
            target: "127.0.0.1:8080".into(),
        };
        let opts = WizardOptions {
            output: dir.path().join("o"),
            instances: 1,
            backend_port: Some(port.clone()),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(2)).expect("wizard");
        let cfg = Config::load_allowing_placeholders(&report.config_path).expect("loads");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(cfg.services[0].backend_port, Some(port));
        // Without one the file stays in upstream's format.
        let opts = WizardOptions {
            output: dir.path().join("p"),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(2)).expect("wizard");
        let text = fs::read_to_string(&report.config_path).expect("read");
        assert!(!text.contains("backend-port"), "{text}");
    }

    /// Health checks asked for are written with the port and path only; the loader reads
    /// them back with its defaults for the rest, without a warning. Without them the file
    /// has no `health-check:`.
    #[test]
    fn stores_health_checks_with_defaults_left_out() {
        use crate::config::HealthCheckConfig;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WizardOptions {
            output: dir.path().join("o"),
            health_check: Some(WizardHealthCheck {
                port: 8080,
                http_path: Some("/healthz".into()),
            }),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(3)).expect("wizard");
        let text = fs::read_to_string(&report.config_path).expect("read");
        assert!(
            text.contains("  health-check:\n    port: 8080\n    http-path: /healthz\n"),
            "{text}"
        );
        for default in ["interval", "timeout", "down-after", "up-after", "enabled"] {
            assert!(!text.contains(default), "{default}: {text}");
        }
        let cfg = Config::load_allowing_placeholders(&report.config_path).expect("loads");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(
            cfg.services[0].health_check,
            Some(HealthCheckConfig {
                port: 8080,
                http_path: Some("/healthz".into()),
                interval: HealthCheckConfig::DEFAULT_INTERVAL,
                timeout: HealthCheckConfig::DEFAULT_TIMEOUT,
                down_after: HealthCheckConfig::DEFAULT_DOWN_AFTER,
                up_after: HealthCheckConfig::DEFAULT_UP_AFTER,
            })
        );

        // A bare connect: no path written.
        let opts = WizardOptions {
            output: dir.path().join("tcp"),
            health_check: Some(WizardHealthCheck {
                port: 80,
                http_path: None,
            }),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(3)).expect("wizard");
        let cfg = Config::load_allowing_placeholders(&report.config_path).expect("loads");
        let check = cfg.services[0].health_check.clone().expect("checks on");
        assert_eq!((check.port, check.http_path), (80, None));

        // Off: nothing written.
        let opts = WizardOptions {
            output: dir.path().join("off"),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(3)).expect("wizard");
        let text = fs::read_to_string(&report.config_path).expect("read");
        assert!(!text.contains("health-check"), "{text}");

        // Refused before anything is written.
        for bad in [
            WizardHealthCheck {
                port: 0,
                http_path: None,
            },
            WizardHealthCheck {
                port: 80,
                http_path: Some("healthz".into()),
            },
        ] {
            let out = dir.path().join("bad");
            let opts = WizardOptions {
                output: out.clone(),
                health_check: Some(bad.clone()),
                ..Default::default()
            };
            assert!(
                matches!(
                    run(&opts, &mut rand::rngs::StdRng::seed_from_u64(3)),
                    Err(WizardError::BadOptions(_))
                ),
                "{bad:?}"
            );
            assert!(!out.exists(), "{bad:?}");
        }
    }

    /// The wizard's `http-path` rule is the loader's: each path the one accepts, the other
    /// does, and the same for refusals.
    #[test]
    fn http_path_rule_matches_the_loader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WizardOptions {
            output: dir.path().join("o"),
            health_check: Some(WizardHealthCheck {
                port: 80,
                http_path: Some("/x".into()),
            }),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(5)).expect("wizard");
        let written = fs::read_to_string(&report.config_path).expect("read");
        let long = format!("/{}", "a".repeat(1023));
        let too_long = format!("/{}", "a".repeat(1024));
        for path in [
            "/",
            "/healthz",
            "/status?full=1",
            "/%20x",
            long.as_str(),
            too_long.as_str(),
            "healthz",
            "",
            "/a b",
            "/a\tb",
            "/a\u{7f}",
            "/caf\u{e9}",
            "/a\u{a0}b",
        ] {
            let quoted = serde_yaml::to_string(path).expect("yaml");
            let text = written.replace(
                "http-path: /x",
                &format!("http-path: {}", quoted.trim_end()),
            );
            fs::write(&report.config_path, &text).expect("write");
            let loader_accepts = match Config::load_allowing_placeholders(&report.config_path) {
                Ok(_) => true,
                Err(ConfigError::Invalid { problems, .. }) => {
                    assert!(
                        problems.iter().all(|p| p.message.contains("http-path")),
                        "{path:?}: {problems:?}"
                    );
                    false
                }
                Err(e) => panic!("{path:?}: {e}"),
            };
            assert_eq!(is_valid_http_path(path), loader_accepts, "{path:?}");
        }
    }

    #[test]
    fn backend_setup_has_instance_mode_and_master_address() {
        let front: OnionAddress = "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad.onion"
            .parse()
            .expect("addr");
        let b = backend_setup(front, "node1", None, &BackendLayout::default());
        assert_eq!(
            b.hs_dir,
            Some(PathBuf::from("/var/lib/tor/onionbalance-node1"))
        );
        assert!(b
            .torrc
            .contains("HiddenServiceDir /var/lib/tor/onionbalance-node1\n"));
        assert!(b.torrc.contains("HiddenServicePort 80 127.0.0.1:80\n"));
        assert!(b.torrc.contains("HiddenServiceOnionBalanceInstance 1\n"));
        assert_eq!(b.ob_config, format!("MasterOnionAddress {front}\n"));

        // A backend whose address is known keeps its own HiddenServiceDir.
        let own: OnionAddress = "nbvwr3rbofr42gr47qfcjohqxq75h7xbzi4oywh2rvigbmqmizqjodid.onion"
            .parse()
            .expect("addr");
        let b = backend_setup(front, "node1", Some(own), &BackendLayout::default());
        assert_eq!(b.hs_dir, None);
        assert!(
            !b.torrc.lines().any(|l| l.starts_with("HiddenServiceDir")),
            "{}",
            b.torrc
        );
        assert!(b
            .torrc
            .contains(&format!("HiddenServiceDir that holds {own}'s key")));
        assert!(b.torrc.ends_with("\nHiddenServiceOnionBalanceInstance 1\n"));
        assert_eq!(b.ob_config, format!("MasterOnionAddress {front}\n"));
        assert!(b
            .ob_config_place(Some(own))
            .contains(&format!("HiddenServiceDir that holds {own}'s key")));
    }

    /// As root, in an existing directory of another user (as the Debian package makes
    /// /etc/onionbalance), the config and keys go to that user and group, still 0600; in a
    /// directory the wizard creates, they stay ours.
    #[cfg(unix)]
    #[test]
    fn files_go_to_the_owner_of_an_existing_directory() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = dir.path().join("probe");
        fs::write(&probe, "").expect("write");
        if fs::metadata(&probe).expect("meta").uid() != 0 {
            eprintln!("not root: skipping");
            return;
        }
        let out = dir.path().join("etc-onionbalance");
        fs::create_dir(&out).expect("mkdir");
        fs::set_permissions(&out, fs::Permissions::from_mode(0o750)).expect("chmod");
        std::os::unix::fs::chown(&out, Some(65534), Some(65533)).expect("chown");
        let opts = WizardOptions {
            output: out.clone(),
            services: 2,
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(4)).expect("wizard");
        assert_eq!(report.owner, Some((65534, 65533)));
        let mut files: Vec<&Path> = report.services.iter().map(|s| s.1.as_path()).collect();
        files.push(&report.config_path);
        assert_eq!(files.len(), 3);
        for f in files {
            let m = fs::metadata(f).expect("meta");
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o777),
                (65534, 65533, 0o600),
                "{f:?}"
            );
        }
        // A directory the wizard makes itself is root's: nothing is given away.
        let opts = WizardOptions {
            output: dir.path().join("new"),
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(4)).expect("wizard");
        assert_eq!(report.owner, None);
        assert_eq!(fs::metadata(&report.config_path).expect("meta").uid(), 0);
    }

    #[test]
    fn imports_a_ctor_key_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys/ctor/hs_ed25519_secret_key");
        let opts = WizardOptions {
            output: dir.path().join("o"),
            import_key: Some(src.clone()),
            instances: 1,
            ..Default::default()
        };
        let report = run(&opts, &mut rand::rngs::StdRng::seed_from_u64(1)).expect("wizard");
        let (addr, key_path, _) = &report.services[0];
        assert_eq!(
            fs::read(key_path).expect("copy"),
            fs::read(&src).expect("orig")
        );
        let hostname = fs::read_to_string(src.with_file_name("hostname")).expect("hostname");
        assert_eq!(addr.to_string(), hostname.trim());
    }
}
