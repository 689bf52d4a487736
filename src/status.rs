//! What an operator wants to see: a snapshot of every service, period and backend.
//!
//! The service runners publish a fresh [`ServiceStatus`] whenever it changes; readers (the
//! status socket, metrics, systemd readiness, an embedding application) take a snapshot with
//! [`BalancerHandle::status`](crate::BalancerHandle::status) or wake on changes with
//! [`BalancerHandle::status_watch`](crate::BalancerHandle::status_watch). Times are
//! wall-clock and serialise as RFC 3339 strings.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::error::ErrorKind;
pub use crate::timefmt::{rfc3339, LATEST_FORMATTABLE};

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
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The frontend's onion address.
    pub onion_address: String,
    /// Where the service is in its life: waiting for a consensus, starting, publishing...
    pub phase: ServicePhase,
    /// When backend descriptors were last fetched.
    #[serde(serialize_with = "opt_time")]
    pub last_fetch: Option<SystemTime>,
    /// When the first descriptor of this service was accepted by an HSDir.
    #[serde(serialize_with = "opt_time")]
    pub first_published: Option<SystemTime>,
    /// Upstream field: last upload attempt for the first (earlier) period we publish for.
    #[serde(serialize_with = "opt_time_upstream")]
    pub publish_attempt_first_descriptor: Option<SystemTime>,
    /// Upstream field: last upload attempt for the second (later) period, if any.
    #[serde(serialize_with = "opt_time_upstream")]
    pub publish_attempt_second_descriptor: Option<SystemTime>,
    /// The descriptor of each time period we publish for (one or two), oldest first.
    pub periods: Vec<PeriodStatus>,
    /// Each backend of the service, in config order.
    pub instances: Vec<InstanceStatus>,
    /// Restricted discovery: how many clients are authorized (never their keys); absent when
    /// anyone who knows the address may connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_clients: Option<usize>,
    /// Event counts since start.
    pub counters: Counters,
    /// Health checks found every backend down (or drained), so all stay listed rather than
    /// none ("fail open"): clients may be sent to failing backends.
    pub fail_open: bool,
    /// The last descriptor of this address seen on an HSDir from another publisher (another
    /// frontend with this key, or C tor or Python Onionbalance before a move); absent if
    /// none was seen since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_publisher: Option<OtherPublisherStatus>,
}

/// A descriptor of this address that another publisher left on an HSDir.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OtherPublisherStatus {
    /// When it was seen.
    #[serde(serialize_with = "time")]
    pub last_seen: SystemTime,
    /// Its time period.
    pub time_period: u64,
    /// The HSDir that held it.
    pub hsdir: String,
    /// Its revision counter.
    pub revision: u64,
    /// Whether it lists the same intro points as ours (then it serves clients as ours
    /// would, and counts as published).
    pub same_listing: bool,
    /// Our current revision for that period, if we have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub our_revision: Option<u64>,
    /// Whose descriptor an HSDir keeps: the one with the higher revision counter.
    pub ahead: Ahead,
}

/// Which publisher's descriptors the HSDirs keep (the higher revision counter wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ahead {
    /// Ours: our current revision is above the one seen.
    ThisFrontend,
    /// Theirs, as far as we know.
    OtherPublisher,
}

/// Event counts since the service started (for metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Backend descriptors fetched (any HSDir answered with one).
    pub fetches_ok: u64,
    /// Backend fetches that got no usable descriptor, by the kind of the last failure
    /// (`not-found` when every HSDir asked said 404).
    pub fetch_failures: BTreeMap<ErrorKind, u64>,
    /// Fetched descriptors rejected at intake (bad signature, expired...), by kind.
    pub intake_rejections: BTreeMap<ErrorKind, u64>,
    /// Backend descriptors that brought other intro points than before.
    pub backend_changes: u64,
    /// Descriptors built and signed (each variant of a period counts once per build).
    pub builds: u64,
    /// Uploads an HSDir accepted.
    pub uploads_ok: u64,
    /// Failed uploads, by kind (`rejected` when an HSDir refused the descriptor).
    pub upload_failures: BTreeMap<ErrorKind, u64>,
    /// Peeks that found another publisher's descriptor of this address listing something
    /// else, at or above our revision (C tor or Python Onionbalance before a move, or another
    /// onionbalance with the same key that saw other backends): the next descriptor goes
    /// above it, after every backend is fetched again.
    pub outranked: u64,
    /// Peeks that found another publisher's descriptor listing what ours lists, at or above
    /// our revision (another onionbalance with the same key): counted as published.
    pub equivalent: u64,
    /// Peeks that found another publisher's descriptor of this address, of either kind.
    pub other_publisher_seen: u64,
}

/// Status of one time period's descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeriodStatus {
    /// The time period's number (minutes since the epoch, minus the offset, divided by the
    /// period length), as C tor's logs and `rend-spec-v3` count it.
    pub time_period: u64,
    /// The period's length in minutes (1440 on the public network).
    pub length_minutes: u32,
    /// Revision counter of the current descriptor.
    pub revision_counter: Option<u64>,
    /// When the current descriptor was built.
    #[serde(serialize_with = "opt_time")]
    pub built_at: Option<SystemTime>,
    /// Intro points in it (with several variants: in all of them together).
    pub intro_points: usize,
    /// When a descriptor could not hold 20 intro points within the network's size limit
    /// (many authorized clients), the most it could hold; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intro_point_limit: Option<usize>,
    /// The backends it lists (with several variants: listed by any of them).
    pub backends: Vec<String>,
    /// The descriptors of this period: one, or one per HSDir clients fetch from when one
    /// descriptor cannot list every backend.
    pub variants: Vec<VariantStatus>,
    /// Each backend's expected share of new clients, from what the variants list and which
    /// HSDirs clients fetch from.
    pub shares: Vec<BackendShare>,
    /// Backends in no descriptor of this period (more than the fetch HSDirs can list).
    pub left_out: Vec<String>,
    /// HSDirs responsible for this period's descriptor (the upload set, 8 by default).
    pub hsdirs: usize,
    /// HSDirs holding the current descriptor.
    pub hsdirs_accepted: usize,
    /// HSDirs whose last upload failed (being retried).
    pub hsdirs_failed: usize,
    /// When the next periodic refresh of this period's descriptor is due.
    #[serde(serialize_with = "opt_time")]
    pub next_republish: Option<SystemTime>,
    /// When we last tried to upload for this period.
    #[serde(serialize_with = "opt_time")]
    pub last_upload_attempt: Option<SystemTime>,
    /// The most descriptors one HSDir of this period refused (HTTP 400) in a row; from 5 on,
    /// something is wrong (a clock far behind, or another frontend publishing with the same
    /// key) and that HSDir is retried only every 30 minutes.
    pub refusals_in_a_row: u32,
    /// The last refusal, as the HSDir worded it.
    pub last_refusal: Option<String>,
}

/// One descriptor variant of a period and the HSDirs that hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    /// The HSDirs assigned this variant (RSA fingerprints, hex).
    pub hsdirs: Vec<String>,
    /// Of those, how many clients fetch from (the others are upload-only).
    pub fetched_from: usize,
    /// The backends it lists, with how many intro points each.
    pub backends: Vec<(String, usize)>,
    /// Intro points in it.
    pub intro_points: usize,
}

/// A backend's expected share of new clients in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendShare {
    /// The backend's name.
    pub name: String,
    /// The expected fraction of new clients it receives, from 0 to 1.
    pub share: f64,
}

/// Status of one backend instance.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The backend's name in the config (`name:`, or one made from its address).
    pub name: String,
    /// The backend's onion address.
    pub onion_address: String,
    /// When its current descriptor was received (upstream field and format).
    #[serde(serialize_with = "opt_time_upstream")]
    pub descriptor_received: Option<SystemTime>,
    /// Its descriptor's revision counter.
    pub revision_counter: Option<u64>,
    /// Intro points in its descriptor.
    pub intro_points_num: usize,
    /// When its set of intro points last changed (upstream field and format).
    #[serde(serialize_with = "opt_time_upstream")]
    pub intro_set_modified: Option<SystemTime>,
    /// When its descriptor stops being valid.
    #[serde(serialize_with = "opt_time")]
    pub valid_until: Option<SystemTime>,
    /// The last problem with it (fetch or intake), if the last attempt failed.
    pub last_error: Option<String>,
    /// What health checks and the operator say about it.
    pub health: BackendHealth,
    /// Why it is down or out, when it is.
    pub health_reason: Option<String>,
    /// Whether its intro points are in what is built now (a backend without a usable
    /// descriptor is not, whatever its health).
    pub listed: bool,
    /// The last probe, if any.
    pub last_probe: Option<ProbeStatus>,
    /// Probes since start by result: `ok`, or the kind of failure (`timeout`,
    /// `unreachable`, `refused`, `http-status`, `http-invalid`, `io`).
    pub probes: BTreeMap<String, u64>,
    /// Latencies of passed probes (for metrics).
    #[serde(skip)]
    pub probe_latency: LatencyHistogram,
}

/// A backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendHealth {
    /// No health check configured.
    #[default]
    Unchecked,
    /// Checked, no verdict yet (listed meanwhile).
    Unknown,
    /// Probes pass.
    Up,
    /// Probes fail (or the embedding application says so): left out of the descriptors.
    Down,
    /// Taken out on purpose by the operator (`drain: true`).
    Draining,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    /// When it ended.
    #[serde(serialize_with = "time")]
    pub at: SystemTime,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took, when it passed.
    pub latency_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// `ok`, or the kind of failure (as in [`InstanceStatus::probes`]).
    pub kind: String,
}

/// A histogram of probe latencies, in the buckets of [`crate::health::LATENCY_BUCKETS`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencyHistogram {
    /// Per bucket (upper bound in seconds; the last is +Inf), how many probes fell in it
    /// (not cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all latencies, in seconds.
    pub sum_seconds: f64,
}

/// The document the status socket serves: `{"services": [...]}`, upstream's shape with our
/// extra fields alongside.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct StatusDocument {
    /// The status of every service, in config order.
    pub services: Vec<ServiceStatus>,
}

/// True once every service of `services` has had a descriptor accepted by at least one
/// HSDir; false for no services (nothing has reported yet).
pub fn all_published(services: &[ServiceStatus]) -> bool {
    !services.is_empty() && services.iter().all(|s| s.first_published.is_some())
}

/// Serialises an optional time as upstream Onionbalance does: `YYYY-MM-DD HH:MM:SS` (UTC).
fn opt_time_upstream<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => {
            let iso = rfc3339(*t);
            s.serialize_str(iso.trim_end_matches('Z').replacen('T', " ", 1).as_str())
        }
        None => s.serialize_none(),
    }
}

/// Serialises an optional time as RFC 3339 (UTC, seconds).
fn opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// Serialises a time as RFC 3339 (UTC, seconds).
fn time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The status of every running service, in config order, as a watch channel: runners replace
/// their own entry, readers are woken only when something changed.
#[derive(Debug, Clone)]
pub(crate) struct StatusBoard {
    /// The current statuses.
    sender: std::sync::Arc<tokio::sync::watch::Sender<Vec<ServiceStatus>>>,
}

impl StatusBoard {
    /// An empty board.
    pub(crate) fn new() -> Self {
        StatusBoard {
            sender: std::sync::Arc::new(tokio::sync::watch::Sender::new(Vec::new())),
        }
    }

    /// A receiver that sees every later change.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Vec<ServiceStatus>> {
        self.sender.subscribe()
    }

    /// The current statuses.
    pub(crate) fn snapshot(&self) -> Vec<ServiceStatus> {
        self.sender.borrow().clone()
    }

    /// Replaces the entry of `status.onion_address`, telling readers only if it changed. A
    /// service no longer on the board (removed by a reload, still stopping) changes nothing.
    pub(crate) fn update(&self, status: ServiceStatus) {
        self.sender.send_if_modified(|all| {
            match all
                .iter_mut()
                .find(|s| s.onion_address == status.onion_address)
            {
                Some(entry) if *entry != status => {
                    *entry = status;
                    true
                }
                _ => false,
            }
        });
    }

    /// Sets which services are on the board, in this order: entries of services still there
    /// are kept, new ones start from `ServiceStatus::default` with their address.
    pub(crate) fn set_services(&self, addresses: &[String]) {
        self.sender.send_modify(|all| {
            let mut old = std::mem::take(all);
            *all = addresses
                .iter()
                .map(|a| match old.iter().position(|s| &s.onion_address == a) {
                    Some(i) => old.swap_remove(i),
                    None => ServiceStatus {
                        onion_address: a.clone(),
                        ..Default::default()
                    },
                })
                .collect();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty list (a daemon's channel before the balancer's first status arrives) is not
    /// "all published": a config always has a service.
    #[test]
    fn nothing_is_published_before_the_first_status() {
        assert!(!all_published(&[]));
        let unpublished = ServiceStatus::default();
        assert!(!all_published(std::slice::from_ref(&unpublished)));
        let published = ServiceStatus {
            first_published: Some(SystemTime::now()),
            ..Default::default()
        };
        assert!(all_published(&[published]));
    }

    fn named(address: &str, phase: ServicePhase) -> ServiceStatus {
        ServiceStatus {
            onion_address: address.into(),
            phase,
            ..Default::default()
        }
    }

    /// Readers wake for a change, not for the same status written again.
    #[test]
    fn board_wakes_readers_only_on_change() {
        let board = StatusBoard::new();
        board.set_services(&["a.onion".into()]);
        let mut reader = board.subscribe();
        reader.borrow_and_update();
        board.update(named("a.onion", ServicePhase::WaitingForDirectory));
        assert!(!reader.has_changed().expect("open"), "same status: no wake");
        board.update(named("a.onion", ServicePhase::Publishing));
        assert!(reader.has_changed().expect("open"));
        assert_eq!(
            reader.borrow_and_update()[0].phase,
            ServicePhase::Publishing
        );
        // A service no longer on the board (stopping after a reload) changes nothing.
        board.update(named("gone.onion", ServicePhase::Publishing));
        assert!(!reader.has_changed().expect("open"));
        assert_eq!(board.snapshot().len(), 1);
    }

    /// The board follows the config's order; kept services keep their status.
    #[test]
    fn board_follows_the_config_order() {
        let board = StatusBoard::new();
        board.set_services(&["a.onion".into(), "b.onion".into()]);
        board.update(named("b.onion", ServicePhase::Publishing));
        board.set_services(&["c.onion".into(), "b.onion".into()]);
        let all = board.snapshot();
        let order: Vec<&str> = all.iter().map(|s| s.onion_address.as_str()).collect();
        assert_eq!(order, ["c.onion", "b.onion"]);
        assert_eq!(all[1].phase, ServicePhase::Publishing);
        assert_eq!(all[0].phase, ServicePhase::WaitingForDirectory);
    }
}
