"""The rotation on the detail page in a real browser: generate a key and CSR, upload the signed
certificate, test next, promote, roll back, and read the history.
"""

import json
import urllib.request

import pytest

from tests.harness import pki
from tests.harness.app import ADMIN_TOKEN
from tests.harness.peers import PythonTLSPeer
from tests.harness.live import DESKTOP, PHONE, shot, sign_in
from tests.harness.pki import sign_csr

pytestmark = pytest.mark.browser

DETAIL = "/admin/employees/asalieri/addresses/1"


def api_put(base, path, body):
    """Seed through the JSON API with the admin token (what a script would do)."""
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_rotation_in_the_browser(page, live_server):  # noqa: F811
    p = pki.make_pki("browser rotation")
    first = pki.client_cert(p.clients_ca, "first")
    with PythonTLSPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        api_put(live_server, "/api/v1/employees/asalieri/addresses/1", dict(
            cert=first.cert_pem.decode(), key=first.key_pem.decode(), ca_certs=p.ca_pem.decode(),
            host="127.0.0.1", port=peer.port, server_hostname="localhost"))
        sign_in(page)
        page.goto(DETAIL)
        assert "Nothing staged" in page.inner_text("#slot-next")

        # A typo first: the error is shown and the typed values stay (the form is folded behind its button).
        page.click("#show-csr-form")
        page.select_option("#key_type", "EC-P384")
        page.fill("#csr-cn", "asalieri-2027")
        page.fill("#csr-o", "dyncert test")
        page.fill("#csr-dns", "client.example.com\nnot a name!")
        page.click("#generate-csr")
        page.wait_for_selector("#lifecycle-error")
        assert "not a name!" in page.inner_text("#lifecycle-error")
        assert page.input_value("#csr-cn") == "asalieri-2027"
        page.fill("#csr-dns", "client.example.com")
        page.click("#generate-csr")
        page.wait_for_url("**?saved=csr*")
        assert page.inner_text("#pending-key-type").startswith("EC P-384")
        csr_pem = page.inner_text("#csr-pem")
        assert csr_pem.startswith("-----BEGIN CERTIFICATE REQUEST-----") and "PRIVATE" not in page.content()
        with page.expect_download() as download:
            page.click("#download-csr")
        assert download.value.suggested_filename == "asalieri-1.csr"
        page.locator("#rotation").scroll_into_view_if_needed()
        shot(page, "lifecycle-01-csr.png")

        page.fill("#next-cert", sign_csr(p.clients_ca, csr_pem))
        page.click("#upload-next")
        page.wait_for_url("**?saved=next*")
        next_fp = page.get_attribute("#slot-next code.fp", "data-fingerprint")
        assert "CN=asalieri-2027" in page.inner_text("#slot-next")
        assert page.get_attribute("#slot-current code.fp", "data-fingerprint") == first.fingerprint_sha256
        shot(page, "lifecycle-02-next-staged.png")

        page.click("#test-next")
        page.wait_for_selector("#result-ok")
        assert "with the next identity succeeded" in page.inner_text("#result-ok")
        assert page.get_attribute("#result code.fp", "data-fingerprint") == next_fp
        assert "the next certificate" in page.inner_text("#result")

        page.goto("/admin")
        assert "next staged" in page.inner_text("#identity-asalieri-1")
        page.goto(DETAIL)

        page.click("#promote")
        page.wait_for_url("**/promote")
        assert next_fp in page.inner_text("#becomes-current").replace("\n", "")
        shot(page, "lifecycle-03-promote-confirm.png")
        page.click("#confirm")
        page.wait_for_url("**?saved=promote*")
        assert page.get_attribute("#slot-current code.fp", "data-fingerprint") == next_fp
        assert page.get_attribute("#slot-previous code.fp", "data-fingerprint") == first.fingerprint_sha256

        page.click("#rollback")
        page.wait_for_url("**/rollback")
        page.click("#confirm")
        page.wait_for_url("**?saved=rollback*")
        assert page.get_attribute("#slot-current code.fp", "data-fingerprint") == first.fingerprint_sha256
        actions = page.locator("#history .event-action").all_inner_texts()
        assert actions == ["rolled back", "promoted", "next staged", "csr created", "created"]
        assert page.locator("#history .event-actor").all_inner_texts() == ["session"] * 4 + ["admin-token"]
        page.locator("#history").scroll_into_view_if_needed()
        shot(page, "lifecycle-04-history.png")
        page.set_viewport_size(PHONE)
        shot(page, "lifecycle-05-detail-phone.png")
        page.set_viewport_size(DESKTOP)
