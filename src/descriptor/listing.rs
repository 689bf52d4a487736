//! Listings: what a descriptor lists, whoever encrypted and certified it.
//!
//! Two descriptors of one address serve clients alike when their inner documents list the
//! same intro points (each named by its link specifiers and its two keys) after the same
//! capability lines. Everything else differs from one build to the next even when nothing
//! changed: the certificates (every build signs them anew, with its own expiry and, on
//! another frontend, its own descriptor-signing key), the salts, the `auth-client` entries,
//! the revision counter. A [`Listing`] is a digest of exactly what matters, so two frontends
//! with the same key (see `docs/two-frontends.md`) can tell whether what an HSDir holds from
//! the other is *equivalent* to what they would upload: then it is as good as their own.
//!
//! Our encoder computes it from the inner document it writes; [`read_listing`] reads it back
//! from a published descriptor (see the `published` module).
//!
//! [`read_listing`]: super::read_listing

use std::fmt;

use digest::Digest as _;
use tor_llcrypto::d::Sha3_256;

/// What a descriptor lists, as a digest: its capability lines, and the set of its intro
/// points (order does not matter), each by its `introduction-point`, `onion-key` and
/// `enc-key` lines. Certificates and encryption are left out.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listing([u8; 32]);

impl Listing {
    /// The listing of an inner document (rend-spec-v3 §2.5.2.2), as text.
    ///
    /// Lines before the first `introduction-point` are capability lines and count in order.
    /// Each intro point's section counts by its `introduction-point`, `onion-key` and
    /// `enc-key` lines; its certificates (`auth-key`, `enc-key-cert` and their objects) are
    /// left out. Sections are sorted, so the order they are listed in does not matter.
    pub(crate) fn of_inner_document(inner: &str) -> Self {
        let mut header: Vec<&str> = Vec::new();
        let mut sections: Vec<Vec<&str>> = Vec::new();
        let mut in_object = false;
        for line in inner.lines() {
            if line.starts_with("-----BEGIN") {
                in_object = true;
                continue;
            }
            if line.starts_with("-----END") {
                in_object = false;
                continue;
            }
            if in_object {
                continue;
            }
            if line.starts_with("introduction-point ") {
                sections.push(vec![line]);
                continue;
            }
            match sections.last_mut() {
                None => header.push(line),
                Some(section) => {
                    if line.starts_with("onion-key ") || line.starts_with("enc-key ") {
                        section.push(line);
                    }
                }
            }
        }
        sections.sort_unstable();
        let mut h = Sha3_256::new();
        h.update(b"onionbalance-listing-v1");
        let mut add = |line: &str| {
            h.update((line.len() as u64).to_be_bytes());
            h.update(line.as_bytes());
        };
        for line in &header {
            add(line);
        }
        add("");
        for section in &sections {
            for line in section {
                add(line);
            }
            add("");
        }
        Listing(h.finalize().into())
    }
}

impl fmt::Debug for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Listing(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}
