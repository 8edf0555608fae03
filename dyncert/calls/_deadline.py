"""The time budget of one call: Timeouts, and the Deadline a watcher thread enforces on its socket."""

import dataclasses
import heapq
import itertools
import os
import socket
import threading
import time

from .. import targets
from ..errors import RemoteError


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for the TCP connect, the TLS handshake, each read, and the whole call (`total`)."""

    connect: float = 5.0
    handshake: float = 10.0
    read: float = 10.0
    total: float = 30.0  # the app's CALL_DEADLINE: a peer dribbling bytes within each read timeout ends here


class Deadline:
    """The end of one call: no socket timeout reaches past it, and a watcher shuts the socket down at it.

    Socket timeouts bound each read, not the sum: a peer sending a byte a second would hold a
    call for as long as it likes. The watcher thread shuts the watched socket down (the fd
    only, never the SSL object) once the deadline passes; the blocked read then fails and the
    call reports `timeout`. A call closes its deadline before it closes or pools its socket.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = self._queued = False

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        """True once the deadline is over (the watcher fired, or the clock says so)."""
        return self.expired or self.remaining() <= 0.002

    def timeout(self, seconds: float) -> float:
        """`seconds`, cut to what is left of the deadline (never 0: that would make a socket non-blocking)."""
        return max(0.001, min(seconds, self.remaining()))

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (until close())."""
        with self._lock:
            self._sock = sock
            queue = not self._queued
            self._queued = True
        if queue:
            _watcher.add(self)
        if self.remaining() <= 0:
            self._expire()

    def close(self) -> None:
        """The call is over: leave its socket alone from now on."""
        with self._lock:
            self._done, self._sock = True, None

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._sock is not None:
                try:
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # the fd; the SSL object stays intact
                except OSError:
                    pass

    def error(self, target: targets.Target, phase: str) -> RemoteError:
        return RemoteError("timeout", f"The call did not finish within the call deadline (CALL_DEADLINE, "
                           f"{self.seconds:g} s), {phase} with {target}.")


class _Watcher:
    """One daemon thread expiring deadlines in time order (started on first use)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child (gunicorn workers): the parent's thread does not exist there.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]]
        self._heap, self._order, self._limit = [], itertools.count(), 256
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dyncert-deadline", daemon=True)
                self._thread.start()
            if len(self._heap) > self._limit:  # finished calls would wait out their time: drop them
                self._heap = [e for e in self._heap if not e[2]._done]
                heapq.heapify(self._heap)
                self._limit = max(256, 2 * len(self._heap))  # amortised: not on every add
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # a new earliest deadline: wake the thread to re-time
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline._expire()


_watcher = _Watcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watcher._reset)
_local = threading.local()  # the deadline of the call running on this thread (pooled connections)
