"""CloudKmsSigner: a client key that lives in Cloud KMS (or Cloud HSM); every signature is one AsymmetricSign.

google-cloud-kms is imported on first use, never with dyncert (the wheel's extra `kms` brings it).
Both integrity checks Google documents ride on every call: the request carries the CRC32C of the
digest (KMS answers `verified_digest_crc32c`), the answer carries the CRC32C of the signature, and
its key name must be the one asked for; GetPublicKey's PEM has its CRC32C checked the same way.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..errors import InputError, SignerError

if TYPE_CHECKING:
    from google.cloud.kms_v1 import KeyManagementServiceClient

# projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N (versions are numbered).
_VERSION_NAME = re.compile(
    r"projects/[a-z0-9:.-]{1,100}/locations/[a-z0-9-]{1,63}/keyRings/[A-Za-z0-9_-]{1,63}"
    r"/cryptoKeys/[A-Za-z0-9_-]{1,63}/cryptoKeyVersions/[0-9]{1,20}")

# The one TLS scheme each KMS signing algorithm offers (a key version signs with one algorithm).
_SCHEMES = {
    "EC_SIGN_P256_SHA256": "ecdsa_sha256",
    "EC_SIGN_P384_SHA384": "ecdsa_sha384",
    "RSA_SIGN_PKCS1_2048_SHA256": "rsa_pkcs1_sha256",
    "RSA_SIGN_PKCS1_3072_SHA256": "rsa_pkcs1_sha256",
    "RSA_SIGN_PKCS1_4096_SHA256": "rsa_pkcs1_sha256",
    "RSA_SIGN_PKCS1_4096_SHA512": "rsa_pkcs1_sha512",
    "RSA_SIGN_PSS_2048_SHA256": "rsa_pss_sha256",
    "RSA_SIGN_PSS_3072_SHA256": "rsa_pss_sha256",
    "RSA_SIGN_PSS_4096_SHA256": "rsa_pss_sha256",
    "RSA_SIGN_PSS_4096_SHA512": "rsa_pss_sha512",
    "EC_SIGN_ED25519": "ed25519",
}
# Digest field of the request and its length, by the scheme's hash.
_DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64}

# Answers that say the key version itself is unusable (wrong name, disabled, destroyed, no access).
_KEY_PROBLEMS = ("NotFound", "FailedPrecondition", "InvalidArgument", "PermissionDenied")


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of data, as KMS computes it (google-crc32c, C where it can)."""
    import google_crc32c
    return int(google_crc32c.value(data))


def _failed(message: str) -> SignerError:
    return SignerError(message)


class CloudKmsSigner:
    """Signs through one Cloud KMS key version; the private key never leaves KMS."""

    def __init__(self, key_version_name: str, client: KeyManagementServiceClient | None = None,
                 timeout: float = 10.0) -> None:
        """timeout: seconds for one RPC, retries included (a handshake's own deadline also bounds it)."""
        if not isinstance(key_version_name, str) or not _VERSION_NAME.fullmatch(key_version_name):
            raise InputError("invalid_kms_key", "Expected a Cloud KMS key version name "
                               "(projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N).")
        self.key_version_name = key_version_name
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._public: tuple[PublicKeyTypes, str, str] | None = None  # key, scheme, protection level

    def __repr__(self) -> str:
        return f"CloudKmsSigner({self.key_version_name!r})"

    def cache_key(self) -> str:
        """Two signers of the same key version are interchangeable in a context cache."""
        return f"cloudkms:{self.key_version_name}"

    def public_key(self) -> PublicKeyTypes:
        """The key version's public key (one GetPublicKey per signer, then cached)."""
        return self._describe()[0]

    @property
    def schemes(self) -> Collection[str]:
        """The one scheme the key version's algorithm signs with."""
        return (self._describe()[1],)

    @property
    def protection_level(self) -> str:
        """HSM, SOFTWARE, EXTERNAL...: where KMS says the key is held."""
        return self._describe()[2]

    def sign(self, data: bytes, scheme: str) -> bytes:
        """One AsymmetricSign: data is the digest (the whole message for ed25519)."""
        offered = self._describe()[1]
        if scheme != offered:
            raise _failed(f"{self!r} signs with {offered} only, asked for {scheme}.")
        data = bytes(data)
        request: dict[str, Any] = {"name": self.key_version_name}
        if scheme == "ed25519":
            request.update(data=data, data_crc32c=crc32c(data))
        else:
            hash_name = scheme.rsplit("_", 1)[1]
            if len(data) != _DIGESTS[hash_name]:
                raise _failed(f"{scheme} signs a {_DIGESTS[hash_name]}-byte digest, given {len(data)} bytes.")
            request.update(digest={hash_name: data}, digest_crc32c=crc32c(data))
        response = self._call("asymmetric_sign", request, "AsymmetricSign")
        verified = response.verified_data_crc32c if scheme == "ed25519" else response.verified_digest_crc32c
        if not verified:
            raise _failed(f"Cloud KMS did not confirm the request's CRC32C for {self.key_version_name}: "
                          "the input may have been corrupted in transit.")
        if response.name != self.key_version_name:
            raise _failed(f"Cloud KMS answered for {response.name!r}, not {self.key_version_name!r}.")
        signature = bytes(response.signature)
        if response.signature_crc32c is None or crc32c(signature) != int(response.signature_crc32c):
            raise _failed(f"The signature from {self.key_version_name} failed its CRC32C check: "
                          "corrupted in transit.")
        return signature

    def _describe(self) -> tuple[PublicKeyTypes, str, str]:
        """GetPublicKey once: the key, the scheme its algorithm offers, its protection level."""
        with self._lock:
            if self._public is None:
                self._public = self._fetch_public_key()
            return self._public

    def _fetch_public_key(self) -> tuple[PublicKeyTypes, str, str]:
        answer = self._call("get_public_key", {"name": self.key_version_name}, "GetPublicKey")
        pem = answer.pem.encode("ascii")
        if answer.pem_crc32c is None or crc32c(pem) != int(answer.pem_crc32c):
            raise _failed(f"The public key of {self.key_version_name} failed its CRC32C check.")
        if answer.name != self.key_version_name:
            raise _failed(f"Cloud KMS answered for {answer.name!r}, not {self.key_version_name!r}.")
        algorithm = answer.algorithm.name
        scheme = _SCHEMES.get(algorithm)
        if scheme is None:
            raise InputError("signer_unsupported", f"{self.key_version_name} signs with {algorithm}, "
                               f"which TLS cannot use; use one of {', '.join(sorted(_SCHEMES))}.")
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise _failed(f"{self.key_version_name} returned a {type(key).__name__} for {algorithm}.")
        return key, scheme, answer.protection_level.name

    def _client_or_default(self) -> KeyManagementServiceClient:
        if self._client is None:
            from google.cloud.kms_v1 import KeyManagementServiceClient
            self._client = KeyManagementServiceClient()
        return self._client

    def _call(self, method: str, request: dict[str, Any], rpc: str) -> Any:
        """One RPC; its failures become dyncert errors with the cause chained."""
        from google.api_core import exceptions, retry
        from google.auth import exceptions as auth_exceptions
        # The client's default retry goes on for 60 s whatever the timeout: bound the retries too.
        bounded = retry.Retry(initial=0.05, maximum=1.0, multiplier=2.0, timeout=self._timeout,
                              predicate=retry.if_exception_type(exceptions.ServiceUnavailable,
                                                                exceptions.DeadlineExceeded))
        try:
            return getattr(self._client_or_default(), method)(request=request, retry=bounded,
                                                              timeout=self._timeout)
        except (exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as error:
            kind = type(error).__name__
            message = f"Cloud KMS {rpc} for {self.key_version_name} failed: {kind}: {getattr(error, 'message', error)}"
            if rpc == "GetPublicKey" and kind in _KEY_PROBLEMS:
                raise InputError("invalid_kms_key", message) from error
            raise SignerError(message) from error
