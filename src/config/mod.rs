//! The configuration file: upstream Onionbalance v3 YAML, read unchanged.
//!
//! ```yaml
//! status-socket-location: /run/onionbalance/control   # optional
//! services:
//!   - key: frontend.key            # relative to this file's directory
//!     instances:
//!       - address: <56 chars>.onion  # ".onion" optional
//!         name: node1                # optional
//!     authorized-clients-dir: clients  # optional: restricted discovery, `<name>.auth` files
//!     authorized-clients:              # optional: the same, inline
//!       - name: alice
//!         key: descriptor:x25519:<52 base32 chars>
//!     backend-port:                    # optional, ours: for `onionbalance backend`
//!       virtual: 443                   # the port clients connect to
//!       target: 127.0.0.1:8080         # where each backend's tor forwards them
//!     health-check:                    # optional, ours: probe the backends (see `health`)
//!       port: 80
//!       http-path: /healthz
//! ```
//!
//! An instance may also have `drain: true` (ours: out of every descriptor on purpose) and
//! its own `health-check:` mapping, whose keys replace the service's for it.
//!
//! `backend-port:` is this implementation's (upstream's loader ignores it): the wizard
//! writes the ports it was given there when they are not the defaults (80 and
//! `127.0.0.1:80`), and `onionbalance backend` prints them in each backend's
//! `HiddenServicePort` line unless its own `--port`/`--target` say otherwise. The daemon
//! itself does not use it.
//!
//! Loading validates everything an operator can get wrong and reports *all* problems at once,
//! each naming the file, the service and the instance, and what to do. Keys that this version
//! does not know are reported as warnings (they are probably typos) rather than errors, so a
//! config written for a newer version still loads.
//!
//! Environment overrides: [`ENV_STATUS_SOCKET`] replaces `status-socket-location`; the
//! command line uses [`ENV_CONFIG`] as the default config path.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod guard;
mod health;
mod raw;

use health::HealthCheckKeys;
pub use health::{is_valid_http_path, HealthCheckConfig};
use raw::{RawBackendPort, RawClient, RawConfig, RawService};

use tor_llcrypto::pk::curve25519;

use crate::client_auth::{self, AuthorizedClient};
use crate::files::FileError;
use crate::keys::FrontendKey;
use crate::onion::OnionAddress;

/// Environment variable naming the config file when `-c` is not given (as upstream).
pub const ENV_CONFIG: &str = "ONIONBALANCE_CONFIG";

/// True when `name` is usable as an instance name: 1 to 63 characters from `A-Z a-z 0-9 . _ -`,
/// not starting with a dot (names become file names, e.g. with `onionbalance backend --write`).
pub fn is_valid_instance_name(name: &str) -> bool {
    crate::files::is_safe_name(name)
}
/// True when `target` is a service target as tor's `HiddenServicePort` takes it: `ADDR:PORT`,
/// a bare `PORT`, or `unix:PATH`, with no spaces or control characters (it ends up in a
/// torrc line).
pub fn is_valid_service_target(target: &str) -> bool {
    if target.is_empty() || target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p != 0);
    if let Some(path) = target.strip_prefix("unix:") {
        !path.is_empty()
    } else if let Some((host, port)) = target.rsplit_once(':') {
        !host.is_empty() && port_ok(port)
    } else {
        port_ok(target)
    }
}

/// Environment variable that overrides `status-socket-location` (as upstream).
pub const ENV_STATUS_SOCKET: &str = "ONIONBALANCE_STATUS_SOCKET_LOCATION";
/// Instance addresses starting with this are placeholders written by `onionbalance config`.
pub const PLACEHOLDER_PREFIX: &str = "TODO-";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The frontend services, in file order.
    pub services: Vec<ServiceConfig>,
    /// Where to create the status socket, if anywhere (after the environment override).
    pub status_socket_location: Option<PathBuf>,
    /// Non-fatal remarks (unknown keys) for the caller to log.
    pub warnings: Vec<String>,
}

/// One frontend service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The key file, resolved against the config file's directory.
    pub key_path: PathBuf,
    /// The loaded frontend key.
    pub key: Arc<FrontendKey>,
    /// The backends, in file order.
    pub instances: Vec<InstanceConfig>,
    /// Names of instances whose address is still a placeholder (only with
    /// [`Config::load_allowing_placeholders`]; otherwise placeholders are errors).
    pub pending: Vec<String>,
    /// Restricted discovery: `None` when anyone who knows the address may connect (the
    /// service has neither `authorized-clients:` nor `authorized-clients-dir:`).
    pub client_auth: Option<ClientAuthConfig>,
    /// The backends' port (`backend-port:`, ours), if configured: what
    /// `onionbalance backend` prints. The daemon does not use it.
    pub backend_port: Option<BackendPort>,
    /// The service's `health-check:` (ours), as its instances inherit it; each instance's
    /// own, after its overrides, is [`InstanceConfig::health_check`].
    pub health_check: Option<HealthCheckConfig>,
}

/// A service's `backend-port:`: the port its clients connect to and where each backend's
/// tor forwards them, as in a backend's `HiddenServicePort <virtual> <target>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPort {
    /// The onion service's virtual port (`virtual:`), 1 to 65535.
    pub virtual_port: u16,
    /// Where the backends' tor forwards connections (`target:`): `ADDR:PORT`, `PORT` or
    /// `unix:PATH` (see [`is_valid_service_target`]).
    pub target: String,
}

/// The clients allowed to discover one frontend (see [`crate::client_auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// Every client: the inline ones in file order, then the directory's by name. May be
    /// empty: the descriptor then lists only random entries and nobody can use it, which is
    /// what an operator who removed the last client asked for.
    pub clients: Vec<AuthorizedClient>,
    /// The authorized-clients directory, resolved against the config file's directory, if
    /// configured (`onionbalance client-auth add` writes there).
    pub dir: Option<PathBuf>,
}

impl ClientAuthConfig {
    /// The clients' public keys, for the descriptor.
    pub fn keys(&self) -> Vec<curve25519::PublicKey> {
        self.clients.iter().map(|c| *c.key).collect()
    }
}

impl ServiceConfig {
    /// The frontend's onion address.
    pub fn address(&self) -> OnionAddress {
        self.key.address()
    }
}

/// One backend instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The backend's onion address.
    pub address: OnionAddress,
    /// Its name (from the file, or `instance-N`).
    pub name: String,
    /// How it is probed (the service's `health-check:` with this instance's overrides);
    /// `None`: not probed.
    pub health_check: Option<HealthCheckConfig>,
    /// Taken out of every descriptor on purpose (`drain: true`, ours).
    pub drain: bool,
}

impl InstanceConfig {
    /// An instance with no health check, not drained.
    pub fn new(address: OnionAddress, name: impl Into<String>) -> Self {
        InstanceConfig {
            address,
            name: name.into(),
            health_check: None,
            drain: false,
        }
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: e.g. `service 1 (key frontend.key), instance 2 "node2"`.
    pub location: String,
    /// What is wrong and what to do.
    pub message: String,
    /// True when the problem is an instance address not filled in yet.
    pub placeholder: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (or is not a regular file of at most 1 MiB).
    #[error("cannot read config file {}: {}{}", path.display(), error.reason(), if error.io_kind() == Some(std::io::ErrorKind::NotFound) { " (create one with `onionbalance config`)" } else { "" })]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (its text is part of this error's message).
        error: FileError,
    },
    /// The file holds key material, not a config (a key file given as `-c`, an easy slip).
    /// The message names what kind of key it looks like, never its content.
    #[error("{} is {what}, not a config file: give -c the YAML config (e.g. config.yaml), which names its key files under `key:`", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What it looks like, e.g. "a private key (PEM)".
        what: &'static str,
    },
    /// The file is not valid YAML or has the wrong shape.
    #[error("{path}{}: invalid config: {message}", line.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line and column (1-based), when known.
        line: Option<(usize, usize)>,
        /// What the parser said.
        message: String,
    },
    /// The file parsed but its content is invalid.
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Everything that is wrong.
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Reads and validates `path`, loading every frontend key, honouring [`ENV_STATUS_SOCKET`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`], but instance addresses still holding the wizard's placeholder
    /// are listed in [`ServiceConfig::pending`] instead of being errors: for preparing
    /// backends before their addresses are known.
    pub fn load_allowing_placeholders(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        Self::parse_inner(&text, path, true)
    }

    /// Like [`Config::load`], with the environment given as a function (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        let mut cfg = Self::parse(&text, path)?;
        if let Some(sock) = env(ENV_STATUS_SOCKET).filter(|s| !s.is_empty()) {
            cfg.status_socket_location = Some(PathBuf::from(sock));
        }
        Ok(cfg)
    }

    /// Parses and validates config text; `path` locates relative key paths and names the file
    /// in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse_inner(text, path, false)
    }

    /// [`Config::parse`], optionally accepting placeholders.
    fn parse_inner(
        text: &str,
        path: &Path,
        allow_placeholders: bool,
    ) -> Result<Config, ConfigError> {
        // Parsers quote what they could not read: keep any quoted content (a key pasted in
        // the wrong place) out of the message (see `redact`).
        let syntax = |e: serde_yaml::Error| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.location().map(|l| (l.line(), l.column())),
            message: crate::redact::parser_message(&e.to_string()),
        };
        if let Some(what) = crate::redact::key_material(text.as_bytes()) {
            return Err(ConfigError::KeyFile {
                path: path.to_owned(),
                what,
            });
        }
        // What the text may cost is checked before anything is built (see `guard`).
        if let Some(line) = guard::flow_depth(text) {
            return Err(ConfigError::Syntax {
                path: path.to_owned(),
                line: Some((line, 1)),
                message: format!(
                    "`[` and `{{` nest deeper than {} levels here: a config needs a few",
                    guard::MAX_FLOW_DEPTH
                ),
            });
        }
        guard::within_budget(serde_yaml::Deserializer::from_str(text)).map_err(syntax)?;
        let raw: RawConfig = serde_yaml::from_str(text).map_err(syntax)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Validator {
            base: &base,
            allow_placeholders,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
        .run(raw, path)
    }
}

/// Collects problems while turning a [`RawConfig`] into a [`Config`].
struct Validator<'a> {
    /// Directory relative key paths are resolved against.
    base: &'a Path,
    /// Whether placeholder addresses are accepted (as pending instances).
    allow_placeholders: bool,
    /// Fatal problems found so far.
    problems: Vec<Problem>,
    /// Non-fatal remarks.
    warnings: Vec<String>,
}

impl Validator<'_> {
    /// Records a fatal problem.
    fn problem(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.to_owned(),
            message: message.into(),
            placeholder: false,
        });
    }

    /// Records unknown keys as warnings.
    fn unknown(&mut self, location: &str, unknown: &[String]) {
        for k in unknown {
            let at = if location.is_empty() {
                "top level".to_owned()
            } else {
                location.to_owned()
            };
            self.warnings
                .push(format!("{at}: unknown key `{k}` ignored (typo?)"));
        }
    }

    /// Validates everything and builds the config, or returns all problems.
    fn run(mut self, raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        self.unknown("", &raw.unknown);
        let raw_services = raw.services.unwrap_or_default();
        if raw_services.is_empty() {
            self.problem(
                "",
                "no services: add a `services:` list with at least one `key:` and its `instances:` (see `onionbalance config`)",
            );
        }
        let mut services = Vec::new();
        let mut frontends = HashSet::new();
        for (i, rs) in raw_services.into_iter().enumerate() {
            if let Some(svc) = self.service(i + 1, rs) {
                if !frontends.insert(svc.address()) {
                    let loc = format!("service {}", i + 1);
                    self.problem(
                        &loc,
                        format!(
                            "frontend {} is configured twice: merge the two services' instances into one",
                            svc.address()
                        ),
                    );
                }
                services.push(svc);
            }
        }
        if !self.problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: self.problems,
            });
        }
        Ok(Config {
            path: path.to_owned(),
            services,
            status_socket_location: raw.status_socket_location,
            warnings: self.warnings,
        })
    }

    /// Validates one service; `None` if it is unusable (problems recorded).
    fn service(&mut self, n: usize, rs: RawService) -> Option<ServiceConfig> {
        let key_name = rs.key.clone().unwrap_or_default();
        let loc = if key_name.is_empty() {
            format!("service {n}")
        } else {
            format!("service {n} (key {key_name})")
        };
        self.unknown(&loc, &rs.unknown);
        let key = match rs.key.as_deref().map(str::trim) {
            None | Some("") => {
                self.problem(
                    &loc,
                    "no `key:`: give the path of the frontend's key file (PKCS#8 PEM or C tor hs_ed25519_secret_key)",
                );
                None
            }
            Some(k) => {
                let key_path = self.base.join(k);
                if !key_path.exists() {
                    self.problem(
                        &loc,
                        format!(
                            "key file {} does not exist (paths are relative to the config file's directory)",
                            key_path.display()
                        ),
                    );
                    None
                } else {
                    match FrontendKey::load(&key_path) {
                        Ok(key) => Some((key_path, Arc::new(key))),
                        Err(e) => {
                            self.problem(&loc, e.to_string());
                            None
                        }
                    }
                }
            }
        };
        let frontend = key.as_ref().map(|(_, k)| k.address());
        let hloc = format!("{loc}, health-check");
        let service_checks = match rs.health_check {
            Some(raw) => {
                self.unknown(&hloc, &raw.unknown);
                let mut found = Vec::new();
                let keys = HealthCheckKeys::read(raw, |p| found.push(p));
                for p in found {
                    self.problem(&hloc, p);
                }
                keys
            }
            None => HealthCheckKeys::default(),
        };
        let health_check = service_checks.resolve().unwrap_or_else(|p| {
            self.problem(&hloc, p);
            None
        });
        let raw_instances = rs.instances.unwrap_or_default();
        if raw_instances.is_empty() {
            self.problem(
                &loc,
                "no `instances:`: list at least one backend with its `address:`",
            );
        }
        let mut instances: Vec<InstanceConfig> = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for (j, ri) in raw_instances.into_iter().enumerate() {
            let name = ri
                .name
                .clone()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| format!("instance-{}", j + 1));
            let iloc = format!("{loc}, instance {} {name:?}", j + 1);
            self.unknown(&iloc, &ri.unknown);
            if !crate::files::is_safe_name(&name) {
                // Names end up in file names and torrc lines (`onionbalance backend`).
                self.problem(
                    &iloc,
                    "`name:` must be 1 to 63 letters, digits, `-`, `_` or `.`, not starting with `.`",
                );
                continue;
            }
            let Some(addr_text) = ri
                .address
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
            else {
                self.problem(
                    &iloc,
                    "no `address:`: give the backend's onion address (its HiddenServiceDir/hostname)",
                );
                continue;
            };
            if addr_text.starts_with(PLACEHOLDER_PREFIX) {
                if self.allow_placeholders {
                    pending.push(name);
                    continue;
                }
                self.problems.push(Problem {
                    location: iloc,
                    message: "address not filled in yet: replace the placeholder with this backend's onion address (from its HiddenServiceDir/hostname)".into(),
                    placeholder: true,
                });
                continue;
            }
            let address: OnionAddress = match addr_text.parse() {
                Ok(a) => a,
                Err(e) => {
                    self.problem(&iloc, format!("address \"{addr_text}\" {e}"));
                    continue;
                }
            };
            if Some(address) == frontend {
                self.problem(
                    &iloc,
                    "this is the frontend's own address: list the backends' addresses here, not the frontend's",
                );
                continue;
            }
            if let Some(prev) = instances.iter().find(|i| i.address == address) {
                self.problem(
                    &iloc,
                    format!(
                        "{address} is listed twice in this service (also as \"{}\"): remove one",
                        prev.name
                    ),
                );
                continue;
            }
            let checks = match ri.health_check {
                Some(raw) => {
                    let ihloc = format!("{iloc}, health-check");
                    self.unknown(&ihloc, &raw.unknown);
                    let mut found = Vec::new();
                    let own = HealthCheckKeys::read(raw, |p| found.push(p));
                    for p in found {
                        self.problem(&ihloc, p);
                    }
                    service_checks
                        .overridden_by(&own)
                        .resolve()
                        .unwrap_or_else(|p| {
                            self.problem(&ihloc, p);
                            None
                        })
                }
                None => health_check.clone(),
            };
            instances.push(InstanceConfig {
                address,
                name,
                health_check: checks,
                drain: ri.drain.unwrap_or(false),
            });
        }
        let client_auth = self.client_auth(&loc, rs.authorized_clients, rs.authorized_clients_dir);
        let backend_port = rs.backend_port.and_then(|p| self.backend_port(&loc, p));
        let (key_path, key) = key?;
        Some(ServiceConfig {
            key_path,
            key,
            instances,
            pending,
            client_auth,
            backend_port,
            health_check,
        })
    }

    /// Validates a service's `backend-port:`; `None` if it is unusable (problems recorded).
    fn backend_port(&mut self, loc: &str, raw: RawBackendPort) -> Option<BackendPort> {
        let ploc = format!("{loc}, backend-port");
        self.unknown(&ploc, &raw.unknown);
        let virtual_port = match raw.virtual_port {
            Some(p) if p != 0 => Some(p),
            _ => {
                self.problem(
                    &ploc,
                    "`virtual:` must be the port clients connect to, 1 to 65535 (e.g. `virtual: 80`)",
                );
                None
            }
        };
        let target = match raw.target {
            Some(t) if is_valid_service_target(&t) => Some(t),
            _ => {
                self.problem(
                    &ploc,
                    "`target:` must be where each backend's tor forwards connections: ADDR:PORT (e.g. 127.0.0.1:8080), PORT or unix:PATH",
                );
                None
            }
        };
        Some(BackendPort {
            virtual_port: virtual_port?,
            target: target?,
        })
    }

    /// Validates a service's authorized clients; `None` when it has none configured (open).
    fn client_auth(
        &mut self,
        loc: &str,
        inline: Option<Vec<RawClient>>,
        dir: Option<String>,
    ) -> Option<ClientAuthConfig> {
        if inline.is_none() && dir.is_none() {
            return None;
        }
        let mut clients: Vec<AuthorizedClient> = Vec::new();
        let mut add = |v: &mut Self, where_: String, client: AuthorizedClient| {
            if let Some(prev) = clients.iter().find(|c| c.name == client.name) {
                v.problem(
                    &where_,
                    format!(
                        "client name \"{}\" is used twice: give each client its own name",
                        prev.name
                    ),
                );
            } else if let Some(prev) = clients.iter().find(|c| c.key == client.key) {
                v.problem(
                    &where_,
                    format!(
                        "this key is already authorized as \"{}\": remove one of the two",
                        prev.name
                    ),
                );
            } else {
                clients.push(client);
            }
        };
        for (k, rc) in inline.unwrap_or_default().into_iter().enumerate() {
            let name = rc
                .name
                .as_deref()
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            let cloc = if name.is_empty() {
                format!("{loc}, authorized client {}", k + 1)
            } else {
                format!("{loc}, authorized client {} \"{name}\"", k + 1)
            };
            self.unknown(&cloc, &rc.unknown);
            if !client_auth::valid_client_name(&name) {
                self.problem(
                    &cloc,
                    if name.is_empty() {
                        "no `name:`: give each authorized client a name (letters, digits, `-`, `_`, `.`)".to_owned()
                    } else {
                        client_auth::ClientKeyError::BadName(name).to_string()
                    },
                );
                continue;
            }
            let Some(text) = rc.key.as_deref().filter(|t| !t.trim().is_empty()) else {
                self.problem(
                    &cloc,
                    "no `key:`: give the client's public key, `descriptor:x25519:<base32>`",
                );
                continue;
            };
            match client_auth::parse_public_key(text) {
                Ok(key) => add(self, cloc, AuthorizedClient { name, key }),
                Err(e) => self.problem(&cloc, e.to_string()),
            }
        }
        let dir = dir.map(|d| self.base.join(d.trim()));
        if let Some(d) = dir.as_ref().filter(|d| !d.exists()) {
            // Fail closed: the operator asked for restricted discovery, so a missing
            // directory authorizes nobody rather than everybody.
            self.warnings.push(format!(
                "{loc}: authorized-clients-dir {} does not exist: no client is authorized yet (add one with `onionbalance client-auth add`)",
                d.display()
            ));
        } else if let Some(d) = &dir {
            let dloc = format!("{loc}, authorized-clients-dir");
            match client_auth::read_auth_dir(d) {
                Ok(found) => {
                    for c in found {
                        let cloc =
                            format!("{dloc} {}", d.join(format!("{}.auth", c.name)).display());
                        add(self, cloc, c);
                    }
                }
                Err(problems) => {
                    for p in problems {
                        self.problem(&dloc, p);
                    }
                }
            }
        }
        if clients.len() > client_auth::MAX_AUTHORIZED_CLIENTS {
            self.problem(
                loc,
                format!(
                    "{} authorized clients: at most {} fit in a descriptor under Tor's 50,000-byte limit, and only beside a single intro point ({} beside 20: `onionbalance check` prints the table). Remove clients, or split them over several frontend addresses",
                    clients.len(),
                    client_auth::MAX_AUTHORIZED_CLIENTS,
                    client_auth::CLIENTS_BESIDE_20_INTRO_POINTS,
                ),
            );
        }
        Some(ClientAuthConfig { clients, dir })
    }
}

/// Reads a config file: a regular file of at most [`crate::files::MAX_CONFIG_LEN`] bytes.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        crate::files::read_regular(path, crate::files::MAX_CONFIG_LEN).map_err(|error| {
            ConfigError::Read {
                path: path.to_owned(),
                error,
            }
        })?;
    // Before anything tries to read it as text: a binary C tor key is not UTF-8.
    if let Some(what) = crate::redact::key_material(&bytes) {
        return Err(ConfigError::KeyFile {
            path: path.to_owned(),
            what,
        });
    }
    crate::files::text_of(path, &bytes)
        .map(|text| text.as_str().to_owned())
        .map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })
}

impl crate::error::HasKind for ConfigError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ConfigError::Read { .. } => crate::error::ErrorKind::LocalIo,
            _ => crate::error::ErrorKind::Config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    const BACKEND_A: &str = "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad.onion";
    const BACKEND_B: &str = "nbvwr3rbofr42gr47qfcjohqxq75h7xbzi4oywh2rvigbmqmizqjodid";

    /// A temp dir holding `frontend.key`; returns (dir, frontend address).
    fn dir_with_key() -> (tempfile::TempDir, OnionAddress) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = FrontendKey::generate(&mut rand::rngs::StdRng::seed_from_u64(3));
        key.save_pem(&dir.path().join("frontend.key"))
            .expect("save");
        (dir, key.address())
    }

    fn parse_in(dir: &Path, yaml: &str) -> Result<Config, ConfigError> {
        let p = dir.join("config.yaml");
        std::fs::write(&p, yaml).expect("write");
        Config::load_with_env(&p, |_| None)
    }

    fn problems(r: Result<Config, ConfigError>) -> Vec<Problem> {
        match r {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn reads_upstream_config() {
        let (dir, frontend) = dir_with_key();
        let yaml = format!(
            "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n    name: node1\n  - address: {BACKEND_B}\nstatus-socket-location: /tmp/ob.sock\n"
        );
        let cfg = parse_in(dir.path(), &yaml).expect("valid");
        assert_eq!(cfg.services.len(), 1);
        let s = &cfg.services[0];
        assert_eq!(s.address(), frontend);
        assert_eq!(s.key_path, dir.path().join("frontend.key"));
        assert_eq!(s.instances[0].name, "node1");
        assert_eq!(s.instances[1].name, "instance-2");
        assert_eq!(
            s.instances[1].address.to_string(),
            format!("{BACKEND_B}.onion")
        );
        assert_eq!(
            cfg.status_socket_location,
            Some(PathBuf::from("/tmp/ob.sock"))
        );
        assert!(cfg.warnings.is_empty());
    }

    #[test]
    fn env_overrides_status_socket() {
        let (dir, _) = dir_with_key();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            format!("services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n"),
        )
        .expect("write");
        let cfg = Config::load_with_env(&p, |k| {
            (k == ENV_STATUS_SOCKET).then(|| "/run/x.sock".to_owned())
        })
        .expect("valid");
        assert_eq!(
            cfg.status_socket_location,
            Some(PathBuf::from("/run/x.sock"))
        );
    }

    #[test]
    fn yaml_errors_have_lines() {
        let (dir, _) = dir_with_key();
        let e = parse_in(dir.path(), "services:\n  - key: [unclosed\n").expect_err("bad yaml");
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                ConfigError::Syntax {
                    line: Some((_, _)),
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("config.yaml:"), "{msg}");
    }

    #[test]
    fn reports_every_problem_with_location() {
        let (dir, frontend) = dir_with_key();
        let yaml = format!(
            "services:
- key: frontend.key
  instances:
  - address: {frontend}
    name: self
  - address: {BACKEND_A}
    name: a
  - address: {BACKEND_A}
    name: a-again
  - address: abcdef.onion
    name: short
  - address: {bad_checksum}
    name: typo
  - address: TODO-node6-onion-address
    name: node6
- key: missing.key
  instances: []
",
            bad_checksum = BACKEND_A.replacen('z', "y", 1)
        );
        let ps = problems(parse_in(dir.path(), &yaml));
        let text: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str, loc: &str| {
            assert!(
                ps.iter()
                    .any(|p| p.message.contains(needle) && p.location.contains(loc)),
                "no problem with {needle:?} at {loc:?} in {text:#?}"
            )
        };
        has("frontend's own address", "instance 1 \"self\"");
        has("listed twice", "instance 3 \"a-again\"");
        has("56", "instance 4 \"short\"");
        has("checksum", "instance 5 \"typo\"");
        has("not filled in", "instance 6 \"node6\"");
        has("does not exist", "service 2 (key missing.key)");
        has("no `instances:`", "service 2");
        assert_eq!(ps.iter().filter(|p| p.placeholder).count(), 1);
        assert_eq!(ps.len(), 7, "{text:#?}");
    }

    #[test]
    fn bad_key_file_and_no_services() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.key"), "not a key").expect("write");
        let ps = problems(parse_in(
            dir.path(),
            &format!("services:\n- key: bad.key\n  instances:\n  - address: {BACKEND_A}\n"),
        ));
        assert!(
            ps[0].message.contains("not a key onionbalance understands"),
            "{ps:?}"
        );
        let ps = problems(parse_in(dir.path(), "status-socket-location: /x\n"));
        assert!(ps[0].message.contains("no services"), "{ps:?}");
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let (dir, _) = dir_with_key();
        let cfg = parse_in(
            dir.path(),
            &format!("services:\n- key: frontend.key\n  instanses: 1\n  instances:\n  - address: {BACKEND_A}\n"),
        )
        .expect("valid");
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0].contains("instanses"));
    }

    /// A client public key (and its private counterpart) from a fixed seed.
    fn client(seed: u64) -> crate::client_auth::ClientSecret {
        let frontend: OnionAddress = BACKEND_A.parse().expect("address");
        crate::client_auth::ClientSecret::generate(
            frontend,
            &mut rand::rngs::StdRng::seed_from_u64(seed),
        )
    }

    /// More clients than any descriptor can carry are refused, naming the limit; the limit
    /// itself is accepted.
    #[test]
    fn too_many_authorized_clients_are_refused() {
        use crate::client_auth::MAX_AUTHORIZED_CLIENTS;
        let (dir, _) = dir_with_key();
        let auth = dir.path().join("clients");
        std::fs::create_dir(&auth).expect("mkdir");
        let yaml = format!(
            "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n  authorized-clients-dir: clients\n"
        );
        for i in 0..MAX_AUTHORIZED_CLIENTS {
            let c = client(1000 + i as u64);
            std::fs::write(auth.join(format!("c{i}.auth")), c.public().to_string()).expect("w");
        }
        let cfg = parse_in(dir.path(), &yaml).expect("the limit itself is accepted");
        let n = cfg.services[0]
            .client_auth
            .as_ref()
            .map(|a| a.clients.len());
        assert_eq!(n, Some(MAX_AUTHORIZED_CLIENTS));
        let c = client(99_999);
        std::fs::write(auth.join("one-too-many.auth"), c.public().to_string()).expect("w");
        let text = match parse_in(dir.path(), &yaml) {
            Ok(_) => panic!("{} clients accepted", MAX_AUTHORIZED_CLIENTS + 1),
            Err(e) => e.to_string(),
        };
        assert!(
            text.contains(&format!(
                "{} authorized clients",
                MAX_AUTHORIZED_CLIENTS + 1
            )) && text.contains(&format!("at most {MAX_AUTHORIZED_CLIENTS}")),
            "{text}"
        );
    }

    #[test]
    fn authorized_clients_inline_and_from_a_directory() {
        let (dir, _) = dir_with_key();
        let (a, b, c) = (client(1), client(2), client(3));
        let auth = dir.path().join("clients");
        std::fs::create_dir(&auth).expect("mkdir");
        std::fs::write(auth.join("carol.auth"), format!("{}\n", c.public())).expect("w");
        std::fs::write(auth.join("bob.auth"), b.public().to_string()).expect("w");
        let yaml = format!(
            "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n  authorized-clients:\n  - name: alice\n    key: {}\n  authorized-clients-dir: clients\n",
            a.public()
        );
        let cfg = parse_in(dir.path(), &yaml).expect("valid");
        let auth_cfg = cfg.services[0].client_auth.as_ref().expect("restricted");
        let names: Vec<&str> = auth_cfg.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert_eq!(auth_cfg.clients[0].key, a.public());
        assert_eq!(auth_cfg.clients[2].key, c.public());
        assert_eq!(auth_cfg.dir.as_deref(), Some(auth.as_path()));
        assert_eq!(auth_cfg.keys().len(), 3);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);

        // Without either key the service is open, exactly as before.
        let open = parse_in(
            dir.path(),
            &format!("services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n"),
        )
        .expect("valid");
        assert!(open.services[0].client_auth.is_none());
    }

    #[test]
    fn authorized_client_problems_are_reported_with_their_place() {
        let (dir, _) = dir_with_key();
        let (a, b) = (client(1), client(2));
        let auth = dir.path().join("clients");
        std::fs::create_dir(&auth).expect("mkdir");
        // The same name as an inline client, a bad key, and a directory where a file should be.
        std::fs::write(auth.join("alice.auth"), b.public().to_string()).expect("w");
        std::fs::write(auth.join("broken.auth"), "descriptor:x25519:AAAA").expect("w");
        std::fs::create_dir(auth.join("weird.auth")).expect("mkdir");
        let yaml = format!(
            "services:
- key: frontend.key
  instances:
  - address: {BACKEND_A}
  authorized-clients:
  - name: alice
    key: {a}
  - name: alice-again
    key: {a}
  - key: {b}
  - name: nokey
  - name: pasted-private
    key: {private}
  - name: ../escape
    key: {b}
  authorized-clients-dir: clients
",
            a = a.public(),
            b = b.public(),
            private = a.auth_private_line().as_str(),
        );
        let ps = problems(parse_in(dir.path(), &yaml));
        let text: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str, loc: &str| {
            assert!(
                ps.iter()
                    .any(|p| p.message.contains(needle) && p.location.contains(loc)),
                "no problem with {needle:?} at {loc:?} in {text:#?}"
            )
        };
        has(
            "already authorized as \"alice\"",
            "authorized client 2 \"alice-again\"",
        );
        has("no `name:`", "authorized client 3");
        has("no `key:`", "authorized client 4 \"nokey\"");
        has("private key", "authorized client 5 \"pasted-private\"");
        has("not usable", "authorized client 6 \"../escape\"");
        has("broken.auth", "authorized-clients-dir");
        has("weird.auth", "authorized-clients-dir");
        assert_eq!(ps.len(), 7, "{text:#?}");

        // Once the directory's files are good, the clash with the inline name shows.
        std::fs::remove_file(auth.join("broken.auth")).expect("rm");
        std::fs::remove_dir(auth.join("weird.auth")).expect("rm");
        let yaml = format!(
            "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n  authorized-clients:\n  - name: alice\n    key: {}\n  authorized-clients-dir: clients\n",
            a.public()
        );
        let ps = problems(parse_in(dir.path(), &yaml));
        assert!(ps[0].message.contains("used twice"), "{ps:?}");
        assert!(ps[0].location.contains("alice.auth"), "{ps:?}");
    }

    #[test]
    fn missing_clients_directory_authorizes_nobody() {
        let (dir, _) = dir_with_key();
        let cfg = parse_in(
            dir.path(),
            &format!("services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n  authorized-clients-dir: not-yet\n"),
        )
        .expect("valid");
        let auth_cfg = cfg.services[0]
            .client_auth
            .as_ref()
            .expect("still restricted");
        assert!(auth_cfg.clients.is_empty());
        assert_eq!(cfg.warnings.len(), 1);
        assert!(
            cfg.warnings[0].contains("no client is authorized"),
            "{:?}",
            cfg.warnings
        );
    }

    /// Attacks through the config text: each refused quickly with a clear error, nothing
    /// built. (Measured before the guard: the fan-out took 5 s and 1.35 GB, the nesting 20 s.)
    #[test]
    fn expensive_yaml_is_refused_quickly() {
        let (dir, _) = dir_with_key();
        let started = std::time::Instant::now();
        // Flat alias fan-out under an unknown key: one anchor of 2,000 values, 3,000 aliases.
        let anchor: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
        let fan_out = format!(
            "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\nx: &a [{}]\ny: [{}]\n",
            anchor.join(","),
            vec!["*a"; 3000].join(",")
        );
        assert!(fan_out.len() < 40_000);
        // The same through a known key: names repeating a long string.
        let long_names = format!(
            "big: &n {}\nservices:\n- key: frontend.key\n  instances:\n{}",
            "x".repeat(60_000),
            (0..100)
                .map(|_| format!("  - address: {BACKEND_A}\n    name: *n\n"))
                .collect::<String>()
        );
        let deep_lists = format!("services: {}", "[".repeat(100_000));
        let deep_maps = format!("services: {}", "{a: ".repeat(100_000));
        for (what, yaml, says) in [
            ("alias fan-out", fan_out, "aliases"),
            ("aliased long names", long_names, "bytes of text"),
            ("deep lists", deep_lists, "nest deeper"),
            ("deep mappings", deep_maps, "nest deeper"),
        ] {
            match parse_in(dir.path(), &yaml) {
                Err(e @ ConfigError::Syntax { .. }) => {
                    assert!(e.to_string().contains(says), "{what}: {e}")
                }
                other => panic!("{what}: expected a syntax error, got {other:?}"),
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    /// Names end up in file names and torrc lines: only plain ones are accepted.
    #[test]
    fn instance_names_are_plain() {
        let (dir, _) = dir_with_key();
        for bad in [
            "\"a\\nHiddenServiceNonAnonymousMode 1\"",
            "/etc/x",
            "../up",
            ".hidden",
            "a b",
        ] {
            let yaml = format!(
                "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n    name: {bad}\n"
            );
            let ps = problems(parse_in(dir.path(), &yaml));
            assert!(ps[0].message.contains("`name:` must be"), "{bad}: {ps:?}");
            assert!(!ps[0].location.contains('\n'), "{bad}: {ps:?}");
        }
    }

    /// A config path or key path that is not a small regular file is refused at once.
    #[test]
    fn config_and_key_paths_must_be_small_regular_files() {
        let (dir, _) = dir_with_key();
        let started = std::time::Instant::now();
        let zero = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let e = Config::load_with_env(&zero, |_| None).expect_err("/dev/zero");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo.yaml");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success());
        let e = Config::load_with_env(&fifo, |_| None).expect_err("FIFO");
        assert!(e.to_string().contains("FIFO"), "{e}");
        let big = dir.path().join("big.yaml");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(3 << 30))
            .expect("sparse");
        let e = Config::load_with_env(&big, |_| None).expect_err("3 GB");
        assert!(e.to_string().contains("larger than"), "{e}");
        // The same for the key a config names.
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.key")).expect("symlink");
        let key_fifo = dir.path().join("fifo.key");
        assert!(std::process::Command::new("mkfifo")
            .arg(&key_fifo)
            .status()
            .expect("mkfifo")
            .success());
        for key in ["zero.key", "fifo.key"] {
            let ps = problems(parse_in(
                dir.path(),
                &format!("services:\n- key: {key}\n  instances:\n  - address: {BACKEND_A}\n"),
            ));
            assert!(
                ps[0].message.contains("not a regular file"),
                "{key}: {ps:?}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn missing_file_says_how_to_create_one() {
        let e = Config::load_with_env(Path::new("/nonexistent/ob.yaml"), |_| None)
            .expect_err("missing");
        assert!(e.to_string().contains("onionbalance config"), "{e}");
    }

    /// `health-check:` (ours): defaults, per-instance overrides, `drain:`, no warning.
    #[test]
    fn health_checks_and_drain_are_ours() {
        let (dir, _) = dir_with_key();
        let cfg = parse_in(
            dir.path(),
            &format!(
                "services:\n- key: frontend.key\n  health-check:\n    port: 80\n    http-path: /healthz\n    interval: 1m\n  instances:\n  - address: {BACKEND_A}\n    name: a\n  - address: {BACKEND_B}\n    name: b\n    drain: true\n    health-check: {{http-path: /status, timeout: 5, down-after: 3}}\n"
            ),
        )
        .expect("valid");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let svc = &cfg.services[0];
        let a = svc.instances[0].health_check.clone().expect("a is checked");
        assert_eq!(
            a,
            HealthCheckConfig {
                port: 80,
                http_path: Some("/healthz".into()),
                interval: std::time::Duration::from_secs(60),
                timeout: HealthCheckConfig::DEFAULT_TIMEOUT,
                down_after: HealthCheckConfig::DEFAULT_DOWN_AFTER,
                up_after: HealthCheckConfig::DEFAULT_UP_AFTER,
            }
        );
        assert_eq!(svc.health_check.as_ref(), Some(&a));
        assert!(!svc.instances[0].drain);
        let b = svc.instances[1].health_check.clone().expect("b is checked");
        assert_eq!(b.http_path.as_deref(), Some("/status"));
        assert_eq!(b.timeout, std::time::Duration::from_secs(5));
        assert_eq!(b.down_after, 3);
        assert_eq!(b.interval, std::time::Duration::from_secs(60));
        assert!(svc.instances[1].drain);

        // Off for one instance; on for one instance only.
        let cfg = parse_in(
            dir.path(),
            &format!(
                "services:\n- key: frontend.key\n  health-check: {{port: 443}}\n  instances:\n  - address: {BACKEND_A}\n    health-check: {{enabled: false}}\n  - address: {BACKEND_B}\n"
            ),
        )
        .expect("valid");
        assert_eq!(cfg.services[0].instances[0].health_check, None);
        assert_eq!(
            cfg.services[0].instances[1]
                .health_check
                .as_ref()
                .map(|h| (h.port, h.interval, h.timeout)),
            Some((
                443,
                HealthCheckConfig::DEFAULT_INTERVAL,
                HealthCheckConfig::DEFAULT_TIMEOUT
            ))
        );
        let cfg = parse_in(
            dir.path(),
            &format!(
                "services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n    health-check: {{port: 8080}}\n  - address: {BACKEND_B}\n"
            ),
        )
        .expect("valid");
        assert!(cfg.services[0].instances[0].health_check.is_some());
        assert_eq!(cfg.services[0].instances[1].health_check, None);
        assert_eq!(cfg.services[0].health_check, None);
    }

    /// Every bad `health-check:` value is a problem naming its place and key.
    #[test]
    fn health_check_problems_are_reported_with_their_place() {
        let (dir, _) = dir_with_key();
        for (bad, says) in [
            ("{port: 0}", "`port:`"),
            ("{http-path: /healthz}", "need `port:`"),
            ("{port: 80, http-path: healthz}", "`http-path:`"),
            ("{port: 80, http-path: \"/a b\"}", "`http-path:`"),
            ("{port: 80, interval: 2s}", "`interval:`"),
            ("{port: 80, interval: soon}", "`interval:`"),
            (
                "{port: 80, interval: 10s, timeout: 15s}",
                "longer than `interval:`",
            ),
            ("{port: 80, timeout: 40s}", "longer than `interval:`"),
            ("{port: 80, down-after: 0}", "`down-after:`"),
            ("{port: 80, up-after: 11}", "`up-after:`"),
        ] {
            let ps = problems(parse_in(
                dir.path(),
                &format!("services:\n- key: frontend.key\n  health-check: {bad}\n  instances:\n  - address: {BACKEND_A}\n"),
            ));
            assert!(
                ps.len() == 1
                    && ps[0].message.contains(says)
                    && ps[0].location.ends_with("health-check"),
                "{bad}: {ps:?}"
            );
        }
        // An instance's override is checked where it is written.
        let ps = problems(parse_in(
            dir.path(),
            &format!("services:\n- key: frontend.key\n  health-check: {{port: 80}}\n  instances:\n  - address: {BACKEND_A}\n    name: web1\n    health-check: {{down-after: 99}}\n"),
        ));
        assert!(
            ps.len() == 1 && ps[0].location.contains("\"web1\", health-check"),
            "{ps:?}"
        );
        // Unknown keys inside are warnings with their place.
        let cfg = parse_in(
            dir.path(),
            &format!("services:\n- key: frontend.key\n  health-check: {{port: 80, intervall: 10s}}\n  instances:\n  - address: {BACKEND_A}\n"),
        )
        .expect("valid");
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("health-check: unknown key `intervall`")),
            "{:?}",
            cfg.warnings
        );
    }

    /// `backend-port:` (ours) is read without an unknown-key warning, and bad values are
    /// problems with their place.
    #[test]
    fn backend_port_is_ours_and_checked() {
        let (dir, _) = dir_with_key();
        let cfg = parse_in(
            dir.path(),
            &format!("services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n  backend-port:\n    virtual: 443\n    target: 127.0.0.1:8080\n"),
        )
        .expect("valid");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(
            cfg.services[0].backend_port,
            Some(BackendPort {
                virtual_port: 443,
                target: "127.0.0.1:8080".into()
            })
        );
        for (bad, says) in [
            ("{virtual: 0, target: '8080'}", "`virtual:`"),
            ("{target: '8080'}", "`virtual:`"),
            ("{virtual: 80, target: 'a b:80'}", "`target:`"),
            (
                "{virtual: 80, target: \"x:80\\nHiddenServiceSingleHopMode 1\"}",
                "`target:`",
            ),
            ("{virtual: 80}", "`target:`"),
        ] {
            let ps = problems(parse_in(
                dir.path(),
                &format!("services:\n- key: frontend.key\n  instances:\n  - address: {BACKEND_A}\n  backend-port: {bad}\n"),
            ));
            assert!(
                ps.len() == 1
                    && ps[0].message.contains(says)
                    && ps[0].location.contains("backend-port"),
                "{bad}: {ps:?}"
            );
        }
    }

    #[test]
    fn service_targets() {
        for ok in [
            "127.0.0.1:8080",
            "8080",
            "unix:/run/web.sock",
            "[::1]:80",
            "localhost:1",
        ] {
            assert!(is_valid_service_target(ok), "{ok}");
        }
        for bad in [
            "", "0", "x:0", ":80", "unix:", "a b:80", "x:80\n", "65536", "host",
        ] {
            assert!(!is_valid_service_target(bad), "{bad:?}");
        }
    }
}
