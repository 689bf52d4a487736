//! One backend's health: probe results in, a verdict and a listing decision out.
//!
//! ```text
//!            pass ×up-after                         fail ×down-after
//!   Unknown ───────────────▶ Up ◀──────────────────────────────▶ Down
//!      └──────────────────────────────── fail ×down-after ────────▲
//!                              pass ×up-after (from Down)
//! ```
//!
//! The verdict says what the probes found; whether the backend is *listed* (its intro points
//! in what we publish) follows the verdict with a hold-down: one backend's listing changes at
//! most once per [`HOLD_DOWN`], so that a flapping backend cannot make the frontend rebuild
//! and re-upload more than once per period every five minutes. The first change after a
//! quiet [`HOLD_DOWN`] is applied at once. Until the first verdict a backend is listed: a
//! frontend that starts must not wait for probes before it publishes.
//!
//! Drain and an embedder's signal are deliberate acts, not measurements: they apply at once
//! and are combined by the caller ([`Health::listed`]).

use std::time::{Duration, Instant};

use crate::config::HealthCheckConfig;

/// Least time between two changes of one backend's listing caused by probes.
pub const HOLD_DOWN: Duration = Duration::from_secs(5 * 60);
/// Longest interval between probes while a verdict may be about to change (some probes
/// failed while up, or passed while down): the verdict is confirmed or dropped quickly
/// rather than one whole interval per probe.
pub const TRANSITION_INTERVAL: Duration = Duration::from_secs(10);

/// What the probes say about a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not enough probes yet.
    Unknown,
    /// Serving.
    Up,
    /// Not serving, and why (the last failure).
    Down(String),
}

/// A change of verdict, to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The backend went down, with the reason.
    Down(String),
    /// The backend is up (again, or for the first time after being unknown: not reported
    /// as news by callers unless it was down).
    Up {
        /// Whether it was down before (not just unknown).
        was_down: bool,
    },
}

/// One probe's result as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeResult {
    /// The probe passed.
    Passed,
    /// The probe failed, with a message for logs and status.
    Failed(String),
}

/// A backend's probe state.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    /// How it is probed; `None`: not probed (always listed as far as health goes).
    check: Option<HealthCheckConfig>,
    /// What the probes say.
    verdict: Verdict,
    /// Failed probes in a row.
    failures: u32,
    /// Passed probes in a row.
    passes: u32,
    /// Whether the probes' verdict currently lets it be listed (after the hold-down).
    listed: bool,
    /// When probes last changed `listed`.
    listing_changed: Option<Instant>,
    /// When the last probe started, if any.
    last_probe_started: Option<Instant>,
    /// Whether a probe is in flight.
    probing: bool,
}

impl Health {
    /// A backend probed with `check` (or not, with `None`), with no result yet.
    pub(crate) fn new(check: Option<HealthCheckConfig>) -> Self {
        Health {
            check,
            verdict: Verdict::Unknown,
            failures: 0,
            passes: 0,
            listed: true,
            listing_changed: None,
            last_probe_started: None,
            probing: false,
        }
    }

    /// How it is probed, if it is.
    pub(crate) fn check(&self) -> Option<&HealthCheckConfig> {
        self.check.as_ref()
    }

    /// Takes new check settings (a reload), keeping the verdict and counts when checks stay
    /// on; turning checks off forgets them (and lists the backend as far as health goes).
    pub(crate) fn set_check(&mut self, check: Option<HealthCheckConfig>) {
        if check.is_none() {
            *self = Health::new(None);
        } else {
            self.check = check;
        }
    }

    /// The verdict.
    pub(crate) fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Whether the probes let this backend be listed now (after the hold-down).
    pub(crate) fn listed(&self) -> bool {
        self.listed
    }

    /// When the next probe is due (`None`: not probed, or one is in flight).
    pub(crate) fn next_probe(&self, now: Instant) -> Option<Instant> {
        let check = self.check.as_ref()?;
        if self.probing {
            return None;
        }
        let Some(last) = self.last_probe_started else {
            return Some(now);
        };
        let in_transition = match self.verdict {
            Verdict::Up | Verdict::Unknown => self.failures > 0,
            Verdict::Down(_) => self.passes > 0,
        };
        let interval = if in_transition {
            check.interval.min(TRANSITION_INTERVAL)
        } else {
            check.interval
        };
        Some(last + interval)
    }

    /// A probe starts now.
    pub(crate) fn probe_started(&mut self, now: Instant) {
        self.probing = true;
        self.last_probe_started = Some(now);
    }

    /// Takes a probe's result; returns the verdict's change, if any.
    pub(crate) fn probe_finished(&mut self, result: ProbeResult) -> Option<Transition> {
        self.probing = false;
        let check = self.check.as_ref()?;
        match result {
            ProbeResult::Passed => {
                self.failures = 0;
                self.passes = self.passes.saturating_add(1);
                let was_down = matches!(self.verdict, Verdict::Down(_));
                let needed = if was_down { check.up_after } else { 1 };
                if self.verdict != Verdict::Up && self.passes >= needed {
                    self.verdict = Verdict::Up;
                    return Some(Transition::Up { was_down });
                }
            }
            ProbeResult::Failed(why) => {
                self.passes = 0;
                self.failures = self.failures.saturating_add(1);
                match &mut self.verdict {
                    Verdict::Down(reason) => *reason = why,
                    _ if self.failures >= check.down_after => {
                        let reason = format!(
                            "{} probe(s) in a row failed, the last: {why}",
                            self.failures
                        );
                        self.verdict = Verdict::Down(reason.clone());
                        return Some(Transition::Down(reason));
                    }
                    _ => {}
                }
            }
        }
        None
    }

    /// Whether the verdict wants a listing other than the current one.
    fn wants_change(&self) -> bool {
        let wanted = !matches!(self.verdict, Verdict::Down(_));
        wanted != self.listed
    }

    /// When a listing change the verdict wants may be applied (`None`: none wanted).
    pub(crate) fn listing_change_due(&self) -> Option<Instant> {
        if !self.wants_change() {
            return None;
        }
        match self.listing_changed {
            Some(t) => Some(t + HOLD_DOWN),
            // The first change: at once (a verdict comes from a probe, so there was one).
            None => self.last_probe_started,
        }
    }

    /// Applies a wanted listing change if the hold-down allows it at `now`; returns the new
    /// listing when it changed.
    pub(crate) fn settle(&mut self, now: Instant) -> Option<bool> {
        let due = self.listing_change_due()?;
        if due > now {
            return None;
        }
        self.listed = !self.listed;
        self.listing_changed = Some(now);
        Some(self.listed)
    }
}
