//! The timing knobs of a service: how often it fetches, rebuilds and refreshes.
//!
//! The defaults suit the public Tor network (a C tor onion service's own rhythm, seen from the
//! HSDirs); none of them is tuned for test networks, which shorten time periods instead.

use std::time::Duration;

use super::backend::FetchPacing;

/// The timing knobs of a service. The defaults suit the public Tor network; none of them is
/// tuned for test networks.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Interval between two fetches of one backend (default 60 s). Each fetch is for one
    /// period (the one fetched least recently), so with two periods a backend costs 60
    /// fetches an hour and a change is seen within one interval.
    pub fetch_interval: Duration,
    /// First interval while a backend has no usable descriptor (default 15 s); it doubles
    /// with each such fetch, up to `missing_fetch_interval`.
    pub fetch_retry: Duration,
    /// Longest interval between fetches of a backend that has no usable descriptor (default
    /// 5 min). Such a fetch asks every HSDir of the period (each says 404), so it costs more
    /// than a regular one; a backend that restarts is not in this state (HSDirs keep its old
    /// descriptor while it is down).
    pub missing_fetch_interval: Duration,
    /// Limit for one fetch attempt at one HSDir, circuit included (default 30 s).
    pub fetch_attempt_timeout: Duration,
    /// Limit for one upload attempt at one HSDir, circuit included (default 60 s).
    pub upload_attempt_timeout: Duration,
    /// Shortest interval between periodic refreshes of a period's descriptor (default 60 min).
    pub republish_min: Duration,
    /// Longest interval between periodic refreshes (default 120 min).
    pub republish_max: Duration,
    /// Least time between two builds of one period's descriptor, except its first
    /// (default 60 s).
    pub min_rebuild_interval: Duration,
    /// A backend descriptor whose revision counter has not gone up for this long is
    /// considered gone (default 2 h 15 min: C tor re-uploads at least every 2 hours).
    pub stale_after: Duration,
    /// Longest wait, after a period appears (at start: the first usable consensus), for every
    /// backend to be asked for its descriptor of that period before the period's first
    /// publication (default 30 s).
    pub first_publication_wait: Duration,
    /// How often one HSDir of each period whose HSDirs all hold our descriptor is asked what
    /// it holds, in turn (default 5 min; see `service::peeking`): how a frontend learns that
    /// another one publishes with its key, and that an HSDir lost its descriptor. One 3-hop
    /// descriptor fetch each.
    pub watch_interval: Duration,
    /// Fetches in flight at the same time (default 8).
    pub max_concurrent_fetches: usize,
    /// Uploads in flight at the same time (default 16).
    pub max_concurrent_uploads: usize,
    /// Health probes in flight at the same time (default 16).
    pub max_concurrent_probes: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            fetch_interval: Duration::from_secs(60),
            fetch_retry: Duration::from_secs(15),
            missing_fetch_interval: Duration::from_secs(5 * 60),
            fetch_attempt_timeout: Duration::from_secs(30),
            upload_attempt_timeout: Duration::from_secs(60),
            republish_min: Duration::from_secs(60 * 60),
            republish_max: Duration::from_secs(120 * 60),
            min_rebuild_interval: Duration::from_secs(60),
            stale_after: Duration::from_secs(135 * 60),
            first_publication_wait: Duration::from_secs(30),
            watch_interval: Duration::from_secs(5 * 60),
            max_concurrent_fetches: 8,
            max_concurrent_uploads: 16,
            max_concurrent_probes: 16,
        }
    }
}

impl Timing {
    /// What a backend's fetch schedule needs of these knobs.
    pub(crate) fn fetch_pacing(&self) -> FetchPacing {
        FetchPacing {
            interval: self.fetch_interval,
            retry: self.fetch_retry,
            missing_interval: self.missing_fetch_interval,
        }
    }
}
