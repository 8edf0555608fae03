"""Certificates not meant for TLS client authentication are refused at upload, naming the reason."""

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki

URL = "/api/v1/employees/purpose/addresses/1"


def key_usage(digital_signature=False, key_encipherment=False, key_agreement=False):
    return x509.KeyUsage(digital_signature, False, key_encipherment, False, key_agreement, False, False, False, False)


@pytest.fixture(scope="module")
def ca():
    return interop_pki.make_ca("purpose root")


def upload(ca, kind="p256", extensions=(), encoding="pkcs8"):
    """An identity under `ca` with exactly `extensions` on its leaf."""
    return interop_pki.identity("purpose", ca, kind, encoding, extensions=extensions)


REFUSED = {
    "eku-server-only": ("p256", [x509.ExtendedKeyUsage([EKU.SERVER_AUTH])], "Extended Key Usage"),
    "eku-code-signing": ("p256", [x509.ExtendedKeyUsage([EKU.CODE_SIGNING, EKU.EMAIL_PROTECTION])],
                         "Extended Key Usage"),
    "ku-rsa-key-encipherment-only": ("rsa2048", [key_usage(key_encipherment=True)], "digitalSignature"),
    "ku-ec-key-agreement-only": ("p256", [key_usage(key_agreement=True)], "digitalSignature"),
}
ACCEPTED = {
    "eku-client-auth": ("p256", [x509.ExtendedKeyUsage([EKU.CLIENT_AUTH])]),
    "eku-client-and-server": ("rsa2048", [x509.ExtendedKeyUsage([EKU.SERVER_AUTH, EKU.CLIENT_AUTH])]),
    "eku-any": ("p256", [x509.ExtendedKeyUsage([EKU.ANY_EXTENDED_KEY_USAGE])]),
    "no-eku-no-ku": ("p256", []),
    "ku-digital-signature": ("rsa2048", [key_usage(digital_signature=True, key_encipherment=True)]),
    "ku-ec-signature-and-agreement": ("p256", [key_usage(digital_signature=True, key_agreement=True),
                                               x509.ExtendedKeyUsage([EKU.CLIENT_AUTH])]),
}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("encoding", ["pkcs8", "p12"])
def test_certificate_not_for_client_auth_is_refused(ca, case, encoding):
    kind, extensions, reason = REFUSED[case]
    with pytest.raises(InputError) as e:
        upload(ca, kind, extensions, encoding).load()
    assert e.value.code == "invalid_certificate"
    assert reason in e.value.message and "client" in e.value.message
    assert "PRIVATE KEY" not in e.value.message


@pytest.mark.parametrize("case", ACCEPTED)
@pytest.mark.parametrize("encoding", ["pkcs8", "p12"])
def test_certificate_for_client_auth_is_accepted(ca, case, encoding):
    kind, extensions = ACCEPTED[case]
    made = upload(ca, kind, extensions, encoding)
    assert made.load().fingerprint_sha256 == made.sha256


def test_only_the_leaf_is_checked(ca):
    # The intermediate's own purposes (a CA certificate: keyCertSign, no digitalSignature) are not the leaf's.
    inter = interop_pki.make_ca("purpose intermediate", ca)
    made = interop_pki.identity("purpose", inter, "p256", "pkcs8")
    assert ClientIdentity.from_pem(made.chain_pem, made.key_pem).chain_length == 2


def _body(made):
    return {"cert": made.chain_pem.decode(), "key": made.key_pem.decode(), "host": "peer.example.com", "port": 8443}


def test_api_refuses_a_server_only_certificate_and_keeps_the_stored_identity(admin, ca):
    good = upload(ca, "p256", [x509.ExtendedKeyUsage([EKU.CLIENT_AUTH])])
    first = admin.put(URL, json.dumps(_body(good)), content_type="application/json", status=201).json
    bad = upload(ca, "p256", [x509.ExtendedKeyUsage([EKU.SERVER_AUTH])])
    error = admin.put(URL, json.dumps(_body(bad)), content_type="application/json", status=400).json["error"]
    assert error["code"] == "invalid_certificate" and "clientAuth" in error["message"]
    assert admin.get(URL).json == first


def test_api_refuses_a_pkcs12_with_a_key_agreement_only_certificate(admin, ca):
    bad = upload(ca, "p256", [key_usage(key_agreement=True)], "p12")
    body = {"pkcs12": base64.b64encode(bad.pkcs12).decode(), "pkcs12_password": bad.password,
            "host": "peer.example.com", "port": 8443}
    error = admin.put(URL, json.dumps(body), content_type="application/json", status=400).json["error"]
    assert error["code"] == "invalid_certificate" and "digitalSignature" in error["message"]
    admin.get(URL, status=404)
