"""An LRU of closable resources whose bound counts idle ones only: nothing is closed under a user.

A resource is leased for the length of a request and given back after it; eviction takes the
least recently used resource nobody is leasing. While more than `maxsize` are leased at once the
cache holds them all, and shrinks back to `maxsize` as they are given back. The caller closes what
acquire/release hand back (outside the lock, and awaited when closing is a coroutine).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Lease(Generic[_V]):
    """One cached resource and how many requests are using it now."""

    def __init__(self, value: _V) -> None:
        self.value = value
        self.users = 0


class LeasedLRU(Generic[_K, _V]):
    """Resources by key, at most `maxsize` of them idle; a leased one is never evicted."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[_K, Lease[_V]] = collections.OrderedDict()

    def acquire(self, key: _K, make: Callable[[], _V]) -> tuple[Lease[_V], list[_V]]:
        """Lease the resource for `key` (made by make() the first time), and the idle ones evicted to close."""
        with self._lock:
            lease = self._entries.get(key)
            if lease is None:
                lease = self._entries[key] = Lease(make())
            else:
                self._entries.move_to_end(key)
            lease.users += 1
            return lease, self._shrink()

    def release(self, lease: Lease[_V]) -> list[_V]:
        """Give a lease back (once per acquire); the idle resources now beyond the bound, to close."""
        with self._lock:
            lease.users -= 1
            return self._shrink()

    def drain(self) -> list[_V]:
        """Forget every resource, leased or not; return them to be closed (the owner is closing)."""
        with self._lock:
            values = [lease.value for lease in self._entries.values()]
            self._entries.clear()
            return values

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _shrink(self) -> list[_V]:
        """Evict least recently used idle resources while over the bound (the lock is held)."""
        evicted: list[_V] = []
        if len(self._entries) <= self.maxsize:
            return evicted
        for key in [key for key, lease in self._entries.items() if lease.users == 0]:
            if len(self._entries) <= self.maxsize:
                break
            evicted.append(self._entries.pop(key).value)
        return evicted
