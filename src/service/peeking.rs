//! Peeking: asking an HSDir what it holds for our own address, and acting on the answer.
//!
//! We publish with a key others may hold too: C tor or Python Onionbalance before a move to
//! us, or another onionbalance with the same key and config on another machine (two
//! frontends, see `docs/two-frontends.md`). An HSDir keeps whichever descriptor of the
//! address has the highest revision counter, so what it holds may not be what we sent. We
//! look (a "peek": a descriptor fetch for our own blinded key, over a 3-hop circuit like any
//! fetch) in two cases:
//!
//! * **after a refusal** (HTTP 400): the HSDir may hold a counter at or above ours;
//! * **on watch**: every [`Timing::watch_interval`](super::Timing::watch_interval), one
//!   HSDir of each period whose HSDirs all hold our descriptor, in turn. Without it a
//!   frontend that is ahead would never learn that another one publishes, and an HSDir that
//!   lost our descriptor (restarted) would go without it until the next refresh.
//!
//! What it holds is verified (signed for our address) and read back with our key
//! ([`read_listing`]): its revision counter, its descriptor-signing key and what it lists.
//! Every frontend makes its own signing key for each period, so the key tells our
//! descriptor from a peer's even when both carry the same counter (built in the same
//! second) and list the same. Against what we sent there:
//!
//! | held                                     | finding                     | we do                                                                               |
//! |------------------------------------------|-----------------------------|-------------------------------------------------------------------------------------|
//! | our revision and signing key             | [`PeekFinding::Ours`]       | after a refusal: count it stored (an earlier attempt got through)                   |
//! | a revision at or above ours from another signer, our listing | [`PeekFinding::Equivalent`] | count it stored: it serves clients as ours would; our next counter goes above it   |
//! | a revision at or above ours, another or unreadable listing | [`PeekFinding::Outranked`] | check every backend again, then rebuild above it for that HSDir |
//! | a lower revision                         | [`PeekFinding::Below`]      | on watch: upload ours again (the HSDir lost it)                                     |
//! | one we have replaced since we asked      | [`PeekFinding::Superseded`] | nothing: the newer descriptor's upload settles it                                   |
//! | nothing                                  | [`PeekFinding::Missing`]    | on watch: upload ours again                                                         |
//!
//! A peer's descriptor is never a refusal to rebuild for when it lists the same; when it
//! lists something else, the peer may have seen a backend change we have not, so our
//! backends are fetched again before we overwrite it: the descriptor clients get does not go
//! back to an older set because one frontend lagged. Refusals a peer explains do not count
//! towards the refusal alarm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::NetDir;
use tor_rtcompat::{Runtime, SleepProviderExt as _};
use tracing::warn;

use super::publish::{Settled, UploadJob, UploadVerdict};
use super::{Done, InFlight, ServiceRunner};
use crate::descriptor::{read_listing, BuiltDescriptor, PublishedDescriptor};
use crate::hsdir::HsDir;
use crate::net::DirTransport;

/// Why we look at what an HSDir holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeekWhy {
    /// It refused our descriptor.
    Refused,
    /// Its turn to be watched: it should hold ours.
    Watch,
}

/// A look at what an HSDir holds for our address.
#[derive(Debug, Clone)]
pub(super) struct PeekJob {
    /// The period.
    pub(super) period: TimePeriod,
    /// The HSDir.
    pub(super) hsdir: HsDir,
    /// The descriptor we sent there (refused, or held as far as we know).
    pub(super) ours: Arc<BuiltDescriptor>,
    /// Why we look.
    pub(super) why: PeekWhy,
}

/// What a peek found, against the descriptor we sent there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PeekFinding {
    /// The HSDir holds the descriptor we sent: our revision, signed with our key (an
    /// earlier attempt got through).
    Ours,
    /// It holds another publisher's descriptor of our address with this revision, at or
    /// above ours, listing what ours lists.
    Equivalent(RevisionCounter),
    /// It holds another publisher's descriptor with this revision, at or above ours, listing
    /// something else (or nothing our key can read).
    Outranked(RevisionCounter),
    /// It holds a lower revision than the descriptor we looked for.
    Below(RevisionCounter),
    /// It holds this revision: at or above the descriptor we looked for, below the one we
    /// built since and send there now (a build while we looked). That upload settles it.
    Superseded(RevisionCounter),
    /// It holds nothing for our address.
    Missing,
    /// It could not be asked, or its answer is not a descriptor of ours: why.
    Unknown(String),
}

impl PeekFinding {
    /// What `held` (the HSDir's answer) means: against `looked_for`, the descriptor the
    /// HSDir should have held when we asked, and `current`, the one it should hold now
    /// (another, newer one when we built while the peek was under way).
    ///
    /// The HSDir answered before our newer upload reached it, so "lower" is judged against
    /// what we asked about: judged against the newer one, our own earlier descriptor would
    /// look like a lost one.
    pub(super) fn of(
        looked_for: &BuiltDescriptor,
        current: &BuiltDescriptor,
        held: &Result<Option<PublishedDescriptor>, String>,
    ) -> Self {
        let sent = u64::from(current.revision);
        match held {
            Err(why) => PeekFinding::Unknown(why.clone()),
            Ok(None) => PeekFinding::Missing,
            Ok(Some(d)) => {
                let rev = u64::from(d.revision);
                let same = d.listing == Some(current.listing);
                if rev < u64::from(looked_for.revision) {
                    PeekFinding::Below(d.revision)
                } else if rev < sent {
                    PeekFinding::Superseded(d.revision)
                } else if rev == sent && d.signing_key == current.signing_key {
                    // Never two texts of ours with one revision: each build has a new one.
                    PeekFinding::Ours
                } else if same {
                    PeekFinding::Equivalent(d.revision)
                } else {
                    // Equal counters with other contents: another frontend built in the same
                    // second. Ours cannot replace it without a higher counter either.
                    PeekFinding::Outranked(d.revision)
                }
            }
        }
    }

    /// The revision another publisher left there, if this finding shows one.
    pub(super) fn other_publisher(&self) -> Option<(RevisionCounter, bool)> {
        match self {
            PeekFinding::Equivalent(r) => Some((*r, true)),
            PeekFinding::Outranked(r) => Some((*r, false)),
            _ => None,
        }
    }
}

/// Peeks wanted and in flight, and the watch's turns.
#[derive(Debug, Default)]
pub(super) struct Peeks {
    /// Asked for, not started yet.
    wanted: Vec<PeekJob>,
    /// Started: (period, HSDir).
    in_flight: Vec<(TimePeriod, RsaIdentity)>,
    /// Per period we publish for, its watch.
    watch: HashMap<TimePeriod, WatchTimer>,
}

/// The watch of one period.
#[derive(Debug, Default, Clone, Copy)]
struct WatchTimer {
    /// When the next look is due; `None` while some HSDir does not hold our descriptor.
    due: Option<Instant>,
    /// Whose turn it is: an index into the period's HSDirs, sorted by identity.
    turn: usize,
}

impl Peeks {
    /// Asks for a peek, unless one at that HSDir for that period is already wanted or
    /// under way.
    pub(super) fn want(&mut self, job: PeekJob) {
        let key = (job.period, job.hsdir.id);
        if self.in_flight.contains(&key)
            || self.wanted.iter().any(|w| (w.period, w.hsdir.id) == key)
        {
            return;
        }
        self.wanted.push(job);
    }

    /// When the next watch is due, if any period is watched.
    pub(super) fn next_watch(&self) -> Option<Instant> {
        self.watch.values().filter_map(|w| w.due).min()
    }
}

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// Keeps the watch's timers: a period is watched while every one of its HSDirs holds our
    /// descriptor, the first time one interval after that began; due watches become peeks.
    /// The turns go on where they were when a period settles again, so that every HSDir is
    /// looked at in turn even when watches lead to rebuilds.
    pub(super) fn plan_watches(&mut self, now: Instant) {
        let interval = self.timing.watch_interval;
        let periods = self.publish.time_periods();
        let watch = &mut self.peeks.watch;
        watch.retain(|tp, _| periods.contains(tp));
        let settled = self.publish.settled();
        let mut due_now = Vec::new();
        for (tp, timer) in watch.iter_mut() {
            if !settled.iter().any(|s| s.period == *tp) {
                timer.due = None;
            }
        }
        for Settled {
            period: tp,
            holders,
        } in settled
        {
            let timer = watch.entry(tp).or_default();
            let due = *timer.due.get_or_insert(now + interval);
            if due > now || holders.is_empty() {
                continue;
            }
            let (hsdir, ours) = holders[timer.turn % holders.len()].clone();
            timer.turn += 1;
            timer.due = Some(now + interval);
            due_now.push(PeekJob {
                period: tp,
                hsdir,
                ours,
                why: PeekWhy::Watch,
            });
        }
        for job in due_now {
            self.peeks.want(job);
        }
    }

    /// Starts the peeks that are wanted.
    pub(super) fn launch_peeks(&mut self, netdir: &Arc<NetDir>, in_flight: &mut InFlight) {
        for job in std::mem::take(&mut self.peeks.wanted) {
            let keys = match self.engine.period_keys_for(job.period) {
                Ok(k) => k,
                Err(_) => continue, // the period's keys failed: logged where they are derived
            };
            self.peeks.in_flight.push((job.period, job.hsdir.id));
            let (runtime, transport, netdir) =
                (self.runtime.clone(), self.transport.clone(), netdir.clone());
            let (timeout, max_len) = (self.timing.fetch_attempt_timeout, self.engine.max_len());
            let blind_id = keys.blind_id();
            in_flight.push(Box::pin(async move {
                let attempt = transport.fetch(&netdir, job.hsdir.target.clone(), blind_id, max_len);
                let held = match runtime.timeout(timeout, attempt).await {
                    Ok(Ok(Some(text))) => read_listing(&keys, &text, max_len)
                        .map(Some)
                        .map_err(|e| e.to_string()),
                    Ok(Ok(None)) => Ok(None),
                    Ok(Err(e)) => Err(crate::error::report(&e)),
                    Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
                };
                Done::Peek { job, held }
            }));
        }
    }

    /// Takes in a finished peek: what the HSDir holds for our address (`None`: nothing), or
    /// why we cannot tell.
    pub(super) fn on_peeked(
        &mut self,
        job: PeekJob,
        held: Result<Option<PublishedDescriptor>, String>,
    ) {
        self.peeks
            .in_flight
            .retain(|p| *p != (job.period, job.hsdir.id));
        // A build may have given this HSDir a newer descriptor while we looked (and it may
        // hold that one already): what it holds is judged against both, see
        // `PeekFinding::of`. From here on `job.ours` is the one it should hold now.
        let mut job = job;
        let looked_for = job.ours.clone();
        if let Some(now_assigned) = self.publish.assigned_to(job.period, &job.hsdir.id) {
            job.ours = now_assigned;
        }
        let finding = PeekFinding::of(&looked_for, &job.ours, &held);
        let (now, wall) = (self.runtime.now(), self.runtime.wallclock());
        let tp = job.period;
        let counts_as_ours = matches!(
            (&finding, job.why),
            (PeekFinding::Ours, PeekWhy::Refused) | (PeekFinding::Equivalent(_), _)
        );
        if counts_as_ours {
            let stored = UploadJob {
                period: tp,
                hsdir: job.hsdir.clone(),
                descriptor: job.ours.clone(),
            };
            self.publish
                .record(&stored, UploadVerdict::Accepted, now, wall, &mut self.rng);
        }
        if let Some((held, _)) = finding.other_publisher() {
            // Our next descriptor for the period goes above theirs, even after a restart.
            self.engine.raise_revision_floor(tp, held);
            if let Err(e) = self.store.record(tp, held) {
                warn!("{}: {e}", self.frontend);
            }
        }
        match (&finding, job.why) {
            (PeekFinding::Outranked(held), why) => {
                self.publish.hsdir_holds(tp, &job.hsdir.id, *held);
                if why == PeekWhy::Refused {
                    self.publish
                        .refusal_explained(tp, &job.hsdir.id, job.ours.revision);
                }
                // What we would send lists something else: the rebuild above it waits for
                // one more look at every backend, in case the other frontend saw a change
                // first.
                self.publish.needs_rebuild(tp, &job.hsdir.id);
                for b in &mut self.backends {
                    b.recheck(tp, wall);
                }
            }
            (PeekFinding::Below(_) | PeekFinding::Missing, PeekWhy::Watch) => {
                self.publish.hsdir_lost(tp, &job.hsdir.id);
            }
            _ => {}
        }
        self.report.peeked(&job, &finding, wall);
    }

    /// Whether a peek after a refusal for period `tp` is in flight (its refusal's rebuild
    /// waits for it).
    pub(super) fn peeking(&self, tp: TimePeriod) -> bool {
        self.peeks.in_flight.iter().any(|(p, _)| *p == tp)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;
    use tor_protover::Protocols;

    use super::*;
    use crate::descriptor::build::{build_descriptor, BuildRequest};
    use crate::descriptor::synthetic::{periods_around, SyntheticBackend};
    use crate::descriptor::{FrontendPeriodKeys, DEFAULT_MAX_DESCRIPTOR_LEN};

    /// Each finding from real descriptors of one address, read back as a peek reads them;
    /// above all, a peer's descriptor with our very counter and listing (both built in the
    /// same second from the same backends) is told from ours by its signing key.
    #[test]
    fn a_peer_with_our_counter_and_listing_is_seen_as_a_peer() {
        let mut r = StdRng::seed_from_u64(23);
        let now = std::time::SystemTime::now();
        let tp = periods_around(now)[0].time_period;
        let frontend = SyntheticBackend::generate(&mut r, 0).key;
        let ours = FrontendPeriodKeys::derive(&frontend, tp).expect("keys");
        let peer = FrontendPeriodKeys::derive(&frontend, tp).expect("keys");
        let ipts = SyntheticBackend::generate(&mut r, 3).intro_points;
        let others = SyntheticBackend::generate(&mut r, 3).intro_points;
        let mut build = |keys: &FrontendPeriodKeys, intro_points, revision: u64| {
            let req = BuildRequest {
                intro_points,
                revision: revision.into(),
                now,
                max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
                flow_control: None,
                protocols: Protocols::default(),
                auth_clients: None,
            };
            build_descriptor(keys, &req, &mut r).expect("build")
        };
        let sent = build(&ours, &ipts, 100);
        let held = |d: &BuiltDescriptor| -> Result<Option<PublishedDescriptor>, String> {
            Ok(Some(
                read_listing(&ours, &d.text, DEFAULT_MAX_DESCRIPTOR_LEN).expect("read"),
            ))
        };
        let finding = |d: &BuiltDescriptor| PeekFinding::of(&sent, &sent, &held(d));
        assert_eq!(finding(&sent), PeekFinding::Ours);
        let twin = build(&peer, &ipts, 100);
        assert_eq!(twin.listing, sent.listing);
        assert_eq!(finding(&twin), PeekFinding::Equivalent(100.into()));
        assert_eq!(finding(&twin).other_publisher(), Some((100.into(), true)));
        assert_eq!(
            finding(&build(&peer, &ipts, 101)),
            PeekFinding::Equivalent(101.into())
        );
        assert_eq!(
            finding(&build(&peer, &others, 100)),
            PeekFinding::Outranked(100.into())
        );
        assert_eq!(
            finding(&build(&peer, &ipts, 99)),
            PeekFinding::Below(99.into())
        );
        // A build while we looked: the HSDir answered with the descriptor we asked about,
        // before the newer one reached it. Not lost: superseded. Below what we asked
        // about, it is lost.
        let newer = build(&ours, &others, 102);
        let since = |d: &BuiltDescriptor| PeekFinding::of(&sent, &newer, &held(d));
        assert_eq!(since(&sent), PeekFinding::Superseded(100.into()));
        assert_eq!(since(&newer), PeekFinding::Ours);
        assert_eq!(
            since(&build(&ours, &ipts, 99)),
            PeekFinding::Below(99.into())
        );
        assert_eq!(
            PeekFinding::of(&sent, &sent, &Ok(None)),
            PeekFinding::Missing
        );
        assert_eq!(
            PeekFinding::of(&sent, &sent, &Err("timeout".into())),
            PeekFinding::Unknown("timeout".into())
        );
    }
}
