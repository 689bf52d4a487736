//! One probe of one backend: a stream through Tor to the backend's own onion address, and
//! optionally an HTTP request on it.
//!
//! In instance mode a C tor backend serves its own address on the same intro points it
//! gives the frontend, so a probe of that address goes where the frontend's clients go:
//! intro point, rendezvous, the backend's tor, its `HiddenServicePort` target.

use std::sync::Arc;

use arti_client::{HasKind as _, IsolationToken, StreamPrefs, TorClient};
use futures::future::BoxFuture;
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use tor_error::ErrorKind as TorErrorKind;
use tor_rtcompat::Runtime;

use crate::config::HealthCheckConfig;
use crate::onion::OnionAddress;

/// The longest HTTP status line a probe reads.
const MAX_STATUS_LINE: usize = 1024;

/// Why a probe failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No answer within the check's timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    /// The backend's onion service could not be reached (descriptor, intro point or
    /// rendezvous failed): its tor is down or unreachable.
    #[error("its onion service could not be reached: {0}")]
    Unreachable(Arc<arti_client::Error>),
    /// The backend's tor answered but refused the stream: nothing accepts connections at
    /// the port's target (the application is down), or the port is not configured.
    #[error(
        "its tor could not open the connection: nothing accepts it at the port's target, or the port is not in its HiddenServicePort lines (is the application running?) [Arti: {0}]"
    )]
    Refused(Arc<arti_client::Error>),
    /// The HTTP answer's status was 400 or more.
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// The answer was not HTTP.
    #[error("not an HTTP answer: {0}")]
    HttpInvalid(&'static str),
    /// The stream failed while the request was sent or the answer read.
    #[error("the connection failed: {0}")]
    Io(Arc<std::io::Error>),
}

impl ProbeError {
    /// A short name for the kind of failure, for metrics and status.
    pub fn kind_label(&self) -> &'static str {
        match self {
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Unreachable(_) => "unreachable",
            ProbeError::Refused(_) => "refused",
            ProbeError::HttpStatus(_) => "http-status",
            ProbeError::HttpInvalid(_) => "http-invalid",
            ProbeError::Io(_) => "io",
        }
    }

    /// Classifies an error of Arti's `connect`: did the backend's tor refuse the stream (it
    /// was reached), or was it never reached?
    fn from_connect(e: arti_client::Error) -> Self {
        match e.kind() {
            // END cells from the backend's tor: the service was reached.
            TorErrorKind::RemoteConnectionRefused
            | TorErrorKind::RemoteStreamClosed
            | TorErrorKind::RemoteStreamReset
            | TorErrorKind::RemoteStreamError
            | TorErrorKind::RemoteNetworkFailed
            | TorErrorKind::RelayTooBusy => ProbeError::Refused(Arc::new(e)),
            _ => ProbeError::Unreachable(Arc::new(e)),
        }
    }
}

/// Probes backends. Implementations make one attempt; the timeout is the caller's.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) trait Prober: Send + Sync + 'static {
    /// Probes `backend` as `check` says: `Ok` when it passed.
    fn probe(
        &self,
        backend: OnionAddress,
        check: &HealthCheckConfig,
    ) -> BoxFuture<'static, Result<(), ProbeError>>;
}

/// Probes through an Arti client.
///
/// Every probe uses one isolation token, created once: Arti keeps one rendezvous circuit per
/// onion service and isolation, reused by each new stream and closed 10 minutes after the
/// last, so at any interval under that a probe at steady state is one stream on a circuit
/// that already exists. (A fresh token per probe would fetch the descriptor and build a new
/// rendezvous circuit every time.) The token keeps probes off circuits of the embedding
/// application's own traffic, and theirs off ours.
pub(crate) struct ArtiProber<R: Runtime> {
    /// The client.
    client: Arc<TorClient<R>>,
    /// The probes' isolation.
    isolation: IsolationToken,
}

impl<R: Runtime> ArtiProber<R> {
    /// Probes through `client`.
    pub(crate) fn new(client: Arc<TorClient<R>>) -> Self {
        ArtiProber {
            client,
            isolation: IsolationToken::new(),
        }
    }
}

impl<R: Runtime> Prober for ArtiProber<R> {
    fn probe(
        &self,
        backend: OnionAddress,
        check: &HealthCheckConfig,
    ) -> BoxFuture<'static, Result<(), ProbeError>> {
        let client = self.client.clone();
        let mut prefs = StreamPrefs::new();
        prefs.set_isolation(self.isolation);
        prefs.connect_to_onion_services(arti_client::config::BoolOrAuto::Explicit(true));
        let host = backend.to_string();
        let port = check.port;
        let path = check.http_path.clone();
        Box::pin(async move {
            let mut stream = client
                .connect_with_prefs((host.as_str(), port), &prefs)
                .await
                .map_err(ProbeError::from_connect)?;
            match path {
                None => Ok(()),
                Some(path) => http_check(&mut stream, &host, &path).await,
            }
        })
    }
}

/// Sends `GET path` for `host` on `stream` and reads the status line: `Ok` for a status
/// below 400. Everything read comes from the backend: any bytes give an answer or an error.
pub(crate) async fn http_check<S>(stream: &mut S, host: &str, path: &str) -> Result<(), ProbeError>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| ProbeError::Io(Arc::new(e));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: onionbalance-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut line = Vec::with_capacity(64);
    let mut buf = [0_u8; 256];
    loop {
        let n = stream.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(ProbeError::HttpInvalid(
                "the connection closed before a status line",
            ));
        }
        line.extend_from_slice(&buf[..n]);
        if line.contains(&b'\n') {
            break;
        }
        if line.len() > MAX_STATUS_LINE {
            return Err(ProbeError::HttpInvalid("the status line is too long"));
        }
    }
    let status = status_code(&line)?;
    if status < 400 {
        Ok(())
    } else {
        Err(ProbeError::HttpStatus(status))
    }
}

/// The status code of the HTTP status line at the start of `answer`.
fn status_code(answer: &[u8]) -> Result<u16, ProbeError> {
    let end = answer
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(answer.len());
    let line = std::str::from_utf8(&answer[..end])
        .map_err(|_| ProbeError::HttpInvalid("the status line is not text"))?;
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") && code.len() == 3 => code
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or(ProbeError::HttpInvalid(
                "the status code is not a number from 100 to 599",
            )),
        _ => Err(ProbeError::HttpInvalid("no HTTP status line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that answers with fixed bytes and keeps what is written.
    struct Canned {
        answer: std::io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl futures::AsyncRead for Canned {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(std::io::Read::read(&mut self.answer, buf))
        }
    }

    impl futures::AsyncWrite for Canned {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(buf);
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

    fn check(answer: &[u8]) -> (Result<(), ProbeError>, String) {
        let mut s = Canned {
            answer: std::io::Cursor::new(answer.to_vec()),
            written: Vec::new(),
        };
        let r = futures::executor::block_on(http_check(&mut s, "x.onion", "/healthz"));
        (r, String::from_utf8_lossy(&s.written).into_owned())
    }

    #[test]
    fn statuses_below_400_pass() {
        let (r, sent) = check(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(r.is_ok(), "{r:?}");
        assert!(
            sent.starts_with("GET /healthz HTTP/1.1\r\nHost: x.onion\r\n"),
            "{sent}"
        );
        assert!(sent.ends_with("\r\n\r\n"), "{sent}");
        assert!(check(b"HTTP/1.0 301 Moved\r\n\r\n").0.is_ok());
        assert!(check(b"HTTP/1.1 204\n").0.is_ok());
    }

    #[test]
    fn errors_and_garbage_fail_with_their_kind() {
        for (answer, kind) in [
            (
                &b"HTTP/1.1 503 Service Unavailable\r\n\r\n"[..],
                "http-status",
            ),
            (b"HTTP/1.1 404 Not Found\r\n", "http-status"),
            (b"", "http-invalid"),
            (b"SSH-2.0-OpenSSH\r\n", "http-invalid"),
            (b"HTTP/1.1 20 OK\r\n", "http-invalid"),
            (b"HTTP/1.1 999 What\r\n", "http-invalid"),
            (b"HTTP/1.1 2000 OK\r\n", "http-invalid"),
            (b"HTTP/1.1 \xff\xfe\r\n", "http-invalid"),
            (&[b'H'; 5000][..], "http-invalid"),
        ] {
            let (r, _) = check(answer);
            assert_eq!(
                r.as_ref().map_err(ProbeError::kind_label),
                Err(kind),
                "{:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}
