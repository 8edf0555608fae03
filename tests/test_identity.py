"""dyncert.identity: every key format, chains, PKCS#12, every error code, no key material leaks."""

import base64
import dataclasses
import datetime
import hashlib
import ipaddress
import re

import pytest
from tests.harness.pki import pem_block
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from dyncert.errors import InputError
from dyncert.identity import MAX_CHAIN, ClientIdentity, parse_ca_bundle

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
PEM = serialization.Encoding.PEM
PASSWORD = "correct horse battery staple"


# --- a tiny PKI built with cryptography at run time (no key is ever committed) -------------

def new_key(kind="p256"):
    """A fresh private key of `kind`."""
    return {
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "rsa1024": lambda: rsa.generate_private_key(65537, 1024),
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ed448": ed448.Ed448PrivateKey.generate,
        "dsa": lambda: dsa.generate_private_key(2048),
    }[kind]()


def make_cert(key, cn, issuer=None, ca=False, not_before=None, not_after=None, san=None, serial=None):
    """A certificate for `key`, signed by issuer=(cert, key) or self-signed."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before or NOW - DAY)
               .not_valid_after(not_after or NOW + 30 * DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    algorithm = None if isinstance(issuer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def pem(cert):
    """PEM bytes of a certificate."""
    return cert.public_bytes(PEM)


def key_pem(key, fmt=serialization.PrivateFormat.PKCS8, password=None):
    """PEM bytes of a private key in `fmt`, optionally encrypted."""
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return key.private_bytes(PEM, fmt, encryption)


def body_lines(pem_bytes):
    """The base64 body lines of a PEM block: the secret part to look for in leaks."""
    return [line for line in pem_bytes.decode().splitlines()
            if line and not line.startswith("-----") and ":" not in line and len(line) >= 16]


def assert_no_secret(text, *pems, password=PASSWORD):
    """No base64 body line of any of `pems`, nor the password, appears in `text`."""
    for p in pems:
        for line in body_lines(p):
            assert line not in text
    assert password not in text


def error_texts(error):
    """str and repr of an error and of every exception in its cause/context chain."""
    texts, seen = [], error
    while seen is not None:
        texts += [str(seen), repr(seen)] + [str(a) for a in getattr(seen, "args", ())]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


@pytest.fixture(scope="module")
def pki():
    """Root -> intermediate -> leaf (EC P-256), plus a stranger CA."""
    root_key, inter_key, leaf_key = new_key(), new_key(), new_key()
    root = make_cert(root_key, "Root CA", ca=True)
    inter = make_cert(inter_key, "Intermediate CA", issuer=(root, root_key), ca=True)
    san = [x509.DNSName("client.example.com"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
           x509.RFC822Name("alice@example.com"), x509.UniformResourceIdentifier("spiffe://example.com/alice")]
    leaf = make_cert(leaf_key, "alice", issuer=(inter, inter_key), san=san, serial=0xABCDEF0123)
    stranger_key = new_key()
    stranger = make_cert(stranger_key, "Stranger CA", ca=True)
    return dict(root=root, root_key=root_key, inter=inter, inter_key=inter_key,
                leaf=leaf, leaf_key=leaf_key, stranger=stranger, stranger_key=stranger_key)


def signed_by_inter(pki, key, cn="bob", **kw):
    """A leaf for `key` issued by the intermediate."""
    return make_cert(key, cn, issuer=(pki["inter"], pki["inter_key"]), **kw)


def expect(code, fn, *args, **kw):
    """Call fn and return the InputError, asserting its code."""
    with pytest.raises(InputError) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value.message
    return info.value


# --- key formats -------------------------------------------------------------------------

TRAD = serialization.PrivateFormat.TraditionalOpenSSL
PKCS8 = serialization.PrivateFormat.PKCS8

FORMATS = [
    # (key kind, private format, password, expected PEM label, expected key_type)
    ("rsa", TRAD, None, "RSA PRIVATE KEY", "RSA 2048"),
    ("rsa", PKCS8, None, "PRIVATE KEY", "RSA 2048"),
    ("rsa", TRAD, PASSWORD, "RSA PRIVATE KEY", "RSA 2048"),  # legacy Proc-Type/DEK-Info encryption
    ("rsa", PKCS8, PASSWORD, "ENCRYPTED PRIVATE KEY", "RSA 2048"),
    ("p256", TRAD, None, "EC PRIVATE KEY", "EC P-256"),
    ("p256", TRAD, PASSWORD, "EC PRIVATE KEY", "EC P-256"),
    ("p384", PKCS8, PASSWORD, "ENCRYPTED PRIVATE KEY", "EC P-384"),
    ("ed25519", PKCS8, None, "PRIVATE KEY", "Ed25519"),
    ("ed25519", PKCS8, PASSWORD, "ENCRYPTED PRIVATE KEY", "Ed25519"),
    ("ed448", PKCS8, None, "PRIVATE KEY", "Ed448"),
]


@pytest.mark.parametrize("kind,fmt,password,label,expected_type", FORMATS)
def test_key_formats(pki, kind, fmt, password, label, expected_type):
    key = new_key(kind)
    uploaded = key_pem(key, fmt, password)
    assert uploaded.startswith(f"-----BEGIN {label}-----".encode())
    if password and fmt is TRAD:
        assert b"Proc-Type: 4,ENCRYPTED" in uploaded
    identity = ClientIdentity.from_pem(pem(signed_by_inter(pki, key)), uploaded, password=password)
    assert identity.key_type == expected_type
    # Stored form: unencrypted PKCS#8 of the same key.
    assert identity.key_pem.startswith(pem_block("PRIVATE KEY").encode()[:27])
    again = serialization.load_pem_private_key(identity.key_pem, None)
    assert again.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_str_and_bytes_inputs_and_password_types(pki):
    key = new_key()
    cert = pem(signed_by_inter(pki, key))
    encrypted = key_pem(key, PKCS8, PASSWORD)
    a = ClientIdentity.from_pem(cert.decode(), encrypted.decode(), password=PASSWORD)
    b = ClientIdentity.from_pem(cert, encrypted, password=PASSWORD.encode())
    assert a == b and a.content_id == b.content_id


def test_password_for_unencrypted_key_is_ignored(pki):
    identity = ClientIdentity.from_pem(pem(pki["leaf"]), key_pem(pki["leaf_key"]), password="not needed")
    assert identity.subject == "CN=alice, O=Example"


def test_combined_pem_in_either_field(pki):
    combined = pem(pki["leaf"]) + pem(pki["inter"]) + key_pem(pki["leaf_key"], TRAD)
    reference = ClientIdentity.from_pem(pem(pki["leaf"]) + pem(pki["inter"]), key_pem(pki["leaf_key"]))
    assert ClientIdentity.from_pem(combined, combined) == reference
    assert ClientIdentity.from_pem(combined, "") == reference  # key picked out of the certificate blob
    assert ClientIdentity.from_pem(pem(pki["leaf"]) + pem(pki["inter"]), combined) == reference


def test_ec_parameters_block_is_skipped(pki):
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    identity = ClientIdentity.from_pem(pem(pki["leaf"]), params + key_pem(pki["leaf_key"], TRAD))
    assert identity.key_type == "EC P-256"


# --- chains ------------------------------------------------------------------------------

def test_chain_with_intermediate_and_root(pki):
    chain = pem(pki["leaf"]) + pem(pki["inter"]) + pem(pki["root"])
    identity = ClientIdentity.from_pem(chain, key_pem(pki["leaf_key"]))
    assert identity.chain_length == 3
    assert identity.chain_pem == chain
    assert identity.issuer == "CN=Intermediate CA, O=Example"


def test_unordered_chain_is_reordered_from_the_leaf(pki):
    # Decision: a complete chain in the wrong order is accepted and stored leaf first.
    shuffled = pem(pki["root"]) + pem(pki["leaf"]) + pem(pki["inter"])
    identity = ClientIdentity.from_pem(shuffled, key_pem(pki["leaf_key"]))
    assert identity.chain_pem == pem(pki["leaf"]) + pem(pki["inter"]) + pem(pki["root"])


def test_duplicate_certificates_are_dropped(pki):
    identity = ClientIdentity.from_pem(pem(pki["leaf"]) * 2 + pem(pki["inter"]), key_pem(pki["leaf_key"]))
    assert identity.chain_length == 2


def test_chain_with_gap_is_refused_with_position(pki):
    # Leaf, then the root: the intermediate between them is missing.
    error = expect("invalid_certificate", ClientIdentity.from_pem,
                   pem(pki["leaf"]) + pem(pki["root"]), key_pem(pki["leaf_key"]))
    assert "position 2" in error.message
    assert "Intermediate CA" in error.message and "Root CA" in error.message


def test_chain_with_stranger_is_refused(pki):
    error = expect("invalid_certificate", ClientIdentity.from_pem,
                   pem(pki["leaf"]) + pem(pki["inter"]) + pem(pki["stranger"]), key_pem(pki["leaf_key"]))
    assert "position 3" in error.message and "Stranger CA" in error.message


def test_same_name_wrong_signature_is_refused(pki):
    # An impostor CA with the intermediate's name but another key: names match, signature does not.
    impostor = make_cert(new_key(), "Intermediate CA", issuer=(pki["root"], pki["root_key"]), ca=True)
    error = expect("invalid_certificate", ClientIdentity.from_pem,
                   pem(pki["leaf"]) + pem(impostor), key_pem(pki["leaf_key"]))
    assert "position 2" in error.message


def test_chain_too_long(pki):
    error = expect("invalid_certificate", ClientIdentity.from_pem,
                   pem(pki["leaf"]) * (MAX_CHAIN + 1), key_pem(pki["leaf_key"]))
    assert str(MAX_CHAIN) in error.message


# --- metadata ----------------------------------------------------------------------------

def test_metadata_values(pki):
    identity = ClientIdentity.from_pem(pem(pki["leaf"]) + pem(pki["inter"]), key_pem(pki["leaf_key"]))
    meta = identity.metadata()
    leaf = pki["leaf"]
    assert meta == {
        "subject": "CN=alice, O=Example",
        "issuer": "CN=Intermediate CA, O=Example",
        "serial": "abcdef0123",
        "not_before": (NOW - DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": (NOW + 30 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint_sha256": hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "san": ["DNS:client.example.com", "IP:10.0.0.1", "email:alice@example.com",
                "URI:spiffe://example.com/alice"],
        "key_type": "EC P-256",
        "chain_length": 2,
    }
    assert re.fullmatch(r"[0-9a-f]{64}", identity.content_id)
    assert identity.not_before.tzinfo is not None and identity.not_after == NOW + 30 * DAY


def test_rsa_key_type_and_no_san(pki):
    key = new_key("rsa")
    identity = ClientIdentity.from_pem(pem(signed_by_inter(pki, key)), key_pem(key, TRAD))
    assert identity.key_type == "RSA 2048" and identity.san == []


def test_identity_is_immutable(pki):
    identity = ClientIdentity.from_pem(pem(pki["leaf"]), key_pem(pki["leaf_key"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.key_pem = b""


def test_from_trusted_pem_matches_from_pem(pki):
    validated = ClientIdentity.from_pem(pem(pki["leaf"]) + pem(pki["inter"]), key_pem(pki["leaf_key"], TRAD))
    restored = ClientIdentity.from_trusted_pem(validated.chain_pem.decode(), validated.key_pem.decode())
    assert restored == validated
    assert restored.metadata() == validated.metadata()
    assert restored.content_id == validated.content_id


def test_from_trusted_pem_refuses_unvalidated_forms(pki):
    validated = ClientIdentity.from_pem(pem(pki["leaf"]), key_pem(pki["leaf_key"]))
    expect("invalid_key", ClientIdentity.from_trusted_pem, validated.chain_pem,
           key_pem(pki["leaf_key"], PKCS8, PASSWORD))
    expect("invalid_certificate", ClientIdentity.from_trusted_pem, b"garbage", validated.key_pem)


def test_rotation_changes_content_id(pki):
    first = ClientIdentity.from_pem(pem(pki["leaf"]), key_pem(pki["leaf_key"]))
    key = new_key()
    rotated = ClientIdentity.from_pem(pem(signed_by_inter(pki, key, "alice")), key_pem(key))
    assert first.content_id != rotated.content_id


# --- validity ----------------------------------------------------------------------------

def test_expired_and_not_yet_valid(pki):
    cert, key = pem(pki["leaf"]), key_pem(pki["leaf_key"])
    error = expect("certificate_expired", ClientIdentity.from_pem, cert, key, now=NOW + 60 * DAY)
    assert (NOW + 30 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ") in error.message
    error = expect("certificate_not_yet_valid", ClientIdentity.from_pem, cert, key, now=NOW - 2 * DAY)
    assert (NOW - DAY).strftime("%Y-%m-%dT%H:%M:%SZ") in error.message
    # Twins: inside the period, and outside it with the check off.
    assert ClientIdentity.from_pem(cert, key, now=NOW)
    assert ClientIdentity.from_pem(cert, key, now=NOW + 60 * DAY, check_validity=False)


def test_expired_by_the_clock(pki):
    key = new_key()
    old = signed_by_inter(pki, key, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    expect("certificate_expired", ClientIdentity.from_pem, pem(old), key_pem(key))


def test_expired_intermediate_is_named(pki):
    inter_key = new_key()
    inter = make_cert(inter_key, "Old Intermediate", issuer=(pki["root"], pki["root_key"]), ca=True,
                      not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    key = new_key()
    leaf = make_cert(key, "carol", issuer=(inter, inter_key))
    error = expect("certificate_expired", ClientIdentity.from_pem, pem(leaf) + pem(inter), key_pem(key))
    assert "Old Intermediate" in error.message


# --- errors ------------------------------------------------------------------------------

def test_encrypted_key_without_password(pki):
    for fmt in (PKCS8, TRAD):
        error = expect("wrong_password", ClientIdentity.from_pem, pem(pki["leaf"]),
                       key_pem(pki["leaf_key"], fmt, PASSWORD))
        assert "no password" in error.message


def test_wrong_password(pki):
    for fmt in (PKCS8, TRAD):
        encrypted = key_pem(pki["leaf_key"], fmt, PASSWORD)
        error = expect("wrong_password", ClientIdentity.from_pem, pem(pki["leaf"]), encrypted, password="wrong!")
        assert_no_secret(error_texts(error), encrypted, key_pem(pki["leaf_key"]), password="wrong!")
        assert ClientIdentity.from_pem(pem(pki["leaf"]), encrypted, password=PASSWORD)  # twin


def test_key_mismatch_names_both_types(pki):
    other = new_key("rsa")
    error = expect("key_mismatch", ClientIdentity.from_pem, pem(pki["leaf"]), key_pem(other))
    assert error.message == ("The private key does not match the certificate "
                             "(certificate public key: EC P-256, private key: RSA 2048).")
    assert_no_secret(error_texts(error), key_pem(other))


def _bad_certs(pki):
    real = pem(pki["leaf"])
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
           .sign(pki["leaf_key"], hashes.SHA256()).public_bytes(PEM))
    public = pki["leaf_key"].public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    lines = real.splitlines(keepends=True)
    corrupt = lines[0] + base64.encodebytes(b"\x30\x82\x01\x00" + b"\x00" * 40) + lines[-1]
    return {"not pem": b"hello world", "empty": b"", "truncated": real[: len(real) // 2],
            "csr": csr, "public key": public, "corrupt body": corrupt, "unicode": "ünïcode garbage"}


@pytest.mark.parametrize("case", ["not pem", "empty", "truncated", "csr", "public key", "corrupt body", "unicode"])
def test_invalid_certificate(pki, case):
    bad = _bad_certs(pki)[case]
    error = expect("invalid_certificate", ClientIdentity.from_pem, bad, key_pem(pki["leaf_key"]))
    assert error.message.startswith("Expected")
    assert_no_secret(error_texts(error), key_pem(pki["leaf_key"]))
    if case == "csr":
        assert "CERTIFICATE REQUEST" in error.message
    if case == "truncated":
        assert "truncated" in error.message


def _bad_keys(pki):
    real = key_pem(pki["leaf_key"])
    lines = real.splitlines(keepends=True)
    flipped = lines[0] + lines[1][:10] + (b"A" if lines[1][10:11] != b"A" else b"B") + lines[1][11:] + \
        b"".join(lines[2:])
    public = pki["leaf_key"].public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"not pem": b"hello", "empty": b"", "truncated": real[: len(real) // 2], "public key": public,
            "certificate only": pem(pki["inter"]), "corrupt body": lines[0] + b"AAAA\n" + lines[-1],
            "flipped byte": flipped, "two keys": real + key_pem(new_key())}


@pytest.mark.parametrize("case", ["not pem", "empty", "truncated", "public key", "certificate only",
                                  "corrupt body", "flipped byte", "two keys"])
def test_invalid_key(pki, case):
    bad = _bad_keys(pki)[case]
    try:
        ClientIdentity.from_pem(pem(pki["leaf"]), bad)
    except InputError as error:
        # A flipped base64 byte may still decode to a different valid-looking key: then it cannot match.
        assert error.code in (("invalid_key", "key_mismatch") if case == "flipped byte" else ("invalid_key",))
        assert_no_secret(error_texts(error), bad, key_pem(pki["leaf_key"]))
    else:
        pytest.fail("accepted a bad key")


@pytest.mark.parametrize("kind,needle", [("dsa", "DSA 2048"), ("rsa1024", "RSA 1024")])
def test_unsupported_key_types(pki, kind, needle):
    key = new_key(kind)
    error = expect("invalid_key", ClientIdentity.from_pem, pem(signed_by_inter(pki, key)), key_pem(key))
    assert needle in error.message


def test_repr_and_str_hold_no_key(pki):
    uploaded = key_pem(pki["leaf_key"], TRAD)
    identity = ClientIdentity.from_pem(pem(pki["leaf"]), uploaded)
    for text in (repr(identity), str(identity), str(identity.metadata()), f"{identity}"):
        assert_no_secret(text, uploaded, identity.key_pem)
        assert "PRIVATE" not in text
    assert "CN=alice" in repr(identity)


# --- PKCS#12 -----------------------------------------------------------------------------

def p12(key, cert, cas=None, password=None):
    """DER PKCS#12 bytes."""
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(b"alice", key, cert, cas, encryption)


def test_pkcs12_without_and_with_password(pki):
    reference = ClientIdentity.from_pem(pem(pki["leaf"]), key_pem(pki["leaf_key"]))
    assert ClientIdentity.from_pkcs12(p12(pki["leaf_key"], pki["leaf"])) == reference
    assert ClientIdentity.from_pkcs12(p12(pki["leaf_key"], pki["leaf"], password=PASSWORD),
                                      password=PASSWORD) == reference
    assert ClientIdentity.from_pkcs12(p12(pki["leaf_key"], pki["leaf"]), password="ignored") == reference


def test_pkcs12_with_chain_in_any_order(pki):
    data = p12(pki["leaf_key"], pki["leaf"], cas=[pki["root"], pki["inter"]], password=PASSWORD)
    identity = ClientIdentity.from_pkcs12(data, password=PASSWORD.encode())
    assert identity.chain_pem == pem(pki["leaf"]) + pem(pki["inter"]) + pem(pki["root"])
    assert identity.metadata()["chain_length"] == 3


def test_pkcs12_rsa_key(pki):
    key = new_key("rsa")
    identity = ClientIdentity.from_pkcs12(p12(key, signed_by_inter(pki, key)))
    assert identity.key_type == "RSA 2048"


def test_pkcs12_password_errors(pki):
    data = p12(pki["leaf_key"], pki["leaf"], password=PASSWORD)
    error = expect("wrong_password", ClientIdentity.from_pkcs12, data)
    assert "no password" in error.message
    error = expect("wrong_password", ClientIdentity.from_pkcs12, data, password="wrong!")
    assert_no_secret(error_texts(error), key_pem(pki["leaf_key"]), password="wrong!")


@pytest.mark.parametrize("case", ["garbage", "truncated", "empty", "pem text", "flipped"])
def test_pkcs12_corrupt(pki, case):
    data = p12(pki["leaf_key"], pki["leaf"], password=PASSWORD)
    bad = {"garbage": b"\x00not a pkcs12 file", "truncated": data[: len(data) // 2], "empty": b"",
           "pem text": pem(pki["leaf"]), "flipped": data[:1] + b"\x31" + data[2:]}[case]
    expect("invalid_pkcs12", ClientIdentity.from_pkcs12, bad, password=PASSWORD)


def test_pkcs12_without_key_or_certificate(pki):
    expect("invalid_pkcs12", ClientIdentity.from_pkcs12, p12(None, pki["leaf"]))
    expect("invalid_pkcs12", ClientIdentity.from_pkcs12, p12(pki["leaf_key"], None))
    expect("invalid_pkcs12", ClientIdentity.from_pkcs12, "a str is not a PKCS#12 file")


def test_pkcs12_mismatch_and_expiry(pki):
    # cryptography refuses to write a mismatched key+cert pair: smuggle the cert in as a "CA".
    expect("key_mismatch", ClientIdentity.from_pkcs12, p12(new_key(), None, cas=[pki["leaf"]]))
    expect("certificate_expired", ClientIdentity.from_pkcs12, p12(pki["leaf_key"], pki["leaf"]),
           now=NOW + 60 * DAY)


# --- CA bundles --------------------------------------------------------------------------

def test_parse_ca_bundle(pki):
    bundle = "# Root\n" + pem(pki["root"]).decode() + "\n# Stranger\r\n" + pem(pki["stranger"]).decode()
    assert parse_ca_bundle(bundle) == pem(pki["root"]) + pem(pki["stranger"])
    assert parse_ca_bundle(pem(pki["root"])) == pem(pki["root"])


@pytest.mark.parametrize("case", ["empty", "garbage", "key", "truncated", "corrupt", "number"])
def test_parse_ca_bundle_errors(pki, case):
    real = pem(pki["root"])
    bad = {"empty": "", "garbage": "not a certificate", "key": real + key_pem(pki["root_key"]),
           "truncated": real + real[:100], "number": 42,
           "corrupt": real.splitlines(keepends=True)[0] + b"AAAA\n" + real.splitlines(keepends=True)[-1]}[case]
    error = expect("invalid_ca_certs", parse_ca_bundle, bad)
    assert_no_secret(error_texts(error), key_pem(pki["root_key"]))
