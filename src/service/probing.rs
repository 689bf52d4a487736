//! The runner's side of health checks: launching probes, taking their results, and
//! deciding which backends may be listed.
//!
//! The verdicts themselves are [`crate::health::state`]'s; this module turns them into
//! actions: a probe future owned by the loop, a log line and an event per change, and a
//! rebuild of every period at once when the listable set changes
//! ([`PublishState::listing_changed`](super::publish::PublishState::listing_changed)).

use std::time::{Duration, Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_rtcompat::{Runtime, SleepProviderExt as _};
use tracing::{debug, error, info, warn};

use super::{free_slots, Done, InFlight, ServiceRunner};
use crate::config::InstanceConfig;
use crate::descriptor::BackendSnapshot;
use crate::events::Event;
use crate::health::state::{ProbeResult, Transition, Verdict};
use crate::health::{HealthSignal, Monitor, ProbeError};
use crate::net::DirTransport;
use crate::onion::OnionAddress;

use super::backend::Backend;

/// The backends a build of one period lists, and whether it fails open.
pub(super) struct Selection<'a> {
    /// Each listed backend with the snapshot to use.
    pub(super) chosen: Vec<(&'a Backend, &'a BackendSnapshot)>,
    /// True when every backend with a snapshot was down or drained, so all are listed.
    pub(super) fail_open: bool,
}

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// What a build for `tp` would list now: each backend with a usable snapshot (its own for
    /// `tp`, else its nearest) whose health lets it be listed; if that leaves none, every
    /// backend with a snapshot that is not drained, or failing that every one (fail open:
    /// a descriptor whose backends may fail serves more clients than none).
    pub(super) fn selection(&self, tp: TimePeriod, wall: SystemTime) -> Selection<'_> {
        let with_snapshot: Vec<(&Backend, &BackendSnapshot)> = self
            .backends
            .iter()
            .filter_map(|b| Some((b, b.snapshot_for(tp, wall)?)))
            .collect();
        let healthy: Vec<_> = with_snapshot
            .iter()
            .copied()
            .filter(|(b, _)| b.health.wants_listing())
            .collect();
        if !healthy.is_empty() || with_snapshot.is_empty() {
            return Selection {
                chosen: healthy,
                fail_open: false,
            };
        }
        let undrained: Vec<_> = with_snapshot
            .iter()
            .copied()
            .filter(|(b, _)| !b.health.drain)
            .collect();
        Selection {
            chosen: if undrained.is_empty() {
                with_snapshot
            } else {
                undrained
            },
            fail_open: true,
        }
    }

    /// Starts the probes that are due, within the concurrency limit.
    pub(super) fn launch_probes(&mut self, now: Instant, in_flight: &mut InFlight) {
        let slots = free_slots(self.timing.max_concurrent_probes, self.probes_in_flight);
        let mut due: Vec<(Instant, usize)> = self
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let at = b.health.probes.next_probe(now)?;
                (at <= now).then_some((at, i))
            })
            .collect();
        due.sort();
        for (_, idx) in due.into_iter().take(slots) {
            let b = &mut self.backends[idx];
            let Some(check) = b.health.probes.check().cloned() else {
                continue;
            };
            b.health.probes.probe_started(now);
            self.probes_in_flight += 1;
            let address = b.address;
            let runtime = self.runtime.clone();
            let attempt = self.prober.probe(address, &check);
            in_flight.push(Box::pin(async move {
                let started = runtime.now();
                let result = match runtime.timeout(check.timeout, attempt).await {
                    Ok(r) => r.map(|()| runtime.now().saturating_duration_since(started)),
                    Err(_) => Err(ProbeError::Timeout(check.timeout)),
                };
                Done::Probe { address, result }
            }));
        }
    }

    /// Takes in a finished probe.
    pub(super) fn on_probed(
        &mut self,
        address: OnionAddress,
        result: Result<Duration, ProbeError>,
    ) {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        let wall = self.runtime.wallclock();
        let Some(b) = self.backends.iter_mut().find(|b| b.address == address) else {
            return; // removed by a reload while we probed
        };
        let front = &self.frontend;
        let name = b.name.clone();
        let outcome = match &result {
            Ok(latency) => {
                debug!(
                    "{front}: backend {name}: probe passed in {} ms",
                    latency.as_millis()
                );
                ProbeResult::Passed
            }
            Err(e) => {
                // Once a backend is down, each further failure is old news: not at info
                // level every interval for as long as it stays down.
                if matches!(b.health.probes.verdict(), Verdict::Down(_)) {
                    debug!("{front}: backend {name}: probe failed: {e}");
                } else {
                    info!("{front}: backend {name}: probe failed: {e}");
                }
                ProbeResult::Failed(e.to_string())
            }
        };
        b.health.log.record(wall, result);
        match b.health.probes.probe_finished(outcome) {
            Some(Transition::Down(reason)) => {
                warn!("{front}: backend {name} is down ({reason}): leaving the descriptors");
                self.report.send(Event::BackendDown {
                    service: self.address,
                    name,
                    instance: address,
                    reason,
                });
            }
            Some(Transition::Up { was_down: true }) => {
                info!("{front}: backend {name} is up again: returning to the descriptors");
                self.report.send(Event::BackendUp {
                    service: self.address,
                    name,
                    instance: address,
                });
            }
            Some(Transition::Up { was_down: false }) => {
                debug!("{front}: backend {name}: first probe passed");
            }
            None => {}
        }
    }

    /// Applies listing changes the hold-down now allows, and marks every period for a
    /// rebuild when what may be listed changed (health, drain, signal or fail-open).
    pub(super) fn settle_health(&mut self, now: Instant, wall: SystemTime) {
        for b in &mut self.backends {
            if let Some(listed) = b.health.probes.settle(now) {
                debug!(
                    "{}: backend {}: {} by health checks",
                    self.frontend,
                    b.name,
                    if listed { "listed again" } else { "unlisted" }
                );
            }
        }
        let listing: Vec<bool> = self
            .backends
            .iter()
            .map(|b| b.health.wants_listing())
            .collect();
        let fail_open = self
            .publish
            .publish_periods()
            .iter()
            .any(|p| self.selection(p.time_period, wall).fail_open);
        if fail_open != self.fail_open {
            self.fail_open = fail_open;
            if fail_open {
                error!(
                    "{}: every backend is down or drained: keeping them all in the descriptors (failing open), since a descriptor whose backends may fail serves more clients than none. Check the backends' applications and `onionbalance status`",
                    self.frontend
                );
            } else {
                info!(
                    "{}: some backends pass their health checks again: no longer failing open",
                    self.frontend
                );
            }
            self.report.send(Event::FailOpen {
                service: self.address,
                active: fail_open,
            });
        }
        let key = (listing, fail_open);
        if self.listing.as_ref() != Some(&key) {
            if self.listing.is_some() {
                self.publish.listing_changed(now);
            }
            self.listing = Some(key);
        }
    }

    /// When a health timer is due next: a probe, or a listing change held down.
    pub(super) fn health_wakeup(&self, now: Instant) -> Option<Instant> {
        let probes_free = free_slots(self.timing.max_concurrent_probes, self.probes_in_flight) > 0;
        self.backends
            .iter()
            .flat_map(|b| {
                let probe = probes_free
                    .then(|| b.health.probes.next_probe(now))
                    .flatten();
                [probe, b.health.probes.listing_change_due()]
            })
            .flatten()
            .min()
    }

    /// Takes a reloaded instance's health settings: new check settings keep the verdict
    /// and counts; a drain change is applied at once and announced.
    pub(super) fn reconfigure_health(&mut self, b: &mut Backend, inst: &InstanceConfig) {
        b.health.probes.set_check(inst.health_check.clone());
        if b.health.drain != inst.drain {
            b.health.drain = inst.drain;
            if inst.drain {
                info!(
                    "{}: backend {} drained: leaving the descriptors (clients that fetched an older descriptor may still arrive: C tor clients until the time period ends, Arti clients longer; watch the backend's own traffic before stopping it)",
                    self.frontend, b.name
                );
            } else {
                info!(
                    "{}: backend {} undrained: returning to the descriptors",
                    self.frontend, b.name
                );
            }
            self.report.send(Event::BackendDraining {
                service: self.address,
                name: b.name.clone(),
                instance: b.address,
                draining: inst.drain,
            });
        }
    }

    /// Takes the embedding application's verdict on `instance` (`None` withdraws it).
    pub(super) fn set_health_signal(
        &mut self,
        instance: OnionAddress,
        signal: Option<HealthSignal>,
    ) {
        let Some(b) = self.backends.iter_mut().find(|b| b.address == instance) else {
            return;
        };
        if b.health.signal == signal {
            return;
        }
        let was_down = matches!(b.health.signal, Some(HealthSignal::Down { .. }));
        b.health.signal = signal.clone();
        match signal {
            Some(HealthSignal::Down { reason }) if !was_down => {
                warn!(
                    "{}: backend {}: the application says it is down ({reason}): leaving the descriptors",
                    self.frontend, b.name
                );
                self.report.send(Event::BackendDown {
                    service: self.address,
                    name: b.name.clone(),
                    instance,
                    reason: format!("the application says: {reason}"),
                });
            }
            Some(HealthSignal::Up) | None if was_down => {
                info!(
                    "{}: backend {}: the application no longer says it is down",
                    self.frontend, b.name
                );
                self.report.send(Event::BackendUp {
                    service: self.address,
                    name: b.name.clone(),
                    instance,
                });
            }
            _ => {}
        }
    }
}

/// The health record for a backend configured as `inst`.
pub(super) fn monitor_for(inst: &InstanceConfig) -> Monitor {
    Monitor::new(inst.health_check.clone(), inst.drain)
}
