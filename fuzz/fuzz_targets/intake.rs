//! Backend descriptors come from HSDirs, i.e. from anyone: intake must return an error, never
//! panic, on any input. The keys are those of the C tor fixture `instance0`, so that a corpus
//! seeded with its descriptor (`fuzz/README.md`) gets past the outer checks.

#![forbid(unsafe_code)]
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use onionbalance::descriptor::{intake, BackendKeys};
use onionbalance::OnionAddress;
use tor_hscrypto::time::TimePeriod;

const META: &str = include_str!("../../tests/fixtures/ctor-0.4.9/instance0.toml");

/// The fixture's keys and capture time.
fn fixture() -> &'static (BackendKeys, SystemTime) {
    static F: OnceLock<(BackendKeys, SystemTime)> = OnceLock::new();
    F.get_or_init(|| {
        let meta: toml::Value = toml::from_str(META).expect("fixture metadata");
        let int = |k: &str| meta[k].as_integer().expect(k) as u64;
        let addr: OnionAddress = meta["onion_address"].as_str().expect("address").parse().expect("address");
        let period = TimePeriod::from_parts(
            (int("time_period_length_secs") / 60) as u32,
            int("time_period_interval_num"),
            int("time_period_epoch_offset_secs") as u32,
        );
        let when = UNIX_EPOCH + Duration::from_secs(int("captured_at_unix"));
        (BackendKeys::derive(addr, period).expect("keys"), when)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (keys, when) = fixture();
        let _ = intake(keys, text, *when, 50_000);
    }
});
