"""Pkcs11Signer: a client key held by a PKCS#11 token or HSM (SoftHSM2, a network HSM, a smart card).

python-pkcs11 is imported on first use, never with dyncert (the wheel's extra `pkcs11` brings it).
The token signs the handshake's digest with the raw mechanisms (CKM_ECDSA, CKM_RSA_PKCS over a
DigestInfo, CKM_RSA_PKCS_PSS with MGF1 of the same hash and salt = digest length, CKM_EDDSA), so one
key offers every TLS scheme of its type that the token's mechanisms allow.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import InputError, SignerError
from .base import SCHEMES, default_schemes

if TYPE_CHECKING:
    from pkcs11 import Session, SignMixin, Token

# DER DigestInfo prefixes (RFC 8017, section 9.2 note 1): CKM_RSA_PKCS pads what it is given.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# The token mechanism each family of schemes needs (names of pkcs11.Mechanism).
_MECHANISMS = {"ec": "ECDSA", "pkcs1": "RSA_PKCS", "pss": "RSA_PKCS_PSS", "ed25519": "EDDSA"}


# PKCS#11 logs in an application, not a session, and closing a logged-in session logs the whole
# process out (python-pkcs11's Session.close calls C_Logout). So the process logs in once per token,
# through one session kept open, and every signer signs through a session of its own that never
# logged in (closing it logs nobody out). (module, token serial) -> that logged-in session.
_logins: dict[tuple[str, bytes], Session] = {}
_logins_lock = threading.Lock()
os.register_at_fork(after_in_child=_logins.clear)  # a child has no session of its parent's


def _log_in(module: str, token: Token, pin: str, again: bool = False) -> None:
    """Log this process in to `token` once (again=True: the login was lost, make a new one)."""
    import pkcs11
    with _logins_lock:
        key = (module, token.serial)
        if key in _logins and not again:
            return
        old = _logins.pop(key, None)
        if old is not None:
            try:
                old.close()
            except pkcs11.exceptions.PKCS11Error:
                pass  # logged out or closed already: that is why we are here
        try:
            _logins[key] = token.open(user_pin=pin)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            pass  # logged in by other code of this process: its login serves our sessions too
        except (pkcs11.exceptions.PinIncorrect, pkcs11.exceptions.PinLenRange, pkcs11.exceptions.PinLocked,
                pkcs11.exceptions.PinExpired) as error:
            raise InputError("wrong_password", f"The token {token.label!r} refused the PIN: "
                             f"{type(error).__name__}.") from error


def open_session(module: str, token_label: str, pin: str | None, rw: bool = False) -> Session:
    """A session on the token, the process logged in with `pin`; closing it never logs the process out."""
    import pkcs11
    token = pkcs11.lib(module).get_token(token_label=token_label)
    if pin is not None:
        _log_in(module, token, pin)
    return token.open(rw=rw)


def _needed_mechanism(scheme: str) -> str:
    spec = SCHEMES[scheme]
    return _MECHANISMS[spec.padding or spec.family]


class Pkcs11Signer:
    """Signs with a private key on a PKCS#11 token; the key never leaves the token.

    module: the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so); the token by label (or
    serial), the key by label and/or id; pin: the user PIN. `schemes` narrows what is offered.
    """

    def __init__(self, module: str, *, token_label: str | None = None, token_serial: str | None = None,
                 key_label: str | None = None, key_id: bytes | None = None, pin: str | None = None,
                 schemes: Collection[str] | None = None) -> None:
        if key_label is None and key_id is None:
            raise InputError("invalid_request", "Expected key_label or key_id to find the key on the token.")
        if token_label is None and token_serial is None:
            raise InputError("invalid_request", "Expected token_label or token_serial to find the token.")
        self.module = module
        self.token_label, self.token_serial = token_label, token_serial
        self.key_label, self.key_id = key_label, key_id
        self._pin = pin
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._session: Session | None = None
        self._key: SignMixin | None = None
        with self._lock:
            self._open()
            self._public = self._read_public_key()
            self.schemes = self._offered(schemes)

    def __repr__(self) -> str:
        what = f"label={self.key_label!r}" if self.key_label is not None else f"id={self.key_id!r}"
        return f"Pkcs11Signer(token={self.token_label or self.token_serial!r}, key {what})"

    def cache_key(self) -> tuple[object, ...]:
        """The token, the key and the schemes offered (the same key may be offered PSS-only)."""
        return (self.module, self.token_label, self.token_serial, self.key_label, self.key_id, tuple(self.schemes))

    def public_key(self) -> PublicKeyTypes:
        """The key's public half, read from the token once."""
        return self._public

    def sign(self, data: bytes, scheme: str) -> bytes:
        """Sign `data` (the digest; the message for ed25519) on the token."""
        if scheme not in self.schemes:
            raise SignerError(f"{self!r} does not offer {scheme}; it offers {', '.join(self.schemes)}.")
        if os.getpid() != self._pid:
            # PKCS#11 sessions do not survive fork (the child must C_Initialize again).
            raise SignerError(f"{self!r} was opened in process {self._pid}: make the signer after fork.")
        import pkcs11
        spec = SCHEMES[scheme]
        data = bytes(data)
        if spec.hash is not None and len(data) != spec.digest_size:
            raise SignerError(f"{scheme} signs a {spec.digest_size}-byte digest, given {len(data)} bytes.")
        with self._lock:
            try:
                return self._sign_once(data, scheme)
            except (pkcs11.exceptions.SessionClosed, pkcs11.exceptions.SessionHandleInvalid,
                    pkcs11.exceptions.UserNotLoggedIn, pkcs11.exceptions.KeyHandleInvalid,
                    pkcs11.exceptions.ObjectHandleInvalid):
                # The session or the login is gone (a restarted HSM, a lost link, other code that
                # logged the process out): log in and open anew, once.
                self._open(log_in_again=True)
                try:
                    return self._sign_once(data, scheme)
                except pkcs11.exceptions.PKCS11Error as error:
                    raise self._failed(scheme, error) from error
            except pkcs11.exceptions.PKCS11Error as error:
                raise self._failed(scheme, error) from error

    def close(self) -> None:
        """Close the session (signing after this opens a new one)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = self._key = None

    def _failed(self, scheme: str, error: Exception) -> SignerError:
        return SignerError(f"The token refused to sign ({scheme}) for {self!r}: {type(error).__name__} {error}")

    def _sign_once(self, data: bytes, scheme: str) -> bytes:
        from pkcs11 import MGF, Mechanism
        if self._key is None:
            self._open()
        key = self._key
        assert key is not None
        spec = SCHEMES[scheme]
        if spec.family == "ec":
            raw = key.sign(data, mechanism=Mechanism.ECDSA)
            half = len(raw) // 2  # r || s, each the size of the curve's order
            return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        if spec.family == "ed25519":
            return key.sign(data, mechanism=Mechanism.EDDSA)
        hash_name = spec.hash or ""
        if spec.padding == "pkcs1":
            return key.sign(_DIGEST_INFO[hash_name] + data, mechanism=Mechanism.RSA_PKCS)
        pss = (getattr(Mechanism, hash_name.upper()), getattr(MGF, hash_name.upper()), spec.digest_size)
        return key.sign(data, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=pss)

    def _open(self, log_in_again: bool = False) -> None:
        """(Re)open a session, the process logged in, and find the private key; typed errors for what is missing."""
        import pkcs11
        from pkcs11 import ObjectClass, SignMixin
        if self._session is not None:
            try:
                self._session.close()
            except pkcs11.exceptions.PKCS11Error:
                pass  # the old session is gone already
            self._session = self._key = None
        try:
            library = pkcs11.lib(self.module)
        except (OSError, RuntimeError, pkcs11.exceptions.PKCS11Error) as error:
            raise InputError("signer_unsupported", f"Cannot load the PKCS#11 module {self.module!r}: "
                             f"{type(error).__name__}.") from error
        found: dict[str, Any] = {}
        if self.token_label is not None:
            found["token_label"] = self.token_label
        if self.token_serial is not None:
            found["token_serial"] = self.token_serial.encode()
        try:
            token = library.get_token(**found)
        except (pkcs11.exceptions.NoSuchToken, pkcs11.exceptions.MultipleTokensReturned) as error:
            raise InputError("signer_unsupported", f"Expected one token {self.token_label or self.token_serial!r} "
                             f"in {self.module}: {type(error).__name__}.") from error
        if self._pin is not None:
            _log_in(self.module, token, self._pin, again=log_in_again)
        session = token.open()  # never logged in itself: closing it logs nobody out
        try:
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self.key_label, id=self.key_id)
        except (pkcs11.exceptions.NoSuchKey, pkcs11.exceptions.MultipleObjectsReturned) as error:
            session.close()
            raise InputError("invalid_key", f"Expected one private key {self._which()} on the token "
                             f"{token.label!r}: {type(error).__name__}.") from error
        if not isinstance(key, SignMixin):
            session.close()
            raise InputError("invalid_key", f"The token's key {self._which()} cannot sign.")
        self._session, self._key = session, key

    def _which(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in (("label", self.key_label), ("id", self.key_id)) if v is not None)

    def _read_public_key(self) -> PublicKeyTypes:
        """The public half: from the private key's own attributes (RSA) or its public object (EC, EdDSA)."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass, PrivateKey, PublicKey
        from pkcs11.util.ec import encode_ec_public_key
        key, session = self._key, self._session
        assert isinstance(key, PrivateKey) and session is not None
        if key.key_type == KeyType.RSA:
            numbers = rsa.RSAPublicNumbers(int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
                                           int.from_bytes(key[Attribute.MODULUS], "big"))
            return numbers.public_key()
        try:
            public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=key.label, id=key.id)
        except (pkcs11.exceptions.NoSuchKey, pkcs11.exceptions.MultipleObjectsReturned):
            public = None
        if not isinstance(public, PublicKey):
            raise InputError("invalid_key", f"Expected the public key {self._which()} next to the private "
                             f"key on the token (needed for {key.key_type.name}).")
        if key.key_type == KeyType.EC:
            loaded = serialization.load_der_public_key(encode_ec_public_key(public))
            if isinstance(loaded, ec.EllipticCurvePublicKey):
                return loaded
        elif key.key_type == KeyType.EC_EDWARDS:
            point = bytes(public[Attribute.EC_POINT])
            if len(point) == 34 and point[:2] == b"\x04\x20":
                point = point[2:]  # a DER OCTET STRING around the 32 bytes (SoftHSM2 wraps it)
            return ed25519.Ed25519PublicKey.from_public_bytes(point)
        raise InputError("signer_unsupported", f"Expected an EC, RSA or Ed25519 key on the token, "
                         f"found {key.key_type.name}.")

    def _offered(self, schemes: Collection[str] | None) -> tuple[str, ...]:
        """The key type's schemes that the token's mechanisms allow, narrowed to `schemes` if given."""
        from pkcs11 import Mechanism
        assert self._session is not None
        mechanisms = {m.name for m in self._session.token.slot.get_mechanisms() if isinstance(m, Mechanism)}
        candidates = default_schemes(self._public)
        if schemes is not None:
            unknown = [s for s in schemes if s not in candidates]
            if unknown:
                raise InputError("signer_unsupported", f"{', '.join(map(str, unknown))} cannot sign with the "
                                 f"key's type; it takes {', '.join(candidates)}.")
            candidates = tuple(s for s in candidates if s in schemes)
        offered = tuple(s for s in candidates if _needed_mechanism(s) in mechanisms)
        if not offered:
            missing = sorted({_needed_mechanism(s) for s in candidates})
            raise InputError("signer_unsupported", f"The token offers none of the mechanisms "
                             f"{', '.join('CKM_' + m for m in missing)} for this key.")
        return offered
