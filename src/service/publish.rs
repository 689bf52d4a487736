//! Upload bookkeeping: which HSDir should hold which descriptor, and what it has.
//!
//! For every period we publish for there is a [`PeriodState`] with the current descriptor and
//! one [`HsDirState`] per responsible HSDir. An HSDir is *dirty* when it does not hold the
//! descriptor assigned to it; dirty HSDirs are uploaded to as soon as their backoff allows.
//! The descriptor is assigned per HSDir (today every HSDir of a period gets the same one), so
//! that different HSDirs can later receive different descriptors.
//!
//! Everything here is synchronous and takes time as an argument; the service runner does the
//! I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::rsa::RsaIdentity;

use super::backoff::Backoff;
use crate::descriptor::{BuiltDescriptor, PublishPeriod};
use crate::ring::HsDir;

/// What one HSDir has and what it should have.
#[derive(Debug, Clone)]
pub struct HsDirState {
    /// The HSDir.
    pub hsdir: HsDir,
    /// The descriptor this HSDir should hold.
    pub assigned: Option<Arc<BuiltDescriptor>>,
    /// The revision it acknowledged last (HTTP 200).
    pub uploaded: Option<RevisionCounter>,
    /// The last attempt's result: `Ok` or the error text.
    pub last_result: Option<Result<SystemTime, String>>,
    /// Retry schedule after failures.
    pub backoff: Backoff,
    /// No upload before this instant (after a failure).
    pub not_before: Option<Instant>,
}

impl HsDirState {
    /// A new HSDir, holding nothing yet.
    fn new(hsdir: HsDir) -> Self {
        HsDirState {
            hsdir,
            assigned: None,
            uploaded: None,
            last_result: None,
            backoff: Backoff::default(),
            not_before: None,
        }
    }

    /// True when it does not hold its assigned descriptor.
    pub fn is_dirty(&self) -> bool {
        match &self.assigned {
            Some(d) => self.uploaded != Some(d.revision),
            None => false,
        }
    }

    /// True when it is dirty and its backoff allows an attempt at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.is_dirty() && self.not_before.is_none_or(|t| t <= now)
    }
}

/// Publication state for one time period.
#[derive(Debug, Clone)]
pub struct PeriodState {
    /// The period.
    pub period: PublishPeriod,
    /// The descriptor built most recently for it.
    pub descriptor: Option<Arc<BuiltDescriptor>>,
    /// When that descriptor was built.
    pub built_at: Option<SystemTime>,
    /// When we last tried to upload a descriptor for this period.
    pub last_attempt: Option<SystemTime>,
    /// The responsible HSDirs, keyed by identity.
    pub hsdirs: HashMap<RsaIdentity, HsDirState>,
}

impl PeriodState {
    /// How many HSDirs hold the current descriptor.
    pub fn accepted(&self) -> usize {
        self.hsdirs
            .values()
            .filter(|h| !h.is_dirty() && h.uploaded.is_some())
            .count()
    }

    /// How many HSDirs failed their last attempt.
    pub fn failed(&self) -> usize {
        self.hsdirs
            .values()
            .filter(|h| h.is_dirty() && matches!(h.last_result, Some(Err(_))))
            .count()
    }
}

/// One upload to do.
#[derive(Debug, Clone)]
pub struct UploadJob {
    /// The period.
    pub period: TimePeriod,
    /// The HSDir.
    pub hsdir: HsDir,
    /// The descriptor.
    pub descriptor: Arc<BuiltDescriptor>,
}

/// Why one upload failed.
#[derive(Debug, Clone)]
pub struct UploadFailure {
    /// What happened.
    pub message: String,
    /// A short stable name for the kind of failure (for metrics).
    pub kind: &'static str,
    /// True when the HSDir rejected the descriptor itself (its revision counter): only a new
    /// descriptor can succeed.
    pub rejected: bool,
}

/// The outcome of one [`UploadJob`].
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    /// The job.
    pub job: UploadJob,
    /// `Ok`, or why not.
    pub result: Result<(), UploadFailure>,
}

/// Publication state for every period of one service.
#[derive(Debug, Default)]
pub struct PublishState {
    /// Per period.
    periods: HashMap<TimePeriod, PeriodState>,
}

impl PublishState {
    /// The periods, in no particular order.
    pub fn periods(&self) -> impl Iterator<Item = &PeriodState> {
        self.periods.values()
    }

    /// Makes the periods and their HSDirs those of the latest consensus.
    ///
    /// Periods that left are dropped; new periods start with no descriptor; HSDirs that joined
    /// a ring start dirty (they will get the current descriptor); HSDirs that stayed keep what
    /// they have, so a new consensus with the same ring uploads nothing. Returns true when a
    /// period was added (a descriptor must be built for it).
    pub fn set_rings(&mut self, rings: Vec<(PublishPeriod, Vec<HsDir>)>) -> bool {
        let mut added = false;
        let keep: Vec<TimePeriod> = rings.iter().map(|(p, _)| p.time_period).collect();
        self.periods.retain(|tp, _| keep.contains(tp));
        for (period, hsdirs) in rings {
            let st = self.periods.entry(period.time_period).or_insert_with(|| {
                added = true;
                PeriodState {
                    period,
                    descriptor: None,
                    built_at: None,
                    last_attempt: None,
                    hsdirs: HashMap::new(),
                }
            });
            st.period = period;
            let mut old = std::mem::take(&mut st.hsdirs);
            for h in hsdirs {
                let mut hs = old
                    .remove(&h.id)
                    .unwrap_or_else(|| HsDirState::new(h.clone()));
                hs.hsdir = h;
                if hs.assigned.is_none() {
                    hs.assigned = st.descriptor.clone();
                }
                st.hsdirs.insert(hs.hsdir.id, hs);
            }
        }
        added
    }

    /// True when some period has no descriptor yet.
    pub fn missing_descriptor(&self) -> bool {
        self.periods.values().any(|p| p.descriptor.is_none())
    }

    /// The periods to build for.
    pub fn publish_periods(&self) -> Vec<PublishPeriod> {
        let mut v: Vec<PublishPeriod> = self.periods.values().map(|p| p.period).collect();
        v.sort_by_key(|p| p.time_period.interval_num());
        v
    }

    /// Installs freshly built descriptors; every HSDir of their period becomes dirty.
    pub fn install(&mut self, built: Vec<BuiltDescriptor>, now: SystemTime) {
        for d in built {
            let Some(st) = self.periods.get_mut(&d.period) else {
                continue;
            };
            let d = Arc::new(d);
            st.descriptor = Some(d.clone());
            st.built_at = Some(now);
            for h in st.hsdirs.values_mut() {
                h.assigned = Some(d.clone());
                // A new descriptor deserves a prompt try even at an HSDir that failed before.
                h.not_before = None;
            }
        }
    }

    /// The uploads due at `now`.
    pub fn due(&self, now: Instant) -> Vec<UploadJob> {
        let mut jobs = Vec::new();
        for st in self.periods.values() {
            for h in st.hsdirs.values().filter(|h| h.is_due(now)) {
                if let Some(d) = &h.assigned {
                    jobs.push(UploadJob {
                        period: st.period.time_period,
                        hsdir: h.hsdir.clone(),
                        descriptor: d.clone(),
                    });
                }
            }
        }
        jobs
    }

    /// Records upload outcomes. Returns true when an HSDir rejected a descriptor (so a new one,
    /// with a higher revision counter, should be built).
    pub fn record<R: rand::Rng>(
        &mut self,
        outcomes: &[UploadOutcome],
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> bool {
        let mut rejected = false;
        for o in outcomes {
            if let Some(st) = self.periods.get_mut(&o.job.period) {
                st.last_attempt = Some(wall);
            }
            let Some(h) = self
                .periods
                .get_mut(&o.job.period)
                .and_then(|st| st.hsdirs.get_mut(&o.job.hsdir.id))
            else {
                continue; // the ring changed while we uploaded
            };
            match &o.result {
                Ok(()) => {
                    h.uploaded = Some(o.job.descriptor.revision);
                    h.last_result = Some(Ok(wall));
                    h.backoff.reset();
                    h.not_before = None;
                }
                Err(f) => {
                    h.last_result = Some(Err(f.message.clone()));
                    h.not_before = Some(now + h.backoff.next_delay(rng));
                    rejected |= f.rejected;
                }
            }
        }
        rejected
    }

    /// When the next upload retry is due, if any HSDir is dirty.
    pub fn next_retry(&self) -> Option<Instant> {
        self.periods
            .values()
            .flat_map(|p| p.hsdirs.values())
            .filter(|h| h.is_dirty())
            .filter_map(|h| h.not_before)
            .min()
    }
}

/// A republish interval: uniformly random in `[min, max]`, like C tor and Arti, so that
/// republications of different services do not synchronise.
pub fn republish_delay<R: rand::Rng>(min: Duration, max: Duration, rng: &mut R) -> Duration {
    if max <= min {
        return min;
    }
    let span = (max - min).as_secs().max(1);
    min + Duration::from_secs(rng.next_u64() % (span + 1))
}
