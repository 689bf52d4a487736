//! Minimal HTTP for tests: an in-process server that names its backend, and a client for
//! one `GET` over any byte stream (a TCP connection to a DirPort, a SOCKS tunnel, an Arti
//! stream).
//!
//! The server runs on a std thread inside the test process, so nothing outlives the test:
//! dropping it stops it, and a crashed test takes it down with it. It can be stopped and
//! started again on the same port ([`HttpServer::stop`], [`HttpServer::start_again`]), as an
//! operator's web server crashes and is restarted behind a tor that keeps running, and it
//! records every connection and request it gets ([`HttpServer::requests`]), so a test can
//! count from the server's side what reached it (a health checker's probes).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// How long the server waits for a client to send its request.
pub const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head the server reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The largest response the client accepts (consensus documents of test networks are small).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;
/// How long [`HttpServer::start_again`] retries binding its port (see there).
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// The body the health path answers with.
pub const HEALTH_BODY: &str = "ok\n";

/// One connection the server accepted, and the request on it if one came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// When the connection was accepted.
    pub at: SystemTime,
    /// The request's method and path (`GET`, `/healthz`); `None` if the connection closed
    /// (or stayed silent for [`SERVER_READ_TIMEOUT`]) before a request line: a bare connect,
    /// as a TCP health check makes.
    pub request: Option<(String, String)>,
}

impl Request {
    /// The path requested, if any.
    pub fn path(&self) -> Option<&str> {
        self.request.as_ref().map(|(_, p)| p.as_str())
    }
}

/// What a server answers, shared with its connection threads.
#[derive(Debug)]
struct Answers {
    /// The body of every answer, except on the health path.
    body: String,
    /// A path answered `200` with [`HEALTH_BODY`], if set.
    health_path: Option<String>,
}

/// The accept loop of a running server.
#[derive(Debug)]
struct Running {
    /// Set to ask the accept loop to stop.
    stop: Arc<AtomicBool>,
    /// The accept loop.
    thread: JoinHandle<()>,
}

/// An HTTP server on `127.0.0.1` that answers every request with `200` and a fixed body (and,
/// if asked, its health path with `200` and [`HEALTH_BODY`]). It can be stopped and started
/// again on the same port; it records every connection it accepts.
pub struct HttpServer {
    /// Where it listens.
    addr: SocketAddr,
    /// What it answers.
    answers: Arc<Answers>,
    /// Every connection accepted since it first started, across restarts.
    requests: Arc<Mutex<Vec<Request>>>,
    /// The accept loop while it runs.
    running: Option<Running>,
    /// While stopped: a socket bound to the port but not listening. A connection to the port
    /// is refused, as when a web server has died, and the port stays ours: no other
    /// listener, and no outgoing connection of any process on this machine (the kernel skips
    /// bound ports when it picks a local port), can take it before the server starts again.
    reserved: Option<tokio::net::TcpSocket>,
}

impl HttpServer {
    /// Starts a server on a fresh loopback port that answers `body` to every request.
    pub fn start(body: String) -> Result<Self> {
        Self::start_with_health(body, None)
    }

    /// Starts a server on a fresh loopback port that answers `health_path` (if set) with
    /// `200` and [`HEALTH_BODY`], and `body` to every other request.
    pub fn start_with_health(body: String, health_path: Option<String>) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind HTTP server")?;
        let addr = listener.local_addr().context("HTTP server address")?;
        let mut server = HttpServer {
            addr,
            answers: Arc::new(Answers { body, health_path }),
            requests: Arc::default(),
            running: None,
            reserved: None,
        };
        server.run(listener)?;
        Ok(server)
    }

    /// Runs the accept loop on `listener`.
    fn run(&mut self, listener: TcpListener) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let answers = Arc::clone(&self.answers);
        let requests = Arc::clone(&self.requests);
        let thread = std::thread::Builder::new()
            .name(format!("http-{}", self.addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let at = SystemTime::now();
                    let answers = Arc::clone(&answers);
                    let requests = Arc::clone(&requests);
                    // One short-lived thread per connection, so a client that stalls (a
                    // rendezvous that never completes) does not block the next request.
                    let _ = std::thread::Builder::new()
                        .name("http-conn".into())
                        .spawn(move || {
                            let request = serve_one(conn, &answers);
                            requests
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(Request { at, request });
                        });
                }
                // The listener is dropped here: the port stops accepting connections.
            })
            .context("spawn HTTP server thread")?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }

    /// The port it listens on (on `127.0.0.1`), also while stopped.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether it is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops it, as a crashed web server: from now on connections to its port are refused.
    /// Connections already accepted are still answered. The port stays reserved for
    /// [`start_again`](Self::start_again). Stopping a stopped server does nothing.
    pub fn stop(&mut self) -> Result<()> {
        if !self.halt()? {
            return Ok(());
        }
        // The listener is closed now; hold the port without listening.
        let socket = tokio::net::TcpSocket::new_v4().context("create a socket to hold the port")?;
        socket
            .set_reuseaddr(true)
            .context("hold the HTTP server's port")?;
        socket
            .bind(self.addr)
            .with_context(|| format!("hold the HTTP server's port {}", self.addr.port()))?;
        self.reserved = Some(socket);
        Ok(())
    }

    /// Ends the accept loop, which closes the listener; whether it was running.
    fn halt(&mut self) -> Result<bool> {
        let Some(running) = self.running.take() else {
            return Ok(false);
        };
        running.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag (this connection is neither
        // answered nor recorded).
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        running
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the HTTP server thread panicked"))?;
        Ok(true)
    }

    /// Starts a stopped server again on the same port, with the same answers; its record of
    /// requests goes on. Starting a running server does nothing.
    pub fn start_again(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        drop(self.reserved.take());
        // The port was ours until the line above; a connection still closing on it (TIME_WAIT)
        // does not stop the bind (std sets SO_REUSEADDR). Retry briefly all the same, should
        // another test's port probe have bound it for an instant.
        let deadline = std::time::Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("bind the HTTP server again on {}", self.addr))
                }
            }
        };
        self.run(listener)
    }

    /// Every connection accepted since it first started (across restarts), in the order
    /// they were accepted, with the request each carried. A connection appears once its
    /// request was answered (or it closed without one).
    pub fn requests(&self) -> Vec<Request> {
        let mut all = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.sort_by_key(|r| r.at);
        all
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.is_running() {
            "running"
        } else {
            "stopped"
        };
        write!(f, "HttpServer({}, {state})", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Reads a request head and writes the response; returns the request's method and path, or
/// `None` if no request line came.
fn serve_one(mut conn: TcpStream, answers: &Answers) -> Option<(String, String)> {
    let _ = conn.set_read_timeout(Some(SERVER_READ_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(path)) = (words.next(), words.next()) else {
        return None;
    };
    let request = (method.to_owned(), path.to_owned());
    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
        // An incomplete request head: the client gave up.
        return Some(request);
    }
    let body = if answers.health_path.as_deref() == Some(path) {
        HEALTH_BODY
    } else {
        answers.body.as_str()
    };
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes());
    Some(request)
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
