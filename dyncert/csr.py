"""Keys born here: generate a private key and a certificate signing request (PKCS#10) for it."""

import hashlib
import ipaddress
import re
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from dyncert import der
from dyncert.errors import InputError, SignerError
from dyncert.identity import display_name, key_type as key_type_label
from dyncert.signers.base import SCHEMES, signer_schemes

DEFAULT_KEY_TYPE = "EC-P256"  # fast, small, and accepted by every TLS 1.2+ server
KEY_TYPES = ("EC-P256", "EC-P384", "RSA-2048", "RSA-3072", "RSA-4096", "Ed25519")
MAX_SANS = 100          # a CSR is sent to a partner's CA: nobody needs more, and it bounds the work
MAX_URI = 2048          # a common URL length cap (browsers, proxies)
MAX_EMAIL = 254         # RFC 5321's path limit less the angle brackets

# Subject attributes we accept, with X.520's upper bounds (RFC 5280 appendix A).
SUBJECT_FIELDS = {
    "CN": (NameOID.COMMON_NAME, 64), "O": (NameOID.ORGANIZATION_NAME, 64),
    "OU": (NameOID.ORGANIZATIONAL_UNIT_NAME, 64), "C": (NameOID.COUNTRY_NAME, 2),
    "ST": (NameOID.STATE_OR_PROVINCE_NAME, 128), "L": (NameOID.LOCALITY_NAME, 128),
}
SUBJECT_ORDER = ("C", "ST", "L", "O", "OU", "CN")  # the usual most-to-least significant order

LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@([A-Za-z0-9.-]{1,253})$")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def generate_key(name: object = DEFAULT_KEY_TYPE) -> (ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                                                      | ed25519.Ed25519PrivateKey):
    """A new private key of type `name` (one of KEY_TYPES)."""
    if not isinstance(name, str) or name not in KEY_TYPES:
        raise InputError("invalid_request", f"'key_type' must be one of {', '.join(KEY_TYPES)}; "
                                            f"found {str(name)[:40]!r}.")
    if name.startswith("EC-"):
        return ec.generate_private_key(ec.SECP256R1() if name == "EC-P256" else ec.SECP384R1())
    if name.startswith("RSA-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(name[4:]))
    return ed25519.Ed25519PrivateKey.generate()


def dns_name(value: object) -> str:
    """A DNS name (IDNA allowed; one leading '*.' label for a wildcard) as its ASCII form."""
    if not isinstance(value, str) or not value or len(value) > 253 or CONTROL.search(value):
        raise InputError("invalid_request", "Each 'san.dns' entry must be a DNS name of at most 253 characters.")
    name = value.rstrip(".")
    wildcard = name.startswith("*.")
    if wildcard:
        name = name[2:]
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if not ascii_name or len(ascii_name) > 253 or not all(LABEL.match(label) for label in labels):
        raise InputError("invalid_request", f"Expected a DNS name in 'san.dns', found {value[:80]!r}.")
    if _is_ip(name):
        raise InputError("invalid_request", f"Expected a DNS name in 'san.dns', found the IP address {value!r}.")
    return ("*." if wildcard else "") + ascii_name.lower()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def email_address(value: object) -> str:
    """An addr-spec (local@domain) checked for shape and length."""
    text = value if isinstance(value, str) else ""
    match = EMAIL.match(text) if len(text) <= MAX_EMAIL else None
    if not match or ".." in text or text.startswith(".") or ".@" in text:
        raise InputError("invalid_request", f"Expected an e-mail address (local@domain) in 'san.email', "
                                            f"found {str(value)[:80]!r}.")
    dns_name(match.group(1))  # the domain must be a DNS name too
    return text


def uri(value: object) -> str:
    """An absolute URI (scheme and a host or path), ASCII, no spaces or control characters."""
    text = value if isinstance(value, str) else ""
    ok = 0 < len(text) <= MAX_URI and text.isascii() and not CONTROL.search(text) and " " not in text
    try:
        parts = urllib.parse.urlsplit(text) if ok else None
        if parts is not None:
            parts.port  # noqa: B018  (urlsplit checks brackets, .port the port: each raises ValueError)
    except ValueError:  # "http://[::1": an unclosed IPv6 literal
        parts = None
    if not parts or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*$", parts.scheme or "") or not (parts.netloc or parts.path):
        raise InputError("invalid_request", f"Expected an absolute ASCII URI (scheme:...) of at most {MAX_URI} "
                                            f"characters in 'san.uri', found {str(value)[:80]!r}.")
    return text


def subject_name(subject: object) -> x509.Name:
    """The x509.Name for a {"CN": ..., "O": ...} object; CN is required."""
    if not isinstance(subject, dict):
        raise InputError("invalid_request", "The field 'subject' must be an object with at least 'CN'.")
    unknown = sorted(set(subject) - set(SUBJECT_FIELDS))
    if unknown:
        raise InputError("invalid_request", f"Unknown subject field {unknown[0][:20]!r}; expected "
                                            f"{', '.join(SUBJECT_ORDER)}.")
    if not subject.get("CN"):
        raise InputError("invalid_request", "The subject needs a common name: 'subject.CN' is required.")
    attributes = []
    for name in SUBJECT_ORDER:
        value = subject.get(name)
        if value is None or value == "" and name != "CN":
            continue
        oid, limit = SUBJECT_FIELDS[name]
        if not isinstance(value, str) or not value.strip() or len(value) > limit or CONTROL.search(value):
            raise InputError("invalid_request", f"'subject.{name}' must be 1-{limit} printable characters.")
        if name == "C" and not re.fullmatch(r"[A-Za-z]{2}", value):
            raise InputError("invalid_request", "'subject.C' must be a two-letter country code.")
        attributes.append(x509.NameAttribute(oid, value.upper() if name == "C" else value))
    return x509.Name(attributes)


def san_entries(san: object) -> tuple[list[x509.GeneralName], list[str]]:
    """(x509 GeneralNames, ["DNS:...", "email:...", "URI:..."]) from {"dns": [], "email": [], "uri": []}."""
    if san is None:
        return [], []
    if not isinstance(san, dict) or set(san) - {"dns", "email", "uri"}:
        raise InputError("invalid_request", "The field 'san' must be an object with lists 'dns', 'email', 'uri'.")
    lists = {kind: san.get(kind) or [] for kind in ("dns", "email", "uri")}
    if not all(isinstance(v, list) for v in lists.values()):
        raise InputError("invalid_request", "Each of 'san.dns', 'san.email' and 'san.uri' must be a list.")
    total = sum(len(v) for v in lists.values())
    if total > MAX_SANS:
        raise InputError("invalid_request", f"Expected at most {MAX_SANS} subject alternative names, found {total}.")
    names: list[x509.GeneralName] = []
    shown: list[str] = []
    for value in lists["dns"]:
        value = dns_name(value)
        names.append(x509.DNSName(value))
        shown.append("DNS:" + value)
    for value in lists["email"]:
        names.append(x509.RFC822Name(email_address(value)))
        shown.append("email:" + value)
    for value in lists["uri"]:
        names.append(x509.UniformResourceIdentifier(uri(value)))
        shown.append("URI:" + value)
    return names, shown


def public_key_sha256(public_key: PublicKeyTypes) -> str:
    """sha256 hex of the DER SubjectPublicKeyInfo: names a key without revealing anything."""
    return hashlib.sha256(public_key.public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


class PendingKey:
    """A generated key and its CSR; `key_pem` is for sealing at once, never for showing."""

    def __init__(self, key_pem: bytes, csr_pem: str, key_type: str, public_key_sha256: str, subject: str,
                 san: list[str]) -> None:
        self.key_pem, self.csr_pem, self.key_type = key_pem, csr_pem, key_type
        self.public_key_sha256, self.subject, self.san = public_key_sha256, subject, san

    def __repr__(self) -> str:  # never the key
        return f"PendingKey(key_type={self.key_type!r}, public_key_sha256={self.public_key_sha256!r})"


def csr_request(subject: object, san: object) -> tuple[x509.Name, list[x509.GeneralName], list[str]]:
    """The subject and SANs a CSR asks for, validated: (Name, GeneralNames, ["DNS:...", ...])."""
    name = subject_name(subject)
    general_names, shown = san_entries(san)
    return name, general_names, shown


def new_key_and_csr(key_type: object = None, subject: object = None, san: object = None) -> PendingKey:
    """Validate the request, then generate a key and its signed CSR."""
    name, general_names, shown = csr_request(subject, san)  # checked before the (possibly slow) key generation
    key = generate_key(DEFAULT_KEY_TYPE if key_type is None else key_type)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return PendingKey(key_pem, csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                      key_type_label(key.public_key()), public_key_sha256(key.public_key()),
                      display_name(name), shown)  # `openssl x509 -subject` order, as every subject shown



# --- a CSR signed by a signer (the key stays in KMS or an HSM) ---------------------------------
# cryptography signs a CSR only with a private key object, so the CertificationRequestInfo (RFC 2986)
# is written here with der.tlv, and the signer signs its digest as it would a TLS handshake's.

_OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
_OID_SUBJECT_ALT_NAME = "2.5.29.17"
_HASH_OIDS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
              "sha512": "2.16.840.1.101.3.4.2.3"}
_ECDSA_OIDS = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3", "sha512": "1.2.840.10045.4.3.4"}
_RSA_PKCS1_OIDS = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12",
                   "sha512": "1.2.840.113549.1.1.13"}
_OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_ED25519 = "1.3.101.112"
_NULL = b"\x05\x00"


def _oid(dotted: str) -> bytes:
    """DER OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return der.tlv(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return der.tlv(0x30, b"".join(items))


def signature_algorithm(scheme: str) -> bytes:
    """The DER AlgorithmIdentifier of a signer scheme (RSA-PSS: MGF1 of the same hash, salt = digest length)."""
    spec = SCHEMES[scheme]
    if spec.family == "ed25519":
        return _seq(_oid(_OID_ED25519))
    hash_name = spec.hash or "sha256"
    if spec.family == "ec":
        return _seq(_oid(_ECDSA_OIDS[hash_name]))
    if spec.padding == "pkcs1":
        return _seq(_oid(_RSA_PKCS1_OIDS[hash_name]), _NULL)
    hash_id = _seq(_oid(_HASH_OIDS[hash_name]), _NULL)
    params = _seq(der.tlv(0xA0, hash_id), der.tlv(0xA1, _seq(_oid(_OID_MGF1), hash_id)),
                  der.tlv(0xA2, der.tlv(0x02, bytes([spec.digest_size]))))
    return _seq(_oid(_OID_RSASSA_PSS), params)


def request_info(name: x509.Name, public_key: PublicKeyTypes, general_names: list[x509.GeneralName]) -> bytes:
    """DER CertificationRequestInfo: version 0, subject, the key's SubjectPublicKeyInfo, extensionRequest(SAN)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    attributes = b""
    if general_names:
        san = x509.SubjectAlternativeName(general_names).public_bytes()
        extensions = _seq(_seq(_oid(_OID_SUBJECT_ALT_NAME), der.tlv(0x04, san)))
        attributes = _seq(_oid(_OID_EXTENSION_REQUEST), der.tlv(0x31, extensions))
    return _seq(der.tlv(0x02, b"\x00"), name.public_bytes(), spki, der.tlv(0xA0, attributes))


def signer_csr(signer: object, subject: object = None, san: object = None) -> "SignerCsr":
    """Validate the request, then a CSR for the signer's key, signed by the signer (one signature)."""
    name, general_names, shown = csr_request(subject, san)
    public_key = signer.public_key()  # type: ignore[attr-defined]
    scheme = signer_schemes(signer, public_key)[0]  # type: ignore[arg-type]
    info = request_info(name, public_key, general_names)
    spec = SCHEMES[scheme]
    data = info if spec.hash is None else hashlib.new(spec.hash, info).digest()
    try:
        signature = bytes(signer.sign(data, scheme))  # type: ignore[attr-defined]
    except SignerError:
        raise
    except Exception as e:  # a duck-typed signer may fail in any way: keep its message as the cause
        raise SignerError(f"The signer failed to sign the CSR ({scheme}): {type(e).__name__}: {str(e)[:200]}") from e
    request = _seq(info, signature_algorithm(scheme), der.tlv(0x03, b"\x00" + signature))
    try:
        valid = x509.load_der_x509_csr(request).is_signature_valid
    except ValueError:
        valid = False
    if not valid:
        raise SignerError(f"The signer's signature of the CSR does not verify with its public key ({scheme}).")
    return SignerCsr(der.pem(b"CERTIFICATE REQUEST", request).decode("ascii"), key_type_label(public_key),
                     public_key_sha256(public_key), display_name(name), shown)  # openssl order, as above


class SignerCsr:
    """A CSR signed by a signer: its PEM and what it asks for (no key here to keep or hide)."""

    def __init__(self, csr_pem: str, key_type: str, public_key_sha256: str, subject: str, san: list[str]) -> None:
        self.csr_pem, self.key_type, self.public_key_sha256 = csr_pem, key_type, public_key_sha256
        self.subject, self.san = subject, san

    def __repr__(self) -> str:
        return f"SignerCsr(key_type={self.key_type!r}, public_key_sha256={self.public_key_sha256!r})"
