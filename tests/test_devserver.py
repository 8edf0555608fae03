"""`make run` end to end: starts on free ports, serves the demo identity, stops everything on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
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
    try:
        deadline = time.monotonic() + 240
        identities = None
        while time.monotonic() < deadline and make.poll() is None:
            try:
                if get(f"http://127.0.0.1:{port}/healthz")[1] == b"ok":
                    status, body = get(f"http://127.0.0.1:{port}/api/v1/identities", token)
                    identities = json.loads(body)["identities"]
                    if identities:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        assert identities, "make run did not serve the demo identity"
        assert ("asalieri", 1) in [(i["employee"], i["address"]) for i in identities]
        assert listening(peer) and listening(echo)
    finally:
        make.send_signal(signal.SIGTERM)
        output = make.communicate(timeout=60)[0]
    assert token in output and f"http://127.0.0.1:{port}/" in output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (processes_mentioning(str(tmp_path)) or listening(port)):
        time.sleep(0.2)
    assert not processes_mentioning(str(tmp_path)), "an emulator or peer is still running"
    assert not any(listening(p) for p in (port, peer, echo))
