"""python -m bench [--quick] [--json]: every path against the same loopback peer, then the goals."""

import argparse
import json
import os
import platform
import ssl
import sys
import tempfile

from . import adapters, app, builds, https, instances, memory, paths, peerclients, peers, pki, report, signer, tickets, timing

GROUPS = ("handshakes", "builds", "https", "adapters", "app", "memory", "tickets", "signer", "instances", "peers")
SESSION_TLS = {None: "TLSv1.3 (negotiated)", "1.2": "TLSv1.2", "1.3": "TLSv1.3"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~20 s; noisy, verdicts indicative only)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--rounds", type=int, help="rounds per group (default 6, quick 2)")
    parser.add_argument("--duration", type=float, help="seconds per path per round (default 0.5, quick 0.2)")
    parser.add_argument("--tls", choices=("1.2", "1.3"), help="pin the peers to one TLS version")
    parser.add_argument("--skip", action="append", default=[], choices=GROUPS,
                        help="leave a group out (repeatable)")
    parser.add_argument("--only", action="append", default=[], choices=GROUPS,
                        help="run only this group (repeatable), e.g. --only instances")
    args = parser.parse_args(argv)
    if args.only:
        args.skip = [g for g in GROUPS if g not in args.only]
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.duration = args.duration or (0.2 if args.quick else 0.5)
    return args


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def handshakes(p, peer, args, cold):
    """The handshake paths, rotated round by round; s_time runs 1 s (its smallest -time)."""
    hs = paths.Paths(p, peer.port, cold)
    ops = {"limit": lambda d: peers.s_time(p, peer.port, 1)}
    for name in ("static", "naive", "warm", "cold_memfd", "cold_pipe", "cold_tempfile", "cold_tempfile_tmpfs",
                 "full", "resumed"):
        ops[name] = timing.timed(getattr(hs, "run_" + name))
    if not paths.memfd_tier_works():
        del ops["cold_memfd"]
    if not paths.pipe_tier_works():
        del ops["cold_pipe"]
    if not paths.tmpfs_available():
        del ops["cold_tempfile_tmpfs"]
    samples = timing.alternate(ops, args.rounds, args.duration, progress=log)
    return {"tls_version": SESSION_TLS[args.tls], "samples": samples, "reused": hs.reused,
            "summary": {name: timing.summarize(s) for name, s in samples.items()}}


def requests(p, port, args):
    """HTTPS GET paths against nginx: calls.https_request pooled (reuse on) vs one connection per request (off)."""
    with https.counting_connections() as opened:
        req = https.Requests(paths.Paths(p, port, []), port, opened)
        who = req.who()
        ops = {name: timing.timed(getattr(req, "run_" + name)) for name in ("per_request", "pooled")}
        samples = timing.alternate(ops, args.rounds, args.duration, progress=log)
    return {"tls_version": who.get("protocol"), "peer_saw": who.get("subject"), "samples": samples,
            "reused": req.reused, "connections": req.opened,
            "summary": {name: timing.summarize(s) for name, s in samples.items()}}


def main(argv=None):
    args = parse_args(argv)
    result = {"meta": {"python": f"Python {platform.python_version()}", "openssl": ssl.OPENSSL_VERSION,
                       "cpus": os.cpu_count(), "rounds": args.rounds, "duration": args.duration,
                       "quick": args.quick, "tls": args.tls}, "notes": []}
    with tempfile.TemporaryDirectory(prefix="dyncert-bench-") as workdir:
        p = pki.make(workdir)
        cold = pki.extra_identities(p.ca, 24)
        with peers.SServer(p, args.tls) as peer:
            if "handshakes" not in args.skip:
                result["handshakes"] = handshakes(p, peer, args, cold)
            if "app" not in args.skip:
                result["app"] = app.run(p, peer.port, workdir, args.rounds, 0.6 if args.quick else 1.0, log)
            if "instances" not in args.skip:
                result["instances"] = instances.run(p, peer.port, args.rounds, 0.6 if args.quick else 1.0,
                                                    workdir, log)
        if "builds" not in args.skip:
            result["builds"] = builds.run(p, cold, args.rounds, args.duration, progress=log)
        if "tickets" not in args.skip:
            log("TLS 1.3 servers with and without session tickets")
            result["tickets"] = tickets.run(p, args.rounds, args.duration, log)
        if "https" not in args.skip or "adapters" not in args.skip or "signer" not in args.skip or "peers" not in args.skip:
            if peers.Nginx.available():
                with peers.Nginx(p, args.tls) as nginx:
                    if "signer" not in args.skip:
                        log("signer: full handshakes, key loaded vs LocalSigner")
                        with peers.SServer(p, args.tls) as s_server:
                            result["signer"] = signer.run(p, s_server.port, nginx.port, args.rounds, args.duration, log)
                    if "https" not in args.skip:
                        result["https"] = requests(p, nginx.port, args)
                    if "adapters" not in args.skip:
                        result["adapters"] = adapters.run(p, nginx.port, args, log)
                    if "peers" not in args.skip:
                        log("peers: dyncert, requests_pkcs12, google-auth and niquests against the same nginx")
                        result["peers"] = peerclients.run(p, nginx.port, args.rounds, args.duration, log)
            else:
                result["notes"].append(f"nginx not found at {peers.nginx.NGINX}: HTTPS requests not measured")
        if "memory" not in args.skip:
            log("memory, in a fresh interpreter")
            result["memory"] = memory.run(count=1000, default_count=200, bundle_count=10 if args.quick else 20)
    result["ratios"] = report.ratios(result.get("handshakes"), result.get("https"), result.get("app"),
                                     result.get("tickets"))
    result["ratios"].update(report.adapter_ratios(result.get("adapters")))
    result["ratios"].update(report.signer_ratios(result.get("signer")))
    if "instances" in result:
        result["ratios"].update(instances.ratios(result["instances"]))
    if "peers" in result:
        result["ratios"].update(peerclients.ratios(result["peers"]))
    result["goals"] = (report.goals(result["ratios"], result.get("app"), result.get("memory"))
                       + report.adapter_goals(result["ratios"]) + report.signer_goals(result["ratios"])
                       + report.instance_goals(result["ratios"], result.get("instances"))
                       + peerclients.goals(result["ratios"]))
    if args.json:
        for group in ("handshakes", "https", "tickets", "adapters", "signer", "instances", "peers"):
            if group in result and "samples" in result[group]:
                result[group]["samples"] = {k: [list(s) for s in v] for k, v in result[group]["samples"].items()}
        result["goals"] = [{"goal": g, "measured": m, "passed": ok} for g, m, ok in result["goals"]]
        print(json.dumps(result, indent=1))
    else:
        print(report.table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
