//! The metrics endpoint under hostile local clients: thousands of idle connections, running
//! out of file descriptors, and requests that are not `GET /metrics`. (Its own test binary:
//! it lowers the process's file-descriptor limit, which would disturb other tests.)
//!
//! Before these defences each idle connection held a task and a descriptor for 5 s without
//! limit, and the first failing `accept` (EMFILE) ended the endpoint for good.

#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onionbalance::metrics::{self, MAX_CONNECTIONS};
use onionbalance::status::ServiceStatus;
use onionbalance::status_socket::StatusSource;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Idle connections the attacker opens.
const IDLE: usize = 2000;

/// One HTTP request; the status line and body of the answer, or the I/O error.
async fn request(port: u16, head: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(head.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// A scrape as Prometheus makes it, retried as its next scrape would be (every second here,
/// every 15 s in practice) while the endpoint is busy: the answer and how long it took.
async fn scrape(port: u16, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        if let Ok(answer) = request(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await {
            if answer.starts_with("HTTP/1.0 200") {
                return (answer, started.elapsed());
            }
        }
        assert!(
            started.elapsed() < within,
            "no scrape answered within {within:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Resident memory of this process in kB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_survives_idle_floods_and_running_out_of_descriptors() {
    // Room for the idle connections (both ends live in this process).
    let (soft, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    let wanted = (2 * IDLE as u64 + 500).min(hard);
    assert!(
        wanted >= 2 * IDLE as u64 + 200,
        "this test needs {} file descriptors; the hard limit is {hard}",
        2 * IDLE + 200
    );
    rlimit::Resource::NOFILE
        .set(wanted.max(soft), hard)
        .expect("setrlimit");

    let listener = metrics::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (_status, source): (_, StatusSource) = tokio::sync::watch::channel(vec![ServiceStatus {
        onion_address: "f.onion".into(),
        ..Default::default()
    }]);
    let server = tokio::spawn(metrics::serve(
        listener,
        source,
        Arc::new(AtomicBool::new(true)),
    ));

    // Only GET /metrics is answered.
    let ok = request(port, "GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("get");
    assert!(
        ok.starts_with("HTTP/1.0 200") && ok.contains("onionbalance_bootstrapped 1"),
        "{ok}"
    );
    let nf = request(port, "GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("get /");
    assert!(
        nf.starts_with("HTTP/1.0 404") && !nf.contains("f.onion"),
        "{nf}"
    );
    let na = request(port, "POST /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("post");
    assert!(na.starts_with("HTTP/1.0 405"), "{na}");
    let bad = request(port, "\x16\x03\x01 garbage\r\n\r\n")
        .await
        .expect("tls");
    assert!(bad.starts_with("HTTP/1.0 400"), "{bad}");

    // 2,000 connections that never send a byte.
    let fds_before = open_fds();
    let rss_before = rss_kb();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_side = open_fds().saturating_sub(fds_before + IDLE);
    eprintln!(
        "{IDLE} idle connections: the server holds {server_side} of them, RSS grew {} kB",
        rss_kb().saturating_sub(rss_before)
    );
    assert!(
        server_side <= MAX_CONNECTIONS + 8,
        "the server holds {server_side} descriptors for idle clients (cap {MAX_CONNECTIONS})"
    );
    // A scraper still gets its answer: at worst once the slots' deadline has passed.
    let (answer, took) = scrape(port, metrics::CONNECTION_DEADLINE * 3).await;
    eprintln!("scrape answered {:.1} s into the flood", took.as_secs_f64());
    // The process's own metrics come with ours, and see the flood's descriptors.
    let reported_fds: usize = answer
        .lines()
        .find_map(|l| l.strip_prefix("process_open_fds "))
        .and_then(|v| v.parse().ok())
        .expect("process_open_fds in the scrape");
    assert!(
        reported_fds >= IDLE,
        "{reported_fds} descriptors while {IDLE} idle connections are open"
    );
    assert!(answer.contains("\nprocess_resident_memory_bytes "));
    assert!(
        rss_kb().saturating_sub(rss_before) < 50_000,
        "memory grew by more than 50 MB"
    );
    drop(idle);

    // Out of file descriptors: sockets are made first, then the limit is lowered to what
    // is open, then they connect. The kernel queues the connections, and the server's
    // `accept` fails with EMFILE for each, for as long as the limit stays.
    tokio::time::sleep(metrics::CONNECTION_DEADLINE).await;
    let sockets: Vec<tokio::net::TcpSocket> = (0..20)
        .map(|_| tokio::net::TcpSocket::new_v4().expect("socket"))
        .collect();
    let used = open_fds() as u64;
    rlimit::Resource::NOFILE
        .set(used, hard)
        .expect("lower the limit");
    let mut hogs = Vec::new();
    for s in sockets {
        hogs.push(
            s.connect(([127, 0, 0, 1], port).into())
                .await
                .expect("connect"),
        );
    }
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "the process should be out of descriptors"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !server.is_finished(),
        "the endpoint stopped while out of descriptors"
    );
    drop(hogs);
    rlimit::Resource::NOFILE
        .set(wanted.max(soft), hard)
        .expect("restore the limit");
    let (_, took) = scrape(port, Duration::from_secs(15)).await;
    eprintln!(
        "after running out of descriptors: answered within {:.1} s",
        took.as_secs_f64()
    );
    assert!(!server.is_finished());
    server.abort();
}
