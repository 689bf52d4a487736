//! Prometheus metrics: a text rendering of the status, and a minimal HTTP endpoint.
//!
//! Off by default; `onionbalance run --metrics-listen 127.0.0.1:9035` turns it on. Every
//! metric carries the frontend's onion address as `service`, and some the backends' names:
//! anyone who can connect learns the address, which for an unlisted or restricted service is
//! the secret that keeps it private. Bind it to loopback (the daemon warns otherwise).
//!
//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ...) follow ours, unprefixed as every Prometheus client library writes them.
//!
//! The endpoint answers `GET /metrics` (404 for other paths, 405 for other methods) and
//! nothing else, and cannot be made to hold resources: at most [`MAX_CONNECTIONS`] are
//! served at once (more are closed at once), each within [`CONNECTION_DEADLINE`], and a
//! failing `accept` (out of file descriptors, say) is logged and retried, never fatal.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::status::{BackendHealth, ServiceStatus};
use crate::status_socket::StatusSource;

/// Renders the metrics for `services` at time `now`; `bootstrapped` is the Tor client's state.
pub fn render(services: &[ServiceStatus], bootstrapped: bool, now: SystemTime) -> String {
    let mut out = String::new();
    let metric = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(
            out,
            "# HELP onionbalance_{name} {help}\n# TYPE onionbalance_{name} {kind}"
        );
    };
    metric(
        &mut out,
        "bootstrapped",
        "gauge",
        "1 when the embedded Tor client is bootstrapped",
    );
    let _ = writeln!(out, "onionbalance_bootstrapped {}", u8::from(bootstrapped));
    let mut lines: Vec<(String, String)> = Vec::new();
    // Histogram lines, whole (their names have suffixes).
    let mut histograms: Vec<(String, String)> = Vec::new();
    let mut push = |name: &str, labels: String, value: String| {
        lines.push((
            name.to_owned(),
            format!("onionbalance_{name}{{{labels}}} {value}"),
        ))
    };
    for s in services {
        let svc = format!("service=\"{}\"", s.onion_address);
        let healthy = s
            .instances
            .iter()
            .filter(|i| i.descriptor_received.is_some())
            .count();
        push(
            "backends_configured",
            svc.clone(),
            s.instances.len().to_string(),
        );
        push("backends_healthy", svc.clone(), healthy.to_string());
        if let Some(n) = s.authorized_clients {
            push("authorized_clients", svc.clone(), n.to_string());
        }
        for p in &s.periods {
            let l = format!("{svc},time_period=\"{}\"", p.time_period);
            push(
                "intro_points_published",
                l.clone(),
                p.intro_points.to_string(),
            );
            push("hsdirs_accepted", l.clone(), p.hsdirs_accepted.to_string());
            push("hsdirs_failed", l.clone(), p.hsdirs_failed.to_string());
            push(
                "hsdir_refusals_in_a_row",
                l.clone(),
                p.refusals_in_a_row.to_string(),
            );
            push(
                "descriptor_variants",
                l.clone(),
                p.variants.len().to_string(),
            );
            for share in &p.shares {
                push(
                    "backend_share",
                    format!("{l},backend=\"{}\"", share.name),
                    format!("{:.4}", share.share),
                );
            }
            push("backends_left_out", l.clone(), p.left_out.len().to_string());
            if let Some(built) = p.built_at {
                let age = now.duration_since(built).unwrap_or_default().as_secs();
                push("descriptor_age_seconds", l, age.to_string());
            }
        }
        push("fail_open", svc.clone(), u8::from(s.fail_open).to_string());
        for i in &s.instances {
            let b = format!("{svc},backend=\"{}\"", i.name);
            push("backend_listed", b.clone(), u8::from(i.listed).to_string());
            push(
                "backend_draining",
                b.clone(),
                u8::from(i.health == BackendHealth::Draining).to_string(),
            );
            match i.health {
                BackendHealth::Up => push("backend_up", b.clone(), "1".into()),
                BackendHealth::Down | BackendHealth::Draining => {
                    push("backend_up", b.clone(), "0".into());
                }
                BackendHealth::Unchecked | BackendHealth::Unknown => {}
            }
            for (result, n) in &i.probes {
                push(
                    "probes_total",
                    format!("{b},result=\"{result}\""),
                    n.to_string(),
                );
            }
            if !i.probes.is_empty() {
                let mut cumulative = 0;
                for (le, n) in &i.probe_latency.buckets {
                    cumulative += n;
                    let le = if le.is_finite() {
                        le.to_string()
                    } else {
                        "+Inf".to_owned()
                    };
                    histograms.push((
                        "probe_duration_seconds".into(),
                        format!("onionbalance_probe_duration_seconds_bucket{{{b},le=\"{le}\"}} {cumulative}"),
                    ));
                }
                histograms.push((
                    "probe_duration_seconds".into(),
                    format!(
                        "onionbalance_probe_duration_seconds_sum{{{b}}} {}\nonionbalance_probe_duration_seconds_count{{{b}}} {cumulative}",
                        i.probe_latency.sum_seconds
                    ),
                ));
            }
        }
        let c = &s.counters;
        push(
            "fetches_total",
            format!("{svc},result=\"ok\""),
            c.fetches_ok.to_string(),
        );
        for (reason, n) in &c.fetch_failures {
            push(
                "fetches_total",
                format!("{svc},result=\"{reason}\""),
                n.to_string(),
            );
        }
        for (reason, n) in &c.intake_rejections {
            push(
                "intake_rejections_total",
                format!("{svc},reason=\"{reason}\""),
                n.to_string(),
            );
        }
        push(
            "backend_changes_total",
            svc.clone(),
            c.backend_changes.to_string(),
        );
        push("builds_total", svc.clone(), c.builds.to_string());
        push("outranked_total", svc.clone(), c.outranked.to_string());
        push("equivalent_total", svc.clone(), c.equivalent.to_string());
        push(
            "other_publisher_seen_total",
            svc.clone(),
            c.other_publisher_seen.to_string(),
        );
        if let Some(o) = &s.other_publisher {
            let seen = o
                .last_seen
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            push(
                "other_publisher_last_seen_timestamp_seconds",
                svc.clone(),
                seen.to_string(),
            );
            push(
                "other_publisher_ahead",
                svc.clone(),
                u8::from(o.ahead == crate::status::Ahead::OtherPublisher).to_string(),
            );
        }
        push(
            "uploads_total",
            format!("{svc},result=\"ok\""),
            c.uploads_ok.to_string(),
        );
        for (reason, n) in &c.upload_failures {
            push(
                "uploads_total",
                format!("{svc},result=\"{reason}\""),
                n.to_string(),
            );
        }
    }
    lines.extend(histograms);
    let described = [
        (
            "backends_configured",
            "gauge",
            "backend instances in the config",
        ),
        (
            "backends_healthy",
            "gauge",
            "backends with a valid descriptor",
        ),
        (
            "authorized_clients",
            "gauge",
            "clients allowed to discover the frontend (only for a service with restricted discovery)",
        ),
        (
            "intro_points_published",
            "gauge",
            "intro points in the current descriptor",
        ),
        (
            "descriptor_variants",
            "gauge",
            "descriptors published for this period: 1, or one per fetch HSDir when one cannot list every backend",
        ),
        (
            "backend_share",
            "gauge",
            "a backend's expected share of new clients (0 to 1)",
        ),
        (
            "backends_left_out",
            "gauge",
            "backends in no descriptor of this period",
        ),
        (
            "hsdirs_accepted",
            "gauge",
            "HSDirs holding the current descriptor",
        ),
        (
            "hsdirs_failed",
            "gauge",
            "HSDirs whose last upload failed (being retried)",
        ),
        (
            "descriptor_age_seconds",
            "gauge",
            "age of the current descriptor",
        ),
        (
            "fetches_total",
            "counter",
            "backend descriptor fetches by result",
        ),
        (
            "intake_rejections_total",
            "counter",
            "fetched backend descriptors rejected, by reason",
        ),
        (
            "hsdir_refusals_in_a_row",
            "gauge",
            "HTTP 400 answers in a row for this period; 5 or more: check the clock and that no other frontend publishes with this key",
        ),
        (
            "backend_changes_total",
            "counter",
            "backend descriptors that brought other intro points",
        ),
        ("builds_total", "counter", "descriptors built"),
        (
            "outranked_total",
            "counter",
            "descriptors of this address from another publisher (C tor or Python Onionbalance before a move, another frontend with this key) found at or above our revision and listing something else",
        ),
        (
            "equivalent_total",
            "counter",
            "descriptors of this address from another publisher (another frontend with this key) found at or above our revision and listing the same: counted as published",
        ),
        (
            "other_publisher_seen_total",
            "counter",
            "looks at an HSDir that found a descriptor of this address that this process did not upload",
        ),
        (
            "other_publisher_last_seen_timestamp_seconds",
            "gauge",
            "when a descriptor of this address from another publisher was last seen on an HSDir (absent: never since start)",
        ),
        (
            "other_publisher_ahead",
            "gauge",
            "1 when the other publisher's revision counter was above ours when last seen and we have not published above it since",
        ),
        (
            "fail_open",
            "gauge",
            "1 when every backend is down or drained and all are kept in the descriptors (failing open)",
        ),
        (
            "backend_listed",
            "gauge",
            "1 when the backend's intro points are in what is built now",
        ),
        (
            "backend_draining",
            "gauge",
            "1 when the operator drained the backend (drain: true)",
        ),
        (
            "backend_up",
            "gauge",
            "health-checked backends: 1 when probes pass, 0 when down or drained (absent before the first verdict)",
        ),
        (
            "probes_total",
            "counter",
            "health probes by result: ok, timeout, unreachable, refused, http-status, http-invalid, io",
        ),
        (
            "probe_duration_seconds",
            "histogram",
            "time taken by health probes that passed",
        ),
        ("uploads_total", "counter", "descriptor uploads by result"),
    ];
    for (name, kind, help) in described {
        let mine: Vec<&String> = lines
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, l)| l)
            .collect();
        if mine.is_empty() {
            continue;
        }
        metric(&mut out, name, kind, help);
        for l in mine {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// Binds the metrics endpoint (so that a bad address fails at start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Connections served at the same time; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 32;

/// How long one connection may take, from accept to the end of the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// Largest request head read (the request line and headers of a scraper fit in 1 KiB).
const MAX_REQUEST_HEAD: usize = 4096;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) enum Request {
    /// `GET /metrics` (a query string is allowed).
    Metrics,
    /// A `GET` of another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request line.
    Bad,
}

/// Reads the request line at the start of `head` (bytes received so far).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) fn parse_request(head: &[u8]) -> Request {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, source: StatusSource, bootstrapped: Arc<AtomicBool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if let Some(since) = failing_since.take() {
                    info!(
                        "metrics endpoint accepts connections again (after {:.1} s of errors)",
                        since.elapsed().as_secs_f64()
                    );
                }
                stream
            }
            Err(e) => {
                // Out of file descriptors or memory, say: the condition may pass, so wait a
                // little and go on (logging once per episode, not once per attempt).
                if failing_since.is_none() {
                    warn!("metrics endpoint cannot accept connections: {e}; retrying");
                    failing_since = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(
                "metrics endpoint: {MAX_CONNECTIONS} connections open already; closing a new one"
            );
            drop(stream);
            continue;
        };
        let (source, bootstrapped) = (source.clone(), bootstrapped.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let answered =
                tokio::time::timeout(CONNECTION_DEADLINE, answer(stream, &source, &bootstrapped))
                    .await;
            match answered {
                Ok(Err(e)) => debug!("metrics client went away: {e}"),
                Err(_) => debug!("metrics client too slow: closed after {CONNECTION_DEADLINE:?}"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Reads one request from `stream` and answers it.
async fn answer(
    mut stream: TcpStream,
    source: &StatusSource,
    bootstrapped: &AtomicBool,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() >= MAX_REQUEST_HEAD {
            break;
        }
    }
    let (status, body) = match parse_request(&head) {
        Request::Metrics => {
            let mut body = render(
                &source.borrow(),
                bootstrapped.load(Ordering::Relaxed),
                SystemTime::now(),
            );
            if let Some(stats) = crate::process_metrics::read() {
                crate::process_metrics::render(&stats, &mut body);
            }
            ("200 OK", body)
        }
        Request::NotFound => ("404 Not Found", "only /metrics is served here\n".to_owned()),
        Request::MethodNotAllowed => ("405 Method Not Allowed", "use GET\n".to_owned()),
        Request::Bad => ("400 Bad Request", "not an HTTP request\n".to_owned()),
    };
    let resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackendShare, Counters, InstanceStatus, PeriodStatus, VariantStatus};

    #[test]
    fn renders_prometheus_text() {
        let now = SystemTime::now();
        let counters = Counters {
            fetches_ok: 7,
            upload_failures: [(crate::error::ErrorKind::Timeout, 2)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let s = ServiceStatus {
            onion_address: "f.onion".into(),
            periods: vec![PeriodStatus {
                time_period: 42,
                intro_points: 6,
                hsdirs: 8,
                hsdirs_accepted: 8,
                refusals_in_a_row: 5,
                built_at: Some(now - std::time::Duration::from_secs(90)),
                variants: vec![VariantStatus::default(); 6],
                shares: vec![BackendShare {
                    name: "b1".into(),
                    share: 0.125,
                }],
                left_out: vec!["b9".into()],
                ..Default::default()
            }],
            instances: vec![
                InstanceStatus {
                    descriptor_received: Some(now),
                    ..Default::default()
                },
                InstanceStatus::default(),
            ],
            counters,
            authorized_clients: Some(3),
            ..Default::default()
        };
        let open = ServiceStatus {
            onion_address: "open.onion".into(),
            ..Default::default()
        };
        let text = render(&[s, open], true, now);
        assert!(
            !text.contains("onionbalance_authorized_clients{service=\"open.onion\"}"),
            "a service without restricted discovery has no client count:\n{text}"
        );
        for needle in [
            "onionbalance_bootstrapped 1",
            "onionbalance_backends_configured{service=\"f.onion\"} 2",
            "onionbalance_backends_healthy{service=\"f.onion\"} 1",
            "onionbalance_intro_points_published{service=\"f.onion\",time_period=\"42\"} 6",
            "onionbalance_descriptor_age_seconds{service=\"f.onion\",time_period=\"42\"} 90",
            "onionbalance_fetches_total{service=\"f.onion\",result=\"ok\"} 7",
            "onionbalance_uploads_total{service=\"f.onion\",result=\"timeout\"} 2",
            "# TYPE onionbalance_uploads_total counter",
            "onionbalance_hsdir_refusals_in_a_row{service=\"f.onion\",time_period=\"42\"} 5",
            "onionbalance_descriptor_variants{service=\"f.onion\",time_period=\"42\"} 6",
            "onionbalance_backend_share{service=\"f.onion\",time_period=\"42\",backend=\"b1\"} 0.1250",
            "onionbalance_backends_left_out{service=\"f.onion\",time_period=\"42\"} 1",
            "onionbalance_authorized_clients{service=\"f.onion\"} 3",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    /// Health metrics: up/listed/draining per backend, probes by result, and a latency
    /// histogram whose buckets are cumulative and end with `+Inf` = `_count`.
    #[test]
    fn renders_health_metrics() {
        use crate::status::{BackendHealth, LatencyHistogram};
        let latency = LatencyHistogram {
            buckets: crate::health::LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip([0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 1])
                .collect(),
            sum_seconds: 42.5,
        };
        let s = ServiceStatus {
            onion_address: "f.onion".into(),
            fail_open: true,
            instances: vec![
                InstanceStatus {
                    name: "web1".into(),
                    health: BackendHealth::Up,
                    listed: true,
                    probes: [("ok".to_owned(), 5), ("timeout".to_owned(), 2)]
                        .into_iter()
                        .collect(),
                    probe_latency: latency,
                    ..Default::default()
                },
                InstanceStatus {
                    name: "web2".into(),
                    health: BackendHealth::Draining,
                    ..Default::default()
                },
                InstanceStatus {
                    name: "web3".into(),
                    health: BackendHealth::Unchecked,
                    listed: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render(&[s], true, SystemTime::now());
        for needle in [
            "onionbalance_fail_open{service=\"f.onion\"} 1",
            "onionbalance_backend_up{service=\"f.onion\",backend=\"web1\"} 1",
            "onionbalance_backend_up{service=\"f.onion\",backend=\"web2\"} 0",
            "onionbalance_backend_draining{service=\"f.onion\",backend=\"web2\"} 1",
            "onionbalance_backend_listed{service=\"f.onion\",backend=\"web2\"} 0",
            "onionbalance_backend_listed{service=\"f.onion\",backend=\"web3\"} 1",
            "onionbalance_probes_total{service=\"f.onion\",backend=\"web1\",result=\"timeout\"} 2",
            "# TYPE onionbalance_probe_duration_seconds histogram",
            "onionbalance_probe_duration_seconds_bucket{service=\"f.onion\",backend=\"web1\",le=\"0.25\"} 0",
            "onionbalance_probe_duration_seconds_bucket{service=\"f.onion\",backend=\"web1\",le=\"0.5\"} 3",
            "onionbalance_probe_duration_seconds_bucket{service=\"f.onion\",backend=\"web1\",le=\"1\"} 4",
            "onionbalance_probe_duration_seconds_bucket{service=\"f.onion\",backend=\"web1\",le=\"+Inf\"} 5",
            "onionbalance_probe_duration_seconds_sum{service=\"f.onion\",backend=\"web1\"} 42.5",
            "onionbalance_probe_duration_seconds_count{service=\"f.onion\",backend=\"web1\"} 5",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("backend_up{service=\"f.onion\",backend=\"web3\"}"),
            "an unchecked backend has no up/down:\n{text}"
        );
    }

    #[test]
    fn only_get_metrics_is_served() {
        for (head, want) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Request::Metrics,
            ),
            (b"GET /metrics?x=1 HTTP/1.0\r\n", Request::Metrics),
            (b"GET / HTTP/1.1\r\n", Request::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n", Request::NotFound),
            (b"HEAD /metrics HTTP/1.1\r\n", Request::MethodNotAllowed),
            (b"POST /metrics HTTP/1.1\r\n", Request::MethodNotAllowed),
            (b"GET /metrics\r\n", Request::Bad),
            (b"GET metrics HTTP/1.1\r\n", Request::Bad),
            (b"GET /metrics HTTP/2 extra\r\n", Request::Bad),
            (b"\x16\x03\x01\x02", Request::Bad),
            (b"", Request::Bad),
            (b"\xff\xfe /metrics HTTP/1.1", Request::Bad),
        ] {
            assert_eq!(
                parse_request(head),
                want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
