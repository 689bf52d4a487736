//! The frontend's side of the descriptor work: keys per period, revision counters, builds.
//!
//! An [`Engine`] belongs to one frontend service. Given, for one time period, the backend
//! snapshots to draw intro points from, it selects (see [`select`](super::select)) and builds
//! a descriptor, or with [`Engine::build_variants`] one per HSDir clients fetch from when one
//! cannot list every backend (see [`variants`](super::variants)), with a revision counter
//! above every counter used before for that period,
//! including counters used by an earlier run of the program (the caller passes those in with
//! [`Engine::raise_revision_floor`]).
//!
//! What the backends have published, and whether it changed, is the service runner's
//! business: this type only turns intro points into descriptors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::curve25519;
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_protover::Protocols;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tor_llcrypto::pk::rsa::RsaIdentity;

use super::build::{check_count, lifetime_minutes, BuiltDescriptor};
use super::encode::{certify, encode, Encoding, IntroSection};
use super::intake::BackendSnapshot;
use super::period_keys::{BuildError, FrontendPeriodKeys};
use super::select::{resolve, select_intro_points, Chosen};
use super::variants::{plan_variants, RingFacts, VariantPlan};
use super::{PublishPeriod, CERT_LIFETIME, DEFAULT_MAX_DESCRIPTOR_LEN, MAX_INTRO_POINTS};
use crate::keys::FrontendKey;

/// A descriptor built from a selection, with the backends it lists.
#[derive(Debug, Clone)]
pub struct Built {
    /// The descriptor.
    pub descriptor: BuiltDescriptor,
    /// Per listed intro point, the index (into the snapshots given) of its backend.
    pub backends: Vec<usize>,
}

/// The descriptors of one period built from a variant plan.
#[derive(Debug, Clone)]
pub struct BuiltVariants {
    /// One descriptor per variant of the plan, in the plan's order.
    pub variants: Vec<Built>,
    /// The plan, with backend indices into the snapshots given to
    /// [`Engine::build_variants`] (its `left_out` includes the unusable ones).
    pub plan: VariantPlan,
    /// The most intro points one descriptor could hold: [`MAX_INTRO_POINTS`], or fewer when
    /// a descriptor with that many would exceed the network's maximum size (many
    /// authorized clients, each with its own entry).
    pub intro_point_limit: usize,
}

/// The frontend's descriptor state for one service.
pub struct Engine {
    /// The frontend key.
    frontend: Arc<FrontendKey>,
    /// Frontend keys per period (at most a few: previous, current, next).
    period_keys: HashMap<TimePeriod, Arc<FrontendPeriodKeys>>,
    /// Per period, the highest revision counter used (or known to be used) so far.
    revision_floor: HashMap<TimePeriod, RevisionCounter>,
    /// Maximum descriptor size.
    max_len: usize,
    /// Restricted discovery: the authorized clients' keys, or `None` when open.
    auth_clients: Option<Vec<curve25519::PublicKey>>,
}

impl Engine {
    /// Creates the state for `frontend`.
    pub fn new(frontend: Arc<FrontendKey>) -> Self {
        Engine {
            frontend,
            period_keys: HashMap::new(),
            revision_floor: HashMap::new(),
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
            auth_clients: None,
        }
    }

    /// Restricts discovery to the holders of `clients`' keys in every descriptor built from
    /// now on (`None`: anyone who knows the address). An empty list is allowed: descriptors
    /// then carry only random entries and no client can read their intro points.
    pub fn set_authorized_clients(&mut self, clients: Option<Vec<curve25519::PublicKey>>) {
        self.auth_clients = clients;
    }

    /// The authorized clients' keys in force (`None`: discovery is not restricted).
    pub fn authorized_clients(&self) -> Option<&[curve25519::PublicKey]> {
        self.auth_clients.as_deref()
    }

    /// Sets the maximum descriptor size (from the consensus).
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// The maximum descriptor size in force.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The frontend key.
    pub fn frontend(&self) -> &Arc<FrontendKey> {
        &self.frontend
    }

    /// Makes every later descriptor for `period` carry a revision counter above `used`
    /// (a counter published before, possibly by an earlier run).
    pub fn raise_revision_floor(&mut self, period: TimePeriod, used: RevisionCounter) {
        let floor = self.revision_floor.entry(period).or_insert(used);
        if u64::from(used) > u64::from(*floor) {
            *floor = used;
        }
    }

    /// The highest revision counter used for `period`, if any.
    pub fn revision_floor(&self, period: TimePeriod) -> Option<RevisionCounter> {
        self.revision_floor.get(&period).copied()
    }

    /// The frontend keys for `period`, derived on first use; keys of periods that ended long
    /// ago are dropped.
    fn period_keys(&mut self, period: TimePeriod) -> Result<Arc<FrontendPeriodKeys>, BuildError> {
        if let Some(k) = self.period_keys.get(&period) {
            return Ok(k.clone());
        }
        let k = Arc::new(FrontendPeriodKeys::derive(&self.frontend, period)?);
        let keep_from = period.interval_num().saturating_sub(2);
        self.period_keys
            .retain(|p, _| p.interval_num() >= keep_from);
        self.revision_floor
            .retain(|p, _| p.interval_num() >= keep_from);
        self.period_keys.insert(period, k.clone());
        Ok(k)
    }

    /// The frontend's keys for `period`, derived once per period.
    pub(crate) fn period_keys_for(
        &mut self,
        period: TimePeriod,
    ) -> Result<Arc<FrontendPeriodKeys>, BuildError> {
        self.period_keys(period)
    }

    /// The frontend's blinded identity for `period` (where its descriptor sits on the ring).
    pub fn frontend_blind_id(&mut self, period: TimePeriod) -> Result<HsBlindId, BuildError> {
        Ok(self.period_keys(period)?.blind_id())
    }

    /// Selects intro points from `snapshots` and builds the descriptor for `period`, with a
    /// revision counter above every one used for it before.
    pub fn build<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        period: &PublishPeriod,
        snapshots: &[&BackendSnapshot],
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Built, BuildError> {
        let usable_idx = usable(snapshots, now);
        let usable: Vec<&BackendSnapshot> = usable_idx.iter().map(|&i| snapshots[i]).collect();
        let chosen = select_intro_points(&usable, MAX_INTRO_POINTS);
        let keys = self.period_keys(period.time_period)?;
        let revision = self.next_revision(&keys, period, now)?;
        let job = Job {
            keys: &keys,
            usable: &usable,
            usable_idx: &usable_idx,
            revision,
            now,
            max_len: self.max_len,
            auth_clients: self.auth_clients.as_deref(),
        };
        let built = job
            .build(std::slice::from_ref(&chosen), &mut HashMap::new(), rng)?
            .pop()
            .ok_or(BuildError::NoIntroPoints)?;
        self.raise_revision_floor(period.time_period, revision);
        Ok(built)
    }

    /// Plans variants for `period` (see [`plan_variants`]) over the HSDirs of `ring` and
    /// builds each, all with one revision counter above every one used for the period before.
    /// When one descriptor can list every backend, the result has one variant, as
    /// [`Engine::build`] would build.
    pub fn build_variants<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        period: &PublishPeriod,
        snapshots: &[&BackendSnapshot],
        ring: &RingFacts<'_>,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<BuiltVariants, BuildError> {
        let keys = self.period_keys(period.time_period)?;
        let revision = self.next_revision(&keys, period, now)?;
        let built = build_variants(
            &keys,
            revision,
            snapshots,
            ring,
            now,
            self.max_len,
            self.auth_clients.as_deref(),
            rng,
        )?;
        self.raise_revision_floor(period.time_period, revision);
        Ok(built)
    }

    /// [`Engine::build_variants`] for several periods at once, the builds side by side on
    /// the machine's cores (a backend change rebuilds both periods together): one result per
    /// entry of `builds`, in order.
    pub fn build_periods<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        builds: Vec<PeriodBuild<'_>>,
        now: SystemTime,
        rng: &mut R,
    ) -> Vec<Result<BuiltVariants, BuildError>> {
        let jobs: Vec<_> = builds
            .into_iter()
            .map(|b| {
                let job = self.variants_job(b.period, b.snapshots, &b.ring, now);
                (job, StdRng::from_seed(rng.random()))
            })
            .collect();
        let results = run_jobs(jobs);
        for built in results.iter().flatten() {
            self.record_built(built);
        }
        results
    }

    /// What [`Engine::build_variants`] does, split so that the work runs elsewhere: the
    /// returned job owns its inputs (it can move to a blocking thread), and
    /// [`Engine::record_built`] takes its result back.
    pub(crate) fn variants_job(
        &mut self,
        period: &PublishPeriod,
        snapshots: Vec<BackendSnapshot>,
        ring: &RingFacts<'_>,
        now: SystemTime,
    ) -> Result<VariantsJob, BuildError> {
        let keys = self.period_keys(period.time_period)?;
        let revision = self.next_revision(&keys, period, now)?;
        Ok(VariantsJob {
            keys,
            revision,
            snapshots,
            upload: ring.upload.to_vec(),
            fetch: ring.fetch.to_vec(),
            now,
            max_len: self.max_len,
            auth_clients: self.auth_clients.clone(),
        })
    }

    /// Takes the result of a [`VariantsJob`]: later builds of its period get a higher
    /// revision counter.
    pub(crate) fn record_built(&mut self, built: &BuiltVariants) {
        if let Some(first) = built.variants.first() {
            let d = &first.descriptor;
            self.raise_revision_floor(d.period, d.revision);
        }
    }

    /// The revision counter for a build of `period` at `now`: above every one used before.
    fn next_revision(
        &self,
        keys: &FrontendPeriodKeys,
        period: &PublishPeriod,
        now: SystemTime,
    ) -> Result<RevisionCounter, BuildError> {
        keys.revision_counter(
            period.srv_start,
            now,
            self.revision_floor(period.time_period),
        )
    }
}

/// One period's build for [`Engine::build_periods`].
#[derive(Debug)]
pub struct PeriodBuild<'a> {
    /// The period.
    pub period: &'a PublishPeriod,
    /// The backends' snapshots to draw intro points from.
    pub snapshots: Vec<BackendSnapshot>,
    /// The period's HSDirs.
    pub ring: RingFacts<'a>,
}

/// Runs each job that could be made, each with its own generator, side by side (see
/// [`parallel::each`](super::parallel::each)); the results in order.
pub(crate) fn run_jobs(
    jobs: Vec<(Result<VariantsJob, BuildError>, StdRng)>,
) -> Vec<Result<BuiltVariants, BuildError>> {
    super::parallel::each(jobs, |(job, mut rng)| job.and_then(|j| j.run(&mut rng)))
}

/// A build of one period's variants with everything it needs, to run away from the
/// [`Engine`] (on a blocking thread): see [`Engine::variants_job`].
pub(crate) struct VariantsJob {
    /// The period's keys.
    keys: Arc<FrontendPeriodKeys>,
    /// The revision counter every variant carries.
    revision: RevisionCounter,
    /// The backends' snapshots.
    snapshots: Vec<BackendSnapshot>,
    /// The HSDirs we upload to.
    upload: Vec<RsaIdentity>,
    /// The HSDirs clients fetch from.
    fetch: Vec<RsaIdentity>,
    /// Now.
    now: SystemTime,
    /// Maximum descriptor size.
    max_len: usize,
    /// Restricted discovery's clients.
    auth_clients: Option<Vec<curve25519::PublicKey>>,
}

impl VariantsJob {
    /// Plans and builds, as [`Engine::build_variants`] would have.
    pub(crate) fn run<R: rand::Rng + rand::CryptoRng>(
        self,
        rng: &mut R,
    ) -> Result<BuiltVariants, BuildError> {
        let refs: Vec<&BackendSnapshot> = self.snapshots.iter().collect();
        let ring = RingFacts {
            upload: &self.upload,
            fetch: &self.fetch,
        };
        build_variants(
            &self.keys,
            self.revision,
            &refs,
            &ring,
            self.now,
            self.max_len,
            self.auth_clients.as_deref(),
            rng,
        )
    }
}

/// Plans variants and builds each (see [`Engine::build_variants`]).
#[allow(clippy::too_many_arguments)]
fn build_variants<R: rand::Rng + rand::CryptoRng>(
    keys: &FrontendPeriodKeys,
    revision: RevisionCounter,
    snapshots: &[&BackendSnapshot],
    ring: &RingFacts<'_>,
    now: SystemTime,
    max_len: usize,
    auth_clients: Option<&[curve25519::PublicKey]>,
    rng: &mut R,
) -> Result<BuiltVariants, BuildError> {
    let usable_idx = usable(snapshots, now);
    let usable: Vec<&BackendSnapshot> = usable_idx.iter().map(|&i| snapshots[i]).collect();
    let job = Job {
        keys,
        usable: &usable,
        usable_idx: &usable_idx,
        revision,
        now,
        max_len,
        auth_clients,
    };
    // Intro points certified so far in this build: a retry with fewer intro points per
    // descriptor lists the same ones again.
    let mut certified = HashMap::new();
    // Each authorized client adds an entry to every descriptor: with many, 20 intro
    // points no longer fit in the network's maximum size. Fewer intro points per
    // descriptor, rather than no descriptor at all (what is published would expire).
    let mut limit = MAX_INTRO_POINTS;
    let (mut plan, variants) = loop {
        let plan = plan_variants(&usable, ring, limit);
        if plan.variants.is_empty() {
            return Err(BuildError::NoIntroPoints);
        }
        match job.build(&plan.variants, &mut certified, rng) {
            Ok(variants) => break (plan, variants),
            Err(BuildError::TooLarge(_)) if limit > 1 => limit -= 1,
            Err(e) => return Err(e),
        }
    };
    // Indices in the plan are into `usable`; callers know `snapshots`.
    for list in &mut plan.variants {
        for c in list {
            c.backend = usable_idx[c.backend];
        }
    }
    for b in &mut plan.left_out {
        *b = usable_idx[*b];
    }
    let left_out_unusable = (0..snapshots.len()).filter(|i| !usable_idx.contains(i));
    plan.left_out.extend(left_out_unusable);
    plan.left_out.sort_unstable();
    Ok(BuiltVariants {
        variants,
        plan,
        intro_point_limit: limit,
    })
}

/// One build: the descriptors of one period at one revision, from the usable snapshots.
struct Job<'a> {
    /// The period's keys.
    keys: &'a FrontendPeriodKeys,
    /// The snapshots a build may use.
    usable: &'a [&'a BackendSnapshot],
    /// Their indices among the snapshots the caller gave.
    usable_idx: &'a [usize],
    /// The revision counter.
    revision: RevisionCounter,
    /// Now: certificates run from here.
    now: SystemTime,
    /// Maximum descriptor size.
    max_len: usize,
    /// Restricted discovery's clients.
    auth_clients: Option<&'a [curve25519::PublicKey]>,
}

impl Job<'_> {
    /// Builds one descriptor per list of `variants` (indices into `usable`). Each intro point
    /// is certified once, whatever the number of variants that list it (`certified` keeps
    /// them, by backend and intro point), and the descriptors are encoded in parallel, each
    /// with its own fresh randomness.
    fn build<R: rand::Rng + rand::CryptoRng>(
        &self,
        variants: &[Vec<Chosen>],
        certified: &mut HashMap<(usize, usize), IntroSection>,
        rng: &mut R,
    ) -> Result<Vec<Built>, BuildError> {
        for chosen in variants {
            check_count(chosen.len())?;
        }
        let cert_expiry = self.now + CERT_LIFETIME;
        let mut missing: Vec<((usize, usize), &IntroPointDesc)> = Vec::new();
        for c in variants.iter().flatten() {
            let key = (c.backend, c.intro_point);
            if certified.contains_key(&key) || missing.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if let Some(ipt) = resolve(self.usable, std::slice::from_ref(c)).first() {
                missing.push((key, ipt));
            }
        }
        certified.extend(certify(&self.keys.desc_sign, &missing, cert_expiry)?);
        let sign_cert = self.keys.sign_cert(cert_expiry)?;
        // Each descriptor's randomness from its own generator, seeded here: the encodings
        // run on other threads, and stay reproducible under a seeded `rng`.
        let work: Vec<(&Vec<Chosen>, [u8; 32])> =
            variants.iter().map(|v| (v, rng.random())).collect();
        super::parallel::map(&work, |(chosen, seed)| {
            let mut rng = StdRng::from_seed(*seed);
            let contributing: Vec<&BackendSnapshot> = {
                let mut idx: Vec<usize> = chosen.iter().map(|c| c.backend).collect();
                idx.sort_unstable();
                idx.dedup();
                idx.into_iter().map(|i| self.usable[i]).collect()
            };
            let (flow_control, protocols) = common_capabilities(&contributing);
            let sections: Vec<&IntroSection> = chosen
                .iter()
                .filter_map(|c| certified.get(&(c.backend, c.intro_point)))
                .collect();
            // Fresh random entries for every descriptor, as C tor: the same padding twice
            // would let an observer holding two descriptors tell them from the real ones.
            let auth_clients = self
                .auth_clients
                .map(|real| crate::client_auth::padded_auth_clients(real, &mut rng));
            let encoding = Encoding {
                keys: self.keys,
                sign_cert: sign_cert.as_ref(),
                revision: self.revision,
                lifetime_minutes: lifetime_minutes(),
                max_len: self.max_len,
                flow_control: flow_control.as_ref(),
                protocols: &protocols,
                auth_clients: auth_clients.as_deref(),
            };
            let encoded = encode(&encoding, &sections, &mut rng)?;
            Ok(Built {
                descriptor: self.keys.built(self.revision, sections.len(), encoded),
                backends: chosen.iter().map(|c| self.usable_idx[c.backend]).collect(),
            })
        })
        .into_iter()
        .collect()
    }
}

/// Indices of the snapshots a build may use at `now`: valid, with intro points.
fn usable(snapshots: &[&BackendSnapshot], now: SystemTime) -> Vec<usize> {
    snapshots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_valid_at(now) && !s.intro_points.is_empty())
        .map(|(i, _)| i)
        .collect()
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
