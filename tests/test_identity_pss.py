"""RSA-PSS client identities: reported truthfully, loaded by OpenSSL as RSA-PSS, accepted by a real server."""

import json
import shutil

import pytest

from dyncert import calls, context, targets
from dyncert.errors import RemoteError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki, peers, pki

pytestmark = pytest.mark.interp

FAST = calls.Timeouts(connect=5, handshake=5, read=5)
ENCODINGS = ("pkcs8", "pkcs8-enc", "p12")


@pytest.fixture(scope="module")
def world():
    """A client CA with one intermediate, RSA-PSS identities under it in each encoding, and a server PKI."""
    directory = interop_pki.workdir()
    root = interop_pki.make_ca("pss root")
    inter = interop_pki.make_ca("pss intermediate", root)
    stranger = interop_pki.make_ca("stranger root")
    w = type("World", (), {})()
    w.root, w.stranger = root, stranger
    w.uploads = {enc: interop_pki.identity(f"pss-{enc}", inter, "rsa-pss", enc, directory) for enc in ENCODINGS}
    w.server_pki = pki.make_pki("pss server")
    w.server = pki.server_cert(w.server_pki.root)
    yield w
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["memfd", "pipe", "tempfile"])
def tier(request):
    """Each context-loading tier in turn."""
    if request.param == "memfd" and not context.memfd_available():
        pytest.skip("no os.memfd_create in this interpreter: the other tiers cover it")
    if request.param == "pipe" and not context.pipe_available():
        pytest.skip("pipes do not read back through /proc/self/fd here: the tempfile tier covers it")
    context.set_memfd_enabled(request.param == "memfd")
    context.set_pipe_enabled(request.param in ("memfd", "pipe"))
    yield request.param
    context.set_memfd_enabled(True)
    context.set_pipe_enabled(True)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_rsa_pss_identity_reports_its_key_type(world, encoding):
    ident = world.uploads[encoding].load()
    assert ident.key_type == "RSA-PSS 2048"
    assert ident.metadata()["key_type"] == "RSA-PSS 2048"
    assert ident.fingerprint_sha256 == world.uploads[encoding].sha256
    assert ident.chain_length == 2


def _request(ident, server_trusts, world):
    """https_request as `ident` to a Python server requiring a client certificate under `server_trusts`."""
    with peers.PythonTLSPeer(world.server, client_ca_pem=server_trusts) as peer:
        ctx = context.client_context(ident, world.server_pki.ca_pem)
        result = calls.https_request(ctx, targets.validate_target(peer.host, peer.port, "localhost"),
                                     ident.fingerprint_sha256, timeouts=FAST)
    return json.loads(result["body"])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_rsa_pss_identity_shakes_hands_with_a_server_requiring_client_auth(world, encoding, tier):
    ident = world.uploads[encoding].load()
    seen = _request(ident, world.root.cert_pem, world)
    assert seen["fingerprint_sha256"] == world.uploads[encoding].sha256


def test_rsa_pss_identity_from_an_untrusted_ca_is_rejected(world, tier):
    # Negative twin on the same harness: the server trusts another CA, so the same identity is refused.
    ident = world.uploads["pkcs8"].load()
    with pytest.raises(RemoteError) as e:
        _request(ident, world.stranger.cert_pem, world)
    assert e.value.code == "peer_rejected_certificate"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_stored_form_of_an_rsa_pss_identity_still_works(world, encoding, tier):
    # models.py seals identity.key_pem and rebuilds with from_trusted_pem: that form must keep RSA-PSS.
    original = world.uploads[encoding].load()
    stored = ClientIdentity.from_trusted_pem(original.chain_pem, original.key_pem)
    assert stored.key_type == "RSA-PSS 2048" and stored.content_id == original.content_id
    seen = _request(stored, world.root.cert_pem, world)
    assert seen["fingerprint_sha256"] == original.fingerprint_sha256


def test_reloading_the_normalised_key_pem_keeps_rsa_pss(world):
    # compat.wrap_socket re-validates stored PEM text with from_pem (outbound.py does): same result.
    original = world.uploads["p12"].load()
    again = ClientIdentity.from_pem(original.chain_pem, original.key_pem)
    assert again.key_pem == original.key_pem and again.key_type == "RSA-PSS 2048"
    assert b"PRIVATE KEY" not in repr(again).encode()


def test_plain_rsa_identity_is_still_reported_as_rsa(world):
    # The twin: an ordinary RSA key stays "RSA 2048" and keeps cryptography's PKCS#8 encoding.
    directory = interop_pki.workdir()
    try:
        plain = interop_pki.identity("plain-rsa", world.root, "rsa2048", "pkcs1", directory).load()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert plain.key_type == "RSA 2048"
    seen = _request(plain, world.root.cert_pem, world)
    assert seen["fingerprint_sha256"] == plain.fingerprint_sha256


def test_rsa_pss_key_with_parameters_keeps_them(world, tier):
    # A key restricted to SHA-256/salt 32 must reach OpenSSL with its parameters, or it will sign otherwise.
    directory = interop_pki.workdir()
    try:
        upload = interop_pki.identity("pss-restricted", world.root, "rsa-pss-restricted", "pkcs8-enc", directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ident = upload.load()
    assert ident.key_type == "RSA-PSS 2048"
    params = interop_pki.openssl("pkey", "-noout", "-text", data=ident.key_pem).decode()
    assert "Hash Algorithm: SHA2-256" in params and "Minimum Salt Length: 32" in params  # the restrictions survived
    assert _request(ident, world.root.cert_pem, world)["fingerprint_sha256"] == upload.sha256
    with pytest.raises(RemoteError) as e:
        _request(ident, world.stranger.cert_pem, world)
    assert e.value.code == "peer_rejected_certificate"


def test_api_stores_and_uses_an_rsa_pss_identity(admin, world):
    # Through the app: sealed into Datastore, read back with from_trusted_pem, presented to a real server.
    upload = world.uploads["pkcs8-enc"]
    url = "/api/v1/employees/pss/addresses/1"
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.root.cert_pem) as peer:
        body = {"cert": upload.chain_pem.decode(), "key": upload.key_pem.decode(), "key_password": upload.password,
                "ca_certs": world.server_pki.ca_pem.decode(), "host": "127.0.0.1", "port": peer.port,
                "server_hostname": "localhost"}
        view = admin.put(url, json.dumps(body), content_type="application/json", status=201).json
        assert view["key_type"] == "RSA-PSS 2048" and view["fingerprint_sha256"] == upload.sha256
        reply = admin.post(url + "/request", json.dumps({"method": "GET", "path": "/"}),
                           content_type="application/json").json
    assert reply["status"] == 200 and json.loads(reply["body"])["fingerprint_sha256"] == upload.sha256
