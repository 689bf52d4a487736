//! Synthetic backends: real keys and real, signed descriptors with made-up intro points.
//!
//! For tests, benchmarks and experiments that need backend descriptors without a Tor network.
//! The descriptors are built exactly as a backend's would be (signed, encrypted, with
//! certificates), only the intro points point nowhere: each has the three link specifiers C tor
//! writes (IPv4 ORPort, RSA identity, Ed25519 identity) and random keys.

use std::time::{Duration, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_protover::Protocols;

use super::build::{build_with_arti, BuildRequest};
use super::period_keys::{BuildError, FrontendPeriodKeys};
use super::{PublishPeriod, DEFAULT_MAX_DESCRIPTOR_LEN};
use crate::keys::FrontendKey;
use crate::onion::OnionAddress;

/// A made-up backend onion service: an identity key and some intro points.
#[derive(Debug)]
pub struct SyntheticBackend {
    /// The backend's identity key.
    pub key: FrontendKey,
    /// Its intro points.
    pub intro_points: Vec<IntroPointDesc>,
}

impl SyntheticBackend {
    /// A backend with a random key and `n` random intro points.
    pub fn generate<R: rand::Rng + rand::CryptoRng>(rng: &mut R, n: usize) -> Self {
        SyntheticBackend {
            key: FrontendKey::generate(rng),
            intro_points: (0..n).filter_map(|_| intro_point(rng)).collect(),
        }
    }

    /// The backend's onion address.
    pub fn address(&self) -> OnionAddress {
        self.key.address()
    }

    /// A signed, encrypted descriptor for `period`, as the backend would upload it at `now`.
    pub fn descriptor<R: rand::Rng + rand::CryptoRng>(
        &self,
        period: &PublishPeriod,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<String, BuildError> {
        let keys = FrontendPeriodKeys::derive(&self.key, period.time_period)?;
        self.descriptor_with_keys(&keys, period, now, rng)
    }

    /// [`SyntheticBackend::descriptor`] with the period's keys given (their signing key
    /// certifies the intro points).
    pub fn descriptor_with_keys<R: rand::Rng + rand::CryptoRng>(
        &self,
        keys: &FrontendPeriodKeys,
        period: &PublishPeriod,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<String, BuildError> {
        let revision = keys.revision_counter(period.srv_start, now, None)?;
        let req = BuildRequest {
            intro_points: &self.intro_points,
            revision,
            now,
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
            flow_control: None,
            protocols: Protocols::default(),
            auth_clients: None,
        };
        Ok(build_with_arti(keys, &req, rng)?.text.to_string())
    }
}

/// The publish periods around `now` on a network with 24-hour periods: the current one and the
/// next, each with an SRV period starting at its own start (as `hs_all_time_periods` gives
/// two periods once an SRV exists).
pub fn periods_around(now: SystemTime) -> Vec<PublishPeriod> {
    let day = Duration::from_secs(24 * 3600);
    let offset = Duration::from_secs(12 * 3600);
    let Ok(current) = TimePeriod::new(day, now, offset) else {
        return Vec::new();
    };
    [Some(current), current.next()]
        .into_iter()
        .flatten()
        .filter_map(|tp| {
            let start = tp.range().ok()?.start;
            // The SRV period of the next time period started before `now` (it is the one in
            // force now); for the current period use its start.
            let srv_start = if start > now { start - day } else { start };
            Some(PublishPeriod {
                time_period: tp,
                srv_start,
            })
        })
        .collect()
}

/// A random intro point with the link specifiers C tor writes (`None` only if Arti's
/// builder rejects it, which it does not for complete input).
pub fn intro_point<R: rand::Rng + rand::CryptoRng>(rng: &mut R) -> Option<IntroPointDesc> {
    let mut rsa = [0u8; 20];
    rng.fill_bytes(&mut rsa);
    intro_point_on(rng, rsa)
}

/// A random intro point on the relay whose RSA identity is `rsa` (to model backends that
/// share relays, as they do on small networks and by chance on the public one).
pub fn intro_point_on<R: rand::Rng + rand::CryptoRng>(
    rng: &mut R,
    rsa: [u8; 20],
) -> Option<IntroPointDesc> {
    super::capacity::typical_intro_point(rng, rsa)
}
