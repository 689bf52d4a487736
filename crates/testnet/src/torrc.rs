//! The torrc of every node of the test network, written from Rust as data.
//!
//! Settings and why (see also `design.md` §5):
//! * `TestingTorNetwork 1` relaxes the many checks that stop a network of a few loopback
//!   relays from working, and makes the onion-service time period 24 × the voting interval.
//! * 20-second voting (from the very first consensus: the `TestingV3AuthInitial*` options)
//!   gives a consensus in ~15–35 s and 8-minute time periods. Shorter intervals would give
//!   periods below Arti's 5-minute minimum (`onionbalance::arti_toml`).
//! * `TestingDirAuthVote{Exit,Guard,HSDir} *` gives every relay the flags a small network
//!   would otherwise wait hours for; `AssumeReachable 1` skips the self-test of ORPorts.
//! * `__OwningControllerProcess <our pid>` makes every tor exit by itself if the test process
//!   dies without running its destructors; `RunAsDaemon 0` keeps tor our direct child, so we
//!   know its PID and can stop it.
//! * Control ports with cookie authentication: how the harness watches readiness, reads
//!   descriptors and sends signals.
//! * Logs: notice and info, plus the `rend` domain alone ([`REND_LOG`]), which the harness
//!   reads to count the descriptor uploads each HSDir stored. Tor stamps lines in local time
//!   without a year; the harness runs every tor with `TZ=UTC` and `LogTimeGranularity 1` (ms).

use std::fmt::Display;
use std::path::Path;

/// The authorities' voting interval, in seconds. It fixes the onion-service time period
/// (24 × this = 8 minutes) and its offset (12 × this = 4 minutes).
pub const VOTING_INTERVAL_SECS: u32 = 20;
/// Seconds the authorities allow for votes to arrive. Short (as in chutney), so that the
/// first vote happens late in the first interval and includes the relays started just after
/// the authorities; three authorities on one machine exchange votes in milliseconds.
const VOTE_DELAY_SECS: u32 = 2;
/// Seconds the authorities allow for signatures to arrive.
const DIST_DELAY_SECS: u32 = 2;

/// The log file (in every node's data directory) of the `rend` domain at level info: a
/// few lines per onion-service event. HSDirs write there the one line per descriptor upload
/// they store, which `TestNet::hsdir_uploads_stored` counts; services write their descriptor
/// rotations and uploads. (`info.log` has the same lines among everything else, megabytes
/// per hour.)
pub const REND_LOG: &str = "rend.log";

/// A torrc being written: an ordered list of options and comments.
#[derive(Debug, Default, Clone)]
pub struct Torrc {
    /// The lines, without terminators.
    lines: Vec<String>,
}

impl Torrc {
    /// An empty torrc.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `# comment` line.
    pub fn comment(&mut self, text: &str) -> &mut Self {
        self.lines.push(format!("# {text}"));
        self
    }

    /// Adds an `Option value` line.
    pub fn opt(&mut self, key: &str, value: impl Display) -> &mut Self {
        self.lines.push(format!("{key} {value}"));
        self
    }

    /// The file contents.
    pub fn render(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        out
    }
}

/// What every node of the network shares.
pub struct Common<'a> {
    /// The node's data directory.
    pub data_dir: &'a Path,
    /// The node's nickname.
    pub nickname: &'a str,
    /// The node's control port on 127.0.0.1.
    pub control_port: u16,
    /// The PID tor watches, exiting when it disappears (the test process).
    pub owner_pid: u32,
    /// The `DirAuthority` lines of the network (values only, without the keyword).
    pub dir_authorities: &'a [String],
}

/// The options of every node: testing network, logging, control port, authorities.
pub fn common(c: &Common<'_>) -> Torrc {
    let dir = c.data_dir.display();
    let mut t = Torrc::new();
    t.comment("written by onionbalance-testnet (private test network on 127.0.0.1)")
        .opt("TestingTorNetwork", 1)
        .opt("DataDirectory", &dir)
        .opt("Nickname", c.nickname)
        .comment("stay in the foreground as our child; exit if the test process disappears")
        .opt("RunAsDaemon", 0)
        .opt("__OwningControllerProcess", c.owner_pid)
        .opt("ShutdownWaitLength", 0)
        .opt("ControlPort", format!("127.0.0.1:{}", c.control_port))
        .opt("CookieAuthentication", 1)
        .opt("Log", format!("notice file {dir}/notice.log"))
        .opt("Log", format!("info file {dir}/info.log"))
        .comment("onion-service events only (small): what HSDirs store, what services upload")
        .opt("Log", format!("[rend]info file {dir}/{REND_LOG}"))
        .opt("SafeLogging", 0)
        .opt("LogTimeGranularity", 1)
        .opt("ProtocolWarnings", 1)
        .comment("every relay gets the flags a young network would wait hours for")
        .opt("TestingDirAuthVoteExit", "*")
        .opt("TestingDirAuthVoteGuard", "*")
        .opt("TestingDirAuthVoteHSDir", "*")
        .opt("TestingMinExitFlagThreshold", 0)
        .opt("PathsNeededToBuildCircuits", 0.67)
        .opt("V3AuthNIntervalsValid", 2)
        .comment("no DNS on test machines; the network is loopback only")
        .opt("ServerDNSDetectHijacking", 0)
        .opt("ServerDNSResolvConfFile", "/dev/null")
        .opt("ServerDNSTestAddresses", "");
    for line in c.dir_authorities {
        t.opt("DirAuthority", line);
    }
    t
}

/// Options of a relay's ORPort and DirPort on 127.0.0.1, published without a reachability test.
fn listening_relay(t: &mut Torrc, or_port: u16, dir_port: u16) {
    t.opt("SocksPort", 0)
        .opt("Address", "127.0.0.1")
        .opt("ORPort", format!("127.0.0.1:{or_port}"))
        .opt("DirPort", format!("127.0.0.1:{dir_port}"))
        .opt("AssumeReachable", 1);
}

/// Adds the options of a directory authority (not an exit) voting every 20 seconds.
pub fn authority(t: &mut Torrc, or_port: u16, dir_port: u16, contact: &str) {
    listening_relay(t, or_port, dir_port);
    t.opt("ExitRelay", 0)
        .opt("AuthoritativeDirectory", 1)
        .opt("V3AuthoritativeDirectory", 1)
        .opt("ContactInfo", contact)
        .comment("20 s voting from the first consensus on: 8-minute onion-service time periods")
        .opt("V3AuthVotingInterval", VOTING_INTERVAL_SECS)
        .opt("V3AuthVoteDelay", VOTE_DELAY_SECS)
        .opt("V3AuthDistDelay", DIST_DELAY_SECS)
        .opt("TestingV3AuthInitialVotingInterval", VOTING_INTERVAL_SECS)
        .opt("TestingV3AuthInitialVoteDelay", VOTE_DELAY_SECS)
        .opt("TestingV3AuthInitialDistDelay", DIST_DELAY_SECS);
}

/// Adds the options of a relay that is also an exit.
pub fn relay(t: &mut Torrc, or_port: u16, dir_port: u16, contact: &str) {
    listening_relay(t, or_port, dir_port);
    t.opt("ContactInfo", contact)
        .opt("ExitRelay", 1)
        .opt("ExitPolicyRejectPrivate", 0)
        .opt("ExitPolicy", "accept 127.0.0.0/8:*")
        .opt("ExitPolicy", "accept private:*")
        .comment("the microdescriptor policy summary ignores private addresses: without a")
        .comment("public accept, clients would see no exits and count no exit paths. The")
        .comment("network is loopback only and has no DNS, so nothing leaves the machine.")
        .opt("ExitPolicy", "accept *:*");
}

/// Makes a client or service fetch directory documents from the authorities, like a cache.
///
/// Why: the relays, started before the first consensus exists, back off after each 404 and
/// can serve it (and its microdescriptors) up to ~40 s after the authorities do. A client
/// that asks such a cache first gets a 404 and retries ~10 s later, which made backend
/// start-up vary between 4 and 26 s. The authorities always have the newest documents.
fn fetch_from_authorities(t: &mut Torrc) {
    t.comment("fetch directory documents from the authorities, which always have them")
        .opt("FetchDirInfoEarly", 1);
}

/// Adds the options of a client with a SOCKS port (stream isolation by SOCKS credentials is
/// tor's default; `ExtendedErrors` gives the onion-service failure codes).
pub fn client(t: &mut Torrc, socks_port: u16) {
    t.opt(
        "SocksPort",
        format!("127.0.0.1:{socks_port} ExtendedErrors"),
    );
    fetch_from_authorities(t);
}

/// Adds the options of an onion service forwarding port 80 to `127.0.0.1:http_port`, as an
/// Onionbalance instance if `instance` (then `<hs_dir>/ob_config` must name the frontend).
///
/// The service starts with `DisableNetwork 1`, so the harness can subscribe to its descriptor
/// events before it could possibly upload; it then enables the network over the control port.
pub fn backend(t: &mut Torrc, hs_dir: &Path, http_port: u16, instance: bool) {
    t.opt("SocksPort", 0)
        .opt("HiddenServiceDir", hs_dir.display())
        .opt("HiddenServiceVersion", 3)
        .opt("HiddenServicePort", format!("80 127.0.0.1:{http_port}"));
    if instance {
        t.opt("HiddenServiceOnionBalanceInstance", 1);
    }
    fetch_from_authorities(t);
    t.comment("enabled over the control port once the harness listens for HS_DESC events")
        .opt("DisableNetwork", 1);
}
