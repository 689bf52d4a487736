//! Minimal HTTP for tests: an in-process server that names its backend, and a client for
//! one `GET` over any byte stream (a TCP connection to a DirPort, a SOCKS tunnel, an Arti
//! stream).
//!
//! The server runs on a std thread inside the test process, so nothing outlives the test:
//! dropping it stops it, and a crashed test takes it down with it.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// How long the server waits for a client to send its request.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head the server reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The largest response the client accepts (consensus documents of test networks are small).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// An HTTP server on `127.0.0.1` that answers every request with `200` and a fixed body.
pub struct HttpServer {
    /// Where it listens.
    addr: SocketAddr,
    /// Set to ask the accept loop to stop.
    stop: Arc<AtomicBool>,
    /// The accept loop.
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts a server on a fresh loopback port that answers `body` to every request.
    pub fn start(body: String) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind HTTP server")?;
        let addr = listener.local_addr().context("HTTP server address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let body = Arc::new(body);
        let thread = std::thread::Builder::new()
            .name(format!("http-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let body = Arc::clone(&body);
                    // One short-lived thread per connection, so a client that stalls (a
                    // rendezvous that never completes) does not block the next request.
                    let _ = std::thread::Builder::new()
                        .name("http-conn".into())
                        .spawn(move || serve_one(conn, &body));
                }
            })
            .context("spawn HTTP server thread")?;
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The port it listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpServer({})", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads a request head (we never need the request) and writes the response.
fn serve_one(mut conn: TcpStream, body: &str) {
    let _ = conn.set_read_timeout(Some(SERVER_READ_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes());
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (lossily decoded as UTF-8).
    pub body: String,
}

/// Sends `GET path` with `Host: host` over `stream` (HTTP/1.0, so the server closes the
/// connection after the body) and reads the whole response.
pub async fn get<S>(stream: &mut S, host: &str, path: &str) -> Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("send HTTP request")?;
    stream.flush().await.context("send HTTP request")?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .await
        .context("read HTTP response")?;
    parse_response(&raw)
}

/// Splits a raw HTTP/1.x response into status and body.
fn parse_response(raw: &[u8]) -> Result<Response> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "incomplete HTTP response ({} bytes): {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    })
}
