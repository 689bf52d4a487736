//! The last revision counter published per time period, kept on disk.
//!
//! Revision counters come from the clock (order-preserving encryption of the seconds since
//! the shared-random period began), so they need no state while the clock only moves
//! forward. Two cases break that: a restart within the same second as the last publication,
//! and a clock stepped backwards (NTP correction, VM restore) before a restart. Either would
//! publish a counter at or below the one the HSDirs hold, and they would refuse it (HTTP 400)
//! until the clock caught up. Keeping the last counter per period in a small file, written
//! before the descriptor leaves, makes the counter strictly increasing across runs too.
//!
//! The file is JSON, written atomically (temporary file, then rename) with mode 0600, one per
//! frontend: `<state dir>/revisions/<frontend address>.json`. A missing file is an empty
//! store; an unreadable or corrupt one is reported and then treated as empty (the clock still
//! gives a counter that is right unless it stepped back).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Reading the file failed.
    #[error("cannot read revision counters from {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what we write.
    #[error("revision counter file {path} is corrupt ({source}); it will be rewritten")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the file failed.
    #[error("cannot save revision counters to {path}: {source}; check that the state directory is writable")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A period as the file names it: its length and number (a period number alone is ambiguous
/// on networks with other period lengths).
type PeriodId = (u32, u64);

/// On-disk form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FileForm {
    /// Format version.
    version: u32,
    /// One entry per period.
    periods: Vec<Entry>,
}

/// One period's last counter.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// Period length in minutes.
    length_minutes: u32,
    /// Period number.
    interval: u64,
    /// Highest revision counter published.
    revision: u64,
}

/// The last published revision counter per period, optionally backed by a file.
#[derive(Debug, Default)]
pub(crate) struct RevisionStore {
    /// The file, or `None` to keep counters in memory only (library users without a state
    /// directory).
    path: Option<PathBuf>,
    /// Counters by period.
    counters: BTreeMap<PeriodId, u64>,
}

/// The key of `period`.
fn id(period: TimePeriod) -> PeriodId {
    (period.length().as_minutes(), period.interval_num())
}

impl RevisionStore {
    /// A store kept in memory only.
    pub(crate) fn in_memory() -> Self {
        RevisionStore::default()
    }

    /// Opens the store at `path`. On a read or parse error the store starts empty and the
    /// error is returned beside it, for the caller to report.
    pub(crate) fn open(path: PathBuf) -> (Self, Option<StoreError>) {
        let mut store = RevisionStore {
            path: Some(path.clone()),
            counters: BTreeMap::new(),
        };
        // Our own file, but in a directory others may reach: read it like any other.
        let text = match crate::files::read_regular_text(&path, crate::files::MAX_CONFIG_LEN) {
            Ok(t) => t,
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return (store, None),
            Err(e) => {
                let source = std::io::Error::new(
                    e.io_kind().unwrap_or(std::io::ErrorKind::InvalidData),
                    e.to_string(),
                );
                return (store, Some(StoreError::Read { path, source }));
            }
        };
        match serde_json::from_str::<FileForm>(&text) {
            Ok(f) => {
                for e in f.periods {
                    store
                        .counters
                        .insert((e.length_minutes, e.interval), e.revision);
                }
                (store, None)
            }
            Err(source) => (store, Some(StoreError::Corrupt { path, source })),
        }
    }

    /// The file for frontend `address` under `state_dir`.
    pub(crate) fn path_for(state_dir: &Path, address: &str) -> PathBuf {
        state_dir.join("revisions").join(format!("{address}.json"))
    }

    /// The last counter recorded for `period`.
    pub(crate) fn get(&self, period: TimePeriod) -> Option<RevisionCounter> {
        self.counters
            .get(&id(period))
            .copied()
            .map(RevisionCounter::from)
    }

    /// Records `revision` for `period` (if higher than what is recorded), forgets periods
    /// that ended long before it, and saves the file. The counter is kept in memory even if
    /// saving fails.
    pub(crate) fn record(
        &mut self,
        period: TimePeriod,
        revision: RevisionCounter,
    ) -> Result<(), StoreError> {
        let key = id(period);
        let rev = u64::from(revision);
        match self.counters.get(&key) {
            Some(&old) if old >= rev => return Ok(()),
            _ => {}
        }
        self.counters.insert(key, rev);
        let oldest = period.interval_num().saturating_sub(3);
        self.counters
            .retain(|(len, n), _| *len != key.0 || *n >= oldest);
        self.save()
    }

    /// Writes the file atomically with mode 0600.
    fn save(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let form = FileForm {
            version: 1,
            periods: self
                .counters
                .iter()
                .map(|(&(length_minutes, interval), &revision)| Entry {
                    length_minutes,
                    interval,
                    revision,
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&form)
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = open_private(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }
}

/// Creates (or truncates) `path` for writing, readable by its owner only.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        opts.mode(0o600);
        let f = opts.open(path)?;
        // An existing file keeps its mode on open: set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    {
        opts.open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn period(n: u64) -> TimePeriod {
        let len = Duration::from_secs(1440 * 60);
        let start = SystemTime::UNIX_EPOCH + len * u32::try_from(n).unwrap_or(0);
        TimePeriod::new(len, start + Duration::from_secs(3600), Duration::ZERO).unwrap_or_else(
            |e| {
                panic!("bad period: {e}");
            },
        )
    }

    #[test]
    fn survives_a_restart_and_never_goes_down() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = RevisionStore::path_for(dir.path(), "abc.onion");
        let p = period(20_000);
        {
            let (mut s, err) = RevisionStore::open(path.clone());
            assert!(err.is_none());
            assert_eq!(s.get(p), None);
            s.record(p, RevisionCounter::from(500))?;
            s.record(p, RevisionCounter::from(400))?; // lower: ignored
        }
        let (s, err) = RevisionStore::open(path.clone());
        assert!(err.is_none());
        assert_eq!(s.get(p).map(u64::from), Some(500));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_reported_and_replaced() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.json");
        std::fs::write(&path, "{not json")?;
        let (mut s, err) = RevisionStore::open(path.clone());
        assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{err:?}");
        s.record(period(7), RevisionCounter::from(9))?;
        let (s, err) = RevisionStore::open(path);
        assert!(err.is_none());
        assert_eq!(s.get(period(7)).map(u64::from), Some(9));
        Ok(())
    }

    #[test]
    fn old_periods_are_forgotten() -> Result<(), Box<dyn std::error::Error>> {
        let mut s = RevisionStore::in_memory();
        s.record(period(10), RevisionCounter::from(1))?;
        s.record(period(20), RevisionCounter::from(1))?;
        assert_eq!(s.get(period(10)), None);
        assert!(s.get(period(20)).is_some());
        Ok(())
    }
}
