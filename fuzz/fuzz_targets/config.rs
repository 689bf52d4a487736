//! Config files are written by hand: any text must give a config or an error, never a panic.

#![forbid(unsafe_code)]
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionbalance::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Key paths resolve against a directory without keys: exercises every check up to
        // key loading, and key-missing reporting.
        let _ = Config::parse(text, std::path::Path::new("/nonexistent/fuzz/config.yaml"));
    }
});
