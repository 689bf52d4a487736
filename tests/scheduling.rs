//! Hours of scheduling in milliseconds: the service runner on `tor-rtmock`'s simulated time,
//! with a scripted network (real descriptors, real crypto, a made-up consensus).
//!
//! The network itself is exercised on a real private Tor network by `tests/e2e.rs`; here we
//! check *when* things happen: first publication, periodic republication, retries with
//! backoff, rebuilds after a rejected revision counter, reaction to backend changes and to a
//! time-period rollover, and refusal to publish without backends.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use onionbalance::config::{Config, InstanceConfig, ServiceConfig};
use onionbalance::descriptor::synthetic::SyntheticBackend;
use onionbalance::descriptor::{
    intake, BackendKeys, FrontendPeriodKeys, PublishPeriod, DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::net::{DirTransport, TransferError};
use onionbalance::service::Timing;
use onionbalance::status::ServicePhase;
use onionbalance::{Balancer, FrontendKey, OnionAddress};
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::{HasRelayIds as _, OwnedCircTarget};
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::testprovider::TestNetDirProvider;
use tor_netdir::{NetDir, NetDirProvider};
use tor_netdoc::doc::netstatus::Lifetime;
use tor_rtcompat::{SleepProvider as _, ToplevelBlockOn as _};
use tor_rtmock::MockRuntime;

/// One upload the scripted network saw.
#[derive(Debug, Clone)]
struct Upload {
    /// Simulated wall-clock time.
    at: SystemTime,
    /// The HSDir.
    hsdir: RsaIdentity,
    /// The descriptor.
    text: Arc<str>,
    /// Whether the scripted HSDir accepted it.
    accepted: bool,
}

/// A scripted HSDir network: serves backend descriptors by blinded id, records uploads, and
/// fails uploads on demand.
#[derive(Default)]
struct Script {
    /// Descriptors HSDirs hold, by blinded id.
    stored: HashMap<HsBlindId, String>,
    /// Every upload.
    uploads: Vec<Upload>,
    /// HSDirs that fail the next N uploads (connection failure).
    fail_next: HashMap<RsaIdentity, u32>,
    /// HSDirs that reject the next N uploads with HTTP 400 (revision counter).
    reject_next: HashMap<RsaIdentity, u32>,
    /// Wall clock of the simulation.
    clock: Option<MockRuntime>,
    /// Every fetch: when, and for which blinded id.
    fetches: Vec<(SystemTime, HsBlindId)>,
}

#[derive(Clone, Default)]
struct ScriptedTransport(Arc<Mutex<Script>>);

impl ScriptedTransport {
    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().expect("script lock")
    }
}

impl DirTransport for ScriptedTransport {
    fn fetch<'a>(
        &'a self,
        _netdir: &'a NetDir,
        _hsdir: OwnedCircTarget,
        blind_id: HsBlindId,
        _max_len: usize,
    ) -> BoxFuture<'a, Result<Option<String>, TransferError>> {
        let mut s = self.lock();
        let at = s.clock.as_ref().map(|c| c.wallclock()).expect("clock");
        s.fetches.push((at, blind_id));
        let r = s.stored.get(&blind_id).cloned();
        Box::pin(async move { Ok(r) })
    }

    fn upload<'a>(
        &'a self,
        _netdir: &'a NetDir,
        hsdir: OwnedCircTarget,
        descriptor: Arc<str>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        let id = *hsdir.rsa_identity().expect("rsa id");
        let mut s = self.lock();
        let at = s.clock.as_ref().map(|c| c.wallclock()).expect("clock");
        let result = if let Some(n) = s.fail_next.get_mut(&id).filter(|n| **n > 0) {
            *n -= 1;
            Err(TransferError::Circuit("scripted failure".into()))
        } else if let Some(n) = s.reject_next.get_mut(&id).filter(|n| **n > 0) {
            *n -= 1;
            Err(TransferError::Status {
                code: 400,
                message: "revision counter too low".into(),
            })
        } else {
            Ok(())
        };
        s.uploads.push(Upload {
            at,
            hsdir: id,
            text: descriptor,
            accepted: result.is_ok(),
        });
        Box::pin(async move { result })
    }
}

/// A consensus with SRVs (so two periods are published) valid from `valid_after`.
fn netdir_at(valid_after: SystemTime) -> NetDir {
    let lifetime = Lifetime::new(
        valid_after,
        valid_after + Duration::from_secs(3600),
        valid_after + Duration::from_secs(3 * 3600),
    )
    .expect("lifetime");
    tor_netdir::testnet::construct_custom_netdir_with_params(
        |_, _, bld| {
            bld.shared_rand_cur(7, [1u8; 32].into(), None)
                .shared_rand_prev(7, [2u8; 32].into(), None);
        },
        std::iter::empty::<(&str, i32)>(),
        Some(lifetime),
    )
    .expect("netdir")
    .unwrap_if_sufficient()
    .expect("sufficient")
}

/// Publish periods of a netdir, as the runner computes them.
fn periods(nd: &NetDir) -> Vec<PublishPeriod> {
    onionbalance::ring::publish_periods(nd)
}

/// Everything a test needs.
struct World {
    rt: MockRuntime,
    transport: ScriptedTransport,
    provider: Arc<TestNetDirProvider>,
    frontend: Arc<FrontendKey>,
    backends: Vec<SyntheticBackend>,
    rng: StdRng,
}

impl World {
    fn new(rt: MockRuntime, n_backends: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(11);
        let transport = ScriptedTransport::default();
        transport.lock().clock = Some(rt.clone());
        let provider = Arc::new(TestNetDirProvider::new());
        provider.set_netdir(netdir_at(rt.wallclock()));
        let frontend = Arc::new(FrontendKey::generate(&mut rng));
        let backends = (0..n_backends)
            .map(|_| SyntheticBackend::generate(&mut rng, 3))
            .collect();
        let mut w = World {
            rt,
            transport,
            provider,
            frontend,
            backends,
            rng,
        };
        for i in 0..n_backends {
            w.backend_publishes(i);
        }
        w
    }

    /// Backend `i` (re)publishes a descriptor for the current consensus's periods.
    fn backend_publishes(&mut self, i: usize) {
        let nd = self.provider.timely_netdir().expect("netdir");
        let now = self.rt.wallclock();
        for p in periods(&nd) {
            let b = &self.backends[i];
            let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
            let text = b.descriptor(&p, now, &mut self.rng).expect("descriptor");
            self.transport.lock().stored.insert(keys.blind_id(), text);
        }
    }

    /// Backend `i` stops: HSDirs no longer have its descriptor.
    fn backend_vanishes(&mut self, i: usize) {
        let nd = self.provider.timely_netdir().expect("netdir");
        for p in periods(&nd) {
            let keys =
                BackendKeys::derive(self.backends[i].address(), p.time_period).expect("keys");
            self.transport.lock().stored.remove(&keys.blind_id());
        }
    }

    fn config(&self) -> Config {
        Config {
            path: PathBuf::from("sim.yaml"),
            services: vec![ServiceConfig {
                key_path: PathBuf::from("sim.key"),
                key: self.frontend.clone(),
                instances: self
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| InstanceConfig {
                        address: b.address(),
                        name: format!("node{}", i + 1),
                    })
                    .collect(),
                pending: vec![],
            }],
            status_socket_location: None,
            warnings: vec![],
        }
    }

    fn launch(&self) -> onionbalance::BalancerHandle {
        let provider: Arc<dyn NetDirProvider> = self.provider.clone();
        Balancer::new(self.config())
            .with_timing(Timing::default())
            .launch_with(self.rt.clone(), provider, Arc::new(self.transport.clone()))
            .expect("launch")
    }

    fn uploads(&self) -> Vec<Upload> {
        self.transport.lock().uploads.clone()
    }

    /// The HSDirs responsible for our descriptor, per period, in the current consensus.
    fn expected_hsdirs(&self) -> HashMap<TimePeriod, HashSet<RsaIdentity>> {
        let nd = self.provider.timely_netdir().expect("netdir");
        periods(&nd)
            .into_iter()
            .map(|p| {
                let keys = FrontendPeriodKeys::derive(&self.frontend, p.time_period).expect("keys");
                let set = onionbalance::ring::upload_hsdirs(&nd, keys.blind_id(), p.time_period)
                    .expect("ring")
                    .into_iter()
                    .map(|h| h.id)
                    .collect();
                (p.time_period, set)
            })
            .collect()
    }

    /// Which period an uploaded descriptor is for, proven by decrypting it as a client would;
    /// with its revision counter and intro points.
    fn decode(&self, text: &str, at: SystemTime) -> (TimePeriod, u64, HashSet<[u8; 32]>) {
        let addr: OnionAddress = self.frontend.address();
        let nd = self.provider.timely_netdir().expect("netdir");
        let mut candidates: Vec<TimePeriod> =
            periods(&nd).into_iter().map(|p| p.time_period).collect();
        // Also the periods around, for rollover tests.
        let extra: Vec<TimePeriod> = candidates
            .iter()
            .flat_map(|tp| [tp.prev(), tp.next()])
            .flatten()
            .collect();
        candidates.extend(extra);
        for tp in candidates {
            let keys = BackendKeys::derive(addr, tp).expect("keys");
            if let Ok(s) = intake(&keys, text, at, DEFAULT_MAX_DESCRIPTOR_LEN) {
                let sids = s
                    .intro_points
                    .iter()
                    .map(|i| *i.ipt_sid_key().as_bytes())
                    .collect();
                return (tp, u64::from(s.revision), sids);
            }
        }
        panic!("uploaded descriptor does not decrypt for the frontend in any nearby period");
    }
}

fn sim(test: impl Fn(MockRuntime) -> BoxFuture<'static, ()>) {
    let start = SystemTime::now();
    let rt = MockRuntime::builder().starting_wallclock(start).build();
    rt.clone().block_on(test(rt));
}

/// First publication reaches every responsible HSDir of every period, with both backends'
/// intro points; nothing is re-uploaded while nothing changes; the periodic republication
/// comes 60–120 minutes later with a higher revision counter.
#[test]
fn publishes_everywhere_then_republishes_periodically() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(5)).await;
            let first = w.uploads();
            let expected = w.expected_hsdirs();
            assert_eq!(expected.len(), 2, "two periods with SRVs");
            let mut got: HashMap<TimePeriod, HashSet<RsaIdentity>> = HashMap::new();
            let all_sids: HashSet<[u8; 32]> = w
                .backends
                .iter()
                .flat_map(|b| b.intro_points.iter().map(|i| *i.ipt_sid_key().as_bytes()))
                .collect();
            let mut first_rev = HashMap::new();
            for u in &first {
                assert!(u.accepted);
                let (tp, rev, sids) = w.decode(&u.text, u.at);
                assert_eq!(sids, all_sids, "both backends' intro points");
                got.entry(tp).or_default().insert(u.hsdir);
                first_rev.insert(tp, rev);
            }
            assert_eq!(got, expected, "every responsible HSDir of every period");
            assert_eq!(
                first.len(),
                expected.values().map(HashSet::len).sum::<usize>(),
                "once each"
            );
            assert!(handle.all_published());
            assert_eq!(handle.status()[0].phase, ServicePhase::Publishing);

            // 59 simulated minutes: fetches happen (every 5 min) but nothing changed.
            rt.advance_by(Duration::from_secs(59 * 60)).await;
            assert_eq!(
                w.uploads().len(),
                first.len(),
                "no upload while nothing changes"
            );

            // By 121 minutes the periodic republication has happened, once, everywhere.
            rt.advance_by(Duration::from_secs(62 * 60)).await;
            let again: Vec<Upload> = w.uploads().into_iter().skip(first.len()).collect();
            assert_eq!(again.len(), first.len(), "republished to every HSDir once");
            for u in &again {
                let (tp, rev, _) = w.decode(&u.text, u.at);
                assert!(rev > first_rev[&tp], "revision counter increased");
                let after = u.at.duration_since(first[0].at).expect("later");
                assert!(
                    after >= Duration::from_secs(60 * 60) && after <= Duration::from_secs(121 * 60),
                    "{after:?}"
                );
            }
            handle.shutdown().await;
        })
    });
}

/// An HSDir that fails is retried with growing delays until it accepts; the others are not
/// bothered again.
#[test]
fn failed_uploads_are_retried_with_backoff() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            let expected = w.expected_hsdirs();
            let flaky = *expected
                .values()
                .next()
                .and_then(|s| s.iter().next())
                .expect("an hsdir");
            // Enough failures that every period this HSDir serves sees several in a row.
            let periods_served = expected.values().filter(|s| s.contains(&flaky)).count();
            let failures_total = 4 * periods_served as u32;
            w.transport.lock().fail_next.insert(flaky, failures_total);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(10 * 60)).await;
            let ups = w.uploads();
            let flaky_ups: Vec<&Upload> = ups.iter().filter(|u| u.hsdir == flaky).collect();
            assert_eq!(
                flaky_ups.iter().filter(|u| !u.accepted).count() as u32,
                failures_total
            );
            // Per period (each has its own backoff): attempts until one success, with delays
            // from the 2 s, 4 s, 8 s... schedule, jittered to 50-100 %.
            let mut by_period: HashMap<TimePeriod, Vec<&Upload>> = HashMap::new();
            for u in &flaky_ups {
                by_period
                    .entry(w.decode(&u.text, u.at).0)
                    .or_default()
                    .push(u);
            }
            assert_eq!(by_period.len(), periods_served);
            for (tp, attempts) in &by_period {
                assert_eq!(attempts.iter().filter(|u| u.accepted).count(), 1, "{tp:?}");
                assert!(
                    attempts.last().is_some_and(|u| u.accepted),
                    "success ends the retries"
                );
                let gaps: Vec<Duration> = attempts
                    .windows(2)
                    .map(|w| w[1].at.duration_since(w[0].at).unwrap_or_default())
                    .collect();
                assert!(!gaps.is_empty());
                for (k, g) in gaps.iter().enumerate() {
                    let nominal = Duration::from_secs(2 << k);
                    assert!(
                        *g >= nominal / 2 && *g <= nominal + Duration::from_secs(1),
                        "{tp:?}: attempt {k}: {gaps:?}"
                    );
                }
            }
            // Every other HSDir got exactly one upload per period it serves.
            let others = ups.iter().filter(|u| u.hsdir != flaky).count();
            let expected_others: usize = expected
                .values()
                .map(|s| s.iter().filter(|h| **h != flaky).count())
                .sum();
            assert_eq!(others, expected_others);
            handle.shutdown().await;
        })
    });
}

/// An HSDir that rejects our revision counter (HTTP 400) makes us build a new descriptor with
/// a higher counter, which it then accepts.
#[test]
fn rejected_revision_counter_triggers_a_new_descriptor() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 1);
            let expected = w.expected_hsdirs();
            let picky = *expected
                .values()
                .next()
                .and_then(|s| s.iter().next())
                .expect("an hsdir");
            w.transport.lock().reject_next.insert(picky, 1);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(60)).await;
            let ups: Vec<Upload> = w
                .uploads()
                .into_iter()
                .filter(|u| u.hsdir == picky)
                .collect();
            let rejected = ups.iter().find(|u| !u.accepted).expect("a rejection");
            let (tp, rejected_rev, _) = w.decode(&rejected.text, rejected.at);
            let accepted_later = ups
                .iter()
                .filter(|u| u.accepted)
                .map(|u| w.decode(&u.text, u.at))
                .any(|(p, rev, _)| p == tp && rev > rejected_rev);
            assert!(accepted_later, "a higher revision was accepted: {ups:?}");
            handle.shutdown().await;
        })
    });
}

/// A backend that republishes with new intro points, and one that vanishes, change what we
/// publish at the next fetch (5 minutes), and the new descriptor goes everywhere.
#[test]
fn backend_changes_are_republished() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 3);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30)).await;
            let n_first = w.uploads().len();
            // Backend 0 gets new intro points; backend 2 stops.
            let mut rng = StdRng::seed_from_u64(99);
            w.backends[0].intro_points = SyntheticBackend::generate(&mut rng, 2).intro_points;
            w.backend_publishes(0);
            w.backend_vanishes(2);
            rt.advance_by(Duration::from_secs(6 * 60)).await;
            let new: Vec<Upload> = w.uploads().into_iter().skip(n_first).collect();
            let expected: usize = w.expected_hsdirs().values().map(HashSet::len).sum();
            assert_eq!(new.len(), expected, "one new upload per HSDir slot");
            let want: HashSet<[u8; 32]> = w.backends[..2]
                .iter()
                .flat_map(|b| b.intro_points.iter().map(|i| *i.ipt_sid_key().as_bytes()))
                .collect();
            for u in &new {
                let (_, _, sids) = w.decode(&u.text, u.at);
                assert_eq!(
                    sids, want,
                    "backend 0's new intro points, none of backend 2's"
                );
            }
            let st = &handle.status()[0];
            assert!(
                st.instances[2]
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("HSDirs"),
                "{st:?}"
            );
            handle.shutdown().await;
        })
    });
}

/// A new consensus in the next time period: the new period's descriptor is built and
/// uploaded to its ring.
#[test]
fn time_period_rollover_publishes_for_the_new_period() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 2);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30)).await;
            let before: HashSet<TimePeriod> = w.expected_hsdirs().keys().copied().collect();
            let n_first = w.uploads().len();
            // A day later: jump the clock, new consensus, backends republish.
            let later = rt.wallclock() + Duration::from_secs(24 * 3600);
            rt.jump_wallclock(later);
            w.provider.set_netdir_and_notify(netdir_at(later)).await;
            w.backend_publishes(0);
            w.backend_publishes(1);
            rt.advance_by(Duration::from_secs(60)).await;
            let after = w.expected_hsdirs();
            let new_periods: Vec<&TimePeriod> =
                after.keys().filter(|p| !before.contains(p)).collect();
            assert!(
                !new_periods.is_empty(),
                "the consensus moved to a new period"
            );
            let new: Vec<Upload> = w.uploads().into_iter().skip(n_first).collect();
            for p in new_periods {
                let got: HashSet<RsaIdentity> = new
                    .iter()
                    .filter(|u| w.decode(&u.text, u.at).0 == *p)
                    .map(|u| u.hsdir)
                    .collect();
                assert_eq!(&got, &after[p], "new period {p:?} published to its ring");
            }
            handle.shutdown().await;
        })
    });
}

/// No backend descriptor anywhere: nothing is published, and the status says why.
#[test]
fn nothing_is_published_without_backends() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 2);
            w.backend_vanishes(0);
            w.backend_vanishes(1);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30 * 60)).await;
            assert!(w.uploads().is_empty());
            assert_eq!(handle.status()[0].phase, ServicePhase::NoBackends);
            assert!(!handle.all_published());
            handle.shutdown().await;
        })
    });
}

/// A backend that stays down is fetched again soon, then less and less often, never more
/// rarely than the regular 5-minute interval.
#[test]
fn missing_backend_refetch_backs_off() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 2);
            w.backend_vanishes(1);
            let nd = w.provider.timely_netdir().expect("netdir");
            let tp = nd.hs_time_period();
            let gone = BackendKeys::derive(w.backends[1].address(), tp)
                .expect("keys")
                .blind_id();
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30 * 60)).await;
            // One round asks several HSDirs at the same instant: count distinct instants.
            let mut rounds: Vec<SystemTime> = w
                .transport
                .lock()
                .fetches
                .iter()
                .filter(|(_, id)| *id == gone)
                .map(|(t, _)| *t)
                .collect();
            rounds.dedup();
            let gaps: Vec<u64> = rounds
                .windows(2)
                .map(|p| p[1].duration_since(p[0]).unwrap_or_default().as_secs())
                .collect();
            assert_eq!(&gaps[..6], &[15, 30, 60, 120, 240, 300], "{gaps:?}");
            assert!(gaps[6..].iter().all(|g| *g == 300), "{gaps:?}");
            // The working backend is still published.
            assert!(handle.all_published());
            handle.shutdown().await;
        })
    });
}
