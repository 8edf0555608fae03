"""Connect to a checked address, shake hands within the deadline, and wait for a TLS 1.3 server's verdict."""

import collections
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from typing import cast

from .. import targets
from ..errors import RemoteError
from ._classify import _hung_up, _hung_up_in_verdict_wait, remote_error
from ._deadline import Deadline, Timeouts

MAX_BODY = 64 * 1024
# A TLS 1.3 server that issues no session tickets gives no positive sign that it accepted our
# certificate. Its rejection alert leaves it about a round trip after our Finished, plus its time to
# check our chain. The handshake measures the server's answer time (our ClientHello to its first
# flight: one round trip plus its own handshake work), and handshake() waits VERDICT_FACTOR times
# that, within [VERDICT_FLOOR, TICKET_WAIT] seconds, instead of a fixed TICKET_WAIT.
TICKET_WAIT = 0.5
VERDICT_FLOOR = 0.010  # a busy machine deschedules the server for whole time slices (4 ms): 1 ms missed 1 refusal in ~500
VERDICT_FACTOR = 3.0  # the verdict needs about what its first flight needed: three times that is the margin


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
