//! Hours of scheduling in milliseconds: the service runner on `tor-rtmock`'s simulated time,
//! with a scripted network (real descriptors, real crypto, a made-up consensus).
//!
//! The network itself is exercised on a real private Tor network by `tests/e2e.rs`; here we
//! check *when* things happen: first publication, periodic republication, retries with
//! backoff, rebuilds after a rejected revision counter, reaction to backend changes and to a
//! time-period rollover, and refusal to publish without backends.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use onionbalance::config::{Config, HealthCheckConfig, InstanceConfig, ServiceConfig};
use onionbalance::descriptor::synthetic::SyntheticBackend;
use onionbalance::descriptor::{
    build_descriptor, claimed_revision, intake, BackendKeys, BuildRequest, FrontendPeriodKeys,
    PublishPeriod, DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::health::{HealthSignal, ProbeError, Prober, HOLD_DOWN};
use onionbalance::net::{DirTransport, TransferError};
use onionbalance::service::Timing;
use onionbalance::status::{BackendHealth, ServicePhase};
use onionbalance::{Balancer, Event, FrontendKey, OnionAddress};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_linkspec::{HasRelayIds as _, OwnedCircTarget};
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::testprovider::TestNetDirProvider;
use tor_netdir::{NetDir, NetDirProvider};
use tor_netdoc::doc::hsdesc::{HsDesc, IntroPointDesc};
use tor_netdoc::doc::netstatus::Lifetime;
use tor_rtcompat::{SleepProvider as _, ToplevelBlockOn as _};
use tor_rtmock::MockRuntime;

/// One upload the scripted network saw.
#[derive(Debug, Clone)]
struct Upload {
    /// Simulated wall-clock time.
    at: SystemTime,
    /// Simulated monotonic time.
    when: Instant,
    /// The HSDir.
    hsdir: RsaIdentity,
    /// The descriptor.
    text: Arc<str>,
    /// The frontend period it is for (recognised by its blinded key), if recognised.
    period: Option<TimePeriod>,
    /// The revision counter it claims.
    revision: u64,
    /// Whether the scripted HSDir accepted it.
    accepted: bool,
}

/// A scripted HSDir network. Like real HSDirs: every HSDir holds its *own encoding* of a
/// backend's descriptor (C tor encodes once per HSDir upload), and an HSDir refuses (HTTP
/// 400) a frontend descriptor whose revision counter is not above the one it holds. On
/// demand: HSDirs that fail the next uploads, that refuse everything, or that never answer.
#[derive(Default)]
struct Script {
    /// Backend descriptors each HSDir holds: by (blinded id, HSDir).
    stored: HashMap<(HsBlindId, RsaIdentity), String>,
    /// Every upload.
    uploads: Vec<Upload>,
    /// The revision each HSDir holds for each frontend blinded id.
    held: HashMap<(RsaIdentity, HsBlindId), u64>,
    /// HSDirs that fail the next N uploads (connection failure).
    fail_next: HashMap<RsaIdentity, u32>,
    /// HSDirs that refuse every upload with HTTP 400.
    refuse_always: HashSet<RsaIdentity>,
    /// (HSDir, blinded id): the next upload there is stored but its answer never arrives
    /// (the attempt times out on our side), as when a circuit dies after the HSDir stored.
    store_then_lose_answer: HashSet<(RsaIdentity, HsBlindId)>,
    /// HSDirs that never answer (the request hangs until our timeout).
    hang: HashSet<RsaIdentity>,
    /// Blinded ids whose fetches hang at every HSDir (a backend behind a broken ring).
    hang_fetch_for: HashSet<HsBlindId>,
    /// Blinded ids whose next N fetches fail before reaching the HSDir (no circuit yet, as
    /// right after bootstrap).
    fail_fetch_for: HashMap<HsBlindId, u32>,
    /// Until this (simulated) time every fetch fails as Arti fails right after a bootstrap
    /// from cached state: the vanguard manager has no vanguards yet.
    not_ready_until: Option<SystemTime>,
    /// Fetches of the frontend's own descriptor (peeks) answer after this long, with what
    /// the HSDir held when asked: the HSDir answered at once, the circuit back was slow.
    slow_peeks: Option<Duration>,
    /// Simulation clock.
    clock: Option<MockRuntime>,
    /// The frontend, to recognise which period an upload is for.
    frontend: Option<Arc<FrontendKey>>,
    /// Frontend blinded ids by period (cache).
    front_ids: HashMap<TimePeriod, HsBlindId>,
    /// Every fetch: when, for which blinded id, at which HSDir.
    fetches: Vec<(SystemTime, HsBlindId, RsaIdentity)>,
    /// Backends whose probes fail, and how.
    unhealthy: HashMap<OnionAddress, Unhealthy>,
    /// Every probe: when (simulated), which backend.
    probes: Vec<(Instant, OnionAddress)>,
}

/// How a scripted backend fails its health probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unhealthy {
    /// Its application answers with an error status (a broken deploy).
    Errors,
    /// Nothing answers until the probe's timeout (its tor is gone).
    Silent,
}

impl Script {
    /// The frontend period and blinded id `text` is for, among the periods of `nd`.
    fn recognise(&mut self, nd: &NetDir, text: &str) -> Option<(TimePeriod, HsBlindId)> {
        let frontend = self.frontend.clone()?;
        for p in periods(nd) {
            let tp = p.time_period;
            let id = *self.front_ids.entry(tp).or_insert_with(|| {
                FrontendPeriodKeys::derive(&frontend, tp)
                    .expect("keys")
                    .blind_id()
            });
            if HsDesc::parse(text, &id).is_ok() {
                return Some((tp, id));
            }
        }
        None
    }
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
        hsdir: OwnedCircTarget,
        blind_id: HsBlindId,
        _max_len: usize,
    ) -> BoxFuture<'a, Result<Option<String>, TransferError>> {
        let id = *hsdir.rsa_identity().expect("rsa id");
        let mut s = self.lock();
        let at = s.clock.as_ref().map(|c| c.wallclock()).expect("clock");
        s.fetches.push((at, blind_id, id));
        if s.hang.contains(&id) || s.hang_fetch_for.contains(&blind_id) {
            return Box::pin(futures::future::pending());
        }
        if s.not_ready_until.is_some_and(|t| at < t) {
            return Box::pin(async {
                Err(TransferError::Circuit(Box::new(
                    tor_circmgr::Error::VanguardMgrInit(
                        tor_guardmgr::vanguards::VanguardMgrError::BootstrapRequired {
                            action: "select vanguard",
                        },
                    ),
                )))
            });
        }
        if let Some(n) = s.fail_fetch_for.get_mut(&blind_id).filter(|n| **n > 0) {
            *n -= 1;
            return Box::pin(async {
                Err(TransferError::Circuit(Box::new(
                    tor_circmgr::Error::CircTimeout(None),
                )))
            });
        }
        let r = s.stored.get(&(blind_id, id)).cloned();
        let is_peek = s.front_ids.values().any(|f| *f == blind_id);
        if let (Some(delay), true) = (s.slow_peeks, is_peek) {
            let clock = s.clock.clone().expect("clock");
            return Box::pin(async move {
                clock.sleep(delay).await;
                Ok(r)
            });
        }
        Box::pin(async move { Ok(r) })
    }

    fn upload<'a>(
        &'a self,
        netdir: &'a NetDir,
        hsdir: OwnedCircTarget,
        descriptor: Arc<str>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        let id = *hsdir.rsa_identity().expect("rsa id");
        let mut s = self.lock();
        let clock = s.clock.clone().expect("clock");
        let recognised = s.recognise(netdir, &descriptor);
        let revision = claimed_revision(&descriptor).map_or(0, u64::from);
        let hang = s.hang.contains(&id);
        let result = if hang {
            Err(TransferError::Timeout(Duration::ZERO)) // never delivered: see below
        } else if let Some(n) = s.fail_next.get_mut(&id).filter(|n| **n > 0) {
            *n -= 1;
            // Arti gave up building the circuit in time: a failure that is not a refusal.
            Err(TransferError::Circuit(Box::new(
                tor_circmgr::Error::CircTimeout(None),
            )))
        } else if s.refuse_always.contains(&id) {
            Err(TransferError::Status {
                code: 400,
                message: "scripted refusal".into(),
            })
        } else {
            match recognised {
                Some((_, blind)) => {
                    let held = s.held.entry((id, blind)).or_insert(0);
                    if revision <= *held && *held != 0 {
                        Err(TransferError::Status {
                            code: 400,
                            message: "revision counter too low".into(),
                        })
                    } else {
                        *held = revision;
                        // As a real HSDir: what it stores, it serves.
                        s.stored.insert((blind, id), descriptor.to_string());
                        if s.store_then_lose_answer.remove(&(id, blind)) {
                            Err(TransferError::Timeout(Duration::ZERO))
                        } else {
                            Ok(())
                        }
                    }
                }
                None => Err(TransferError::Status {
                    code: 400,
                    message: "not a descriptor for a period in the consensus".into(),
                }),
            }
        };
        s.uploads.push(Upload {
            at: clock.wallclock(),
            when: clock.now(),
            hsdir: id,
            text: descriptor,
            period: recognised.map(|(tp, _)| tp),
            revision,
            accepted: result.is_ok(),
        });
        if hang {
            return Box::pin(futures::future::pending());
        }
        Box::pin(async move { result })
    }
}

impl Prober for ScriptedTransport {
    fn probe(
        &self,
        backend: OnionAddress,
        _check: &HealthCheckConfig,
    ) -> BoxFuture<'static, Result<(), ProbeError>> {
        let mut s = self.lock();
        let now = s.clock.as_ref().map(|c| c.now()).expect("clock");
        s.probes.push((now, backend));
        match s.unhealthy.get(&backend) {
            None => Box::pin(async { Ok(()) }),
            Some(Unhealthy::Errors) => Box::pin(async { Err(ProbeError::HttpStatus(503)) }),
            Some(Unhealthy::Silent) => Box::pin(futures::future::pending()),
        }
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
            // A new shared random value every day, as the authorities make them.
            let day = valid_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 86_400);
            bld.shared_rand_cur(7, [(day % 251) as u8 + 1; 32].into(), None)
                .shared_rand_prev(7, [((day + 250) % 251) as u8 + 1; 32].into(), None);
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

/// A simulated C tor backend: per period its own intro points (C tor keeps separate intro
/// points for its current and next descriptors), re-uploaded with a higher revision counter.
struct SimBackend {
    /// Identity key (and scratch intro points for encoding).
    inner: SyntheticBackend,
    /// Intro points per period.
    per_period: HashMap<TimePeriod, Vec<IntroPointDesc>>,
}

/// Everything a test needs.
struct World {
    rt: MockRuntime,
    transport: ScriptedTransport,
    provider: Arc<TestNetDirProvider>,
    frontend: Arc<FrontendKey>,
    backends: Vec<SimBackend>,
    rng: StdRng,
    state_dir: Option<PathBuf>,
}

impl World {
    fn new(rt: MockRuntime, n_backends: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(11);
        let transport = ScriptedTransport::default();
        let provider = Arc::new(TestNetDirProvider::new());
        provider.set_netdir(netdir_at(rt.wallclock()));
        let frontend = Arc::new(FrontendKey::generate(&mut rng));
        {
            let mut s = transport.lock();
            s.clock = Some(rt.clone());
            s.frontend = Some(frontend.clone());
        }
        let backends = (0..n_backends)
            .map(|_| SimBackend {
                inner: SyntheticBackend::generate(&mut rng, 0),
                per_period: HashMap::new(),
            })
            .collect();
        let mut w = World {
            rt,
            transport,
            provider,
            frontend,
            backends,
            rng,
            state_dir: None,
        };
        for i in 0..n_backends {
            w.backend_publishes(i);
        }
        w
    }

    /// Backend `i` (re)uploads its descriptors for the current consensus's periods, one
    /// encoding per HSDir of each period's ring, as C tor does. New periods get new intro
    /// points; known periods keep theirs (the revision counter goes up).
    fn backend_publishes(&mut self, i: usize) {
        let nd = self.provider.timely_netdir().expect("netdir");
        let now = self.rt.wallclock();
        let rng = &mut self.rng;
        let b = &mut self.backends[i];
        let live: Vec<TimePeriod> = periods(&nd).iter().map(|p| p.time_period).collect();
        b.per_period.retain(|tp, _| live.contains(tp));
        for p in periods(&nd) {
            let ipts = b
                .per_period
                .entry(p.time_period)
                .or_insert_with(|| SyntheticBackend::generate(rng, 3).intro_points)
                .clone();
            b.inner.intro_points = ipts;
            let keys = BackendKeys::derive(b.inner.address(), p.time_period).expect("keys");
            let ring = onionbalance::ring::upload_hsdirs(&nd, keys.blind_id(), p.time_period)
                .expect("ring");
            for h in ring {
                let text = b.inner.descriptor(&p, now, rng).expect("descriptor");
                self.transport
                    .lock()
                    .stored
                    .insert((keys.blind_id(), h.id), text);
            }
        }
    }

    /// Backend `i` restarts: new intro points in every period, uploaded at once.
    fn backend_restarts(&mut self, i: usize) {
        self.backends[i].per_period.clear();
        self.backend_publishes(i);
    }

    /// Backend `i`'s blinded ids for the periods of the current consensus.
    fn blind_ids_of(&self, i: usize) -> Vec<HsBlindId> {
        let addr = self.backends[i].inner.address();
        let nd = self.provider.timely_netdir().expect("netdir");
        periods(&nd)
            .iter()
            .map(|p| {
                BackendKeys::derive(addr, p.time_period)
                    .expect("keys")
                    .blind_id()
            })
            .collect()
    }

    /// Backend `i` is gone and HSDirs no longer have its descriptor (404 everywhere).
    fn backend_vanishes(&mut self, i: usize) {
        let ids = self.blind_ids_of(i);
        self.transport
            .lock()
            .stored
            .retain(|(id, _), _| !ids.contains(id));
    }

    /// The session keys of backend `i`'s intro points in period `tp`.
    fn sids_of(&self, i: usize, tp: TimePeriod) -> HashSet<[u8; 32]> {
        self.backends[i]
            .per_period
            .get(&tp)
            .map(|v| v.iter().map(|x| *x.ipt_sid_key().as_bytes()).collect())
            .unwrap_or_default()
    }

    /// Every intro point session key backend `i` ever had in the periods it knows now.
    fn all_sids_of(&self, i: usize) -> HashSet<[u8; 32]> {
        self.backends[i]
            .per_period
            .values()
            .flatten()
            .map(|x| *x.ipt_sid_key().as_bytes())
            .collect()
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
                    .map(|(i, b)| InstanceConfig::new(b.inner.address(), format!("node{}", i + 1)))
                    .collect(),
                pending: vec![],
                client_auth: None,
                backend_port: None,
                health_check: None,
            }],
            status_socket_location: None,
            warnings: vec![],
        }
    }

    fn launch(&self) -> onionbalance::BalancerHandle {
        self.launch_config(self.config())
    }

    fn launch_config(&self, config: Config) -> onionbalance::BalancerHandle {
        self.launch_config_timing(config, Timing::default())
    }

    fn launch_config_timing(&self, config: Config, timing: Timing) -> onionbalance::BalancerHandle {
        let provider: Arc<dyn NetDirProvider> = self.provider.clone();
        let mut b = Balancer::new(config).with_timing(timing);
        if let Some(d) = &self.state_dir {
            b = b.with_state_dir(d.clone());
        }
        b.launch_with(
            self.rt.clone(),
            provider,
            Arc::new(self.transport.clone()),
            Arc::new(self.transport.clone()),
        )
        .expect("launch")
    }

    /// A new consensus, valid from now (the authorities vote every hour).
    async fn new_consensus(&self) {
        self.provider
            .set_netdir_and_notify(netdir_at(self.rt.wallclock()))
            .await;
    }

    /// The first HSDir of the first period already holds the revision counter we would use
    /// `ahead` from now (a run whose clock was ahead, or another publisher): it refuses our
    /// descriptors until our counter passes it. Returns (period, HSDir, that counter).
    fn hsdir_holds_revision_ahead(
        &self,
        ahead: Duration,
    ) -> (TimePeriod, RsaIdentity, RevisionCounter) {
        let expected = self.expected_hsdirs();
        let (&tp, set) = expected.iter().next().expect("a period");
        let picky = *set.iter().next().expect("an hsdir");
        let nd = self.provider.timely_netdir().expect("netdir");
        let p = periods(&nd)
            .into_iter()
            .find(|p| p.time_period == tp)
            .expect("period");
        let keys = FrontendPeriodKeys::derive(&self.frontend, tp).expect("keys");
        let counter = keys
            .revision_counter(p.srv_start, self.rt.wallclock() + ahead, None)
            .expect("rev");
        self.transport
            .lock()
            .held
            .insert((picky, keys.blind_id()), u64::from(counter));
        (tp, picky, counter)
    }

    /// Another publisher of our address (C tor before a move, another frontend with the
    /// same key) left a descriptor with the counter we would use `ahead` from now on the
    /// first HSDir of the first period: signed with our key, served to whoever asks, and
    /// refusing anything lower. Returns (period, HSDir, that counter).
    fn other_publisher_ahead(&self, ahead: Duration) -> (TimePeriod, RsaIdentity, RevisionCounter) {
        let (tp, picky, counter) = self.hsdir_holds_revision_ahead(ahead);
        let keys = FrontendPeriodKeys::derive(&self.frontend, tp).expect("keys");
        let mut rng = StdRng::seed_from_u64(7);
        let ip = onionbalance::descriptor::synthetic::intro_point(&mut rng).expect("intro point");
        let req = BuildRequest {
            intro_points: &[ip],
            revision: counter,
            now: self.rt.wallclock(),
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
            flow_control: None,
            protocols: Default::default(),
            auth_clients: None,
        };
        let built = build_descriptor(&keys, &req, &mut rng).expect("their descriptor");
        self.transport
            .lock()
            .stored
            .insert((keys.blind_id(), picky), built.text.to_string());
        (tp, picky, counter)
    }

    /// What the HSDirs hold for the frontend now: (period, HSDir, intro point keys listed),
    /// decrypted as a client would.
    fn frontend_held(&self) -> Vec<(TimePeriod, RsaIdentity, HashSet<[u8; 32]>)> {
        let now = self.rt.wallclock();
        let ours: HashSet<HsBlindId> = {
            let s = self.transport.lock();
            s.held.keys().map(|(_, b)| *b).collect()
        };
        let texts: Vec<(RsaIdentity, String)> = self
            .transport
            .lock()
            .stored
            .iter()
            .filter(|((b, _), _)| ours.contains(b))
            .map(|((_, h), t)| (*h, t.clone()))
            .collect();
        texts
            .into_iter()
            .map(|(h, t)| {
                let (tp, _, sids) = self.decode(&t, now);
                (tp, h, sids)
            })
            .collect()
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
    let rt = MockRuntime::builder()
        .starting_wallclock(sim_start())
        .build();
    rt.clone().block_on(test(rt));
}

/// Where a test's simulated clock starts: the real time, so that runs at different hours meet
/// the two halves of the day's time period (publishing with the previous or with the next
/// period beside the current one). `SIM_START_UNIX=SECS` replays a run that failed at a
/// given hour; each test prints the start it used.
fn sim_start() -> SystemTime {
    let now = SystemTime::now();
    let start = match std::env::var("SIM_START_UNIX") {
        Ok(secs) => {
            let secs: u64 = secs.parse().expect("SIM_START_UNIX: seconds since 1970");
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
        }
        Err(_) => now,
    };
    let secs = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!("simulated clock starts at {secs} (replay with SIM_START_UNIX={secs})");
    start
}

/// Per period, each distinct revision uploaded and when it was first seen: one per build.
fn builds(ups: &[Upload]) -> HashMap<TimePeriod, Vec<(u64, Instant)>> {
    let mut m: HashMap<TimePeriod, Vec<(u64, Instant)>> = HashMap::new();
    for u in ups {
        if let Some(tp) = u.period {
            let v = m.entry(tp).or_default();
            if !v.iter().any(|(r, _)| *r == u.revision) {
                v.push((u.revision, u.when));
            }
        }
    }
    m
}

/// First publication reaches every responsible HSDir of every period once; each period's
/// descriptor lists the backends' intro points *of that period*; nothing is re-uploaded
/// while nothing changes, although every fetch returns another encoding of the backends'
/// descriptors; the periodic refresh comes 60–120 minutes later with a higher counter.
#[test]
fn publishes_everywhere_then_refreshes_periodically() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(5)).await;
            let first = w.uploads();
            let expected = w.expected_hsdirs();
            assert_eq!(expected.len(), 2, "two periods with SRVs");
            let mut got: HashMap<TimePeriod, HashSet<RsaIdentity>> = HashMap::new();
            let mut first_rev = HashMap::new();
            for u in &first {
                assert!(u.accepted);
                let (tp, rev, sids) = w.decode(&u.text, u.at);
                let want: HashSet<[u8; 32]> =
                    w.sids_of(0, tp).union(&w.sids_of(1, tp)).copied().collect();
                assert_eq!(sids, want, "both backends' intro points of period {tp:?}");
                got.entry(tp).or_default().insert(u.hsdir);
                first_rev.insert(tp, rev);
            }
            let tps: Vec<TimePeriod> = expected.keys().copied().collect();
            assert!(
                w.sids_of(0, tps[0]).is_disjoint(&w.sids_of(0, tps[1])),
                "the backends keep other intro points per period"
            );
            assert_eq!(got, expected, "every responsible HSDir of every period");
            assert_eq!(
                first.len(),
                expected.values().map(HashSet::len).sum::<usize>(),
                "once each"
            );
            assert!(handle.all_published());
            assert_eq!(handle.status()[0].phase, ServicePhase::Publishing);

            // 59 simulated minutes: a fetch every minute per backend, each answered with
            // another encoding; nothing changed, nothing is uploaded.
            rt.advance_by(Duration::from_secs(59 * 60)).await;
            let (fetches, looks) = {
                let s = w.transport.lock();
                let ours: HashSet<HsBlindId> = s.held.keys().map(|(_, b)| *b).collect();
                let looks = s
                    .fetches
                    .iter()
                    .filter(|(_, b, _)| ours.contains(b))
                    .count();
                (s.fetches.len() - looks, looks)
            };
            // The watch: one look per period at one of its HSDirs every 5 minutes, once every
            // HSDir holds our descriptor; each finds ours, so nothing is uploaded again.
            assert!(
                (2 * 10..=2 * 12).contains(&looks),
                "one look per period every 5 minutes: {looks}"
            );
            assert!(
                fetches >= 2 * 55,
                "backends are followed: {fetches} fetches"
            );
            assert!(
                fetches <= 2 * 62,
                "at most one fetch per backend per minute: {fetches}"
            );
            assert_eq!(
                w.uploads().len(),
                first.len(),
                "no upload while nothing changes"
            );

            // By 121 minutes each period has been refreshed, once, everywhere.
            rt.advance_by(Duration::from_secs(62 * 60)).await;
            let again: Vec<Upload> = w.uploads().into_iter().skip(first.len()).collect();
            assert_eq!(again.len(), first.len(), "refreshed at every HSDir once");
            for u in &again {
                let tp = u.period.expect("recognised");
                assert!(u.revision > first_rev[&tp], "revision counter increased");
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
                    .entry(u.period.expect("recognised"))
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

/// An HSDir holding a higher revision (say, from a run whose clock was ahead) refuses our
/// descriptor with HTTP 400. The same descriptor is retried there with backoff, a new one is
/// built at most once a minute and goes only to that HSDir, and it is accepted once our
/// counter passes the one it holds. The other HSDirs get nothing more.
#[test]
fn refusals_are_retried_and_rebuilt_at_most_once_a_minute() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 1);
            let expected = w.expected_hsdirs();
            // The HSDir holds the counter we would use 150 s from now.
            let (tp, picky, ahead) = w.hsdir_holds_revision_ahead(Duration::from_secs(150));
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(10 * 60)).await;
            let ups = w.uploads();
            let at_picky: Vec<&Upload> = ups
                .iter()
                .filter(|u| u.hsdir == picky && u.period == Some(tp))
                .collect();
            let accepted: Vec<&&Upload> = at_picky.iter().filter(|u| u.accepted).collect();
            assert_eq!(accepted.len(), 1, "accepted once: {at_picky:?}");
            assert!(accepted[0].revision > u64::from(ahead));
            let refused = at_picky.iter().filter(|u| !u.accepted).count();
            assert!(refused >= 3, "retried before it could succeed: {refused}");
            // Rebuilds for this period: at least 60 s apart.
            let b = builds(&ups);
            let times: Vec<Instant> = b[&tp].iter().map(|(_, t)| *t).collect();
            assert!(times.len() >= 3, "{times:?}");
            for pair in times.windows(2) {
                assert!(pair[1] - pair[0] >= Duration::from_secs(60), "{times:?}");
            }
            // Everyone else got the first descriptor once, and nothing else.
            for u in ups
                .iter()
                .filter(|u| u.hsdir != picky || u.period != Some(tp))
            {
                assert!(u.accepted);
            }
            let others = ups
                .iter()
                .filter(|u| u.hsdir != picky || u.period != Some(tp))
                .count();
            assert_eq!(
                others,
                expected.values().map(HashSet::len).sum::<usize>() - 1
            );
            let st = &handle.status()[0];
            let ps = st
                .periods
                .iter()
                .find(|x| x.time_period == tp.interval_num())
                .expect("period");
            assert_eq!(ps.refusals_in_a_row, 0, "reset by the acceptance");
            assert!(ps.last_refusal.is_some());
            handle.shutdown().await;
        })
    });
}

/// An address moved mid-period from C tor or Python Onionbalance (or published by another
/// frontend with the same key): an HSDir holds a descriptor signed with our key whose counter
/// stays above ours all day (other clock, other key derivation). After its first refusal we
/// look at what it holds, go above it, and are accepted at the next rebuild: one refusal,
/// not one a minute for the rest of the period. The status counts it.
#[test]
fn a_higher_revision_from_another_publisher_is_passed_after_one_refusal() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 1);
            // A counter we would reach only a day from now: never, within the period.
            let (tp, picky, theirs) = w.other_publisher_ahead(Duration::from_secs(24 * 3600));
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            let ups = w.uploads();
            let at_picky: Vec<&Upload> = ups
                .iter()
                .filter(|u| u.hsdir == picky && u.period == Some(tp))
                .collect();
            let refused = at_picky.iter().filter(|u| !u.accepted).count();
            let accepted: Vec<&&Upload> = at_picky.iter().filter(|u| u.accepted).collect();
            assert_eq!(refused, 1, "one refusal: {at_picky:?}");
            assert_eq!(accepted.len(), 1, "then accepted: {at_picky:?}");
            assert!(accepted[0].revision > u64::from(theirs));
            // It looked once, at that HSDir, for our blinded id.
            let ours = FrontendPeriodKeys::derive(&w.frontend, tp)
                .expect("keys")
                .blind_id();
            let peeks = w
                .transport
                .lock()
                .fetches
                .iter()
                .filter(|(_, b, h)| *b == ours && *h == picky)
                .count();
            assert_eq!(peeks, 1, "one look at what the refusing HSDir holds");
            // Two builds of that period: the first and the one above theirs.
            assert_eq!(builds(&ups)[&tp].len(), 2, "{:?}", builds(&ups)[&tp]);
            let st = &handle.status()[0];
            assert_eq!(st.counters.outranked, 1);
            let ps = st
                .periods
                .iter()
                .find(|x| x.time_period == tp.interval_num())
                .expect("period");
            assert_eq!(ps.refusals_in_a_row, 0, "reset by the acceptance");
            assert_eq!(
                ps.revision_counter,
                Some(accepted[0].revision),
                "the status shows the newest descriptor"
            );
            handle.shutdown().await;
        })
    });
}

/// An HSDir stored our descriptor but its answer was lost (our attempt timed out): the
/// retry of the same descriptor is refused as "not newer". A look at what it holds shows our
/// own revision, so the upload counts as stored: no rebuild, no "another publisher".
#[test]
fn a_retry_refused_because_the_first_attempt_was_stored_counts_as_stored() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 1);
            let expected = w.expected_hsdirs();
            let (&tp, set) = expected.iter().next().expect("a period");
            let lossy = *set.iter().next().expect("an hsdir");
            let blind = FrontendPeriodKeys::derive(&w.frontend, tp)
                .expect("keys")
                .blind_id();
            w.transport
                .lock()
                .store_then_lose_answer
                .insert((lossy, blind));
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            let ups = w.uploads();
            let at_lossy: Vec<&Upload> = ups
                .iter()
                .filter(|u| u.hsdir == lossy && u.period == Some(tp))
                .collect();
            // The stored attempt (whose answer was lost) and the refused retry, then nothing.
            assert_eq!(at_lossy.len(), 2, "{at_lossy:?}");
            assert_eq!(at_lossy[0].revision, at_lossy[1].revision);
            assert!(!at_lossy[1].accepted, "the retry is refused");
            assert_eq!(builds(&ups)[&tp].len(), 1, "no rebuild for it");
            let st = &handle.status()[0];
            assert_eq!(st.counters.outranked, 0, "not another publisher");
            let ps = st
                .periods
                .iter()
                .find(|x| x.time_period == tp.interval_num())
                .expect("period");
            assert_eq!(ps.hsdirs_accepted, ps.hsdirs, "counted as stored: {ps:?}");
            assert_eq!(ps.refusals_in_a_row, 0);
            handle.shutdown().await;
        })
    });
}

/// A backend that restarts (new intro points in every period) and one that vanishes change
/// what we publish within 150 s, and the new descriptors go everywhere.
#[test]
fn backend_changes_are_republished() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 3);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30)).await;
            let n_first = w.uploads().len();
            w.backend_restarts(0);
            w.backend_vanishes(2);
            let old2 = w.all_sids_of(2);
            rt.advance_by(Duration::from_secs(150)).await;
            let new: Vec<Upload> = w.uploads().into_iter().skip(n_first).collect();
            let expected = w.expected_hsdirs();
            // The last descriptor each HSDir got lists backend 0's new intro points and none
            // of backend 2's.
            for (tp, set) in &expected {
                let want: HashSet<[u8; 32]> = w
                    .sids_of(0, *tp)
                    .union(&w.sids_of(1, *tp))
                    .copied()
                    .collect();
                for h in set {
                    let last = new
                        .iter()
                        .rev()
                        .find(|u| u.hsdir == *h && u.period == Some(*tp) && u.accepted)
                        .expect("republished");
                    let (_, _, sids) = w.decode(&last.text, last.at);
                    assert_eq!(sids, want, "period {tp:?}");
                    assert!(sids.is_disjoint(&old2));
                }
            }
            // At most two builds per period for the two changes (found in different fetches).
            for (tp, v) in builds(&new) {
                assert!(v.len() <= 2, "{tp:?}: {v:?}");
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

/// Everything `BalancerHandle::events` says happened is what the scripted network saw
/// happen: one `Published` per (period, revision) that an HSDir accepted, a
/// `BackendJoined` per backend, an `UploadRejected` per refusal of the current descriptor,
/// and a `BackendLeft` once a backend's descriptors are gone from the HSDirs.
#[test]
fn events_tell_what_the_network_saw() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 2);
            // One HSDir holds a higher revision than ours for one period: it refuses until
            // our counter overtakes it (as after another publisher, or a clock step).
            let expected = w.expected_hsdirs();
            let (tp, picky, _) = w.hsdir_holds_revision_ahead(Duration::from_secs(90));
            let handle = w.launch();
            let mut events = handle.events();
            let mut status = handle.status_watch();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            assert!(status.has_changed().expect("balancer running"));
            assert!(status.borrow_and_update()[0].first_published.is_some());
            w.backend_vanishes(1);
            rt.advance_by(Duration::from_secs(10 * 60)).await;

            let mut seen = Vec::new();
            while let Some(Some(e)) = events.next().now_or_never() {
                seen.push(e);
            }
            let address = w.frontend.address();
            let mut published: HashSet<(u64, u64)> = HashSet::new();
            let (mut joined, mut left, mut rejected) = (Vec::new(), Vec::new(), 0);
            for e in &seen {
                match e {
                    Event::Published {
                        service,
                        time_period,
                        revision,
                    } => {
                        assert_eq!(*service, address);
                        assert!(published.insert((*time_period, *revision)), "once: {e:?}");
                    }
                    Event::BackendJoined { name, .. } => joined.push(name.clone()),
                    Event::BackendLeft { name, .. } => left.push(name.clone()),
                    Event::UploadRejected {
                        hsdir, time_period, ..
                    } => {
                        assert_eq!(*hsdir, hex::encode_upper(picky.as_bytes()));
                        assert_eq!(*time_period, tp.interval_num());
                        rejected += 1;
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
            // The network's record: every (period, revision) some HSDir accepted.
            let accepted: HashSet<(u64, u64)> = w
                .uploads()
                .iter()
                .filter(|u| u.accepted)
                .filter_map(|u| Some((u.period?.interval_num(), u.revision)))
                .collect();
            assert_eq!(published, accepted);
            let periods_published: HashSet<u64> = published.iter().map(|(tp, _)| *tp).collect();
            assert_eq!(
                periods_published.len(),
                expected.len(),
                "every period: {published:?}"
            );
            let refused_current = w
                .uploads()
                .iter()
                .filter(|u| u.hsdir == picky && !u.accepted)
                .count();
            assert!(
                rejected >= 1 && rejected <= refused_current,
                "{rejected} of {refused_current}"
            );
            let names: Vec<String> = w.config().services[0]
                .instances
                .iter()
                .map(|i| i.name.clone())
                .collect();
            joined.sort();
            assert_eq!(joined, names, "each backend joined once");
            assert_eq!(left, vec![names[1].clone()], "the vanished backend left");
            handle.shutdown().await;
            // The stream ends with the balancer.
            assert!(events.next().await.is_none());
        })
    });
}

/// The last accepted upload at each HSDir of period `tp`: (revision, intro point keys).
fn last_held(
    w: &World,
    ups: &[Upload],
    tp: TimePeriod,
    hsdirs: &HashSet<RsaIdentity>,
) -> HashMap<RsaIdentity, (u64, HashSet<[u8; 32]>)> {
    hsdirs
        .iter()
        .filter_map(|h| {
            let u = ups
                .iter()
                .rev()
                .find(|u| u.hsdir == *h && u.period == Some(tp) && u.accepted)?;
            let (_, rev, sids) = w.decode(&u.text, u.at);
            Some((*h, (rev, sids)))
        })
        .collect()
}

/// 30 backends (90 intro points on distinct relays): more than one descriptor lists, so each
/// fetch HSDir of the current period holds its own variant, and together they list every
/// backend. When a backend vanishes, every HSDir promptly gets a descriptor with a higher
/// revision that no longer lists it, and the others are all still listed.
#[test]
fn variants_list_every_backend_and_follow_one_leaving() {
    sim(|rt| {
        Box::pin(async move {
            let n = 30;
            let mut w = World::new(rt.clone(), n);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(60)).await;
            let nd = w.provider.timely_netdir().expect("netdir");
            let tp = nd.hs_time_period();
            let blind = FrontendPeriodKeys::derive(&w.frontend, tp)
                .expect("keys")
                .blind_id();
            let fetch: HashSet<RsaIdentity> = nd
                .hs_dirs_download(blind, tp, &mut StdRng::seed_from_u64(1))
                .expect("fetch set")
                .iter()
                .map(|r| *r.rsa_id())
                .collect();
            let upload = w.expected_hsdirs()[&tp].clone();
            assert!(fetch.is_subset(&upload));

            let before = last_held(&w, &w.uploads(), tp, &upload);
            assert_eq!(before.len(), upload.len(), "every HSDir holds a variant");
            let distinct: HashSet<Vec<[u8; 32]>> = before
                .values()
                .map(|(_, sids)| {
                    let mut v: Vec<[u8; 32]> = sids.iter().copied().collect();
                    v.sort();
                    v
                })
                .collect();
            assert_eq!(distinct.len(), fetch.len(), "one variant per fetch HSDir");
            let sids: Vec<HashSet<[u8; 32]>> = (0..n).map(|i| w.sids_of(i, tp)).collect();
            let listed = |held: &HashMap<RsaIdentity, (u64, HashSet<[u8; 32]>)>, i: usize| {
                let mine = &sids[i];
                fetch
                    .iter()
                    .filter(|h| held.get(*h).is_some_and(|(_, s)| !s.is_disjoint(mine)))
                    .count()
            };
            let counts: Vec<usize> = (0..n).map(|i| listed(&before, i)).collect();
            assert!(
                counts.iter().all(|&c| c >= 1),
                "every backend listed: {counts:?}"
            );
            let status = &handle.status()[0];
            let period = status
                .periods
                .iter()
                .find(|p| p.time_period == tp.interval_num())
                .expect("period status");
            assert_eq!(period.variants.len(), fetch.len());
            assert_eq!(period.shares.len(), n);
            assert!(period.left_out.is_empty());

            let n_before = w.uploads().len();
            w.backend_vanishes(7);
            let gone = sids[7].clone();
            rt.advance_by(Duration::from_secs(150)).await;
            let new: Vec<Upload> = w.uploads().into_iter().skip(n_before).collect();
            let after = last_held(&w, &new, tp, &upload);
            assert_eq!(
                after.len(),
                upload.len(),
                "every HSDir got a new descriptor"
            );
            for (h, (rev, sids)) in &after {
                assert!(*rev > before[h].0, "a strictly higher revision at {h}");
                assert!(
                    sids.is_disjoint(&gone),
                    "the vanished backend is gone at {h}"
                );
            }
            for i in (0..n).filter(|&i| i != 7) {
                assert!(listed(&after, i) >= 1, "backend {i} still listed");
            }
            // One rebuild for the one change.
            let b = builds(&new);
            assert_eq!(b.get(&tp).map_or(0, Vec::len), 1, "{b:?}");
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
            w.new_consensus().await;
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
                    .filter(|u| u.period == Some(*p) && u.accepted)
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

/// A backend that stays down is fetched again soon, then less and less often, down to once
/// every 5 minutes (such a fetch asks every HSDir of the period).
#[test]
fn missing_backend_refetch_backs_off() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 2);
            w.backend_vanishes(1);
            let gone = w.blind_ids_of(1);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30 * 60)).await;
            // One fetch asks several HSDirs at the same instant: count distinct instants.
            let mut rounds: Vec<SystemTime> = w
                .transport
                .lock()
                .fetches
                .iter()
                .filter(|(_, id, _)| gone.contains(id))
                .map(|(t, _, _)| *t)
                .collect();
            rounds.dedup();
            let gaps: Vec<u64> = rounds
                .windows(2)
                .map(|p| p[1].duration_since(p[0]).unwrap_or_default().as_secs())
                .collect();
            // Both periods at once at the start, then 15 s doubling per fetch, capped at 5 min.
            assert_eq!(&gaps[..4], &[30, 60, 120, 240], "{gaps:?}");
            assert!(gaps[4..].iter().all(|g| *g == 300), "{gaps:?}");
            // The working backend is still published.
            assert!(handle.all_published());
            handle.shutdown().await;
        })
    });
}

/// The first publication waits until every backend has been tried, so that early clients
/// (which keep a descriptor until the next period) are not pinned to a subset; but not more
/// than 30 s when a backend's HSDirs do not answer.
#[test]
fn first_publication_waits_for_every_backend_at_most_30s() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            let slow = w.blind_ids_of(1);
            w.transport.lock().hang_fetch_for.extend(slow);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(29)).await;
            assert!(w.uploads().is_empty(), "waits for the slow backend");
            rt.advance_by(Duration::from_secs(2)).await;
            let ups = w.uploads();
            assert!(!ups.is_empty(), "publishes at 30 s without it");
            for u in &ups {
                let (tp, _, sids) = w.decode(&u.text, u.at);
                assert_eq!(sids, w.sids_of(0, tp));
            }
            handle.shutdown().await;
        })
    });
}

/// A fetch that fails before any HSDir answers (no circuit yet, as right after bootstrap)
/// has not asked the backend: the first publication keeps waiting for it, up to the usual
/// 30 s, instead of going out with the backends that answered first (the clean-clone CI run
/// saw a first descriptor with one backend of three, and the next only a minute later).
#[test]
fn first_publication_waits_for_backends_whose_fetch_failed() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            {
                let mut s = w.transport.lock();
                for id in w.blind_ids_of(1) {
                    // Backend 1's fetches fail at every HSDir for longer than the wait.
                    s.fail_fetch_for.insert(id, 10_000);
                }
            }
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(29)).await;
            assert!(
                w.uploads().is_empty(),
                "a failed fetch is not an answer: still waiting for backend 1"
            );
            let failed_fetches = w
                .transport
                .lock()
                .fail_fetch_for
                .values()
                .all(|n| *n < 10_000);
            assert!(failed_fetches, "backend 1 was tried and failed");
            rt.advance_by(Duration::from_secs(2)).await;
            let ups = w.uploads();
            assert!(!ups.is_empty(), "publishes at 30 s without it");
            for u in &ups {
                let (tp, _, sids) = w.decode(&u.text, u.at);
                assert_eq!(sids, w.sids_of(0, tp));
            }
            handle.shutdown().await;
        })
    });
}

/// A Tor client started from cached state has a consensus at once, but for a moment no
/// vanguards, and every onion-service circuit fails with "unbootstrapped vanguard manager".
/// Fetches wait for it rather than counting every HSDir as failed: the first descriptor goes
/// out as soon as the client is ready, with every backend, and no failure is reported.
#[test]
fn fetches_wait_for_a_tor_client_that_is_not_ready_yet() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            let not_ready = Duration::from_secs(3);
            w.transport.lock().not_ready_until = Some(rt.wallclock() + not_ready);
            let handle = w.launch();
            rt.advance_by(not_ready + Duration::from_secs(1)).await;
            let ups = w.uploads();
            assert!(
                !ups.is_empty(),
                "published within a second of the client being ready"
            );
            for u in &ups {
                let (tp, _, sids) = w.decode(&u.text, u.at);
                let every: HashSet<_> =
                    w.sids_of(0, tp).union(&w.sids_of(1, tp)).copied().collect();
                assert_eq!(sids, every, "the first descriptor lists every backend");
            }
            for s in handle.status() {
                assert!(
                    s.counters.fetch_failures.is_empty(),
                    "a client that is not ready yet is no fetch failure: {:?}",
                    s.counters.fetch_failures
                );
            }
            handle.shutdown().await;
        })
    });
}

/// A restart after the clock stepped back: the revision counters kept under the state
/// directory keep the new run's counters above the old run's, so no HSDir refuses them.
/// Without a state directory the same restart is refused (the control that shows the
/// check can fail).
#[test]
fn restart_after_backward_clock_step_never_publishes_a_lower_counter() {
    for keep_state in [true, false] {
        sim(move |rt| {
            Box::pin(async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut w = World::new(rt.clone(), 1);
                if keep_state {
                    w.state_dir = Some(dir.path().to_path_buf());
                }
                let handle = w.launch();
                rt.advance_by(Duration::from_secs(5)).await;
                handle.shutdown().await;
                let n_first = w.uploads().len();
                assert!(n_first > 0 && w.uploads().iter().all(|u| u.accepted));
                // The clock steps back 10 minutes (an NTP correction), then we restart.
                rt.jump_wallclock(rt.wallclock() - Duration::from_secs(600));
                let handle = w.launch();
                rt.advance_by(Duration::from_secs(5)).await;
                let second: Vec<Upload> = w.uploads().into_iter().skip(n_first).collect();
                assert!(!second.is_empty());
                let refused = second.iter().filter(|u| !u.accepted).count();
                if keep_state {
                    assert_eq!(refused, 0, "{second:?}");
                    assert!(
                        std::fs::read_dir(dir.path().join("revisions"))
                            .map(|d| d.count())
                            .unwrap_or(0)
                            == 1,
                        "one counter file for the frontend"
                    );
                } else {
                    assert_eq!(refused, second.len(), "every HSDir refuses a lower counter");
                }
                handle.shutdown().await;
            })
        });
    }
}

/// Intro point session keys per period.
type SidsByPeriod = HashMap<TimePeriod, HashSet<[u8; 32]>>;

/// Seven simulated days on a scripted network where every HSDir holds its own encoding of
/// each backend descriptor, with hourly consensuses, daily shared random values and period
/// changes, backends re-uploading every 60–120 minutes, two backend restarts and one backend
/// that stops for good, an HSDir that refuses everything, one that never answers, and a
/// backward clock step. Counted from the HSDirs' side:
/// * every upload to a working HSDir is accepted (no counter ever goes back);
/// * each period gets one full build at its start, one per real change, one per 60–120
///   minute refresh, never two within a minute;
/// * a restarted backend's new intro points are published within 150 s;
/// * a backend whose revision stops going up leaves within 2 h 15 min (+ one fetch) and
///   is not brought back by the stale copy the HSDirs keep;
/// * the refusing HSDir is retried with backoff, not in a loop.
#[test]
fn seven_days_of_steady_state() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 3);
            let first_ring = w.expected_hsdirs();
            let mut ring_ids = first_ring.values().flatten().copied();
            let refuser = ring_ids.next().expect("hsdir");
            let silent = ring_ids.find(|h| *h != refuser).expect("hsdir");
            {
                let mut s = w.transport.lock();
                s.refuse_always.insert(refuser);
                s.hang.insert(silent);
            }
            let handle = w.launch();
            let start = rt.now();
            let minutes = 7 * 24 * 60;
            let mut rng = StdRng::seed_from_u64(7);
            let mut next_upload: Vec<u64> = (0..3).map(|_| 60 + rng.next_u64() % 61).collect();
            let mut live = [true; 3];
            let restarts: [(u64, usize); 3] =
                [(1440 + 754, 0), (2 * 1440 + 200, 1), (4 * 1440 + 180, 0)];
            let stop2 = 5 * 1440;
            let clock_step = 3 * 1440 + 420;
            let mut restart_seen: Vec<(Instant, usize, SidsByPeriod)> = Vec::new();
            let mut last_upload2 = None;
            let mut max_refusals_shown = 0;
            let mut periods_now: HashSet<TimePeriod> =
                w.expected_hsdirs().keys().copied().collect();
            for m in 1..=minutes {
                rt.advance_by(Duration::from_secs(60)).await;
                if m % 60 == 0 {
                    // What the status says of the refusing HSDir's periods.
                    let ring = w.expected_hsdirs();
                    for p in &handle.status()[0].periods {
                        let serves = ring.iter().any(|(tp, set)| {
                            tp.interval_num() == p.time_period && set.contains(&refuser)
                        });
                        if serves {
                            max_refusals_shown = max_refusals_shown.max(p.refusals_in_a_row);
                        }
                    }
                    // Without the event: `TestNetDirProvider` keeps an unread receiver and
                    // blocks after ~128 notifications. The runner looks at the current
                    // consensus on every wake-up (at least once a minute here) anyway.
                    w.provider.set_netdir(netdir_at(rt.wallclock()));
                    let now_periods: HashSet<TimePeriod> =
                        w.expected_hsdirs().keys().copied().collect();
                    if now_periods != periods_now {
                        // C tor services upload for a new period as soon as they see it.
                        for i in (0..3).filter(|i| live[*i]) {
                            w.backend_publishes(i);
                        }
                        periods_now = now_periods;
                    }
                }
                for i in 0..3 {
                    if live[i] && m >= next_upload[i] {
                        w.backend_publishes(i);
                        next_upload[i] = m + 60 + rng.next_u64() % 61;
                        if i == 2 {
                            last_upload2 = Some(rt.now());
                        }
                    }
                }
                for &(at, i) in &restarts {
                    if m == at {
                        w.backend_restarts(i);
                        let sids = periods_now
                            .iter()
                            .map(|tp| (*tp, w.sids_of(i, *tp)))
                            .collect();
                        restart_seen.push((rt.now(), i, sids));
                    }
                }
                if m == stop2 {
                    live[2] = false;
                }
                if m == stop2 + 180 {
                    // HSDirs drop its descriptor at the end of its 3-hour lifetime.
                    w.backend_vanishes(2);
                }
                if m == clock_step {
                    rt.jump_wallclock(rt.wallclock() - Duration::from_secs(600));
                }
            }
            let ups = w.uploads();
            let status = handle.status();
            handle.shutdown().await;

            // 1. Working HSDirs accept everything.
            let bad = |h: &RsaIdentity| *h == refuser || *h == silent;
            let refused: Vec<&Upload> = ups
                .iter()
                .filter(|u| !bad(&u.hsdir) && !u.accepted)
                .collect();
            assert!(
                refused.is_empty(),
                "{} refused at working HSDirs, first: {:?}",
                refused.len(),
                refused.first()
            );

            // 2. Full builds (revisions that reached at least two HSDirs) per period.
            let mut holders: HashMap<(TimePeriod, u64), HashSet<RsaIdentity>> = HashMap::new();
            for u in &ups {
                if let Some(tp) = u.period {
                    holders.entry((tp, u.revision)).or_default().insert(u.hsdir);
                }
            }
            let mut full: HashMap<TimePeriod, Vec<(u64, Instant, Arc<str>)>> = HashMap::new();
            for u in &ups {
                let Some(tp) = u.period else { continue };
                if holders[&(tp, u.revision)].len() < 2 {
                    continue;
                }
                let v = full.entry(tp).or_default();
                if !v.iter().any(|(r, _, _)| *r == u.revision) {
                    v.push((u.revision, u.when, u.text.clone()));
                }
            }
            let mut total_full = 0;
            for (tp, v) in &full {
                total_full += v.len();
                for pair in v.windows(2) {
                    let gap = pair[1].1 - pair[0].1;
                    assert!(
                        gap >= Duration::from_secs(60),
                        "{tp:?}: two builds {gap:?} apart"
                    );
                    assert!(
                        gap <= Duration::from_secs(121 * 60),
                        "{tp:?}: no refresh for {gap:?}"
                    );
                }
                let active = v.last().map(|l| l.1 - v[0].1).unwrap_or_default();
                // First + backends arriving for the period (3) + restarts (3) + backend 2
                // leaving (1) + refreshes, at most one an hour.
                let allowed = 1 + 3 + 3 + 1 + (active.as_secs() / 3600) as usize + 1;
                assert!(
                    v.len() <= allowed,
                    "{tp:?}: {} builds in {active:?}, allowed {allowed}",
                    v.len()
                );
            }
            assert!(
                full.len() >= 7,
                "periods come and go over a week: {}",
                full.len()
            );
            println!(
                "{} full builds over {} periods in 7 days; {} uploads",
                total_full,
                full.len(),
                ups.len()
            );

            // 3. Restarts reach the published descriptors within 150 s.
            let sids_of_text = |tp: TimePeriod, text: &str, at: SystemTime| -> HashSet<[u8; 32]> {
                let keys = BackendKeys::derive(w.frontend.address(), tp).expect("keys");
                intake(&keys, text, at, DEFAULT_MAX_DESCRIPTOR_LEN)
                    .map(|s| {
                        s.intro_points
                            .iter()
                            .map(|i| *i.ipt_sid_key().as_bytes())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let wall_at = |t: Instant| -> SystemTime {
                // Good enough for certificate validity: within the week.
                ups[0].at + (t - ups[0].when)
            };
            for (at, i, sids) in &restart_seen {
                for (tp, new) in sids {
                    let Some(v) = full.get(tp) else { continue };
                    let published = v.iter().find(|(_, t, text)| {
                        *t >= *at && !sids_of_text(*tp, text, wall_at(*t)).is_disjoint(new)
                    });
                    let took = published.map(|(_, t, _)| *t - *at);
                    assert!(
                        took.is_some_and(|d| d <= Duration::from_secs(150)),
                        "backend {i} restarted at {:?}: period {tp:?} published after {took:?}",
                        *at - start
                    );
                }
            }

            // 4. Backend 2 leaves 2 h 15 min after its last re-upload (plus one fetch), and
            // its stale copy does not bring it back.
            let last2 = last_upload2.expect("backend 2 uploaded");
            let gone_by = last2 + Duration::from_secs(135 * 60 + 2 * 60);
            let all2: HashSet<[u8; 32]> = w.all_sids_of(2);
            for (tp, v) in &full {
                for (_, t, text) in v.iter().filter(|(_, t, _)| *t >= gone_by) {
                    let listed = sids_of_text(*tp, text, wall_at(*t));
                    assert!(
                        listed.is_disjoint(&all2),
                        "backend 2 listed at {:?}",
                        *t - start
                    );
                }
            }

            // 5. The refusing and the silent HSDir: retried with backoff, not in a loop. Once
            // it has refused 5 descriptors in a row, the refusing one is retried every 30
            // minutes plus once per descriptor built for a change or refresh (about one an
            // hour per period): a few an hour for the two periods it may serve. A timeout is
            // retried with the backoff capped at 5 min (jittered to 2.5–5 min): at most 24
            // an hour per period. A loop would show 60 an hour per period (a rebuild a
            // minute) or thousands (a retry a second).
            let hours = minutes as usize / 60;
            let at_refuser = ups.iter().filter(|u| u.hsdir == refuser).count();
            let at_silent = ups.iter().filter(|u| u.hsdir == silent).count();
            println!("{at_refuser} uploads to the refusing HSDir, {at_silent} to the silent one");
            assert!(
                at_refuser <= 8 * hours,
                "{at_refuser} uploads to the refusing HSDir"
            );
            assert!(
                at_silent <= 50 * hours,
                "{at_silent} uploads to the silent HSDir"
            );
            // The status showed the refusals in a row, with the HSDir's words.
            assert!(
                max_refusals_shown >= 5,
                "at most {max_refusals_shown} shown"
            );
            assert!(
                status[0]
                    .periods
                    .iter()
                    .any(|p| p.last_refusal.as_deref().is_some_and(|r| r.contains("400"))),
                "{:?}",
                status[0].periods
            );
        })
    });
}

/// Restricted discovery in simulated time: every descriptor uploaded is readable by the
/// authorized clients only; a reload that removes a client rebuilds every period at once
/// (not held back by the one-minute rebuild gap), each HSDir gets a strictly higher revision
/// that the removed client cannot read and the remaining one can, in exactly one build per
/// period; a reload that changes nothing uploads nothing.
#[test]
fn authorized_clients_reload_rebuilds_every_period_at_once() {
    use onionbalance::client_auth::{AuthorizedClient, ClientSecret};
    use onionbalance::config::ClientAuthConfig;
    use tor_hscrypto::pk::{HsClientDescEncKeypair, HsClientDescEncSecretKey};

    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 2);
            let front = w.frontend.address();
            let alice = ClientSecret::generate(front, &mut w.rng);
            let bob = ClientSecret::generate(front, &mut w.rng);
            let with_clients = |clients: &[(&str, &ClientSecret)]| {
                let mut cfg = w.config();
                cfg.services[0].client_auth = Some(ClientAuthConfig {
                    clients: clients
                        .iter()
                        .map(|(name, c)| AuthorizedClient {
                            name: (*name).to_owned(),
                            key: c.public(),
                        })
                        .collect(),
                    dir: None,
                });
                cfg
            };
            // (period, revision) of `text` as read by `client`, or None if it cannot read it.
            let read = |w: &World, text: &str, at: SystemTime, client: Option<&ClientSecret>| {
                let nd = w.provider.timely_netdir().expect("netdir");
                periods(&nd).into_iter().find_map(|p| {
                    let mut keys = BackendKeys::derive(front, p.time_period).expect("keys");
                    if let Some(c) = client {
                        keys = keys.with_client_key(Arc::new(HsClientDescEncKeypair::new(
                            c.public(),
                            HsClientDescEncSecretKey::from(c.secret.as_ref().clone()),
                        )));
                    }
                    intake(&keys, text, at, DEFAULT_MAX_DESCRIPTOR_LEN)
                        .ok()
                        .map(|s| (p.time_period, u64::from(s.revision)))
                })
            };

            let mut handle = w.launch_config(with_clients(&[("alice", &alice), ("bob", &bob)]));
            rt.advance_by(Duration::from_secs(30)).await;
            let first = w.uploads();
            assert!(!first.is_empty(), "nothing published");
            for u in &first {
                assert!(read(&w, &u.text, u.at, Some(&alice)).is_some());
                assert!(read(&w, &u.text, u.at, Some(&bob)).is_some());
                assert!(
                    read(&w, &u.text, u.at, None).is_none(),
                    "readable without a client key"
                );
            }
            assert_eq!(handle.status()[0].authorized_clients, Some(2));
            let held: HashMap<(TimePeriod, RsaIdentity), u64> = first
                .iter()
                .filter(|u| u.accepted)
                .filter_map(|u| Some(((u.period?, u.hsdir), u.revision)))
                .collect();

            // Alice is removed, 30 s after the first build: well within the rebuild gap.
            let summary = handle
                .reload(with_clients(&[("bob", &bob)]))
                .await
                .expect("reload");
            assert_eq!(summary.changed, vec![front]);
            rt.advance_by(Duration::from_secs(10)).await;
            let after: Vec<Upload> = w.uploads().into_iter().skip(first.len()).collect();
            let expected = w.expected_hsdirs();
            for (tp, set) in &expected {
                for h in set {
                    let last = after
                        .iter()
                        .rev()
                        .find(|u| u.hsdir == *h && u.period == Some(*tp) && u.accepted)
                        .unwrap_or_else(|| {
                            panic!("{tp:?}: HSDir {h} got nothing after the reload")
                        });
                    assert!(last.revision > held[&(*tp, *h)], "revision must go up");
                    assert!(
                        read(&w, &last.text, last.at, Some(&alice)).is_none(),
                        "the removed client still reads the new descriptor"
                    );
                    assert_eq!(
                        read(&w, &last.text, last.at, Some(&bob)),
                        Some((*tp, last.revision))
                    );
                }
            }
            for (tp, v) in builds(&after) {
                assert_eq!(
                    v.len(),
                    1,
                    "{tp:?}: one build per period for one reload: {v:?}"
                );
            }
            assert_eq!(handle.status()[0].authorized_clients, Some(1));

            // The same clients again: nothing to do.
            let n = w.uploads().len();
            let summary = handle
                .reload(with_clients(&[("bob", &bob)]))
                .await
                .expect("reload");
            assert_eq!(summary.unchanged, vec![front]);
            rt.advance_by(Duration::from_secs(20 * 60)).await;
            assert_eq!(
                w.uploads().len(),
                n,
                "an unchanged reload uploaded something"
            );
            handle.shutdown().await;
        })
    });
}

/// HSDirs that serve a bad copy of a backend's descriptor (here: the genuine text with its
/// signature damaged, still claiming the genuine revision) do not end the fetch: the next
/// HSDir is asked, in the same round, until the one good copy is found. So the very first
/// descriptor of each period lists that backend, although all but one of the HSDirs a client
/// would ask hold a bad copy.
#[test]
fn bad_copies_at_most_hsdirs_do_not_hide_a_backend() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 2);
            let nd = w.provider.timely_netdir().expect("netdir");
            let addr = w.backends[0].inner.address();
            let mut rng = StdRng::seed_from_u64(5);
            let mut spoiled = 0;
            for p in periods(&nd) {
                let blind = BackendKeys::derive(addr, p.time_period)
                    .expect("keys")
                    .blind_id();
                // The one HSDir keeping a good copy is one that is asked in this period.
                let asked: Vec<RsaIdentity> = if p.time_period == nd.hs_time_period() {
                    onionbalance::ring::fetch_hsdirs(&nd, blind, p.time_period, &mut rng)
                } else {
                    onionbalance::ring::upload_hsdirs(&nd, blind, p.time_period)
                }
                .expect("ring")
                .into_iter()
                .map(|h| h.id)
                .collect();
                let keep = asked[0];
                let mut s = w.transport.lock();
                for ((b, h), text) in s.stored.iter_mut() {
                    if *b == blind && *h != keep {
                        let cut = text.rfind("signature ").expect("signed") + "signature ".len();
                        let flipped = if text.as_bytes()[cut] == b'A' {
                            "B"
                        } else {
                            "A"
                        };
                        text.replace_range(cut..=cut, flipped);
                        spoiled += 1;
                    }
                }
            }
            assert!(spoiled >= 10, "only {spoiled} copies spoiled");
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(40)).await;
            let ups = w.uploads();
            let expected = w.expected_hsdirs();
            for tp in expected.keys() {
                let first = ups
                    .iter()
                    .find(|u| u.period == Some(*tp) && u.accepted)
                    .unwrap_or_else(|| panic!("{tp:?}: nothing published"));
                let (_, _, sids) = w.decode(&first.text, first.at);
                assert!(
                    !sids.is_disjoint(&w.sids_of(0, *tp)),
                    "{tp:?}: the first descriptor does not list the backend with bad copies"
                );
            }
            let st = &handle.status()[0];
            assert!(
                st.counters.intake_rejections.values().sum::<u64>() > 0,
                "{st:?}"
            );
            handle.shutdown().await;
        })
    });
}

/// The health check of the tests below: the defaults, with an HTTP path.
fn http_check() -> HealthCheckConfig {
    HealthCheckConfig {
        port: 80,
        http_path: Some("/healthz".into()),
        interval: HealthCheckConfig::DEFAULT_INTERVAL,
        timeout: HealthCheckConfig::DEFAULT_TIMEOUT,
        down_after: HealthCheckConfig::DEFAULT_DOWN_AFTER,
        up_after: HealthCheckConfig::DEFAULT_UP_AFTER,
    }
}

impl World {
    /// The config with every instance health-checked by [`http_check`].
    fn checked_config(&self) -> Config {
        let mut cfg = self.config();
        for i in &mut cfg.services[0].instances {
            i.health_check = Some(http_check());
        }
        cfg.services[0].health_check = Some(http_check());
        cfg
    }

    /// Per period and responsible HSDir, the backends (by index) that the last descriptor
    /// the HSDir accepted lists; `None` for an HSDir that accepted nothing.
    fn listed_everywhere(&self) -> Vec<Option<Vec<usize>>> {
        let ups = self.uploads();
        let mut out = Vec::new();
        for (tp, set) in self.expected_hsdirs() {
            for h in set {
                let last = ups
                    .iter()
                    .rev()
                    .find(|u| u.hsdir == h && u.period == Some(tp) && u.accepted);
                out.push(last.map(|u| {
                    let (_, _, sids) = self.decode(&u.text, u.at);
                    (0..self.backends.len())
                        .filter(|&i| !self.sids_of(i, tp).is_disjoint(&sids))
                        .collect()
                }));
            }
        }
        out
    }

    /// True when every responsible HSDir holds a descriptor listing exactly `backends`.
    fn everywhere_lists(&self, backends: &[usize]) -> bool {
        self.listed_everywhere()
            .iter()
            .all(|l| l.as_deref() == Some(backends))
    }

    /// Sets how backend `i` fails its probes (`None`: it passes them).
    fn set_unhealthy(&self, i: usize, how: Option<Unhealthy>) {
        let addr = self.backends[i].inner.address();
        let mut s = self.transport.lock();
        match how {
            Some(h) => s.unhealthy.insert(addr, h),
            None => s.unhealthy.remove(&addr),
        };
    }

    /// Advances in 5-second steps until `done` holds, at most `limit`; returns the
    /// simulated time it took (`None` if it never held).
    async fn advance_until(
        &self,
        limit: Duration,
        done: impl Fn(&World) -> bool,
    ) -> Option<Duration> {
        let start = self.rt.now();
        while self.rt.now() - start < limit {
            self.rt.advance_by(Duration::from_secs(5)).await;
            if done(self) {
                return Some(self.rt.now() - start);
            }
        }
        None
    }
}

/// The issue's defaults, in simulated time: a backend whose application fails leaves every
/// descriptor (both periods, every HSDir) within 90 s of its first failure; when it answers
/// again it returns at once after the hold-down (5 minutes after it left), not before; two
/// builds per period in all; and with health settled nothing is re-uploaded for 30 minutes
/// although probes go on every 30 s (the steady-state rule holds with checks on).
#[test]
fn unhealthy_backend_leaves_at_once_and_returns_after_the_hold_down() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 3);
            let handle = w.launch_config(w.checked_config());
            let mut events = handle.events();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            assert!(
                w.everywhere_lists(&[0, 1, 2]),
                "{:?}",
                w.listed_everywhere()
            );
            let st = &handle.status()[0];
            assert!(st
                .instances
                .iter()
                .all(|i| i.health == BackendHealth::Up && i.listed));
            let before = w.uploads().len();

            w.set_unhealthy(0, Some(Unhealthy::Errors));
            let out = w
                .advance_until(Duration::from_secs(120), |w| w.everywhere_lists(&[1, 2]))
                .await
                .expect("backend 0 never left");
            assert!(out <= Duration::from_secs(90), "left after {out:?}");
            let st = &handle.status()[0];
            let i0 = &st.instances[0];
            assert_eq!(i0.health, BackendHealth::Down);
            assert!(!i0.listed);
            assert!(
                i0.health_reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("HTTP status 503"),
                "{i0:?}"
            );
            assert_eq!(
                i0.last_probe.as_ref().map(|p| p.kind.as_str()),
                Some("http-status")
            );
            assert!(!st.fail_open);
            let mut down_events = 0;
            while let Some(Some(e)) = events.next().now_or_never() {
                if let Event::BackendDown { name, reason, .. } = e {
                    assert_eq!(name, "node1");
                    assert!(reason.contains("503"), "{reason}");
                    down_events += 1;
                }
            }
            assert_eq!(down_events, 1);

            // It answers again two minutes later: back at the end of the hold-down, which
            // started when it left (within the last 5 s step).
            rt.advance_by(Duration::from_secs(120)).await;
            w.set_unhealthy(0, None);
            let back = w
                .advance_until(Duration::from_secs(10 * 60), |w| {
                    w.everywhere_lists(&[0, 1, 2])
                })
                .await
                .expect("backend 0 never came back");
            let back_since_out = back + Duration::from_secs(120);
            assert!(
                back_since_out + Duration::from_secs(5) >= HOLD_DOWN,
                "back {back_since_out:?} after leaving: the hold-down was not kept"
            );
            assert!(
                back_since_out <= HOLD_DOWN + Duration::from_secs(60),
                "back only {back_since_out:?} after leaving"
            );
            let changes: Vec<Upload> = w.uploads().into_iter().skip(before).collect();
            for (tp, v) in builds(&changes) {
                assert_eq!(
                    v.len(),
                    2,
                    "{tp:?}: one build to leave, one to return: {v:?}"
                );
            }
            assert!(handle.status()[0].instances[0].listed);

            // Settled: probes go on, uploads do not.
            let n = w.uploads().len();
            let probes_before = w.transport.lock().probes.len();
            rt.advance_by(Duration::from_secs(30 * 60)).await;
            assert_eq!(
                w.uploads().len(),
                n,
                "health checks caused uploads at steady state"
            );
            let probes = w.transport.lock().probes.len() - probes_before;
            assert!(
                (3 * 59..=3 * 61).contains(&probes),
                "{probes} probes in 30 min"
            );
            handle.shutdown().await;
        })
    });
}

/// A backend that fails and recovers every 40 s for two hours changes what is listed at most
/// once per hold-down: each period's builds are at least 5 minutes apart.
#[test]
fn a_flapping_backend_rebuilds_at_most_once_per_hold_down() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 3);
            let handle = w.launch_config(w.checked_config());
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            let before = w.uploads().len();
            for k in 0..(2 * 3600 / 40) {
                let how = (k % 2 == 0).then_some(Unhealthy::Errors);
                w.set_unhealthy(0, how);
                rt.advance_by(Duration::from_secs(40)).await;
            }
            let flapping: Vec<Upload> = w.uploads().into_iter().skip(before).collect();
            let all = builds(&flapping);
            assert!(!all.is_empty(), "flapping changed nothing at all");
            for (tp, v) in all {
                assert!(
                    v.len() >= 2,
                    "{tp:?}: the flapping backend never left: {v:?}"
                );
                for pair in v.windows(2) {
                    let gap = pair[1].1 - pair[0].1;
                    assert!(
                        gap >= HOLD_DOWN,
                        "{tp:?}: builds {gap:?} apart ({} builds)",
                        v.len()
                    );
                }
            }
            handle.shutdown().await;
        })
    });
}

/// When every backend fails, all stay listed (fail open), and status and events say so;
/// when one answers again, only it is listed.
#[test]
fn every_backend_down_fails_open() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 3);
            let handle = w.launch_config(w.checked_config());
            let mut events = handle.events();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            for i in 0..3 {
                w.set_unhealthy(i, Some(Unhealthy::Silent));
            }
            w.advance_until(Duration::from_secs(3 * 60), |_| {
                handle.status()[0]
                    .instances
                    .iter()
                    .all(|i| i.health == BackendHealth::Down)
            })
            .await
            .expect("the backends were never found down");
            rt.advance_by(Duration::from_secs(30)).await;
            let st = &handle.status()[0];
            assert!(st.fail_open, "{st:?}");
            assert!(st.instances.iter().all(|i| i.listed));
            assert!(
                w.everywhere_lists(&[0, 1, 2]),
                "{:?}",
                w.listed_everywhere()
            );
            let mut fail_open = Vec::new();
            while let Some(Some(e)) = events.next().now_or_never() {
                if let Event::FailOpen { active, .. } = e {
                    fail_open.push(active);
                }
            }
            assert_eq!(fail_open, vec![true]);

            // Backend 2 answers again: it alone is listed, after its hold-down.
            w.set_unhealthy(2, None);
            w.advance_until(HOLD_DOWN + Duration::from_secs(60), |w| {
                w.everywhere_lists(&[2])
            })
            .await
            .expect("the backend that answers was never listed alone");
            assert!(!handle.status()[0].fail_open);
            handle.shutdown().await;
        })
    });
}

/// A drain by reload takes a backend out at once and an undrain puts it back at once (no
/// hold-down: the operator decides); a reload that changes a down backend's check settings
/// keeps its verdict (no `BackendUp`, still out).
#[test]
fn drain_applies_at_once_and_reloads_keep_health() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 3);
            let mut handle = w.launch_config(w.checked_config());
            let mut events = handle.events();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            w.set_unhealthy(0, Some(Unhealthy::Errors));
            w.advance_until(Duration::from_secs(90), |w| w.everywhere_lists(&[1, 2]))
                .await
                .expect("backend 0 never left");

            let mut cfg = w.checked_config();
            cfg.services[0].instances[1].drain = true;
            if let Some(c) = cfg.services[0].instances[0].health_check.as_mut() {
                c.interval = Duration::from_secs(45);
            }
            handle.reload(cfg.clone()).await.expect("reload");
            // Backend 1 drained: backend 2 alone (backend 0 is still down).
            let took = w
                .advance_until(Duration::from_secs(60), |w| w.everywhere_lists(&[2]))
                .await
                .expect("the drained backend never left");
            assert!(took <= Duration::from_secs(15), "drain took {took:?}");
            let st = &handle.status()[0];
            assert_eq!(st.instances[1].health, BackendHealth::Draining);
            assert_eq!(st.instances[0].health, BackendHealth::Down);

            cfg.services[0].instances[1].drain = false;
            handle.reload(cfg).await.expect("reload");
            let took = w
                .advance_until(Duration::from_secs(60), |w| w.everywhere_lists(&[1, 2]))
                .await
                .expect("the undrained backend never returned");
            assert!(took <= Duration::from_secs(15), "undrain took {took:?}");
            let mut seen = Vec::new();
            while let Some(Some(e)) = events.next().now_or_never() {
                match e {
                    Event::BackendDraining { name, draining, .. } => {
                        seen.push(format!("{name} {draining}"))
                    }
                    Event::BackendUp { name, .. } => seen.push(format!("{name} up")),
                    Event::BackendDown { name, .. } => seen.push(format!("{name} down")),
                    _ => {}
                }
            }
            assert_eq!(seen, ["node1 down", "node2 true", "node2 false"]);
            handle.shutdown().await;
        })
    });
}

/// An embedding application's signal takes a backend out and puts it back at once; a
/// backend no service has is refused.
#[test]
fn an_application_signal_applies_at_once() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 3);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            let b1 = w.backends[1].inner.address();
            assert!(handle.set_health_signal(
                b1,
                Some(HealthSignal::Down {
                    reason: "deploying".into()
                })
            ));
            w.advance_until(Duration::from_secs(15), |w| w.everywhere_lists(&[0, 2]))
                .await
                .expect("the signal did not take the backend out");
            let i1 = &handle.status()[0].instances[1];
            assert_eq!(i1.health, BackendHealth::Down);
            assert!(i1
                .health_reason
                .as_deref()
                .unwrap_or("")
                .contains("deploying"));
            assert!(handle.set_health_signal(b1, None));
            w.advance_until(Duration::from_secs(15), |w| w.everywhere_lists(&[0, 1, 2]))
                .await
                .expect("withdrawing the signal did not put the backend back");
            let stranger = w.frontend.address();
            assert!(!handle.set_health_signal(stranger, Some(HealthSignal::Up)));
            handle.shutdown().await;
        })
    });
}

/// Without `health-check:` nothing is probed (and everything else is as before: the other
/// tests of this file run without checks).
#[test]
fn no_probes_without_health_checks() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 3);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(30 * 60)).await;
            assert!(w.transport.lock().probes.is_empty());
            let st = &handle.status()[0];
            assert!(st
                .instances
                .iter()
                .all(|i| i.health == BackendHealth::Unchecked
                    && i.last_probe.is_none()
                    && i.listed));
            handle.shutdown().await;
        })
    });
}

/// What one run of [`two_frontend_scenario`] saw at the HSDirs.
#[derive(Debug)]
struct ScenarioCounts {
    /// Uploads that reached an HSDir (accepted or refused), per (period, HSDir).
    uploads: HashMap<(TimePeriod, RsaIdentity), usize>,
    /// Refused uploads.
    refused: usize,
    /// Samples (every 10 s) at which some HSDir held a descriptor listing the restarted
    /// backend's old intro points, after one had held its new ones.
    reverted: usize,
    /// Seconds from the backend's restart until every HSDir held its new intro points.
    converged_after: Option<u64>,
}

/// `frontends` frontends with one key and one config (`docs/two-frontends.md`), started
/// 20 s apart, on one set of HSDirs, for 3 simulated hours with 7 backends of 3 intro points
/// each (21: more than a descriptor lists, so *which* 20 is a choice both must make alike);
/// a backend restarts (new intro points) after one hour. Every 10 s, what each HSDir holds
/// is checked: once the first publication is done, 20 current intro points with every
/// backend in; and once one HSDir has the restarted backend's new intro points, none may go
/// back to the old ones.
async fn two_frontend_scenario(rt: &MockRuntime, frontends: usize) -> ScenarioCounts {
    const BACKENDS: usize = 7;
    let mut w = World::new(rt.clone(), BACKENDS);
    // Refreshes exactly 60 minutes apart (not 60–120 at random), so that one frontend's
    // uploads are a fixed count to compare two frontends' with.
    let timing = Timing {
        republish_max: Timing::default().republish_min,
        ..Timing::default()
    };
    let mut handles = Vec::new();
    for _ in 0..frontends {
        handles.push(w.launch_config_timing(w.config(), timing.clone()));
        rt.advance_by(Duration::from_secs(20)).await;
    }
    rt.advance_by(Duration::from_secs(5 * 60)).await;
    let (mut reverted, mut converged_after, mut restarted_at) = (0, None, None);
    for step in 0..(3 * 360) {
        if step == 360 {
            let old: HashSet<[u8; 32]> = w.all_sids_of(1);
            w.backend_restarts(1);
            restarted_at = Some((rt.now(), old));
        }
        rt.advance_by(Duration::from_secs(10)).await;
        let held = w.frontend_held();
        assert!(!held.is_empty());
        let mut all_new = true;
        for (tp, _hsdir, sids) in &held {
            let current: HashSet<[u8; 32]> =
                (0..BACKENDS).flat_map(|i| w.sids_of(i, *tp)).collect();
            match &restarted_at {
                None => {
                    assert_eq!(sids.len(), 20, "step {step}: 20 intro points");
                    assert!(sids.is_subset(&current), "step {step}: all current");
                    for i in 0..BACKENDS {
                        assert!(!sids.is_disjoint(&w.sids_of(i, *tp)), "backend {i} listed");
                    }
                }
                Some((_, old)) => {
                    if !sids.is_disjoint(old) {
                        all_new = false;
                        if converged_after.is_some() {
                            reverted += 1;
                        }
                    }
                }
            }
        }
        if let (Some((at, _)), true, None) = (&restarted_at, all_new, converged_after) {
            converged_after = Some(rt.now().duration_since(*at).as_secs());
        }
    }
    for h in &handles {
        let st = &h.status()[0];
        for p in &st.periods {
            assert_eq!(p.refusals_in_a_row, 0, "no refusal left: {p:?}");
            assert_eq!(
                p.hsdirs_accepted, p.hsdirs,
                "every HSDir counts as holding ours"
            );
        }
        if let Some(other) = &st.other_publisher {
            assert!(frontends > 1, "alone, yet another publisher: {other:?}");
            assert!(other.same_listing, "it listed what we list: {other:?}");
        }
    }
    // The HSDirs keep only the higher counter: a frontend ahead sees nothing of the other
    // until the other's next build passes it; over 3 hours, at least one has seen the other.
    if frontends > 1 {
        assert!(
            handles
                .iter()
                .any(|h| h.status()[0].other_publisher.is_some()),
            "neither frontend saw the other"
        );
    }
    let ups = w.uploads();
    let mut uploads: HashMap<(TimePeriod, RsaIdentity), usize> = HashMap::new();
    for u in &ups {
        if let Some(tp) = u.period {
            *uploads.entry((tp, u.hsdir)).or_default() += 1;
        }
    }
    for h in handles {
        h.shutdown().await;
    }
    ScenarioCounts {
        uploads,
        refused: ups.iter().filter(|u| !u.accepted).count(),
        reverted,
        converged_after,
    }
}

/// Two frontends with one key do not fight: they list the same intro points (no randomness
/// in what is listed), so an HSDir holding either's descriptor counts for both; they upload
/// at most twice what one frontend uploads, nearly never refused; a backend's new intro
/// points are everywhere within two fetch intervals and never reverted by the frontend that
/// saw them later; each sees the other in its status.
#[test]
fn two_frontends_with_one_key_publish_alike_without_fighting() {
    // Each scenario on its own clock from the same start: run one after the other on one
    // clock, the second would meet other time periods (past midnight, the next period's
    // shared random value) and so other HSDirs, and the comparison would mean nothing.
    let start = sim_start();
    let run = |frontends| {
        let rt = MockRuntime::builder().starting_wallclock(start).build();
        rt.clone()
            .block_on(async move { two_frontend_scenario(&rt, frontends).await })
    };
    let (one, two) = (run(1), run(2));
    eprintln!("one frontend: {one:?}\ntwo frontends: {two:?}");
    // Per HSDir and period, at most twice what one frontend uploads.
    for (pair, n) in &two.uploads {
        let alone = one.uploads.get(pair).copied().unwrap_or(0);
        assert!(
            *n <= 2 * alone,
            "{pair:?}: {n} uploads by two frontends, {alone} by one"
        );
    }
    let pairs = two.uploads.len();
    assert!(
        two.refused <= pairs,
        "no refusal storm: {} refused uploads over {pairs} (period, HSDir) pairs",
        two.refused
    );
    for c in [&one, &two] {
        assert_eq!(c.reverted, 0, "went back to the old intro points: {c:?}");
        let after = c.converged_after.expect("the new intro points arrived");
        // Two fetch intervals, the 60-s rebuild gap at most, the uploads.
        assert!(after <= 3 * 60, "converged after {after} s");
    }
}

/// A build while a watch's peek is under way: the HSDir answers with the descriptor we asked
/// about, and our newer one reaches it before that answer reaches us. That answer is not a
/// lost descriptor: nothing is uploaded again (the HSDir would refuse it: it holds the newer
/// one), so from the HSDirs' side each build reaches each HSDir once and nothing is refused.
#[test]
fn a_build_while_we_look_is_not_taken_for_a_lost_descriptor() {
    sim(|rt| {
        Box::pin(async move {
            let mut w = World::new(rt.clone(), 3);
            // A watch every 20 s, each peek answered after 25 s: from now on some peek of
            // each period is always under way, whenever the build comes.
            let timing = Timing {
                watch_interval: Duration::from_secs(20),
                ..Timing::default()
            };
            let handle = w.launch_config_timing(w.config(), timing);
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            assert!(handle.all_published());
            w.transport.lock().slow_peeks = Some(Duration::from_secs(25));
            rt.advance_by(Duration::from_secs(2 * 60)).await;
            let before = w.uploads().len();
            w.backend_restarts(1);
            rt.advance_by(Duration::from_secs(10 * 60)).await;
            let ups = w.uploads().split_off(before);
            let first_new = ups.first().expect("the restart led to a build").at;
            let under_way = {
                let s = w.transport.lock();
                s.fetches
                    .iter()
                    .filter(|(at, blind, _)| {
                        s.front_ids.values().any(|f| f == blind)
                            && *at < first_new
                            && first_new < *at + Duration::from_secs(25)
                    })
                    .count()
            };
            assert!(under_way > 0, "no peek was under way at the build");
            let mut sent = HashSet::new();
            for u in &ups {
                assert!(u.accepted, "refused: {} at {}", u.revision, u.hsdir);
                assert!(
                    sent.insert((u.hsdir, u.revision)),
                    "revision {} sent twice to {}",
                    u.revision,
                    u.hsdir
                );
            }
            handle.shutdown().await;
        })
    });
}

/// An HSDir that lost our descriptor (it restarted: C tor keeps its cache in memory) gets it
/// again before the next refresh: the watch looks at each HSDir in turn (every 5 minutes
/// one HSDir of each period, so each HSDir within 8 × 5 minutes) and finds nothing there.
#[test]
fn an_hsdir_that_lost_our_descriptor_gets_it_again() {
    sim(|rt| {
        Box::pin(async move {
            let w = World::new(rt.clone(), 1);
            let handle = w.launch();
            rt.advance_by(Duration::from_secs(5 * 60)).await;
            assert!(handle.all_published());
            let before = w.uploads().len();
            let (lost_hsdir, blind) = {
                let mut s = w.transport.lock();
                let key = *s.held.keys().next().expect("an HSDir holds ours");
                s.held.remove(&key);
                s.stored.remove(&(key.1, key.0));
                key
            };
            rt.advance_by(Duration::from_secs(45 * 60)).await;
            let again: Vec<Upload> = w.uploads().into_iter().skip(before).collect();
            assert_eq!(
                again.len(),
                1,
                "uploaded again there, and only there: {again:?}"
            );
            assert_eq!(again[0].hsdir, lost_hsdir);
            assert!(again[0].accepted);
            assert!(w.transport.lock().stored.contains_key(&(blind, lost_hsdir)));
            handle.shutdown().await;
        })
    });
}
