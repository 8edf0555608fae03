"""`make run` end to end: starts on free ports, serves the demo identity, stops everything on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from devserver.emulator import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url, token=None, timeout=5):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        return r.status, r.read()


def processes_mentioning(text):
    """PIDs whose command line contains `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_make_run_serves_the_demo_and_stops_cleanly(tmp_path):
    port, peer, echo, token = free_port(), free_port(), free_port(), "smoke-token-123"
    env = dict(os.environ, PORT=str(port), DEMO_PEER_PORT=str(peer), DEMO_ECHO_PORT=str(echo),
               ADMIN_TOKEN=token, LOCAL_DIR=str(tmp_path))
    for name in ("DATASTORE_EMULATOR_HOST", "DATASTORE_PROJECT_ID", "GOOGLE_CLOUD_PROJECT"):
        env.pop(name, None)
    make = subprocess.Popen(["make", "-s", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(make.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240  # the first run may install the requirements
        while time.monotonic() < deadline and make.poll() is None and "Ctrl-C stops" not in "".join(lines):
            time.sleep(0.2)
        assert "Ctrl-C stops" in "".join(lines), "make run did not report ready:\n" + "".join(lines)
        assert get(f"http://127.0.0.1:{port}/healthz")[1] == b"ok"
        identities = json.loads(get(f"http://127.0.0.1:{port}/api/v1/identities", token)[1])["identities"]
        assert [(i["employee"], i["address"]) for i in identities] == [("asalieri", 1), ("asalieri", 2)]
        assert listening(peer) and listening(echo)
    finally:
        make.send_signal(signal.SIGTERM)
        make.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert token in output and f"http://127.0.0.1:{port}/" in output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (processes_mentioning(str(tmp_path)) or listening(port)):
        time.sleep(0.2)
    assert not processes_mentioning(str(tmp_path)), "an emulator or peer is still running"
    assert not any(listening(p) for p in (port, peer, echo))
