"""httpx transports presenting a ClientIdentity (or the current one from a provider) on every request.

    client = httpx.Client(transport=ClientCertTransport(lambda: load_identity(), hosts=["partner.example"]))
    client = httpx.AsyncClient(transport=AsyncClientCertTransport(identity, ca_certs=partner_ca,
                                                                  hosts=["partner.example"]))

Each request asks the provider for the identity and sends through the httpx transport of the
context presenting it (one per identity, LRU-bounded): a rotated certificate is used on the
next request, and a pooled connection only ever serves the identity it was opened with.
A transport is leased until its response is closed: the LRU evicts (and closes) idle ones only.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

import httpx

from ._adapt import (CACHE_SIZE, CaCerts, HostList, Hosts, Identities, IdentitySource, TlsVersion, attach_code,
                     dyncert_error)
from .errors import InputError
from .leases import Lease, LeasedLRU

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


def _check_host(hosts: HostList, request: httpx.Request) -> None:
    """Refuse a host off the list (target_not_allowed) before the provider is asked or anything connects."""
    hosts.check(request.url.scheme, request.url.raw_host.decode("ascii"), request.url.port)


class _PerIdentity(Generic[_T]):
    """Transports by identity content, each built on the context presenting that identity, leased per request."""

    def __init__(self, identity: IdentitySource, ca_certs: CaCerts, tls_version: TlsVersion,
                 alpn: list[str] | None) -> None:
        self.identities = Identities(identity, ca_certs, tls_version, alpn)
        self._transports: LeasedLRU[str, _T] = LeasedLRU(CACHE_SIZE)

    def get(self, make: Callable[[ssl.SSLContext], _T]) -> tuple[Lease[_T], list[_T]]:
        """A lease on the current identity's transport (made by make(context) on first use), and idle ones evicted."""
        identity, context = self.identities.context()
        return self._transports.acquire(identity.content_id, lambda: make(context))

    def release(self, lease: Lease[_T]) -> list[_T]:
        """Give the lease back; the idle transports to close now."""
        return self._transports.release(lease)

    def drain(self) -> list[_T]:
        """Forget every transport; return them to be closed."""
        return self._transports.drain()


class _LeasedStream(httpx.SyncByteStream):
    """A response body that gives its transport's lease back when closed (httpx closes every response)."""

    def __init__(self, stream: httpx.SyncByteStream, release: Callable[[], None]) -> None:
        self._stream, self._release = stream, release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            release, self._release = self._release, _nothing
            release()


class _AsyncLeasedStream(httpx.AsyncByteStream):
    """The asyncio form of _LeasedStream."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], Any]) -> None:
        self._stream, self._release = stream, release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, _nothing_async
            await release()


def _nothing() -> None:
    """A lease already given back."""


async def _nothing_async() -> None:
    """A lease already given back."""


class ClientCertTransport(httpx.BaseTransport):
    """httpx transport for mutual TLS: CERT_REQUIRED, host name checked, TLS 1.2+, the client certificate from memory.

    identity: a ClientIdentity, or a zero-argument function returning the current one (asked per request).
    ca_certs: PEM text or a CA file/directory path trusted for the peer (default: dyncert's default trust).
    tls_version: None/'TLS' (1.2 or newer), 'TLSv1_2' or 'TLSv1_3'.
    hosts: the hosts the certificate is presented to ('host', 'host:port', '*.example.com'); a request to
        any other (a redirect elsewhere) is refused, InputError target_not_allowed, before connecting.
        None (the default) presents it to any host.
    Other keyword arguments go to httpx.HTTPTransport (limits, http2, retries, proxy, ...).
    """

    def __init__(self, identity: IdentitySource, *, ca_certs: CaCerts = None, tls_version: TlsVersion = None,
                 hosts: Hosts = None, **kwargs: Any) -> None:
        self._hosts = HostList(hosts)
        self._kwargs = _transport_kwargs(kwargs)
        # Threads share the transport: the context is handed over as a SharedContext (see _adapt).
        alpn = ["http/1.1", "h2"] if kwargs.get("http2") else ["http/1.1"]  # what httpcore sets per connection
        self._per_identity: _PerIdentity[httpx.HTTPTransport] = _PerIdentity(identity, ca_certs, tls_version, alpn)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the current identity's transport; failures keep httpx's types, dyncert's code in the cause."""
        _check_host(self._hosts, request)
        lease, idle = self._per_identity.get(lambda ctx: httpx.HTTPTransport(verify=ctx, **self._kwargs))
        self._close(idle)
        try:
            response = lease.value.handle_request(request)
        except BaseException as e:
            self._close(self._per_identity.release(lease))
            if isinstance(e, httpx.TransportError):
                attach_code(e, request.url.host, request.url.port or 443)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)  # what HTTPTransport returns
        response.stream = _LeasedStream(response.stream, lambda: self._close(self._per_identity.release(lease)))
        return response

    @staticmethod
    def _close(transports: list[httpx.HTTPTransport]) -> None:
        for transport in transports:
            transport.close()

    def close(self) -> None:
        """Close every pooled connection of every identity."""
        for transport in self._per_identity.drain():
            transport.close()


class AsyncClientCertTransport(httpx.AsyncBaseTransport):
    """The asyncio/trio form of ClientCertTransport (same arguments; kwargs go to httpx.AsyncHTTPTransport)."""

    def __init__(self, identity: IdentitySource, *, ca_certs: CaCerts = None, tls_version: TlsVersion = None,
                 hosts: Hosts = None, **kwargs: Any) -> None:
        self._hosts = HostList(hosts)
        self._kwargs = _transport_kwargs(kwargs)
        # One event loop makes connections one at a time: the real context (anyio's fast path needs it).
        self._per_identity: _PerIdentity[httpx.AsyncHTTPTransport] = _PerIdentity(identity, ca_certs, tls_version,
                                                                                  None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the current identity's transport; failures keep httpx's types, dyncert's code in the cause."""
        _check_host(self._hosts, request)
        lease, idle = self._per_identity.get(lambda ctx: httpx.AsyncHTTPTransport(verify=ctx, **self._kwargs))
        await self._close(idle)
        try:
            response = await self._send(lease.value, request)
        except BaseException:
            await self._close(self._per_identity.release(lease))
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)  # what AsyncHTTPTransport returns
        response.stream = _AsyncLeasedStream(response.stream,
                                             lambda: self._close(self._per_identity.release(lease)))
        return response

    @staticmethod
    async def _send(transport: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
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

    @staticmethod
    async def _close(transports: list[httpx.AsyncHTTPTransport]) -> None:
        for transport in transports:
            await transport.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection of every identity."""
        for transport in self._per_identity.drain():
            await transport.aclose()
