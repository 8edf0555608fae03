"""Sign-in counters written before the purge's index existed (`last` unindexed) are purged by the cron too.

They are written here as the old code stored them, with the raw Datastore client: every property
excluded from the indexes, so no query on `last` can see them.
"""

import datetime
import hashlib
import os

from google.cloud import datastore as raw_datastore
from google.cloud import ndb

import sessions

UTC = datetime.timezone.utc


def _raw():
    return raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])


def _write_old_counter(address, last, failures=sessions.FREE_ATTEMPTS + 4):
    """A counter in the old format: `last` (and the rest) unindexed."""
    client = _raw()
    key = client.key("SignInAttempts", hashlib.sha256(address.encode()).hexdigest())
    entity = raw_datastore.Entity(key, exclude_from_indexes=("failures", "last", "retry_at"))
    entity.update({"failures": failures, "last": last,
                   "retry_at": last + datetime.timedelta(seconds=sessions.delay_after(failures))})
    client.put(entity)
    return key


def _stored(key):
    return _raw().get(key) is not None


def test_an_old_unindexed_idle_counter_is_purged(admin):
    idle = datetime.datetime.now(UTC) - datetime.timedelta(seconds=sessions.PURGE_IDLE + 60)
    key = _write_old_counter("203.0.113.99", idle)
    client = _raw()
    query = client.query(kind="SignInAttempts")
    query.add_filter(filter=raw_datastore.query.PropertyFilter("last", "<", datetime.datetime.now(UTC)))
    assert list(query.fetch()) == []  # what the indexed purge saw: nothing
    admin.get("/cron/expiry")
    assert not _stored(key)


def test_an_old_counter_inside_its_window_is_kept_and_still_locks_out(admin):
    now = datetime.datetime.now(UTC)
    recent = now - datetime.timedelta(seconds=30)  # inside the lockout it earned
    key = _write_old_counter("192.0.2.77", recent)
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        waits = sessions.retry_after("192.0.2.77", now=now)
    assert waits > 0
    admin.get("/cron/expiry")
    assert _stored(key)
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        assert sessions.retry_after("192.0.2.77", now=now) == waits


def test_a_fresh_counter_inside_its_window_is_kept_beside_a_purged_old_one(admin):
    now = datetime.datetime.now(UTC)
    old = _write_old_counter("203.0.113.98", now - datetime.timedelta(seconds=sessions.PURGE_IDLE + 60))
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        sessions.failed("198.51.100.8", now=now)
        fresh = sessions._attempts_key("198.51.100.8")
    admin.get("/cron/expiry")
    assert not _stored(old)
    assert _stored(_raw().key("SignInAttempts", fresh.id()))
