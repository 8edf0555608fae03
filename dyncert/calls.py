"""Outbound mTLS calls (handshake, HTTPS request, raw echo) -> result records; failures -> RemoteError codes."""

import dataclasses
import functools
import http.client
import select
import socket
import ssl
import time

import urllib3
from cryptography import x509

from . import reuse, targets
from .errors import DyncertError, InputError, RemoteError
from .identity import rfc3339, san_list

MAX_BODY = 64 * 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# A TLS 1.3 server that issues no session tickets gives no positive sign that it accepted our
# certificate; handshake() then waits this long for a rejection alert before reporting success.
TICKET_WAIT = 0.5

# OpenSSL verify codes (x509_vfy.h) for a certificate valid for another name.
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64

# Alerts the peer sends about *our* certificate. handshake_failure is also the pre-TLS 1.3 way
# of saying "no usable client certificate" (and, rarely, "no shared cipher").
_REJECTED = {
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca (it does not trust the issuer of the client certificate)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate_revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate_required (no client certificate reached it)",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
    "TLSV1_ALERT_DECRYPT_ERROR": "decrypt_error (the client certificate signature did not verify)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake_failure (most often: it refused the client certificate; "
                                     "rarely: no shared cipher)",
}
_PROTOCOL = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
             "WRONG_SSL_VERSION", "TLSV1_ALERT_INAPPROPRIATE_FALLBACK", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"}


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for the TCP connect, the TLS handshake and each read."""

    connect: float = 5.0
    handshake: float = 10.0
    read: float = 10.0


@dataclasses.dataclass
class TLSInfo:
    """Facts of one mTLS connection, as API.md's handshake fields."""

    tls_version: str
    cipher: str
    peer: dict
    server_hostname: str
    hostname_verified: bool
    client_fingerprint_sha256: str
    session_reused: bool = False
    elapsed_ms: float = 0.0

    def to_dict(self):
        """The JSON-ready fields of API.md (a copy: the peer dict and its lists are new)."""
        out = {field.name: getattr(self, field.name) for field in _TLS_FIELDS}
        out["peer"] = {k: list(v) if isinstance(v, list) else v for k, v in self.peer.items()}
        return out


_TLS_FIELDS = dataclasses.fields(TLSInfo)


# --- peer certificate facts ---------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _parsed_peer_facts(der):
    """(subject, issuer, san tuple, not_after) of a DER certificate; a peer shows the same one call after call."""
    cert = x509.load_der_x509_certificate(der)
    return (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), tuple(san_list(cert)),
            rfc3339(cert.not_valid_after_utc))


def peer_facts(der):
    """subject, issuer, san, not_after of the peer certificate (DER); a new dict every call."""
    if der is None:
        return {"subject": None, "issuer": None, "san": [], "not_after": None}
    subject, issuer, san, not_after = _parsed_peer_facts(bytes(der))
    return {"subject": subject, "issuer": issuer, "san": list(san), "not_after": not_after}


def tls_info(sock, context, target, client_fingerprint):
    """TLSInfo of a connected SSLSocket (elapsed_ms filled in by the caller)."""
    return TLSInfo(tls_version=sock.version(), cipher=sock.cipher()[0],
                   peer=peer_facts(sock.getpeercert(binary_form=True)), server_hostname=target.sni,
                   hostname_verified=bool(context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED),
                   client_fingerprint_sha256=client_fingerprint, session_reused=sock.session_reused)


# --- errors ------------------------------------------------------------------------------

def _root_cause(exc):
    """The innermost socket/ssl error behind urllib3's wrappers (args, __cause__, __context__)."""
    seen, last = set(), exc
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        last = exc
        if isinstance(exc, (DyncertError, OSError)) and not isinstance(exc, urllib3.exceptions.HTTPError):
            return exc
        inner = next((a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)), None)
        exc = inner or exc.__cause__ or exc.__context__
    return last


def remote_error(exc, target, phase):
    """Map a socket/ssl/urllib3 failure during `phase` to a RemoteError with a stable code."""
    cause = _root_cause(exc)
    if isinstance(cause, DyncertError):
        return cause
    where = f"{phase} with {target}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or "verification failed"
        if cause.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            return RemoteError("hostname_mismatch", f"Expected the peer's certificate to be valid for "
                               f"{target.sni!r}; it is not ({detail}), {where}.")
        return RemoteError("unknown_ca", f"Expected a peer certificate that verifies against the trusted CA "
                           f"certificates; found one that does not ({detail}), {where}.")
    if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or (isinstance(cause, ssl.SSLError) and
                                              getattr(cause, "reason", None) == "UNEXPECTED_EOF_WHILE_READING"):
        return RemoteError("connection_reset", f"The peer closed the connection unexpectedly, {where}.")
    if isinstance(cause, ssl.SSLError):
        reason = getattr(cause, "reason", None) or ""
        if reason in _REJECTED:
            return RemoteError("peer_rejected_certificate", f"The peer refused our client certificate: it sent "
                               f"the TLS alert {_REJECTED[reason]}, {where}.")
        if reason in _PROTOCOL:
            return RemoteError("protocol_version", f"Expected a TLS version both sides accept; found none "
                               f"({reason.lower()}), {where}.")
        return RemoteError("handshake_failed", f"The TLS exchange failed ({reason.lower() or cause}), {where}.")
    if isinstance(cause, socket.gaierror):
        return RemoteError("dns_failure", f"Could not resolve {target.host!r}: {cause.strerror or cause}.")
    if isinstance(cause, (TimeoutError, socket.timeout)):  # socket.timeout is TimeoutError since 3.10
        return RemoteError("timeout", f"The peer did not answer in time, {where}.")
    if isinstance(cause, ConnectionRefusedError):
        return RemoteError("connection_refused", f"Nothing accepted the connection to {target}.")
    if isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return RemoteError("connection_reset", f"The peer reset the connection, {where}.")
    if isinstance(cause, OSError) and phase == "connecting":
        return RemoteError("connection_refused", f"Could not connect to {target} ({cause.strerror or cause}).")
    if isinstance(cause, OSError):
        return RemoteError("connection_reset", f"The connection failed ({cause.strerror or cause}), {where}.")
    if isinstance(cause, (http.client.HTTPException, urllib3.exceptions.HTTPError)):
        return RemoteError("handshake_failed", f"Expected an HTTP/1.1 response, found something else "
                           f"({type(cause).__name__}), {where}.")
    return RemoteError("handshake_failed", f"The exchange failed ({type(cause).__name__}), {where}.")


# --- connection --------------------------------------------------------------------------

def _connect_tcp(infos, timeout):
    """A TCP socket connected to the first reachable checked address (TCP_NODELAY set)."""
    error = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            # Small writes after the handshake would otherwise wait on Nagle + delayed ACK (~40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


def _await_verdict(sock, timeout):
    """TLS 1.3: wait until the server has accepted our certificate (a session ticket) or refused it (alert).

    In TLS 1.3 the client finishes its handshake before the server has checked the client
    certificate: a rejection arrives as an alert *after* do_handshake() returned. Servers that
    accept send NewSessionTicket messages (OpenSSL and Python ssl: 2 by default), so the first
    ticket is the positive sign. A non-blocking read consumes them (it raises SSLWantReadError
    once no application data is left) and `session.has_ticket` flips; an alert raises SSLError.
    Data (a server that speaks first) or a clean close also settle it.

    Returns (bytes read, the ticketed session or None). `sock.session` copies the session
    (CPython serialises and re-parses it, ~0.1 ms), so it is read only after a wait and a read,
    normally once per call, and handed on to reuse.remember instead of being read again.
    """
    if sock.version() != "TLSv1.3":
        return b"", None  # TLS 1.2: the server's Finished, received in the handshake, is its verdict
    if sock.session_reused:
        # The server accepted our certificate when it issued this ticket, and a resumed TLS 1.3
        # handshake does not send it again: there is no new verdict to wait for. The ticket is
        # offered again next time (RFC 8446 C.4 asks otherwise for privacy; the certificate
        # names us anyway).
        return b"", None
    deadline = time.monotonic() + min(timeout, TICKET_WAIT)
    sock.setblocking(False)
    try:
        while True:
            select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            try:
                data = sock.recv(MAX_BODY)
                if not data:
                    raise RemoteError("connection_reset", "The peer closed the connection right after the TLS 1.3 "
                                      "handshake without a session ticket: it most likely refused the client "
                                      "certificate without saying why.")
                return data, None
            except ssl.SSLWantReadError:
                pass
            session = sock.session
            if session is not None and session.has_ticket:
                return b"", session
            if time.monotonic() >= deadline:
                return b"", None  # no ticket, no alert: accepted as far as we can tell
    finally:
        sock.settimeout(timeout)


def connect(target, timeouts=Timeouts(), allowed=None):
    """A TCP socket to a checked address of `target` (allowed, resolved, never link-local or metadata)."""
    if allowed is not None:
        targets.check_allowed(target, allowed)
    infos = targets.resolve(target, timeouts.connect)
    try:
        return _connect_tcp(infos, timeouts.connect)
    except OSError as e:
        raise remote_error(e, target, "connecting") from e


def open_tls(context, target, timeouts, allowed=None, await_verdict=False):
    """A connected, handshaken SSLSocket to a checked address of `target`, and bytes read early (verdict wait)."""
    sock, early, _ = _open_tls(context, target, timeouts, allowed, await_verdict)
    return sock, early


def _open_tls(context, target, timeouts, allowed, await_verdict):
    """open_tls, plus the ticketed session the verdict wait saw (None if it read none)."""
    raw = connect(target, timeouts, allowed)
    phase = "during the TLS handshake"
    try:
        sock = context.wrap_socket(raw, server_hostname=target.sni, do_handshake_on_connect=False,
                                   session=reuse.session(context, target))
    except (OSError, ValueError) as e:
        raw.close()
        raise remote_error(e, target, phase) from e
    try:
        sock.settimeout(timeouts.handshake)
        sock.do_handshake()
        early, session = _await_verdict(sock, timeouts.handshake) if await_verdict else (b"", None)
        sock.settimeout(timeouts.read)
        return sock, early, session
    except BaseException as e:
        sock.close()
        if isinstance(e, DyncertError):
            raise
        if isinstance(e, (OSError, ValueError)):
            raise remote_error(e, target, phase) from e
        raise


def _elapsed_ms(started):
    return round((time.perf_counter() - started) * 1000, 3)


# --- the three calls ---------------------------------------------------------------------

def handshake(context, target, client_fingerprint, timeouts=Timeouts(), allowed=None):
    """Connect and shake hands (waiting for a TLS 1.3 server's verdict on our certificate)."""
    started = time.perf_counter()
    sock, _, session = _open_tls(context, target, timeouts, allowed, await_verdict=True)
    try:
        info = tls_info(sock, context, target, client_fingerprint)
        reuse.remember(context, target, sock, session)
    finally:
        sock.close()
    info.elapsed_ms = _elapsed_ms(started)
    return {"ok": True, **info.to_dict()}


def read_line(sock, limit):
    """Read until a newline, EOF, `limit` bytes or a read timeout after some data; timeout with none raises."""
    data = bytearray()
    while len(data) < limit and b"\n" not in data:
        try:
            chunk = sock.recv(limit - len(data))
        except (TimeoutError, socket.timeout):
            if data:
                break
            raise
        if not chunk:
            break
        data += chunk
    return bytes(data)


def echo(context, target, client_fingerprint, send, timeouts=Timeouts(), allowed=None):
    """Write `send` on a raw mTLS socket; read until newline, close, 64 KiB or read timeout."""
    started = time.perf_counter()
    payload = send.encode("utf-8") if isinstance(send, str) else bytes(send)
    # No verdict wait: a TLS 1.3 rejection surfaces on the first read, mapped the same way.
    sock, _ = open_tls(context, target, timeouts, allowed)
    try:
        info = tls_info(sock, context, target, client_fingerprint)
        try:
            sock.sendall(payload)
            received = read_line(sock, MAX_BODY)
        except OSError as e:
            raise after_handshake_error(sock, e, target) from e
        reuse.remember(context, target, sock)
    finally:
        sock.close()
    info.elapsed_ms = _elapsed_ms(started)
    return {"ok": True, "received": received.decode("utf-8", "replace"), "tls": info.to_dict()}


def after_handshake_error(sock, exc, target):
    """Map a failure after the handshake, preferring an alert already queued (it says why the peer hung up)."""
    if isinstance(_root_cause(exc), (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)):
        try:
            sock.setblocking(False)
            sock.recv(1)
        except ssl.SSLError as queued:
            if getattr(queued, "reason", None) in _REJECTED:
                return remote_error(queued, target, "after the TLS handshake")
        except OSError:
            pass
    return remote_error(exc, target, "after the TLS handshake")


class _MTLSConnection(urllib3.connection.HTTPConnection):
    """urllib3 HTTP/1.1 connection over a socket from open_tls (TLS done by us, not by urllib3).

    urllib3's HTTPSConnection writes into the SSLContext it is given (verify_mode, ALPN, and
    check_hostname when assert_hostname is set; urllib3 issue #4961). Our contexts are cached
    and shared between threads, so urllib3 only gets the finished socket: it does HTTP framing,
    we do connect (to the checked address), handshake and verification.
    """

    def __init__(self, *args, dyncert_open=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._dyncert_open = dyncert_open
        self.tls_sock = self.tls_facts = None
        self.session_kept = False

    def _new_conn(self):
        # Kept: http.client drops `sock` from a connection that will close, before we read TLS facts.
        # The facts and the kept session belong to the socket: a reconnect starts them afresh.
        self.tls_facts, self.session_kept = None, False
        self.tls_sock = self._dyncert_open()
        return self.tls_sock


class _MTLSPool(urllib3.HTTPConnectionPool):
    """Keep-alive connections from open_tls to one target, kept on one context (see reuse.py)."""

    ConnectionCls = _MTLSConnection


POOL_SIZE = 4  # idle keep-alive connections kept per identity and peer


def _host_header(target):
    host = f"[{target.sni}]" if ":" in target.sni else target.sni
    return host if target.port == 443 else f"{host}:{target.port}"


def _make_pool(context, target, timeouts):
    """A pool whose new connections are opened (checked address, handshake, verification) by us."""
    def open_connection():
        sock, _ = open_tls(context, target, timeouts)
        return sock

    return _MTLSPool(target.host, target.port, maxsize=POOL_SIZE, block=False, retries=False,
                     timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
                     dyncert_open=open_connection)


def https_request(context, target, client_fingerprint, method="GET", path="/", headers=None, body="",
                  timeouts=Timeouts(), allowed=None):
    """One HTTP/1.1 request over a kept-alive mTLS connection; body text capped at 64 KiB (`truncated`)."""
    started = time.perf_counter()
    if method not in METHODS:
        raise InputError("invalid_request", f"Expected a method among {', '.join(METHODS)}, found {method!r}.")
    if not isinstance(path, str) or not path.startswith("/"):
        raise InputError("invalid_request", f"Expected a path starting with '/', found {path!r}.")
    if isinstance(body, str):
        body = body.encode("utf-8")
    if allowed is not None:
        targets.check_allowed(target, allowed)
    send_headers = {"Host": _host_header(target), "User-Agent": "dyncert"}
    send_headers.update(headers or {})
    kept = reuse.pool(context, (target, timeouts), lambda: _make_pool(context, target, timeouts))
    pool = kept or _make_pool(context, target, timeouts)
    response, reusable = None, False
    try:
        try:
            response = pool.urlopen(method, path, body=body or None, headers=send_headers, retries=False,
                                    redirect=False, preload_content=False, release_conn=False)
            # Read TLS facts before the body: a fully read response goes back to the pool at once.
            # They hold for the connection's life: read (and the session kept) once per connection.
            conn = response.connection
            if conn.tls_facts is None:
                conn.tls_facts = tls_info(conn.tls_sock, context, target, client_fingerprint)
            if not conn.session_kept:
                conn.session_kept = reuse.remember(context, target, conn.tls_sock)
            info = dataclasses.replace(conn.tls_facts, client_fingerprint_sha256=client_fingerprint)
            data = response.read(MAX_BODY + 1) if method != "HEAD" else b""
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            # A TLS 1.3 rejection of our certificate arrives here, as an alert on the first read.
            raise remote_error(e, target, "during the HTTPS request") from e
        truncated = len(data) > MAX_BODY
        reusable = not truncated  # an unread rest would have to be drained first: not worth it
        result = {"ok": True, "status": response.status, "headers": dict(response.headers),
                  "body": data[:MAX_BODY].decode("utf-8", "replace"), "truncated": truncated}
    finally:
        if response is not None:
            if not reusable and response.connection is not None:
                response.connection.close()
            response.release_conn()
        if kept is None:
            pool.close()
    info.elapsed_ms = _elapsed_ms(started)
    result["tls"] = info.to_dict()
    return result
