//! What an HSDir answers comes from anyone on the network: any bytes, read as the answer to a
//! descriptor fetch or to an upload, must give an outcome or an error, never a panic, and
//! never more than the size limit of the fetch (compressed bodies included).

#![forbid(unsafe_code)]
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use onionbalance::net::{exchange_fetch, exchange_upload, CannedStream};
use tor_hscrypto::pk::HsBlindId;

/// Limit given to the fetch, as the daemon gives the consensus's `hsdir_max_desc_size`.
const MAX_LEN: usize = 50_000;

fn runtime() -> &'static tor_rtmock::MockRuntime {
    static RT: OnceLock<tor_rtmock::MockRuntime> = OnceLock::new();
    RT.get_or_init(tor_rtmock::MockRuntime::new)
}

fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    let mut stream = CannedStream::new(data.to_vec());
    let fetched = futures::executor::block_on(exchange_fetch(
        rt,
        &mut stream,
        HsBlindId::from([3u8; 32]),
        MAX_LEN,
        None,
    ));
    if let Ok(Some(body)) = &fetched {
        assert!(body.len() <= MAX_LEN, "a body of {} bytes got through", body.len());
    }
    let mut stream = CannedStream::new(data.to_vec());
    let _ = futures::executor::block_on(exchange_upload(rt, &mut stream, Arc::from("x"), None));
});
