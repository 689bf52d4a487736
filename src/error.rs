//! What kind of thing went wrong: one vocabulary for callers, status and metrics.
//!
//! Every error type of this crate keeps its cause as a typed [`source`](std::error::Error::source)
//! (Arti's own error types included, so `tor_error::HasKind` works on them) and says which
//! [`ErrorKind`] it is through [`HasKind`]. Callers branch on the kind; the status counters
//! and the metrics' `kind` labels are the kinds' [`ErrorKind::as_str`] names, so a dashboard
//! and a program agree on what "timeout" means.

use std::fmt;

pub use crate::files::FileError;

/// The kind of a failure, coarse enough to act on.
///
/// The names ([`ErrorKind::as_str`]) are stable: they are metric labels and status keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The Tor client cannot do onion-service work: not bootstrapped, or built without the
    /// onion-service features.
    TorClientUnusable,
    /// The Tor client has a consensus but is still setting up what onion-service circuits
    /// need (its vanguards, right after a bootstrap from cached state): wait a moment.
    TorNotReady,
    /// The consensus does not let us compute the HSDir ring (no usable consensus yet, or no
    /// shared random value for the period).
    NoHsDirRing,
    /// No circuit could be built to an HSDir.
    CircuitFailed,
    /// A directory stream to an HSDir could not be opened or failed mid-request.
    DirectoryStream,
    /// An HSDir refused to store our descriptor (HTTP 400: for C tor, any storage failure).
    UploadRejected,
    /// An HSDir answered with another HTTP error status.
    HsDirHttpStatus,
    /// An HSDir answered with something that is not a well-formed directory response.
    HsDirProtocol,
    /// An attempt took longer than we allow.
    Timeout,
    /// Every HSDir asked says it has no descriptor for the service (HTTP 404): it is not
    /// running, or not publishing for this time period.
    DescriptorNotFound,
    /// A backend's descriptor is not the right size or does not parse.
    DescriptorMalformed,
    /// A descriptor belongs to another onion service or time period.
    DescriptorWrongService,
    /// A descriptor's signature or certificate does not verify.
    DescriptorBadSignature,
    /// A descriptor cannot be decrypted with what we know (client authorization on a
    /// backend).
    DescriptorNotDecryptable,
    /// A descriptor is outside its validity interval (expired, or our clock is off).
    DescriptorNotValidNow,
    /// Our own descriptor could not be built (no intro points, too large, clock).
    BuildFailed,
    /// A configuration file or value is wrong: the operator must fix it.
    Config,
    /// A key file is missing, unreadable or not a key.
    Key,
    /// A local file could not be read or written.
    LocalIo,
    /// A task could not be started on the runtime (it is shutting down).
    Runtime,
    /// Something that should not happen: a bug in this crate.
    Internal,
}

impl ErrorKind {
    /// The stable name of the kind (a metric label, a status key).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::TorClientUnusable => "tor-client-unusable",
            ErrorKind::TorNotReady => "tor-not-ready",
            ErrorKind::NoHsDirRing => "no-hsdir-ring",
            ErrorKind::CircuitFailed => "circuit",
            ErrorKind::DirectoryStream => "stream",
            ErrorKind::UploadRejected => "rejected",
            ErrorKind::HsDirHttpStatus => "http-status",
            ErrorKind::HsDirProtocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DescriptorNotFound => "not-found",
            ErrorKind::DescriptorMalformed => "malformed",
            ErrorKind::DescriptorWrongService => "wrong-service",
            ErrorKind::DescriptorBadSignature => "bad-signature",
            ErrorKind::DescriptorNotDecryptable => "not-decryptable",
            ErrorKind::DescriptorNotValidNow => "not-valid-now",
            ErrorKind::BuildFailed => "build-failed",
            ErrorKind::Config => "config",
            ErrorKind::Key => "key",
            ErrorKind::LocalIo => "local-io",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Internal => "internal",
        }
    }

    /// True for failures that may go away by themselves if the same thing is tried later
    /// (network trouble), false for those that need someone to change something.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::NoHsDirRing
                | ErrorKind::TorNotReady
                | ErrorKind::CircuitFailed
                | ErrorKind::DirectoryStream
                | ErrorKind::HsDirHttpStatus
                | ErrorKind::HsDirProtocol
                | ErrorKind::Timeout
                | ErrorKind::DescriptorNotFound
                | ErrorKind::DescriptorNotValidNow
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error that knows its [`ErrorKind`].
pub trait HasKind {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;
}

impl HasKind for FileError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::LocalIo
    }
}

/// Formats an error with its whole chain of causes, each once: `what: because: because`.
///
/// Our errors (as Arti's) do not repeat their source in their own message, so that a chain is
/// never printed twice; logs and status strings use this to show it.
pub(crate) fn report(error: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Some wrappers (Arti's included) print their source themselves, at the end of their
        // message or within it: skip repeats.
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind has its own name: two kinds under one label would merge in dashboards.
    #[test]
    fn names_are_distinct() {
        let all = [
            ErrorKind::TorClientUnusable,
            ErrorKind::TorNotReady,
            ErrorKind::NoHsDirRing,
            ErrorKind::CircuitFailed,
            ErrorKind::DirectoryStream,
            ErrorKind::UploadRejected,
            ErrorKind::HsDirHttpStatus,
            ErrorKind::HsDirProtocol,
            ErrorKind::Timeout,
            ErrorKind::DescriptorNotFound,
            ErrorKind::DescriptorMalformed,
            ErrorKind::DescriptorWrongService,
            ErrorKind::DescriptorBadSignature,
            ErrorKind::DescriptorNotDecryptable,
            ErrorKind::DescriptorNotValidNow,
            ErrorKind::BuildFailed,
            ErrorKind::Config,
            ErrorKind::Key,
            ErrorKind::LocalIo,
            ErrorKind::Runtime,
            ErrorKind::Internal,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }

    /// A chain prints each cause once, in order.
    #[test]
    fn report_walks_the_chain_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(report(&e), "outer: inner");
        // A wrapper that quotes its cause within its message (as Arti's config errors do).
        #[derive(Debug, thiserror::Error)]
        #[error("loading failed (inner) in file x")]
        struct Quoting(#[source] std::io::Error);
        let e = Quoting(std::io::Error::other("inner"));
        assert_eq!(report(&e), "loading failed (inner) in file x");
    }
}
