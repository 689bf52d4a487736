//! The library's front door: run every configured service on an Arti client.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use onionbalance::{Balancer, Config};
//! // An Arti application already has a bootstrapped client:
//! let client = arti_client::TorClient::create_bootstrapped(Default::default()).await?;
//! let config = Config::load(std::path::Path::new("config.yaml"))?;
//! let handle = Balancer::new(config).launch(&client)?;
//! // Wait until every service has a descriptor on the HSDirs:
//! let mut status = handle.status_watch();
//! status
//!     .wait_for(|services| services.iter().all(|s| s.first_published.is_some()))
//!     .await?;
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! One task per frontend service runs on the client's runtime; services are independent
//! (one failing to publish does not hold up another). The handle gives the status (a snapshot,
//! or a watch that wakes on changes), a stream of [events](crate::events), reloads and a clean
//! shutdown.

use std::sync::Arc;

use arti_client::{TorClient, TorClientConfig};
use futures::channel::{mpsc, oneshot};
use futures::future::RemoteHandle;
use tor_netdir::NetDirProvider;
use tor_rtcompat::{PreferredRuntime, Runtime, SpawnExt as _};

use crate::config::{Config, ServiceConfig};
use crate::error::{ErrorKind, HasKind};
use crate::events::{EventSender, EventStream};
use crate::health::{ArtiProber, HealthSignal, Prober};
use crate::net::{ArtiTransport, DirTransport};
use crate::onion::OnionAddress;
pub use crate::service::Timing;
use crate::service::{Network, Outputs, ServiceCommand, ServiceRunner};
use crate::status::{ServiceStatus, StatusBoard};

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// The Tor client cannot give us what we need (built without the onion-service
    /// features, or without a directory manager).
    #[error("the Tor client is not usable for onion-service work")]
    Client(#[source] arti_client::Error),
    /// There is no Tokio runtime to create a client on.
    #[error("no asynchronous runtime to run the Tor client on (call this from within Tokio)")]
    NoRuntime(#[source] std::io::Error),
    /// A task could not be spawned (the runtime is shutting down).
    #[error("could not start a service task")]
    Spawn(#[source] futures::task::SpawnError),
}

impl HasKind for BalancerError {
    fn kind(&self) -> ErrorKind {
        match self {
            BalancerError::Client(_) => ErrorKind::TorClientUnusable,
            BalancerError::NoRuntime(_) | BalancerError::Spawn(_) => ErrorKind::Runtime,
        }
    }
}

/// Runs the services of a [`Config`].
#[derive(Debug, Clone)]
pub struct Balancer {
    /// What to run.
    config: Config,
    /// How fast.
    timing: Timing,
    /// Where runners keep their revision counters, if anywhere.
    state_dir: Option<std::path::PathBuf>,
}

/// One running service.
struct Running {
    /// Its configuration.
    config: ServiceConfig,
    /// Dropping or firing this stops the task.
    stop: oneshot::Sender<()>,
    /// Instructions (config reloads).
    commands: mpsc::UnboundedSender<ServiceCommand>,
    /// Completes when the task has stopped.
    done: RemoteHandle<()>,
}

/// Starts a service task; captures the runtime, consensus source and transport.
type Spawner = Arc<dyn Fn(&ServiceConfig) -> Result<Running, BalancerError> + Send + Sync>;

/// Handle on running services: status, reload and shutdown. Dropping it stops them too.
pub struct BalancerHandle {
    /// The services, in config order.
    services: Vec<Running>,
    /// Starts services added by a reload.
    spawner: Spawner,
    /// The status of every service, in config order.
    board: StatusBoard,
    /// Where the services send their events.
    events: EventSender,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Frontends started.
    pub added: Vec<OnionAddress>,
    /// Frontends stopped.
    pub removed: Vec<OnionAddress>,
    /// Frontends whose instances or authorized clients changed (they keep their other
    /// state).
    pub changed: Vec<OnionAddress>,
    /// Frontends left exactly as they were.
    pub unchanged: Vec<OnionAddress>,
}

impl Balancer {
    /// A balancer for `config`, with default timing.
    pub fn new(config: Config) -> Self {
        Balancer {
            config,
            timing: Timing::default(),
            state_dir: None,
        }
    }

    /// Keeps state (the last revision counter published per period, one small file per
    /// frontend) under `dir`, so that a restart never publishes a
    /// lower revision counter than the HSDirs hold, even after the clock stepped back.
    /// Without it the counters follow the clock alone.
    pub fn with_state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Uses `timing` instead of the defaults (which suit the public Tor network).
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Starts every service on `client`, which must be bootstrapped (or bootstrapping: the
    /// services wait for a usable consensus).
    pub fn launch<R: Runtime>(
        self,
        client: &Arc<TorClient<R>>,
    ) -> Result<BalancerHandle, BalancerError> {
        let dirmgr = client.dirmgr().map_err(BalancerError::Client)?;
        let netdirs: Arc<dyn NetDirProvider> = dirmgr.upcast_arc();
        // Fail now, not on the first upload, if onion-service circuits are unavailable.
        client.hs_circ_pool().map_err(BalancerError::Client)?;
        let transport = Arc::new(ArtiTransport::new(client.clone()));
        let prober: Arc<dyn Prober> = Arc::new(ArtiProber::new(client.clone()));
        self.launch_with(client.runtime().clone(), netdirs, transport, prober)
    }

    /// Starts every service with an explicit runtime, consensus source and transport: the seam
    /// used by tests (simulated time, scripted network).
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn launch_with<R: Runtime, T: DirTransport>(
        self,
        runtime: R,
        netdirs: Arc<dyn NetDirProvider>,
        transport: Arc<T>,
        prober: Arc<dyn Prober>,
    ) -> Result<BalancerHandle, BalancerError> {
        let timing = self.timing.clone();
        let state_dir = self.state_dir.clone();
        let board = StatusBoard::new();
        let events = EventSender::new();
        board.set_services(&addresses(&self.config.services));
        let (spawn_board, spawn_events) = (board.clone(), events.clone());
        let spawner: Spawner = Arc::new(move |svc: &ServiceConfig| {
            let runner = ServiceRunner::new(
                runtime.clone(),
                Network {
                    transport: transport.clone(),
                    prober: prober.clone(),
                    netdirs: netdirs.clone(),
                },
                svc,
                timing.clone(),
                Outputs {
                    board: spawn_board.clone(),
                    events: spawn_events.clone(),
                },
                state_dir.clone(),
            );
            let (stop, stopped) = oneshot::channel();
            let (commands, command_rx) = mpsc::unbounded();
            let done = runtime
                .spawn_with_handle(runner.run(stopped, command_rx))
                .map_err(BalancerError::Spawn)?;
            Ok(Running {
                config: svc.clone(),
                stop,
                commands,
                done,
            })
        });
        let services = self
            .config
            .services
            .iter()
            .map(|svc| spawner(svc))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BalancerHandle {
            services,
            spawner,
            board,
            events,
        })
    }
}

impl BalancerHandle {
    /// A snapshot of every service's status, in config order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.board.snapshot()
    }

    /// The status of every service, in config order, as a watch: `borrow()` reads it, and
    /// `changed()` waits until it differs. It follows reloads, and outlives the handle (then
    /// `changed()` returns an error: the balancer has stopped).
    pub fn status_watch(&self) -> tokio::sync::watch::Receiver<Vec<ServiceStatus>> {
        self.board.subscribe()
    }

    /// A stream of the [events](crate::events::Event) of every service, from now on. Each
    /// call gives an independent stream.
    pub fn events(&self) -> EventStream {
        self.events.subscribe()
    }

    /// True once every service has had a descriptor accepted by at least one HSDir.
    pub fn all_published(&self) -> bool {
        crate::status::all_published(&self.status())
    }

    /// Applies a new configuration: services added start, services removed stop, services
    /// whose instances changed are told so (keeping their state), and the others are left
    /// alone (no needless republication).
    pub async fn reload(&mut self, config: Config) -> Result<ReloadSummary, BalancerError> {
        let mut summary = ReloadSummary::default();
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.services)
            .into_iter()
            .map(Some)
            .collect();
        let mut next = Vec::new();
        let mut stopping = Vec::new();
        // New services go on the status board before they start, so that their first status
        // lands; services being removed stay on it until they are told to stop.
        let mut listed = addresses(&config.services);
        for r in old.iter().flatten() {
            let a = r.config.address().to_string();
            if !listed.contains(&a) {
                listed.push(a);
            }
        }
        self.board.set_services(&listed);
        for svc in &config.services {
            let addr = svc.address();
            let existing = old
                .iter_mut()
                .find(|r| r.as_ref().is_some_and(|r| r.config.address() == addr))
                .and_then(Option::take);
            match existing {
                Some(mut r) => {
                    let instances_changed = r.config.instances != svc.instances;
                    let clients_changed = r.config.client_auth != svc.client_auth;
                    if instances_changed {
                        let _ = r
                            .commands
                            .unbounded_send(ServiceCommand::SetInstances(svc.instances.clone()));
                    }
                    if clients_changed {
                        let _ = r
                            .commands
                            .unbounded_send(ServiceCommand::SetAuthorizedClients(
                                svc.client_auth.clone(),
                            ));
                    }
                    if instances_changed || clients_changed {
                        summary.changed.push(addr);
                    } else {
                        summary.unchanged.push(addr);
                    }
                    r.config = svc.clone();
                    next.push(r);
                }
                None => match (self.spawner)(svc) {
                    Ok(r) => {
                        summary.added.push(addr);
                        next.push(r);
                    }
                    Err(e) => {
                        // Keep what runs; stop nothing on a failed reload.
                        next.extend(old.into_iter().flatten());
                        self.services = next;
                        let running: Vec<ServiceConfig> =
                            self.services.iter().map(|r| r.config.clone()).collect();
                        self.board.set_services(&addresses(&running));
                        return Err(e);
                    }
                },
            }
        }
        for r in old.into_iter().flatten() {
            summary.removed.push(r.config.address());
            let _ = r.stop.send(());
            stopping.push(r.done);
        }
        self.services = next;
        self.board.set_services(&addresses(&config.services));
        futures::future::join_all(stopping).await;
        Ok(summary)
    }

    /// Gives the application's own verdict on backend `instance` (`None` withdraws it), for
    /// every service that lists it: a backend is listed only when neither its probes (if
    /// configured) nor this signal say it is down. Applied at once (no hold-down: the
    /// application decides). Returns whether any service has that backend. A reload keeps
    /// the signal.
    pub fn set_health_signal(&self, instance: OnionAddress, signal: Option<HealthSignal>) -> bool {
        let mut found = false;
        for r in &self.services {
            if r.config.instances.iter().any(|i| i.address == instance) {
                found = true;
                let _ = r
                    .commands
                    .unbounded_send(ServiceCommand::HealthSignal(instance, signal.clone()));
            }
        }
        found
    }

    /// Stops every service and waits until they have stopped.
    pub async fn shutdown(self) {
        let mut done = Vec::new();
        for s in self.services {
            let _ = s.stop.send(());
            done.push(s.done);
        }
        futures::future::join_all(done).await;
    }
}

/// The addresses of `services`, as the status names them.
fn addresses(services: &[ServiceConfig]) -> Vec<String> {
    services.iter().map(|s| s.address().to_string()).collect()
}

/// Creates (without bootstrapping) a Tor client with onionbalance's needs on the current
/// Tokio runtime.
pub fn create_client(
    config: TorClientConfig,
) -> Result<Arc<TorClient<PreferredRuntime>>, BalancerError> {
    let runtime = PreferredRuntime::current().map_err(BalancerError::NoRuntime)?;
    TorClient::with_runtime(runtime)
        .config(config)
        .create_unbootstrapped()
        .map_err(BalancerError::Client)
}
