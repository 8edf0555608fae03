"""The admin pages: list, upload form and its errors, detail, replace, delete, test calls."""

import datetime
import re

import pytest
import trustme
import webtest

from tests.harness.app import ADMIN_TOKEN
from tests.harness.forms import (KEY_PASSWORD, csrf, encrypted, fingerprint, form_fields, key_lines, pkcs12_blob,
                                 post_upload, stored)
from tests.harness.pki import pem_block, pem_pair
from tests.harness.ports import free_port
from handlers.admin import explain, present
from handlers import auth

UTC = datetime.timezone.utc
DETAIL = "/admin/employees/asalieri/addresses/1"


# --- auth -------------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_sign_in(client):
    for path in ("/admin", "/admin/new", DETAIL, DETAIL + "/delete"):
        response = client.get(path, status=302)
        assert response.location.split("?")[0].endswith("/signin"), path
    assert "next=%2Fadmin" in client.get("/admin", status=302).location


def test_sign_in_with_the_token_then_the_pages_work(client, settings):
    response = client.get("/admin").follow()
    token = re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)
    signed_in = client.post("/signin", {"token": ADMIN_TOKEN, "csrf_token": token, "next": "/admin"}, status=302)
    assert signed_in.location.endswith("/admin")
    page = signed_in.follow()
    assert page.status_int == 200 and "No identities stored yet" in page.text
    assert "Sign out" in page.text


def test_wrong_bearer_token_is_not_an_admin(client):
    client.get("/admin", headers={"Authorization": "Bearer nope"}, status=302)


# --- list -------------------------------------------------------------------------------------

def test_empty_list(admin):
    page = admin.get("/admin")
    assert "No identities stored yet" in page.text and 'href="/admin/new"' in page.text


def test_list_shows_identities_with_target_and_status(admin, upload):
    admin.put_json("/api/v1/employees/asalieri/addresses/1", upload, status=201)
    admin.put_json("/api/v1/employees/b.ob@example.com/addresses/7",
                   dict(upload, host="127.0.0.1", server_hostname="localhost"), status=201)
    page = admin.get("/admin")
    rows = page.html.select("tr.identity")
    assert len(rows) == 2
    first, second = rows
    assert first.select_one("a")["href"] == DETAIL
    assert "peer.example.com:8443" in first.text and "CN=asalieri" in first.text
    assert first.select_one("code.fp")["data-fingerprint"] == fingerprint(upload["cert"])
    assert first.select_one(".status").text == "valid"
    assert first.select_one(".bar span.valid")["class"][1].startswith("w-")
    assert second.select_one("a")["href"] == "/admin/employees/b.ob%40example.com/addresses/7"
    assert "127.0.0.1:8443" in second.text and "SNI localhost" in second.text
    assert "PRIVATE KEY" not in page.text
    for line in key_lines(upload["key"]):
        assert line not in page.text


def test_list_flags_expiring_and_expired(admin, expiring_and_expired):
    rows = {r["id"]: r for r in admin.get("/admin").html.select("tr.identity")}
    expiring, expired = rows["identity-carol-1"], rows["identity-carol-2"]
    assert expiring.select_one(".status").text == "expires in 10 days"
    assert "expiring" in expiring.select_one(".status")["class"]
    assert "w-90" in expiring.select_one(".bar span")["class"]   # 80 of 90 days elapsed
    assert expired.select_one(".status").text == "expired"
    assert "expired 3 days ago" in expired.text
    assert "w-100" in expired.select_one(".bar span")["class"]


@pytest.mark.parametrize("days_before,days_after,state,label,percent", [
    (10, 90, "valid", "valid", 10),
    (50, 50, "valid", "valid", 50),
    (70, 29.5, "expiring", "expires in 29 days", 70),
    (99, 0.5, "expiring", "expires today", 100),
    (100, -1.5, "expired", "expired", 100),
    (-2, 30, "future", "not yet valid", 0),
])
def test_expiry_status(days_before, days_after, state, label, percent):
    now = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    status = present.expiry(now - datetime.timedelta(days=days_before),
                                now + datetime.timedelta(days=days_after), now)
    assert (status["state"], status["label"], status["percent"]) == (state, label, percent)


def test_validity_width_classes_exist_in_the_stylesheet():
    with open("static/style.css") as f:
        css = f.read()
    for percent in range(0, 101, 5):
        assert f".w-{percent} {{" in css


# --- upload -----------------------------------------------------------------------------------

def test_upload_form_renders_with_csrf_and_multipart(admin):
    page = admin.get("/admin/new")
    form = page.forms["upload-form"]
    assert form.enctype == "multipart/form-data" and form.action == "/admin/new"
    assert form["csrf_token"].value and form["csrf_token"].value != admin.cookies[auth.CSRF_COOKIE]
    assert form["port"].value == "443"
    assert [o[0] for o in form["tls_version"].options] == ["TLS", "TLSv1_2", "TLSv1_3"]
    assert "<script" not in page.text and " style=" not in page.text


def test_upload_with_pasted_pem_through_the_form(admin, upload):
    form = admin.get("/admin/new").forms["upload-form"]
    for name, value in form_fields(upload, server_hostname="peer.example.com", tls_version="TLSv1_3").items():
        form[name] = value
    response = form.submit(status=303)
    assert response.location.endswith(DETAIL + "?saved=created")
    page = response.follow()
    assert "Identity stored." in page.text
    assert page.html.select_one("#fingerprint code")["data-fingerprint"] == fingerprint(upload["cert"])
    [view] = stored(admin)
    assert (view["host"], view["port"], view["tls_version"]) == ("peer.example.com", 8443, "TLSv1_3")
    assert view["chain_length"] == 2


def test_upload_with_files(admin, upload):
    fields = form_fields(upload, cert="", key="", ca_certs="")
    files = [("certfile", "client-chain.pem", upload["cert"].encode()),
             ("keyfile", "client-key.pem", upload["key"].encode()),
             ("cafile", "ca.pem", upload["ca_certs"].encode())]
    post_upload(admin, fields, files)
    [view] = stored(admin)
    assert view["fingerprint_sha256"] == fingerprint(upload["cert"]) and view["has_ca_certs"]


def test_upload_pkcs12_file(admin, upload):
    blob, fp = pkcs12_blob()
    fields = form_fields(upload, cert="", key="", pkcs12_password="p12-secret-pass")
    post_upload(admin, fields, [("pkcs12file", "dave.p12", blob)])
    [view] = stored(admin)
    assert view["fingerprint_sha256"] == fp and "CN=dave" in view["subject"]


def test_upload_encrypted_key_with_its_password(admin, upload):
    post_upload(admin, form_fields(upload, key=encrypted(upload["key"], KEY_PASSWORD), key_password=KEY_PASSWORD))
    assert stored(admin)[0]["fingerprint_sha256"] == fingerprint(upload["cert"])


def expired_chain():
    now = datetime.datetime.now(UTC)
    return pem_pair(now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))


OTHER_KEY = trustme.CA().issue_cert("x@example.com").private_key_pem.bytes().decode()

# (case, field the error is shown beside, form changes, files)
BAD_FORMS = [
    ("invalid_certificate", "cert", lambda u: {"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, None),
    ("certificate_expired", "cert", lambda u: dict(zip(("cert", "key"), expired_chain())), None),
    ("key_mismatch", "cert", lambda u: {"key": OTHER_KEY}, None),
    ("invalid_key", "key", lambda u: {"key": pem_block("PRIVATE KEY")}, None),
    ("wrong_password", "key", lambda u: {"key": encrypted(u["key"], KEY_PASSWORD), "key_password": KEY_PASSWORD + "x"}, None),
    ("missing_password", "key", lambda u: {"key": encrypted(u["key"], KEY_PASSWORD)}, None),
    ("missing_cert", "cert", lambda u: {"cert": ""}, None),
    ("missing_key", "key", lambda u: {"key": ""}, None),
    ("invalid_pkcs12", "pkcs12", lambda u: {"cert": "", "key": ""}, [("pkcs12file", "x.p12", b"garbage")]),
    ("pkcs12_wrong_password", "pkcs12", lambda u: {"cert": "", "key": "", "pkcs12_password": KEY_PASSWORD},
     [("pkcs12file", "d.p12", pkcs12_blob()[0])]),
    ("pkcs12_and_pem", "pkcs12", lambda u: {"pkcs12_password": KEY_PASSWORD}, [("pkcs12file", "d.p12", pkcs12_blob()[0])]),
    ("invalid_ca_certs", "ca_certs", lambda u: {"ca_certs": "not a certificate"}, None),
    ("binary_cert_file", "cert", lambda u: {"cert": ""}, [("certfile", "c.der", b"\x30\x82\xff\xfe")]),
    ("invalid_target", "host", lambda u: {"host": "bad host!"}, None),
    ("target_not_allowed", "host", lambda u: {"host": "169.254.169.254"}, None),
    ("missing_host", "host", lambda u: {"host": ""}, None),
    ("bad_port", "port", lambda u: {"port": "https"}, None),
    ("port_out_of_range", "port", lambda u: {"port": "70000"}, None),
    ("unsupported_tls_version", "tls_version", lambda u: {"tls_version": "TLSv1"}, None),
    ("bad_employee", "employee", lambda u: {"employee": "bad name!"}, None),
    ("bad_address", "address", lambda u: {"address": "x1"}, None),
]


@pytest.mark.parametrize("case,field,change,files", BAD_FORMS, ids=[c[0] for c in BAD_FORMS])
def test_upload_error_is_shown_beside_its_field(admin, upload, case, field, change, files):
    fields = form_fields(upload, **change(upload))
    fields.setdefault("pkcs12_password", "")
    page = post_upload(admin, fields, files or (), status=400)
    html = page.html
    if field == "general":
        assert "not both" in html.select_one("#form-error").text
    else:
        error = html.select_one(f"#error-{field}")
        assert error is not None, (case, page.text)
        assert error.text.strip()
        assert html.select_one(f"[name={field if field != 'pkcs12' else 'pkcs12file'}]")["aria-invalid"] == "true"
        # Exactly one field is marked.
        assert len(html.select(".field-error")) == 1
    # What was typed stays (except secrets) ...
    assert html.select_one("#employee")["value"] == fields["employee"]
    assert html.select_one("#host")["value"] == fields["host"]
    if field != "cert" and fields["cert"]:
        assert html.select_one("#cert").text.strip() == fields["cert"].strip()
    assert html.select_one("#ca_certs").text.strip() == (fields["ca_certs"] or "").strip()
    # ... and no key, password or PKCS#12 comes back.
    assert html.select_one("#key").text == ""
    for name in ("key_password", "pkcs12_password"):
        assert not html.select_one(f"#{name}").get("value")
    assert KEY_PASSWORD not in page.text and "PRIVATE KEY-----\n" not in page.text
    for line in key_lines(fields["key"])[:3] + key_lines(upload["key"]):
        assert line not in page.text
    assert stored(admin) == []


def test_typed_values_are_kept_after_an_error(admin, upload):
    fields = form_fields(upload, host="bad host!", port="8443", server_hostname="sni.example.com",
                         tls_version="TLSv1_2", employee="b.ob@example.com", address="42")
    html = post_upload(admin, fields, status=400).html
    assert html.select_one("#employee")["value"] == "b.ob@example.com"
    assert html.select_one("#address")["value"] == "42"
    assert html.select_one("#port")["value"] == "8443"
    assert html.select_one("#server_hostname")["value"] == "sni.example.com"
    assert html.select_one("#tls_version option[selected]")["value"] == "TLSv1_2"
    assert html.select_one("#cert").text.strip() == upload["cert"].strip()


def test_a_key_pasted_into_the_certificate_field_is_never_echoed(admin, upload):
    fields = form_fields(upload, cert=upload["cert"] + upload["key"], key="", host="bad host!")
    page = post_upload(admin, fields, status=400)
    assert page.html.select_one("#error-host")
    assert "BEGIN CERTIFICATE" in page.html.select_one("#cert").text
    assert "PRIVATE KEY" not in page.html.select_one("#cert").text
    for line in key_lines(upload["key"]):
        assert line not in page.text


def test_a_failed_replace_keeps_the_stored_identity(admin, upload):
    post_upload(admin, form_fields(upload))
    before = stored(admin)
    post_upload(admin, form_fields(upload, key=OTHER_KEY), status=400)
    assert stored(admin) == before


# --- CSRF -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_upload_without_the_right_csrf_token_is_refused(admin, upload, token):
    csrf(admin)
    page = post_upload(admin, form_fields(upload), token=token, status=403)
    assert "csrf_failed" in page.text
    assert stored(admin) == []


def test_upload_without_a_csrf_cookie_is_refused(app, upload):
    fresh = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}"})
    fresh.post("/admin/new", dict(form_fields(upload), csrf_token="forged"), status=302)  # pages ignore Bearer
    assert stored(fresh) == []


def test_delete_and_calls_need_csrf(admin, upload):
    post_upload(admin, form_fields(upload))
    for suffix in ("/delete", "/test", "/request", "/echo"):
        admin.post(DETAIL + suffix, {"csrf_token": "wrong"}, status=403)
        admin.post(DETAIL + suffix, {}, status=403)
    assert len(stored(admin)) == 1


# --- detail, replace, delete ------------------------------------------------------------------

def test_detail_shows_public_metadata(admin, upload):
    post_upload(admin, form_fields(upload, server_hostname="sni.example.com"))
    page = admin.get(DETAIL)
    view = stored(admin)[0]
    assert page.html.select_one("#fingerprint code")["data-fingerprint"] == view["fingerprint_sha256"]
    assert view["fingerprint_sha256"] in page.text
    for value in (view["subject"], view["issuer"], view["serial"], view["not_after"], view["key_type"],
                  "peer.example.com:8443", "sni.example.com", "2 certificates",
                  "the CA bundle stored with this identity"):
        assert value in page.text, value
    assert page.html.select_one("#replace")["href"].startswith("/admin/new?employee=asalieri&address=1&")
    assert page.html.select_one("#delete")["href"] == DETAIL + "/delete"
    assert "PRIVATE KEY" not in page.text
    for line in key_lines(upload["key"]):
        assert line not in page.text


def test_missing_identity_is_a_404_page(admin):
    page = admin.get(DETAIL, status=404)
    assert page.content_type == "text/html" and "not_found" in page.text
    admin.get(DETAIL + "/delete", status=404)
    assert "not_found" in admin.post(DETAIL + "/test", {"csrf_token": csrf(admin)}, status=404).text
    admin.post(DETAIL + "/delete", {"csrf_token": csrf(admin)}, status=404)


def test_bad_ids_are_a_400_page(admin):
    assert "invalid_request" in admin.get("/admin/employees/asalieri/addresses/x", status=400).text
    admin.get("/admin/employees/bad%20name/addresses/1", status=400)


def test_replace_prefills_non_secret_fields(admin, upload):
    post_upload(admin, form_fields(upload, server_hostname="sni.example.com", tls_version="TLSv1_3"))
    old = stored(admin)[0]
    link = admin.get(DETAIL).html.select_one("#replace")["href"]
    page = admin.get(link)
    html = page.html
    assert "Replace asalieri / 1" in page.text
    assert html.select_one("#employee")["value"] == "asalieri" and html.select_one("#address")["value"] == "1"
    assert html.select_one("#host")["value"] == "peer.example.com"
    assert html.select_one("#port")["value"] == "8443"
    assert html.select_one("#server_hostname")["value"] == "sni.example.com"
    assert html.select_one("#tls_version option[selected]")["value"] == "TLSv1_3"
    assert "BEGIN CERTIFICATE" in html.select_one("#ca_certs").text   # public: kept for a rotation
    assert html.select_one("#key").text == "" and html.select_one("#cert").text == ""
    cert, key = pem_pair(datetime.datetime.now(UTC) - datetime.timedelta(days=1),
                              datetime.datetime.now(UTC) + datetime.timedelta(days=300))
    form = page.forms["upload-form"]
    form["cert"], form["key"] = cert, key
    response = form.submit(status=303)
    assert response.location.endswith(DETAIL + "?saved=replaced")
    assert "Identity replaced." in response.follow().text
    new = stored(admin)[0]
    assert new["fingerprint_sha256"] == fingerprint(cert) != old["fingerprint_sha256"]
    assert (new["server_hostname"], new["tls_version"], new["has_ca_certs"]) == ("sni.example.com", "TLSv1_3", True)


def test_delete_asks_for_confirmation_first(admin, upload):
    post_upload(admin, form_fields(upload))
    confirm = admin.get(DETAIL + "/delete")
    assert "Delete asalieri / 1?" in confirm.text
    assert len(stored(admin)) == 1  # the GET changed nothing
    form = confirm.forms["delete-form"]
    assert form.action == DETAIL + "/delete"
    response = form.submit(status=303)
    assert response.location.endswith("/admin?deleted=asalieri%2F1")
    assert "Deleted" in response.follow().text and "asalieri/1" in response.follow().text
    assert stored(admin) == []
    admin.get(DETAIL, status=404)


def test_deleted_notice_only_shows_an_identity_name(admin):
    page = admin.get("/admin?deleted=%3Cb%3Eowned%3C/b%3E")
    assert "owned" not in page.text


# --- test calls against a real loopback mTLS peer ---------------------------------------------

@pytest.fixture
def peer_identity(admin, upload, demo_peer):
    """asalieri/1 -> the demo peer's HTTPS port, asalieri/2 -> its echo port."""
    https_port, echo_port = demo_peer
    for address, port in ((1, https_port), (2, echo_port)):
        post_upload(admin, form_fields(upload, address=str(address), host="127.0.0.1", port=str(port),
                                       server_hostname="localhost"))
    return fingerprint(upload["cert"])


def call(admin, suffix, status=200, **fields):
    return admin.post(DETAIL.replace("/1", "/" + fields.pop("address", "1")) + suffix,
                      dict(fields, csrf_token=csrf(admin)), status=status)


def test_handshake_shows_tls_facts(admin, peer_identity):
    page = call(admin, "/test")
    result = page.html.select_one("#result")
    assert "Handshake succeeded" in result.text
    assert page.html.select_one("#result-tls-version").text in ("TLSv1.2", "TLSv1.3")
    assert result.select_one("code.fp")["data-fingerprint"] == peer_identity
    assert "the stored certificate" in result.text and "demo peer" in result.text
    assert re.search(r"\d+\.\d ms", page.html.select_one("#result-elapsed").text)
    assert "yes" in result.text  # hostname verified


def test_request_shows_status_and_body(admin, peer_identity):
    page = call(admin, "/request", method="POST", path="/hello?x=1", headers="X-Test: 1\n\nAccept: */*",
                body="ping")
    assert page.html.select_one("#result-status").text == "200"
    body = page.html.select_one("#result-body").text
    assert peer_identity in body and '"path": "/hello?x=1"' in body and '"body": "ping"' in body
    assert page.html.select_one("#method option[selected]").text == "POST"  # the form keeps its values
    assert page.html.select_one("#path")["value"] == "/hello?x=1"


def test_request_with_a_bad_header_line_is_a_400_in_the_panel(admin, peer_identity):
    page = call(admin, "/request", status=400, method="GET", path="/", headers="no colon here", body="")
    assert page.html.select_one("#result-code").text == "invalid_request"
    assert "Header line 1" in page.text
    page = call(admin, "/request", status=400, method="GET", path="relative", headers="", body="")
    assert page.html.select_one("#result-code").text == "invalid_request"


def test_echo_shows_the_line_received(admin, peer_identity):
    page = call(admin, "/echo", address="2", send="hello mTLS")
    assert page.html.select_one("#result-received").text.strip() == "hello mTLS"
    assert page.html.select_one("#send")["value"] == "hello mTLS"


def test_failures_explain_what_to_check(admin, upload, demo_peer):
    https_port, _ = demo_peer
    other_ca = trustme.CA().cert_pem.bytes().decode()
    cases = [
        ("unknown_ca", 502, dict(ca_certs=other_ca, port=str(https_port), server_hostname="localhost")),
        ("hostname_mismatch", 502, dict(port=str(https_port), server_hostname="wrong.example.com")),
        ("connection_refused", 502, dict(port=str(free_port()), server_hostname="localhost")),
    ]
    for address, (code, status, change) in enumerate(cases, 1):
        post_upload(admin, form_fields(upload, address=str(address), host="127.0.0.1", **change))
        page = call(admin, "/test", status=status, address=str(address))
        assert page.html.select_one("#result-code").text == code, page.text
        what, check = explain.EXPLANATIONS[code]
        check = check.format(trusts="the CA bundle stored with this identity", or_ca_file="")
        text = page.html.select_one("#result").text
        assert what in text and check in text
    assert "check ca_certs" in explain.EXPLANATIONS["unknown_ca"][1]


def test_every_remote_code_has_an_explanation():
    from dyncert.errors import REMOTE_CODES
    assert REMOTE_CODES | {"target_not_allowed"} <= set(explain.EXPLANATIONS)
