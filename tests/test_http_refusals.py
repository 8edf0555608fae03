"""A client certificate refused at the HTTP layer is a refusal (issue 19.1), against real nginx, Apache and HAProxy.

Each server completes the TLS handshake and then answers the request; how it says "your certificate"
decides what dyncert can tell. Every refusal has its accepting twin on the same server (a trusted
certificate -> 200), and an answer with nothing about certificates stays `ok` with its status.

What each server answers (seen here with Debian 12's nginx 1.22, Apache 2.4, HAProxy 2.6):
  nginx  ssl_verify_client on           400 "The SSL certificate error" / "No required SSL certificate was sent"
  nginx  optional + error_page 495 =495 495 (its own status for a certificate error)
  Apache SSLVerifyClient in <Location>  TLS 1.3 without post-handshake auth: 403 "Cannot perform Post-Handshake
                                        Authentication" (dyncert offers it: the refusal is then an alert)
  Apache optional_no_ca + Require expr  403 "You don't have permission to access this resource." (any 403)
  HAProxy verify optional + ignore-err  403 "Request forbidden by administrative rules." (any deny)
  HAProxy/Apache told to say so         495, or a 401/403 whose body names the client certificate
"""

import ssl

import pytest

from tests.harness import pki
from dyncert import calls, targets
from dyncert.context import client_context
from dyncert.errors import RemoteError
from dyncert.identity import ClientIdentity
from tests.harness.refusing_peers import (
    ApacheOptional, ApacheOptionalNoCa, ApacheOptionalSaysSo, ApachePerLocation, HAProxy495, HAProxyIgnoring,
    HAProxyOptional, HAProxySaysSo, nginx_peer, running)

TIMEOUTS = calls.Timeouts(connect=5, handshake=10, read=10)


@pytest.fixture(scope="module")
def world():
    ours, stranger = pki.make_pki("refusals"), pki.make_pki("stranger")
    good, bad = pki.client_cert(ours.clients_ca, "trusted"), pki.client_cert(stranger.clients_ca, "mallory")
    return dict(pki=ours, server=pki.server_cert(ours.root),
                good=ClientIdentity.from_pem(good.cert_pem, good.key_pem),
                bad=ClientIdentity.from_pem(bad.cert_pem, bad.key_pem))


def context_for(world, who, pha=True):
    """A dyncert client context for `who` (good, bad, or None: no client certificate at all)."""
    if who is None:
        ctx = ssl.create_default_context(cadata=world["pki"].ca_pem.decode())
    else:
        ctx = client_context(world[who], world["pki"].ca_pem)
    if not pha:
        ctx.post_handshake_auth = False  # as a client that does not offer post-handshake authentication
    return ctx


def request(world, server, who, path="/", pha=True):
    """https_request as the app makes it: the result, or the RemoteError."""
    target = targets.validate_target("127.0.0.1", server.port, "localhost")
    try:
        return calls.https_request(context_for(world, who, pha), target, "fp", path=path, timeouts=TIMEOUTS)
    except RemoteError as e:
        return e


def refused(outcome, status, words):
    """The outcome is peer_rejected_certificate naming the HTTP status and the body's first line, with a hint."""
    assert isinstance(outcome, RemoteError), outcome
    assert outcome.code == "peer_rejected_certificate", outcome.message
    assert f"HTTP {status}" in outcome.message and words in outcome.message, outcome.message
    assert outcome.hint and outcome.hint in outcome.message
    return True


def refused_in_tls(outcome):
    """A refusal that came as a TLS alert (no HTTP status in it)."""
    assert isinstance(outcome, RemoteError), outcome
    assert outcome.code == "peer_rejected_certificate" and "TLS alert" in outcome.message, outcome.message
    return True


def answered(outcome, status):
    assert isinstance(outcome, dict), getattr(outcome, "message", outcome)
    assert outcome["ok"] and outcome["status"] == status, outcome
    return True


# --- nginx ----------------------------------------------------------------------------------------

def test_nginx_400_for_a_certificate_it_cannot_verify_is_a_refusal(world):
    with nginx_peer(world["server"], world["pki"].ca_pem) as peer:
        assert refused(request(world, peer, "bad"), 400, "The SSL certificate error")
        assert answered(request(world, peer, "good"), 200)  # the twin: a trusted certificate


def test_nginx_400_for_no_certificate_is_a_refusal(world):
    with nginx_peer(world["server"], world["pki"].ca_pem) as peer:
        assert refused(request(world, peer, None), 400, "No required SSL certificate was sent")
        assert answered(request(world, peer, "good"), 200)


def test_nginx_plain_400_is_an_answer_not_a_refusal(world):
    # Any other 4xx is what the partner answered: the call worked (ok, with its status).
    with nginx_peer(world["server"], world["pki"].ca_pem) as peer:
        result = request(world, peer, "good", path="/plain-400")
        assert answered(result, 400) and result["body"] == "bad input"


def test_nginx_495_status_is_a_refusal(world):
    location = ("    error_page 495 496 =495 /refused.txt;\n"
                "    location = /refused.txt { return 495 'certificate refused'; }\n")
    inside = "\n      if ($ssl_client_verify != SUCCESS) { return 495; }"
    with nginx_peer(world["server"], world["pki"].ca_pem, verify="optional", location=location, inside=inside) as peer:
        assert refused(request(world, peer, "bad"), 495, "certificate refused")
        assert answered(request(world, peer, "good"), 200)


# --- Apache ---------------------------------------------------------------------------------------

def test_apache_per_location_certificate_over_tls13(world):
    # dyncert offers post-handshake authentication: Apache asks for the certificate after the
    # handshake, takes the trusted one and refuses the other with an alert.
    with running(ApachePerLocation, world["server"], world["pki"].ca_pem) as server:
        assert answered(request(world, server, "good"), 200)
        assert refused_in_tls(request(world, server, "bad"))
        # A client that does not offer it gets Apache's 403 naming post-handshake authentication: a refusal.
        assert refused(request(world, server, "good", pha=False), 403, "Cannot perform Post-Handshake Authentication")


def test_apache_optional_refuses_a_presented_certificate_in_the_handshake(world):
    with running(ApacheOptional, world["server"], world["pki"].ca_pem) as server:
        assert refused_in_tls(request(world, server, "bad"))
        assert answered(request(world, server, "good"), 200)


def test_apache_optional_no_ca_403_cannot_be_told_from_any_403(world):
    # Documented limit: Apache's 403 page is the same for every access rule. It stays an answer
    # (ok, status 403; the admin page shows it in amber), never a success in green.
    with running(ApacheOptionalNoCa, world["server"], world["pki"].ca_pem) as server:
        result = request(world, server, "bad")
        assert answered(result, 403) and "You don't have permission" in result["body"]
        assert answered(request(world, server, "good"), 200)


def test_apache_told_to_name_the_certificate_is_a_refusal(world):
    with running(ApacheOptionalSaysSo, world["server"], world["pki"].ca_pem) as server:
        assert refused(request(world, server, "bad"), 403, "client certificate refused")
        assert answered(request(world, server, "good"), 200)


# --- HAProxy --------------------------------------------------------------------------------------

def test_haproxy_verify_optional_refuses_a_presented_certificate_in_the_handshake(world):
    with running(HAProxyOptional, world["server"], world["pki"].ca_pem) as server:
        assert refused_in_tls(request(world, server, "bad"))
        assert answered(request(world, server, "good"), 200)


def test_haproxy_generic_deny_cannot_be_told_from_any_403(world):
    with running(HAProxyIgnoring, world["server"], world["pki"].ca_pem) as server:
        result = request(world, server, "bad")
        assert answered(result, 403) and "Request forbidden by administrative rules" in result["body"]
        assert answered(request(world, server, "good"), 200)


def test_haproxy_answering_495_is_a_refusal(world):
    with running(HAProxy495, world["server"], world["pki"].ca_pem) as server:
        assert refused(request(world, server, "bad"), 495, "client certificate refused")
        assert answered(request(world, server, "good"), 200)


def test_haproxy_deny_naming_the_certificate_is_a_refusal(world):
    with running(HAProxySaysSo, world["server"], world["pki"].ca_pem) as server:
        assert refused(request(world, server, "bad"), 403, "client certificate refused")
        assert answered(request(world, server, "good"), 200)


# --- the table itself -----------------------------------------------------------------------------

@pytest.mark.parametrize("status, body, expected", [
    (400, b"<html><head><title>400 The SSL certificate error</title></head>", "400 The SSL certificate error"),
    (496, b"", "(no body)"),
    (401, b"Client certificate required\nmore", "Client certificate required"),
    (403, b"forbidden: your client certificate is not on the list", "forbidden: your client certificate"),
])
def test_refusal_table_rows(status, body, expected):
    target = targets.validate_target("127.0.0.1", 443, "partner.example")
    error = calls.http_refusal(status, body, target)
    assert error.code == "peer_rejected_certificate" and expected in error.message


@pytest.mark.parametrize("status, body", [
    (400, b"<html><head><title>400 Bad Request</title></head>"),  # nginx's plain 400
    (403, b"<h1>Forbidden</h1>You don't have permission to access this resource."),
    (404, b"The SSL certificate error"),  # a body that quotes it, on a status nginx does not use for it
    (500, b"client certificate store is down"),
    (200, b"The SSL certificate error"),
])
def test_other_answers_are_not_refusals(status, body):
    assert calls.http_refusal(status, body, targets.validate_target("127.0.0.1", 443, "partner.example")) is None


@pytest.mark.parametrize("tls_version", ["TLSv1_3", "TLSv1_2"])
def test_apache_per_location_with_a_signer_identity(world, tls_version):
    # The key stays with a signer: post-handshake authentication (1.3) and renegotiation (1.2) sign through it.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from dyncert import runtime
    binding = runtime.signer_binding()
    if not binding["available"]:
        pytest.skip(binding["detail"])
    from dyncert.signers import LocalSigner, SignerIdentity

    def signer_context(creds):
        ident = SignerIdentity(creds.cert_pem, LocalSigner(serialization.load_pem_private_key(creds.key_pem, None)))
        return client_context(ident, world["pki"].ca_pem, tls_version)

    trusted = pki.client_cert(world["pki"].clients_ca, "signed-here")
    foreign = pki.client_cert(pki.make_pki("stranger signer").clients_ca, "signed-elsewhere")
    with running(ApachePerLocation, world["server"], world["pki"].ca_pem) as server:
        target = targets.validate_target("127.0.0.1", server.port, "localhost")
        result = calls.https_request(signer_context(trusted), target, "fp", timeouts=TIMEOUTS)
        serial = x509.load_pem_x509_certificate(trusted.leaf_pem).serial_number
        assert answered(result, 200) and int(result["headers"]["X-Client-Serial"], 16) == serial  # it saw this one
        with pytest.raises(RemoteError) as refused:
            calls.https_request(signer_context(foreign), target, "fp", timeouts=TIMEOUTS)
        assert refused_in_tls(refused.value)
