//! The balancing-round benchmark (`shared/bench-workload.md`): the CPU work of one refresh of
//! one service, with no network.
//!
//! Setup (untimed): K synthetic backends with 3 intro points each (3 link specifiers, random
//! keys) and a signed, encrypted descriptor for the current period, as a backend uploads it.
//!
//! Timed, group `round`:
//! * `k=K`: take in the K descriptors (parse, verify, decrypt with each backend's address),
//!   select at most 20 intro points, build the frontend descriptor for 2 periods (fresh signing
//!   key, every intro point re-certified, signed, encrypted). Each iteration alternates between
//!   two descriptor sets so every descriptor really is verified again; per-period keys
//!   (blinded keys) are derived once, as the daemon does.
//! * `k=10-unchanged`: the steady state, a round over the same descriptors the previous round
//!   took in: recognising them is all the work.
//!
//! Group `parts` times one backend intake and one 20-intro-point build on their own.
//! Peak RSS is printed at the end.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, BenchmarkId, Criterion};
use onionbalance::descriptor::synthetic::{periods_around, SyntheticBackend};
use onionbalance::descriptor::{
    build_descriptor, intake, BackendKeys, BuildRequest, Engine, FrontendPeriodKeys, PublishPeriod,
    DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::FrontendKey;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tor_hscrypto::time::TimePeriod;

/// K backends with two descriptor sets each.
struct Workload {
    /// The two periods we publish for.
    periods: Vec<PublishPeriod>,
    /// The time of the round.
    now: SystemTime,
    /// The backends.
    backends: Vec<SyntheticBackend>,
    /// Two descriptor texts per backend (built a second apart).
    sets: [Vec<Arc<str>>; 2],
}

fn workload(k: usize, rng: &mut StdRng) -> Workload {
    let now = SystemTime::now();
    let periods = periods_around(now);
    assert_eq!(periods.len(), 2, "two publish periods");
    let backends: Vec<_> = (0..k).map(|_| SyntheticBackend::generate(rng, 3)).collect();
    let mut make = |t: SystemTime| -> Vec<Arc<str>> {
        backends
            .iter()
            .map(|b| {
                Arc::from(
                    b.descriptor(&periods[0], t, rng)
                        .expect("backend descriptor"),
                )
            })
            .collect()
    };
    let sets = [make(now - Duration::from_secs(1)), make(now)];
    Workload {
        periods,
        now,
        backends,
        sets,
    }
}

fn engine_for(w: &Workload, rng: &mut StdRng) -> Engine {
    Engine::new(
        Arc::new(FrontendKey::generate(rng)),
        w.backends.iter().map(|b| b.address()),
    )
}

fn items(w: &Workload, set: usize, tp: TimePeriod) -> Vec<(usize, TimePeriod, Arc<str>)> {
    w.sets[set]
        .iter()
        .enumerate()
        .map(|(i, t)| (i, tp, t.clone()))
        .collect()
}

fn round(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2026);
    let mut g = c.benchmark_group("round");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    for k in [2usize, 5, 10, 20] {
        let w = workload(k, &mut rng);
        let tp = w.periods[0].time_period;
        let mut engine = engine_for(&w, &mut rng);
        // Warm the per-period key caches, as a running daemon has them.
        engine.take_in_many(items(&w, 0, tp), w.now);
        engine.build(&w.periods, w.now, &mut rng).expect("build");
        let mut set = 0;
        g.bench_function(BenchmarkId::from_parameter(format!("k={k}")), |b| {
            b.iter(|| {
                set ^= 1;
                let results = engine.take_in_many(items(&w, set, tp), w.now);
                debug_assert!(results.iter().all(|r| matches!(r, Some(Ok(_)))));
                let built = engine.build(&w.periods, w.now, &mut rng).expect("build");
                black_box(built)
            })
        });
    }
    {
        let w = workload(10, &mut rng);
        let tp = w.periods[0].time_period;
        let mut engine = engine_for(&w, &mut rng);
        engine.take_in_many(items(&w, 0, tp), w.now);
        engine.build(&w.periods, w.now, &mut rng).expect("build");
        g.bench_function(BenchmarkId::from_parameter("k=10-unchanged"), |b| {
            b.iter(|| {
                let results = engine.take_in_many(items(&w, 0, tp), w.now);
                let built = if engine.needs_build() {
                    Some(engine.build(&w.periods, w.now, &mut rng).expect("build"))
                } else {
                    None
                };
                black_box((results, built))
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
    let keys = BackendKeys::derive(w.backends[0].address(), p.time_period).expect("keys");
    g.bench_function("intake-1", |b| {
        b.iter(|| {
            black_box(
                intake(&keys, &w.sets[0][0], w.now, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake"),
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
