"""Every page fits a 390 px phone (no sideways scroll), and the detail page puts the user's question first.

Chromium via Playwright against the app under gunicorn; the partner is a real TLS peer on loopback. The
detail page is walked at 1280 px and at 390 px with every slot filled (current, next, previous, pending),
and the README's screenshots of it are written from both widths.
"""

import pytest
import trustme

from handlers.templating import render
from tests.harness import pki
from tests.harness.app import ADMIN_TOKEN
from tests.harness.live import PHONE, shot, sign_in
from tests.harness.peers import PythonTLSPeer
from tests.harness.pki import sign_csr
from tests.test_admin_slots_browser import api

pytestmark = pytest.mark.browser

API = "/api/v1/employees/asalieri/addresses/1"
DETAIL = "/admin/employees/asalieri/addresses/1"

# Elements wider than the window, for the failure message: what makes the page scroll sideways.
OVERFLOWING = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 8).map(e => e.tagName + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '')
                        + ' ' + Math.round(e.getBoundingClientRect().right))"""

# Cards taller than what they hold (a grid row stretching the shorter card): the empty space at their foot.
STRETCHED = """() => [...document.querySelectorAll('.card')].filter(c => c.getClientRects().length).map(c => {
  const shown = [...c.children].filter(e => e.getClientRects().length);
  const last = shown[shown.length - 1];
  if (!last) return null;
  const cs = getComputedStyle(c), ls = getComputedStyle(last);
  const gap = c.getBoundingClientRect().bottom - parseFloat(cs.paddingBottom) - parseFloat(cs.borderBottomWidth)
              - last.getBoundingClientRect().bottom - parseFloat(ls.marginBottom);
  return gap > 4 ? (c.id || c.className) + ' ' + Math.round(gap) + ' px' : null;
}).filter(Boolean)"""


def assert_fits(page, what):
    """No sideways scroll: the document is no wider than the window."""
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{what}: scrollWidth {scroll} > innerWidth {inner}: {page.evaluate(OVERFLOWING)}"


def fill_every_slot(base, p, peer):
    """asalieri/1 with a current, a next, a previous identity and a pending key, all made through the API."""
    first = pki.client_cert(p.clients_ca, "asalieri")
    api(base, "PUT", API, dict(cert=first.cert_pem.decode(), key=first.key_pem.decode(), ca_certs=p.ca_pem.decode(),
                               host="127.0.0.1", port=peer.port, server_hostname="localhost"))
    for cn in ("asalieri-2026", "asalieri-2027"):
        csr = api(base, "POST", API + "/csr", {"subject": {"CN": cn, "O": "dyncert demo"},
                                               "san": {"email": ["asalieri@example.com"]}})["csr"]
        api(base, "PUT", API + "/next", {"cert": sign_csr(p.clients_ca, csr, days=90)})
        if cn == "asalieri-2026":
            api(base, "POST", API + "/promote", {})
    api(base, "POST", API + "/csr", {"subject": {"CN": "asalieri-2028", "O": "dyncert demo"}})


def test_detail_page_question_first_at_desktop_and_phone(page, live_server):  # noqa: F811
    p = pki.make_pki("dyncert demo")
    with PythonTLSPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        fill_every_slot(live_server, p, peer)
        sign_in(page)
        page.goto(DETAIL)
        for slot in ("current", "next", "previous"):
            assert page.locator(f"#slot-{slot} code.fp").count() == 1, slot
        assert page.locator("#pending").is_visible()

        # The question first: the tests above the facts and the rotation panel.
        tests, about, rotation = (page.locator(s).bounding_box()["y"] for s in ("#test", "#about", "#rotation"))
        assert tests < about < rotation
        assert page.inner_text("#tls-version") == "TLS 1.2 or 1.3"
        # The CSR form is folded behind its button (a <details>: no script), and opens on a click.
        assert not page.locator("#csr-form").is_visible()
        page.click("#show-csr-form")
        assert page.locator("#csr-form").is_visible() and page.locator("#generate-csr").is_visible()
        assert page.evaluate(STRETCHED) == []

        page.fill("#path", "/whoami")
        page.click("#test-request")
        page.wait_for_selector("#result-status")
        assert page.inner_text("#result-status") == "200"
        assert page.locator("#result").bounding_box()["y"] < page.locator("#rotation").bounding_box()["y"]
        assert page.evaluate(STRETCHED) == []
        shot(page, "18-detail-desktop-full.png")
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "18-detail-desktop.png", full_page=False, readme=True)
        page.evaluate("document.querySelector('#rotation').scrollIntoView()")
        shot(page, "19-rotation-desktop.png", full_page=False, readme=True)

        # PEM wraps: the CSR and the chain stay inside their boxes at 390 px.
        page.set_viewport_size(PHONE)
        page.goto(DETAIL)
        page.click("#chain summary")
        for pem in ("#csr-pem", "#chain pre"):
            box = page.locator(pem).bounding_box()
            assert box["x"] + box["width"] <= PHONE["width"], pem
            assert page.evaluate(f"(e => e.scrollWidth <= e.clientWidth)(document.querySelector('{pem}'))"), pem
        assert_fits(page, "detail, chain open")
        page.click("#test-handshake")
        page.wait_for_selector("#result-ok")
        assert "the stored certificate" in page.inner_text("#result")
        assert_fits(page, "detail with a handshake result")
        assert page.evaluate(STRETCHED) == []
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "20-detail-phone.png", full_page=False, readme=True)
        page.click("#test-next")
        page.wait_for_selector("#result-ok")
        assert "with the next identity succeeded" in page.inner_text("#result-ok")
        assert_fits(page, "detail with a next result")
        page.evaluate("document.querySelector('#test-next-panel').scrollIntoView(); window.scrollBy(0, -12)")
        shot(page, "21-rotation-phone.png", full_page=False, readme=True)
        shot(page, "22-detail-phone-full.png")


def test_every_page_fits_a_phone(page, live_server):  # noqa: F811
    """scrollWidth <= innerWidth at 390 px on every page: public, list, forms, detail in every state, errors."""
    p = pki.make_pki("dyncert phone")
    page.set_viewport_size(PHONE)
    page.goto("/")
    assert_fits(page, "home")
    page.goto("/signin")
    assert_fits(page, "sign-in")
    page.fill("#token", "not-the-token-at-all-0123456789")
    page.click("main button[type=submit]")
    page.wait_for_selector("main .error, main [role=alert]")
    assert_fits(page, "sign-in refused")
    page.goto("/signin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("main button[type=submit]")
    page.wait_for_url("**/admin")
    assert_fits(page, "empty list")

    with PythonTLSPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        fill_every_slot(live_server, p, peer)
        # A second address that trusts the wrong CA (a failure panel), and one with only a pending key.
        stranger = trustme.CA().cert_pem.bytes().decode()
        other = pki.client_cert(p.clients_ca, "a-rather-long-common-name-for-a-narrow-screen")
        api(live_server, "PUT", "/api/v1/employees/asalieri/addresses/2", dict(
            cert=other.cert_pem.decode(), key=other.key_pem.decode(), ca_certs=stranger,
            host="127.0.0.1", port=peer.port, server_hostname="localhost"))
        api(live_server, "POST", "/api/v1/employees/asalieri/addresses/7/csr", {"subject": {"CN": "pending-only"}})

        page.goto("/admin")
        assert page.locator("tr.identity").count() == 3
        assert_fits(page, "list")
        page.fill("#q", "asalieri")
        page.press("#q", "Enter")
        assert_fits(page, "list filtered")

        page.goto("/admin/new")
        assert_fits(page, "upload form")
        page.click("#save")
        page.wait_for_selector("#form-error")
        assert_fits(page, "upload form with every error")
        page.goto(f"/admin/new?employee=asalieri&address=1&host=127.0.0.1&port={peer.port}&stage=next")
        assert_fits(page, "stage-next form")

        page.goto(DETAIL)
        assert_fits(page, "detail, every slot")
        page.click("#show-csr-form")
        page.fill("#csr-dns", "not a name!")
        page.click("#generate-csr")
        page.wait_for_selector("#lifecycle-error")
        assert page.locator("#csr-form").is_visible()  # refused: the form opens again with its values
        assert_fits(page, "detail, CSR refused")
        page.fill("#path", "/whoami")
        page.click("#test-request")
        page.wait_for_selector("#result-body")
        assert_fits(page, "detail, request result")
        page.fill("#send", "hello")
        page.click("#test-echo")  # an HTTPS peer: the echo reads an HTTP error or nothing; either way a panel
        page.wait_for_selector("#result")
        assert_fits(page, "detail, echo result")
        page.click("#test-next-request")
        page.wait_for_selector("#result")
        assert_fits(page, "detail, request with next")
        page.goto("/admin/employees/asalieri/addresses/2")
        page.click("#test-handshake")
        page.wait_for_selector("#result-code")
        assert page.inner_text("#result-code") == "unknown_ca"
        assert_fits(page, "detail, failure panel")
        page.goto("/admin/employees/asalieri/addresses/7")
        assert page.locator("#no-current").is_visible()
        assert_fits(page, "detail, pending key only")

        for confirm in ("promote", "rollback", "next/discard", "delete"):
            page.goto(f"{DETAIL}/{confirm}")
            assert_fits(page, f"{confirm} confirmation")

    response = page.goto("/admin/typo")
    assert response.status == 404
    assert_fits(page, "404")
    response = page.goto("/admin/employees/asalieri/addresses/not-a-number")
    assert response.status == 400 and "That did not work" in page.inner_text("main")
    assert_fits(page, "error page")
    # The 403 page needs App Engine's user headers (only App Engine sets them): the template, served here.
    forbidden = render("forbidden.html", signed_in=False, principal="someone.with.a.long.address@example.com",
                       csrf_token="")
    page.route("**/forbidden-preview", lambda route: route.fulfill(status=403, body=forbidden,
                                                                   content_type="text/html"))
    page.goto("/forbidden-preview")
    assert "Administrators only" in page.inner_text("main")
    assert_fits(page, "403 page")
