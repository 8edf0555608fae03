"""The handshake paths: one callable per path, each doing one TCP connect + mTLS handshake + close."""

import os
import socket
import ssl
import tempfile
import weakref

from dyncert import calls, context
from dyncert.targets import Target

SNI = "localhost"
TICKET_TIMEOUTS = calls.Timeouts(connect=5, handshake=5, read=5)


def connect(port, nodelay=True):
    """A TCP connection to the loopback peer (TCP_NODELAY on unless told otherwise)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if nodelay:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def shake(ctx, port):
    """Connect, handshake, close: the unit every context path is timed with."""
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


class SessionStore:
    """Prototype: TLS sessions kept per (context, peer); a context presents exactly one identity.

    Keyed on the context object itself (weakly): ssl refuses a session from another
    SSLContext anyway, and a content-keyed context cache means one context per identity.
    """

    def __init__(self):
        self._sessions = weakref.WeakKeyDictionary()

    def get(self, ctx, peer):
        return self._sessions.get(ctx, {}).get(peer)

    def put(self, ctx, peer, session):
        if session is not None and (session.has_ticket or session.id):
            self._sessions.setdefault(ctx, {})[peer] = session


def shake_session(ctx, port, store, resume=True, nodelay=True):
    """Connect and handshake offering a stored session; wait for the ticket (as calls does), keep it.

    Returns session_reused. TLS 1.3 tickets arrive after the handshake: _await_verdict reads them.
    """
    peer = ("127.0.0.1", port, SNI)
    session = store.get(ctx, peer) if resume else None
    with ctx.wrap_socket(connect(port, nodelay), server_hostname=SNI, session=session) as sock:
        calls._await_verdict(sock, TICKET_TIMEOUTS.handshake)
        store.put(ctx, peer, sock.session)
        return sock.session_reused


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
        self.sessions = SessionStore()
        self.target = Target("127.0.0.1", port, SNI)
        self.reused = {"resumed": [0, 0], "resumed_no_nodelay": [0, 0]}

    def warm_context(self):
        return self.cache.client_context(self.identity, self.pki.ca_pem)

    def run_static(self):
        shake(self.static, self.port)

    def run_naive(self):
        shake(naive_context(self.pki), self.port)

    def run_warm(self):
        shake(self.warm_context(), self.port)

    def _cold(self, memfd):
        identity = self.cold[self._next % len(self.cold)]
        self._next += 1
        previous = context.MEMFD_ENABLED
        context.set_memfd_enabled(memfd)
        try:
            ctx = self.cold_cache.client_context(identity, self.pki.ca_pem)
        finally:
            context.set_memfd_enabled(previous)
        shake(ctx, self.port)

    def run_cold_memfd(self):
        self._cold(True)

    def run_cold_tempfile(self):
        self._cold(False)

    def run_full(self):
        shake_session(self.warm_context(), self.port, self.sessions, resume=False)

    def _resumed(self, name, nodelay):
        reused = shake_session(self.warm_context(), self.port, self.sessions, nodelay=nodelay)
        self.reused[name][0] += reused
        self.reused[name][1] += 1

    def run_resumed(self):
        self._resumed("resumed", True)

    def run_resumed_no_nodelay(self):
        self._resumed("resumed_no_nodelay", False)

    def run_calls_handshake(self):
        calls.handshake(self.warm_context(), self.target, self.identity.fingerprint_sha256, timeouts=TICKET_TIMEOUTS)


def memfd_tier_works():
    """True when tier 1 really loads (os.memfd_create and /proc present)."""
    return hasattr(os, "memfd_create") and os.path.exists("/proc/self/fd")
