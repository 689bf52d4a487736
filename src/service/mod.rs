//! One frontend service, kept published: the runner that fetches, builds and uploads.
//!
//! # When do we fetch?
//!
//! At start; then every [`Timing::fetch_interval`]; sooner while some backend has no usable
//! descriptor ([`Timing::fetch_retry`], doubling each round up to the regular interval, so a
//! backend that is down for good does not keep us fetching every few seconds); and on every
//! new consensus (at most once per
//! [`Timing::min_fetch_gap`]), since a new consensus can move a backend's descriptor to other
//! HSDirs or start a new time period.
//!
//! # When do we build a new descriptor?
//!
//! When the backends' intro points changed (a backend republished, appeared, expired or
//! vanished), when a time period appears that we have no descriptor for, when an HSDir
//! rejected our descriptor (its revision counter must go up), and every 60–120 minutes
//! (random, as C tor and Arti) so that descriptors never reach the end of their 3-hour HSDir
//! lifetime. Never with zero intro points: then the last published descriptor stays.
//!
//! # When do we upload?
//!
//! Whenever an HSDir responsible for a period does not hold the descriptor assigned to it
//! (see [`publish`]): after a build, when a new consensus brings a new HSDir into the ring,
//! and, after a failure, when its backoff ([`backoff`]) allows.
//!
//! ```text
//!            ┌──────────── new consensus / timer / stop ─────────────┐
//!            ▼                                                        │
//!   step: [fetch if due] → [rings if consensus changed] → [build if needed] → [upload due] → wait
//! ```
//!
//! The runner is generic over the Arti [`Runtime`] (time, sleeping) and the [`DirTransport`]
//! (the network), so its scheduling is tested in simulated time.

pub mod backoff;
pub mod publish;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::channel::oneshot;
use futures::{FutureExt as _, StreamExt as _};
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_netdir::{DirEvent, NetDir, NetDirProvider};
use tor_rtcompat::{Runtime, SleepProviderExt as _};
use tracing::{debug, info, warn};

use crate::config::ServiceConfig;
use crate::descriptor::{BuildError, Engine, IntakeOutcome};
use crate::net::{DirTransport, TransferError};
use crate::ring::{self, HsDir};
use crate::status::{Counters, InstanceStatus, PeriodStatus, ServicePhase, ServiceStatus};
use publish::{PublishState, UploadFailure, UploadJob, UploadOutcome};

/// The timing knobs of a service. The defaults suit the public Tor network.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Regular interval between fetches of every backend's descriptor (default 5 min).
    pub fetch_interval: Duration,
    /// First interval while some backend has no usable descriptor (default 15 s); it doubles
    /// with each such round, up to `fetch_interval`.
    pub fetch_retry: Duration,
    /// Least time between two fetch rounds triggered by new consensuses (default 10 s).
    pub min_fetch_gap: Duration,
    /// Limit for one fetch attempt at one HSDir, circuit included (default 30 s).
    pub fetch_attempt_timeout: Duration,
    /// Limit for one upload attempt at one HSDir, circuit included (default 60 s).
    pub upload_attempt_timeout: Duration,
    /// Shortest interval between periodic republications (default 60 min).
    pub republish_min: Duration,
    /// Longest interval between periodic republications (default 120 min).
    pub republish_max: Duration,
    /// A backend whose revision counter has not advanced for this long is considered gone:
    /// live C tor services republish every 60–120 min (default 3 h 10 min).
    pub stale_after: Duration,
    /// Backends fetched at the same time (default 8).
    pub max_concurrent_fetches: usize,
    /// Uploads in flight at the same time (default 16).
    pub max_concurrent_uploads: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            fetch_interval: Duration::from_secs(5 * 60),
            fetch_retry: Duration::from_secs(15),
            min_fetch_gap: Duration::from_secs(10),
            fetch_attempt_timeout: Duration::from_secs(30),
            upload_attempt_timeout: Duration::from_secs(60),
            republish_min: Duration::from_secs(60 * 60),
            republish_max: Duration::from_secs(120 * 60),
            stale_after: Duration::from_secs(190 * 60),
            max_concurrent_fetches: 8,
            max_concurrent_uploads: 16,
        }
    }
}

/// Instructions to a running service.
#[derive(Debug, Clone)]
pub enum ServiceCommand {
    /// The config was reloaded: this is the new list of instances.
    SetInstances(Vec<crate::config::InstanceConfig>),
}

/// What we remember of one backend beyond the engine's snapshot.
#[derive(Debug, Clone, Default)]
struct BackendWatch {
    /// The revision counter last seen, and when it was first seen.
    revision_seen: Option<(RevisionCounter, SystemTime)>,
    /// The last fetch problem (all HSDirs failed), if the last fetch failed.
    fetch_error: Option<String>,
    /// When its set of intro points last changed.
    intro_set_modified: Option<SystemTime>,
}

/// The outcome of fetching one backend.
struct Fetched {
    /// Backend index.
    idx: usize,
    /// The period fetched for.
    period: TimePeriod,
    /// The descriptor, if some HSDir had it.
    text: Option<String>,
    /// HSDirs that answered 404.
    not_found: usize,
    /// Other failures, one line each.
    errors: Vec<String>,
}

/// Runs one frontend service until told to stop.
pub struct ServiceRunner<R: Runtime, T: DirTransport> {
    /// Time and sleeping.
    runtime: R,
    /// The network.
    transport: Arc<T>,
    /// Consensus documents.
    netdirs: Arc<dyn NetDirProvider>,
    /// Instance names, in backend order.
    names: Vec<String>,
    /// Descriptor state.
    engine: Engine,
    /// Upload state.
    publish: PublishState,
    /// Timing knobs.
    timing: Timing,
    /// Randomness for selection, ring order, jitter and keys.
    rng: StdRng,
    /// Where readers find our status.
    status: Arc<Mutex<ServiceStatus>>,
    /// Per backend extras.
    watch: Vec<BackendWatch>,
    /// Next regular fetch.
    next_fetch: Instant,
    /// Last fetch round's start.
    last_fetch: Option<Instant>,
    /// Next periodic republication.
    next_republish: Option<Instant>,
    /// An HSDir rejected our descriptor: build a new one.
    rebuild_requested: bool,
    /// `valid_after` of the consensus the rings were computed from.
    rings_from: Option<SystemTime>,
    /// Phase for the status.
    phase: ServicePhase,
    /// When an HSDir first accepted a descriptor of ours.
    first_published: Option<SystemTime>,
    /// Last fetch (wall clock).
    last_fetch_wall: Option<SystemTime>,
    /// Event counts.
    counters: Counters,
    /// Consecutive fetch rounds that left some backend without a usable descriptor.
    missing_rounds: u32,
}

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// Prepares a runner for `service`.
    pub fn new(
        runtime: R,
        transport: Arc<T>,
        netdirs: Arc<dyn NetDirProvider>,
        service: &ServiceConfig,
        timing: Timing,
        status: Arc<Mutex<ServiceStatus>>,
    ) -> Self {
        let now = runtime.now();
        let engine = Engine::new(
            service.key.clone(),
            service.instances.iter().map(|i| i.address),
        );
        let names = service.instances.iter().map(|i| i.name.clone()).collect();
        ServiceRunner {
            watch: vec![BackendWatch::default(); service.instances.len()],
            runtime,
            transport,
            netdirs,
            names,
            engine,
            publish: PublishState::default(),
            timing,
            rng: StdRng::from_rng(&mut rand::rng()),
            status,
            next_fetch: now,
            last_fetch: None,
            next_republish: None,
            rebuild_requested: false,
            rings_from: None,
            phase: ServicePhase::WaitingForDirectory,
            first_published: None,
            last_fetch_wall: None,
            counters: Counters::default(),
            missing_rounds: 0,
        }
    }

    /// Uses `rng` instead of a randomly seeded one (for reproducible tests).
    pub fn with_rng(mut self, rng: StdRng) -> Self {
        self.rng = rng;
        self
    }

    /// The frontend address, for logs.
    fn frontend(&self) -> String {
        self.engine.frontend().address().to_string()
    }

    /// Runs until `stop` fires (or its sender is dropped), obeying `commands`.
    pub async fn run(
        mut self,
        stop: oneshot::Receiver<()>,
        commands: futures::channel::mpsc::UnboundedReceiver<ServiceCommand>,
    ) {
        let mut stop = stop.fuse();
        let mut commands = commands.fuse();
        let mut events = self.netdirs.events().fuse();
        info!(
            "{}: service started with {} backend(s)",
            self.frontend(),
            self.names.len()
        );
        loop {
            {
                let step = self.step().fuse();
                futures::pin_mut!(step);
                futures::select_biased! {
                    _ = stop => break,
                    () = step => {}
                }
            }
            let wait = self
                .next_wakeup()
                .saturating_duration_since(self.runtime.now());
            debug!("{}: sleeping {:?}", self.frontend(), wait);
            let sleep = self.runtime.sleep(wait).fuse();
            futures::pin_mut!(sleep);
            futures::select_biased! {
                _ = stop => break,
                ev = events.next() => match ev {
                    Some(DirEvent::NewConsensus) => self.on_new_consensus(),
                    Some(_) => {}
                    // The directory manager went away; keep going on timers alone.
                    None => events = futures::stream::pending().boxed().fuse(),
                },
                cmd = commands.next() => match cmd {
                    Some(ServiceCommand::SetInstances(instances)) => self.set_instances(instances),
                    None => commands = futures::channel::mpsc::unbounded().1.fuse(),
                },
                () = sleep => {}
            }
        }
        self.phase = ServicePhase::Stopped;
        self.update_status();
        info!("{}: service stopped", self.frontend());
    }

    /// Takes a new list of instances: known ones keep their state, new ones are fetched now.
    fn set_instances(&mut self, instances: Vec<crate::config::InstanceConfig>) {
        let addresses: Vec<_> = instances.iter().map(|i| i.address).collect();
        let old_watch: HashMap<_, _> = self
            .engine
            .backends()
            .iter()
            .map(|b| b.address)
            .zip(std::mem::take(&mut self.watch))
            .collect();
        let added = addresses.iter().any(|a| !old_watch.contains_key(a));
        let mut old_watch = old_watch;
        self.watch = addresses
            .iter()
            .map(|a| old_watch.remove(a).unwrap_or_default())
            .collect();
        self.engine.set_backends(&addresses);
        self.names = instances.into_iter().map(|i| i.name).collect();
        info!(
            "{}: config reloaded: {} backend(s)",
            self.frontend(),
            self.names.len()
        );
        if added {
            self.next_fetch = self.runtime.now();
        }
        self.update_status();
    }

    /// A new consensus: recompute the rings, and refetch soon.
    fn on_new_consensus(&mut self) {
        let now = self.runtime.now();
        let earliest = self
            .last_fetch
            .map_or(now, |t| t + self.timing.min_fetch_gap);
        self.next_fetch = self.next_fetch.min(earliest.max(now));
    }

    /// When the runner has something to do next.
    fn next_wakeup(&self) -> Instant {
        let now = self.runtime.now();
        let mut t = self.next_fetch;
        if let Some(r) = self.publish.next_retry() {
            t = t.min(r);
        }
        if let Some(r) = self.next_republish {
            t = t.min(r);
        }
        if self.rebuild_requested {
            // Wait a second: the OPE counter is per second.
            t = t.min(now + Duration::from_secs(1));
        }
        // A backend's descriptor expiring changes the selection.
        let wall = self.runtime.wallclock();
        for s in self
            .engine
            .backends()
            .iter()
            .filter_map(|b| b.snapshot.as_ref())
        {
            if let Some(until) = s.valid_until {
                let left = until.duration_since(wall).unwrap_or_default();
                t = t.min(now + left + Duration::from_secs(1));
            }
        }
        t.max(now)
    }

    /// One round of work: fetch if due, follow the consensus, build if needed, upload.
    async fn step(&mut self) {
        let netdir = match self.netdirs.timely_netdir() {
            Ok(nd) => nd,
            Err(e) => {
                debug!("{}: no usable consensus yet: {e}", self.frontend());
                self.phase = ServicePhase::WaitingForDirectory;
                self.update_status();
                return;
            }
        };
        if self.phase == ServicePhase::WaitingForDirectory {
            self.phase = ServicePhase::Starting;
        }
        if self.runtime.now() >= self.next_fetch {
            self.fetch_all(&netdir).await;
        }
        self.follow_consensus(&netdir);
        self.build_if_needed();
        self.upload_due(&netdir).await;
        self.update_status();
    }

    /// Fetches every backend's descriptor for the current period and takes them in.
    async fn fetch_all(&mut self, netdir: &Arc<NetDir>) {
        let started = self.runtime.now();
        self.last_fetch = Some(started);
        let wall = self.runtime.wallclock();
        self.last_fetch_wall = Some(wall);
        let period = netdir.hs_time_period();
        let max_len = usize::try_from(netdir.params().hsdir_max_desc_size.get())
            .unwrap_or(crate::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN);
        self.engine.set_max_len(max_len);

        let mut jobs = Vec::new();
        for idx in 0..self.names.len() {
            let blind_id = match self.engine.backend_keys(idx, period) {
                Some(Ok(k)) => k.blind_id(),
                Some(Err(e)) => {
                    warn!("{}: backend {}: {e}", self.frontend(), self.names[idx]);
                    continue;
                }
                None => continue,
            };
            match ring::fetch_hsdirs(netdir, blind_id, period, &mut self.rng) {
                Ok(hsdirs) => jobs.push((idx, blind_id, hsdirs)),
                Err(e) => warn!("{}: backend {}: {e}", self.frontend(), self.names[idx]),
            }
        }
        let transport = &self.transport;
        let runtime = &self.runtime;
        let timeout = self.timing.fetch_attempt_timeout;
        let results: Vec<Fetched> = futures::stream::iter(jobs)
            .map(|(idx, blind_id, hsdirs)| async move {
                let mut out = Fetched {
                    idx,
                    period,
                    text: None,
                    not_found: 0,
                    errors: Vec::new(),
                };
                for h in hsdirs {
                    let attempt = transport.fetch(netdir, h.target.clone(), blind_id, max_len);
                    match runtime.timeout(timeout, attempt).await {
                        Ok(Ok(Some(text))) => {
                            out.text = Some(text);
                            break;
                        }
                        Ok(Ok(None)) => out.not_found += 1,
                        Ok(Err(e)) => out.errors.push(format!("{}: {e}", h.id)),
                        Err(_) => out.errors.push(format!(
                            "{}: {}",
                            h.id,
                            TransferError::Timeout(timeout)
                        )),
                    }
                }
                out
            })
            .buffer_unordered(self.timing.max_concurrent_fetches.max(1))
            .collect()
            .await;
        self.take_in(results, wall);
        let expired = self.engine.expire(self.runtime.wallclock());
        if expired > 0 {
            warn!(
                "{}: {expired} backend descriptor(s) expired: left the selection",
                self.frontend()
            );
        }
        let missing = self
            .engine
            .backends()
            .iter()
            .any(|b| b.snapshot.as_ref().is_none_or(|s| !s.is_valid_at(wall)));
        let interval = if missing {
            let factor = 1u32 << self.missing_rounds.min(8);
            self.missing_rounds = self.missing_rounds.saturating_add(1);
            self.timing
                .fetch_retry
                .saturating_mul(factor)
                .min(self.timing.fetch_interval)
        } else {
            self.missing_rounds = 0;
            self.timing.fetch_interval
        };
        self.next_fetch = started + interval;
        debug!(
            "{}: fetch round took {:?}",
            self.frontend(),
            self.runtime.now().saturating_duration_since(started)
        );
    }

    /// Feeds fetch results to the engine and logs what changed.
    fn take_in(&mut self, results: Vec<Fetched>, wall: SystemTime) {
        let front = self.frontend();
        let mut items = Vec::new();
        for f in results {
            let name = self.names[f.idx].clone();
            match f.text {
                Some(text) => {
                    self.counters.fetches_ok += 1;
                    self.watch[f.idx].fetch_error = None;
                    items.push((f.idx, f.period, Arc::<str>::from(text)));
                }
                None if f.errors.is_empty() && f.not_found > 0 => {
                    *self
                        .counters
                        .fetch_failures
                        .entry("not-found".into())
                        .or_default() += 1;
                    // Every responsible HSDir answered and none has it: the backend is not
                    // publishing (stopped, or not yet started).
                    let msg = format!(
                        "none of {} HSDirs has its descriptor (is it running?)",
                        f.not_found
                    );
                    if self.engine.forget(f.idx) {
                        warn!("{front}: backend {name}: {msg}: removed from the selection");
                    } else {
                        info!("{front}: backend {name}: {msg}");
                    }
                    self.watch[f.idx].fetch_error = Some(msg);
                }
                None => {
                    *self
                        .counters
                        .fetch_failures
                        .entry("error".into())
                        .or_default() += 1;
                    let msg = format!(
                        "fetch failed ({} not found; {})",
                        f.not_found,
                        f.errors.join("; ")
                    );
                    warn!(
                        "{front}: backend {name}: {msg}; keeping its last descriptor while valid"
                    );
                    self.watch[f.idx].fetch_error = Some(msg);
                }
            }
        }
        let idxs: Vec<usize> = items.iter().map(|(i, _, _)| *i).collect();
        let before: Vec<Option<Vec<[u8; 32]>>> = idxs.iter().map(|i| self.intro_set(*i)).collect();
        let outcomes = self.engine.take_in_many(items, wall);
        for (k, idx) in idxs.iter().enumerate() {
            if self.intro_set(*idx) != before[k] {
                self.watch[*idx].intro_set_modified = Some(wall);
            }
        }
        for (idx, outcome) in idxs.into_iter().zip(outcomes) {
            let name = &self.names[idx];
            match outcome {
                Some(Ok(IntakeOutcome::Updated { revision })) => {
                    let n = self.engine.backends()[idx]
                        .snapshot
                        .as_ref()
                        .map_or(0, |s| s.intro_points.len());
                    info!(
                        "{front}: backend {name}: new descriptor, revision {}, {n} intro points",
                        u64::from(revision)
                    );
                    self.watch[idx].revision_seen = Some((revision, wall));
                }
                Some(Ok(IntakeOutcome::Unchanged)) => debug!("{front}: backend {name}: unchanged"),
                Some(Ok(IntakeOutcome::Older { revision })) => {
                    debug!(
                        "{front}: backend {name}: an HSDir served an older revision {}",
                        u64::from(revision)
                    )
                }
                Some(Err(e)) => {
                    *self
                        .counters
                        .intake_rejections
                        .entry(e.kind().to_owned())
                        .or_default() += 1;
                    warn!("{front}: backend {name}: descriptor rejected: {e}");
                }
                None => {}
            }
        }
        // A backend whose revision has not moved for too long is no longer republishing.
        for idx in 0..self.watch.len() {
            if let Some((rev, since)) = self.watch[idx].revision_seen {
                let age = wall.duration_since(since).unwrap_or_default();
                if age > self.timing.stale_after && self.engine.forget(idx) {
                    warn!(
                        "{front}: backend {}: revision {} unchanged for {}: considered gone, removed from the selection",
                        self.names[idx],
                        u64::from(rev),
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    );
                    self.watch[idx].revision_seen = None;
                }
            }
        }
    }

    /// The session keys of backend `idx`'s intro points, sorted (its "intro set").
    fn intro_set(&self, idx: usize) -> Option<Vec<[u8; 32]>> {
        let snap = self.engine.backends().get(idx)?.snapshot.as_ref()?;
        let mut v: Vec<[u8; 32]> = snap
            .intro_points
            .iter()
            .map(|i| *i.ipt_sid_key().as_bytes())
            .collect();
        v.sort_unstable();
        Some(v)
    }

    /// Recomputes the periods and HSDir rings when the consensus changed.
    fn follow_consensus(&mut self, netdir: &NetDir) {
        let valid_after = netdir.lifetime().valid_after();
        if self.rings_from == Some(valid_after) {
            return;
        }
        let mut rings = Vec::new();
        for p in ring::publish_periods(netdir) {
            let blind_id = match self.engine.frontend_blind_id(p.time_period) {
                Ok(id) => id,
                Err(e) => {
                    warn!("{}: {e}", self.frontend());
                    continue;
                }
            };
            match ring::upload_hsdirs(netdir, blind_id, p.time_period) {
                Ok(h) => rings.push((p, h)),
                Err(e) => warn!("{}: {e}", self.frontend()),
            }
        }
        let hsdirs: usize = rings.iter().map(|(_, h): &(_, Vec<HsDir>)| h.len()).sum();
        if self.publish.set_rings(rings) {
            debug!(
                "{}: new time period(s); {hsdirs} HSDir slots",
                self.frontend()
            );
        }
        self.rings_from = Some(valid_after);
    }

    /// Builds new descriptors if anything calls for it.
    fn build_if_needed(&mut self) {
        let now = self.runtime.now();
        let republish_due = self.next_republish.is_some_and(|t| t <= now);
        let needed = self.engine.needs_build()
            || self.publish.missing_descriptor()
            || self.rebuild_requested
            || republish_due;
        if !needed {
            return;
        }
        let periods = self.publish.publish_periods();
        if periods.is_empty() {
            return;
        }
        let wall = self.runtime.wallclock();
        match self.engine.build(&periods, wall, &mut self.rng) {
            Ok(built) => {
                let contributors = self.contributors(wall);
                for d in &built {
                    info!(
                        "{}: built descriptor for time period {} (revision {}): {} intro point(s) from {}",
                        self.frontend(),
                        d.period.interval_num(),
                        u64::from(d.revision),
                        d.intro_points,
                        contributors
                    );
                }
                self.counters.builds += built.len() as u64;
                self.publish.install(built, wall);
                self.rebuild_requested = false;
                let delay = publish::republish_delay(
                    self.timing.republish_min,
                    self.timing.republish_max,
                    &mut self.rng,
                );
                self.next_republish = Some(now + delay);
                self.phase = ServicePhase::Publishing;
            }
            Err(BuildError::NoIntroPoints) => {
                if self.phase != ServicePhase::NoBackends {
                    warn!(
                        "{}: no backend has a valid descriptor: not publishing (descriptors already on the HSDirs stay until they expire)",
                        self.frontend()
                    );
                }
                self.phase = ServicePhase::NoBackends;
            }
            Err(e) => {
                warn!("{}: cannot build a descriptor: {e}", self.frontend());
            }
        }
    }

    /// "node1, node2" for the backends currently usable.
    fn contributors(&self, wall: SystemTime) -> String {
        let names: Vec<&str> = self
            .engine
            .backends()
            .iter()
            .zip(&self.names)
            .filter(|(b, _)| b.snapshot.as_ref().is_some_and(|s| s.is_valid_at(wall)))
            .map(|(_, n)| n.as_str())
            .collect();
        format!("{} backend(s) [{}]", names.len(), names.join(", "))
    }

    /// Uploads to every HSDir that is due, concurrently, and records the results.
    async fn upload_due(&mut self, netdir: &Arc<NetDir>) {
        let now = self.runtime.now();
        let jobs = self.publish.due(now);
        if jobs.is_empty() {
            return;
        }
        let transport = &self.transport;
        let runtime = &self.runtime;
        let timeout = self.timing.upload_attempt_timeout;
        let outcomes: Vec<UploadOutcome> = futures::stream::iter(jobs)
            .map(|job: UploadJob| async move {
                let attempt = transport.upload(
                    netdir,
                    job.hsdir.target.clone(),
                    job.descriptor.text.clone(),
                );
                let result = match runtime.timeout(timeout, attempt).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(TransferError::Timeout(timeout)),
                }
                .map_err(|e| UploadFailure {
                    message: e.to_string(),
                    kind: e.kind(),
                    rejected: e.is_rejected_upload(),
                });
                UploadOutcome { job, result }
            })
            .buffer_unordered(self.timing.max_concurrent_uploads.max(1))
            .collect()
            .await;
        let wall = self.runtime.wallclock();
        let after = self.runtime.now();
        if outcomes.iter().any(|o| o.result.is_ok()) && self.first_published.is_none() {
            self.first_published = Some(wall);
        }
        for o in &outcomes {
            match &o.result {
                Ok(()) => self.counters.uploads_ok += 1,
                Err(f) => {
                    *self
                        .counters
                        .upload_failures
                        .entry(f.kind.to_owned())
                        .or_default() += 1;
                    debug!(
                        "{}: upload to {} failed: {}",
                        self.frontend(),
                        o.job.hsdir.id,
                        f.message
                    );
                }
            }
        }
        let mut per_period: HashMap<u64, (usize, usize, u64)> = HashMap::new();
        for o in &outcomes {
            let e = per_period.entry(o.job.period.interval_num()).or_insert((
                0,
                0,
                u64::from(o.job.descriptor.revision),
            ));
            if o.result.is_ok() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        if self.publish.record(&outcomes, after, wall, &mut self.rng) {
            warn!(
                "{}: an HSDir rejected our descriptor's revision counter: building a new one",
                self.frontend()
            );
            self.rebuild_requested = true;
        }
        for st in self.publish.periods() {
            let tp = st.period.time_period.interval_num();
            if let Some((ok, failed, rev)) = per_period.get(&tp) {
                let total = st.hsdirs.len();
                let log = format!(
                    "{}: time period {tp}, revision {rev}: {ok} upload(s) accepted, {failed} failed; {}/{total} HSDirs hold the current descriptor",
                    self.frontend(),
                    st.accepted()
                );
                if *failed > 0 {
                    warn!("{log} (failed ones are retried with backoff)");
                } else {
                    info!("{log}");
                }
            }
        }
    }

    /// Publishes a fresh status snapshot.
    fn update_status(&self) {
        let wall = self.runtime.wallclock();
        let now = self.runtime.now();
        let to_wall = |t: Instant| wall + t.saturating_duration_since(now);
        let mut periods: Vec<PeriodStatus> = self
            .publish
            .periods()
            .map(|p| PeriodStatus {
                time_period: p.period.time_period.interval_num(),
                length_minutes: p.period.time_period.length().as_minutes(),
                revision_counter: p.descriptor.as_ref().map(|d| u64::from(d.revision)),
                built_at: p.built_at,
                intro_points: p.descriptor.as_ref().map_or(0, |d| d.intro_points),
                hsdirs: p.hsdirs.len(),
                hsdirs_accepted: p.accepted(),
                hsdirs_failed: p.failed(),
                next_republish: self.next_republish.map(to_wall),
                last_upload_attempt: p.last_attempt,
            })
            .collect();
        periods.sort_by_key(|p| p.time_period);
        let instances = self
            .engine
            .backends()
            .iter()
            .zip(&self.names)
            .zip(&self.watch)
            .map(|((b, name), w)| InstanceStatus {
                name: name.clone(),
                onion_address: b.address.to_string(),
                descriptor_received: b.snapshot.as_ref().map(|s| s.received_at),
                revision_counter: b.snapshot.as_ref().map(|s| u64::from(s.revision)),
                intro_points_num: b.snapshot.as_ref().map_or(0, |s| s.intro_points.len()),
                intro_set_modified: w.intro_set_modified,
                valid_until: b.snapshot.as_ref().and_then(|s| s.valid_until),
                last_error: w
                    .fetch_error
                    .clone()
                    .or_else(|| b.last_error.as_ref().map(|e| e.to_string())),
            })
            .collect();
        let attempt = |i: usize| periods.get(i).and_then(|p| p.last_upload_attempt);
        let st = ServiceStatus {
            publish_attempt_first_descriptor: attempt(0),
            publish_attempt_second_descriptor: attempt(1),
            onion_address: self.frontend(),
            phase: self.phase,
            last_fetch: self.last_fetch_wall,
            first_published: self.first_published,
            periods,
            instances,
            counters: self.counters.clone(),
        };
        if let Ok(mut guard) = self.status.lock() {
            *guard = st;
        }
    }
}
