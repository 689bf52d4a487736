//! Fetching backends' descriptors: when each backend is due, and what a finished fetch
//! means for it (see [`super::backend`] for the per-backend rules).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_netdir::NetDir;
use tor_rtcompat::Runtime;
use tracing::warn;

use super::backend::Intake;
use super::report::FetchSeen;
use super::{free_slots, Done, InFlight, ServiceRunner};
use crate::error::HasKind as _;
use crate::fetch::{self, FetchOutcome, FetchReport, FetchRequest};
use crate::net::DirTransport;
use crate::onion::OnionAddress;

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// Drops backend snapshots that expired or went stale.
    pub(super) fn expire(&mut self, wall: SystemTime) {
        for b in &mut self.backends {
            for why in b.expire(wall, self.timing.stale_after) {
                warn!(
                    "{}: backend {}: {why}: left the selection",
                    self.frontend, b.name
                );
            }
        }
    }

    /// Starts the fetches that are due, within the concurrency limit.
    pub(super) fn launch_fetches(
        &mut self,
        netdir: &Arc<NetDir>,
        now: Instant,
        in_flight: &mut InFlight,
    ) {
        let slots = free_slots(self.timing.max_concurrent_fetches, self.fetches_in_flight);
        let mut due: Vec<(Instant, usize, TimePeriod)> = self
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let (at, p) = b.next_fetch(now, &self.timing.fetch_pacing())?;
                (at <= now).then_some((at, i, p))
            })
            .collect();
        due.sort_by_key(|(at, i, _)| (*at, *i));
        let wall = self.runtime.wallclock();
        for (_, idx, period) in due.into_iter().take(slots) {
            let b = &mut self.backends[idx];
            let Some(st) = b.period_mut(period) else {
                continue;
            };
            let keys = match &st.keys {
                Ok(k) => k.clone(),
                Err(e) => {
                    let error = crate::error::report(e);
                    b.fetch_impossible(period, error, now, wall);
                    continue;
                }
            };
            let hsdirs = match fetch::hsdirs_for(netdir, &keys, &mut self.rng) {
                Ok(h) => h,
                Err(e) => {
                    b.fetch_impossible(period, crate::error::report(&e), now, wall);
                    continue;
                }
            };
            let req = FetchRequest {
                keys,
                known_revision: st.snapshot.as_ref().map(|s| s.revision).or(st.retired),
                attempt_timeout: self.timing.fetch_attempt_timeout,
                max_len: self.engine.max_len(),
            };
            b.fetch_started(now);
            self.fetches_in_flight += 1;
            self.report.fetch_started(wall);
            let (runtime, transport, netdir) =
                (self.runtime.clone(), self.transport.clone(), netdir.clone());
            let address = b.address;
            in_flight.push(Box::pin(async move {
                let report =
                    fetch::fetch_descriptor(&runtime, &*transport, &netdir, &hsdirs, &req).await;
                Done::Fetch { address, report }
            }));
        }
    }

    /// Takes in a finished fetch.
    pub(super) fn on_fetched(&mut self, address: OnionAddress, report: FetchReport) {
        self.fetches_in_flight = self.fetches_in_flight.saturating_sub(1);
        let now = self.runtime.now();
        let wall = self.runtime.wallclock();
        self.report
            .intake_rejected(report.intake_errors.iter().map(|(_, e)| e.kind()));
        let Some(b) = self.backends.iter_mut().find(|b| b.address == address) else {
            return; // removed by a reload while we fetched
        };
        // A fetch that failed everywhere (no circuit, timeouts) has not asked the backend
        // anything: the first publication keeps waiting for it (bounded).
        let answered = !matches!(report.outcome, FetchOutcome::Failed);
        let seen = match report.outcome {
            FetchOutcome::Fetched(snapshot) => {
                let revision = u64::from(snapshot.revision);
                let intro_points = snapshot.intro_points.len();
                match b.take_in(snapshot, wall) {
                    Intake::Changed => FetchSeen::Changed {
                        revision,
                        intro_points,
                    },
                    Intake::Refreshed => FetchSeen::Refreshed { revision },
                    Intake::NotNewer => FetchSeen::NotNewer { revision },
                    Intake::StillStale => FetchSeen::StillStale { revision },
                }
            }
            FetchOutcome::SameRevision(rev) => FetchSeen::Unchanged {
                revision: u64::from(rev),
            },
            FetchOutcome::NotFound => FetchSeen::NotFound {
                hsdirs: report.not_found,
                left_selection: b.not_found(report.period, wall),
            },
            FetchOutcome::Failed => FetchSeen::Failed {
                kind: report.failure_kind(),
                problem: report.problem(),
            },
        };
        let tp = report.period.interval_num();
        self.report.fetched(&b.name, tp, &seen);
        b.fetch_ended(report.period, seen.problem(tp), answered, now, wall);
    }
}
