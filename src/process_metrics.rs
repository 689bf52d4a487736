//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` on Linux.
//!
//! An operator running the daemon for months watches its memory and CPU beside its own
//! metrics, without a second exporter; the names and meanings are those of the Prometheus
//! client libraries, so existing dashboards and alerts apply. Elsewhere, or when `/proc` cannot
//! be read, they are left out rather than reported wrong.

use std::fmt::Write as _;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux architecture's
/// user-space ABI, whatever the kernel's own tick rate).
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub(crate) virtual_bytes: u64,
    /// Start time, in seconds since the Unix epoch (`None` if the boot time is unknown).
    pub(crate) start_time_seconds: Option<f64>,
    /// Open file descriptors (`None` if `/proc/self/fd` cannot be listed).
    pub(crate) open_fds: Option<u64>,
}

/// Reads the `stat` line of a process and the system's boot time (`btime` of `/proc/stat`):
/// `None` if the line is not one.
pub(crate) fn parse(stat: &str, status: &str, boot_time: Option<u64>) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses: the
    // fields that follow start after the last ')'.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields numbered as in proc(5), from 3 (state) on.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let virtual_bytes = field(23)?;
    let resident_bytes = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)?;
    Some(ProcessStats {
        cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
        resident_bytes,
        virtual_bytes,
        start_time_seconds: boot_time.map(|b| b as f64 + start_ticks as f64 / TICKS_PER_SECOND),
        open_fds: None,
    })
}

/// This process's stats, if `/proc/self` can be read.
pub(crate) fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    });
    let mut stats = parse(&stat, &status, boot_time)?;
    stats.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    Some(stats)
}

/// Appends the metrics of `stats` in the Prometheus text format.
pub(crate) fn render(stats: &ProcessStats, out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        format!("{}", stats.cpu_seconds),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stats.resident_bytes.to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stats.virtual_bytes.to_string(),
    );
    if let Some(t) = stats.start_time_seconds {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{t}"),
        );
    }
    if let Some(n) = stats.open_fds {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            n.to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line whose command holds a space and a parenthesis is read by field number.
    #[test]
    fn reads_a_stat_line() {
        let stat = "4242 (onion (x) b) S 1 4242 4242 0 -1 4194560 6000 0 0 0 \
                    250 125 0 0 20 0 7 0 123400 104857600 5000 18446744073709551615";
        let status = "Name:\tonionbalance\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        let s = parse(stat, status, Some(1_700_000_000)).expect("parses");
        assert_eq!(s.cpu_seconds, 3.75);
        assert_eq!(s.resident_bytes, 20480 * 1024);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.start_time_seconds, Some(1_700_000_000.0 + 1234.0));
        assert_eq!(parse("garbage", status, None), None);
        assert_eq!(parse(stat, "Name:\tx\n", None), None, "no VmRSS line");
    }

    /// On Linux this process's own stats are read and rendered as the standard metrics.
    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read().expect("/proc/self is readable on Linux");
        assert!(s.resident_bytes > 0 && s.open_fds.unwrap_or(0) > 0, "{s:?}");
        let mut out = String::new();
        render(&s, &mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(out.contains(&format!("\n{name} ")), "{name} in {out}");
        }
    }
}
