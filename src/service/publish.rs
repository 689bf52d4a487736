//! Publication state: per time period, the descriptor we publish and what each HSDir holds.
//!
//! For every period we publish for there is a [`PeriodState`] with the latest descriptor,
//! the inputs it was built from, its timers, and one [`HsDirState`] per responsible HSDir.
//! An HSDir is *dirty* when it does not hold the descriptor assigned to it; dirty HSDirs are
//! uploaded to as soon as their backoff allows.
//!
//! # When do we build?
//!
//! [`PeriodState::build_due`] decides, from its inputs only:
//!
//! * the period has no descriptor yet: at once;
//! * what the descriptor would list changed (a backend's intro points or carried lines, a
//!   backend joining or leaving): at once, but never sooner than
//!   [`Timing::min_rebuild_interval`](super::Timing::min_rebuild_interval) after the last
//!   build of the period (so a flapping backend cannot make us rebuild in a loop);
//! * the periodic refresh, 60–120 minutes (random, as C tor and Arti) after the last full
//!   build, so that HSDirs never drop us at the end of the descriptor's lifetime;
//! * an HSDir refused the descriptor (HTTP 400): at most once per minimum rebuild interval,
//!   and the new descriptor goes only to the HSDirs that refused.
//!
//! # Refusals
//!
//! A C tor HSDir answers 400 for any failure to store (a revision counter not above the one
//! it holds, a parse failure, a full cache), so a 400 is not proof that our counter is low.
//! The same descriptor is retried at that HSDir with backoff, and at most once per interval a
//! rebuilt one (a higher counter) is tried at once, in case it was the counter. Each HSDir
//! counts the descriptors it refused in a row; from [`REJECTION_ALARM`] on, the runner reports
//! an error (the usual causes: a clock far behind, or another frontend running with the same
//! key) and that HSDir is retried only every [`SLOW_RETRY`] (and once for each descriptor
//! built for a change or refresh).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::rsa::RsaIdentity;

use super::backoff::Backoff;
use crate::descriptor::{BuiltDescriptor, ContentKey, PublishPeriod};
use crate::hsdir::HsDir;
use crate::onion::OnionAddress;

/// Refusals in a row for one period after which the runner reports an error.
pub(crate) const REJECTION_ALARM: u32 = 5;

/// Retry interval at an HSDir that refused the descriptor [`REJECTION_ALARM`] times in a row:
/// something is wrong that retrying will not fix soon (a clock far behind, another frontend
/// with this key), so we keep trying, slowly; every new descriptor is still tried at once.
pub(crate) const SLOW_RETRY: Duration = Duration::from_secs(30 * 60);

/// What a descriptor was built from: per backend, what its snapshot means. Two builds from
/// equal inputs would list the same intro points (up to the random choice among them).
pub(crate) type BuildInputs = Vec<(OnionAddress, ContentKey)>;

/// The descriptors of one full build of a period: one per variant (usually one), and which
/// HSDir holds which (see [`crate::descriptor::variants`]).
#[derive(Debug, Clone)]
pub(crate) struct Publication {
    /// The descriptors, one per variant; all carry the same revision counter.
    pub variants: Vec<Arc<BuiltDescriptor>>,
    /// Per variant, the backends it lists with how many intro points each.
    pub listed: Vec<Vec<(String, usize)>>,
    /// Per HSDir of the ring it was planned for, the variant it holds.
    pub holders: HashMap<RsaIdentity, usize>,
    /// Per backend, its expected share of new clients (0 for those left out).
    pub shares: Vec<(String, f64)>,
    /// Backends in no variant.
    pub left_out: Vec<String>,
    /// With several variants, the fetch HSDirs they were planned for (sorted): when the ring
    /// changes, the plan must be made again, or a variant could end up where nobody fetches.
    pub planned_fetch: Option<Vec<RsaIdentity>>,
    /// The most intro points one descriptor could hold (below 20 with many authorized
    /// clients: see [`crate::descriptor::BuiltVariants::intro_point_limit`]).
    pub intro_point_limit: usize,
}

impl Publication {
    /// The revision counter of this build.
    pub(crate) fn revision(&self) -> Option<RevisionCounter> {
        self.variants.first().map(|d| d.revision)
    }

    /// The descriptor `hsdir` should hold: its variant in the plan, or, for an HSDir that
    /// joined the ring since, one chosen by its identity.
    pub(crate) fn variant_for(&self, hsdir: &RsaIdentity) -> Option<Arc<BuiltDescriptor>> {
        let n = self.variants.len();
        if n == 0 {
            return None;
        }
        let v = self
            .holders
            .get(hsdir)
            .copied()
            .unwrap_or_else(|| usize::from(hsdir.as_bytes()[0]) % n);
        self.variants.get(v).cloned()
    }
}

/// What one HSDir has and what it should have.
#[derive(Debug, Clone)]
pub(crate) struct HsDirState {
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
    /// An upload is in flight.
    pub uploading: bool,
    /// Its last answer to the assigned descriptor was a refusal (HTTP 400).
    pub refused: bool,
    /// Descriptors this HSDir refused in a row (each revision counted once, however often
    /// it was retried).
    pub refusals_in_a_row: u32,
    /// The revision it refused last.
    pub last_refused: Option<RevisionCounter>,
    /// A revision this HSDir was seen to hold (another publisher's, above ours): a
    /// descriptor with a counter not above it is not sent there again.
    pub holds: Option<RevisionCounter>,
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
            uploading: false,
            refused: false,
            refusals_in_a_row: 0,
            last_refused: None,
            holds: None,
        }
    }

    /// True when it does not hold its assigned descriptor.
    pub(crate) fn is_dirty(&self) -> bool {
        match &self.assigned {
            Some(d) => self.uploaded != Some(d.revision),
            None => false,
        }
    }

    /// When an upload to it is due: `None` if it is clean or an upload is in flight.
    pub(crate) fn upload_at(&self, now: Instant) -> Option<Instant> {
        // Retrying a descriptor whose counter is not above the one the HSDir holds cannot
        // succeed: it waits for the rebuild.
        let outranked = self
            .assigned
            .as_ref()
            .zip(self.holds)
            .is_some_and(|(d, held)| u64::from(d.revision) <= u64::from(held));
        (self.is_dirty() && !self.uploading && !outranked).then(|| self.not_before.unwrap_or(now))
    }
}

/// Why a period's descriptor is (re)built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuildReason {
    /// The period has no descriptor yet.
    First,
    /// What the descriptor lists changed.
    Changed,
    /// The periodic refresh.
    Refresh,
    /// An HSDir refused the descriptor, or holds another publisher's that lists something
    /// else: a new one with a higher counter for those HSDirs.
    Refused,
    /// The authorized clients changed (a reload): what was published lists the old ones.
    ClientsChanged,
    /// Health checks, a drain or the application's signal changed which backends may be
    /// listed.
    Health,
}

impl BuildReason {
    /// For logs.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            BuildReason::First => "first descriptor for this period",
            BuildReason::Changed => "backends changed",
            BuildReason::Refresh => "periodic refresh",
            BuildReason::Refused => "an HSDir refused the last one or holds another",
            BuildReason::ClientsChanged => "authorized clients changed",
            BuildReason::Health => "backend health changed",
        }
    }
}

/// Publication state for one time period.
#[derive(Debug, Clone)]
pub(crate) struct PeriodState {
    /// The period.
    pub period: PublishPeriod,
    /// When we started publishing for it.
    pub appeared: Instant,
    /// The descriptors of the last full build.
    pub published: Option<Publication>,
    /// What it was built from.
    pub built_inputs: Option<BuildInputs>,
    /// The HSDirs clients fetch from (from the latest consensus), sorted.
    pub fetch: Vec<RsaIdentity>,
    /// When the last full build happened (wall clock).
    pub built_at: Option<SystemTime>,
    /// When the last build of any kind happened.
    pub last_build: Option<Instant>,
    /// When the periodic refresh is due.
    pub refresh_at: Option<Instant>,
    /// An HSDir refused the assigned descriptor since the last build.
    pub refusal_pending: bool,
    /// The last refusal, as the HSDir said it.
    pub last_refusal: Option<String>,
    /// The authorized clients changed since the last full build.
    pub clients_changed: bool,
    /// Health (probes, drain, an application's signal, fail-open) changed which backends
    /// may be listed since the last full build: when it first did.
    pub listing_changed: Option<Instant>,
    /// When we last tried to upload a descriptor for this period.
    pub last_attempt: Option<SystemTime>,
    /// The responsible HSDirs, keyed by identity.
    pub hsdirs: HashMap<RsaIdentity, HsDirState>,
}

impl PeriodState {
    /// A period with nothing built yet.
    fn new(period: PublishPeriod, now: Instant) -> Self {
        PeriodState {
            period,
            appeared: now,
            published: None,
            built_inputs: None,
            fetch: Vec::new(),
            built_at: None,
            last_build: None,
            refresh_at: None,
            refusal_pending: false,
            last_refusal: None,
            clients_changed: false,
            listing_changed: None,
            last_attempt: None,
            hsdirs: HashMap::new(),
        }
    }

    /// How many HSDirs hold the current descriptor.
    pub(crate) fn accepted(&self) -> usize {
        self.hsdirs
            .values()
            .filter(|h| !h.is_dirty() && h.uploaded.is_some())
            .count()
    }

    /// The most descriptors one HSDir of this period refused in a row.
    pub(crate) fn refusals_in_a_row(&self) -> u32 {
        self.hsdirs
            .values()
            .map(|h| h.refusals_in_a_row)
            .max()
            .unwrap_or(0)
    }

    /// How many HSDirs failed their last attempt.
    pub(crate) fn failed(&self) -> usize {
        self.hsdirs
            .values()
            .filter(|h| h.is_dirty() && matches!(h.last_result, Some(Err(_))))
            .count()
    }

    /// Whether a build is due, why, and when: the one place this timer is decided.
    ///
    /// `inputs` is what a build now would use (empty: nothing to publish, no build).
    pub(crate) fn build_due(
        &self,
        inputs: &BuildInputs,
        now: Instant,
        min_gap: Duration,
    ) -> Option<(Instant, BuildReason)> {
        if inputs.is_empty() {
            return None;
        }
        let Some(last) = self.last_build else {
            return Some((now, BuildReason::First));
        };
        let gap_over = last + min_gap;
        let Some(published) = &self.published else {
            // A first build that failed is retried, but not in a loop.
            return Some((gap_over.max(now), BuildReason::First));
        };
        let ring_moved = published
            .planned_fetch
            .as_ref()
            .is_some_and(|f| *f != self.fetch);
        if self.clients_changed {
            // Not held back by `min_gap`: a reload is the operator's act, not a loop, and a
            // removed client must lose access as soon as the HSDirs hold the new descriptor.
            return Some((now, BuildReason::ClientsChanged));
        }
        if let Some(changed) = self
            .listing_changed
            .filter(|_| self.built_inputs.as_ref() != Some(inputs))
        {
            // Not held back by `min_gap`: a backend found down must leave at once, and
            // health cannot loop (one backend's listing changes at most once per hold-down,
            // see `health::state`; a drain is the operator's act). Verdicts that come
            // together (backends behind one failed dependency) make one build.
            return Some(((changed + HEALTH_COALESCE).max(now), BuildReason::Health));
        }
        if self.built_inputs.as_ref() != Some(inputs) || ring_moved {
            return Some((gap_over.max(now), BuildReason::Changed));
        }
        let refresh = self
            .refresh_at
            .map(|t| (t.max(gap_over), BuildReason::Refresh));
        let refused = self
            .refusal_pending
            .then_some((gap_over, BuildReason::Refused));
        match (refresh, refused) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// How long a build for a health change waits for other verdicts to come with it.
pub(crate) const HEALTH_COALESCE: Duration = Duration::from_secs(5);

/// A period whose HSDirs all hold our descriptor (see [`PublishState::settled`]).
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    /// The period.
    pub period: TimePeriod,
    /// Its HSDirs, sorted by identity, each with the descriptor it holds.
    pub holders: Vec<(HsDir, Arc<BuiltDescriptor>)>,
}

/// One upload to do.
#[derive(Debug, Clone)]
pub(crate) struct UploadJob {
    /// The period.
    pub period: TimePeriod,
    /// The HSDir.
    pub hsdir: HsDir,
    /// The descriptor.
    pub descriptor: Arc<BuiltDescriptor>,
}

/// What an HSDir did with one upload, as far as the schedule is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadVerdict<'a> {
    /// Stored.
    Accepted,
    /// Refused to store it (HTTP 400: usually a revision counter not above the one it has).
    Refused(&'a str),
    /// Failed otherwise (no circuit, timeout, an HSDir error): says why.
    Failed(&'a str),
}

/// What recording one upload outcome found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Accepted, or failed and scheduled for a retry.
    Normal,
    /// Refused; the period has this many refusals in a row.
    Refused(u32),
    /// The outcome belongs to an HSDir or period we no longer publish to.
    Stale,
}

/// Publication state for every period of one service.
#[derive(Debug, Default)]
pub(crate) struct PublishState {
    /// Per period.
    periods: HashMap<TimePeriod, PeriodState>,
}

impl PublishState {
    /// The periods, in no particular order.
    pub(crate) fn periods(&self) -> impl Iterator<Item = &PeriodState> {
        self.periods.values()
    }

    /// The periods, in order.
    pub(crate) fn publish_periods(&self) -> Vec<PublishPeriod> {
        let mut v: Vec<PublishPeriod> = self.periods.values().map(|p| p.period).collect();
        v.sort_by_key(|p| p.time_period.interval_num());
        v
    }

    /// The time periods we publish for, in order.
    pub(crate) fn time_periods(&self) -> Vec<TimePeriod> {
        self.publish_periods()
            .iter()
            .map(|p| p.time_period)
            .collect()
    }

    /// One period's state.
    pub(crate) fn period(&self, tp: TimePeriod) -> Option<&PeriodState> {
        self.periods.get(&tp)
    }

    /// Makes the periods and their HSDirs those of the latest consensus: per period, the
    /// HSDirs we upload to and the identities of those clients fetch from.
    ///
    /// Periods that left are dropped; new periods start with no descriptor; HSDirs that joined
    /// a ring start dirty (they get the period's descriptor); HSDirs that stayed keep what
    /// they have, so a new consensus with the same ring uploads nothing. Returns the periods
    /// added.
    pub(crate) fn set_rings(
        &mut self,
        rings: Vec<(PublishPeriod, Vec<HsDir>, Vec<RsaIdentity>)>,
        now: Instant,
    ) -> Vec<TimePeriod> {
        let mut added = Vec::new();
        let keep: Vec<TimePeriod> = rings.iter().map(|(p, _, _)| p.time_period).collect();
        self.periods.retain(|tp, _| keep.contains(tp));
        for (period, hsdirs, mut fetch) in rings {
            let st = self.periods.entry(period.time_period).or_insert_with(|| {
                added.push(period.time_period);
                PeriodState::new(period, now)
            });
            st.period = period;
            fetch.sort();
            fetch.dedup();
            st.fetch = fetch;
            let mut old = std::mem::take(&mut st.hsdirs);
            for h in hsdirs {
                let mut hs = old
                    .remove(&h.id)
                    .unwrap_or_else(|| HsDirState::new(h.clone()));
                let h_id = h.id;
                hs.hsdir = h;
                if hs.assigned.is_none() {
                    hs.assigned = st.published.as_ref().and_then(|p| p.variant_for(&h_id));
                }
                st.hsdirs.insert(hs.hsdir.id, hs);
            }
        }
        added
    }

    /// Installs the descriptors of a build for `reason`. After a refusal they go only to the
    /// HSDirs that refused (each its own variant, keeping their backoff); otherwise to every
    /// HSDir of the period, each of which is tried at once.
    pub(crate) fn install(
        &mut self,
        tp: TimePeriod,
        publication: Publication,
        reason: BuildReason,
        inputs: BuildInputs,
        at: (Instant, SystemTime),
        refresh_delay: Duration,
    ) {
        let Some(st) = self.periods.get_mut(&tp) else {
            return;
        };
        let (now, wall) = at;
        st.last_build = Some(now);
        st.refusal_pending = false;
        if reason == BuildReason::Refused {
            for h in st.hsdirs.values_mut().filter(|h| h.refused) {
                h.assigned = publication.variant_for(&h.hsdir.id);
                h.refused = false;
                // A new counter deserves a prompt try, until the HSDir has refused so many
                // that something else must be wrong: then it waits for its slow retry.
                if h.refusals_in_a_row < REJECTION_ALARM {
                    h.not_before = None;
                }
            }
            // The others keep the descriptor they hold (same content, lower counter); this
            // one is still the newest, which status shows and HSDirs joining the ring get.
            st.published = Some(publication);
            st.built_inputs = Some(inputs);
            st.built_at = Some(wall);
            return;
        }
        for h in st.hsdirs.values_mut() {
            h.assigned = publication.variant_for(&h.hsdir.id);
            h.refused = false;
            h.not_before = None;
        }
        st.published = Some(publication);
        st.clients_changed = false;
        st.listing_changed = None;
        st.built_inputs = Some(inputs);
        st.built_at = Some(wall);
        st.refresh_at = Some(now + refresh_delay);
    }

    /// Marks every period that has a descriptor: health changed which backends may be
    /// listed, so a build whose inputs differ is due at once.
    pub(crate) fn listing_changed(&mut self, now: Instant) {
        for st in self
            .periods
            .values_mut()
            .filter(|st| st.published.is_some())
        {
            st.listing_changed.get_or_insert(now);
        }
    }

    /// Clears the mark of [`PublishState::listing_changed`] on period `tp` (a build would
    /// list the same: nothing to do).
    pub(crate) fn listing_settled(&mut self, tp: TimePeriod) {
        if let Some(st) = self.periods.get_mut(&tp) {
            st.listing_changed = None;
        }
    }

    /// Makes every period that has a descriptor rebuild it at once: the authorized clients
    /// changed.
    pub(crate) fn clients_changed(&mut self) {
        for st in self.periods.values_mut() {
            st.clients_changed = st.published.is_some();
        }
    }

    /// Marks a rebuild as not possible now (e.g. no intro points): the timers stay, but no
    /// build is attempted again before `min_gap`.
    pub(crate) fn build_failed(&mut self, tp: TimePeriod, now: Instant) {
        if let Some(st) = self.periods.get_mut(&tp) {
            st.last_build = Some(now);
        }
    }

    /// At most `limit` of the uploads due at `now`; each is marked in flight.
    pub(crate) fn take_due(&mut self, now: Instant, limit: usize) -> Vec<UploadJob> {
        let mut jobs = Vec::new();
        for st in self.periods.values_mut() {
            let tp = st.period.time_period;
            for h in st.hsdirs.values_mut() {
                if jobs.len() >= limit {
                    return jobs;
                }
                if h.upload_at(now).is_some_and(|t| t <= now) {
                    if let Some(d) = &h.assigned {
                        h.uploading = true;
                        jobs.push(UploadJob {
                            period: tp,
                            hsdir: h.hsdir.clone(),
                            descriptor: d.clone(),
                        });
                    }
                }
            }
        }
        jobs
    }

    /// The earliest time an upload is due.
    pub(crate) fn next_upload(&self, now: Instant) -> Option<Instant> {
        self.periods
            .values()
            .flat_map(|p| p.hsdirs.values())
            .filter_map(|h| h.upload_at(now))
            .min()
    }

    /// The state of HSDir `hsdir` in period `tp`, if both are known.
    fn hsdir_mut(&mut self, tp: TimePeriod, hsdir: &RsaIdentity) -> Option<&mut HsDirState> {
        self.periods.get_mut(&tp)?.hsdirs.get_mut(hsdir)
    }

    /// HSDir `hsdir` of period `tp` holds revision `held`, not ours: what we have built so
    /// far is not sent there again (the rebuild after its refusal goes above `held`).
    pub(crate) fn hsdir_holds(
        &mut self,
        tp: TimePeriod,
        hsdir: &RsaIdentity,
        held: RevisionCounter,
    ) {
        if let Some(h) = self.hsdir_mut(tp, hsdir) {
            h.holds = Some(held);
        }
    }

    /// The periods whose HSDirs all hold our descriptor (none dirty, none uploading).
    pub(crate) fn settled(&self) -> Vec<Settled> {
        let mut out = Vec::new();
        for st in self.periods.values() {
            if st.published.is_none() || st.hsdirs.is_empty() {
                continue;
            }
            let holders: Option<Vec<(HsDir, Arc<BuiltDescriptor>)>> = st
                .hsdirs
                .values()
                .map(|h| {
                    let d = h.assigned.as_ref()?;
                    (h.uploaded == Some(d.revision) && !h.uploading)
                        .then(|| (h.hsdir.clone(), d.clone()))
                })
                .collect();
            if let Some(mut holders) = holders {
                holders.sort_by_key(|(h, _)| h.id);
                out.push(Settled {
                    period: st.period.time_period,
                    holders,
                });
            }
        }
        out.sort_by_key(|s| s.period.interval_num());
        out
    }

    /// The descriptor HSDir `hsdir` of period `tp` should hold now, if any.
    pub(crate) fn assigned_to(
        &self,
        tp: TimePeriod,
        hsdir: &RsaIdentity,
    ) -> Option<Arc<BuiltDescriptor>> {
        self.periods.get(&tp)?.hsdirs.get(hsdir)?.assigned.clone()
    }

    /// HSDir `hsdir` of period `tp` refused `revision` because another publisher is ahead
    /// there (a peek showed it): that refusal does not count towards the alarm, which is for
    /// refusals nothing explains.
    pub(crate) fn refusal_explained(
        &mut self,
        tp: TimePeriod,
        hsdir: &RsaIdentity,
        revision: RevisionCounter,
    ) {
        if let Some(h) = self.hsdir_mut(tp, hsdir) {
            if h.last_refused == Some(revision) {
                h.refusals_in_a_row = h.refusals_in_a_row.saturating_sub(1);
            }
        }
    }

    /// HSDir `hsdir` of period `tp` holds another publisher's descriptor that lists something
    /// else, at or above our counter: it needs a rebuild above it, as after a refusal (the
    /// rebuild goes to the HSDirs that need it, see [`PublishState::install`]).
    pub(crate) fn needs_rebuild(&mut self, tp: TimePeriod, hsdir: &RsaIdentity) {
        if let Some(st) = self.periods.get_mut(&tp) {
            if let Some(h) = st.hsdirs.get_mut(hsdir) {
                h.refused = true;
                st.refusal_pending = true;
            }
        }
    }

    /// HSDir `hsdir` of period `tp` was found without our descriptor (nothing, or an older
    /// revision): it is sent there again.
    pub(crate) fn hsdir_lost(&mut self, tp: TimePeriod, hsdir: &RsaIdentity) {
        if let Some(h) = self.hsdir_mut(tp, hsdir) {
            h.uploaded = None;
            h.not_before = None;
        }
    }

    /// Records one upload outcome at `now`.
    pub(crate) fn record<R: rand::Rng>(
        &mut self,
        job: &UploadJob,
        verdict: UploadVerdict<'_>,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Recorded {
        let Some(st) = self.periods.get_mut(&job.period) else {
            return Recorded::Stale;
        };
        st.last_attempt = Some(wall);
        let Some(h) = st.hsdirs.get_mut(&job.hsdir.id) else {
            return Recorded::Stale; // the ring changed while we uploaded
        };
        h.uploading = false;
        let current = h
            .assigned
            .as_ref()
            .is_some_and(|d| d.revision == job.descriptor.revision);
        let (message, refused) = match verdict {
            UploadVerdict::Accepted => {
                h.uploaded = Some(job.descriptor.revision);
                h.last_result = Some(Ok(wall));
                h.backoff.reset();
                h.not_before = None;
                h.refused = false;
                h.refusals_in_a_row = 0;
                h.last_refused = None;
                // The retry of the same descriptor got through: no rebuild needed unless
                // another HSDir still refuses.
                st.refusal_pending = st.hsdirs.values().any(|h| h.refused);
                return Recorded::Normal;
            }
            UploadVerdict::Refused(message) => (message, true),
            UploadVerdict::Failed(message) => (message, false),
        };
        h.last_result = Some(Err(message.to_owned()));
        let mut delay = h.backoff.next_delay(rng);
        if refused && h.last_refused != Some(job.descriptor.revision) {
            h.refusals_in_a_row = h.refusals_in_a_row.saturating_add(1);
            h.last_refused = Some(job.descriptor.revision);
        }
        if refused && h.refusals_in_a_row >= REJECTION_ALARM {
            delay = delay.max(SLOW_RETRY);
        }
        h.not_before = Some(now + delay);
        if refused && current {
            h.refused = true;
            let n = h.refusals_in_a_row;
            st.refusal_pending = true;
            st.last_refusal = Some(format!("{}: {message}", job.hsdir.id));
            Recorded::Refused(n)
        } else {
            Recorded::Normal
        }
    }
}

/// A refresh interval: uniformly random in `[min, max]`, like C tor and Arti, so that
/// republications of different services do not synchronise.
pub(crate) fn refresh_delay<R: rand::Rng>(min: Duration, max: Duration, rng: &mut R) -> Duration {
    if max <= min {
        return min;
    }
    let span = (max - min).as_secs().max(1);
    min + Duration::from_secs(rng.next_u64() % (span + 1))
}
