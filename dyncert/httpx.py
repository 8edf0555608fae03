"""httpx transports presenting a ClientIdentity (or the current one from a provider) on every request.

    client = httpx.Client(transport=ClientCertTransport(lambda: load_identity()))
    client = httpx.AsyncClient(transport=AsyncClientCertTransport(identity, ca_certs=partner_ca))

Each request asks the provider for the identity and sends through the httpx transport of the
context presenting it (one per identity, LRU-bounded): a rotated certificate is used on the
next request, and a pooled connection only ever serves the identity it was opened with.
"""

from __future__ import annotations

import collections
import ssl
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx

from ._adapt import CACHE_SIZE, CaCerts, Identities, IdentitySource, TlsVersion, attach_code, dyncert_error
from .errors import InputError

__all__ = ["AsyncClientCertTransport", "ClientCertTransport", "dyncert_error"]

_T = TypeVar("_T")


def _transport_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """HTTPTransport keyword arguments, refusing those that would replace the identity or weaken verification."""
    for name in ("verify", "cert"):
        if name in kwargs:
            raise InputError("invalid_request", f"This transport presents a dyncert identity and verifies with "
                             f"dyncert's settings: {name}= would change that. Give trusted CA certificates "
                             "as ca_certs=.")
    return kwargs


class _PerIdentity(Generic[_T]):
    """An LRU of transports by identity content, each built on the context presenting that identity."""

    def __init__(self, identity: IdentitySource, ca_certs: CaCerts, tls_version: TlsVersion,
                 alpn: list[str] | None) -> None:
        self.identities = Identities(identity, ca_certs, tls_version, alpn)
        self._lock = threading.Lock()
        self._transports: collections.OrderedDict[str, _T] = collections.OrderedDict()

    def get(self, make: Callable[[ssl.SSLContext], _T]) -> tuple[_T, list[_T]]:
        """The current identity's transport (made by make(context) on first use), and those evicted."""
        identity, context = self.identities.context()
        key: str = identity.content_id
        with self._lock:
            found = self._transports.get(key)
            if found is not None:
                self._transports.move_to_end(key)
                return found, []
            made: _T = make(context)
            self._transports[key] = made
            evicted = []
            while len(self._transports) > CACHE_SIZE:
                evicted.append(self._transports.popitem(last=False)[1])
            return made, evicted

    def drain(self) -> list[_T]:
        """Forget every transport; return them to be closed."""
        with self._lock:
            transports = list(self._transports.values())
            self._transports.clear()
            return transports


class ClientCertTransport(httpx.BaseTransport):
    """httpx transport for mutual TLS: CERT_REQUIRED, host name checked, TLS 1.2+, the client certificate from memory.

    identity: a ClientIdentity, or a zero-argument function returning the current one (asked per request).
    ca_certs: PEM text or a CA file/directory path trusted for the peer (default: dyncert's default trust).
    tls_version: None/'TLS' (1.2 or newer), 'TLSv1_2' or 'TLSv1_3'.
    Other keyword arguments go to httpx.HTTPTransport (limits, http2, retries, proxy, ...).
    """

    def __init__(self, identity: IdentitySource, *, ca_certs: CaCerts = None, tls_version: TlsVersion = None,
                 **kwargs: Any) -> None:
        self._kwargs = _transport_kwargs(kwargs)
        # Threads share the transport: the context is handed over as a SharedContext (see _adapt).
        alpn = ["http/1.1", "h2"] if kwargs.get("http2") else ["http/1.1"]  # what httpcore sets per connection
        self._per_identity: _PerIdentity[httpx.HTTPTransport] = _PerIdentity(identity, ca_certs, tls_version, alpn)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the current identity's transport; failures keep httpx's types, dyncert's code in the cause."""
        transport, evicted = self._per_identity.get(lambda ctx: httpx.HTTPTransport(verify=ctx, **self._kwargs))
        for old in evicted:
            old.close()
        try:
            return transport.handle_request(request)
        except httpx.TransportError as e:
            attach_code(e, request.url.host, request.url.port or 443)
            raise

    def close(self) -> None:
        """Close every pooled connection of every identity."""
        for transport in self._per_identity.drain():
            transport.close()


class AsyncClientCertTransport(httpx.AsyncBaseTransport):
    """The asyncio/trio form of ClientCertTransport (same arguments; kwargs go to httpx.AsyncHTTPTransport)."""

    def __init__(self, identity: IdentitySource, *, ca_certs: CaCerts = None, tls_version: TlsVersion = None,
                 **kwargs: Any) -> None:
        self._kwargs = _transport_kwargs(kwargs)
        # One event loop makes connections one at a time: the real context (anyio's fast path needs it).
        self._per_identity: _PerIdentity[httpx.AsyncHTTPTransport] = _PerIdentity(identity, ca_certs, tls_version,
                                                                                  None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the current identity's transport; failures keep httpx's types, dyncert's code in the cause."""
        transport, evicted = self._per_identity.get(
            lambda ctx: httpx.AsyncHTTPTransport(verify=ctx, **self._kwargs))
        for old in evicted:
            await old.aclose()
        try:
            return await transport.handle_async_request(request)
        except httpx.TransportError as e:
            attach_code(e, request.url.host, request.url.port or 443)
            raise
        except OSError as e:
            # httpcore's anyio backend lets an ssl.SSLError on read escape unmapped (a TLS 1.3 rejection
            # alert arrives there): give it httpx's type, as the sync backend does.
            error = httpx.ReadError(f"{type(e).__name__}: {e}", request=request)
            error.__cause__ = e
            attach_code(error, request.url.host, request.url.port or 443)
            raise error from error.__cause__

    async def aclose(self) -> None:
        """Close every pooled connection of every identity."""
        for transport in self._per_identity.drain():
            await transport.aclose()
