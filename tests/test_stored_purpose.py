"""The client-auth purpose check applies at upload, not when a stored identity is used.

An identity stored before the check (a leaf whose Extended Key Usage lacks clientAuth) keeps
working with every call, echo included (compat.wrap_socket); a new upload of it is refused.
"""

import io
import socket
import ssl

import pytest
from cryptography import x509
from google.cloud import ndb
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

import dyncert
import models
import sealing
from dyncert import targets
from dyncert.errors import DyncertError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki, peers, pki

URL = "/api/v1/employees/legacy/addresses/1"


@pytest.fixture(scope="module")
def world():
    """A client CA, a server-only leaf under it (as uploaded before the check), and a server PKI."""
    w = type("World", (), {})()
    w.ca = interop_pki.make_ca("legacy purpose root")
    w.server_only = interop_pki.identity("legacy", w.ca, "p256", "pkcs8",
                                         extensions=[x509.ExtendedKeyUsage([EKU.SERVER_AUTH])])
    w.server_pki = pki.make_pki("legacy purpose server")
    w.server = pki.server_cert(w.server_pki.root)
    return w


def store_legacy(settings, world, port):
    """Write the identity straight into Datastore, as an upload made before the purpose check did."""
    identity = ClientIdentity.from_trusted_pem(world.server_only.chain_pem, world.server_only.key_pem)
    target = targets.validate_target("127.0.0.1", port, "localhost")
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        key = models.address_key("legacy", 1)
        slot = models.new_slot(identity, world.server_pki.ca_pem.decode(), target, "TLS",
                               sealing.kek_from_settings(settings), key)
        models.Employee(key=key.parent()).put()
        entity = models.Address(key=key)
        models.copy_slot(slot, entity)
        models.binding.reseal(entity, sealing.kek_from_settings(settings))  # sealed in place, as a write does
        entity.put()


def test_stored_identity_without_client_auth_still_echoes(admin, settings, world):
    with peers.PythonTLSPeer(world.server, mode="echo") as peer:
        store_legacy(settings, world, peer.port)
        echoed = admin.post_json(URL + "/echo", {"send": "still here\n"}).json
        shook = admin.post(URL + "/handshake").json
    assert echoed["ok"] is True and echoed["received"] == "still here\n"
    assert echoed["tls"]["client_fingerprint_sha256"] == world.server_only.sha256
    assert shook["ok"] is True and shook["client_fingerprint_sha256"] == world.server_only.sha256


def test_the_same_material_is_refused_at_upload(admin, world):
    body = {"cert": world.server_only.chain_pem.decode(), "key": world.server_only.key_pem.decode(),
            "host": "127.0.0.1", "port": 443}
    error = admin.put_json(URL, body, status=400).json["error"]
    assert error["code"] == "invalid_certificate" and "clientAuth" in error["message"]
    admin.get(URL, status=404)  # nothing stored


def _wrap(world, peer):
    """dyncert.wrap_socket as seed code calls it, with fresh PEM strings, then one echoed line."""
    sock = socket.create_connection((peer.host, peer.port), timeout=10)
    try:
        tls = dyncert.wrap_socket(sock, keyfile=io.StringIO(world.server_only.key_pem.decode()),
                                  certfile=io.StringIO(world.server_only.chain_pem.decode()),
                                  cert_reqs=ssl.CERT_REQUIRED, ca_certs=world.server_pki.ca_pem,
                                  server_hostname="localhost")
        tls.sendall(b"ping\n")
        return tls.recv(64)
    finally:
        sock.close()


def test_seed_wrap_socket_leaves_the_purpose_to_the_server(world):
    """Like Python 2.7's ssl.wrap_socket: a server that does not check the purpose accepts the certificate..."""
    with peers.PythonTLSPeer(world.server, mode="echo") as peer:
        assert _wrap(world, peer) == b"ping\n"


def test_seed_wrap_socket_against_a_server_that_checks_the_purpose(world):
    """... and one that verifies client certificates refuses it (OpenSSL: unsupported certificate purpose)."""
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.ca.cert_pem, mode="echo") as peer:
        with pytest.raises((ssl.SSLError, OSError, DyncertError)):
            assert _wrap(world, peer) != b"ping\n"
    assert any("purpose" in e for e in peer.errors), peer.errors
