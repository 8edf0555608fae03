"""What the requests and httpx adapters share: the identity source, its contexts, error codes."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Union

from . import calls
from .context import ContextCache, load_trust, parse_tls_version
from .errors import DyncertError, InputError, RemoteError
from .identity import ClientIdentity
from .targets import Target

IdentitySource = Union[ClientIdentity, Callable[[], ClientIdentity]]
CaCerts = Union[str, bytes, "os.PathLike[str]", None]
TlsVersion = Union[str, ssl.TLSVersion, None]

# Contexts kept per adapter: the current identity, the one it replaced and a few spares.
CACHE_SIZE = 8


def _checked(value: object) -> ClientIdentity:
    """`value` if it is a ClientIdentity, else the typed error a bad credential gets."""
    if isinstance(value, ClientIdentity):
        return value
    raise InputError("invalid_certificate", "Expected a dyncert.ClientIdentity (or a function returning one), "
                     f"found {type(value).__name__}.")


class Identities:
    """An identity or a zero-argument provider of the current one, and the contexts presenting each.

    Contexts come from a ContextCache of this adapter's own: the HTTP clients set ALPN and
    verify_mode on the context they are given, so it is not shared with dyncert's module-wide cache.
    """

    def __init__(self, identity: IdentitySource, ca_certs: CaCerts = None, tls_version: TlsVersion = None) -> None:
        self.tls_version = parse_tls_version(tls_version)  # unsupported_tls_version, now rather than per request
        self.ca_certs = ca_certs
        self.cache = ContextCache(maxsize=CACHE_SIZE)
        if isinstance(identity, ClientIdentity):
            self._provider: Callable[[], ClientIdentity] | None = None
            self._static: ClientIdentity | None = identity
            self.context()  # bad credentials or CA certificates fail here, at construction
        elif callable(identity):
            self._provider, self._static = identity, None
            load_trust(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ca_certs)  # invalid_ca_certs now
        else:
            _checked(identity)

    def current(self) -> ClientIdentity:
        """The identity to present now (the provider is asked on every call)."""
        if self._provider is None:
            assert self._static is not None
            return self._static
        return _checked(self._provider())

    def context(self) -> tuple[ClientIdentity, ssl.SSLContext]:
        """The current identity and the (cached, content-keyed) context presenting it."""
        identity = self.current()
        context: ssl.SSLContext = self.cache.client_context(identity, self.ca_certs, self.tls_version)
        return identity, context


def attach_code(exc: BaseException, host: str, port: int) -> DyncertError:
    """Put dyncert's RemoteError (stable code) at the head of `exc`'s cause chain; return it.

    The client's own exception stays what is raised; `exc.__cause__` becomes the RemoteError,
    whose own cause is what caused `exc` before, so nothing in the chain is lost.
    """
    inner = exc.__cause__ or exc.__context__
    # From the inner error: requests' own exceptions are OSErrors, which the classifier takes as the root.
    error: DyncertError = calls.remote_error(inner or exc, Target(host, port), "during the HTTPS request")
    if inner is not error:
        if error.__cause__ is None and error is not inner:
            error.__cause__ = inner
        exc.__cause__ = error
    return error


def dyncert_error(exc: BaseException) -> DyncertError | None:
    """The DyncertError in `exc`'s cause chain (what the adapters attach), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DyncertError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
