"""TLS sessions and keep-alive pools, kept on the SSLContext they belong to.

A context presents exactly one identity (the cache keys it by content), so what is kept on it
can never serve another identity, and a rotated certificate is a new context: nothing carries
over. Python itself refuses a session made under another context (ValueError), a second guard.

A pool pushed out of the LRU (or whose context the cache drops) is closed once nothing holds it
any more, never under a call still using it.
"""

import collections
import queue
import ssl
import threading
import weakref
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
        self.forgotten = False  # the cache let the context go: nothing more is kept on it
        self.sessions: collections.OrderedDict[Hashable, ssl.SSLSession] = collections.OrderedDict()
        self.pools: collections.OrderedDict[Hashable, object] = collections.OrderedDict()


def _of(context: ssl.SSLContext) -> _Reuse:
    state = getattr(context, _ATTRIBUTE, None)
    if state is None:
        with _create_lock:
            state = getattr(context, _ATTRIBUTE, None)
            if state is None:
                state = _Reuse()
                setattr(context, _ATTRIBUTE, state)  # the cache calls forget() when it drops the context
    return state


def _put(mapping: collections.OrderedDict[Hashable, _V], key: Hashable, value: _V) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > MAX_PEERS:
        # Dropped, not closed: a call may hold the pool and not yet its connection (urllib3 raises
        # ClosedPoolError from a closed pool). Its idle connections close when the pool is collected.
        mapping.popitem(last=False)


def _close_idle_when_collected(made: object) -> None:
    """Close a pool's idle connections once nothing holds the pool any more (evicted, or its context dropped).

    A call still holding an evicted pool gives its connection back to the pool's idle queue
    (urllib3's `pool`), so it is closed with the rest, after that call.
    """
    idle = getattr(made, "pool", None)
    if isinstance(idle, queue.Queue):
        weakref.finalize(made, _close_idle, idle)


def _close_idle(idle: "queue.Queue[object]") -> None:
    """Close every connection waiting in a collected pool's queue."""
    while True:
        try:
            connection = idle.get_nowait()
        except queue.Empty:
            return
        if connection is not None and hasattr(connection, "close"):
            connection.close()


def forget(context: ssl.SSLContext) -> None:
    """Let go of what is kept on a context its cache dropped, and keep nothing on it from now on.

    The context and its pools hold each other (a pool opens connections with its context), and a
    pooled SSLSocket's reference to its context is hidden from the cycle collector (CPython's
    _ssl does not traverse it): left alone, a dropped context, its pools and their sockets would
    never be freed. Dropped pools close their idle connections now, or after a call still using one.
    A call that still has the context afterwards gets no pool (None: a connection for that call only).
    """
    state = _of(context)
    with state.lock:
        state.forgotten = True
        state.pools.clear()
        state.sessions.clear()


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
        if state.forgotten:
            return False
        _put(state.sessions, peer, current)
    return True


def pool(context: ssl.SSLContext, peer: Hashable, make: Callable[[], _Pool]) -> _Pool | None:
    """The keep-alive pool for `peer` under `context`, made by `make()` the first time (None: reuse off)."""
    if not ENABLED:
        return None
    state = _of(context)
    with state.lock:
        if state.forgotten:
            return None
        found = state.pools.get(peer)
        if found is not None:
            state.pools.move_to_end(peer)
            return cast(_Pool, found)  # made by `make` for this peer key: callers use one kind of pool per key
        made = make()
        _close_idle_when_collected(made)
        _put(state.pools, peer, made)
        return made

