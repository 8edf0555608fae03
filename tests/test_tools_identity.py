"""The identity CLI against the app served over real HTTP."""

import json
import os

import pytest

from tests.harness.app import cli

pytestmark = pytest.mark.interp  # the smoke test on every interpreter: CLI, app over HTTP, a real handshake



def test_put_list_get_handshake_delete(served, settings, demo_pki, demo_peer):
    token, https_port = settings.admin_token, demo_peer[0]
    pem = lambda name: os.path.join(demo_pki, name)  # noqa: E731
    put = cli(served, token, "put", "asalieri", "7", "--cert", pem("client-chain.pem"),
              "--key", pem("client-key.pem"), "--ca", pem("ca.pem"), "--host", "127.0.0.1",
              "--port", str(https_port), "--sni", "localhost")
    assert put.returncode == 0, put.stderr
    assert "PRIVATE KEY" not in put.stdout
    listed = json.loads(cli(served, token, "list").stdout)["identities"]
    assert [(i["employee"], i["address"]) for i in listed] == [("asalieri", 7)]
    shake = json.loads(cli(served, token, "handshake", "asalieri", "7").stdout)
    assert shake["ok"] and shake["client_fingerprint_sha256"] == listed[0]["fingerprint_sha256"]
    assert cli(served, token, "delete", "asalieri", "7", "--yes").returncode == 0
    missing = cli(served, token, "get", "asalieri", "7")
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_refusals_are_reported_with_their_code(served, settings, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    result = cli(served, settings.admin_token, "put", "asalieri", "1", "--cert", str(bad), "--host", "h.example")
    assert result.returncode == 1 and "invalid_certificate" in result.stderr
    wrong = cli(served, "wrong-token", "list")
    assert wrong.returncode == 1 and "unauthenticated" in wrong.stderr
