"""The upload form for a newcomer: every error at once, in form words, the key kept sealed, focus, 404, trust."""

import datetime

import webtest
from google.cloud import ndb

import drafts
import main
import sessions
import settings as settings_module
from tests.harness.app import ADMIN_TOKEN, admin_client
from tests.harness.forms import (KEY_PASSWORD, csrf, encrypted, fingerprint, form_fields, key_lines, pkcs12_blob,
                                 post_upload, stored)

BROWSER = {"HTTP_ACCEPT": "text/html,application/xhtml+xml"}  # signed in by admin_client (pages ignore Bearer)


def marked(html):
    """The fields marked with an error, in page order."""
    return [e["id"].removeprefix("error-") for e in html.select(".field-error")]


def draft_entities():
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        return drafts.UploadDraft.query().fetch()


def test_an_empty_form_reports_every_missing_field_at_once(admin):
    empty = {name: "" for name in ("employee", "address", "cert", "key", "key_password", "ca_certs", "host",
                                   "port", "server_hostname", "pkcs12_password")}
    html = post_upload(admin, dict(empty, tls_version="TLS"), status=400).html
    assert marked(html) == ["employee", "address", "cert", "key", "host"]
    assert html.select_one("#employee").has_attr("autofocus") and len(html.select("[autofocus]")) == 1
    assert "5 fields" in html.select_one("#form-error").text
    assert stored(admin) == []


def test_several_bad_fields_are_all_reported(admin, upload):
    fields = form_fields(upload, employee="bad name!", host="bad host!", port="99999999", tls_version="SSLv3")
    html = post_upload(admin, fields, status=400).html
    assert marked(html) == ["employee", "host", "port", "tls_version"]
    assert html.select_one("#employee").has_attr("autofocus")


def test_one_bad_field_is_the_only_one_marked_and_focused(admin, upload):
    """The twin: a form right but for the host marks the host alone."""
    html = post_upload(admin, form_fields(upload, host="bad host!"), status=400).html
    assert marked(html) == ["host"]
    assert html.select_one("#host").has_attr("autofocus") and len(html.select("[autofocus]")) == 1


def test_errors_speak_of_form_fields_not_api_fields(admin, upload):
    html = post_upload(admin, form_fields(upload, cert=""), status=400).html
    text = html.select_one("#error-cert").text
    assert "certificate chain" in text and "'cert'" not in text and "base64" not in text
    html = post_upload(admin, form_fields(upload, port="x"), status=400).html
    assert html.select_one("#error-port").text.strip() == "The port must be a number from 1 to 65535."


def test_a_good_key_is_kept_sealed_through_a_host_typo(admin, upload):
    page = post_upload(admin, form_fields(upload, host="bad host!"), status=400)
    draft = page.html.select_one("input[name=draft]")["value"]
    assert page.html.select_one("#key-kept") and page.html.select_one("#key").text == ""
    for line in key_lines(upload["key"]):
        assert line not in page.text
    [entity] = draft_entities()
    assert entity.key.id() == draft
    for line in key_lines(upload["key"]):
        assert line.encode() not in entity.sealed  # ciphertext only
    # The typo fixed, the key fields left empty: the kept key is used, and the draft is gone.
    post_upload(admin, form_fields(upload, key="", draft=draft))
    assert stored(admin)[0]["fingerprint_sha256"] == fingerprint(upload["cert"])
    assert draft_entities() == []


def test_without_a_kept_draft_an_empty_key_is_still_an_error(admin, upload):
    """The twin: an unknown or forged draft id brings no key."""
    for draft in ("", "x" * 32, "not a draft id!"):
        html = post_upload(admin, form_fields(upload, key="", draft=draft), status=400).html
        assert "key" in marked(html)
    assert stored(admin) == []


def test_a_bad_key_is_not_kept(admin, upload):
    broken = "-----BEGIN " + "PRIVATE KEY-----\nAAAA\n"  # built here: no key-shaped line in the source
    page = post_upload(admin, form_fields(upload, key=broken), status=400)
    assert page.html.select_one("#error-key") and not page.html.select_one("input[name=draft]")
    assert draft_entities() == []


def test_an_expired_draft_is_not_used(admin, upload, settings):
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=drafts.DRAFT_SECONDS + 1)
        [session] = sessions.Session.query().fetch()  # the admin client's own sign-in
        binding = drafts.Binding(f"session:admin:{session.key.id()}", "asalieri", "1", "current")
        draft = drafts.keep(settings, {"key": upload["key"]}, binding, now=old)
    html = post_upload(admin, form_fields(upload, key="", draft=draft), status=400).html
    assert "key" in marked(html) and stored(admin) == []
    assert "expired" in html.select_one("#error-key").text  # not "missing": the kept key is refused


def test_a_wrong_password_keeps_the_key_and_asks_only_for_the_password(admin, upload):
    locked = encrypted(upload["key"], KEY_PASSWORD)
    page = post_upload(admin, form_fields(upload, key=locked, key_password="wrong-password"), status=400)
    assert marked(page.html) == ["key"]
    draft = page.html.select_one("input[name=draft]")["value"]
    assert "password again" in page.html.select_one("#key-kept").text
    assert "wrong-password" not in page.text
    post_upload(admin, form_fields(upload, key="", key_password=KEY_PASSWORD, draft=draft))
    assert stored(admin)[0]["fingerprint_sha256"] == fingerprint(upload["cert"])


def test_a_pkcs12_file_is_kept_through_a_host_typo(admin, upload):
    blob, fp = pkcs12_blob()
    fields = form_fields(upload, cert="", key="", pkcs12_password="p12-secret-pass", host="bad host!")
    page = post_upload(admin, fields, [("pkcs12file", "dave.p12", blob)], status=400)
    assert marked(page.html) == ["host"] and "p12-secret-pass" not in page.text
    draft = page.html.select_one("input[name=draft]")["value"]
    post_upload(admin, form_fields(upload, cert="", key="", pkcs12_password="", draft=draft))
    assert stored(admin)[0]["fingerprint_sha256"] == fp


def test_a_mistyped_admin_url_is_a_styled_404_page_for_a_signed_in_browser(app):
    browser = admin_client(app, **BROWSER)
    page = browser.get("/admin/typo", status=404)
    assert page.content_type == "text/html" and "Nothing here" in page.text and "/admin/typo" in page.text
    assert page.html.select_one("link[rel=stylesheet]")


def test_unknown_api_paths_and_anonymous_callers_still_get_json(app):
    browser = admin_client(app, **BROWSER)
    assert browser.get("/api/v1/typo", status=404).json["error"]["code"] == "not_found"
    anonymous = webtest.TestApp(app, extra_environ={"HTTP_ACCEPT": "text/html"})
    assert anonymous.get("/admin/typo", status=404).json["error"]["code"] == "not_found"


def test_favicon_is_served(client):
    icon = client.get("/favicon.ico")
    assert icon.content_type == "image/vnd.microsoft.icon" and icon.body[:4] == b"\x00\x00\x01\x00"


def test_without_ca_certs_the_labels_name_the_system_trust_store(admin, upload, demo_peer):
    post_upload(admin, form_fields(upload, ca_certs="", host="127.0.0.1", port=str(demo_peer[0]),
                                   server_hostname="localhost"))
    page = admin.get("/admin/employees/asalieri/addresses/1")
    trusts = page.html.select_one("#trusts").text
    assert "system's trust store" in trusts and "stored" not in trusts and "CA file" not in trusts
    assert "system's trust store" in admin.get("/admin/new").html.text
    result = admin.post("/admin/employees/asalieri/addresses/1/test", {"csrf_token": csrf(admin)},
                        status=502).html
    assert result.select_one("#result-code").text == "unknown_ca"
    check = result.select_one("#result").text
    assert "system's trust store" in check and "stored with this identity" not in check and "CA_FILE" in check


def test_with_ca_certs_the_labels_name_the_stored_bundle(admin, upload):
    """The twin: a stored bundle is what the page names."""
    post_upload(admin, form_fields(upload))
    trusts = admin.get("/admin/employees/asalieri/addresses/1").html.select_one("#trusts").text
    assert trusts == "the CA bundle stored with this identity"


def test_with_ca_file_set_the_labels_name_it(datastore, tmp_path, upload, demo_pki):
    settings = settings_module.from_environ({}, admin_token=ADMIN_TOKEN, ca_file=f"{demo_pki}/ca.pem",
                                            local_kek_file=str(tmp_path / "kek.bin"))
    admin = admin_client(main.create_app(settings), **BROWSER)
    assert f"the app's CA file ({demo_pki}/ca.pem)" in admin.get("/admin/new").html.text
    post_upload(admin, form_fields(upload, ca_certs=""))
    trusts = admin.get("/admin/employees/asalieri/addresses/1").html.select_one("#trusts").text
    assert trusts == f"the app's CA file ({demo_pki}/ca.pem)"
