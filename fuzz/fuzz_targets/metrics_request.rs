//! The metrics endpoint reads requests from any local process: any bytes must give a
//! decision, never a panic.

#![forbid(unsafe_code)]
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionbalance::metrics::{parse_request, Request};

fuzz_target!(|data: &[u8]| {
    let r = parse_request(data);
    if r == Request::Metrics {
        // Only a GET of /metrics is ever served.
        assert!(data.starts_with(b"GET /metrics"));
    }
});
