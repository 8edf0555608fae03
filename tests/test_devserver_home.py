"""`make run` leaves nothing in the home directory (gunicorn 27's control socket would go to ~/.gunicorn/)."""

import os

import pytest

from devserver.emulator import EmulatorMissing, sdk_root
from tests.harness.makerun import make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def everything_under(path):
    """Every file and folder below `path`, relative to it."""
    return sorted(os.path.relpath(os.path.join(top, name), path)
                  for top, dirs, files in os.walk(path) for name in dirs + files)


@pytest.mark.slow
def test_make_run_writes_nothing_to_home(tmp_path):
    try:
        cloudsdk = sdk_root()
    except EmulatorMissing:
        pytest.skip("the Google Cloud CLI is not installed")
    home, local = tmp_path / "home", tmp_path / "local"
    home.mkdir()
    with make_run(local, "home-token-0123456789-abcdef", HOME=str(home), CLOUDSDK_ROOT=cloudsdk) as run:
        assert run.token in run.output()
    # The Makefile's `gcloud info` writes gcloud's own settings (every gcloud user has them); nothing else may appear.
    left = [p for p in everything_under(home) if p != ".config" and not p.startswith(".config/gcloud")]
    assert left == [], left
    assert os.path.isdir(local / "datastore")  # the twin: the state make run keeps is under LOCAL_DIR


def test_app_yaml_turns_the_control_socket_off():
    """On App Engine nobody talks to gunicorn's control socket, and $HOME is not the app's to write."""
    with open(os.path.join(ROOT, "app.yaml")) as f:
        entrypoint = next(line for line in f if line.startswith("entrypoint:"))
    assert "gunicorn" in entrypoint and "--no-control-socket" in entrypoint
