//! One frontend service, kept published: the runner that fetches, builds and uploads.
//!
//! The runner behaves like a well-kept C tor onion service seen from the HSDirs: it uploads a
//! descriptor when a period starts, when what it lists changes, and on a random 60–120-minute
//! refresh; nothing else. Backends are followed closely and cheaply (one fetch per backend
//! per [`Timing::fetch_interval`]), and a fetch that returns the same descriptor in other
//! bytes changes nothing.
//!
//! # Parts
//!
//! * [`backend`]: one record per backend: its descriptor per time period, liveness, expiry,
//!   and when to fetch it next.
//! * [`publish`]: per period, the descriptor we publish, when to rebuild it, and what each
//!   HSDir holds, with [`backoff`] for failed uploads.
//! * [`revision_store`]: the last revision counter per period, on disk, so a restart never
//!   publishes a lower one.
//! * `probing`: health probes, their verdicts, and which backends may be listed (see
//!   [`crate::health`]).
//! * `report`: the status snapshot, membership events and build logs (reading, never
//!   deciding).
//! * This module: the reactor that owns those, launches fetches and uploads, and takes
//!   their results as events.
//!
//! # The loop
//!
//! ```text
//!   ┌─▶ step: follow consensus → expire → launch due fetches → build due periods → launch due uploads
//!   │        (every decision is taken from the state by one function, which also gives its time)
//!   │   wait for the first of: stop │ new consensus │ config reload │ a fetch/upload finished │ next timer
//!   └───────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Fetches and uploads run concurrently as futures owned by the loop; their results come
//! back as events, so a slow HSDir never holds up anything else. Each timer (next fetch per
//! backend, build per period, upload retry per HSDir, expiry per snapshot, first
//! publication) is computed afresh from its inputs by one function that both the loop's
//! `step` and its `next_wakeup` call: there is one place where each action is considered.
//!
//! # The first publication
//!
//! A C tor client keeps a fetched descriptor until the next time period starts unless all its
//! intro points fail. A first descriptor listing only the backends that answered first would
//! pin early clients to those for up to a day, so the first descriptor of every period waits
//! until every backend has been asked for its descriptor of that period, or
//! [`Timing::first_publication_wait`] after the period appeared, whichever comes first. (For
//! a period that appears later this also avoids listing intro points borrowed from the
//! neighbouring period only to rebuild a minute later.)
//!
//! The runner is generic over the Arti [`Runtime`] (time, sleeping) and the [`DirTransport`]
//! (the network), so its scheduling is tested in simulated time.

pub(crate) mod backend;
pub(crate) mod backoff;
mod probing;
pub(crate) mod publish;
mod report;
pub(crate) mod revision_store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tor_hscrypto::time::TimePeriod;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::{DirEvent, NetDir, NetDirProvider};
use tor_rtcompat::{Runtime, SleepProviderExt as _};
use tracing::{debug, error, info, warn};

use crate::config::{ClientAuthConfig, InstanceConfig, ServiceConfig};
use crate::descriptor::{BackendSnapshot, BuildError, Engine, RingFacts};
use crate::error::{ErrorKind, HasKind as _};
use crate::events::{Event, EventSender};
use crate::fetch::{self, FetchOutcome, FetchReport, FetchRequest};
use crate::health::{HealthSignal, ProbeError, Prober};
use crate::net::{DirTransport, TransferError};
use crate::onion::OnionAddress;
use crate::ring;
use crate::status::{Counters, ServicePhase, StatusBoard};
use backend::{Backend, Intake};
use publish::{BuildInputs, BuildReason, PublishState, Recorded, UploadFailure, UploadJob};
use report::{log_client_auth, publication};
use revision_store::RevisionStore;

/// The timing knobs of a service. The defaults suit the public Tor network; none of them is
/// tuned for test networks.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Interval between two fetches of one backend (default 60 s). Each fetch is for one
    /// period (the one fetched least recently), so with two periods a backend costs 60
    /// fetches an hour and a change is seen within one interval.
    pub fetch_interval: Duration,
    /// First interval while a backend has no usable descriptor (default 15 s); it doubles
    /// with each such fetch, up to `missing_fetch_interval`.
    pub fetch_retry: Duration,
    /// Longest interval between fetches of a backend that has no usable descriptor (default
    /// 5 min). Such a fetch asks every HSDir of the period (each says 404), so it costs more
    /// than a regular one; a backend that restarts is not in this state (HSDirs keep its old
    /// descriptor while it is down).
    pub missing_fetch_interval: Duration,
    /// Limit for one fetch attempt at one HSDir, circuit included (default 30 s).
    pub fetch_attempt_timeout: Duration,
    /// Limit for one upload attempt at one HSDir, circuit included (default 60 s).
    pub upload_attempt_timeout: Duration,
    /// Shortest interval between periodic refreshes of a period's descriptor (default 60 min).
    pub republish_min: Duration,
    /// Longest interval between periodic refreshes (default 120 min).
    pub republish_max: Duration,
    /// Least time between two builds of one period's descriptor, except its first
    /// (default 60 s).
    pub min_rebuild_interval: Duration,
    /// A backend descriptor whose revision counter has not gone up for this long is
    /// considered gone (default 2 h 15 min: C tor re-uploads at least every 2 hours).
    pub stale_after: Duration,
    /// Longest wait, after a period appears (at start: the first usable consensus), for every
    /// backend to be asked for its descriptor of that period before the period's first
    /// publication (default 30 s).
    pub first_publication_wait: Duration,
    /// Fetches in flight at the same time (default 8).
    pub max_concurrent_fetches: usize,
    /// Uploads in flight at the same time (default 16).
    pub max_concurrent_uploads: usize,
    /// Health probes in flight at the same time (default 16).
    pub max_concurrent_probes: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            fetch_interval: Duration::from_secs(60),
            fetch_retry: Duration::from_secs(15),
            missing_fetch_interval: Duration::from_secs(5 * 60),
            fetch_attempt_timeout: Duration::from_secs(30),
            upload_attempt_timeout: Duration::from_secs(60),
            republish_min: Duration::from_secs(60 * 60),
            republish_max: Duration::from_secs(120 * 60),
            min_rebuild_interval: Duration::from_secs(60),
            stale_after: Duration::from_secs(135 * 60),
            first_publication_wait: Duration::from_secs(30),
            max_concurrent_fetches: 8,
            max_concurrent_uploads: 16,
            max_concurrent_probes: 16,
        }
    }
}

/// Instructions to a running service.
#[derive(Debug, Clone)]
pub(crate) enum ServiceCommand {
    /// The config was reloaded: this is the new list of instances.
    SetInstances(Vec<InstanceConfig>),
    /// The config was reloaded: these are the clients allowed to discover the frontend
    /// (`None`: discovery is not restricted). Every descriptor is rebuilt at once if they
    /// changed.
    SetAuthorizedClients(Option<ClientAuthConfig>),
    /// The embedding application's verdict on a backend (`None` withdraws it).
    HealthSignal(OnionAddress, Option<HealthSignal>),
}

/// A fetch or upload that finished.
enum Done {
    /// A backend fetch.
    Fetch {
        /// The backend.
        address: OnionAddress,
        /// What happened.
        report: FetchReport,
    },
    /// An upload.
    Upload {
        /// What was uploaded where.
        job: UploadJob,
        /// `Ok`, or why not.
        result: Result<(), UploadFailure>,
    },
    /// A health probe.
    Probe {
        /// The backend.
        address: OnionAddress,
        /// How long it took, or why it failed.
        result: Result<Duration, ProbeError>,
    },
}

/// Where a runner reports: its status, and events.
#[derive(Debug, Clone)]
pub(crate) struct Outputs {
    /// The balancer's status board (the runner replaces its own entry).
    pub(crate) board: StatusBoard,
    /// The balancer's event channel.
    pub(crate) events: EventSender,
}

/// What a runner talks to: the HSDirs, the backends, the consensus.
pub(crate) struct Network<T> {
    /// Fetches and uploads descriptors.
    pub(crate) transport: Arc<T>,
    /// Probes backends.
    pub(crate) prober: Arc<dyn Prober>,
    /// Consensus documents.
    pub(crate) netdirs: Arc<dyn NetDirProvider>,
}

/// Fetches, uploads and probes in flight.
type InFlight = FuturesUnordered<BoxFuture<'static, Done>>;

/// Runs one frontend service until told to stop.
pub(crate) struct ServiceRunner<R: Runtime, T: DirTransport> {
    /// Time and sleeping.
    runtime: R,
    /// The network.
    transport: Arc<T>,
    /// Probes backends.
    prober: Arc<dyn Prober>,
    /// Consensus documents.
    netdirs: Arc<dyn NetDirProvider>,
    /// Timing knobs.
    timing: Timing,
    /// Randomness for selection, ring order and jitter.
    rng: StdRng,
    /// Where readers find our status.
    board: StatusBoard,
    /// Where listeners hear what happened.
    events: EventSender,
    /// The frontend's address.
    address: OnionAddress,
    /// The frontend's address, for logs.
    frontend: String,
    /// The backends whose intro points we can publish, as last announced ([`Event::BackendJoined`]).
    members: Vec<(OnionAddress, String)>,
    /// The last revision announced as published ([`Event::Published`]), per period.
    announced: HashMap<TimePeriod, u64>,
    /// Frontend keys, revision counters and builds.
    engine: Engine,
    /// The backends, in config order.
    backends: Vec<Backend>,
    /// Upload state per period.
    publish: PublishState,
    /// Revision counters on disk.
    store: RevisionStore,
    /// `valid_after` of the consensus the rings were computed from.
    rings_from: Option<SystemTime>,
    /// The current time period (for status).
    current_period: Option<TimePeriod>,
    /// When a usable consensus was first seen.
    directory_since: Option<Instant>,
    /// Phase for the status.
    phase: ServicePhase,
    /// When an HSDir first accepted a descriptor of ours.
    first_published: Option<SystemTime>,
    /// Last fetch (wall clock).
    last_fetch_wall: Option<SystemTime>,
    /// Event counts.
    counters: Counters,
    /// Fetches in flight.
    fetches_in_flight: usize,
    /// Uploads in flight.
    uploads_in_flight: usize,
    /// Probes in flight.
    probes_in_flight: usize,
    /// Whether some period's selection fails open (every backend down or drained).
    fail_open: bool,
    /// What health last let be listed (per backend, in order, and fail-open), to notice
    /// changes.
    listing: Option<(Vec<bool>, bool)>,
}

impl<R: Runtime, T: DirTransport> ServiceRunner<R, T> {
    /// Prepares a runner for `service`. With a `state_dir`, the last revision counters are
    /// kept under it (see [`revision_store`]).
    pub(crate) fn new(
        runtime: R,
        network: Network<T>,
        service: &ServiceConfig,
        timing: Timing,
        outputs: Outputs,
        state_dir: Option<PathBuf>,
    ) -> Self {
        let Outputs { board, events } = outputs;
        let frontend = service.address().to_string();
        let store = match state_dir {
            Some(dir) => {
                let (store, problem) =
                    RevisionStore::open(RevisionStore::path_for(&dir, &frontend));
                if let Some(e) = problem {
                    warn!("{frontend}: {e}");
                }
                store
            }
            None => RevisionStore::in_memory(),
        };
        let mut engine = Engine::new(service.key.clone());
        engine.set_authorized_clients(service.client_auth.as_ref().map(ClientAuthConfig::keys));
        if service.client_auth.is_some() {
            log_client_auth(&frontend, service.client_auth.as_ref(), "starting");
        }
        let Network {
            transport,
            prober,
            netdirs,
        } = network;
        ServiceRunner {
            runtime,
            transport,
            prober,
            netdirs,
            timing,
            rng: StdRng::from_rng(&mut rand::rng()),
            board,
            events,
            address: service.address(),
            frontend,
            members: Vec::new(),
            announced: HashMap::new(),
            engine,
            backends: service
                .instances
                .iter()
                .map(|i| {
                    let mut b = Backend::new(i.name.clone(), i.address);
                    b.health = probing::monitor_for(i);
                    b
                })
                .collect(),
            publish: PublishState::default(),
            store,
            rings_from: None,
            current_period: None,
            directory_since: None,
            phase: ServicePhase::WaitingForDirectory,
            first_published: None,
            last_fetch_wall: None,
            counters: Counters::default(),
            fetches_in_flight: 0,
            uploads_in_flight: 0,
            probes_in_flight: 0,
            fail_open: false,
            listing: None,
        }
    }

    /// Runs until `stop` fires (or its sender is dropped), obeying `commands`.
    pub(crate) async fn run(
        mut self,
        stop: oneshot::Receiver<()>,
        commands: futures::channel::mpsc::UnboundedReceiver<ServiceCommand>,
    ) {
        let mut stop = stop.fuse();
        let mut commands = commands.fuse();
        let mut events = self.netdirs.events().fuse();
        let mut in_flight: InFlight = FuturesUnordered::new();
        info!(
            "{}: service started with {} backend(s)",
            self.frontend,
            self.backends.len()
        );
        loop {
            self.step(&mut in_flight);
            self.announce_membership();
            self.update_status();
            let wait = self
                .next_wakeup()
                .saturating_duration_since(self.runtime.now());
            let sleep = self.runtime.sleep(wait).fuse();
            let finished = async {
                if in_flight.is_empty() {
                    futures::future::pending::<Option<Done>>().await
                } else {
                    in_flight.next().await
                }
            }
            .fuse();
            futures::pin_mut!(sleep, finished);
            let done = futures::select_biased! {
                _ = stop => break,
                ev = events.next() => {
                    if ev.is_none() {
                        // The directory manager went away; keep going on timers alone.
                        events = futures::stream::pending::<DirEvent>().boxed().fuse();
                    }
                    None
                }
                cmd = commands.next() => {
                    match cmd {
                        Some(ServiceCommand::SetInstances(instances)) => self.set_instances(instances),
                        Some(ServiceCommand::SetAuthorizedClients(clients)) => self.set_authorized_clients(clients),
                        Some(ServiceCommand::HealthSignal(instance, signal)) => self.set_health_signal(instance, signal),
                        None => commands = futures::channel::mpsc::unbounded().1.fuse(),
                    }
                    None
                }
                done = finished => done,
                () = sleep => None,
            };
            match done {
                Some(Done::Fetch { address, report }) => self.on_fetched(address, report),
                Some(Done::Upload { job, result }) => self.on_uploaded(job, result),
                Some(Done::Probe { address, result }) => self.on_probed(address, result),
                None => {}
            }
        }
        self.phase = ServicePhase::Stopped;
        self.update_status();
        info!("{}: service stopped", self.frontend);
    }

    /// Takes a new list of instances: known ones keep their records, new ones are fetched
    /// at once, removed ones leave (and what is built from now on no longer lists them).
    fn set_instances(&mut self, instances: Vec<InstanceConfig>) {
        let periods: Vec<TimePeriod> = self
            .publish
            .publish_periods()
            .iter()
            .map(|p| p.time_period)
            .collect();
        let mut old = std::mem::take(&mut self.backends);
        for inst in instances {
            let mut b = match old.iter().position(|b| b.address == inst.address) {
                Some(i) => {
                    let mut b = old.swap_remove(i);
                    b.name = inst.name.clone();
                    self.reconfigure_health(&mut b, &inst);
                    b
                }
                None => {
                    let mut b = Backend::new(inst.name.clone(), inst.address);
                    b.health = probing::monitor_for(&inst);
                    b
                }
            };
            b.set_periods(&periods);
            self.backends.push(b);
        }
        info!(
            "{}: config reloaded: {} backend(s)",
            self.frontend,
            self.backends.len()
        );
        self.update_status();
    }

    /// Takes a new set of authorized clients; if it differs from the one in force, every
    /// period's descriptor is rebuilt at once, so that HSDirs soon hold descriptors a removed
    /// client cannot read (clients that cached an older one keep it until it fails them or
    /// its period ends, as with any onion service).
    fn set_authorized_clients(&mut self, clients: Option<ClientAuthConfig>) {
        let keys = clients.as_ref().map(ClientAuthConfig::keys);
        let same = match (self.engine.authorized_clients(), keys.as_deref()) {
            (None, None) => true,
            (Some(a), Some(b)) => a.len() == b.len() && a.iter().all(|k| b.contains(k)),
            _ => false,
        };
        if same {
            return;
        }
        self.engine.set_authorized_clients(keys);
        log_client_auth(&self.frontend, clients.as_ref(), "config reloaded");
        self.publish.clients_changed();
        self.update_status();
    }

    /// Decides and starts whatever is due now.
    fn step(&mut self, in_flight: &mut InFlight) {
        let netdir = match self.netdirs.timely_netdir() {
            Ok(nd) => nd,
            Err(e) => {
                debug!("{}: no usable consensus yet: {e}", self.frontend);
                if self.phase != ServicePhase::Stopped && self.directory_since.is_none() {
                    self.phase = ServicePhase::WaitingForDirectory;
                }
                return;
            }
        };
        let now = self.runtime.now();
        let wall = self.runtime.wallclock();
        if self.directory_since.is_none() {
            self.directory_since = Some(now);
            self.phase = ServicePhase::Starting;
        }
        self.follow_consensus(&netdir);
        self.expire(wall);
        self.launch_fetches(&netdir, now, in_flight);
        self.launch_probes(now, in_flight);
        self.settle_health(now, wall);
        self.build_due(now, wall);
        self.launch_uploads(&netdir, now, in_flight);
    }

    /// When the runner has something to do next: the earliest of every timer, each computed
    /// by the same function `step` uses to act on it.
    fn next_wakeup(&self) -> Instant {
        let now = self.runtime.now();
        let wall = self.runtime.wallclock();
        // Nothing is computed without a consensus; a new one wakes us, but look again now and
        // then in case the one we have becomes timely.
        let mut t = now + Duration::from_secs(60);
        if self.directory_since.is_none() {
            return t;
        }
        if self.fetches_in_flight < self.timing.max_concurrent_fetches.max(1) {
            for b in &self.backends {
                if let Some((at, _)) = b.next_fetch(now, &self.timing) {
                    t = t.min(at);
                }
            }
        }
        for p in self.publish.publish_periods() {
            if let Some((at, _)) = self.build_due_for(p.time_period, now, wall) {
                t = t.min(at);
            }
        }
        if self.uploads_in_flight < self.timing.max_concurrent_uploads.max(1) {
            if let Some(at) = self.publish.next_upload(now) {
                t = t.min(at);
            }
        }
        if let Some(at) = self.health_wakeup(now) {
            t = t.min(at);
        }
        for b in &self.backends {
            if let Some(at) = b.next_expiry(self.timing.stale_after) {
                // Wake just after it, so the snapshot is gone when we look.
                let left = at.duration_since(wall).unwrap_or_default();
                t = t.min(now + left + Duration::from_secs(1));
            }
        }
        t.max(now)
    }

    /// Recomputes periods and HSDir rings when the consensus changed.
    fn follow_consensus(&mut self, netdir: &NetDir) {
        let valid_after = netdir.lifetime().valid_after();
        if self.rings_from == Some(valid_after) {
            return;
        }
        self.rings_from = Some(valid_after);
        self.current_period = Some(netdir.hs_time_period());
        let max_len = usize::try_from(netdir.params().hsdir_max_desc_size.get())
            .unwrap_or(crate::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN);
        self.engine.set_max_len(max_len);
        let mut rings = Vec::new();
        for p in ring::publish_periods(netdir) {
            let blind_id = match self.engine.frontend_blind_id(p.time_period) {
                Ok(id) => id,
                Err(e) => {
                    warn!(
                        "{}: time period {}: {}",
                        self.frontend,
                        p.time_period.interval_num(),
                        crate::error::report(&e)
                    );
                    continue;
                }
            };
            match ring::upload_hsdirs(netdir, blind_id, p.time_period) {
                Ok(up) => {
                    // Where clients fetch from decides the variants, if there are several.
                    let fetch =
                        ring::fetch_set(netdir, blind_id, p.time_period, &up, &mut self.rng);
                    rings.push((p, up, fetch));
                }
                Err(e) => warn!(
                    "{}: time period {}: {}",
                    self.frontend,
                    p.time_period.interval_num(),
                    crate::error::report(&e)
                ),
            }
        }
        let periods: Vec<TimePeriod> = rings.iter().map(|(p, _, _)| p.time_period).collect();
        for tp in self.publish.set_rings(rings, self.runtime.now()) {
            if let Some(used) = self.store.get(tp) {
                self.engine.raise_revision_floor(tp, used);
            }
            debug!(
                "{}: now publishing for time period {}",
                self.frontend,
                tp.interval_num()
            );
        }
        for b in &mut self.backends {
            b.set_periods(&periods);
        }
    }

    /// Drops backend snapshots that expired or went stale.
    fn expire(&mut self, wall: SystemTime) {
        for b in &mut self.backends {
            for why in b.expire(wall, self.timing.stale_after) {
                warn!(
                    "{}: backend {}: {why}: left the selection",
                    self.frontend, b.name
                );
            }
        }
    }

    /// Starts the fetches that are due, within the concurrency limit.
    fn launch_fetches(&mut self, netdir: &Arc<NetDir>, now: Instant, in_flight: &mut InFlight) {
        let slots = self
            .timing
            .max_concurrent_fetches
            .max(1)
            .saturating_sub(self.fetches_in_flight);
        let mut due: Vec<(Instant, usize, TimePeriod)> = self
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let (at, p) = b.next_fetch(now, &self.timing)?;
                (at <= now).then_some((at, i, p))
            })
            .collect();
        due.sort_by_key(|(at, i, _)| (*at, *i));
        let wall = self.runtime.wallclock();
        for (_, idx, period) in due.into_iter().take(slots) {
            let b = &mut self.backends[idx];
            let Some(st) = b.period_mut(period) else {
                continue;
            };
            let keys = match &st.keys {
                Ok(k) => k.clone(),
                Err(e) => {
                    let error = crate::error::report(e);
                    b.fetch_impossible(period, error, now, wall);
                    continue;
                }
            };
            let hsdirs = match fetch::hsdirs_for(netdir, &keys, &mut self.rng) {
                Ok(h) => h,
                Err(e) => {
                    b.fetch_impossible(period, crate::error::report(&e), now, wall);
                    continue;
                }
            };
            let req = FetchRequest {
                keys,
                known_revision: st.snapshot.as_ref().map(|s| s.revision).or(st.retired),
                attempt_timeout: self.timing.fetch_attempt_timeout,
                max_len: self.engine.max_len(),
            };
            b.fetch_started(now);
            self.fetches_in_flight += 1;
            self.last_fetch_wall = Some(wall);
            let (runtime, transport, netdir) =
                (self.runtime.clone(), self.transport.clone(), netdir.clone());
            let address = b.address;
            in_flight.push(Box::pin(async move {
                let report =
                    fetch::fetch_descriptor(&runtime, &*transport, &netdir, &hsdirs, &req).await;
                Done::Fetch { address, report }
            }));
        }
    }

    /// Takes in a finished fetch.
    fn on_fetched(&mut self, address: OnionAddress, report: FetchReport) {
        self.fetches_in_flight = self.fetches_in_flight.saturating_sub(1);
        let now = self.runtime.now();
        let wall = self.runtime.wallclock();
        let front = &self.frontend;
        for (_, e) in &report.intake_errors {
            *self.counters.intake_rejections.entry(e.kind()).or_default() += 1;
        }
        let Some(b) = self.backends.iter_mut().find(|b| b.address == address) else {
            return; // removed by a reload while we fetched
        };
        let name = b.name.clone();
        let tp = report.period.interval_num();
        let answered = !matches!(report.outcome, FetchOutcome::Failed);
        let mut error = None;
        match report.outcome {
            FetchOutcome::Fetched(snapshot) => {
                self.counters.fetches_ok += 1;
                let revision = u64::from(snapshot.revision);
                let n = snapshot.intro_points.len();
                match b.take_in(snapshot, wall) {
                    Intake::Changed => {
                        self.counters.backend_changes += 1;
                        info!("{front}: backend {name}: time period {tp}: new intro points (revision {revision}, {n} intro points)");
                    }
                    Intake::Refreshed => debug!(
                        "{front}: backend {name}: time period {tp}: revision {revision}, same intro points"
                    ),
                    Intake::NotNewer => debug!(
                        "{front}: backend {name}: time period {tp}: an HSDir served older revision {revision}"
                    ),
                    Intake::StillStale => debug!(
                        "{front}: backend {name}: time period {tp}: HSDirs still serve stale revision {revision}"
                    ),
                }
            }
            FetchOutcome::SameRevision(rev) => {
                self.counters.fetches_ok += 1;
                debug!(
                    "{front}: backend {name}: time period {tp}: unchanged (revision {})",
                    u64::from(rev)
                );
            }
            FetchOutcome::NotFound => {
                *self
                    .counters
                    .fetch_failures
                    .entry(ErrorKind::DescriptorNotFound)
                    .or_default() += 1;
                let msg = format!(
                    "none of {} HSDirs has its descriptor for time period {tp} (is it running?)",
                    report.not_found
                );
                if b.not_found(report.period) {
                    warn!("{front}: backend {name}: {msg}: left that period's selection");
                } else {
                    info!("{front}: backend {name}: {msg}");
                }
                error = Some(msg);
            }
            FetchOutcome::Failed => {
                *self
                    .counters
                    .fetch_failures
                    .entry(report.failure_kind())
                    .or_default() += 1;
                let msg = format!("fetch for time period {tp} failed: {}", report.problem());
                warn!("{front}: backend {name}: {msg}; keeping its last descriptor while valid");
                error = Some(msg);
            }
        }
        // A fetch that failed everywhere (no circuit, timeouts) has not asked the backend
        // anything: the first publication keeps waiting for it (bounded).
        b.fetch_ended(report.period, error, answered, now, wall);
    }

    /// The backends whose HSDirs have not yet answered for period `tp` (with a descriptor or
    /// "not found"): fetches that failed before any answer do not count as asking.
    fn untried(&self, tp: TimePeriod) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|b| b.period(tp).is_none_or(|p| !p.answered))
            .map(|b| b.name.as_str())
            .collect()
    }

    /// What a build for `tp` would use now: per listed backend, the snapshot (its own for
    /// `tp`, else its nearest); see [`ServiceRunner::selection`].
    fn inputs_for(&self, tp: TimePeriod, wall: SystemTime) -> Vec<(&Backend, &BackendSnapshot)> {
        self.selection(tp, wall).chosen
    }

    /// Whether period `tp` needs a build, why and when.
    fn build_due_for(
        &self,
        tp: TimePeriod,
        now: Instant,
        wall: SystemTime,
    ) -> Option<(Instant, BuildReason)> {
        let st = self.publish.period(tp)?;
        let inputs = build_inputs(&self.inputs_for(tp, wall));
        let (at, reason) = st.build_due(&inputs, now, self.timing.min_rebuild_interval)?;
        if reason == BuildReason::First {
            // As for the very first publication: a period's first descriptor waits until
            // every backend was asked for its own descriptor of that period (bounded), so it
            // does not list intro points borrowed from a neighbouring period only to be
            // rebuilt a minute later.
            if !self.untried(tp).is_empty() {
                return Some((
                    at.max(st.appeared + self.timing.first_publication_wait),
                    reason,
                ));
            }
        }
        Some((at, reason))
    }

    /// Builds every period whose build is due.
    fn build_due(&mut self, now: Instant, wall: SystemTime) {
        // Health changed, but not what a period lists (say, a backend without a descriptor
        // went down): nothing to rebuild there.
        let settled: Vec<TimePeriod> = self
            .publish
            .periods()
            .filter(|p| {
                p.listing_changed.is_some()
                    && p.built_inputs.as_ref()
                        == Some(&build_inputs(&self.inputs_for(p.period.time_period, wall)))
            })
            .map(|p| p.period.time_period)
            .collect();
        for tp in settled {
            self.publish.listing_settled(tp);
        }
        let mut any_inputs = false;
        for period in self.publish.publish_periods() {
            let tp = period.time_period;
            let chosen = self.inputs_for(tp, wall);
            any_inputs |= !chosen.is_empty();
            let Some((at, reason)) = self.build_due_for(tp, now, wall) else {
                continue;
            };
            if at > now {
                continue;
            }
            let inputs = build_inputs(&chosen);
            if reason == BuildReason::First {
                let untried = self.untried(tp);
                if !untried.is_empty() {
                    info!(
                        "{}: time period {}: publishing without waiting longer for {}",
                        self.frontend,
                        tp.interval_num(),
                        untried.join(", ")
                    );
                }
            }
            let names: Vec<String> = chosen.iter().map(|(b, _)| b.name.clone()).collect();
            let snapshots: Vec<BackendSnapshot> =
                chosen.iter().map(|(_, s)| (*s).clone()).collect();
            let refs: Vec<&BackendSnapshot> = snapshots.iter().collect();
            let Some(st) = self.publish.period(tp) else {
                continue;
            };
            let upload: Vec<RsaIdentity> = st.hsdirs.keys().copied().collect();
            let fetch = st.fetch.clone();
            let ring = RingFacts {
                upload: &upload,
                fetch: &fetch,
            };
            match self
                .engine
                .build_variants(&period, &refs, &ring, wall, &mut self.rng)
            {
                Ok(built) => {
                    if built.intro_point_limit < crate::descriptor::MAX_INTRO_POINTS {
                        warn!(
                            "{}: time period {}: with {} authorized clients a descriptor holds at most {} intro points (the network's size limit is {} bytes): fewer backends per descriptor",
                            self.frontend,
                            tp.interval_num(),
                            self.engine.authorized_clients().map_or(0, <[_]>::len),
                            built.intro_point_limit,
                            self.engine.max_len()
                        );
                    }
                    let publication = publication(built, &names, &fetch);
                    if let Some(rev) = publication.revision() {
                        if let Err(e) = self.store.record(tp, rev) {
                            warn!("{}: {e}", self.frontend);
                        }
                    }
                    self.log_build(tp, reason, &publication);
                    self.counters.builds += 1;
                    let delay = publish::refresh_delay(
                        self.timing.republish_min,
                        self.timing.republish_max,
                        &mut self.rng,
                    );
                    self.publish
                        .install(tp, publication, reason, inputs, (now, wall), delay);
                    self.phase = ServicePhase::Publishing;
                }
                Err(BuildError::NoIntroPoints) => self.publish.build_failed(tp, now),
                Err(e) => {
                    warn!(
                        "{}: cannot build a descriptor for time period {}: {}",
                        self.frontend,
                        tp.interval_num(),
                        crate::error::report(&e)
                    );
                    self.publish.build_failed(tp, now);
                }
            }
        }
        // Backends not yet asked (just added by a reload) may still bring intro points.
        let all_asked = self
            .publish
            .publish_periods()
            .iter()
            .all(|p| self.untried(p.time_period).is_empty());
        if !any_inputs && all_asked && self.phase != ServicePhase::NoBackends {
            warn!(
                "{}: no backend has a valid descriptor: not publishing (descriptors already on the HSDirs stay until they expire)",
                self.frontend
            );
            self.phase = ServicePhase::NoBackends;
        } else if any_inputs && self.phase == ServicePhase::NoBackends {
            self.phase = ServicePhase::Publishing;
        }
    }

    /// Starts the uploads that are due, within the concurrency limit.
    fn launch_uploads(&mut self, netdir: &Arc<NetDir>, now: Instant, in_flight: &mut InFlight) {
        let slots = self
            .timing
            .max_concurrent_uploads
            .max(1)
            .saturating_sub(self.uploads_in_flight);
        for job in self.publish.take_due(now, slots) {
            self.uploads_in_flight += 1;
            let (runtime, transport, netdir) =
                (self.runtime.clone(), self.transport.clone(), netdir.clone());
            let timeout = self.timing.upload_attempt_timeout;
            in_flight.push(Box::pin(async move {
                let attempt = transport.upload(
                    &netdir,
                    job.hsdir.target.clone(),
                    job.descriptor.text.clone(),
                );
                let result = match runtime.timeout(timeout, attempt).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(TransferError::Timeout(timeout)),
                }
                .map_err(|e| UploadFailure {
                    message: crate::error::report(&e),
                    kind: e.kind(),
                    refused: e.is_rejected_upload(),
                    error: Arc::new(e),
                });
                Done::Upload { job, result }
            }));
        }
    }

    /// Takes in a finished upload.
    fn on_uploaded(&mut self, job: UploadJob, result: Result<(), UploadFailure>) {
        self.uploads_in_flight = self.uploads_in_flight.saturating_sub(1);
        let now = self.runtime.now();
        let wall = self.runtime.wallclock();
        let tp = job.period.interval_num();
        let rev = u64::from(job.descriptor.revision);
        let recorded = self.publish.record(&job, &result, now, wall, &mut self.rng);
        match &result {
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
                debug!(
                    "{}: time period {tp}: HSDir {} accepted revision {rev}",
                    self.frontend, job.hsdir.id
                );
                if let Some(st) = self.publish.period(job.period) {
                    if st.hsdirs.values().all(|h| !h.is_dirty()) {
                        info!(
                            "{}: time period {tp}: all {} HSDirs hold our descriptor (revision {rev})",
                            self.frontend,
                            st.hsdirs.len()
                        );
                    }
                }
            }
            Err(f) => {
                *self.counters.upload_failures.entry(f.kind).or_default() += 1;
                if let Recorded::Refused(n) = recorded {
                    self.events.send(Event::UploadRejected {
                        service: self.address,
                        time_period: tp,
                        revision: rev,
                        hsdir: hex::encode_upper(job.hsdir.id.as_bytes()),
                        in_a_row: n,
                        error: f.error.clone(),
                    });
                }
                match recorded {
                    Recorded::Refused(n) if n == publish::REJECTION_ALARM => error!(
                        "{}: time period {tp}: HSDir {} refused {n} descriptors in a row (last: {}). Check this machine's clock, and that no other onionbalance or tor publishes with this frontend key; retrying every {} minutes",
                        self.frontend, job.hsdir.id, f.message, publish::SLOW_RETRY.as_secs() / 60
                    ),
                    Recorded::Refused(n) => warn!(
                        "{}: time period {tp}: HSDir {} refused revision {rev} ({}; {n} in a row): retrying with backoff",
                        self.frontend, job.hsdir.id, f.message
                    ),
                    _ => warn!(
                        "{}: time period {tp}: upload of revision {rev} to HSDir {} failed: {}; retrying with backoff",
                        self.frontend, job.hsdir.id, f.message
                    ),
                }
            }
        }
    }
}

/// The build inputs of a selection: what each backend's snapshot means.
fn build_inputs(chosen: &[(&Backend, &BackendSnapshot)]) -> BuildInputs {
    chosen
        .iter()
        .map(|(b, s)| (b.address, s.content_key()))
        .collect()
}
