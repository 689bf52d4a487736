//! Uploading the frontend's descriptors: launching the uploads the schedule says are due
//! (see [`super::publish`]) and taking in their results.
//!
//! # What a refusal hides
//!
//! An HSDir refuses (HTTP 400) a descriptor whose revision counter is not above the one it
//! holds. When the address was published before by someone else with the same key (C tor or
//! Python Onionbalance before a move, another frontend), that counter comes from another
//! clock and another key derivation, and may stay above ours for the rest of the period:
//! rebuilding with our next counter would be refused again, all day. So after a refusal we
//! fetch what that HSDir holds for our blinded key (a "peek", over a 3-hop circuit like any
//! fetch), verify it is signed for our address, and if its counter is at or above ours, raise
//! our floor above it: the rebuild after the refusal is then accepted. A peek that finds
//! nothing, or a lower counter, changes nothing: the refusal had another cause, and the usual
//! backoff applies.

use std::sync::Arc;
use std::time::Instant;

use tor_netdir::NetDir;
use tor_rtcompat::{Runtime, SleepProviderExt as _};
use tracing::warn;

use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;

use super::publish::{Recorded, UploadJob, UploadVerdict};
use super::{free_slots, Done, InFlight, ServiceRunner, UploadFailure};
use crate::descriptor::{verified_revision, BuiltDescriptor};
use crate::error::HasKind as _;
use crate::hsdir::HsDir;
use crate::net::{DirTransport, TransferError};

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// Starts the uploads that are due, within the concurrency limit.
    pub(super) fn launch_uploads(
        &mut self,
        netdir: &Arc<NetDir>,
        now: Instant,
        in_flight: &mut InFlight,
    ) {
        let slots = free_slots(self.timing.max_concurrent_uploads, self.uploads_in_flight);
        for job in self.publish.take_due(now, slots) {
            self.uploads_in_flight += 1;
            let (runtime, transport, netdir) =
                (self.runtime.clone(), self.transport.clone(), netdir.clone());
            let timeout = self.timing.upload_attempt_timeout;
            in_flight.push(Box::pin(async move {
                let attempt = transport.upload(
                    &netdir,
                    job.hsdir.target.clone(),
                    job.descriptor.text.clone(),
                );
                let result = match runtime.timeout(timeout, attempt).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(TransferError::Timeout(timeout)),
                }
                .map_err(|e| UploadFailure {
                    message: crate::error::report(&e),
                    kind: e.kind(),
                    refused: e.is_rejected_upload(),
                    error: Arc::new(e),
                });
                Done::Upload { job, result }
            }));
        }
    }

    /// Takes in a finished upload.
    pub(super) fn on_uploaded(&mut self, job: UploadJob, result: Result<(), UploadFailure>) {
        self.uploads_in_flight = self.uploads_in_flight.saturating_sub(1);
        let now = self.runtime.now();
        let wall = self.runtime.wallclock();
        let verdict = match &result {
            Ok(()) => UploadVerdict::Accepted,
            Err(f) if f.refused => UploadVerdict::Refused(&f.message),
            Err(f) => UploadVerdict::Failed(&f.message),
        };
        let recorded = self.publish.record(&job, verdict, now, wall, &mut self.rng);
        let all_hold = self
            .publish
            .period(job.period)
            .filter(|st| result.is_ok() && st.hsdirs.values().all(|h| !h.is_dirty()))
            .map(|st| st.hsdirs.len());
        if let Recorded::Refused(_) = recorded {
            self.peeks.want(PeekJob {
                period: job.period,
                hsdir: job.hsdir.clone(),
                refused: job.descriptor.clone(),
            });
        }
        self.report
            .uploaded(&job, &result, recorded, all_hold, wall);
    }

    /// Starts the peeks that refusals asked for.
    pub(super) fn launch_peeks(&mut self, netdir: &Arc<NetDir>, in_flight: &mut InFlight) {
        for job in std::mem::take(&mut self.peeks.wanted) {
            let Ok(blind_id) = self.engine.frontend_blind_id(job.period) else {
                continue; // the period's keys failed: logged where they are derived
            };
            self.peeks.in_flight.push((job.period, job.hsdir.id));
            let (runtime, transport, netdir) =
                (self.runtime.clone(), self.transport.clone(), netdir.clone());
            let (timeout, max_len) = (self.timing.fetch_attempt_timeout, self.engine.max_len());
            in_flight.push(Box::pin(async move {
                let attempt = transport.fetch(&netdir, job.hsdir.target.clone(), blind_id, max_len);
                let held = match runtime.timeout(timeout, attempt).await {
                    Ok(Ok(Some(text))) => {
                        verified_revision(&text, &blind_id, max_len).map_err(|e| e.to_string())
                    }
                    Ok(Ok(None)) => Err("it holds no descriptor for this address".to_owned()),
                    Ok(Err(e)) => Err(crate::error::report(&e)),
                    Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
                };
                Done::Peek { job, held }
            }));
        }
    }

    /// Takes in a finished peek: what the HSDir holds for our address, or why we cannot tell.
    pub(super) fn on_peeked(&mut self, job: PeekJob, held: Result<RevisionCounter, String>) {
        self.peeks
            .in_flight
            .retain(|p| *p != (job.period, job.hsdir.id));
        let refused = u64::from(job.refused.revision);
        let finding = match &held {
            // Our counters never repeat within a period, so this is the very descriptor we
            // sent: an earlier attempt was stored though we never heard (a timeout after
            // the HSDir stored it), and the retry was refused as "not newer".
            Ok(h) if u64::from(*h) == refused => PeekFinding::AlreadyStored,
            Ok(h) if u64::from(*h) > refused => PeekFinding::Outranked(*h),
            Ok(h) => PeekFinding::Below(*h),
            Err(why) => PeekFinding::Unknown(why.clone()),
        };
        match &finding {
            PeekFinding::AlreadyStored => {
                let now = self.runtime.now();
                let wall = self.runtime.wallclock();
                let stored = UploadJob {
                    period: job.period,
                    hsdir: job.hsdir.clone(),
                    descriptor: job.refused.clone(),
                };
                self.publish
                    .record(&stored, UploadVerdict::Accepted, now, wall, &mut self.rng);
            }
            PeekFinding::Outranked(held) => {
                self.engine.raise_revision_floor(job.period, *held);
                if let Err(e) = self.store.record(job.period, *held) {
                    warn!("{}: {e}", self.frontend);
                }
                self.publish.hsdir_holds(job.period, &job.hsdir.id, *held);
            }
            PeekFinding::Below(_) | PeekFinding::Unknown(_) => {}
        }
        self.report.peeked(&job, &finding, self.runtime.wallclock());
    }

    /// Whether a peek for period `tp` is in flight (its refusal's rebuild waits for it).
    pub(super) fn peeking(&self, tp: TimePeriod) -> bool {
        self.peeks.in_flight.iter().any(|(p, _)| *p == tp)
    }
}

/// A look at what a refusing HSDir holds for our address.
#[derive(Debug, Clone)]
pub(super) struct PeekJob {
    /// The period.
    pub(super) period: TimePeriod,
    /// The HSDir that refused.
    pub(super) hsdir: HsDir,
    /// The descriptor it refused.
    pub(super) refused: Arc<BuiltDescriptor>,
}

/// What a peek found, against the refused descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PeekFinding {
    /// The HSDir holds that very descriptor: stored by an earlier attempt.
    AlreadyStored,
    /// It holds a higher revision of our address from another publisher.
    Outranked(RevisionCounter),
    /// It holds a lower revision: the refusal had another cause.
    Below(RevisionCounter),
    /// It holds nothing we can read, or could not be asked: why.
    Unknown(String),
}

/// Peeks wanted and in flight.
#[derive(Debug, Default)]
pub(super) struct Peeks {
    /// Asked for by refusals, not started yet.
    wanted: Vec<PeekJob>,
    /// Started: (period, HSDir).
    in_flight: Vec<(TimePeriod, tor_llcrypto::pk::rsa::RsaIdentity)>,
}

impl Peeks {
    /// Asks for a peek, unless one at that HSDir for that period is already wanted or
    /// under way.
    fn want(&mut self, job: PeekJob) {
        let key = (job.period, job.hsdir.id);
        if self.in_flight.contains(&key)
            || self.wanted.iter().any(|w| (w.period, w.hsdir.id) == key)
        {
            return;
        }
        self.wanted.push(job);
    }
}
