//! onionbalance's test support, one crate for every user: the integration tests and the
//! examples (`examples/testnet.rs`, `examples/demo.rs`) depend on it as an ordinary
//! dev-dependency.
//!
//! It gives a private Tor network on 127.0.0.1 ([`TestNet`]: C tor authorities, relays,
//! onion-service backends in Onionbalance instance mode, a C tor client), the small protocol
//! clients the tests need ([`control`], [`socks`], [`http`]), the frontend under test
//! ([`frontend`]: the `onionbalance` binary as a child process, page loads counted),
//! systemd's side of readiness ([`systemd`]), captured C tor descriptors ([`fixtures`]) and
//! the demo's core ([`demo`]).
//!
//! Needs C tor (`apt-get install tor`, which brings `tor-gencert`). A missing `tor` makes
//! [`TestNetBuilder::start`] fail with that advice; tests must not skip silently.
//!
//! Not published: its API follows what onionbalance's own tests need.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod demo;
pub mod fixtures;
pub mod frontend;
pub mod http;
pub mod sim;
pub mod sim_report;
pub mod socks;
pub mod systemd;
pub mod testnet;
pub mod torrc;

pub use testnet::{TestNet, TestNetBuilder};
