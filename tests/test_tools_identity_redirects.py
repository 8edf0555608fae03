"""Issue 20 item 2: the CLI never carries the admin token to another place (redirects, plain HTTP off-host)."""

import http.server
import threading

import pytest

from tests.harness.app import cli, served  # noqa: F401  (the app over real HTTP)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's canned reply and remembers the headers it was sent."""

    def log_message(self, *args):
        pass

    def _answer(self):
        self.server.seen.append(dict(self.headers))
        status, headers, body = self.server.reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


@pytest.fixture
def loopback_server():
    """Start loopback HTTP servers with canned replies; each records the headers it received."""
    started = []

    def start(status, headers=None, body=b'{"identities": []}'):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        server.seen, server.reply = [], (status, headers or {"Content-Type": "application/json"}, body)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server, f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_token_stays_home(loopback_server, status):
    elsewhere, elsewhere_url = loopback_server(200)
    redirecting, url = loopback_server(status, {"Location": elsewhere_url + "/api/v1/identities"}, b"")
    result = cli(url, "the-admin-token-" + "x" * 30, "list")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert f"{status} redirect_refused" in result.stderr and elsewhere_url in result.stderr
    assert "Traceback" not in result.stderr
    assert len(redirecting.seen) == 1
    assert elsewhere.seen == []  # nothing, let alone the token, reached the other port


def test_the_twin_a_direct_answer_is_used(loopback_server):
    server, url = loopback_server(200)
    result = cli(url, "the-admin-token-" + "x" * 30, "list")
    assert result.returncode == 0 and '"identities": []' in result.stdout
    assert server.seen[0]["Authorization"] == "Bearer the-admin-token-" + "x" * 30


@pytest.mark.parametrize("url", ["http://dyncert-test.invalid", "http://192.0.2.1:8080", "http://[2001:db8::1]/"])
def test_plain_http_to_another_host_is_refused_before_sending(url):
    result = cli(url, "the-admin-token-" + "x" * 30, "list")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "https://" in result.stderr and "loopback" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["http://localhost:1", "http://127.0.0.2:1", "http://[::1]:1",
                                 "https://dyncert-test.invalid"])
def test_loopback_http_and_any_https_are_tried(url):
    """The twins: loopback over http and any host over https are attempted (nothing answers: exit 3)."""
    result = cli(url, "the-admin-token-" + "x" * 30, "list")
    assert result.returncode == 3, (result.returncode, result.stderr)


def test_the_real_app_still_answers(served, settings):  # noqa: F811
    result = cli(served, settings.admin_token, "list")
    assert result.returncode == 0 and '"identities": []' in result.stdout
