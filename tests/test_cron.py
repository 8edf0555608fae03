"""GET /cron/expiry: who may run it, and the structured warnings it logs."""

import json
import logging

import pytest
import webtest

import main
import settings as settings_module

CRON = {"X-Appengine-Cron": "true"}


@pytest.fixture
def on_app_engine(datastore, tmp_path):
    """The app as it runs on App Engine (GAE_ENV=standard), with a local KEK allowed for the test."""
    config = settings_module.from_environ({"GAE_ENV": "standard", "ALLOW_LOCAL_KEK": "1"},
                                          local_kek_file=str(tmp_path / "kek.bin"))
    assert config.on_app_engine
    return webtest.TestApp(main.create_app(config))


@pytest.fixture
def stored(admin, upload, expiring_and_expired):
    """carol/1 expires in 10 days, carol/2 expired 3 days ago, asalieri/1 is fine."""
    admin.put_json("/api/v1/employees/asalieri/addresses/1", upload, status=201)


def test_anonymous_callers_are_refused(client):
    response = client.get("/cron/expiry", status=401)
    assert response.json["error"]["code"] == "unauthenticated"


def test_the_cron_header_is_not_trusted_off_app_engine(client):
    # Anyone can send X-Appengine-Cron to `make run` or gunicorn: only App Engine strips it.
    client.get("/cron/expiry", headers=CRON, status=401)


def test_app_engine_cron_may_run_it(on_app_engine):
    assert on_app_engine.get("/cron/expiry", headers=CRON, status=200).json == {"expired": [], "expiring": [], "stale_pending": []}


def test_on_app_engine_other_callers_still_need_the_header_or_an_admin(on_app_engine):
    on_app_engine.get("/cron/expiry", status=401)
    on_app_engine.get("/cron/expiry", headers={"X-Appengine-Cron": "false"}, status=401)
    signed_in = {"X-Appengine-User-Email": "ops@example.com", "X-Appengine-User-Is-Admin": "0"}
    on_app_engine.get("/cron/expiry", headers=signed_in, status=403)
    signed_in["X-Appengine-User-Is-Admin"] = "1"
    on_app_engine.get("/cron/expiry", headers=signed_in, status=200)


def test_an_admin_may_run_it(admin):
    assert admin.get("/cron/expiry", status=200).json == {"expired": [], "expiring": [], "stale_pending": []}


def warnings_logged(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "dyncert.expiry" and r.levelno == logging.WARNING]


def test_expired_and_expiring_identities_are_logged_as_structured_warnings(admin, stored, caplog):
    caplog.set_level(logging.WARNING, logger="dyncert.expiry")
    report = admin.get("/cron/expiry").json
    assert [e["identity"] for e in report["expired"]] == ["carol/2"]
    assert [e["identity"] for e in report["expiring"]] == ["carol/1"]
    expired, expiring = warnings_logged(caplog)
    assert expired["event"] == "certificate_expired" and expired["identity"] == "carol/2"
    assert expired["days_left"] < 0
    assert expiring["event"] == "certificate_expiring" and expiring["identity"] == "carol/1"
    assert expiring["days_left"] == 10 and expiring["subject"].endswith("CN=carol")
    assert expiring["not_after"].endswith("Z")
    assert "PRIVATE KEY" not in caplog.text


def test_the_warning_window_is_a_parameter(admin, stored, caplog):
    caplog.set_level(logging.WARNING, logger="dyncert.expiry")
    report = admin.get("/cron/expiry?days=5").json
    assert report["expiring"] == [] and [e["identity"] for e in report["expired"]] == ["carol/2"]
    assert [w["event"] for w in warnings_logged(caplog)] == ["certificate_expired"]
    # A malformed window is refused (issue 11: ASCII digits only), not silently replaced.
    assert admin.get("/cron/expiry?days=soon", status=400).json["error"]["code"] == "invalid_request"


def test_valid_identities_log_nothing(admin, upload, caplog):
    caplog.set_level(logging.WARNING, logger="dyncert.expiry")
    admin.put_json("/api/v1/employees/asalieri/addresses/1", upload, status=201)
    assert admin.get("/cron/expiry").json == {"expired": [], "expiring": [], "stale_pending": []}
    assert warnings_logged(caplog) == []


def test_the_admin_list_flags_the_same_identities(admin, stored):
    rows = {r["id"]: r.select_one(".status").text for r in admin.get("/admin").html.select("tr.identity")}
    assert rows["identity-carol-1"] == "expires in 10 days"
    assert rows["identity-carol-2"] == "expired"
    assert rows["identity-asalieri-1"] == "valid"
