"""Deploying python313 with the package next to the app: pins with markers, and what is not uploaded."""

import pytest

from tests.harness.deploy import GOOD_KMS, MUST_UPLOAD, assert_refused, preflight, uploads, write

pytestmark = pytest.mark.slow  # each test runs the preflight or gcloud's upload listing in a fresh interpreter


def test_the_package_build_file_and_local_venvs_are_not_uploaded(repo):
    for name in (".venv313/lib/site.py", ".mypy_cache/3.11/x.json", "build/lib/dyncert/x.py",
                 "dyncert.egg-info/PKG-INFO", "dist/dyncert-0.1.0-py3-none-any.whl"):
        write(repo / name, "local\n")
    files = uploads(repo)
    assert MUST_UPLOAD <= files and "applog.py" in files
    assert not [f for f in files if f.startswith((".venv313/", ".mypy_cache/", "build/", "dyncert.egg-info/",
                                                  "dist/")) or f == "pyproject.toml"]


@pytest.mark.parametrize("line", ['legacy-cgi==2.6.4; python_version >= "3.13"',
                                  "legacy-cgi==2.6.4 ; python_version>='3.13' and sys_platform == 'linux'"])
def test_a_pinned_requirement_with_a_marker_passes(repo, line):
    with open(repo / "requirements.txt", "a") as f:
        f.write(line + "\n")
    result = preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("line", ['legacy-cgi>=2.6; python_version >= "3.13"', 'legacy-cgi; python_version >= "3.13"',
                                  'legacy-cgi==2.*; python_version >= "3.13"', "legacy-cgi==2.6.4;"])
def test_an_unpinned_requirement_with_a_marker_is_refused(repo, line):
    with open(repo / "requirements.txt", "a") as f:
        f.write(line + "\n")
    assert_refused(preflight("--skip-project", root=repo, KMS_KEY_NAME=GOOD_KMS),
                   "requirements.txt has lines not pinned with `==`", line)
