"""The `peers` group: HTTPS requests/s and client CPU per request through dyncert's requests adapter and
the clients a user would pick instead, cold (a new identity each request) and warm, against one nginx.

Each contestant runs in a process of its own (bench/peer_worker.py), rounds alternated, so no client's
imports, caches or threads touch another's; niquests runs in .venv-peers (bench/requirements-peers.txt).
"""

import json
import os
import subprocess
import sys

from . import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_PYTHON = os.path.join(ROOT, ".venv-peers", "bin", "python")
CONTESTANTS = ("dyncert", "requests_pkcs12", "google_auth", "niquests")
LABELS = {
    "dyncert": "dyncert requests adapter (ClientIdentity, memory)",
    "requests_pkcs12": "requests_pkcs12 (PKCS#12 via a temp file)",
    "google_auth": "google-auth AuthorizedSession.configure_mtls_channel",
    "niquests": "niquests cert=(PEM text, PEM text)",
}
COLD_CALLS = 300  # per cold run at most: each needs an identity made beforehand


def _python(client):
    return PEERS_PYTHON if client == "niquests" else sys.executable


def available(client):
    return os.path.exists(_python(client))


def _path(client, mode, port, directory, log):
    def run(duration):
        limit = COLD_CALLS if mode == "cold" else 10 ** 7
        out = subprocess.run([_python(client), os.path.join(ROOT, "bench", "peer_worker.py"), client, mode,
                              str(duration), str(limit), str(port), directory],
                             capture_output=True, text=True, timeout=600, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=ROOT))
        if out.returncode:
            raise RuntimeError(f"peer worker {client} {mode}: {out.stderr[-1500:]}")
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        run.version = answer["version"]
        return answer["count"], answer["wall"], answer["cpu"]
    run.version = None
    return run


def run(pki, port, rounds, duration, log):
    """{samples, summary, versions, missing} for every contestant that is installed."""
    key_path = pki.path("ca-key.pem")  # the throwaway bench CA's key: workers issue their cold identities
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pki.ca.private_key_pem.bytes())
    try:
        paths, missing = {}, []
        for client in CONTESTANTS:
            if not available(client):
                missing.append(client)
                continue
            for mode in ("warm", "cold"):
                paths[f"{client}_{mode}"] = _path(client, mode, port, pki.directory, log)
        samples = timing.alternate(paths, rounds, duration, progress=log)
    finally:
        os.unlink(key_path)
    versions = {name.rsplit("_", 1)[0]: path.version for name, path in paths.items()}
    return {"samples": samples, "summary": {k: timing.summarize(v) for k, v in samples.items()},
            "versions": versions, "missing": missing}


def ratios(result):
    """dyncert against the best other client, warm and cold (rates, paired by round)."""
    from .report import paired_ratio
    out = {}
    for mode in ("warm", "cold"):
        others = [c for c in CONTESTANTS if c != "dyncert" and f"{c}_{mode}" in result["samples"]]
        if not others or f"dyncert_{mode}" not in result["samples"]:
            continue
        best = max(others, key=lambda c: result["summary"][f"{c}_{mode}"]["rate"])
        out[f"dyncert_vs_best_peer_{mode}"] = paired_ratio(result["samples"], f"dyncert_{mode}", f"{best}_{mode}")
        out[f"best_peer_{mode}"] = best
    return out


def goals(r):
    """The issue's goal: dyncert at least the best peer warm, ahead of it cold."""
    out = []
    for mode, floor, word in (("warm", 1.0, ">="), ("cold", 1.0, ">")):
        value = r.get(f"dyncert_vs_best_peer_{mode}")
        if value is not None:
            ok = value >= floor if word == ">=" else value > floor
            out.append((f"dyncert {word} the best peer ({r[f'best_peer_{mode}']}), {mode}", f"{value:.2f}x", ok))
    return out


def table_lines(result):
    lines = ["", "HTTPS GET / against nginx ssl_verify_client on: dyncert and the peers (each in its own process)",
             f"  {'client':<56} {'version':>8} {'mode':>5} {'req/s':>8} {'(min..max)':>13} {'CPU µs/req':>11}"]
    for client in CONTESTANTS:
        for mode in ("warm", "cold"):
            s = result["summary"].get(f"{client}_{mode}")
            if s:
                lines.append(f"  {LABELS[client]:<56} {result['versions'][client]:>8} {mode:>5} {s['rate']:>8.0f} "
                             f"{'(%.0f..%.0f)' % (s['rate_min'], s['rate_max']):>13} {s['cpu_us']:>11.0f}")
    for client in result["missing"]:
        lines.append(f"  {LABELS[client]}: not installed (make {'.venv-peers' if client == 'niquests' else 'bench'})")
    return lines
