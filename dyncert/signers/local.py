"""LocalSigner: a signer over a private key held in this process (tests, examples, the proof's twin)."""

from collections.abc import Callable, Collection

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..errors import InputError
from .base import SCHEMES, default_schemes

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                          "sha512": hashes.SHA512}


class LocalSigner:
    """Signs with a cryptography private key (EC, RSA, Ed25519); `schemes` narrows what it offers."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
                 schemes: Collection[str] | None = None) -> None:
        if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise InputError("signer_unsupported", "Expected an EC, RSA or Ed25519 private key, "
                             f"found {type(private_key).__name__}.")
        self._key = private_key
        self.schemes = tuple(schemes) if schemes is not None else default_schemes(private_key.public_key())

    def __repr__(self) -> str:
        return f"LocalSigner({type(self._key).__name__.lstrip('_')}, schemes={list(self.schemes)})"

    def public_key(self) -> PublicKeyTypes:
        """The key's public half."""
        return self._key.public_key()

    def cache_key(self) -> tuple[str, ...]:
        """Contexts differ by the schemes offered (the same key may be offered PSS-only or PKCS#1-only)."""
        return tuple(self.schemes)

    def sign(self, data: bytes, scheme: str) -> bytes:
        """Sign `data` (a digest; the message for ed25519) under `scheme`."""
        spec = SCHEMES.get(scheme)
        if spec is None or scheme not in self.schemes:
            raise ValueError(f"LocalSigner does not offer {scheme!r}")
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        chosen = _HASHES[spec.hash or ""]()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(utils.Prehashed(chosen)))
        pad: padding.AsymmetricPadding = padding.PKCS1v15() if spec.padding == "pkcs1" else \
            padding.PSS(padding.MGF1(chosen), padding.PSS.DIGEST_LENGTH)
        return key.sign(data, pad, utils.Prehashed(chosen))
