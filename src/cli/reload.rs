//! Reloading the running daemon after a command edited its config: SIGHUP to the process
//! that serves the config's status socket.
//!
//! The daemon is found by its status socket (the config's `status-socket-location`; for the
//! packaged config, `/etc/onionbalance/config.yaml`, else the packaged daemon's default
//! socket), not by name: the kernel says which process holds the
//! other end of a connection to it (`SO_PEERCRED`), and that process must be an
//! `onionbalance`. Anything less certain (no socket, another program, no permission to
//! signal it) reloads nothing and says how to do it by hand.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::status_socket::DEFAULT_STATUS_SOCKET;

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reload {
    /// The daemon with this process id was sent SIGHUP.
    Signalled {
        /// Its process id.
        pid: u32,
        /// The status socket it was found by.
        socket: PathBuf,
    },
    /// Nothing was signalled, and why.
    NotDone(String),
}

/// The manual way, for messages.
pub(crate) const BY_HAND: &str = "`systemctl reload onionbalance`, or send SIGHUP to its process";

/// Sends SIGHUP to the daemon that serves `cfg`'s status socket.
pub(crate) fn reload_daemon(cfg: &Config) -> Reload {
    let Some(socket) = socket_of(cfg) else {
        return Reload::NotDone(
            "the config names no status-socket-location, and it is not the packaged daemon's config, whose socket is known".into(),
        );
    };
    match signal_server(&socket) {
        Ok(pid) => Reload::Signalled { pid, socket },
        Err(why) => Reload::NotDone(format!("{}: {why}", socket.display())),
    }
}

/// Prints what a reload attempt did, for a command that changed `what`.
pub(crate) fn report(outcome: &Reload, what: &str) {
    match outcome {
        Reload::Signalled { pid, socket } => {
            println!(
                "reloaded the daemon (process {pid}, status socket {}) to apply {what}",
                socket.display()
            );
        }
        Reload::NotDone(why) => {
            println!("could not reload the daemon ({why}): to apply {what}, reload it: {BY_HAND}");
        }
    }
}

/// The socket the daemon of `cfg` serves: the config's (after the environment override),
/// else, for the packaged config only, the packaged daemon's when it exists. (Any other
/// config without a socket may belong to a daemon we cannot find; the packaged daemon, which
/// reads the packaged config, is not signalled for it.)
fn socket_of(cfg: &Config) -> Option<PathBuf> {
    let packaged = |p: &Path| {
        p.canonicalize()
            .is_ok_and(|p| p == Path::new(super::config_path::SYSTEM_CONFIG))
    };
    match &cfg.status_socket_location {
        Some(s) => Some(s.clone()),
        None if packaged(&cfg.path) => Some(PathBuf::from(DEFAULT_STATUS_SOCKET)),
        None => None,
    }
    .filter(|p| p.exists())
}

/// Connects to `socket`, checks that the process serving it is an onionbalance daemon, and
/// sends it SIGHUP; its process id, or why not.
fn signal_server(socket: &Path) -> Result<u32, String> {
    let stream =
        UnixStream::connect(socket).map_err(|e| format!("no daemon answers there ({e})"))?;
    let creds = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| format!("cannot tell which process serves it ({e})"))?;
    let pid = creds.pid;
    let raw = u32::try_from(pid.as_raw_nonzero().get())
        .map_err(|_| "the kernel gave an invalid process id".to_owned())?;
    let name = std::fs::read_to_string(format!("/proc/{raw}/comm"))
        .map_err(|e| format!("cannot read process {raw}'s name ({e})"))?;
    if name.trim_end() != "onionbalance" {
        return Err(format!(
            "process {raw} serving it is {:?}, not onionbalance",
            name.trim_end()
        ));
    }
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .map_err(|e| format!("cannot signal process {raw} ({e}; run this as its user or root)"))?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket served by another program is not signalled (this test's own process serves
    /// it here, and it must not get SIGHUP: that would end the test run).
    #[test]
    fn only_an_onionbalance_process_is_signalled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let why = signal_server(&path).expect_err("this test is not onionbalance");
        assert!(why.contains("not onionbalance"), "{why}");
        assert!(why.contains(&std::process::id().to_string()), "{why}");
    }

    /// No socket, or nobody serving it: nothing is signalled, and the message says so.
    #[test]
    fn no_daemon_no_signal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.sock");
        assert!(signal_server(&path)
            .expect_err("no socket")
            .contains("no daemon answers"));
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(signal_server(&path)
            .expect_err("nobody listens")
            .contains("no daemon answers"));
    }
}
