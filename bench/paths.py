"""The handshake paths: one callable per path, each doing one TCP connect + mTLS handshake + close."""

import contextlib
import os
import socket
import ssl
import tempfile

from dyncert import calls, context, reuse
from dyncert.targets import Target

SNI = "localhost"
TIMEOUTS = calls.Timeouts(connect=5, handshake=5, read=5)
TMPFS = "/dev/shm"


@contextlib.contextmanager
def forced_tier(tier):
    """dyncert's identity loading forced to one tier ('memfd', 'pipe' or 'tempfile') for one call."""
    previous = context.MEMFD_ENABLED, context.PIPE_ENABLED
    context.set_memfd_enabled(tier == "memfd")
    context.set_pipe_enabled(tier in ("memfd", "pipe"))
    try:
        yield
    finally:
        context.set_memfd_enabled(previous[0])
        context.set_pipe_enabled(previous[1])


@contextlib.contextmanager
def reuse_switched(enabled):
    """dyncert's session resumption and keep-alive pools on or off for one call (restored after)."""
    previous = reuse.ENABLED
    reuse.ENABLED = enabled
    try:
        yield
    finally:
        reuse.ENABLED = previous


def connect(port):
    """A TCP connection to the loopback peer, TCP_NODELAY set (as dyncert sets it)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def shake(ctx, port):
    """Connect, handshake, close: the unit every raw-socket context path is timed with."""
    with ctx.wrap_socket(connect(port), server_hostname=SNI):
        pass


def static_context(pki):
    """The baseline: certificate, key and CA from files on disk, built once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=pki.path("ca.pem"))
    ctx.load_cert_chain(pki.path("client.pem"), pki.path("client-key.pem"))
    return ctx


def naive_context(pki):
    """What most people write: temp files and create_default_context() on every call."""
    ctx = ssl.create_default_context()  # also parses the whole system CA bundle
    ctx.load_verify_locations(cadata=pki.ca_pem.decode("ascii"))
    with tempfile.NamedTemporaryFile(suffix=".pem") as cert, tempfile.NamedTemporaryFile(suffix=".pem") as key:
        cert.write(pki.client_chain_pem)
        key.write(pki.client_key_pem)
        cert.flush()
        key.flush()
        ctx.load_cert_chain(cert.name, key.name)
    return ctx


class Paths:
    """Every handshake path as a zero-argument callable, sharing one PKI and one peer."""

    def __init__(self, pki, port, cold_identities):
        self.pki, self.port = pki, port
        self.identity = pki.identity()
        self.static = static_context(pki)
        self.cache = context.ContextCache(maxsize=16)
        self.cold_cache = context.ContextCache(maxsize=4)  # smaller than the identity ring: always a miss
        self.cold = cold_identities
        self._next = 0
        self.target = Target("127.0.0.1", port, SNI)
        self.reused = {"full": [0, 0], "resumed": [0, 0]}  # [session_reused, calls]

    def warm_context(self):
        return self.cache.client_context(self.identity, self.pki.ca_pem)

    def run_static(self):
        shake(self.static, self.port)

    def run_naive(self):
        shake(naive_context(self.pki), self.port)

    def run_warm(self):
        shake(self.warm_context(), self.port)

    def _cold(self, tier, tmpdir=None):
        identity = self.cold[self._next % len(self.cold)]
        self._next += 1
        previous_tmp = tempfile.tempdir
        tempfile.tempdir = tmpdir or previous_tmp
        try:
            with forced_tier(tier):
                ctx = self.cold_cache.client_context(identity, self.pki.ca_pem)
        finally:
            tempfile.tempdir = previous_tmp
        shake(ctx, self.port)

    def run_cold_memfd(self):
        self._cold("memfd")

    def run_cold_pipe(self):
        """The pipe tier: what an interpreter without memfd (the Cloud CLI's 3.12) uses on Linux."""
        self._cold("pipe")

    def run_cold_tempfile(self):
        self._cold("tempfile")

    def run_cold_tempfile_tmpfs(self):
        """The temp file tier with its directory on tmpfs (App Engine's /tmp is in memory)."""
        self._cold("tempfile", TMPFS)

    def _handshake(self, name, enabled):
        """calls.handshake() as the app calls it (checked address, verdict wait, TLS facts), reuse on or off."""
        with reuse_switched(enabled):
            result = calls.handshake(self.warm_context(), self.target, self.identity.fingerprint_sha256,
                                     timeouts=TIMEOUTS)
        self.reused[name][0] += result["session_reused"]
        self.reused[name][1] += 1

    def run_full(self):
        self._handshake("full", False)

    def run_resumed(self):
        self._handshake("resumed", True)


def tmpfs_available():
    """True when TMPFS is a directory on tmpfs (from /proc/mounts) that we can write to."""
    try:
        with open("/proc/mounts") as mounts:
            on_tmpfs = any(line.split()[1:3] == [TMPFS, "tmpfs"] for line in mounts)
    except OSError:
        return False
    return on_tmpfs and os.access(TMPFS, os.W_OK | os.X_OK)


def memfd_tier_works():
    """True when tier 1 really loads (os.memfd_create and /proc present)."""
    return hasattr(os, "memfd_create") and os.path.exists("/proc/self/fd")


def pipe_tier_works():
    """True when the pipe tier really loads (a pipe reads back through /proc/self/fd: Linux)."""
    return context._pipe_works()
