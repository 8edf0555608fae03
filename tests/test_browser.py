"""The admin pages in a real browser: Debian chromium via Playwright, the app under gunicorn."""

import os

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.harness.app import read
from tests.harness.live import DESKTOP, PHONE, shot, sign_in

pytestmark = pytest.mark.browser


def test_sign_in_upload_test_and_delete(page, demo_pki, demo_peer):
    https_port, _ = demo_peer
    chain, key, ca = read(demo_pki, "client-chain.pem"), read(demo_pki, "client-key.pem"), read(demo_pki, "ca.pem")
    expected = x509.load_pem_x509_certificate(chain.encode()).fingerprint(hashes.SHA256()).hex()

    sign_in(page)
    assert "No identities stored yet" in page.inner_text("main")
    shot(page, "02-list-empty.png")

    page.click("#upload")
    page.wait_for_url("**/admin/new")
    page.fill("#employee", "asalieri")
    page.fill("#address", "1")
    page.fill("#cert", chain)
    page.fill("#key", trustme.CA().issue_cert("x@example.com").private_key_pem.bytes().decode())
    page.fill("#ca_certs", ca)
    page.fill("#host", "127.0.0.1")
    page.fill("#port", str(https_port))
    page.fill("#server_hostname", "localhost")
    page.select_option("#tls_version", "TLS")
    shot(page, "03-upload-form.png")
    page.click("#save")
    # The wrong key: the error sits beside the certificate, typed values stay, the key does not.
    error = page.locator("#error-cert")
    assert error.is_visible() and "key" in error.inner_text().lower()
    assert page.input_value("#host") == "127.0.0.1" and page.input_value("#cert").strip() == chain.strip()
    assert page.input_value("#key") == ""
    assert page.evaluate("document.activeElement.id") == "cert"  # the focus is on the first error
    shot(page, "04-upload-error.png", readme=True)

    page.fill("#key", key)
    page.click("#save")
    page.wait_for_url("**/admin/employees/asalieri/addresses/1?saved=created")
    assert page.get_attribute("#fingerprint code", "data-fingerprint") == expected
    shot(page, "05-detail.png")

    page.click("#test-handshake")
    page.wait_for_selector("#result")
    assert "Handshake succeeded" in page.inner_text("#result")
    assert page.get_attribute("#result code.fp", "data-fingerprint") == expected
    page.locator("#result").scroll_into_view_if_needed()
    shot(page, "06-handshake.png")

    page.select_option("#method", "GET")
    page.fill("#path", "/whoami")
    page.click("#test-request")
    page.wait_for_selector("#result-status")
    assert page.inner_text("#result-status") == "200" and expected in page.inner_text("#result-body")
    shot(page, "07-request.png")

    page.goto("/admin")
    row = page.locator("tr.identity")
    assert row.count() == 1
    assert row.locator("code.fp").get_attribute("data-fingerprint") == expected
    assert "valid" in row.locator(".status").inner_text()
    assert f"127.0.0.1:{https_port}" in row.inner_text()
    shot(page, "08-list-desktop.png")
    page.set_viewport_size(PHONE)
    shot(page, "09-list-phone.png")
    page.click("tr.identity a")
    shot(page, "10-detail-phone.png")
    page.set_viewport_size(DESKTOP)

    page.click("#delete")
    page.wait_for_url("**/delete")
    shot(page, "11-delete-confirm.png")
    page.click("#confirm-delete")
    page.wait_for_url("**/admin?deleted=*")
    assert "Deleted" in page.inner_text("main") and "No identities stored yet" in page.inner_text("main")
    shot(page, "12-after-delete.png")


def test_failed_call_explains_what_to_check(page, demo_pki, demo_peer):
    https_port, _ = demo_peer
    sign_in(page)
    page.goto("/admin/new")
    page.fill("#employee", "asalieri")
    page.fill("#address", "2")
    page.fill("#cert", read(demo_pki, "client-chain.pem"))
    page.fill("#key", read(demo_pki, "client-key.pem"))
    page.fill("#ca_certs", trustme.CA().cert_pem.bytes().decode())  # not the CA of the demo peer
    page.fill("#host", "127.0.0.1")
    page.fill("#port", str(https_port))
    page.fill("#server_hostname", "localhost")
    page.click("#save")
    page.wait_for_url("**/addresses/2?saved=created")
    page.click("#test-handshake")
    page.wait_for_selector("#result-code")
    assert page.inner_text("#result-code") == "unknown_ca"
    assert "check ca_certs" in page.inner_text("#result")
    page.locator("#result").scroll_into_view_if_needed()
    shot(page, "13-handshake-unknown-ca.png", readme=True)


def test_empty_form_marks_every_field_and_a_typo_url_is_a_page(page):
    sign_in(page)
    page.goto("/admin/new")
    page.click("#save")
    page.wait_for_selector("#form-error")
    assert [e.get_attribute("id") for e in page.locator(".field-error").all()] == [
        "error-employee", "error-address", "error-cert", "error-key", "error-host"]
    assert page.evaluate("document.activeElement.id") == "employee"
    shot(page, "16-upload-empty.png")
    response = page.goto("/admin/typo")
    assert response.status == 404 and "Nothing here" in page.inner_text("main")
    shot(page, "17-not-found.png")


@pytest.mark.slow
def test_make_run_demo_test_connection_in_the_browser(browser, tmp_path):
    """After `make run`: Test connection on the seeded asalieri/1, and the request shows the peer's JSON."""
    import json

    from tests.harness.makerun import make_run

    with make_run(tmp_path, "demo-browser-token-0123456789") as run:
        context = browser.new_context(viewport=DESKTOP, base_url=run.base)
        page = context.new_page()
        page.goto("/admin")
        page.fill("#token", run.token)
        page.click("main button[type=submit]")
        page.wait_for_url("**/admin")
        page.click("a[href$='/employees/asalieri/addresses/1']")
        fingerprint = page.inner_text("#fingerprint").replace(" ", "").replace("\n", "")
        page.click("#test-handshake")
        page.wait_for_selector("#result-ok")
        assert "yes" in page.inner_text("#result")
        page.fill("#path", "/whoami")
        page.click("#test-request")
        page.wait_for_selector("#result-body")
        peer_saw = json.loads(page.inner_text("#result-body"))
        assert peer_saw["fingerprint_sha256"] == fingerprint and "CN=asalieri" in peer_saw["subject"]
        page.locator("#result").scroll_into_view_if_needed()
        shot(page, "07-request.png", full_page=False, readme=True)

        # The README's "upload your own": a self-signed certificate against the open demo port.
        own_cert, own_key = self_signed_pem("newcomer")
        page.goto("/admin/new")
        page.fill("#employee", "newcomer")
        page.fill("#address", "1")
        page.fill("#cert", own_cert)
        page.fill("#key", own_key)
        page.fill("#ca_certs", open(os.path.join(tmp_path, "demo-pki", "ca.pem")).read())
        page.fill("#host", "127.0.0.1")
        page.fill("#port", str(run.open))
        page.fill("#server_hostname", "localhost")
        page.click("#save")
        page.wait_for_url("**/employees/newcomer/addresses/1?saved=created")
        own_fingerprint = page.get_attribute("#fingerprint code", "data-fingerprint")
        page.fill("#path", "/whoami")
        page.click("#test-request")
        page.wait_for_selector("#result-body")
        peer_saw = json.loads(page.inner_text("#result-body"))
        assert peer_saw["fingerprint_sha256"] == own_fingerprint and peer_saw["subject"] == "O=Newcomer, CN=newcomer"
        page.locator("#result").scroll_into_view_if_needed()
        shot(page, "15-own-certificate.png", full_page=False, readme=True)

        page.goto("/admin")
        rows = page.locator("tr.identity")
        assert rows.count() == 4  # the seeded asalieri/1, /2, /3 (its key in the KMS stand-in) and newcomer/1
        assert "ok" in page.inner_text("#identity-newcomer-1 td.last")
        for i in range(rows.count()):  # at 1280 px, host:port stays on one line (issue 13, bug 9)
            box = rows.nth(i).locator("td.target code").bounding_box()
            line = float(page.evaluate("parseFloat(getComputedStyle(document.querySelector('td.target code'))"
                                       ".lineHeight) || 20"))
            assert box["height"] < 1.5 * line, box
        shot(page, "08-list-desktop.png", readme=True)
        page.set_viewport_size(PHONE)
        shot(page, "09-list-phone.png", readme=True)
        context.close()


def self_signed_pem(cn):
    """A self-signed client certificate and its key, as `openssl req -x509 -newkey ...` would make."""
    import datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Newcomer"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
