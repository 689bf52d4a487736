//! The HSDir hash ring: which HSDirs hold which descriptor, for which time period.
//!
//! Pure functions over Arti's [`NetDir`]: the consensus decides the rings (one per time period
//! in `hs_all_time_periods`: the current one, plus the previous or the next), and the blinded
//! key decides the position on each ring. Where the consensus has no shared random value for
//! a period, its ring is placed by the "disaster" value, as C tor places it; for the second
//! period that takes this workspace's patched `tor-netdir` (vendor/README.md), and an
//! application embedding the library with Arti's own gets only the current period then.

use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::{HasRelayIds as _, OwnedCircTarget};
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::NetDir;

use crate::descriptor::PublishPeriod;
pub(crate) use crate::hsdir::HsDir;

/// Why the ring could not be computed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot compute the HSDir ring")]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct RingError(#[source] tor_error::Bug);

impl crate::error::HasKind for RingError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::NoHsDirRing
    }
}

/// Every period we must publish for, per the consensus (rend-spec-v3 §2.2.1).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) fn publish_periods(netdir: &NetDir) -> Vec<PublishPeriod> {
    netdir
        .hs_all_time_periods()
        .into_iter()
        .map(|p| PublishPeriod {
            time_period: p.time_period(),
            srv_start: p.start_of_shard_rand_period(),
        })
        .collect()
}

/// The HSDirs to upload the descriptor with `blind_id` to, for `period` (`hsdir_n_replicas` ×
/// `hsdir_spread_store`, 8 with default parameters).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) fn upload_hsdirs(
    netdir: &NetDir,
    blind_id: HsBlindId,
    period: TimePeriod,
) -> Result<Vec<HsDir>, RingError> {
    let relays = netdir.hs_dirs_upload(blind_id, period).map_err(RingError)?;
    Ok(relays.filter_map(|r| to_hsdir(&r)).collect())
}

/// The HSDirs to fetch the descriptor with `blind_id` from, in random order, for `period`.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) fn fetch_hsdirs<R: rand::Rng + rand::CryptoRng>(
    netdir: &NetDir,
    blind_id: HsBlindId,
    period: TimePeriod,
    rng: &mut R,
) -> Result<Vec<HsDir>, RingError> {
    let relays = netdir
        .hs_dirs_download(blind_id, period, rng)
        .map_err(RingError)?;
    Ok(relays.iter().filter_map(to_hsdir).collect())
}

/// The identities of the HSDirs clients fetch the descriptor with `blind_id` from, for
/// `period`, as a set; `upload` is that period's [`upload_hsdirs`].
///
/// Arti computes the fetch set only for the consensus's current period (clients fetch only
/// for that one). For the other period we publish for, it is estimated from the upload set,
/// which lists each replica's `hsdir_spread_store` HSDirs in ring order: the first
/// `hsdir_spread_fetch` of each replica. That is exact unless an HSDir that one replica
/// stores at but does not fetch from falls among the next replica's first ones; once the
/// period is current, the exact set replaces the estimate (and a plan of several variants is
/// made again if they differ).
pub(crate) fn fetch_set<R: rand::Rng + rand::CryptoRng>(
    netdir: &NetDir,
    blind_id: HsBlindId,
    period: TimePeriod,
    upload: &[HsDir],
    rng: &mut R,
) -> Vec<RsaIdentity> {
    if let Ok(exact) = fetch_hsdirs(netdir, blind_id, period, rng) {
        return exact.into_iter().map(|h| h.id).collect();
    }
    let params = netdir.params();
    let count = |v: i32| usize::try_from(v).unwrap_or(1).max(1);
    estimate_fetch_set(
        upload,
        count(params.hsdir_spread_store.get()),
        count(params.hsdir_spread_fetch.get()),
    )
}

/// The first `spread_fetch` HSDirs of each replica's `spread_store` in `upload`.
fn estimate_fetch_set(
    upload: &[HsDir],
    spread_store: usize,
    spread_fetch: usize,
) -> Vec<RsaIdentity> {
    upload
        .chunks(spread_store)
        .flat_map(|replica| replica.iter().take(spread_fetch).map(|h| h.id))
        .collect()
}

/// A relay as an [`HsDir`], if it has an RSA identity (every relay in a consensus does).
fn to_hsdir(relay: &tor_netdir::Relay<'_>) -> Option<HsDir> {
    let target = OwnedCircTarget::from_circ_target(relay);
    let id = *target.rsa_identity()?;
    Some(HsDir { id, target })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tor_netdoc::doc::netstatus::Lifetime;

    use super::*;

    /// A consensus of the test network valid from `valid_after` (one-hour voting, as on the
    /// public network), with shared random values only if `srv`.
    fn netdir_at(valid_after: SystemTime, srv: bool) -> NetDir {
        let lifetime = Lifetime::new(
            valid_after,
            valid_after + Duration::from_secs(3600),
            valid_after + Duration::from_secs(3 * 3600),
        )
        .expect("lifetime");
        tor_netdir::testnet::construct_custom_netdir_with_params(
            |_, _, bld| {
                if srv {
                    bld.shared_rand_cur(7, [1; 32].into(), None)
                        .shared_rand_prev(7, [2; 32].into(), None);
                }
            },
            std::iter::empty::<(&str, i32)>(),
            Some(lifetime),
        )
        .expect("netdir")
        .unwrap_if_sufficient()
        .expect("sufficient")
    }

    /// `day` 2026-12-`day` at `hour`:00 UTC.
    fn at(day: u64, hour: u64) -> SystemTime {
        // 2026-12-01 00:00 UTC.
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_796_083_200 + (day - 1) * 86_400 + hour * 3600)
    }

    fn period_nums(nd: &NetDir) -> Vec<u64> {
        let mut v: Vec<u64> = publish_periods(nd)
            .iter()
            .map(|p| p.time_period.interval_num())
            .collect();
        v.sort_unstable();
        v
    }

    /// Without a shared random value (a network's first day, or a day the authorities agreed
    /// on none), we publish for two periods as a C tor service does, on the disaster value's
    /// ring (the patched `tor-netdir`, vendor/README.md): between midnight and noon the
    /// current and the next, between noon and midnight the previous and the current. The
    /// ring we upload the next period's descriptor to before noon is the one clients fetch
    /// from once their consensus is of that period.
    #[test]
    fn without_a_shared_random_value_the_second_period_uses_the_disaster_ring() {
        let morning = netdir_at(at(6, 5), false);
        let current = publish_periods(&netdir_at(at(6, 5), true))[0].time_period;
        let n = current.interval_num();
        assert_eq!(
            period_nums(&morning),
            vec![n, n + 1],
            "morning: current and next"
        );
        let afternoon = netdir_at(at(6, 15), false);
        assert_eq!(
            period_nums(&afternoon),
            vec![n, n + 1],
            "afternoon: the new current and the previous"
        );
        let evening = netdir_at(at(6, 23), false);
        assert_eq!(period_nums(&evening), vec![n, n + 1]);
        // Revision counters count from the start of each period's shared-random run: it
        // must have begun (a build refuses a start in the future).
        for (nd, va) in [
            (&morning, at(6, 5)),
            (&afternoon, at(6, 15)),
            (&evening, at(6, 23)),
        ] {
            for p in publish_periods(nd) {
                assert!(p.srv_start <= va, "{:?}: its run has begun", p.time_period);
            }
        }

        let blind_id = HsBlindId::from([7; 32]);
        let next = publish_periods(&morning)
            .into_iter()
            .map(|p| p.time_period)
            .find(|tp| tp.interval_num() == n + 1)
            .expect("next period");
        let ids = |nd: &NetDir, tp| -> Vec<RsaIdentity> {
            upload_hsdirs(nd, blind_id, tp)
                .expect("ring")
                .iter()
                .map(|h| h.id)
                .collect()
        };
        let uploaded_before_noon = ids(&morning, next);
        assert!(!uploaded_before_noon.is_empty());
        let mut rng = rand::rng();
        let fetched_after_noon: std::collections::HashSet<RsaIdentity> =
            fetch_hsdirs(&afternoon, blind_id, next, &mut rng)
                .expect("ring")
                .iter()
                .map(|h| h.id)
                .collect();
        assert!(
            fetched_after_noon
                .iter()
                .all(|id| uploaded_before_noon.contains(id)),
            "clients fetch from the HSDirs we uploaded to"
        );
    }
}
