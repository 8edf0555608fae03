"""HTTPS requests over mTLS: one connection per request (dyncert today) vs keep-alive pools per identity."""

import json
import threading

import urllib3

from dyncert import calls, targets

from . import paths

HEADERS = {"Host": "localhost", "User-Agent": "dyncert-bench"}
TIMEOUTS = calls.Timeouts(connect=5, handshake=5, read=5)


class PoolStore:
    """Prototype: one keep-alive urllib3 pool per (identity, trust, TLS version, target), LRU-free for brevity.

    The key holds the identity's content_id, so a connection never carries another identity's
    request, and a rotated certificate (new content_id) gets a new pool on the very next call.
    """

    def __init__(self, maxsize=4):
        self._pools, self._lock, self.maxsize = {}, threading.Lock(), maxsize
        self.opened = 0

    def pool(self, ctx, key, target):
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = calls._MTLSPool(
                    target.host, target.port, maxsize=self.maxsize, block=False, retries=False,
                    timeout=urllib3.Timeout(connect=TIMEOUTS.connect, read=TIMEOUTS.read),
                    dyncert_open=lambda: self._open(ctx, target))
            return pool

    def _open(self, ctx, target):
        self.opened += 1
        return calls.open_tls(ctx, target, TIMEOUTS)[0]

    def close(self):
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


def _get(pool):
    response = pool.urlopen("GET", "/", headers=HEADERS, retries=False, redirect=False)
    if response.status != 200:
        raise RuntimeError(f"peer answered {response.status}")
    return response.data


class Requests:
    """The request paths against one keep-alive peer (nginx, else any HTTP/1.1 mTLS peer)."""

    def __init__(self, paths_, port):
        self.p = paths_
        self.target = targets.Target("127.0.0.1", port, paths.SNI)
        self.pools = PoolStore()
        self.sessions = paths.SessionStore()
        self.reused = {"per_request_resumed": [0, 0], "per_request_resumed_no_nodelay": [0, 0]}

    def key(self, identity):
        return (identity.content_id, ("pem", self.p.pki.ca_pem), None, self.target)

    def run_per_request(self):
        result = calls.https_request(self.p.warm_context(), self.target, self.p.identity.fingerprint_sha256,
                                     headers={"Host": "localhost"}, timeouts=TIMEOUTS)
        if result["status"] != 200:
            raise RuntimeError(result)

    def run_pooled(self):
        ctx = self.p.warm_context()
        _get(self.pools.pool(ctx, self.key(self.p.identity), self.target))

    def _resumed(self, name, nodelay):
        ctx = self.p.warm_context()
        peer = (self.target.host, self.target.port, self.target.sni)
        opened = []

        def open_sock():
            sock = ctx.wrap_socket(paths.connect(self.target.port, nodelay), server_hostname=self.target.sni,
                                   session=self.sessions.get(ctx, peer))
            opened.append(sock)
            return sock

        pool = calls._MTLSPool(self.target.host, self.target.port, maxsize=1, retries=False, dyncert_open=open_sock)
        try:
            _get(pool)
            self.sessions.put(ctx, peer, opened[0].session)
            self.reused[name][0] += opened[0].session_reused
            self.reused[name][1] += 1
        finally:
            pool.close()

    def run_per_request_resumed(self):
        self._resumed("per_request_resumed", True)

    def run_per_request_resumed_no_nodelay(self):
        self._resumed("per_request_resumed_no_nodelay", False)

    def who(self):
        """The subject the peer saw on a pooled request (proves the client certificate was presented)."""
        ctx = self.p.warm_context()
        return json.loads(_get(self.pools.pool(ctx, self.key(self.p.identity), self.target)))
