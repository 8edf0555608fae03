"""Outbound calls for a stored identity: cached context, the call itself, one log line each.

The call path touches Datastore twice: the handler's one read before (models.store.load_identity)
and, after, the LastCall write (models.lastcall.record_call); dyncert does the rest.
"""

import dataclasses
import functools
import io
import logging
import ssl
import time
import urllib.parse

import dyncert
from dyncert import calls, context, targets
from dyncert.errors import DyncertError, InputError
from models.lastcall import record_call

log = logging.getLogger("dyncert.calls")


def timeouts(settings):
    """Connect, handshake and read timeouts, and the whole call's deadline, from the settings."""
    return calls.Timeouts(connect=settings.connect_timeout, handshake=settings.io_timeout,
                          read=settings.io_timeout, total=settings.call_deadline)


def allowed(settings):
    """The ALLOWED_TARGETS patterns, or None when every public target is allowed."""
    return targets.parse_allowed(settings.allowed_targets)


def _logged(kind, stored, work, target=None):
    """Run `work()`, logging one structured line (identity, target, outcome, elapsed), no secrets."""
    target = target or stored.target
    started = time.perf_counter()
    outcome, result = "ok", None
    try:
        result = work()
        return result
    except DyncertError as e:
        outcome = e.code
        raise
    finally:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        fields = {
            "event": "outbound_call", "call": kind,
            "identity": f"{stored.employee}/{stored.address}" if stored else None,
            "fingerprint_sha256": stored.identity.fingerprint_sha256 if stored else None,
            "target": f"{target.host}:{target.port}", "sni": target.sni,
            "outcome": outcome, "elapsed_ms": elapsed_ms}
        # The fields become fields of the Cloud Logging entry (applog), the message stays readable as text.
        log.info("outbound_call %s %s -> %s: %s in %s ms", kind, fields["identity"], fields["target"],
                 outcome, elapsed_ms, extra={"json_fields": fields})
        if stored is not None:
            _record(kind, stored, outcome, result, elapsed_ms)


def _record(kind, stored, outcome, result, elapsed_ms):
    """Keep the last result for the list page; a failed write must not fail the call itself."""
    status = result.get("status") if isinstance(result, dict) else None
    try:
        record_call(stored.employee, stored.address, kind, outcome, status, elapsed_ms)
    except Exception as e:  # noqa: BLE001 - Datastore down or no ndb context: the call's answer matters more
        log.warning("last_call_not_recorded: %s", type(e).__name__,
                    extra={"json_fields": {"event": "last_call_not_recorded", "reason": type(e).__name__}})


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


def default_ca_certs(settings):
    """What `ca_certs` means when an identity stores none: CA_FILE, else the default trust store."""
    trust = context.default_trust()
    return settings.ca_file or trust["cafile"] or trust["capath"]


def echo(stored, settings, send):
    """Write `send` on a raw mTLS socket and read one line back: the python27 sample, on Python 3.

    It reads like the old App Engine code on purpose: the key and certificate strings wrapped in
    StringIO, and dyncert.compat_echo does `wrap_socket(... cert_reqs=CERT_REQUIRED, ca_certs=...)`,
    then `match_hostname`, as the seed did.
    """
    target = stored.target
    key_str, cert_str = stored.identity.key_pem.decode(), stored.identity.chain_pem.decode()
    ca_certs = stored.ca_certs or default_ca_certs(settings)

    def work():
        return dyncert.compat_echo(target, send, keyfile=io.StringIO(key_str), certfile=io.StringIO(cert_str),
                                   ca_certs=ca_certs, client_fingerprint=stored.identity.fingerprint_sha256,
                                   timeouts=timeouts(settings), allowed=allowed(settings))

    return _logged("echo", stored, work)


@functools.lru_cache(maxsize=4)
def server_only_context(verify, ca_file):
    """The context of server-only fetches: default trust, or none when PYTHONHTTPSVERIFY=0 (PEP 493)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.0 and 1.1 are deprecated (RFC 8996)
    if verify:
        context.load_trust(ctx, ca_file)
    else:  # the operator opted out explicitly, as PEP 493 allows for legacy deployments
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fetch(url, settings):
    """GET an https:// URL without a client certificate: the urlfetch-style path of the old runtime."""
    if not isinstance(url, str) or len(url) > 2048:
        raise InputError("invalid_request", "'url' must be an https:// URL of at most 2048 characters.")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InputError("invalid_request", "'url' must be an https:// URL with a host.")
    try:
        port = parts.port or 443
    except ValueError:
        raise InputError("invalid_target", "The URL's port must be 1-65535.") from None
    target = targets.validate_target(parts.hostname, port)
    if allowed(settings) is None:  # a free URL: this host's network only where ALLOWED_TARGETS names it
        target = dataclasses.replace(target, public_only=True)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ctx = server_only_context(settings.https_verify, settings.ca_file)
    return _logged("fetch", None, lambda: calls.https_request(
        ctx, target, None, method="GET", path=path, timeouts=timeouts(settings),
        allowed=allowed(settings)), target=target)
