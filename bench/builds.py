"""Cold context builds without a handshake: what each loading tier costs, free of the peer's noise.

The handshake rows mix the build with a loopback handshake on a shared machine; these loops
time the build alone (a new SSLContext, the trust, the identity), alternated round by round.
"""

import ssl

from dyncert import context

from . import paths, timing


def run(pki, cold, rounds, duration, progress=None):
    """{'summary': {path: ...}, 'tiers': [...]}: static files, memfd tier, pipe tier, sealed temp-file tier."""
    state = {"next": 0}

    def build(tier):
        identity = cold[state["next"] % len(cold)]
        state["next"] += 1
        with paths.forced_tier(tier):
            context.client_context(identity, pki.ca_pem)  # the uncached builder: a miss every time

    def static():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=pki.ca_pem.decode("ascii"))
        ctx.load_cert_chain(pki.path("client.pem"), pki.path("client-key.pem"))

    ops = {"build_static": timing.timed(static), "build_tempfile": timing.timed(lambda: build("tempfile"))}
    if paths.memfd_tier_works():
        ops["build_memfd"] = timing.timed(lambda: build("memfd"))
    if paths.pipe_tier_works():
        ops["build_pipe"] = timing.timed(lambda: build("pipe"))
    samples = timing.alternate(ops, rounds, duration, progress=progress)
    return {"summary": {name: timing.summarize(s) for name, s in samples.items()}}
