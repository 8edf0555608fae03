"""The identity JSON API: every route and every 4xx code of API.md, through webtest."""

import base64
import json

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.harness.app import ADMIN_TOKEN
from tests.harness.pki import pem_block

URL = "/api/v1/employees/asalieri/addresses/1"


def put(admin, url, body, status):
    return admin.put(url, json.dumps(body), content_type="application/json", status=status)


def test_put_creates_then_replaces(admin, upload):
    created = put(admin, URL, upload, 201).json
    assert created["employee"] == "asalieri" and created["address"] == 1
    assert created["chain_length"] == 2 and created["key_type"] == "EC P-256"
    assert created["server_hostname"] == "peer.example.com" and created["tls_version"] == "TLS"
    replaced = put(admin, URL, dict(upload, port=9443), 200).json
    assert replaced["port"] == 9443
    assert admin.get(URL).json == replaced


def test_views_hold_no_key_material(admin, upload):
    put(admin, URL, upload, 201)
    key_body = "".join(upload["key"].splitlines()[1:-1])
    for url in (URL, "/api/v1/identities"):
        text = admin.get(url).text
        assert "PRIVATE KEY" not in text and key_body[:40] not in text


def test_list_and_delete(admin, upload):
    put(admin, URL, upload, 201)
    put(admin, "/api/v1/employees/asalieri/addresses/2", upload, 201)
    listed = admin.get("/api/v1/identities").json["identities"]
    assert [(i["employee"], i["address"]) for i in listed] == [("asalieri", 1), ("asalieri", 2)]
    admin.delete(URL, status=204)
    admin.get(URL, status=404)
    assert admin.delete(URL, status=404).json["error"]["code"] == "not_found"
    assert len(admin.get("/api/v1/identities").json["identities"]) == 1


def test_pkcs12_upload(admin, upload):
    ca = trustme.CA()
    leaf = ca.issue_cert("bob@example.com", common_name="bob")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    blob = pkcs12.serialize_key_and_certificates(
        b"bob", key, cert, None, serialization.BestAvailableEncryption(b"s3cret"))
    body = {"pkcs12": base64.b64encode(blob).decode(), "pkcs12_password": "s3cret", "host": "peer.example.com"}
    view = put(admin, URL, body, 201).json
    assert view["subject"].startswith("CN=bob") or "CN=bob" in view["subject"]
    body["pkcs12_password"] = "wrong"
    assert put(admin, URL, body, 400).json["error"]["code"] == "wrong_password"


BAD_BODIES = [
    ("invalid_request", lambda u: dict(u, cert=None)),
    ("invalid_request", lambda u: dict(u, port="443")),
    ("invalid_request", lambda u: dict(u, host=None)),
    ("invalid_certificate", lambda u: dict(u, cert="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")),
    ("invalid_key", lambda u: dict(u, key=pem_block("PRIVATE KEY"))),
    ("key_mismatch", lambda u: dict(u, key=trustme.CA().issue_cert("x@example.com").private_key_pem.bytes().decode())),
    ("invalid_ca_certs", lambda u: dict(u, ca_certs="not a certificate")),
    ("invalid_pkcs12", lambda u: {"pkcs12": base64.b64encode(b"garbage").decode(), "host": "h.example"}),
    ("unsupported_tls_version", lambda u: dict(u, tls_version="TLSv1")),
    ("invalid_target", lambda u: dict(u, host="bad host!")),
    ("invalid_target", lambda u: dict(u, port=70000)),
    ("target_not_allowed", lambda u: dict(u, host="169.254.169.254")),
    ("target_not_allowed", lambda u: dict(u, host="metadata.google.internal")),
]


@pytest.mark.parametrize("code,mutate", BAD_BODIES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BAD_BODIES)])
def test_bad_upload_gets_its_code_and_changes_nothing(admin, upload, code, mutate):
    before = put(admin, URL, upload, 201).json
    error = put(admin, URL, mutate(upload), 400).json["error"]
    assert error["code"] == code, error
    assert error["message"] and "PRIVATE KEY" not in error["message"]
    assert admin.get(URL).json == before


def test_invalid_json_and_ids(admin, upload):
    response = admin.put(URL, "{not json", content_type="application/json", status=400)
    assert response.json["error"]["code"] == "invalid_json"
    assert put(admin, URL, [1, 2], 400).json["error"]["code"] == "invalid_json"
    for url in ("/api/v1/employees/bad%20name/addresses/1", "/api/v1/employees/asalieri/addresses/0",
                "/api/v1/employees/asalieri/addresses/x", f"/api/v1/employees/{'a' * 65}/addresses/1",
                "/api/v1/employees/asalieri/addresses/9007199254740993"):
        assert put(admin, url, upload, 400).json["error"]["code"] == "invalid_request", url


def test_too_large_body(admin, upload):
    body = dict(upload, ca_certs="x" * (256 * 1024))
    assert put(admin, URL, body, 413).json["error"]["code"] == "too_large"


def test_api_refuses_anonymous_and_wrong_token(client, upload):
    assert client.get(URL, status=401).json["error"]["code"] == "unauthenticated"
    response = client.get(URL, headers={"Authorization": "Bearer nope"}, status=401)
    assert response.json["error"]["code"] == "unauthenticated"
    client.get(URL, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, status=404)


def test_app_engine_headers_only_trusted_on_app_engine(app, datastore, settings):
    import dataclasses

    import webtest

    import main
    headers = {"X-Appengine-User-Email": "a@example.com", "X-Appengine-User-Is-Admin": "1"}
    webtest.TestApp(app).get("/api/v1/identities", headers=headers, status=401)
    on_gae = main.create_app(dataclasses.replace(settings, on_app_engine=True))
    webtest.TestApp(on_gae).get("/api/v1/identities", headers=headers, status=200)
    headers["X-Appengine-User-Is-Admin"] = "0"
    assert webtest.TestApp(on_gae).get("/api/v1/identities", headers=headers, status=403).json["error"]["code"] == "forbidden"
