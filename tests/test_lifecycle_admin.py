"""The rotation part of the detail page: slots, CSR form and download, upload, test next, promote,
roll back (each confirmed), history; the list flags a staged next identity.
"""

import json

import pytest
from cryptography import x509

from tests.harness import pki
from tests.harness.app import token_of
from tests.harness.peers import PythonTLSPeer
from tests.harness.pki import sign_csr

API = "/api/v1/employees/asalieri/addresses/1"
PAGE = "/admin/employees/asalieri/addresses/1"


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, first=pki.client_cert(p.clients_ca, "first"),
                second=pki.client_cert(p.clients_ca, "second"))


@pytest.fixture
def browser(signed_in):
    """A browser signed in through the sign-in form (conftest)."""
    return signed_in


def store(admin, creds, port=443, ca_pem=None):
    body = dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), host="127.0.0.1", port=port,
                server_hostname="localhost", ca_certs=ca_pem.decode() if ca_pem else None)
    admin.put(API, json.dumps(body), content_type="application/json", status=201)


def form_post(browser, path, fields=None, status=303, **kwargs):
    page = browser.get(PAGE)
    return browser.post(PAGE + path, dict(fields or {}, csrf_token=token_of(page)), status=status, **kwargs)


def state(admin):
    return admin.get(API).json, admin.get(API + "/history").json["events"]


def test_detail_shows_three_slots_and_history(browser, admin, world):
    store(admin, world["first"])
    page = browser.get(PAGE)
    html = page.html
    assert [s["id"] for s in html.select(".slots .slot")] == ["slot-current", "slot-next", "slot-previous"]
    assert html.select_one("#slot-current .bar") is not None
    assert "Nothing staged" in html.select_one("#slot-next").text
    assert [r.select_one(".event-action").text for r in html.select("#history tr.event")] == ["created"]
    assert html.select_one("#history .event-actor").text == "admin-token"
    assert html.select_one("#promote") is None and html.select_one("#rollback") is None


def test_generate_csr_then_upload_then_promote_then_roll_back(browser, admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        store(admin, world["first"], peer.port, p.ca_pem)
        fields = {"key_type": "EC-P384", "CN": "asalieri-next", "O": "dyncert", "dns": "client.example.com\n\n",
                  "email": "a@example.com", "uri": ""}
        done = form_post(browser, "/csr", fields)
        assert done.location.endswith(PAGE + "?saved=csr#rotation")
        page = done.follow()
        assert "Key generated and sealed" in page.text
        assert page.html.select_one("#pending-key-type").text.startswith("EC P-384")
        csr_pem = page.html.select_one("#csr-pem").text
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.subject.rfc4514_string() == "CN=asalieri-next,O=dyncert"
        download = browser.get(PAGE + "/csr")
        assert download.content_type == "application/pkcs10" and download.text == csr_pem
        assert download.headers["Content-Disposition"] == 'attachment; filename="asalieri-1.csr"'
        assert "PRIVATE KEY" not in page.text + download.text

        chain = sign_csr(p.clients_ca, csr_pem)
        page = form_post(browser, "/next", {"cert": ""}, upload_files=[("certfile", "signed.pem", chain.encode())],
                         content_type="multipart/form-data").follow()
        next_fp = admin.get(API + "/next").json["next"]["fingerprint_sha256"]
        assert page.html.select_one("#slot-next .slot-fingerprint code")["data-fingerprint"] == next_fp
        assert page.html.select_one("#pending") is None and page.html.select_one("#csr-pem") is None  # the key was used
        listed = browser.get("/admin").html.select_one("#identity-asalieri-1 .next-staged")
        assert listed is not None and listed["title"] == "SHA-256 " + next_fp

        tested = form_post(browser, "/next/test", status=200)
        assert "with the next identity succeeded" in tested.html.select_one("#result-ok").text
        assert "the next certificate" in tested.text

        confirm = browser.get(PAGE + "/promote")
        assert next_fp in confirm.html.select_one("#becomes-current").text
        assert world["first"].fingerprint_sha256 in confirm.html.select_one("#becomes-previous").text
        assert admin.get(API).json["fingerprint_sha256"] == world["first"].fingerprint_sha256  # GET changes nothing
        page = browser.post(PAGE + "/promote", {"csrf_token": token_of(confirm)}, status=303).follow()
        assert admin.get(API).json["fingerprint_sha256"] == next_fp
        assert "Promoted" in page.text

        confirm = browser.get(PAGE + "/rollback")
        assert world["first"].fingerprint_sha256 in confirm.html.select_one("#becomes-current").text
        page = browser.post(PAGE + "/rollback", {"csrf_token": token_of(confirm)}, status=303).follow()
        assert admin.get(API).json["fingerprint_sha256"] == world["first"].fingerprint_sha256
        rows = page.html.select("#history tr.event")
        assert [r.select_one(".event-action").text for r in rows] == [
            "rolled back", "promoted", "next staged", "csr created", "created"]
        assert [r.select_one(".event-actor").text for r in rows] == ["session"] * 4 + ["admin-token"]


def test_refused_lifecycle_forms_change_nothing(browser, admin, world):
    store(admin, world["first"])
    before = state(admin)
    page = form_post(browser, "/csr", {"key_type": "EC-P256", "CN": ""}, status=400)
    assert "subject.CN" in page.html.select_one("#lifecycle-error").text
    page = form_post(browser, "/csr", {"key_type": "EC-P256", "CN": "x", "dns": "not a name!"}, status=400)
    assert page.html.select_one("#lifecycle-error code").text == "invalid_request"
    assert page.html.select_one("#csr-dns").text == "not a name!"  # typed values are kept
    page = form_post(browser, "/next", {"cert": world["second"].cert_pem.decode()}, status=409,
                     content_type="multipart/form-data")
    assert page.html.select_one("#lifecycle-error code").text == "no_pending"
    assert state(admin) == before
    form_post(browser, "/csr", {"key_type": "EC-P256", "CN": "x"})
    before = state(admin)
    page = form_post(browser, "/next", {"cert": world["second"].cert_pem.decode()}, status=400,
                     content_type="multipart/form-data")
    assert page.html.select_one("#lifecycle-error code").text == "key_mismatch"
    for action in ("promote", "rollback"):
        assert "There is no" in browser.get(PAGE + "/" + action).text or \
            "No next identity" in browser.get(PAGE + "/" + action).text
        refused = browser.post(PAGE + "/" + action, {"csrf_token": token_of(browser.get(PAGE))}, status=409)
        assert ("no_next" if action == "promote" else "no_previous") in refused.text
    assert state(admin) == before


@pytest.mark.parametrize("path", ["/csr", "/next", "/next/test", "/next/discard", "/promote", "/rollback"])
def test_lifecycle_forms_need_the_csrf_token(browser, admin, world, path):
    store(admin, world["first"])
    admin.put(API + "/next", json.dumps({"cert": world["second"].cert_pem.decode(),
                                         "key": world["second"].key_pem.decode()}),
              content_type="application/json", status=201)
    before = state(admin)
    refused = browser.post(PAGE + path, {"csrf_token": "forged", "CN": "x", "cert": "x"}, status=403)
    assert "csrf_failed" in refused.text
    assert state(admin) == before


def test_discard_next_is_confirmed(browser, admin, world):
    store(admin, world["first"])
    admin.put(API + "/next", json.dumps({"cert": world["second"].cert_pem.decode(),
                                         "key": world["second"].key_pem.decode()}),
              content_type="application/json", status=201)
    confirm = browser.get(PAGE + "/next/discard")
    assert world["second"].fingerprint_sha256 in confirm.html.select_one("#dropped").text
    browser.post(PAGE + "/next/discard", {"csrf_token": token_of(confirm)}, status=303)
    assert admin.get(API).json["next"] is None
    assert admin.get(API + "/history").json["events"][0]["actor"] == "session"


def test_uploads_and_deletes_through_the_pages_name_the_session(browser, admin, world):
    page = browser.get("/admin/new")
    fields = {"employee": "asalieri", "address": "1", "cert": world["first"].cert_pem.decode(),
              "key": world["first"].key_pem.decode(), "host": "peer.example.com", "port": "443",
              "server_hostname": "", "tls_version": "TLS", "ca_certs": "", "csrf_token": token_of(page)}
    browser.post("/admin/new", fields, content_type="multipart/form-data", status=303)
    confirm = browser.get(PAGE + "/delete")
    browser.post(PAGE + "/delete", {"csrf_token": token_of(confirm)}, status=303)
    events = admin.get(API + "/history").json["events"]
    assert [(e["action"], e["actor"]) for e in events] == [("deleted", "session"), ("created", "session")]
