"""dyncert.leases: the LRU's bound counts idle resources; a leased one is never handed back to be closed."""

from dyncert.leases import LeasedLRU


class Resource:
    def __init__(self, name):
        self.name = name


def test_a_leased_resource_is_not_evicted_and_the_cache_shrinks_back_after():
    cache = LeasedLRU(2)
    busy, closed = cache.acquire("a", lambda: Resource("a"))
    assert closed == []
    for name in "bcd":
        lease, closed = cache.acquire(name, lambda: Resource(name))
        assert busy.value not in closed  # "a" is the least recently used, but in use
        cache.release(lease)
    assert len(cache) == 2  # "a" (leased) and the most recent idle one
    assert cache.release(busy) == []  # within the bound: "a" stays, idle
    lease, _ = cache.acquire("a", lambda: Resource("new a"))
    assert lease is busy and lease.value.name == "a"  # reused, not remade
    cache.release(lease)


def test_more_leased_than_the_bound_then_all_given_back():
    cache = LeasedLRU(2)
    leases = [cache.acquire(name, lambda: Resource(name))[0] for name in "abcde"]
    assert len(cache) == 5  # all in use: none evicted
    closed = [value.name for lease in leases for value in cache.release(lease)]
    assert closed == ["a", "b", "c"] and len(cache) == 2  # the least recent, once idle


def test_the_twin_idle_resources_beyond_the_bound_are_closed_at_once():
    cache = LeasedLRU(1)
    first, _ = cache.acquire("a", lambda: Resource("a"))
    cache.release(first)
    second, closed = cache.acquire("b", lambda: Resource("b"))
    assert closed == [first.value]
    assert cache.drain() == [second.value] and len(cache) == 0
