"""HTTPS requests over mTLS with calls.https_request: keep-alive pool per identity vs one connection per request."""

import contextlib
import json

from dyncert import calls, targets

from . import paths

HEADERS = {}  # Host comes from the target (a caller may not set it)


@contextlib.contextmanager
def counting_connections():
    """Count the TLS connections dyncert opens (calls.open_tls wrapped for the duration; restored after)."""
    original, opened = calls.open_tls, [0]

    def open_tls(*args, **kwargs):
        opened[0] += 1
        return original(*args, **kwargs)

    calls.open_tls = open_tls
    try:
        yield opened
    finally:
        calls.open_tls = original


class Requests:
    """The request paths against one keep-alive peer (nginx): calls.https_request with reuse on and off."""

    def __init__(self, paths_, port, opened):
        self.p = paths_
        self.counter = opened  # from counting_connections(), around the whole group
        self.target = targets.Target("127.0.0.1", port, paths.SNI)
        self.reused = {"per_request": [0, 0], "pooled": [0, 0]}  # [session_reused, requests]
        self.opened = {"per_request": 0, "pooled": 0}
        self.last_body = None

    def _request(self, name, enabled):
        before = self.counter[0]
        with paths.reuse_switched(enabled):
            result = calls.https_request(self.p.warm_context(), self.target, self.p.identity.fingerprint_sha256,
                                         headers=HEADERS, timeouts=paths.TIMEOUTS)
        if result["status"] != 200:
            raise RuntimeError(f"peer answered {result['status']}: {result['body'][:200]}")
        self.reused[name][0] += result["tls"]["session_reused"]
        self.reused[name][1] += 1
        self.opened[name] += self.counter[0] - before
        self.last_body = result["body"]

    def run_per_request(self):
        self._request("per_request", False)

    def run_pooled(self):
        self._request("pooled", True)

    def who(self):
        """What the peer saw on a pooled request: subject and protocol (proves the client certificate was sent)."""
        self.run_pooled()
        return json.loads(self.last_body)
