//! What a runner tells the outside: its status snapshot, events, counters and log lines.
//!
//! Nothing here decides anything. The runner decides and acts, then hands the [`Reporter`] a
//! small typed account of what happened ([`FetchSeen`], an upload's [`Recorded`] verdict, a
//! build's [`Publication`]); the reporter counts it, logs it and sends the events. The status
//! snapshot is a projection of the runner's state, read after each step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tor_hscrypto::time::TimePeriod;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_rtcompat::Runtime;
use tracing::{debug, error, info, warn};

use super::peeking::{PeekFinding, PeekJob, PeekWhy};
use super::publish::{self, BuildReason, Publication, Recorded, UploadJob};
use super::{ServiceRunner, UploadFailure};
use crate::config::ClientAuthConfig;
use crate::descriptor::BuiltVariants;
use crate::error::ErrorKind;
use crate::events::{Event, EventSender};
use crate::health::state::Verdict;
use crate::health::{HealthSignal, Monitor, LATENCY_BUCKETS};
use crate::net::DirTransport;
use crate::onion::OnionAddress;
use crate::status::{
    Ahead, BackendHealth, BackendShare, Counters, InstanceStatus, LatencyHistogram,
    OtherPublisherStatus, PeriodStatus, ProbeStatus, ServiceStatus, StatusBoard, VariantStatus,
};

/// Where one runner's reports go, with what it has told so far.
pub(super) struct Reporter {
    /// Where readers find the status.
    board: StatusBoard,
    /// Where listeners hear what happened.
    events: EventSender,
    /// The frontend.
    address: OnionAddress,
    /// The frontend's address, for logs.
    frontend: String,
    /// The backends whose intro points we can publish, as last announced
    /// ([`Event::BackendJoined`]).
    members: Vec<(OnionAddress, String)>,
    /// The last revision announced as published ([`Event::Published`]), per period.
    announced: HashMap<TimePeriod, u64>,
    /// Event counts.
    counters: Counters,
    /// When an HSDir first accepted a descriptor of ours.
    first_published: Option<SystemTime>,
    /// When the last fetch started.
    last_fetch: Option<SystemTime>,
    /// The last descriptor of our address seen on an HSDir from another publisher.
    other_publisher: Option<OtherPublisherSeen>,
}

/// A descriptor of our address that another publisher left on an HSDir (see
/// [`super::peeking`]).
#[derive(Debug, Clone)]
struct OtherPublisherSeen {
    /// When we saw it.
    at: SystemTime,
    /// Its period.
    period: TimePeriod,
    /// Where.
    hsdir: RsaIdentity,
    /// Its revision counter.
    revision: u64,
    /// Whether it lists what ours lists.
    same_listing: bool,
}

/// What one finished fetch of a backend's descriptor showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FetchSeen {
    /// A descriptor listing other intro points than before.
    Changed {
        /// Its revision counter.
        revision: u64,
        /// How many intro points it lists.
        intro_points: usize,
    },
    /// A higher revision listing the same intro points: a refresh.
    Refreshed {
        /// Its revision counter.
        revision: u64,
    },
    /// An HSDir served an older revision than the one we have.
    NotNewer {
        /// Its revision counter.
        revision: u64,
    },
    /// HSDirs still serve a revision we dropped as stale.
    StillStale {
        /// Its revision counter.
        revision: u64,
    },
    /// The revision we have, recognised before any cryptography.
    Unchanged {
        /// Its revision counter.
        revision: u64,
    },
    /// No HSDir of the period has a descriptor for the backend.
    NotFound {
        /// How many HSDirs said so.
        hsdirs: usize,
        /// Whether this made the backend leave the period's selection.
        left_selection: bool,
    },
    /// No HSDir answered (no circuit, timeouts, errors).
    Failed {
        /// The kind of failure, for metrics.
        kind: ErrorKind,
        /// What went wrong.
        problem: String,
    },
}

impl FetchSeen {
    /// The problem to keep as the backend's last error, if this fetch had one.
    pub(super) fn problem(&self, tp: u64) -> Option<String> {
        match self {
            FetchSeen::NotFound { hsdirs, .. } => Some(format!(
                "none of {hsdirs} HSDirs has its descriptor for time period {tp} (is it running?)"
            )),
            FetchSeen::Failed { problem, .. } => {
                Some(format!("fetch for time period {tp} failed: {problem}"))
            }
            _ => None,
        }
    }
}

impl Reporter {
    /// A reporter for the frontend `address`.
    pub(super) fn new(board: StatusBoard, events: EventSender, address: OnionAddress) -> Self {
        Reporter {
            board,
            events,
            address,
            frontend: address.to_string(),
            members: Vec::new(),
            announced: HashMap::new(),
            counters: Counters::default(),
            first_published: None,
            last_fetch: None,
            other_publisher: None,
        }
    }

    /// Sends an event about this frontend.
    pub(super) fn send(&self, event: Event) {
        self.events.send(event);
    }

    /// A fetch started at `wall`.
    pub(super) fn fetch_started(&mut self, wall: SystemTime) {
        self.last_fetch = Some(wall);
    }

    /// HSDirs served descriptors that failed intake, of these kinds.
    pub(super) fn intake_rejected(&mut self, kinds: impl IntoIterator<Item = ErrorKind>) {
        for kind in kinds {
            *self.counters.intake_rejections.entry(kind).or_default() += 1;
        }
    }

    /// A fetch of backend `name` for period `tp` finished, showing `seen`.
    pub(super) fn fetched(&mut self, name: &str, tp: u64, seen: &FetchSeen) {
        let front = &self.frontend;
        match seen {
            FetchSeen::Changed {
                revision,
                intro_points,
            } => {
                self.counters.fetches_ok += 1;
                self.counters.backend_changes += 1;
                info!("{front}: backend {name}: time period {tp}: new intro points (revision {revision}, {intro_points} intro points)");
            }
            FetchSeen::Refreshed { revision } => {
                self.counters.fetches_ok += 1;
                debug!("{front}: backend {name}: time period {tp}: revision {revision}, same intro points");
            }
            FetchSeen::NotNewer { revision } => {
                self.counters.fetches_ok += 1;
                debug!("{front}: backend {name}: time period {tp}: an HSDir served older revision {revision}");
            }
            FetchSeen::StillStale { revision } => {
                self.counters.fetches_ok += 1;
                debug!("{front}: backend {name}: time period {tp}: HSDirs still serve stale revision {revision}");
            }
            FetchSeen::Unchanged { revision } => {
                self.counters.fetches_ok += 1;
                debug!(
                    "{front}: backend {name}: time period {tp}: unchanged (revision {revision})"
                );
            }
            FetchSeen::NotFound { left_selection, .. } => {
                *self
                    .counters
                    .fetch_failures
                    .entry(ErrorKind::DescriptorNotFound)
                    .or_default() += 1;
                let msg = seen.problem(tp).unwrap_or_default();
                if *left_selection {
                    warn!("{front}: backend {name}: {msg}: left that period's selection");
                } else {
                    info!("{front}: backend {name}: {msg}");
                }
            }
            FetchSeen::Failed { kind, .. } => {
                *self.counters.fetch_failures.entry(*kind).or_default() += 1;
                let msg = seen.problem(tp).unwrap_or_default();
                warn!("{front}: backend {name}: {msg}; keeping its last descriptor while valid");
            }
        }
    }

    /// A build of period `tp` produced `publication`. `clients` and `max_len` explain a
    /// lowered intro-point limit.
    pub(super) fn built(
        &mut self,
        tp: TimePeriod,
        reason: BuildReason,
        publication: &Publication,
        clients: usize,
        max_len: usize,
    ) {
        self.counters.builds += 1;
        if publication.intro_point_limit < crate::descriptor::MAX_INTRO_POINTS {
            warn!(
                "{}: time period {}: with {clients} authorized clients a descriptor holds at most {} intro points (the network's size limit is {max_len} bytes): fewer backends per descriptor",
                self.frontend,
                tp.interval_num(),
                publication.intro_point_limit,
            );
        }
        log_build(&self.frontend, tp, reason, publication);
    }

    /// An upload finished: `result` as the HSDir gave it, `recorded` as the schedule took it,
    /// and, when it was the last HSDir of its period to get the current descriptor, how many
    /// HSDirs the period has.
    pub(super) fn uploaded(
        &mut self,
        job: &UploadJob,
        result: &Result<(), UploadFailure>,
        recorded: Recorded,
        all_hold: Option<usize>,
        wall: SystemTime,
    ) {
        let tp = job.period.interval_num();
        let rev = u64::from(job.descriptor.revision);
        let front = &self.frontend;
        let hsdir = job.hsdir.id;
        let f = match result {
            Ok(()) => {
                self.counters.uploads_ok += 1;
                self.first_published.get_or_insert(wall);
                let announced = self.announced.entry(job.period).or_default();
                if *announced < rev {
                    *announced = rev;
                    self.events.send(Event::Published {
                        service: self.address,
                        time_period: tp,
                        revision: rev,
                    });
                }
                debug!("{front}: time period {tp}: HSDir {hsdir} accepted revision {rev}");
                if let Some(n) = all_hold {
                    info!("{front}: time period {tp}: all {n} HSDirs hold our descriptor (revision {rev})");
                }
                return;
            }
            Err(f) => f,
        };
        *self.counters.upload_failures.entry(f.kind).or_default() += 1;
        if let Recorded::Refused(n) = recorded {
            self.events.send(Event::UploadRejected {
                service: self.address,
                time_period: tp,
                revision: rev,
                hsdir: hex::encode_upper(hsdir.as_bytes()),
                in_a_row: n,
                error: f.error.clone(),
            });
        }
        let message = &f.message;
        match recorded {
            Recorded::Refused(n) if n == publish::REJECTION_ALARM => error!(
                "{front}: time period {tp}: HSDir {hsdir} refused {n} descriptors in a row (last: {message}). Check this machine's clock, and that no other onionbalance or tor publishes with this frontend key; retrying every {} minutes",
                publish::SLOW_RETRY.as_secs() / 60
            ),
            Recorded::Refused(n) => warn!(
                "{front}: time period {tp}: HSDir {hsdir} refused revision {rev} ({message}; {n} in a row): retrying with backoff"
            ),
            _ => warn!(
                "{front}: time period {tp}: upload of revision {rev} to HSDir {hsdir} failed: {message}; retrying with backoff"
            ),
        }
    }

    /// A peek at what an HSDir holds found `finding`.
    pub(super) fn peeked(&mut self, job: &PeekJob, finding: &PeekFinding, wall: SystemTime) {
        let front = &self.frontend;
        let tp = job.period.interval_num();
        let hsdir = job.hsdir.id;
        let ours = u64::from(job.ours.revision);
        if let Some((held, same_listing)) = finding.other_publisher() {
            self.counters.other_publisher_seen += 1;
            self.other_publisher = Some(OtherPublisherSeen {
                at: wall,
                period: job.period,
                hsdir,
                revision: u64::from(held),
                same_listing,
            });
        }
        match (finding, job.why) {
            (PeekFinding::Ours, PeekWhy::Refused) => {
                // Stored by an attempt whose answer was lost: published all the same.
                self.first_published.get_or_insert(wall);
                info!(
                    "{front}: time period {tp}: HSDir {hsdir} already holds revision {ours}, our own (an earlier attempt got through): counted as stored"
                );
            }
            (PeekFinding::Ours, PeekWhy::Watch) => debug!(
                "{front}: time period {tp}: HSDir {hsdir} holds our revision {ours}, as it should"
            ),
            (PeekFinding::Equivalent(held), _) => {
                self.first_published.get_or_insert(wall);
                self.counters.equivalent += 1;
                info!(
                    "{front}: time period {tp}: HSDir {hsdir} holds revision {} of this address from another publisher (another onionbalance with this key?), listing the same intro points as ours ({ours}): counted as stored",
                    u64::from(*held)
                );
            }
            (PeekFinding::Outranked(held), _) => {
                self.counters.outranked += 1;
                warn!(
                    "{front}: time period {tp}: HSDir {hsdir} holds revision {} of this address, signed with its key but not by this process (C tor or Python Onionbalance before a move, or another onionbalance with this key), at or above ours ({ours}) and listing something else: fetching every backend again, then the next descriptor goes above it",
                    u64::from(*held)
                );
            }
            (PeekFinding::Below(held), PeekWhy::Refused) => debug!(
                "{front}: time period {tp}: HSDir {hsdir} holds revision {} (below the refused {ours}): the refusal had another cause",
                u64::from(*held)
            ),
            (PeekFinding::Below(held), PeekWhy::Watch) => warn!(
                "{front}: time period {tp}: HSDir {hsdir} holds revision {}, older than the {ours} it accepted from us (did it restart?): uploading ours again",
                u64::from(*held)
            ),
            (PeekFinding::Superseded(held), _) => debug!(
                "{front}: time period {tp}: HSDir {hsdir} holds revision {}, which our revision {ours}, built while we looked, replaces",
                u64::from(*held)
            ),
            (PeekFinding::Missing, PeekWhy::Refused) => debug!(
                "{front}: time period {tp}: HSDir {hsdir} holds nothing for this address after refusing ours: the refusal had another cause"
            ),
            (PeekFinding::Missing, PeekWhy::Watch) => warn!(
                "{front}: time period {tp}: HSDir {hsdir} holds no descriptor of this address though it accepted revision {ours} (did it restart?): uploading ours again"
            ),
            (PeekFinding::Unknown(why), _) => debug!(
                "{front}: time period {tp}: cannot tell what HSDir {hsdir} holds: {why}"
            ),
        }
    }

    /// Tells listeners which backends joined or left `present` (the backends whose intro
    /// points we can publish), and forgets announcements about periods no longer published.
    pub(super) fn membership(
        &mut self,
        present: Vec<(OnionAddress, String)>,
        periods: &[TimePeriod],
    ) {
        for (instance, name) in &present {
            if !self.members.iter().any(|(a, _)| a == instance) {
                self.events.send(Event::BackendJoined {
                    service: self.address,
                    name: name.clone(),
                    instance: *instance,
                });
            }
        }
        for (instance, name) in &self.members {
            if !present.iter().any(|(a, _)| a == instance) {
                self.events.send(Event::BackendLeft {
                    service: self.address,
                    name: name.clone(),
                    instance: *instance,
                });
            }
        }
        self.members = present;
        self.announced.retain(|tp, _| periods.contains(tp));
    }
}

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// Tells listeners which backends joined or left the set whose intro points we can
    /// publish (a valid descriptor for at least one period we publish for).
    pub(super) fn announce_membership(&mut self) {
        let wall = self.runtime.wallclock();
        let mut present: Vec<(OnionAddress, String)> = Vec::new();
        for period in self.publish.publish_periods() {
            for (b, _) in self.inputs_for(period.time_period, wall) {
                if !present.iter().any(|(a, _)| *a == b.address) {
                    present.push((b.address, b.name.clone()));
                }
            }
        }
        let periods = self.publish.time_periods();
        self.report.membership(present, &periods);
    }

    /// Publishes a fresh status snapshot.
    pub(super) fn update_status(&self) {
        let wall = self.runtime.wallclock();
        let now = self.runtime.now();
        let to_wall = |t: Instant| wall + t.saturating_duration_since(now);
        let mut periods: Vec<PeriodStatus> = self
            .publish
            .periods()
            .map(|p| PeriodStatus {
                time_period: p.period.time_period.interval_num(),
                length_minutes: p.period.time_period.length().as_minutes(),
                revision_counter: p
                    .published
                    .as_ref()
                    .and_then(Publication::revision)
                    .map(u64::from),
                built_at: p.built_at,
                intro_points: p
                    .published
                    .as_ref()
                    .map_or(0, |pb| pb.variants.iter().map(|d| d.intro_points).sum()),
                backends: p
                    .published
                    .as_ref()
                    .map(|pb| {
                        pb.shares
                            .iter()
                            .filter(|(_, s)| *s > 0.0)
                            .map(|(n, _)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                variants: p
                    .published
                    .as_ref()
                    .map_or_else(Vec::new, |pb| variant_status(pb, &p.fetch)),
                shares: p
                    .published
                    .as_ref()
                    .map(|pb| {
                        pb.shares
                            .iter()
                            .map(|(name, share)| BackendShare {
                                name: name.clone(),
                                share: *share,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                left_out: p
                    .published
                    .as_ref()
                    .map(|pb| pb.left_out.clone())
                    .unwrap_or_default(),
                intro_point_limit: p
                    .published
                    .as_ref()
                    .map(|pb| pb.intro_point_limit)
                    .filter(|&n| n < crate::descriptor::MAX_INTRO_POINTS),
                hsdirs: p.hsdirs.len(),
                hsdirs_accepted: p.accepted(),
                hsdirs_failed: p.failed(),
                next_republish: p.refresh_at.map(to_wall),
                last_upload_attempt: p.last_attempt,
                refusals_in_a_row: p.refusals_in_a_row(),
                last_refusal: p.last_refusal.clone(),
            })
            .collect();
        periods.sort_by_key(|p| p.time_period);
        let listed: Vec<OnionAddress> = self
            .current_period
            .map(|tp| {
                self.inputs_for(tp, wall)
                    .iter()
                    .map(|(b, _)| b.address)
                    .collect()
            })
            .unwrap_or_default();
        let instances = self
            .backends
            .iter()
            .map(|b| {
                let (health, health_reason) = health_status(&b.health);
                let (probes, probe_latency) = probe_counts(&b.health);
                let snap = self.current_period.and_then(|tp| b.snapshot_for(tp, wall));
                InstanceStatus {
                    name: b.name.clone(),
                    onion_address: b.address.to_string(),
                    descriptor_received: snap.map(|s| s.received_at),
                    revision_counter: snap.map(|s| u64::from(s.revision)),
                    intro_points_num: snap.map_or(0, |s| s.intro_points.len()),
                    intro_set_modified: b.changed_at,
                    valid_until: snap.and_then(|s| s.valid_until),
                    last_error: b.periods.iter().find_map(|p| p.last_error.clone()),
                    health,
                    health_reason,
                    listed: listed.contains(&b.address),
                    last_probe: last_probe(&b.health),
                    probes,
                    probe_latency,
                }
            })
            .collect();
        let attempt = |i: usize| periods.get(i).and_then(|p| p.last_upload_attempt);
        let st = ServiceStatus {
            publish_attempt_first_descriptor: attempt(0),
            publish_attempt_second_descriptor: attempt(1),
            onion_address: self.frontend.clone(),
            phase: self.phase,
            last_fetch: self.report.last_fetch,
            first_published: self.report.first_published,
            periods,
            instances,
            authorized_clients: self.engine.authorized_clients().map(<[_]>::len),
            counters: self.report.counters.clone(),
            fail_open: self.fail_open,
            other_publisher: self.report.other_publisher.as_ref().map(|o| {
                let ours = self
                    .publish
                    .period(o.period)
                    .and_then(|p| p.published.as_ref())
                    .and_then(|pb| pb.revision())
                    .map(u64::from);
                OtherPublisherStatus {
                    last_seen: o.at,
                    time_period: o.period.interval_num(),
                    hsdir: o.hsdir.to_string(),
                    revision: o.revision,
                    same_listing: o.same_listing,
                    our_revision: ours,
                    ahead: if ours.is_some_and(|r| r > o.revision) {
                        Ahead::ThisFrontend
                    } else {
                        Ahead::OtherPublisher
                    },
                }
            }),
        };
        self.report.board.update(st);
    }
}

/// Logs the restricted-discovery setting in force (counts only, never keys).
pub(super) fn log_client_auth(frontend: &str, clients: Option<&ClientAuthConfig>, when: &str) {
    match clients {
        None => warn!(
            "{frontend}: {when}: discovery is no longer restricted: anyone who knows the address can connect"
        ),
        Some(c) if c.clients.is_empty() => warn!(
            "{frontend}: {when}: restricted discovery with no authorized client: no client can read the descriptors (add one with `onionbalance client-auth add`)"
        ),
        Some(c) => info!(
            "{frontend}: {when}: restricted discovery for {} authorized client(s)",
            c.clients.len()
        ),
    }
}

/// What a build of one period publishes, with backend names for `names` (per snapshot
/// given to the engine) and the plan's holders.
pub(super) fn publication(
    built: BuiltVariants,
    names: &[String],
    fetch: &[RsaIdentity],
) -> Publication {
    let n = names.len();
    let shares = built.plan.shares(n);
    let listed = built
        .variants
        .iter()
        .map(|b| {
            let mut listed: Vec<(String, usize)> = Vec::new();
            for &i in &b.backends {
                match listed.iter_mut().find(|(name, _)| *name == names[i]) {
                    Some((_, k)) => *k += 1,
                    None => listed.push((names[i].clone(), 1)),
                }
            }
            listed
        })
        .collect();
    let holders = built
        .plan
        .fetch_holders
        .iter()
        .chain(&built.plan.upload_only_holders)
        .copied()
        .collect();
    let planned_fetch = (!built.plan.is_single()).then(|| fetch.to_vec());
    let intro_point_limit = built.intro_point_limit;
    Publication {
        variants: built
            .variants
            .into_iter()
            .map(|b| Arc::new(b.descriptor))
            .collect(),
        listed,
        holders,
        shares: names.iter().cloned().zip(shares).collect(),
        left_out: built
            .plan
            .left_out
            .iter()
            .map(|&i| names[i].clone())
            .collect(),
        planned_fetch,
        intro_point_limit,
    }
}

/// Per variant of `publication`: its HSDirs (how many clients fetch from) and what it lists.
pub(super) fn variant_status(
    publication: &Publication,
    fetch: &[RsaIdentity],
) -> Vec<VariantStatus> {
    let mut out: Vec<VariantStatus> = publication
        .variants
        .iter()
        .zip(&publication.listed)
        .map(|(d, listed)| VariantStatus {
            hsdirs: Vec::new(),
            fetched_from: 0,
            backends: listed.clone(),
            intro_points: d.intro_points,
        })
        .collect();
    let mut holders: Vec<(&RsaIdentity, &usize)> = publication.holders.iter().collect();
    holders.sort();
    for (h, &v) in holders {
        if let Some(vs) = out.get_mut(v) {
            vs.hsdirs.push(hex::encode_upper(h.as_bytes()));
            if fetch.contains(h) {
                vs.fetched_from += 1;
            }
        }
    }
    out
}

/// Logs what a build of period `tp` lists.
fn log_build(frontend: &str, tp: TimePeriod, reason: BuildReason, publication: &Publication) {
    let rev = publication.revision().map_or(0, u64::from);
    let describe = |listed: &[(String, usize)]| -> String {
        let parts: Vec<String> = listed.iter().map(|(n, k)| format!("{n}×{k}")).collect();
        parts.join(", ")
    };
    if let [only] = &publication.variants[..] {
        info!(
            "{}: built descriptor for time period {} (revision {rev}; {}): {} intro point(s) [{}]",
            frontend,
            tp.interval_num(),
            reason.describe(),
            only.intro_points,
            describe(publication.listed.first().map_or(&[][..], |l| &l[..]))
        );
    } else {
        let sizes: Vec<String> = publication
            .variants
            .iter()
            .map(|d| d.intro_points.to_string())
            .collect();
        info!(
            "{}: built {} descriptor variants for time period {} (revision {rev}; {}), one per HSDir clients fetch from, with {} intro points",
            frontend,
            publication.variants.len(),
            tp.interval_num(),
            reason.describe(),
            sizes.join("/")
        );
        for (v, listed) in publication.listed.iter().enumerate() {
            debug!(
                "{}: time period {} variant {v}: [{}]",
                frontend,
                tp.interval_num(),
                describe(listed)
            );
        }
    }
    if !publication.left_out.is_empty() {
        warn!(
            "{}: time period {}: {} backend(s) fit in no descriptor (clients use 20 intro points of each, one per relay, from {} HSDirs): {}",
            frontend,
            tp.interval_num(),
            publication.left_out.len(),
            publication.holders.len(),
            publication.left_out.join(", ")
        );
    }
}

/// A backend's health for the status, and why it is down or out.
fn health_status(m: &Monitor) -> (BackendHealth, Option<String>) {
    if m.drain {
        return (
            BackendHealth::Draining,
            Some("drained by the operator (`drain: true`)".into()),
        );
    }
    if let Some(HealthSignal::Down { reason }) = &m.signal {
        return (
            BackendHealth::Down,
            Some(format!("the application says: {reason}")),
        );
    }
    if m.probes.check().is_none() {
        return (BackendHealth::Unchecked, None);
    }
    match m.probes.verdict() {
        Verdict::Unknown => (BackendHealth::Unknown, None),
        Verdict::Up if m.probes.listed() => (BackendHealth::Up, None),
        Verdict::Up => (
            BackendHealth::Up,
            Some("up again; listed after the hold-down against flapping".into()),
        ),
        Verdict::Down(reason) if m.probes.listed() => (
            BackendHealth::Down,
            Some(format!(
                "{reason} (still listed: the hold-down against flapping)"
            )),
        ),
        Verdict::Down(reason) => (BackendHealth::Down, Some(reason.clone())),
    }
}

/// A backend's last probe, for the status.
fn last_probe(m: &Monitor) -> Option<ProbeStatus> {
    let (at, result) = m.log.last.as_ref()?;
    Some(match result {
        Ok(latency) => ProbeStatus {
            at: *at,
            ok: true,
            latency_ms: Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)),
            error: None,
            kind: "ok".into(),
        },
        Err(e) => ProbeStatus {
            at: *at,
            ok: false,
            latency_ms: None,
            error: Some(e.to_string()),
            kind: e.kind_label().into(),
        },
    })
}

/// A backend's probes by result and the latency histogram, for the status.
fn probe_counts(m: &Monitor) -> (BTreeMap<String, u64>, LatencyHistogram) {
    let results = m
        .log
        .results
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
    let histogram = LatencyHistogram {
        buckets: bounds.zip(m.log.latency_buckets).collect(),
        sum_seconds: m.log.latency_sum.as_secs_f64(),
    };
    (results, histogram)
}
