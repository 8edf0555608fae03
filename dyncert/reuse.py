"""TLS sessions and keep-alive pools, kept on the SSLContext they belong to.

A context presents exactly one identity (the cache keys it by content), so what is kept on it
can never serve another identity, and a rotated certificate is a new context: nothing carries
over. Python itself refuses a session made under another context (ValueError), a second guard.
"""

import collections
import ssl
import threading
from collections.abc import Callable, Hashable
from typing import TypeVar, cast

MAX_PEERS = 16  # peers whose session and pool are kept per context (LRU), i.e. per identity
ENABLED = True  # benchmarks switch reuse off to measure full handshakes and fresh connections

_ATTRIBUTE = "_dyncert_reuse"
_create_lock = threading.Lock()
_V = TypeVar("_V")
_Pool = TypeVar("_Pool")


class _Reuse:
    """The sessions and pools of one context, by peer key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: collections.OrderedDict[Hashable, ssl.SSLSession] = collections.OrderedDict()
        self.pools: collections.OrderedDict[Hashable, object] = collections.OrderedDict()
        self.released = False  # the context cache dropped this context: keep nothing more on it


def _of(context: ssl.SSLContext) -> _Reuse:
    state = getattr(context, _ATTRIBUTE, None)
    if state is None:
        with _create_lock:
            state = getattr(context, _ATTRIBUTE, None)
            if state is None:
                state = _Reuse()
                setattr(context, _ATTRIBUTE, state)  # dies with the context when the cache drops it
    return state


def _put(mapping: collections.OrderedDict[Hashable, _V], key: Hashable, value: _V) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > MAX_PEERS:
        _, dropped = mapping.popitem(last=False)
        if hasattr(dropped, "close"):
            dropped.close()


def session(context: ssl.SSLContext, peer: Hashable) -> ssl.SSLSession | None:
    """The TLS session to offer `peer` under `context`, or None."""
    if not ENABLED:
        return None
    state = _of(context)
    with state.lock:
        return state.sessions.get(peer)


def remember(context: ssl.SSLContext, peer: Hashable, sock: ssl.SSLSocket,
             session: ssl.SSLSession | None = None) -> bool:
    """Keep the session of a finished exchange with `peer` for the next connection; True if kept.

    `session`: sock's session if the caller has just read it (reading `sock.session` copies the
    whole session, ~0.1 ms); None reads it here.
    """
    if not ENABLED:
        return False
    current = session if session is not None else sock.session
    # TLS 1.3 sessions are resumable only once the server's ticket has been read.
    if current is None or (sock.version() == "TLSv1.3" and not current.has_ticket):
        return False
    state = _of(context)
    with state.lock:
        if state.released:
            return False
        _put(state.sessions, peer, current)
    return True


def pool(context: ssl.SSLContext, peer: Hashable, make: Callable[[], _Pool]) -> _Pool | None:
    """The keep-alive pool for `peer` under `context`, made by `make()` the first time (None: reuse off)."""
    if not ENABLED:
        return None
    state = _of(context)
    with state.lock:
        if state.released:
            return None  # the caller uses a pool of its own for this call and closes it
        found = state.pools.get(peer)
        if found is not None:
            state.pools.move_to_end(peer)
            return cast(_Pool, found)  # made by `make` for this peer key: callers use one kind of pool per key
        made = make()
        _put(state.pools, peer, made)
        return made


def release(context: ssl.SSLContext) -> None:
    """Close the pools and forget the sessions kept on `context`, which its cache has dropped.

    They must go now: a session and a pooled socket each point back at their context, so the
    context would never be freed while they live, and each dropped identity would keep its
    connections open for good. A thread still calling with the context gets one-off connections.
    """
    state = _of(context)  # made if need be: a context dropped before its first call stays released too
    with state.lock:
        state.released = True
        pools = list(state.pools.values())
        state.pools.clear()
        state.sessions.clear()
    for dropped in pools:
        if hasattr(dropped, "close"):
            dropped.close()
