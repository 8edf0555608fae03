"""The identity CLI's mistakes: one clear line on stderr, a non-zero exit, never a traceback."""

import os
import subprocess
import sys

from tests.harness.ports import free_port
from tests.harness.app import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(result):
    """The CLI's stderr, checked to be a single line without a traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_help_shows_examples_and_names_the_environment():
    result = subprocess.run([sys.executable, "-m", "tools.identity", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for text in ("DYNCERT_URL", "ADMIN_TOKEN", "python -m tools.identity put asalieri 1 --cert", "Exit status"):
        assert text in result.stdout


def test_missing_file_is_one_line_and_exit_2(served, settings, tmp_path):  # noqa: F811
    result = cli(served, settings.admin_token, "put", "asalieri", "1", "--cert", str(tmp_path / "nope.pem"),
                 "--host", "h.example")
    assert result.returncode == 2
    assert "nope.pem" in one_line(result) and "--cert" in one_line(result)


def test_unreachable_app_is_one_line_and_exit_3(settings):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli(url, settings.admin_token, "list")
    assert result.returncode == 3
    line = one_line(result)
    assert url in line and "DYNCERT_URL" in line


def test_unset_password_variable_is_an_error_not_an_empty_password(served, settings, demo_pki):  # noqa: F811
    env_name = "DYNCERT_TEST_SURELY_UNSET"
    os.environ.pop(env_name, None)
    result = cli(served, settings.admin_token, "put", "asalieri", "1", "--cert", f"{demo_pki}/client-chain.pem",
                 "--key", f"{demo_pki}/client-key.pem", "--password-env", env_name, "--host", "h.example")
    assert result.returncode == 2 and env_name in one_line(result)
    listed = cli(served, settings.admin_token, "list")
    assert listed.returncode == 0 and '"identities": []' in listed.stdout  # nothing was sent


def test_set_password_variable_is_used(served, settings, demo_pki):  # noqa: F811
    """The twin: the variable is set, the key is not encrypted, so the API's own answer comes back."""
    env = dict(os.environ, ADMIN_TOKEN=settings.admin_token, DYNCERT_URL=served, P="some-password")
    result = subprocess.run([sys.executable, "-m", "tools.identity", "put", "asalieri", "1", "--cert",
                             f"{demo_pki}/client-chain.pem", "--key", f"{demo_pki}/client-key.pem",
                             "--password-env", "P", "--host", "h.example"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr  # accepted, or refused by the API with its code
    assert "Traceback" not in result.stderr


def test_api_error_is_one_line_and_exit_1(served, settings):  # noqa: F811
    result = cli(served, settings.admin_token, "get", "asalieri", "99")
    assert result.returncode == 1 and one_line(result).startswith("404 not_found:")


def test_missing_token_is_one_line_and_exit_2(served):  # noqa: F811
    result = cli(served, "", "list")
    assert result.returncode == 2 and "ADMIN_TOKEN" in one_line(result)
