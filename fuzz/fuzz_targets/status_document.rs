//! `onionbalance status` renders whatever the process at the socket path sends: any JSON
//! must render as a table, never panic.

#![forbid(unsafe_code)]
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = onionbalance::status_table(&doc);
    }
});
