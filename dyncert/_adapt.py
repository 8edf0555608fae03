"""What the requests and httpx adapters share: the identity source, its contexts, error codes."""

from __future__ import annotations

import collections
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, Union, cast

from . import calls, targets
from .context import AnyIdentity, ContextCache, load_trust, parse_tls_version
from .errors import DyncertError, InputError
from .identity import ClientIdentity
from .signers.identity import SignerIdentity
from .targets import Target

IdentitySource = Union[AnyIdentity, Callable[[], AnyIdentity]]
CaCerts = Union[str, bytes, "os.PathLike[str]", None]
TlsVersion = Union[str, ssl.TLSVersion, None]
Hosts = Union[str, Iterable[str], None]

# Identities kept per adapter (contexts, and httpx transports): enough for a provider that picks among
# a few dozen identities per request; the least recently used one beyond that is closed.
CACHE_SIZE = 32


def _checked(value: object) -> AnyIdentity:
    """`value` if it is a ClientIdentity or SignerIdentity, else the typed error a bad credential gets."""
    if isinstance(value, (ClientIdentity, SignerIdentity)):
        return value
    raise InputError("invalid_certificate", "Expected a dyncert.ClientIdentity (or a function returning one), "
                     f"found {type(value).__name__}.")


class SharedContext:
    """A cached context as a threaded HTTP client sees it: the client's per-connection writes stop here.

    urllib3 and httpcore call set_alpn_protocols (urllib3 also sets verify_mode) on every new
    connection. CPython runs SSL_new without the GIL, so rewriting the ALPN list of a context
    other threads are making connections from races inside OpenSSL (the old list is freed while
    SSL_new copies it). The list is set once, before the context is shared; a write that changes
    nothing is dropped, any other write is refused (it would change or weaken verification).
    """

    def __init__(self, context: ssl.SSLContext, alpn: list[str]) -> None:
        context.set_alpn_protocols(alpn)
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_alpn", list(alpn))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self._context, name) != value:
            raise InputError("invalid_request", f"The context presenting a dyncert identity is shared: setting "
                             f"{name} to {value!r} would change it for every connection. Configure the adapter instead.")

    def set_alpn_protocols(self, protocols: list[str]) -> None:
        """Accept the list set at creation again; refuse another (it would be a write to a shared context)."""
        if list(protocols) != self._alpn:
            raise InputError("invalid_request", f"Expected ALPN {self._alpn}, the adapter's, found {list(protocols)}.")


class Identities:
    """An identity or a zero-argument provider of the current one, and the contexts presenting each.

    Contexts come from a ContextCache of this adapter's own, never shared with dyncert's
    module-wide cache; with `alpn`, the HTTP client gets each as a SharedContext.
    """

    def __init__(self, identity: IdentitySource, ca_certs: CaCerts = None, tls_version: TlsVersion = None,
                 alpn: list[str] | None = None) -> None:
        self.tls_version = parse_tls_version(tls_version)  # unsupported_tls_version, now rather than per request
        self.ca_certs = ca_certs
        self.cache = ContextCache(maxsize=CACHE_SIZE)
        self._alpn = alpn
        self._lock = threading.Lock()
        self._shared: collections.OrderedDict[int, tuple[ssl.SSLContext, SharedContext]] = collections.OrderedDict()
        if isinstance(identity, (ClientIdentity, SignerIdentity)):
            self._provider: Callable[[], AnyIdentity] | None = None
            self._static: AnyIdentity | None = identity
            self.context()  # bad credentials or CA certificates fail here, at construction
        elif callable(identity):
            self._provider, self._static = identity, None
            load_trust(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ca_certs)  # invalid_ca_certs now
        else:
            _checked(identity)

    def current(self) -> AnyIdentity:
        """The identity to present now (the provider is asked on every call)."""
        if self._provider is None:
            assert self._static is not None
            return self._static
        return _checked(self._provider())

    def context(self) -> tuple[AnyIdentity, ssl.SSLContext]:
        """The current identity and the (cached, content-keyed) context presenting it."""
        identity = self.current()
        context: ssl.SSLContext = self.cache.client_context(identity, self.ca_certs, self.tls_version)
        if self._alpn is None:
            return identity, context
        with self._lock:  # one SharedContext per context: clients key their pools by it
            found = self._shared.get(id(context))
            if found is None or found[0] is not context:
                found = (context, SharedContext(context, self._alpn))  # ALPN set before anyone else uses it
                self._shared[id(context)] = found
                while len(self._shared) > CACHE_SIZE:
                    self._shared.popitem(last=False)
            else:
                self._shared.move_to_end(id(context))
        return identity, cast(ssl.SSLContext, found[1])


class HostList:
    """The hosts an adapter presents its certificate to (ALLOWED_TARGETS' syntax); None: any host."""

    def __init__(self, hosts: Hosts) -> None:
        if hosts is None:
            self.patterns: list[str] | None = None
            return
        hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        if not all(isinstance(host, str) for host in hosts):
            raise InputError("invalid_target", "Expected hosts= as host names (or 'host:port', '*.example.com').")
        try:
            self.patterns = targets.parse_allowed(hosts)
        except ValueError as e:
            raise InputError("invalid_target", "hosts=: " + str(e).removeprefix("ALLOWED_TARGETS: ")) from None
        if self.patterns is None:
            raise InputError("invalid_target", "Expected at least one host in hosts= (None allows any host).")

    def check(self, scheme: str, host: str, port: int | None) -> None:
        """InputError target_not_allowed for a host off the list: raised before any connection is made."""
        port = port or (443 if scheme == "https" else 80)
        if self.patterns is None or targets.host_allowed(host, port, self.patterns):
            return
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        raise InputError("target_not_allowed", f"This adapter presents its client certificate only to "
                         f"{', '.join(self.patterns)} (hosts=); refused {scheme}://{shown}:{port} before "
                         "connecting (a redirect or a mount prefix may lead elsewhere).")


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
