"""`make run` when PORT is taken by another program, its own-app check, and the kept admin token."""

import os
import re
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devserver import run
from tests.harness.ports import free_port

pytestmark = pytest.mark.slow  # starts make run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Foreign(BaseHTTPRequestHandler):
    """An unrelated server that answers everything with 200 'ok' (even /healthz) and records requests."""

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        if self.server.run_id is not None:
            self.send_response(200)
            self.send_header(run.RUN_ID_HEADER, self.server.run_id)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def foreign():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Foreign)
    server.seen, server.run_id = [], None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_make_run_refuses_a_port_taken_by_another_server(foreign, tmp_path):
    port = foreign.server_address[1]
    env = dict(os.environ, PORT=str(port), LOCAL_DIR=str(tmp_path), ADMIN_TOKEN="a-token-of-twenty-chars",
               DEMO_PEER_PORT=str(free_port()), DEMO_ECHO_PORT=str(free_port()), DEMO_OPEN_PORT=str(free_port()))
    result = subprocess.run(["make", "-s", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"Port {port} is already in use" in output
    suggested = int(re.search(r"PORT=(\d+) make run", output).group(1))
    assert suggested != port and run.can_bind(suggested)  # a port the user can really take
    assert "Traceback" not in output
    assert not [s for s in foreign.seen if s[0] != "GET" or "Authorization" in s[2]], foreign.seen
    assert "a-token-of-twenty-chars" not in output


def test_own_app_check_wants_this_runs_id(foreign):
    base = f"http://127.0.0.1:{foreign.server_address[1]}"
    assert not run.is_own_app(base, "expected-run-id")  # answers 'ok' but names no run
    foreign.run_id = "another-run-id"
    assert not run.is_own_app(base, "expected-run-id")
    foreign.run_id = "expected-run-id"
    assert run.is_own_app(base, "expected-run-id")
    assert all(s[0] == "GET" and s[1] == "/healthz" and "Authorization" not in s[2] for s in foreign.seen)


def test_the_app_names_its_run_on_healthz(emulator):
    """The real app, started with DYNCERT_RUN_ID as make run does, passes the check."""
    code = ("import os, webtest, main, settings\n"
            "app = webtest.TestApp(main.create_app(settings.from_environ({}, admin_token='x-Y-0' * 8)))\n"
            "r = app.get('/healthz')\n"
            "print(r.headers.get('X-Dyncert-Run'), r.text)\n")
    env = dict(os.environ, **emulator.environ(), DYNCERT_RUN_ID="run-1234")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["run-1234", "ok"], out.stderr
    env.pop("DYNCERT_RUN_ID")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["None", "ok"], out.stderr


def test_generated_admin_token_is_kept_0600_and_reused(tmp_path):
    token, where = run.admin_token(str(tmp_path), {})
    assert where == str(tmp_path / "admin-token") and len(token) >= 32
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    assert run.admin_token(str(tmp_path), {}) == (token, where)


def test_admin_token_from_the_environment_wins_and_writes_nothing(tmp_path):
    assert run.admin_token(str(tmp_path), {"ADMIN_TOKEN": "chosen-token-0123456789"}) == (
        "chosen-token-0123456789", "ADMIN_TOKEN")
    assert not (tmp_path / "admin-token").exists()


def test_suggested_port_is_free_and_not_the_emulators(foreign):
    """8080 taken: not 8081 (the README's emulator); a taken candidate is skipped; a free one is offered."""
    assert run.suggest_port(8080) not in run.RESERVED_PORTS
    taken = foreign.server_address[1]
    with socket.socket() as blocker:  # the first candidate (next multiple of ten) taken as well
        first = taken - taken % 10 + 10
        if run.can_bind(first):
            blocker.bind(("127.0.0.1", first))
            blocker.listen()
        suggested = run.suggest_port(taken)
        assert suggested not in (taken, first) and run.can_bind(suggested)
    assert not run.can_bind(taken)  # the twin: a taken port is seen as taken
