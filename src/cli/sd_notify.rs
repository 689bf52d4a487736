//! systemd's readiness protocol (`sd_notify`), without libsystemd.
//!
//! With `Type=notify`, systemd waits for `READY=1` on the datagram socket named by
//! `$NOTIFY_SOCKET`; `STATUS=` lines show in `systemctl status`. Outside systemd (no
//! `$NOTIFY_SOCKET`) every call is a no-op.
//!
//! The socket is non-blocking: a manager that does not read its queue (it is full) costs a
//! lost status line and a warning, never a stalled daemon.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to systemd. Returns `Ok(false)` when not run by systemd.
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    if let Some(abstract_name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt as _;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract NOTIFY_SOCKET outside Linux",
            ));
        }
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for systemd: a datagram socket; the message must arrive intact.
    #[test]
    fn sends_the_state_to_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        // Only this test reads or sets NOTIFY_SOCKET in this process.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=ok").expect("send"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").expect("no socket"));
    }
}
