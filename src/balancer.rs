//! The library's front door: run every configured service on an Arti client.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use onionbalance::{Balancer, Config};
//! // An Arti application already has a bootstrapped client:
//! let client = arti_client::TorClient::create_bootstrapped(Default::default()).await?;
//! let config = Config::load(std::path::Path::new("config.yaml"))?;
//! let handle = Balancer::new(config).launch(&client)?;
//! // ... later:
//! for service in handle.status() {
//!     println!("{} is {:?}", service.onion_address, service.phase);
//! }
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! One task per frontend service runs on the client's runtime; services are independent
//! (one failing to publish does not hold up another). The handle gives status snapshots and a
//! clean shutdown.

use std::sync::{Arc, Mutex};

use arti_client::{TorClient, TorClientConfig};
use futures::channel::{mpsc, oneshot};
use futures::future::RemoteHandle;
use tor_netdir::NetDirProvider;
use tor_rtcompat::{PreferredRuntime, Runtime, SpawnExt as _};

use crate::config::{Config, ServiceConfig};
use crate::net::{ArtiTransport, DirTransport};
use crate::onion::OnionAddress;
use crate::service::{ServiceCommand, ServiceRunner, Timing};
use crate::status::ServiceStatus;

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// The Tor client cannot give us what we need (not bootstrapped, or built without the
    /// onion-service features).
    #[error("the Tor client is not ready for onion-service work: {0}")]
    Client(String),
    /// A task could not be spawned.
    #[error("could not start a service task: {0}")]
    Spawn(String),
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
    /// Its status, updated by its task.
    status: Arc<Mutex<ServiceStatus>>,
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
    /// The status cells of the current services, shared with [`BalancerHandle::status_source`].
    registry: Arc<Mutex<Vec<Arc<Mutex<ServiceStatus>>>>>,
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

    /// Keeps state (the last revision counter published per period, see
    /// [`crate::service::revision_store`]) under `dir`, so that a restart never publishes a
    /// lower revision counter than the HSDirs hold, even after the clock stepped back.
    /// Without it the counters follow the clock alone.
    pub fn with_state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Uses `timing` instead of the defaults.
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
        let dirmgr = client
            .dirmgr()
            .map_err(|e| BalancerError::Client(e.to_string()))?;
        let netdirs: Arc<dyn NetDirProvider> = dirmgr.upcast_arc();
        // Fail now, not on the first upload, if onion-service circuits are unavailable.
        client
            .hs_circ_pool()
            .map_err(|e| BalancerError::Client(e.to_string()))?;
        let transport = Arc::new(ArtiTransport::new(client.clone()));
        self.launch_with(client.runtime().clone(), netdirs, transport)
    }

    /// Starts every service with an explicit runtime, consensus source and transport: the seam
    /// used by tests (simulated time, scripted network) and by unusual embeddings.
    pub fn launch_with<R: Runtime, T: DirTransport>(
        self,
        runtime: R,
        netdirs: Arc<dyn NetDirProvider>,
        transport: Arc<T>,
    ) -> Result<BalancerHandle, BalancerError> {
        let timing = self.timing.clone();
        let state_dir = self.state_dir.clone();
        let spawner: Spawner = Arc::new(move |svc: &ServiceConfig| {
            let status = Arc::new(Mutex::new(ServiceStatus {
                onion_address: svc.address().to_string(),
                ..Default::default()
            }));
            let runner = ServiceRunner::new(
                runtime.clone(),
                transport.clone(),
                netdirs.clone(),
                svc,
                timing.clone(),
                status.clone(),
                state_dir.clone(),
            );
            let (stop, stopped) = oneshot::channel();
            let (commands, command_rx) = mpsc::unbounded();
            let done = runtime
                .spawn_with_handle(runner.run(stopped, command_rx))
                .map_err(|e| BalancerError::Spawn(e.to_string()))?;
            Ok(Running {
                config: svc.clone(),
                status,
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
        let registry = Arc::new(Mutex::new(
            services.iter().map(|s| s.status.clone()).collect(),
        ));
        Ok(BalancerHandle {
            services,
            spawner,
            registry,
        })
    }
}

impl BalancerHandle {
    /// A snapshot of every service's status, in config order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|s| s.status.lock().map(|g| g.clone()).unwrap_or_default())
            .collect()
    }

    /// A function giving [`BalancerHandle::status`] that can outlive borrows of the handle
    /// (for the status socket and metrics); it follows reloads.
    pub fn status_source(&self) -> impl Fn() -> Vec<ServiceStatus> + Send + Sync + 'static {
        let registry = self.registry.clone();
        move || {
            let cells: Vec<Arc<Mutex<ServiceStatus>>> =
                registry.lock().map(|g| g.clone()).unwrap_or_default();
            cells
                .iter()
                .map(|s| s.lock().map(|g| g.clone()).unwrap_or_default())
                .collect()
        }
    }

    /// True once every service has had a descriptor accepted by at least one HSDir.
    pub fn all_published(&self) -> bool {
        self.status().iter().all(|s| s.first_published.is_some())
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
        if let Ok(mut reg) = self.registry.lock() {
            *reg = self.services.iter().map(|s| s.status.clone()).collect();
        }
        futures::future::join_all(stopping).await;
        Ok(summary)
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

/// Creates (without bootstrapping) a Tor client with onionbalance's needs on the current
/// Tokio runtime.
pub fn create_client(
    config: TorClientConfig,
) -> Result<Arc<TorClient<PreferredRuntime>>, BalancerError> {
    let runtime = PreferredRuntime::current().map_err(|e| BalancerError::Client(e.to_string()))?;
    TorClient::with_runtime(runtime)
        .config(config)
        .create_unbootstrapped()
        .map_err(|e| BalancerError::Client(e.to_string()))
}
