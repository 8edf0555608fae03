"""The preflight's pin check and environment markers (legacy-cgi is needed on Python >= 3.13 only)."""

import pytest

from test_deploy import GOOD_KMS, assert_refused, preflight, repo  # noqa: F401 (repo is a fixture)


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
