//! The HSDir hash ring: which HSDirs hold which descriptor, for which time period.
//!
//! Pure functions over Arti's [`NetDir`]: the consensus decides the rings (one per time period
//! in `hs_all_time_periods`: the current one, plus the previous or next while the shared random
//! values allow), and the blinded key decides the position on each ring.

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
