//! Uploading the frontend's descriptors: launching the uploads the schedule says are due
//! (see [`super::publish`]) and taking in their results.
//!
//! # What a refusal hides
//!
//! An HSDir refuses (HTTP 400) a descriptor whose revision counter is not above the one it
//! holds. When the address was published by someone else with the same key (C tor or Python
//! Onionbalance before a move, another frontend), that counter comes from another clock and
//! perhaps another key derivation, and may stay above ours for the rest of the period:
//! rebuilding with our next counter would be refused again, all day. So every refusal asks
//! for a look at what that HSDir holds (see [`super::peeking`]), and the rebuild after it
//! waits for that look.

use std::sync::Arc;
use std::time::Instant;

use tor_netdir::NetDir;
use tor_rtcompat::{Runtime, SleepProviderExt as _};

use super::peeking::{PeekJob, PeekWhy};
use super::publish::{Recorded, UploadJob, UploadVerdict};
use super::{free_slots, Done, InFlight, ServiceRunner, UploadFailure};
use crate::error::HasKind as _;
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
                ours: job.descriptor.clone(),
                why: PeekWhy::Refused,
            });
        }
        self.report
            .uploaded(&job, &result, recorded, all_hold, wall);
    }
}
