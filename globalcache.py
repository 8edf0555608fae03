"""ndb's global cache on Redis (Memorystore on App Engine), when REDIS_CACHE_URL is set."""

import redis
from google.cloud import ndb
from redis.backoff import NoBackoff
from redis.retry import Retry

# Only the identities: they are what every outbound call reads. Sessions, sign-in counters, drafts
# and last-call records are written about as often as they are read, and a write needs Redis up
# (ndb locks the cached copy first), so keeping them out lets sign-in and calls go on while Redis
# is down; only uploads and rotations then wait for it.
CACHED_KINDS = frozenset({"Address"})
# Every cached copy expires, so a Redis full of identities no longer read can evict them (Memorystore's
# default maxmemory-policy, volatile-lru, evicts only keys with a time to live; without one a full
# Redis refuses ndb's write locks, and then every upload and rotation).
CACHE_SECONDS = 3600


def cached(key):
    """ndb global_cache_policy: True for the entity kinds read through Redis."""
    return key.kind in CACHED_KINDS  # ndb hands policies a google.cloud.datastore Key


def cache_seconds(key):
    """ndb global_cache_timeout_policy: how long a cached identity lives in Redis."""
    return CACHE_SECONDS


def ndb_context(client, cache):
    """An ndb context of `client` without the in-memory cache, reading through `cache` (a RedisCache) if any.

    Whatever writes identities (the app, a script, a test) must use the same cache: ndb keeps the
    cached copy right by locking it before each write, which a context without the cache never does.
    """
    if cache is None:
        return client.context(cache_policy=False, global_cache_policy=False)
    return client.context(cache_policy=False, global_cache=cache, global_cache_policy=cached,
                          global_cache_timeout_policy=cache_seconds)


def from_settings(settings):
    """A RedisCache for settings.redis_cache_url, or None when it is unset."""
    if not settings.redis_cache_url:
        return None
    client = redis.Redis.from_url(
        settings.redis_cache_url, socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        # ndb retries its strict writes itself; redis-py's own retries (3, backing off up to 10 s by
        # default) would only stretch each call while Redis is away.
        retry=Retry(NoBackoff(), 0))
    # strict_write (ndb's default): a write whose cached copy cannot be locked fails, rather than
    # leave another instance reading the old identity from Redis. strict_read off: a read that cannot
    # reach Redis goes to Datastore.
    return ndb.RedisCache(client, strict_read=False, strict_write=True)
