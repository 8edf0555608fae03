"""The signer contract: an object that signs for a client certificate whose private key it never hands over."""

import dataclasses
from collections.abc import Collection
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..errors import InputError


@runtime_checkable
class Signer(Protocol):
    """What a signer must offer; `schemes` (a Collection[str]) and `cache_key()` are optional attributes.

    `sign(data, scheme)` receives, for every scheme but `ed25519`, the DIGEST of the TLS handshake
    message (hashed with the scheme's hash), never the message: ECDSA returns a DER
    `Ecdsa-Sig-Value`, RSA the raw signature (modulus size). For `ed25519`, `data` is the whole message.
    """

    def public_key(self) -> PublicKeyTypes:
        """The cryptography public key of the certificate this signer signs for."""

    def sign(self, data: bytes, scheme: str) -> bytes:
        """The signature of `data` (a digest, see the class) under `scheme`."""


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One signature scheme: key family, hash, RSA padding, and OpenSSL's sigalg name for it."""

    name: str
    family: str  # "ec", "rsa", "ed25519"
    hash: str | None  # "sha256", "sha384", "sha512"; None for ed25519
    padding: str | None  # "pkcs1", "pss"; None outside RSA
    openssl: str  # the name SSL_CTX_set1_client_sigalgs_list takes
    tls13: bool  # usable in a TLS 1.3 CertificateVerify

    @property
    def digest_size(self) -> int:
        """Bytes of the digest the signer receives (0 for ed25519: it gets the message)."""
        return {"sha256": 32, "sha384": 48, "sha512": 64}.get(self.hash or "", 0)


def _schemes() -> dict[str, Scheme]:
    table = {}
    for bits in (256, 384, 512):
        h = f"sha{bits}"
        table[f"ecdsa_{h}"] = Scheme(f"ecdsa_{h}", "ec", h, None, f"ECDSA+SHA{bits}", True)
        table[f"rsa_pss_{h}"] = Scheme(f"rsa_pss_{h}", "rsa", h, "pss", f"rsa_pss_rsae_{h}", True)
        table[f"rsa_pkcs1_{h}"] = Scheme(f"rsa_pkcs1_{h}", "rsa", h, "pkcs1", f"RSA+SHA{bits}", False)
    table["ed25519"] = Scheme("ed25519", "ed25519", None, None, "ed25519", True)
    return table


# Every scheme name of the contract, strongest first within a family (OpenSSL prefers earlier ones).
SCHEMES: dict[str, Scheme] = _schemes()
ECDSA_SCHEMES = ("ecdsa_sha256", "ecdsa_sha384", "ecdsa_sha512")
RSA_PSS_SCHEMES = ("rsa_pss_sha256", "rsa_pss_sha384", "rsa_pss_sha512")
RSA_PKCS1_SCHEMES = ("rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512")


def key_family(public_key: PublicKeyTypes) -> str | None:
    """'ec', 'rsa' or 'ed25519' for a key type a signer may hold; None for others (Ed448, DSA, ...)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return None


def default_schemes(public_key: PublicKeyTypes) -> tuple[str, ...]:
    """Every scheme of the key's family (what a signer without `schemes` offers)."""
    family = key_family(public_key)
    return tuple(name for name, scheme in SCHEMES.items() if scheme.family == family)


def signer_schemes(signer: Signer, public_key: PublicKeyTypes) -> tuple[str, ...]:
    """The schemes `signer` offers, checked against its key's family; signer_unsupported if none fit."""
    offered = getattr(signer, "schemes", None)
    if offered is None:
        schemes = default_schemes(public_key)
    else:
        if isinstance(offered, (str, bytes)) or not isinstance(offered, Collection):
            raise InputError("signer_unsupported", "Expected the signer's schemes as a collection of scheme "
                             f"names, found {type(offered).__name__}.")
        unknown = sorted(str(s)[:40] for s in offered if s not in SCHEMES)
        if unknown:
            raise InputError("signer_unsupported", f"Expected scheme names among {', '.join(SCHEMES)}; "
                             f"found {', '.join(map(repr, unknown))}.")
        family = key_family(public_key)
        schemes = tuple(name for name in SCHEMES if name in offered and SCHEMES[name].family == family)
        if not schemes:
            raise InputError("signer_unsupported", f"Expected at least one scheme for the signer's {family} key, "
                             f"found only {', '.join(sorted(offered)) or 'none'}.")
    if not schemes:
        raise InputError("signer_unsupported", "Expected a signer holding an EC, RSA or Ed25519 key, found "
                         f"{type(public_key).__name__.lstrip('_')}.")
    return schemes


_TLS13_EC_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


def tls13_schemes(public_key: PublicKeyTypes, schemes: Collection[str]) -> tuple[str, ...]:
    """The schemes among `schemes` a TLS 1.3 CertificateVerify may use with this key.

    TLS 1.3 has no PKCS#1 v1.5 for handshake signatures, and binds each ECDSA scheme to its curve
    (ecdsa_secp256r1_sha256, ...), where TLS 1.2 took any hash with any curve.
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        wanted = _TLS13_EC_HASH.get(public_key.curve.name)
        return tuple(s for s in schemes if SCHEMES[s].family == "ec" and SCHEMES[s].hash == wanted)
    return tuple(s for s in schemes if SCHEMES[s].tls13)


def tls13_requirement(public_key: PublicKeyTypes) -> str:
    """What TLS 1.3 would need from a signer holding this key, in words."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ecdsa_{_TLS13_EC_HASH.get(public_key.curve.name, 'sha256')} (TLS 1.3 ties ECDSA's hash to the curve)"
    return "rsa_pss_sha256, rsa_pss_sha384 or rsa_pss_sha512 (TLS 1.3 has no PKCS#1 v1.5 handshake signatures)"
