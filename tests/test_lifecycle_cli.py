"""The CLI's csr, next, promote, rollback and history subcommands against the app over real HTTP."""

import json

from tests.harness import pki
from tests.harness.peers import PythonTLSPeer
from tests.harness.app import cli
from tests.harness.pki import sign_csr


def test_rotation_from_the_command_line(served, settings, tmp_path):  # noqa: F811
    token = settings.admin_token
    p = pki.make_pki("cli")
    first = pki.client_cert(p.clients_ca, "first")
    chain_file, key_file = pki.write_files(str(tmp_path), first, stem="first")
    ca_file = pki.write_pem(str(tmp_path), "ca.pem", p.ca_pem)
    with PythonTLSPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        put = cli(served, token, "put", "asalieri", "1", "--cert", chain_file, "--key", key_file, "--ca", ca_file,
                  "--host", "127.0.0.1", "--port", str(peer.port), "--sni", "localhost")
        assert put.returncode == 0, put.stderr

        made = cli(served, token, "csr", "asalieri", "1", "--cn", "asalieri", "--o", "dyncert",
                   "--dns", "a.example.com", "--dns", "b.example.com", "--key-type", "EC-P384")
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----") and "PRIVATE" not in made.stdout
        out = tmp_path / "req.csr"
        again = cli(served, token, "csr", "asalieri", "1", "--cn", "asalieri", "--out", str(out))
        assert again.returncode == 0 and json.loads(again.stdout)["key_type"] == "EC P-256"
        signed = tmp_path / "signed.pem"
        signed.write_text(sign_csr(p.clients_ca, out.read_text()))

        staged = cli(served, token, "next", "asalieri", "1", "--cert", str(signed))
        assert staged.returncode == 0, staged.stderr
        next_fp = json.loads(staged.stdout)["next"]["fingerprint_sha256"]
        assert json.loads(cli(served, token, "next", "asalieri", "1", "--show").stdout)["next"]["port"] == peer.port
        tested = json.loads(cli(served, token, "next", "asalieri", "1", "--test").stdout)
        assert tested["ok"] and tested["client_fingerprint_sha256"] == next_fp

        promoted = json.loads(cli(served, token, "promote", "asalieri", "1").stdout)
        assert promoted["current"]["fingerprint_sha256"] == next_fp
        shake = json.loads(cli(served, token, "handshake", "asalieri", "1").stdout)
        assert shake["client_fingerprint_sha256"] == next_fp
        rolled = json.loads(cli(served, token, "rollback", "asalieri", "1").stdout)
        assert rolled["current"]["fingerprint_sha256"] == first.fingerprint_sha256

    events = json.loads(cli(served, token, "history", "asalieri", "1").stdout)["events"]
    assert [e["action"] for e in events] == ["rolled_back", "promoted", "next_staged", "csr_created",
                                             "csr_created", "created"]
    assert {e["actor"] for e in events} == {"admin-token"}


def test_lifecycle_refusals_are_reported_with_their_code(served, settings):  # noqa: F811
    token = settings.admin_token
    nothing = cli(served, token, "promote", "asalieri", "9")
    assert nothing.returncode == 1 and "409 no_next" in nothing.stderr
    back = cli(served, token, "rollback", "asalieri", "9")
    assert back.returncode == 1 and "no_previous" in back.stderr
    bad = cli(served, token, "csr", "asalieri", "9", "--cn", "x", "--dns", "not a name!")
    assert bad.returncode == 1 and "invalid_request" in bad.stderr
    assert cli(served, token, "next", "asalieri", "9", "--show").returncode == 1
