//! Exit codes by category, so that a supervisor can tell a broken invocation or
//! configuration (which a restart will not mend) from a failure at run time (which it may).
//!
//! The numbers are those of BSD's `sysexits.h`, which systemd and other supervisors know:
//! the shipped unit lists 64 and 78 in `RestartPreventExitStatus=`.

use std::fmt;
use std::process::ExitCode;

/// The command line was wrong: an unknown flag, a bad value, a missing argument.
pub(crate) const USAGE: u8 = 64;
/// The configuration was wrong: the config file, its keys, the Arti configuration.
pub(crate) const CONFIG: u8 = 78;
/// Anything else that failed while running (network, Tor, I/O at run time).
pub(crate) const RUNTIME: u8 = 1;

/// Every exit status with what it means, in the order to list them: `--help` and the manual
/// pages are both written from this table.
pub(crate) const TABLE: &[(u8, &str)] = &[
    (0, "success"),
    (
        RUNTIME,
        "failure at run time (network, Tor, I/O), or a check that did not pass",
    ),
    (
        USAGE,
        "usage error: unknown flag, bad value, missing argument or no config file (sysexits EX_USAGE)",
    ),
    (
        CONFIG,
        "configuration error: the config file, its keys, the Arti configuration or the log file (sysexits EX_CONFIG)",
    ),
];

/// The kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    /// See [`USAGE`].
    Usage,
    /// See [`CONFIG`].
    Config,
    /// See [`RUNTIME`].
    Runtime,
}

impl Category {
    /// The process exit code for this category.
    pub(crate) fn code(self) -> u8 {
        match self {
            Category::Usage => USAGE,
            Category::Config => CONFIG,
            Category::Runtime => RUNTIME,
        }
    }
}

/// An error marked with its category. It displays as the error it wraps and passes its
/// causes on, so marking never changes what the operator reads.
#[derive(Debug)]
pub(crate) struct Categorized {
    /// The category.
    category: Category,
    /// The error.
    inner: anyhow::Error,
}

impl fmt::Display for Categorized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the wrapped error's own message: its causes come from `source`, and a
        // `{:#}` of the whole chain must not print them twice.
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for Categorized {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.chain().nth(1)
    }
}

/// Marks `e` as a usage error.
pub(crate) fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    mark(Category::Usage, e.into())
}

/// Marks `e` as a configuration error.
pub(crate) fn config(e: impl Into<anyhow::Error>) -> anyhow::Error {
    mark(Category::Config, e.into())
}

/// Wraps `inner` in a [`Categorized`].
fn mark(category: Category, inner: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Categorized { category, inner })
}

/// The category of `e`: the outermost mark in its chain; unmarked errors from the config
/// and Arti-configuration loaders are configuration errors; anything else is a runtime
/// error.
pub(crate) fn category(e: &anyhow::Error) -> Category {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Categorized>() {
            return c.category;
        }
        if cause.is::<crate::config::ConfigError>() || cause.is::<crate::arti_toml::ArtiTomlError>()
        {
            return Category::Config;
        }
    }
    Category::Runtime
}

/// Prints `e` and returns the exit code of its category.
pub(crate) fn report(e: &anyhow::Error) -> ExitCode {
    let text = format!("error: {e:#}");
    if super::logging::stderr_is_journal() {
        // In the journal, every line an error (priority 3), as the logger's error lines.
        for line in text.lines() {
            eprintln!("<3>{line}");
        }
    } else {
        eprintln!("{text}");
    }
    ExitCode::from(category(e).code())
}

/// Prints a command-line parsing error (or the help or version asked for) the way clap
/// does, and returns 0 for help and version, [`USAGE`] for a real error.
pub(crate) fn clap_error(e: &clap::Error) -> ExitCode {
    // Printing can only fail if stderr/stdout are gone; there is nobody to tell then.
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
