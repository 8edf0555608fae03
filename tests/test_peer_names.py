"""Peer certificate names in call results: openssl order (C=.., O=.., CN=..), like the client's own."""

import ssl

import trustme
from cryptography import x509

from dyncert import calls


def _openssl_order(name):
    """What `openssl x509 -subject` prints, without its spaces around '=': the RDNs first to last."""
    return ", ".join(attr.rfc4514_string() for attr in name)


def test_peer_subject_and_issuer_are_in_openssl_order():
    ca = trustme.CA(organization_name="Peer Org", organization_unit_name="Peer CA")
    leaf = ca.issue_cert("peer.example", common_name="peer.example", organization_name="Peer Org",
                         organization_unit_name="Edge")
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    cert = x509.load_der_x509_certificate(der)
    facts = calls.peer_facts(der)
    assert facts["subject"] == _openssl_order(cert.subject)
    assert facts["subject"].startswith("O=Peer Org") and facts["subject"].endswith("CN=peer.example")
    assert facts["issuer"] == _openssl_order(cert.issuer) and facts["issuer"].startswith("O=Peer Org")
    assert facts["san"] == ["DNS:peer.example"]


def test_reversed_rfc4514_order_is_not_what_the_peer_facts_show():
    ca = trustme.CA(organization_name="Peer Org")
    leaf = ca.issue_cert("peer.example", common_name="peer.example", organization_name="Peer Org")
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    reversed_order = x509.load_der_x509_certificate(der).subject.rfc4514_string()  # CN=..,O=..
    assert calls.peer_facts(der)["subject"] != reversed_order


def test_no_peer_certificate_has_no_names():
    assert calls.peer_facts(None) == {"subject": None, "issuer": None, "san": [], "not_after": None}
