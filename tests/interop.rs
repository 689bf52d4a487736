//! Interoperability with C tor, offline: descriptors that C tor 0.4.9 onion services
//! published (captured on a private network, `tests/fixtures/ctor-0.4.9/`, see its `.toml`
//! files for address, capture time and time period) go through our intake, and a frontend
//! descriptor built from their real intro points parses back with every link specifier intact.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use onionbalance::descriptor::{
    intake, intro_point_relay, BackendKeys, Engine, IntakeError, PublishPeriod,
    DEFAULT_MAX_DESCRIPTOR_LEN,
};
use onionbalance::{FrontendKey, OnionAddress};
use onionbalance_testnet::fixtures::{self, FixtureMeta};
use rand::SeedableRng as _;

fn load() -> Vec<(FixtureMeta, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctor-0.4.9");
    let all = fixtures::load_all(&dir).expect("fixtures load");
    assert!(
        all.iter().filter(|(m, _)| m.instance_mode).count() >= 2,
        "expected at least two instance-mode fixtures in {}",
        dir.display()
    );
    all
}

/// Every fixture passes intake with its own address at capture time, with the revision
/// counter and intro-point count C tor reported.
#[test]
fn ctor_descriptors_pass_intake() {
    for (meta, text) in load() {
        assert!(meta.tor_version.contains("0.4.9"), "{}", meta.tor_version);
        let addr: OnionAddress = meta.onion_address.parse().expect("address");
        let period = meta.time_period().expect("period");
        let keys = BackendKeys::derive(addr, period).expect("keys");
        let snap = intake(&keys, &text, meta.captured_at(), DEFAULT_MAX_DESCRIPTOR_LEN)
            .unwrap_or_else(|e| panic!("{}: {e}", meta.name));
        assert_eq!(
            u64::from(snap.revision),
            meta.revision_counter,
            "{}",
            meta.name
        );
        assert_eq!(snap.intro_points.len(), meta.intro_points, "{}", meta.name);
        assert!(snap.is_valid_at(meta.captured_at()));
        // C tor writes IPv4, RSA and Ed25519 link specifiers for each intro point.
        assert!(
            snap.intro_points
                .iter()
                .all(|i| i.link_specifiers().len() >= 2),
            "{}",
            meta.name
        );
    }
}

/// A C tor descriptor read with another service's address, for another period, after its
/// certificates expired, or with one byte changed, is rejected with the right error.
#[test]
fn ctor_descriptors_are_rejected_when_they_should_be() {
    let all = load();
    let (meta, text) = &all[0];
    let (other, _) = &all[1];
    let period = meta.time_period().expect("period");
    let when = meta.captured_at();
    let wrong: OnionAddress = other.onion_address.parse().expect("address");
    let err = intake(
        &BackendKeys::derive(wrong, period).expect("keys"),
        text,
        when,
        DEFAULT_MAX_DESCRIPTOR_LEN,
    )
    .expect_err("other service");
    assert!(matches!(err, IntakeError::WrongService(_)), "{err}");

    let addr: OnionAddress = meta.onion_address.parse().expect("address");
    let next = period.next().expect("next period");
    let err = intake(
        &BackendKeys::derive(addr, next).expect("keys"),
        text,
        when,
        DEFAULT_MAX_DESCRIPTOR_LEN,
    )
    .expect_err("other period");
    assert!(matches!(err, IntakeError::WrongService(_)), "{err}");

    let keys = BackendKeys::derive(addr, period).expect("keys");
    let later = when + Duration::from_secs(60 * 3600);
    let err = intake(&keys, text, later, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("expired");
    assert!(matches!(err, IntakeError::NotValidNow { .. }), "{err}");

    let line = text
        .lines()
        .find(|l| l.starts_with("revision-counter "))
        .expect("line");
    let tampered = text.replacen(line, &format!("{line}1"), 1);
    let err = intake(&keys, &tampered, when, DEFAULT_MAX_DESCRIPTOR_LEN).expect_err("tampered");
    assert!(matches!(err, IntakeError::BadSignature(_)), "{err}");
}

/// A frontend descriptor built from the C tor backends' intro points lists them with their
/// link specifiers and keys unchanged, at most one per relay (C tor clients use only the
/// first intro point listed for a relay), every backend at least once, and carries their
/// flow-control line.
#[test]
fn frontend_built_from_ctor_intro_points_round_trips() {
    let all: Vec<(FixtureMeta, String)> = load()
        .into_iter()
        .filter(|(m, _)| m.instance_mode)
        .collect();
    let period = all[0].0.time_period().expect("period");
    let when = all[0].0.captured_at();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let frontend = Arc::new(FrontendKey::generate(&mut rng));
    let mut engine = Engine::new(frontend.clone());
    let mut want = HashSet::new();
    let mut snapshots = Vec::new();
    for (meta, text) in &all {
        let tp = meta.time_period().expect("period");
        let address: OnionAddress = meta.onion_address.parse().expect("address");
        let keys = BackendKeys::derive(address, tp).expect("keys");
        let snap = intake(&keys, text, when, DEFAULT_MAX_DESCRIPTOR_LEN)
            .unwrap_or_else(|e| panic!("{}: {e}", meta.name));
        for ip in &snap.intro_points {
            want.insert((
                ip.link_specifiers()
                    .iter()
                    .map(|l| format!("{l:?}"))
                    .collect::<Vec<_>>()
                    .join("|"),
                *ip.ipt_ntor_key().as_bytes(),
                *ip.ipt_sid_key().as_bytes(),
                *ip.svc_ntor_key().as_bytes(),
            ));
        }
        snapshots.push(snap);
    }
    let relays_available: HashSet<_> = snapshots
        .iter()
        .flat_map(|s| s.intro_points.iter().filter_map(intro_point_relay))
        .collect();
    let srv_start = period.range().expect("range").start;
    let refs: Vec<_> = snapshots.iter().collect();
    let built = engine
        .build(
            &PublishPeriod {
                time_period: period,
                srv_start,
            },
            &refs,
            when,
            &mut rng,
        )
        .expect("build");
    let mut listed_backends: Vec<usize> = built.backends.clone();
    listed_backends.sort_unstable();
    listed_backends.dedup();
    assert_eq!(
        listed_backends.len(),
        snapshots.len(),
        "every backend listed"
    );
    let keys = BackendKeys::derive(frontend.address(), period).expect("keys");
    let snap = intake(
        &keys,
        &built.descriptor.text,
        when,
        DEFAULT_MAX_DESCRIPTOR_LEN,
    )
    .expect("frontend descriptor parses");
    let got: HashSet<_> = snap
        .intro_points
        .iter()
        .map(|ip| {
            (
                ip.link_specifiers()
                    .iter()
                    .map(|l| format!("{l:?}"))
                    .collect::<Vec<_>>()
                    .join("|"),
                *ip.ipt_ntor_key().as_bytes(),
                *ip.ipt_sid_key().as_bytes(),
                *ip.svc_ntor_key().as_bytes(),
            )
        })
        .collect();
    assert!(got.is_subset(&want), "intro points listed unchanged");
    let relays: Vec<_> = snap
        .intro_points
        .iter()
        .filter_map(intro_point_relay)
        .collect();
    let distinct: HashSet<_> = relays.iter().collect();
    assert_eq!(
        relays.len(),
        snap.intro_points.len(),
        "every intro point names its relay"
    );
    assert_eq!(distinct.len(), relays.len(), "one intro point per relay");
    assert_eq!(
        relays.len(),
        relays_available.len().min(20),
        "every relay the backends use carries one intro point"
    );
    let backend_flow = snapshots[0].flow_control.clone();
    assert!(backend_flow.is_some(), "C tor 0.4.9 declares flow-control");
    assert_eq!(snap.flow_control, backend_flow, "flow-control carried over");
}
