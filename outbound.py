"""Outbound calls for a stored identity: cached context, the call itself, one log line each."""

import io
import json
import logging
import ssl
import time

import dyncert
from dyncert import calls, context, targets
from dyncert.errors import DyncertError

log = logging.getLogger("dyncert.calls")


def timeouts(settings):
    """Connect, handshake and read timeouts from the settings."""
    return calls.Timeouts(connect=settings.connect_timeout, handshake=settings.io_timeout,
                          read=settings.io_timeout)


def allowed(settings):
    """The ALLOWED_TARGETS patterns, or None when every public target is allowed."""
    return targets.parse_allowed(settings.allowed_targets)


def _logged(kind, stored, work):
    """Run `work()`, logging one structured line (identity, target, outcome, elapsed), no secrets."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        return work()
    except DyncertError as e:
        outcome = e.code
        raise
    finally:
        log.info(json.dumps({
            "event": "outbound_call", "call": kind,
            "identity": f"{stored.employee}/{stored.address}",
            "fingerprint_sha256": stored.identity.fingerprint_sha256,
            "target": f"{stored.target.host}:{stored.target.port}", "sni": stored.target.sni,
            "outcome": outcome, "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)}))


def _context(stored):
    """The identity's SSLContext, from the content-keyed cache."""
    return context.cached_client_context(stored.identity, stored.ca_certs, stored.tls_version)


def handshake(stored, settings):
    """Connect, shake hands and report the TLS facts."""
    return _logged("handshake", stored, lambda: calls.handshake(
        _context(stored), stored.target, stored.identity.fingerprint_sha256,
        timeouts=timeouts(settings), allowed=allowed(settings)))


def request(stored, settings, method, path, headers, body):
    """One HTTP/1.1 request over the mTLS connection."""
    return _logged("request", stored, lambda: calls.https_request(
        _context(stored), stored.target, stored.identity.fingerprint_sha256,
        method=method, path=path, headers=headers, body=body,
        timeouts=timeouts(settings), allowed=allowed(settings)))


def echo(stored, settings, send):
    """Write `send` on a raw mTLS socket and read one line back."""
    return _logged("echo", stored, lambda: calls.echo(
        _context(stored), stored.target, stored.identity.fingerprint_sha256, send=send,
        timeouts=timeouts(settings), allowed=allowed(settings)))
