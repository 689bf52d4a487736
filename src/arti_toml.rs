//! Arti client configuration for private Tor networks (chutney networks, test networks).
//!
//! On the public Tor network Arti needs almost no configuration: it ships the directory
//! authorities and fallback caches. A private network needs several settings at once, and
//! forgetting any one of them fails late and quietly (a client that never bootstraps, or one
//! that bootstraps but never finds an onion service). This module renders all of them from a
//! [`PrivateNetwork`] description, so that tests, examples and operators of chutney networks
//! share one correct recipe:
//!
//! * **Authorities and fallbacks.** `[tor_network.authorities] v3idents` lists the authorities'
//!   *v3 signing identities* (the `fingerprint` line of each `authority_certificate`, not the
//!   relay RSA fingerprint). Arti refuses custom authorities without custom fallback caches, and
//!   the authorities themselves are the only caches a fresh private network has.
//! * **Loopback relays.** Every relay listens on `127.0.0.1`, and by default Arti never puts two
//!   relays from the same /16 in one circuit. `ipv4_subnet_family_prefix = 33` (and 129 for
//!   IPv6) switches that rule off; `allow_local_addrs` lets streams reach loopback targets.
//! * **Time periods.** Under `TestingTorNetwork 1`, C tor derives the onion-service time period
//!   from the voting interval (24 × voting interval, offset 12 × voting interval) and does *not*
//!   publish `hsdir_interval` in the consensus. Arti reads the length from that consensus
//!   parameter (default 1440 minutes), so without `[override_net_params] hsdir_interval` both
//!   sides blind keys for different periods and no descriptor is ever found.
//! * **Circuit build timeouts.** On a network of a handful of relays, Arti's circuit-build-time
//!   learning gives "Circuit took too long to build"; `cbtdisabled = 1` turns it off.
//!
//! [`PrivateNetwork::render`] produces TOML for Arti 0.47's `TorClientConfigBuilder`;
//! [`PrivateNetwork::from_chutney_nodes`] reads everything it needs from a chutney `net/nodes/`
//! directory.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use tor_llcrypto::pk::ed25519::Ed25519Identity;
use tor_llcrypto::pk::rsa::RsaIdentity;

/// Number of voting intervals in one shared-random *phase* (commit or reveal): C tor offsets
/// time periods from the Unix epoch by one phase (rend-spec-v3 §2.2.1, `SHARED_RANDOM_N_ROUNDS`).
const VOTING_INTERVALS_PER_PHASE: u32 = 12;

/// Number of voting intervals in one shared-random protocol run; C tor's time period on a
/// `TestingTorNetwork` is exactly one run.
const VOTING_INTERVALS_PER_RUN: u32 = 2 * VOTING_INTERVALS_PER_PHASE;

/// Smallest `hsdir_interval` (minutes) that Arti 0.47 accepts: smaller values in a consensus or
/// in `override_net_params` are silently clamped up to this bound (`tor-netdir` `params.rs`).
pub const MIN_ARTI_HSDIR_INTERVAL_MINUTES: u32 = 5;

/// Voting interval that C tor assumes when `TestingTorNetwork 1` is set and the torrc does not
/// set `V3AuthVotingInterval` (tor manual: "TestingTorNetwork ... V3AuthVotingInterval 5 minutes").
pub const TESTING_DEFAULT_VOTING_INTERVAL_SECS: u32 = 5 * 60;

/// A directory authority of a private network, as an Arti client needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The authority's nickname; only used in comments of the rendered TOML.
    pub nickname: String,
    /// The v3 signing identity: the `fingerprint` line of `keys/authority_certificate`
    /// (what `DirAuthority ... v3ident=` holds). Arti checks consensus signatures against it.
    pub v3ident: RsaIdentity,
    /// The relay RSA identity (the `fingerprint` file of the authority's data directory).
    pub rsa_identity: RsaIdentity,
    /// The relay ed25519 identity (the `fingerprint-ed25519` file).
    pub ed25519_identity: Ed25519Identity,
    /// Where the authority's ORPort listens; Arti bootstraps from it as a fallback cache.
    pub orport: SocketAddr,
}

/// Where the Arti client keeps its files.
///
/// Never share these with a client of another network: the cache holds that network's
/// consensus and the state holds its guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Arti's `cache_dir` (consensus, microdescriptors; safe to delete).
    pub cache_dir: PathBuf,
    /// Arti's `state_dir` (guards, keys; keep across restarts).
    pub state_dir: PathBuf,
}

impl Storage {
    /// Storage in `<root>/cache` and `<root>/state`.
    pub fn under(root: &Path) -> Self {
        Storage {
            cache_dir: root.join("cache"),
            state_dir: root.join("state"),
        }
    }
}

/// A private Tor network, described as far as an Arti client needs it.
///
/// Build it by hand (a test harness knows every key it generated) or with
/// [`PrivateNetwork::from_chutney_nodes`], then [`render`](PrivateNetwork::render) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateNetwork {
    /// The directory authorities; they double as the fallback directory caches.
    pub authorities: Vec<Authority>,
    /// Where the Arti client keeps its cache and state.
    pub storage: Storage,
    /// Length of an onion-service time period in minutes, as the network's C tor relays and
    /// services compute it. Use [`testing_hsdir_interval_minutes`] for a `TestingTorNetwork`.
    pub hsdir_interval_minutes: u32,
    /// Write `[vanguards] mode = "disabled"`. Off by default: a network big enough for
    /// vanguards tests what production runs. Only turn it on for networks too small for them.
    pub disable_vanguards: bool,
}

/// Why an Arti configuration for a private network could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtiTomlError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but does not contain what tor writes there.
    #[error("{path}: {problem}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An Arti configuration file is unusable.
    #[error("invalid Arti configuration {path}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Arti rejects the configuration made of these sources.
    #[error("Arti rejects the configuration from {sources}: {detail}")]
    Rejected {
        /// The sources, named (files, `-o` options).
        sources: String,
        /// Arti's reason.
        detail: String,
    },
    /// The nodes directory has no directory authority in it.
    #[error(
        "no directory authority found in {0} (expected sub-directories like 000a/ \
         containing keys/authority_certificate; is this chutney's net/nodes directory?)"
    )]
    NoAuthorities(PathBuf),
    /// The voting interval gives a time period that Arti cannot represent exactly.
    #[error(
        "a voting interval of {voting_interval_secs} s gives C tor a time period of {period_secs} s \
         (24 x voting interval) offset by {offset_secs} s (12 x voting interval); Arti needs both \
         in whole minutes and the period to be at least {MIN_ARTI_HSDIR_INTERVAL_MINUTES} minutes: \
         use a voting interval that is a multiple of 5 s and at least 15 s (20 s is a good choice)"
    )]
    UnusableVotingInterval {
        /// The voting interval, in seconds.
        voting_interval_secs: u32,
        /// 24 × the voting interval, in seconds.
        period_secs: u64,
        /// 12 × the voting interval, in seconds.
        offset_secs: u64,
    },
}

/// The onion-service time period length (minutes) that C tor uses on a `TestingTorNetwork`
/// whose authorities vote every `voting_interval_secs` seconds.
///
/// C tor makes the period one shared-random run long (24 × voting interval) and offsets it by
/// one phase (12 × voting interval), both rounded *down* to whole minutes; Arti takes the period
/// from `hsdir_interval` (minutes, at least 5) and the offset in exact seconds from the
/// consensus. They agree only if both are whole minutes and the period is ≥ 5 minutes, i.e.
/// for a voting interval that is a multiple of 5 s and at least 15 s; anything else is an error.
pub fn testing_hsdir_interval_minutes(voting_interval_secs: u32) -> Result<u32, ArtiTomlError> {
    let period_secs = u64::from(voting_interval_secs) * u64::from(VOTING_INTERVALS_PER_RUN);
    let offset_secs = u64::from(voting_interval_secs) * u64::from(VOTING_INTERVALS_PER_PHASE);
    let minutes = period_secs / 60;
    let usable = period_secs % 60 == 0
        && offset_secs % 60 == 0
        && minutes >= u64::from(MIN_ARTI_HSDIR_INTERVAL_MINUTES);
    match u32::try_from(minutes) {
        Ok(minutes) if usable => Ok(minutes),
        _ => Err(ArtiTomlError::UnusableVotingInterval {
            voting_interval_secs,
            period_secs,
            offset_secs,
        }),
    }
}

impl PrivateNetwork {
    /// Renders the network as an Arti 0.47 TOML configuration (what `TorClientConfigBuilder`
    /// deserializes). The text is commented, so an operator reading it learns why each
    /// setting is there.
    pub fn render(&self) -> String {
        // Writing to a String cannot fail: the `let _ =` below discard `Ok(())`.
        let mut out = String::new();
        out.push_str(
            "# Arti client configuration for a PRIVATE Tor network (rendered by onionbalance::arti_toml).\n\
             # Do not use it on the public Tor network.\n\n",
        );

        out.push_str(
            "[tor_network]\n\
             # Bootstrap from the network's own directory authorities: on a fresh private network\n\
             # they are the only directory caches (Arti insists on custom fallbacks with custom authorities).\n\
             fallback_caches = [\n",
        );
        for auth in &self.authorities {
            let _ = writeln!(
                out,
                "  {{ rsa_identity = {}, ed_identity = {}, orports = [{}] }}, # {}",
                quote(&auth.rsa_identity.as_hex_upper()),
                quote(&auth.ed25519_identity.to_string()),
                quote(&auth.orport.to_string()),
                sanitize_comment(&auth.nickname),
            );
        }
        out.push_str("]\n\n");

        out.push_str(
            "[tor_network.authorities]\n\
             # v3 signing identities (the `fingerprint` line of each keys/authority_certificate),\n\
             # not the relay RSA fingerprints above.\n\
             v3idents = [\n",
        );
        for auth in &self.authorities {
            let _ = writeln!(
                out,
                "  {}, # {}",
                quote(&auth.v3ident.as_hex_upper()),
                sanitize_comment(&auth.nickname)
            );
        }
        out.push_str("]\n\n");

        let _ = write!(
            out,
            "[storage]\n\
             # Never share these with a client of another Tor network.\n\
             cache_dir = {}\n\
             state_dir = {}\n\n",
            quote(&self.storage.cache_dir.to_string_lossy()),
            quote(&self.storage.state_dir.to_string_lossy()),
        );

        out.push_str(
            "[path_rules]\n\
             # All relays share 127.0.0.1: do not treat relays in one subnet as one family.\n\
             ipv4_subnet_family_prefix = 33\n\
             ipv6_subnet_family_prefix = 129\n\n\
             [address_filter]\n\
             # Let streams reach loopback targets (the network's services live on 127.0.0.1).\n\
             allow_local_addrs = true\n\n",
        );

        let _ = write!(
            out,
            "[override_net_params]\n\
             # C tor's onion-service time period on this network, in minutes (24 x voting interval\n\
             # under TestingTorNetwork). C tor does not publish it in the consensus; without it Arti\n\
             # assumes 1440, blinds keys for the wrong period, and finds no onion service.\n\
             hsdir_interval = {}\n\
             # A network of a few relays gives circuit-build-time learning nonsense estimates\n\
             # (\"Circuit took too long to build\"): do not learn, use fixed timeouts.\n\
             cbtdisabled = 1\n",
            self.hsdir_interval_minutes
        );

        if self.disable_vanguards {
            out.push_str(
                "\n[vanguards]\n\
                 # Only for networks too small to pick vanguards from. Never in production.\n\
                 mode = \"disabled\"\n",
            );
        }
        out
    }

    /// Reads a chutney network's `net/nodes/` directory and describes it.
    ///
    /// Every sub-directory holding `keys/authority_certificate` is an authority: its v3
    /// identity is that certificate's `fingerprint` line, its relay identities are the
    /// `fingerprint` and `fingerprint-ed25519` files, and its ORPort comes from the `OrPort` and
    /// `Address` lines of its `torrc`. The time period follows from the authorities'
    /// `V3AuthVotingInterval` (see [`testing_hsdir_interval_minutes`]; tor's
    /// `TestingTorNetwork` default of 5 minutes applies if no torrc sets it). Vanguards stay
    /// enabled; set [`disable_vanguards`](PrivateNetwork::disable_vanguards) afterwards for a
    /// network too small for them.
    pub fn from_chutney_nodes(nodes_dir: &Path, storage: Storage) -> Result<Self, ArtiTomlError> {
        let entries = fs::read_dir(nodes_dir).map_err(|source| ArtiTomlError::Io {
            path: nodes_dir.to_owned(),
            source,
        })?;
        let mut node_dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ArtiTomlError::Io {
                path: nodes_dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.join("keys").join("authority_certificate").is_file() {
                node_dirs.push(path);
            }
        }
        if node_dirs.is_empty() {
            return Err(ArtiTomlError::NoAuthorities(nodes_dir.to_owned()));
        }
        // Chutney numbers its nodes (000a, 001a, ...): keep that order in the output.
        node_dirs.sort();

        let mut authorities = Vec::new();
        let mut voting_interval = None;
        for dir in &node_dirs {
            let torrc_path = dir.join("torrc");
            let torrc = read(&torrc_path)?;
            authorities.push(read_chutney_authority(dir, &torrc_path, &torrc)?);
            if voting_interval.is_none() {
                voting_interval = torrc_voting_interval(&torrc_path, &torrc)?;
            }
        }
        let voting_interval = voting_interval.unwrap_or(TESTING_DEFAULT_VOTING_INTERVAL_SECS);
        Ok(PrivateNetwork {
            authorities,
            storage,
            hsdir_interval_minutes: testing_hsdir_interval_minutes(voting_interval)?,
            disable_vanguards: false,
        })
    }
}

/// Reads one chutney authority directory (`torrc` already read by the caller).
fn read_chutney_authority(
    dir: &Path,
    torrc_path: &Path,
    torrc: &str,
) -> Result<Authority, ArtiTomlError> {
    let cert_path = dir.join("keys").join("authority_certificate");
    let cert = read(&cert_path)?;
    let v3ident = cert
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .and_then(|hex| RsaIdentity::from_hex(hex.trim()))
        .ok_or_else(|| bad(&cert_path, "no valid `fingerprint <40 hex digits>` line"))?;

    let fp_path = dir.join("fingerprint");
    let (nickname, rsa_hex) = nickname_and_value(&fp_path, &read(&fp_path)?)?;
    // tor writes the fingerprint without spaces here, but the same format with spaces appears
    // in `tor --list-fingerprint` output: accept both.
    let rsa_hex: String = rsa_hex.split_whitespace().collect();
    let rsa_identity = RsaIdentity::from_hex(&rsa_hex)
        .ok_or_else(|| bad(&fp_path, "fingerprint is not 40 hex digits"))?;

    let ed_path = dir.join("fingerprint-ed25519");
    let (_, ed_b64) = nickname_and_value(&ed_path, &read(&ed_path)?)?;
    let ed25519_identity = Ed25519Identity::from_base64(ed_b64.trim())
        .ok_or_else(|| bad(&ed_path, "not an unpadded base64 ed25519 identity"))?;

    let orport = torrc_orport(torrc_path, torrc)?;
    Ok(Authority {
        nickname,
        v3ident,
        rsa_identity,
        ed25519_identity,
        orport,
    })
}

/// Splits a `<nickname> <value>` fingerprint file.
fn nickname_and_value(path: &Path, text: &str) -> Result<(String, String), ArtiTomlError> {
    let line = text.lines().next().unwrap_or_default().trim();
    match line.split_once(' ') {
        Some((nick, value)) if !nick.is_empty() && !value.trim().is_empty() => {
            Ok((nick.to_owned(), value.trim().to_owned()))
        }
        _ => Err(bad(
            path,
            "expected `<nickname> <identity>` on the first line",
        )),
    }
}

/// The configuration lines of a torrc as (lower-cased keyword, value) pairs.
fn torrc_options(torrc: &str) -> impl Iterator<Item = (String, &str)> {
    torrc.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        let (key, value) = line.split_once(char::is_whitespace)?;
        Some((key.to_ascii_lowercase(), value.trim()))
    })
}

/// The advertised IPv4 ORPort of a torrc: the first `ORPort` line without `NoAdvertise`,
/// combined with the `Address` line when it gives a bare port.
fn torrc_orport(path: &Path, torrc: &str) -> Result<SocketAddr, ArtiTomlError> {
    let address: Option<IpAddr> = torrc_options(torrc)
        .find(|(key, _)| key == "address")
        .and_then(|(_, value)| value.parse().ok());
    for (key, value) in torrc_options(torrc) {
        if key != "orport" {
            continue;
        }
        let mut words = value.split_whitespace();
        let Some(spec) = words.next() else { continue };
        if words.any(|flag| flag.eq_ignore_ascii_case("NoAdvertise")) {
            continue;
        }
        if let Ok(addr) = spec.parse::<SocketAddr>() {
            if addr.is_ipv4() {
                return Ok(addr);
            }
        } else if let Ok(port) = spec.parse::<u16>() {
            let ip = address.ok_or_else(|| {
                bad(
                    path,
                    "`OrPort` gives only a port and there is no `Address <ip>` line",
                )
            })?;
            return Ok(SocketAddr::new(ip, port));
        }
    }
    Err(bad(path, "no usable IPv4 `OrPort` line"))
}

/// The `V3AuthVotingInterval` of a torrc, in seconds, if it sets one.
fn torrc_voting_interval(path: &Path, torrc: &str) -> Result<Option<u32>, ArtiTomlError> {
    let Some((_, value)) = torrc_options(torrc).find(|(key, _)| key == "v3authvotinginterval")
    else {
        return Ok(None);
    };
    parse_tor_interval(value)
        .map(Some)
        .ok_or_else(|| bad(path, &format!("cannot read V3AuthVotingInterval {value:?}")))
}

/// Parses a tor time interval: `20`, `20 seconds`, `5 minutes`, `1 hour`.
fn parse_tor_interval(value: &str) -> Option<u32> {
    let mut words = value.split_whitespace();
    let number: u32 = words.next()?.parse().ok()?;
    let unit = match words.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("second" | "seconds" | "sec" | "secs") => 1,
        Some("minute" | "minutes" | "min" | "mins") => 60,
        Some("hour" | "hours") => 3600,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    number.checked_mul(unit)
}

/// Reads a file as UTF-8 text.
fn read(path: &Path) -> Result<String, ArtiTomlError> {
    crate::files::read_regular_text(path, crate::files::MAX_CONFIG_LEN)
        .map(|t| t.as_str().to_owned())
        .map_err(|e| ArtiTomlError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                e.io_kind().unwrap_or(std::io::ErrorKind::InvalidData),
                e.to_string(),
            ),
        })
}

/// A [`ArtiTomlError::BadFile`] for `path`.
fn bad(path: &Path, problem: &str) -> ArtiTomlError {
    ArtiTomlError::BadFile {
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}

/// A TOML basic string holding `s`, with every character that needs it escaped.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Makes `s` safe to put after `#` on one line.
fn sanitize_comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Where one piece of an Arti configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtiSource {
    /// What the balancer changes in Arti's defaults ([`BALANCER_ARTI_DEFAULTS`]).
    BalancerDefaults,
    /// The data directory onionbalance chose (the base under every other source).
    Storage,
    /// An Arti TOML file.
    File(PathBuf),
    /// A `-o KEY=VALUE` override.
    Option(String),
}

impl std::fmt::Display for ArtiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtiSource::BalancerDefaults => write!(f, "onionbalance's defaults for Arti"),
            ArtiSource::Storage => write!(f, "the data directory setting"),
            ArtiSource::File(p) => write!(f, "{}", p.display()),
            ArtiSource::Option(o) => write!(f, "-o {o}"),
        }
    }
}

/// A configuration key that Arti read but will not use: unknown (a typo, or a key of
/// another Arti version) or deprecated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisregardedKey {
    /// The key as a TOML path, e.g. `path_rules.ipv4_subnet_familly_prefix`.
    pub key: String,
    /// The sources that set it (empty when it could not be told which one did).
    pub sources: Vec<ArtiSource>,
}

impl std::fmt::Display for DisregardedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.key)?;
        if !self.sources.is_empty() {
            let names: Vec<String> = self.sources.iter().map(|s| s.to_string()).collect();
            write!(f, " (in {})", names.join(", "))?;
        }
        Ok(())
    }
}

/// An Arti client configuration with the keys Arti disregarded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadedArtiConfig {
    /// The configuration.
    pub config: arti_client::TorClientConfig,
    /// Keys Arti does not know, and so ignored.
    pub unrecognized: Vec<DisregardedKey>,
    /// Keys Arti knows but has deprecated.
    pub deprecated: Vec<DisregardedKey>,
}

impl LoadedArtiConfig {
    /// Logs a warning naming each disregarded key.
    pub fn warn_disregarded(&self) {
        for k in &self.unrecognized {
            tracing::warn!("Arti configuration: unrecognized key {k} is ignored; check its spelling and section against Arti's documentation");
        }
        for k in &self.deprecated {
            tracing::warn!("Arti configuration: key {k} is deprecated");
        }
    }
}

/// What the `onionbalance` program changes in Arti's defaults, under every configuration
/// file and option (see [`ArtiSources::balancer_defaults`]); an application that embeds the
/// balancer in its own Tor client decides for itself.
///
/// * **No preemptive exit circuits.** Arti builds exit circuits ahead of need: two for each
///   port it predicts (80 and 443 from the start, and DNS), kept for an hour and rebuilt as
///   they expire. The balancer never opens an exit stream; its circuits all end at HSDirs and
///   come from the onion-service pool. Those circuits would be built, kept and rebuilt for
///   nothing: CPU, and circuits through exits that a relay operator sees for no traffic.
pub const BALANCER_ARTI_DEFAULTS: &str = "\
# onionbalance opens no exit streams: build no exit circuits ahead of need.
[preemptive_circuits]
disable_at_threshold = 0
initial_predicted_ports = []
";

/// An Arti client configuration assembled as the `arti` program assembles its own: any
/// number of TOML files, later ones overriding earlier ones, then `-o KEY=VALUE` overrides,
/// all through Arti's configuration loader (`tor-config`), which reports the keys it does
/// not know.
///
/// The files are read here, with the same hardened reader as the config (regular files only,
/// size-capped, never blocking on a FIFO), and handed to Arti as text: Arti never opens
/// them itself.
#[derive(Debug, Clone, Default)]
pub struct ArtiSources {
    /// Whether [`BALANCER_ARTI_DEFAULTS`] go under everything else.
    balancer_defaults: bool,
    /// Storage directories to set under every other source.
    storage: Option<Storage>,
    /// TOML files, in order.
    files: Vec<PathBuf>,
    /// `KEY=VALUE` overrides, in order.
    options: Vec<String>,
}

impl ArtiSources {
    /// No sources: Arti's defaults (the public Tor network, Arti's default directories).
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts [`BALANCER_ARTI_DEFAULTS`] under every other source (which may still set them
    /// otherwise): for a Tor client that does nothing but balance.
    pub fn balancer_defaults(mut self) -> Self {
        self.balancer_defaults = true;
        self
    }

    /// Sets Arti's state and cache directories before any file or option (which may
    /// still set them otherwise).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Adds a TOML file; settings in later files replace those of earlier ones.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Adds an override in the `arti` program's `-o` syntax: `KEY=VALUE`, where KEY is a
    /// dotted TOML path and VALUE a TOML value (a bare word is taken as a string), e.g.
    /// `storage.cache_dir=/var/cache/x` or `path_rules.ipv4_subnet_family_prefix=33`.
    pub fn option(mut self, option: impl Into<String>) -> Self {
        self.options.push(option.into());
        self
    }

    /// Reads the files and resolves everything into a client configuration.
    pub fn load(&self) -> Result<LoadedArtiConfig, ArtiTomlError> {
        let mut texts: Vec<(ArtiSource, SourceText)> = Vec::new();
        if self.balancer_defaults {
            texts.push((
                ArtiSource::BalancerDefaults,
                SourceText::Toml(BALANCER_ARTI_DEFAULTS.to_owned()),
            ));
        }
        if let Some(storage) = &self.storage {
            texts.push((
                ArtiSource::Storage,
                SourceText::Toml(storage_toml(storage)?),
            ));
        }
        for path in &self.files {
            let text = read(path)?;
            // Arti's loader reports a syntax error without the file's name: check here first.
            if let Some(what) = crate::redact::key_material(text.as_bytes()) {
                return Err(ArtiTomlError::Invalid {
                    path: path.clone(),
                    detail: format!("this is {what}, not an Arti TOML configuration"),
                });
            }
            // The parser's message quotes the offending line: keep only what and where.
            text.parse::<toml::Table>()
                .map_err(|e| ArtiTomlError::Invalid {
                    path: path.clone(),
                    detail: crate::redact::parser_message(&e.to_string()),
                })?;
            texts.push((ArtiSource::File(path.clone()), SourceText::Toml(text)));
        }
        for option in &self.options {
            texts.push((
                ArtiSource::Option(option.clone()),
                SourceText::Option(option.clone()),
            ));
        }
        let all: Vec<&SourceText> = texts.iter().map(|(_, t)| t).collect();
        let results = resolve(&all).map_err(|detail| ArtiTomlError::Rejected {
            sources: describe_sources(&texts),
            detail: crate::redact::parser_message(&detail),
        })?;
        // Which source set each disregarded key: resolve each source on its own (a source
        // that Arti rejects alone, e.g. authorities without fallbacks, names no key).
        let per_source: Vec<(ArtiSource, Vec<String>, Vec<String>)> = texts
            .iter()
            .filter_map(|(src, text)| {
                let r = resolve(&[text]).ok()?;
                Some((
                    src.clone(),
                    r.unrecognized.iter().map(|k| k.to_string()).collect(),
                    r.deprecated.iter().map(|k| k.to_string()).collect(),
                ))
            })
            .collect();
        let attribute = |keys: &[tor_config::load::DisfavouredKey], deprecated: bool| {
            keys.iter()
                .map(|k| {
                    let key = k.to_string();
                    let sources = per_source
                        .iter()
                        .filter(|(_, u, d)| if deprecated { d } else { u }.contains(&key))
                        .map(|(s, _, _)| s.clone())
                        .collect();
                    DisregardedKey { key, sources }
                })
                .collect()
        };
        Ok(LoadedArtiConfig {
            unrecognized: attribute(&results.unrecognized, false),
            deprecated: attribute(&results.deprecated, true),
            config: results.value,
        })
    }
}

/// One source's text, as Arti's loader takes it.
#[derive(Debug, Clone)]
enum SourceText {
    /// A whole TOML document.
    Toml(String),
    /// A `KEY=VALUE` line.
    Option(String),
}

/// Runs Arti's loader over `sources`, in order.
fn resolve(
    sources: &[&SourceText],
) -> Result<tor_config::load::ResolutionResults<arti_client::TorClientConfig>, String> {
    use tor_config::sources::MustRead;
    use tor_config::{ConfigurationSource, ConfigurationSources};
    let mut cfg = ConfigurationSources::new_empty();
    for s in sources {
        match s {
            SourceText::Toml(text) => cfg.push_source(
                ConfigurationSource::from_verbatim(text.clone()),
                MustRead::MustRead,
            ),
            SourceText::Option(o) => cfg.push_option(o.clone()),
        }
    }
    let tree = cfg.load().map_err(|e| crate::error::report(&e))?;
    tor_config::load::resolve_return_results(
        &tree,
        &tor_config::load::ConfigResolveOptions::default(),
    )
    .map_err(|e| crate::error::report(&e))
}

/// The sources, named for an error message.
fn describe_sources(texts: &[(ArtiSource, SourceText)]) -> String {
    let names: Vec<String> = texts.iter().map(|(s, _)| s.to_string()).collect();
    if names.is_empty() {
        "Arti's defaults".to_owned()
    } else {
        names.join(", ")
    }
}

/// `[storage]` with `storage`'s directories, taken literally (no `${HOME}` expansion).
fn storage_toml(storage: &Storage) -> Result<String, ArtiTomlError> {
    let literal = |p: &Path| {
        p.to_str()
            .map(|s| format!("{{ literal = {} }}", quote(s)))
            .ok_or_else(|| ArtiTomlError::BadFile {
                path: p.to_owned(),
                problem: "the directory name is not UTF-8, which an Arti configuration cannot hold; choose another --data-dir".to_owned(),
            })
    };
    Ok(format!(
        "[storage]\nstate_dir = {}\ncache_dir = {}\n",
        literal(&storage.state_dir)?,
        literal(&storage.cache_dir)?
    ))
}

/// Reads one Arti TOML file into a client configuration through Arti's loader, logging a
/// warning for every key Arti disregards. See [`ArtiSources`] for several files and
/// overrides.
pub fn load_arti_config(path: &Path) -> Result<arti_client::TorClientConfig, ArtiTomlError> {
    let loaded = ArtiSources::new().file(path).load()?;
    loaded.warn_disregarded();
    Ok(loaded.config)
}

impl crate::error::HasKind for ArtiTomlError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ArtiTomlError::Io { .. } => crate::error::ErrorKind::LocalIo,
            _ => crate::error::ErrorKind::Config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arti_client::config::TorClientConfigBuilder;

    /// The Arti settings for public Tor that `arti-config/` documents.
    const PUBLIC_TOML: &str = include_str!("../arti-config/public.toml");
    /// The chutney template of `arti-config/`, with placeholders.
    const CHUTNEY_TOML: &str = include_str!("../arti-config/chutney.toml");

    /// Parses `text` as Arti does and builds a `TorClientConfig`; fails the test with Arti's
    /// message if that does not work, or if any key was silently ignored (a typo, or a key
    /// from another Arti version: serde ignores unknown keys, so parsing alone proves little).
    fn assert_arti_accepts(text: &str) -> arti_client::TorClientConfig {
        let ignored = keys_arti_ignores(text);
        assert!(ignored.is_empty(), "Arti ignores these keys: {ignored:?}");
        let builder: TorClientConfigBuilder =
            toml::from_str(text).expect("TorClientConfigBuilder rejects this TOML");
        builder
            .build()
            .expect("TorClientConfigBuilder::build fails")
    }

    /// The keys of `text` that Arti's config builder drops without a word.
    fn keys_arti_ignores(text: &str) -> Vec<String> {
        let builder: TorClientConfigBuilder =
            toml::from_str(text).expect("TorClientConfigBuilder rejects this TOML");
        // Compare the keys we wrote with the keys the builder kept. The builder serializes
        // unit values, which TOML cannot hold, so compare as YAML values.
        let original: toml::Value = toml::from_str(text).expect("not valid TOML");
        let original = serde_yaml::to_value(original).expect("TOML converts to YAML");
        let kept = serde_yaml::to_value(&builder).expect("builder serializes");
        let mut ignored = Vec::new();
        unknown_keys(&original, &kept, "", &mut ignored);
        ignored
    }

    /// Collects the keys of `original` that are missing from `kept`.
    fn unknown_keys(
        original: &serde_yaml::Value,
        kept: &serde_yaml::Value,
        at: &str,
        out: &mut Vec<String>,
    ) {
        use serde_yaml::Value;
        match (original, kept) {
            (Value::Mapping(o), Value::Mapping(k)) => {
                for (key, value) in o {
                    let path = format!("{at}.{}", key.as_str().unwrap_or("?"));
                    match k.get(key) {
                        Some(kv) => unknown_keys(value, kv, &path, out),
                        None => out.push(path),
                    }
                }
            }
            (Value::Sequence(o), Value::Sequence(k)) => {
                for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                    unknown_keys(ov, kv, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn ignored_keys_are_detected() {
        let typo =
            "[path_rules]\nipv4_subnet_family_prefix = 33\nipv4_subnet_familly_prefix = 33\n";
        assert_eq!(
            keys_arti_ignores(typo),
            [".path_rules.ipv4_subnet_familly_prefix"],
            "a misspelt key went unnoticed"
        );
        let unknown_section = "[proxy]\nsocks_listen = 9150\n";
        assert!(
            !keys_arti_ignores(unknown_section).is_empty(),
            "an unknown section went unnoticed"
        );
    }

    fn sample_network() -> PrivateNetwork {
        let auth = |i: u8| Authority {
            nickname: format!("auth{i}"),
            v3ident: RsaIdentity::from([0x10 + i; 20]),
            rsa_identity: RsaIdentity::from([0x20 + i; 20]),
            ed25519_identity: Ed25519Identity::from([0x30 + i; 32]),
            orport: SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(i))),
        };
        PrivateNetwork {
            authorities: (0..3).map(auth).collect(),
            storage: Storage::under(Path::new("/tmp/some \"odd\" dir\\arti")),
            hsdir_interval_minutes: 8,
            disable_vanguards: false,
        }
    }

    #[test]
    fn rendered_toml_builds_an_arti_config() {
        let net = sample_network();
        let text = net.render();
        let config = assert_arti_accepts(&text);
        let v3idents = config_v3idents(&text);
        assert_eq!(v3idents.len(), 3);
        assert_eq!(v3idents[0], "1010101010101010101010101010101010101010");
        // The odd characters of the storage path survive quoting.
        let value: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(
            value["storage"]["cache_dir"].as_str(),
            Some("/tmp/some \"odd\" dir\\arti/cache")
        );
        assert_eq!(
            value["override_net_params"]["hsdir_interval"].as_integer(),
            Some(8)
        );
        assert_eq!(
            value["override_net_params"]["cbtdisabled"].as_integer(),
            Some(1)
        );
        assert_eq!(
            value["path_rules"]["ipv4_subnet_family_prefix"].as_integer(),
            Some(33)
        );
        assert!(value.get("vanguards").is_none());
        drop(config);
    }

    #[test]
    fn vanguards_can_be_disabled() {
        let mut net = sample_network();
        net.disable_vanguards = true;
        let text = net.render();
        assert_arti_accepts(&text);
        let value: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(value["vanguards"]["mode"].as_str(), Some("disabled"));
    }

    #[test]
    fn public_toml_is_accepted_by_arti() {
        assert_arti_accepts(PUBLIC_TOML);
        let value: toml::Value = toml::from_str(PUBLIC_TOML).expect("valid TOML");
        assert_eq!(value["vanguards"]["mode"].as_str(), Some("lite"));
        // Nothing that only makes sense on a test network.
        assert!(value.get("override_net_params").is_none());
        assert!(value.get("tor_network").is_none());
        assert!(value.get("path_rules").is_none());
    }

    #[test]
    fn chutney_template_is_accepted_once_filled_in() {
        let filled = fill_chutney_template(CHUTNEY_TOML);
        let left = filled
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .find(|line| line.contains("REPLACE_"));
        assert_eq!(left, None, "a placeholder this test does not fill in");
        assert_arti_accepts(&filled);
        // The unfilled template must not build: an operator who forgets a placeholder is told.
        let unfilled: Result<TorClientConfigBuilder, _> = toml::from_str(CHUTNEY_TOML);
        assert!(unfilled.map(|b| b.build().is_err()).unwrap_or(true));
    }

    /// Replaces the placeholders of the chutney template with plausible values.
    fn fill_chutney_template(text: &str) -> String {
        let mut out = text.to_owned();
        for i in 0..3 {
            out = out
                .replace(
                    &format!("REPLACE_RSA_FINGERPRINT_00{i}a"),
                    &format!("{i}{i}").repeat(20),
                )
                .replace(
                    &format!("REPLACE_ED25519_FINGERPRINT_00{i}a"),
                    &Ed25519Identity::from([i + 1; 32]).to_string(),
                )
                .replace(
                    &format!("REPLACE_V3IDENT_00{i}a"),
                    &format!("{}{}", i + 3, i + 3).repeat(20),
                )
                .replace(
                    &format!("REPLACE_ORPORT_00{i}a"),
                    &format!("127.0.0.1:{}", 5000 + u16::from(i)),
                );
        }
        out.replace("REPLACE_CHUTNEY_DIR", "/tmp/chutney")
    }

    /// The `v3idents` of a rendered TOML.
    fn config_v3idents(text: &str) -> Vec<String> {
        let value: toml::Value = toml::from_str(text).expect("valid TOML");
        value["tor_network"]["authorities"]["v3idents"]
            .as_array()
            .expect("v3idents is an array")
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect()
    }

    #[test]
    fn time_period_follows_voting_interval() {
        assert_eq!(testing_hsdir_interval_minutes(20).ok(), Some(8));
        assert_eq!(testing_hsdir_interval_minutes(15).ok(), Some(6));
        assert_eq!(testing_hsdir_interval_minutes(300).ok(), Some(120));
        // chutney's own default (10 s) gives 4-minute periods: below Arti's minimum.
        assert!(testing_hsdir_interval_minutes(10).is_err());
        // 18 s: 7.2-minute periods that C tor rounds down and Arti cannot.
        assert!(testing_hsdir_interval_minutes(18).is_err());
        assert!(testing_hsdir_interval_minutes(0).is_err());
    }

    #[test]
    fn tor_intervals_parse() {
        assert_eq!(parse_tor_interval("20"), Some(20));
        assert_eq!(parse_tor_interval("20 seconds"), Some(20));
        assert_eq!(parse_tor_interval("5 minutes"), Some(300));
        assert_eq!(parse_tor_interval("1 hour"), Some(3600));
        assert_eq!(parse_tor_interval("soon"), None);
        assert_eq!(parse_tor_interval("5 fortnights"), None);
    }

    /// Writes a chutney-like authority directory.
    fn write_authority(nodes: &Path, name: &str, i: u8, torrc: &str) {
        let dir = nodes.join(name);
        fs::create_dir_all(dir.join("keys")).expect("mkdir");
        let v3 = RsaIdentity::from([0xa0 + i; 20]).as_hex_upper();
        fs::write(
            dir.join("keys").join("authority_certificate"),
            format!(
                "dir-key-certificate-version 3\ndir-address 127.0.0.1:700{i}\nfingerprint {v3}\n"
            ),
        )
        .expect("write cert");
        let rsa = RsaIdentity::from([0xb0 + i; 20]).as_hex_upper();
        fs::write(dir.join("fingerprint"), format!("test{name} {rsa}\n")).expect("write fp");
        let ed = Ed25519Identity::from([0xc0 + i; 32]);
        fs::write(
            dir.join("fingerprint-ed25519"),
            format!("test{name} {ed}\n"),
        )
        .expect("write ed fp");
        fs::write(dir.join("torrc"), torrc).expect("write torrc");
    }

    fn chutney_torrc(i: u8, voting: &str) -> String {
        format!(
            "TestingTorNetwork 1\n# comment\nAddress 127.0.0.1\nOrPort 500{i}\nDirPort 700{i}\n\
             AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\n{voting}\n"
        )
    }

    #[test]
    fn reads_a_chutney_nodes_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nodes = tmp.path();
        // Listed out of order on purpose; a relay and a client must be ignored.
        write_authority(
            nodes,
            "001a",
            1,
            &chutney_torrc(1, "V3AuthVotingInterval 20"),
        );
        write_authority(
            nodes,
            "000a",
            0,
            &chutney_torrc(0, "V3AuthVotingInterval 20"),
        );
        fs::create_dir_all(nodes.join("002r")).expect("mkdir");
        fs::write(nodes.join("002r").join("torrc"), "OrPort 5002\n").expect("write");
        fs::create_dir_all(nodes.join("003c")).expect("mkdir");

        let storage = Storage::under(&nodes.join("arti"));
        let net = PrivateNetwork::from_chutney_nodes(nodes, storage.clone()).expect("readable");
        assert_eq!(net.authorities.len(), 2);
        assert_eq!(net.hsdir_interval_minutes, 8);
        assert_eq!(net.storage, storage);
        assert!(!net.disable_vanguards);
        let a0 = &net.authorities[0];
        assert_eq!(a0.nickname, "test000a");
        assert_eq!(a0.v3ident, RsaIdentity::from([0xa0; 20]));
        assert_eq!(a0.rsa_identity, RsaIdentity::from([0xb0; 20]));
        assert_eq!(a0.ed25519_identity, Ed25519Identity::from([0xc0; 32]));
        assert_eq!(a0.orport, "127.0.0.1:5000".parse().expect("addr"));
        assert_eq!(net.authorities[1].orport.port(), 5001);
        assert_arti_accepts(&net.render());
    }

    #[test]
    fn chutney_orport_forms() {
        let p = Path::new("torrc");
        let full = "ORPort 127.0.0.1:5555\n";
        assert_eq!(torrc_orport(p, full).expect("ok").port(), 5555);
        let skip = "ORPort [::1]:6000\nORPort 127.0.0.2:6001 NoAdvertise\nOrPort 127.0.0.3:6002\n";
        assert_eq!(
            torrc_orport(p, skip).expect("ok"),
            "127.0.0.3:6002".parse().expect("addr")
        );
        assert!(torrc_orport(p, "OrPort 5000\n").is_err(), "no Address line");
        assert!(torrc_orport(p, "DirPort 7000\n").is_err());
    }

    #[test]
    fn chutney_errors_are_specific() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nodes = tmp.path();
        let storage = Storage::under(nodes);
        let err = PrivateNetwork::from_chutney_nodes(nodes, storage.clone()).expect_err("empty");
        assert!(matches!(err, ArtiTomlError::NoAuthorities(_)), "{err}");

        // chutney's stock 10-second voting interval cannot work with Arti.
        write_authority(
            nodes,
            "000a",
            0,
            &chutney_torrc(0, "V3AuthVotingInterval 10"),
        );
        let err = PrivateNetwork::from_chutney_nodes(nodes, storage.clone()).expect_err("10 s");
        assert!(
            matches!(
                err,
                ArtiTomlError::UnusableVotingInterval {
                    voting_interval_secs: 10,
                    ..
                }
            ),
            "{err}"
        );

        // Without a voting interval, tor's TestingTorNetwork default (5 minutes) applies.
        write_authority(nodes, "000a", 0, &chutney_torrc(0, ""));
        let net = PrivateNetwork::from_chutney_nodes(nodes, storage.clone()).expect("default");
        assert_eq!(net.hsdir_interval_minutes, 120);

        fs::write(nodes.join("000a").join("fingerprint"), "garbage\n").expect("write");
        let err = PrivateNetwork::from_chutney_nodes(nodes, storage).expect_err("bad fp");
        assert!(matches!(err, ArtiTomlError::BadFile { .. }), "{err}");
        assert!(err.to_string().contains("fingerprint"), "{err}");
    }

    /// Writes `text` to `name` in `dir`.
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn sources_layer_files_then_options() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = write(
            tmp.path(),
            "a.toml",
            "[storage]\nstate_dir = \"/a/state\"\ncache_dir = \"/a/cache\"\n",
        );
        let b = write(
            tmp.path(),
            "b.toml",
            "[storage]\ncache_dir = \"/b/cache\"\n",
        );
        let loaded = ArtiSources::new()
            .file(&a)
            .file(&b)
            .option("storage.state_dir=/o/state")
            .load()
            .expect("loads");
        assert!(loaded.unrecognized.is_empty(), "{:?}", loaded.unrecognized);
        // Later files replace earlier ones' keys; -o replaces the files'.
        let toml = format!("{:?}", loaded.config);
        assert!(
            toml.contains("/b/cache") && !toml.contains("/a/cache"),
            "{toml}"
        );
        assert!(
            toml.contains("/o/state") && !toml.contains("/a/state"),
            "{toml}"
        );
    }

    #[test]
    fn storage_base_is_literal_and_overridable() {
        let storage = Storage {
            state_dir: PathBuf::from("/x/${HOME}/state"),
            cache_dir: PathBuf::from("/x/cache"),
        };
        let loaded = ArtiSources::new()
            .storage(storage.clone())
            .load()
            .expect("loads");
        let text = format!("{:?}", loaded.config);
        // Not expanded: the directory is exactly the one given.
        assert!(text.contains("/x/${HOME}/state"), "{text}");
        let loaded = ArtiSources::new()
            .storage(storage)
            .option("storage.cache_dir=/elsewhere")
            .load()
            .expect("loads");
        assert!(format!("{:?}", loaded.config).contains("/elsewhere"));
    }

    /// The balancer's defaults turn Arti's preemptive exit circuits off, stay under what an
    /// operator sets, and name no key Arti does not know.
    #[test]
    fn balancer_defaults_build_no_preemptive_circuits_unless_overridden() {
        use tor_circmgr::{CircMgrConfig as _, PreemptiveCircuitConfigBuilder};
        let mut builder = PreemptiveCircuitConfigBuilder::default();
        builder.disable_at_threshold(0);
        builder.initial_predicted_ports().clear();
        let none = builder.build().expect("builds");
        let loaded = ArtiSources::new()
            .balancer_defaults()
            .load()
            .expect("loads");
        assert_eq!(loaded.config.preemptive_circuits(), &none);
        assert!(loaded.unrecognized.is_empty() && loaded.deprecated.is_empty());
        let plain = ArtiSources::new().load().expect("loads");
        assert_ne!(
            plain.config.preemptive_circuits(),
            &none,
            "Arti's own default"
        );
        let overridden = ArtiSources::new()
            .balancer_defaults()
            .option("preemptive_circuits.disable_at_threshold=12")
            .load()
            .expect("loads");
        assert_ne!(overridden.config.preemptive_circuits(), &none);
    }

    #[test]
    fn unknown_keys_are_named_with_their_source() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = write(
            tmp.path(),
            "a.toml",
            "[path_rules]\nipv4_subnet_familly_prefix = 33\n",
        );
        let b = write(tmp.path(), "b.toml", "[nonsense]\nx = 1\n");
        let loaded = ArtiSources::new()
            .file(&a)
            .file(&b)
            .option("address_filter.allow_lokal=true")
            .load()
            .expect("unknown keys are warnings, not errors");
        let got: Vec<String> = loaded.unrecognized.iter().map(|k| k.to_string()).collect();
        let expect = [
            format!("path_rules.ipv4_subnet_familly_prefix (in {})", a.display()),
            // An unknown section is named as a whole.
            format!("nonsense (in {})", b.display()),
            "address_filter.allow_lokal (in -o address_filter.allow_lokal=true)".to_owned(),
        ];
        for e in &expect {
            assert!(got.contains(e), "{e} not in {got:?}");
        }
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn errors_name_the_file_or_the_option() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bad = write(tmp.path(), "bad.toml", "[storage\n");
        let err = ArtiSources::new().file(&bad).load().expect_err("syntax");
        assert!(
            matches!(&err, ArtiTomlError::Invalid { path, .. } if *path == bad),
            "{err}"
        );
        let err = ArtiSources::new()
            .option("storage.state_dir=[1, 2]")
            .load()
            .expect_err("wrong type");
        assert!(
            err.to_string().contains("-o storage.state_dir=[1, 2]"),
            "{err}"
        );
        let err = ArtiSources::new()
            .file(tmp.path().join("missing.toml"))
            .load()
            .expect_err("missing");
        assert!(err.to_string().contains("missing.toml"), "{err}");
        // A FIFO is refused without blocking (the hardened reader, not Arti, opens it).
        let fifo = tmp.path().join("fifo.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let err = ArtiSources::new().file(&fifo).load().expect_err("fifo");
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn shipped_templates_have_no_unknown_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let public = write(tmp.path(), "public.toml", PUBLIC_TOML);
        let loaded = ArtiSources::new()
            .file(&public)
            .load()
            .expect("public.toml");
        assert!(loaded.unrecognized.is_empty(), "{:?}", loaded.unrecognized);
        assert!(loaded.deprecated.is_empty(), "{:?}", loaded.deprecated);
    }
}
