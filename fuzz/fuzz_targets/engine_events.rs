//! The descriptor engine under any sequence of events: backends' snapshots arriving and
//! leaving (with intro points on shared relays), time passing past their expiry, client
//! lists changing, revision floors from disk, tiny size limits, builds of one descriptor or
//! of variants over rings of any size. No sequence may panic, and what is built must hold:
//! at most 20 intro points, one per relay, revision counters that only go up.

#![forbid(unsafe_code)]
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use onionbalance::descriptor::synthetic::{intro_point_on, periods_around, SyntheticBackend};
use onionbalance::descriptor::{
    intake, intro_point_relay, BackendKeys, BackendSnapshot, Engine, PublishPeriod, RingFacts,
    DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::FrontendKey;
use rand::SeedableRng as _;
use tor_llcrypto::pk::{curve25519, rsa::RsaIdentity};

struct Fixture {
    frontend: Arc<FrontendKey>,
    periods: Vec<PublishPeriod>,
    snapshots: Vec<BackendSnapshot>,
    pool: Vec<tor_netdoc::doc::hsdesc::IntroPointDesc>,
    clients: Vec<curve25519::PublicKey>,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut r = rand::rngs::StdRng::seed_from_u64(3);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let periods = periods_around(now);
        let snapshots = (0..8)
            .map(|_| {
                let b = SyntheticBackend::generate(&mut r, 3);
                let text = b.descriptor(&periods[0], now, &mut r).expect("descriptor");
                let keys = BackendKeys::derive(b.address(), periods[0].time_period).expect("keys");
                intake(&keys, &text, now, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
            })
            .collect();
        // 48 intro points on 16 relays: selections share relays.
        let pool = (0..48u8)
            .filter_map(|i| intro_point_on(&mut r, [i % 16; 20]))
            .collect();
        let clients = (0..20)
            .map(|_| curve25519::PublicKey::from(&curve25519::StaticSecret::random_from_rng(&mut r)))
            .collect();
        Fixture {
            frontend: Arc::new(FrontendKey::generate(&mut r)),
            periods,
            snapshots,
            pool,
            clients,
            now,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut engine = Engine::new(f.frontend.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut active: Vec<BackendSnapshot> = Vec::new();
    let mut now = f.now;
    let mut builds = 0;
    let mut last_revision: [u64; 2] = [0, 0];
    for op in data.chunks(2) {
        let (kind, arg) = (op[0] % 9, usize::from(*op.get(1).unwrap_or(&0)));
        match kind {
            0 if active.len() < 40 => active.push(f.snapshots[arg % f.snapshots.len()].clone()),
            1 if !active.is_empty() => {
                let i = arg % active.len();
                active.remove(i);
            }
            2 if !active.is_empty() => {
                // A backend whose intro points moved to other (maybe shared) relays.
                let i = arg % active.len();
                let n = arg % 4;
                active[i].intro_points =
                    (0..n).map(|k| f.pool[(arg * 7 + k * 13) % f.pool.len()].clone()).collect();
            }
            3 => now += Duration::from_secs(arg as u64 * 600),
            4 => engine.set_authorized_clients(match arg % 3 {
                0 => None,
                _ => Some(f.clients[..arg % f.clients.len()].to_vec()),
            }),
            5 => engine.raise_revision_floor(
                f.periods[arg % f.periods.len()].time_period,
                (u64::from_le_bytes([op[0], op[0], 0, 0, 0, 0, 0, 0]) << (arg % 56)).into(),
            ),
            6 => engine.set_max_len(arg * 400),
            7 | 8 if builds < 3 => {
                builds += 1;
                let pi = arg % f.periods.len();
                let period = f.periods[pi];
                let refs: Vec<&BackendSnapshot> = active.iter().collect();
                let built: Vec<_> = if kind == 7 {
                    engine.build(&period, &refs, now, &mut rng).map(|b| vec![b]).unwrap_or_default()
                } else {
                    let ids: Vec<RsaIdentity> =
                        (0..arg % 24).map(|i| RsaIdentity::from([i as u8; 20])).collect();
                    let fetch = &ids[..ids.len() / 2];
                    let ring = RingFacts { upload: &ids, fetch };
                    engine
                        .build_variants(&period, &refs, &ring, now, &mut rng)
                        .map(|b| b.variants)
                        .unwrap_or_default()
                };
                for b in &built {
                    let rev = u64::from(b.descriptor.revision);
                    assert!(rev > last_revision[pi], "revision went from {} to {rev}", last_revision[pi]);
                    assert!(b.descriptor.intro_points <= 20);
                    // Read back as a client would (when open): one intro point per relay.
                    if engine.authorized_clients().is_none() {
                        let keys = BackendKeys::derive(f.frontend.address(), period.time_period)
                            .expect("keys");
                        let snap = intake(&keys, &b.descriptor.text, now, usize::MAX)
                            .expect("our own descriptor reads back");
                        let relays: HashSet<_> =
                            snap.intro_points.iter().map(intro_point_relay).collect();
                        assert_eq!(relays.len(), snap.intro_points.len(), "two intro points on one relay");
                    }
                }
                if let Some(b) = built.first() {
                    last_revision[pi] = u64::from(b.descriptor.revision);
                }
            }
            _ => {}
        }
    }
});
