"""Key lifecycle (API.md v1.1): CSR, next, promote, rollback, history; bad input changes nothing."""

import json
import os
import time
import urllib.parse

import pytest
from cryptography import x509
from google.cloud import datastore as raw_datastore

from tests.harness import pki
from tests.harness.pki import sign_csr
from tests.harness.peers import PythonTLSPeer

URL = "/api/v1/employees/asalieri/addresses/1"


@pytest.fixture(scope="module")
def world(run_pki):
    """A PKI whose intermediate signs CSRs, a server under it, and two ordinary client identities."""
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, first=pki.client_cert(p.clients_ca, "first"),
                second=pki.client_cert(p.clients_ca, "second"))


def body_of(creds, port, ca_pem, **extra):
    return dict(dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=ca_pem.decode(),
                     host="127.0.0.1", port=port, server_hostname="localhost"), **extra)


def post(admin, path, body=None, status=200):
    return admin.post(URL + path, json.dumps(body or {}), content_type="application/json", status=status)


def put(admin, path, body, status):
    return admin.put(URL + path, json.dumps(body), content_type="application/json", status=status)


def presented(admin):
    """The fingerprint of the client certificate the who-am-i peer saw on a `/request` call."""
    return json.loads(post(admin, "/request", {"path": "/"}).json["body"])["fingerprint_sha256"]


def peer_saw(peer, fingerprint, seconds=5):
    """True once the peer records `fingerprint` (its thread may finish after our handshake returns)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (peer.client_cert_seen or {}).get("fingerprint_sha256") == fingerprint:
            return True
        time.sleep(0.01)
    return False


def raw_entity():
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    return db.get(db.key("Employee", "asalieri", "Address", 1))


def snapshot(admin):
    """Everything the API shows about the address: a refused change must leave all of it as it was."""
    entity = raw_entity()
    return (dict(entity) if entity is not None else None,
            admin.get(URL + "/history").json["events"])


CSR_BODY = {"subject": {"CN": "asalieri", "O": "Salieri & Co", "C": "at"},
            "san": {"dns": ["client.example.com", "bücher.example"], "email": ["a@example.com"],
                    "uri": ["spiffe://example.com/asalieri"]}}


def test_csr_is_returned_and_kept_pending_without_the_key(admin):
    made = post(admin, "/csr", CSR_BODY, status=201).json
    csr = x509.load_pem_x509_csr(made["csr"].encode())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=asalieri,O=Salieri & Co,C=AT"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["client.example.com", "xn--bcher-kva.example"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.com/asalieri"]
    pending = made["pending"]
    assert pending["key_type"] == "EC P-256" and len(pending["public_key_sha256"]) == 64
    assert pending["subject"] == "C=AT, O=Salieri & Co, CN=asalieri"  # `openssl x509 -subject` order, as every subject
    assert "PRIVATE KEY" not in json.dumps(made)
    assert admin.get(URL + "/csr").json == made  # GET returns the same CSR again
    admin.get(URL, status=404)  # a pending key alone is not an identity calls could use
    assert [e["action"] for e in admin.get(URL + "/history").json["events"]] == ["csr_created"]
    # A new POST replaces the pending key.
    again = post(admin, "/csr", dict(CSR_BODY, key_type="Ed25519"), status=201).json
    assert again["pending"]["key_type"] == "Ed25519" and again["csr"] != made["csr"]
    assert admin.get(URL + "/csr").json["csr"] == again["csr"]


def test_get_csr_without_pending_key_is_404(admin):
    assert admin.get(URL + "/csr", status=404).json["error"]["code"] == "not_found"


@pytest.mark.parametrize("bad", [
    {"subject": {"O": "no common name"}},
    {"subject": {"CN": ""}},
    {"subject": "CN=x"},
    {"subject": {"CN": "x", "XX": "unknown field"}},
    {"subject": {"CN": "x" * 65}},
    {"subject": {"CN": "x", "C": "Austria"}},
    {"subject": {"CN": "line\nbreak"}},
    {"subject": {"CN": "x"}, "key_type": "DSA-1024"},
    {"subject": {"CN": "x"}, "key_type": 256},
    {"subject": {"CN": "x"}, "san": {"dns": [f"h{i}.example.com" for i in range(101)]}},
    {"subject": {"CN": "x"}, "san": {"dns": ["not a name!"]}},
    {"subject": {"CN": "x"}, "san": {"dns": ["192.0.2.1"]}},
    {"subject": {"CN": "x"}, "san": {"dns": ["-bad-.example"]}},
    {"subject": {"CN": "x"}, "san": {"dns": ["a" * 64 + ".example"]}},
    {"subject": {"CN": "x"}, "san": {"dns": "one.example"}},
    {"subject": {"CN": "x"}, "san": {"email": ["not-an-address"]}},
    {"subject": {"CN": "x"}, "san": {"email": ["a@b@c.example"]}},
    {"subject": {"CN": "x"}, "san": {"uri": ["/relative/path"]}},
    {"subject": {"CN": "x"}, "san": {"uri": ["https://exa mple.com/"]}},
    {"subject": {"CN": "x"}, "san": {"ip": ["192.0.2.1"]}},
])
def test_bad_csr_requests_are_refused_and_change_nothing(admin, bad):
    before = snapshot(admin)
    error = post(admin, "/csr", bad, status=400).json["error"]
    assert error["code"] == "invalid_request" and error["message"]
    assert snapshot(admin) == before
    admin.get(URL + "/csr", status=404)


def test_csr_with_an_existing_identity_keeps_it_current(admin, world):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    before = admin.get(URL).json
    post(admin, "/csr", {"subject": {"CN": "asalieri"}}, status=201)
    after = admin.get(URL).json
    assert after["fingerprint_sha256"] == before["fingerprint_sha256"]
    assert after["pending"]["key_type"] == "EC P-256" and after["next"] is None


def test_full_rotation_through_the_api(admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        first = put(admin, "", body_of(world["first"], peer.port, p.ca_pem), 201).json
        made = post(admin, "/csr", {"key_type": "RSA-2048", "subject": {"CN": "asalieri"}}, status=201).json
        chain = sign_csr(p.clients_ca, made["csr"])
        staged = put(admin, "/next", {"cert": chain}, 201).json["next"]
        # Target and trust default to the current identity's.
        assert (staged["host"], staged["port"], staged["server_hostname"]) == ("127.0.0.1", peer.port, "localhost")
        assert staged["has_ca_certs"] and staged["key_type"] == "RSA 2048"
        view = admin.get(URL).json
        assert view["pending"] is None and view["next"]["fingerprint_sha256"] == staged["fingerprint_sha256"]
        assert admin.get(URL + "/next").json["next"] == staged
        # Calls still use current; next/handshake presents the next one.
        assert presented(admin) == first["fingerprint_sha256"]
        tested = post(admin, "/next/handshake").json
        assert tested["client_fingerprint_sha256"] == staged["fingerprint_sha256"]
        assert peer_saw(peer, staged["fingerprint_sha256"])
        assert presented(admin) == first["fingerprint_sha256"]

        promoted = post(admin, "/promote").json
        assert promoted["current"]["fingerprint_sha256"] == staged["fingerprint_sha256"]
        assert promoted["previous"]["fingerprint_sha256"] == first["fingerprint_sha256"]
        assert promoted["current"]["next"] is None
        assert presented(admin) == staged["fingerprint_sha256"]

        rolled = post(admin, "/rollback").json
        assert rolled["current"]["fingerprint_sha256"] == first["fingerprint_sha256"]
        assert rolled["previous"]["fingerprint_sha256"] == staged["fingerprint_sha256"]
        assert presented(admin) == first["fingerprint_sha256"]

    events = admin.get(URL + "/history").json["events"]
    assert [e["action"] for e in events] == ["rolled_back", "promoted", "next_staged", "csr_created", "created"]
    assert {e["actor"] for e in events} == {"admin-token"}
    assert events[0]["fingerprint_sha256"] == first["fingerprint_sha256"]
    assert events[0]["previous_fingerprint_sha256"] == staged["fingerprint_sha256"]
    assert events[1]["fingerprint_sha256"] == staged["fingerprint_sha256"]
    assert events[1]["previous_fingerprint_sha256"] == first["fingerprint_sha256"]
    assert events[2]["fingerprint_sha256"] == staged["fingerprint_sha256"]
    assert events[3]["public_key_sha256"] == made["pending"]["public_key_sha256"]
    assert events[4]["fingerprint_sha256"] == first["fingerprint_sha256"]
    assert all(e["at"].endswith("Z") for e in events)


def test_certificate_for_a_foreign_key_is_key_mismatch_and_changes_nothing(admin, world):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    stale_csr = post(admin, "/csr", {"subject": {"CN": "asalieri"}}, status=201).json["csr"]
    post(admin, "/csr", {"subject": {"CN": "asalieri"}}, status=201)  # replaces the pending key
    before = snapshot(admin)
    for cert in (sign_csr(world["pki"].clients_ca, stale_csr), world["second"].cert_pem.decode()):
        assert put(admin, "/next", {"cert": cert}, 400).json["error"]["code"] == "key_mismatch"
    assert snapshot(admin) == before
    # Twin: the certificate for the pending key is accepted.
    current_csr = admin.get(URL + "/csr").json["csr"]
    put(admin, "/next", {"cert": sign_csr(world["pki"].clients_ca, current_csr)}, 201)


def test_certificate_without_a_pending_key_is_no_pending(admin, world):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    before = snapshot(admin)
    error = put(admin, "/next", {"cert": world["second"].cert_pem.decode()}, 409).json["error"]
    assert error["code"] == "no_pending"
    assert snapshot(admin) == before


def test_full_upload_stages_next_and_replacing_it_answers_200(admin, world):
    ca = world["pki"].ca_pem
    put(admin, "", body_of(world["first"], 443, ca), 201)
    staged = put(admin, "/next", dict(cert=world["second"].cert_pem.decode(),
                                      key=world["second"].key_pem.decode()), 201).json["next"]
    assert staged["host"] == "127.0.0.1" and staged["port"] == 443
    moved = put(admin, "/next", body_of(world["second"], 8443, ca, host="localhost", server_hostname=None), 200).json
    assert moved["next"]["host"] == "localhost" and moved["next"]["server_hostname"] == "localhost"
    assert moved["next"]["port"] == 8443
    admin.delete(URL + "/next", status=204)
    assert admin.get(URL + "/next", status=404).json["error"]["code"] == "not_found"
    admin.delete(URL + "/next", status=404)
    actions = [e["action"] for e in admin.get(URL + "/history").json["events"]]
    assert actions == ["next_removed", "next_staged", "next_staged", "created"]


def test_bad_next_bodies_are_refused_and_change_nothing(admin, world):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    before = snapshot(admin)
    cases = [
        ({"cert": world["second"].cert_pem.decode(), "key": world["first"].key_pem.decode()}, "key_mismatch"),
        ({"cert": "garbage", "key": world["second"].key_pem.decode()}, "invalid_certificate"),
        (dict(cert=world["second"].cert_pem.decode(), key=world["second"].key_pem.decode(), port=0), "invalid_target"),
        (dict(cert=world["second"].cert_pem.decode(), key=world["second"].key_pem.decode(), host="169.254.169.254"),
         "target_not_allowed"),
        (dict(cert=world["second"].cert_pem.decode(), key=world["second"].key_pem.decode(), tls_version="SSLv3"),
         "unsupported_tls_version"),
    ]
    for body, code in cases:
        assert put(admin, "/next", body, 400).json["error"]["code"] == code, body
    assert snapshot(admin) == before


def test_promote_without_next_and_rollback_without_previous_are_409(admin, world):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    before = snapshot(admin)
    assert post(admin, "/promote", status=409).json["error"]["code"] == "no_next"
    assert post(admin, "/rollback", status=409).json["error"]["code"] == "no_previous"
    assert snapshot(admin) == before
    absent = "/api/v1/employees/nobody/addresses/7"
    assert admin.post(absent + "/promote", status=409).json["error"]["code"] == "no_next"
    assert admin.post(absent + "/rollback", status=409).json["error"]["code"] == "no_previous"
    assert admin.post(absent + "/next/handshake", status=404).json["error"]["code"] == "not_found"
    assert admin.get(absent + "/history").json == {"events": []}


def test_a_new_address_can_be_born_from_a_csr(admin, world):
    made = post(admin, "/csr", {"subject": {"CN": "asalieri"}}, status=201).json
    chain = sign_csr(world["pki"].clients_ca, made["csr"])
    # No current identity to take the target from: it must be given.
    assert put(admin, "/next", {"cert": chain}, 400).json["error"]["code"] == "invalid_request"
    put(admin, "/next", {"cert": chain, "host": "peer.example.com", "port": 8443}, 201)
    admin.get(URL, status=404)
    promoted = post(admin, "/promote").json
    assert promoted["previous"] is None and promoted["current"]["host"] == "peer.example.com"
    assert admin.get(URL).json["fingerprint_sha256"] == promoted["current"]["fingerprint_sha256"]
    assert [i["address"] for i in admin.get("/api/v1/identities").json["identities"]] == [1]


def test_history_survives_delete(admin, world):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    put(admin, "", body_of(world["second"], 443, world["pki"].ca_pem), 200)
    admin.delete(URL, status=204)
    events = admin.get(URL + "/history").json["events"]
    assert [e["action"] for e in events] == ["deleted", "replaced", "created"]
    assert events[0]["fingerprint_sha256"] is None
    assert events[0]["previous_fingerprint_sha256"] == world["second"].fingerprint_sha256
    assert events[1]["previous_fingerprint_sha256"] == world["first"].fingerprint_sha256
    assert "PRIVATE KEY" not in json.dumps(events)


def test_lifecycle_routes_need_an_admin(client):
    for method, path in (("GET", "/csr"), ("POST", "/csr"), ("GET", "/next"), ("PUT", "/next"),
                         ("DELETE", "/next"), ("POST", "/next/handshake"), ("POST", "/promote"),
                         ("POST", "/rollback"), ("GET", "/history")):
        response = client.request(URL + path, method=method, status="*")
        assert response.status_int == 401 and response.json["error"]["code"] == "unauthenticated", path


def test_bad_ids_are_invalid_request(admin):
    for path in ("/api/v1/employees/a%20b/addresses/1/history", "/api/v1/employees/a/addresses/0/csr",
                 "/api/v1/employees/a/addresses/x/next"):
        assert admin.get(path, status=400).json["error"]["code"] == "invalid_request"


ODD_BODIES = [b"", b"{", b"[]", b"null", b'"x"', b'{"subject": {"CN": "\\ud800"}}', b'{"subject": []}',
              b'{"subject": {"CN": ["x"]}}', b'{"san": {"dns": [1, 2]}, "subject": {"CN": "x"}}',
              b'{"key_type": {"a": 1}, "subject": {"CN": "x"}}', b'{"cert": 5}', b'{"cert": ["x"]}',
              b'{"cert": "x", "port": "443"}', b'{"cert": "x", "host": 7}', b'{"subject": {"CN": "x" }, "san": 3}',
              b'{"subject": {"CN": "\\u0000"}}', '{"subject": {"CN": "\u0661\u0662"}}'.encode()]


@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_input_never_gets_a_server_error(admin, world, body):
    put(admin, "", body_of(world["first"], 443, world["pki"].ca_pem), 201)
    post(admin, "/csr", {"subject": {"CN": "asalieri"}}, status=201)
    before = snapshot(admin)
    for method, path in (("POST", "/csr"), ("PUT", "/next"), ("POST", "/promote"), ("POST", "/rollback"),
                         ("POST", "/next/handshake")):
        response = admin.request(URL + path, method=method, body=body, content_type="application/json",
                                 status="*")
        assert response.status_int < 500 and "Traceback" not in response.text, (path, body, response.text)
        assert response.status_int in (200, 201, 400, 404, 409), (path, body, response.status_int)
        if response.status_int >= 400:
            assert response.json["error"]["code"]
    if snapshot(admin) != before:  # only a valid CSR or a promote may have changed something
        assert [e["action"] for e in admin.get(URL + "/history").json["events"]][0] in ("csr_created", "promoted")
    for address in ("\u00b2", "\u0661", "99999999999999999999", "-1", "1.0"):
        for path in ("/csr", "/next", "/history"):
            quoted = urllib.parse.quote(address)
            response = admin.get(f"/api/v1/employees/asalieri/addresses/{quoted}{path}", status="*")
            assert response.status_int in (400, 404), (address, path, response.status_int)


def test_actor_names_who_made_the_change():
    from types import SimpleNamespace

    from handlers.api import actor
    assert actor(SimpleNamespace(principal="admin", auth_method="bearer")) == "admin-token"
    assert actor(SimpleNamespace(principal="admin", auth_method="session")) == "session"
    assert actor(SimpleNamespace(principal="ops@example.com", auth_method="app_engine")) == "ops@example.com"
    assert actor(SimpleNamespace(principal=None, auth_method="anonymous")) == "unknown"


def test_next_handshake_reports_a_next_identity_the_peer_refuses(admin, world):
    p = world["pki"]
    stranger = pki.client_cert(pki.make_pki("stranger").clients_ca, "mallory")
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        put(admin, "", body_of(world["first"], peer.port, p.ca_pem), 201)
        put(admin, "/next", dict(cert=stranger.cert_pem.decode(), key=stranger.key_pem.decode()), 201)
        refused = post(admin, "/next/handshake", status=502).json
        assert refused["ok"] is False and refused["error"]["code"] == "peer_rejected_certificate"
        assert presented(admin) == world["first"].fingerprint_sha256  # twin: current still works
        # And the next identity the peer trusts passes on the same peer.
        put(admin, "/next", dict(cert=world["second"].cert_pem.decode(), key=world["second"].key_pem.decode()), 200)
        assert post(admin, "/next/handshake").json["client_fingerprint_sha256"] == world["second"].fingerprint_sha256
