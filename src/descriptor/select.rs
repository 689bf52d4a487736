//! Selection: which backend intro points go into the frontend descriptor.
//!
//! Clients only use the first [`MAX_INTRO_POINTS`](super::MAX_INTRO_POINTS) intro points of a
//! descriptor, and a descriptor must fit in `hsdir_max_desc_size`, so with many backends we
//! must choose. The choice is fair: backends take turns (in a random order), each giving one
//! intro point (chosen at random among its own) per turn, so every backend that has intro
//! points is represented before any backend is represented twice. The randomness comes from
//! the caller's RNG, so a seeded RNG gives a reproducible choice.

use rand::seq::SliceRandom as _;
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

/// Chooses at most `max` intro points from `backends`, round-robin in a random order.
///
/// Returns them in the order chosen: the first `backends.len()` (or `max`) entries come from
/// distinct backends.
pub fn select_intro_points<R: rand::Rng + ?Sized>(
    backends: &[&BackendSnapshot],
    max: usize,
    rng: &mut R,
) -> Vec<Chosen> {
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.shuffle(rng);
    // For each backend (in turn order), its intro point indices in a random order.
    let queues: Vec<(usize, Vec<usize>)> = order
        .into_iter()
        .map(|b| {
            let mut ipts: Vec<usize> = (0..backends[b].intro_points.len()).collect();
            ipts.shuffle(rng);
            (b, ipts)
        })
        .collect();
    let mut chosen = Vec::with_capacity(max);
    let deepest = queues.iter().map(|(_, q)| q.len()).max().unwrap_or(0);
    'rounds: for round in 0..deepest {
        for (b, q) in &queues {
            if chosen.len() >= max {
                break 'rounds;
            }
            if let Some(&i) = q.get(round) {
                chosen.push(Chosen {
                    backend: *b,
                    intro_point: i,
                });
            }
        }
    }
    chosen
}

/// Resolves a selection to the intro points themselves.
pub fn resolve<'a>(backends: &[&'a BackendSnapshot], chosen: &[Chosen]) -> Vec<&'a IntroPointDesc> {
    chosen
        .iter()
        .filter_map(|c| backends.get(c.backend)?.intro_points.get(c.intro_point))
        .collect()
}
