"""Open a PKCS#12 EncryptedData SafeContents in Python, so the key bags inside are costed before OpenSSL sees them.

The outer container's own KDF cost is checked first (pbe.check_algorithm); only then does
anything here derive. Layouts we cannot open are refused (UnopenableLayout), never passed on.
"""

import hashlib
from collections.abc import Callable

from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, CipherAlgorithm, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

OID_PBES2 = bytes.fromhex("2a864886f70d01050d")
OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")
OID_SCRYPT = bytes.fromhex("2b06010401da47040b")
_PKCS12_PBE = bytes.fromhex("2a864886f70d010c01")  # 1.2.840.113549.1.12.1.{1..6}, RFC 7292 appendix C
_PRFS: dict[bytes, hashes.HashAlgorithm] = {
    bytes.fromhex("2a864886f70d0207"): hashes.SHA1(),
    bytes.fromhex("2a864886f70d0208"): hashes.SHA224(),
    bytes.fromhex("2a864886f70d0209"): hashes.SHA256(),
    bytes.fromhex("2a864886f70d020a"): hashes.SHA384(),
    bytes.fromhex("2a864886f70d020b"): hashes.SHA512(),
}
# PBES2 ciphers: OID -> (key bytes, cipher for a key)
_PBES2_CIPHERS: dict[bytes, tuple[int, Callable[[bytes], BlockCipherAlgorithm]]] = {
    bytes.fromhex("608648016503040102"): (16, algorithms.AES),
    bytes.fromhex("608648016503040116"): (24, algorithms.AES),
    bytes.fromhex("60864801650304012a"): (32, algorithms.AES),
    bytes.fromhex("2a864886f70d0307"): (24, decrepit.TripleDES),
}


class UnopenableLayout(ValueError):
    """An encrypted SafeContents whose algorithm we cannot open before OpenSSL derives inside it."""


def decrypt(algorithm: bytes, params: list[object], ciphertext: bytes, password: bytes | None) -> bytes:
    """The plaintext of a PKCS#12 EncryptedData content; ValueError when the password does not open it.

    `algorithm` is the OID's content bytes, `params` its parameters as pbe._tree reads them.
    """
    if algorithm == OID_PBES2:
        return _pbes2(params, ciphertext, password or b"")
    if algorithm.startswith(_PKCS12_PBE) and len(algorithm) == len(_PKCS12_PBE) + 1:
        return _pkcs12_pbe(algorithm[-1], params, ciphertext, _bmp(password))
    raise UnopenableLayout(f"algorithm OID {algorithm.hex()}")


def _bytes(node: object) -> bytes:
    if not isinstance(node, tuple) or not isinstance(node[1], bytes):
        raise ValueError("expected a primitive item")
    return node[1]


def _list(node: object) -> list[object]:
    if not isinstance(node, tuple) or not isinstance(node[1], list):
        raise ValueError("expected a constructed item")
    return list(node[1])


def _number(node: object) -> int:
    return int.from_bytes(_bytes(node), "big", signed=True)


def _cbc(cipher: CipherAlgorithm, iv: bytes, ciphertext: bytes, block_bits: int) -> bytes:
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(block_bits).unpadder()
    return unpadder.update(padded) + unpadder.finalize()  # ValueError: wrong password


def _pbes2(params: list[object], ciphertext: bytes, password: bytes) -> bytes:
    kdf, scheme = _list(params[0]), _list(params[1])
    kdf_oid, kdf_params = _bytes(kdf[0]), _list(kdf[1])
    cipher_oid = _bytes(scheme[0])
    if cipher_oid not in _PBES2_CIPHERS:
        raise UnopenableLayout(f"PBES2 cipher OID {cipher_oid.hex()}")
    size, make = _PBES2_CIPHERS[cipher_oid]
    salt = _bytes(kdf_params[0])
    if kdf_oid == OID_PBKDF2:
        prf: hashes.HashAlgorithm = hashes.SHA1()  # RFC 8018's default when the PRF is absent
        for extra in kdf_params[2:]:
            if isinstance(extra, tuple) and extra[0] == 0x30:
                prf_oid = _bytes(_list(extra)[0])
                if prf_oid not in _PRFS:
                    raise UnopenableLayout(f"PBKDF2 PRF OID {prf_oid.hex()}")
                prf = _PRFS[prf_oid]
        key = PBKDF2HMAC(prf, size, salt, _number(kdf_params[1])).derive(password)
    elif kdf_oid == OID_SCRYPT:
        n, r, p = (_number(x) for x in kdf_params[1:4])
        key = Scrypt(salt, size, n, r, p).derive(password)
    else:
        raise UnopenableLayout(f"PBES2 key derivation OID {kdf_oid.hex()}")
    cipher = make(key)
    return _cbc(cipher, _bytes(scheme[1]), ciphertext, cipher.block_size)


def _bmp(password: bytes | None) -> bytes:
    """RFC 7292's password bytes: BMPString with two zero bytes; OpenSSL's NULL password is no bytes at all."""
    if password is None:
        return b""
    return password.decode("utf-8").encode("utf-16-be") + b"\0\0"


def pkcs12_kdf(password: bytes, salt: bytes, purpose: int, iterations: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1 (the only hash its PBE algorithms use): purpose 1 key, 2 IV, 3 MAC."""
    v, u = 64, 20

    def stretch(data: bytes) -> bytes:  # repeated to a whole number of v-byte blocks
        size = v * -(-len(data) // v)
        return (data * (size // len(data) + 1))[:size] if data else b""

    block = stretch(salt) + stretch(password)
    out = b""
    while len(out) < size:
        a = bytes([purpose]) * v + block
        for _ in range(iterations):
            a = hashlib.sha1(a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        block = b"".join(((int.from_bytes(block[i:i + v], "big") + b) % (1 << (8 * v))).to_bytes(v, "big")
                         for i in range(0, len(block), v))
    return out[:size]


def _pkcs12_pbe(kind: int, params: list[object], ciphertext: bytes, password: bytes) -> bytes:
    salt, iterations = _bytes(params[0]), _number(params[1])
    if kind in (1, 2):  # RC4 128 / 40: a stream cipher, no padding to tell a wrong password
        key = pkcs12_kdf(password, salt, 1, iterations, 16 if kind == 1 else 5)
        decryptor = Cipher(decrepit.ARC4(key), mode=None).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()
    if kind in (3, 4):  # 3-key and 2-key triple DES
        key = pkcs12_kdf(password, salt, 1, iterations, 24 if kind == 3 else 16)
        return _cbc(decrepit.TripleDES(key), pkcs12_kdf(password, salt, 2, iterations, 8), ciphertext, 64)
    if kind in (5, 6):  # RC2 128 / 40 (OpenSSL's legacy certificate encryption)
        key = pkcs12_kdf(password, salt, 1, iterations, 16 if kind == 5 else 5)
        padded = rc2_cbc_decrypt(key, len(key) * 8, pkcs12_kdf(password, salt, 2, iterations, 8), ciphertext)
        unpadder = padding.PKCS7(64).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    raise UnopenableLayout(f"PKCS#12 PBE algorithm {kind}")


# RFC 2268's PITABLE (a permutation of 0..255 derived from pi).
_PI = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0b"
    "f09521225c6b4e8254d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb6266fbf0eda4669075727f21d9bbc9443"
    "03f811c7f690ef3ee706c3d52fc8661ed708e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ecc2e0416e0f51"
    "cbcc2491af50a1f47039997c3a8523b8b47afc02365b255597312d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58"
    "e289a90d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad")


def _rc2_key_schedule(key: bytes, effective_bits: int) -> list[int]:
    table = bytearray(128)
    table[:len(key)] = key
    for i in range(len(key), 128):
        table[i] = _PI[(table[i - 1] + table[i - len(key)]) & 0xFF]
    t8 = (effective_bits + 7) // 8
    mask = 0xFF % (1 << (8 + effective_bits - 8 * t8))
    table[128 - t8] = _PI[table[128 - t8] & mask]
    for i in range(127 - t8, -1, -1):
        table[i] = _PI[table[i + 1] ^ table[i + t8]]
    return [table[2 * i] | table[2 * i + 1] << 8 for i in range(64)]


def _rc2_decrypt_block(k: list[int], block: bytes) -> bytes:
    r = [int.from_bytes(block[i:i + 2], "little") for i in range(0, 8, 2)]
    shifts = (1, 2, 3, 5)
    j = 63
    for rnd in range(16):
        for i in (3, 2, 1, 0):
            s = shifts[i]
            r[i] = ((r[i] >> s) | (r[i] << (16 - s))) & 0xFFFF
            r[i] = (r[i] - k[j] - (r[i - 1] & r[i - 2]) - ((~r[i - 1]) & r[i - 3])) & 0xFFFF
            j -= 1
        if rnd in (4, 10):  # after 5 and 11 rounds (decrypting: mixing 5, mashing, mixing 6, mashing, mixing 5)
            for i in (3, 2, 1, 0):
                r[i] = (r[i] - k[r[i - 1] & 63]) & 0xFFFF
    return b"".join(x.to_bytes(2, "little") for x in r)


def rc2_cbc_decrypt(key: bytes, effective_bits: int, iv: bytes, ciphertext: bytes) -> bytes:
    """RC2-CBC (RFC 2268) in Python: cryptography's RC2 takes 128-bit keys only, PKCS#12's legacy one is 40."""
    if len(ciphertext) % 8 or len(iv) != 8:
        raise ValueError("RC2-CBC needs whole 8-byte blocks")
    k = _rc2_key_schedule(key, effective_bits)
    out, previous = bytearray(), iv
    for pos in range(0, len(ciphertext), 8):
        block = ciphertext[pos:pos + 8]
        out += bytes(a ^ b for a, b in zip(_rc2_decrypt_block(k, block), previous))
        previous = block
    return bytes(out)
