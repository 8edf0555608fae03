"""The home page names the runtime app.yaml deploys (read from app.yaml or GAE_RUNTIME, never written twice)."""

import os
import re

from handlers.status import deployed_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def app_yaml_runtime():
    """`runtime:` of the repository's app.yaml, as gcloud reads it (tests/test_appyaml.py checks it parses)."""
    with open(os.path.join(ROOT, "app.yaml")) as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("runtime:"))


def runtime_on_home(client):
    return re.search(r'id="fact-runtime">([^<]*)<', client.get("/").text).group(1)


def test_home_names_app_yamls_runtime(client):
    assert runtime_on_home(client) == app_yaml_runtime()


def test_home_names_the_runtime_app_engine_reports(client, monkeypatch):
    monkeypatch.setenv("GAE_RUNTIME", "python399")
    assert runtime_on_home(client) == "python399"


def test_runtime_follows_app_yaml(tmp_path):
    yaml = tmp_path / "app.yaml"
    yaml.write_text("# a comment naming runtime: python27\nruntime: python314\nentrypoint: gunicorn main:app\n")
    assert deployed_runtime({}, str(yaml)) == "python314"
    assert deployed_runtime({"GAE_RUNTIME": "python313"}, str(yaml)) == "python313"
    assert deployed_runtime({}, str(tmp_path / "missing.yaml")) is None
