"""key_mismatch names the certificate's real key type (RSA-PSS, not "RSA")."""

import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki


@pytest.fixture(scope="module")
def pss():
    """An RSA-PSS leaf under a test CA, its key, and a second RSA-PSS key."""
    directory = interop_pki.workdir()
    ca = interop_pki.make_ca("mismatch root")
    key_pem = interop_pki.rsa_pss_key()
    leaf = interop_pki.openssl_issue(ca, key_pem, "pss-mismatch", directory)
    yield leaf.public_bytes(serialization.Encoding.PEM), key_pem, interop_pki.rsa_pss_key()
    shutil.rmtree(directory, ignore_errors=True)


def _mismatch(cert_pem, key_pem):
    with pytest.raises(InputError) as caught:
        ClientIdentity.from_pem(cert_pem, key_pem)
    assert caught.value.code == "key_mismatch"
    return caught.value.message


def test_another_rsa_pss_key_is_named_rsa_pss(pss):
    cert_pem, _, other = pss
    assert _mismatch(cert_pem, other) == ("The private key does not match the certificate "
                                          "(both RSA-PSS 2048, but different keys).")


def test_an_ec_key_for_an_rsa_pss_certificate_names_both(pss):
    cert_pem, _, _ = pss
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert _mismatch(cert_pem, ec_pem) == ("The private key does not match the certificate "
                                           "(certificate public key: RSA-PSS 2048, private key: EC P-256).")


def test_the_matching_rsa_pss_key_is_accepted(pss):
    cert_pem, key_pem, _ = pss
    assert ClientIdentity.from_pem(cert_pem, key_pem).key_type == "RSA-PSS 2048"
