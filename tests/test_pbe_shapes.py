"""The KDF cost checks on shapes mypy --strict pointed at: an algorithm identifier whose OID is not an OID.

The checks read AlgorithmIdentifiers by hand before OpenSSL derives anything; a constructed item
where the OID belongs must leave the file to the real parser (a typed error), never crash.
"""

import base64
import json

import pytest

from dyncert import der, pbe
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import pki
from tests.harness.pki import pem_block

URL = "/api/v1/employees/shapes/addresses/1"
OID_SHA256 = bytes.fromhex("608648016503040201")


def oid(value):
    return der.tlv(0x06, value)


def seq(*items):
    return der.tlv(0x30, b"".join(items))


def integer(value):
    return der.tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def pbes2(count):
    """A PBES2 AlgorithmIdentifier: PBKDF2-HMAC-SHA256 with `count` iterations, AES-256-CBC."""
    kdf = seq(oid(pbe.OID_PBKDF2), seq(der.tlv(0x04, b"s" * 16), integer(count),
                                       seq(oid(pbe.OID_HMAC_SHA256), b"\x05\x00")))
    return seq(oid(pbe.OID_PBES2), seq(kdf, seq(oid(pbe.OID_AES256_CBC), der.tlv(0x04, b"i" * 16))))


def encrypted_key(algorithm):
    """An EncryptedPrivateKeyInfo PEM around `algorithm` (the body is noise: the check runs first)."""
    body = seq(algorithm, der.tlv(0x04, b"x" * 32))
    return pem_block("ENCRYPTED PRIVATE KEY", base64.b64encode(body).decode()).encode()


def pfx(mac_algorithm, iterations=2048):
    """A PKCS#12 PFX with an empty authSafe and a MacData over `mac_algorithm`."""
    auth_safe = seq(oid(bytes.fromhex("2a864886f70d010701")), der.tlv(0xA0, der.tlv(0x04, seq())))
    mac = seq(seq(mac_algorithm, der.tlv(0x04, b"d" * 32)), der.tlv(0x04, b"s" * 8), integer(iterations))
    return seq(integer(3), auth_safe, mac)


NOT_AN_OID = seq(seq(), b"\x05\x00")  # a SEQUENCE where the algorithm OID belongs


@pytest.fixture(scope="module")
def chain():
    return pki.client_cert(pki.make_pki("shapes").clients_ca, "shapes").cert_pem


def test_key_whose_algorithm_is_not_an_oid_is_left_to_the_parser(chain):
    block = encrypted_key(NOT_AN_OID)
    assert pbe.check_encrypted_pkcs8(block) is None
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pem(chain, block, b"secret")
    assert e.value.code in ("invalid_key", "wrong_password")


def test_key_with_a_real_algorithm_is_still_checked(chain):
    # The twin: the same harness with a real PBES2 identifier is refused for its cost, and passes at a modest one.
    assert pbe.check_encrypted_pkcs8(encrypted_key(pbes2(2048))) is None
    with pytest.raises(pbe.CostError):
        pbe.check_encrypted_pkcs8(encrypted_key(pbes2(2_000_000_000)))
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pem(chain, encrypted_key(pbes2(2_000_000_000)), b"secret")
    assert e.value.code == "invalid_key" and "2000000000" in e.value.message


def test_pkcs12_whose_mac_algorithm_is_not_an_oid_is_left_to_the_parser():
    data = pfx(NOT_AN_OID)
    assert pbe.check_pkcs12(data) is None
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pkcs12(data, b"secret")
    assert e.value.code in ("invalid_pkcs12", "wrong_password")  # the MAC does not verify: cryptography's call


def test_pkcs12_with_a_real_mac_algorithm_is_still_checked():
    sha256 = seq(oid(OID_SHA256), b"\x05\x00")
    assert pbe.check_pkcs12(pfx(sha256)) is None
    with pytest.raises(pbe.CostError):
        pbe.check_pkcs12(pfx(sha256, iterations=2_000_000_000))


def put(admin, body, status):
    body = dict(body, host="peer.example.com", port=8443)
    return admin.put(URL, json.dumps(body), content_type="application/json", status=status)


def test_api_answers_400_for_a_key_whose_algorithm_is_not_an_oid(admin):
    creds = pki.client_cert(pki.make_pki("shapes api").clients_ca, "shapes")
    first = put(admin, {"cert": creds.cert_pem.decode(), "key": creds.key_pem.decode()}, 201).json
    error = put(admin, {"cert": creds.cert_pem.decode(), "key": encrypted_key(NOT_AN_OID).decode(),
                        "key_password": "secret"}, 400).json
    assert error["error"]["code"] in ("invalid_key", "wrong_password")
    assert "Traceback" not in json.dumps(error)
    assert admin.get(URL).json == first
