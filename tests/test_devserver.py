"""`make run` end to end: starts on free ports, serves the demo identity, stops everything on SIGTERM."""

import json
import os
import re
import socket
import time
import urllib.request

import pytest

from tests.harness.makerun import make_run


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url, token=None, timeout=5):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        return r.status, r.read()


def post(url, token, timeout=30):
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
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
    with make_run(tmp_path, "smoke-token-0123456789-abcdef") as run:
        assert get(run.base + "/healthz")[1] == b"ok"
        identities = json.loads(get(run.base + "/api/v1/identities", run.token)[1])["identities"]
        binds = "cannot bind a remote signer" not in run.output()  # else make run says so and shows no KMS demo
        assert [(i["employee"], i["address"]) for i in identities] == [("asalieri", 1), ("asalieri", 2)] + (
            [("asalieri", 3)] if binds else [])
        assert listening(run.peer) and listening(run.echo)
        kms_port = int(re.search(r"KMS stand-in on 127\.0\.0\.1:(\d+)", run.output()).group(1))
        assert listening(kms_port)
        if binds:  # the KMS-held demo identity: its key in the stand-in, its handshake signed there
            kms_demo = identities[2]
            assert kms_demo["key_location"] == "cloud_kms"
            assert kms_demo["key_type"] == "EC P-256 (Cloud KMS, SOFTWARE)"
            shake = json.loads(post(run.base + "/api/v1/employees/asalieri/addresses/3/handshake", run.token)[1])
            assert shake["client_fingerprint_sha256"] == kms_demo["fingerprint_sha256"]
            # The page's stand-in label (KMS_ENDPOINT set) is tested in test_kms_app; the banner says it too.
            assert "key in the KMS stand-in, software keys: not Cloud KMS" in run.output()
    assert run.token in run.output() and run.base + "/" in run.output()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (processes_mentioning(str(tmp_path)) or listening(run.port)):
        time.sleep(0.2)
    assert not processes_mentioning(str(tmp_path)), "an emulator or peer is still running"
    assert not any(listening(p) for p in (run.port, run.peer, run.echo, kms_port))
