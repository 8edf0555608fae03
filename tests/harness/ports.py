"""Loopback ports: a free one, one where nothing answers, and waiting until a process listens."""

import socket
import time

# The one definition: `make run` picks its ports with it too.
from devserver.emulator import free_port

__all__ = ["free_port", "refused_port", "wait_listening"]


def refused_port():
    """A loopback port with nothing listening (bound then closed): connecting is refused."""
    return free_port()


def wait_listening(port, process, what, log, seconds=20, host="127.0.0.1"):
    """Return once `host:port` accepts; RuntimeError with `log()` if `process` exits or never listens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start: {log()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen within {seconds} s: {log()[-2000:]}")
