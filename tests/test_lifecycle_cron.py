"""The expiry cron and rotation: expiring identities say whether a next one is staged; stale pending keys."""

import datetime
import json
import logging

from google.cloud import ndb

import models
from tests.harness.pki import pem_pair

UTC = datetime.timezone.utc


def warnings(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "dyncert.expiry" and r.levelno == logging.WARNING]


def test_expiring_identities_say_whether_a_next_one_is_staged(admin, upload, expiring_and_expired, caplog):
    caplog.set_level(logging.WARNING, logger="dyncert.expiry")
    report = admin.get("/cron/expiry").json
    assert [(e["identity"], e["next_staged"]) for e in report["expiring"]] == [("carol/1", False)]
    assert [(e["identity"], e["next_staged"]) for e in report["expired"]] == [("carol/2", False)]
    assert {w["identity"]: w["next_staged"] for w in warnings(caplog)} == {"carol/1": False, "carol/2": False}
    now = datetime.datetime.now(UTC)
    cert, key = pem_pair(now - datetime.timedelta(days=1), now + datetime.timedelta(days=365))
    admin.put_json("/api/v1/employees/carol/addresses/1/next", {"cert": cert, "key": key}, status=201)
    caplog.clear()
    report = admin.get("/cron/expiry").json
    assert [(e["identity"], e["next_staged"]) for e in report["expiring"]] == [("carol/1", True)]
    assert {w["identity"]: w["next_staged"] for w in warnings(caplog)} == {"carol/1": True, "carol/2": False}


def test_pending_keys_older_than_30_days_are_flagged(admin, upload, caplog):
    caplog.set_level(logging.WARNING, logger="dyncert.expiry")
    for address in (2, 3):
        admin.post_json(f"/api/v1/employees/asalieri/addresses/{address}/csr",
                        {"subject": {"CN": f"asalieri-{address}"}}, status=201)
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        entity = models.get_record("asalieri", 2)
        old = datetime.datetime.now(UTC) - datetime.timedelta(days=31)
        entity.pending.created = entity.pending_created = old
        entity.put()
    report = admin.get("/cron/expiry").json
    assert [(e["identity"], e["days_pending"], e["subject"]) for e in report["stale_pending"]] == \
        [("asalieri/2", 31, "CN=asalieri-2")]  # asalieri/3, made today, is not stale
    stale = [w for w in warnings(caplog) if w["event"] == "pending_key_stale"]
    assert [w["identity"] for w in stale] == ["asalieri/2"]
    assert report["expired"] == [] and report["expiring"] == []  # pending-only addresses have no certificate
    assert "PRIVATE KEY" not in caplog.text
