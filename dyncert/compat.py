"""The App Engine Python 2.7 calls, on Python 3: wrap_socket with in-memory key/cert, and match_hostname.

The seed snippet keeps working with only its import changed:

    from dyncert import compat as ssl_compat
    sock = ssl_compat.wrap_socket(sock, keyfile=StringIO(record.key_str), certfile=StringIO(record.cert),
                                  cert_reqs=ssl.CERT_REQUIRED, ca_certs=CA_FILE)
    ssl_compat.match_hostname(sock.getpeercert(), 'a.hostname.com')
"""

import collections
import datetime
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import threading
from collections.abc import Hashable, Mapping
from typing import Any, Protocol, TypeAlias, cast

from . import context as _context
from .errors import CertificateError, InputError
from .identity import ClientIdentity

# Parsing and checking an RSA key costs ~40 ms: contexts are cached by a digest of the PEM they
# came from, with the certificate's validity window. Never the key bytes or the parsed identity:
# the context already holds the key (inside OpenSSL), and a deleted identity leaves no copy here.
_CONTEXT_CACHE_SIZE = 256
# The digest of key bytes is keyed per process: a cache key is no stable oracle for guessing a key.
_DIGEST_KEY = os.urandom(32)
# Python 2.7 protocol names we refuse: TLS 1.0 and 1.1 are deprecated (RFC 8996).
_OLD_PROTOCOLS = {"PROTOCOL_TLSv1": "TLSv1", "PROTOCOL_TLSv1_1": "TLSv1.1", "PROTOCOL_SSLv2": "SSLv2",
                  "PROTOCOL_SSLv3": "SSLv3"}
_NEGOTIATE = {"PROTOCOL_TLS", "PROTOCOL_SSLv23", "PROTOCOL_TLS_CLIENT"}


class Readable(Protocol):
    """A file-like object as 2.7's wrap_socket took it (StringIO, an open file)."""

    def read(self) -> str | bytes: ...


# keyfile, certfile, ca_certs: a path, PEM text or bytes, or a file-like object.
Source: TypeAlias = str | bytes | os.PathLike[str] | Readable
# A cached entry: a bare context (no certfile), or a context with its certificate's validity window.
_Entry: TypeAlias = ssl.SSLContext | tuple[ssl.SSLContext, datetime.datetime, datetime.datetime]


class _LRU:
    """A small thread-safe LRU mapping."""

    def __init__(self, maxsize: int) -> None:
        self._items: collections.OrderedDict[Hashable, _Entry]
        self.maxsize, self._lock, self._items = maxsize, threading.Lock(), collections.OrderedDict()

    def get(self, key: Hashable) -> _Entry | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: _Entry) -> _Entry:
        with self._lock:
            self._items.setdefault(key, value)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
            return self._items[key]


_contexts = _LRU(_CONTEXT_CACHE_SIZE)


def _read_source(value: object, what: str) -> bytes:
    """PEM bytes from a file-like object (read()), PEM text/bytes, or a path."""
    if hasattr(value, "read"):
        value = value.read()
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if b"-----BEGIN" in value:
            return value
        value = os.fsdecode(value)
    if isinstance(value, str) and "-----BEGIN" in value:
        return value.encode("utf-8")
    if isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as e:
            code = {"ca_certs": "invalid_ca_certs", "keyfile": "invalid_key"}.get(what, "invalid_certificate")
            raise InputError(code, f"Expected {what} as PEM text, a file-like object or a readable path; "
                             f"could not read {os.fspath(value)!r} ({e.strerror}).") from None
    raise InputError("invalid_certificate", f"Expected {what} as PEM text, a file-like object or a path, "
                     f"found {type(value).__name__}.")


def _cached_context(certfile: object, keyfile: object, trust: _context.CaCerts | None, version: ssl.TLSVersion | None,
                    check_hostname: bool, verify: bool, ciphers: str | None) -> ssl.SSLContext:
    """The context for these sources and options: cached (context + validity) by content, validity re-checked."""
    if certfile is None:
        key: Hashable = (None, _trust_id(trust), version, check_hostname, verify, ciphers)
        ctx = _contexts.get(key)
        # Keys without a certificate digest hold bare contexts (below, the others hold tuples).
        return cast(ssl.SSLContext, ctx if ctx is not None else
                    _contexts.put(key, _client_context(None, trust, version, check_hostname, verify, ciphers)))
    cert_pem = _read_source(certfile, "certfile")
    key_pem = _read_source(keyfile, "keyfile") if keyfile is not None else cert_pem
    digest = hmac.digest(_DIGEST_KEY, cert_pem + b"\0" + key_pem, "sha256")
    key = (digest, _trust_id(trust), version, check_hostname, verify, ciphers)
    entry = _contexts.get(key)
    if entry is not None:
        ctx, not_before, not_after = cast(tuple[ssl.SSLContext, datetime.datetime, datetime.datetime], entry)
        now = datetime.datetime.now(datetime.timezone.utc)
        if not not_before <= now <= not_after:
            ClientIdentity.from_pem(cert_pem, key_pem, now=now, check_purpose=False)  # the precise expiry error
        return ctx
    # No purpose check, as in the seed: the server decides (stored identities passed it at upload, and one
    # stored before the check must keep working here as it does in handshake and request).
    identity = ClientIdentity.from_pem(cert_pem, key_pem, check_purpose=False)
    ctx = _client_context(identity, trust, version, check_hostname, verify, ciphers)
    return cast(tuple[ssl.SSLContext, datetime.datetime, datetime.datetime],
                _contexts.put(key, (ctx, identity.not_before, identity.not_after)))[0]


def _tls_version(ssl_version: object) -> ssl.TLSVersion | None:
    """Python 2.7-style ssl_version -> None (negotiate 1.2+) or an ssl.TLSVersion."""
    if ssl_version is None:
        return None
    name = getattr(ssl_version, "name", None)
    if isinstance(ssl_version, ssl.TLSVersion) or isinstance(ssl_version, str):
        return _context.parse_tls_version(ssl_version)
    if name in _NEGOTIATE:
        return None
    if name == "PROTOCOL_TLSv1_2":
        return ssl.TLSVersion.TLSv1_2
    if name in _OLD_PROTOCOLS:
        raise InputError("unsupported_tls_version", f"Expected TLS 1.2 or newer (PROTOCOL_TLS, PROTOCOL_TLSv1_2, "
                         f"ssl.TLSVersion.TLSv1_3), found {_OLD_PROTOCOLS[name]}, which is deprecated (RFC 8996).")
    return _context.parse_tls_version(ssl_version)


def _plain_context(ca_certs: _context.CaCerts | None, version: ssl.TLSVersion | None) -> ssl.SSLContext:
    """A verifying client context with no client certificate (as 2.7's wrap_socket without certfile)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.0 and 1.1 are deprecated (RFC 8996)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    _context.load_trust(ctx, ca_certs)
    return ctx


def _trust_id(ca_certs: _context.CaCerts | None) -> str | bytes | None:
    """Cache-key part for ca_certs (content hash of PEM, or the path)."""
    if ca_certs is None:
        return None
    if isinstance(ca_certs, bytes) and b"-----BEGIN" in ca_certs:
        return hashlib.sha256(ca_certs).hexdigest()
    return os.fspath(ca_certs)


def _client_context(identity: ClientIdentity | None, ca_certs: _context.CaCerts | None, version: ssl.TLSVersion | None,
                    check_hostname: bool, verify: bool, ciphers: str | None) -> ssl.SSLContext:
    """The shared cached context when nothing differs from its defaults, else a new variant."""
    if identity is not None and check_hostname and verify and ciphers is None:
        return _context.cached_client_context(identity, ca_certs, version)
    if identity is not None:
        ctx = _context.client_context(identity, ca_certs, version)
    else:
        ctx = _plain_context(ca_certs, version)
    # Adjusted before it is shared: cached contexts are never written to afterwards.
    ctx.check_hostname = check_hostname
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers is not None:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError as e:
            raise InputError("invalid_request", f"Expected an OpenSSL cipher list, found {ciphers!r}, "
                             "which selects no cipher.") from e
    return ctx


def wrap_socket(sock: socket.socket, keyfile: Source | None = None, certfile: Source | None = None,
                server_side: bool = False, cert_reqs: int = ssl.CERT_REQUIRED,
                ssl_version: ssl._SSLMethod | ssl.TLSVersion | str | None = None, ca_certs: Source | None = None,
                server_hostname: str | None = None, do_handshake_on_connect: bool = True,
                suppress_ragged_eofs: bool = True, ciphers: str | None = None) -> ssl.SSLSocket:
    """Python 2.7 App Engine's ssl.wrap_socket: keyfile/certfile/ca_certs may be paths, PEM or file-like.

    Differences from 2.7, all on the safe side: TLS 1.2 is the minimum; cert_reqs CERT_REQUIRED
    (or CERT_OPTIONAL, the same for a client) needs ca_certs; with server_hostname the hostname
    is checked in the handshake, without it the chain is still verified and the hostname is
    left to match_hostname() as in the seed. Client side only (server_side=True raises).
    """
    if server_side:
        raise NotImplementedError("dyncert.compat.wrap_socket is for clients; for a server, use "
                                  "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) with certificate files.")
    if keyfile is not None and certfile is None:
        raise InputError("invalid_certificate", "Expected certfile along with keyfile, found only keyfile.")
    verify = cert_reqs != ssl.CERT_NONE
    if verify and ca_certs is None:
        raise InputError("invalid_ca_certs", "Expected ca_certs (a path, PEM text or a file-like object) with "
                         "cert_reqs=CERT_REQUIRED: the peer cannot be verified without trusted CA certificates.")
    version = _tls_version(ssl_version)
    trust = _read_source(ca_certs, "ca_certs") if ca_certs is not None and hasattr(ca_certs, "read") else ca_certs
    if isinstance(trust, str) and "-----BEGIN" in trust:
        trust = trust.encode("utf-8")
    check_hostname = verify and server_hostname is not None
    ctx = _cached_context(certfile, keyfile, trust, version, check_hostname, verify, ciphers)
    return ctx.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=do_handshake_on_connect,
                           suppress_ragged_eofs=suppress_ragged_eofs)


# --- match_hostname (removed from ssl in Python 3.12) ----------------------------------------

def _dnsname_match(dn: str, hostname: str) -> bool:
    """RFC 6125 6.4.3 matching of one certificate name; raises CertificateError for unsupported wildcards."""
    if not dn:
        return False
    dn, hostname = dn.lower(), hostname.lower()
    # An absolute name (trailing dot) is the same name: compare without it.
    dn = dn[:-1] if dn.endswith(".") else dn
    hostname = hostname[:-1] if hostname.endswith(".") else hostname
    wildcards = dn.count("*")
    if not wildcards:
        return dn == hostname
    if wildcards > 1:
        raise CertificateError(f"too many wildcards in certificate DNS name: {dn!r}.")
    leftmost, sep, remainder = dn.partition(".")
    if "*" in remainder:
        raise CertificateError(f"wildcard can only be present in the leftmost label: {dn!r}.")
    if not sep:
        raise CertificateError(f"sole wildcard without additional labels are not support: {dn!r}.")
    if leftmost != "*":
        raise CertificateError(f"partial wildcards in leftmost label are not supported: {dn!r}.")
    host_leftmost, sep, host_remainder = hostname.partition(".")
    if not host_leftmost or not sep:
        return False  # the wildcard must match at least one character
    if host_leftmost.startswith("xn--"):
        return False  # RFC 6125 6.4.3: no wildcard match for an internationalized (A-label) name
    return remainder == host_remainder


def _host_ip(hostname: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """ipaddress object if `hostname` is a quad-dotted IPv4 or an IPv6 literal, else None."""
    try:
        return ipaddress.ip_address(hostname)
    except ValueError:
        return None


def _ip_match(value: str, host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(value.rstrip()) == host_ip
    except ValueError:
        return False


def match_hostname(cert: Mapping[str, Any] | None, hostname: str) -> None:  # Any: getpeercert()'s nested tuples
    """Python 3.7-3.11 ssl.match_hostname: raise CertificateError unless `cert` (getpeercert()) is valid for `hostname`.

    Beyond 3.11: a trailing dot is ignored, and a wildcard never matches an A-label (xn--).
    """
    if not cert:
        raise ValueError("empty or no certificate, match_hostname needs a SSL socket or SSL context with "
                         "either CERT_OPTIONAL or CERT_REQUIRED")
    host_ip = _host_ip(hostname)
    names = []
    for key, value in cert.get("subjectAltName", ()):
        if key == "DNS":
            if host_ip is None and _dnsname_match(value, hostname):
                return
            names.append(value)
        elif key == "IP Address":
            if host_ip is not None and _ip_match(value, host_ip):
                return
            names.append(value)
    if not names:
        # The subject's commonName counts only when subjectAltName has no DNS or IP entry.
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    if _dnsname_match(value, hostname):
                        return
                    names.append(value)
    if len(names) > 1:
        raise CertificateError(f"hostname {hostname!r} doesn't match either of {', '.join(map(repr, names))}")
    if names:
        raise CertificateError(f"hostname {hostname!r} doesn't match {names[0]!r}")
    raise CertificateError("no appropriate commonName or subjectAltName fields were found")
