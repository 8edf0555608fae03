"""The deploy checks' tools: gcloud's own parsers, the upload set, a checkout copy to break, the preflight."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from devserver.emulator import EmulatorMissing, sdk_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOOD_KMS = "projects/dyncert-demo/locations/europe-west1/keyRings/dyncert/cryptoKeys/private-keys"


PARSE_CONFIG = """
import json, sys
from googlecloudsdk.api_lib.app import yaml_parsing
info = yaml_parsing.ConfigYamlInfo.FromFile(sys.argv[1])
if info.config == "cron":
    # gcloud on Python 3 leaves the schedule to the server (croninfo skips groc there); its groc
    # parser runs on Python 3 all the same, so check it as the server will.
    from googlecloudsdk.appengine.googlecron import groctimespecification
    for c in info.parsed.cron:
        groctimespecification.GrocTimeSpecification(c.schedule)
    print(json.dumps([dict(url=c.url, schedule=c.schedule, timezone=c.timezone) for c in info.parsed.cron]))
else:
    print(json.dumps([dict(kind=i.kind) for i in (info.parsed.indexes or [])]))
"""


PARSE_HANDLERS = """
import json, sys
from googlecloudsdk.api_lib.app import yaml_parsing
info = yaml_parsing.ServiceYamlInfo.FromFile(sys.argv[1])
print(json.dumps([dict(url=h.url, login=h.login, auth_fail_action=h.auth_fail_action)
                  for h in info.parsed.handlers]))
"""


LIST_UPLOADS = """
import json, os, sys
from googlecloudsdk.api_lib.app import yaml_parsing
from googlecloudsdk.command_lib.app import source_files_util
root = sys.argv[1]
info = yaml_parsing.ServiceYamlInfo.FromFile(os.path.join(root, "app.yaml"))
print(json.dumps(source_files_util.GetSourceFiles(
    root, info.parsed.skip_files.regex, info.HasExplicitSkipFiles(), info.runtime, info.env, root)))
"""


def gcloud_python(script, *args):
    """Run `script` in a clean interpreter with the Google Cloud CLI's libraries."""
    try:
        root = sdk_root()
    except EmulatorMissing:
        pytest.skip("the Google Cloud CLI is not installed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([f"{root}/lib", f"{root}/lib/third_party"]))
    return subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=300)


def parsed(script, *args):
    result = gcloud_python(script, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def uploads(root):
    """The files `gcloud app deploy` would upload from `root`."""
    return set(parsed(LIST_UPLOADS, str(root)))


@pytest.fixture
def repo(tmp_path):
    """A copy of the checkout (without venvs, git and local state) to break on purpose."""
    skip = shutil.ignore_patterns(".venv*", ".git", "local", "artifacts", ".hypothesis", ".pytest_cache",
                                  "__pycache__", "docs", "index.yaml")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=skip)
    return copy


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


MUST_UPLOAD = {"main.py", "app.yaml", "requirements.txt", "models/__init__.py", "settings.py", "sealing.py",
               "dyncert/__init__.py", "dyncert/context.py", "handlers/routes.py", "handlers/cron.py",
               "templates/base.html", "static/style.css"}


def preflight(*args, root=ROOT, **env):
    """Run `python -m tools.preflight`; returns the CompletedProcess."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("KMS_KEY_NAME", "ALLOW_LOCAL_KEK", "CLOUDSDK_CORE_PROJECT", "PREFLIGHT_SKIP_PROJECT")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "tools.preflight", "--root", str(root), *args], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=300)


def assert_refused(result, *phrases):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing was deployed" in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
