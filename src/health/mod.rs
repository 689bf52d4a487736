//! Health checks: whether each backend can serve, found by probing it through Tor.
//!
//! A backend's descriptor on the HSDirs says that its tor was running when it uploaded, not
//! that its application answers now: a crashed web server behind a running tor keeps its
//! intro points listed, and each client sent there gets a connection error. With
//! `health-check:` configured, the service runner probes each backend on an interval
//! (`probe`), turns the results into a verdict with thresholds and a hold-down against
//! flapping (`state`), and leaves a backend that is down, or drained by the operator, out
//! of every descriptor it builds. When every backend would be left out, all stay listed
//! ("fail open"): a descriptor whose backends may be failing serves more clients than no
//! descriptor at all.
//!
//! A probe sees what one client would see at that moment; it cannot see a backend that
//! answers probes but fails real requests, nor a failure between two probes.

pub(crate) mod probe;
pub(crate) mod state;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

pub(crate) use probe::ArtiProber;
pub use probe::ProbeError;
#[cfg(feature = "testing")]
pub use probe::Prober;
#[cfg(not(feature = "testing"))]
pub(crate) use probe::Prober;
pub use state::{HOLD_DOWN, TRANSITION_INTERVAL};

/// An application's own verdict on one of its backends, given to
/// [`BalancerHandle::set_health_signal`](crate::BalancerHandle::set_health_signal):
/// combined with the probes (a backend is listed only when neither says it is down), and
/// applied at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthSignal {
    /// The backend can serve (as far as the application knows).
    Up,
    /// The backend cannot serve, or should not get new clients (draining, say).
    Down {
        /// Why, for logs, status and events.
        reason: String,
    },
}

/// Upper bounds (seconds) of the probe-latency histogram's buckets, as in Prometheus'
/// defaults stretched to Tor's scale: a first probe builds circuits (seconds), a probe on an
/// open circuit takes a round trip through six relays (hundreds of milliseconds).
pub const LATENCY_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0];

/// What the probes of one backend found so far, for status and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeLog {
    /// The last probe, if any: when it ended, and its result.
    pub(crate) last: Option<(SystemTime, Result<Duration, ProbeError>)>,
    /// Probes by result (`ok` or a [`ProbeError::kind_label`]).
    pub(crate) results: BTreeMap<&'static str, u64>,
    /// Passed probes per latency bucket ([`LATENCY_BUCKETS`], then one for the rest).
    pub(crate) latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies of passed probes.
    pub(crate) latency_sum: Duration,
}

impl ProbeLog {
    /// Records a probe that ended at `at`.
    pub(crate) fn record(&mut self, at: SystemTime, result: Result<Duration, ProbeError>) {
        let label = match &result {
            Ok(latency) => {
                let secs = latency.as_secs_f64();
                let bucket = LATENCY_BUCKETS
                    .iter()
                    .position(|&le| secs <= le)
                    .unwrap_or(LATENCY_BUCKETS.len());
                self.latency_buckets[bucket] += 1;
                self.latency_sum += *latency;
                "ok"
            }
            Err(e) => e.kind_label(),
        };
        *self.results.entry(label).or_default() += 1;
        self.last = Some((at, result));
    }
}

/// Everything about one backend's health: probes, the operator's drain, an embedder's signal.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    /// The probes' state machine.
    pub(crate) probes: state::Health,
    /// What the probes found, for status and metrics.
    pub(crate) log: ProbeLog,
    /// Drained by the operator (`drain: true`).
    pub(crate) drain: bool,
    /// The embedding application's verdict, if it gave one.
    pub(crate) signal: Option<HealthSignal>,
}

impl Monitor {
    /// A backend probed as `check` says (`None`: not probed), drained or not.
    pub(crate) fn new(check: Option<crate::config::HealthCheckConfig>, drain: bool) -> Self {
        Monitor {
            probes: state::Health::new(check),
            log: ProbeLog::default(),
            drain,
            signal: None,
        }
    }

    /// Whether health lets the backend be listed (fail-open aside): not drained, not down
    /// by the probes (after their hold-down), not down by the application's signal.
    pub(crate) fn wants_listing(&self) -> bool {
        !self.drain
            && self.probes.listed()
            && !matches!(self.signal, Some(HealthSignal::Down { .. }))
    }
}
