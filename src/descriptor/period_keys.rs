//! The frontend's keys for one time period, and why a build can fail.
//!
//! Below both the descriptor writer (`encode`) and the build around it (`build`), which use
//! them; the keys are derived once per period (blinding is the costly part) and the
//! descriptor-signing key is made once per period, as C tor and Arti do.

use std::sync::Arc;
use std::time::SystemTime;

use digest::Digest as _;
use tor_hscrypto::ope::{AesOpeKey, SrvPeriodOffset};
use tor_hscrypto::pk::{HsBlindId, HsBlindIdKey, HsBlindIdKeypair};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::{RevisionCounter, Subcredential};
use tor_llcrypto::d::Sha3_256;
use tor_llcrypto::pk::ed25519;
use zeroize::Zeroizing;

use super::MAX_INTRO_POINTS;

/// Length of the descriptor cookie (`N_hs_desc_enc`) and of its encryption in an
/// `auth-client` line, as Arti writes and reads them.
pub(crate) const COOKIE_LEN: usize = 16;

/// Domain separation of the descriptor-cookie key (see
/// [`FrontendPeriodKeys::descriptor_cookie`]): a constant of this project, so that the key
/// is unrelated to any other derived from the blinded secret key.
const COOKIE_KEY_CONSTANT: &[u8] = b"onionbalance-descriptor-cookie-key-v1";
use crate::keys::FrontendKey;

/// The frontend's keys for one time period, derived once per period.
pub struct FrontendPeriodKeys {
    /// The period.
    pub(super) period: TimePeriod,
    /// Blinded public key (the descriptor's identity at the HSDirs).
    pub(super) blinded_public: HsBlindIdKey,
    /// Blinded keypair (certifies the descriptor-signing key). Zeroized on drop.
    pub(super) blinded_keypair: HsBlindIdKeypair,
    /// Subcredential (encrypts the descriptor).
    subcredential: Subcredential,
    /// Revision-counter key, from the blinded secret key.
    ope: AesOpeKey,
    /// Descriptor-cookie key, from the blinded secret key (see
    /// [`FrontendPeriodKeys::descriptor_cookie`]).
    cookie_key: Zeroizing<[u8; 32]>,
    /// The descriptor-signing key (`KP_hs_desc_sign`) for this period. Zeroized on drop.
    pub(super) desc_sign: ed25519::Keypair,
}

impl FrontendPeriodKeys {
    /// Derives the keys of `frontend` for `period`, with a new descriptor-signing key from the
    /// operating system's random source.
    pub fn derive(frontend: &FrontendKey, period: TimePeriod) -> Result<Self, BuildError> {
        let (blinded_public, blinded_keypair, subcredential) = frontend
            .keypair()
            .compute_blinded_key(period)
            .map_err(|e| BuildError::Blinding(Arc::new(e)))?;
        // As tor-hsservice: the OPE key is the first 32 bytes of the blinded expanded secret
        // key (C tor hashes a prefix and the whole key instead).
        let (ope, cookie_key) = {
            // The blinded keypair is not `Clone`; derive it a second time to consume it.
            let (_, for_ope, _) = frontend
                .keypair()
                .compute_blinded_key(period)
                .map_err(|e| BuildError::Blinding(Arc::new(e)))?;
            let expanded: ed25519::ExpandedKeypair = for_ope.into();
            let secret = Zeroizing::new(expanded.to_secret_key_bytes());
            let mut h = Sha3_256::new();
            h.update(COOKIE_KEY_CONSTANT);
            h.update(&secret[..]);
            let cookie_key = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
            (AesOpeKey::from_secret(&secret[..32]), cookie_key)
        };
        Ok(FrontendPeriodKeys {
            period,
            blinded_public,
            blinded_keypair,
            subcredential,
            ope,
            cookie_key,
            desc_sign: ed25519::Keypair::generate(&mut rand::rng()),
        })
    }

    /// The descriptor cookie of restricted discovery for the descriptors with `revision`
    /// (see the `encode` module's "The descriptor cookie"): a keyed hash of the revision,
    /// under a key derived from the blinded secret key. Every frontend holding the identity
    /// key computes the same, nobody else can.
    pub(crate) fn descriptor_cookie(
        &self,
        revision: RevisionCounter,
    ) -> Zeroizing<[u8; COOKIE_LEN]> {
        let mut h = Sha3_256::new();
        h.update(&self.cookie_key[..]);
        h.update(u64::from(revision).to_be_bytes());
        let digest = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
        let mut cookie = Zeroizing::new([0u8; COOKIE_LEN]);
        cookie.copy_from_slice(&digest[..COOKIE_LEN]);
        cookie
    }

    /// The period these keys are for.
    pub fn period(&self) -> TimePeriod {
        self.period
    }

    /// The blinded identity that HSDirs index our descriptor by for this period.
    pub fn blind_id(&self) -> HsBlindId {
        self.blinded_public.id()
    }

    /// The descriptor-signing key, the blinded keypair that certifies it and the blinded
    /// public key: for the `layers` module, which writes descriptors by hand for fuzzing.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn signing_keys(&self) -> (&ed25519::Keypair, &HsBlindIdKeypair, &HsBlindIdKey) {
        (&self.desc_sign, &self.blinded_keypair, &self.blinded_public)
    }

    /// The subcredential clients use to decrypt our descriptor for this period.
    pub fn subcredential(&self) -> Subcredential {
        self.subcredential
    }

    /// The revision counter for a descriptor built at `now`, strictly above `previous`.
    ///
    /// Fails if `now` is before the start of the SRV period (a clock or consensus problem).
    pub fn revision_counter(
        &self,
        srv_start: SystemTime,
        now: SystemTime,
        previous: Option<RevisionCounter>,
    ) -> Result<RevisionCounter, BuildError> {
        let offset = now
            .duration_since(srv_start)
            .map_err(|_| BuildError::ClockBeforeSrvPeriod)?;
        let secs = u32::try_from(offset.as_secs()).map_err(|_| BuildError::ClockBeforeSrvPeriod)?;
        let ope = self.ope.encrypt(SrvPeriodOffset::from(secs));
        let floor = previous
            .map(|p| u64::from(p).saturating_add(1))
            .unwrap_or(0);
        Ok(RevisionCounter::from(ope.max(floor)))
    }
}

/// Why a descriptor could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A descriptor without intro points is useless and would replace a working one.
    #[error("no intro points to publish: no backend has a valid descriptor")]
    NoIntroPoints,
    /// More intro points than clients would use.
    #[error("{0} intro points given, at most {MAX_INTRO_POINTS} fit in a descriptor")]
    TooManyIntroPoints(usize),
    /// The encoded descriptor would exceed the maximum size.
    #[error(
        "the descriptor would be larger than the {0}-byte maximum; publish fewer intro points"
    )]
    TooLarge(usize),
    /// The clock is before the start of the shared-random period.
    #[error("the current time is before the start of the shared-random period: check this machine's clock")]
    ClockBeforeSrvPeriod,
    /// The frontend key could not be blinded for the period.
    #[error("cannot blind the frontend key for the time period")]
    Blinding(#[source] Arc<tor_llcrypto::pk::keymanip::BlindingError>),
    /// The descriptor-signing key could not be certified.
    #[error("cannot certify the descriptor-signing key")]
    Certificate(#[source] tor_cert::CertEncodeError),
    /// The descriptor could not be encoded and signed.
    #[error("cannot encode the descriptor")]
    Encoding(#[source] tor_bytes::EncodeError),
}

impl crate::error::HasKind for BuildError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BuildFailed
    }
}
