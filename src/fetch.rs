//! Fetching one onion service's descriptor for one time period from its HSDirs.
//!
//! One function, [`fetch_descriptor`], shared by the service runner and `check --online`, so
//! that both follow the same rules:
//!
//! * HSDirs are asked one at a time, in random order (as a client does), until one gives a
//!   descriptor that passes intake. A descriptor that fails intake (bad signature, wrong
//!   service, expired) does not end the search: the next HSDir may hold a good copy.
//! * A text claiming the revision the caller already holds is accepted without verification
//!   ([`FetchOutcome::SameRevision`]): the same descriptor arrives in different bytes from
//!   different HSDirs, and recognising it costs no cryptography.
//! * "Not found" means every HSDir asked answered 404; if any failed otherwise, the outcome is
//!   a failure, since the descriptor may sit on the HSDir we could not ask.
//! * A Tor client that is not ready yet ([`TransferError::is_tor_not_ready`]: started from
//!   cached state, its vanguards not chosen yet) is waited for, up to [`NOT_READY_WAIT`], and
//!   the same HSDir asked again: without this, a fetch in the first second after start fails
//!   at every HSDir at once, and `check --online` blames the network for a moment of
//!   start-up.
//! * Intake (verification and decryption, CPU work) runs on a blocking thread of the runtime
//!   ([`on_blocking_thread`]), never on the reactor: the fetches of one round take
//!   their descriptors in on several cores at once.

use std::time::Duration;

use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::NetDir;
use tor_rtcompat::{Blocking, SleepProvider, SleepProviderExt as _};

use crate::descriptor::{claimed_revision, intake, BackendKeys, BackendSnapshot, IntakeError};
use crate::error::{ErrorKind, HasKind as _};
use crate::net::{DirTransport, TransferError};
use crate::ring::{self, HsDir};

/// How long one fetch waits, in all, for a Tor client that is not ready yet. Arti fills its
/// vanguard sets within a second or so of having a consensus; a client still not ready after
/// this is broken in some other way, and the fetch reports it.
pub(crate) const NOT_READY_WAIT: Duration = Duration::from_secs(30);
/// How often a client that is not ready is tried again.
const NOT_READY_POLL: Duration = Duration::from_millis(500);

/// What to fetch, and how.
#[derive(Debug, Clone)]
pub(crate) struct FetchRequest {
    /// The service's keys for the period (decide the ring position and decrypt).
    pub keys: BackendKeys,
    /// The revision we already hold for this period, if any: a text claiming it is taken as
    /// that same descriptor.
    pub known_revision: Option<RevisionCounter>,
    /// Limit for one attempt at one HSDir, circuit included.
    pub attempt_timeout: Duration,
    /// Maximum descriptor size (consensus `hsdir_max_desc_size`).
    pub max_len: usize,
}

/// How a fetch ended.
#[derive(Debug, Clone)]
pub(crate) enum FetchOutcome {
    /// A verified descriptor with a revision other than the known one.
    Fetched(BackendSnapshot),
    /// An HSDir served the revision we already hold.
    SameRevision(RevisionCounter),
    /// Every HSDir asked answered 404: the service is not publishing for this period.
    NotFound,
    /// No HSDir gave a usable descriptor, and some could not be asked or gave a bad one.
    Failed,
}

/// A fetch's outcome with what happened at each HSDir on the way.
#[derive(Debug, Clone)]
pub(crate) struct FetchReport {
    /// The period fetched for.
    pub period: TimePeriod,
    /// How it ended.
    pub outcome: FetchOutcome,
    /// HSDirs asked (requests sent or attempted).
    pub asked: usize,
    /// HSDirs that answered 404.
    pub not_found: usize,
    /// HSDirs whose request failed.
    pub transfer_errors: Vec<(RsaIdentity, TransferError)>,
    /// Descriptors served that failed intake.
    pub intake_errors: Vec<(RsaIdentity, IntakeError)>,
}

impl FetchReport {
    /// One line describing why nothing usable came back (for logs and status).
    pub(crate) fn problem(&self) -> String {
        let mut parts = Vec::new();
        if self.not_found > 0 {
            parts.push(format!(
                "{} of {} HSDirs: not found",
                self.not_found, self.asked
            ));
        }
        for (id, e) in &self.transfer_errors {
            parts.push(format!("{id}: {}", crate::error::report(e)));
        }
        for (id, e) in &self.intake_errors {
            parts.push(format!(
                "{id}: descriptor rejected: {}",
                crate::error::report(e)
            ));
        }
        if parts.is_empty() {
            parts.push("no HSDir to ask".into());
        }
        parts.join("; ")
    }

    /// The kind of failure of a fetch that got nothing usable: the last thing that went
    /// wrong (a bad descriptor, else a failed request), [`ErrorKind::DescriptorNotFound`] when
    /// every HSDir asked said 404.
    pub(crate) fn failure_kind(&self) -> ErrorKind {
        if let Some((_, e)) = self.intake_errors.last() {
            e.kind()
        } else if let Some((_, e)) = self.transfer_errors.last() {
            e.kind()
        } else {
            ErrorKind::DescriptorNotFound
        }
    }
}

/// The HSDirs to ask for the descriptor of `keys` in `period`, in random order: the fetch set
/// of the current period (as clients use), or the upload set of another period (where the
/// service uploaded it; Arti computes fetch sets for the current period only).
pub(crate) fn hsdirs_for<R: rand::Rng + rand::CryptoRng>(
    netdir: &NetDir,
    keys: &BackendKeys,
    rng: &mut R,
) -> Result<Vec<HsDir>, ring::RingError> {
    let period = keys.period();
    if period == netdir.hs_time_period() {
        ring::fetch_hsdirs(netdir, keys.blind_id(), period, rng)
    } else {
        use rand::seq::SliceRandom as _;
        let mut v = ring::upload_hsdirs(netdir, keys.blind_id(), period)?;
        v.shuffle(rng);
        Ok(v)
    }
}

/// Asks `hsdirs` in order for the descriptor of `req.keys`, as described in the module docs.
pub(crate) async fn fetch_descriptor<S: SleepProvider + Blocking, T: DirTransport + ?Sized>(
    sleeper: &S,
    transport: &T,
    netdir: &NetDir,
    hsdirs: &[HsDir],
    req: &FetchRequest,
) -> FetchReport {
    let mut report = FetchReport {
        period: req.keys.period(),
        outcome: FetchOutcome::Failed,
        asked: 0,
        not_found: 0,
        transfer_errors: Vec::new(),
        intake_errors: Vec::new(),
    };
    let mut not_ready_waited = Duration::ZERO;
    for h in hsdirs {
        report.asked += 1;
        let answer = loop {
            let attempt =
                transport.fetch(netdir, h.target.clone(), req.keys.blind_id(), req.max_len);
            match sleeper.timeout(req.attempt_timeout, attempt).await {
                Ok(Err(e)) if e.is_tor_not_ready() && not_ready_waited < NOT_READY_WAIT => {
                    tracing::debug!("Tor client not ready yet ({e}): asking again shortly");
                    sleeper.sleep(NOT_READY_POLL).await;
                    not_ready_waited += NOT_READY_POLL;
                }
                Ok(answer) => break answer,
                Err(_) => break Err(TransferError::Timeout(req.attempt_timeout)),
            }
        };
        let text = match answer {
            Ok(Some(text)) => text,
            Ok(None) => {
                report.not_found += 1;
                continue;
            }
            Err(e) => {
                report.transfer_errors.push((h.id, e));
                continue;
            }
        };
        if let (Some(known), Some(claimed)) = (req.known_revision, claimed_revision(&text)) {
            if known == claimed {
                report.outcome = FetchOutcome::SameRevision(known);
                return report;
            }
        }
        // Verifying and decrypting is CPU work (~0.5 ms): on a blocking thread, so that the
        // reactor stays free and the intakes of one round run in parallel.
        let (keys, now, max_len) = (req.keys.clone(), sleeper.wallclock(), req.max_len);
        let taken_in =
            on_blocking_thread(sleeper, move || intake(&keys, &text, now, max_len)).await;
        match taken_in {
            Ok(snapshot) => {
                report.outcome = FetchOutcome::Fetched(snapshot);
                return report;
            }
            Err(e) => report.intake_errors.push((h.id, e)),
        }
    }
    if report.not_found == report.asked && report.asked > 0 {
        report.outcome = FetchOutcome::NotFound;
    }
    report
}

/// `f()`, computed on a blocking thread of `runtime` (Arti's [`Blocking::spawn_blocking`]:
/// tokio's blocking pool in the daemon, a deterministic subthread under `tor-rtmock`), so
/// that CPU work does not hold up the reactor.
///
/// The runtime's handle is not `Send` for every runtime (`tor-rtmock`'s is not), and the
/// futures that call this must be; so the handle is let go (the work goes on, as
/// `spawn_blocking` promises) and the result comes back over a channel.
pub(crate) async fn on_blocking_thread<B, F, T>(runtime: &B, f: F) -> T
where
    B: Blocking,
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    drop(runtime.spawn_blocking(move || {
        let _ = tx.send(f());
    }));
    match rx.await {
        Ok(t) => t,
        // The sender is dropped without sending only if `f` panicked: pass the panic on.
        Err(futures::channel::oneshot::Canceled) => {
            panic!("a computation on a blocking thread panicked")
        }
    }
}
