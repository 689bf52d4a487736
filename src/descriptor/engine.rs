//! The per-service descriptor state: what we know of each backend and when to rebuild.
//!
//! An [`Engine`] belongs to one frontend service. The network layer feeds it descriptor texts
//! ([`Engine::take_in`], [`Engine::take_in_many`]) and asks it to build
//! ([`Engine::build`]) when [`Engine::needs_build`] says the selection is stale. It keeps:
//!
//! * per backend, the keys for the current period (derived once) and the last good snapshot.
//!   A rejected descriptor never replaces a good snapshot; an older revision never replaces a
//!   newer one (a lagging HSDir can serve an old copy). Snapshots leave only when their own
//!   validity ends ([`Engine::expire`]);
//! * per period, the frontend's derived keys and the last revision counter used, so that the
//!   counter strictly increases even for two builds in one second.
//!
//! Recognising an unchanged descriptor is a byte comparison with the snapshot's text, so a
//! steady-state round (nothing changed anywhere) does no cryptography at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use rand::SeedableRng as _;
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_protover::Protocols;

use super::build::{
    build_descriptor, BuildError, BuildRequest, BuiltDescriptor, FrontendPeriodKeys,
};
use super::intake::{intake_shared, BackendKeys, BackendSnapshot, IntakeError};
use super::select::{resolve, select_intro_points};
use super::{PublishPeriod, DEFAULT_MAX_DESCRIPTOR_LEN, MAX_INTRO_POINTS};
use crate::keys::FrontendKey;
use crate::onion::OnionAddress;

/// What taking in a descriptor changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Byte-identical to the snapshot we hold: nothing to do.
    Unchanged,
    /// A new snapshot replaced the old one (or there was none).
    Updated {
        /// Its revision counter.
        revision: RevisionCounter,
    },
    /// Valid, but older than the snapshot we hold (a lagging HSDir): ignored.
    Older {
        /// Its revision counter.
        revision: RevisionCounter,
    },
}

/// What the engine knows of one backend.
#[derive(Debug)]
pub struct BackendState {
    /// The backend.
    pub address: OnionAddress,
    /// Keys for the period of the last intake.
    keys: Option<BackendKeys>,
    /// The last good snapshot.
    pub snapshot: Option<BackendSnapshot>,
    /// The last intake error, cleared by the next success.
    pub last_error: Option<IntakeError>,
}

/// The descriptor state of one frontend service.
pub struct Engine {
    /// The frontend key.
    frontend: Arc<FrontendKey>,
    /// The backends, in configuration order.
    backends: Vec<BackendState>,
    /// Frontend keys per period (at most a few: previous, current, next).
    period_keys: HashMap<TimePeriod, Arc<FrontendPeriodKeys>>,
    /// Last revision counter built per period.
    last_revision: HashMap<TimePeriod, RevisionCounter>,
    /// Maximum descriptor size.
    max_len: usize,
    /// True when the snapshots changed since the last build.
    dirty: bool,
}

impl Engine {
    /// Creates the state for `frontend` with the given backends.
    pub fn new(
        frontend: Arc<FrontendKey>,
        backends: impl IntoIterator<Item = OnionAddress>,
    ) -> Self {
        Engine {
            frontend,
            backends: backends
                .into_iter()
                .map(|address| BackendState {
                    address,
                    keys: None,
                    snapshot: None,
                    last_error: None,
                })
                .collect(),
            period_keys: HashMap::new(),
            last_revision: HashMap::new(),
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
            dirty: true,
        }
    }

    /// Sets the maximum descriptor size (from the consensus).
    pub fn set_max_len(&mut self, max_len: usize) {
        if max_len != self.max_len {
            self.max_len = max_len;
            self.dirty = true;
        }
    }

    /// The frontend key.
    pub fn frontend(&self) -> &Arc<FrontendKey> {
        &self.frontend
    }

    /// The backends.
    pub fn backends(&self) -> &[BackendState] {
        &self.backends
    }

    /// The keys of backend `idx` for `period`, derived on first use in that period.
    pub fn backend_keys(
        &mut self,
        idx: usize,
        period: TimePeriod,
    ) -> Option<Result<BackendKeys, IntakeError>> {
        let b = self.backends.get_mut(idx)?;
        if let Some(k) = b.keys.as_ref().filter(|k| k.period() == period) {
            return Some(Ok(k.clone()));
        }
        Some(BackendKeys::derive(b.address, period).inspect(|k| b.keys = Some(k.clone())))
    }

    /// Takes in a descriptor fetched for backend `idx` in `period`.
    ///
    /// Returns `None` if `idx` is out of range.
    pub fn take_in(
        &mut self,
        idx: usize,
        period: TimePeriod,
        text: Arc<str>,
        now: SystemTime,
    ) -> Option<Result<IntakeOutcome, IntakeError>> {
        if self.is_unchanged(idx, period, &text, now)? {
            return Some(Ok(IntakeOutcome::Unchanged));
        }
        let keys = match self.backend_keys(idx, period)? {
            Ok(k) => k,
            Err(e) => return Some(Err(e)),
        };
        let result = intake_shared(&keys, text, now, self.max_len);
        Some(self.apply(idx, result))
    }

    /// Takes in several descriptors (backend index, period, text), verifying the changed ones
    /// in parallel on the machine's cores. Results are in input order.
    pub fn take_in_many(
        &mut self,
        items: Vec<(usize, TimePeriod, Arc<str>)>,
        now: SystemTime,
    ) -> Vec<Option<Result<IntakeOutcome, IntakeError>>> {
        let mut results: Vec<Option<Result<IntakeOutcome, IntakeError>>> = vec![None; items.len()];
        // Cheap pass: recognise unchanged texts and derive keys for the rest.
        let mut work: Vec<(usize, usize, BackendKeys, Arc<str>)> = Vec::new();
        for (pos, (idx, period, text)) in items.into_iter().enumerate() {
            match self.is_unchanged(idx, period, &text, now) {
                None => {}
                Some(true) => results[pos] = Some(Ok(IntakeOutcome::Unchanged)),
                Some(false) => match self.backend_keys(idx, period) {
                    Some(Ok(keys)) => work.push((pos, idx, keys, text)),
                    Some(Err(e)) => results[pos] = Some(Err(e)),
                    None => {}
                },
            }
        }
        let max_len = self.max_len;
        let verified = parallel_map(work, |(pos, idx, keys, text)| {
            (pos, idx, intake_shared(&keys, text, now, max_len))
        });
        for (pos, idx, r) in verified {
            results[pos] = Some(self.apply(idx, r));
        }
        results
    }

    /// `Some(true)` when `text` is the snapshot we already hold for `idx` and `period` and it
    /// is still valid; `None` when `idx` is out of range.
    fn is_unchanged(
        &self,
        idx: usize,
        period: TimePeriod,
        text: &str,
        now: SystemTime,
    ) -> Option<bool> {
        let b = self.backends.get(idx)?;
        Some(
            b.snapshot
                .as_ref()
                .is_some_and(|s| s.period == period && s.is_valid_at(now) && s.has_text(text)),
        )
    }

    /// Stores the result of an intake for backend `idx`.
    fn apply(
        &mut self,
        idx: usize,
        result: Result<BackendSnapshot, IntakeError>,
    ) -> Result<IntakeOutcome, IntakeError> {
        let Some(b) = self.backends.get_mut(idx) else {
            return Err(IntakeError::Malformed("no such backend".into()));
        };
        match result {
            Err(e) => {
                b.last_error = Some(e.clone());
                Err(e)
            }
            Ok(snap) => {
                b.last_error = None;
                let revision = snap.revision;
                if let Some(old) = &b.snapshot {
                    if old.period == snap.period && old.revision > revision {
                        return Ok(IntakeOutcome::Older { revision });
                    }
                }
                b.snapshot = Some(snap);
                self.dirty = true;
                Ok(IntakeOutcome::Updated { revision })
            }
        }
    }

    /// Drops snapshots whose validity has ended at `now`; returns how many.
    pub fn expire(&mut self, now: SystemTime) -> usize {
        let mut n = 0;
        for b in &mut self.backends {
            if b.snapshot.as_ref().is_some_and(|s| !s.is_valid_at(now)) {
                b.snapshot = None;
                n += 1;
            }
        }
        if n > 0 {
            self.dirty = true;
        }
        n
    }

    /// Replaces the list of backends (after a config reload), keeping what we know of those
    /// that stay. The selection becomes stale only if the set of backends changed.
    pub fn set_backends(&mut self, addresses: &[OnionAddress]) {
        let mut old: Vec<Option<BackendState>> = std::mem::take(&mut self.backends)
            .into_iter()
            .map(Some)
            .collect();
        let before: Vec<OnionAddress> = old.iter().flatten().map(|b| b.address).collect();
        for &address in addresses {
            let kept = old
                .iter_mut()
                .find(|b| b.as_ref().is_some_and(|b| b.address == address))
                .and_then(Option::take);
            self.backends.push(kept.unwrap_or(BackendState {
                address,
                keys: None,
                snapshot: None,
                last_error: None,
            }));
        }
        let mut a = before;
        let mut b = addresses.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            self.dirty = true;
        }
    }

    /// Drops the snapshot of backend `idx` (e.g. it is judged dead); true if there was one.
    pub fn forget(&mut self, idx: usize) -> bool {
        let had = self
            .backends
            .get_mut(idx)
            .and_then(|b| b.snapshot.take())
            .is_some();
        self.dirty |= had;
        had
    }

    /// True when the backends' intro points changed since the last build.
    pub fn needs_build(&self) -> bool {
        self.dirty
    }

    /// Snapshots usable at `now`, in backend order.
    pub fn usable(&self, now: SystemTime) -> Vec<&BackendSnapshot> {
        self.backends
            .iter()
            .filter_map(|b| b.snapshot.as_ref())
            .filter(|s| s.is_valid_at(now) && !s.intro_points.is_empty())
            .collect()
    }

    /// The frontend keys for `period`, derived on first use; old periods are pruned.
    fn period_keys(&mut self, period: TimePeriod) -> Result<Arc<FrontendPeriodKeys>, BuildError> {
        if let Some(k) = self.period_keys.get(&period) {
            return Ok(k.clone());
        }
        let k = Arc::new(FrontendPeriodKeys::derive(&self.frontend, period)?);
        // Keep the few periods around this one; anything older is never needed again.
        let keep_from = period.interval_num().saturating_sub(2);
        self.period_keys
            .retain(|p, _| p.interval_num() >= keep_from);
        self.last_revision
            .retain(|p, _| p.interval_num() >= keep_from);
        self.period_keys.insert(period, k.clone());
        Ok(k)
    }

    /// The frontend's blinded identity for `period` (where its descriptor sits on the ring).
    pub fn frontend_blind_id(&mut self, period: TimePeriod) -> Result<HsBlindId, BuildError> {
        Ok(self.period_keys(period)?.blind_id())
    }

    /// Selects intro points and builds one descriptor per period (in parallel), each with a
    /// revision counter above the last one used for its period.
    ///
    /// Clears [`Engine::needs_build`] on success.
    pub fn build<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        periods: &[PublishPeriod],
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Vec<BuiltDescriptor>, BuildError> {
        let usable = self.usable(now);
        let chosen = select_intro_points(&usable, MAX_INTRO_POINTS, rng);
        if chosen.is_empty() {
            return Err(BuildError::NoIntroPoints);
        }
        let contributing: Vec<&BackendSnapshot> = {
            let mut idx: Vec<usize> = chosen.iter().map(|c| c.backend).collect();
            idx.sort_unstable();
            idx.dedup();
            idx.into_iter().map(|i| usable[i]).collect()
        };
        let (flow_control, protocols) = common_capabilities(&contributing);
        let intro_points: Vec<IntroPointDesc> =
            resolve(&usable, &chosen).into_iter().cloned().collect();

        // Sequential part: keys and revision counters (cheap after the first build in a period).
        let mut jobs = Vec::with_capacity(periods.len());
        for p in periods {
            let keys = self.period_keys(p.time_period)?;
            let previous = self.last_revision.get(&p.time_period).copied();
            let revision = keys.revision_counter(p.srv_start, now, previous)?;
            jobs.push((keys, revision, rand::rngs::StdRng::from_rng(&mut *rng)));
        }
        let max_len = self.max_len;
        let built = parallel_map(jobs, |(keys, revision, mut job_rng)| {
            let req = BuildRequest {
                intro_points: &intro_points,
                revision,
                now,
                max_len,
                flow_control: flow_control.clone(),
                protocols: protocols.clone(),
            };
            build_descriptor(&keys, &req, &mut job_rng)
        });
        let built: Vec<BuiltDescriptor> = built.into_iter().collect::<Result<_, _>>()?;
        for d in &built {
            self.last_revision.insert(d.period, d.revision);
        }
        self.dirty = false;
        Ok(built)
    }
}

/// The flow-control line and protocol list to declare: the contributing backends' own, when
/// they all agree (C tor backends of one version do), otherwise nothing.
fn common_capabilities(backends: &[&BackendSnapshot]) -> (Option<(Protocols, u8)>, Protocols) {
    let Some(first) = backends.first() else {
        return (None, Protocols::default());
    };
    let flow = if backends
        .iter()
        .all(|b| b.flow_control == first.flow_control)
    {
        first
            .flow_control
            .as_ref()
            .map(|(p, n)| (p.clone(), n.get()))
    } else {
        None
    };
    let protos = if backends.iter().all(|b| b.protocols == first.protocols) {
        first.protocols.clone()
    } else {
        Protocols::default()
    };
    (flow, protos)
}

/// Maps `f` over `items` using up to the machine's number of cores, preserving order.
///
/// Descriptor crypto is CPU-bound and the items are independent; scoped threads keep this
/// free of any runtime. A single item runs on the calling thread.
fn parallel_map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() <= 1 || threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|s| {
        let mut chunks = chunks.into_iter();
        // The calling thread does the first chunk itself.
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks
            .map(|c| s.spawn(move || c.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        let mut out: Vec<U> = first.into_iter().map(f).collect();
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
