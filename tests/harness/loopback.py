"""The base of every in-process TLS peer: a server on loopback in a thread (subprocess servers: process.py)."""

import socket
import ssl
import threading


class LoopbackTLSServer:
    """Accepts on a free loopback port and hands each connection to `serve(conn)`; a context manager.

    `server`: the tests.harness.pki.Credentials (or trustme LeafCert) it presents; None for a peer that
    never completes TLS (`self.ctx` is None then). `client_ca_pems`: when given, a client certificate
    under one of them is required. `threaded`: serve each connection in its own thread (a peer that
    dribbles must not block the next). `host`: 127.0.0.1 or ::1.
    """

    def __init__(self, server=None, client_ca_pems=(), threaded=False, host="127.0.0.1", min_version=None,
                 max_version=None, num_tickets=None):
        self.ctx = None
        if server is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            getattr(server, "leaf", server).configure_cert(self.ctx)
            for pem in client_ca_pems:
                self.ctx.load_verify_locations(cadata=pem.decode() if isinstance(pem, bytes) else pem)
            if client_ca_pems:
                self.ctx.verify_mode = ssl.CERT_REQUIRED
            if min_version is not None:
                self.ctx.minimum_version = min_version
            if max_version is not None:
                self.ctx.maximum_version = max_version
            if num_tickets is not None:
                self.ctx.num_tickets = num_tickets
        self.host, self.threaded = host, threaded
        self.connections = 0  # accepted so far (counted before `serve` runs)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family, backlog=16)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self._conns, self._lock = [], threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except OSError:
                    pass

    def track(self, sock):
        """Close `sock` (a connection or its TLS wrapper) when the server stops."""
        with self._lock:
            self._conns.append(sock)
        return sock

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            self.track(conn)
            if self.threaded:
                threading.Thread(target=self.serve, args=(conn,), daemon=True).start()
            else:
                self.serve(conn)

    def serve(self, conn):
        """Handle one accepted TCP connection (subclasses)."""
        raise NotImplementedError


class CountingListener:
    """A loopback TCP port that counts connections and closes each at once."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()
