"""dyncert.CertificateError is the stdlib's ssl.CertificateError too, so ported seed code catches it."""

import ssl

import pytest

import dyncert
from dyncert.compat import match_hostname

pytestmark = pytest.mark.interp

PEER = {"subject": ((("commonName", "a.example.com"),),), "subjectAltName": (("DNS", "a.example.com"),)}


def test_certificate_error_is_the_stdlib_one_and_a_value_error():
    assert issubclass(dyncert.CertificateError, ssl.CertificateError)
    assert issubclass(dyncert.CertificateError, ssl.SSLCertVerificationError)
    assert issubclass(dyncert.CertificateError, ValueError)
    assert issubclass(dyncert.CertificateError, dyncert.RemoteError)


def test_seed_code_catching_ssl_certificate_error_catches_a_mismatch():
    try:
        match_hostname(PEER, "b.example.com")
    except ssl.CertificateError as e:  # the seed's except clause, import changed only
        assert e.code == "hostname_mismatch"
        assert "b.example.com" in str(e) and e.verify_message == str(e)
        assert e.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH, as OpenSSL reports it
    else:
        pytest.fail("hostname mismatch not raised")


def test_matching_hostname_raises_nothing():
    assert match_hostname(PEER, "a.example.com") is None
