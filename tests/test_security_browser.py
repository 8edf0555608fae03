"""Issue 11 in a real browser: a page on another port of the same host attacks a signed-in admin.

SameSite=Strict does not separate ports, so the session cookie rides along; the partner (a loopback
listener that counts connections) must receive nothing. The twin: the admin's own Test connection
button does reach it.
"""

import http.server
import json
import threading
import urllib.request

import pytest
from tests.harness.app import ADMIN_TOKEN
from tests.harness.live import sign_in
from tests.harness.loopback import CountingListener

pytestmark = pytest.mark.browser
URL = "/api/v1/employees/asalieri/addresses/1"

ATTACK = """<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain" action="{app}{url}/request">
<input name='{{"method": "GET", "path": "/", "x": "' value='"}}'></form>
<form id="g" method="post" action="{app}/admin/employees/asalieri/addresses/1/test">
<input name="csrf_token" value="{tossed}"></form>
<script>
fetch("{app}{url}/handshake", {{method: "POST", mode: "no-cors", credentials: "include"}})
  .finally(() => document.getElementById("{form}").submit());
</script></body></html>"""


@pytest.fixture
def attacker():
    """An HTTP server on another loopback port serving whatever page the test sets."""
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def target(live_server, datastore, upload):  # noqa: F811
    """asalieri/1 stored (Bearer) with its target on a counting loopback listener."""
    listener = CountingListener()
    body = json.dumps(dict(upload, host="127.0.0.1", port=listener.port)).encode()
    request = urllib.request.Request(live_server + URL, data=body, method="PUT", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    yield listener
    listener.close()


@pytest.mark.parametrize("form", ["f", "g"])
def test_a_page_on_another_port_cannot_act_for_the_admin(browser, live_server, attacker, target, form):  # noqa: F811
    pages, attacker_base = attacker
    context = browser.new_context(base_url=live_server)
    page = context.new_page()
    sign_in(page)
    # Cookie tossing: the attacker's page plants its own CSRF cookie for the app's host first.
    context.add_cookies([{"name": "dyncert_csrf", "value": "tossed", "url": live_server}])
    pages["/"] = ATTACK.format(app=live_server, url=URL, tossed="tossed", form=form)
    answers = []
    page.on("response", lambda r: answers.append(r.status) if r.url.startswith(live_server + "/api") or
            r.url.endswith("/test") else None)
    page.goto(attacker_base + "/")
    page.wait_for_url(live_server + "/**")
    page.wait_for_load_state("load")
    assert 403 in answers and target.accepted == 0, answers
    # The twin: the admin's own button on the detail page does reach the partner.
    page.goto("/admin/employees/asalieri/addresses/1")
    page.click("#test-handshake")
    page.wait_for_load_state("load")
    assert target.accepted == 1
    context.close()
