//! Writing times for people and documents: RFC 3339 in UTC, whole seconds, never failing.
//!
//! A neutral home for the one time format the crate writes, so that the descriptor engine
//! (which bounds the dates backends sign) and the status projection (which shows them) share
//! it without either depending on the other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The latest time [`rfc3339`] writes: 9999-12-31T23:59:59Z (RFC 3339 has four-digit years).
pub const LATEST_FORMATTABLE: Duration = Duration::from_secs(253_402_300_799);

/// `t` as RFC 3339 (UTC, seconds), clamped to 1970–9999: times come from descriptors that
/// anyone can sign with any date, and formatting must never fail on them.
pub fn rfc3339(t: SystemTime) -> String {
    let clamped = t.clamp(UNIX_EPOCH, UNIX_EPOCH + LATEST_FORMATTABLE);
    humantime::format_rfc3339_seconds(clamped).to_string()
}

#[cfg(test)]
mod tests {
    /// The descriptor engine is a core module: it may use this module, never the status
    /// projection (which sits above it and formats what it finds).
    #[test]
    fn the_descriptor_engine_does_not_import_from_status() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/descriptor");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("src/descriptor") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("source");
            read += 1;
            for (n, line) in text.lines().enumerate() {
                assert!(
                    !line.contains("crate::status"),
                    "{}:{}: the descriptor engine imports from status: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        assert!(read >= 5, "read only {read} files of {}", dir.display());
    }
}
