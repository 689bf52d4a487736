//! The two encryption layers of a v3 descriptor, written out (rend-spec-v3 §2.5), for tests
//! and fuzzing: to look inside a descriptor as any client of the service can (the middle
//! layer with its `auth-client` lines), and to build a signed descriptor around an *arbitrary*
//! inner document, so that a fuzzer reaches the parser behind the signatures and MACs.
//!
//! The product builds descriptors with Arti's builder ([`super::build`]); nothing here is on
//! its path.

use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::{RevisionCounter, Subcredential};

use super::encode::{decrypt_layer, encrypt_layer, Layer, MIDDLE_ALIGN};
use super::period_keys::{BuildError, FrontendPeriodKeys};

/// String constant of the middle ("superencrypted") layer's keys.
pub const MIDDLE_LAYER: &[u8] = super::encode::MIDDLE_LAYER;
/// String constant of the inner ("encrypted") layer's keys.
pub const INNER_LAYER: &[u8] = super::encode::INNER_LAYER;

/// What a layer's keys are derived from (besides the salt).
#[derive(Debug, Clone, Copy)]
pub struct LayerKeys<'a> {
    /// The descriptor's blinded identity.
    pub blind_id: &'a HsBlindId,
    /// The service's subcredential for the period.
    pub subcredential: &'a Subcredential,
    /// The descriptor's revision counter.
    pub revision: RevisionCounter,
    /// [`MIDDLE_LAYER`] or [`INNER_LAYER`].
    pub string_const: &'a [u8],
}

impl LayerKeys<'_> {
    /// The layer as the product's encoder sees it (no descriptor cookie: this module reads
    /// and writes descriptors without restricted discovery).
    fn layer(&self) -> Layer<'_> {
        Layer {
            blind_id: self.blind_id,
            cookie: None,
            subcredential: self.subcredential,
            revision: self.revision,
            string_const: self.string_const,
        }
    }

    /// Encrypts `plaintext`: salt, ciphertext, MAC.
    pub fn encrypt<R: rand::Rng + rand::CryptoRng>(
        &self,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Vec<u8> {
        encrypt_layer(&self.layer(), plaintext, rng)
    }

    /// Decrypts a blob made by [`LayerKeys::encrypt`]; `None` if it is too short or its MAC
    /// does not match.
    pub fn decrypt(&self, blob: &[u8]) -> Option<Vec<u8>> {
        decrypt_layer(&self.layer(), blob)
    }
}

/// The bytes of the object (`-----BEGIN MESSAGE-----` ...) after the line `keyword` in `text`.
pub fn object_after(text: &str, keyword: &str) -> Option<Vec<u8>> {
    super::encode::object_after(text, keyword)
}
/// The middle layer of descriptor `text` as any client of the service can read it (it
/// needs the subcredential only): text up to its NUL padding.
pub fn middle_plaintext(
    text: &str,
    blind_id: &HsBlindId,
    subcredential: &Subcredential,
    revision: RevisionCounter,
) -> Option<String> {
    let blob = object_after(text, "superencrypted")?;
    let plain = LayerKeys {
        blind_id,
        subcredential,
        revision,
        string_const: MIDDLE_LAYER,
    }
    .decrypt(&blob)?;
    let end = plain.iter().position(|&b| b == 0).unwrap_or(plain.len());
    String::from_utf8(plain[..end].to_vec()).ok()
}

/// The inner document of a descriptor without restricted discovery.
pub fn inner_plaintext(
    text: &str,
    blind_id: &HsBlindId,
    subcredential: &Subcredential,
    revision: RevisionCounter,
) -> Option<Vec<u8>> {
    let middle = middle_plaintext(text, blind_id, subcredential, revision)?;
    let blob = object_after(&middle, "encrypted")?;
    LayerKeys {
        blind_id,
        subcredential,
        revision,
        string_const: INNER_LAYER,
    }
    .decrypt(&blob)
}

/// Base64 with 64-character lines, between `-----BEGIN {tag}-----` and its end line.
fn object(tag: &str, bytes: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(bytes);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// A complete descriptor for the period of `keys` whose inner document is `inner`, whatever
/// it holds: both layers encrypted and the outer document signed exactly as a service does,
/// so that everything before the inner document's parser accepts it.
pub fn descriptor_with_inner<R: rand::Rng + rand::CryptoRng>(
    keys: &FrontendPeriodKeys,
    inner: &[u8],
    revision: RevisionCounter,
    now: std::time::SystemTime,
    rng: &mut R,
) -> Result<String, BuildError> {
    let (desc_sign, blinded_keypair, blinded_public) = keys.signing_keys();
    let blind_id = blinded_public.id();
    let subcredential = keys.subcredential();
    let layer = |string_const| LayerKeys {
        blind_id: &blind_id,
        subcredential: &subcredential,
        revision,
        string_const,
    };
    let inner_blob = layer(INNER_LAYER).encrypt(inner, rng);
    // No restricted discovery: one random `auth-client` line and a random ephemeral key.
    let random_b64 = |n: usize, rng: &mut R| {
        let mut b = vec![0u8; n];
        rng.fill_bytes(&mut b);
        data_encoding::BASE64.encode(&b)
    };
    let mut middle = format!(
        "desc-auth-type x25519\ndesc-auth-ephemeral-key {}\nauth-client {} {} {}\nencrypted\n",
        random_b64(32, rng),
        random_b64(8, rng),
        random_b64(16, rng),
        random_b64(16, rng)
    )
    .into_bytes();
    middle.extend_from_slice(object("MESSAGE", &inner_blob).as_bytes());
    let padded = middle.len().div_ceil(MIDDLE_ALIGN) * MIDDLE_ALIGN;
    middle.resize(padded, 0);
    let middle_blob = layer(MIDDLE_LAYER).encrypt(&middle, rng);
    let cert = tor_netdoc::doc::hsdesc::create_desc_sign_key_cert(
        &desc_sign.verifying_key(),
        blinded_keypair,
        now + super::CERT_LIFETIME,
    )
    .map_err(BuildError::Certificate)?;
    let mut body = format!(
        "hs-descriptor 3\ndescriptor-lifetime 180\ndescriptor-signing-key-cert\n{}revision-counter {}\nsuperencrypted\n{}",
        object("ED25519 CERT", cert.as_ref()),
        u64::from(revision),
        object("MESSAGE", &middle_blob)
    );
    let mut signed = b"Tor onion service descriptor sig v3".to_vec();
    signed.extend_from_slice(body.as_bytes());
    let signature = desc_sign.sign(&signed);
    body.push_str("signature ");
    body.push_str(&data_encoding::BASE64_NOPAD.encode(&signature.to_bytes()));
    body.push('\n');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::synthetic::{periods_around, SyntheticBackend};
    use crate::descriptor::{intake, BackendKeys, DEFAULT_MAX_DESCRIPTOR_LEN};
    use rand::SeedableRng as _;

    /// The inner document of a real build, decrypted and wrapped again by
    /// [`descriptor_with_inner`], is read by intake exactly as the original.
    #[test]
    fn rewrapped_inner_document_reads_as_the_original() {
        let mut r = rand::rngs::StdRng::seed_from_u64(5);
        let now = std::time::SystemTime::now();
        let p = periods_around(now)[0];
        let b = SyntheticBackend::generate(&mut r, 3);
        let keys = FrontendPeriodKeys::derive(&b.key, p.time_period).expect("keys");
        let text = b
            .descriptor_with_keys(&keys, &p, now, &mut r)
            .expect("descriptor");
        let revision = crate::descriptor::claimed_revision(&text).expect("revision");
        let inner = inner_plaintext(&text, &keys.blind_id(), &keys.subcredential(), revision)
            .expect("decrypts");
        assert!(std::str::from_utf8(&inner)
            .expect("text")
            .contains("introduction-point"));
        let again = descriptor_with_inner(&keys, &inner, revision, now, &mut r).expect("wrap");
        let bk = BackendKeys::derive(b.address(), p.time_period).expect("keys");
        let a = intake(&bk, &text, now, DEFAULT_MAX_DESCRIPTOR_LEN).expect("original");
        let c = intake(&bk, &again, now, DEFAULT_MAX_DESCRIPTOR_LEN).expect("rewrapped");
        assert_eq!(a.content_key(), c.content_key());
        // A flipped byte in a layer fails its MAC.
        let mut blob = object_after(&again, "superencrypted").expect("blob");
        blob[20] ^= 1;
        let layer = LayerKeys {
            blind_id: &keys.blind_id(),
            subcredential: &keys.subcredential(),
            revision,
            string_const: MIDDLE_LAYER,
        };
        assert!(layer.decrypt(&blob).is_none());
    }
}
