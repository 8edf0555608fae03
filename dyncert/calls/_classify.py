"""Socket, ssl and urllib3 failures -> RemoteError with a stable code (and what the peer said before hanging up)."""

import http.client
import re
import socket
import ssl

import urllib3

from .. import targets
from ..errors import DyncertError, InputError, RemoteError
from ._deadline import Deadline

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

# Answers in which a peer refuses our client certificate at the HTTP layer, after a handshake it
# completed (it checks the certificate only once a request arrives): (statuses, pattern the body
# must contain or None, who answers so). Anything else is an answer: ok, with its status.
HTTP_REFUSALS: tuple[tuple[frozenset[int], re.Pattern[str] | None, str], ...] = (
    (frozenset({400}), re.compile(r"The SSL certificate error|No required SSL certificate was sent"),
     "nginx's answer to a client certificate it refused or did not get"),
    (frozenset({495}), None, "status 495, SSL Certificate Error"),
    (frozenset({496}), None, "status 496, SSL Certificate Required"),
    # Apache's SSLVerifyClient inside a <Location>, over TLS 1.3, to a client offering no post-handshake auth.
    (frozenset({403}), re.compile(r"Cannot perform Post-Handshake Authentication"),
     "Apache asks for the client certificate after the TLS 1.3 handshake, and this connection did not offer it"),
    # What Apache (ErrorDocument) or HAProxy (deny ... string) say when configured to name the reason (README).
    (frozenset({401, 403}), re.compile(r"client certificate", re.IGNORECASE),
     "the answer names the client certificate"),
)
_HTTP_REFUSAL_HINT = ("The TLS handshake succeeded: this server checks the client certificate only when a request "
                      "arrives, and refused it. Check that it trusts the CA that issued this client certificate "
                      "(and that the full chain, leaf and intermediates, was uploaded), that the certificate is not "
                      "expired or revoked in its view, and read its error log.")
_PHA_HINT = ("dyncert's contexts offer post-handshake authentication; a context made elsewhere needs "
             "post_handshake_auth = True, or TLS 1.2 (where Apache renegotiates instead).")
_SCANNED = 4096  # the refusal pages are short: markers are looked for in the body's start only

_PROTOCOL = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
             "WRONG_SSL_VERSION", "TLSV1_ALERT_INAPPROPRIATE_FALLBACK", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"}


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


def first_line(body: bytes) -> str:
    """The body's first line of text (an HTML page's title, its tags dropped), at most 120 characters."""
    text = body[:_SCANNED].decode("utf-8", "replace")
    text = re.sub(r"<!DOCTYPE[^>]*>|<[^>]*>", "\n", text)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= 120 else line[:119] + "\u2026"


def http_refusal(status: int, body: bytes, target: targets.Target) -> RemoteError | None:
    """peer_rejected_certificate when the HTTP answer refuses our client certificate (HTTP_REFUSALS), else None."""
    text = body[:_SCANNED].decode("utf-8", "replace")
    for statuses, pattern, who in HTTP_REFUSALS:
        found = pattern.search(text) if pattern is not None else None
        if status not in statuses or (pattern is not None and found is None):
            continue
        line = first_line(body)
        said = repr(line) if line else "(no body)"
        if found is not None and found.group(0) not in line:  # the marker is further down the page
            said += f", saying {found.group(0)!r}"
        hint = _PHA_HINT if "Post-Handshake" in (found.group(0) if found else "") else _HTTP_REFUSAL_HINT
        error = RemoteError("peer_rejected_certificate", f"The peer refused our client certificate at the HTTP layer: "
                            f"it answered HTTP {status} {said} ({who}), during the HTTPS request with {target}. "
                            f"{hint}")
        error.hint = hint  # what to check, for the admin page and the CLI
        return error
    return None
