"""The daily cron deletes sign-in counters idle longer than the longest lockout (and the forgetting window)."""

import datetime

from google.cloud import ndb

import sessions

UTC = datetime.timezone.utc
ATTACKERS = [f"203.0.113.{n}" for n in range(1, 26)]


def _context():
    return ndb.Client().context(cache_policy=False, global_cache_policy=False)


def _counters():
    with _context():
        return {k.id() for k in sessions.SignInAttempts.query().fetch(keys_only=True)}


def test_idle_counters_of_many_addresses_are_deleted_by_the_cron(admin):
    now = datetime.datetime.now(UTC)
    idle = now - datetime.timedelta(seconds=max(sessions.FORGET_AFTER, sessions.MAX_DELAY) + 60)
    with _context():
        for address in ATTACKERS:  # an attacker spread over many addresses: one counter each
            for _ in range(sessions.FREE_ATTEMPTS + 2):
                sessions.failed(address, now=idle)
        sessions.failed("198.51.100.7", now=now)  # still counting, still locked out soon
    assert len(_counters()) == len(ATTACKERS) + 1
    admin.get("/cron/expiry")
    with _context():
        kept = sessions._attempts_key("198.51.100.7").id()
    assert _counters() == {kept}


def test_counters_still_in_a_lockout_or_the_forgetting_window_are_kept(admin):
    now = datetime.datetime.now(UTC)
    locked = now - datetime.timedelta(seconds=60)  # inside the longest delay
    remembered = now - datetime.timedelta(seconds=sessions.FORGET_AFTER - 120)  # lockout over, failures remembered
    with _context():
        for _ in range(sessions.FREE_ATTEMPTS + 6):
            sessions.failed("192.0.2.1", now=locked)
        for _ in range(sessions.FREE_ATTEMPTS + 2):
            sessions.failed("192.0.2.2", now=remembered)
        waits = sessions.retry_after("192.0.2.1", now=now)
    assert waits > 0
    admin.get("/cron/expiry")
    assert len(_counters()) == 2
    with _context():
        assert sessions.retry_after("192.0.2.1", now=now) == waits  # the lockout stands
        # the remembered failures still count: the next wrong token waits longer than a fresh address would
        assert sessions.failed("192.0.2.2", now=now) > sessions.delay_after(1)
