//! What a runner tells the outside: its status snapshot, events about which backends are
//! listed, and log lines about what it built. Nothing here decides anything: every function
//! reads the runner's state and reports it.

use std::sync::Arc;
use std::time::Instant;

use tor_hscrypto::time::TimePeriod;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_rtcompat::Runtime;
use tracing::{debug, info, warn};

use super::publish::{BuildReason, Publication};
use super::ServiceRunner;
use crate::config::ClientAuthConfig;
use crate::descriptor::BuiltVariants;
use crate::events::Event;
use crate::net::DirTransport;
use crate::onion::OnionAddress;
use crate::status::{BackendShare, InstanceStatus, PeriodStatus, ServiceStatus, VariantStatus};

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
        let periods = self.publish.publish_periods();
        self.announced
            .retain(|tp, _| periods.iter().any(|p| p.time_period == *tp));
    }

    /// Logs what a build of period `tp` lists.
    pub(super) fn log_build(&self, tp: TimePeriod, reason: BuildReason, publication: &Publication) {
        let rev = publication.revision().map_or(0, u64::from);
        let describe = |listed: &[(String, usize)]| -> String {
            let parts: Vec<String> = listed.iter().map(|(n, k)| format!("{n}×{k}")).collect();
            parts.join(", ")
        };
        if let [only] = &publication.variants[..] {
            info!(
                "{}: built descriptor for time period {} (revision {rev}; {}): {} intro point(s) [{}]",
                self.frontend,
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
                self.frontend,
                publication.variants.len(),
                tp.interval_num(),
                reason.describe(),
                sizes.join("/")
            );
            for (v, listed) in publication.listed.iter().enumerate() {
                debug!(
                    "{}: time period {} variant {v}: [{}]",
                    self.frontend,
                    tp.interval_num(),
                    describe(listed)
                );
            }
        }
        if !publication.left_out.is_empty() {
            warn!(
                "{}: time period {}: {} backend(s) fit in no descriptor (clients use 20 intro points of each, one per relay, from {} HSDirs): {}",
                self.frontend,
                tp.interval_num(),
                publication.left_out.len(),
                publication.holders.len(),
                publication.left_out.join(", ")
            );
        }
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
                let (health, health_reason) = b.health.status();
                let (probes, probe_latency) = b.health.counts();
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
                    last_probe: b.health.last_probe(),
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
            last_fetch: self.last_fetch_wall,
            first_published: self.first_published,
            periods,
            instances,
            authorized_clients: self.engine.authorized_clients().map(<[_]>::len),
            counters: self.counters.clone(),
            fail_open: self.fail_open,
        };
        self.board.update(st);
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
