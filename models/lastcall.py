"""LastCall: the one write after a test call (what happened, never a secret), read back by the list page."""

import datetime
import time

from google.cloud import ndb

from models.entities import UTC


class LastCall(ndb.Model):
    """The last test call of one identity (when and what; never a secret). Id: 'employee/address'."""

    at = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    call = ndb.TextProperty()      # handshake, request or echo
    outcome = ndb.TextProperty()   # "ok" or the error code
    status = ndb.IntegerProperty(indexed=False)  # the HTTP status of a request
    elapsed_ms = ndb.FloatProperty(indexed=False)


RECORD_EVERY = 10.0  # seconds: a repeated, unchanged outcome is not written again sooner (calls stay fast)
_recorded = {}


def record_call(employee, address, call, outcome, status=None, elapsed_ms=None, now=None):
    """Store the last call's result for the list page; unchanged repeats within RECORD_EVERY are skipped."""
    name = f"{employee}/{address}"
    clock = time.monotonic()
    previous = _recorded.get(name)
    if previous and previous[0] == (call, outcome, status) and clock - previous[1] < RECORD_EVERY:
        return False
    LastCall(id=name, at=now or datetime.datetime.now(UTC), call=call, outcome=outcome, status=status,
             elapsed_ms=elapsed_ms).put()
    _recorded[name] = ((call, outcome, status), clock)
    return True


def last_calls(entities):
    """{'employee/address': LastCall} for the given Address entities (one batch read)."""
    keys = [ndb.Key(LastCall, f"{e.key.parent().id()}/{e.key.id()}") for e in entities]
    return {k.id(): c for k, c in zip(keys, ndb.get_multi(keys)) if c is not None}
