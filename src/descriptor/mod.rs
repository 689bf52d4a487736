//! The descriptor engine: everything between "bytes from an HSDir" and "bytes to an HSDir".
//!
//! This module is pure: no I/O, no clock reads (time is always an argument), and randomness
//! comes from a caller-supplied RNG, so it is deterministic under test and benchmarkable.
//! What a descriptor *lists* depends on no randomness at all (see [`select_intro_points`]):
//! the RNG only salts, pads and encrypts.
//!
//! * [`intake()`]: parse, verify and decrypt a backend's descriptor with the backend's
//!   address ([`BackendKeys`]), giving a [`BackendSnapshot`] of its intro points, revision
//!   counter and validity, or a typed [`IntakeError`]. [`claimed_revision`] reads the
//!   revision a text claims without cryptography, and [`BackendSnapshot::content_key`] says
//!   what a descriptor means for us, so that the same descriptor in other bytes (C tor
//!   encodes once per HSDir) is recognised as such.
//! * [`select_intro_points`]: choose at most [`MAX_INTRO_POINTS`] intro points, one per
//!   relay, every backend reachable and shares equal.
//! * [`plan_variants`]: when one descriptor cannot list every backend, a variant per HSDir
//!   that clients fetch from, every backend in some, shares equal.
//! * [`build_descriptor`]: sign and encrypt a descriptor for the frontend for one time period
//!   ([`FrontendPeriodKeys`]), with the selected intro points re-certified by the period's
//!   descriptor-signing key.
//! * [`read_listing`]: read back what a descriptor of our own address lists ([`Listing`]),
//!   whoever published it with our key: how two frontends recognise equivalent descriptors.
//! * [`clients_that_fit`]: how many authorized clients one descriptor holds beside a number
//!   of intro points.
//! * [`Engine`]: the frontend's keys and revision counters per period, tying selection and
//!   build together.
//!
//! With the `testing` feature, `synthetic` (made-up backends) and `layers` (the encryption
//! layers written out) serve tests, benchmarks and fuzzing.

/// Building, signing and encrypting our descriptors.
#[cfg(feature = "testing")]
pub mod build;
/// Building, signing and encrypting our descriptors.
#[cfg(not(feature = "testing"))]
mod build;
mod capacity;
mod encode;
mod engine;
mod intake;
#[cfg(any(test, feature = "testing"))]
pub mod layers;
mod listing;
mod parallel;
mod period_keys;
mod published;
/// Choosing intro points.
#[cfg(feature = "testing")]
pub mod select;
/// Choosing intro points.
#[cfg(not(feature = "testing"))]
mod select;
#[cfg(any(test, feature = "testing"))]
pub mod synthetic;
mod variants;

use std::time::{Duration, SystemTime};

use tor_hscrypto::time::TimePeriod;

pub use build::{build_descriptor, BuildRequest, BuiltDescriptor};
pub use capacity::{clients_that_fit, intro_points_for_clients};
pub(crate) use engine::run_jobs;
pub use engine::{Built, BuiltVariants, Engine, PeriodBuild};
pub use intake::{
    claimed_revision, intake, verified_revision, BackendKeys, BackendSnapshot, ContentKey,
    IntakeError,
};
pub use listing::Listing;
pub use period_keys::{BuildError, FrontendPeriodKeys};
pub use published::{read_listing, PublishedDescriptor};
pub use select::{intro_point_relay, select_intro_points};
pub use variants::{plan_variants, RingFacts, VariantPlan};

/// Clients use only the first 20 intro points of a descriptor (rend-spec-v3; C tor and Arti).
pub const MAX_INTRO_POINTS: usize = tor_hscrypto::NUM_INTRO_POINT_MAX;

/// Default maximum descriptor size (consensus parameter `hsdir_max_desc_size`).
pub const DEFAULT_MAX_DESCRIPTOR_LEN: usize = 50_000;

/// Lifetime we declare in our descriptors: how long HSDirs keep them (C tor uses 3 hours).
pub const DESCRIPTOR_LIFETIME: Duration = Duration::from_secs(180 * 60);

/// Lifetime of the descriptor-signing-key certificate and the intro-point certificates
/// (54 hours, as C tor's `HS_DESC_CERT_LIFETIME` and Arti: a descriptor may be used for up to
/// 48 hours, plus slack for consensus skew).
pub const CERT_LIFETIME: Duration = Duration::from_secs(54 * 60 * 60);

/// A time period we publish for, with the start of the shared-random period that the
/// revision counter is measured from.
///
/// The network layer gets both from Arti's `HsDirParams`; tests and benchmarks make them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublishPeriod {
    /// The time period (decides the blinded key).
    pub time_period: TimePeriod,
    /// When the SRV period that this time period's ring uses began.
    pub srv_start: SystemTime,
}
