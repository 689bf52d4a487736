//! Selection: which backend intro points go into a frontend descriptor.
//!
//! Three rules, in order of importance:
//!
//! 1. **One intro point per relay.** A C tor client that has opened an introduction circuit
//!    to a relay looks up the intro point to use by the relay's identity and takes the
//!    *first* one listed for that relay (tor's `hs_client.c`: `setup_intro_circ_auth_key` →
//!    `find_desc_intro_point_by_legacy_id`). A second intro point on the same relay is never
//!    used by C tor clients, and if it belongs to another backend, that backend silently gets
//!    no C tor traffic through it. So a descriptor lists at most one intro point per relay.
//! 2. **Every backend reachable.** When backends share relays, we decide which backend each
//!    shared relay serves so that as many backends as possible get at least one intro point
//!    (a maximum matching between backends and relays, found with augmenting paths).
//! 3. **Equal shares.** Backends then take turns, one more intro point each per turn, while
//!    room and relays allow: shares differ by at most one intro point between backends that
//!    are not limited by their own relays, instead of following how many intro points each
//!    backend happens to publish. Taking a turn may move another backend to a different one
//!    of its relays, never take an intro point away from it.
//!
//! Clients use only the first [`MAX_INTRO_POINTS`](super::MAX_INTRO_POINTS) intro points, so
//! at most that many are chosen.
//!
//! # No randomness in what is listed
//!
//! Turn order and the order in which each backend's intro points are tried come from hashes
//! of the backends' addresses and the relays' identities ([`rank`]), not from an RNG. Two
//! frontends with the same key and backends (see `docs/two-frontends.md`) then list the same
//! intro points, and each one's descriptor is *equivalent* to the other's: an HSDir holding
//! either serves clients alike, and neither has to overwrite the other. The hashes still
//! spread the choice over backends and relays as a shuffle would, and the order of the
//! configuration does not matter.

use std::collections::HashMap;

use digest::Digest as _;
use tor_linkspec::LinkSpec;
use tor_llcrypto::d::Sha3_256;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use super::BackendSnapshot;

/// One chosen intro point: which backend (index into the slice given to
/// [`select_intro_points`]) and which of its intro points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// Index of the backend in the input slice.
    pub backend: usize,
    /// Index of the intro point in that backend's snapshot.
    pub intro_point: usize,
}

/// The relay an intro point lives on, by its RSA identity: the identity C tor clients use to
/// match an introduction circuit to an intro point. `None` if the intro point lists no RSA
/// identity (C tor always lists one).
pub fn intro_point_relay(ipt: &IntroPointDesc) -> Option<RsaIdentity> {
    ipt.link_specifiers()
        .iter()
        .find_map(|ls| match ls.parse() {
            Ok(LinkSpec::RsaId(id)) => Some(id),
            _ => None,
        })
}

/// What stands for a relay while selecting: its RSA identity, or, for an intro point without
/// one, the intro point itself (it cannot collide with anything we can see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum RelayKey {
    /// A relay with an RSA identity.
    Rsa(RsaIdentity),
    /// An intro point without one: (backend, intro point).
    Unnamed(usize, usize),
}

impl RelayKey {
    /// The relay of intro point `i` of backend `b`.
    pub(super) fn of(ipt: &IntroPointDesc, b: usize, i: usize) -> Self {
        intro_point_relay(ipt).map_or(RelayKey::Unnamed(b, i), RelayKey::Rsa)
    }
}

/// A deterministic, well-spread rank for ordering: the first 8 bytes of SHA3-256 over
/// `parts` (each length-prefixed, so that no two lists of parts collide by concatenation),
/// under a constant of this project. Used wherever a shuffle would otherwise decide what a
/// descriptor lists.
pub(super) fn rank(parts: &[&[u8]]) -> u64 {
    let mut h = Sha3_256::new();
    h.update(b"onionbalance-variant-plan");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// The bytes that stand for a relay in a [`rank`].
pub(super) fn relay_bytes(relay: &RelayKey) -> Vec<u8> {
    match relay {
        RelayKey::Rsa(id) => id.as_bytes().to_vec(),
        RelayKey::Unnamed(b, i) => [(*b as u64).to_be_bytes(), (*i as u64).to_be_bytes()].concat(),
    }
}

/// A backend's candidate intro points: (index, relay), at most one per relay (a backend's own
/// second intro point on one relay is as useless as anyone's), in the snapshot's order.
pub(super) fn candidates_of(b: usize, snap: &BackendSnapshot) -> Vec<(usize, RelayKey)> {
    let mut list: Vec<(usize, RelayKey)> = Vec::new();
    for (i, ipt) in snap.intro_points.iter().enumerate() {
        let relay = RelayKey::of(ipt, b, i);
        if !list.iter().any(|(_, r)| *r == relay) {
            list.push((i, relay));
        }
    }
    list
}

/// The matching under construction: which backend's intro point each relay carries.
pub(super) struct Matching {
    /// Per backend, its candidate (intro point, relay) pairs, one per relay, in the order
    /// they are tried.
    candidates: Vec<Vec<(usize, RelayKey)>>,
    /// Per relay, the backend and intro point it currently carries.
    holder: HashMap<RelayKey, (usize, usize)>,
}

impl Matching {
    /// An empty matching over these candidates (one list per backend).
    pub(super) fn new(candidates: Vec<Vec<(usize, RelayKey)>>) -> Self {
        Matching {
            candidates,
            holder: HashMap::new(),
        }
    }

    /// Gives backend `b` one more relay if the relays allow, moving others if needed.
    pub(super) fn add(&mut self, b: usize) -> bool {
        self.augment(b, &mut Vec::new())
    }

    /// Takes backend `b` out of the matching, freeing its relays.
    pub(super) fn remove(&mut self, b: usize) {
        self.holder.retain(|_, (holder, _)| *holder != b);
    }

    /// The (backend, intro point) pairs held, per backend in its candidate order.
    pub(super) fn held(&self) -> Vec<Vec<usize>> {
        let mut held: Vec<Vec<usize>> = vec![Vec::new(); self.candidates.len()];
        for &(b, ipt) in self.holder.values() {
            held[b].push(ipt);
        }
        for (b, list) in held.iter_mut().enumerate() {
            let rank = |i: &usize| self.candidates[b].iter().position(|(c, _)| c == i);
            list.sort_by_key(rank);
        }
        held
    }

    /// Tries to give backend `b` one more relay, moving other backends to other relays of
    /// theirs if needed (an augmenting path). `visited` holds relays already explored in this
    /// search. Returns true on success; on failure nothing changed.
    fn augment(&mut self, b: usize, visited: &mut Vec<RelayKey>) -> bool {
        for k in 0..self.candidates[b].len() {
            let (ipt, relay) = self.candidates[b][k];
            if visited.contains(&relay) {
                continue;
            }
            match self.holder.get(&relay).copied() {
                Some((holder, _)) if holder == b => continue,
                None => {
                    self.holder.insert(relay, (b, ipt));
                    return true;
                }
                Some((other, _)) => {
                    visited.push(relay);
                    if self.augment(other, visited) {
                        self.holder.insert(relay, (b, ipt));
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// Chooses at most `max` intro points from `backends`, at most one per relay, every backend
/// reachable where the relays allow it, shares equal within one intro point.
///
/// The result lists backends in turns (one intro point of each backend per turn), so the
/// first entries come from distinct backends. The choice is a function of its inputs alone
/// (see the module's "No randomness in what is listed"): the order of turns is ranked by the
/// backends' addresses, and each backend's intro points are tried in an order ranked by its
/// address and their relays, so the order of `backends` does not change what is chosen.
pub fn select_intro_points(backends: &[&BackendSnapshot], max: usize) -> Vec<Chosen> {
    let candidates = backends
        .iter()
        .enumerate()
        .map(|(b, snap)| {
            let mut list = candidates_of(b, snap);
            list.sort_by_cached_key(|(i, relay)| {
                (
                    rank(&[snap.address.as_bytes(), &relay_bytes(relay), b"select"]),
                    *i,
                )
            });
            list
        })
        .collect();
    let mut m = Matching::new(candidates);
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_cached_key(|&b| (rank(&[backends[b].address.as_bytes(), b"turn"]), b));
    let mut count = vec![0usize; backends.len()];
    let mut exhausted = vec![false; backends.len()];
    let mut total = 0;
    'turns: loop {
        let mut progressed = false;
        for &b in &order {
            if total >= max {
                break 'turns;
            }
            if exhausted[b] {
                continue;
            }
            if m.add(b) {
                count[b] += 1;
                total += 1;
                progressed = true;
            } else {
                exhausted[b] = true;
            }
        }
        if !progressed {
            break;
        }
    }
    // List in turns: each backend's intro points in the order of its candidates.
    let held = m.held();
    let mut chosen = Vec::with_capacity(total);
    let deepest = held.iter().map(Vec::len).max().unwrap_or(0);
    for turn in 0..deepest {
        for &b in &order {
            if let Some(&intro_point) = held[b].get(turn) {
                chosen.push(Chosen {
                    backend: b,
                    intro_point,
                });
            }
        }
    }
    chosen
}

/// Resolves a selection to the intro points themselves.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(super) fn resolve<'a>(
    backends: &[&'a BackendSnapshot],
    chosen: &[Chosen],
) -> Vec<&'a IntroPointDesc> {
    chosen
        .iter()
        .filter_map(|c| backends.get(c.backend)?.intro_points.get(c.intro_point))
        .collect()
}
