"""In a real browser: an address with only a pending key (made through the API) is listed, its page renders,
the signed certificate is uploaded with its server, tested, promoted; then an identity made elsewhere is
staged as next through the upload form (and a foreign key is refused there).
"""

import json
import urllib.request

import pytest

from tests.harness import pki
from tests.harness.app import ADMIN_TOKEN
from tests.harness.peers import PythonTLSPeer
from tests.harness.live import shot, sign_in
from tests.harness.pki import sign_csr

pytestmark = pytest.mark.browser

API = "/api/v1/employees/asalieri/addresses/7"
DETAIL = "/admin/employees/asalieri/addresses/7"


def api(base, method, path, body):
    """Drive the JSON API with the admin token (what a script would do)."""
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method, headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_pending_only_address_through_the_pages(page, live_server):  # noqa: F811
    p = pki.make_pki("browser slots")
    other = pki.client_cert(p.clients_ca, "made-elsewhere")
    stranger = pki.client_cert(pki.make_pki("stranger").clients_ca, "stranger")
    csr_pem = api(live_server, "POST", API + "/csr", {"subject": {"CN": "asalieri-seven"}})["csr"]
    with PythonTLSPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        sign_in(page)
        row = page.locator("#identity-asalieri-7")
        assert "no current identity: pending key" in row.inner_text() and "CN=asalieri-seven" in row.inner_text()
        shot(page, "slots-01-list-pending-only.png")
        row.locator("a").first.click()
        page.wait_for_url("**" + DETAIL)
        assert "No current identity" in page.inner_text("#slot-current")
        assert "No current identity" in page.inner_text("#no-current")
        assert page.locator("#test-handshake").count() == 0 and page.locator("#promote").count() == 0
        assert page.inner_text("#csr-pem").strip() == csr_pem.strip()
        shot(page, "slots-02-detail-pending-only.png")

        page.fill("#next-cert", sign_csr(p.clients_ca, csr_pem))
        page.fill("#next-host", "127.0.0.1")
        page.fill("#next-port", str(peer.port))
        page.fill("#next-sni", "localhost")
        page.fill("#next-ca", p.ca_pem.decode())
        page.click("#upload-next")
        page.wait_for_url("**?saved=next*")
        next_fp = page.get_attribute("#slot-next code.fp", "data-fingerprint")
        page.click("#test-next")
        page.wait_for_selector("#result-ok")
        assert "with the next identity succeeded" in page.inner_text("#result-ok")
        assert peer.client_cert_seen["fingerprint_sha256"] == next_fp
        page.goto("/admin")
        assert "no current identity: next staged" in page.inner_text("#identity-asalieri-7")
        page.goto(DETAIL)
        page.click("#promote")
        page.wait_for_url("**/promote")
        assert next_fp in page.inner_text("#becomes-current").replace("\n", "")
        page.click("#confirm")
        page.wait_for_url("**?saved=promote*")
        assert page.get_attribute("#slot-current code.fp", "data-fingerprint") == next_fp
        page.click("#test-handshake")
        page.wait_for_selector("#result-ok")
        assert "the stored certificate" in page.inner_text("#result")

        # An identity made elsewhere, staged as next through the upload form; a foreign key first.
        page.click("#stage-next")
        page.wait_for_url("**/admin/new?*stage=next*")
        assert page.inner_text("h1").startswith("Stage next identity")
        assert page.input_value("#host") == "127.0.0.1" and page.input_value("#port") == str(peer.port)
        page.fill("#cert", other.cert_pem.decode())
        page.fill("#key", stranger.key_pem.decode())
        page.click("#save")
        page.wait_for_selector("#error-cert")
        assert "does not match" in page.inner_text("#error-cert")
        assert page.inner_text("h1").startswith("Stage next identity")
        assert "PRIVATE KEY" not in page.content()
        shot(page, "slots-03-stage-next-refused.png")
        page.fill("#key", other.key_pem.decode())
        page.click("#save")
        page.wait_for_url("**?saved=next*")
        assert page.get_attribute("#slot-next code.fp", "data-fingerprint") == other.fingerprint_sha256
        assert page.get_attribute("#slot-current code.fp", "data-fingerprint") == next_fp
        page.click("#test-next")
        page.wait_for_selector("#result-ok")
        assert peer.client_cert_seen["fingerprint_sha256"] == other.fingerprint_sha256
        page.locator("#rotation").scroll_into_view_if_needed()
        shot(page, "slots-04-staged-from-upload.png")
