#!/usr/bin/env python3
"""The balancing round (shared/bench-workload.md) with Python Onionbalance 0.2.4.

The Rust side is `benches/round.rs` (criterion group `round`); this is the same workload done
by upstream's own code, so `scripts/bench-compare` can report the ratio from one run.

Setup, not timed: K backends, each a random ed25519 identity with a v3 descriptor for the
current time period (3 intro points, each with IPv4 ORPort, RSA id and Ed25519 id link
specifiers and random keys), signed, blinded and encrypted with stem as a backend uploads it,
and wrapped in the HS_DESC_CONTENT control-port event its tor would hand Onionbalance. A
frontend `OnionbalanceService` loaded by upstream from a PEM key file and a config listing the
K backends; a consensus (made with stem) whose valid-after is the current hour.

Timed, one round:
  1. for each backend: stem parses the control-port event, then upstream's
     `Onionbalance.handle_new_desc_content_event` (-> `InstanceV3.register_descriptor` ->
     `ReceivedDescriptor`: parse, decrypt both layers with the backend's address, extract the
     intro points);
  2. upstream's `OnionbalanceService.publish_descriptors()`, both periods: select intro points
     (`_get_intros_for_desc`), time period and blinding parameter, `OBDescriptor` (re-certify
     every intro point with a fresh descriptor-signing key, OPE revision counter, blinded
     signing-key certificate, outer/inner encryption, signature, stem's own re-parse).

Substituted (not timed, or not Onionbalance's work): the HSDir ring
(`hashring.get_responsible_hsdirs` returns 8 fixed fingerprints, as the Rust bench uses a fixed
ring) and the upload (`_upload_descriptor` keeps the descriptor instead of an HSPOST).
`params.N_INTROS_PER_INSTANCE` is set to min(3, 20 // K) so the frontend descriptor lists the
same number of intro points as ours (min(3K, 20)); upstream's default of 2 per instance asks
for 40 at K=20, more than one descriptor holds (`--upstream-intro-count` keeps the default).
Upstream checks no signature of a backend descriptor (it leaves that to its tor), so neither
does this round.

Output: JSON on stdout, {"k=K": {"median_ms": ..., "runs": N, ...}}, one human line per K on
stderr. Every round is checked after its timer stops (every backend registered with the intro
points it was generated with, two descriptors built); the first and the last round of each K
are checked in full (each built descriptor re-parsed by stem with validation, its signing-key
certificate verified against the blinded key of its period, decrypted with the frontend's
address, every intro point certificate verified against its descriptor-signing key). Any
failure exits non-zero, so a broken round cannot report a fast time.
"""

import argparse
import base64
import datetime
import gc
import json
import logging
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import types

try:
    import onionbalance
    import stem
    import stem.response
    import stem.util
    from cryptography import __version__ as cryptography_version
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from stem.client.datatype import LinkByEd25519, LinkByFingerprint, LinkByIPv4
    from stem.descriptor.hidden_service import (
        HiddenServiceDescriptorV3,
        InnerLayer,
        IntroductionPointV3,
        _blinded_pubkey,
    )
    from stem.descriptor.networkstatus import NetworkStatusDocumentV3

    from onionbalance.common import log as ob_log
    from onionbalance.hs_v3 import consensus as ob_consensus
    from onionbalance.hs_v3 import hashring, params
    from onionbalance.hs_v3 import service as ob_service
    from onionbalance.hs_v3.onionbalance import my_onionbalance
except ImportError as err:  # the venv is made by scripts/bench-compare
    sys.exit("round.py needs Python Onionbalance 0.2.4 (pip install onionbalance==0.2.4): %s" % err)

EXPECTED_ONIONBALANCE = "0.2.4"
INTROS_PER_BACKEND = 3
MAX_INTROS = 20  # what one descriptor lists, in the workload and in ours


class Broken(Exception):
    """The round did not do the work it is timed for."""


def fail(msg):
    raise Broken(msg)


def fmt_time(d):
    return d.strftime("%Y-%m-%d %H:%M:%S")


def install_consensus(now):
    """A live consensus as upstream reads it: valid-after the current hour, both SRVs."""
    valid_after = now.replace(minute=0, second=0, microsecond=0)
    srv = lambda: "9 " + base64.b64encode(os.urandom(32)).decode()
    doc = NetworkStatusDocumentV3.create({
        "valid-after": fmt_time(valid_after),
        "fresh-until": fmt_time(valid_after + datetime.timedelta(hours=1)),
        "valid-until": fmt_time(valid_after + datetime.timedelta(hours=3)),
        "shared-rand-previous-value": srv(),
        "shared-rand-current-value": srv(),
    })
    consensus = ob_consensus.Consensus(do_refresh_consensus=False)
    consensus.consensus = doc
    if not consensus.is_live():
        fail("the synthetic consensus is not live")
    my_onionbalance.consensus = consensus
    return consensus


class Backend:
    """One backend: its identity, the intro points it generated, and its upload."""

    def __init__(self, consensus, now):
        self.identity = Ed25519PrivateKey.generate()
        self.address = HiddenServiceDescriptorV3.address_from_identity_key(self.identity, suffix=False)
        desc_signing_key = Ed25519PrivateKey.generate()
        expiration = now + datetime.timedelta(hours=54)  # what C tor certifies intro points for
        self.intro_points = []
        for _ in range(INTROS_PER_BACKEND):
            links = [
                LinkByIPv4("%d.%d.%d.%d" % tuple(random.randint(1, 254) for _ in range(4)), 9001),
                LinkByFingerprint(os.urandom(20)),
                LinkByEd25519(os.urandom(32)),
            ]
            self.intro_points.append(IntroductionPointV3.create_for_link_specifiers(
                links, expiration=expiration, signing_key=desc_signing_key))
        # The current period's blinding parameter, by upstream's own derivation.
        tp = consensus.get_time_period_num()
        blinding = consensus.get_blinding_param(stem.util._pubkey_bytes(self.identity), tp)
        self.text = HiddenServiceDescriptorV3.content(
            inner_layer=InnerLayer.create(introduction_points=self.intro_points),
            identity_key=self.identity,
            signing_key=desc_signing_key,
            revision_counter=random.randint(1, 2**40),
            blinding_nonce=blinding,
        )
        # What its tor hands Onionbalance on the control port (HS_DESC_CONTENT, dot-encoded).
        body = self.text.decode().split("\n")
        body = [("." + line) if line.startswith(".") else line for line in body]
        hsdir = "$" + os.urandom(20).hex().upper() + "~hsdir"
        self.event = "\r\n".join(
            ["650+HS_DESC_CONTENT %s %s %s" % (self.address, base64.b64encode(os.urandom(32)).decode().rstrip("="), hsdir)]
            + body + [".", "650 OK", ""])

    def ipt_ids(self):
        return ipt_ids(self.intro_points)


def ipt_ids(intro_points):
    """What identifies an intro point: its link specifiers and its keys."""
    return {(tuple(l.pack() for l in ip.link_specifiers), ip.onion_key_raw, ip.enc_key_raw,
             ip.auth_key_cert.key) for ip in intro_points}


def make_service(tmpdir, backends):
    """The frontend as upstream loads it: a PEM key file (onionbalance-config's format)."""
    key = Ed25519PrivateKey.generate()
    key_path = os.path.join(tmpdir, "frontend.key")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(encoding=serialization.Encoding.PEM,
                                  format=serialization.PrivateFormat.PKCS8,
                                  encryption_algorithm=serialization.NoEncryption()))
    config = {"key": "frontend.key", "instances": [{"address": b.address + ".onion"} for b in backends]}
    service = ob_service.OnionbalanceService(config, os.path.join(tmpdir, "config.yaml"))
    if service.is_priv_key_in_tor_format:
        fail("the frontend key loaded in tor's format, not the PEM format written")
    # Substitute the upload: keep what would be posted.
    service.uploaded = []
    service._upload_descriptor = lambda controller, ob_desc, hsdirs: service.uploaded.append(ob_desc)
    my_onionbalance.services = [service]
    return service, key


def one_round(service, events):
    """One timed round; returns (intake ns, publish ns)."""
    # Each round starts with nothing held: every backend descriptor is new and both
    # frontend descriptors are built (upstream's first-publication path).
    for inst in service.instances:
        inst.descriptor = None
    service.first_descriptor = service.second_descriptor = None
    service.uploaded = []
    gc.collect()
    t0 = time.perf_counter_ns()
    for raw in events:
        event = stem.response.ControlMessage.from_str(raw, "EVENT")
        my_onionbalance.handle_new_desc_content_event(event)
    t1 = time.perf_counter_ns()
    service.publish_descriptors()
    t2 = time.perf_counter_ns()
    return t1 - t0, t2 - t1


def check_round(service, backends, expected_intros):
    """Cheap checks after every round: all K taken in, both descriptors built."""
    for inst, b in zip(service.instances, backends):
        if inst.descriptor is None:
            fail("backend %s: descriptor not taken in" % b.address)
        if ipt_ids(inst.descriptor.get_intro_points()) != b.ipt_ids():
            fail("backend %s: decrypted intro points are not the ones generated" % b.address)
    if len(service.uploaded) != 2 or service.first_descriptor is None or service.second_descriptor is None:
        fail("%d frontend descriptors built, 2 expected" % len(service.uploaded))
    for d in service.uploaded:
        if len(d.get_intro_points()) != expected_intros:
            fail("frontend descriptor lists %d intro points, %d expected" % (len(d.get_intro_points()), expected_intros))


def check_full(service, frontend_key, consensus, backends, expected_intros):
    """Every built descriptor as a client would take it, with stem and cryptography."""
    address = service.onion_address
    ident = stem.util._pubkey_bytes(frontend_key)
    if HiddenServiceDescriptorV3.identity_key_from_address(address) != ident:
        fail("the service's address is not its key's")
    all_generated = set().union(*(b.ipt_ids() for b in backends))
    blinded = []
    for is_first, ob_desc in zip((True, False), service.uploaded):
        _, tp = hashring.get_srv_and_time_period(is_first)
        expected_blinded = _blinded_pubkey(ident, consensus.get_blinding_param(ident, tp))
        text = str(ob_desc.v3_desc)
        if len(text) > params.MAX_DESCRIPTOR_SIZE:
            fail("descriptor of %d bytes" % len(text))
        # validate=True: stem checks the descriptor's signature with its signing key.
        desc = HiddenServiceDescriptorV3.from_str(text, validate=True)
        cert = desc.signing_cert
        if cert.signing_key() != expected_blinded:
            fail("the signing-key certificate is not from the period's blinded key")
        Ed25519PublicKey.from_public_bytes(expected_blinded).verify(cert.signature, cert.pack()[:-64])
        if cert.is_expired():
            fail("the signing-key certificate has expired")
        inner = desc.decrypt(address)
        ipts = inner.introduction_points
        ids = ipt_ids(ipts)
        if len(ipts) != expected_intros or len(ids) != expected_intros:
            fail("decrypted %d intro points (%d distinct), %d expected" % (len(ipts), len(ids), expected_intros))
        if not ids <= all_generated:
            fail("the frontend lists intro points no backend generated")
        for ip in ipts:
            for c in (ip.auth_key_cert, ip.enc_key_cert):
                if c.signing_key() != cert.key:
                    fail("an intro point is not re-certified by the descriptor-signing key")
                Ed25519PublicKey.from_public_bytes(cert.key).verify(c.signature, c.pack()[:-64])
        if desc.revision_counter <= 0:
            fail("revision counter %d" % desc.revision_counter)
        blinded.append(expected_blinded)
    if blinded[0] == blinded[1]:
        fail("both descriptors are for the same period")


def srv_offsets(consensus):
    """Seconds since the start of each descriptor's SRV run: the length of upstream's
    revision-counter loop, which grows with the time of day (UTC)."""
    now = int(stem.util.datetime_to_unix(datetime.datetime.utcnow()))
    return (now - int(consensus.get_start_time_of_previous_srv_run()) + 1,
            now - int(consensus.get_start_time_of_current_srv_run()) + 1)


def bench_k(k, args, tmpdir):
    now = datetime.datetime.utcnow()
    consensus = install_consensus(now)
    backends = [Backend(consensus, now) for _ in range(k)]
    # Loading logs a warning per instance; the rounds keep upstream's default level.
    logger = ob_log.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    service, frontend_key = make_service(tmpdir, backends)
    logger.setLevel(level)
    if not args.upstream_intro_count:
        params.N_INTROS_PER_INSTANCE = min(INTROS_PER_BACKEND, MAX_INTROS // k)
    expected_intros = min(len(service.instances) * params.N_INTROS_PER_INSTANCE, k * INTROS_PER_BACKEND)
    events = [b.event for b in backends]

    # The first round, untimed: warms the caches and is checked in full.
    one_round(service, events)
    check_round(service, backends, expected_intros)
    check_full(service, frontend_key, consensus, backends, expected_intros)

    rounds, intakes, publishes = [], [], []
    started = time.monotonic()
    while True:
        i, p = one_round(service, events)
        check_round(service, backends, expected_intros)
        intakes.append(i)
        publishes.append(p)
        rounds.append(i + p)
        if args.runs:
            if len(rounds) >= args.runs:
                break
        elif len(rounds) >= args.min_runs and time.monotonic() - started >= args.seconds:
            break
    check_full(service, frontend_key, consensus, backends, expected_intros)

    ms = lambda xs: statistics.median(xs) / 1e6
    first_off, second_off = srv_offsets(consensus)
    return {
        "median_ms": round(ms(rounds), 3),
        "runs": len(rounds),
        "intake_median_ms": round(ms(intakes), 3),
        "publish_median_ms": round(ms(publishes), 3),
        "min_ms": round(min(rounds) / 1e6, 3),
        "max_ms": round(max(rounds) / 1e6, 3),
        "intro_points": expected_intros,
        "backend_descriptor_bytes": round(statistics.mean(len(b.text) for b in backends)),
        "frontend_descriptor_bytes": [len(str(d.v3_desc)) for d in service.uploaded],
        "rev_counter_loop_seconds": [first_off, second_off],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", default="2,5,10,20", help="comma-separated backend counts (default 2,5,10,20)")
    ap.add_argument("--seconds", type=float, default=15.0,
                    help="time budget per K: rounds are timed until it is spent (default 15)")
    ap.add_argument("--min-runs", type=int, default=10, help="at least this many timed rounds per K (default 10)")
    ap.add_argument("--runs", type=int, default=0, help="exactly this many timed rounds per K (overrides --seconds)")
    ap.add_argument("--upstream-intro-count", action="store_true",
                    help="keep upstream's N_INTROS_PER_INSTANCE (2 per backend; too big a descriptor at K=20)")
    args = ap.parse_args()
    ks = [int(x) for x in args.k.split(",") if x]

    if onionbalance.__version__ != EXPECTED_ONIONBALANCE:
        print("warning: Onionbalance %s, not %s" % (onionbalance.__version__, EXPECTED_ONIONBALANCE), file=sys.stderr)
    # What upstream's main does with its default log level ('warning'): no per-descriptor logs.
    ob_log.get_logger().setLevel(getattr(logging, params.DEFAULT_LOG_LEVEL.upper()))
    my_onionbalance.is_testnet = False
    my_onionbalance.controller = types.SimpleNamespace(controller=None)  # no tor: nothing is sent
    # The HSDir ring is not part of the workload (the Rust bench uses a fixed one).
    fixed_ring = ["%040X" % i for i in range(1, 9)]
    hashring.get_responsible_hsdirs = lambda blinded_key, is_first_desc: list(fixed_ring)

    print("python %s, onionbalance %s, stem %s, cryptography %s; UTC %s" % (
        sys.version.split()[0], onionbalance.__version__, stem.__version__, cryptography_version,
        datetime.datetime.utcnow().strftime("%H:%M:%S")), file=sys.stderr)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ob-py-bench-") as tmpdir:
        for k in ks:
            try:
                r = bench_k(k, args, tmpdir)
            except Exception as err:  # noqa: BLE001 - any failure must fail the run
                print("k=%d: FAILED: %s: %s" % (k, type(err).__name__, err), file=sys.stderr)
                sys.exit(1)
            results["k=%d" % k] = r
            print("python round k=%-2d median %8.2f ms (intake %.2f + publish %.2f; min %.2f, max %.2f) "
                  "over %d runs, %d intro points, rev-counter loop %d + %d steps" % (
                      k, r["median_ms"], r["intake_median_ms"], r["publish_median_ms"], r["min_ms"],
                      r["max_ms"], r["runs"], r["intro_points"], *r["rev_counter_loop_seconds"]),
                  file=sys.stderr)
    print("peak RSS of the benchmark process: %d kB" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          file=sys.stderr)
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
