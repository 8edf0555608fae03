"""A TLS server on 127.0.0.1 in a thread, for tests whose peer must misbehave in one exact way."""

import socket
import ssl
import threading


class LoopbackTLSServer:
    """Accepts on a free loopback port and hands each connection to `serve(conn)`; a context manager.

    `client_ca_pems`: when given, a client certificate under one of them is required.
    `threaded`: serve each connection in its own thread (a peer that dribbles must not block the next).
    """

    def __init__(self, server, client_ca_pems=(), threaded=False):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.leaf.configure_cert(self.ctx)
        for pem in client_ca_pems:
            self.ctx.load_verify_locations(cadata=pem.decode())
        if client_ca_pems:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.threaded = threaded
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
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
