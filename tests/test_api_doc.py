"""docs/API.md is complete: every route of handlers/routes.py and every error code the code can raise."""

import os
import re

import pytest

from dyncert import errors
from handlers import routes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {"tests", "bench", "docs", "templates", "static", "local", "node_modules"}

# The ways the app names an error code in its source: raised, answered, or mapped in a table.
CODE_PATTERNS = [
    re.compile(r'ApiError\(\s*\d{3},\s*"([a-z0-9_]+)"'),
    re.compile(r'error_response\(\s*\d{3},\s*"([a-z0-9_]+)"'),
    re.compile(r'_json_error\(\s*\w+,\s*\d{3},\s*"([a-z0-9_]+)"'),
    re.compile(r'Conflict\(\s*"([a-z0-9_]+)"'),
    re.compile(r'\(\s*[\w.()]+,\s*\d{3},\s*"([a-z0-9_]+)"\s*\)'),  # a row of handlers/base.py's ERROR_TABLE
]


@pytest.fixture(scope="module")
def doc():
    with open(os.path.join(ROOT, "docs", "API.md"), encoding="utf-8") as f:
        return f.read()


def app_sources():
    """Every Python file of the app and the library (not the tests, benchmarks or venvs)."""
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def raised_codes():
    """The error codes named in the source, plus dyncert's whole family."""
    codes = set(errors.INPUT_CODES) | set(errors.REMOTE_CODES)
    for path in app_sources():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for pattern in CODE_PATTERNS:
            codes.update(pattern.findall(text))
    return codes


def documented_path(template):
    """A webapp2 route template in the doc's words: <employee:[^/]+> -> {employee}."""
    return re.sub(r"<(\w+):[^>]*>", r"{\1}", template)


def test_the_scan_finds_the_codes_it_must():
    # The twin of the completeness test: the scan sees codes of every kind of source.
    codes = raised_codes()
    assert {"csrf_failed", "record_tampered", "no_next", "not_found", "unknown_ca", "invalid_key"} <= codes


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: r.template)
def test_every_route_is_documented(doc, route):
    path = documented_path(route.template)
    identity = documented_path(routes.IDENTITY)
    if path.startswith(identity + "/"):
        assert f"...{path[len(identity):]}`" in doc, f"{path} is not in docs/API.md"
    else:
        assert f"{path}`" in doc or f"{path} " in doc, f"{path} is not in docs/API.md"


def test_every_error_code_is_in_the_table(doc):
    table = set(re.findall(r"^\| \d{3} \| `([a-z0-9_]+)` \|", doc, re.M))
    missing = sorted(raised_codes() - table)
    assert not missing, f"codes missing from docs/API.md's error table: {missing}"


def test_the_table_names_no_code_the_code_cannot_raise(doc):
    table = set(re.findall(r"^\| \d{3} \| `([a-z0-9_]+)` \|", doc, re.M))
    assert table, "docs/API.md has no error table"
    # invalid_kms_key / signer_* come with the signer; unknown extra rows would mislead a reader.
    stale = sorted(table - raised_codes())
    assert not stale, f"docs/API.md lists codes nothing raises: {stale}"


def test_readme_links_the_reference():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "(docs/API.md)" in readme
    assert "kept beside the repository" not in readme
