//! `onionbalance check --online`: walk the path a client takes and say where it breaks.
//!
//! For each service, in order: every backend's descriptor is on its HSDirs and verifies;
//! every backend answers at its own address (and passes its health check, when one is
//! configured); the frontend's descriptor is on its HSDirs and
//! lists the backends' intro points; the frontend answers. Each step gives a verdict, and a
//! failing step names the classic cause and its fix. The most confusing case is a frontend
//! whose descriptor is published while connections through it fail even though every
//! backend answers at its own address: the backends do not accept introductions for the
//! frontend, i.e. `HiddenServiceOnionBalanceInstance 1` or the `ob_config` file is missing or
//! names another address.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arti_client::{KeystoreSelector, StreamPrefs, TorClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tor_hscrypto::pk::{HsClientDescEncKeypair, HsClientDescEncSecretKey};

use tor_netdir::NetDir;
use tor_rtcompat::Runtime;

use crate::client_auth::ClientSecret;
use crate::config::{Config, HealthCheckConfig, ServiceConfig};
use crate::descriptor::{BackendKeys, BackendSnapshot, IntakeError};
use crate::health::{ArtiProber, ProbeError, Prober as _};
use crate::net::ArtiTransport;
use crate::onion::OnionAddress;

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fine.
    Pass,
    /// Works, but something looks wrong.
    Warn,
    /// Broken.
    Fail,
}

/// The verdict on one step.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What was checked, e.g. "frontend descriptor" or a backend's name and address.
    pub step: String,
    /// Whether it passed, passed with a warning, or failed.
    pub outcome: Outcome,
    /// What the check found: counts, the first error, what to do about a failure.
    pub detail: String,
    /// What to do about it, if anything.
    pub fix: Option<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        };
        write!(f, "[{tag}] {}: {}", self.step, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// Options of the online check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The virtual port to connect to on backends and frontend (the `HiddenServicePort`).
    pub port: u16,
    /// Connections to make through the frontend.
    pub attempts: usize,
    /// Limit for one connection.
    pub connect_timeout: Duration,
    /// Limit for one descriptor fetch at one HSDir.
    pub fetch_timeout: Duration,
    /// An authorized client's key, for a frontend with restricted discovery: used to read
    /// its descriptor and, inserted into the client's keystore for the check, to connect.
    pub client_key: Option<Arc<ClientSecret>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 80,
            attempts: 4,
            connect_timeout: Duration::from_secs(45),
            fetch_timeout: Duration::from_secs(30),
            client_key: None,
        }
    }
}

/// Runs every check for every service of `config` on a bootstrapped `client`.
pub async fn run<R: Runtime>(
    config: &Config,
    client: &Arc<TorClient<R>>,
    opts: &Options,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let netdir = match client
        .dirmgr()
        .map_err(|e| e.to_string())
        .and_then(|d| d.timely_netdir().map_err(|e| e.to_string()))
    {
        Ok(nd) => nd,
        Err(e) => {
            out.push(Verdict {
                step: "Tor directory".into(),
                outcome: Outcome::Fail,
                detail: format!("no usable consensus: {e}"),
                fix: Some("check network access (or --arti-config for a private network)".into()),
            });
            return out;
        }
    };
    let transport = ArtiTransport::new(client.clone());
    for svc in &config.services {
        check_service(svc, client, &transport, &netdir, opts, &mut out).await;
    }
    out
}

/// The checks of one service.
async fn check_service<R: Runtime>(
    svc: &ServiceConfig,
    client: &Arc<TorClient<R>>,
    transport: &ArtiTransport<R>,
    netdir: &Arc<NetDir>,
    opts: &Options,
    out: &mut Vec<Verdict>,
) {
    let front = svc.address();
    let mut backend_ipts: Vec<(String, HashSet<[u8; 32]>)> = Vec::new();
    let mut backends_reachable = 0;
    for inst in &svc.instances {
        let step = format!("backend {} ({})", inst.name, inst.address);
        match fetch(transport, netdir, inst.address, None, opts).await {
            Ok(Some(snap)) => {
                out.push(Verdict {
                    step: format!("{step}: descriptor"),
                    outcome: Outcome::Pass,
                    detail: format!(
                        "on its HSDirs and valid: {} intro points, revision {}",
                        snap.intro_points.len(),
                        u64::from(snap.revision)
                    ),
                    fix: None,
                });
                backend_ipts.push((inst.name.clone(), sids(&snap)));
            }
            Ok(None) => out.push(Verdict {
                step: format!("{step}: descriptor"),
                outcome: Outcome::Fail,
                detail: "none of its HSDirs has its descriptor: the backend is not uploading".into(),
                fix: Some("start tor on the backend with this HiddenServiceDir (its `hostname` file must match); tor uploads within a minute or two of starting, see its log".into()),
            }),
            Err(e) => out.push(Verdict {
                step: format!("{step}: descriptor"),
                outcome: Outcome::Fail,
                detail: e.message,
                fix: Some(if e.not_decryptable {
                    "the backend restricts discovery (client authorization): disable it on the backend; restrict discovery on the frontend instead (`authorized-clients` in the config)".into()
                } else {
                    "check this machine's clock and network".into()
                }),
            }),
        }
        match connect(client, inst.address, opts).await {
            Ok(took) => {
                backends_reachable += 1;
                out.push(Verdict {
                    step: format!("{step}: own address"),
                    outcome: Outcome::Pass,
                    detail: format!("port {} answered in {:.1}s", opts.port, took.as_secs_f64()),
                    fix: None,
                })
            }
            Err(e) => out.push(Verdict {
                step: format!("{step}: own address"),
                outcome: Outcome::Fail,
                detail: format!("port {} unreachable: {e}", opts.port),
                fix: Some("check the backend's HiddenServicePort line and that the server behind it runs (or give --port)".into()),
            }),
        }
        if let Some(check) = &inst.health_check {
            out.push(health_probe(client, inst.address, check, &step).await);
        }
    }

    let step = format!("frontend {front}");
    let client_key = opts.client_key.as_ref().filter(|k| k.frontend == front);
    let published = match fetch(transport, netdir, front, client_key, opts).await {
        Ok(Some(snap)) => {
            let listed = sids(&snap);
            let missing: Vec<&str> = backend_ipts
                .iter()
                .filter(|(_, ipts)| ipts.is_disjoint(&listed))
                .map(|(n, _)| n.as_str())
                .collect();
            if missing.is_empty() {
                out.push(Verdict {
                    step: format!("{step}: descriptor"),
                    outcome: Outcome::Pass,
                    detail: format!(
                        "published: {} intro points, revision {}",
                        snap.intro_points.len(),
                        u64::from(snap.revision)
                    ),
                    fix: None,
                });
            } else {
                out.push(Verdict {
                    step: format!("{step}: descriptor"),
                    outcome: Outcome::Warn,
                    detail: format!("published, but lists no intro point of {}", missing.join(", ")),
                    fix: Some("onionbalance picks up backend changes within 5 minutes; if this persists, see `onionbalance status`".into()),
                });
            }
            true
        }
        Ok(None) => {
            out.push(Verdict {
                step: format!("{step}: descriptor"),
                outcome: Outcome::Fail,
                detail: "none of its HSDirs has the frontend's descriptor".into(),
                fix: Some("run `onionbalance run` with this config; it publishes seconds after Tor bootstraps, once a backend has a descriptor".into()),
            });
            false
        }
        Err(e) if e.not_decryptable && svc.client_auth.is_some() => {
            let (outcome, detail, fix) = match client_key {
                None => (
                    Outcome::Warn,
                    "published with restricted discovery: only authorized clients can read it, so its intro points and connections were not checked".to_owned(),
                    "give an authorized client's key with --client-key FILE (an .auth_private line) to check them too",
                ),
                Some(_) => (
                    Outcome::Fail,
                    "published with restricted discovery, but the key given with --client-key cannot read it".to_owned(),
                    "is the key among the service's clients (`onionbalance client-auth list`), and was the daemon reloaded after it was added?",
                ),
            };
            out.push(Verdict {
                step: format!("{step}: descriptor"),
                outcome,
                detail,
                fix: Some(fix.into()),
            });
            false
        }
        Err(e) => {
            out.push(Verdict {
                step: format!("{step}: descriptor"),
                outcome: Outcome::Fail,
                detail: e.message,
                fix: Some(if e.not_decryptable {
                    "the descriptor is encrypted to authorized clients, but this service has no `authorized-clients` in the config: is another program publishing for this address, or is the daemon running an older config?".into()
                } else {
                    "is another program publishing for this address with a different key?".into()
                }),
            });
            false
        }
    };
    if !published {
        return;
    }
    // A restricted frontend answers only a client holding an authorized key; the check's
    // client holds it only while connecting.
    let inserted = match client_key {
        Some(k) if svc.client_auth.is_some() => insert_client_key(client, k, &mut *out),
        _ => false,
    };
    let mut ok = 0;
    let mut errors = Vec::new();
    for _ in 0..opts.attempts.max(1) {
        match connect(client, front, opts).await {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e),
        }
    }
    let n = opts.attempts.max(1);
    let instance_mode_fix = "the backends answer at their own addresses but not through the frontend: on each backend set `HiddenServiceOnionBalanceInstance 1` and put `MasterOnionAddress <frontend>.onion` in <HiddenServiceDir>/ob_config, then reload tor (`onionbalance backend -c CONFIG` prints both)";
    let (outcome, fix) = match ok {
        0 if backends_reachable > 0 => (Outcome::Fail, Some(instance_mode_fix.to_owned())),
        0 => (
            Outcome::Fail,
            Some("no backend is reachable; fix those first".to_owned()),
        ),
        k if k < n => (
            Outcome::Warn,
            Some(format!(
                "some connections failed: a backend may be misconfigured ({instance_mode_fix})"
            )),
        ),
        _ => (Outcome::Pass, None),
    };
    let mut detail = format!("{ok}/{n} connections to port {} succeeded", opts.port);
    if let Some(e) = errors.first() {
        detail.push_str(&format!(" (first error: {e})"));
    }
    out.push(Verdict {
        step: format!("{step}: through the frontend"),
        outcome,
        detail,
        fix,
    });
    if inserted {
        let _ = client.remove_service_discovery_key(KeystoreSelector::Primary, front.hs_id());
    }
}

/// Puts `key` into `client`'s keystore for its frontend (replacing one left by an earlier
/// check); false, with a verdict saying why, if that failed.
fn insert_client_key<R: Runtime>(
    client: &Arc<TorClient<R>>,
    key: &ClientSecret,
    out: &mut Vec<Verdict>,
) -> bool {
    let hsid = key.frontend.hs_id();
    let _ = client.remove_service_discovery_key(KeystoreSelector::Primary, hsid);
    let secret = HsClientDescEncSecretKey::from(key.secret.as_ref().clone());
    match client.insert_service_discovery_key(KeystoreSelector::Primary, hsid, secret) {
        Ok(_) => true,
        Err(e) => {
            out.push(Verdict {
                step: format!("frontend {}: client key", key.frontend),
                outcome: Outcome::Warn,
                detail: format!("cannot give the key to the check's Tor client: {e}"),
                fix: Some("connections through the frontend will fail; check that the Arti keystore is enabled (storage.keystore)".into()),
            });
            false
        }
    }
}

/// Fetches and verifies the current descriptor of `address`, as a client would (with the
/// runner's own fetch rules, [`crate::fetch`]).
async fn fetch<R: Runtime>(
    transport: &ArtiTransport<R>,
    netdir: &Arc<NetDir>,
    address: OnionAddress,
    client_key: Option<&Arc<ClientSecret>>,
    opts: &Options,
) -> Result<Option<BackendSnapshot>, FetchProblem> {
    let plain = |e: &(dyn std::error::Error + 'static)| FetchProblem {
        message: crate::error::report(e),
        not_decryptable: false,
    };
    let mut keys = BackendKeys::derive(address, netdir.hs_time_period()).map_err(|e| plain(&e))?;
    if let Some(k) = client_key {
        let pair = HsClientDescEncKeypair::new(
            k.public(),
            HsClientDescEncSecretKey::from(k.secret.as_ref().clone()),
        );
        keys = keys.with_client_key(Arc::new(pair));
    }
    let hsdirs =
        crate::fetch::hsdirs_for(netdir, &keys, &mut rand::rng()).map_err(|e| plain(&e))?;
    let req = crate::fetch::FetchRequest {
        keys,
        known_revision: None,
        attempt_timeout: opts.fetch_timeout,
        max_len: usize::try_from(netdir.params().hsdir_max_desc_size.get())
            .unwrap_or(crate::descriptor::DEFAULT_MAX_DESCRIPTOR_LEN),
    };
    let runtime = transport.runtime();
    let report = crate::fetch::fetch_descriptor(&runtime, transport, netdir, &hsdirs, &req).await;
    match report.outcome {
        crate::fetch::FetchOutcome::Fetched(snapshot) => Ok(Some(snapshot)),
        crate::fetch::FetchOutcome::NotFound => Ok(None),
        crate::fetch::FetchOutcome::SameRevision(_) | crate::fetch::FetchOutcome::Failed => {
            Err(FetchProblem {
                message: format!(
                    "could not get a valid descriptor from its HSDirs: {}",
                    report.problem()
                ),
                not_decryptable: !report.intake_errors.is_empty()
                    && report
                        .intake_errors
                        .iter()
                        .all(|(_, e)| matches!(e, IntakeError::NotDecryptable(_))),
            })
        }
    }
}

/// Why [`fetch`] got no usable descriptor.
struct FetchProblem {
    /// What happened, for the verdict.
    message: String,
    /// Every descriptor served failed only to decrypt: the service restricts discovery (or
    /// the key given is not one of its clients').
    not_decryptable: bool,
}

/// Connects to `address:port` on fresh circuits and waits for the first byte of an HTTP
/// answer (or a clean close), returning how long it took.
async fn connect<R: Runtime>(
    client: &Arc<TorClient<R>>,
    address: OnionAddress,
    opts: &Options,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut prefs = StreamPrefs::new();
    prefs.new_isolation_group();
    let host = address.to_string();
    let attempt = async {
        let mut stream = client
            .connect_with_prefs((host.as_str(), opts.port), &prefs)
            .await
            .map_err(|e| e.to_string())?;
        // Speak just enough HTTP to get an answer from a web server; any answer will do.
        let req = format!("HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(opts.connect_timeout, attempt).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {:?}", opts.connect_timeout)),
    }
}

/// Probes `address` once as the daemon's health check `check` does, for its verdict.
async fn health_probe<R: Runtime>(
    client: &Arc<TorClient<R>>,
    address: OnionAddress,
    check: &HealthCheckConfig,
    step: &str,
) -> Verdict {
    let what = match &check.http_path {
        Some(path) => format!("GET {path} on port {}", check.port),
        None => format!("connection to port {}", check.port),
    };
    let prober = ArtiProber::new(client.clone());
    let started = Instant::now();
    let result = match tokio::time::timeout(check.timeout, prober.probe(address, check)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(check.timeout)),
    };
    match result {
        Ok(()) => Verdict {
            step: format!("{step}: health check"),
            outcome: Outcome::Pass,
            detail: format!("{what} passed in {:.1}s", started.elapsed().as_secs_f64()),
            fix: None,
        },
        Err(e) => Verdict {
            step: format!("{step}: health check"),
            outcome: Outcome::Fail,
            detail: format!("{what} failed: {e}"),
            fix: Some("the daemon will leave this backend out of the descriptors: check the application behind its HiddenServicePort, and the health-check port and http-path in the config".into()),
        },
    }
}

/// The intro points' session keys (their identity within a descriptor).
fn sids(snap: &BackendSnapshot) -> HashSet<[u8; 32]> {
    snap.intro_points
        .iter()
        .map(|i| *i.ipt_sid_key().as_bytes())
        .collect()
}
