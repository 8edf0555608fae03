"""Parse and validate client credentials (PEM, encrypted keys, PKCS#12) into a ClientIdentity."""

import binascii
import dataclasses
import datetime
import functools
import hashlib
import re
from typing import Self, TypeAlias, TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, PublicKeyAlgorithmOID

from . import der, pbe
from .errors import InputError

# Defensive limits: real chains are 1-4 certificates and a few KiB.
MAX_CHAIN = 10
MAX_PEM_BYTES = 512 * 1024
MAX_CA_CERTS = 1000
MAX_CA_BYTES = 4 * 1024 * 1024
# OpenSSL's default security level (2) refuses smaller RSA keys when the context loads them.
MIN_RSA_BITS = 2048

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_KEY_LABELS = (b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY")
# `openssl ecparam -genkey` writes an EC PARAMETERS block before the key: harmless, skipped.
_IGNORED_LABELS = (b"EC PARAMETERS",)
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

# PEM (or a password) as the callers hold it: text, or bytes in any buffer form (_as_bytes takes them all).
PemText: TypeAlias = str | bytes | bytearray | memoryview
_Blocks: TypeAlias = list[tuple[bytes, bytes]]  # (label, whole block) pairs


def _as_bytes(value: object, code: str, what: str) -> bytes:
    """str/bytes -> bytes, refusing other types and oversized input."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise InputError(code, f"Expected {what} as text or bytes, found {type(value).__name__}.")
    if len(value) > MAX_PEM_BYTES:
        raise InputError(code, f"Expected {what} of at most {MAX_PEM_BYTES} bytes, found {len(value)}.")
    return value


def _password(password: object) -> bytes | None:
    """str/bytes/None -> bytes or None; an empty password counts as none (empty form fields)."""
    if password is None or password in ("", b""):
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, (bytes, bytearray, memoryview)):
        return bytes(password)
    raise InputError("wrong_password", f"Expected the password as text or bytes, found {type(password).__name__}.")


def _blocks(data: bytes) -> tuple[_Blocks, int]:
    """PEM blocks of `data` as (label, full block bytes); also the labels of truncated blocks."""
    blocks = [(m.group(1), m.group(0)) for m in _BLOCK.finditer(data)]
    truncated = len(_BEGIN.findall(data)) - len(blocks)
    return blocks, truncated


def _labels(blocks: _Blocks) -> str:
    """Readable list of PEM labels (labels are public: never the block bodies)."""
    return ", ".join(sorted({label.decode("ascii") for label, _ in blocks})) or "none"


def key_type(key: PublicKeyTypes | PrivateKeyTypes) -> str:
    """Human key type of a public or private key: 'RSA 2048', 'EC P-256', 'Ed25519', ..."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return f"EC {_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "Ed25519"
    if isinstance(key, (ed448.Ed448PublicKey, ed448.Ed448PrivateKey)):
        return "Ed448"
    if isinstance(key, (dsa.DSAPublicKey, dsa.DSAPrivateKey)):
        return f"DSA {key.key_size}"
    return type(key).__name__.lstrip("_")


def cert_key_type(cert: x509.Certificate) -> str:
    """Key type of a certificate's public key, naming RSA-PSS (cryptography shows it as plain RSA)."""
    kind = key_type(cert.public_key())
    if cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        return kind.replace("RSA", "RSA-PSS", 1)
    return kind


def _spki_algorithm(cert: x509.Certificate) -> bytes:
    """DER AlgorithmIdentifier of the certificate's subjectPublicKeyInfo (with its parameters)."""
    tbs = cert.tbs_certificate_bytes
    _, start, end = der.item(tbs, 0)
    fields = der.children(tbs, start, end)
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    spki = fields[5]  # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    return der.children(tbs, spki[1], spki[2])[0][3]


def _pkcs8(key: PrivateKeyTypes, leaf: x509.Certificate) -> bytes:
    """The key as unencrypted PKCS#8 PEM, keeping the certificate's key type.

    cryptography loads an RSA-PSS key as plain RSA and would write it back as rsaEncryption;
    OpenSSL then has no slot for the RSA-PSS certificate (key_mismatch on every server).
    For an RSA-PSS certificate the PKCS#8 carries the certificate's own AlgorithmIdentifier
    (RSASSA-PSS and its parameters) around the same RSAPrivateKey.
    """
    if leaf.public_key_algorithm_oid != PublicKeyAlgorithmOID.RSASSA_PSS:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    rsa_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    info = der.tlv(0x30, b"\x02\x01\x00" + _spki_algorithm(leaf) + der.tlv(0x04, rsa_der))
    return der.pem(b"PRIVATE KEY", info)


def _spki(public_key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo, to compare keys."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def display_name(name: x509.Name) -> str:
    """A Name in the order `openssl x509 -subject` prints it (C=.., O=.., CN=..), not reversed RFC 4514."""
    return ", ".join("+".join(attr.rfc4514_string() for attr in rdn) for rdn in name.rdns)


def _name(cert: x509.Certificate) -> str:
    """Subject of a certificate, for messages."""
    return display_name(cert.subject)


def rfc3339(moment: datetime.datetime) -> str:
    """UTC datetime -> '2026-01-02T03:04:05Z'."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def san_list(cert: x509.Certificate) -> list[str]:
    """subjectAltName entries in OpenSSL's 'TYPE:value' spelling."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.DirectoryName):
            out.append(f"DirName:{name.value.rfc4514_string()}")
        elif isinstance(name, x509.RegisteredID):
            out.append(f"RID:{name.value.dotted_string}")
        elif isinstance(name, x509.OtherName):
            out.append(f"othername:{name.type_id.dotted_string}")
    return out


def _load_certs(blocks: _Blocks, code: str, what: str) -> list[x509.Certificate]:
    """Parse CERTIFICATE blocks with cryptography; a bad one -> InputError(code)."""
    certs = []
    for position, (_, block) in enumerate(blocks, 1):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise InputError(code, f"Expected a valid X.509 certificate in {what} (certificate {position}), "
                             "found data that does not parse.") from e
    return certs


def _load_key(block: bytes, password: bytes | None) -> PrivateKeyTypes:
    """Parse one private key PEM block, mapping failures to stable codes."""
    encrypted = block.startswith(b"-----BEGIN ENCRYPTED ") or b"Proc-Type: 4,ENCRYPTED" in block
    if not encrypted:
        password = None  # lenient: a password for an unencrypted key is ignored
    elif password is None:
        raise InputError("wrong_password", "The private key is encrypted and no password was given.")
    if block.startswith(b"-----BEGIN ENCRYPTED "):
        try:
            pbe.check_encrypted_pkcs8(block)
        except pbe.CostError as e:
            raise InputError("invalid_key", str(e)) from e
    try:
        key = serialization.load_pem_private_key(block, password)
    except UnsupportedAlgorithm as e:
        raise InputError("invalid_key", "The private key uses an unsupported algorithm or encryption.") from e
    except (ValueError, TypeError) as e:
        if encrypted:
            # cryptography says "Incorrect password" for both a wrong password and a corrupt
            # encrypted body: the password is the likelier cause, and the message says both.
            raise InputError("wrong_password", "The password does not decrypt the private key "
                             "(or the encrypted key is corrupt).") from e
        raise InputError("invalid_key", "Expected a PEM private key (PKCS#8, PKCS#1 or SEC1), "
                         "found a key block that does not parse.") from e
    return _check_key_type(key)


def _check_key_type(key: PrivateKeyTypes) -> PrivateKeyTypes:
    """Accept the key types TLS client authentication can use with OpenSSL's defaults."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InputError("invalid_key", f"Expected an RSA key of at least {MIN_RSA_BITS} bits, "
                             f"found {key_type(key)}.")
        return key
    if isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return key
    raise InputError("invalid_key", "Expected an RSA, EC, Ed25519 or Ed448 private key, "
                     f"found {key_type(key)}.")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer` names and signed `cert`."""
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _order_chain(certs: list[x509.Certificate], key: PrivateKeyTypes | PublicKeyTypes) -> list[x509.Certificate]:
    """Leaf (the cert matching the key, private or a signer's public one) followed by its issuers, reordered.

    Reordering is friendlier than refusing: browsers and keystores export chains in either
    order. Only a chain with a gap or a stranger is refused.
    """
    spki = _spki(key.public_key() if hasattr(key, "private_bytes") else key)  # type: ignore[union-attr]
    unique, seen = [], set()
    for cert in certs:  # exact duplicates are a common copy-paste slip: drop them
        der = cert.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            unique.append(cert)
    leaves = [c for c in unique if _spki(c.public_key()) == spki]
    if not leaves:
        cert_type, key_kind = cert_key_type(unique[0]), key_type(key)
        # cryptography reads an RSA-PSS private key as RSA: compare families, name the certificate's real type.
        same = key_type(unique[0].public_key()) == key_kind
        found = f"both {cert_type}, but different keys" if same else \
            f"certificate public key: {cert_type}, private key: {key_kind}"
        raise InputError("key_mismatch", f"The private key does not match the certificate ({found}).")
    chain, rest = [leaves[0]], [c for c in unique if c is not leaves[0]]
    while rest:
        issuer = next((c for c in rest if _issued_by(chain[-1], c)), None)
        if issuer is None:
            break
        chain.append(issuer)
        rest.remove(issuer)
    if rest:
        for i in range(len(unique) - 1):
            if not _issued_by(unique[i], unique[i + 1]):
                raise InputError("invalid_certificate", f"The certificate chain is out of order at position "
                                 f"{i + 2}: expected the issuer of '{_name(unique[i])}' "
                                 f"('{display_name(unique[i].issuer)}'), found '{_name(unique[i + 1])}'.")
        raise InputError("invalid_certificate", f"The certificate chain does not start at the certificate of "
                         f"the private key: '{_name(rest[0])}' is not an issuer of '{_name(chain[-1])}'.")
    return chain


def _check_validity(chain: list[x509.Certificate], now: datetime.datetime | None) -> None:
    """Refuse a chain with a certificate outside its validity period at `now`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    for position, cert in enumerate(chain, 1):
        which = "The certificate" if position == 1 else f"Chain certificate {position} ('{_name(cert)}')"
        if now < cert.not_valid_before_utc:
            raise InputError("certificate_not_yet_valid", f"{which} is valid from "
                             f"{rfc3339(cert.not_valid_before_utc)}; it is now {rfc3339(now)}.")
        if now > cert.not_valid_after_utc:
            raise InputError("certificate_expired", f"{which} expired at "
                             f"{rfc3339(cert.not_valid_after_utc)}; it is now {rfc3339(now)}.")


_CLIENT_USAGES = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
_KEY_USAGES = (("content_commitment", "nonRepudiation"), ("key_encipherment", "keyEncipherment"),
               ("data_encipherment", "dataEncipherment"), ("key_agreement", "keyAgreement"),
               ("key_cert_sign", "keyCertSign"), ("crl_sign", "cRLSign"))


def _check_client_purpose(leaf: x509.Certificate) -> None:
    """Refuse a leaf certificate not meant for TLS client authentication (servers would refuse it).

    OpenSSL's servers say "unsupported certificate purpose" for an Extended Key Usage without
    clientAuth (anyExtendedKeyUsage counts as every purpose) and for a Key Usage without
    digitalSignature, the one bit a client's CertificateVerify signature needs (an EC
    certificate for keyAgreement only cannot sign it either). No extension means no restriction.
    """
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and not _CLIENT_USAGES & set(usages):
        found = ", ".join(getattr(u, "_name", None) or u.dotted_string for u in usages) or "none"
        raise InputError("invalid_certificate", "The certificate is not for TLS client authentication: its "
                         f"Extended Key Usage lacks clientAuth (found: {found}).")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        found = ", ".join(name for attr, name in _KEY_USAGES if getattr(usage, attr)) or "none"
        raise InputError("invalid_certificate", "The certificate is not for TLS client authentication: its "
                         f"Key Usage lacks digitalSignature (found: {found}).")


class Metadata(TypedDict):
    """What `ClientIdentity.metadata` reports."""

    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    fingerprint_sha256: str
    san: list[str]
    key_type: str
    chain_length: int


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    """Validated client credentials: leaf-first PEM chain and an unencrypted PKCS#8 key, in memory."""

    chain_pem: bytes
    key_pem: bytes = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return (f"ClientIdentity(subject={self.subject!r}, fingerprint_sha256={self.fingerprint_sha256!r}, "
                f"not_after={rfc3339(self.not_after)!r}, key_type={self.key_type!r})")

    __str__ = __repr__

    @classmethod
    def from_pem(cls, cert_pem: PemText, key_pem: PemText, password: PemText | None = None,
                 now: datetime.datetime | None = None, check_validity: bool = True,
                 check_purpose: bool = True) -> Self:
        """Validate a PEM certificate (plus intermediates) and private key; either may hold both.

        check_purpose=False skips the client-auth purpose check (compat.wrap_socket: the seed left it to the server).
        """
        cert_data = _as_bytes(cert_pem, "invalid_certificate", "the certificate PEM")
        key_data = _as_bytes(key_pem, "invalid_key", "the private key PEM")
        cert_blocks, cert_cut = _blocks(cert_data)
        key_blocks, key_cut = _blocks(key_data)
        certs = [b for b in cert_blocks if b[0] == b"CERTIFICATE"] or \
            [b for b in key_blocks if b[0] == b"CERTIFICATE"]
        keys = [b for b in key_blocks if b[0] in _KEY_LABELS] or \
            [b for b in cert_blocks if b[0] in _KEY_LABELS]
        if not certs:
            found = "a truncated PEM block" if cert_cut else f"PEM blocks: {_labels(cert_blocks)}"
            raise InputError("invalid_certificate", f"Expected a PEM CERTIFICATE block, found {found}.")
        if len(certs) > MAX_CHAIN:
            raise InputError("invalid_certificate", f"Expected at most {MAX_CHAIN} certificates in the chain, "
                             f"found {len(certs)}.")
        if len(keys) != 1:
            if keys:
                found = f"{len(keys)} key blocks"
            elif key_cut:
                found = "a truncated PEM block"
            else:
                found = f"PEM blocks: {_labels([b for b in key_blocks if b[0] not in _IGNORED_LABELS])}"
            raise InputError("invalid_key", "Expected one PEM private key block (PRIVATE KEY, ENCRYPTED PRIVATE KEY, "
                             f"RSA PRIVATE KEY or EC PRIVATE KEY), found {found}.")
        key = _load_key(keys[0][1], _password(password))
        chain = _order_chain(_load_certs(certs, "invalid_certificate", "the certificate PEM"), key)
        return cls._validated(chain, key, now, check_validity, check_purpose)

    @classmethod
    def from_pkcs12(cls, data: bytes | bytearray | memoryview, password: PemText | None = None,
                    now: datetime.datetime | None = None, check_validity: bool = True,
                    check_purpose: bool = True) -> Self:
        """Validate a DER PKCS#12 (.p12/.pfx) holding a key, its certificate and optional intermediates."""
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise InputError("invalid_pkcs12", f"Expected PKCS#12 as bytes, found {type(data).__name__}.")
        if len(data) > MAX_PEM_BYTES:
            raise InputError("invalid_pkcs12", f"Expected a PKCS#12 file of at most {MAX_PEM_BYTES} bytes, "
                             f"found {len(data)}.")
        secret = _password(password)
        try:
            pbe.check_pkcs12(data, _pkcs12_passwords(secret))
        except pbe.CostError as e:
            raise InputError("invalid_pkcs12", str(e)) from e
        p12 = _open_pkcs12(data, secret)
        if p12.key is None:
            raise InputError("invalid_pkcs12", "Expected a private key in the PKCS#12 file, found none.")
        certs = ([p12.cert.certificate] if p12.cert else []) + [c.certificate for c in p12.additional_certs]
        if not certs:
            raise InputError("invalid_pkcs12", "Expected a certificate in the PKCS#12 file, found none.")
        if len(certs) > MAX_CHAIN:
            raise InputError("invalid_pkcs12", f"Expected at most {MAX_CHAIN} certificates in the PKCS#12 file, "
                             f"found {len(certs)}.")
        key = _check_key_type(p12.key)
        return cls._validated(_order_chain(certs, key), key, now, check_validity, check_purpose)

    @classmethod
    def from_trusted_pem(cls, chain_pem: PemText, key_pem: PemText) -> Self:
        """Rebuild an identity this library validated before (e.g. read back from storage); no re-validation.

        Cheap by design: nothing is parsed here; metadata parses the leaf on first use.
        """
        chain_pem = _as_bytes(chain_pem, "invalid_certificate", "the certificate chain PEM")
        key_pem = _as_bytes(key_pem, "invalid_key", "the private key PEM")
        if not chain_pem.startswith(b"-----BEGIN CERTIFICATE-----"):
            raise InputError("invalid_certificate", "Expected a validated PEM chain starting with a CERTIFICATE block.")
        if not key_pem.startswith(b"-----BEGIN %s-----" % b"PRIVATE KEY"):  # unencrypted PKCS#8
            raise InputError("invalid_key", "Expected a validated unencrypted PKCS#8 PEM private key.")
        return cls(chain_pem, key_pem)

    @classmethod
    def _validated(cls, chain: list[x509.Certificate], key: PrivateKeyTypes, now: datetime.datetime | None,
                   check_validity: bool, check_purpose: bool = True) -> Self:
        """Build from an ordered chain and a key that matches its leaf."""
        if check_validity:
            _check_validity(chain, now)
        if check_purpose:
            _check_client_purpose(chain[0])
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        identity = cls(chain_pem, _pkcs8(key, chain[0]))
        identity.__dict__["leaf"] = chain[0]  # already parsed: spare the lazy parse
        return identity

    @functools.cached_property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate (cryptography x509.Certificate), parsed on first use."""
        end = self.chain_pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
        return x509.load_pem_x509_certificate(self.chain_pem[:end])

    @functools.cached_property
    def content_id(self) -> str:
        """sha256 hex over chain and key: a cache key that changes when either rotates."""
        return hashlib.sha256(self.chain_pem + b"\0" + self.key_pem).hexdigest()

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
        """subjectAltName entries, e.g. ['DNS:example.com', 'IP:10.0.0.1']."""
        return san_list(self.leaf)

    @property
    def key_type(self) -> str:
        """Key type from the leaf's public key (it matches the private key): 'EC P-256', 'RSA-PSS 2048', ..."""
        return cert_key_type(self.leaf)

    @functools.cached_property
    def chain_length(self) -> int:
        """Number of certificates in the chain."""
        return self.chain_pem.count(b"-----BEGIN CERTIFICATE-----")

    def metadata(self) -> Metadata:
        """Public, JSON-ready facts about the identity (never key material)."""
        return {
            "subject": self.subject, "issuer": self.issuer, "serial": self.serial,
            "not_before": rfc3339(self.not_before), "not_after": rfc3339(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256, "san": self.san,
            "key_type": self.key_type, "chain_length": self.chain_length,
        }


def _pkcs12_passwords(secret: bytes | None) -> list[bytes | None]:
    """The passwords load_pkcs12 is tried with, in order (pbe.check_pkcs12 checks what each opens)."""
    return [None, b""] if secret is None else [secret, None, b""]


def _open_pkcs12(data: bytes, secret: bytes | None) -> pkcs12.PKCS12KeyAndCertificates:
    """load_pkcs12 with our error codes.

    cryptography raises the same ValueError for a wrong password and for corrupt data, so we
    tell them apart by the outer DER: a well-formed PFX envelope (SEQUENCE, version 3, a
    ContentInfo) that will not open means the password is wrong; anything else is corrupt.
    Leniency: a file exported with an empty password opens with none given, and a password
    given for a file without one is ignored (as for PEM keys).
    """
    tries = _pkcs12_passwords(secret)
    error = None
    for attempt in tries:
        try:
            return pkcs12.load_pkcs12(data, attempt)
        except UnsupportedAlgorithm as e:
            raise InputError("invalid_pkcs12", "The PKCS#12 file uses an unsupported encryption algorithm.") from e
        except (ValueError, TypeError) as e:
            error = e
    if not _looks_like_pfx(data):
        raise InputError("invalid_pkcs12", "Expected a DER PKCS#12 (.p12/.pfx) file, found data that does not "
                         "parse as one.") from error
    if secret is None:
        raise InputError("wrong_password",
                         "The PKCS#12 file is password-protected and no password was given.") from error
    raise InputError("wrong_password", "The password does not open the PKCS#12 file.") from error


_OID_PKCS7_DATA = bytes.fromhex("2a864886f70d010701")
_OID_PKCS7_SIGNED = bytes.fromhex("2a864886f70d010702")


def _looks_like_pfx(data: bytes) -> bool:
    """True if `data` is exactly one DER PFX: SEQUENCE { INTEGER 3, ContentInfo(data|signedData), ... }."""
    try:
        tag, start, end = der.item(data, 0)
        if tag != 0x30 or end != len(data):
            return False
        tag, vs, ve = der.item(data, start)
        if tag != 0x02 or data[vs:ve] != b"\x03":
            return False
        tag, cs, _ = der.item(data, ve)
        if tag != 0x30:
            return False
        tag, os_, oe = der.item(data, cs)
        return tag == 0x06 and data[os_:oe] in (_OID_PKCS7_DATA, _OID_PKCS7_SIGNED)
    except ValueError:
        return False


def parse_ca_bundle(pem: PemText) -> bytes:
    """Validate a PEM bundle of CA certificates; return it normalized (PEM bytes)."""
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    if not isinstance(pem, (bytes, bytearray, memoryview)):
        raise InputError("invalid_ca_certs", f"Expected CA certificates as PEM text, found {type(pem).__name__}.")
    pem = bytes(pem)
    if len(pem) > MAX_CA_BYTES:
        raise InputError("invalid_ca_certs", f"Expected a CA bundle of at most {MAX_CA_BYTES} bytes, found {len(pem)}.")
    blocks, truncated = _blocks(pem)
    others = [b for b in blocks if b[0] != b"CERTIFICATE"]
    if others:
        raise InputError("invalid_ca_certs", f"Expected only CERTIFICATE blocks in the CA bundle, "
                         f"found {_labels(others)}.")
    if truncated:
        raise InputError("invalid_ca_certs", "Expected complete PEM blocks in the CA bundle, found a truncated one.")
    if not blocks:
        raise InputError("invalid_ca_certs",
                         "Expected at least one PEM CERTIFICATE block in the CA bundle, found none.")
    if len(blocks) > MAX_CA_CERTS:
        raise InputError("invalid_ca_certs", f"Expected at most {MAX_CA_CERTS} CA certificates, found {len(blocks)}.")
    certs = _load_certs(blocks, "invalid_ca_certs", "the CA bundle")
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
