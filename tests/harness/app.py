"""The app under test as the tests reach it: the admin token, the artifacts folder, a page's CSRF token,
a demo PKI file's text, the app over real HTTP and the identity CLI against it."""

import os
import re
import subprocess
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import webtest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN_TOKEN = "test-admin-token-0123456789"
ARTIFACTS = os.path.join(ROOT, "artifacts")


def artifact(name):
    """Path of a log in artifacts/, one per pytest-xdist worker ('emulator.log' -> 'emulator-gw1.log')."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        stem, ext = os.path.splitext(name)
        name = f"{stem}-{worker}{ext}"
    return os.path.join(ARTIFACTS, name)


def token_of(page):
    """The CSRF token the page's forms carry."""
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def read(directory, name):
    """Text of a file in a PKI directory."""
    with open(os.path.join(directory, name)) as f:
        return f.read()


class Quiet(WSGIRequestHandler):
    """wsgiref without a line per request."""

    def log_message(self, *args):
        pass


@pytest.fixture
def served(app):
    """The test's app over real HTTP on a free loopback port (wsgiref in a thread): its base URL."""
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def cli(url, token, *args):
    """Run `python -m tools.identity` against `url` with `token`; the CompletedProcess."""
    env = dict(os.environ, ADMIN_TOKEN=token, DYNCERT_URL=url)
    return subprocess.run([sys.executable, "-m", "tools.identity", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def admin_client(app, token=ADMIN_TOKEN, **environ):
    """A client that sends the admin token (the API reads it) and is signed in (pages read the session)."""
    client = webtest.TestApp(app, extra_environ=dict(environ, HTTP_AUTHORIZATION=f"Bearer {token}"))
    page = client.get("/signin")
    client.post("/signin", {"token": token, "csrf_token": token_of(page), "next": "/admin"}, status=302)
    return client
