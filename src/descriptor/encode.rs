//! Encoding: our descriptor's three documents written out, signed and encrypted.
//!
//! Why not Arti's `HsDescBuilder` alone: it certifies every intro point it lists, inside the
//! build of each descriptor. Certifying costs two ed25519 signatures and a curve conversion
//! per intro point, about two thirds of a descriptor's build; with variants (one descriptor
//! per fetch HSDir, see [`variants`](super::variants)) an intro point is listed in several
//! descriptors of one period, all signed by the period's one descriptor-signing key, so the
//! same certificates would be made again for each. Here a build is split in two:
//!
//! * [`certify`]: each intro point's section of the inner document (`introduction-point`
//!   to `enc-key-cert`), certified by the period's signing key, once per build, whatever the
//!   number of descriptors that list it (spread over the machine's cores);
//! * [`encode`]: per descriptor, the inner document from those sections (sorted as Arti
//!   sorts them), and everything that must be fresh per descriptor: the ephemeral key and
//!   `auth-client` entries of restricted discovery (or the random ones without it), the salts
//!   of both encryption layers, the padding, the outer signature.
//!
//! # The descriptor cookie
//!
//! With restricted discovery the inner document is encrypted with a descriptor cookie that
//! only authorized clients can recover. C tor and Arti draw it at random; ours is derived from
//! the frontend's blinded secret key and the revision counter
//! ([`FrontendPeriodKeys::descriptor_cookie`]). To a client it is as good as random (it cannot
//! compute it without the frontend's secret key, and it differs for every revision, so a
//! client removed from the list cannot read later descriptors with an old cookie), and it
//! lets another frontend holding the same key read what we published, which is how two
//! frontends tell an *equivalent* descriptor from a different one (see
//! [`listing`](super::listing)).
//!
//! The text is the one Arti's builder writes for the same inputs, item for item
//! (`tor-netdoc` 0.47 `hsdesc/build`): a unit test decrypts both and compares them.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::SystemTime;

use digest::{ExtendableOutput as _, Update as _, XofReader as _};
use rand::RngExt as _;
use tor_bytes::Writer as _;
use tor_cert::{CertType, CertifiedKey, Ed25519Cert};
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::{RevisionCounter, Subcredential};
use tor_llcrypto::pk::keymanip::convert_curve25519_to_ed25519_public;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_protover::Protocols;

use super::listing::Listing;
use super::period_keys::{BuildError, FrontendPeriodKeys, COOKIE_LEN};

/// String constant of the middle ("superencrypted") layer's keys (rend-spec-v3 §2.5.1.1).
pub(crate) const MIDDLE_LAYER: &[u8] = b"hsdir-superencrypted-data";
/// String constant of the inner ("encrypted") layer's keys (rend-spec-v3 §2.5.2.1).
pub(crate) const INNER_LAYER: &[u8] = b"hsdir-encrypted-data";
/// Length of the salt before each layer's ciphertext.
pub(crate) const SALT_LEN: usize = 16;
/// Length of the MAC after it.
pub(crate) const MAC_LEN: usize = 32;
/// The middle layer's plaintext is padded with NULs to a multiple of this.
pub(crate) const MIDDLE_ALIGN: usize = 10 * 1024;
/// What the outer signature covers starts with this (rend-spec-v3 §2.4).
const SIGNATURE_PREFIX: &[u8] = b"Tor onion service descriptor sig v3";

/// One intro point's section of the inner document, certified by a period's signing key.
#[derive(Debug, Clone)]
pub(crate) struct IntroSection {
    /// The intro point's ntor key: Arti sorts the sections by it, so do we.
    sort_key: [u8; 32],
    /// `introduction-point` to `enc-key-cert`, each line ending in a newline.
    text: String,
}

/// The sections of `intro_points` (each certified by `desc_sign`, valid until `expiry`),
/// keyed as given, computed on all cores.
pub(crate) fn certify<K: Copy + Eq + Hash + Send + Sync>(
    desc_sign: &ed25519::Keypair,
    intro_points: &[(K, &IntroPointDesc)],
    expiry: SystemTime,
) -> Result<HashMap<K, IntroSection>, BuildError> {
    super::parallel::map(intro_points, |(k, ipt)| {
        section(desc_sign, ipt, expiry).map(|s| (*k, s))
    })
    .into_iter()
    .collect()
}

/// One intro point's section (see Arti's `HsDescInner::build_sign`).
fn section(
    desc_sign: &ed25519::Keypair,
    ipt: &IntroPointDesc,
    expiry: SystemTime,
) -> Result<IntroSection, BuildError> {
    let b64 = |b: &[u8]| data_encoding::BASE64.encode(b);
    let nspec = u8::try_from(ipt.link_specifiers().len())
        .map_err(|_| BuildError::Encoding(tor_bytes::EncodeError::BadLengthValue))?;
    let mut link_specifiers = vec![nspec];
    for ls in ipt.link_specifiers() {
        link_specifiers.write(ls).map_err(BuildError::Encoding)?;
    }
    let signer = ed25519::Ed25519Identity::from(desc_sign.verifying_key());
    let certificate = |cert_type, key: ed25519::Ed25519Identity| {
        Ed25519Cert::builder()
            .cert_type(cert_type)
            .expiration(expiry)
            .signing_key(signer)
            .cert_key(CertifiedKey::Ed25519(key))
            .encode_and_sign(desc_sign)
            .map_err(BuildError::Certificate)
    };
    let auth_key = certificate(
        CertType::HS_IP_V_SIGNING,
        ed25519::Ed25519Identity::from(&**ipt.ipt_sid_key()),
    )?;
    // The enc-key certificate's subject is the ed25519 form of the curve25519 `KP_hss_ntor`
    // with its sign bit 0, as C tor and Arti write it (nobody checks a signature with it).
    let svc_ntor: &curve25519::PublicKey = ipt.svc_ntor_key();
    let ed_svc_ntor = convert_curve25519_to_ed25519_public(svc_ntor, 0)
        .ok_or(BuildError::Encoding(tor_bytes::EncodeError::BadLengthValue))?;
    let enc_key = certificate(
        CertType::HS_IP_CC_SIGNING,
        ed25519::Ed25519Identity::from(&ed_svc_ntor),
    )?;
    let mut text = String::with_capacity(1024);
    text.push_str(&format!("introduction-point {}\n", b64(&link_specifiers)));
    text.push_str(&format!(
        "onion-key ntor {}\n",
        b64(&ipt.ipt_ntor_key().to_bytes())
    ));
    text.push_str("auth-key\n");
    push_object(&mut text, "ED25519 CERT", auth_key.as_ref());
    text.push_str(&format!("enc-key ntor {}\n", b64(svc_ntor.as_bytes())));
    text.push_str("enc-key-cert\n");
    push_object(&mut text, "ED25519 CERT", enc_key.as_ref());
    Ok(IntroSection {
        sort_key: ipt.ipt_ntor_key().to_bytes(),
        text,
    })
}

/// What one descriptor says besides its intro points.
pub(crate) struct Encoding<'a> {
    /// The period's keys.
    pub keys: &'a FrontendPeriodKeys,
    /// The descriptor-signing key's certificate (made once per build).
    pub sign_cert: &'a [u8],
    /// The revision counter.
    pub revision: RevisionCounter,
    /// Lifetime, minutes.
    pub lifetime_minutes: u16,
    /// Maximum encoded size.
    pub max_len: usize,
    /// Flow-control line, if any.
    pub flow_control: Option<&'a (Protocols, u8)>,
    /// Protocol capabilities.
    pub protocols: &'a Protocols,
    /// Restricted discovery: the `auth-client` keys (real and padding), or `None`.
    pub auth_clients: Option<&'a [curve25519::PublicKey]>,
}

/// The inner document listing `sections` (sorted as Arti sorts them), after the lines that
/// say what the service supports.
pub(crate) fn inner_document(
    flow_control: Option<&(Protocols, u8)>,
    protocols: &Protocols,
    sections: &[&IntroSection],
) -> String {
    let mut inner = String::with_capacity(64 + sections.len() * 1100);
    inner.push_str("create2-formats 2\n");
    if let Some((protocols, increment)) = flow_control {
        if let Some(versions) = flowctrl_versions(protocols) {
            inner.push_str(&format!("flow-control {versions} {increment}\n"));
        }
    }
    if !protocols.is_empty() {
        inner.push_str(&format!("proto {protocols}\n"));
    }
    let mut sorted: Vec<&IntroSection> = sections.to_vec();
    sorted.sort_by_key(|s| s.sort_key);
    for s in sorted {
        inner.push_str(&s.text);
    }
    inner
}

/// A descriptor written out, and what it lists.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// The signed, encrypted text.
    pub text: String,
    /// What its inner document lists.
    pub listing: Listing,
}

/// The descriptor listing `sections`: inner document, both layers encrypted, outer document
/// signed (see Arti's `HsDescBuilder::build_sign`, which this follows step by step).
pub(crate) fn encode<R: rand::Rng + rand::CryptoRng>(
    e: &Encoding<'_>,
    sections: &[&IntroSection],
    rng: &mut R,
) -> Result<Encoded, BuildError> {
    let keys = e.keys;
    let blind_id = keys.blind_id();
    let subcredential = keys.subcredential();

    let inner = inner_document(e.flow_control, e.protocols, sections);
    let listing = Listing::of_inner_document(&inner);

    // Restricted discovery: the revision's cookie (see the module's "The descriptor
    // cookie"), a fresh ephemeral key per descriptor, every entry new.
    let cookie = e.auth_clients.map(|_| keys.descriptor_cookie(e.revision));
    let inner_blob = encrypt_layer(
        &Layer {
            blind_id: &blind_id,
            cookie: cookie.as_ref().map(|c| &c[..]),
            subcredential: &subcredential,
            revision: e.revision,
            string_const: INNER_LAYER,
        },
        inner.as_bytes(),
        rng,
    );

    // The middle document.
    let ephemeral = curve25519::StaticSecret::random_from_rng(&mut *rng);
    let ephemeral_public = curve25519::PublicKey::from(&ephemeral);
    let b64 = |b: &[u8]| data_encoding::BASE64.encode(b);
    let mut middle = String::with_capacity(MIDDLE_ALIGN);
    middle.push_str("desc-auth-type x25519\n");
    middle.push_str(&format!(
        "desc-auth-ephemeral-key {}\n",
        b64(ephemeral_public.as_bytes())
    ));
    match (e.auth_clients, cookie) {
        (Some(clients), Some(cookie)) => {
            for client in clients {
                let (client_id, cookie_key) = cookie_key(&ephemeral, client, &subcredential);
                let iv: [u8; 16] = rng.random();
                let mut encrypted: [u8; COOKIE_LEN] = *cookie;
                apply_keystream(&cookie_key, &iv, &mut encrypted);
                middle.push_str(&format!(
                    "auth-client {} {} {}\n",
                    b64(&client_id),
                    b64(&iv),
                    b64(&encrypted)
                ));
            }
        }
        _ => {
            // Open discovery: one entry of random values (rend-spec-v3 §2.5.1.2).
            let (id, iv, c): ([u8; 8], [u8; 16], [u8; COOKIE_LEN]) =
                (rng.random(), rng.random(), rng.random());
            middle.push_str(&format!(
                "auth-client {} {} {}\n",
                b64(&id),
                b64(&iv),
                b64(&c)
            ));
        }
    }
    middle.push_str("encrypted\n");
    push_object(&mut middle, "MESSAGE", &inner_blob);
    let mut middle = middle.into_bytes();
    middle.resize(middle.len().div_ceil(MIDDLE_ALIGN) * MIDDLE_ALIGN, 0);
    let middle_blob = encrypt_layer(
        &Layer {
            blind_id: &blind_id,
            cookie: None,
            subcredential: &subcredential,
            revision: e.revision,
            string_const: MIDDLE_LAYER,
        },
        &middle,
        rng,
    );

    // The outer document, signed by the period's signing key.
    let mut outer = String::with_capacity(middle_blob.len() * 4 / 3 + 1024);
    outer.push_str("hs-descriptor 3\n");
    outer.push_str(&format!("descriptor-lifetime {}\n", e.lifetime_minutes));
    outer.push_str("descriptor-signing-key-cert\n");
    push_object(&mut outer, "ED25519 CERT", e.sign_cert);
    outer.push_str(&format!("revision-counter {}\n", u64::from(e.revision)));
    outer.push_str("superencrypted\n");
    push_object(&mut outer, "MESSAGE", &middle_blob);
    let mut signed = SIGNATURE_PREFIX.to_vec();
    signed.extend_from_slice(outer.as_bytes());
    let signature = keys.desc_sign.sign(&signed);
    outer.push_str("signature ");
    outer.push_str(&data_encoding::BASE64_NOPAD.encode(&signature.to_bytes()));
    outer.push('\n');
    if outer.len() > e.max_len {
        return Err(BuildError::TooLarge(e.max_len));
    }
    Ok(Encoded {
        text: outer,
        listing,
    })
}

/// The FlowCtrl versions (1–2, the ones this line carries) of `p`, as the `flow-control`
/// line writes them; `None` if there are none (Arti's builder would panic there).
fn flowctrl_versions(p: &Protocols) -> Option<String> {
    let all: Protocols = "FlowCtrl=1-2".parse().ok()?;
    all.intersection(p)
        .to_string()
        .strip_prefix("FlowCtrl=")
        .map(str::to_owned)
}

/// Client `client`'s entry keys: its client id and the key that encrypts the cookie to it
/// (rend-spec-v3 §2.5.1.2).
fn cookie_key(
    ephemeral: &curve25519::StaticSecret,
    client: &curve25519::PublicKey,
    subcredential: &Subcredential,
) -> ([u8; 8], [u8; 32]) {
    let seed = ephemeral.diffie_hellman(client);
    let mut kdf = tor_llcrypto::d::Shake256::default();
    kdf.update(subcredential.as_ref());
    kdf.update(seed.as_bytes());
    let mut reader = kdf.finalize_xof();
    let (mut id, mut key) = ([0u8; 8], [0u8; 32]);
    reader.read(&mut id);
    reader.read(&mut key);
    (id, key)
}

/// What an encryption layer's keys are derived from, besides the salt (rend-spec-v3
/// §2.5.3: `SECRET_DATA | N_hs_subcred | INT_8(revision_counter) | salt | STRING_CONSTANT`).
pub(crate) struct Layer<'a> {
    /// The descriptor's blinded identity (first part of `SECRET_DATA`).
    pub blind_id: &'a HsBlindId,
    /// The descriptor cookie (second part of the inner layer's `SECRET_DATA` with
    /// restricted discovery).
    pub cookie: Option<&'a [u8]>,
    /// The subcredential.
    pub subcredential: &'a Subcredential,
    /// The revision counter.
    pub revision: RevisionCounter,
    /// [`MIDDLE_LAYER`] or [`INNER_LAYER`].
    pub string_const: &'a [u8],
}

impl Layer<'_> {
    /// The cipher key, IV and MAC key for `salt`.
    pub(crate) fn derive(&self, salt: &[u8]) -> ([u8; 32], [u8; 16], [u8; 32]) {
        let mut kdf = tor_llcrypto::d::Shake256::default();
        kdf.update(self.blind_id.as_ref());
        if let Some(cookie) = self.cookie {
            kdf.update(cookie);
        }
        kdf.update(self.subcredential.as_ref());
        kdf.update(&u64::from(self.revision).to_be_bytes());
        kdf.update(salt);
        kdf.update(self.string_const);
        let mut reader = kdf.finalize_xof();
        let (mut key, mut iv, mut mac_key) = ([0u8; 32], [0u8; 16], [0u8; 32]);
        reader.read(&mut key);
        reader.read(&mut iv);
        reader.read(&mut mac_key);
        (key, iv, mac_key)
    }
}

/// The layer's MAC of `ciphertext` under `mac_key` and `salt`.
pub(crate) fn mac(mac_key: &[u8; 32], salt: &[u8], ciphertext: &[u8]) -> [u8; MAC_LEN] {
    use digest::Digest as _;
    let mut h = tor_llcrypto::d::Sha3_256::new();
    digest::Digest::update(&mut h, (mac_key.len() as u64).to_be_bytes());
    digest::Digest::update(&mut h, mac_key);
    digest::Digest::update(&mut h, (salt.len() as u64).to_be_bytes());
    digest::Digest::update(&mut h, salt);
    digest::Digest::update(&mut h, ciphertext);
    h.finalize().into()
}

/// AES-256-CTR with `key` and `iv` over `data`, in place.
pub(crate) fn apply_keystream(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    use cipher::{KeyIvInit as _, StreamCipher as _};
    tor_llcrypto::cipher::aes::Aes256Ctr::new(&(*key).into(), &(*iv).into()).apply_keystream(data);
}

/// `plaintext` encrypted for `layer` with a fresh salt: salt, ciphertext, MAC.
pub(crate) fn encrypt_layer<R: rand::Rng + rand::CryptoRng>(
    layer: &Layer<'_>,
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let salt: [u8; SALT_LEN] = rng.random();
    let (key, iv, mac_key) = layer.derive(&salt);
    let mut out = Vec::with_capacity(SALT_LEN + plaintext.len() + MAC_LEN);
    out.extend_from_slice(&salt);
    out.extend_from_slice(plaintext);
    apply_keystream(&key, &iv, &mut out[SALT_LEN..]);
    let tag = mac(&mac_key, &salt, &out[SALT_LEN..]);
    out.extend_from_slice(&tag);
    out
}

/// Decrypts a blob made by [`encrypt_layer`] for `layer`; `None` if it is too short or its
/// MAC does not match (another key, another cookie, or damaged).
pub(crate) fn decrypt_layer(layer: &Layer<'_>, blob: &[u8]) -> Option<Vec<u8>> {
    if blob.len() < SALT_LEN + MAC_LEN {
        return None;
    }
    let (salt, rest) = blob.split_at(SALT_LEN);
    let (body, tag) = rest.split_at(rest.len() - MAC_LEN);
    let (key, iv, mac_key) = layer.derive(salt);
    if mac(&mac_key, salt, body)[..] != tag[..] {
        return None;
    }
    let mut out = body.to_vec();
    apply_keystream(&key, &iv, &mut out);
    Some(out)
}

/// The bytes of the object (`-----BEGIN MESSAGE-----` ...) after the line `keyword` in
/// `text`; `None` if there is none or it is not base64.
pub(crate) fn object_after(text: &str, keyword: &str) -> Option<Vec<u8>> {
    let b64: String = text
        .lines()
        .skip_while(|l| *l != keyword)
        .skip(1)
        .skip_while(|l| l.starts_with("-----BEGIN"))
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    data_encoding::BASE64.decode(b64.as_bytes()).ok()
}

/// Appends `bytes` as an object: base64 in 64-character lines between `-----BEGIN {tag}-----`
/// and its end line.
pub(crate) fn push_object(out: &mut String, tag: &str, bytes: &[u8]) {
    let b64 = data_encoding::BASE64.encode(bytes);
    out.push_str("-----BEGIN ");
    out.push_str(tag);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(tag);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;
    use tor_protover::Protocols;

    use crate::descriptor::build::{build_descriptor, build_with_arti, BuildRequest};
    use crate::descriptor::layers::{inner_plaintext, middle_plaintext};
    use crate::descriptor::synthetic::{periods_around, SyntheticBackend};
    use crate::descriptor::{FrontendPeriodKeys, DEFAULT_MAX_DESCRIPTOR_LEN};

    /// The keywords of `text`'s lines (objects' base64 lines left out).
    fn keywords(text: &str) -> Vec<&str> {
        let mut in_object = false;
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with("-----BEGIN") {
                in_object = true;
            } else if line.starts_with("-----END") {
                in_object = false;
            } else if !in_object {
                out.push(line.split(' ').next().unwrap_or_default());
            }
        }
        out
    }

    /// For the same inputs, our encoder writes what Arti's builder writes: the same inner
    /// document byte for byte (certificates are deterministic signatures), and the same
    /// items, in the same order, in the middle and outer documents (whose values are
    /// random or depend on them).
    #[test]
    fn writes_what_arti_writes() {
        let mut r = StdRng::seed_from_u64(9);
        let now = std::time::SystemTime::now();
        let p = periods_around(now)[0];
        let frontend = SyntheticBackend::generate(&mut r, 0).key;
        let keys = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys");
        let ipts = SyntheticBackend::generate(&mut r, 7).intro_points;
        let flow: Protocols = "FlowCtrl=1-2".parse().expect("protocols");
        let protocols: Protocols = "FlowCtrl=1-2 Relay=2-4".parse().expect("protocols");
        for (flow_control, protocols) in [
            (None, Protocols::default()),
            (Some((flow.clone(), 31)), protocols),
        ] {
            let req = BuildRequest {
                intro_points: &ipts,
                revision: 77.into(),
                now,
                max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
                flow_control,
                protocols,
                auth_clients: None,
            };
            let ours = build_descriptor(&keys, &req, &mut r).expect("ours");
            let arti = build_with_arti(&keys, &req, &mut r).expect("Arti's");
            let (id, sub) = (keys.blind_id(), keys.subcredential());
            let inner = |t: &str| inner_plaintext(t, &id, &sub, 77.into()).expect("inner");
            assert_eq!(
                String::from_utf8(inner(&ours.text)).expect("text"),
                String::from_utf8(inner(&arti.text)).expect("text"),
                "inner documents"
            );
            let middle = |t: &str| middle_plaintext(t, &id, &sub, 77.into()).expect("middle");
            assert_eq!(
                keywords(&middle(&ours.text)),
                keywords(&middle(&arti.text)),
                "middle documents"
            );
            assert_eq!(
                keywords(&ours.text),
                keywords(&arti.text),
                "outer documents"
            );
            assert_eq!(
                ours.text.lines().take(3).collect::<Vec<_>>(),
                arti.text.lines().take(3).collect::<Vec<_>>()
            );
        }
    }
}
