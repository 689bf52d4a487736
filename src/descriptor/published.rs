//! Reading back a descriptor of our own address, as an HSDir returned it.
//!
//! Only a holder of the frontend's identity key can: the outer signature is verified against
//! the period's blinded key, the middle layer is opened with the subcredential, and the inner
//! one either without a descriptor cookie or, with restricted discovery, with the cookie
//! every frontend derives from the key and the revision counter (see
//! [`FrontendPeriodKeys::descriptor_cookie`]). What comes out is the revision counter, the
//! descriptor-signing key and the [`Listing`]: how two frontends with one key tell an
//! equivalent descriptor from another, and each other's descriptors from their own.

use tor_cert::Ed25519Cert;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::ed25519::Ed25519Identity;

use super::encode::{decrypt_layer, object_after, Layer, INNER_LAYER, MIDDLE_LAYER};
use super::intake::{verified_revision, IntakeError};
use super::listing::Listing;
use super::period_keys::FrontendPeriodKeys;

/// What a published descriptor of our address says, as far as we can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedDescriptor {
    /// Its revision counter (verified: the outer signature covers it).
    pub revision: RevisionCounter,
    /// The descriptor-signing key it is signed with (verified: certified by our blinded key,
    /// and the outer signature made with it). Every frontend makes its own per period.
    pub signing_key: Ed25519Identity,
    /// What it lists; `None` when its inner layer cannot be opened with our key (a publisher
    /// that used a random descriptor cookie: C tor or Python Onionbalance before a move).
    pub listing: Option<Listing>,
}

/// Reads a descriptor published for the period of `keys` (as an HSDir returned it): verifies
/// its signature and size, and reads its revision counter and, where our key opens it, its
/// [`Listing`]. An error means the text is not a descriptor of our address for that period.
pub fn read_listing(
    keys: &FrontendPeriodKeys,
    text: &str,
    max_len: usize,
) -> Result<PublishedDescriptor, IntakeError> {
    let blind_id = keys.blind_id();
    let revision = verified_revision(text, &blind_id, max_len)?;
    // The certificate is the one the signature was just verified with: the outer document
    // has exactly one.
    let signing_key = object_after(text, "descriptor-signing-key-cert")
        .and_then(|cert| Ed25519Cert::decode(&cert).ok())
        .and_then(|cert| cert.peek_subject_key().as_ed25519().copied())
        .ok_or(IntakeError::NoSigningKey)?;
    let subcredential = keys.subcredential();
    fn layer<'a>(
        blind_id: &'a tor_hscrypto::pk::HsBlindId,
        subcredential: &'a tor_hscrypto::Subcredential,
        revision: RevisionCounter,
        cookie: Option<&'a [u8]>,
        string_const: &'a [u8],
    ) -> Layer<'a> {
        Layer {
            blind_id,
            cookie,
            subcredential,
            revision,
            string_const,
        }
    }
    let (id, sub) = (&blind_id, &subcredential);
    let listing = (|| {
        let middle_blob = object_after(text, "superencrypted")?;
        let middle = decrypt_layer(&layer(id, sub, revision, None, MIDDLE_LAYER), &middle_blob)?;
        let end = middle.iter().position(|&b| b == 0).unwrap_or(middle.len());
        let middle = String::from_utf8_lossy(&middle[..end]);
        let inner_blob = object_after(&middle, "encrypted")?;
        let inner = decrypt_layer(&layer(id, sub, revision, None, INNER_LAYER), &inner_blob)
            .or_else(|| {
                let cookie = keys.descriptor_cookie(revision);
                let with_cookie = layer(id, sub, revision, Some(&cookie[..]), INNER_LAYER);
                decrypt_layer(&with_cookie, &inner_blob)
            })?;
        Some(Listing::of_inner_document(&String::from_utf8_lossy(&inner)))
    })();
    Ok(PublishedDescriptor {
        revision,
        signing_key,
        listing,
    })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;
    use tor_protover::Protocols;

    use super::*;
    use crate::client_auth::ClientSecret;
    use crate::descriptor::build::{build_descriptor, build_with_arti, BuildRequest};
    use crate::descriptor::synthetic::{periods_around, SyntheticBackend};
    use crate::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN;

    /// Two frontends with one key: each reads the other's descriptor back, equal listings
    /// for the same intro points (whatever their order, certificates, salts and cookies),
    /// different ones for others; with restricted discovery too; and Arti's builder (a
    /// random cookie, as C tor) is read without a listing when restricted.
    #[test]
    fn a_second_frontend_reads_what_the_first_lists() {
        let mut r = StdRng::seed_from_u64(21);
        let now = std::time::SystemTime::now();
        let p = periods_around(now)[0];
        let frontend = SyntheticBackend::generate(&mut r, 0).key;
        // Each frontend derives its own period keys (its own descriptor-signing key).
        let ours = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys");
        let theirs = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys");
        let ipts = SyntheticBackend::generate(&mut r, 5).intro_points;
        let mut reversed = ipts.clone();
        reversed.reverse();
        let other_ipts = SyntheticBackend::generate(&mut r, 5).intro_points;
        let client = ClientSecret::generate(frontend.address(), &mut r);
        let clients = [*client.public()];
        for auth in [None, Some(&clients[..])] {
            let req = |intro_points, revision: u64| BuildRequest {
                intro_points,
                revision: revision.into(),
                now,
                max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
                flow_control: None,
                protocols: Protocols::default(),
                auth_clients: auth,
            };
            let mine = build_descriptor(&ours, &req(&ipts, 10), &mut r).expect("build");
            let same = build_descriptor(&theirs, &req(&reversed, 11), &mut r).expect("build");
            let other = build_descriptor(&theirs, &req(&other_ipts, 12), &mut r).expect("build");
            let read = |d: &crate::descriptor::BuiltDescriptor| {
                read_listing(&ours, &d.text, DEFAULT_MAX_DESCRIPTOR_LEN).expect("read")
            };
            assert_eq!(read(&mine).listing, Some(mine.listing), "auth {auth:?}");
            // Each tells whose it is by the signing key.
            assert_eq!(read(&mine).signing_key, mine.signing_key);
            assert_eq!(read(&same).signing_key, same.signing_key);
            assert_ne!(read(&same).signing_key, mine.signing_key);
            assert_eq!(read(&same).revision, 11.into());
            assert_eq!(read(&same).listing, Some(mine.listing), "auth {auth:?}");
            assert_eq!(mine.listing, same.listing);
            assert_ne!(read(&other).listing, Some(mine.listing), "auth {auth:?}");
            assert_eq!(read(&other).listing, Some(other.listing), "auth {auth:?}");
            let arti = build_with_arti(&theirs, &req(&ipts, 13), &mut r).expect("build");
            assert_eq!(arti.listing, mine.listing, "auth {auth:?}");
            let expected = if auth.is_some() {
                None
            } else {
                Some(mine.listing)
            };
            assert_eq!(read(&arti).listing, expected, "auth {auth:?}");
        }
    }

    /// Whatever an HSDir returns, reading it never panics, and a descriptor of another
    /// address is an error, not a listing.
    #[test]
    fn another_address_or_garbage_is_an_error() {
        let mut r = StdRng::seed_from_u64(22);
        let now = std::time::SystemTime::now();
        let p = periods_around(now)[0];
        let ours =
            FrontendPeriodKeys::derive(&SyntheticBackend::generate(&mut r, 0).key, p.time_period)
                .expect("keys");
        let stranger =
            FrontendPeriodKeys::derive(&SyntheticBackend::generate(&mut r, 0).key, p.time_period)
                .expect("keys");
        let ipts = SyntheticBackend::generate(&mut r, 3).intro_points;
        let req = BuildRequest {
            intro_points: &ipts,
            revision: 5.into(),
            now,
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
            flow_control: None,
            protocols: Protocols::default(),
            auth_clients: None,
        };
        let theirs = build_descriptor(&stranger, &req, &mut r).expect("build");
        assert!(read_listing(&ours, &theirs.text, DEFAULT_MAX_DESCRIPTOR_LEN).is_err());
        for junk in ["", "hs-descriptor 3\n", "\u{0}\u{1}garbage"] {
            assert!(read_listing(&ours, junk, DEFAULT_MAX_DESCRIPTOR_LEN).is_err());
        }
    }
}
