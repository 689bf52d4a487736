//! Build: the frontend's descriptor for one time period, signed and encrypted.
//!
//! For each time period we derive the frontend's blinded keypair, subcredential and
//! revision-counter key once ([`FrontendPeriodKeys`]), then each build:
//!
//! * signs with the period's descriptor-signing key, made once per period and reused for every
//!   rebuild in that period with a fresh certificate (C tor and Arti do the same, so HSDirs
//!   see what they see from any onion service);
//! * re-certifies every intro point's `auth-key` and `enc-key-cert` with that signing key
//!   (clients reject intro-point certificates signed by anyone else; this needs only the
//!   backends' *public* keys, which is all we have), once per build even when several
//!   variants list the intro point (see the `encode` module);
//! * encrypts both layers with the frontend's subcredential, with fresh salts, descriptor
//!   cookie, ephemeral key and `auth-client` entries in every descriptor;
//! * refuses, rather than truncates, a descriptor larger than the network's maximum.
//!
//! The revision counter is the order-preserving encryption (OPE) of the number of seconds
//! since the start of the shared-random period, keyed by the blinded secret key, as Arti's
//! `tor-hsservice` computes it (C tor derives its OPE key differently, from a hash over a
//! prefix and the whole blinded secret key, so the values differ but behave alike): it grows
//! with time without any stored state and does not mark our descriptors as Onionbalance's. Two builds in the same second would get the same counter, and
//! HSDirs reject a counter equal to the one they hold, so callers pass the last counter they
//! used and get a strictly larger one.

use std::sync::Arc;
use std::time::SystemTime;

#[cfg(any(test, feature = "testing"))]
use tor_cell::chancell::msg::HandshakeType;
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::curve25519;
use tor_llcrypto::pk::ed25519::Ed25519Identity;
use tor_netdoc::doc::hsdesc::{create_desc_sign_key_cert, IntroPointDesc};
#[cfg(any(test, feature = "testing"))]
use tor_netdoc::{doc::hsdesc::HsDescBuilder, NetdocBuilder as _};
use tor_protover::Protocols;

use super::encode::Encoded;
use super::listing::Listing;
use super::period_keys::{BuildError, FrontendPeriodKeys};
#[cfg(any(test, feature = "testing"))]
use super::PublishPeriod;
use super::{CERT_LIFETIME, DESCRIPTOR_LIFETIME, MAX_INTRO_POINTS};

/// Everything one descriptor build needs besides the keys and the RNG.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The intro points to list (1 to [`MAX_INTRO_POINTS`]).
    pub intro_points: &'a [IntroPointDesc],
    /// The revision counter (from [`FrontendPeriodKeys::revision_counter`]).
    pub revision: RevisionCounter,
    /// Now: certificates run from here for [`CERT_LIFETIME`].
    pub now: SystemTime,
    /// Maximum encoded size (consensus `hsdir_max_desc_size`).
    pub max_len: usize,
    /// Flow-control line to declare (backends' common value), if any.
    pub flow_control: Option<(Protocols, u8)>,
    /// Protocol capabilities to declare (backends' common value).
    pub protocols: Protocols,
    /// Restricted discovery: the public keys of the clients allowed to read the intro points
    /// (random entries are added, see [`crate::client_auth::padded_auth_clients`]), or `None`
    /// for a descriptor anyone who knows the address can read.
    pub auth_clients: Option<&'a [curve25519::PublicKey]>,
}

/// A finished descriptor, ready to upload.
#[derive(Debug, Clone)]
pub struct BuiltDescriptor {
    /// The period it is for.
    pub period: TimePeriod,
    /// Its blinded identity (where it goes on the ring).
    pub blind_id: HsBlindId,
    /// Its revision counter.
    pub revision: RevisionCounter,
    /// How many intro points it lists.
    pub intro_points: usize,
    /// What it lists (see [`Listing`]): equal for descriptors that serve clients alike.
    pub listing: Listing,
    /// The descriptor-signing key it is signed with (public). Each frontend makes its own
    /// per period, so this is what tells our descriptor from an equivalent one another
    /// frontend with our key built with the same counter.
    pub signing_key: Ed25519Identity,
    /// The text to upload.
    pub text: Arc<str>,
}

/// Builds, signs and encrypts a descriptor for the period of `keys`: its intro points
/// certified by the period's signing key (on all cores), then the three documents written,
/// encrypted and signed as Arti's `HsDescBuilder` writes them.
pub fn build_descriptor<R: rand::Rng + rand::CryptoRng>(
    keys: &FrontendPeriodKeys,
    req: &BuildRequest<'_>,
    rng: &mut R,
) -> Result<BuiltDescriptor, BuildError> {
    let n = check_count(req.intro_points.len())?;
    let cert_expiry = req.now + CERT_LIFETIME;
    let listed: Vec<(usize, &IntroPointDesc)> = req.intro_points.iter().enumerate().collect();
    let certified = super::encode::certify(&keys.desc_sign, &listed, cert_expiry)?;
    let sections: Vec<&super::encode::IntroSection> =
        (0..n).filter_map(|i| certified.get(&i)).collect();
    let sign_cert = keys.sign_cert(cert_expiry)?;
    // Fresh random entries for every descriptor, as C tor: the same padding twice would let
    // an observer holding two descriptors tell the random entries from the real ones.
    let auth_clients = req
        .auth_clients
        .map(|real| crate::client_auth::padded_auth_clients(real, rng));
    let encoding = super::encode::Encoding {
        keys,
        sign_cert: sign_cert.as_ref(),
        revision: req.revision,
        lifetime_minutes: lifetime_minutes(),
        max_len: req.max_len,
        flow_control: req.flow_control.as_ref(),
        protocols: &req.protocols,
        auth_clients: auth_clients.as_deref(),
    };
    let encoded = super::encode::encode(&encoding, &sections, rng)?;
    Ok(keys.built(req.revision, n, encoded))
}

/// `n` if a descriptor may list that many intro points.
pub(super) fn check_count(n: usize) -> Result<usize, BuildError> {
    if n == 0 {
        return Err(BuildError::NoIntroPoints);
    }
    if n > MAX_INTRO_POINTS {
        return Err(BuildError::TooManyIntroPoints(n));
    }
    Ok(n)
}

/// The lifetime we declare, in minutes.
pub(super) fn lifetime_minutes() -> u16 {
    u16::try_from(DESCRIPTOR_LIFETIME.as_secs() / 60).unwrap_or(180)
}

impl FrontendPeriodKeys {
    /// The period's signing key with a fresh certificate: as C tor and Arti, so an HSDir sees
    /// one signing key per period whatever our rebuild rate.
    pub(super) fn sign_cert(
        &self,
        expiry: SystemTime,
    ) -> Result<tor_cert::EncodedEd25519Cert, BuildError> {
        create_desc_sign_key_cert(
            &self.desc_sign.verifying_key(),
            &self.blinded_keypair,
            expiry,
        )
        .map_err(BuildError::Certificate)
    }

    /// A finished descriptor of this period.
    pub(super) fn built(
        &self,
        revision: RevisionCounter,
        intro_points: usize,
        encoded: Encoded,
    ) -> BuiltDescriptor {
        BuiltDescriptor {
            period: self.period,
            blind_id: self.blind_id(),
            revision,
            intro_points,
            listing: encoded.listing,
            signing_key: self.desc_sign.verifying_key().into(),
            text: Arc::from(encoded.text),
        }
    }
}

/// The same descriptor written by Arti's `HsDescBuilder`, which certifies the intro points
/// itself: how a backend (C tor or Arti) makes its own, so synthetic backends use it, and the
/// reference our encoder is compared with.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn build_with_arti<R: rand::Rng + rand::CryptoRng>(
    keys: &FrontendPeriodKeys,
    req: &BuildRequest<'_>,
    rng: &mut R,
) -> Result<BuiltDescriptor, BuildError> {
    let n = check_count(req.intro_points.len())?;
    let cert_expiry = req.now + CERT_LIFETIME;
    let sign_cert = keys.sign_cert(cert_expiry)?;
    let auth_clients = req
        .auth_clients
        .map(|real| crate::client_auth::padded_auth_clients(real, rng));
    let mut builder = HsDescBuilder::default()
        .blinded_id(&keys.blinded_public)
        .hs_desc_sign(&keys.desc_sign)
        .hs_desc_sign_cert(sign_cert)
        .create2_formats(&[HandshakeType::NTOR])
        .auth_required(None)
        .auth_clients(auth_clients.as_deref())
        .is_single_onion_service(false)
        .intro_points(req.intro_points)
        .intro_auth_key_cert_expiry(cert_expiry)
        .intro_enc_key_cert_expiry(cert_expiry)
        .lifetime(lifetime_minutes().into())
        .revision_counter(req.revision)
        .subcredential(keys.subcredential())
        .supported_protocols(req.protocols.clone())
        .max_generated_len(req.max_len);
    if let Some(fc) = &req.flow_control {
        builder = builder.flow_control(Some(fc.clone()));
    }
    let text = builder.build_sign(rng).map_err(|e| match e {
        tor_bytes::EncodeError::BadLengthValue => BuildError::TooLarge(req.max_len),
        other => BuildError::Encoding(other),
    })?;
    // What it lists, from the same inner document as our encoder writes (the unit test of
    // `encode` checks they are byte for byte the same).
    let listed: Vec<(usize, &IntroPointDesc)> = req.intro_points.iter().enumerate().collect();
    let certified = super::encode::certify(&keys.desc_sign, &listed, cert_expiry)?;
    let sections: Vec<&super::encode::IntroSection> =
        (0..n).filter_map(|i| certified.get(&i)).collect();
    let inner = super::encode::inner_document(req.flow_control.as_ref(), &req.protocols, &sections);
    let encoded = Encoded {
        text,
        listing: Listing::of_inner_document(&inner),
    };
    Ok(keys.built(req.revision, n, encoded))
}

/// Convenience: the SRV-relative revision counter and the build, for one [`PublishPeriod`].
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) fn build_for_period<R: rand::Rng + rand::CryptoRng>(
    keys: &FrontendPeriodKeys,
    period: &PublishPeriod,
    previous: Option<RevisionCounter>,
    mut req: BuildRequest<'_>,
    rng: &mut R,
) -> Result<BuiltDescriptor, BuildError> {
    req.revision = keys.revision_counter(period.srv_start, req.now, previous)?;
    build_descriptor(keys, &req, rng)
}
