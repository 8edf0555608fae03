"""Browser sessions kept in Datastore (so sign-out ends them) and sign-in attempts per client address."""

import datetime
import hashlib
import hmac
import math
import re
import secrets

from google.api_core import exceptions
from google.cloud import ndb

SESSION_SECONDS = 8 * 3600   # a working day; then sign in again
FREE_ATTEMPTS = 3            # wrong tokens allowed before the first delay
FIRST_DELAY = 10             # seconds after the first failure beyond those; doubled per further one
MAX_DELAY = 15 * 60          # ... up to this many seconds
FORGET_AFTER = 3600          # failures older than this are forgotten
# Wrong credentials counted from all addresses together before every wrong one waits (right ones never do).
GLOBAL_CAP = 100
# A counter idle this long is past any lockout (retry_at <= last + MAX_DELAY) and forgotten anyway.
PURGE_IDLE = max(FORGET_AFTER, MAX_DELAY)
PURGE_BATCH = 500  # counters deleted per Datastore call (a commit takes at most 500 mutations)
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
UTC = datetime.timezone.utc


class Session(ndb.Model):
    """One signed-in browser: its CSRF token, and whom it speaks for."""

    how = ndb.TextProperty()                       # "session" (admin token) or "app_engine" (Google login)
    principal = ndb.TextProperty()
    csrf = ndb.TextProperty()                      # the synchronizer token of this browser's forms
    token_tag = ndb.TextProperty()                 # HMAC(session id, ADMIN_TOKEN): a new token ends it
    expires = ndb.DateTimeProperty(tzinfo=UTC)


class SignInAttempts(ndb.Model):
    """Wrong tokens sent from one client address (its id is a hash of the address)."""

    failures = ndb.IntegerProperty(indexed=False, default=0)
    last = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)  # the daily purge reads every counter: no index
    retry_at = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)


def _now(now):
    return now or datetime.datetime.now(UTC)


def _key(session_id):
    """The record of a session id: stored under its hash, so a Datastore reader cannot replay cookies."""
    return ndb.Key(Session, hashlib.sha256(session_id.encode()).hexdigest())


def _tag(session_id, admin_token):
    return hmac.new(session_id.encode(), admin_token.encode(), hashlib.sha256).hexdigest()


def start(how, principal, admin_token="", now=None):
    """Store a new session; returns (session id for the cookie, record)."""
    session_id = secrets.token_urlsafe(32)
    record = Session(key=_key(session_id), how=how, principal=principal, csrf=secrets.token_urlsafe(32),
                     token_tag=_tag(session_id, admin_token),
                     expires=_now(now) + datetime.timedelta(seconds=SESSION_SECONDS))
    record.put()
    return session_id, record


def lookup(session_id, admin_token="", now=None):
    """The live record of a session cookie value, or None (unknown, ended, expired, or token changed)."""
    if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        return None
    record = _key(session_id).get()
    if record is None:
        return None
    if record.expires is None or record.expires <= _now(now):
        record.key.delete()
        return None
    if record.how == "session" and not hmac.compare_digest(record.token_tag or "", _tag(session_id, admin_token)):
        return None
    return record


def end(session_id):
    """Forget a session: its cookie no longer signs anyone in, wherever it was copied."""
    if isinstance(session_id, str) and SESSION_ID.fullmatch(session_id):
        _key(session_id).delete()


def purge_expired(now=None):
    """Delete the records of sessions past their end (those never looked up again); returns how many."""
    keys = Session.query(Session.expires < _now(now)).fetch(keys_only=True)
    ndb.delete_multi(keys)
    return len(keys)


def purge_idle_attempts(now=None):
    """Delete sign-in counters idle longer than PURGE_IDLE (deleting one changes no answer); returns how many.

    Every counter is read, not queried by `last`: counters written before `last` was indexed are
    invisible to such a query and would stay forever. The scan stays small: the previous run left
    only counters active within PURGE_IDLE of it, so it reads about a day's failing addresses.
    """
    cutoff = _now(now) - datetime.timedelta(seconds=PURGE_IDLE)
    keys = [record.key for record in SignInAttempts.query().iter() if _idle(record, cutoff)]
    for start in range(0, len(keys), PURGE_BATCH):
        ndb.delete_multi(keys[start:start + PURGE_BATCH])
    return len(keys)


def _idle(record, cutoff):
    """True if a counter last mattered before `cutoff` (its last failure, else its lockout's end, else never)."""
    since = record.last or record.retry_at
    return since is None or since < cutoff


def delay_after(failures):
    """Seconds to wait after `failures` wrong tokens in a row: none at first, then doubling."""
    if failures <= FREE_ATTEMPTS:
        return 0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** min(failures - FREE_ATTEMPTS - 1, 20))


def _attempts_key(address):
    return ndb.Key(SignInAttempts, hashlib.sha256((address or "unknown").encode()).hexdigest())


def _everyone_key():
    """The counter of all addresses together: an id no sha256 hex digest can take."""
    return ndb.Key(SignInAttempts, "all-addresses")


def _seconds_until(record, now):
    if record is None or record.retry_at is None:
        return 0
    return max(0, math.ceil((record.retry_at - now).total_seconds()))


def retry_after(address, now=None):
    """Seconds before `address` may try a token again (0: now)."""
    return _seconds_until(_attempts_key(address).get(), _now(now))


def _counted(record, key, now):
    """`record` with one more failure (a fresh one when missing or forgotten)."""
    if record is None or record.last is None or (now - record.last).total_seconds() > FORGET_AFTER:
        record = SignInAttempts(key=key, failures=0)
    record.failures += 1
    record.last = now
    return record


@ndb.transactional()
def failed(address, now=None):
    """Count a wrong token from `address`; returns the seconds it must now wait."""
    now = _now(now)
    record = _counted(_attempts_key(address).get(), _attempts_key(address), now)
    delay = delay_after(record.failures)
    record.retry_at = now + datetime.timedelta(seconds=delay)
    record.put()
    return delay


@ndb.transactional()
def _charge(address, now):
    key, everyone_key = _attempts_key(address), _everyone_key()
    record, everyone = ndb.get_multi([key, everyone_key])
    wait = max(_seconds_until(record, now), _seconds_until(everyone, now))
    if wait:
        return False, wait  # nothing written: a locked address costs one read
    record, everyone = _counted(record, key, now), _counted(everyone, everyone_key, now)
    delay = delay_after(record.failures)
    record.retry_at = now + datetime.timedelta(seconds=delay)
    everyone.retry_at = now + datetime.timedelta(seconds=FORGET_AFTER) if everyone.failures >= GLOBAL_CAP else None
    ndb.put_multi([record, everyone])
    return True, delay


def charge(address, now=None):
    """Check and count one wrong credential from `address` in one transaction: (counted, seconds to wait).

    Not counted (False) while the address or everyone waits: the caller answers 429 and nothing
    about the credential. A transaction that loses every retry to contention counts as waiting.
    """
    now = _now(now)
    try:
        return _charge(address, now)
    except (exceptions.Aborted, exceptions.Conflict):  # contention outlasted ndb's retries
        return False, FIRST_DELAY
