"""SignerIdentity: a certificate chain whose private key stays with a signer (KMS, HSM, another process)."""

import binascii
import datetime
import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .. import identity as _identity
from ..errors import DyncertError, InputError
from ..identity import Metadata, PemText, cert_key_type, display_name, rfc3339, san_list
from .base import Signer, signer_schemes

# How long one signature may take when the connection gives no bound (a socket timeout or deadline).
DEFAULT_SIGN_TIMEOUT = 30.0


def _public_key(signer: object) -> PublicKeyTypes:
    """signer.public_key(), its failures as signer_unsupported (a duck-typed signer may offer anything)."""
    method = getattr(signer, "public_key", None)
    if not callable(method) or not callable(getattr(signer, "sign", None)):
        raise InputError("signer_unsupported", "Expected a signer with public_key() and sign(data, scheme), "
                         f"found {type(signer).__name__}.")
    try:
        key = method()
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except DyncertError:
        raise  # typed already: a KMS out of reach is signer_failed (502), not an interpreter that cannot bind
    except Exception as e:  # a remote signer's public_key() may fail in any way: keep its message as the cause
        raise InputError("signer_unsupported", f"The signer's public_key() failed ({type(e).__name__}); "
                         "expected a cryptography public key.") from e
    return key  # type: ignore[no-any-return]


class SignerIdentity:
    """A validated client certificate chain and the signer that signs for its leaf; stands wherever a
    ClientIdentity stands (contexts, calls, adapters). The private key never enters this process."""

    def __init__(self, chain_pem: PemText, signer: Signer, *, now: datetime.datetime | None = None,
                 check_validity: bool = True, check_purpose: bool = True,
                 sign_timeout: float = DEFAULT_SIGN_TIMEOUT) -> None:
        data = _identity._as_bytes(chain_pem, "invalid_certificate", "the certificate chain PEM")
        blocks, truncated = _identity._blocks(data)
        certs = [b for b in blocks if b[0] == b"CERTIFICATE"]
        if not certs:
            found = "a truncated PEM block" if truncated else f"PEM blocks: {_identity._labels(blocks)}"
            raise InputError("invalid_certificate", f"Expected a PEM CERTIFICATE block, found {found}.")
        if len(certs) != len(blocks):
            raise InputError("invalid_certificate", "Expected only CERTIFICATE blocks with a signer (its key stays "
                             f"with the signer), found {_identity._labels(blocks)}.")
        if len(certs) > _identity.MAX_CHAIN:
            raise InputError("invalid_certificate", f"Expected at most {_identity.MAX_CHAIN} certificates in "
                             f"the chain, found {len(certs)}.")
        key = _public_key(signer)
        self.schemes = signer_schemes(signer, key)  # signer_unsupported for a key type no scheme fits
        chain = _identity._order_chain(_identity._load_certs(certs, "invalid_certificate", "the certificate PEM"), key)
        if check_validity:
            _identity._check_validity(chain, now)
        if check_purpose:
            _identity._check_client_purpose(chain[0])
        if not sign_timeout > 0:
            raise InputError("invalid_request", f"Expected sign_timeout above 0 seconds, found {sign_timeout!r}.")
        self.chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        self.chain_der = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
        self.signer = signer
        self.public_key = key
        self.sign_timeout = float(sign_timeout)
        self.leaf = chain[0]

    def __repr__(self) -> str:
        return (f"SignerIdentity(subject={self.subject!r}, fingerprint_sha256={self.fingerprint_sha256!r}, "
                f"not_after={rfc3339(self.not_after)!r}, key_type={self.key_type!r}, "
                f"signer={type(self.signer).__name__})")

    __str__ = __repr__

    @functools.cached_property
    def content_id(self) -> str:
        """sha256 over chain, the signer's public key, its class and its cache_key() if it has one."""
        spki = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        cache_key = getattr(self.signer, "cache_key", None)
        extra = repr(cache_key()) if callable(cache_key) else ""
        kind = f"{type(self.signer).__module__}.{type(self.signer).__qualname__}"
        return hashlib.sha256(b"\0".join([b"signer", self.chain_pem, spki, kind.encode(), extra.encode(),
                                          ",".join(self.schemes).encode()])).hexdigest()

    @property
    def subject(self) -> str:
        """Leaf subject, in openssl's order."""
        return display_name(self.leaf.subject)

    @property
    def issuer(self) -> str:
        """Leaf issuer, in openssl's order."""
        return display_name(self.leaf.issuer)

    @property
    def serial(self) -> str:
        """Leaf serial number, lowercase hex."""
        return format(self.leaf.serial_number, "x")

    @property
    def not_before(self) -> datetime.datetime:
        """Start of the leaf's validity (aware UTC)."""
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime.datetime:
        """End of the leaf's validity (aware UTC)."""
        return self.leaf.not_valid_after_utc

    @functools.cached_property
    def fingerprint_sha256(self) -> str:
        """sha256 of the leaf DER, lowercase hex without colons."""
        return binascii.hexlify(self.leaf.fingerprint(hashes.SHA256())).decode("ascii")

    @property
    def san(self) -> list[str]:
        """subjectAltName entries."""
        return san_list(self.leaf)

    @property
    def key_type(self) -> str:
        """Key type from the leaf's public key: 'EC P-256', 'RSA 2048', ..."""
        return cert_key_type(self.leaf)

    @property
    def chain_length(self) -> int:
        """Number of certificates in the chain."""
        return len(self.chain_der)

    def metadata(self) -> Metadata:
        """Public, JSON-ready facts about the identity (never key material)."""
        return {
            "subject": self.subject, "issuer": self.issuer, "serial": self.serial,
            "not_before": rfc3339(self.not_before), "not_after": rfc3339(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256, "san": self.san,
            "key_type": self.key_type, "chain_length": self.chain_length,
        }


