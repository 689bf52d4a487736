//! Logging setup: level (upstream's names), destination (stderr or a file) and format (text
//! or JSON for log shippers), without a second timestamp when stderr is the systemd journal.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// The `-v` levels, under upstream's names (`warning`, `critical`) and tracing's (`warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Level {
    /// Everything, including each fetch and upload.
    Debug,
    /// What an operator wants to see (the default).
    #[default]
    Info,
    /// Only problems.
    Warning,
    /// Only failures (`critical` is the same: nothing we log is more severe than an error).
    Error,
}

impl Level {
    /// The names `-v` accepts, for `--help`.
    pub(crate) const NAMES: [&'static str; 6] =
        ["debug", "info", "warning", "warn", "error", "critical"];

    /// Parses a level name, case-insensitively; anything else is an error naming the
    /// accepted ones (an unknown level is a mistake, not a request for the default).
    pub(crate) fn parse(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warning" | "warn" => Ok(Level::Warning),
            "error" | "critical" => Ok(Level::Error),
            _ => Err(format!(
                "unknown log level {s:?}: use one of {}",
                Level::NAMES.join(", ")
            )),
        }
    }

    /// The tracing directive for this level.
    pub(crate) fn directive(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warn",
            Level::Error => "error",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// Where and how to log.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogOptions {
    /// The tracing filter used when `RUST_LOG` is not set.
    pub(crate) filter: String,
    /// Text or JSON.
    pub(crate) format: LogFormat,
    /// Append to this file instead of writing to stderr.
    pub(crate) file: Option<PathBuf>,
}

/// Installs the global logger as `opts` says. `RUST_LOG`, when set, replaces the filter.
pub(crate) fn init(opts: &LogOptions) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&opts.filter));
    use std::io::IsTerminal as _;
    let (writer, ansi, journal) = match &opts.file {
        Some(path) => (BoxMakeWriter::new(open_log_file(path)?), false, false),
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
            stderr_is_journal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    // A second logger can only be installed by a bug of ours; keep the first.
    let _ = match opts.format {
        LogFormat::Json => builder.json().try_init(),
        // The journal stamps every line itself: ours would only double it. It reads a line's
        // priority from a `<N>` prefix (sd-daemon(3)); without one, every line is "info" and
        // `journalctl -p warning` shows nothing.
        LogFormat::Text if journal => builder
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
}

/// The syslog priority the journal files a line under for a tracing level.
pub(crate) fn journal_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// An event formatter that writes events as `inner` does, each line starting with the
/// event's journal priority (`<4>` for a warning): the journal makes every line an entry of
/// its own, so a message of several lines (a config's list of problems) keeps its priority
/// on each.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut text),
            event,
        )?;
        let priority = journal_priority(event.metadata().level());
        for line in text.split_inclusive('\n') {
            write!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

/// Opens `path` for appending (creating it 0640: logs name onion addresses, which is no
/// business of other local users).
fn open_log_file(path: &Path) -> Result<std::sync::Mutex<std::fs::File>> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o640);
    }
    let file = options.open(path).with_context(|| {
        format!(
            "cannot open the log file {} (ONIONBALANCE_LOG_LOCATION / --log-location): \
             check that its directory exists and is writable",
            path.display()
        )
    })?;
    Ok(std::sync::Mutex::new(file))
}

/// Whether stderr is connected to the systemd journal: `$JOURNAL_STREAM` names the
/// device and inode of the journal's stream, and stderr is that very stream (not merely
/// inherited from a parent that logged to the journal). systemd documents this check.
pub(crate) fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream
        .to_str()
        .and_then(|s| s.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
    else {
        return false;
    };
    stderr_dev_ino() == Some((dev, ino))
}

/// The device and inode of our stderr.
#[cfg(unix)]
fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Not on Unix: no journal.
#[cfg(not(unix))]
fn stderr_dev_ino() -> Option<(u64, u64)> {
    None
}
