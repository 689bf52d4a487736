//! What an operator wants to see: a snapshot of every service, period and backend.
//!
//! The service runners publish a fresh [`ServiceStatus`] after each step; readers (the status
//! socket, metrics, an embedding application) take copies. Times are wall-clock and serialise
//! as RFC 3339 strings.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// The phase a service is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServicePhase {
    /// No usable consensus yet.
    #[default]
    WaitingForDirectory,
    /// Fetching backend descriptors for the first time.
    Starting,
    /// No backend has a valid descriptor: nothing new can be published (what is already on
    /// the HSDirs stays there until it expires).
    NoBackends,
    /// Descriptors are published.
    Publishing,
    /// Stopped.
    Stopped,
}

/// Status of one frontend service.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The frontend's onion address.
    pub onion_address: String,
    /// The phase.
    pub phase: ServicePhase,
    /// When backend descriptors were last fetched.
    #[serde(serialize_with = "opt_time")]
    pub last_fetch: Option<SystemTime>,
    /// When the first descriptor of this service was accepted by an HSDir.
    #[serde(serialize_with = "opt_time")]
    pub first_published: Option<SystemTime>,
    /// Per time period we publish for.
    pub periods: Vec<PeriodStatus>,
    /// Per backend.
    pub instances: Vec<InstanceStatus>,
}

/// Status of one time period's descriptor.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeriodStatus {
    /// The time period number.
    pub time_period: u64,
    /// Its length in minutes.
    pub length_minutes: u32,
    /// Revision counter of the current descriptor.
    pub revision_counter: Option<u64>,
    /// When the current descriptor was built.
    #[serde(serialize_with = "opt_time")]
    pub built_at: Option<SystemTime>,
    /// Intro points in it.
    pub intro_points: usize,
    /// Responsible HSDirs.
    pub hsdirs: usize,
    /// HSDirs holding the current descriptor.
    pub hsdirs_accepted: usize,
    /// HSDirs whose last upload failed (being retried).
    pub hsdirs_failed: usize,
    /// When the next periodic republication is due.
    #[serde(serialize_with = "opt_time")]
    pub next_republish: Option<SystemTime>,
}

/// Status of one backend instance.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Its name.
    pub name: String,
    /// Its onion address.
    pub onion_address: String,
    /// When its current descriptor was received.
    #[serde(serialize_with = "opt_time")]
    pub descriptor_received: Option<SystemTime>,
    /// Its descriptor's revision counter.
    pub revision_counter: Option<u64>,
    /// Intro points in its descriptor.
    pub intro_points_num: usize,
    /// When its descriptor stops being valid.
    #[serde(serialize_with = "opt_time")]
    pub valid_until: Option<SystemTime>,
    /// The last problem with it (fetch or intake), if the last attempt failed.
    pub last_error: Option<String>,
}

/// Serialises an optional time as RFC 3339 (UTC, seconds).
fn opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
        None => s.serialize_none(),
    }
}
