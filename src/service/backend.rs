//! One backend, as the runner knows it: one record per backend, holding everything about it.
//!
//! # Per-period descriptors
//!
//! A C tor service publishes a descriptor for each time period it publishes for (the current
//! one and, once a shared random value exists, the previous or next), and each has **its own
//! intro points**. At a time-period change the service retires the intro points of the
//! descriptor whose period ended. So we keep a snapshot per period ([`BackendPeriod`]) and
//! draw each frontend period's intro points from the backend's descriptor for *that* period,
//! falling back to the nearest period only when the backend has none for it
//! ([`Backend::snapshot_for`]).
//!
//! # When is a fetched descriptor news?
//!
//! The same (period, revision) is the same descriptor whatever its bytes: C tor encodes it
//! afresh for each HSDir. A higher revision with the same intro points and carried lines is a
//! *refresh*: proof of life, new validity, nothing to republish. Only other intro points or
//! lines are a *change* ([`Intake`]).
//!
//! # When is a backend gone?
//!
//! A live C tor service re-uploads its descriptors at least every two hours, each time with a
//! higher revision counter. A snapshot whose revision has not gone up for
//! the runner's `stale_after` (see [`Timing`](super::Timing)) is dropped, and that revision (or an
//! older one) is never taken back: HSDirs keep a dead backend's last descriptor for hours,
//! and fetching it again must not resurrect it. A snapshot also leaves the moment its own
//! validity ends.
//!
//! # When do we fetch?
//!
//! One fetch per backend per [`FetchPacing::interval`], each for the period fetched least
//! recently, so with two periods each is fetched every other interval. When a fetch shows a
//! change in one period (a restart or rotation changes both), the backend's other periods
//! are fetched at once. A period never fetched is fetched at once. While the backend has no
//! usable descriptor the interval starts at [`FetchPacing::retry`] and doubles up to
//! [`FetchPacing::missing_interval`].

use std::time::{Duration, Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;

use crate::descriptor::{BackendKeys, BackendSnapshot, IntakeError};
use crate::health::Monitor;
use crate::onion::OnionAddress;

/// How often a backend is fetched (from [`Timing`](super::Timing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchPacing {
    /// Between two fetches of a backend that has a usable descriptor.
    pub(crate) interval: Duration,
    /// The first interval while it has none; doubles with each such fetch.
    pub(crate) retry: Duration,
    /// The longest interval while it has none.
    pub(crate) missing_interval: Duration,
}

/// What a fetched snapshot meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intake {
    /// The first descriptor for this period, or other intro points or lines than before.
    Changed,
    /// A higher revision with the same content: the backend is alive, nothing to republish.
    Refreshed,
    /// The revision we hold (or an older one, from a lagging HSDir): nothing new.
    NotNewer,
    /// A revision at or below one we retired as stale: the backend is still gone.
    StillStale,
}

/// What we know of one backend for one time period.
#[derive(Debug)]
pub(crate) struct BackendPeriod {
    /// The period.
    pub period: TimePeriod,
    /// Its keys for the period (blinded id and subcredential), or why they cannot be derived.
    pub keys: Result<BackendKeys, IntakeError>,
    /// The last good descriptor for this period.
    pub snapshot: Option<BackendSnapshot>,
    /// When the snapshot's revision was first seen (it goes up with every re-upload).
    pub revision_seen_at: Option<SystemTime>,
    /// A revision judged stale: it, and anything older, is ignored.
    pub retired: Option<RevisionCounter>,
    /// When this period was last fetched (finished).
    pub last_fetch: Option<Instant>,
    /// Some HSDir has answered for this period (a descriptor, or "not found"): the backend
    /// has been asked, as opposed to fetches that failed before reaching an HSDir's answer.
    pub answered: bool,
    /// Fetch as soon as possible (a sibling period changed).
    pub urgent: bool,
    /// The last fetch problem, cleared by a successful fetch.
    pub last_error: Option<String>,
}

impl BackendPeriod {
    /// State for a period never fetched.
    fn new(address: OnionAddress, period: TimePeriod) -> Self {
        BackendPeriod {
            period,
            keys: BackendKeys::derive(address, period),
            snapshot: None,
            revision_seen_at: None,
            retired: None,
            last_fetch: None,
            answered: false,
            urgent: false,
            last_error: None,
        }
    }

    /// The snapshot if usable at `wall`.
    pub(crate) fn usable(&self, wall: SystemTime) -> Option<&BackendSnapshot> {
        self.snapshot
            .as_ref()
            .filter(|s| s.is_valid_at(wall) && !s.intro_points.is_empty())
    }
}

/// Everything the runner knows of one backend.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Its name in the config.
    pub name: String,
    /// Its address.
    pub address: OnionAddress,
    /// Per time period we publish for, oldest first.
    pub periods: Vec<BackendPeriod>,
    /// When the last fetch (any period) started.
    pub last_fetch_started: Option<Instant>,
    /// A fetch is in flight.
    pub fetching: bool,
    /// Consecutive fetches after which the backend still had no usable descriptor.
    pub missing_rounds: u32,
    /// When a content change was last seen (upstream's `introSetModified`).
    pub changed_at: Option<SystemTime>,
    /// Its health: probes, drain, the application's signal.
    pub health: Monitor,
    /// Since when some of its periods are being checked again (some period is `urgent`):
    /// after a change or a disappearance in a sibling period, or another frontend listing
    /// something else. Builds wait for that check, briefly.
    recheck_started: Option<SystemTime>,
}

impl Backend {
    /// A backend we know nothing about yet.
    pub(crate) fn new(name: String, address: OnionAddress) -> Self {
        Backend {
            name,
            address,
            periods: Vec::new(),
            last_fetch_started: None,
            fetching: false,
            missing_rounds: 0,
            changed_at: None,
            health: Monitor::new(None, false),
            recheck_started: None,
        }
    }

    /// Follows the periods we publish for: new ones start unfetched, ended ones are dropped.
    pub(crate) fn set_periods(&mut self, periods: &[TimePeriod]) {
        self.periods.retain(|st| periods.contains(&st.period));
        for &p in periods {
            if self.period(p).is_none() {
                self.periods.push(BackendPeriod::new(self.address, p));
            }
        }
        self.periods.sort_by_key(|st| st.period.interval_num());
    }

    /// Its state for `period`.
    pub(crate) fn period(&self, period: TimePeriod) -> Option<&BackendPeriod> {
        self.periods.iter().find(|st| st.period == period)
    }

    /// Its state for `period`, mutably.
    pub(crate) fn period_mut(&mut self, period: TimePeriod) -> Option<&mut BackendPeriod> {
        self.periods.iter_mut().find(|st| st.period == period)
    }

    /// True when some period has a usable descriptor.
    pub(crate) fn is_usable(&self, wall: SystemTime) -> bool {
        self.periods.iter().any(|p| p.usable(wall).is_some())
    }

    /// The snapshot to draw intro points from for frontend period `period`: the backend's
    /// own descriptor for that period, else its descriptor for the nearest period (its intro
    /// points are live too; the backend accepts introductions for the frontend's previous,
    /// current and next periods on any of them).
    pub(crate) fn snapshot_for(
        &self,
        period: TimePeriod,
        wall: SystemTime,
    ) -> Option<&BackendSnapshot> {
        if let Some(s) = self.period(period).and_then(|p| p.usable(wall)) {
            return Some(s);
        }
        self.periods
            .iter()
            .filter_map(|st| Some((st.period, st.usable(wall)?)))
            .min_by_key(|(p, _)| p.interval_num().abs_diff(period.interval_num()))
            .map(|(_, s)| s)
    }

    /// When this backend should be fetched next, and for which period; `None` while a fetch
    /// is in flight or there is no period. `now` is returned for a fetch due at once.
    pub(crate) fn next_fetch(
        &self,
        now: Instant,
        pacing: &FetchPacing,
    ) -> Option<(Instant, TimePeriod)> {
        if self.fetching {
            return None;
        }
        // Unfetched or urgent periods first, at once.
        if let Some(st) = self
            .periods
            .iter()
            .find(|st| st.last_fetch.is_none() || st.urgent)
        {
            return Some((now, st.period));
        }
        // Otherwise the period fetched least recently, one interval after the last fetch.
        let p = self.periods.iter().min_by_key(|st| st.last_fetch)?.period;
        let interval = if self.missing_rounds > 0 {
            let factor = 1u32 << (self.missing_rounds - 1).min(8);
            pacing
                .retry
                .saturating_mul(factor)
                .min(pacing.missing_interval)
        } else {
            pacing.interval
        };
        let at = self.last_fetch_started.map_or(now, |t| t + interval);
        Some((at, p))
    }

    /// Takes in a verified snapshot for its period, fetched at `wall`.
    pub(crate) fn take_in(&mut self, snapshot: BackendSnapshot, wall: SystemTime) -> Intake {
        let period = snapshot.period;
        let Some(st) = self.period_mut(period) else {
            return Intake::NotNewer; // the period ended while we fetched
        };
        if st
            .retired
            .is_some_and(|r| u64::from(snapshot.revision) <= u64::from(r))
        {
            return Intake::StillStale;
        }
        let outcome = match &st.snapshot {
            Some(old) if u64::from(snapshot.revision) <= u64::from(old.revision) => {
                return Intake::NotNewer
            }
            Some(old) if old.content_key() == snapshot.content_key() => Intake::Refreshed,
            _ => Intake::Changed,
        };
        st.snapshot = Some(snapshot);
        st.revision_seen_at = Some(wall);
        st.retired = None;
        if outcome == Intake::Changed {
            self.changed_at = Some(wall);
            // A restart or rotation changes every period: look at the others now rather than
            // one interval later.
            self.check_other_periods(period, wall);
        }
        outcome
    }

    /// Marks every period but `period` for a fetch at once (a change or disappearance seen
    /// in `period` at `wall` probably happened in all of them).
    fn check_other_periods(&mut self, period: TimePeriod, wall: SystemTime) {
        let mut any = false;
        for other in &mut self.periods {
            if other.period != period {
                other.urgent = true;
                any = true;
            }
        }
        if any {
            self.recheck_started.get_or_insert(wall);
        }
    }

    /// Marks `period` for a fetch at once, and builds wait for it (bounded): another
    /// frontend with our key published something else, perhaps after a change of this
    /// backend we have not seen yet.
    pub(crate) fn recheck(&mut self, period: TimePeriod, wall: SystemTime) {
        if let Some(st) = self.period_mut(period) {
            st.urgent = true;
            self.recheck_started.get_or_insert(wall);
        }
    }

    /// While some of its periods are being checked again (fetches due at once or under way:
    /// a change seen in a sibling period, or another frontend listing something else), since
    /// when. A build that would list what this backend published before that check ends may
    /// have to be redone a minute later.
    pub(crate) fn rechecking_since(&self) -> Option<SystemTime> {
        self.recheck_started
            .filter(|_| self.periods.iter().any(|p| p.urgent))
    }

    /// A fetch for `period` starts at `now`.
    pub(crate) fn fetch_started(&mut self, now: Instant) {
        self.fetching = true;
        self.last_fetch_started = Some(now);
    }

    /// A fetch for `period` that was due could not even start (no keys for the period, no
    /// HSDir ring): it counts as a fetch that failed with `error`, so it is retried on the
    /// usual schedule, not in a loop.
    pub(crate) fn fetch_impossible(
        &mut self,
        period: TimePeriod,
        error: String,
        now: Instant,
        wall: SystemTime,
    ) {
        self.last_fetch_started = Some(now);
        self.fetch_ended(period, Some(error), false, now, wall);
    }

    /// A fetch for `period` ended at `now`: `error` is its problem (cleared by `None`), and
    /// `answered` says whether an HSDir answered (with a descriptor or "not found"), which
    /// counts as having asked the backend.
    pub(crate) fn fetch_ended(
        &mut self,
        period: TimePeriod,
        error: Option<String>,
        answered: bool,
        now: Instant,
        wall: SystemTime,
    ) {
        if let Some(st) = self.period_mut(period) {
            st.last_error = error;
            st.answered |= answered;
        }
        self.fetch_finished(period, now, wall);
    }

    /// Records that a fetch for `period` finished at `now` (whatever its outcome).
    pub(crate) fn fetch_finished(&mut self, period: TimePeriod, now: Instant, wall: SystemTime) {
        self.fetching = false;
        if let Some(st) = self.period_mut(period) {
            st.last_fetch = Some(now);
            st.urgent = false;
        }
        if !self.periods.iter().any(|p| p.urgent) {
            self.recheck_started = None;
        }
        if self.is_usable(wall) {
            self.missing_rounds = 0;
        } else {
            self.missing_rounds = self.missing_rounds.saturating_add(1);
        }
    }

    /// Every HSDir said it has no descriptor for `period`: the backend does not publish for
    /// it (stopped, or not started yet). Returns true if a snapshot was dropped.
    pub(crate) fn not_found(&mut self, period: TimePeriod, wall: SystemTime) -> bool {
        let dropped = self
            .period_mut(period)
            .and_then(|st| st.snapshot.take())
            .is_some();
        if dropped {
            // A backend that vanished from one period's HSDirs has probably stopped: look
            // at its other periods now, so that one rebuild covers it.
            self.check_other_periods(period, wall);
        }
        dropped
    }

    /// The earliest wall-clock time at which a snapshot expires or goes stale.
    pub(crate) fn next_expiry(&self, stale_after: Duration) -> Option<SystemTime> {
        self.periods
            .iter()
            .filter(|st| st.snapshot.is_some())
            .flat_map(|st| {
                let until = st.snapshot.as_ref().and_then(|s| s.valid_until);
                let stale = st.revision_seen_at.map(|t| t + stale_after);
                [until, stale]
            })
            .flatten()
            .min()
    }

    /// Drops snapshots that expired or went stale by `wall`; returns a description of each.
    pub(crate) fn expire(&mut self, wall: SystemTime, stale_after: Duration) -> Vec<String> {
        let mut gone = Vec::new();
        for st in &mut self.periods {
            let p = st.period;
            let Some(s) = &st.snapshot else { continue };
            if s.valid_until.is_some_and(|t| t < wall) {
                gone.push(format!(
                    "its descriptor for time period {} expired",
                    p.interval_num()
                ));
                st.snapshot = None;
            } else if st.revision_seen_at.is_some_and(|t| t + stale_after <= wall) {
                gone.push(format!(
                    "revision {} for time period {} has not gone up for {} (a running C tor service re-uploads at least every 2 hours): considered gone",
                    u64::from(s.revision),
                    p.interval_num(),
                    humantime::format_duration(stale_after)
                ));
                st.retired = Some(s.revision);
                st.snapshot = None;
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::synthetic::{periods_around, SyntheticBackend};
    use crate::descriptor::{claimed_revision, intake, DEFAULT_MAX_DESCRIPTOR_LEN};
    use rand::SeedableRng as _;

    /// A backend and a way to make its descriptors at a given time.
    struct Fixture {
        synthetic: SyntheticBackend,
        rng: rand::rngs::StdRng,
        t0: SystemTime,
    }

    impl Fixture {
        fn new() -> Self {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let synthetic = SyntheticBackend::generate(&mut rng, 3);
            let t0 =
                humantime::parse_rfc3339("2026-11-25T15:04:05Z").unwrap_or(SystemTime::UNIX_EPOCH);
            Fixture { synthetic, rng, t0 }
        }

        /// The descriptor text the backend uploads `secs` after t0 for the current period.
        fn text(&mut self, secs: u64) -> (String, SystemTime) {
            let at = self.t0 + Duration::from_secs(secs);
            let p = periods_around(self.t0)[0];
            let text = self
                .synthetic
                .descriptor(&p, at, &mut self.rng)
                .unwrap_or_default();
            (text, at)
        }

        fn snapshot(&mut self, secs: u64) -> BackendSnapshot {
            let (text, at) = self.text(secs);
            let p = periods_around(self.t0)[0];
            let keys = BackendKeys::derive(self.synthetic.address(), p.time_period);
            let keys = keys.unwrap_or_else(|e| panic!("{e}"));
            intake(&keys, &text, at, DEFAULT_MAX_DESCRIPTOR_LEN).unwrap_or_else(|e| panic!("{e}"))
        }
    }

    /// A disappearance in one period starts a check of the others, which lasts until their
    /// fetches end: builds wait for it (see the runner's build rule).
    #[test]
    fn a_disappearance_is_checked_in_the_other_periods() {
        let mut f = Fixture::new();
        let ps = periods_around(f.t0);
        let (p0, p1) = (ps[0].time_period, ps[1].time_period);
        let mut b = Backend::new("b".into(), f.synthetic.address());
        b.set_periods(&[p0, p1]);
        let now = Instant::now();
        assert_eq!(b.take_in(f.snapshot(10), f.t0), Intake::Changed);
        // The first descriptor also made the other period urgent; its fetch ends.
        b.fetch_finished(p1, now, f.t0);
        b.fetch_finished(p0, now, f.t0);
        assert_eq!(b.rechecking_since(), None);
        let later = f.t0 + Duration::from_secs(600);
        assert!(b.not_found(p0, later), "its snapshot is dropped");
        assert_eq!(b.rechecking_since(), Some(later));
        assert_eq!(
            b.next_fetch(now, &crate::service::Timing::default().fetch_pacing()),
            Some((now, p1))
        );
        b.fetch_finished(p1, now, later);
        assert_eq!(b.rechecking_since(), None, "the check is over");
    }

    #[test]
    fn same_descriptor_in_other_bytes_is_recognised_without_crypto() {
        let mut f = Fixture::new();
        let (a, _) = f.text(10);
        let (b, _) = f.text(10);
        assert_ne!(a, b, "two encodings differ in bytes");
        assert_eq!(claimed_revision(&a), claimed_revision(&b));
        assert!(claimed_revision(&a).is_some());
        assert_eq!(
            claimed_revision("hs-descriptor 3\nrevision-counter x\n"),
            None
        );
    }

    #[test]
    fn a_refresh_is_not_a_change_and_older_copies_are_ignored() {
        let mut f = Fixture::new();
        let p = periods_around(f.t0)[0].time_period;
        let mut b = Backend::new("b".into(), f.synthetic.address());
        b.set_periods(&[p]);
        let s1 = f.snapshot(10);
        let s2 = f.snapshot(4000);
        assert_eq!(b.take_in(s1.clone(), f.t0), Intake::Changed);
        assert_eq!(
            b.take_in(s2, f.t0 + Duration::from_secs(4000)),
            Intake::Refreshed
        );
        assert_eq!(
            b.take_in(s1, f.t0 + Duration::from_secs(4000)),
            Intake::NotNewer
        );
        // New intro points: a change.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        f.synthetic.intro_points = SyntheticBackend::generate(&mut rng, 2).intro_points;
        let s3 = f.snapshot(5000);
        assert_eq!(
            b.take_in(s3, f.t0 + Duration::from_secs(5000)),
            Intake::Changed
        );
    }

    #[test]
    fn a_backend_whose_revision_stalls_leaves_and_stays_gone() {
        let mut f = Fixture::new();
        let p = periods_around(f.t0)[0].time_period;
        let stale_after = Duration::from_secs(135 * 60);
        let mut b = Backend::new("b".into(), f.synthetic.address());
        b.set_periods(&[p]);
        let s1 = f.snapshot(10);
        assert_eq!(b.take_in(s1.clone(), f.t0), Intake::Changed);
        assert_eq!(b.next_expiry(stale_after), Some(f.t0 + stale_after));
        assert!(b
            .expire(f.t0 + stale_after - Duration::from_secs(1), stale_after)
            .is_empty());
        let gone = b.expire(f.t0 + stale_after, stale_after);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert!(!b.is_usable(f.t0 + stale_after));
        // HSDirs still serve the same old revision: it does not come back.
        assert_eq!(b.take_in(s1, f.t0 + stale_after), Intake::StillStale);
        assert!(!b.is_usable(f.t0 + stale_after));
        // A new revision does.
        let s2 = f.snapshot(9000);
        assert_eq!(
            b.take_in(s2, f.t0 + Duration::from_secs(9000)),
            Intake::Changed
        );
    }

    #[test]
    fn fetch_schedule_alternates_periods_and_hurries_after_a_change() {
        let mut f = Fixture::new();
        let ps = periods_around(f.t0);
        let (p0, p1) = (ps[0].time_period, ps[1].time_period);
        let pacing = crate::service::Timing::default().fetch_pacing();
        let now = Instant::now();
        let wall = f.t0;
        let mut b = Backend::new("b".into(), f.synthetic.address());
        b.set_periods(&[p0, p1]);
        // Never fetched: both at once, one after the other.
        assert_eq!(b.next_fetch(now, &pacing), Some((now, p0)));
        b.last_fetch_started = Some(now);
        b.fetching = true;
        assert_eq!(b.next_fetch(now, &pacing), None, "one fetch at a time");
        let s = f.snapshot(10);
        b.take_in(s, wall);
        b.fetch_finished(p0, now, wall);
        assert_eq!(b.next_fetch(now, &pacing), Some((now, p1)));
        b.fetching = true;
        b.fetch_finished(p1, now, wall);
        // Then one interval later, the period fetched least recently.
        let later = now + Duration::from_secs(1);
        let (at, _) = b.next_fetch(later, &pacing).unwrap_or((later, p0));
        assert_eq!(at, now + pacing.interval);
        // A change in one period makes the other urgent.
        b.last_fetch_started = Some(later);
        b.fetching = true;
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        f.synthetic.intro_points = SyntheticBackend::generate(&mut rng, 3).intro_points;
        let s = f.snapshot(20);
        assert_eq!(b.take_in(s, wall), Intake::Changed);
        b.fetch_finished(p0, later, wall);
        assert_eq!(b.next_fetch(later, &pacing), Some((later, p1)));
    }
}
