"""Outbound mTLS calls (handshake, HTTPS request, raw echo) -> result records; failures -> RemoteError codes."""

import collections
import dataclasses
import errno
import functools
import heapq
import http.client
import itertools
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypedDict, cast

import urllib3
from cryptography import x509

from . import reuse, targets
from .errors import DyncertError, InputError, RemoteError
from .identity import display_name, rfc3339, san_list

MAX_BODY = 64 * 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# Framing and hop-by-hop headers are ours to write: a caller's Content-Length, Transfer-Encoding
# or second Host is the shape of request smuggling (RFC 9112 6.1, RFC 9110 7.6.1).
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
                               "trailer", "keep-alive"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.1 field-name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: line breaks and worse, never forwarded
# A TLS 1.3 server that issues no session tickets gives no positive sign that it accepted our
# certificate. Its rejection alert leaves it about a round trip after our Finished, plus its time to
# check our chain. The handshake measures the server's answer time (our ClientHello to its first
# flight: one round trip plus its own handshake work), and handshake() waits VERDICT_FACTOR times
# that, within [VERDICT_FLOOR, TICKET_WAIT] seconds, instead of a fixed TICKET_WAIT.
TICKET_WAIT = 0.5
VERDICT_FLOOR = 0.010  # a busy machine deschedules the server for whole time slices (4 ms): 1 ms missed 1 refusal in ~500
VERDICT_FACTOR = 3.0  # the verdict needs about what its first flight needed: three times that is the margin

# OpenSSL verify codes (x509_vfy.h): a certificate valid for another name, or outside its validity.
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
_X509_V_ERR_CERT_NOT_YET_VALID = 9
_X509_V_ERR_CERT_HAS_EXPIRED = 10

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
# Apache answers a client chain longer than its SSLVerifyDepth (default 1: an intermediate is one
# too many) with internal_error, not with a certificate alert.
_INTERNAL_ERROR = "TLSV1_ALERT_INTERNAL_ERROR"
_DEPTH_HINT = ("The server sent internal_error right after our client certificate: servers send it when the "
               "client chain is deeper than they accept (Apache's default SSLVerifyDepth 1 refuses a chain with "
               "an intermediate). Ask the server's operator to raise the verify depth, and check its log.")
# A TLS 1.3 server that closes without a word right after our certificate (Node.js does) refused it.
_SILENT_CLOSE = ("The peer closed the connection right after the TLS 1.3 handshake, before answering and "
                 "without a session ticket or an alert: it most likely refused the client certificate without "
                 "saying why")
# A handshake cannot see a refusal that comes later: nginx completes it, then answers HTTP 400.
HANDSHAKE_NOTE = ("The TLS handshake succeeded. Some servers (nginx) accept any client certificate in the "
                  "handshake and refuse it only when a request arrives (HTTP 400): send a request to be sure.")
NO_VERDICT_NOTE = ("The server sent neither a session ticket nor an alert after our certificate (a TLS 1.3 server "
                   "without session tickets): accepted as far as TLS can tell. Some servers (nginx) refuse a "
                   "client certificate only when a request arrives (HTTP 400): send a request to be sure.")
_PROTOCOL = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
             "WRONG_SSL_VERSION", "TLSV1_ALERT_INAPPROPRIATE_FALLBACK", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"}


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for the TCP connect, the TLS handshake, each read, and the whole call (`total`)."""

    connect: float = 5.0
    handshake: float = 10.0
    read: float = 10.0
    total: float = 30.0  # the app's CALL_DEADLINE: a peer dribbling bytes within each read timeout ends here


# --- the call deadline -------------------------------------------------------------------

class Deadline:
    """The end of one call: no socket timeout reaches past it, and a watcher shuts the socket down at it.

    Socket timeouts bound each read, not the sum: a peer sending a byte a second would hold a
    call for as long as it likes. The watcher thread shuts the watched socket down (the fd
    only, never the SSL object) once the deadline passes; the blocked read then fails and the
    call reports `timeout`. A call closes its deadline before it closes or pools its socket.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = self._queued = False

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        """True once the deadline is over (the watcher fired, or the clock says so)."""
        return self.expired or self.remaining() <= 0.002

    def timeout(self, seconds: float) -> float:
        """`seconds`, cut to what is left of the deadline (never 0: that would make a socket non-blocking)."""
        return max(0.001, min(seconds, self.remaining()))

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (until close())."""
        with self._lock:
            self._sock = sock
            queue = not self._queued
            self._queued = True
        if queue:
            _watcher.add(self)
        if self.remaining() <= 0:
            self._expire()

    def close(self) -> None:
        """The call is over: leave its socket alone from now on."""
        with self._lock:
            self._done, self._sock = True, None

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._sock is not None:
                try:
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # the fd; the SSL object stays intact
                except OSError:
                    pass

    def error(self, target: targets.Target, phase: str) -> RemoteError:
        return RemoteError("timeout", f"The call did not finish within the call deadline (CALL_DEADLINE, "
                           f"{self.seconds:g} s), {phase} with {target}.")


class _Watcher:
    """One daemon thread expiring deadlines in time order (started on first use)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child (gunicorn workers): the parent's thread does not exist there.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]]
        self._heap, self._order, self._limit = [], itertools.count(), 256
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dyncert-deadline", daemon=True)
                self._thread.start()
            if len(self._heap) > self._limit:  # finished calls would wait out their time: drop them
                self._heap = [e for e in self._heap if not e[2]._done]
                heapq.heapify(self._heap)
                self._limit = max(256, 2 * len(self._heap))  # amortised: not on every add
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # a new earliest deadline: wake the thread to re-time
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline._expire()


_watcher = _Watcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watcher._reset)
_local = threading.local()  # the deadline of the call running on this thread (pooled connections)


class PeerFacts(TypedDict):
    """What `peer_facts` reports about the peer's certificate."""

    subject: str | None
    issuer: str | None
    san: list[str]
    not_after: str | None


@dataclasses.dataclass
class TLSInfo:
    """Facts of one mTLS connection, as API.md's handshake fields."""

    tls_version: str
    cipher: str
    peer: PeerFacts
    server_hostname: str
    hostname_verified: bool
    client_fingerprint_sha256: str
    session_reused: bool = False
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The JSON-ready fields of API.md (a copy: the peer dict and its lists are new)."""
        out = {field.name: getattr(self, field.name) for field in _TLS_FIELDS}
        out["peer"] = {k: list(v) if isinstance(v, list) else v for k, v in self.peer.items()}
        return out


_TLS_FIELDS = dataclasses.fields(TLSInfo)


# --- peer certificate facts ---------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _parsed_peer_facts(der: bytes) -> tuple[str, str, tuple[str, ...], str]:
    """(subject, issuer, san tuple, not_after) of a DER certificate; a peer shows the same one call after call."""
    cert = x509.load_der_x509_certificate(der)
    return (display_name(cert.subject), display_name(cert.issuer), tuple(san_list(cert)),  # openssl order
            rfc3339(cert.not_valid_after_utc))


def peer_facts(der: bytes | None) -> PeerFacts:
    """subject, issuer, san, not_after of the peer certificate (DER); a new dict every call."""
    if der is None:
        return {"subject": None, "issuer": None, "san": [], "not_after": None}
    subject, issuer, san, not_after = _parsed_peer_facts(bytes(der))
    return {"subject": subject, "issuer": issuer, "san": list(san), "not_after": not_after}


def tls_info(sock: ssl.SSLSocket, context: ssl.SSLContext, target: targets.Target,
             client_fingerprint: str) -> TLSInfo:
    """TLSInfo of a connected SSLSocket (elapsed_ms filled in by the caller)."""
    # Casts: typeshed allows None before a handshake; this socket has shaken hands.
    return TLSInfo(tls_version=cast(str, sock.version()), cipher=cast(tuple[str, str, int], sock.cipher())[0],
                   peer=peer_facts(sock.getpeercert(binary_form=True)), server_hostname=target.sni,
                   hostname_verified=bool(context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED),
                   client_fingerprint_sha256=client_fingerprint, session_reused=cast(bool, sock.session_reused))


# --- errors ------------------------------------------------------------------------------

def _root_cause(exc: BaseException | None) -> BaseException | None:
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


def remote_error(exc: BaseException, target: targets.Target, phase: str,
                 deadline: Deadline | None = None) -> DyncertError:
    """Map a socket/ssl/urllib3 failure during `phase` to a RemoteError with a stable code."""
    cause = _root_cause(exc)
    if deadline is not None and deadline.passed() and not isinstance(cause, InputError):
        return deadline.error(target, phase)  # whatever the socket said, it was cut off by the deadline
    if isinstance(cause, DyncertError):
        return cause
    where = f"{phase} with {target}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or "verification failed"
        if cause.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            return RemoteError("hostname_mismatch", f"Expected the peer's certificate to be valid for "
                               f"{target.sni!r}; it is not ({detail}), {where}.")
        if cause.verify_code == _X509_V_ERR_CERT_HAS_EXPIRED:
            return RemoteError("peer_certificate_expired", f"Expected a peer certificate chain within its "
                               f"validity; found an expired certificate ({detail}), {where}.")
        if cause.verify_code == _X509_V_ERR_CERT_NOT_YET_VALID:
            return RemoteError("peer_certificate_not_yet_valid", f"Expected a peer certificate chain within its "
                               f"validity; found a certificate not valid yet ({detail}: check the clocks), {where}.")
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
        if reason == _INTERNAL_ERROR:
            error = RemoteError("handshake_failed", f"The peer sent the TLS alert internal_error, {where}. "
                                f"{_DEPTH_HINT}")
            error.hint = _DEPTH_HINT  # what to check, for the admin page
            return error
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
        # The TLS handshake succeeded (these come from parsing the reply): the port speaks TLS, not HTTP.
        return RemoteError("invalid_response", f"Expected an HTTP/1.1 response after a good TLS handshake, "
                           f"found something else ({type(cause).__name__}: {str(cause)[:80]!r}), {where}.")
    return RemoteError("handshake_failed", f"The exchange failed ({type(cause).__name__}), {where}.")


# --- connection --------------------------------------------------------------------------

def _connect_tcp(infos: Sequence[targets.AddrInfo], timeout: float) -> socket.socket:
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
    raise cast(OSError, error)  # resolve() never returns an empty list: some address was tried


def verdict_wait(answer_seconds: float, timeout: float, tickets_expected: bool = False) -> float:
    """How long to wait for a TLS 1.3 server's verdict, given its answer time in the handshake.

    A server that issues tickets sends one at once when it accepts, so waiting the full
    TICKET_WAIT costs nothing then and still sees a refusal that is slow to come (a busy JVM);
    only a server known to issue none gets the short wait sized by its answer time.
    """
    if tickets_expected:
        return min(timeout, TICKET_WAIT)
    return min(timeout, TICKET_WAIT, max(VERDICT_FLOOR, VERDICT_FACTOR * answer_seconds))


class _TicketIssuers:
    """Whether each TLS 1.3 server issues session tickets, as last seen (a bounded LRU).

    Server behaviour, never identity: any call to the server may learn it. A server not met yet
    counts as an issuer (most are: OpenSSL, nginx, Java, Go by default), so its first refusal is
    never missed; a server that sends none is known after one call and then costs the short wait.
    """

    MAX = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[targets.Target, bool] = collections.OrderedDict()

    def expected(self, target: targets.Target) -> bool:
        """True unless `target` was seen to issue no ticket last time."""
        with self._lock:
            return self._seen.get(target, True)

    def learn(self, target: targets.Target, issues: bool) -> None:
        """Remember what the last verdict wait saw."""
        with self._lock:
            self._seen[target] = issues
            self._seen.move_to_end(target)
            while len(self._seen) > self.MAX:
                self._seen.popitem(last=False)


ticket_issuers = _TicketIssuers()


def _timed_handshake(sock: ssl.SSLSocket, timeout: float) -> float:
    """do_handshake() within `timeout` seconds; returns the server's answer time (our first flight to its first).

    Non-blocking, so the moment the server's first flight arrives is seen: that span is one
    round trip plus the server's handshake work, the same as what its verdict on our certificate
    takes (a blocking do_handshake() would also count our own work, and no moment in between).
    """
    end = time.monotonic() + timeout
    sock.setblocking(False)
    started, answer = time.perf_counter(), None
    while True:
        try:
            sock.do_handshake()
            return answer if answer is not None else time.perf_counter() - started
        except ssl.SSLWantReadError:
            readable, _, _ = select.select([sock], [], [], max(0.0, end - time.monotonic()))
            if not readable:
                raise TimeoutError("_ssl.c: The handshake operation timed out") from None
            if answer is None:
                answer = time.perf_counter() - started
        except ssl.SSLWantWriteError:
            _, writable, _ = select.select([], [sock], [], max(0.0, end - time.monotonic()))
            if not writable:
                raise TimeoutError("_ssl.c: The handshake operation timed out") from None


def _await_verdict(sock: ssl.SSLSocket, timeout: float,
                   wait: float = TICKET_WAIT) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """TLS 1.3: wait until the server has accepted our certificate (a session ticket) or refused it (alert).

    In TLS 1.3 the client finishes its handshake before the server has checked the client
    certificate: a rejection arrives as an alert *after* do_handshake() returned. Servers that
    accept send NewSessionTicket messages (OpenSSL and Python ssl: 2 by default), so the first
    ticket is the positive sign. A non-blocking read consumes them (it raises SSLWantReadError
    once no application data is left) and `session.has_ticket` flips; an alert raises SSLError.
    Data (a server that speaks first) or a clean close also settle it.

    Returns (bytes read, the ticketed session or None, True if the server gave a verdict).
    `sock.session` copies the session (CPython serialises and re-parses it, ~0.1 ms), so it is
    read only after a wait and a read, normally once per call, and handed on to reuse.remember
    instead of being read again. `wait`: how long a server without tickets gets (verdict_wait).
    """
    if sock.version() != "TLSv1.3":
        return b"", None, True  # TLS 1.2: the server's Finished, received in the handshake, is its verdict
    if sock.session_reused:
        # The server accepted our certificate when it issued this ticket, and a resumed TLS 1.3
        # handshake does not send it again: there is no new verdict to wait for. The ticket is
        # offered again next time (RFC 8446 C.4 asks otherwise for privacy; the certificate
        # names us anyway).
        return b"", None, True
    deadline = time.monotonic() + min(timeout, wait)
    sock.setblocking(False)
    try:
        while True:
            select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            try:
                data = sock.recv(MAX_BODY)
            except ssl.SSLWantReadError:
                pass
            except OSError as e:
                if not _hung_up(e):
                    raise  # an alert: remote_error names it
                raise _hung_up_in_verdict_wait(sock) from e  # a reset says what a close says (3.13 keeps its errno)
            else:
                if not data:
                    raise _hung_up_in_verdict_wait(sock)
                return data, None, True
            session = sock.session
            if session is not None and session.has_ticket:
                return b"", session, True
            if time.monotonic() >= deadline:
                return b"", None, False  # no ticket, no alert: accepted as far as we can tell
    finally:
        sock.settimeout(timeout)


def connect(target: targets.Target, timeouts: Timeouts = Timeouts(), allowed: str | Iterable[str] | None = None,
            deadline: Deadline | None = None) -> socket.socket:
    """A TCP socket to a checked address of `target` (allowed, resolved, never link-local or metadata)."""
    deadline = deadline or Deadline(timeouts.total)
    if allowed is not None:
        targets.check_allowed(target, allowed)
    try:
        infos = targets.resolve(target, deadline.timeout(timeouts.connect))
        return _connect_tcp(infos, deadline.timeout(timeouts.connect))
    except RemoteError as e:
        if not deadline.passed():
            raise
        raise deadline.error(target, "connecting") from e
    except OSError as e:
        raise remote_error(e, target, "connecting", deadline) from e


def open_tls(context: ssl.SSLContext, target: targets.Target, timeouts: Timeouts,
             allowed: str | Iterable[str] | None = None, await_verdict: bool = False,
             deadline: Deadline | None = None) -> tuple[ssl.SSLSocket, bytes]:
    """A connected, handshaken SSLSocket to a checked address of `target`, and bytes read early (verdict wait).

    `deadline`: the Deadline of the calling call, which then watches the socket; without one the
    connect and handshake still end by `timeouts.total`, and the socket is the caller's alone.
    """
    own = deadline is None
    deadline = deadline or Deadline(timeouts.total)
    try:
        sock, early, _, _ = _open_tls(context, target, timeouts, allowed, await_verdict, deadline)
    finally:
        if own:
            deadline.close()
    return sock, early


def _open_tls(context: ssl.SSLContext, target: targets.Target, timeouts: Timeouts, allowed: str | Iterable[str] | None,
              await_verdict: bool,
              deadline: Deadline) -> tuple[ssl.SSLSocket, bytes, ssl.SSLSession | None, bool]:
    """open_tls, plus the ticketed session the verdict wait saw (None if it read none) and whether the
    server gave a verdict on our certificate (False: a TLS 1.3 server with no ticket and no alert)."""
    raw = connect(target, timeouts, allowed, deadline)
    phase = "during the TLS handshake"
    try:
        sock = context.wrap_socket(raw, server_hostname=target.sni, do_handshake_on_connect=False,
                                   session=reuse.session(context, target))
    except (OSError, ValueError) as e:
        raw.close()
        raise remote_error(e, target, phase, deadline) from e
    try:
        deadline.watch(sock)
        # The handshake is bounded as a whole (not per read) by the handshake timeout and the deadline.
        answer = _timed_handshake(sock, deadline.timeout(timeouts.handshake))
        early, session, verdict = b"", None, True
        if await_verdict:
            budget = deadline.timeout(timeouts.handshake)
            expected = ticket_issuers.expected(target)
            early, session, verdict = _await_verdict(sock, budget, verdict_wait(answer, budget, expected))
            if session is not None or not verdict:  # a ticket came, or the wait ended with neither
                ticket_issuers.learn(target, session is not None)
        sock.settimeout(deadline.timeout(timeouts.read))
        return sock, early, session, verdict
    except BaseException as e:
        sock.close()
        if isinstance(e, (OSError, ValueError, RemoteError)):
            error = remote_error(e, target, phase, deadline)
            if error is e:
                raise
            raise error from e
        raise


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# --- the three calls ---------------------------------------------------------------------

def handshake(context: ssl.SSLContext, target: targets.Target, client_fingerprint: str,
              timeouts: Timeouts = Timeouts(), allowed: str | Iterable[str] | None = None) -> dict[str, object]:
    """Connect and shake hands (waiting for a TLS 1.3 server's verdict on our certificate)."""
    started = time.perf_counter()
    deadline = Deadline(timeouts.total)
    try:
        sock, _, session, verdict = _open_tls(context, target, timeouts, allowed, True, deadline)
        try:
            if deadline.passed():
                raise deadline.error(target, "during the TLS handshake")
            info = tls_info(sock, context, target, client_fingerprint)
            reuse.remember(context, target, sock, session)
        finally:
            deadline.close()
            sock.close()
    finally:
        deadline.close()
    info.elapsed_ms = _elapsed_ms(started)
    return {"ok": True, **info.to_dict(), "note": HANDSHAKE_NOTE if verdict else NO_VERDICT_NOTE}


def read_line(sock: socket.socket, limit: int) -> bytes:
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


def echo(context: ssl.SSLContext, target: targets.Target, client_fingerprint: str, send: str | bytes,
         timeouts: Timeouts = Timeouts(), allowed: str | Iterable[str] | None = None) -> dict[str, object]:
    """Write `send` on a raw mTLS socket; read until newline, close, 64 KiB or read timeout."""
    started = time.perf_counter()
    payload = send.encode("utf-8") if isinstance(send, str) else bytes(send)
    deadline = Deadline(timeouts.total)
    try:
        # No verdict wait: a TLS 1.3 rejection surfaces on the first read, mapped the same way.
        sock, _, _, _ = _open_tls(context, target, timeouts, allowed, False, deadline)
        try:
            info = tls_info(sock, context, target, client_fingerprint)
            received = exchange_line(sock, payload, target, deadline)
            reuse.remember(context, target, sock)
        finally:
            deadline.close()
            sock.close()
    finally:
        deadline.close()
    info.elapsed_ms = _elapsed_ms(started)
    return {"ok": True, "received": received.decode("utf-8", "replace"), "tls": info.to_dict()}


def exchange_line(sock: ssl.SSLSocket, payload: bytes, target: targets.Target, deadline: Deadline) -> bytes:
    """Send `payload` on a watched socket and read one line back (read_line), by the deadline."""
    version = sock.version()  # None once the peer has gone: read it first
    try:
        sock.sendall(payload)
        received = read_line(sock, MAX_BODY)
    except OSError as e:
        raise after_handshake_error(sock, e, target, deadline, version) from e
    if deadline.passed():  # the watcher cut the line short: a partial line is no answer
        raise deadline.error(target, "after the TLS handshake")
    if not received and _unticketed_tls13(sock, version):
        raise RemoteError("connection_reset", f"{_SILENT_CLOSE}, after the TLS handshake with {target}.")
    return received


def _unticketed_tls13(sock: ssl.SSLSocket | None, version: str | None) -> bool:
    """A TLS 1.3 (`version`) connection on which the server sent no session ticket (no sign it took our certificate)."""
    if sock is None or version != "TLSv1.3" or sock.session_reused:
        return False
    session = sock.session
    return session is None or not session.has_ticket


def _hung_up(exc: BaseException) -> bool:
    """True if `exc` (or what it wraps) says the peer went away: a close or a reset, however it surfaced.

    The same hang-up reads differently by timing and interpreter: EOF on a read, a reset or a
    broken pipe on a write or a read, and on 3.11/3.12 (the errno lost) SSLEOFError for a write
    after the peer's reset. The verdict must not depend on which of these came.
    """
    cause = _root_cause(exc)
    return isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError,
                              ssl.SSLZeroReturnError)) or (  # ConnectionResetError covers RemoteDisconnected
        isinstance(cause, ssl.SSLError) and getattr(cause, "reason", None) == "UNEXPECTED_EOF_WHILE_READING")


def _hung_up_in_verdict_wait(sock: ssl.SSLSocket) -> RemoteError:
    """The verdict on a TLS 1.3 peer that hung up while we waited for it: a refusal, unless a ticket came first."""
    if _unticketed_tls13(sock, "TLSv1.3"):
        return RemoteError("connection_reset", f"{_SILENT_CLOSE}.")
    # The ticket and the close can arrive in one read: the ticket still says it took our certificate.
    return RemoteError("connection_reset", "The peer closed the connection right after the TLS 1.3 handshake, "
                       "after a session ticket: it accepted the client certificate, then hung up.")


def _queued_alert(sock: ssl.SSLSocket | None) -> ssl.SSLError | None:
    """The peer's alert about our certificate, if one already waits on `sock` (it says why the peer hung up)."""
    if sock is None:
        return None
    try:
        sock.setblocking(False)
        sock.recv(1)
    except ssl.SSLError as queued:
        if getattr(queued, "reason", None) in _REJECTED or getattr(queued, "reason", None) == _INTERNAL_ERROR:
            return queued
    except (OSError, ValueError):
        pass
    return None


def after_handshake_error(sock: ssl.SSLSocket | None, exc: BaseException, target: targets.Target,
                          deadline: Deadline | None = None, version: str | None = None) -> DyncertError:
    """Map a failure after the handshake, preferring an alert already queued (it says why the peer hung up).

    `version`: the TLS version read before the exchange; a TLS 1.3 peer that hung up (a close or,
    when our write crossed its close, a reset) with no ticket and no alert most likely refused us.
    """
    if deadline is not None and deadline.passed():
        return deadline.error(target, "after the TLS handshake")
    if _hung_up(exc):
        queued = _queued_alert(sock)
        if queued is not None:
            return remote_error(queued, target, "after the TLS handshake")
        if _unticketed_tls13(sock, version):
            return RemoteError("connection_reset", f"{_SILENT_CLOSE}, after the TLS handshake with {target}.")
    return remote_error(exc, target, "after the TLS handshake")


class _MTLSConnection(urllib3.connection.HTTPConnection):
    """urllib3 HTTP/1.1 connection over a socket from open_tls (TLS done by us, not by urllib3).

    urllib3's HTTPSConnection writes into the SSLContext it is given (verify_mode, ALPN, and
    check_hostname when assert_hostname is set; urllib3 issue #4961). Our contexts are cached
    and shared between threads, so urllib3 only gets the finished socket: it does HTTP framing,
    we do connect (to the checked address), handshake and verification.
    """

    def __init__(self, *args: Any, dyncert_open: Callable[[], ssl.SSLSocket] | None = None,
                 **kwargs: Any) -> None:  # Any: urllib3's own arguments, passed through
        super().__init__(*args, **kwargs)
        self._dyncert_open = cast(Callable[[], ssl.SSLSocket], dyncert_open)  # _make_pool always gives one
        self.tls_sock: ssl.SSLSocket | None = None
        self.tls_facts: TLSInfo | None = None
        self.tls_version: str | None = None
        self.last_words: tuple[ssl.SSLError | None, bool] | None
        self.tls_sock = self.tls_facts = self.tls_version = None
        self.session_kept = self.answered = False

    def _new_conn(self) -> ssl.SSLSocket:
        # Kept: http.client drops `sock` from a connection that will close, before we read TLS facts.
        # The facts and the kept session belong to the socket: a reconnect starts them afresh.
        self.tls_facts, self.session_kept, self.answered, self.last_words = None, False, False, None
        self.tls_sock = self._dyncert_open()
        self.tls_version = self.tls_sock.version()
        return self.tls_sock

    def close(self) -> None:
        # http.client closes the connection the moment a read fails: what the socket still holds
        # (an alert, whether a ticket came) is read first, for the error getresponse() raises.
        if self.tls_sock is not None and not self.answered and sys.exc_info()[1] is not None:
            self.last_words = (_queued_alert(self.tls_sock), _unticketed_tls13(self.tls_sock, self.tls_version))
        super().close()

    def _words(self, reading: bool = True) -> tuple[ssl.SSLError | None, bool]:
        """(alert waiting, no ticket on TLS 1.3) of this connection's socket, or as it was when closed.

        `reading` False: nothing was read yet, so tickets may still wait unread (no ticket is no sign).
        """
        if self.last_words is not None:
            return self.last_words
        return _queued_alert(self.tls_sock), reading and _unticketed_tls13(self.tls_sock, self.tls_version)

    # A TLS 1.3 server refuses our certificate after our handshake is done: its alert may be
    # waiting while the write of the request fails (EOF, reset, broken pipe). Read it here,
    # before urllib3 closes the socket, so the error says what the peer said.
    def request(self, *args: Any, **kwargs: Any) -> None:  # Any: urllib3's request arguments
        try:
            return super().request(*args, **kwargs)
        except (BrokenPipeError, ConnectionResetError):
            raise  # urllib3 goes on to read the response: an alert (or a reply sent before closing) comes there
        except OSError as e:
            if _hung_up(e):  # the same hang-up as a broken pipe (SSLEOFError: 3.11/3.12 lose a reset's errno)
                raise BrokenPipeError(errno.EPIPE, f"The peer hung up during our write ({e})") from e
            queued, _ = self._words(reading=False)
            if queued is not None:
                raise queued from e
            raise

    def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]  # as urllib3's own
        try:
            response = super().getresponse()
        except OSError as e:
            self._raise_last_words(e)
            raise
        self.answered = True
        return response

    def _raise_last_words(self, error: OSError) -> None:
        """Raise what the peer said before `error` (an alert), or that it said nothing after our certificate."""
        if self.answered:
            return  # a kept-alive connection the server closed meanwhile: nothing to say about us
        queued, unticketed = self._words()
        if queued is not None:
            raise queued from error
        if unticketed and _hung_up(error):
            raise RemoteError("connection_reset", f"{_SILENT_CLOSE}, during the HTTPS request with "
                              f"{self.host}:{self.port}.") from error


class _MTLSPool(urllib3.HTTPConnectionPool):
    """Keep-alive connections from open_tls to one target, kept on one context (see reuse.py)."""

    ConnectionCls = _MTLSConnection

    def _get_conn(self, timeout: float | None = None) -> _MTLSConnection:
        # A kept-alive connection serves this call now: the call's deadline watches its socket.
        conn = cast(_MTLSConnection, super()._get_conn(timeout))  # our ConnectionCls
        deadline = getattr(_local, "deadline", None)
        if deadline is not None and conn.sock is not None:
            deadline.watch(conn.sock)
        return conn


POOL_SIZE = 4  # idle keep-alive connections kept per identity and peer


def _host_header(target: targets.Target) -> str:
    host = f"[{target.sni}]" if ":" in target.sni else target.sni
    return host if target.port == 443 else f"{host}:{target.port}"


def _make_pool(context: ssl.SSLContext, target: targets.Target, timeouts: Timeouts) -> _MTLSPool:
    """A pool whose new connections are opened (checked address, handshake, verification) by us."""
    def open_connection() -> ssl.SSLSocket:
        sock, _ = open_tls(context, target, timeouts, deadline=getattr(_local, "deadline", None))
        return sock

    return _MTLSPool(target.host, target.port, maxsize=POOL_SIZE, block=False, retries=False,
                     timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
                     dyncert_open=open_connection)


def check_request(method: object, path: object, headers: object) -> None:
    """Refuse (InputError invalid_request) what must not reach a peer: odd methods, control characters,
    framing and hop-by-hop headers, one header twice. Checked before anything is connected or sent."""
    if method not in METHODS:
        raise InputError("invalid_request", f"Expected a method among {', '.join(METHODS)}, found {method!r}.")
    if not isinstance(path, str) or not path.startswith("/"):
        raise InputError("invalid_request", f"Expected a path starting with '/', found {path!r}.")
    if not path.isascii() or _CONTROL.search(path) or " " in path:
        raise InputError("invalid_request", "Expected a path of visible ASCII characters (percent-encode the "
                         "rest); found a space, a control character or a non-ASCII character.")
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise InputError("invalid_request", "Expected 'headers' as an object of header names to string values.")
    seen = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InputError("invalid_request", f"Expected header names made of RFC 9110 token characters, "
                             f"found {name!r}.")
        lower = name.lower()
        if lower in FORBIDDEN_HEADERS or lower.startswith("proxy-"):
            raise InputError("invalid_request", f"The header {name!r} frames the message or is hop-by-hop: "
                             "the request sets it itself, so it cannot be given.")
        if lower in seen:
            raise InputError("invalid_request", f"Expected each header once, found {name!r} twice (names are "
                             "case-insensitive).")
        seen.add(lower)
        if not isinstance(value, str) or _CONTROL.search(value):
            raise InputError("invalid_request", f"Expected the value of {name!r} as a string without control "
                             "characters (no line breaks, tabs or NUL).")
        try:
            value.encode("latin-1")  # what HTTP/1.1 header bytes can carry
        except UnicodeEncodeError:
            raise InputError("invalid_request", f"Expected the value of {name!r} in ISO-8859-1 "
                             "(HTTP/1.1 header bytes); found characters beyond it.") from None


def https_request(context: ssl.SSLContext, target: targets.Target, client_fingerprint: str, method: str = "GET",
                  path: str = "/", headers: dict[str, str] | None = None, body: str | bytes = "",
                  timeouts: Timeouts = Timeouts(), allowed: str | Iterable[str] | None = None) -> dict[str, object]:
    """One HTTP/1.1 request over a kept-alive mTLS connection; body text capped at 64 KiB (`truncated`)."""
    started = time.perf_counter()
    check_request(method, path, headers)
    if isinstance(body, str):
        body = body.encode("utf-8")
    if allowed is not None:
        targets.check_allowed(target, allowed)
    send_headers = {"Host": _host_header(target), "User-Agent": "dyncert"}
    send_headers.update(headers or {})
    kept = reuse.pool(context, (target, timeouts), lambda: _make_pool(context, target, timeouts))
    pool = kept or _make_pool(context, target, timeouts)
    response, reusable = None, False
    deadline = _local.deadline = Deadline(timeouts.total)
    try:
        try:
            response = pool.urlopen(method, path, body=body or None, headers=send_headers, retries=False,
                                    redirect=False, preload_content=False, release_conn=False,
                                    timeout=urllib3.Timeout(connect=deadline.timeout(timeouts.connect),
                                                            read=deadline.timeout(timeouts.read)))
            # Read TLS facts before the body: a fully read response goes back to the pool at once.
            # They hold for the connection's life: read (and the session kept) once per connection.
            conn = cast(_MTLSConnection, response.connection)  # our pool's (release_conn=False keeps it)
            tls_sock = cast(ssl.SSLSocket, conn.tls_sock)  # it answered: _new_conn gave it a socket
            if conn.tls_facts is None:
                conn.tls_facts = tls_info(tls_sock, context, target, client_fingerprint)
            if not conn.session_kept:
                conn.session_kept = reuse.remember(context, target, tls_sock)
            info = dataclasses.replace(conn.tls_facts, client_fingerprint_sha256=client_fingerprint)
            data = response.read(MAX_BODY + 1) if method != "HEAD" else b""
            if deadline.passed():
                raise deadline.error(target, "during the HTTPS request")
        except (urllib3.exceptions.HTTPError, OSError, ValueError, RemoteError) as e:
            # A TLS 1.3 rejection of our certificate arrives here, as an alert on the first read.
            error = remote_error(e, target, "during the HTTPS request", deadline)
            if error is e:
                raise
            raise error from e
        truncated = len(data) > MAX_BODY
        reusable = not truncated  # an unread rest would have to be drained first: not worth it
        result = {"ok": True, "status": response.status, "headers": dict(response.headers),
                  "body": data[:MAX_BODY].decode("utf-8", "replace"), "truncated": truncated}
    finally:
        deadline.close()  # before the connection goes back to the pool
        _local.deadline = None
        if response is not None:
            if not reusable and response.connection is not None:
                response.connection.close()
            response.release_conn()
        if kept is None:
            pool.close()
    info.elapsed_ms = _elapsed_ms(started)
    result["tls"] = info.to_dict()
    return result
