"""The identity CLI's remaining snags (issue 19.5): a closed pipe, a wrong token, promote with nothing staged,
an encrypted key without --password-env, delete that asks first, a description for every subcommand.
"""

import os
import re
import subprocess
import sys

from cryptography.hazmat.primitives import serialization

from tests.harness import pki
from tests.harness.app import ROOT, cli, served  # noqa: F401 - the fixture is used by name

API = "/api/v1/employees/asalieri/addresses/1"


def run(url, token, *args, stdin=""):
    env = dict(os.environ, ADMIN_TOKEN=token, DYNCERT_URL=url)
    return subprocess.run([sys.executable, "-m", "tools.identity", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def stored(admin, served, settings, tmp_path):  # noqa: F811
    creds = pki.client_cert(pki.make_pki("snags").clients_ca, "snag")
    chain, key = pki.write_files(str(tmp_path), creds, stem="snag")
    result = run(served, settings.admin_token, "put", "asalieri", "1", "--cert", chain, "--key", key,
                 "--host", "partner.example.com")
    assert result.returncode == 0, result.stderr
    return creds


def test_a_closed_pipe_ends_without_a_traceback(served, settings, admin, tmp_path):  # noqa: F811
    stored(admin, served, settings, tmp_path)
    env = dict(os.environ, ADMIN_TOKEN=settings.admin_token, DYNCERT_URL=served)
    # `... | head` that has already exited: the reading end is closed before the CLI writes.
    process = subprocess.Popen([sys.executable, "-m", "tools.identity", "list"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert b"Traceback" not in err and b"BrokenPipeError" not in err and b"Exception ignored" not in err, err
    # The twin: an open pipe gets the whole answer.
    full = run(served, settings.admin_token, "list")
    assert full.returncode == 0 and '"employee": "asalieri"' in full.stdout


def test_a_wrong_token_says_so(served, settings):  # noqa: F811
    result = run(served, "not-the-token", "list")
    assert result.returncode == 1
    assert "the admin token was not accepted" in result.stderr and "ADMIN_TOKEN" in result.stderr
    assert run(served, settings.admin_token, "list").returncode == 0  # the twin


def test_promote_with_nothing_staged_names_the_cli_command(served, settings, admin, tmp_path):  # noqa: F811
    stored(admin, served, settings, tmp_path)
    result = run(served, settings.admin_token, "promote", "asalieri", "1")
    assert result.returncode == 1 and "409 no_next" in result.stderr
    assert "python -m tools.identity next asalieri 1 --cert" in result.stderr
    assert "PUT" not in result.stderr


def test_an_encrypted_key_without_a_password_names_password_env(served, settings, tmp_path):  # noqa: F811
    creds = pki.client_cert(pki.make_pki("snags").clients_ca, "locked")
    chain, _ = pki.write_files(str(tmp_path), creds, stem="locked")
    key = serialization.load_pem_private_key(creds.key_pem, None)
    locked = tmp_path / "locked-encrypted.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"s3cret-pass")))
    result = run(served, settings.admin_token, "put", "asalieri", "1", "--cert", chain, "--key", str(locked),
                 "--host", "partner.example.com")
    assert result.returncode == 1 and "wrong_password" in result.stderr and "--password-env" in result.stderr
    # The twin: the password given through the variable is used.
    env = dict(os.environ, ADMIN_TOKEN=settings.admin_token, DYNCERT_URL=served, KEY_PASSWORD="s3cret-pass")
    ok = subprocess.run([sys.executable, "-m", "tools.identity", "put", "asalieri", "1", "--cert", chain, "--key",
                         str(locked), "--password-env", "KEY_PASSWORD", "--host", "partner.example.com"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_delete_asks_first(served, settings, admin, tmp_path):  # noqa: F811
    stored(admin, served, settings, tmp_path)
    token = settings.admin_token
    for answer in ("n\n", "", "maybe\n"):  # no, end of input, anything but yes: nothing deleted
        kept = run(served, token, "delete", "asalieri", "1", stdin=answer)
        assert kept.returncode == 1 and "[y/N]" in kept.stderr and "--yes" in kept.stderr
        admin.get(API, status=200)
    yes = run(served, token, "delete", "asalieri", "1", stdin="y\n")
    assert yes.returncode == 0, yes.stderr
    admin.get(API, status=404)
    stored(admin, served, settings, tmp_path)
    scripted = run(served, token, "delete", "asalieri", "1", "--yes")
    assert scripted.returncode == 0 and "[y/N]" not in scripted.stderr
    admin.get(API, status=404)


def test_every_subcommand_has_a_description_in_help():
    result = subprocess.run([sys.executable, "-m", "tools.identity", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    names = re.search(r"\{([a-z,]+)\}", result.stdout).group(1).split(",")
    assert {"list", "get", "put", "delete", "handshake", "request", "echo", "csr", "next", "promote", "rollback",
            "history"} <= set(names)
    for name in names:
        line = re.search(rf"^\s+{name}\s+(\S.*)$", result.stdout, re.MULTILINE)
        assert line and len(line.group(1)) > 10, f"{name} has no description in --help"
