"""HTTP/1.1 over our own mTLS sockets: request checks, and the urllib3 connection and pool that only frame."""

import errno
import re
import ssl
import sys
from collections.abc import Callable
from typing import Any, cast

import urllib3

from .. import targets
from ..errors import InputError, RemoteError
from ._classify import _SILENT_CLOSE, _hung_up, _queued_alert, _unticketed_tls13
from ._deadline import _local
from ._facts import TLSInfo

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# Framing and hop-by-hop headers are ours to write: a caller's Content-Length, Transfer-Encoding
# or second Host is the shape of request smuggling (RFC 9112 6.1, RFC 9110 7.6.1).
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
                               "trailer", "keep-alive"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.1 field-name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: line breaks and worse, never forwarded


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


def _host_header(target: targets.Target) -> str:
    host = f"[{target.sni}]" if ":" in target.sni else target.sni
    return host if target.port == 443 else f"{host}:{target.port}"


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
