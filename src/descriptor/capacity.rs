//! How many authorized clients fit in one descriptor, for a number of intro points.
//!
//! With restricted discovery every descriptor carries one `auth-client` entry per client
//! (padded with random ones to a multiple of
//! [`AUTH_CLIENT_MULTIPLE`](crate::client_auth::AUTH_CLIENT_MULTIPLE)), about 75 bytes each
//! once encrypted, beside the intro points, and the whole must stay under the network's
//! `hsdir_max_desc_size` (50,000 bytes by default). The [`Engine`](super::Engine) lists fewer
//! intro points when the clients do not fit beside 20; this module answers the operator's
//! question ahead of time ("how many clients can I add?") by building real descriptors with
//! the real encoder, not from a formula that could drift from it.

use std::time::{Duration, SystemTime};

use tor_hscrypto::pk::{HsIntroPtSessionIdKey, HsSvcNtorKey};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_linkspec::LinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_protover::Protocols;

use super::build::{build_descriptor, BuildRequest};
use super::period_keys::{BuildError, FrontendPeriodKeys};
use super::MAX_INTRO_POINTS;
use crate::client_auth::AUTH_CLIENT_MULTIPLE;
use crate::keys::FrontendKey;

/// Most clients [`clients_that_fit`] looks for: far past what any size limit Tor uses
/// admits, so the search always ends.
const SEARCH_LIMIT: usize = 1 << 16;

/// A random intro point with the link specifiers C tor writes (IPv4 ORPort, RSA identity,
/// Ed25519 identity) on the relay whose RSA identity is `rsa`. `None` only if Arti's
/// builder rejects it, which it does not for complete input.
pub(crate) fn typical_intro_point<R: rand::Rng + rand::CryptoRng>(
    rng: &mut R,
    rsa: [u8; 20],
) -> Option<IntroPointDesc> {
    let mut ed = [0u8; 32];
    // The relay's Ed25519 identity follows from its RSA identity here: only the size and,
    // in tests, the pairing matter.
    ed[..20].copy_from_slice(&rsa);
    let ip = std::net::Ipv4Addr::new(10, rng.next_u32() as u8, rng.next_u32() as u8, 1);
    let port = 9000 + (rng.next_u32() % 1000) as u16;
    let specs = [
        LinkSpec::OrPort(ip.into(), port),
        LinkSpec::RsaId(rsa.into()),
        LinkSpec::Ed25519Id(ed.into()),
    ]
    .into_iter()
    .filter_map(|ls| ls.encode().ok())
    .collect();
    let ntor = curve25519::PublicKey::from(&curve25519::StaticSecret::random_from_rng(&mut *rng));
    let svc_ntor =
        curve25519::PublicKey::from(&curve25519::StaticSecret::random_from_rng(&mut *rng));
    let sid = ed25519::Keypair::generate(&mut *rng).verifying_key();
    IntroPointDesc::builder()
        .link_specifiers(specs)
        .ipt_kp_ntor(ntor)
        .kp_hs_ipt_sid(HsIntroPtSessionIdKey::from(sid))
        .kp_hss_ntor(HsSvcNtorKey::from(svc_ntor))
        .build()
        .ok()
}

/// Descriptors with throwaway keys and typical intro points, to measure what fits.
struct Trial {
    /// A throwaway frontend's keys for the current period.
    keys: FrontendPeriodKeys,
    /// [`MAX_INTRO_POINTS`] typical intro points; a trial lists a prefix of them.
    points: Vec<IntroPointDesc>,
    /// The flow-control line C tor backends declare.
    flow_control: Option<(Protocols, u8)>,
    /// When the descriptors are built.
    now: SystemTime,
    /// The size limit.
    max_len: usize,
}

impl Trial {
    /// Throwaway keys and intro points, for descriptors of at most `max_len` bytes.
    fn new(max_len: usize) -> Result<Self, BuildError> {
        let mut rng = rand::rng();
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let period =
            TimePeriod::new(day, now, day / 2).map_err(|_| BuildError::ClockBeforeSrvPeriod)?;
        let keys = FrontendPeriodKeys::derive(&FrontendKey::generate(&mut rng), period)?;
        let points = (0..MAX_INTRO_POINTS as u64)
            .filter_map(|i| {
                let mut rsa = [0u8; 20];
                rsa[..8].copy_from_slice(&i.to_be_bytes());
                typical_intro_point(&mut rng, rsa)
            })
            .collect();
        // C tor backends of 0.4.8 and later declare flow control; the line costs a few bytes.
        let flow_control = "FlowCtrl=1-2".parse::<Protocols>().ok().map(|p| (p, 31u8));
        Ok(Trial {
            keys,
            points,
            flow_control,
            now,
            max_len,
        })
    }

    /// Whether a descriptor with `intro_points` intro points and `clients` authorized
    /// clients (padded as every descriptor is) fits.
    fn fits(&self, intro_points: usize, clients: usize) -> Result<bool, BuildError> {
        let mut rng = rand::rng();
        let clients: Vec<curve25519::PublicKey> = (0..clients)
            .map(|_| {
                curve25519::PublicKey::from(&curve25519::StaticSecret::random_from_rng(&mut rng))
            })
            .collect();
        let req = BuildRequest {
            intro_points: self.points.get(..intro_points).unwrap_or(&self.points),
            // The largest counter a descriptor can carry: its digits count too.
            revision: RevisionCounter::from(u64::MAX),
            now: self.now,
            max_len: self.max_len,
            flow_control: self.flow_control.clone(),
            protocols: Protocols::default(),
            auth_clients: Some(&clients),
        };
        match build_descriptor(&self.keys, &req, &mut rng) {
            Ok(_) => Ok(true),
            Err(BuildError::TooLarge(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// How many authorized clients fit in one descriptor listing `intro_points` typical intro
/// points (as C tor backends write them: IPv4 ORPort, RSA and Ed25519 identities) within
/// `max_len` bytes: a multiple of [`AUTH_CLIENT_MULTIPLE`], since entries are padded to one;
/// 0 if not even one client fits.
///
/// Found by building descriptors with throwaway keys (about a dozen builds). Intro points
/// with more link specifiers (IPv6) or a longer flow-control line take a few more bytes
/// each, so treat the answer as a close estimate, not a promise to the byte.
pub fn clients_that_fit(intro_points: usize, max_len: usize) -> Result<usize, BuildError> {
    let trial = Trial::new(max_len)?;
    let fits = |groups: usize| trial.fits(intro_points, groups * AUTH_CLIENT_MULTIPLE);
    // In groups of AUTH_CLIENT_MULTIPLE: find a size that does not fit, then bisect.
    if !fits(1)? {
        return Ok(0);
    }
    let (mut lo, mut hi) = (1usize, 2usize);
    while fits(hi)? {
        lo = hi;
        hi *= 2;
        if hi * AUTH_CLIENT_MULTIPLE > SEARCH_LIMIT {
            return Ok(lo * AUTH_CLIENT_MULTIPLE);
        }
    }
    // Invariant: `lo` groups fit, `hi` do not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo * AUTH_CLIENT_MULTIPLE)
}

/// The most typical intro points (up to [`MAX_INTRO_POINTS`]) a descriptor for `clients`
/// authorized clients can list within `max_len` bytes: what the [`Engine`](super::Engine)
/// will list per descriptor; 0 if not even one fits (see [`clients_that_fit`] for the
/// caveats).
pub fn intro_points_for_clients(clients: usize, max_len: usize) -> Result<usize, BuildError> {
    let trial = Trial::new(max_len)?;
    for n in (1..=MAX_INTRO_POINTS).rev() {
        if trial.fits(n, clients)? {
            return Ok(n);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_auth::{CLIENTS_BESIDE_20_INTRO_POINTS, MAX_AUTHORIZED_CLIENTS};
    use crate::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN;

    /// The limits the config enforces and the docs quote are what the encoder says.
    #[test]
    fn config_limits_match_the_encoder() {
        assert_eq!(
            clients_that_fit(1, DEFAULT_MAX_DESCRIPTOR_LEN).ok(),
            Some(MAX_AUTHORIZED_CLIENTS)
        );
        assert_eq!(
            clients_that_fit(MAX_INTRO_POINTS, DEFAULT_MAX_DESCRIPTOR_LEN).ok(),
            Some(CLIENTS_BESIDE_20_INTRO_POINTS)
        );
        assert_eq!(
            intro_points_for_clients(CLIENTS_BESIDE_20_INTRO_POINTS, DEFAULT_MAX_DESCRIPTOR_LEN)
                .ok(),
            Some(MAX_INTRO_POINTS)
        );
        assert_eq!(
            intro_points_for_clients(MAX_AUTHORIZED_CLIENTS + 1, DEFAULT_MAX_DESCRIPTOR_LEN).ok(),
            Some(0)
        );
    }

    /// A limit too small for any descriptor leaves room for no client, rather than looping.
    #[test]
    fn tiny_limit_fits_nobody() {
        assert_eq!(clients_that_fit(1, 1000).ok(), Some(0));
        assert_eq!(intro_points_for_clients(1, 1000).ok(), Some(0));
    }
}
