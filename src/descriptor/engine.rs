//! The frontend's side of the descriptor work: keys per period, revision counters, builds.
//!
//! An [`Engine`] belongs to one frontend service. Given, for one time period, the backend
//! snapshots to draw intro points from, it selects (see [`select`](super::select)) and builds
//! a descriptor with a revision counter above every counter used before for that period,
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
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_protover::Protocols;

use super::build::{
    build_descriptor, BuildError, BuildRequest, BuiltDescriptor, FrontendPeriodKeys,
};
use super::intake::BackendSnapshot;
use super::select::{resolve, select_intro_points};
use super::{PublishPeriod, DEFAULT_MAX_DESCRIPTOR_LEN, MAX_INTRO_POINTS};
use crate::keys::FrontendKey;

/// A descriptor built from a selection, with the backends it lists.
#[derive(Debug, Clone)]
pub struct Built {
    /// The descriptor.
    pub descriptor: BuiltDescriptor,
    /// Per listed intro point, the index (into the snapshots given) of its backend.
    pub backends: Vec<usize>,
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
}

impl Engine {
    /// Creates the state for `frontend`.
    pub fn new(frontend: Arc<FrontendKey>) -> Self {
        Engine {
            frontend,
            period_keys: HashMap::new(),
            revision_floor: HashMap::new(),
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
        }
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
        let usable: Vec<&BackendSnapshot> = snapshots
            .iter()
            .copied()
            .filter(|s| s.is_valid_at(now) && !s.intro_points.is_empty())
            .collect();
        // Indices into `snapshots` of the usable ones.
        let usable_idx: Vec<usize> = snapshots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_valid_at(now) && !s.intro_points.is_empty())
            .map(|(i, _)| i)
            .collect();
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
        let keys = self.period_keys(period.time_period)?;
        let previous = self.revision_floor(period.time_period);
        let revision = keys.revision_counter(period.srv_start, now, previous)?;
        let req = BuildRequest {
            intro_points: &intro_points,
            revision,
            now,
            max_len: self.max_len,
            flow_control,
            protocols,
        };
        let descriptor = build_descriptor(&keys, &req, rng)?;
        self.raise_revision_floor(period.time_period, descriptor.revision);
        Ok(Built {
            descriptor,
            backends: chosen.iter().map(|c| usable_idx[c.backend]).collect(),
        })
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
