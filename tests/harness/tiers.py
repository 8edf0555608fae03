"""The loading tiers (memfd, pipe, tempfile) under test: switch them, and a greeting mTLS server to prove a handshake."""

import hashlib
import queue
import socket
import ssl
import threading

from dyncert import context
from dyncert.identity import ClientIdentity


def identity_from(leaf):
    """ClientIdentity from a trustme LeafCert."""
    return ClientIdentity.from_pem(b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes())


class Server:
    """TLS server on 127.0.0.1 in a thread; records the client's certificate fingerprint or the error."""

    def __init__(self, server_ca, client_ca, minimum=None, maximum=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(self.ctx)
        server_ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.ctx)
        if minimum:
            self.ctx.minimum_version = minimum
        if maximum:
            self.ctx.maximum_version = maximum
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.results = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    der = tls.getpeercert(binary_form=True)
                    tls.sendall(b"hello\n")
                    self.results.put(hashlib.sha256(der).hexdigest())
            except (OSError, ssl.SSLError) as e:
                self.results.put(e)
            finally:
                raw.close()

    def result(self):
        """What the server saw for the last connection."""
        return self.results.get(timeout=10)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux; close() alone does not
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=10)


def talk(ctx, port, hostname="localhost"):
    """Handshake and read the greeting (a TLS 1.3 server's rejection of our cert arrives on read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=hostname) as tls:
            data = tls.recv(100)
            if not data:
                raise ConnectionResetError("server closed without greeting")
            return data, tls.version()


def force_tier(monkeypatch, name):
    """Switch the loading tiers so that `name` ('memfd', 'pipe' or 'tempfile') is the first that applies."""
    monkeypatch.setattr(context, "MEMFD_ENABLED", name == "memfd")
    monkeypatch.setattr(context, "PIPE_ENABLED", name in ("memfd", "pipe"))
