"""Deploy config, upload set and preflight, checked with the Google Cloud CLI's own code.

cron.yaml and index.yaml parse with yaml_parsing.ConfigYamlInfo and the upload set is listed by
source_files_util.GetSourceFiles: what `gcloud app deploy` itself calls. Every check has a twin
proving it can fail. The slow test runs the app under dev_appserver.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import trustme
from google.cloud import ndb

import models
from devserver.emulator import EmulatorMissing, emulator_command, sdk_root
from tests.harness.deploy import (GOOD_KMS, MUST_UPLOAD, PARSE_CONFIG, PARSE_HANDLERS, assert_refused,
                                  gcloud_python, parsed, preflight, uploads, write)
from tests.harness.ports import free_port
from handlers.routes import ROUTES

pytestmark = pytest.mark.slow  # each test runs gcloud's parsers or the preflight in a fresh interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- cron.yaml -------------------------------------------------------------------------------

def test_cron_yaml_is_valid_and_runs_the_expiry_check_daily():
    (job,) = parsed(PARSE_CONFIG, os.path.join(ROOT, "cron.yaml"))
    assert job == {"url": "/cron/expiry", "schedule": "every day 06:00", "timezone": "Etc/UTC"}


def test_a_bad_schedule_is_rejected_so_the_check_can_fail(tmp_path):
    bad = tmp_path / "cron.yaml"
    bad.write_text((open(os.path.join(ROOT, "cron.yaml")).read()).replace("every day 06:00", "every blue moon"))
    result = gcloud_python(PARSE_CONFIG, str(bad))
    assert result.returncode != 0
    assert "GrocException" in result.stderr


@pytest.mark.parametrize("job", [
    "- schedule: every day 06:00\n",                                 # no url
    "- url: /cron/expiry\n  schedule: every day 06:00\n  retries: 3\n",  # unknown key
    "- url: cron/expiry\n  schedule: every day 06:00\n",            # not a path
])
def test_gcloud_rejects_a_malformed_cron_job(tmp_path, job):
    bad = tmp_path / "cron.yaml"
    bad.write_text("cron:\n" + job)
    result = gcloud_python(PARSE_CONFIG, str(bad))
    assert result.returncode != 0 and "YamlParseError" in result.stderr


def first_handler(handlers, path):
    """The app.yaml handler App Engine picks for `path` (the first whose url matches it whole)."""
    return next(h for h in handlers if re.fullmatch(h["url"], path))


def test_the_cron_url_is_routed_and_behind_login_admin():
    (job,) = parsed(PARSE_CONFIG, os.path.join(ROOT, "cron.yaml"))
    assert any(route.template == job["url"] for route in ROUTES)
    # App Engine lets its cron service through `login: admin`; everyone else must sign in.
    handlers = parsed(PARSE_HANDLERS, os.path.join(ROOT, "app.yaml"))
    assert first_handler(handlers, job["url"])["login"] == "admin"
    assert first_handler(handlers, "/healthz")["login"] == "optional"  # the twin: a public path


# --- index.yaml ------------------------------------------------------------------------------

def index_config(tmp_path):
    """The checkout's index.yaml, or an empty one: what production would have."""
    path = os.path.join(ROOT, "index.yaml")
    if os.path.exists(path):
        assert parsed(PARSE_CONFIG, path) is not None  # valid for gcloud app deploy
        return path
    empty = tmp_path / "index.yaml"
    empty.write_text("indexes: []\n")
    return str(empty)


@pytest.fixture
def strict_datastore(tmp_path, monkeypatch):
    """An emulator that refuses any query without a declared composite index, as production does."""
    try:
        command = emulator_command()
    except EmulatorMissing as e:
        pytest.skip(str(e))
    port = free_port()
    log = open(tmp_path / "emulator.log", "wb")
    process = subprocess.Popen([command, "start", "--host=127.0.0.1", f"--port={port}", "--testing",
                                "--require_indexes", f"--index_file={index_config(tmp_path)}"],
                               stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/", process, 60)
        monkeypatch.setenv("DATASTORE_EMULATOR_HOST", f"127.0.0.1:{port}")
        monkeypatch.setenv("DATASTORE_PROJECT_ID", "dyncert-local")
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "dyncert-local")
        with ndb.Client().context(cache_policy=False, global_cache_policy=False) as context:
            yield context
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_every_query_of_the_app_needs_no_composite_index(strict_datastore):
    # So no index.yaml ships: built-in single-property indexes serve all of these.
    assert models.expiry_report() == {"expired": [], "expiring": [], "stale_pending": []}
    assert models.list_identities() == [] and models.list_entities() == []
    assert models.history("asalieri", 1) == []
    assert models.count_identities() == 0


def test_a_query_that_needs_a_composite_index_is_refused_so_the_check_can_fail(strict_datastore):
    from google.api_core import exceptions
    query = models.Address.query(models.Address.fingerprint_sha256 == "x").order(models.Address.not_after)
    with pytest.raises(exceptions.FailedPrecondition, match="composite index"):
        query.fetch()


# --- .gcloudignore: the upload set ---------------------------------------------------------

NEVER_UPLOAD = (".venv/", ".venv312/", "local/", "artifacts/", "tests/", "bench/", "devserver/", "tools/",
                ".git/", ".pytest_cache/", ".hypothesis/", "docs/")


def test_the_checkout_uploads_the_app_and_nothing_local():
    files = uploads(ROOT)
    assert MUST_UPLOAD <= files
    assert {"dyncert", "handlers", "templates", "static"} <= {f.split("/")[0] for f in files}
    assert not [f for f in files if f.startswith(NEVER_UPLOAD) or "__pycache__" in f]
    assert not [f for f in files if f.endswith((".pem", ".key", ".p12", ".pfx")) or "kek.bin" in f]


SECRETS = ["local/kek.bin", "local/demo-pki/client-key.pem", "client-key.pem", "dyncert/server.key",
           "handlers/partner.p12", "static/id.pfx", "kek.bin", "templates/kek.bin",
           "artifacts/emulator.log", ".venv/lib/site.py", "tests/test_x.py", "app.log"]


def test_keys_and_local_state_anywhere_are_not_uploaded(repo):
    for name in SECRETS:
        write(repo / name, "secret\n")
    write(repo / "certs" / "partner-ca.pem", "public CA certificate\n")
    files = uploads(repo)
    assert MUST_UPLOAD <= files
    assert not set(SECRETS) & files
    assert "certs/partner-ca.pem" in files  # CA_FILE may point here: public certificates do ship


def test_without_our_gcloudignore_gcloud_would_upload_them(repo):
    # The twin: gcloud's default for python runtimes (written when none exists) skips none of these.
    os.remove(repo / ".gcloudignore")
    for name in SECRETS:
        write(repo / name, "secret\n")
    files = uploads(repo)
    assert {"local/kek.bin", "client-key.pem", "dyncert/server.key", "tests/test_x.py"} <= files


# --- the preflight ---------------------------------------------------------------------------


def test_preflight_passes_on_this_checkout():
    result = preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS)
    assert result.returncode == 0, result.stderr
    assert "preflight: all 8 checks passed." in result.stdout
    assert f"KMS_KEY_NAME={GOOD_KMS}" in result.stdout
    assert "app.yaml is valid" in result.stdout and "cron.yaml is valid" in result.stdout


def test_preflight_reads_the_project_from_the_environment():
    result = preflight(KMS_KEY_NAME=GOOD_KMS, CLOUDSDK_CORE_PROJECT="dyncert-demo")
    assert result.returncode == 0, result.stderr
    assert "project dyncert-demo" in result.stdout


def test_preflight_refuses_without_a_project(tmp_path):
    # An empty gcloud configuration directory: no `gcloud config set project` was ever run.
    result = preflight(KMS_KEY_NAME=GOOD_KMS, CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
    assert_refused(result, "project: No Google Cloud project is configured", "gcloud config set project")


def test_preflight_refuses_without_a_kms_key_name():
    result = preflight("--skip-project")
    assert_refused(result, "KMS_KEY_NAME is not set", "--allow-local-kek")


def test_the_explicit_opt_out_passes_with_a_warning():
    for result in (preflight("--skip-project", "--allow-local-kek"),
                   preflight("--skip-project", ALLOW_LOCAL_KEK="1")):
        assert result.returncode == 0, result.stderr
        assert "WARN  Deploying without KMS_KEY_NAME" in result.stdout


@pytest.mark.parametrize("name", [
    "private-keys",
    "projects/p/locations/global/keyRings/r",
    GOOD_KMS + "/cryptoKeyVersions/1",
    "projects//locations/global/keyRings/r/cryptoKeys/k",
])
def test_preflight_refuses_a_malformed_kms_key_name(name):
    assert_refused(preflight("--skip-project", KMS_KEY_NAME=name), "is not a Cloud KMS key name",
                   repr(name), "projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY")


def test_a_kms_key_name_in_app_yaml_passes_without_a_warning(repo):
    app_yaml = repo / "app.yaml"
    app_yaml.write_text(app_yaml.read_text().replace("  PYTHONHTTPSVERIFY: 1\n",
                                                     f"  PYTHONHTTPSVERIFY: 1\n  KMS_KEY_NAME: {GOOD_KMS}\n"))
    result = preflight("--skip-project", root=repo)
    assert result.returncode == 0, result.stderr
    assert "(from app.yaml env_variables)" in result.stdout and "WARN" not in result.stdout


@pytest.mark.parametrize("line", ["requests>=2.31", "requests", "--pre", "requests~=2.31", "requests==2.*"])
def test_preflight_refuses_an_unpinned_requirement(repo, line):
    with open(repo / "requirements.txt", "a") as f:
        f.write(line + "\n")
    assert_refused(preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS),
                   "requirements.txt has lines not pinned with `==`", line)


def private_key_pem():
    return trustme.CA().private_key_pem.bytes().decode()


@pytest.mark.parametrize("name", ["certs/partner-ca.pem", "dyncert/fixture.py", "templates/key.txt"])
def test_preflight_refuses_a_private_key_in_the_upload_set(repo, name):
    write(repo / name, f'KEY = """{private_key_pem()}"""\n')
    assert_refused(preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS),
                   f"{name}: contains a PEM private key")


def test_preflight_refuses_key_files_gcloudignore_would_let_through(repo):
    ignore = repo / ".gcloudignore"
    ignore.write_text(ignore.read_text().replace("\nlocal/\n", "\n").replace("\n*.p12\n", "\n"))
    assert "local/" not in ignore.read_text()
    write(repo / "local" / "datastore.json", "{}")
    write(repo / "static" / "partner.p12", "binary")
    assert_refused(preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS),
                   "local/datastore.json: local state", "static/partner.p12: a key or key store file")


def test_the_key_scan_ignores_code_that_only_names_the_pem_marker():
    # dyncert/identity.py and handlers/base.py mention the PEM private-key BEGIN line and do ship.
    files = uploads(ROOT)
    assert "dyncert/identity.py" in files
    result = preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS)
    assert "no private keys" in result.stdout


def test_preflight_refuses_an_invalid_app_yaml(repo):
    with open(repo / "app.yaml", "a") as f:
        f.write("\nlibraries:\n- name: ssl\n  version: latest\n")
    assert_refused(preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS),
                   "app.yaml is not valid for gcloud app deploy", "python27")


def test_preflight_lists_every_failure_at_once(repo):
    cron = repo / "cron.yaml"
    cron.write_text(cron.read_text().replace("every day 06:00", "every blue moon"))
    with open(repo / "requirements.txt", "a") as f:
        f.write("requests>=2\n")
    result = preflight("--skip-project", root=repo)
    assert_refused(result, "cron.yaml is not valid", "KMS_KEY_NAME is not set", "requests>=2")
    assert "3 checks failed" in result.stderr


def test_index_yaml_is_validated_and_deployed_when_present(repo):
    write(repo / "index.yaml", "indexes:\n- kind: Address\n  properties:\n  - name: host\n"
                               "  - name: not_after\n")
    assert preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS).returncode == 0
    dry_run = subprocess.run(["make", "-n", "deploy"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert "gcloud app deploy app.yaml cron.yaml index.yaml" in dry_run.stdout
    write(repo / "index.yaml", "indexes:\n- kind: Address\n  properties:\n  - direction: sideways\n")
    assert_refused(preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS), "index.yaml is not valid")


def test_preflight_refuses_without_gcloud():
    result = preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS, PATH=os.path.dirname(sys.executable),
                       CLOUDSDK_ROOT="")
    assert_refused(result, "gcloud: The Google Cloud CLI (gcloud) is not installed")


def test_make_deploy_runs_the_preflight_first():
    dry_run = subprocess.run(["make", "-n", "deploy"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = dry_run.stdout.splitlines()
    preflight_at = next(i for i, line in enumerate(lines) if "-m tools.preflight" in line)
    deploy_at = next(i for i, line in enumerate(lines) if line.startswith("gcloud app deploy app.yaml cron.yaml"))
    assert preflight_at < deploy_at


# --- dev_appserver.py ------------------------------------------------------------------------

def wait_for(url, process, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited early")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing answered at {url} within {timeout} s")


def fetch(url, method="GET", body=None, headers=None):
    """(status, headers, body text) without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


ADMIN_COOKIE = {"Cookie": 'dev_appserver_login="test@example.com:True:185804764220139124118"'}
USER_COOKIE = {"Cookie": 'dev_appserver_login="user@example.com:False:114130245331342117005"'}


@pytest.fixture
def dev_appserver(emulator, tmp_path):
    """dev_appserver.py app.yaml under the CLI's bundled Python, on the test emulator."""
    try:
        root = sdk_root()
    except EmulatorMissing:
        pytest.skip("the Google Cloud CLI is not installed")
    script = os.path.join(root, "bin", "dev_appserver.py")
    python = os.path.join(root, "platform", "bundledpythonunix", "bin", "python3")
    if not (os.path.exists(script) and os.path.exists(python)):
        pytest.skip("dev_appserver.py or the CLI's bundled Python is not installed "
                    "(apt-get install google-cloud-cli-app-engine-python)")
    emulator.reset()
    port, token = free_port(), "dev-appserver-admin-token"
    # Kept between runs: the first start pip-installs requirements.txt (about a minute).
    venv = os.environ.get("DEV_APPSERVER_VENV") or os.path.expanduser("~/.cache/dyncert/dev_appserver-venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_", "GOOGLE_CLOUD_PROJECT"))}
    command = [python, script, "--runtime_python_path=" + python, "--python_virtualenv_path=" + venv,
               # Its own emulator support needs protobuf modules this CLI build lacks; the app
               # reaches the emulator through google-cloud-ndb, so hand it the address instead.
               "--support_datastore_emulator=false", f"--port={port}", f"--admin_port={free_port()}",
               f"--api_port={free_port()}", f"--storage_path={tmp_path / 'storage'}",
               "--skip_sdk_update_check=true", "--automatic_restart=false", "-A", "dyncert-local",
               "--env_var", f"DATASTORE_EMULATOR_HOST={emulator.host}",
               "--env_var", f"ADMIN_TOKEN={token}",
               "--env_var", f"LOCAL_KEK_FILE={tmp_path / 'kek.bin'}", "app.yaml"]
    log = open(tmp_path / "dev_appserver.log", "wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        wait_for(base + "/healthz", process, 240)
        yield base, token
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_the_app_runs_under_dev_appserver_with_login_admin(dev_appserver, upload):
    base, token = dev_appserver
    status, _, body = fetch(base + "/healthz")
    assert (status, body) == (200, "ok")
    # `login: admin` is dev_appserver's: no sign-in cookie, no request reaches the app.
    status, headers, body = fetch(base + "/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    assert (status, body) == (401, "Login required to view page.")
    status, headers, _ = fetch(base + "/admin")
    assert status == 302 and "/_ah/login?continue=" in headers["Location"]
    assert fetch(base + "/api/v1/status", headers=USER_COOKIE)[0] == 401  # signed in, not an admin
    # Signed in as an admin, the request reaches the app, whose own gate (GAE_ENV=localdev: not
    # App Engine, so no X-Appengine-User-* trust) still asks for the admin token.
    status, _, body = fetch(base + "/api/v1/status", headers=ADMIN_COOKIE)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"
    both = dict(ADMIN_COOKIE, Authorization=f"Bearer {token}", **{"Content-Type": "application/json"})
    status, _, body = fetch(base + "/api/v1/status", headers=both)
    assert status == 200 and json.loads(body)["python"].startswith("3.12")
    # Datastore is the emulator: a stored identity is listed.
    status, _, body = fetch(base + "/api/v1/employees/asalieri/addresses/1", "PUT", upload, both)
    assert status == 201, body
    status, _, body = fetch(base + "/api/v1/identities", headers=both)
    assert [i["employee"] for i in json.loads(body)["identities"]] == ["asalieri"]
