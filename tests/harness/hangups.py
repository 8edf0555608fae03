"""A TLS 1.3 peer that hangs up after the handshake, and a client socket that forces the order of events.

The race behind issue 23: a TLS 1.3 server without tickets that refuses our certificate without
an alert may close (FIN) or reset (RST) while our write, or our read, is under way. Which one
came first depends on the scheduler. Here each ordering is forced, not waited for: the client
socket (installed with `SSLContext.sslsocket_class`) holds its first write or read until the
kernel shows the peer's FIN or RST arrived (TCP_INFO state), and the server holds its reset
until the client signals it has read.
"""

import hashlib
import socket
import ssl
import struct
import threading
import time

from .loopback import LoopbackTLSServer

# Linux tcp_states.h: a FIN received leaves CLOSE_WAIT; a reset leaves CLOSE.
_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8
_BOUND = 10.0  # seconds an ordering may take to appear before the test fails loudly (never a pass)

# Each ordering: what the server does after the handshake, and what the client waits for.
ORDERINGS = {
    # The peer closes; our write goes out after its FIN (and earns a reset); we read after that reset.
    "close before our write": dict(server="close", before_write=_TCP_CLOSE_WAIT, after_write=_TCP_CLOSE),
    # The peer resets before our write: the write itself fails.
    "reset crossing our write": dict(server="reset", before_write=_TCP_CLOSE),
    # The peer's FIN comes before our write, its reset only after our read returned (EOF).
    "reset after our read": dict(server="close, reset after the read", before_write=_TCP_CLOSE_WAIT,
                                 after_read=_TCP_CLOSE),
    # The peer reads what we sent, then closes; our read sees the FIN.
    "close after our write": dict(server="read, close"),
    # The peer reads what we sent, then resets; our read sees the reset.
    "reset after our write": dict(server="read, reset"),
}
# The accepted twin: the peer answers, then closes; our first read comes before or after its FIN.
ORDERINGS_ANSWERED = {
    "answer": dict(server="answer"),
    "answer, close before our read": dict(server="answer", after_write=_TCP_CLOSE_WAIT),
}
# The handshake call writes nothing: its verdict wait reads first.
HANDSHAKE_ORDERINGS = {
    "close before our read": dict(server="close", before_read=_TCP_CLOSE_WAIT),
    "reset before our read": dict(server="reset", before_read=_TCP_CLOSE),
}


def tcp_state(sock):
    """The kernel's TCP state of `sock` (tcp_info.tcpi_state)."""
    return socket.socket.getsockopt(sock, socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def wait_state(sock, state):
    """Return once `sock` is in TCP `state`; AssertionError after _BOUND (the ordering did not happen)."""
    end = time.monotonic() + _BOUND
    while tcp_state(sock) != state:
        assert time.monotonic() < end, f"TCP state {tcp_state(sock)}, never {state}"
        time.sleep(0.001)


class Choreography:
    """The ordering both sides follow: the client socket class reads it, the server signals through it."""

    def __init__(self, ordering):
        self.steps = dict(ordering)
        self.client_read = threading.Event()
        self.fired = set()

    def once(self, step):
        """The TCP state to wait for at `step`, the first time only (None: no wait)."""
        if step in self.fired or step not in self.steps:
            return None
        self.fired.add(step)
        return self.steps[step]

    def socket_class(self):
        """An SSLSocket subclass that holds its first write and read as the ordering says."""
        plan = self

        class OrderedSocket(ssl.SSLSocket):
            def send(self, data, flags=0):
                if (state := plan.once("before_write")) is not None:
                    wait_state(self, state)
                sent = super().send(data, flags)
                if (state := plan.once("after_write")) is not None:
                    wait_state(self, state)
                return sent

            def read(self, len=1024, buffer=None):
                if (state := plan.once("before_read")) is not None:
                    wait_state(self, state)
                try:
                    return super().read(len, buffer)
                finally:
                    if "after_read" in plan.steps and "after_read" not in plan.fired:
                        plan.fired.add("after_read")
                        plan.client_read.set()
                        wait_state(self, plan.steps["after_read"])

        return OrderedSocket


class HangingUpPeer(LoopbackTLSServer):
    """A TLS 1.3 server without tickets that requests a client certificate and hangs up without an alert
    (as Node.js does when it refuses one) in the way `choreography` says; a `wanted` one gets an answer."""

    def __init__(self, server, ca_pems, wanted_fingerprint, choreography, tickets=0):
        super().__init__(server, ca_pems)  # any certificate under a loaded CA completes the handshake
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.num_tickets = tickets
        self.wanted = wanted_fingerprint
        self.plan = choreography

    def serve(self, conn):
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
            tls.settimeout(_BOUND)
            seen = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
            if seen == self.wanted:
                data = _read_message(tls)
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
                tls.sendall(answer if data.startswith(b"GET ") else data)
                tls.close()
                return
            self._hang_up(tls)
        except OSError:
            conn.close()

    def _hang_up(self, tls):
        how = self.plan.steps["server"]
        if how.startswith("read"):
            _read_message(tls)
        if how == "close, reset after the read":
            socket.socket.shutdown(tls, socket.SHUT_WR)  # the FIN, without close_notify
            self.plan.client_read.wait(_BOUND)
        if how.endswith("reset") or how.endswith("reset after the read"):
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tls.close()  # no alert, no close_notify: just gone


def _read_message(tls):
    """Read one request (to its blank line) or one line."""
    data = b""
    while b"\r\n\r\n" not in data and not data.endswith(b"\n"):
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
