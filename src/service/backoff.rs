//! Retry delays after failures: exponential, capped, with jitter.
//!
//! A failed upload is retried, not left for the next trigger: an HSDir that missed our
//! descriptor is a slice of the ring where clients find nothing. But a relay that is down
//! (test networks keep dead relays `Running` for a while) should not be hammered, so each
//! failure doubles the delay, up to a cap, and jitter keeps services from retrying in step.

use std::time::Duration;

/// First retry delay.
pub(crate) const INITIAL: Duration = Duration::from_secs(2);
/// Largest retry delay.
pub(crate) const MAX: Duration = Duration::from_secs(5 * 60);

/// Backoff state for one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backoff {
    /// Consecutive failures so far.
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt after one more failure: `INITIAL × 2^(failures-1)`,
    /// capped at `MAX`, then scaled by a random factor in [0.5, 1.0].
    pub(crate) fn next_delay<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let base = INITIAL.saturating_mul(1u32 << exp).min(MAX);
        // Jitter in [50%, 100%]: never later than the schedule, never much earlier.
        let permille = 500 + (rng.next_u32() % 501);
        base.mul_f64(f64::from(permille) / 1000.0)
    }

    /// Consecutive failures so far.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the start after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = Backoff::default();
        let mut expected = INITIAL;
        for _ in 0..12 {
            let d = b.next_delay(&mut rng);
            assert!(d <= expected && d >= expected / 2, "{d:?} vs {expected:?}");
            expected = (expected * 2).min(MAX);
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.next_delay(&mut rng) <= INITIAL);
    }
}
