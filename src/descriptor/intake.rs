//! Intake: a backend's descriptor text becomes a [`BackendSnapshot`] or an [`IntakeError`].
//!
//! Everything we get from an HSDir is untrusted. Intake checks, in order: size, outer
//! document syntax, that the descriptor is for *this* backend (its blinded key for the time
//! period), the outer signature, decryption of both layers with the backend's subcredential,
//! the inner signature, and that the whole thing is valid at `now`.

use std::num::NonZeroU8;
use std::sync::Arc;
use std::time::SystemTime;

use tor_checkable::{SelfSigned as _, TimeBound as _};
use tor_hscrypto::pk::{HsBlindId, HsClientDescEncKeypair};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::{RevisionCounter, Subcredential};
use tor_netdoc::doc::hsdesc::{HsDesc, HsDescError, HsDescOuter, IntroPointDesc};
use tor_protover::Protocols;

use crate::error::{ErrorKind, HasKind};
use crate::onion::OnionAddress;

/// The keys needed to read one backend's descriptors for one time period.
///
/// Deriving the blinded key costs a scalar multiplication (~100 µs), so callers keep this for
/// the whole time period instead of recomputing it per fetch.
#[derive(Clone, Debug)]
pub struct BackendKeys {
    /// The backend.
    address: OnionAddress,
    /// The period the keys are for.
    period: TimePeriod,
    /// The backend's blinded identity for `period`: what HSDirs index its descriptor by.
    blind_id: HsBlindId,
    /// The backend's subcredential for `period`: decrypts its descriptor.
    subcredential: Subcredential,
    /// A client key for a service with restricted discovery (used by `check --online` to
    /// read an authorized frontend; backends need none).
    client_key: Option<Arc<HsClientDescEncKeypair>>,
}

impl BackendKeys {
    /// Derives the keys for `address` in `period`.
    pub fn derive(address: OnionAddress, period: TimePeriod) -> Result<Self, IntakeError> {
        let id_key = address
            .hs_id_key()
            .map_err(|_| IntakeError::BadBackendKey(address))?;
        let (blinded, subcredential) = id_key
            .compute_blinded_key(period)
            .map_err(|_| IntakeError::BadBackendKey(address))?;
        Ok(BackendKeys {
            address,
            period,
            blind_id: blinded.id(),
            subcredential,
            client_key: None,
        })
    }

    /// Decrypts with `key` too: for a service that restricts discovery to its authorized
    /// clients, `key` being one of theirs.
    pub fn with_client_key(mut self, key: Arc<HsClientDescEncKeypair>) -> Self {
        self.client_key = Some(key);
        self
    }

    /// The backend's address.
    pub fn address(&self) -> OnionAddress {
        self.address
    }

    /// The time period these keys are for.
    pub fn period(&self) -> TimePeriod {
        self.period
    }

    /// The blinded identity HSDirs store this backend's descriptor under.
    pub fn blind_id(&self) -> HsBlindId {
        self.blind_id
    }
}

/// What we keep of a backend's verified descriptor.
#[derive(Debug, Clone)]
pub struct BackendSnapshot {
    /// The backend.
    pub address: OnionAddress,
    /// The time period the descriptor is for.
    pub period: TimePeriod,
    /// Its revision counter (a live backend's counter advances each time it republishes).
    pub revision: RevisionCounter,
    /// Its introduction points (1 to 20, as Arti's parser guarantees).
    pub intro_points: Vec<IntroPointDesc>,
    /// Start of validity (the certificates' validity), if bounded.
    pub valid_from: Option<SystemTime>,
    /// End of validity: after this the snapshot must not be used.
    pub valid_until: Option<SystemTime>,
    /// When we took it in.
    pub received_at: SystemTime,
    /// The flow-control line the backend declared, if any.
    pub flow_control: Option<(Protocols, NonZeroU8)>,
    /// The protocol capabilities the backend declared.
    pub protocols: Protocols,
}

/// What a backend descriptor *means* for the frontend: its intro points (by their session
/// keys, which identify an intro point at its relay) and the lines we carry over into our own
/// descriptor. Two descriptors with equal keys are the same to clients, whatever their bytes
/// and revision counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentKey {
    /// The intro points' session keys (`KP_hs_ipt_sid`), sorted.
    pub intro_points: Vec<[u8; 32]>,
    /// The flow-control line, as text, if any.
    pub flow_control: Option<String>,
    /// The declared protocol capabilities, as text.
    pub protocols: String,
}

impl BackendSnapshot {
    /// What this descriptor means for the frontend (see [`ContentKey`]).
    pub fn content_key(&self) -> ContentKey {
        let mut intro_points: Vec<[u8; 32]> = self
            .intro_points
            .iter()
            .map(|i| *i.ipt_sid_key().as_bytes())
            .collect();
        intro_points.sort_unstable();
        ContentKey {
            intro_points,
            flow_control: self.flow_control.as_ref().map(|(p, n)| format!("{p} {n}")),
            protocols: self.protocols.to_string(),
        }
    }

    /// True when the snapshot may be used at `when`.
    pub fn is_valid_at(&self, when: SystemTime) -> bool {
        self.valid_from.is_none_or(|t| t <= when) && self.valid_until.is_none_or(|t| when <= t)
    }
}

/// Why a backend descriptor was rejected.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// The backend address does not give a usable key (cannot happen for a validated
    /// [`OnionAddress`], kept for safety).
    #[error("backend address {0} does not contain a usable ed25519 key")]
    BadBackendKey(OnionAddress),
    /// The text is longer than HSDirs accept.
    #[error("descriptor is {len} bytes, more than the {max}-byte maximum")]
    Oversized {
        /// The descriptor's length in bytes.
        len: usize,
        /// The largest descriptor accepted (the consensus's `hsdir_max_desc_size`).
        max: usize,
    },
    /// The outer document does not parse.
    #[error("descriptor does not parse")]
    Malformed(#[source] HsDescError),
    /// The descriptor is well formed but belongs to another service or time period.
    #[error("descriptor is for a different onion service or time period than {0}")]
    WrongService(OnionAddress),
    /// A signature or certificate does not verify.
    #[error("descriptor signature or certificate does not verify")]
    BadSignature(#[source] HsDescError),
    /// The encrypted layers cannot be decrypted with the backend's address.
    #[error("descriptor cannot be decrypted with the backend's address; if the backend uses client authorization, disable it: the frontend cannot read such descriptors")]
    NotDecryptable(#[source] HsDescError),
    /// The decrypted inner document is malformed.
    #[error("descriptor's encrypted part is malformed")]
    InnerMalformed(#[source] HsDescError),
    /// The outer document verifies, but its revision counter cannot be read.
    #[error("descriptor has no readable revision-counter line")]
    NoRevision,
    /// The outer document verifies, but its descriptor-signing-key certificate cannot be
    /// read again.
    #[error("descriptor has no readable descriptor-signing-key-cert")]
    NoSigningKey,
    /// The descriptor is not valid at the given time (expired or not yet valid).
    #[error("descriptor is not valid at this time (valid {from} to {until}); is the backend running, and is this machine's clock right?")]
    NotValidNow {
        /// Start of its validity (RFC 3339, or `unbounded`).
        from: String,
        /// End of its validity (RFC 3339, or `unbounded`).
        until: String,
    },
}

impl HasKind for IntakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            IntakeError::BadBackendKey(_) => ErrorKind::Internal,
            IntakeError::Oversized { .. }
            | IntakeError::Malformed(_)
            | IntakeError::InnerMalformed(_)
            | IntakeError::NoRevision
            | IntakeError::NoSigningKey => ErrorKind::DescriptorMalformed,
            IntakeError::WrongService(_) => ErrorKind::DescriptorWrongService,
            IntakeError::BadSignature(_) => ErrorKind::DescriptorBadSignature,
            IntakeError::NotDecryptable(_) => ErrorKind::DescriptorNotDecryptable,
            IntakeError::NotValidNow { .. } => ErrorKind::DescriptorNotValidNow,
        }
    }
}

/// Verifies and decrypts `text`, a descriptor fetched for the backend and period of `keys`.
///
/// `max_len` is the network's `hsdir_max_desc_size`.
pub fn intake(
    keys: &BackendKeys,
    text: &str,
    now: SystemTime,
    max_len: usize,
) -> Result<BackendSnapshot, IntakeError> {
    if text.len() > max_len {
        return Err(IntakeError::Oversized {
            len: text.len(),
            max: max_len,
        });
    }
    let bound = HsDesc::parse_decrypt_validate(
        text,
        &keys.blind_id,
        &keys.subcredential,
        keys.client_key.as_deref(),
    )
    .map_err(|e| classify(e, text, keys.address))?;
    // A backend signs its certificates with whatever dates it likes; keep them within
    // what every later computation and display handles (years 1970 to 9999).
    let (valid_from, valid_until) = bound.bounds_start_end();
    let latest = std::time::UNIX_EPOCH + crate::timefmt::LATEST_FORMATTABLE;
    let valid_from = valid_from.map(|t| t.clamp(std::time::UNIX_EPOCH, latest));
    let valid_until = valid_until.map(|t| t.clamp(std::time::UNIX_EPOCH, latest));
    let desc = bound
        .if_valid_at(&now)
        .map_err(|_| IntakeError::NotValidNow {
            from: fmt_time(valid_from),
            until: fmt_time(valid_until),
        })?;
    Ok(BackendSnapshot {
        address: keys.address,
        period: keys.period,
        revision: desc.revision(),
        intro_points: desc.intro_points().to_vec(),
        valid_from,
        valid_until,
        received_at: now,
        flow_control: desc.flow_control(),
        protocols: desc.declared_capabilities().clone(),
    })
}

/// The revision counter of `text`, a descriptor for the blinded identity `blind_id`,
/// checked: the outer layer's signature must verify under a signing key certified by that
/// blinded key. Only the holder of the identity key can make such a descriptor, so this is
/// how a frontend learns which revision a previous publisher of its own address (C tor,
/// Python Onionbalance, another frontend with the same key) left on an HSDir, even when
/// restricted discovery keeps the inner layers unreadable without a client key.
///
/// The counter is read from the verified outer layer, which the signature covers; the
/// layers inside are not decrypted.
pub fn verified_revision(
    text: &str,
    blind_id: &HsBlindId,
    max_len: usize,
) -> Result<RevisionCounter, IntakeError> {
    if text.len() > max_len {
        return Err(IntakeError::Oversized {
            len: text.len(),
            max: max_len,
        });
    }
    // The time bound is not checked: an HSDir keeps a descriptor only while it lives, and
    // what matters is which counter it holds.
    let _outer = HsDesc::parse(text, blind_id)
        .map_err(|e| IntakeError::Malformed(HsDescError::OuterParsing(e)))?
        .check_signature()
        .map_err(|e| IntakeError::BadSignature(HsDescError::OuterValidation(e.into())))?;
    // The parser accepts exactly one revision-counter line, so this is the signed one.
    claimed_revision(text).ok_or(IntakeError::NoRevision)
}

/// The revision counter a descriptor text *claims*, read from its plaintext outer layer
/// without any verification; `None` if there is no well-formed `revision-counter` line.
///
/// A C tor service encodes its descriptor afresh for every HSDir it uploads to (new salts,
/// new signatures), so the same descriptor arrives as different bytes from different HSDirs.
/// The (period, revision) pair is what identifies it. This lets a caller that already holds
/// a verified descriptor with that revision skip all cryptography. Trusting the claim is
/// safe only for that purpose: a forged text claiming the held revision changes nothing,
/// and any text with a *new* revision is verified in full before it is used.
pub fn claimed_revision(text: &str) -> Option<RevisionCounter> {
    // The outer document is a few lines before the big encrypted blob; the counter comes
    // within the first handful of lines (rend-spec-v3 §2.4: it follows the certificate).
    text.lines()
        .take(64)
        .find_map(|line| line.strip_prefix("revision-counter "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(RevisionCounter::from)
}

/// Formats an optional bound for an error message.
fn fmt_time(t: Option<SystemTime>) -> String {
    t.map(crate::timefmt::rfc3339)
        .unwrap_or_else(|| "unbounded".into())
}

/// Turns Arti's error into ours, keeping it as the cause.
fn classify(e: HsDescError, text: &str, address: OnionAddress) -> IntakeError {
    match e {
        HsDescError::OuterParsing(_) => {
            // `HsDesc::parse` fails either because the outer document is malformed or because
            // its blinded key is not the one we asked for. If the outer document parses on
            // its own, it was the latter.
            if HsDescOuter::parse(text).is_ok() {
                IntakeError::WrongService(address)
            } else {
                IntakeError::Malformed(e)
            }
        }
        HsDescError::OuterValidation(_) | HsDescError::InnerValidation(_) => {
            IntakeError::BadSignature(e)
        }
        HsDescError::MissingDecryptionKey
        | HsDescError::WrongDecryptionKey
        | HsDescError::DecryptionFailed => IntakeError::NotDecryptable(e),
        HsDescError::InnerParsing(_) => IntakeError::InnerMalformed(e),
        other => IntakeError::Malformed(other),
    }
}
