"""Password-based encryption: its cost checked before anything derives, and PKCS#8 sealed by hand (RSA-PSS)."""

import os
from collections.abc import Sequence
from typing import TypeAlias, cast

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from . import der, safecontents

OID_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")
OID_PBES2 = bytes.fromhex("2a864886f70d01050d")
OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")
OID_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")
OID_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42


def _oid(value: bytes) -> bytes:
    return der.tlv(0x06, value)


def pkcs8_algorithm(pkcs8_der: bytes) -> bytes:
    """The algorithm OID (content bytes) of an unencrypted PKCS#8 PrivateKeyInfo."""
    _, start, end = der.item(pkcs8_der, 0)
    algorithm = der.children(pkcs8_der, start, end)[1]
    tag, os_, oe, _ = der.children(pkcs8_der, algorithm[1], algorithm[2])[0]
    if tag != 0x06:
        raise ValueError("no algorithm OID")
    return pkcs8_der[os_:oe]


def encrypt_pkcs8(pkcs8_der: bytes, password: bytes, iterations: int = 1) -> bytes:
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


def _int(value: int) -> bytes:
    """DER INTEGER content of a non-negative int."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


# --- KDF cost caps, checked before anything derives a key -----------------------------------
#
# A key derivation runs in OpenSSL with the GIL held: a file asking for 2^31 PBKDF2 rounds
# would stall the whole process for minutes. Real files ask for far less: OpenSSL 3 writes
# 2048 (PKCS#8 and PKCS#12, MAC included), cryptography 2048 too, and the most cautious
# tools 600,000 (PBKDF2-SHA256, OWASP 2023). 1,000,000 admits all of them with room and
# bounds a load to about a second.
MAX_ITERATIONS = 1_000_000
# scrypt's work and memory grow with N*r*p (128*N*r bytes): OpenSSL's default memory limit
# for scrypt (32 MiB) is N*r = 2^18; `openssl pkcs8 -scrypt` writes N=16384, r=8, p=1 (2^17).
MAX_SCRYPT_COST = 2 ** 18
_MAX_DEPTH = 24  # real PKCS#12 nests about 10 deep

OID_SCRYPT = bytes.fromhex("2b06010401da47040b")                 # 1.3.6.1.4.1.11591.4.11
OID_PBMAC1 = bytes.fromhex("2a864886f70d01050e")                 # RFC 9579 PKCS#12 MAC (OpenSSL 3.4+)
_OID_PBES1_PREFIX = bytes.fromhex("2a864886f70d0105")           # 1.2.840.113549.1.5.{1,3,4,6,10,11}
_OID_PKCS12_PBE_PREFIX = bytes.fromhex("2a864886f70d010c01")    # 1.2.840.113549.1.12.1.{1..6}
_OID_DATA = bytes.fromhex("2a864886f70d010701")
_OID_ENCRYPTED_DATA = bytes.fromhex("2a864886f70d010706")
_OID_SHROUDED_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0102")
_OID_SAFE_CONTENTS_BAG = bytes.fromhex("2a864886f70d010c0a0106")


# A BER item as _tree reads it: (tag, bytes) for primitive items, (tag, [children]) for constructed ones.
Node: TypeAlias = "tuple[int, bytes | list[Node]]"


class CostError(ValueError):
    """A password-based KDF asks for more work than we allow; the message names count and cap."""


def _tree(data: bytes, pos: int = 0, depth: int = 0,
          limit: int | None = None) -> tuple[int, bytes | list[Node], int]:
    """(tag, value, next position) of the BER item at `pos`: value is bytes, or a list for constructed items.

    BER rather than DER: OpenSSL accepts indefinite lengths and constructed OCTET STRINGs in
    PKCS#12, so a check that gave up on them could be walked around.
    """
    limit = len(data) if limit is None else limit
    if depth > _MAX_DEPTH:
        raise ValueError("too deep")
    if pos + 2 > limit:
        raise ValueError("short")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers are not used here")
    pos += 2
    constructed = bool(tag & 0x20)
    if length == 0x80:  # indefinite: children up to an end-of-contents (00 00)
        if not constructed:
            raise ValueError("indefinite primitive")
        items = []
        while data[pos:pos + 2] != b"\0\0":
            child = _tree(data, pos, depth + 1, limit)
            items.append(child[:2])
            pos = child[2]
        return tag, _joined(tag, items), pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count > 8 or pos + count > limit:
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > limit:
        raise ValueError("overrun")
    if not constructed:
        return tag, data[pos:end], end
    items = []
    while pos < end:
        child = _tree(data, pos, depth + 1, end)
        items.append(child[:2])
        pos = child[2]
    return tag, _joined(tag, items), end


def _joined(tag: int, items: list[Node]) -> bytes | list[Node]:
    """A constructed OCTET STRING (BER) as its concatenated bytes; other constructed items as lists."""
    if tag == 0x24:
        return b"".join(value for _, value in items if isinstance(value, bytes))
    return items


def _int_of(node: Node) -> int:
    if node[0] != 0x02 or not isinstance(node[1], bytes):
        raise ValueError("expected INTEGER")
    return int.from_bytes(node[1], "big", signed=True)


def _seq(node: Node) -> list[Node]:
    if node[0] != 0x30 or not isinstance(node[1], list):
        raise ValueError("expected SEQUENCE")
    return node[1]


def _explicit_octets(node: Node) -> bytes:
    """Bytes of `[0] EXPLICIT OCTET STRING` (ContentInfo content)."""
    children = node[1]
    if node[0] != 0xA0 or not isinstance(children, list) or not children or children[0][0] not in (0x04, 0x24):
        raise ValueError("expected [0] OCTET STRING")
    return cast(bytes, children[0][1])  # 0x04 is primitive and _joined flattens 0x24: bytes either way


def _first(node: Node) -> Node:
    """The first child of a constructed item (the content of an EXPLICIT tag)."""
    children = node[1]
    if isinstance(children, bytes) or not children:  # (isinstance(.., list) would narrow to list[Any])
        raise ValueError("expected a constructed item")
    return children[0]


def _shown(number: int) -> str:
    """A number for a message; absurd ones (str() of a huge int is slow, and capped) as a power of two."""
    return str(number) if number.bit_length() <= 64 else f"more than 2^{number.bit_length() - 1}"


def _check_count(count: int, what: str) -> None:
    if count > MAX_ITERATIONS:
        raise CostError(f"{what} asks for {_shown(count)} key-derivation iterations; "
                        f"at most {MAX_ITERATIONS} are accepted.")


def check_algorithm(node: Node, what: str) -> None:
    """Refuse a password-based encryption AlgorithmIdentifier whose KDF costs more than the caps."""
    fields = _seq(node)
    oid = fields[0][1]
    if not isinstance(oid, bytes):  # a constructed item where the OID belongs: the real parser refuses it
        raise ValueError("expected an algorithm OID")
    if oid in (OID_PBES2, OID_PBMAC1):  # both start with the key derivation function
        kdf = _seq(_seq(fields[1])[0])
        params = _seq(kdf[1]) if len(kdf) > 1 else []
        if kdf[0][1] == OID_PBKDF2:
            _check_count(_int_of(params[1]), what)
        elif kdf[0][1] == OID_SCRYPT:
            n, r, p = (_int_of(x) for x in params[1:4])
            if max(n, r, p) > MAX_SCRYPT_COST or n * r * p > MAX_SCRYPT_COST:  # each first: no huge product
                raise CostError(f"{what} asks for scrypt N={_shown(n)}, r={_shown(r)}, p={_shown(p)}; "
                                f"at most N*r*p = {MAX_SCRYPT_COST} is accepted.")
    elif oid.startswith(_OID_PBES1_PREFIX) or oid.startswith(_OID_PKCS12_PBE_PREFIX):
        _check_count(_int_of(_seq(fields[1])[1]), what)


def check_encrypted_pkcs8(block: bytes) -> None:
    """Check a PEM EncryptedPrivateKeyInfo before it is decrypted; CostError if too costly.

    Data that does not parse is left to the real parser, which refuses it with its own error.
    """
    try:
        check_algorithm(_seq(_tree(der.unpem(block))[:2])[0], "The encrypted private key")
    except CostError:
        raise
    except (ValueError, IndexError, TypeError):
        return


def check_pkcs12(data: bytes, passwords: Sequence[bytes | None] = (None,)) -> None:
    """Check a PKCS#12's MAC and every encryption before OpenSSL derives; CostError if too costly.

    Key bags inside an *encrypted* SafeContents are reached too: its own cost is checked, then it
    is opened here with each password load_pkcs12 will try, and the bags inside are checked.
    A layout we cannot open (an algorithm safecontents does not know) is refused, not passed on.
    """
    try:
        pfx = _seq(_tree(data)[:2])
        if len(pfx) > 2:  # MacData: DigestInfo, salt, iterations DEFAULT 1
            mac = _seq(pfx[2])
            check_algorithm(_seq(mac[0])[0], "The PKCS#12 file's integrity MAC")  # PBMAC1 carries its own KDF
            if len(mac) > 2:
                _check_count(_int_of(mac[2]), "The PKCS#12 file's integrity MAC")
        auth_safe = _seq(pfx[1])
        if auth_safe[0][1] != _OID_DATA:
            return
        for item in _seq(_tree(_explicit_octets(auth_safe[1]))[:2]):
            info = _seq(item)
            if info[0][1] == _OID_DATA:
                _check_bags(_tree(_explicit_octets(info[1]))[:2], 0)
            elif info[0][1] == _OID_ENCRYPTED_DATA:
                content = _seq(_seq(_first(info[1]))[1])  # [0] EXPLICIT EncryptedData -> EncryptedContentInfo
                check_algorithm(content[1], "The PKCS#12 file's encrypted certificates")
                _check_encrypted_bags(content, passwords)
    except CostError:
        raise
    except (ValueError, IndexError, TypeError):
        return  # not the shape we know: load_pkcs12 decides


def _check_encrypted_bags(content: list[Node], passwords: Sequence[bytes | None]) -> None:
    """Open an EncryptedContentInfo (its cost already checked) with each password; check the bags inside."""
    algorithm = _seq(content[1])
    oid, params = algorithm[0][1], algorithm[1][1]
    if not isinstance(oid, bytes) or not isinstance(params, list) or len(content) < 3:
        raise ValueError("expected an algorithm and its parameters")
    ciphertext = content[2][1]  # [0] IMPLICIT OCTET STRING: primitive, or constructed (BER) pieces
    if isinstance(ciphertext, list):
        ciphertext = b"".join(piece for _, piece in ciphertext if isinstance(piece, bytes))
    for password in passwords:
        try:
            plain = safecontents.decrypt(oid, list(params), ciphertext, password)
            bags = _tree(plain)[:2]
        except safecontents.UnopenableLayout as e:
            raise CostError(f"The PKCS#12 file holds an encrypted SafeContents ({e}) that cannot be opened "
                            "before OpenSSL derives the keys of the bags inside it; export the file again "
                            "with AES or triple DES (OpenSSL 3's default is AES-256).") from None
        except (ValueError, IndexError, TypeError):
            continue  # this password does not open it: neither will OpenSSL, which then derives nothing inside
        _check_bags(bags, 0)


def _check_bags(node: Node, depth: int) -> None:
    """Check the shrouded keys in a SafeContents (and nested ones)."""
    if depth > 4:
        raise ValueError("too deep")
    for item in _seq(node):
        bag = _seq(item)
        if bag[0][1] == _OID_SHROUDED_KEY_BAG:
            check_algorithm(_seq(_first(bag[1]))[0], "The PKCS#12 file's private key")
        elif bag[0][1] == _OID_SAFE_CONTENTS_BAG:
            _check_bags(_first(bag[1]), depth + 1)
