"""ctypes binding of a signer to an SSLContext, against the very libssl/libcrypto CPython's _ssl loaded.

Never a second OpenSSL (google-auth's enterprise certificate signer crashed bundling one). The
certificate goes in with SSL_CTX_use_certificate; the key is a public-only legacy key with our
method, so OpenSSL keeps it on the legacy path where the hooks sit:
  EC:  an EC_KEY_METHOD whose sign hook receives the digest (ECDSA_sign);
  RSA: a non-default RSA_METHOD marks the key foreign, and an EVP_PKEY_METHOD for RSA registered
       with EVP_PKEY_meth_add0 signs above padding: it reads padding, digest and PSS salt length
       from the EVP_PKEY_CTX. The registration is process-wide: keys that are not ours go to the
       default sign function.
The SSL_CTX* is read from the PySSLContext object and checked before use; anything unexpected is
signer_unsupported, naming what is missing, never a crash.
"""

import ctypes
import itertools
import platform
import ssl

import threading
import weakref
from ctypes import (CFUNCTYPE, POINTER, byref, c_char_p, c_int, c_long, c_size_t, c_uint, c_uint64, c_ulong,
                    c_void_p)
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import PublicKeyAlgorithmOID

from ..errors import InputError, SignerError
from . import _sign
from .base import SCHEMES
from .identity import SignerIdentity

_SSL_CTRL_CHAIN_CERT = 89
_SSL_CTRL_SET_CLIENT_SIGALGS_LIST = 102  # the schemes our CertificateVerify may use
_CRYPTO_EX_INDEX_EC_KEY = 8
_CRYPTO_EX_INDEX_RSA = 9
_EVP_PKEY_RSA = 6  # NID_rsaEncryption
_EVP_PKEY_FLAG_AUTOARGLEN = 2
_RSA_PKCS1_PADDING = 1
_RSA_PKCS1_PSS_PADDING = 6
_RSA_PSS_SALTLEN_DIGEST = -1
_NID_HASH = {672: "sha256", 673: "sha384", 674: "sha512"}
_DIGEST_HASH = {32: "sha256", 48: "sha384", 64: "sha512"}
_PROBE_OPTION = 0x00400000  # SSL_OP_CIPHER_SERVER_PREFERENCE: no effect on a client, safe to flip

_EC_SIGN = CFUNCTYPE(c_int, c_int, c_void_p, c_int, c_void_p, POINTER(c_uint), c_void_p, c_void_p, c_void_p)
_PKEY_SIGN = CFUNCTYPE(c_int, c_void_p, c_void_p, POINTER(c_size_t), c_void_p, c_size_t)

# (name, restype, argtypes) of every function used: all must be present, else signer_unsupported.
_FUNCTIONS: tuple[tuple[str, Any, list[Any]], ...] = (
    ("OpenSSL_version_num", c_ulong, []),
    ("SSL_CTX_get_options", c_uint64, [c_void_p]),
    ("SSL_CTX_get_verify_mode", c_int, [c_void_p]),
    ("SSL_CTX_use_certificate", c_int, [c_void_p, c_void_p]),
    ("SSL_CTX_use_PrivateKey", c_int, [c_void_p, c_void_p]),
    ("SSL_CTX_ctrl", c_long, [c_void_p, c_int, c_long, c_void_p]),
    ("ERR_clear_error", None, []),
    ("d2i_X509", c_void_p, [c_void_p, POINTER(c_char_p), c_long]),
    ("X509_free", None, [c_void_p]),
    ("EVP_PKEY_new", c_void_p, []),
    ("EVP_PKEY_free", None, [c_void_p]),
    ("CRYPTO_get_ex_new_index", c_int, [c_int, c_long, c_void_p, c_void_p, c_void_p, c_void_p]),
    ("d2i_EC_PUBKEY", c_void_p, [c_void_p, POINTER(c_char_p), c_long]),
    ("EC_KEY_free", None, [c_void_p]),
    ("EC_KEY_OpenSSL", c_void_p, []),
    ("EC_KEY_METHOD_new", c_void_p, [c_void_p]),
    ("EC_KEY_METHOD_get_sign", None, [c_void_p, POINTER(c_void_p), POINTER(c_void_p), POINTER(c_void_p)]),
    ("EC_KEY_METHOD_set_sign", None, [c_void_p, c_void_p, c_void_p, c_void_p]),
    ("EC_KEY_set_method", c_int, [c_void_p, c_void_p]),
    ("EC_KEY_set_ex_data", c_int, [c_void_p, c_int, c_void_p]),
    ("EC_KEY_get_ex_data", c_void_p, [c_void_p, c_int]),
    ("ECDSA_size", c_int, [c_void_p]),
    ("EVP_PKEY_set1_EC_KEY", c_int, [c_void_p, c_void_p]),
    ("d2i_RSA_PUBKEY", c_void_p, [c_void_p, POINTER(c_char_p), c_long]),
    ("RSA_free", None, [c_void_p]),
    ("RSA_PKCS1_OpenSSL", c_void_p, []),
    ("RSA_meth_dup", c_void_p, [c_void_p]),
    ("RSA_meth_set1_name", c_int, [c_void_p, c_char_p]),
    ("RSA_set_method", c_int, [c_void_p, c_void_p]),
    ("RSA_get_method", c_void_p, [c_void_p]),
    ("RSA_set_ex_data", c_int, [c_void_p, c_int, c_void_p]),
    ("RSA_get_ex_data", c_void_p, [c_void_p, c_int]),
    ("RSA_size", c_int, [c_void_p]),
    ("EVP_PKEY_set1_RSA", c_int, [c_void_p, c_void_p]),
    ("EVP_PKEY_meth_find", c_void_p, [c_int]),
    ("EVP_PKEY_meth_new", c_void_p, [c_int, c_int]),
    ("EVP_PKEY_meth_copy", None, [c_void_p, c_void_p]),
    ("EVP_PKEY_meth_get_sign", None, [c_void_p, POINTER(c_void_p), POINTER(c_void_p)]),
    ("EVP_PKEY_meth_set_sign", None, [c_void_p, c_void_p, c_void_p]),
    ("EVP_PKEY_meth_add0", c_int, [c_void_p]),
    ("EVP_PKEY_CTX_get0_pkey", c_void_p, [c_void_p]),
    ("EVP_PKEY_get0_RSA", c_void_p, [c_void_p]),
    ("EVP_PKEY_CTX_get_signature_md", c_int, [c_void_p, POINTER(c_void_p)]),
    ("EVP_PKEY_CTX_get_rsa_padding", c_int, [c_void_p, POINTER(c_int)]),
    ("EVP_PKEY_CTX_get_rsa_pss_saltlen", c_int, [c_void_p, POINTER(c_int)]),
    ("EVP_PKEY_CTX_get_rsa_mgf1_md", c_int, [c_void_p, POINTER(c_void_p)]),
    ("EVP_MD_get_type", c_int, [c_void_p]),
)


class _Lib:
    """The OpenSSL functions of _ssl's own libssl/libcrypto, and the process-wide methods and hooks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bound: dict[int, "_Bound"] = {}  # handle (in the key's ex_data) -> what signs for it
        self.handles = itertools.count(1)
        self.ec_method: int | None = None
        self.rsa_method: int | None = None
        self.default_rsa_sign: Any = None
        self.ec_index = self.rsa_index = -1
        self.fn: dict[str, Any] = {}

    def load(self) -> None:
        """Find _ssl's library and every function; InputError(signer_unsupported) naming what is missing."""
        if platform.python_implementation() != "CPython":
            raise _unsupported(f"dyncert binds signers on CPython only, found {platform.python_implementation()}.")
        import _ssl
        path = getattr(_ssl, "__file__", None)
        if not path:
            raise _unsupported("this interpreter's _ssl is built into it with a static OpenSSL whose symbols are "
                               "hidden (e.g. the Cloud CLI's bundled Python): dyncert cannot reach its libssl.")
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise _unsupported(f"_ssl's library would not load through ctypes ({e}).") from e
        missing = []
        for name, restype, argtypes in _FUNCTIONS:
            try:
                function = getattr(lib, name)
            except AttributeError:
                missing.append(name)
                continue
            function.restype, function.argtypes = restype, argtypes
            self.fn[name] = function
        if missing:
            raise _unsupported(f"_ssl's OpenSSL ({ssl.OPENSSL_VERSION}) lacks {', '.join(missing)}.")
        if self.fn["OpenSSL_version_num"]() != ssl.OPENSSL_VERSION_NUMBER:
            raise _unsupported("the OpenSSL reached through _ssl's library is not the one ssl reports "
                               f"({ssl.OPENSSL_VERSION}).")
        self.ec_index = self.fn["CRYPTO_get_ex_new_index"](_CRYPTO_EX_INDEX_EC_KEY, 0, None, None, None, None)
        self.rsa_index = self.fn["CRYPTO_get_ex_new_index"](_CRYPTO_EX_INDEX_RSA, 0, None, None, None, None)
        if self.ec_index < 0 or self.rsa_index < 0:
            raise _unsupported("OpenSSL gave no ex_data index for EC or RSA keys.")
        self._make_ec_method()
        self._make_rsa_methods()

    def _make_ec_method(self) -> None:
        f = self.fn
        method = f["EC_KEY_METHOD_new"](f["EC_KEY_OpenSSL"]())
        if not method:
            raise _unsupported("EC_KEY_METHOD_new failed.")
        setup, sign_sig = c_void_p(), c_void_p()
        f["EC_KEY_METHOD_get_sign"](method, None, byref(setup), byref(sign_sig))
        f["EC_KEY_METHOD_set_sign"](method, ctypes.cast(_ec_sign_hook, c_void_p), setup, sign_sig)
        self.ec_method = method

    def _make_rsa_methods(self) -> None:
        f = self.fn
        method = f["RSA_meth_dup"](f["RSA_PKCS1_OpenSSL"]())
        default = f["EVP_PKEY_meth_find"](_EVP_PKEY_RSA)
        ours = f["EVP_PKEY_meth_new"](_EVP_PKEY_RSA, _EVP_PKEY_FLAG_AUTOARGLEN)
        if not (method and default and ours):
            raise _unsupported("OpenSSL would not make an RSA_METHOD or an EVP_PKEY_METHOD for RSA.")
        f["RSA_meth_set1_name"](method, b"dyncert signer")
        f["EVP_PKEY_meth_copy"](ours, default)
        sign_init, sign = c_void_p(), c_void_p()
        f["EVP_PKEY_meth_get_sign"](default, byref(sign_init), byref(sign))
        if not sign.value:
            raise _unsupported("OpenSSL's RSA EVP_PKEY_METHOD has no sign function to fall back to.")
        self.default_rsa_sign = _PKEY_SIGN(sign.value)
        f["EVP_PKEY_meth_set_sign"](ours, sign_init, ctypes.cast(_rsa_sign_hook, c_void_p))
        if f["EVP_PKEY_meth_add0"](ours) != 1:
            raise _unsupported("EVP_PKEY_meth_add0 refused the RSA method.")
        self.rsa_method = method


_lib = _Lib()
_load_lock = threading.Lock()
_load_error: InputError | None = None
_loaded = False


def _unsupported(why: str) -> InputError:
    return InputError("signer_unsupported", f"This interpreter cannot bind a signer to its TLS contexts: {why}")


def ensure_loaded() -> None:
    """Load the binding once per process; raise its signer_unsupported every time if it cannot load."""
    global _loaded, _load_error
    with _load_lock:
        if not _loaded and _load_error is None:
            try:
                _lib.load()
                _loaded = True
            except InputError as e:
                _load_error = e
        if _load_error is not None:
            raise InputError(_load_error.code, _load_error.message)


def availability() -> tuple[bool, str]:
    """(can this interpreter bind a signer, why not / how), for status pages."""
    try:
        ensure_loaded()
    except InputError as e:
        return False, e.message
    return True, f"ctypes binding to _ssl's {ssl.OPENSSL_VERSION}"


# --- hooks (called by OpenSSL inside SSL_do_handshake, on the handshake's thread) -------------

class _Bound:
    """What signs for one bound key: the identity's signer, its public key and schemes."""

    def __init__(self, identity: SignerIdentity, max_size: int) -> None:
        self.signer = identity.signer
        self.public_key = identity.public_key
        self.schemes = frozenset(identity.schemes)
        self.sign_timeout = identity.sign_timeout
        self.max_size = max_size

    def sign(self, digest: bytes, scheme: str) -> bytes:
        if scheme not in self.schemes:
            raise SignerError(f"OpenSSL asked for {scheme}, a scheme this signer does not offer "
                              f"({', '.join(sorted(self.schemes))}).")
        return _sign.sign(self.signer, self.public_key, digest, scheme, self.sign_timeout, self.max_size)


def _signed(handle: int | None, digest: bytes, scheme_of: Any) -> bytes | None:
    """The signature for the key with `handle`, or None with the failure recorded for the caller."""
    try:
        bound = _lib.bound.get(handle or 0)
        if bound is None:
            raise SignerError("The signer of this key is gone (its context was dropped).")
        return bound.sign(digest, scheme_of(bound))
    except SignerError as e:
        _sign.record_failure(e)
    except BaseException as e:  # noqa: BLE001 - a hook must never let an exception reach OpenSSL
        error = SignerError(f"The signer binding failed: {type(e).__name__}: {str(e)[:200]}")
        error.__cause__ = e
        _sign.record_failure(error)
    return None


def _ec_sign(_type: int, dgst: int, dlen: int, sig: int, siglen: Any, _kinv: int, _r: int, eckey: int) -> int:
    """EC_KEY_METHOD sign: the digest in, a DER ECDSA signature out (at most ECDSA_size bytes)."""
    digest = ctypes.string_at(dgst, dlen)
    handle = _lib.fn["EC_KEY_get_ex_data"](eckey, _lib.ec_index)
    hash_name = _DIGEST_HASH.get(dlen)

    def scheme_of(bound: _Bound) -> str:
        if hash_name is None:
            raise SignerError(f"OpenSSL asked for an ECDSA signature of a {dlen}-byte digest; "
                              "dyncert's schemes take SHA-256, SHA-384 or SHA-512.")
        return f"ecdsa_{hash_name}"

    signature = _signed(handle, digest, scheme_of)
    if signature is None:
        return 0
    ctypes.memmove(sig, signature, len(signature))
    siglen[0] = len(signature)
    return 1


def _rsa_sign(ctx: int, sig: int, siglen: Any, tbs: int, tbslen: int) -> int:
    """EVP_PKEY_METHOD sign for RSA: ours signs above padding; every other key goes to OpenSSL's own."""
    f = _lib.fn
    rsa_key = f["EVP_PKEY_get0_RSA"](f["EVP_PKEY_CTX_get0_pkey"](ctx))
    if not rsa_key or f["RSA_get_method"](rsa_key) != _lib.rsa_method:
        return int(_lib.default_rsa_sign(ctx, sig, siglen, tbs, tbslen))
    size = f["RSA_size"](rsa_key)
    if not sig:
        siglen[0] = size
        return 1
    digest = ctypes.string_at(tbs, tbslen)
    handle = f["RSA_get_ex_data"](rsa_key, _lib.rsa_index)

    def scheme_of(bound: _Bound) -> str:
        md, pad, salt, mgf1 = c_void_p(), c_int(), c_int(), c_void_p()
        if f["EVP_PKEY_CTX_get_signature_md"](ctx, byref(md)) <= 0 or not md.value:
            raise SignerError("OpenSSL asked for an RSA signature without a digest (raw RSA), which no scheme covers.")
        hash_name = _NID_HASH.get(f["EVP_MD_get_type"](md))
        f["EVP_PKEY_CTX_get_rsa_padding"](ctx, byref(pad))
        if hash_name is None or len(digest) != SCHEMES[f"rsa_pss_{hash_name}"].digest_size:
            raise SignerError("OpenSSL asked for an RSA signature with a hash outside SHA-256/384/512.")
        if pad.value == _RSA_PKCS1_PADDING:
            return f"rsa_pkcs1_{hash_name}"
        if pad.value != _RSA_PKCS1_PSS_PADDING:
            raise SignerError(f"OpenSSL asked for RSA padding {pad.value}; signers do PKCS#1 v1.5 or PSS.")
        f["EVP_PKEY_CTX_get_rsa_pss_saltlen"](ctx, byref(salt))
        f["EVP_PKEY_CTX_get_rsa_mgf1_md"](ctx, byref(mgf1))
        if salt.value not in (_RSA_PSS_SALTLEN_DIGEST, len(digest)) or (
                mgf1.value and _NID_HASH.get(f["EVP_MD_get_type"](mgf1)) != hash_name):
            raise SignerError("OpenSSL asked for RSA-PSS with a salt length or MGF1 hash other than the digest's, "
                              "which signers (Cloud KMS) do not make.")
        return f"rsa_pss_{hash_name}"

    signature = _signed(handle, digest, scheme_of)
    if signature is None:
        return 0
    if len(signature) != size or siglen[0] < size:
        _sign.record_failure(SignerError(f"Expected an RSA signature of {size} bytes, found {len(signature)}."))
        return 0
    ctypes.memmove(sig, signature, size)
    siglen[0] = size
    return 1


# Module-level: OpenSSL holds these function pointers for the life of the process.
_ec_sign_hook = _EC_SIGN(_ec_sign)
_rsa_sign_hook = _PKEY_SIGN(_rsa_sign)


# --- binding ---------------------------------------------------------------------------------

def ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The SSL_CTX* of `ctx`, read from the PySSLContext and checked (as google-auth reads it)."""
    import _ssl
    if not isinstance(ctx, _ssl._SSLContext):
        raise _unsupported(f"expected an ssl.SSLContext, found {type(ctx).__name__}.")
    offset = object.__basicsize__  # PyObject_HEAD, then `SSL_CTX *ctx` (Modules/_ssl.c PySSLContext)
    if _ssl._SSLContext.__basicsize__ < offset + ctypes.sizeof(c_void_p):
        raise _unsupported("the PySSLContext layout is not the one dyncert knows.")
    pointer = c_void_p.from_address(id(ctx) + offset).value
    if not pointer or pointer % ctypes.sizeof(c_void_p):
        raise _unsupported("the PySSLContext holds no SSL_CTX where dyncert expects it.")
    get_options = _lib.fn["SSL_CTX_get_options"]
    before = ctx.options
    peer_verified = bool(_lib.fn["SSL_CTX_get_verify_mode"](pointer) & 1)  # SSL_VERIFY_PEER
    matches = get_options(pointer) == int(before) and peer_verified == (ctx.verify_mode != ssl.CERT_NONE)
    if matches:  # flip an option a client ignores: the pointer must follow it
        ctx.options = before ^ _PROBE_OPTION
        matches = get_options(pointer) == int(before) ^ _PROBE_OPTION
        ctx.options = before
    if not matches:
        raise _unsupported("the SSL_CTX found in the PySSLContext does not answer as the context does.")
    return pointer


def bind(ctx: ssl.SSLContext, identity: SignerIdentity) -> None:
    """Give `ctx` the identity's chain and a key whose signatures come from its signer."""
    ensure_loaded()
    if identity.leaf.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        raise _unsupported("an RSA-PSS (id-RSASSA-PSS) certificate key; issue the certificate for an "
                           "rsaEncryption key (the signer may still offer only PSS schemes).")
    key = identity.public_key
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise _unsupported(f"a {identity.key_type} key: dyncert's binding hooks EC and RSA signing; "
                           "Ed25519 would need an OpenSSL provider (its keys never take the legacy path).")
    f = _lib.fn
    pointer = ssl_ctx_pointer(ctx)
    f["ERR_clear_error"]()
    _use_chain(pointer, identity.chain_der)
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    handle = next(_lib.handles)
    pkey = _legacy_key(spki, isinstance(key, ec.EllipticCurvePublicKey), handle)
    try:
        size = (key.key_size + 7) // 8 if isinstance(key, rsa.RSAPublicKey) else _ecdsa_max(key)
        _lib.bound[handle] = _Bound(identity, size)
        weakref.finalize(ctx, _lib.bound.pop, handle, None)  # the key dies with the SSL_CTX, after this
        if f["SSL_CTX_use_PrivateKey"](pointer, pkey) != 1:
            f["ERR_clear_error"]()
            raise _unsupported("OpenSSL refused the signer's key for the certificate.")
    finally:
        f["EVP_PKEY_free"](pkey)  # the SSL_CTX holds its own reference
    sigalgs = ":".join(SCHEMES[name].openssl for name in identity.schemes).encode("ascii")
    if f["SSL_CTX_ctrl"](pointer, _SSL_CTRL_SET_CLIENT_SIGALGS_LIST, 0, c_char_p(sigalgs)) != 1:
        f["ERR_clear_error"]()
        raise _unsupported(f"OpenSSL refused the signature algorithms {sigalgs.decode()}.")


def _ecdsa_max(key: ec.EllipticCurvePublicKey) -> int:
    """The largest DER ECDSA signature for the key's curve (as ECDSA_size)."""
    n = (key.curve.key_size + 7) // 8 + 1  # an INTEGER may need a leading zero
    body = 2 * (2 + n)
    return body + (2 if body < 128 else 3)


def _d2i(function: str, der: bytes) -> int:
    """d2i_* of `der` through OpenSSL; 0 on failure."""
    buffer = c_char_p(der)
    return int(_lib.fn[function](None, byref(buffer), len(der)) or 0)


def _use_chain(pointer: int, chain_der: tuple[bytes, ...]) -> None:
    """Leaf with SSL_CTX_use_certificate, issuers with SSL_CTX_add1_chain_cert."""
    f = _lib.fn
    for position, der in enumerate(chain_der):
        x509 = _d2i("d2i_X509", der)
        if not x509:
            f["ERR_clear_error"]()
            raise InputError("invalid_certificate", f"OpenSSL would not parse certificate {position + 1} of the chain.")
        try:
            ok = f["SSL_CTX_use_certificate"](pointer, x509) if position == 0 else \
                f["SSL_CTX_ctrl"](pointer, _SSL_CTRL_CHAIN_CERT, 1, x509)  # add1: takes its own reference
        finally:
            f["X509_free"](x509)
        if ok != 1:
            f["ERR_clear_error"]()
            raise InputError("invalid_certificate", f"OpenSSL refused certificate {position + 1} of the chain.")


def _legacy_key(spki: bytes, is_ec: bool, handle: int) -> int:
    """A new EVP_PKEY holding the public key with our method and `handle` in its ex_data."""
    f = _lib.fn
    inner = _d2i("d2i_EC_PUBKEY" if is_ec else "d2i_RSA_PUBKEY", spki)
    if not inner:
        f["ERR_clear_error"]()
        raise _unsupported("OpenSSL would not read the signer's public key.")
    pkey = 0
    try:
        if is_ec:
            ok = f["EC_KEY_set_method"](inner, _lib.ec_method) == 1 and \
                f["EC_KEY_set_ex_data"](inner, _lib.ec_index, c_void_p(handle)) == 1
        else:
            ok = f["RSA_set_method"](inner, _lib.rsa_method) == 1 and \
                f["RSA_set_ex_data"](inner, _lib.rsa_index, c_void_p(handle)) == 1
        pkey = f["EVP_PKEY_new"]() or 0
        ok = ok and bool(pkey) and f["EVP_PKEY_set1_EC_KEY" if is_ec else "EVP_PKEY_set1_RSA"](pkey, inner) == 1
        if not ok:
            if pkey:
                f["EVP_PKEY_free"](pkey)
            f["ERR_clear_error"]()
            raise _unsupported("OpenSSL would not take dyncert's key method.")
        return pkey
    finally:
        f["EC_KEY_free" if is_ec else "RSA_free"](inner)  # the EVP_PKEY holds its own reference


