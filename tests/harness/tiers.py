"""The loading tiers (memfd, pipe, tempfile) under test: switch them, and a greeting mTLS server to prove a handshake."""

import hashlib
import queue
import socket
import ssl

from dyncert import context
from dyncert.identity import ClientIdentity

from .loopback import LoopbackTLSServer


def identity_from(leaf):
    """ClientIdentity from a trustme LeafCert."""
    return ClientIdentity.from_pem(b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes())


class Server(LoopbackTLSServer):
    """A TLS server on 127.0.0.1 requiring a client certificate under `client_ca` (trustme CAs), serving at once.

    Each connection gets "hello" and the fingerprint of the client's certificate (or the error) is recorded.
    """

    def __init__(self, server_ca, client_ca, minimum=None, maximum=None):
        super().__init__(server_ca.issue_cert("localhost", "127.0.0.1"), [client_ca.cert_pem.bytes()],
                         min_version=minimum or None, max_version=maximum or None)
        self.results = queue.Queue()
        self.__enter__()

    def serve(self, raw):
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
        self.__exit__()


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
