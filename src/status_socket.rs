//! The status socket: a Unix socket that answers every connection with the status document
//! (JSON, upstream Onionbalance's shape plus our fields) and closes.
//!
//! The socket is created with mode 0600 (it shows which backends a frontend uses, which is
//! worth keeping from other local users): it is bound under a temporary name, restricted, and
//! only then renamed into place, so it is never reachable with looser permissions.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use crate::status::{ServiceStatus, StatusDocument};

/// Something that can produce the current status of every service.
pub type StatusSource = Arc<dyn Fn() -> Vec<ServiceStatus> + Send + Sync>;

/// Renders the document the socket serves.
pub fn render(services: Vec<ServiceStatus>) -> String {
    serde_json::to_string_pretty(&StatusDocument { services }).unwrap_or_else(|e| {
        // Serialising plain data cannot fail; say so rather than panic if it ever does.
        format!("{{\"error\": \"cannot serialise status: {e}\"}}")
    })
}

/// A bound status socket; the file is removed when this is dropped.
pub struct StatusSocket {
    /// The listener.
    listener: UnixListener,
    /// Its path.
    path: PathBuf,
}

impl StatusSocket {
    /// Binds `path` with mode 0600, replacing a stale socket left by a previous run (but never
    /// a file that is not a socket).
    pub fn bind(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; refusing to replace it",
                        path.display()
                    ),
                ));
            }
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(StatusSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// Serves connections until the task is dropped.
    pub async fn serve(self, source: StatusSource) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let doc = render(source());
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
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the status document from the socket at `path` (what `onionbalance status` does).
pub async fn query(path: &Path) -> io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut stream = UnixStream::connect(path).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
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
        let source: StatusSource = Arc::new(|| {
            vec![ServiceStatus {
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
            }]
        });
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
}
