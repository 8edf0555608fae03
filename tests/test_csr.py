"""dyncert.csr: every key type makes a valid CSR; names are checked before any key is made."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dyncert import csr
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity


@pytest.mark.parametrize("key_type, label", [
    ("EC-P256", "EC P-256"), ("EC-P384", "EC P-384"), ("RSA-2048", "RSA 2048"), ("RSA-3072", "RSA 3072"),
    ("RSA-4096", "RSA 4096"), ("Ed25519", "Ed25519")])
def test_every_key_type_makes_a_signed_csr_for_its_key(key_type, label):
    made = csr.new_key_and_csr(key_type, {"CN": "asalieri"}, {"dns": ["a.example.com"]})
    request = x509.load_pem_x509_csr(made.csr_pem.encode())
    assert request.is_signature_valid and made.key_type == label
    key = serialization.load_pem_private_key(made.key_pem, None)
    assert csr.public_key_sha256(key.public_key()) == csr.public_key_sha256(request.public_key()) \
        == made.public_key_sha256
    assert made.key_pem.startswith(b"-----BEGIN " + b"PRIVATE KEY-----")  # PKCS#8, as uploads are sealed
    assert "PRIVATE" not in repr(made) and made.public_key_sha256 in repr(made)


def test_the_key_pairs_with_a_certificate_issued_for_the_csr():
    import trustme
    from tests.harness.pki import sign_csr
    made = csr.new_key_and_csr(None, {"CN": "asalieri"}, None)
    chain = sign_csr(trustme.CA(), made.csr_pem)
    identity = ClientIdentity.from_pem(chain, made.key_pem)
    assert identity.subject == "CN=asalieri" and identity.key_type == "EC P-256"


def test_names_are_normalised():
    names, shown = csr.san_entries({"dns": ["Bücher.Example.", "*.Example.com"], "email": ["a.b+c@example.com"],
                                    "uri": ["urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"]})
    assert shown == ["DNS:xn--bcher-kva.example", "DNS:*.example.com", "email:a.b+c@example.com",
                     "URI:urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"]
    assert len(names) == 4


@pytest.mark.parametrize("san", [
    {"dns": ["a..b.example"]}, {"dns": ["*.*.example.com"]}, {"dns": ["a.example.com/x"]}, {"dns": [""]},
    {"dns": [None]}, {"dns": ["x" * 254]}, {"dns": ["::1"]}, {"email": ["a@"]}, {"email": [".a@example.com"]},
    {"email": ["a@exa mple.com"]}, {"uri": ["http://ex\u00e4mple.com/"]}, {"uri": ["no-scheme"]},
    {"uri": ["x" * 2049]}, {"dns": ["a.example"] * 101}, {"other": []}, [],
])
def test_bad_names_are_invalid_request(san):
    with pytest.raises(InputError) as refused:
        csr.san_entries(san)
    assert refused.value.code == "invalid_request"


def test_a_bad_subject_is_refused_before_a_key_is_generated(monkeypatch):
    monkeypatch.setattr(csr, "generate_key", lambda name: pytest.fail("a key was generated"))
    for subject in (None, {}, {"CN": None}, {"CN": 5}, {"CN": "x", "C": "A1"}, {"CN": "x", "O": "o" * 65}):
        with pytest.raises(InputError):
            csr.new_key_and_csr("EC-P256", subject, None)
    with pytest.raises(InputError):
        csr.new_key_and_csr("EC-P256", {"CN": "x"}, {"dns": ["bad name"]})


def test_subjects_of_both_csr_paths_are_in_openssl_order():
    """A key made here and a signer's key (KMS, HSM) report the subject as `openssl x509 -subject` does."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from dyncert import csr as csr_module
    from dyncert.signers import LocalSigner

    subject = {"CN": "asalieri", "O": "Salieri & Co", "C": "AT"}
    made = csr_module.new_key_and_csr(subject=subject)
    signed = csr_module.signer_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())), subject=subject)
    assert made.subject == signed.subject == "C=AT, O=Salieri & Co, CN=asalieri"
