//! `health-check:` (ours): how to probe a service's backends, and its per-instance
//! overrides.
//!
//! A service's mapping gives the defaults of its instances; an instance's mapping replaces
//! any of them for that instance alone (`enabled: false` turns its checks off, `port:` turns
//! them on for it when the service has none). Each key is checked where it is written, so a
//! problem names the service or the instance it belongs to.

use std::time::Duration;

use super::raw::{RawDuration, RawHealthCheck};

/// Shortest interval accepted: each probe is a stream through Tor to the backend.
const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest interval accepted: beyond it a dead backend stays listed for hours.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest timeout accepted: a first probe builds circuits, which takes seconds.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest `down-after`/`up-after` accepted.
const MAX_IN_A_ROW: u32 = 10;
/// Longest `http-path` accepted.
const MAX_PATH_LEN: usize = 1024;

/// How a backend is probed: a connection through Tor to the backend's own onion address at
/// `port`, or an HTTP `GET` of `http_path` there (a status below 400 passes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// The backends' onion-service port (`port:`).
    pub port: u16,
    /// The path of an HTTP `GET` (`http-path:`); `None`: a probe passes when the stream
    /// opens.
    pub http_path: Option<String>,
    /// Time between two probes of one backend (`interval:`).
    pub interval: Duration,
    /// Limit for one probe, circuits included (`timeout:`).
    pub timeout: Duration,
    /// Failed probes in a row that mark a backend down (`down-after:`).
    pub down_after: u32,
    /// Passed probes in a row that mark a down backend up again (`up-after:`).
    pub up_after: u32,
}

impl HealthCheckConfig {
    /// Default time between two probes of one backend.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    /// Default limit for one probe, circuits included (or the interval, if shorter).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
    /// Default number of failed probes in a row that mark a backend down.
    pub const DEFAULT_DOWN_AFTER: u32 = 2;
    /// Default number of passed probes in a row that mark a down backend up again.
    pub const DEFAULT_UP_AFTER: u32 = 1;
}

/// The keys of one `health-check:` mapping that are set and valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HealthCheckKeys {
    /// `port:`.
    port: Option<u16>,
    /// `http-path:`.
    http_path: Option<String>,
    /// `interval:`.
    interval: Option<Duration>,
    /// `timeout:`.
    timeout: Option<Duration>,
    /// `down-after:`.
    down_after: Option<u32>,
    /// `up-after:`.
    up_after: Option<u32>,
    /// `enabled:`.
    enabled: Option<bool>,
}

impl HealthCheckKeys {
    /// Checks each key of `raw`, calling `problem` for each bad one (which is then left
    /// unset).
    pub(super) fn read(raw: RawHealthCheck, mut problem: impl FnMut(String)) -> Self {
        let port = match raw.port {
            Some(0) => {
                problem("`port:` must be the backends' onion-service port, 1 to 65535".into());
                None
            }
            p => p,
        };
        let http_path = match raw.http_path {
            Some(p) if !is_valid_http_path(&p) => {
                problem(format!(
                    "`http-path:` must start with `/` and have no spaces or control characters, at most {MAX_PATH_LEN} bytes (e.g. `/healthz`)"
                ));
                None
            }
            p => p,
        };
        let mut duration = |key: &str, raw: Option<RawDuration>, min: Duration, max: Duration| {
            let raw = raw?;
            match humantime::parse_duration(&raw.0) {
                Ok(d) if (min..=max).contains(&d) => Some(d),
                Ok(_) => {
                    problem(format!(
                        "`{key}:` must be from {} to {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ));
                    None
                }
                Err(_) => {
                    problem(format!(
                        "`{key}:` must be a duration such as `30s` or `2m`, or a number of seconds"
                    ));
                    None
                }
            }
        };
        let interval = duration("interval", raw.interval, MIN_INTERVAL, MAX_INTERVAL);
        let timeout = duration("timeout", raw.timeout, MIN_TIMEOUT, MAX_INTERVAL);
        let mut in_a_row = |key: &str, n: Option<u32>| match n {
            Some(n) if !(1..=MAX_IN_A_ROW).contains(&n) => {
                problem(format!("`{key}:` must be from 1 to {MAX_IN_A_ROW}"));
                None
            }
            n => n,
        };
        let down_after = in_a_row("down-after", raw.down_after);
        let up_after = in_a_row("up-after", raw.up_after);
        HealthCheckKeys {
            port,
            http_path,
            interval,
            timeout,
            down_after,
            up_after,
            enabled: raw.enabled,
        }
    }

    /// These keys, with any that `over` sets replaced by its value.
    pub(super) fn overridden_by(&self, over: &HealthCheckKeys) -> HealthCheckKeys {
        HealthCheckKeys {
            port: over.port.or(self.port),
            http_path: over.http_path.clone().or_else(|| self.http_path.clone()),
            interval: over.interval.or(self.interval),
            timeout: over.timeout.or(self.timeout),
            down_after: over.down_after.or(self.down_after),
            up_after: over.up_after.or(self.up_after),
            enabled: over.enabled.or(self.enabled),
        }
    }

    /// The check these keys describe, with defaults for what is not set: `Ok(None)` when
    /// checks are off (no `port:`, or `enabled: false`), `Err` when they cannot be used.
    pub(super) fn resolve(&self) -> Result<Option<HealthCheckConfig>, String> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let Some(port) = self.port else {
            return if *self == HealthCheckKeys::default() {
                Ok(None)
            } else {
                Err("health checks need `port:`, the backends' onion-service port to probe (e.g. `port: 80`)".into())
            };
        };
        let interval = self.interval.unwrap_or(HealthCheckConfig::DEFAULT_INTERVAL);
        let timeout = self
            .timeout
            .unwrap_or(HealthCheckConfig::DEFAULT_TIMEOUT.min(interval));
        if timeout > interval {
            return Err(format!(
                "`timeout:` ({}) is longer than `interval:` ({}): a probe must end before the next one",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ));
        }
        Ok(Some(HealthCheckConfig {
            port,
            http_path: self.http_path.clone(),
            interval,
            timeout,
            down_after: self
                .down_after
                .unwrap_or(HealthCheckConfig::DEFAULT_DOWN_AFTER),
            up_after: self.up_after.unwrap_or(HealthCheckConfig::DEFAULT_UP_AFTER),
        }))
    }
}

/// True when `path` is a usable `http-path:`: it starts with `/`, has no spaces or control
/// characters (it goes into an HTTP request line as is) and is at most 1024 bytes.
pub fn is_valid_http_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_PATH_LEN
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}
