"""app.yaml validates with the Google Cloud CLI's own parser, the one `gcloud app deploy` uses."""

import os
import subprocess
import sys

import pytest

from devserver.emulator import EmulatorMissing, sdk_root

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PARSE = """
import sys
from googlecloudsdk.api_lib.app import yaml_parsing
info = yaml_parsing.ServiceYamlInfo.FromFile(sys.argv[1])
print(info.runtime)
print(" ".join(h.url + ":" + str(h.login) for h in info.parsed.handlers))
"""


def parse_with_gcloud(path):
    """Run gcloud's ServiceYamlInfo.FromFile on `path` in a clean interpreter."""
    try:
        root = sdk_root()
    except EmulatorMissing:
        pytest.skip("the Google Cloud CLI is not installed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([f"{root}/lib", f"{root}/lib/third_party"]))
    return subprocess.run([sys.executable, "-c", PARSE, path], env=env, capture_output=True,
                          text=True, timeout=120)


def test_app_yaml_is_valid_for_python313():
    result = parse_with_gcloud(os.path.join(ROOT, "app.yaml"))
    assert result.returncode == 0, result.stderr
    runtime, handlers = result.stdout.splitlines()
    assert runtime == "python313"
    assert "/api/.*:admin" in handlers.split()


def test_libraries_key_is_rejected_so_the_check_can_fail(tmp_path):
    with open(os.path.join(ROOT, "app.yaml")) as f:
        text = f.read()
    bad = tmp_path / "app.yaml"
    bad.write_text(text + "\nlibraries:\n- name: ssl\n  version: latest\n")
    result = parse_with_gcloud(str(bad))
    assert result.returncode != 0
    assert "only supported by the \"python27\" runtime" in result.stderr


def test_app_yaml_keeps_the_seed_settings():
    with open(os.path.join(ROOT, "app.yaml")) as f:
        text = f.read()
    assert "PYTHONHTTPSVERIFY: 1" in text
    assert "app_engine_apis: true" in text
    assert "max_instances:" in text
