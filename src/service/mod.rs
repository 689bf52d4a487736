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
//! * `timing`: the knobs ([`Timing`]).
//! * This module: the reactor that owns the state, decides what is due from it, and takes
//!   the results of what it launched as events. Its work is split by activity, each an
//!   `impl` block of the same runner: `fetching` (backends' descriptors), `probing` (health
//!   probes, their verdicts, and which backends may be listed: see [`crate::health`]),
//!   `building` (when a period needs a build, and what it uses) and `uploading`.
//! * `report`: the status snapshot, and the `Reporter`, which turns small typed accounts of
//!   what happened (a fetch's outcome, an upload's verdict, a build) into counters, events
//!   and log lines. It never decides anything.
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
mod building;
mod fetching;
mod peeking;
mod probing;
pub(crate) mod publish;
mod report;
pub(crate) mod revision_store;
pub(crate) mod timing;
mod uploading;

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
use tor_netdir::{DirEvent, NetDir, NetDirProvider};
use tor_rtcompat::Runtime;
use tracing::{debug, info, warn};

use crate::config::{ClientAuthConfig, InstanceConfig, ServiceConfig};
use crate::descriptor::Engine;
use crate::error::ErrorKind;
use crate::events::EventSender;
use crate::fetch::FetchReport;
use crate::health::{HealthSignal, ProbeError, Prober};
use crate::net::{DirTransport, TransferError};
use crate::onion::OnionAddress;
use crate::ring;
use crate::status::{ServicePhase, StatusBoard};
use backend::Backend;
use publish::{PublishState, UploadJob};
use report::{log_client_auth, Reporter};
use revision_store::RevisionStore;
pub use timing::Timing;

/// How many more of something limited to `limit` at once (at least one, whatever the
/// config says) may start while `in_flight` run.
fn free_slots(limit: usize, in_flight: usize) -> usize {
    limit.max(1).saturating_sub(in_flight)
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
    /// A look at what an HSDir holds for our address.
    Peek {
        /// What was looked at.
        job: peeking::PeekJob,
        /// What it holds (verified; `None`: nothing), or why we cannot tell.
        held: Result<Option<crate::descriptor::PublishedDescriptor>, String>,
    },
    /// A health probe.
    Probe {
        /// The backend.
        address: OnionAddress,
        /// How long it took, or why it failed.
        result: Result<Duration, ProbeError>,
    },
}

/// Why one upload failed.
#[derive(Debug, Clone)]
pub(crate) struct UploadFailure {
    /// What happened.
    message: String,
    /// The kind of failure (for metrics).
    kind: ErrorKind,
    /// The failure itself.
    error: Arc<TransferError>,
    /// True when the HSDir refused to store the descriptor (HTTP 400).
    refused: bool,
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
    /// Status, events, counters and logs of what happened.
    report: Reporter,
    /// The frontend's address.
    address: OnionAddress,
    /// The frontend's address, for logs.
    frontend: String,
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
    /// Fetches in flight.
    fetches_in_flight: usize,
    /// Uploads in flight.
    uploads_in_flight: usize,
    /// Probes in flight.
    probes_in_flight: usize,
    /// Looks at what HSDirs hold for our address (see `peeking`).
    peeks: peeking::Peeks,
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
            report: Reporter::new(board, events, service.address()),
            address: service.address(),
            frontend,
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
            fetches_in_flight: 0,
            uploads_in_flight: 0,
            probes_in_flight: 0,
            peeks: peeking::Peeks::default(),
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
            self.step(&mut in_flight).await;
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
                Some(Done::Peek { job, held }) => self.on_peeked(job, held),
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
        let periods = self.publish.time_periods();
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
    async fn step(&mut self, in_flight: &mut InFlight) {
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
        self.build_due(now, wall).await;
        self.launch_uploads(&netdir, now, in_flight);
        self.plan_watches(now);
        self.launch_peeks(&netdir, in_flight);
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
        if free_slots(self.timing.max_concurrent_fetches, self.fetches_in_flight) > 0 {
            for b in &self.backends {
                if let Some((at, _)) = b.next_fetch(now, &self.timing.fetch_pacing()) {
                    t = t.min(at);
                }
            }
        }
        for p in self.publish.publish_periods() {
            if let Some((at, _)) = self.build_due_for(p.time_period, now, wall) {
                t = t.min(at);
            }
        }
        if free_slots(self.timing.max_concurrent_uploads, self.uploads_in_flight) > 0 {
            if let Some(at) = self.publish.next_upload(now) {
                t = t.min(at);
            }
        }
        if let Some(at) = self.health_wakeup(now) {
            t = t.min(at);
        }
        if let Some(at) = self.peeks.next_watch() {
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
}
