"""The demo's open port: any client certificate succeeds end to end; the strict port still refuses it."""

import datetime
import json
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.app import read
from devserver import demo_peer as peer_module
from tests.harness.ports import free_port

BASE = "/api/v1/employees/newcomer/addresses/1"


def self_signed(cn="my own cert"):
    """A self-signed client certificate and key (PEM text), as a newcomer would make with openssl."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Newcomer Ltd"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode(), cert


@pytest.fixture(scope="module")
def open_peer(demo_pki):
    """The open port of the demo peer (plus the strict ones) on free loopback ports."""
    servers = peer_module.serve(demo_pki, free_port(), free_port(), open_port=free_port())
    yield servers[0].server_address[1], servers[2].server_address[1]
    for server in servers:
        server.shutdown()
        server.server_close()


def store(admin, demo_pki, cert, key, port):
    admin.put_json(BASE, {"cert": cert, "key": key, "ca_certs": read(demo_pki, "ca.pem"), "host": "127.0.0.1",
                          "port": port, "server_hostname": "localhost"})


def test_own_self_signed_certificate_succeeds_against_the_open_port(admin, demo_pki, open_peer):
    strict_port, open_port = open_peer
    cert_pem, key_pem, cert = self_signed()
    store(admin, demo_pki, cert_pem, key_pem, open_port)
    reply = admin.post_json(BASE + "/request", {"method": "GET", "path": "/whoami"}).json
    seen = json.loads(reply["body"])
    assert reply["status"] == 200
    assert seen["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert seen["fingerprint_sha256"] == reply["tls"]["client_fingerprint_sha256"]
    assert seen["subject"] == "C=DE, O=Newcomer Ltd, CN=my own cert" == seen["issuer"]
    assert "demo convenience" in seen["demo"] and seen["path"] == "/whoami"


def test_repeated_calls_resume_against_the_open_port(admin, demo_pki, open_peer):
    """dyncert resumes TLS sessions; the open port must accept a resumed handshake too."""
    _, open_port = open_peer
    cert_pem, key_pem, cert = self_signed()
    store(admin, demo_pki, cert_pem, key_pem, open_port)
    for _ in range(3):
        reply = admin.post(BASE + "/handshake").json
        assert reply["ok"] and reply["client_fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()


def test_the_strict_demo_port_refuses_the_same_certificate(admin, demo_pki, open_peer):
    strict_port, _ = open_peer
    cert_pem, key_pem, _ = self_signed()
    store(admin, demo_pki, cert_pem, key_pem, strict_port)
    reply = admin.post_json(BASE + "/request", {"method": "GET", "path": "/"}, status=502).json
    assert reply["ok"] is False
    assert reply["error"]["code"] in ("peer_rejected_certificate", "connection_reset")


def test_the_open_port_reports_exactly_the_certificate_presented(demo_pki, open_peer, tmp_path):
    """Two different certificates over the same harness: each is named by its own fingerprint."""
    _, open_port = open_peer
    seen = []
    for cn in ("first", "second"):
        cert_pem, key_pem, cert = self_signed(cn)
        (tmp_path / "c.pem").write_text(cert_pem + key_pem)
        ctx = ssl.create_default_context(cafile=f"{demo_pki}/ca.pem")
        ctx.load_cert_chain(str(tmp_path / "c.pem"))
        with socket.create_connection(("127.0.0.1", open_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                data = b""
                while chunk := tls.recv(4096):
                    data += chunk
        body = json.loads(data.partition(b"\r\n\r\n")[2])
        assert body["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
        seen.append(body["fingerprint_sha256"])
    assert seen[0] != seen[1]


def test_the_open_port_requires_a_client_certificate(demo_pki, open_peer):
    """No certificate at all: the handshake (or the first read under TLS 1.3) fails."""
    _, open_port = open_peer
    ctx = ssl.create_default_context(cafile=f"{demo_pki}/ca.pem")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", open_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if not tls.recv(4096):
                    raise ConnectionError("closed without an answer")
