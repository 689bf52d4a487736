//! Support shared by the integration tests (each test file declares `mod support;`) and by
//! `examples/testnet.rs`: a private Tor network on 127.0.0.1 ([`TestNet`]) and the small
//! protocol clients it needs.
//!
//! Needs C tor (`apt-get install tor`, which brings `tor-gencert`). A missing `tor` makes
//! [`TestNetBuilder::start`] fail with that advice; tests must not skip silently.

// Each test binary uses its own subset of this module; unused parts are not dead code.
#![allow(dead_code)]

pub mod control;
pub mod demo;
pub mod fixtures;
pub mod frontend;
pub mod http;
pub mod socks;
pub mod systemd;
pub mod testnet;
pub mod torrc;

#[allow(unused_imports)] // not every user names the builder type
pub use testnet::{TestNet, TestNetBuilder};
