//! Reading a finished Shadow simulation ([`crate::sim`]) from the outside: the clients' loads,
//! the HSDirs' logs, the frontend's log.
//!
//! Times are simulated: seconds since [`SIMULATION_START_UNIX`] (2000-01-01 00:00:00 UTC).
//! Every tor writes its log with `LogTimeGranularity 1` and no year; the simulation stays
//! within January 2000 (a month of simulated time is far beyond any scenario).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::sim::{EVENTS_FILE, SIMULATION_START_UNIX};
use crate::torrc::REND_LOG;

/// The line a C tor HSDir writes, in its `rend` log at info, for each descriptor it stored
/// (C tor 0.4.9 `handle_post_hs_descriptor()`); it names neither service nor key.
const HSDIR_STORED_LINE: &str = "Publish request for HS descriptor handled successfully.";

/// Seconds since the simulation started, of a tor log line (`Jan 01 05:00:00.123 [info] ...`).
pub fn tor_log_time(line: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    if words.next()? != "Jan" {
        return None;
    }
    let day: u64 = words.next()?.parse().ok()?;
    let hms = words.next()?;
    let mut parts = hms.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((day - 1) as f64 * 86400.0 + h * 3600.0 + m * 60.0 + s)
}

/// Seconds since the simulation started, of a tracing log line (`2000-01-01T05:00:00.123456Z  INFO ...`).
pub fn tracing_log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let rest = stamp.strip_prefix("2000-01-")?;
    let (day, time) = rest.split_once('T')?;
    let day: u64 = day.parse().ok()?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((day - 1) as f64 * 86400.0 + h * 3600.0 + m * 60.0 + s)
}

/// One client's loads: (simulated second, succeeded).
fn read_loads(path: &Path) -> Result<Vec<(u64, bool)>> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let at: u64 = w.next()?.parse().ok()?;
            let ok = w.next()? == "ok";
            Some((at.saturating_sub(SIMULATION_START_UNIX), ok))
        })
        .collect())
}

/// The files of a host directory whose names end with `suffix` (Shadow names a process's
/// output `<program>.<pid>.stdout|stderr`).
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    out.sort();
    out
}

/// A log message with its numbers, addresses and fingerprints replaced, so that repeats of
/// one message count together.
fn message_shape(msg: &str) -> String {
    let mut out = String::new();
    for word in msg.split_whitespace() {
        let w = word.trim_matches(|c: char| !c.is_alphanumeric());
        let digits = w.chars().filter(char::is_ascii_digit).count();
        if !out.is_empty() {
            out.push(' ');
        }
        if w.len() >= 16 || (digits > 0 && digits * 2 >= w.len()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The report of the simulation whose Shadow data directory is `data`.
pub fn report(data: &Path) -> Result<String> {
    let hosts = data.join("hosts");
    let mut out = String::new();

    // Availability per simulated hour.
    let mut per_hour: BTreeMap<u64, BTreeMap<&str, (u64, u64)>> = BTreeMap::new();
    let mut names: Vec<(String, &str)> = Vec::new();
    for entry in fs::read_dir(&hosts)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = if name.starts_with("torclient") {
            "C tor"
        } else if name == "articlient" {
            "Arti"
        } else {
            continue;
        };
        names.push((name, kind));
    }
    names.sort();
    for (name, kind) in &names {
        let path = hosts.join(name).join("loads.log");
        if !path.exists() {
            continue;
        }
        for (at, ok) in read_loads(&path)? {
            let e = per_hour
                .entry(at / 3600)
                .or_default()
                .entry(kind)
                .or_default();
            e.1 += 1;
            if ok {
                e.0 += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "## Page loads per simulated hour (each load a new client)\n"
    );
    let _ = writeln!(
        out,
        "| hour | C tor ok/loads | Arti ok/loads |\n|---|---|---|"
    );
    let (mut total_ok, mut total) = (0, 0);
    for (hour, kinds) in &per_hour {
        let cell = |k: &str| {
            kinds
                .get(k)
                .map(|(ok, n)| format!("{ok}/{n}"))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(out, "| {hour} | {} | {} |", cell("C tor"), cell("Arti"));
        for (ok, n) in kinds.values() {
            total_ok += ok;
            total += n;
        }
    }
    let _ = writeln!(out, "\nAll loads: {total_ok}/{total} succeeded.\n");

    // Uploads the HSDirs stored, per simulated day, the backends' told apart.
    let _ = writeln!(out, "{}", uploads(&hosts)?);

    // The frontend's log: warnings and errors, counted by shape; and its publications.
    let front = hosts.join("frontend");
    let mut shapes: BTreeMap<(String, String), (u64, f64)> = BTreeMap::new();
    // (simulated second, period, the log line's message) of each "all HSDirs hold" line.
    let mut published: Vec<(f64, u64, String)> = Vec::new();
    for log in files_ending(&front, ".stderr") {
        let text = fs::read_to_string(&log)?;
        for line in text.lines() {
            let level = if line.contains(" WARN ") {
                "WARN"
            } else if line.contains(" ERROR ") {
                "ERROR"
            } else {
                if line.contains("HSDirs hold our descriptor") {
                    let period = line
                        .split("time period ")
                        .nth(1)
                        .and_then(|r| r.split(':').next())
                        .and_then(|n| n.trim().parse().ok());
                    if let (Some(t), Some(period)) = (tracing_log_time(line), period) {
                        published.push((t, period, line.to_owned()));
                    }
                }
                continue;
            };
            let msg = line
                .split_once(&format!(" {level} "))
                .map(|(_, m)| m)
                .unwrap_or(line);
            let e = shapes
                .entry((level.to_owned(), message_shape(msg)))
                .or_insert((0, tracing_log_time(line).unwrap_or(0.0)));
            e.0 += 1;
        }
    }
    let _ = writeln!(
        out,
        "\n## The frontend's warnings and errors, by message (numbers and keys as #)\n"
    );
    if shapes.is_empty() {
        let _ = writeln!(out, "none");
    }
    for ((level, shape), (n, first)) in &shapes {
        let _ = writeln!(
            out,
            "- {level} ×{n} (first at hour {:.1}): {shape}",
            first / 3600.0
        );
    }
    let _ = writeln!(
        out,
        "\n## The frontend's CPU and memory per simulated hour (its metrics endpoint)\n"
    );
    let _ = writeln!(out, "{}", resources(&front.join("metrics.log"))?);
    let _ = writeln!(out, "\n## The frontend's publications (its log: every HSDir of a period holds the descriptor)\n");
    let _ = writeln!(out, "{}", publications(&published));
    let _ = writeln!(out, "\n## Backend changes: from a backend's restart to every HSDir holding the frontend's new descriptor (its log)\n");
    let _ = writeln!(out, "{}", changes(data, &published)?);
    Ok(out)
}

/// Per simulated hour, from the frontend's scraped metrics: CPU seconds used (native CPU
/// time of the real process, whatever the simulated clock did), resident memory at the end
/// of the hour, uploads and fetches made. A counter that went down (a restart) counts from 0.
fn resources(path: &Path) -> Result<String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) => return Ok("no metrics were scraped".into()),
    };
    // Per hour: the last sample of each series, and the increase of each summed counter.
    #[derive(Default)]
    struct Hour {
        cpu: f64,
        rss: f64,
        uploads: f64,
        fetches: f64,
    }
    let mut hours: BTreeMap<u64, Hour> = BTreeMap::new();
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(at), Some(series), Some(value)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let (Ok(at), Ok(value)) = (at.parse::<u64>(), value.parse::<f64>()) else {
            continue;
        };
        let hour = hours
            .entry(at.saturating_sub(SIMULATION_START_UNIX) / 3600)
            .or_default();
        if series.starts_with("process_resident_memory_bytes") {
            hour.rss = value;
            continue;
        }
        let before = last.insert(series.to_owned(), value).unwrap_or(0.0);
        let increase = if value >= before {
            value - before
        } else {
            value
        };
        if series.starts_with("process_cpu_seconds_total") {
            hour.cpu += increase;
        } else if series.starts_with("onionbalance_uploads_total") {
            hour.uploads += increase;
        } else if series.starts_with("onionbalance_fetches_total") {
            hour.fetches += increase;
        }
    }
    let mut out = String::from(
        "| hour | CPU s | RSS MiB (end) | uploads | fetches |\n|---|---|---|---|---|\n",
    );
    for (h, v) in &hours {
        let _ = writeln!(
            out,
            "| {h} | {:.2} | {:.1} | {} | {} |",
            v.cpu,
            v.rss / 1048576.0,
            v.uploads,
            v.fetches
        );
    }
    Ok(out)
}

/// Seconds from the simulation's start to the start of onion-service time period `period`
/// (24-hour periods offset by 12 hours, as this network's and the public network's).
fn period_start(period: u64) -> f64 {
    (period * 86400 + 43200) as f64 - SIMULATION_START_UNIX as f64
}

/// Per period: when every HSDir first held the frontend's descriptor, against the period's
/// start (a descriptor for the next period must be there before it starts).
fn publications(published: &[(f64, u64, String)]) -> String {
    let mut first: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
    for (t, period, _) in published {
        let e = first.entry(*period).or_insert((*t, 0));
        e.1 += 1;
    }
    let mut out = String::from(
        "| period | starts at (simulated hour) | first on every HSDir (hour) | lead (hours before its start) | times every HSDir got a new one |\n|---|---|---|---|---|\n",
    );
    for (period, (t, n)) in &first {
        let start = period_start(*period);
        let _ = writeln!(
            out,
            "| {period} | {:.1} | {:.2} | {:.1} | {n} |",
            start / 3600.0,
            t / 3600.0,
            (start - t) / 3600.0
        );
    }
    out
}

/// From each backend (re)start the scenario made (its events file) to the frontend's log
/// saying every HSDir holds a descriptor with that backend's new intro points.
fn changes(data: &Path, published: &[(f64, u64, String)]) -> Result<String> {
    let events_path = data.parent().map(|d| d.join(EVENTS_FILE));
    let events = events_path
        .as_deref()
        .and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default();
    let log: Vec<(f64, String)> = files_ending(&data.join("hosts").join("frontend"), ".stderr")
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| Some((tracing_log_time(&l)?, l)))
        .collect();
    let mut out = String::from("| backend | started at (hour) | new intro points seen after (s) | on every HSDir after (s) |\n|---|---|---|---|\n");
    let mut any = false;
    for line in events.lines() {
        let mut w = line.split_whitespace();
        let (Some(at), Some(host), Some("start")) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let (Ok(at), true) = (at.parse::<f64>(), host.starts_with("backend")) else {
            continue;
        };
        any = true;
        let seen = log.iter().find(|(t, l)| {
            *t >= at
                && l.contains(&format!("backend {host}: time period"))
                && l.contains("new intro points")
        });
        let everywhere = seen.and_then(|(t, _)| published.iter().find(|(p, _, _)| p >= t));
        let cell = |t: Option<f64>| {
            t.map(|t| format!("{:.0}", t - at))
                .unwrap_or_else(|| "never".into())
        };
        let _ = writeln!(
            out,
            "| {host} | {:.2} | {} | {} |",
            at / 3600.0,
            cell(seen.map(|(t, _)| *t)),
            cell(everywhere.map(|(t, _, _)| *t))
        );
    }
    if !any {
        out.push_str("(no backend restarts in this scenario)\n");
    }
    Ok(out)
}

/// The `initiated upload request to $<fingerprint>~<nickname>` lines of every backend's
/// `rend` log: (simulated second, HSDir nickname).
fn backend_uploads(hosts: &Path) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(hosts).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("backend") {
            continue;
        }
        let text = fs::read_to_string(entry.path().join(REND_LOG)).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.split("initiated upload request to $").nth(1) else {
                continue;
            };
            let nick = rest
                .split_whitespace()
                .next()
                .and_then(|fp| fp.split('~').nth(1));
            if let (Some(t), Some(nick)) = (tor_log_time(line), nick) {
                out.push((t, nick.to_owned()));
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// How long after a backend initiates an upload the HSDir's stored line may come.
const UPLOAD_MATCH_WINDOW: f64 = 60.0;

/// Per HSDir and simulated day, the uploads it stored (its own log), told apart: each upload
/// a backend initiated to it (the backend's log) is matched to the first stored line at that
/// HSDir within [`UPLOAD_MATCH_WINDOW`] after; stored lines left over are the frontend's.
/// Also the longest gaps between two of the frontend's uploads to one HSDir (a descriptor
/// lives 3 hours; a longer gap at an HSDir still responsible would let it expire there).
fn uploads(hosts: &Path) -> Result<String> {
    let mut hsdirs: Vec<String> = fs::read_dir(hosts)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("relay") || n.starts_with("auth"))
        .collect();
    hsdirs.sort_by_key(|n| {
        (
            n.trim_start_matches(char::is_alphabetic)
                .parse::<u32>()
                .unwrap_or(0),
            n.clone(),
        )
    });
    let initiated = backend_uploads(hosts);
    let mut out =
        String::from("| HSDir | per day: frontend + backends (day 0, 1, ...) |\n|---|---|\n");
    let mut gaps: Vec<(f64, String, f64)> = Vec::new();
    for h in &hsdirs {
        let text = fs::read_to_string(hosts.join(h).join(REND_LOG)).unwrap_or_default();
        let mut stored: Vec<(f64, bool)> = text
            .lines()
            .filter(|l| l.contains(HSDIR_STORED_LINE))
            .filter_map(|l| Some((tor_log_time(l)?, false)))
            .collect();
        for (t, _) in initiated.iter().filter(|(_, n)| n == h) {
            if let Some(s) = stored
                .iter_mut()
                .find(|(s, by_backend)| !*by_backend && *s >= *t && *s <= t + UPLOAD_MATCH_WINDOW)
            {
                s.1 = true;
            }
        }
        let mut days: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (t, by_backend) in &stored {
            let d = days.entry(*t as u64 / 86400).or_default();
            if *by_backend {
                d.1 += 1;
            } else {
                d.0 += 1;
            }
        }
        let frontend: Vec<f64> = stored.iter().filter(|(_, b)| !b).map(|(t, _)| *t).collect();
        for w in frontend.windows(2) {
            gaps.push((w[1] - w[0], h.clone(), w[0]));
        }
        let cells: Vec<String> = days
            .iter()
            .map(|(d, (f, b))| format!("d{d}: {f} + {b}"))
            .collect();
        let _ = writeln!(out, "| {h} | {} |", cells.join(", "));
    }
    gaps.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.push_str("\nLongest gaps between two frontend uploads stored at one HSDir: ");
    let longest: Vec<String> = gaps
        .iter()
        .take(5)
        .map(|(g, h, from)| format!("{h} {:.2} h from hour {:.2}", g / 3600.0, from / 3600.0))
        .collect();
    out.push_str(&longest.join("; "));
    out.push_str(&format!(
        "; gaps over 3 h: {}\n",
        gaps.iter().filter(|(g, _, _)| *g > 3.0 * 3600.0).count()
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log times of tor and of the daemon, as seconds since the simulation started.
    #[test]
    fn reads_log_times() {
        assert_eq!(
            tor_log_time("Jan 02 01:00:01.500 [info] x"),
            Some(86400.0 + 3601.5)
        );
        assert_eq!(tor_log_time("Feb 02 01:00:01.500 [info] x"), None);
        assert_eq!(
            tracing_log_time("2000-01-03T12:00:00.250000Z  INFO onionbalance: x"),
            Some(2.0 * 86400.0 + 43200.25)
        );
        assert_eq!(tracing_log_time("garbage"), None);
    }

    /// Repeats of one message with other numbers and keys have one shape.
    #[test]
    fn message_shapes_hide_numbers_and_keys() {
        let a =
            message_shape("time period 10957: HSDir $ABCDEF0123456789ABCDEF refused revision 42");
        let b =
            message_shape("time period 10958: HSDir $0123456789ABCDEF012345 refused revision 7");
        assert_eq!(a, b);
        assert_ne!(a, message_shape("time period 10957: upload failed"));
    }

    /// An HSDir's stored uploads are the backends' when a backend initiated one to it just
    /// before, the frontend's otherwise; gaps are measured between the frontend's only.
    #[test]
    fn uploads_are_told_apart_by_the_backends_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = dir.path();
        for h in ["relay1", "backend1"] {
            fs::create_dir_all(hosts.join(h)).expect("mkdir");
        }
        let stored = |t: &str| format!("Jan 01 {t} [info] x: {HSDIR_STORED_LINE}\n");
        let log = [
            stored("00:01:40.000"),
            stored("00:01:45.000"),
            stored("04:00:00.000"),
        ]
        .concat();
        fs::write(hosts.join("relay1").join(REND_LOG), log).expect("write");
        fs::write(
            hosts.join("backend1").join(REND_LOG),
            "Jan 01 00:01:39.500 [info] upload_descriptor_to_hsdir(): Service x current \
             descriptor of revision 1 initiated upload request to $AB~relay1 [x]\n",
        )
        .expect("write");
        let table = uploads(hosts).expect("reads");
        assert!(table.contains("| relay1 | d0: 2 + 1 |"), "{table}");
        assert!(table.contains("relay1 3.97 h from hour 0.03"), "{table}");
        assert!(table.contains("gaps over 3 h: 1"), "{table}");
    }

    /// CPU per hour counts from 0 again after a restart; memory is the hour's last sample.
    #[test]
    fn resources_per_hour_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.log");
        let t = |s: u64| SIMULATION_START_UNIX + s;
        let log = format!(
            "{} process_cpu_seconds_total 1.5\n{} process_resident_memory_bytes 1048576\n\
             {} process_cpu_seconds_total 2.0\n{} process_cpu_seconds_total 0.25\n\
             {} process_resident_memory_bytes 2097152\n",
            t(600),
            t(600),
            t(3000),
            t(3700),
            t(3700)
        );
        fs::write(&path, log).expect("write");
        let table = resources(&path).expect("reads");
        assert!(table.contains("| 0 | 2.00 | 1.0 |"), "{table}");
        assert!(table.contains("| 1 | 0.25 | 2.0 |"), "{table}");
    }
}
