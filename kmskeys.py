"""Client keys held in Cloud KMS: the client, warm signers, checks of a given key version, keys born here.

The app stores only a key version's name; every handshake signature is one AsymmetricSign. A key
version the app created is destroyed (scheduled, restorable for KMS's own window) only once no slot
of any address refers to it (models.kmsrefs decides when).
"""

import logging
import re
import secrets
import threading
import time
from collections import OrderedDict

from dyncert.errors import DyncertError, InputError, SignerError
from dyncert.identity import key_type as key_type_label
from dyncert.signers.cloudkms import CloudKmsSigner

log = logging.getLogger("dyncert.kms")

KEY_RING = re.compile(r"projects/[a-z0-9:.-]{1,100}/locations/[a-z0-9-]{1,63}/keyRings/[A-Za-z0-9_-]{1,63}")
# POST .../csr key_type -> the KMS algorithm of the key created (RSA: PSS, which TLS 1.2 and 1.3 both take).
ALGORITHMS = {
    "EC-P256": "EC_SIGN_P256_SHA256", "EC-P384": "EC_SIGN_P384_SHA384",
    "RSA-2048": "RSA_SIGN_PSS_2048_SHA256", "RSA-3072": "RSA_SIGN_PSS_3072_SHA256",
    "RSA-4096": "RSA_SIGN_PSS_4096_SHA256",
}
MAX_SIGNERS = 1024          # warm signers kept per process (each holds one public key)
RPC_TIMEOUT = 10.0          # seconds for one KMS call, retries included
GENERATION_WAIT = 60.0      # an HSM key version is PENDING_GENERATION for a moment after CreateCryptoKey

_lock = threading.Lock()
_clients = {}
_signers = OrderedDict()     # (endpoint, key version name) -> CloudKmsSigner, least recently used first


def client(settings):
    """The KeyManagementServiceClient: Cloud KMS, or the loopback stand-in of KMS_ENDPOINT (tests, `make run`)."""
    endpoint = settings.kms_endpoint
    with _lock:
        if endpoint not in _clients:
            from google.auth import exceptions as auth_exceptions
            from google.cloud import kms
            if endpoint:
                import grpc
                channel = grpc.insecure_channel(endpoint)  # settings.check allows loopback only
                transport = kms.KeyManagementServiceClient.get_transport_class("grpc")(channel=channel)
                _clients[endpoint] = kms.KeyManagementServiceClient(transport=transport)
            else:
                try:
                    _clients[endpoint] = kms.KeyManagementServiceClient()
                except auth_exceptions.GoogleAuthError as e:
                    raise SignerError(f"Cloud KMS is out of reach: no credentials ({type(e).__name__}).") from e
        return _clients[endpoint]


def signer(name, settings):
    """The warm CloudKmsSigner of a key version (one GetPublicKey per process, then cached with it)."""
    cache_key = (settings.kms_endpoint, name)
    with _lock:
        found = _signers.get(cache_key)
        if found is not None:
            _signers.move_to_end(cache_key)
            return found
    made = CloudKmsSigner(name, client=client(settings), timeout=RPC_TIMEOUT)
    return _remember(cache_key, made)


def _remember(cache_key, made):
    with _lock:
        _signers[cache_key] = made
        _signers.move_to_end(cache_key)
        while len(_signers) > MAX_SIGNERS:
            _signers.popitem(last=False)
        return made


def require_binding():
    """signer_unsupported (400) where this interpreter cannot bind a remote signer to its TLS contexts."""
    from dyncert import runtime
    binding = runtime.signer_binding()
    if not binding["available"]:
        raise InputError("signer_unsupported", binding["detail"])


def checked_signer(name, settings):
    """A signer for a key version given in a PUT, checked now against KMS (then kept warm for the calls).

    invalid_kms_key: malformed, not found, disabled, not an asymmetric-signing key TLS can use, or
    forbidden to the app; signer_unsupported: this interpreter cannot bind any remote signer.
    """
    if not isinstance(name, str) or not name:
        raise InputError("invalid_kms_key", "The field 'kms_key' must be a Cloud KMS key version name.")
    CloudKmsSigner(name)  # invalid_kms_key if malformed: checked before anything is asked of KMS
    require_binding()
    fresh = CloudKmsSigner(name, client=client(settings), timeout=RPC_TIMEOUT)
    try:
        fresh.public_key()
        fresh.schemes  # noqa: B018 - the algorithm must be one TLS can sign with
    except InputError as e:
        if e.code == "signer_unsupported":  # a signing algorithm TLS cannot use (secp256k1, ...): the key's fault
            raise InputError("invalid_kms_key", e.message) from e
        raise InputError("invalid_kms_key", _explained(e.message)) from e
    return _remember((settings.kms_endpoint, fresh.key_version_name), fresh)


def _explained(message):
    if "PermissionDenied" in message:
        return (message + " The app's service account needs roles/cloudkms.signerVerifier and "
                "roles/cloudkms.publicKeyViewer on the key.")
    return message


def label(public_key, protection):
    """The key_type shown for a KMS key: 'EC P-256 (Cloud KMS, HSM)'."""
    return f"{key_type_label(public_key)} (Cloud KMS, {protection})"


def protection_of(kms_signer):
    """HSM or SOFTWARE (what KMS says of the key version), for the label."""
    try:
        return kms_signer.protection_level
    except DyncertError:
        return "unknown protection"


def create_key(settings, key_type, hint=""):
    """Create an asymmetric-signing key in KMS_KEY_RING; returns the name of its enabled first version."""
    ring = settings.kms_key_ring
    if not ring:
        raise InputError("invalid_request", "'key_location': 'cloud_kms' needs the setting KMS_KEY_RING "
                                            "(projects/P/locations/L/keyRings/R).")
    if not KEY_RING.fullmatch(ring):
        raise InputError("invalid_request", "The setting KMS_KEY_RING is not a key ring name "
                                            "(projects/P/locations/L/keyRings/R); see tools/preflight.py.")
    algorithm = ALGORITHMS.get(key_type)
    if algorithm is None:
        raise InputError("invalid_request", f"'key_type' {str(key_type)[:40]!r} cannot be created in Cloud KMS "
                                            f"for TLS here; use one of {', '.join(ALGORITHMS)}.")
    from google.api_core import exceptions
    from google.cloud import kms
    crypto_key_id = f"dyncert-{re.sub(r'[^A-Za-z0-9_-]', '-', hint)[:40]}-{secrets.token_hex(6)}".replace("--", "-")
    request = {"parent": ring, "crypto_key_id": crypto_key_id, "crypto_key": {
        "purpose": kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
        "version_template": {"algorithm": kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm[algorithm],
                             "protection_level": kms.ProtectionLevel[settings.kms_protection]},
        "labels": {"created-by": "dyncert"}}}
    try:
        created = client(settings).create_crypto_key(request=request, timeout=RPC_TIMEOUT)
        name = f"{created.name}/cryptoKeyVersions/1"
        _wait_enabled(settings, name)
    except exceptions.GoogleAPIError as e:
        raise SignerError(f"Cloud KMS CreateCryptoKey in {ring} failed: {type(e).__name__}: "
                          f"{getattr(e, 'message', e)} (the app needs cloudkms.cryptoKeys.create there).") from e
    log.info("kms_key_created %s", name, extra={"json_fields": {"event": "kms_key_created", "kms_key": name}})
    return name


def _wait_enabled(settings, name):
    """Wait for a new key version to leave PENDING_GENERATION (HSM keys take a moment)."""
    from google.cloud import kms
    state = kms.CryptoKeyVersion.CryptoKeyVersionState
    deadline = time.monotonic() + GENERATION_WAIT
    pause = 0.05
    while True:
        version = client(settings).get_crypto_key_version(request={"name": name}, timeout=RPC_TIMEOUT)
        if version.state == state.ENABLED:
            return
        if version.state != state.PENDING_GENERATION or time.monotonic() > deadline:
            raise SignerError(f"The new key version {name} is {state(version.state).name}, not ENABLED.")
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


def destroy(name, settings):
    """Schedule the destruction of a key version the app created; True if KMS accepted (failures are logged)."""
    from google.api_core import exceptions
    try:
        client(settings).destroy_crypto_key_version(request={"name": name}, timeout=RPC_TIMEOUT)
    except exceptions.GoogleAPIError as e:
        log.warning("kms_destroy_failed %s: %s", name, type(e).__name__,
                    extra={"json_fields": {"event": "kms_destroy_failed", "kms_key": name,
                                           "reason": type(e).__name__}})
        return False
    with _lock:
        _signers.pop((settings.kms_endpoint, name), None)
    log.info("kms_key_destroy_scheduled %s", name,
             extra={"json_fields": {"event": "kms_key_destroy_scheduled", "kms_key": name}})
    return True
