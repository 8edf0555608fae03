"""The app factory, its ndb middleware, the public pages and the status route."""

import ssl

import pytest
from google.cloud import ndb

import main
import models

pytestmark = pytest.mark.interp  # the smoke test on every interpreter: the app boots and reports its ssl


def test_each_request_gets_an_ndb_context(admin):
    # /api/v1/status counts entities, which fails outside an ndb context.
    assert admin.get("/api/v1/status").json["identities"] == 0


def test_middleware_opens_a_context_per_request(datastore):
    seen = []

    def probe(environ, start_response):
        seen.append(ndb.get_context(raise_context_error=False) is not None)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = main.NdbContextMiddleware(probe)
    for _ in range(2):
        middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    assert seen == [True, True]
    assert ndb.get_context(raise_context_error=False) is None


def test_healthz_is_public(client):
    response = client.get("/healthz")
    assert response.status_int == 200 and response.text == "ok"


def test_status_reports_the_real_runtime(admin):
    data = admin.get("/api/v1/status").json
    assert data["openssl"] == ssl.OPENSSL_VERSION
    assert data["tls_versions"] == [v for v in ("TLSv1.2", "TLSv1.3")
                                    if getattr(ssl, "HAS_" + v.replace(".", "_"))]
    assert data["https_verify"] is True
    assert set(data) >= {"python", "openssl", "tls_versions", "https_verify", "ca_file", "identities"}
    # Whether a signer (KMS, HSM) can be bound here: yes where _ssl links OpenSSL dynamically, no (with why) elsewhere.
    import _ssl
    assert data["signer_binding"]["available"] is bool(getattr(_ssl, "__file__", None))
    assert data["signer_binding"]["detail"]


def test_status_needs_admin(client):
    response = client.get("/api/v1/status", expect_errors=True)
    assert response.status_int == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_home_shows_the_real_tls_facts(client):
    page = client.get("/")
    assert ssl.OPENSSL_VERSION in page.text
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_models_round_trip_through_the_emulator(ndb_context):
    key = models.address_key("asalieri", 1)
    models.Address(key=key, chain_pem="x", sealed_key=b"s", wrapped_dek=b"w", host="h", port=1).put()
    entity = key.get()
    assert entity.key.parent().id() == "asalieri" and entity.key.id() == 1
    assert entity.host == "h" and entity.created is not None
