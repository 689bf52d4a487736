//! Version 3 onion addresses, parsed with errors that say what is wrong.
//!
//! Arti's [`HsId`] can parse an address too, but operators paste addresses by hand into a
//! config file, so we check each part ourselves (length, base32 alphabet, version, checksum)
//! and say which one failed: "bad checksum" means a typo, "wrong length" usually means a
//! truncated paste or a v2 address.

use std::fmt;
use std::str::FromStr;

use digest::Digest as _;
use tor_hscrypto::pk::{HsId, HsIdKey};
use tor_llcrypto::d::Sha3_256;
use tor_llcrypto::pk::ed25519;

/// Number of base32 characters in a v3 onion address (without `.onion`).
const ENCODED_LEN: usize = 56;
/// Decoded length: 32-byte public key, 2-byte checksum, 1-byte version.
const DECODED_LEN: usize = 35;
/// The only onion address version we understand.
const VERSION: u8 = 3;
/// Domain separator of the checksum (rend-spec-v3 §6 "Encoding onion addresses").
const CHECKSUM_PREFIX: &[u8] = b".onion checksum";

/// A syntactically valid v3 onion address: the public identity key of an onion service.
///
/// Displays as `<56 base32 chars>.onion`. Onion addresses of services are public information,
/// so unlike Arti's `HsId` this type displays without redaction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionAddress {
    /// The service's ed25519 identity public key, as bytes.
    key: [u8; 32],
}

/// Why a string is not a v3 onion address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OnionAddressError {
    /// The address does not have 56 characters before `.onion`.
    #[error("has {0} characters before \".onion\" but a v3 address has 56 (v2 addresses, with 16, are no longer supported)")]
    WrongLength(usize),
    /// The address contains characters outside the base32 alphabet.
    #[error("is not valid base32 (only letters a-z and digits 2-7 may appear)")]
    NotBase32,
    /// The version byte is not 3.
    #[error("has version {0}, but only version 3 onion addresses exist")]
    WrongVersion(u8),
    /// The checksum does not match: usually a typo.
    #[error("has a wrong checksum: probably a typo; copy the address again from the service's `hostname` file")]
    BadChecksum,
    /// The embedded key is not a valid ed25519 point.
    #[error("does not contain a valid ed25519 public key")]
    BadKey,
}

impl OnionAddress {
    /// Returns the address of the service whose identity public key is `key`.
    pub fn from_public_key(key: &ed25519::PublicKey) -> Self {
        OnionAddress {
            key: key.to_bytes(),
        }
    }

    /// Returns the raw identity key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Returns the address as Arti's [`HsId`].
    pub fn hs_id(&self) -> HsId {
        HsId::from(self.key)
    }

    /// Returns the service's identity public key as Arti's [`HsIdKey`].
    pub fn hs_id_key(&self) -> Result<HsIdKey, OnionAddressError> {
        HsIdKey::try_from(self.hs_id()).map_err(|_| OnionAddressError::BadKey)
    }

    /// The 56-character base32 part, without `.onion`.
    pub fn base32(&self) -> String {
        let mut raw = [0u8; DECODED_LEN];
        raw[..32].copy_from_slice(&self.key);
        raw[32..34].copy_from_slice(&checksum(&self.key));
        raw[34] = VERSION;
        data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase()
    }
}

/// The 2-byte checksum of rend-spec-v3: `SHA3-256(".onion checksum" | key | version)[..2]`.
fn checksum(key: &[u8; 32]) -> [u8; 2] {
    let mut h = Sha3_256::new();
    h.update(CHECKSUM_PREFIX);
    h.update(key);
    h.update([VERSION]);
    let d = h.finalize();
    [d[0], d[1]]
}

impl FromStr for OnionAddress {
    type Err = OnionAddressError;

    /// Parses an address with or without the `.onion` suffix, in any letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let body = s
            .strip_suffix(".onion")
            .or_else(|| s.strip_suffix(".ONION"))
            .unwrap_or(s);
        // Only the last label matters: `www.<addr>.onion` names the same service.
        let body = body.rsplit('.').next().unwrap_or(body);
        if body.len() != ENCODED_LEN {
            return Err(OnionAddressError::WrongLength(body.chars().count()));
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| OnionAddressError::NotBase32)?;
        let raw: [u8; DECODED_LEN] = raw
            .try_into()
            .map_err(|_| OnionAddressError::WrongLength(body.len()))?;
        if raw[34] != VERSION {
            return Err(OnionAddressError::WrongVersion(raw[34]));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        if raw[32..34] != checksum(&key) {
            return Err(OnionAddressError::BadChecksum);
        }
        if ed25519::PublicKey::from_bytes(&key).is_err() {
            return Err(OnionAddressError::BadKey);
        }
        Ok(OnionAddress { key })
    }
}

impl fmt::Display for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.onion", self.base32())
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({self})")
    }
}

impl From<OnionAddress> for HsId {
    fn from(a: OnionAddress) -> HsId {
        a.hs_id()
    }
}

impl From<HsId> for OnionAddress {
    fn from(id: HsId) -> Self {
        OnionAddress { key: *id.as_ref() }
    }
}

impl crate::error::HasKind for OnionAddressError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safelog::DisplayRedacted as _;

    /// An address taken from the test-network recipe's rendered examples (made by C tor).
    const CTOR_ADDR: &str = "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad.onion";

    #[test]
    fn round_trips_and_agrees_with_arti() {
        let a: OnionAddress = CTOR_ADDR.parse().expect("valid address");
        assert_eq!(a.to_string(), CTOR_ADDR);
        let arti: HsId = CTOR_ADDR.parse().expect("arti parses it");
        assert_eq!(a.hs_id(), arti);
        assert_eq!(arti.display_unredacted().to_string(), CTOR_ADDR);
        // without suffix, upper case, with a subdomain
        let bare = CTOR_ADDR.trim_end_matches(".onion");
        assert_eq!(bare.parse::<OnionAddress>(), Ok(a));
        assert_eq!(bare.to_uppercase().parse::<OnionAddress>(), Ok(a));
        assert_eq!(format!("www.{CTOR_ADDR}").parse::<OnionAddress>(), Ok(a));
    }

    #[test]
    fn says_what_is_wrong() {
        let bare = CTOR_ADDR.trim_end_matches(".onion");
        assert_eq!(
            "expyuzz4wqqyqhjn.onion".parse::<OnionAddress>(),
            Err(OnionAddressError::WrongLength(16))
        );
        let mut not_b32 = bare.to_string();
        not_b32.replace_range(0..1, "1");
        assert_eq!(
            not_b32.parse::<OnionAddress>(),
            Err(OnionAddressError::NotBase32)
        );
        // flip one character of the key: checksum no longer matches
        let mut typo = bare.to_string();
        typo.replace_range(5..6, if &bare[5..6] == "a" { "b" } else { "a" });
        assert_eq!(
            typo.parse::<OnionAddress>(),
            Err(OnionAddressError::BadChecksum)
        );
        // last character encodes the version: "d" is 3; change it
        let mut v = bare.to_string();
        v.replace_range(55..56, "e");
        assert!(matches!(
            v.parse::<OnionAddress>(),
            Err(OnionAddressError::WrongVersion(_))
        ));
    }
}
