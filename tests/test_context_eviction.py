"""A context the cache drops lets go of its kept-alive connections and sessions: open files stay bounded
by the cache's size, however many identities come and go (every rotation is a new context).

Before: a dropped context stayed alive (its TLS session and pooled sockets point back at it) with its
connections open, one more file descriptor per identity ever called, whatever DYNCERT_CACHE_SIZE said.
"""

import os

import pytest

from tests.harness import nginx
from tests.harness import pki
from dyncert import calls, context, reuse
from dyncert.identity import ClientIdentity
from dyncert.targets import Target

pytestmark = [pytest.mark.interp, pytest.mark.skipif(not nginx.available(), reason="nginx is not installed")]
KEPT, IDENTITIES = 2, 12


def open_files():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("eviction")
    with nginx.NginxPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        yield p, Target("127.0.0.1", peer.port, "localhost")


def identities(p, count):
    return [ClientIdentity.from_pem(c.cert_pem, c.key_pem)
            for c in (pki.client_cert(p.clients_ca, f"evict{i}") for i in range(count))]


def test_contexts_the_cache_drops_close_their_connections(world):
    p, target = world
    cache = context.ContextCache(KEPT)
    made = identities(p, IDENTITIES)
    before = open_files()
    for identity in made:
        calls.https_request(cache.client_context(identity, p.ca_pem), target, identity.fingerprint_sha256)
    # The contexts still cached keep one pooled connection each; the dropped ones none.
    assert open_files() - before <= KEPT * calls.POOL_SIZE
    assert cache.stats()["evictions"] == IDENTITIES - KEPT


def test_a_context_still_cached_keeps_its_connection_and_session(world):
    """The twin: what the cache keeps goes on reusing its kept-alive connection."""
    p, target = world
    cache = context.ContextCache(KEPT)
    [identity] = identities(p, 1)
    ctx = cache.client_context(identity, p.ca_pem)
    calls.https_request(ctx, target, identity.fingerprint_sha256)
    before = open_files()
    for _ in range(5):
        assert cache.client_context(identity, p.ca_pem) is ctx
        calls.https_request(ctx, target, identity.fingerprint_sha256)
    assert open_files() == before  # the same connection each time
    assert reuse.pool(ctx, (target, calls.Timeouts()), lambda: None) is not None


def test_a_dropped_context_still_in_use_makes_no_pool_that_outlives_the_call(world):
    """A thread holding a context the cache dropped meanwhile still calls: with a one-off connection."""
    p, target = world
    cache = context.ContextCache(1)
    first, second = identities(p, 2)
    held = cache.client_context(first, p.ca_pem)
    cache.client_context(second, p.ca_pem)  # drops `held`
    before = open_files()
    result = calls.https_request(held, target, first.fingerprint_sha256)
    assert result["status"] == 200
    assert open_files() == before
