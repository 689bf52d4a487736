//! # onionbalance
//!
//! A load balancer for Tor v3 onion services, built on an embedded [Arti] client.
//!
//! An operator runs several *backend* onion services (C tor with
//! `HiddenServiceOnionBalanceInstance 1`) and one *frontend* address whose identity key only
//! this program holds. Onionbalance fetches every backend's descriptor from the HSDirs,
//! collects the introduction points, and publishes a descriptor for the frontend address that
//! lists a fair selection of them, so that clients who type the frontend address land on the
//! backends.
//!
//! This crate is both the `onionbalance` daemon's engine and a library for Arti applications
//! that want to balance onion services themselves, sharing their own [`TorClient`].
//!
//! ## Quick start: balancing inside an Arti application
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use futures::StreamExt as _;
//! use onionbalance::{Balancer, Config, Event};
//!
//! // The application's own Tor client (bootstrapping or bootstrapped).
//! let client = arti_client::TorClient::create_bootstrapped(Default::default()).await?;
//! // The same YAML file the daemon reads (upstream Onionbalance v3's format).
//! let config = Config::load("config.yaml".as_ref())?;
//! let mut handle = Balancer::new(config).launch(&client)?;
//!
//! // What happens, as it happens...
//! let mut events = handle.events();
//! // ...and the status, as a snapshot or as a watch that wakes on every change.
//! let mut status = handle.status_watch();
//! while let Some(event) = events.next().await {
//!     if let Event::Published { service, .. } = &event {
//!         println!("{service} is on the HSDirs");
//!         break;
//!     }
//! }
//! status.changed().await?;
//! println!("{:?}", status.borrow().iter().map(|s| s.phase).collect::<Vec<_>>());
//!
//! handle.reload(Config::load("config.yaml".as_ref())?).await?; // e.g. on SIGHUP
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`Balancer`] borrows the client: one Tor client serves the application's own traffic, its
//! own onion services and the balancing (see `examples/embed.rs`, an Arti application that
//! runs an onion service of its own and balances another one).
//!
//! ## Private and chutney networks
//!
//! Nothing here assumes the public Tor network: give the [`TorClient`] a configuration for your
//! network. [`arti_toml`] writes and reads one ([`arti_toml::PrivateNetwork`] from a chutney
//! `net/nodes` directory, [`arti_toml::load_arti_config`] from a file).
//!
//! ## The pieces, usable alone
//!
//! | module | what it gives |
//! |---|---|
//! | [`balancer`] | [`Balancer`] and its [`BalancerHandle`]: run, watch, reload, stop |
//! | [`config`] | the upstream-compatible YAML [`Config`], validated with file/service/instance context |
//! | [`status`] | what a service is doing: [`ServiceStatus`] and its parts |
//! | [`events`] | what just happened: [`Event`] |
//! | [`error`] | [`ErrorKind`]: what kind of thing failed, for callers and metrics |
//! | [`keys`] | frontend identity keys: generate, load (PKCS#8 PEM, C tor), save (0600) |
//! | [`onion`] | typed, validated v3 [`OnionAddress`]es |
//! | [`client_auth`] | restricted discovery: authorized clients' keys in C tor's formats |
//! | [`descriptor`] | pure functions: verify and decrypt a backend's descriptor, choose intro points, build and sign ours |
//! | [`arti_toml`] | Arti configuration for private (chutney / test) Tor networks |
//! | [`selftest`] | checking a deployment from outside, as `onionbalance check` does |
//! | [`metrics`], [`status_socket`] | the daemon's Prometheus endpoint and status socket, for embedders who want the same |
//! | [`wizard`] | writing a frontend key and config, as `onionbalance config` does |
//!
//! The offline pieces need no network and no runtime:
//!
//! ```
//! use onionbalance::{FrontendKey, OnionAddress};
//!
//! let key = FrontendKey::generate(&mut rand::rng());
//! let address: OnionAddress = key.address();
//! // Addresses are checked (length, checksum, version) when parsed.
//! assert_eq!(address.to_string().parse::<OnionAddress>()?, address);
//! assert!("notanonion.onion".parse::<OnionAddress>().is_err());
//! # Ok::<(), onionbalance::onion::OnionAddressError>(())
//! ```
//!
//! ## Cargo features
//!
//! `testing` exposes the seams this crate's own tests, benches and fuzz targets use (a
//! scripted network and simulated time for the balancer, synthetic backends, the descriptor
//! layers, the HSDir ring). It is not part of the supported API.
//!
//! [Arti]: https://gitlab.torproject.org/tpo/core/arti
//! [`TorClient`]: arti_client::TorClient

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod arti_toml;
pub mod balancer;
pub mod client_auth;
pub mod config;
pub mod descriptor;
pub mod error;
pub mod events;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod onion;
pub mod selftest;
pub mod status;
pub mod status_socket;
pub mod wizard;

mod cli;
mod fetch;
mod files;
mod hsdir;
/// Moving descriptors over Tor (the transport seam).
#[cfg(feature = "testing")]
pub mod net;
/// Moving descriptors over Tor (the transport seam).
#[cfg(not(feature = "testing"))]
mod net;
mod process_metrics;
mod redact;
/// The HSDir hash ring.
#[cfg(feature = "testing")]
pub mod ring;
/// The HSDir hash ring.
#[cfg(not(feature = "testing"))]
mod ring;
/// One frontend kept published: the runner and its timers.
#[cfg(feature = "testing")]
pub mod service;
/// One frontend kept published: the runner and its timers.
#[cfg(not(feature = "testing"))]
mod service;
mod timefmt;

/// The `onionbalance` command (the daemon and its subcommands), for the binary of that
/// name: parses the process's arguments, runs the command and returns its exit status (see
/// `onionbalance(1)`). Not for embedders: it reads the environment, installs a global logger
/// and may run the daemon until a signal.
pub fn main() -> std::process::ExitCode {
    cli::main()
}

/// The `onionbalance-config` command (the config wizard under its upstream name, the same as
/// `onionbalance config`), for the binary of that name. Not for embedders, as [`main`].
pub fn config_main() -> std::process::ExitCode {
    cli::config_main()
}

/// Renders a status document (the status socket's JSON) as `onionbalance status` prints it;
/// for the `status_document` fuzz target.
#[cfg(feature = "testing")]
pub fn status_table(doc: &serde_json::Value) -> String {
    cli::status_table(doc)
}

pub use balancer::{Balancer, BalancerError, BalancerHandle, ReloadSummary};
pub use config::Config;
pub use error::{ErrorKind, HasKind};
pub use events::Event;
pub use keys::FrontendKey;
pub use net::TransferError;
pub use onion::OnionAddress;
pub use status::ServiceStatus;
