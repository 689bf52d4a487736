//! The status socket: a Unix socket that answers every connection with the status document
//! (JSON, upstream Onionbalance's shape plus our fields) and closes.
//!
//! The socket is created with mode 0600 (it shows which backends a frontend uses, which is
//! worth keeping from other local users): it is bound inside a fresh directory of mode 0700,
//! restricted, and only then renamed into place, so it is never reachable with looser
//! permissions. A socket already at the path is replaced only if nothing answers on it (a
//! stale one from a run that crashed); when another daemon answers, binding fails. On drop
//! the socket is removed only if the path still holds the very socket we made.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt as _;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use crate::status::{ServiceStatus, StatusDocument};

/// Where the packaged daemon's status socket is when neither the config's
/// `status-socket-location` nor `$ONIONBALANCE_STATUS_SOCKET_LOCATION` names one (the
/// systemd unit's `RuntimeDirectory=onionbalance`); `onionbalance status` asks it last.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/onionbalance/status.sock";

/// Largest status document [`query`] reads (a document is about a kilobyte per backend).
pub const MAX_DOCUMENT_LEN: u64 = 64 << 20;

/// The current status of every service: a watch receiver, as
/// [`BalancerHandle::status_watch`](crate::BalancerHandle::status_watch) gives. Each
/// connection reads what it holds at that moment; nothing polls.
pub type StatusSource = tokio::sync::watch::Receiver<Vec<ServiceStatus>>;

/// Renders the document the socket serves.
pub fn render(services: Vec<ServiceStatus>) -> String {
    serde_json::to_string_pretty(&StatusDocument { services }).unwrap_or_else(|e| {
        // Serialising plain data cannot fail; say so rather than panic if it ever does.
        format!("{{\"error\": \"cannot serialise status: {e}\"}}")
    })
}

/// A bound status socket; the file is removed when this is dropped (if it is still ours).
pub struct StatusSocket {
    /// The listener.
    listener: UnixListener,
    /// Its path.
    path: PathBuf,
    /// Device and inode of the socket file we created.
    identity: (u64, u64),
}

impl StatusSocket {
    /// Binds `path` with mode 0600, replacing a stale socket left by a previous run (never a
    /// live one, and never a file that is not a socket).
    pub fn bind(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; refusing to replace it",
                        path.display()
                    ),
                ));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{} is served by another running process (another onionbalance?); stop it or choose another status-socket-location",
                            path.display()
                        ),
                    ))
                }
                // Nobody listens: left by a run that did not clean up.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot tell whether {} is in use: {e}", path.display()),
                    ))
                }
            }
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let staging = (0..16)
            .map(|_| parent.join(format!(".onionbalance-{:016x}", rand::random::<u64>())))
            .find_map(|dir| {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .ok()
                    .map(|()| dir)
            })
            .ok_or_else(|| {
                io::Error::other(format!(
                    "cannot create a private directory in {} to prepare the socket",
                    parent.display()
                ))
            })?;
        let tmp = staging.join("socket");
        let made = (|| {
            let listener = UnixListener::bind(&tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, path)?;
            Ok::<_, io::Error>(listener)
        })();
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&staging);
        let listener = made?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(StatusSocket {
            listener,
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// Serves connections until the task is dropped.
    pub async fn serve(self, source: StatusSource) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let doc = render(source.borrow().clone());
                    tokio::spawn(answer(stream, doc));
                }
                Err(e) => {
                    warn!("status socket {}: accept failed: {e}", self.path.display());
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Writes the document and closes.
async fn answer(mut stream: UnixStream, doc: String) {
    if let Err(e) = async {
        stream.write_all(doc.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        stream.shutdown().await
    }
    .await
    {
        debug!("status socket client went away: {e}");
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        // Another instance may have replaced our socket since (after finding it dead, say):
        // that one is not ours to remove.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads the status document from the socket at `path` (what `onionbalance status` does).
pub async fn query(path: &Path) -> io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let stream = UnixStream::connect(path).await?;
    let mut out = String::new();
    // Whatever listens at the path answers: a status document is kilobytes, so a reader
    // that never stops is cut off rather than followed.
    stream
        .take(MAX_DOCUMENT_LEN + 1)
        .read_to_string(&mut out)
        .await?;
    if out.len() as u64 > MAX_DOCUMENT_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the status socket sent more than {MAX_DOCUMENT_LEN} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_upstream_shape_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ob.sock");
        std::fs::write(&path, "not a socket").expect("write");
        assert!(
            StatusSocket::bind(&path).is_err(),
            "never replaces a regular file"
        );
        std::fs::remove_file(&path).expect("rm");
        let sock = StatusSocket::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_status, source): (_, StatusSource) =
            tokio::sync::watch::channel(vec![ServiceStatus {
                onion_address: "x.onion".into(),
                instances: vec![crate::status::InstanceStatus {
                    onion_address: "y.onion".into(),
                    intro_points_num: 3,
                    descriptor_received: Some(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }]);
        // A second daemon on the same path is refused while the first one serves.
        let e = StatusSocket::bind(&path)
            .err()
            .expect("a live socket is not replaced");
        assert!(e.to_string().contains("another running process"), "{e}");
        let task = tokio::spawn(sock.serve(source));
        let text = query(&path).await.expect("query");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let svc = &v["services"][0];
        assert_eq!(svc["onionAddress"], "x.onion");
        assert!(svc.get("publishAttemptFirstDescriptor").is_some());
        assert!(svc.get("publishAttemptSecondDescriptor").is_some());
        let inst = &svc["instances"][0];
        assert_eq!(inst["onionAddress"], "y.onion");
        assert_eq!(inst["introPointsNum"], 3);
        assert_eq!(inst["descriptorReceived"], "2023-11-14 22:13:20");
        assert!(inst.get("introSetModified").is_some());
        task.abort();
    }

    /// A stale socket (nothing listening) is replaced; on drop only our own socket is
    /// removed, not one that replaced it.
    #[tokio::test]
    async fn replaces_only_stale_sockets_and_removes_only_its_own() {
        use std::os::unix::fs::FileTypeExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ob.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        assert!(std::fs::symlink_metadata(&path)
            .expect("left behind")
            .file_type()
            .is_socket());
        let first = StatusSocket::bind(&path).expect("stale one replaced");
        // Someone replaces it (a second daemon after the first hung, say).
        std::fs::remove_file(&path).expect("rm");
        let other = std::os::unix::net::UnixListener::bind(&path).expect("other socket");
        drop(first);
        assert!(path.exists(), "the other process's socket was removed");
        drop(other);
        // No staging directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ob.sock")]);
    }
}
