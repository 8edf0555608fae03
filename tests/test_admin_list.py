"""The identity list: the last test result per identity, and a filter for long lists."""

import pytest
from google.cloud import ndb

import models
from tests.harness.ports import free_port
from tests.harness.forms import csrf, form_fields, key_lines, post_upload


@pytest.fixture(autouse=True)
def fresh_record_throttle():
    """The emulator is emptied per test; the process-wide 'already written' memory must be too."""
    models._recorded.clear()


def rows(admin, query=""):
    html = admin.get("/admin" + (f"?q={query}" if query else "")).html
    return {r["id"]: r for r in html.select("tr.identity")}, html


def test_the_list_shows_the_last_test_result_of_each_identity(admin, upload, demo_peer):
    post_upload(admin, form_fields(upload, address="1", host="127.0.0.1", port=str(demo_peer[0]),
                                   server_hostname="localhost"))
    post_upload(admin, form_fields(upload, address="2", host="127.0.0.1", port=str(free_port()),
                                   server_hostname="localhost"))
    found, _ = rows(admin)
    assert all("not tested yet" in r.select_one("td.last").text for r in found.values())

    admin.post("/admin/employees/asalieri/addresses/1/test", {"csrf_token": csrf(admin)})  # admin page
    admin.post_json("/api/v1/employees/asalieri/addresses/2/request", {"path": "/"}, status=502)  # API
    found, html = rows(admin)
    first, second = found["identity-asalieri-1"].select_one("td.last"), found["identity-asalieri-2"].select_one("td.last")
    assert first.select_one(".ok").text == "ok" and "handshake" in first.text and "just now" in first.text
    assert second.select_one(".error").text == "connection_refused" and "request" in second.text
    assert first.select_one("time")["datetime"].endswith("Z")
    for line in key_lines(upload["key"]):
        assert line not in html.text


def test_the_record_holds_no_secret_and_repeats_are_not_rewritten(ndb_context):
    assert models.record_call("eve", 1, "handshake", "ok", elapsed_ms=1.5)
    assert not models.record_call("eve", 1, "handshake", "ok", elapsed_ms=1.7)  # unchanged, within 10 s
    assert models.record_call("eve", 1, "handshake", "unknown_ca")  # a changed outcome is written at once
    record = ndb.Key(models.LastCall, "eve/1").get()
    assert record.outcome == "unknown_ca" and set(record.to_dict()) == {"at", "call", "outcome", "status",
                                                                         "elapsed_ms"}


def test_the_filter_box_narrows_the_list(admin, upload):
    for address, host in (("1", "alpha.example.com"), ("2", "beta.example.com")):
        post_upload(admin, form_fields(upload, address=address, host=host))
    found, html = rows(admin, "BETA")
    assert list(found) == ["identity-asalieri-2"] and "1 identity of 2 match" in html.text
    assert html.select_one("#q")["value"] == "BETA"
    found, html = rows(admin, "no-such-thing")
    assert found == {} and html.select_one("#no-match")


def test_without_a_filter_every_identity_is_listed(admin, upload):
    """The twin: an empty filter hides nothing."""
    for address in ("1", "2"):
        post_upload(admin, form_fields(upload, address=address))
    found, html = rows(admin)
    assert len(found) == 2 and html.select_one("#q")["value"] == ""
