//! The status document as the table `onionbalance status` prints.

use serde_json::Value;

/// A readable rendering of the status document (what `onionbalance status` prints).
///
/// The document comes from whatever listens on the socket path, so any JSON must render
/// (`fuzz/fuzz_targets/status_document.rs`): missing or mistyped fields show as `-`.
pub(crate) fn table(doc: &Value) -> String {
    use std::fmt::Write as _;
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
    let n = |v: &Value| {
        v.as_u64()
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    for svc in doc["services"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}  [{}]", s(&svc["onionAddress"]), s(&svc["phase"]));
        let _ = writeln!(
            out,
            "  first published: {}   last fetch: {}",
            s(&svc["firstPublished"]),
            s(&svc["lastFetch"])
        );
        if let Some(k) = svc["authorizedClients"].as_u64() {
            let _ = writeln!(
                out,
                "  restricted discovery: {k} authorized client(s){}",
                if k == 0 { " (nobody can connect)" } else { "" }
            );
        }
        for p in svc["periods"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  period {:>9} ({} min): revision {}, {} intro points, HSDirs {}/{} ({} failing), next republish {}",
                n(&p["timePeriod"]),
                n(&p["lengthMinutes"]),
                n(&p["revisionCounter"]),
                n(&p["introPoints"]),
                n(&p["hsdirsAccepted"]),
                n(&p["hsdirs"]),
                n(&p["hsdirsFailed"]),
                s(&p["nextRepublish"]),
            );
            let listed: Vec<String> = p["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            let _ = writeln!(out, "    lists: {}", listed.join(", "));
            if let Some(limit) = p["introPointLimit"].as_u64() {
                let _ = writeln!(
                    out,
                    "    at most {limit} intro points per descriptor: with this many authorized clients 20 exceed the network's size limit"
                );
            }
            let variants = p["variants"].as_array().map_or(&[][..], |v| &v[..]);
            if variants.len() > 1 {
                for (i, v) in variants.iter().enumerate() {
                    let hsdirs: Vec<String> = v["hsdirs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|h| s(h).chars().take(8).collect())
                        .collect();
                    let backends: Vec<String> = v["backends"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| s(&b[0]))
                        .collect();
                    let _ = writeln!(
                        out,
                        "    variant {i} at HSDirs {} ({} fetched from): {} intro points [{}]",
                        hsdirs.join(" "),
                        n(&v["fetchedFrom"]),
                        n(&v["introPoints"]),
                        backends.join(", ")
                    );
                }
                let shares: Vec<String> = p["shares"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        format!(
                            "{} {:.1}%",
                            s(&b["name"]),
                            b["share"].as_f64().unwrap_or(0.0) * 100.0
                        )
                    })
                    .collect();
                let _ = writeln!(out, "    shares of new clients: {}", shares.join(", "));
            }
            let left_out: Vec<String> = p["leftOut"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            if !left_out.is_empty() {
                let _ = writeln!(
                    out,
                    "    in no descriptor (too many backends for 20 intro points per fetch HSDir): {}",
                    left_out.join(", ")
                );
            }
            let refusals = p["refusalsInARow"].as_u64().unwrap_or(0);
            if refusals > 0 {
                let _ = writeln!(
                    out,
                    "    {refusals} HSDir refusal(s) in a row{}; last: {}",
                    if refusals >= 5 {
                        " (check this machine's clock, and that no other frontend publishes with this key)"
                    } else {
                        ""
                    },
                    s(&p["lastRefusal"]),
                );
            }
        }
        if svc["failOpen"].as_bool() == Some(true) {
            let _ = writeln!(
                out,
                "  FAILING OPEN: every backend is down or drained, so all stay listed; clients may reach failing backends"
            );
        }
        let other = &svc["otherPublisher"];
        if other.is_object() {
            let _ = writeln!(
                out,
                "  another publisher with this key: revision {} at HSDir {} (period {}, {}), {}; HSDirs keep {}",
                n(&other["revision"]),
                s(&other["hsdir"]).get(..9).unwrap_or("-"),
                n(&other["timePeriod"]),
                s(&other["lastSeen"]),
                match other["sameListing"].as_bool() {
                    Some(true) => "listing the same as ours",
                    Some(false) => "LISTING SOMETHING ELSE (are the configs the same?)",
                    None => "-",
                },
                match s(&other["ahead"]).as_str() {
                    "this-frontend" => "ours",
                    "other-publisher" => "theirs",
                    _ => "-",
                },
            );
        }
        let _ = writeln!(
            out,
            "  {:<12} {:<63} {:>5} {:<20} {:<20} {:<16} problem",
            "instance", "address", "ipts", "received", "valid until", "health"
        );
        for i in svc["instances"].as_array().into_iter().flatten() {
            let problem = [&i["healthReason"], &i["lastError"]]
                .into_iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                out,
                "  {:<12} {:<63} {:>5} {:<20} {:<20} {:<16} {}",
                s(&i["name"]),
                s(&i["onionAddress"]),
                n(&i["introPointsNum"]),
                s(&i["descriptorReceived"]),
                s(&i["validUntil"]),
                health(i),
                problem,
            );
        }
    }
    out
}

/// An instance's health cell: its state, the last probe's latency or failure kind, and
/// whether it is listed when that differs from what the state suggests.
fn health(i: &Value) -> String {
    let state = i["health"].as_str().unwrap_or("-");
    if state == "unchecked" {
        return "-".to_owned();
    }
    let probe = &i["lastProbe"];
    let last = match (probe["latencyMs"].as_u64(), probe["kind"].as_str()) {
        (Some(ms), _) => format!(" {ms}ms"),
        (None, Some(kind)) => format!(" ({kind})"),
        _ => String::new(),
    };
    let listed = i["listed"].as_bool().unwrap_or(false);
    let note = match (state, listed) {
        ("up" | "unknown", false) => ", unlisted",
        ("down" | "draining", true) => ", listed",
        _ => "",
    };
    format!("{state}{last}{note}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A period with several variants shows each variant's HSDirs and backends, the shares,
    /// and the backends left out; a period with one descriptor shows neither.
    #[test]
    fn table_shows_variants_shares_and_left_out() {
        let doc = serde_json::json!({
            "services": [{
                "onionAddress": "f.onion",
                "phase": "publishing",
                "periods": [{
                    "timePeriod": 7,
                    "backends": ["a", "b", "c"],
                    "variants": [
                        {"hsdirs": ["AAAAAAAAAAAA", "BBBBBBBBBBBB"], "fetchedFrom": 1,
                         "backends": [["a", 1], ["b", 1]], "introPoints": 2},
                        {"hsdirs": ["CCCCCCCCCCCC"], "fetchedFrom": 1,
                         "backends": [["b", 1], ["c", 1]], "introPoints": 2}
                    ],
                    "shares": [{"name": "a", "share": 0.25}, {"name": "b", "share": 0.5},
                               {"name": "c", "share": 0.25}],
                    "leftOut": ["d"]
                }, {
                    "timePeriod": 8,
                    "backends": ["a"],
                    "variants": [{"hsdirs": ["AAAAAAAAAAAA"], "fetchedFrom": 1,
                                  "backends": [["a", 3]], "introPoints": 3}],
                    "shares": [{"name": "a", "share": 1.0}],
                    "leftOut": []
                }],
                "instances": []
            }]
        });
        let out = table(&doc);
        assert!(
            out.contains(
                "variant 0 at HSDirs AAAAAAAA BBBBBBBB (1 fetched from): 2 intro points [a, b]"
            ),
            "{out}"
        );
        assert!(out.contains("variant 1 at HSDirs CCCCCCCC"), "{out}");
        assert!(
            out.contains("shares of new clients: a 25.0%, b 50.0%, c 25.0%"),
            "{out}"
        );
        assert!(out.contains("in no descriptor"), "{out}");
        assert_eq!(out.matches("variant ").count(), 2, "{out}");
        assert_eq!(out.matches("shares of new clients").count(), 1, "{out}");
    }

    /// Each instance shows its health and last probe, the reason it is out, and a service
    /// that fails open says so.
    #[test]
    fn table_shows_health() {
        let doc = serde_json::json!({
            "services": [{
                "onionAddress": "f.onion", "phase": "publishing", "failOpen": true,
                "periods": [{"timePeriod": 1, "introPointLimit": 12}],
                "instances": [
                    {"name": "web1", "health": "up", "listed": true,
                     "lastProbe": {"ok": true, "latencyMs": 412, "kind": "ok"}},
                    {"name": "web2", "health": "down", "listed": true,
                     "healthReason": "2 probe(s) in a row failed, the last: HTTP status 503",
                     "lastProbe": {"ok": false, "kind": "http-status"}},
                    {"name": "web3", "health": "draining", "listed": false},
                    {"name": "web4", "health": "unchecked", "listed": true}
                ]
            }]
        });
        let out = table(&doc);
        assert!(out.contains("FAILING OPEN"), "{out}");
        assert!(!out.contains("another publisher"), "{out}");
        assert!(
            out.contains("at most 12 intro points per descriptor"),
            "{out}"
        );
        let line = |name: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(line("web1").contains("up 412ms"), "{out}");
        assert!(line("web2").contains("down (http-status), listed"), "{out}");
        assert!(line("web2").contains("HTTP status 503"), "{out}");
        assert!(line("web3").contains("draining"), "{out}");
        assert!(line("web4").contains(" - "), "{out}");
    }

    /// A service with restricted discovery shows its client count (never keys); an open one
    /// shows no such line.
    #[test]
    fn table_shows_authorized_client_count() {
        let doc = serde_json::json!({
            "services": [
                {"onionAddress": "r.onion", "phase": "publishing", "authorizedClients": 3,
                 "periods": [], "instances": []},
                {"onionAddress": "n.onion", "phase": "publishing", "authorizedClients": 0,
                 "periods": [], "instances": []},
                {"onionAddress": "o.onion", "phase": "publishing", "periods": [], "instances": []}
            ]
        });
        let out = table(&doc);
        assert!(
            out.contains("restricted discovery: 3 authorized client(s)\n"),
            "{out}"
        );
        assert!(
            out.contains("restricted discovery: 0 authorized client(s) (nobody can connect)"),
            "{out}"
        );
        assert_eq!(out.matches("restricted discovery").count(), 2, "{out}");
    }

    /// Another frontend with the key, once seen, is one line: what it lists and whose
    /// descriptor the HSDirs keep.
    #[test]
    fn table_shows_another_publisher() {
        let doc = serde_json::json!({
            "services": [{
                "onionAddress": "f.onion", "phase": "publishing",
                "otherPublisher": {"lastSeen": "2026-12-06T15:00:00Z", "timePeriod": 7,
                    "hsdir": "$0101010101010101", "revision": 99, "sameListing": false,
                    "ourRevision": 100, "ahead": "this-frontend"},
                "instances": []
            }]
        });
        let out = table(&doc);
        assert!(
            out.contains("another publisher with this key: revision 99 at HSDir $01010101 (period 7, 2026-12-06T15:00:00Z), LISTING SOMETHING ELSE (are the configs the same?); HSDirs keep ours"),
            "{out}"
        );
    }
}
