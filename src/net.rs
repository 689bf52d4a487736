//! Moving descriptors over Tor: the only module that opens circuits.
//!
//! Every request to an HSDir goes over a **3-hop** circuit from Arti's onion-service circuit
//! pool: client-dir circuits for fetching backends' descriptors, service-dir circuits for
//! uploading ours. One-hop directory circuits would tell the HSDir (and anyone watching it)
//! where the frontend runs, and C tor HSDirs refuse onion-service requests on them (503).
//!
//! The [`DirTransport`] trait is the seam between the scheduling logic and the network, so
//! that hours of scheduling can be tested in simulated time with a scripted transport.

use std::sync::Arc;

use arti_client::TorClient;
use futures::future::BoxFuture;
use tor_hscrypto::pk::HsBlindId;
use tor_linkspec::OwnedCircTarget;
use tor_netdir::NetDir;
use tor_rtcompat::{Runtime, SleepProvider};

use crate::error::{ErrorKind, HasKind};

/// Why one request to one HSDir failed.
///
/// The causes are Arti's own errors (`tor_error::HasKind` tells more about them); our
/// [`ErrorKind`] says which step failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Onion-service circuits are not available from this client.
    #[error("the Tor client cannot build onion-service circuits")]
    NoCircuitPool(#[source] arti_client::Error),
    /// No circuit could be built to the HSDir.
    #[error("could not build a circuit to the HSDir")]
    Circuit(#[source] Box<tor_circmgr::Error>),
    /// The circuit to the HSDir cannot describe its path (needed to tell whom we asked).
    #[error("the circuit to the HSDir is unusable")]
    CircuitInfo(#[source] tor_proto::Error),
    /// The directory stream could not be opened on the circuit.
    #[error("could not open a directory stream to the HSDir")]
    Stream(#[source] Box<tor_circmgr::Error>),
    /// The request failed after it was sent, or the answer was not a directory response.
    #[error("directory request to the HSDir failed")]
    Request(#[source] Box<tor_dirclient::Error>),
    /// The HSDir answered 200 with a body we cannot use.
    #[error("the HSDir's answer is unusable")]
    Answer(#[source] Box<tor_dirclient::RequestFailedError>),
    /// The HSDir answered with an HTTP error status.
    #[error("HSDir answered HTTP {code} {message}")]
    Status {
        /// HTTP status code.
        code: u16,
        /// Status message.
        message: String,
    },
    /// The attempt took too long.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl TransferError {
    /// True when an HSDir refused to store an upload (HTTP 400). A C tor HSDir says 400 for
    /// any storage failure (a revision counter not above the one it holds, a parse failure,
    /// a full cache), so this is not proof that the counter was too low.
    pub fn is_rejected_upload(&self) -> bool {
        matches!(self, TransferError::Status { code: 400, .. })
    }

    /// True when the Tor client could not build the circuit because it is still setting up
    /// (Arti says `BootstrapRequired`): right after a bootstrap from cached state the
    /// consensus is there but the vanguard sets are filled a moment later, and until then
    /// every onion-service circuit fails at once. That says nothing about the HSDir.
    pub fn is_tor_not_ready(&self) -> bool {
        use tor_error::HasKind as _;
        let not_ready =
            |e: &tor_circmgr::Error| e.kind() == tor_error::ErrorKind::BootstrapRequired;
        match self {
            TransferError::Circuit(e) | TransferError::Stream(e) => not_ready(e),
            _ => false,
        }
    }
}

impl HasKind for TransferError {
    fn kind(&self) -> ErrorKind {
        match self {
            TransferError::NoCircuitPool(_) => ErrorKind::TorClientUnusable,
            _ if self.is_tor_not_ready() => ErrorKind::TorNotReady,
            TransferError::Circuit(_) | TransferError::CircuitInfo(_) => ErrorKind::CircuitFailed,
            TransferError::Stream(_) => ErrorKind::DirectoryStream,
            TransferError::Request(e) => match &**e {
                tor_dirclient::Error::RequestFailed(failed) => match &failed.error {
                    tor_dirclient::RequestError::DirTimeout => ErrorKind::Timeout,
                    tor_dirclient::RequestError::Tunnel(_) => ErrorKind::CircuitFailed,
                    tor_dirclient::RequestError::Proto(_)
                    | tor_dirclient::RequestError::IoError(_) => ErrorKind::DirectoryStream,
                    _ => ErrorKind::HsDirProtocol,
                },
                tor_dirclient::Error::CircMgr(_) => ErrorKind::CircuitFailed,
                _ => ErrorKind::HsDirProtocol,
            },
            TransferError::Answer(_) => ErrorKind::HsDirProtocol,
            TransferError::Status { .. } if self.is_rejected_upload() => ErrorKind::UploadRejected,
            TransferError::Status { .. } => ErrorKind::HsDirHttpStatus,
            TransferError::Timeout(_) => ErrorKind::Timeout,
        }
    }
}

/// Fetching and uploading descriptors at one HSDir.
///
/// Implementations do one attempt; timeouts and retries are the caller's.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) trait DirTransport: Send + Sync + 'static {
    /// Fetches the descriptor stored under `blind_id` from `hsdir`: `Ok(None)` when the HSDir
    /// does not have it (404).
    fn fetch<'a>(
        &'a self,
        netdir: &'a NetDir,
        hsdir: OwnedCircTarget,
        blind_id: HsBlindId,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Option<String>, TransferError>>;

    /// Uploads `descriptor` to `hsdir`.
    fn upload<'a>(
        &'a self,
        netdir: &'a NetDir,
        hsdir: OwnedCircTarget,
        descriptor: Arc<str>,
    ) -> BoxFuture<'a, Result<(), TransferError>>;
}

/// The real transport: Arti's onion-service circuit pool and directory client.
pub(crate) struct ArtiTransport<R: Runtime> {
    /// The client whose circuits we use.
    client: Arc<TorClient<R>>,
}

impl<R: Runtime> ArtiTransport<R> {
    /// Uses `client`'s circuits.
    pub(crate) fn new(client: Arc<TorClient<R>>) -> Self {
        ArtiTransport { client }
    }

    /// The client's runtime (for timeouts around requests).
    pub(crate) fn runtime(&self) -> R {
        self.client.runtime().clone()
    }
}

/// Obtains a tunnel with `$launch` (a future), then its source info and a BEGIN_DIR stream.
/// (A macro because Arti's client-dir and service-dir tunnel types share no trait.)
macro_rules! open_dir_stream {
    ($launch:expr) => {{
        let tunnel = $launch
            .await
            .map_err(|e| TransferError::Circuit(Box::new(e)))?;
        let source =
            tor_dirclient::SourceInfo::from_tunnel(&tunnel).map_err(TransferError::CircuitInfo)?;
        let stream = tunnel
            .begin_dir_stream()
            .await
            .map_err(|e| TransferError::Stream(Box::new(e)))?;
        (source, stream)
    }};
}

impl<R: Runtime> ArtiTransport<R> {
    /// The client's onion-service circuit pool.
    fn pool(&self) -> Result<Arc<tor_circmgr::hspool::HsCircPool<R>>, TransferError> {
        self.client
            .hs_circ_pool()
            .map_err(TransferError::NoCircuitPool)
    }
}

/// Sends a request for the descriptor stored under `blind_id` on `stream` (a directory
/// stream to an HSDir) and reads the answer: the descriptor (200), `None` (404), or why not.
///
/// Everything read here comes from the HSDir: any bytes must give an answer or an error
/// (`fuzz/fuzz_targets/hsdir_answer.rs`).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn exchange_fetch<SP, S>(
    runtime: &SP,
    stream: &mut S,
    blind_id: HsBlindId,
    max_len: usize,
    source: Option<tor_dirclient::SourceInfo>,
) -> Result<Option<String>, TransferError>
where
    SP: SleepProvider,
    S: futures::AsyncRead + futures::AsyncWrite + Send + Unpin,
{
    let mut req = tor_dirclient::request::HsDescDownloadRequest::new(blind_id);
    req.set_max_len(max_len);
    let resp = tor_dirclient::send_request(runtime, &req, stream, source)
        .await
        .map_err(|e| TransferError::Request(Box::new(e)))?;
    match resp.status_code() {
        200 => resp
            .into_output_string()
            .map(Some)
            .map_err(|e| TransferError::Answer(Box::new(e))),
        404 => Ok(None),
        _ => Err(status_error(&resp)),
    }
}

/// Sends `descriptor` for storage on `stream` (a directory stream to an HSDir) and reads the
/// answer: `Ok` for 200, else why not (a 400 is a refusal, see
/// [`TransferError::is_rejected_upload`]).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn exchange_upload<SP, S>(
    runtime: &SP,
    stream: &mut S,
    descriptor: Arc<str>,
    source: Option<tor_dirclient::SourceInfo>,
) -> Result<(), TransferError>
where
    SP: SleepProvider,
    S: futures::AsyncRead + futures::AsyncWrite + Send + Unpin,
{
    let req = tor_dirclient::request::HsDescUploadRequest::new(descriptor);
    let resp = tor_dirclient::send_request(runtime, &req, stream, source)
        .await
        .map_err(|e| TransferError::Request(Box::new(e)))?;
    match resp.status_code() {
        200 => Ok(()),
        _ => Err(status_error(&resp)),
    }
}

/// The error for a response that is neither success nor "not found".
fn status_error(resp: &tor_dirclient::DirResponse) -> TransferError {
    TransferError::Status {
        code: resp.status_code(),
        message: resp.status_message().unwrap_or_default().to_owned(),
    }
}

impl<R: Runtime> DirTransport for ArtiTransport<R> {
    fn fetch<'a>(
        &'a self,
        netdir: &'a NetDir,
        hsdir: OwnedCircTarget,
        blind_id: HsBlindId,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Option<String>, TransferError>> {
        Box::pin(async move {
            let pool = self.pool()?;
            let (source, mut stream) =
                open_dir_stream!(pool.get_or_launch_client_dir(netdir, hsdir));
            exchange_fetch(
                self.client.runtime(),
                &mut stream,
                blind_id,
                max_len,
                source,
            )
            .await
        })
    }

    fn upload<'a>(
        &'a self,
        netdir: &'a NetDir,
        hsdir: OwnedCircTarget,
        descriptor: Arc<str>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            let pool = self.pool()?;
            let (source, mut stream) = open_dir_stream!(pool.get_or_launch_svc_dir(netdir, hsdir));
            exchange_upload(self.client.runtime(), &mut stream, descriptor, source).await
        })
    }
}

/// A directory stream that answers with fixed bytes and swallows what is written: an HSDir
/// reduced to its answer, for tests and fuzzing of [`exchange_fetch`] and [`exchange_upload`].
#[derive(Debug, Clone)]
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct CannedStream {
    /// The answer, read from the front.
    answer: Vec<u8>,
    /// How much of it was read.
    pos: usize,
}

#[cfg(any(test, feature = "testing"))]
impl CannedStream {
    /// A stream whose peer answers `answer` and then closes.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn new(answer: Vec<u8>) -> Self {
        CannedStream { answer, pos: 0 }
    }
}

#[cfg(any(test, feature = "testing"))]
impl futures::AsyncRead for CannedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let rest = &self.answer[self.pos.min(self.answer.len())..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        std::task::Poll::Ready(Ok(n))
    }
}

#[cfg(any(test, feature = "testing"))]
impl futures::AsyncWrite for CannedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an HSDir answers decides the outcome: 200 with a body, 404, 400 (a refusal),
    /// or bytes that are not HTTP.
    #[test]
    fn hsdir_answers_are_classified() {
        let rt = tor_rtmock::MockRuntime::new();
        let blind = HsBlindId::from([7u8; 32]);
        let fetch = |answer: &str| {
            let mut s = CannedStream::new(answer.as_bytes().to_vec());
            futures::executor::block_on(exchange_fetch(&rt, &mut s, blind, 50_000, None))
        };
        let body = "hs-descriptor 3\n";
        let ok = fetch(&format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(ok.expect("200").as_deref(), Some(body));
        assert!(fetch("HTTP/1.0 404 Not found\r\n\r\n")
            .expect("404")
            .is_none());
        let e = fetch("HTTP/1.0 503 Busy\r\n\r\n").expect_err("503");
        assert!(matches!(e, TransferError::Status { code: 503, .. }), "{e}");
        assert!(fetch("\x00\x01garbage").is_err());
        assert!(fetch("").is_err());
        let upload = |answer: &str| {
            let mut s = CannedStream::new(answer.as_bytes().to_vec());
            futures::executor::block_on(exchange_upload(&rt, &mut s, Arc::from("d"), None))
        };
        assert!(upload("HTTP/1.0 200 OK\r\n\r\n").is_ok());
        assert!(upload("HTTP/1.0 400 Bad\r\n\r\n")
            .expect_err("400")
            .is_rejected_upload());
    }
}
