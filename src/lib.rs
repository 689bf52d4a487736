//! # onionbalance
//!
//! A load balancer for Tor v3 onion services, built on an embedded [Arti] client.
//!
//! An operator runs several *backend* onion services (C tor with
//! `HiddenServiceOnionBalanceInstance 1`) and one *frontend* address whose identity key only
//! this program holds. Onionbalance fetches every backend's descriptor, collects the
//! introduction points, and publishes a descriptor for the frontend address that lists a fair
//! selection of them, so that clients who type the frontend address land on the backends.
//!
//! The crate is cut so that the protocol core is pure and the network layer is thin:
//!
//! | module | job |
//! |---|---|
//! | [`onion`] | typed, validated v3 onion addresses |
//! | [`keys`] | frontend identity keys: generate, load (PKCS#8 PEM, C tor), save (0600) |
//! | [`config`] | the upstream-compatible YAML config file, validated with file/service/instance context |
//! | [`client_auth`] | restricted discovery: authorized clients' keys in C tor's formats, padding |
//! | [`descriptor`] | intake of backend descriptors, selection of intro points, building our own descriptors (no I/O, time is an argument) |
//! | [`ring`] | which HSDirs hold which descriptor, per time period |
//! | [`net`], [`fetch`] | moving descriptors over 3-hop circuits; fetching one descriptor from its HSDirs |
//! | [`service`] | one frontend kept published: the runner, its backends, publication state and timers |
//! | [`balancer`] | the library's front door: runs the services on an Arti client |
//! | [`status`], [`status_socket`], [`status_table`], [`metrics`] | what an operator sees |
//! | [`arti_toml`] | Arti configuration for private (chutney / test) Tor networks |
//! | [`wizard`] | the `onionbalance config` generator |
//! | [`files`] | reading local files safely: regular files only, bounded sizes |
//!
//! [Arti]: https://gitlab.torproject.org/tpo/core/arti

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod arti_toml;
pub mod balancer;
pub mod client_auth;
pub mod config;
pub mod descriptor;
pub mod fetch;
pub mod files;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod onion;
pub mod ring;
pub mod sd_notify;
pub mod selftest;
pub mod service;
pub mod status;
pub mod status_socket;
pub mod status_table;
pub mod wizard;

pub use balancer::{Balancer, BalancerHandle};
pub use config::Config;
pub use keys::FrontendKey;
pub use onion::OnionAddress;
