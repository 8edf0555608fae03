"""One table from error to HTTP status and code; CSRF checked in one place; body caps in one place."""

import ast
import pathlib

import pytest
from google.api_core import exceptions as gexc

import sealing
from dyncert.errors import InputError, RemoteError
from handlers import base
from models.entities import Conflict, NotFound, TooLarge

ROOT = pathlib.Path(__file__).resolve().parent.parent
HANDLERS = sorted((ROOT / "handlers").rglob("*.py"))


@pytest.mark.parametrize("error, status, code", [
    (base.ApiError(429, "rate_limited", "wait"), 429, "rate_limited"),
    (InputError("invalid_key", "bad key"), 400, "invalid_key"),
    (RemoteError("unknown_ca", "who?"), 502, "unknown_ca"),
    (RemoteError("timeout", "slow"), 504, "timeout"),
    (NotFound("nothing"), 404, "not_found"),
    (Conflict("no_next", "stage first"), 409, "no_next"),
    (Conflict("no_previous", "nothing kept"), 409, "no_previous"),
    (Conflict("no_pending", "csr first"), 409, "no_pending"),
    (TooLarge("over 1,048,572 bytes"), 413, "too_large"),
    (sealing.RecordTampered("changed"), 409, "record_tampered"),
    (sealing.UnsealError("no kek"), 500, "key_unavailable"),
    (sealing.SealingUnavailable("kms down"), 503, "sealing_unavailable"),
    (gexc.ServiceUnavailable("down"), 503, "storage_unavailable"),
    (gexc.DeadlineExceeded("slow"), 503, "storage_unavailable"),
])
def test_every_error_family_has_one_row(error, status, code):
    answer = base.http_error(error)
    assert (answer.status, answer.code) == (status, code) and answer.message


def test_a_bug_is_not_in_the_table():
    """The twin: an unexpected exception is no typed answer (webapp2's 500 page, no detail)."""
    assert base.http_error(KeyError("x")) is None and base.http_error(ValueError("x")) is None


def calls_to(name):
    """(file, line) of every call of a method or function `name` in handlers/."""
    found = []
    for path in HANDLERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == name:
                found.append((path.relative_to(ROOT).as_posix(), node.lineno))
    return found


def test_no_handler_maps_errors_to_statuses_itself():
    """409, 5xx: only base.py's table names them (handlers/lifecycle.py and handlers/admin/ had their own)."""
    for path in HANDLERS:
        if path.name in ("base.py", "routes.py"):  # routes: webapp2's fallbacks for what no table row matches
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in (409, 500, 502, 503, 504):
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} answers {node.value} itself")
    assert "Conflict" not in (ROOT / "handlers" / "lifecycle.py").read_text()


def test_csrf_is_checked_in_one_place():
    assert calls_to("check_csrf") == []
    assert [f for f, _ in calls_to("check_request_forgery")] == ["handlers/base.py"]


def test_body_caps_live_in_one_place():
    """Only main.py's middleware measures a request body; handlers never compare its length."""
    for path in HANDLERS:
        text = path.read_text()
        assert "len(self.request.body)" not in text and "_BYTES // 1024" not in text, path
        assert "MAX_FORM_BYTES" not in text and "MAX_BODY_BYTES" not in text, path
        if path.name != "base.py":  # its table answers a store's TooLarge with 413 too; it measures no body
            assert not [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and n.value == 413], path
