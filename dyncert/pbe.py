"""Password-based encryption of PKCS#8 keys, by hand where cryptography would change the key's type."""

import os

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from . import der

OID_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")
OID_PBES2 = bytes.fromhex("2a864886f70d01050d")
OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")
OID_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")
OID_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42


def _oid(value):
    return der.tlv(0x06, value)


def pkcs8_algorithm(pkcs8_der):
    """The algorithm OID (content bytes) of an unencrypted PKCS#8 PrivateKeyInfo."""
    _, start, end = der.item(pkcs8_der, 0)
    algorithm = der.children(pkcs8_der, start, end)[1]
    tag, os_, oe, _ = der.children(pkcs8_der, algorithm[1], algorithm[2])[0]
    if tag != 0x06:
        raise ValueError("no algorithm OID")
    return pkcs8_der[os_:oe]


def encrypt_pkcs8(pkcs8_der, password, iterations=1):
    """EncryptedPrivateKeyInfo PEM of `pkcs8_der`: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC.

    The inner PrivateKeyInfo is kept byte for byte, so its algorithm (e.g. RSASSA-PSS) survives.
    """
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = encryptor.update(padder.update(pkcs8_der) + padder.finalize()) + encryptor.finalize()
    kdf = der.tlv(0x30, _oid(OID_PBKDF2) + der.tlv(0x30, der.tlv(0x04, salt) + der.tlv(0x02, _int(iterations))
                                                   + der.tlv(0x30, _oid(OID_HMAC_SHA256) + b"\x05\x00")))
    scheme = der.tlv(0x30, _oid(OID_AES256_CBC) + der.tlv(0x04, iv))
    algorithm = der.tlv(0x30, _oid(OID_PBES2) + der.tlv(0x30, kdf + scheme))
    return der.pem(b"ENCRYPTED PRIVATE KEY", der.tlv(0x30, algorithm + der.tlv(0x04, body)))


def _int(value):
    """DER INTEGER content of a non-negative int."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big")
