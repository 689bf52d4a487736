//! systemd's side of the readiness protocol (`sd_notify`), for tests that start the daemon
//! as its unit would.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};

/// systemd's side of the readiness protocol: a datagram socket read by a thread of its own
/// (as systemd drains its socket, so that the daemon is never held up by a full queue), every
/// message kept in order.
pub struct SystemdStandIn {
    /// Every message received so far.
    messages: Arc<Mutex<Vec<String>>>,
}

impl SystemdStandIn {
    /// Listens on a datagram socket at `path` (give it to the daemon as `NOTIFY_SOCKET`),
    /// keeping every message in a thread of its own.
    pub fn bind(path: &Path) -> Result<Self> {
        let socket = UnixDatagram::bind(path)?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        // The thread ends with the test process; the socket file with the test's directory.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Ok(mut m) = sink.lock() {
                    m.push(msg);
                }
            }
        });
        Ok(SystemdStandIn { messages })
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The index of the first message from index `from` on that `pred` accepts.
    pub async fn wait_for(
        &self,
        from: usize,
        pred: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = self.messages().iter().skip(from).position(|m| pred(m));
            if let Some(i) = found {
                return Ok(from + i);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "systemd was not told what was expected within {limit:?}: {:?}",
                    self.messages()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
