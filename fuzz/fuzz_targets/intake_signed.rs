//! Intake behind the cryptography: the inner document of a backend descriptor is mutated and
//! then encrypted and signed with the (synthetic) backend's own keys, so that every mutation
//! passes the signature and MAC checks and reaches the inner document's parser and what
//! intake does with its result. Any inner document must give a snapshot or an error.
//!
//! The first input byte chooses how the rest is used: even, as the whole inner document;
//! odd, spliced into a valid inner document (the next two bytes give the offset, the one
//! after how many bytes it replaces), which keeps most of the structure a parser expects.

#![forbid(unsafe_code)]
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use onionbalance::descriptor::layers::{descriptor_with_inner, inner_plaintext};
use onionbalance::descriptor::synthetic::{periods_around, SyntheticBackend};
use onionbalance::descriptor::{intake, BackendKeys, FrontendPeriodKeys, DEFAULT_MAX_DESCRIPTOR_LEN};
use rand::SeedableRng as _;
use tor_hscrypto::RevisionCounter;

struct Fixture {
    keys: FrontendPeriodKeys,
    backend: BackendKeys,
    template: Vec<u8>,
    revision: RevisionCounter,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut r = rand::rngs::StdRng::seed_from_u64(1);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let p = periods_around(now)[0];
        let b = SyntheticBackend::generate(&mut r, 3);
        let keys = FrontendPeriodKeys::derive(&b.key, p.time_period).expect("keys");
        let text = b.descriptor_with_keys(&keys, &p, now, &mut r).expect("descriptor");
        let revision = onionbalance::descriptor::claimed_revision(&text).expect("revision");
        let template =
            inner_plaintext(&text, &keys.blind_id(), &keys.subcredential(), revision).expect("inner");
        let backend = BackendKeys::derive(b.address(), p.time_period).expect("keys");
        Fixture { keys, backend, template, revision, now }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else { return };
    let inner = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let [a, b, n, tail @ ..] = rest else { return };
        let at = usize::from(u16::from_le_bytes([*a, *b])) % (f.template.len() + 1);
        let end = (at + usize::from(*n)).min(f.template.len());
        let mut t = f.template[..at].to_vec();
        t.extend_from_slice(tail);
        t.extend_from_slice(&f.template[end..]);
        t
    };
    let mut r = rand::rngs::StdRng::seed_from_u64(2);
    let Ok(text) = descriptor_with_inner(&f.keys, &inner, f.revision, f.now, &mut r) else { return };
    if let Ok(snap) = intake(&f.backend, &text, f.now, DEFAULT_MAX_DESCRIPTOR_LEN * 4) {
        // Whatever got in is usable: at most 20 intro points, each with its keys.
        assert!(snap.intro_points.len() <= 20);
        let _ = snap.content_key();
    }
});
