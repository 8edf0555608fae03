"""The admin pages never show a refusal in green (issue 19.1, 19.2), against a real nginx.

- a client certificate nginx refuses at the HTTP layer: the failure panel (peer_rejected_certificate)
- another 4xx: amber, "the partner answered 403", on the detail page and in the list's last call
- a 200: green (the twin)
- the Test-next panel sends a request with the next identity, and after Test next the note points there
"""

import pytest

from tests.harness import pki
from tests.harness.app import token_of
from tests.harness.refusing_peers import nginx_peer

API = "/api/v1/employees/asalieri/addresses/1"
PAGE = "/admin/employees/asalieri/addresses/1"


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("admin verdicts")
    return dict(pki=p, server=pki.server_cert(p.root), current=pki.client_cert(p.clients_ca, "current"),
                next=pki.client_cert(p.clients_ca, "next"),
                stranger=pki.client_cert(pki.make_pki("stranger").clients_ca, "mallory"))


def body_of(creds, port, ca_pem):
    return dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=ca_pem.decode(),
                host="127.0.0.1", port=port, server_hostname="localhost")


def send(browser, action, path="/", status="*"):
    page = browser.get(PAGE)
    return browser.post(PAGE + action, {"method": "GET", "path": path, "headers": "", "body": "",
                                        "csrf_token": token_of(page)}, status=status)


def test_a_403_answer_is_amber_never_green(signed_in, admin, world):
    p = world["pki"]
    with nginx_peer(world["server"], p.ca_pem) as peer:
        admin.put_json(API, body_of(world["current"], peer.port, p.ca_pem), status=201)
        answered = send(signed_in, "/request", "/plain-403", status=200)
        card = answered.html.select_one("#result")
        assert "answered" in card["class"] and "passed" not in card["class"]
        assert answered.html.select_one("#result-ok") is None
        assert "the partner answered 403" in answered.html.select_one("#result-answered").text
        assert answered.html.select_one("#result-status").text == "403"
        row = signed_in.get("/admin").html.select_one("#identity-asalieri-1 td.last span")
        assert row.text == "answered 403" and row["class"] == ["warn"]
        # The twin: a 200 is green, and the list says ok.
        passed = send(signed_in, "/request", "/", status=200)
        assert "passed" in passed.html.select_one("#result")["class"]
        assert "succeeded" in passed.html.select_one("#result-ok").text
        assert passed.html.select_one("#result-answered") is None
        row = signed_in.get("/admin").html.select_one("#identity-asalieri-1 td.last span")
        assert row.text == "ok" and row["class"] == ["ok"]


def test_a_certificate_nginx_refuses_at_the_http_layer_is_a_failure(signed_in, admin, world):
    p = world["pki"]
    with nginx_peer(world["server"], p.ca_pem) as peer:
        admin.put_json(API, body_of(world["stranger"], peer.port, p.ca_pem), status=201)
        refused = send(signed_in, "/request", status=502)
        assert "failed" in refused.html.select_one("#result")["class"]
        assert refused.html.select_one("#result-code").text == "peer_rejected_certificate"
        assert "HTTP 400" in refused.html.select_one("#result .message").text
        assert "checks the client certificate only when a request arrives" in refused.html.select_one("#result").text
        assert refused.html.select_one("#result-ok") is None
        row = signed_in.get("/admin").html.select_one("#identity-asalieri-1 td.last span")
        assert row.text == "peer_rejected_certificate" and row["class"] == ["error"]


def test_send_request_with_next_from_the_test_next_panel(signed_in, admin, world):
    p = world["pki"]
    with nginx_peer(world["server"], p.ca_pem) as peer:
        admin.put_json(API, body_of(world["current"], peer.port, p.ca_pem), status=201)
        assert signed_in.get(PAGE).html.select_one("#next-request-form") is None  # nothing staged yet
        admin.put_json(API + "/next", body_of(world["stranger"], peer.port, p.ca_pem), status=201)
        page = signed_in.get(PAGE)
        form = page.html.select_one("#next-request-form")
        assert form["action"] == PAGE + "/next/request#result"
        assert form.select_one("#test-next-request").text == "Send request with next"
        # Test next passes (nginx takes any certificate in the handshake); its note points to the next form.
        tested = signed_in.post(PAGE + "/next/test", {"csrf_token": token_of(page)})
        assert "with the next identity succeeded" in tested.html.select_one("#result-ok").text
        note = tested.html.select_one("#result-note")
        assert note.select_one("a")["href"] == "#next-request-form" and "HTTPS request below" not in note.text
        # The request with next sees the refusal.
        refused = send(signed_in, "/next/request", status=502)
        assert refused.html.select_one("#result-code").text == "peer_rejected_certificate"
        assert "Request with the next identity failed" in refused.html.select_one("#result h3").text
        # The twin: a next certificate nginx trusts.
        admin.put_json(API + "/next", body_of(world["next"], peer.port, p.ca_pem))
        passed = send(signed_in, "/next/request", status=200)
        assert "Request with the next identity succeeded" in passed.html.select_one("#result-ok").text
        assert "CN=next" in passed.html.select_one("#result-body").text
        # The current slot's note still points to the current form.
        current = signed_in.post(PAGE + "/test", {"csrf_token": token_of(page)})
        assert current.html.select_one("#result-note a")["href"] == "#request-form"
