"""Every slot can be tested every way (issue 19.2): POST .../next/request and .../next/echo, like the current's.

The twins run on the same peers: the current identity's calls, and a next identity the peer refuses.
The rotation case: nginx takes the next certificate in the handshake and refuses it only at the
HTTP layer, so next/handshake passes and next/request says peer_rejected_certificate.
"""

import json

import pytest

from tests.harness import pki
from tests.harness.peers import PythonTLSPeer
from tests.harness.refusing_peers import nginx_peer

API = "/api/v1/employees/asalieri/addresses/1"


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("next calls")
    return dict(pki=p, server=pki.server_cert(p.root), current=pki.client_cert(p.clients_ca, "current"),
                next=pki.client_cert(p.clients_ca, "next"),
                stranger=pki.client_cert(pki.make_pki("stranger").clients_ca, "mallory"))


def body_of(creds, port, ca_pem):
    return dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=ca_pem.decode(),
                host="127.0.0.1", port=port, server_hostname="localhost")


def post(admin, path, body=None, status=200):
    return admin.post(API + path, json.dumps(body if body is not None else {}), content_type="application/json",
                      status=status).json


def test_next_request_presents_the_next_certificate(admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        admin.put_json(API, body_of(world["current"], peer.port, p.ca_pem), status=201)
        admin.put_json(API + "/next", body_of(world["next"], peer.port, p.ca_pem), status=201)
        reply = post(admin, "/next/request", {"method": "POST", "path": "/rotate", "headers": {"X-Test": "1"},
                                              "body": "hello"})
        assert reply["ok"] and reply["status"] == 200
        assert json.loads(reply["body"])["fingerprint_sha256"] == world["next"].fingerprint_sha256
        assert reply["tls"]["client_fingerprint_sha256"] == world["next"].fingerprint_sha256
        # The twin: the current slot's request still presents the current certificate.
        current = post(admin, "/request", {"path": "/"})
        assert json.loads(current["body"])["fingerprint_sha256"] == world["current"].fingerprint_sha256


def test_next_echo_presents_the_next_certificate(admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem, mode="echo") as peer:
        admin.put_json(API, body_of(world["current"], peer.port, p.ca_pem), status=201)
        admin.put_json(API + "/next", body_of(world["next"], peer.port, p.ca_pem), status=201)
        reply = post(admin, "/next/echo", {"send": "ping\n"})
        assert reply["ok"] and reply["received"] == "ping\n"
        assert reply["tls"]["client_fingerprint_sha256"] == world["next"].fingerprint_sha256
        assert peer.client_cert_seen["fingerprint_sha256"] == world["next"].fingerprint_sha256
        current = post(admin, "/echo", {"send": "pong\n"})
        assert current["tls"]["client_fingerprint_sha256"] == world["current"].fingerprint_sha256


def test_next_calls_without_a_next_are_409_no_next(admin, world):
    p = world["pki"]
    admin.put_json(API, body_of(world["current"], 9, p.ca_pem), status=201)
    for kind, body in (("request", {"path": "/"}), ("echo", {"send": "x\n"})):
        error = post(admin, f"/next/{kind}", body, status=409)["error"]
        assert error["code"] == "no_next", error


def test_next_calls_refuse_bad_bodies_like_the_current_ones(admin, world):
    p = world["pki"]
    admin.put_json(API, body_of(world["current"], 9, p.ca_pem), status=201)
    admin.put_json(API + "/next", body_of(world["next"], 9, p.ca_pem), status=201)
    for kind, body in (("request", {"method": "TRACE"}), ("request", {"path": "no-slash"}),
                       ("request", {"headers": {"Host": "x"}}), ("echo", {"send": ""})):
        for slot in ("", "/next"):
            error = post(admin, f"{slot}/{kind}", body, status=400)["error"]
            assert error["code"] == "invalid_request", (slot, kind, error)


def test_next_request_to_a_port_nothing_listens_on_is_502(admin, world):
    from tests.harness.ports import refused_port
    p = world["pki"]
    port = refused_port()
    admin.put_json(API, body_of(world["current"], port, p.ca_pem), status=201)
    admin.put_json(API + "/next", body_of(world["next"], port, p.ca_pem), status=201)
    reply = post(admin, "/next/request", {"path": "/"}, status=502)
    assert reply["ok"] is False and reply["error"]["code"] == "connection_refused"


def test_rotation_whose_next_certificate_only_the_http_layer_refuses(admin, world):
    p = world["pki"]
    with nginx_peer(world["server"], p.ca_pem) as peer:
        admin.put_json(API, body_of(world["current"], peer.port, p.ca_pem), status=201)
        admin.put_json(API + "/next", body_of(world["stranger"], peer.port, p.ca_pem), status=201)
        # nginx completes the handshake with any certificate: next/handshake cannot see the refusal...
        assert post(admin, "/next/handshake")["ok"]
        # ...next/request can, and says so.
        refused = post(admin, "/next/request", {"path": "/"}, status=502)
        assert refused["ok"] is False and refused["error"]["code"] == "peer_rejected_certificate"
        assert "HTTP 400 '400 The SSL certificate error'" in refused["error"]["message"]
        # The twin: a next certificate nginx trusts.
        admin.put_json(API + "/next", body_of(world["next"], peer.port, p.ca_pem))
        accepted = post(admin, "/next/request", {"path": "/"})
        assert accepted["status"] == 200 and "CN=next" in json.loads(accepted["body"])["subject"]
