//! Variants: more backends than one descriptor can serve, spread over the HSDirs clients
//! fetch from.
//!
//! A client uses at most 20 intro points of a descriptor, and a descriptor lists at most one
//! intro point per relay (see [`select`](super::select)). When that cannot give every backend
//! a place, one descriptor per period is not enough. But a client fetches the descriptor from
//! *one* HSDir of the period's fetch set (`hsdir_spread_fetch` HSDirs of each of the
//! `hsdir_n_replicas` rings: 6 with the default parameters), chosen at random, and never
//! compares it with another HSDir's copy. So each fetch HSDir can hold its own **variant**, a
//! complete descriptor with up to 20 intro points of its own: 6 × 20 = 120 intro points per
//! period. The other HSDirs of the upload set (2 of 8 by default), which clients with the
//! same consensus never ask, each hold one of those variants too, for clients whose
//! consensus is a little older or newer.
//!
//! # The plan
//!
//! [`plan_variants`] is a pure function of the backends' intro points and the ring (which
//! HSDirs we upload to, which of them clients fetch from); it reads no clock and no network.
//!
//! * If one descriptor can list every backend, that is the plan: one variant for every HSDir,
//!   exactly as without this module.
//! * Otherwise every backend is placed in the same number `a` of variants, with one intro
//!   point in each, and the variants are filled evenly. A client that picks a fetch HSDir
//!   and then an intro point uniformly lands on backend `b` with probability
//!   `Σ_v 1/V · [b ∈ v]/|v|`; equal counts and variant sizes that differ by at most one make
//!   those shares equal within a few percent. `a` is the largest count for which every
//!   backend fits (20 intro points and one per relay in each variant); with more backends
//!   than 20 per fetch HSDir, `a` is 1 and the backends that do not fit are reported in
//!   [`VariantPlan::left_out`].
//! * Which variants a backend goes to is decided by rendezvous hashing of the backend's
//!   address with each fetch HSDir's identity, under a quota per variant ("consistent
//!   hashing with bounded loads"): a backend joining or leaving moves few others, and an
//!   HSDir that stays on the ring keeps most of its backends. Within a variant, intro points
//!   are matched to relays as in [`select`](super::select), in an order hashed the same way.
//!
//! Changing `a` (a backend count crossing a multiple of the capacity) reshuffles more: that
//! is the price of equal shares.

use std::collections::HashSet;

use tor_llcrypto::pk::rsa::RsaIdentity;

use super::select::{
    candidates_of, rank, relay_bytes, select_intro_points, Chosen, Matching, RelayKey,
};
use super::BackendSnapshot;

/// What the plan needs to know about one time period's hash ring.
#[derive(Debug, Clone, Copy)]
pub struct RingFacts<'a> {
    /// The HSDirs we upload to (`hsdir_n_replicas` × `hsdir_spread_store`).
    pub upload: &'a [RsaIdentity],
    /// The HSDirs clients fetch from, as a set (Arti's `hs_dirs_download`): when the replicas'
    /// rings overlap there are fewer than `hsdir_n_replicas` × `hsdir_spread_fetch`.
    pub fetch: &'a [RsaIdentity],
}

/// Which descriptor each HSDir of a period holds, and what each of them lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantPlan {
    /// The variants: per variant, the intro points it lists, in listing order. Indices are into
    /// the backends given to [`plan_variants`].
    pub variants: Vec<Vec<Chosen>>,
    /// Per fetch HSDir, the variant it holds. Sorted by identity.
    pub fetch_holders: Vec<(RsaIdentity, usize)>,
    /// Per upload HSDir that clients do not fetch from, the variant it holds.
    pub upload_only_holders: Vec<(RsaIdentity, usize)>,
    /// Backends that are in no variant (more backends than the fetch HSDirs can list).
    pub left_out: Vec<usize>,
}

impl VariantPlan {
    /// A plan with a single variant for every HSDir.
    fn single(chosen: Vec<Chosen>, ring: &RingFacts<'_>, backends: usize) -> Self {
        let fetch = fetch_set(ring);
        let fetch_holders: Vec<(RsaIdentity, usize)> = fetch.iter().map(|h| (*h, 0)).collect();
        let upload_only_holders = upload_only(ring, &fetch)
            .into_iter()
            .map(|h| (h, 0))
            .collect();
        let listed: HashSet<usize> = chosen.iter().map(|c| c.backend).collect();
        VariantPlan {
            variants: if chosen.is_empty() {
                Vec::new()
            } else {
                vec![chosen]
            },
            fetch_holders,
            upload_only_holders,
            left_out: (0..backends).filter(|b| !listed.contains(b)).collect(),
        }
    }

    /// True when every HSDir holds the same descriptor.
    pub fn is_single(&self) -> bool {
        self.variants.len() <= 1
    }

    /// The variant `hsdir` holds, if it is on the ring.
    pub fn variant_for(&self, hsdir: &RsaIdentity) -> Option<usize> {
        self.fetch_holders
            .iter()
            .chain(&self.upload_only_holders)
            .find(|(h, _)| h == hsdir)
            .map(|(_, v)| *v)
    }

    /// Each backend's expected share of new clients: a client picks one fetch HSDir at random,
    /// then one intro point of the variant it got. `backends` is how many were given to the
    /// plan; the shares of those left out are 0. With no fetch HSDir (a ring we could not
    /// compute), the single variant counts alone.
    pub fn shares(&self, backends: usize) -> Vec<f64> {
        let mut share = vec![0.0; backends];
        let picks: Vec<usize> = if self.fetch_holders.is_empty() {
            (0..self.variants.len().min(1)).collect()
        } else {
            self.fetch_holders.iter().map(|(_, v)| *v).collect()
        };
        let per_pick = 1.0 / picks.len().max(1) as f64;
        for v in picks {
            let Some(list) = self.variants.get(v) else {
                continue;
            };
            let per_ipt = per_pick / list.len().max(1) as f64;
            for c in list {
                if let Some(s) = share.get_mut(c.backend) {
                    *s += per_ipt;
                }
            }
        }
        share
    }
}

/// The fetch HSDirs that we also upload to, sorted by identity: one variant each.
fn fetch_set(ring: &RingFacts<'_>) -> Vec<RsaIdentity> {
    let mut fetch: Vec<RsaIdentity> = ring
        .fetch
        .iter()
        .filter(|h| ring.upload.contains(h))
        .copied()
        .collect();
    fetch.sort();
    fetch.dedup();
    fetch
}

/// The upload HSDirs clients do not fetch from, sorted by identity.
fn upload_only(ring: &RingFacts<'_>, fetch: &[RsaIdentity]) -> Vec<RsaIdentity> {
    let mut rest: Vec<RsaIdentity> = ring
        .upload
        .iter()
        .filter(|h| !fetch.contains(h))
        .copied()
        .collect();
    rest.sort();
    rest.dedup();
    rest
}

/// Plans which intro points each HSDir's descriptor lists, at most `max` per descriptor.
///
/// A client fetches the descriptor from one HSDir of the period's fetch set, chosen at
/// random, and uses at most 20 intro points of it (one per relay); so when one descriptor
/// cannot list every backend, each fetch HSDir gets its own complete *variant*, every backend
/// is placed in the same number of variants, and the variants are filled evenly, which makes
/// every backend's share of clients equal within a few percent. With one descriptor enough,
/// the plan is that one descriptor everywhere.
///
/// The plan depends on its inputs alone (no RNG, as [`select_intro_points`]): frontends
/// that share a key and see the same backends and consensus plan alike.
pub fn plan_variants(
    backends: &[&BackendSnapshot],
    ring: &RingFacts<'_>,
    max: usize,
) -> VariantPlan {
    let single = select_intro_points(backends, max);
    let listed: HashSet<usize> = single.iter().map(|c| c.backend).collect();
    let fetch = fetch_set(ring);
    if listed.len() == backends.len() || fetch.len() <= 1 {
        return VariantPlan::single(single, ring, backends.len());
    }
    let placement = place(backends, &fetch, max);
    let upload_only_holders = upload_only(ring, &fetch)
        .into_iter()
        .enumerate()
        .map(|(i, h)| (h, i % fetch.len()))
        .collect();
    VariantPlan {
        variants: placement.variants,
        fetch_holders: fetch.iter().enumerate().map(|(v, h)| (*h, v)).collect(),
        upload_only_holders,
        left_out: placement.left_out,
    }
}

/// The outcome of placing backends into variants.
struct Placement {
    /// Per variant, its intro points.
    variants: Vec<Vec<Chosen>>,
    /// Backends placed nowhere.
    left_out: Vec<usize>,
}

/// Places every backend into the same number of variants, the largest number that fits.
fn place(backends: &[&BackendSnapshot], fetch: &[RsaIdentity], max: usize) -> Placement {
    let n = backends.len();
    let v_count = fetch.len();
    let relays: HashSet<RelayKey> = backends
        .iter()
        .enumerate()
        .flat_map(|(b, s)| candidates_of(b, s).into_iter().map(|(_, r)| r))
        .collect();
    let capacity = max.min(relays.len());
    let most = (v_count * capacity / n.max(1)).clamp(1, v_count);
    let order = backend_order(backends);
    let prefs: Vec<Vec<usize>> = (0..n)
        .map(|b| {
            let mut p: Vec<usize> = (0..v_count).collect();
            p.sort_by_cached_key(|&v| {
                rank(&[
                    backends[b].address.as_bytes(),
                    fetch[v].as_bytes(),
                    b"variant",
                ])
            });
            p
        })
        .collect();
    // Per variant, per backend, its candidate intro points in the order that variant tries
    // them (hashed with the HSDir, so variants use different intro points of a backend).
    let candidates: Vec<Vec<Vec<(usize, RelayKey)>>> = fetch
        .iter()
        .map(|hsdir| {
            backends
                .iter()
                .enumerate()
                .map(|(b, s)| {
                    let mut c = candidates_of(b, s);
                    c.sort_by_cached_key(|(_, relay)| {
                        rank(&[s.address.as_bytes(), &relay_bytes(relay), hsdir.as_bytes()])
                    });
                    c
                })
                .collect()
        })
        .collect();
    let mut fallback = None;
    for appearances in (1..=most).rev() {
        let attempt = assign(&candidates, &order, &prefs, appearances, capacity);
        if attempt.is_even(appearances) {
            return attempt.into_placement();
        }
        if appearances == 1 {
            fallback = Some(attempt);
        }
    }
    fallback.map_or(
        Placement {
            variants: Vec::new(),
            left_out: (0..n).collect(),
        },
        Assignment::into_placement,
    )
}

/// Backends in the order they are placed: by a hash of their address, so that the order of
/// the configuration does not matter and a new backend lands at a random place in it.
fn backend_order(backends: &[&BackendSnapshot]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_cached_key(|&b| (rank(&[backends[b].address.as_bytes(), b"order"]), b));
    order
}

/// One attempt at placing every backend `appearances` times.
struct Assignment {
    /// Per variant, the relay matching of its members.
    matchings: Vec<Matching>,
    /// Per variant, its members in the order they joined.
    members: Vec<Vec<usize>>,
    /// Per backend, how many variants it is in.
    placed: Vec<usize>,
}

/// Places each backend, in `order`, into `appearances` variants: the first of its preferred
/// variants that are under quota and have a relay for it, then, if that is not enough, any
/// variant with room.
fn assign(
    candidates: &[Vec<Vec<(usize, RelayKey)>>],
    order: &[usize],
    prefs: &[Vec<usize>],
    appearances: usize,
    capacity: usize,
) -> Assignment {
    let n = order.len();
    let v_count = candidates.len();
    // Sizes must come out within one of each other: `big` variants may take one more than
    // the rest.
    let total = n * appearances;
    let (base, big) = (total / v_count, total % v_count);
    let matchings = candidates.iter().cloned().map(Matching::new).collect();
    let mut a = Assignment {
        matchings,
        members: vec![Vec::new(); v_count],
        placed: vec![0; n],
    };
    let room = |a: &Assignment, v: usize| -> bool {
        let size = a.members[v].len();
        let bigs = a.members.iter().filter(|m| m.len() > base).count();
        let quota = if size == base && bigs < big {
            base + 1
        } else {
            base.max(1)
        };
        size < quota.min(capacity)
    };
    for &b in order {
        for &v in &prefs[b] {
            if a.placed[b] == appearances {
                break;
            }
            if room(&a, v) && !a.members[v].contains(&b) && a.matchings[v].add(b) {
                a.members[v].push(b);
                a.placed[b] += 1;
            }
        }
        // Greedy placement can get stuck at the end: the room left is in variants `b` is
        // already in, or on relays it does not have. Then make room by moving a member of
        // another variant to one with room (an augmenting path of length two).
        while a.placed[b] < appearances && a.swap_in(b, &prefs[b], &room) {}
    }
    a
}

impl Assignment {
    /// Places `b` into a variant `u` it is not in by moving one member `c` of `u` to a
    /// variant `v` that has room (per `room`), where `c` is not yet and finds a relay.
    /// Returns false, with nothing changed, if no such move exists.
    fn swap_in(
        &mut self,
        b: usize,
        prefs: &[usize],
        room: &impl Fn(&Assignment, usize) -> bool,
    ) -> bool {
        for &u in prefs {
            if self.members[u].contains(&b) {
                continue;
            }
            for ci in 0..self.members[u].len() {
                let c = self.members[u][ci];
                for v in 0..self.members.len() {
                    if v == u || self.members[v].contains(&c) || !room(self, v) {
                        continue;
                    }
                    if !self.matchings[v].add(c) {
                        continue;
                    }
                    self.matchings[u].remove(c);
                    if self.matchings[u].add(b) {
                        self.members[u][ci] = b;
                        self.members[v].push(c);
                        self.placed[b] += 1;
                        return true;
                    }
                    // Undo: `c` gets a relay in `u` again (a failed augmentation changed
                    // nothing, so its old relay is free).
                    self.matchings[v].remove(c);
                    let _ = self.matchings[u].add(c);
                }
            }
        }
        false
    }

    /// Every backend placed `appearances` times, and variant sizes within one of each other:
    /// what makes the shares equal.
    fn is_even(&self, appearances: usize) -> bool {
        let sizes = self.members.iter().map(Vec::len);
        let (min, max) = (sizes.clone().min(), sizes.max());
        self.placed.iter().all(|&k| k == appearances)
            && matches!((min, max), (Some(lo), Some(hi)) if hi <= lo + 1)
    }

    /// The variants' intro points, each variant listing its members in the order they joined.
    fn into_placement(self) -> Placement {
        let variants = self
            .matchings
            .iter()
            .zip(&self.members)
            .map(|(m, members)| {
                let held = m.held();
                members
                    .iter()
                    .filter_map(|&b| {
                        Some(Chosen {
                            backend: b,
                            intro_point: *held[b].first()?,
                        })
                    })
                    .collect()
            })
            .collect();
        Placement {
            variants,
            left_out: self
                .placed
                .iter()
                .enumerate()
                .filter(|(_, &k)| k == 0)
                .map(|(b, _)| b)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng as _};
    use tor_hscrypto::time::TimePeriod;
    use tor_llcrypto::pk::ed25519;
    use tor_protover::Protocols;

    use super::*;
    use crate::descriptor::select::resolve;
    use crate::descriptor::synthetic::intro_point_on;
    use crate::descriptor::{intro_point_relay, MAX_INTRO_POINTS};
    use crate::onion::OnionAddress;

    const DAY: Duration = Duration::from_secs(86_400);

    /// A backend with one intro point on each of `relays` (no descriptor crypto: the plan
    /// reads only addresses and intro points).
    fn backend(r: &mut StdRng, relays: &[u32]) -> BackendSnapshot {
        let address =
            OnionAddress::from_public_key(&ed25519::Keypair::generate(&mut *r).verifying_key());
        let intro_points = relays
            .iter()
            .map(|id| {
                let mut rsa = [0u8; 20];
                rsa[..4].copy_from_slice(&id.to_be_bytes());
                intro_point_on(r, rsa).expect("intro point")
            })
            .collect();
        BackendSnapshot {
            address,
            period: TimePeriod::new(DAY, SystemTime::UNIX_EPOCH + DAY * 20_000, Duration::ZERO)
                .expect("period"),
            revision: 1.into(),
            intro_points,
            valid_from: None,
            valid_until: None,
            received_at: SystemTime::UNIX_EPOCH,
            flow_control: None,
            protocols: Protocols::default(),
        }
    }

    /// `n` backends with 3 intro points each on distinct relays drawn from `pool` relays.
    fn backends(r: &mut StdRng, n: usize, pool: u32) -> Vec<BackendSnapshot> {
        (0..n)
            .map(|_| {
                let mut relays: Vec<u32> = Vec::new();
                while relays.len() < 3.min(pool as usize) {
                    let id = r.random_range(0..pool);
                    if !relays.contains(&id) {
                        relays.push(id);
                    }
                }
                backend(r, &relays)
            })
            .collect()
    }

    /// HSDir identities `0..n`.
    fn hsdirs(from: u8, n: u8) -> Vec<RsaIdentity> {
        (from..from + n).map(|i| [i; 20].into()).collect()
    }

    /// The ring with default parameters: 8 upload HSDirs, 6 of them fetched from; with
    /// `overlap`, the two replicas' fetch sets share two HSDirs, leaving 4.
    fn ring(overlap: bool) -> (Vec<RsaIdentity>, Vec<RsaIdentity>) {
        let upload = hsdirs(100, 8);
        let fetch = if overlap {
            upload[..4].to_vec()
        } else {
            upload[..6].to_vec()
        };
        (upload, fetch)
    }

    fn plan(
        snaps: &[BackendSnapshot],
        upload: &[RsaIdentity],
        fetch: &[RsaIdentity],
    ) -> VariantPlan {
        let refs: Vec<&BackendSnapshot> = snaps.iter().collect();
        let ring = RingFacts { upload, fetch };
        plan_variants(&refs, &ring, MAX_INTRO_POINTS)
    }

    /// The checks every plan must pass, whatever the layout: each variant within the limit,
    /// one intro point per relay and per backend in it; every upload HSDir holds a variant;
    /// the backends left out are exactly those in no variant.
    fn check_well_formed(snaps: &[BackendSnapshot], p: &VariantPlan, upload: &[RsaIdentity]) {
        let refs: Vec<&BackendSnapshot> = snaps.iter().collect();
        for (v, list) in p.variants.iter().enumerate() {
            assert!(
                list.len() <= MAX_INTRO_POINTS,
                "variant {v}: {}",
                list.len()
            );
            let relays: HashSet<_> = resolve(&refs, list)
                .into_iter()
                .map(|i| intro_point_relay(i).expect("relay"))
                .collect();
            assert_eq!(relays.len(), list.len(), "variant {v}: a relay twice");
        }
        for h in upload {
            let v = p
                .variant_for(h)
                .expect("every upload HSDir holds a variant");
            assert!(v < p.variants.len());
        }
        let listed: HashSet<usize> = p.variants.iter().flatten().map(|c| c.backend).collect();
        for b in 0..snaps.len() {
            assert_eq!(listed.contains(&b), !p.left_out.contains(&b), "backend {b}");
        }
    }

    /// Shares of the listed backends within ±20 % of equal for variants; for one descriptor,
    /// counts within one intro point of each other (the rule of `select`, which keeps up to
    /// 20 intro points rather than equal counts: 3:3:3:3:3:3:2 for 7 backends).
    fn check_shares(p: &VariantPlan, n: usize, what: &str) {
        if p.is_single() {
            let mut counts = vec![0usize; n];
            for c in p.variants.iter().flatten() {
                counts[c.backend] += 1;
            }
            let listed: Vec<usize> = (0..n)
                .filter(|b| !p.left_out.contains(b))
                .map(|b| counts[b])
                .collect();
            let (lo, hi) = (listed.iter().min(), listed.iter().max());
            assert!(
                matches!((lo, hi), (Some(lo), Some(hi)) if hi - lo <= 1),
                "{what}: counts {counts:?}"
            );
            return;
        }
        let shares = p.shares(n);
        let listed = n - p.left_out.len();
        let equal = 1.0 / listed as f64;
        for (b, s) in shares.iter().enumerate() {
            if p.left_out.contains(&b) {
                continue;
            }
            assert!(
                (s / equal - 1.0).abs() <= 0.2,
                "{what}: backend {b} share {s:.4}, equal {equal:.4}"
            );
        }
        let total: f64 = shares.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "{what}: shares sum to {total}");
    }

    /// 1 to 200 backends on a network of many relays, with and without replica overlap:
    /// one descriptor while it can list everyone, then variants that list every backend
    /// (up to 20 per fetch HSDir), each mixing several backends, shares equal within 20 %.
    #[test]
    fn every_backend_listed_with_equal_shares_up_to_200() {
        let mut r = StdRng::seed_from_u64(1);
        let all = backends(&mut r, 200, 5000);
        for overlap in [false, true] {
            let (upload, fetch) = ring(overlap);
            let room = fetch.len() * MAX_INTRO_POINTS;
            for n in 1..=200 {
                let snaps = &all[..n];
                let p = plan(snaps, &upload, &fetch);
                let what = format!("{n} backends, overlap {overlap}");
                check_well_formed(snaps, &p, &upload);
                if n <= MAX_INTRO_POINTS {
                    assert!(p.is_single(), "{what}: one descriptor suffices");
                } else {
                    assert_eq!(p.variants.len(), fetch.len(), "{what}");
                    // With relays to spare, every backend is in as many variants as fit.
                    let most = (room / n).clamp(1, fetch.len());
                    let mut places = vec![0usize; n];
                    for c in p.variants.iter().flatten() {
                        places[c.backend] += 1;
                    }
                    let placed: Vec<usize> = (0..n).filter(|b| !p.left_out.contains(b)).collect();
                    assert!(
                        placed.iter().all(|&b| places[b] == most),
                        "{what}: places {places:?}, expected {most} each"
                    );
                    for list in &p.variants {
                        let members: HashSet<usize> = list.iter().map(|c| c.backend).collect();
                        assert!(members.len() >= 2, "{what}: a variant of one backend");
                    }
                }
                assert_eq!(p.left_out.len(), n.saturating_sub(room), "{what}");
                check_shares(&p, n, &what);
            }
        }
    }

    /// The private-network case of the issue: 24 backends with 3 intro points each on 16
    /// relays. One descriptor lists at most 16 of them; the variants list all, one intro
    /// point per relay in each, with equal shares.
    #[test]
    fn crowded_relays_still_list_every_backend() {
        for seed in 0..30 {
            let mut r = StdRng::seed_from_u64(100 + seed);
            let snaps = backends(&mut r, 24, 16);
            for overlap in [false, true] {
                let (upload, fetch) = ring(overlap);
                let p = plan(&snaps, &upload, &fetch);
                let what = format!("seed {seed}, overlap {overlap}");
                check_well_formed(&snaps, &p, &upload);
                assert!(!p.is_single(), "{what}");
                assert!(p.left_out.is_empty(), "{what}: left out {:?}", p.left_out);
                check_shares(&p, 24, &what);
                // Not a timid plan: at least half the 16 relays carry an intro point in each
                // variant (2 places per backend or more).
                assert!(
                    p.variants.iter().all(|v| v.len() >= 8),
                    "{what}: sizes {:?}",
                    p.variants.iter().map(Vec::len).collect::<Vec<_>>()
                );
            }
        }
    }

    /// (backend address, fetch HSDir) memberships of a plan.
    fn memberships(
        snaps: &[BackendSnapshot],
        p: &VariantPlan,
    ) -> HashSet<(OnionAddress, RsaIdentity)> {
        let mut m = HashSet::new();
        for (h, v) in &p.fetch_holders {
            for c in &p.variants[*v] {
                m.insert((snaps[c.backend].address, *h));
            }
        }
        m
    }

    /// A backend joining or leaving, or an HSDir replaced on the ring, moves few of the other
    /// backends' places.
    #[test]
    fn small_changes_move_few_backends() {
        let mut r = StdRng::seed_from_u64(3);
        let all = backends(&mut r, 46, 5000);
        let (upload, fetch) = ring(false);
        let before = memberships(&all[..45], &plan(&all[..45], &upload, &fetch));
        // 45 and 46 backends both get 2 places each (120 / 46 ≥ 2).
        let joined = memberships(&all, &plan(&all, &upload, &fetch));
        let moved = before.difference(&joined).count();
        assert!(moved <= 9, "one backend joining moved {moved} of 90 places");
        let left = memberships(&all[1..45], &plan(&all[1..45], &upload, &fetch));
        let gone = before.difference(&left).count();
        // The leaving backend's own 2 places, and a few more.
        assert!(
            gone <= 2 + 9,
            "one backend leaving moved {gone} of 90 places"
        );

        let mut fetch2 = fetch.clone();
        fetch2[0] = [200; 20].into();
        let mut upload2 = upload.clone();
        upload2[0] = fetch2[0];
        let after = memberships(&all[..45], &plan(&all[..45], &upload2, &fetch2));
        let stayed_before: HashSet<_> = before.iter().filter(|(_, h)| *h != fetch[0]).collect();
        let kept = stayed_before.iter().filter(|m| after.contains(m)).count();
        assert!(
            kept * 10 >= stayed_before.len() * 7,
            "an HSDir replaced: the other HSDirs kept only {kept} of {} places",
            stayed_before.len()
        );
    }

    /// Upload-only HSDirs hold variants too, spread over them.
    #[test]
    fn upload_only_hsdirs_hold_variants() {
        let mut r = StdRng::seed_from_u64(4);
        let snaps = backends(&mut r, 60, 5000);
        let (upload, fetch) = ring(false);
        let p = plan(&snaps, &upload, &fetch);
        assert_eq!(p.upload_only_holders.len(), 2);
        let held: HashMap<usize, usize> =
            p.upload_only_holders
                .iter()
                .fold(HashMap::new(), |mut m, (_, v)| {
                    *m.entry(*v).or_default() += 1;
                    m
                });
        assert_eq!(
            held.len(),
            2,
            "two upload-only HSDirs, two different variants"
        );
        assert_eq!(p.variants.iter().map(Vec::len).sum::<usize>(), 120);
    }
}
