"""Encrypted keys and PKCS#12 files asking for a huge KDF cost are refused before anything derives (issue 11.6).

The costly files are real ones (openssl, cryptography) with only their cost fields rewritten:
making them for real would take the hours we are defending against. No clock in the test:
a refusal that derived first would hang the test (pytest-timeout), not pass it.
"""

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dyncert import pbe
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki
from tests.harness.pki import pem_block
from tests.harness.interop_pki import PASSWORD, openssl
from tests.harness.profiles import fuzz_settings

CAP = pbe.MAX_ITERATIONS
URL = "/api/v1/employees/kdf/addresses/1"
OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")
OID_SCRYPT = bytes.fromhex("2b06010401da47040b")
OID_DATA = bytes.fromhex("2a864886f70d010701")
OID_ENCRYPTED_DATA = bytes.fromhex("2a864886f70d010706")
PKCS12_PBE = bytes.fromhex("2a864886f70d010c01")


# --- a DER tree we can edit (definite lengths: openssl and cryptography write DER) -----------

def parse(data):
    """DER -> [tag, bytes | list]; OCTET STRINGs keep their bytes."""
    tag, length, pos = data[0], data[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, pos = int.from_bytes(data[2:2 + count], "big"), 2 + count
    body, rest = data[pos:pos + length], data[pos + length:]
    assert not rest, "trailing data"
    if not tag & 0x20:
        return [tag, body]
    items, i = [], 0
    while i < len(body):
        sub_len = body[i + 1]
        head = 2
        if sub_len & 0x80:
            head, sub_len = 2 + (sub_len & 0x7F), int.from_bytes(body[i + 2:i + 2 + (sub_len & 0x7F)], "big")
        items.append(parse(body[i:i + head + sub_len]))
        i += head + sub_len
    return [tag, items]


def dump(node):
    """[tag, bytes | list] -> DER."""
    tag, value = node
    body = value if isinstance(value, bytes) else b"".join(dump(n) for n in value)
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def integer(value):
    return [0x02, value.to_bytes(value.bit_length() // 8 + 1, "big")]


def set_kdf_cost(node, count=None, scrypt=None):
    """Rewrite, anywhere under `node`, PBKDF2 / PKCS#12-PBE iteration counts (or scrypt N, r, p)."""
    tag, value = node
    if not isinstance(value, list):
        return
    if value and value[0][0] == 0x06 and len(value) > 1 and isinstance(value[1][1], list):
        oid, params = value[0][1], value[1][1]
        if count is not None and (oid == OID_PBKDF2 or oid.startswith(PKCS12_PBE)):
            params[1] = integer(count)
        if scrypt is not None and oid == OID_SCRYPT:
            params[1:4] = [integer(v) for v in scrypt]
    for child in value:
        set_kdf_cost(child, count, scrypt)


def costly_pem_key(pem, count=None, scrypt=None):
    """The encrypted PKCS#8 PEM `pem` with its KDF cost rewritten."""
    tree = parse(base64.b64decode(b"".join(pem.strip().splitlines()[1:-1])))
    set_kdf_cost(tree, count, scrypt)
    return pem_block("ENCRYPTED PRIVATE KEY", base64.b64encode(dump(tree)).decode()).encode()


def costly_pkcs12(data, mac=None, key=None, certs=None):
    """The PKCS#12 `data` with its MAC, shrouded-key or certificate-encryption iteration count rewritten."""
    pfx = parse(data)
    if mac is not None:
        pfx[1][2][1][2] = integer(mac)
    content = pfx[1][1][1][1][1][0]  # authSafe ContentInfo -> [0] -> OCTET STRING
    auth_safe = parse(content[1])
    for info in auth_safe[1]:
        oid = info[1][0][1]
        if oid == OID_DATA and key is not None:
            octets = info[1][1][1][0]
            bags = parse(octets[1])
            set_kdf_cost(bags, key)
            octets[1] = dump(bags)
        elif oid == OID_ENCRYPTED_DATA and certs is not None:
            set_kdf_cost(info[1][1], certs)
    content[1] = dump(auth_safe)
    return dump(pfx)


# --- the material -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def material():
    """An EC identity as encrypted PKCS#8 (PBKDF2, PBES1, scrypt) and PKCS#12 (openssl, cryptography)."""
    ca = interop_pki.make_ca("kdf root")
    inter = interop_pki.make_ca("kdf intermediate", ca)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = interop_pki.issue(inter, key.public_key(), "kdf")
    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    m = type("Material", (), {})()
    m.chain = interop_pki.chain_pem(leaf, inter)
    m.pbkdf2 = openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-iter", "2048", "-passout", f"pass:{PASSWORD}",
                       data=plain)
    m.pbes1 = openssl("pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-iter", "2048", "-passout", f"pass:{PASSWORD}",
                      data=plain)
    m.scrypt = openssl("pkcs8", "-topk8", "-scrypt", "-passout", f"pass:{PASSWORD}", data=plain)
    m.p12_cryptography = interop_pki.p12(key, leaf, inter)
    m.p12_legacy = interop_pki.p12(key, leaf, inter, legacy=True)
    m.fingerprint = interop_pki.Identity("kdf", leaf, m.chain).sha256
    return m


def key_error(m, pem, password=PASSWORD):
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pem(m.chain, pem, password)
    return e.value


def p12_error(data, password=PASSWORD):
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pkcs12(data, password)
    return e.value


# --- encrypted PKCS#8 ----------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["pbkdf2", "pbes1", "scrypt"])
def test_encrypted_key_with_a_real_world_cost_loads(material, encoding):
    ident = ClientIdentity.from_pem(material.chain, getattr(material, encoding), PASSWORD)
    assert ident.fingerprint_sha256 == material.fingerprint


@pytest.mark.parametrize("count", [CAP + 1, 2_000_000_000, 2 ** 63])
@pytest.mark.parametrize("encoding", ["pbkdf2", "pbes1"])
def test_encrypted_key_with_a_huge_iteration_count_is_refused(material, encoding, count):
    error = key_error(material, costly_pem_key(getattr(material, encoding), count=count))
    assert error.code == "invalid_key"
    assert str(count) in error.message and f"{CAP}" in error.message


def test_iteration_count_at_the_cap_loads(material):
    # The boundary twin, made for real: as costly as we allow (a cautious tool's 600,000 is below it).
    plain = ClientIdentity.from_pem(material.chain, material.pbkdf2, PASSWORD).key_pem
    pem = openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-iter", str(CAP), "-passout", f"pass:{PASSWORD}",
                  data=plain)
    assert ClientIdentity.from_pem(material.chain, pem, PASSWORD).fingerprint_sha256 == material.fingerprint


def test_huge_count_is_refused_even_without_the_right_password(material):
    # Refused on the parameters alone: a wrong password would otherwise be found only after deriving.
    error = key_error(material, costly_pem_key(material.pbkdf2, count=2_000_000_000), password="wrong")
    assert error.code == "invalid_key" and "2000000000" in error.message


def test_an_absurdly_large_count_is_named_without_printing_it(material):
    # A count thousands of digits long: refused, and the message stays short (no int-to-str blow-up).
    error = key_error(material, costly_pem_key(material.pbkdf2, count=2 ** 40000))
    assert error.code == "invalid_key" and "more than 2^40000" in error.message and len(error.message) < 200


@pytest.mark.parametrize("scrypt", [(2 ** 20, 8, 1), (2 ** 14, 8, 64), (2 ** 40, 1, 1), (2 ** 30000, 1, 1)])
def test_scrypt_key_with_a_huge_cost_is_refused(material, scrypt):
    error = key_error(material, costly_pem_key(material.scrypt, scrypt=scrypt))
    assert error.code == "invalid_key"
    assert "N=" in error.message and str(pbe.MAX_SCRYPT_COST) in error.message
    assert (f"N={scrypt[0]}" if scrypt[0] < 2 ** 64 else "N=more than 2^30000") in error.message


# --- PKCS#12 -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["p12_cryptography", "p12_legacy", "p12_openssl"])
def test_pkcs12_with_a_real_world_cost_loads(material, kind, tmp_path):
    data = getattr(material, kind, None) or _openssl_p12(material, tmp_path)
    assert ClientIdentity.from_pkcs12(data, PASSWORD).fingerprint_sha256 == material.fingerprint


def _openssl_p12(material, tmp_path):
    """openssl pkcs12 -export with its defaults (PBES2/AES-256, 2048 iterations, MAC 2048)."""
    ident = ClientIdentity.from_pem(material.chain, material.pbkdf2, PASSWORD)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(material.chain)
    return openssl("pkcs12", "-export", "-inkey", "/dev/stdin", "-in", str(chain), "-passout", f"pass:{PASSWORD}",
                   data=ident.key_pem)


@pytest.mark.parametrize("part, words", [("mac", "MAC"), ("key", "private key"), ("certs", "certificates")])
@pytest.mark.parametrize("kind", ["p12_cryptography", "p12_legacy"])
def test_pkcs12_with_a_huge_count_is_refused(material, kind, part, words):
    data = costly_pkcs12(getattr(material, kind), **{part: 2_000_000_000})
    error = p12_error(data)
    assert error.code == "invalid_pkcs12"
    assert words in error.message and "2000000000" in error.message and f"{CAP}" in error.message


def test_pkcs12_just_over_the_cap_is_refused(material):
    error = p12_error(costly_pkcs12(material.p12_cryptography, mac=CAP + 1))
    assert error.code == "invalid_pkcs12" and str(CAP + 1) in error.message


# --- through the API: 400 with the code, nothing stored changes ----------------------------

def put(admin, body, status):
    body = dict(body, host="peer.example.com", port=8443)
    return admin.put(URL, json.dumps(body), content_type="application/json", status=status)


def test_api_refuses_costly_uploads_and_keeps_the_stored_identity(admin, material):
    first = put(admin, {"cert": material.chain.decode(), "key": material.pbkdf2.decode(),
                        "key_password": PASSWORD}, 201).json
    costly_key = costly_pem_key(material.pbkdf2, count=2_000_000_000).decode()
    error = put(admin, {"cert": material.chain.decode(), "key": costly_key, "key_password": PASSWORD}, 400).json
    assert error["error"]["code"] == "invalid_key" and "2000000000" in error["error"]["message"]
    costly_p12 = base64.b64encode(costly_pkcs12(material.p12_cryptography, mac=2_000_000_000)).decode()
    error = put(admin, {"pkcs12": costly_p12, "pkcs12_password": PASSWORD}, 400).json
    assert error["error"]["code"] == "invalid_pkcs12" and "2000000000" in error["error"]["message"]
    assert admin.get(URL).json == first


def test_pkcs12_in_ber_indefinite_length_form_is_checked_too(material):
    # cryptography falls back to BER for PKCS#12 (indefinite lengths): the check must read BER as well.
    costly = parse(costly_pkcs12(material.p12_cryptography, key=2_000_000_000))
    ber = b"\x30\x80" + b"".join(dump(n) for n in costly[1]) + b"\0\0"
    error = p12_error(ber)
    assert error.code == "invalid_pkcs12" and "2000000000" in error.message


def test_pkcs12_in_ber_form_with_normal_costs_still_loads(material):
    tree = parse(material.p12_cryptography)
    ber = b"\x30\x80" + b"".join(dump(n) for n in tree[1]) + b"\0\0"
    with pytest.warns(UserWarning, match="BER"):
        assert ClientIdentity.from_pkcs12(ber, PASSWORD).fingerprint_sha256 == material.fingerprint


OID_PBMAC1 = bytes.fromhex("2a864886f70d01050e")
OID_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")


def pbmac1_pkcs12(data, count):
    """The PKCS#12 `data` with its MAC switched to PBMAC1 (RFC 9579) over PBKDF2 with `count` iterations."""
    pfx = parse(data)
    hmac = [0x30, [[0x06, OID_HMAC_SHA256], [0x05, b""]]]
    kdf = [0x30, [[0x06, OID_PBKDF2], [0x30, [[0x04, b"s" * 16], integer(count), integer(32), hmac]]]]
    pfx[1][2][1][0][1][0] = [0x30, [[0x06, OID_PBMAC1], [0x30, [kdf, hmac]]]]  # MacData.mac.digestAlgorithm
    return dump(pfx)


@pytest.mark.parametrize("count", [CAP + 1, 2_000_000_000])
def test_pkcs12_with_a_pbmac1_mac_asking_too_much_is_refused(material, count):
    # OpenSSL 3.4+ (cryptography's own) verifies PBMAC1: its PBKDF2 count sits in the MAC's algorithm.
    error = p12_error(pbmac1_pkcs12(material.p12_cryptography, count))
    assert error.code == "invalid_pkcs12" and str(count) in error.message and "MAC" in error.message


def test_pkcs12_with_a_modest_pbmac1_mac_is_not_refused_for_its_cost(material):
    # The twin: same shape, 2048 iterations; the MAC no longer matches, so it reads as a wrong password.
    assert p12_error(pbmac1_pkcs12(material.p12_cryptography, 2048)).code == "wrong_password"


# --- the parameter reader never fails open on a crash, nor crashes -------------------------

@pytest.mark.fuzz
@fuzz_settings(300)
@given(data=st.data())
def test_reader_answers_only_refusal_or_nothing_on_mangled_files(material, data):
    # Flip, cut or splice bytes of real files: the checks either refuse (CostError) or stay silent.
    source = data.draw(st.sampled_from([material.p12_cryptography, material.p12_legacy,
                                        base64.b64decode(b"".join(material.pbkdf2.splitlines()[1:-1]))]))
    blob = bytearray(source)
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    blob = bytes(blob[:data.draw(st.integers(1, len(blob)))])
    for check in (pbe.check_pkcs12, lambda b: pbe.check_encrypted_pkcs8(pem_block("X", base64.b64encode(b).decode())
                                                                         .encode())):
        try:
            assert check(blob) is None
        except pbe.CostError as e:  # a mangled count may well be huge: then the message names the cap
            assert str(pbe.MAX_ITERATIONS) in str(e) or str(pbe.MAX_SCRYPT_COST) in str(e)
