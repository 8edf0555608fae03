"""The SSLContext a SignerIdentity presents: its sockets turn a failed signature into signer_failed."""

import ssl
from typing import Any

from . import _binding, _sign
from .identity import SignerIdentity


def _handshake(do_handshake: Any, timeout: float | None, fd: int | None) -> None:
    """Run `do_handshake` with signatures bounded by the connection; a signer's failure replaces OpenSSL's error."""
    saved = _sign.begin(timeout, fd)
    try:
        do_handshake()
    except ssl.SSLError:
        failure = _sign.take_failure()
        if failure is None:
            raise
        raise failure  # its cause is the signer's own exception; OpenSSL's error stays as its context
    finally:
        _sign.end(saved)


class SignerSocket(ssl.SSLSocket):
    """An SSLSocket whose handshake bounds the signer by the socket's timeout and reports its failures."""

    def do_handshake(self, block: bool = False) -> None:
        timeout = self.gettimeout()
        _handshake(lambda: super(SignerSocket, self).do_handshake(block), timeout or None, self.fileno())


class SignerObject(ssl.SSLObject):
    """An SSLObject (asyncio, anyio) whose handshake reports the signer's failures."""

    def do_handshake(self) -> None:
        _handshake(lambda: super(SignerObject, self).do_handshake(), None, None)


class SignerContext(ssl.SSLContext):
    """A client context presenting a SignerIdentity; the binding's key objects live as long as it does."""

    sslsocket_class = SignerSocket
    sslobject_class = SignerObject
    signer_identity: SignerIdentity


def bind(ctx: SignerContext, identity: SignerIdentity) -> None:
    """Present `identity` on `ctx`: its chain, and its signer for every signature."""
    _binding.bind(ctx, identity)
    ctx.signer_identity = identity  # keeps the signer reachable from the context (repr names it, no secret)
