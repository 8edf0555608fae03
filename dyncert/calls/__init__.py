"""Outbound mTLS calls (handshake, HTTPS request, raw echo) -> result records; failures -> RemoteError codes.

The calls themselves live here; each concern they use has its own private module:

    _deadline   Timeouts and the Deadline a watcher thread enforces on the socket
    _facts      TLSInfo: version, cipher, the peer certificate's names and dates
    _classify   socket/ssl/urllib3 failures -> RemoteError codes (also what a peer said before hanging up)
    _connect    a checked address, the timed handshake, and the TLS 1.3 verdict wait
    _http       request checks, and the urllib3 connection and pool over our own sockets
"""

import dataclasses
import socket
import ssl
import time
from collections.abc import Iterable
from typing import cast

import urllib3

from .. import reuse, targets
from ..compat import Source, match_hostname, wrap_socket
from ..errors import DyncertError, RemoteError
from ._classify import (
    _SILENT_CLOSE, HTTP_REFUSALS, _unticketed_tls13, after_handshake_error, http_refusal, remote_error)
from ._connect import (  # _TicketIssuers: for the tests that look inside the verdict wait
    MAX_BODY, TICKET_WAIT, VERDICT_FACTOR, VERDICT_FLOOR, _await_verdict, _TicketIssuers, _timed_handshake, connect,
    ticket_issuers, verdict_wait)
from ._deadline import Deadline, Timeouts, _local
from ._facts import PeerFacts, TLSInfo, peer_facts, tls_info
from ._http import FORBIDDEN_HEADERS, METHODS, _host_header, _MTLSConnection, _MTLSPool, check_request

__all__ = [
    "FORBIDDEN_HEADERS", "HANDSHAKE_NOTE", "MAX_BODY", "METHODS", "NO_VERDICT_NOTE", "POOL_SIZE", "TICKET_WAIT",
    "VERDICT_FACTOR", "VERDICT_FLOOR", "Deadline", "PeerFacts", "TLSInfo", "Timeouts", "after_handshake_error",
    "check_request", "compat_echo", "connect", "echo", "exchange_line", "handshake", "https_request", "open_tls",
    "peer_facts", "read_line", "remote_error", "ticket_issuers", "tls_info", "verdict_wait",
    "HTTP_REFUSALS", "http_refusal",  # issue 19.1: answers that refuse a client certificate at the HTTP layer
]

# A handshake cannot see a refusal that comes later: nginx completes it, then answers HTTP 400.
HANDSHAKE_NOTE = ("The TLS handshake succeeded. Some servers (nginx) accept any client certificate in the "
                  "handshake and refuse it only when a request arrives (HTTP 400): send a request to be sure.")
NO_VERDICT_NOTE = ("The server sent neither a session ticket nor an alert after our certificate (a TLS 1.3 server "
                   "without session tickets): accepted as far as TLS can tell. Some servers (nginx) refuse a "
                   "client certificate only when a request arrives (HTTP 400): send a request to be sure.")


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


def compat_echo(target: targets.Target, send: str | bytes, keyfile: Source, certfile: Source,
                ca_certs: Source | None, client_fingerprint: str, timeouts: Timeouts = Timeouts(),
                allowed: str | Iterable[str] | None = None) -> dict[str, object]:
    """echo, with the TLS done the python27 sample's way: wrap_socket(keyfile, certfile, ca_certs), match_hostname.

    The TCP connect is still ours (a checked address, within the deadline); `keyfile` and
    `certfile` may be file-like, as the seed passed StringIO objects.
    """
    started = time.perf_counter()
    payload = send.encode("utf-8") if isinstance(send, str) else bytes(send)
    deadline = Deadline(timeouts.total)
    sock = connect(target, timeouts, allowed, deadline)  # a checked address only
    try:
        deadline.watch(sock)  # the handshake below reads through this same file descriptor
        # do_handshake() is bounded as a whole by the socket timeout; reads by the deadline's watcher.
        sock.settimeout(deadline.timeout(timeouts.handshake))
        # server_hostname sends SNI, which python27's sample predates; many servers need it now.
        tls = wrap_socket(sock, keyfile=keyfile, certfile=certfile, cert_reqs=ssl.CERT_REQUIRED, ca_certs=ca_certs,
                          server_hostname=target.sni)
        sock = tls
        deadline.watch(tls)
        match_hostname(tls.getpeercert(), target.sni)
    except (OSError, ValueError) as e:
        deadline.close()
        sock.close()
        if isinstance(e, DyncertError):
            raise
        raise remote_error(e, target, "during the TLS handshake", deadline) from e
    try:
        info = tls_info(tls, tls.context, target, client_fingerprint)
        received = exchange_line(tls, payload, target, deadline)
    finally:
        deadline.close()
        tls.close()
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


POOL_SIZE = 4  # idle keep-alive connections kept per identity and peer


def _make_pool(context: ssl.SSLContext, target: targets.Target, timeouts: Timeouts) -> _MTLSPool:
    """A pool whose new connections are opened (checked address, handshake, verification) by us."""
    def open_connection() -> ssl.SSLSocket:
        sock, _ = open_tls(context, target, timeouts, deadline=getattr(_local, "deadline", None))
        return sock

    return _MTLSPool(target.host, target.port, maxsize=POOL_SIZE, block=False, retries=False,
                     timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
                     dyncert_open=open_connection)


def https_request(context: ssl.SSLContext, target: targets.Target, client_fingerprint: str, method: str = "GET",
                  path: str = "/", headers: dict[str, str] | None = None, body: str | bytes = "",
                  timeouts: Timeouts = Timeouts(), allowed: str | Iterable[str] | None = None) -> dict[str, object]:
    """One HTTP/1.1 request over a kept-alive mTLS connection; body text capped at 64 KiB (`truncated`).

    An answer that refuses the client certificate (HTTP_REFUSALS: nginx's 400, 495/496) raises
    RemoteError peer_rejected_certificate; any other status is returned as it is.
    """
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
        refusal = http_refusal(response.status, data, target)
        if refusal is not None:  # the handshake passed, the answer refuses our certificate (nginx's 400)
            raise refusal
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
