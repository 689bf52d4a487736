//! The balancing-round benchmark (`shared/bench-workload.md`): the CPU work of one refresh of
//! one service, with no network.
//!
//! Setup (untimed): K synthetic backends with 3 intro points each (3 link specifiers, random
//! keys) and a signed, encrypted descriptor for the current period, as a backend uploads it.
//!
//! Timed, group `round`:
//! * `k=K`: take in the K descriptors (parse, verify, decrypt with each backend's address,
//!   spread over the machine's cores as the daemon's blocking threads spread them: every
//!   timed iteration verifies all K, and a failure panics),
//!   select at most 20 intro points (one per relay), and build the frontend descriptor for
//!   2 periods side by side, as the daemon does (period signing key re-certified, every
//!   intro point re-certified once per build on all cores, each descriptor signed and
//!   encrypted; variants in parallel).
//!   Per-period keys (blinded keys) are derived once, as the daemon does. For K > 20 one
//!   descriptor cannot list every backend: `k=40` and `k=60` plan and build 6 variants per
//!   period (one per fetch HSDir, 20 intro points each, every backend in two or three).
//! * `k=10-clients=100`: `k=10` with restricted discovery to 100 authorized clients (each
//!   descriptor encrypts its cookie to each of them, plus random entries up to 112).
//! * `k=10-unchanged`: the steady state, a round over the same descriptors the previous round
//!   took in, each in other bytes (C tor encodes once per HSDir): recognising them by their
//!   revision is all the work, and nothing is rebuilt.
//!
//! Group `parts` times one backend intake and one 20-intro-point build on their own.
//! Peak RSS is printed at the end.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, BenchmarkId, Criterion};
use onionbalance::descriptor::synthetic::{periods_around, SyntheticBackend};
use onionbalance::descriptor::{
    build_descriptor, claimed_revision, intake, BackendKeys, BackendSnapshot, BuildRequest,
    BuiltVariants, Engine, FrontendPeriodKeys, PeriodBuild, PublishPeriod, RingFacts,
    DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::FrontendKey;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tor_llcrypto::pk::curve25519;
use tor_llcrypto::pk::rsa::RsaIdentity;

/// K backends with their descriptors.
struct Workload {
    /// The two periods we publish for.
    periods: Vec<PublishPeriod>,
    /// The time of the round.
    now: SystemTime,
    /// The backends' keys for the current period.
    keys: Vec<BackendKeys>,
    /// Two encodings of each backend's descriptor: same revision, other bytes.
    encodings: [Vec<String>; 2],
}

fn workload(k: usize, rng: &mut StdRng) -> Workload {
    let now = SystemTime::now();
    let periods = periods_around(now);
    assert_eq!(periods.len(), 2, "two publish periods");
    let backends: Vec<_> = (0..k).map(|_| SyntheticBackend::generate(rng, 3)).collect();
    let mut make = || -> Vec<String> {
        backends
            .iter()
            .map(|b| {
                b.descriptor(&periods[0], now, rng)
                    .expect("backend descriptor")
            })
            .collect()
    };
    let encodings = [make(), make()];
    let keys = backends
        .iter()
        .map(|b| BackendKeys::derive(b.address(), periods[0].time_period).expect("keys"))
        .collect();
    Workload {
        periods,
        now,
        keys,
        encodings,
    }
}

/// Verifies and decrypts every descriptor of `set`: the intake half of a round, spread over
/// the machine's cores as the daemon's fetches spread theirs over its blocking threads. Every
/// one must verify: a failure panics rather than shrink the timed work.
fn take_in_all(w: &Workload, set: usize) -> Vec<BackendSnapshot> {
    let jobs: Vec<(&BackendKeys, &String)> = w.keys.iter().zip(&w.encodings[set]).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = jobs.len().div_ceil(cores).max(1);
    let take_in = |run: &[(&BackendKeys, &String)]| -> Vec<BackendSnapshot> {
        run.iter()
            .map(|(k, text)| {
                intake(k, text, w.now, DEFAULT_MAX_DESCRIPTOR_LEN)
                    .expect("every descriptor verifies")
            })
            .collect()
    };
    std::thread::scope(|s| {
        let mut runs = jobs.chunks(per_thread);
        let first = runs.next().unwrap_or_default();
        let others: Vec<_> = runs.map(|run| s.spawn(move || take_in(run))).collect();
        let mut all = take_in(first);
        for h in others {
            all.extend(h.join().expect("intake thread"));
        }
        all
    })
}

/// A period's ring as the engine sees it: 8 upload HSDirs, clients fetch from 6 of them (the
/// default parameters, no replica overlap).
struct Ring {
    upload: Vec<RsaIdentity>,
    fetch: Vec<RsaIdentity>,
}

fn ring() -> Ring {
    let upload: Vec<RsaIdentity> = (1u8..=8).map(|i| [i; 20].into()).collect();
    let fetch = upload[..6].to_vec();
    Ring { upload, fetch }
}

/// Builds the frontend descriptors for both periods from `snapshots`, side by side as the
/// daemon builds them: one per period, or one per fetch HSDir when one descriptor cannot list
/// every backend. Every build must succeed.
fn build_all(
    engine: &mut Engine,
    w: &Workload,
    ring: &Ring,
    snapshots: &[BackendSnapshot],
    rng: &mut StdRng,
) -> Vec<BuiltVariants> {
    let facts = RingFacts {
        upload: &ring.upload,
        fetch: &ring.fetch,
    };
    let builds = w
        .periods
        .iter()
        .map(|period| PeriodBuild {
            period,
            snapshots: snapshots.to_vec(),
            ring: facts,
        })
        .collect();
    engine
        .build_periods(builds, w.now, rng)
        .into_iter()
        .map(|b| b.expect("build"))
        .collect()
}

fn round(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2026);
    let mut g = c.benchmark_group("round");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let ring = ring();
    for k in [2usize, 5, 10, 20, 40, 60] {
        let w = workload(k, &mut rng);
        let mut engine = Engine::new(Arc::new(FrontendKey::generate(&mut rng)));
        // Outside the timed loop: one round verifies all K and lists every backend, in one
        // descriptor up to 20 backends, in 6 variants (one per fetch HSDir) beyond.
        let snaps = take_in_all(&w, 0);
        assert_eq!(snaps.len(), k, "every descriptor verified");
        // The timed loop alternates between the two encodings: both must give the same.
        let other = take_in_all(&w, 1);
        assert!(
            other
                .iter()
                .zip(&snaps)
                .all(|(a, b)| a.content_key() == b.content_key()),
            "k={k}: the second encoding lists the same"
        );
        let built = build_all(&mut engine, &w, &ring, &snaps, &mut rng);
        for b in &built {
            assert!(b.plan.left_out.is_empty(), "k={k}: every backend listed");
            let expected_variants = if k <= 20 { 1 } else { ring.fetch.len() };
            assert_eq!(b.variants.len(), expected_variants, "k={k}");
            let listed: usize = b.variants.iter().map(|v| v.descriptor.intro_points).sum();
            let expected = if k <= 20 {
                (3 * k).min(20)
            } else {
                20 * ring.fetch.len()
            };
            assert_eq!(listed, expected, "k={k}");
        }
        let mut set = 0;
        g.bench_function(BenchmarkId::from_parameter(format!("k={k}")), |b| {
            b.iter(|| {
                set ^= 1;
                let snaps = take_in_all(&w, set);
                black_box(build_all(&mut engine, &w, &ring, &snaps, &mut rng))
            })
        });
    }
    {
        let w = workload(10, &mut rng);
        let held: Vec<_> = take_in_all(&w, 0).iter().map(|s| s.revision).collect();
        // The steady state as the runner sees it: the other encoding claims the held revision.
        let unchanged = |set: usize| {
            w.encodings[set]
                .iter()
                .zip(&held)
                .filter(|(text, rev)| claimed_revision(text) == Some(**rev))
                .count()
        };
        assert_eq!(unchanged(1), 10, "other bytes, same revision: recognised");
        g.bench_function(BenchmarkId::from_parameter("k=10-unchanged"), |b| {
            b.iter(|| black_box(unchanged(1)))
        });
    }
    {
        // Restricted discovery: 100 authorized clients, each an `auth-client` entry (a key
        // agreement) in every descriptor, padded to a multiple of 16 with random entries.
        let w = workload(10, &mut rng);
        let mut engine = Engine::new(Arc::new(FrontendKey::generate(&mut rng)));
        let clients: Vec<curve25519::PublicKey> = (0..100)
            .map(|_| (&curve25519::StaticSecret::random_from_rng(&mut rng)).into())
            .collect();
        engine.set_authorized_clients(Some(clients));
        let snaps = take_in_all(&w, 0);
        let built = build_all(&mut engine, &w, &ring, &snaps, &mut rng);
        for b in &built {
            assert_eq!(
                b.variants.len(),
                1,
                "clients=100: one descriptor per period"
            );
            assert_eq!(
                b.variants[0].descriptor.intro_points, 20,
                "clients=100: 20 intro points still fit"
            );
        }
        let mut set = 0;
        g.bench_function(BenchmarkId::from_parameter("k=10-clients=100"), |b| {
            b.iter(|| {
                set ^= 1;
                let snaps = take_in_all(&w, set);
                black_box(build_all(&mut engine, &w, &ring, &snaps, &mut rng))
            })
        });
    }
    g.finish();
}

fn parts(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("parts");
    g.sample_size(30).measurement_time(Duration::from_secs(3));
    let w = workload(1, &mut rng);
    let p = w.periods[0];
    g.bench_function("intake-1", |b| {
        b.iter(|| {
            black_box(
                intake(
                    &w.keys[0],
                    &w.encodings[0][0],
                    w.now,
                    DEFAULT_MAX_DESCRIPTOR_LEN,
                )
                .expect("intake"),
            )
        })
    });
    let frontend = FrontendKey::generate(&mut rng);
    let fkeys = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys");
    let ipts = SyntheticBackend::generate(&mut rng, 20).intro_points;
    g.bench_function("build-20", |b| {
        b.iter(|| {
            let req = BuildRequest {
                intro_points: &ipts,
                revision: 1.into(),
                now: w.now,
                max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
                flow_control: None,
                protocols: Default::default(),
                auth_clients: None,
            };
            black_box(build_descriptor(&fkeys, &req, &mut rng).expect("build"))
        })
    });
    g.bench_function("derive-period-keys", |b| {
        b.iter(|| black_box(FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys")))
    });
    g.finish();
}

criterion_group!(benches, round, parts);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines().filter(|l| l.starts_with("VmHWM")) {
            println!(
                "peak RSS of the benchmark process: {}",
                line.trim_start_matches("VmHWM:").trim()
            );
        }
    }
}
