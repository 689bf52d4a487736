//! `onionbalance status` renders whatever the process at the socket path sends: any JSON
//! must render as a table, never panic.

#![forbid(unsafe_code)]
#![no_main]

use libfuzzer_sys::fuzz_target;

// The renderer lives in the `onionbalance` binary, not the library.
#[path = "../../src/cli/status_table.rs"]
mod status_table;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = status_table::table(&doc);
    }
});
