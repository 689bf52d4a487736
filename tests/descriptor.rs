//! The descriptor engine, offline: round trips, rejections, selection, revision counters.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onionbalance::descriptor::build::build_for_period;
use onionbalance::descriptor::select::resolve;
use onionbalance::descriptor::synthetic::{intro_point_on, periods_around, SyntheticBackend};
use onionbalance::descriptor::{
    intake, intro_point_relay, select_intro_points, BackendKeys, BuildError, BuildRequest, Engine,
    FrontendPeriodKeys, IntakeError, PublishPeriod, DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::FrontendKey;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tor_checkable::TimeBound as _;
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::{RevisionCounter, Subcredential};
use tor_netdoc::doc::hsdesc::HsDesc;
use tor_protover::Protocols;

/// A fixed "now" so that failures reproduce.
fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-11-25T15:04:05Z").expect("time")
}

fn current(now: SystemTime) -> PublishPeriod {
    periods_around(now)[0]
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Our frontend descriptor parses back with the frontend's address, by our intake and by
/// Arti's client-side parser, and lists exactly the backends' intro points.
#[test]
fn frontend_descriptor_round_trips() {
    let mut r = rng(1);
    let t = now();
    let periods = periods_around(t);
    assert_eq!(periods.len(), 2);
    let backends: Vec<_> = (0..2)
        .map(|_| SyntheticBackend::generate(&mut r, 3))
        .collect();
    let frontend = Arc::new(FrontendKey::generate(&mut r));
    let mut engine = Engine::new(frontend.clone());
    let snapshots: Vec<_> = backends
        .iter()
        .map(|b| {
            let text = b
                .descriptor(&periods[0], t, &mut r)
                .expect("backend descriptor");
            let keys = BackendKeys::derive(b.address(), periods[0].time_period).expect("keys");
            intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
        })
        .collect();
    let refs: Vec<_> = snapshots.iter().collect();
    let built: Vec<_> = periods
        .iter()
        .map(|p| engine.build(p, &refs, t, &mut r).expect("build").descriptor)
        .collect();
    let backend_sids: HashSet<[u8; 32]> = backends
        .iter()
        .flat_map(|b| b.intro_points.iter().map(|i| *i.ipt_sid_key().as_bytes()))
        .collect();
    for (d, p) in built.iter().zip(&periods) {
        assert_eq!(d.period, p.time_period);
        assert_eq!(d.intro_points, 6);
        let keys = BackendKeys::derive(frontend.address(), p.time_period).expect("keys");
        assert_eq!(keys.blind_id(), d.blind_id);
        let snap =
            intake(&keys, &d.text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("own descriptor parses");
        assert_eq!(snap.revision, d.revision);
        let sids: HashSet<[u8; 32]> = snap
            .intro_points
            .iter()
            .map(|i| *i.ipt_sid_key().as_bytes())
            .collect();
        assert_eq!(sids, backend_sids);
        // Arti's client path, independently of ours.
        let fk = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("derive");
        let desc = HsDesc::parse_decrypt_validate(&d.text, &d.blind_id, &fk.subcredential(), None)
            .expect("arti parses")
            .if_valid_at(&t)
            .expect("valid now");
        assert_eq!(desc.intro_points().len(), 6);
    }
}

/// A descriptor built for one service fails intake for another, naming the problem.
#[test]
fn descriptor_of_another_service_is_rejected() {
    let mut r = rng(2);
    let t = now();
    let p = current(t);
    let a = SyntheticBackend::generate(&mut r, 3);
    let b = SyntheticBackend::generate(&mut r, 3);
    let text = a.descriptor(&p, t, &mut r).expect("descriptor");
    let keys_b = BackendKeys::derive(b.address(), p.time_period).expect("keys");
    let err = intake(&keys_b, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("wrong service");
    assert!(
        matches!(err, IntakeError::WrongService(addr) if addr == b.address()),
        "{err}"
    );
    // Same service, other period: also "wrong service or period".
    let next = periods_around(t)[1];
    let keys_next = BackendKeys::derive(a.address(), next.time_period).expect("keys");
    let err = intake(&keys_next, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("wrong period");
    assert!(matches!(err, IntakeError::WrongService(_)), "{err}");
}

/// Tampering with a signed field breaks the signature; garbage does not parse; both are
/// errors, never panics.
#[test]
fn tampered_and_garbage_descriptors_are_rejected() {
    let mut r = rng(3);
    let t = now();
    let p = current(t);
    let a = SyntheticBackend::generate(&mut r, 3);
    let text = a.descriptor(&p, t, &mut r).expect("descriptor");
    let keys = BackendKeys::derive(a.address(), p.time_period).expect("keys");
    intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("untampered is fine");

    // Raise the revision counter: the outer signature no longer matches.
    let line = text
        .lines()
        .find(|l| l.starts_with("revision-counter "))
        .expect("line");
    let n: u64 = line["revision-counter ".len()..].parse().expect("number");
    let tampered = text.replacen(line, &format!("revision-counter {}", n + 1), 1);
    let err = intake(&keys, &tampered, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("tampered");
    assert!(matches!(err, IntakeError::BadSignature(_)), "{err}");

    // Flip a character inside the encrypted body: decryption (MAC) fails.
    let body_at = text.find("-----BEGIN MESSAGE-----").expect("body") + 40;
    let mut flipped = text.clone().into_bytes();
    flipped[body_at] = if flipped[body_at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let err = intake(&keys, &flipped, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("flipped");
    assert!(
        matches!(
            err,
            IntakeError::BadSignature(_) | IntakeError::NotDecryptable(_)
        ),
        "{err}"
    );

    for garbage in [
        "",
        "hs-descriptor 3\n",
        "<html>503</html>",
        &text[..text.len() / 2],
    ] {
        let err = intake(&keys, garbage, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("garbage");
        assert!(
            matches!(err, IntakeError::Malformed(_)),
            "{garbage:?}: {err}"
        );
    }

    let err = intake(&keys, &text, t, 1000).expect_err("oversized");
    assert!(
        matches!(err, IntakeError::Oversized { max: 1000, .. }),
        "{err}"
    );
}

/// An expired descriptor (certificates past their 54 hours) is rejected.
#[test]
fn expired_descriptor_is_rejected() {
    let mut r = rng(4);
    let t = now();
    let p = current(t);
    let a = SyntheticBackend::generate(&mut r, 3);
    let text = a.descriptor(&p, t, &mut r).expect("descriptor");
    let keys = BackendKeys::derive(a.address(), p.time_period).expect("keys");
    let later = t + Duration::from_secs(55 * 3600);
    let err = intake(&keys, &text, later, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("expired");
    assert!(matches!(err, IntakeError::NotValidNow { .. }), "{err}");
    assert!(err.to_string().contains("clock"), "{err}");
}

/// Selection: at most 20, every backend once before any twice, reproducible by seed.
#[test]
fn selection_is_fair_capped_and_reproducible() {
    let mut r = rng(5);
    let t = now();
    let p = current(t);
    for (k, per) in [(7usize, 3usize), (20, 3), (2, 3), (25, 1), (3, 10)] {
        let backends: Vec<_> = (0..k)
            .map(|_| SyntheticBackend::generate(&mut r, per))
            .collect();
        let snaps: Vec<_> = backends
            .iter()
            .map(|b| {
                let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
                let text = b.descriptor(&p, t, &mut r).expect("descriptor");
                intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
            })
            .collect();
        let refs: Vec<_> = snaps.iter().collect();
        let chosen = select_intro_points(&refs, 20);
        let total = k * per;
        assert_eq!(chosen.len(), total.min(20), "k={k} per={per}");
        // Fairness: counts per backend differ by at most one, and the first min(k,20) are
        // distinct backends.
        let mut counts = vec![0usize; k];
        for c in &chosen {
            counts[c.backend] += 1;
        }
        let represented = counts.iter().filter(|&&c| c > 0).count();
        assert_eq!(represented, k.min(20), "k={k}: {counts:?}");
        let max = counts.iter().max().copied().unwrap_or(0);
        let min_present = counts
            .iter()
            .filter(|&&c| c > 0)
            .min()
            .copied()
            .unwrap_or(0);
        assert!(max - min_present <= 1, "k={k} per={per}: {counts:?}");
        let first: HashSet<usize> = chosen.iter().take(k.min(20)).map(|c| c.backend).collect();
        assert_eq!(first.len(), k.min(20));
        // No intro point twice.
        let ipts = resolve(&refs, &chosen);
        let uniq: HashSet<[u8; 32]> = ipts.iter().map(|i| *i.ipt_sid_key().as_bytes()).collect();
        assert_eq!(uniq.len(), ipts.len());
        // A function of the backends alone (two frontends with one key list alike): the
        // same backends given in another order choose the same intro points.
        let reversed: Vec<_> = refs.iter().rev().copied().collect();
        let mut again: Vec<[u8; 32]> = resolve(&reversed, &select_intro_points(&reversed, 20))
            .iter()
            .map(|i| *i.ipt_sid_key().as_bytes())
            .collect();
        let mut first_choice: Vec<[u8; 32]> =
            ipts.iter().map(|i| *i.ipt_sid_key().as_bytes()).collect();
        again.sort_unstable();
        first_choice.sort_unstable();
        assert_eq!(
            again, first_choice,
            "k={k} per={per}: the order of backends decided"
        );
    }
}

/// 20 intro points in a descriptor limited to 5000 bytes: an error, never a silent cut.
#[test]
fn too_large_is_an_error() {
    let mut r = rng(6);
    let t = now();
    let p = current(t);
    let backend = SyntheticBackend::generate(&mut r, 20);
    let frontend = FrontendKey::generate(&mut r);
    let keys = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys");
    let req = BuildRequest {
        intro_points: &backend.intro_points,
        revision: 1.into(),
        now: t,
        max_len: 5000,
        flow_control: None,
        protocols: Protocols::default(),
        auth_clients: None,
    };
    let err = build_for_period(&keys, &p, None, req.clone(), &mut r).expect_err("too large");
    assert!(matches!(err, BuildError::TooLarge(5000)), "{err}");
    let ok = build_for_period(
        &keys,
        &p,
        None,
        BuildRequest {
            max_len: DEFAULT_MAX_DESCRIPTOR_LEN,
            ..req.clone()
        },
        &mut r,
    )
    .expect("fits in 50 kB");
    assert!(ok.text.len() <= DEFAULT_MAX_DESCRIPTOR_LEN);
    let none = BuildRequest {
        intro_points: &[],
        ..req
    };
    assert!(matches!(
        build_for_period(&keys, &p, None, none, &mut r),
        Err(BuildError::NoIntroPoints)
    ));
}

/// The OPE revision counter grows with time and strictly increases even within one second.
#[test]
fn revision_counter_strictly_increases() {
    let mut r = rng(7);
    let t = now();
    let p = current(t);
    let frontend = FrontendKey::generate(&mut r);
    let keys = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("keys");
    let a = keys.revision_counter(p.srv_start, t, None).expect("rev");
    let b = keys.revision_counter(p.srv_start, t, Some(a)).expect("rev");
    let c = keys
        .revision_counter(p.srv_start, t + Duration::from_secs(1), Some(b))
        .expect("rev");
    assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
    // Stateless across restarts: the same second gives the same counter without history,
    // and a later second a larger one.
    assert_eq!(keys.revision_counter(p.srv_start, t, None).expect("rev"), a);
    let later = keys
        .revision_counter(p.srv_start, t + Duration::from_secs(3600), None)
        .expect("rev");
    assert!(later > a);
    assert!(matches!(
        keys.revision_counter(p.srv_start, p.srv_start - Duration::from_secs(1), None),
        Err(BuildError::ClockBeforeSrvPeriod)
    ));
    // Through the engine: two builds in the same second get increasing counters, and a
    // floor from an earlier run (the revision store) is respected.
    let backend = SyntheticBackend::generate(&mut r, 3);
    let mut engine = Engine::new(Arc::new(frontend));
    let text = backend.descriptor(&p, t, &mut r).expect("descriptor");
    let keys = BackendKeys::derive(backend.address(), p.time_period).expect("keys");
    let snap = intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake");
    let first = engine.build(&p, &[&snap], t, &mut r).expect("build");
    let second = engine.build(&p, &[&snap], t, &mut r).expect("build");
    assert!(second.descriptor.revision > first.descriptor.revision);
    let floor = u64::from(second.descriptor.revision) + 1000;
    engine.raise_revision_floor(p.time_period, floor.into());
    let third = engine.build(&p, &[&snap], t, &mut r).expect("build");
    assert!(u64::from(third.descriptor.revision) > floor);
}

/// Building refuses to publish a descriptor without intro points: once every certificate
/// has expired, there is nothing to list.
#[test]
fn nothing_to_build_once_everything_expired() {
    let mut r = rng(8);
    let t = now();
    let p = current(t);
    let a = SyntheticBackend::generate(&mut r, 3);
    let keys = BackendKeys::derive(a.address(), p.time_period).expect("keys");
    let snap = intake(
        &keys,
        &a.descriptor(&p, t, &mut r).expect("desc"),
        t,
        DEFAULT_MAX_DESCRIPTOR_LEN,
    )
    .expect("intake");
    let mut engine = Engine::new(Arc::new(FrontendKey::generate(&mut r)));
    engine
        .build(&p, &[&snap], t, &mut r)
        .expect("build while valid");
    let much_later = t + Duration::from_secs(55 * 3600);
    assert!(matches!(
        engine.build(&p, &[&snap], much_later, &mut r),
        Err(BuildError::NoIntroPoints)
    ));
}

/// Snapshots of backends whose intro points sit on the given relays (one intro point per
/// listed relay id).
fn backends_on(layout: &[&[u8]], r: &mut StdRng) -> Vec<onionbalance::descriptor::BackendSnapshot> {
    let t = now();
    let p = current(t);
    layout
        .iter()
        .map(|relays| {
            let mut b = SyntheticBackend::generate(r, 0);
            b.intro_points = relays
                .iter()
                .map(|id| intro_point_on(r, [*id; 20]).expect("intro point"))
                .collect();
            let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
            let text = b.descriptor(&p, t, r).expect("descriptor");
            intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
        })
        .collect()
}

/// Per backend, how many intro points were chosen; and the chosen relays are distinct.
fn shares(snaps: &[onionbalance::descriptor::BackendSnapshot]) -> Vec<usize> {
    let refs: Vec<_> = snaps.iter().collect();
    let chosen = select_intro_points(&refs, 20);
    let relays: Vec<_> = resolve(&refs, &chosen)
        .into_iter()
        .map(|i| intro_point_relay(i).expect("relay"))
        .collect();
    let distinct: HashSet<_> = relays.iter().collect();
    assert_eq!(
        distinct.len(),
        relays.len(),
        "one intro point per relay: {relays:?}"
    );
    let mut counts = vec![0; snaps.len()];
    for c in &chosen {
        counts[c.backend] += 1;
    }
    counts
}

/// Backends that share relays: each relay carries one intro point, and the relays are
/// shared out so that every backend is reachable by C tor clients, whatever the backends'
/// addresses (which order the choice: each seed gives other addresses).
#[test]
fn shared_relays_carry_one_intro_point_and_every_backend_gets_one() {
    for seed in 0..40 {
        let mut r = rng(1200 + seed);
        // Three backends all on the same three relays (a small network).
        let same = backends_on(&[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]], &mut r);
        // One backend with a single relay that another also uses: the other must yield it.
        let narrow = backends_on(&[&[1, 2], &[1], &[2, 3]], &mut r);
        // More backends than relays: as many backends as relays are served.
        let crowded = backends_on(&[&[1, 2], &[1, 2], &[1, 2]], &mut r);
        assert_eq!(shares(&same), vec![1, 1, 1], "seed {seed}");
        assert_eq!(shares(&narrow), vec![1, 1, 1], "seed {seed}");
        let c = shares(&crowded);
        assert_eq!(c.iter().sum::<usize>(), 2, "seed {seed}: {c:?}");
        assert!(c.iter().all(|&n| n <= 1), "seed {seed}: {c:?}");
    }
}

/// Shares are equal within one intro point, whatever each backend publishes, except where a
/// backend's own relays run out.
#[test]
fn shares_are_equal_not_proportional() {
    let ids = |from: u8, n: u8| -> Vec<u8> { (from..from + n).collect() };
    let (a, b, c, d, e) = (
        ids(10, 10),
        ids(30, 10),
        ids(50, 10),
        ids(70, 2),
        ids(90, 2),
    );
    for seed in 0..20 {
        let snaps = backends_on(&[&a, &b, &c, &d, &e], &mut rng(1300 + seed));
        let mut got = shares(&snaps);
        assert_eq!(got.iter().sum::<usize>(), 20);
        assert_eq!(&got[3..], &[2, 2], "limited by their own relays");
        got.truncate(3);
        got.sort_unstable();
        assert_eq!(got, vec![5, 5, 6], "seed {seed}");
    }
    // Sharing relays with a greedy neighbour: the neighbour moves to its other relays.
    for seed in 0..20 {
        let snaps = backends_on(&[&[1, 2, 3, 4, 5, 6], &[1, 2, 3]], &mut rng(1400 + seed));
        assert_eq!(shares(&snaps), vec![3, 3], "seed {seed}");
    }
}

/// Restricted discovery: a descriptor built for authorized clients is read by each of them,
/// through our intake and Arti's client parser, and by nobody else; its `auth-client` lines
/// are padded to a multiple of 16 with fresh random ones per build; and a changed client
/// list applies to the next build.
#[test]
fn restricted_descriptor_is_read_only_by_authorized_clients() {
    use onionbalance::client_auth::{ClientSecret, AUTH_CLIENT_MULTIPLE};
    use tor_hscrypto::pk::{HsClientDescEncKeypair, HsClientDescEncSecretKey};

    let mut r = rng(11);
    let t = now();
    let p = current(t);
    let backend = SyntheticBackend::generate(&mut r, 3);
    let snapshot = {
        let text = backend
            .descriptor(&p, t, &mut r)
            .expect("backend descriptor");
        let keys = BackendKeys::derive(backend.address(), p.time_period).expect("keys");
        intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
    };
    let frontend = Arc::new(FrontendKey::generate(&mut r));
    let clients: Vec<ClientSecret> = (0..3)
        .map(|_| ClientSecret::generate(frontend.address(), &mut r))
        .collect();
    let outsider = ClientSecret::generate(frontend.address(), &mut r);
    let pair = |c: &ClientSecret| {
        Arc::new(HsClientDescEncKeypair::new(
            c.public(),
            HsClientDescEncSecretKey::from(c.secret.as_ref().clone()),
        ))
    };
    let mut engine = Engine::new(frontend.clone());
    engine.set_authorized_clients(Some(clients.iter().map(|c| *c.public()).collect()));
    let built = engine
        .build(&p, &[&snapshot], t, &mut r)
        .expect("build")
        .descriptor;

    // Each authorized client reads the intro points, with our intake and with Arti's parser.
    let fk = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("derive");
    for c in &clients {
        let keys = BackendKeys::derive(frontend.address(), p.time_period)
            .expect("keys")
            .with_client_key(pair(c));
        let snap = intake(&keys, &built.text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("authorized");
        assert_eq!(snap.intro_points.len(), 3);
        let desc = HsDesc::parse_decrypt_validate(
            &built.text,
            &built.blind_id,
            &fk.subcredential(),
            Some(&*pair(c)),
        )
        .expect("Arti reads it with an authorized key")
        .if_valid_at(&t)
        .expect("valid now");
        assert_eq!(desc.intro_points().len(), 3);
    }
    // Without a key, or with another one, the intro points stay hidden.
    let plain = BackendKeys::derive(frontend.address(), p.time_period).expect("keys");
    let without = intake(&plain, &built.text, t, DEFAULT_MAX_DESCRIPTOR_LEN)
        .expect_err("no key must not read it");
    assert!(
        matches!(without, IntakeError::NotDecryptable(_)),
        "{without}"
    );
    let other = intake(
        &plain.clone().with_client_key(pair(&outsider)),
        &built.text,
        t,
        DEFAULT_MAX_DESCRIPTOR_LEN,
    )
    .expect_err("an outsider's key must not read it");
    assert!(matches!(other, IntakeError::NotDecryptable(_)), "{other}");

    // Padding: 3 real entries among 16, and the random ones differ from build to build, as
    // seen by anyone who knows the address (the middle layer needs only the subcredential).
    let middle = |d: &onionbalance::descriptor::BuiltDescriptor| {
        auth_client_lines(&d.text, &d.blind_id, &fk.subcredential(), d.revision)
    };
    // Whole lines would differ even if everything but the random IV were reused: compare the
    // client ids (derived from the build's ephemeral key for real clients, random for the
    // padding) and the ephemeral key itself.
    let first = middle(&built);
    assert_eq!(first.client_ids.len(), AUTH_CLIENT_MULTIPLE);
    let again = engine
        .build(&p, &[&snapshot], t, &mut r)
        .expect("rebuild")
        .descriptor;
    let second = middle(&again);
    assert_eq!(second.client_ids.len(), AUTH_CLIENT_MULTIPLE);
    assert_ne!(
        first.ephemeral_key, second.ephemeral_key,
        "a fresh ephemeral key in each build"
    );
    assert!(
        first
            .client_ids
            .iter()
            .all(|id| !second.client_ids.contains(id)),
        "every client id (real and padding) is fresh in each build"
    );
    let distinct: HashSet<&String> = first.client_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        AUTH_CLIENT_MULTIPLE,
        "no client id repeats within a build"
    );

    // A client removed from the list cannot read the next build; the others still can.
    engine.set_authorized_clients(Some(clients[1..].iter().map(|c| *c.public()).collect()));
    let after = engine
        .build(&p, &[&snapshot], t, &mut r)
        .expect("build after removal")
        .descriptor;
    let read = |c: &ClientSecret| {
        intake(
            &plain.clone().with_client_key(pair(c)),
            &after.text,
            t,
            DEFAULT_MAX_DESCRIPTOR_LEN,
        )
    };
    assert!(
        read(&clients[0]).is_err(),
        "the removed client still reads it"
    );
    assert!(read(&clients[1]).is_ok() && read(&clients[2]).is_ok());

    // Back to open: anyone with the address reads it.
    engine.set_authorized_clients(None);
    let open = engine
        .build(&p, &[&snapshot], t, &mut r)
        .expect("open")
        .descriptor;
    intake(&plain, &open.text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("open again");
}

/// Restricted discovery with variants (more backends than one descriptor lists): every
/// variant is encrypted to the authorized clients, readable by each and by nobody else.
#[test]
fn every_variant_is_restricted_to_the_authorized_clients() {
    use onionbalance::client_auth::{ClientSecret, AUTH_CLIENT_MULTIPLE};
    use onionbalance::descriptor::RingFacts;
    use tor_hscrypto::pk::{HsClientDescEncKeypair, HsClientDescEncSecretKey};
    use tor_llcrypto::pk::rsa::RsaIdentity;

    let mut r = rng(12);
    let t = now();
    let p = current(t);
    // 24 backends: more than the 20 intro points one descriptor lists.
    let snapshots: Vec<_> = (0..24)
        .map(|_| {
            let b = SyntheticBackend::generate(&mut r, 2);
            let text = b.descriptor(&p, t, &mut r).expect("backend descriptor");
            let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
            intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
        })
        .collect();
    let refs: Vec<_> = snapshots.iter().collect();
    let hsdirs: Vec<RsaIdentity> = (1..=8u8).map(|i| RsaIdentity::from([i; 20])).collect();
    let ring = RingFacts {
        upload: &hsdirs,
        fetch: &hsdirs[..6],
    };
    let frontend = Arc::new(FrontendKey::generate(&mut r));
    let client = ClientSecret::generate(frontend.address(), &mut r);
    let mut engine = Engine::new(frontend.clone());
    engine.set_authorized_clients(Some(vec![*client.public()]));
    let built = engine
        .build_variants(&p, &refs, &ring, t, &mut r)
        .expect("variants");
    assert!(built.variants.len() > 1, "24 backends need variants");
    let plain = BackendKeys::derive(frontend.address(), p.time_period).expect("keys");
    let with_key = plain
        .clone()
        .with_client_key(Arc::new(HsClientDescEncKeypair::new(
            client.public(),
            HsClientDescEncSecretKey::from(client.secret.as_ref().clone()),
        )));
    let fk = FrontendPeriodKeys::derive(&frontend, p.time_period).expect("derive");
    let mut ephemeral_keys = HashSet::new();
    let mut client_ids = HashSet::new();
    for v in &built.variants {
        let snap = intake(&with_key, &v.descriptor.text, t, DEFAULT_MAX_DESCRIPTOR_LEN)
            .expect("the authorized client reads every variant");
        assert_eq!(snap.intro_points.len(), v.descriptor.intro_points);
        assert!(intake(&plain, &v.descriptor.text, t, DEFAULT_MAX_DESCRIPTOR_LEN).is_err());
        // Each variant is padded on its own, with its own ephemeral key and client ids: the
        // variants of one period cannot be linked through their auth-client entries.
        let m = auth_client_lines(
            &v.descriptor.text,
            &v.descriptor.blind_id,
            &fk.subcredential(),
            v.descriptor.revision,
        );
        assert_eq!(
            m.client_ids.len(),
            AUTH_CLIENT_MULTIPLE,
            "padded per variant"
        );
        assert!(
            ephemeral_keys.insert(m.ephemeral_key),
            "an ephemeral key reused"
        );
        for id in m.client_ids {
            assert!(client_ids.insert(id), "a client id reused across variants");
        }
    }
}

/// Many authorized clients: each adds an entry to every descriptor, and past about a hundred
/// a descriptor with 20 intro points exceeds the network's 50,000 bytes. The engine then
/// lists fewer intro points per descriptor instead of failing (which would stop publication
/// and let what is on the HSDirs expire): for 0, 16, 100 and 200 clients every variant
/// fits, every client reads it, and the limit the engine reached is the one `check` predicts
/// ([`clients_that_fit`]). 400 clients fit beside no intro point at all: the engine refuses
/// with `TooLarge` (and the config refuses more than `MAX_AUTHORIZED_CLIENTS`).
#[test]
fn many_authorized_clients_get_fewer_intro_points_not_no_descriptor() {
    use onionbalance::client_auth::{ClientSecret, AUTH_CLIENT_MULTIPLE};
    use onionbalance::descriptor::{clients_that_fit, RingFacts, MAX_INTRO_POINTS};
    use tor_hscrypto::pk::{HsClientDescEncKeypair, HsClientDescEncSecretKey};
    use tor_llcrypto::pk::rsa::RsaIdentity;

    let mut r = rng(14);
    let t = now();
    let p = current(t);
    let snapshots: Vec<_> = (0..10)
        .map(|_| {
            let b = SyntheticBackend::generate(&mut r, 3);
            let text = b.descriptor(&p, t, &mut r).expect("backend descriptor");
            let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
            intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
        })
        .collect();
    let refs: Vec<_> = snapshots.iter().collect();
    let hsdirs: Vec<RsaIdentity> = (1..=8u8).map(|i| RsaIdentity::from([i; 20])).collect();
    let ring = RingFacts {
        upload: &hsdirs,
        fetch: &hsdirs[..6],
    };
    let frontend = Arc::new(FrontendKey::generate(&mut r));
    let plain = BackendKeys::derive(frontend.address(), p.time_period).expect("keys");
    // What `check` prints: clients that fit beside 1..=20 intro points.
    let capacity: Vec<usize> = (1..=MAX_INTRO_POINTS)
        .map(|n| clients_that_fit(n, DEFAULT_MAX_DESCRIPTOR_LEN).expect("capacity"))
        .collect();
    assert!(
        capacity.windows(2).all(|w| w[0] >= w[1]),
        "fewer intro points leave room for more clients: {capacity:?}"
    );
    let mut limits = Vec::new();
    for n in [0usize, 16, 100, 200, 400] {
        let clients: Vec<ClientSecret> = (0..n)
            .map(|_| ClientSecret::generate(frontend.address(), &mut r))
            .collect();
        let mut engine = Engine::new(frontend.clone());
        engine.set_authorized_clients(Some(clients.iter().map(|c| *c.public()).collect()));
        // Entries come in groups of 16 (real ones and random ones).
        let entries = n.div_ceil(AUTH_CLIENT_MULTIPLE).max(1) * AUTH_CLIENT_MULTIPLE;
        let result = engine.build_variants(&p, &refs, &ring, t, &mut r);
        if entries > capacity[0] {
            // Not even one intro point leaves room: no descriptor could let every client
            // in. The config refuses so many clients (`MAX_AUTHORIZED_CLIENTS`); the engine
            // says why rather than drop some clients silently.
            assert!(
                matches!(result, Err(BuildError::TooLarge(_))),
                "{n} clients cannot fit: {result:?}"
            );
            limits.push((n, 0));
            continue;
        }
        let built = result.unwrap_or_else(|e| panic!("no descriptor for {n} clients: {e}"));
        for v in &built.variants {
            assert!(v.descriptor.text.len() <= DEFAULT_MAX_DESCRIPTOR_LEN);
            assert!(v.descriptor.intro_points <= built.intro_point_limit);
            assert!(v.descriptor.intro_points > 0);
        }
        let predicted = (1..=MAX_INTRO_POINTS)
            .rev()
            .find(|&k| capacity[k - 1] >= entries)
            .unwrap_or(1);
        assert_eq!(
            built.intro_point_limit, predicted,
            "{n} clients: the engine's limit against the capacity `check` prints ({capacity:?})"
        );
        for c in [clients.first(), clients.last()].into_iter().flatten() {
            let keys = plain
                .clone()
                .with_client_key(Arc::new(HsClientDescEncKeypair::new(
                    c.public(),
                    HsClientDescEncSecretKey::from(c.secret.as_ref().clone()),
                )));
            for v in &built.variants {
                intake(&keys, &v.descriptor.text, t, DEFAULT_MAX_DESCRIPTOR_LEN)
                    .unwrap_or_else(|e| panic!("{n} clients: a client cannot read a variant: {e}"));
            }
        }
        limits.push((n, built.intro_point_limit));
    }
    // 0, 16 and 100 clients (16, 16 and 112 entries) fit beside 20 intro points, 200 do not.
    assert_eq!(
        limits
            .iter()
            .map(|l| l.1 == MAX_INTRO_POINTS)
            .collect::<Vec<_>>(),
        [true, true, true, false, false],
        "{limits:?}"
    );
    assert_eq!(limits[4].1, 0, "400 clients fit in no descriptor");
    // Without restricted discovery the same backends fill descriptors of up to 20.
    let mut engine = Engine::new(frontend.clone());
    engine.set_authorized_clients(None);
    let open = engine
        .build_variants(&p, &refs, &ring, t, &mut r)
        .expect("open build");
    assert_eq!(open.intro_point_limit, MAX_INTRO_POINTS);
    eprintln!("clients → intro point limit: {limits:?}; capacity by intro points: {capacity:?}");
}

/// What a descriptor's middle layer says about its clients, as anyone who knows the address
/// reads it.
struct MiddleLayer {
    /// The `desc-auth-ephemeral-key` value.
    ephemeral_key: String,
    /// The client-id field of each `auth-client` line, in order.
    client_ids: Vec<String>,
}

/// The client entries of a descriptor's middle layer, decrypted with what any client of the
/// service knows (rend-spec-v3 §2.5.3), by the layer code written out independently of
/// Arti's parser.
fn auth_client_lines(
    text: &str,
    blind_id: &HsBlindId,
    subcredential: &Subcredential,
    revision: RevisionCounter,
) -> MiddleLayer {
    let plain =
        onionbalance::descriptor::layers::middle_plaintext(text, blind_id, subcredential, revision)
            .expect("middle layer decrypts with the address alone");
    let field = |line: &str| line.split_whitespace().nth(1).map(str::to_owned);
    MiddleLayer {
        ephemeral_key: plain
            .lines()
            .find(|l| l.starts_with("desc-auth-ephemeral-key "))
            .and_then(field)
            .expect("a desc-auth-ephemeral-key line"),
        client_ids: plain
            .lines()
            .filter(|l| l.starts_with("auth-client "))
            .map(|l| field(l).expect("auth-client has a client id"))
            .collect(),
    }
}

/// A backend can sign certificates with any date, such as the year 20000: intake keeps the
/// validity within years 1970–9999, and every time the status shows formats without panicking.
#[test]
fn far_future_validity_is_clamped_and_formats() {
    use onionbalance::status::{rfc3339, LATEST_FORMATTABLE};
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(18_000 * 365 * 86_400);
    let mut r = rng(13);
    let p = current(far);
    let b = SyntheticBackend::generate(&mut r, 2);
    let text = b
        .descriptor(&p, far, &mut r)
        .expect("descriptor in the year 20000");
    let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
    let snap = intake(&keys, &text, far, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake");
    let latest = SystemTime::UNIX_EPOCH + LATEST_FORMATTABLE;
    assert!(
        snap.valid_until.is_some_and(|t| t <= latest),
        "{:?}",
        snap.valid_until
    );
    assert!(snap.valid_from.is_none_or(|t| t <= latest));
    assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
    assert_eq!(
        rfc3339(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
        "1970-01-01T00:00:00Z"
    );
    let status = onionbalance::status::StatusDocument {
        services: vec![onionbalance::status::ServiceStatus {
            instances: vec![onionbalance::status::InstanceStatus {
                valid_until: Some(far),
                descriptor_received: Some(far),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let json = serde_json::to_string(&status).expect("serialise");
    assert!(json.contains("9999-12-31"), "{json}");
}

/// Both periods built side by side (`Engine::build_periods`, as the daemon builds them): each
/// result is for its own period, in order, readable with that period's keys and listing
/// every backend's intro points; a later build of each period carries a higher counter.
#[test]
fn periods_built_side_by_side_are_each_their_own() {
    use onionbalance::descriptor::{PeriodBuild, RingFacts};
    use tor_llcrypto::pk::rsa::RsaIdentity;

    let mut r = rng(21);
    let t = now();
    let periods = periods_around(t);
    assert_eq!(periods.len(), 2);
    let backends: Vec<_> = (0..4)
        .map(|_| SyntheticBackend::generate(&mut r, 3))
        .collect();
    // Each backend's own descriptor of each period, as the runner hands them over.
    let snapshots = |p: &PublishPeriod, r: &mut StdRng| -> Vec<_> {
        backends
            .iter()
            .map(|b| {
                let text = b.descriptor(p, t, r).expect("backend descriptor");
                let keys = BackendKeys::derive(b.address(), p.time_period).expect("keys");
                intake(&keys, &text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("intake")
            })
            .collect()
    };
    let hsdirs: Vec<RsaIdentity> = (1..=8u8).map(|i| RsaIdentity::from([i; 20])).collect();
    let ring = RingFacts {
        upload: &hsdirs,
        fetch: &hsdirs[..6],
    };
    let frontend = Arc::new(FrontendKey::generate(&mut r));
    let mut engine = Engine::new(frontend.clone());
    let per_period: Vec<_> = periods.iter().map(|p| snapshots(p, &mut r)).collect();
    let build = |engine: &mut Engine, r: &mut StdRng| {
        let builds = periods
            .iter()
            .zip(&per_period)
            .map(|(period, s)| PeriodBuild {
                period,
                snapshots: s.clone(),
                ring,
            })
            .collect();
        engine.build_periods(builds, t, r)
    };
    let first = build(&mut engine, &mut r);
    let again = build(&mut engine, &mut r);
    assert_eq!(first.len(), 2);
    for (i, p) in periods.iter().enumerate() {
        let built = first[i].as_ref().expect("built");
        let d = &built.variants[0].descriptor;
        assert_eq!(d.period, p.time_period, "result {i} is for period {i}");
        let keys = BackendKeys::derive(frontend.address(), p.time_period).expect("keys");
        let read = intake(&keys, &d.text, t, DEFAULT_MAX_DESCRIPTOR_LEN).expect("readable");
        let listed: HashSet<_> = read
            .intro_points
            .iter()
            .map(|i| *i.ipt_sid_key().as_bytes())
            .collect();
        for s in &per_period[i] {
            for ipt in &s.intro_points {
                assert!(
                    listed.contains(ipt.ipt_sid_key().as_bytes()),
                    "period {i}: its own backends' intro points"
                );
            }
        }
        let later = &again[i].as_ref().expect("built").variants[0].descriptor;
        assert!(
            later.revision > d.revision,
            "period {i}: a later build goes higher"
        );
    }
}
