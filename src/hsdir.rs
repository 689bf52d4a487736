//! An HSDir as the runner knows it: who it is and how to reach it.
//!
//! Its own module because two sides use it that should not know each other: the ring
//! ([`crate::ring`]) finds HSDirs in a consensus, and the publication schedule
//! (`service::publish`) keeps per-HSDir upload state without knowing about consensuses or
//! circuits.

use tor_linkspec::OwnedCircTarget;
use tor_llcrypto::pk::rsa::RsaIdentity;

/// One HSDir we talk to.
#[derive(Debug, Clone)]
// Its fields are public with the `testing` feature (tests read `id`), unreachable without.
#[allow(unreachable_pub)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct HsDir {
    /// Its RSA identity: how C tor and status output name relays.
    pub id: RsaIdentity,
    /// How to build a circuit to it.
    pub target: OwnedCircTarget,
}
