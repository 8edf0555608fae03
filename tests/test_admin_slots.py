"""Addresses without a current identity (only a pending key, or only a staged next) on the admin pages,
and staging an identity made elsewhere as next through the upload form.
"""


import pytest

from tests.harness import pki
from tests.harness.app import token_of
from tests.harness.peers import PythonTLSPeer
from tests.harness.pki import sign_csr

API = "/api/v1/employees/asalieri/addresses/2"
PAGE = "/admin/employees/asalieri/addresses/2"


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, first=pki.client_cert(p.clients_ca, "first"),
                second=pki.client_cert(p.clients_ca, "second"))


@pytest.fixture
def browser(signed_in):
    """A browser signed in through the sign-in form (conftest)."""
    return signed_in


def body_of(creds, port=443, ca_pem=None):
    return dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), host="127.0.0.1", port=port,
                server_hostname="localhost", ca_certs=ca_pem.decode() if ca_pem else None)


def pending_only(admin):
    """An address that holds only a generated key (POST .../csr through the API); returns the CSR."""
    return admin.post_json(API + "/csr", {"subject": {"CN": "asalieri-two"}}, status=201).json["csr"]


def list_row(browser):
    return browser.get("/admin").html.select_one("#identity-asalieri-2")


def test_pending_only_address_is_listed_and_its_page_renders(browser, admin):
    pending_only(admin)
    row = list_row(browser)
    assert row is not None, "a pending-only address is missing from the list"
    assert "no current identity" in row.text and "pending key" in row.text and "CN=asalieri-two" in row.text
    assert row.select_one("a")["href"] == PAGE
    html = browser.get(PAGE).html
    assert "No current identity" in html.select_one("#slot-current").text
    assert html.select_one("#csr-pem").text.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert html.select_one("#upload-next-form") is not None and html.select_one("#stage-next") is not None
    assert html.select_one("#promote") is None  # nothing to promote yet
    assert html.select_one("#test-handshake") is None and html.select_one("#request-form") is None  # no current
    assert "PRIVATE KEY" not in browser.get(PAGE).text


def test_address_with_a_current_identity_still_shows_validity_and_calls(browser, admin, world):
    admin.put_json(API, body_of(world["first"]), status=201)
    row = list_row(browser)
    assert "no current identity" not in row.text and row.select_one(".bar") is not None
    html = browser.get(PAGE).html
    assert html.select_one("#slot-current code.fp")["data-fingerprint"] == world["first"].fingerprint_sha256
    assert html.select_one("#test-handshake") is not None and html.select_one("#request-form") is not None
    assert html.select_one("#csr-cn")["value"] == "first"  # the CN of an openssl-order subject


def test_pending_only_signed_upload_then_promote_through_the_pages(browser, admin, world):
    p = world["pki"]
    csr_pem = pending_only(admin)
    page = browser.get(PAGE)
    signed = sign_csr(p.clients_ca, csr_pem)
    # No current identity to take the server from: without a host nothing is stored, and the reason is shown.
    refused = browser.post(PAGE + "/next", {"cert": signed, "csrf_token": token_of(page)}, status=400)
    assert "host" in refused.html.select_one("#lifecycle-error").text
    assert admin.get(API + "/csr").json["pending"]["subject"] == "CN=asalieri-two"
    admin.get(API + "/next", status=404)
    done = browser.post(PAGE + "/next", {"cert": signed, "host": "127.0.0.1", "port": "8443",
                                         "server_hostname": "localhost", "tls_version": "TLS", "ca_certs": "",
                                         "csrf_token": token_of(page)}, status=303)
    assert done.location.endswith(PAGE + "?saved=next#rotation")
    row = list_row(browser)
    assert "no current identity" in row.text and "next staged" in row.text
    html = browser.get(PAGE).html
    next_fp = html.select_one("#slot-next code.fp")["data-fingerprint"]
    assert html.select_one("#promote") is not None and html.select_one("#test-next") is not None
    confirm = browser.get(PAGE + "/promote")
    assert "CN=asalieri-two" in confirm.html.select_one("#becomes-current").text
    assert "nothing" in confirm.html.select_one("#becomes-previous").text
    browser.post(PAGE + "/promote", {"csrf_token": token_of(confirm)}, status=303)
    view = admin.get(API).json
    assert view["fingerprint_sha256"] == next_fp and view["next"] is None and view["previous"] is None
    assert (view["host"], view["port"], view["server_hostname"]) == ("127.0.0.1", 8443, "localhost")
    html = browser.get(PAGE).html
    assert html.select_one("#test-handshake") is not None
    assert "no current identity" not in list_row(browser).text


def test_next_only_address_from_the_api_renders_with_promote_and_test_next(browser, admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        admin.put_json(API + "/next", body_of(world["second"], peer.port, p.ca_pem), status=201)
        row = list_row(browser)
        assert "no current identity" in row.text and "next staged" in row.text
        assert f"127.0.0.1:{peer.port}" in row.text
        page = browser.get(PAGE)
        assert "No current identity" in page.html.select_one("#slot-current").text
        assert page.html.select_one("#promote") is not None
        tested = browser.post(PAGE + "/next/test", {"csrf_token": token_of(page)})
        assert "with the next identity succeeded" in tested.html.select_one("#result-ok").text
        assert peer.client_cert_seen["fingerprint_sha256"] == world["second"].fingerprint_sha256


def test_pending_only_address_can_be_deleted_from_its_page(browser, admin):
    pending_only(admin)
    confirm = browser.get(PAGE + "/delete")
    assert "asalieri / 2" in confirm.text and "None" not in confirm.html.select_one(".card").text
    browser.post(PAGE + "/delete", {"csrf_token": token_of(confirm)}, status=303)
    admin.get(API + "/csr", status=404)
    assert list_row(browser) is None


def test_unknown_address_is_still_a_404_page(browser):
    browser.get("/admin/employees/nobody/addresses/9", status=404)
    browser.get("/admin/employees/nobody/addresses/%C2%B2", status=400)


# --- stage an identity made elsewhere as next: the upload form in "stage as next" mode ----------------

def stage_form(browser, **query):
    return browser.get("/admin/new", dict(dict(employee="asalieri", address="2", stage="next"), **query))


def stage_fields(page, creds, **extra):
    form = page.forms["upload-form"]
    form["cert"] = creds.cert_pem.decode()
    form["key"] = creds.key_pem.decode()
    for name, value in extra.items():
        form[name] = value
    return form


def test_stage_as_next_through_the_upload_form(browser, admin, world):
    admin.put_json(API, body_of(world["first"], 8443), status=201)
    detail = browser.get(PAGE).html
    link = detail.select_one("#stage-next")["href"]
    page = browser.get(link)
    assert "Stage next identity" in page.html.select_one("h1").text
    form = page.forms["upload-form"]
    assert form["stage"].value == "next" and form["host"].value == "127.0.0.1" and form["port"].value == "8443"
    done = stage_fields(page, world["second"]).submit(status=303)
    assert done.location.endswith(PAGE + "?saved=next#rotation")
    view = admin.get(API).json
    assert view["fingerprint_sha256"] == world["first"].fingerprint_sha256  # calls still use the current one
    assert view["next"]["fingerprint_sha256"] == world["second"].fingerprint_sha256
    staged = admin.get(API + "/next").json["next"]
    assert (staged["host"], staged["port"], staged["server_hostname"]) == ("127.0.0.1", 8443, "localhost")
    events = admin.get(API + "/history").json["events"]
    assert [e["action"] for e in events][:1] == ["next_staged"] and events[0]["actor"] == "session"


def test_stage_as_next_with_a_foreign_key_changes_nothing(browser, admin, world):
    admin.put_json(API, body_of(world["first"]), status=201)
    before = admin.get(API).json
    page = stage_form(browser)
    form = stage_fields(page, world["second"])
    form["key"] = world["first"].key_pem.decode()
    refused = form.submit(status=400)
    assert refused.html.select_one("#error-cert") is not None and "does not match" in refused.text
    assert "Stage next identity" in refused.html.select_one("h1").text
    assert refused.forms["upload-form"]["stage"].value == "next"
    assert "PRIVATE KEY" not in refused.text
    assert admin.get(API).json == before
    admin.get(API + "/next", status=404)


def test_stage_as_next_on_an_address_without_current_identity(browser, admin, world):
    pending_only(admin)
    page = stage_form(browser)
    done = stage_fields(page, world["second"], host="127.0.0.1", port="9443").submit(status=303)
    assert done.location.endswith(PAGE + "?saved=next#rotation")
    view = admin.get(API + "/next").json["next"]
    assert view["fingerprint_sha256"] == world["second"].fingerprint_sha256 and view["port"] == 9443
    assert admin.get(API + "/csr").json["pending"]["subject"] == "CN=asalieri-two"  # the pending key stays


def test_the_plain_upload_form_still_replaces_the_current_identity(browser, admin, world):
    admin.put_json(API, body_of(world["first"]), status=201)
    page = browser.get("/admin/new", {"employee": "asalieri", "address": "2", "host": "127.0.0.1"})
    assert "stage" not in page.forms["upload-form"].fields
    stage_fields(page, world["second"]).submit(status=303)
    view = admin.get(API).json
    assert view["fingerprint_sha256"] == world["second"].fingerprint_sha256 and view["next"] is None


def test_signed_upload_with_a_bad_port_keeps_the_typed_server_and_changes_nothing(browser, admin, world):
    csr_pem = pending_only(admin)
    page = browser.get(PAGE)
    refused = browser.post(PAGE + "/next", {"cert": sign_csr(world["pki"].clients_ca, csr_pem), "host": "peer.example",
                                            "port": "\u0664\u0664\u0663", "server_hostname": "sni.example",
                                            "csrf_token": token_of(page)}, status=400)
    assert refused.html.select_one("#lifecycle-error code").text == "invalid_request"
    assert refused.html.select_one("#next-host")["value"] == "peer.example"
    assert refused.html.select_one("#next-sni")["value"] == "sni.example"
    admin.get(API + "/next", status=404)
    assert admin.get(API + "/csr").json["pending"]["subject"] == "CN=asalieri-two"


def test_stage_as_next_without_the_csrf_token_is_refused(browser, admin, world):
    admin.put_json(API, body_of(world["first"]), status=201)
    before = admin.get(API).json
    fields = dict(body_of(world["second"]), employee="asalieri", address="2", stage="next", port="443")
    del fields["ca_certs"]
    browser.post("/admin/new", fields, status=403)
    assert admin.get(API).json == before
    admin.get(API + "/next", status=404)
    page = stage_form(browser)  # the twin: the same post with the page's token stages it
    browser.post("/admin/new", dict(fields, csrf_token=token_of(page)), status=303)
    assert admin.get(API + "/next").json["next"]["fingerprint_sha256"] == world["second"].fingerprint_sha256
