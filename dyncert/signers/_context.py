"""The SSLContext a SignerIdentity presents: its sockets turn a failed signature into signer_failed."""

import ssl
from typing import Any

from ..errors import SignerError
from . import _binding, _sign
from .base import tls13_requirement, tls13_schemes
from .identity import SignerIdentity

_VERSION_REASONS = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_VERSION_NUMBER",
                              "NO_PROTOCOLS_AVAILABLE"})


def _handshake(connection: Any, do_handshake: Any, timeout: float | None, fd: int | None) -> None:
    """Run `do_handshake` with signatures bounded by the connection; a signer's failure replaces OpenSSL's error."""
    identity: SignerIdentity | None = getattr(connection.context, "signer_identity", None)
    if identity is not None and connection.context.minimum_version == ssl.TLSVersion.TLSv1_3 and \
            not tls13_schemes(identity.public_key, identity.schemes):
        raise _missing_scheme(identity, "TLS 1.3 was required")  # the server would only see an empty certificate
    saved = _sign.begin(timeout, fd)
    try:
        do_handshake()
    except ssl.SSLError as e:
        failure = _sign.take_failure() or _no_tls13_scheme(connection, e)
        if failure is None:
            raise
        raise failure  # its cause is the signer's own exception; OpenSSL's error stays as its context
    finally:
        _sign.end(saved)


def _no_tls13_scheme(connection: Any, error: ssl.SSLError) -> SignerError | None:
    """handshake_failed naming the missing scheme, when TLS 1.3 was the only way and the signer has none for it."""
    context = connection.context
    identity: SignerIdentity | None = getattr(context, "signer_identity", None)
    if identity is None or tls13_schemes(identity.public_key, identity.schemes):
        return None
    capped = getattr(context, "capped_for_signer", False)
    try:
        version = connection.version()
    except (ValueError, OSError):
        version = None
    if version != "TLSv1.3" and not (capped and (getattr(error, "reason", None) or "") in _VERSION_REASONS):
        return None
    return _missing_scheme(identity, "the peer speaks only TLS 1.3")


def _missing_scheme(identity: SignerIdentity, why: str) -> SignerError:
    """handshake_failed naming the scheme TLS 1.3 needs and the signer lacks."""
    return SignerError(f"No client certificate signature possible: {why}, whose CertificateVerify needs "
                       f"{tls13_requirement(identity.public_key)}; the signer offers only "
                       f"{', '.join(identity.schemes)}.", code="handshake_failed")


class SignerSocket(ssl.SSLSocket):
    """An SSLSocket whose handshake bounds the signer by the socket's timeout and reports its failures."""

    def do_handshake(self, block: bool = False) -> None:
        timeout = self.gettimeout()
        _handshake(self, lambda: super(SignerSocket, self).do_handshake(block), timeout or None, self.fileno())


class SignerObject(ssl.SSLObject):
    """An SSLObject (asyncio, anyio) whose handshake reports the signer's failures."""

    def do_handshake(self) -> None:
        _handshake(self, lambda: super(SignerObject, self).do_handshake(), None, None)


class SignerContext(ssl.SSLContext):
    """A client context presenting a SignerIdentity; the binding's key objects live as long as it does."""

    sslsocket_class = SignerSocket
    sslobject_class = SignerObject
    signer_identity: SignerIdentity
    capped_for_signer = False


def bind(ctx: SignerContext, identity: SignerIdentity) -> None:
    """Present `identity` on `ctx`: its chain, and its signer for every signature."""
    _binding.bind(ctx, identity)
    ctx.signer_identity = identity  # keeps the signer reachable from the context (repr names it, no secret)
    if not tls13_schemes(identity.public_key, identity.schemes) and ctx.minimum_version != ssl.TLSVersion.TLSv1_3:
        # No scheme TLS 1.3 accepts: offer 1.2 only, so a 1.3 server is refused plainly (named, above)
        # rather than left to see an empty certificate.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.capped_for_signer = True
