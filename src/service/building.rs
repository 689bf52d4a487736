//! Building the frontend's descriptors: which backends a period's build uses, when a period
//! needs a build, and installing what the engine built.

use std::time::{Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_rtcompat::Runtime;
use tracing::{info, warn};

use super::backend::Backend;
use super::publish::{self, BuildInputs, BuildReason};
use super::report::publication;
use super::ServiceRunner;
use rand::rngs::StdRng;
use rand::SeedableRng as _;

use crate::descriptor::{run_jobs, BackendSnapshot, BuildError, BuiltVariants, RingFacts};
use crate::fetch;
use crate::net::DirTransport;
use crate::status::ServicePhase;

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// The backends whose HSDirs have not yet answered for period `tp` (with a descriptor or
    /// "not found"): fetches that failed before any answer do not count as asking.
    pub(super) fn untried(&self, tp: TimePeriod) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|b| b.period(tp).is_none_or(|p| !p.answered))
            .map(|b| b.name.as_str())
            .collect()
    }

    /// What a build for `tp` would use now: per listed backend, the snapshot (its own for
    /// `tp`, else its nearest); see [`ServiceRunner::selection`].
    pub(super) fn inputs_for(
        &self,
        tp: TimePeriod,
        wall: SystemTime,
    ) -> Vec<(&Backend, &BackendSnapshot)> {
        self.selection(tp, wall).chosen
    }

    /// Whether period `tp` needs a build, why and when.
    pub(super) fn build_due_for(
        &self,
        tp: TimePeriod,
        now: Instant,
        wall: SystemTime,
    ) -> Option<(Instant, BuildReason)> {
        let st = self.publish.period(tp)?;
        let inputs = build_inputs(&self.inputs_for(tp, wall));
        let (at, reason) = st.build_due(&inputs, now, self.timing.min_rebuild_interval)?;
        if reason == BuildReason::Refused && self.peeking(tp) {
            // The peek may raise our counter's floor: a rebuild before it ends could be
            // refused for the same reason. Its end wakes the loop.
            return None;
        }
        if matches!(reason, BuildReason::Changed | BuildReason::Refused) {
            // A change or disappearance seen in one period of a backend is checked in its
            // other periods at once; until that check ends, this period may list what the
            // backend published for a neighbouring period (its own is gone), only to drop it
            // a minute later. One rebuild covers both, within a bounded wait. Likewise, when
            // another frontend listed something else, every backend is fetched again before
            // we overwrite it (see `peeking`).
            let checking = self
                .backends
                .iter()
                .filter_map(Backend::rechecking_since)
                .min();
            if let Some(since) = checking {
                let until = since + self.timing.first_publication_wait;
                if let Ok(left) = until.duration_since(wall) {
                    return Some((at.max(now + left), reason));
                }
            }
        }
        if reason == BuildReason::First {
            // As for the very first publication: a period's first descriptor waits until
            // every backend was asked for its own descriptor of that period (bounded), so it
            // does not list intro points borrowed from a neighbouring period only to be
            // rebuilt a minute later.
            if !self.untried(tp).is_empty() {
                return Some((
                    at.max(st.appeared + self.timing.first_publication_wait),
                    reason,
                ));
            }
        }
        Some((at, reason))
    }

    /// Builds every period whose build is due.
    pub(super) async fn build_due(&mut self, now: Instant, wall: SystemTime) {
        // Health changed, but not what a period lists (say, a backend without a descriptor
        // went down): nothing to rebuild there.
        let settled: Vec<TimePeriod> = self
            .publish
            .periods()
            .filter(|p| {
                p.listing_changed.is_some()
                    && p.built_inputs.as_ref()
                        == Some(&build_inputs(&self.inputs_for(p.period.time_period, wall)))
            })
            .map(|p| p.period.time_period)
            .collect();
        for tp in settled {
            self.publish.listing_settled(tp);
        }
        let mut any_inputs = false;
        // Every period whose build is due now, with its job. The jobs (certificates,
        // signatures, encryption: milliseconds each) run side by side on a blocking thread,
        // not on the reactor: a backend change rebuilds both periods at once.
        let mut due: Vec<DueBuild> = Vec::new();
        let mut jobs = Vec::new();
        for period in self.publish.publish_periods() {
            let tp = period.time_period;
            let chosen = self.inputs_for(tp, wall);
            any_inputs |= !chosen.is_empty();
            let Some((at, reason)) = self.build_due_for(tp, now, wall) else {
                continue;
            };
            if at > now {
                continue;
            }
            let inputs = build_inputs(&chosen);
            if reason == BuildReason::First {
                let untried = self.untried(tp);
                if !untried.is_empty() {
                    info!(
                        "{}: time period {}: publishing without waiting longer for {}",
                        self.frontend,
                        tp.interval_num(),
                        untried.join(", ")
                    );
                }
            }
            let names: Vec<String> = chosen.iter().map(|(b, _)| b.name.clone()).collect();
            let snapshots: Vec<BackendSnapshot> =
                chosen.iter().map(|(_, s)| (*s).clone()).collect();
            let Some(st) = self.publish.period(tp) else {
                continue;
            };
            let upload: Vec<RsaIdentity> = st.hsdirs.keys().copied().collect();
            let fetch = st.fetch.clone();
            let ring = RingFacts {
                upload: &upload,
                fetch: &fetch,
            };
            let job = self.engine.variants_job(&period, snapshots, &ring, wall);
            jobs.push((job, StdRng::from_rng(&mut self.rng)));
            due.push(DueBuild {
                tp,
                reason,
                inputs,
                names,
                fetch,
            });
        }
        let results = if jobs.is_empty() {
            Vec::new()
        } else {
            fetch::on_blocking_thread(&self.runtime, move || run_jobs(jobs)).await
        };
        for (d, built) in due.into_iter().zip(results) {
            self.install_built(d, built, now, wall);
        }
        // Backends not yet asked (just added by a reload) may still bring intro points.
        let all_asked = self
            .publish
            .publish_periods()
            .iter()
            .all(|p| self.untried(p.time_period).is_empty());
        if !any_inputs && all_asked && self.phase != ServicePhase::NoBackends {
            warn!(
                "{}: no backend has a valid descriptor: not publishing (descriptors already on the HSDirs stay until they expire)",
                self.frontend
            );
            self.phase = ServicePhase::NoBackends;
        } else if any_inputs && self.phase == ServicePhase::NoBackends {
            self.phase = ServicePhase::Publishing;
        }
    }

    /// Takes a period's build: installs what was built for upload, or notes the failure.
    fn install_built(
        &mut self,
        due: DueBuild,
        built: Result<BuiltVariants, BuildError>,
        now: Instant,
        wall: SystemTime,
    ) {
        let DueBuild {
            tp,
            reason,
            inputs,
            names,
            fetch,
        } = due;
        if let Ok(built) = &built {
            self.engine.record_built(built);
        }
        match built {
            Ok(built) => {
                let publication = publication(built, &names, &fetch);
                if let Some(rev) = publication.revision() {
                    if let Err(e) = self.store.record(tp, rev) {
                        warn!("{}: {e}", self.frontend);
                    }
                }
                self.report.built(
                    tp,
                    reason,
                    &publication,
                    self.engine.authorized_clients().map_or(0, <[_]>::len),
                    self.engine.max_len(),
                );
                let delay = publish::refresh_delay(
                    self.timing.republish_min,
                    self.timing.republish_max,
                    &mut self.rng,
                );
                self.publish
                    .install(tp, publication, reason, inputs, (now, wall), delay);
                self.phase = ServicePhase::Publishing;
            }
            Err(BuildError::NoIntroPoints) => self.publish.build_failed(tp, now),
            Err(e) => {
                warn!(
                    "{}: cannot build a descriptor for time period {}: {}",
                    self.frontend,
                    tp.interval_num(),
                    crate::error::report(&e)
                );
                self.publish.build_failed(tp, now);
            }
        }
    }
}

/// A period whose build is due, while its job runs.
struct DueBuild {
    /// The period.
    tp: TimePeriod,
    /// Why it is built.
    reason: BuildReason,
    /// What its build uses.
    inputs: BuildInputs,
    /// The names of the backends it draws from, in the order of the job's snapshots.
    names: Vec<String>,
    /// The HSDirs clients fetch from.
    fetch: Vec<RsaIdentity>,
}

/// The build inputs of a selection: what each backend's snapshot means.
fn build_inputs(chosen: &[(&Backend, &BackendSnapshot)]) -> BuildInputs {
    chosen
        .iter()
        .map(|(b, s)| (b.address, s.content_key()))
        .collect()
}
