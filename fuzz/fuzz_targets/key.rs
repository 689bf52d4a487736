//! Key files and onion addresses: any bytes must give a key/address or an error.

#![forbid(unsafe_code)]
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionbalance::{FrontendKey, OnionAddress};

fuzz_target!(|data: &[u8]| {
    let _ = FrontendKey::from_bytes(data, std::path::Path::new("fuzz.key"));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<OnionAddress>();
    }
});
