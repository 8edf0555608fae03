"""Outbound call endpoints against real loopback peers: every success and every remote code."""

import dataclasses
import hashlib
import json
import ssl

import pytest
import webtest

import main
from tests.harness import nginx
from tests.harness import pki
from tests.harness.peers import PythonTLSPeer
from tests.harness.ports import refused_port

BASE = "/api/v1/employees/asalieri/addresses/1"


@pytest.fixture(scope="module")
def world(run_pki):
    """A PKI for peers and clients, a client identity it trusts, and one it does not."""
    p = run_pki.ours
    stranger = run_pki.stranger
    return dict(pki=p, server=run_pki.server, client=pki.client_cert(p.clients_ca, "asalieri"),
                other_client=pki.client_cert(p.clients_ca, "bob"),
                stranger_client=pki.client_cert(stranger.clients_ca, "mallory"), stranger_ca=stranger.ca_pem)


def store(admin, creds, ca_pem, port, host="127.0.0.1", sni="localhost", **extra):
    body = dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=ca_pem.decode(),
                host=host, port=port, server_hostname=sni, **extra)
    admin.put(BASE, json.dumps(body), content_type="application/json")


def call(admin, kind, body=None, status=200):
    return admin.post(BASE + "/" + kind, json.dumps(body or {}), content_type="application/json",
                      status=status).json


def remote_code(admin, kind="handshake", status=502):
    data = call(admin, kind, status=status)
    assert data["ok"] is False and data["error"]["message"]
    return data["error"]["code"]


# --- the demo peer of `make run`: handshake, request and echo succeed --------------------

def test_handshake_request_and_echo_against_the_demo_peer(admin, demo_pki, demo_peer, upload):
    https_port, echo_port = demo_peer
    view = admin.put(BASE, json.dumps(dict(upload, host="127.0.0.1", server_hostname="localhost",
                                          port=https_port)), content_type="application/json").json
    shake = call(admin, "handshake")
    assert shake["ok"] and shake["hostname_verified"] and shake["server_hostname"] == "localhost"
    assert shake["tls_version"] in ("TLSv1.2", "TLSv1.3") and shake["cipher"]
    assert shake["client_fingerprint_sha256"] == view["fingerprint_sha256"]
    assert "demo peer" in shake["peer"]["subject"]
    reply = call(admin, "request", {"method": "POST", "path": "/who", "headers": {"X-Test": "1"}, "body": "hi"})
    assert reply["status"] == 200 and reply["truncated"] is False
    peer_saw = json.loads(reply["body"])
    assert peer_saw["fingerprint_sha256"] == view["fingerprint_sha256"]
    assert peer_saw["path"] == "/who" and peer_saw["body"] == "hi"
    assert reply["tls"]["client_fingerprint_sha256"] == view["fingerprint_sha256"]
    echoed = call(admin, "echo", {"send": "hello dyncert\n"})
    assert echoed["received"] == "hello dyncert\n" and echoed["tls"]["hostname_verified"]


# --- negative twins on the same harness --------------------------------------------------

def test_wrong_ca_is_unknown_ca(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port)
        assert call(admin, "handshake")["ok"]
        store(admin, world["client"], world["stranger_ca"], peer.port)
        for kind in ("handshake", "request", "echo"):
            assert remote_code(admin, kind) == "unknown_ca", kind


def test_wrong_hostname_is_hostname_mismatch(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port, sni="localhost")
        assert call(admin, "handshake")["hostname_verified"]
        store(admin, world["client"], world["pki"].ca_pem, peer.port, sni="wrong.example.com")
        for kind in ("handshake", "request", "echo"):
            assert remote_code(admin, kind) == "hostname_mismatch", kind


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_from_another_ca_is_rejected_by_the_peer(admin, world, version):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem, max_version=version) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port)
        assert call(admin, "handshake")["ok"]
        store(admin, world["stranger_client"], world["pki"].ca_pem, peer.port)
        for kind in ("handshake", "request", "echo"):
            assert remote_code(admin, kind) == "peer_rejected_certificate", kind


def test_tls_version_mismatch_is_protocol_version(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem, max_version=ssl.TLSVersion.TLSv1_2) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port, tls_version="TLSv1_2")
        assert call(admin, "handshake")["tls_version"] == "TLSv1.2"
        store(admin, world["client"], world["pki"].ca_pem, peer.port, tls_version="TLSv1_3")
        assert remote_code(admin) == "protocol_version"


def test_refused_port(admin, world):
    store(admin, world["client"], world["pki"].ca_pem, refused_port())
    assert remote_code(admin) == "connection_refused"


def test_unresolvable_name(admin, world):
    store(admin, world["client"], world["pki"].ca_pem, 443, host="no-such-host.invalid", sni=None)
    assert remote_code(admin) == "dns_failure"


@pytest.mark.parametrize("mode,code", [("reset", "connection_reset"), ("garbage", "handshake_failed")])
def test_misbehaving_peers(admin, world, mode, code):
    with PythonTLSPeer(mode=mode) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port)
        assert remote_code(admin) == code


def test_silent_peer_times_out_with_504(datastore, settings, world):
    fast = webtest.TestApp(main.create_app(dataclasses.replace(settings, connect_timeout=1, io_timeout=0.5)),
                           extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    with PythonTLSPeer(mode="silent") as peer:
        store(fast, world["client"], world["pki"].ca_pem, peer.port)
        assert remote_code(fast, status=504) == "timeout"


def test_allowed_targets_is_enforced_at_call_time(datastore, settings, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        admin = webtest.TestApp(main.create_app(settings),
                                extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
        store(admin, world["client"], world["pki"].ca_pem, peer.port)
        narrow = webtest.TestApp(main.create_app(dataclasses.replace(settings, allowed_targets="partner.example.com")),
                                 extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
        error = narrow.post(BASE + "/handshake", status=400).json["error"]
        assert error["code"] == "target_not_allowed"


def test_rotation_takes_effect_on_the_very_next_call(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port)
        first = json.loads(call(admin, "request")["body"])["fingerprint_sha256"]
        store(admin, world["other_client"], world["pki"].ca_pem, peer.port)
        second = json.loads(call(admin, "request")["body"])["fingerprint_sha256"]
    assert first == world["client"].fingerprint_sha256
    assert second == world["other_client"].fingerprint_sha256


@pytest.mark.interop
@pytest.mark.skipif(not nginx.available(), reason="nginx is not installed")
@pytest.mark.parametrize("tls", ["1.2", None])
def test_nginx_names_the_presented_certificate(admin, world, tls):
    with nginx.NginxPeer(world["server"], world["pki"].ca_pem, tls=tls) as peer:
        store(admin, world["client"], world["pki"].ca_pem, peer.port)
        reply = call(admin, "request")
        seen = json.loads(reply["body"])
        sha1 = hashlib.sha1(ssl.PEM_cert_to_DER_cert(world["client"].leaf_pem.decode())).hexdigest()
        assert seen["fingerprint_sha1"] == sha1 and "CN=asalieri" in seen["subject"]
        assert seen["protocol"] == reply["tls"]["tls_version"]
        store(admin, world["stranger_client"], world["pki"].ca_pem, peer.port)
        stranger = admin.post(BASE + "/request", "{}", content_type="application/json", status="*")
        # nginx answers a rejected certificate with HTTP 400 over TLS 1.2/1.3 instead of an alert: a refusal.
        assert stranger.status_int == 502 and stranger.json["error"]["code"] == "peer_rejected_certificate"
        assert "HTTP 400 '400 The SSL certificate error'" in stranger.json["error"]["message"]


def test_call_input_errors(admin, world):
    store(admin, world["client"], world["pki"].ca_pem, refused_port())
    for body in ({"method": "TRACE"}, {"path": "no-slash"}, {"headers": {"Bad\nName": "x"}},
                 {"headers": ["x"]}, {"body": 5}):
        assert call(admin, "request", body, status=400)["error"]["code"] == "invalid_request", body
    assert call(admin, "echo", {"send": ""}, status=400)["error"]["code"] == "invalid_request"
    missing = admin.post("/api/v1/employees/nobody/addresses/9/handshake", status=404).json
    assert missing["error"]["code"] == "not_found"


def test_fetch_verifies_the_server_by_default(datastore, settings, world, tmp_path):
    settings = dataclasses.replace(settings, allowed_targets="localhost")  # fetch reaches loopback only if named
    ca_file = pki.write_pem(str(tmp_path), "ca.pem", world["pki"].ca_pem)
    with PythonTLSPeer(world["server"]) as peer:  # server-only TLS: no client certificate asked
        url = f"https://localhost:{peer.port}/hello"
        default = webtest.TestApp(main.create_app(settings),
                                  extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
        refused = default.post("/api/v1/fetch", json.dumps({"url": url}), content_type="application/json",
                               status=502).json
        assert refused["error"]["code"] == "unknown_ca"
        trusting = webtest.TestApp(main.create_app(dataclasses.replace(settings, ca_file=ca_file)),
                                   extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
        ok = trusting.post("/api/v1/fetch", json.dumps({"url": url}), content_type="application/json").json
        assert ok["status"] == 200 and json.loads(ok["body"])["path"] == "/hello"
        assert ok["tls"]["hostname_verified"] is True
        unverified = webtest.TestApp(main.create_app(dataclasses.replace(settings, https_verify=False)),
                                     extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
        pep493 = unverified.post("/api/v1/fetch", json.dumps({"url": url}), content_type="application/json").json
        assert pep493["status"] == 200 and pep493["tls"]["hostname_verified"] is False
        bad = default.post("/api/v1/fetch", json.dumps({"url": "http://x.example/"}),
                           content_type="application/json", status=400).json
        assert bad["error"]["code"] == "invalid_request"
        metadata = default.post("/api/v1/fetch", json.dumps({"url": "https://169.254.169.254/"}),
                                content_type="application/json", status=400).json
        assert metadata["error"]["code"] == "target_not_allowed"


def test_trusting_only_the_servers_issuing_intermediate(admin, world):
    servers_ca = world["pki"].root.create_child_ca()
    server = pki.server_cert(servers_ca)  # the peer sends leaf + intermediate
    with PythonTLSPeer(server, world["pki"].ca_pem) as peer:
        store(admin, world["client"], servers_ca.cert_pem.bytes(), peer.port)
        assert call(admin, "handshake")["ok"]
        store(admin, world["client"], world["pki"].clients_ca.cert_pem.bytes(), peer.port)
        assert remote_code(admin) == "unknown_ca"  # another intermediate of the same root is not enough
