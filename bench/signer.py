"""Signer-backed identities (issue 18): what the ctypes binding costs per handshake, and how often a slow signer signs.

1. Full handshakes per second against `openssl s_server -Verify 1`: the bench client's key loaded
   normally vs the same key behind a LocalSigner (same certificate, one cached context each).
2. A signer that waits 20 ms per signature (a Cloud KMS round trip): 1,000 GETs through the
   requests adapter against nginx; signatures counted against new connections (goal: equal).
"""

import socket
import time

import requests
from cryptography.hazmat.primitives import serialization

from dyncert import context, runtime
from dyncert.requests import ClientCertAdapter
from dyncert.signers import LocalSigner, SignerIdentity

from . import timing

ROWS = (
    ("key_loaded", "full handshake, key loaded (memfd)"),
    ("local_signer", "full handshake, LocalSigner via the ctypes binding"),
)
SLOW_SIGNER_SECONDS = 0.020
REQUESTS = 1000


class Sleepy(LocalSigner):
    """A LocalSigner that waits like a KMS round trip and counts its signatures."""

    signatures = 0

    def sign(self, data, scheme):
        Sleepy.signatures += 1
        time.sleep(SLOW_SIGNER_SECONDS)
        return super().sign(data, scheme)


def _full_handshake(ctx, port):
    """One new connection and full handshake (no session offered), then close."""
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version()


def run(p, s_server_port, nginx_port, rounds, duration, log):
    """The two measurements; None when this interpreter cannot bind a signer (e.g. the Cloud CLI's 3.12)."""
    binding = runtime.signer_binding()
    if not binding["available"]:
        return {"unsupported": binding["detail"]}
    key = serialization.load_pem_private_key(p.client_key_pem, None)
    ordinary = p.identity()
    signed = SignerIdentity(p.client_chain_pem, LocalSigner(key))
    contexts = {"key_loaded": context.client_context(ordinary, p.ca_pem),
                "local_signer": context.client_context(signed, p.ca_pem)}
    ops = {name: timing.timed(lambda c=ctx: _full_handshake(c, s_server_port)) for name, ctx in contexts.items()}
    samples = timing.alternate(ops, rounds, duration, progress=log)
    out = {"samples": samples, "summary": {name: timing.summarize(s) for name, s in samples.items()}}
    if nginx_port is not None:
        log(f"signer: {REQUESTS} GETs through the requests adapter, a signer sleeping {SLOW_SIGNER_SECONDS * 1000:.0f} ms")
        Sleepy.signatures = 0
        slow = SignerIdentity(p.client_chain_pem, Sleepy(key))
        session = requests.Session()
        session.mount("https://", ClientCertAdapter(slow, ca_certs=p.path("ca.pem")))
        started = time.perf_counter()
        for _ in range(REQUESTS):
            response = session.get(f"https://localhost:{nginx_port}/", timeout=10)
            assert response.status_code == 200
        seconds = time.perf_counter() - started
        pools = session.get_adapter("https://").poolmanager.pools
        connections = sum(pools[k].num_connections for k in pools.keys())  # connections urllib3 opened
        out["slow_signer"] = {"requests": REQUESTS, "signatures": Sleepy.signatures, "connections": connections,
                              "seconds": seconds}
        session.close()
    return out
