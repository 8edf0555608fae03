"""Envelope encryption of private keys at rest: AES-256-GCM data keys wrapped by a KEK."""

import functools
import os
import secrets
import threading
from collections import OrderedDict

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12  # the GCM standard nonce size


class SealingUnavailable(Exception):
    """No key-encryption key is configured where one is required."""


class UnsealError(Exception):
    """A sealed value could not be opened (wrong KEK, tampered, or moved to another entity)."""


class RecordTampered(UnsealError):
    """The data key opened but the sealed key did not: its record was altered or moved outside the app."""


class LocalKek:
    """A key-encryption key in a local file (development only), made on first use."""

    def __init__(self, path):
        self.path = path
        self._key = None
        self._lock = threading.Lock()

    @property
    def kek_id(self):
        return "local:" + os.path.basename(self.path)

    def _load(self):
        with self._lock:
            if self._key is None:
                self._key = self._read_or_create()
            return self._key

    def _read_or_create(self):
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        try:
            # O_EXCL: two processes starting at once must not each write a different key.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with open(self.path, "rb") as f:
                return f.read()
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key

    def wrap(self, dek):
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self._load()).encrypt(nonce, dek, b"dek")

    def unwrap(self, wrapped):
        return AESGCM(self._load()).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"dek")


class KmsKek:
    """A key-encryption key held by Cloud KMS; wrapped data keys are cached once opened."""

    def __init__(self, key_name, cache_size=1024):
        self.key_name = key_name
        self.kek_id = "kms:" + key_name
        self._client = None
        self._opened = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _kms(self):
        if self._client is None:
            from google.cloud import kms  # imported lazily: only production needs it
            self._client = kms.KeyManagementServiceClient()
        return self._client

    def wrap(self, dek):
        return self._kms().encrypt(request={"name": self.key_name, "plaintext": dek}).ciphertext

    def unwrap(self, wrapped):
        # One KMS round trip per data key, not per call: calls must stay fast.
        with self._lock:
            if wrapped in self._opened:
                self._opened.move_to_end(wrapped)
                return self._opened[wrapped]
        dek = self._kms().decrypt(request={"name": self.key_name, "ciphertext": wrapped}).plaintext
        with self._lock:
            self._opened[wrapped] = dek
            while len(self._opened) > self._cache_size:
                self._opened.popitem(last=False)
        return dek


@functools.lru_cache(maxsize=8)
def kek_for(kms_key_name, local_kek_file, on_app_engine, allow_local):
    """The KEK these settings call for (one object per configuration)."""
    if kms_key_name:
        return KmsKek(kms_key_name)
    if on_app_engine and not allow_local:
        raise SealingUnavailable(
            "Set KMS_KEY_NAME to a Cloud KMS key before storing private keys on App Engine "
            "(or ALLOW_LOCAL_KEK=1 to accept a key file deployed with the app).")
    return LocalKek(local_kek_file)


def kek_from_settings(settings):
    """The KEK for an app's settings."""
    return kek_for(settings.kms_key_name, settings.local_kek_file, settings.on_app_engine,
                   settings.allow_local_kek_on_app_engine)


def seal(kek, plaintext, context):
    """Encrypt `plaintext` under a fresh data key bound to `context`; returns (wrapped_dek, blob)."""
    dek = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE_BYTES)
    return kek.wrap(dek), nonce + AESGCM(dek).encrypt(nonce, plaintext, context)


def reseal(kek, wrapped_dek, plaintext, context):
    """Encrypt `plaintext` again under the data key `wrapped_dek` wraps, bound to a new `context` (a fresh
    nonce; no new data key, so no KMS encrypt call when a write re-binds a key that did not change)."""
    try:
        dek = kek.unwrap(wrapped_dek)
    except Exception as e:  # as in unseal: the caller needs one clear reason
        raise UnsealError(f"The stored private key could not be decrypted ({type(e).__name__}).") from None
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, context)


def unseal(kek, wrapped_dek, blob, context):
    """Decrypt what `seal` made, checking it belongs to `context`."""
    try:
        dek = kek.unwrap(wrapped_dek)
    except Exception as e:  # InvalidTag, KMS errors: the caller needs one clear reason
        raise UnsealError(f"The stored private key could not be decrypted ({type(e).__name__}).") from None
    try:
        return AESGCM(dek).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
    except Exception:  # the KEK is right, so the record around the key is not the one it was sealed with
        raise RecordTampered("The stored record does not match its sealed key: its target, trust or "
                             "certificate was changed outside this app. It is not used; replace it.") from None
