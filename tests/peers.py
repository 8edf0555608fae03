"""Real loopback TLS peers for tests: a threaded Python ssl server and `openssl s_server`.

Both are context managers listening on a free 127.0.0.1 port (`.host`, `.port`).
"""

import hashlib
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

from cryptography import x509
from dyncert.identity import display_name

from tests import pki

MAX_LINE = 64 * 1024
MODES = ("https", "echo", "reset", "silent", "garbage")


def describe_peer_cert(tls_socket):
    """{'subject', 'fingerprint_sha256'} of the certificate the client presented, or None."""
    der = tls_socket.getpeercert(binary_form=True)
    if der is None:
        return None
    return {"subject": display_name(x509.load_der_x509_certificate(der).subject),
            "fingerprint_sha256": hashlib.sha256(der).hexdigest()}


class _WhoAmI(BaseHTTPRequestHandler):
    """Answer any request with the client certificate and the request, as JSON (keep-alive capable)."""

    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        if self.path.startswith("/redirect?to="):  # /redirect?to=URL: a 302 to URL (a partner sending us on)
            self.send_response(302)
            self.send_header("Location", urllib.parse.unquote(self.path.split("=", 1)[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/bytes/"):  # /bytes/N: N bytes of 'x', to test truncation
            payload = b"x" * int(self.path.split("/")[2])
        else:
            seen = describe_peer_cert(self.connection) or {}  # this connection's, not the last one seen
            payload = json.dumps({"subject": seen.get("subject"), "fingerprint_sha256": seen.get("fingerprint_sha256"),
                                  "method": self.command, "path": self.path, "body": body,
                                  "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, fmt, *args):
        pass


class PythonTLSPeer:
    """Threaded loopback ssl server.

    server: tests.pki.Credentials presented by the peer (not needed for reset/silent/garbage).
    client_ca_pem: when given, a client certificate under it is required (CERT_REQUIRED).
    mode: 'https' (JSON who-am-i), 'echo' (line echo), 'reset' (RST after the ClientHello),
          'silent' (accepts TCP, never answers), 'garbage' (answers with non-TLS bytes).
    num_tickets: TLS 1.3 session tickets sent after the handshake (OpenSSL default 2).
    """

    def __init__(self, server=None, client_ca_pem=None, mode="https", min_version=None, max_version=None,
                 num_tickets=None, host="127.0.0.1"):
        assert mode in MODES, mode
        self.mode, self.host = mode, host
        self.context = None
        if mode in ("https", "echo"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.leaf.configure_cert(ctx)
            if client_ca_pem is not None:
                ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
                ctx.verify_mode = ssl.CERT_REQUIRED
            if min_version is not None:
                ctx.minimum_version = min_version
            if max_version is not None:
                ctx.maximum_version = max_version
            if num_tickets is not None:
                ctx.num_tickets = num_tickets
            self.context = ctx
        self.client_cert_seen = None   # the last client certificate presented: {'subject', 'fingerprint_sha256'}
        self.errors = []               # handshake/server errors, as strings
        self.accepted = 0
        self._conns, self._lock = [], threading.Lock()
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    # -- lifecycle --

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except OSError:
                    pass

    def _accept_loop(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.accepted += 1
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- per connection --

    def _serve(self, conn):
        try:
            getattr(self, "_serve_" + self.mode)(conn)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            self.errors.append(f"{type(e).__name__}: {e}")

    def _handshake(self, conn):
        tls = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._conns.append(tls)
        tls.settimeout(30)
        tls.do_handshake()
        seen = describe_peer_cert(tls)
        if seen is not None:
            self.client_cert_seen = seen
        return tls

    def _serve_https(self, conn):
        tls = self._handshake(conn)
        _WhoAmI(tls, tls.getpeername(), self)

    def _serve_echo(self, conn):
        tls = self._handshake(conn)
        with tls.makefile("rb") as reader:
            while True:
                line = reader.readline(MAX_LINE)
                if not line:
                    break
                tls.sendall(line)
        tls.close()

    def _serve_reset(self, conn):
        conn.recv(4096)  # the ClientHello: the reset then lands in the middle of the handshake
        # SO_LINGER on, timeout 0: close() sends RST instead of FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def _serve_silent(self, conn):
        self._stop.wait()

    def _serve_garbage(self, conn):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\nthis is not TLS\n")
        conn.close()


class OpenSSLServer:
    """`openssl s_server` on 127.0.0.1 (port picked by the OS) requiring a client certificate.

    mode: 'www' (answers GET with a status page) or 'rev' (sends each line back reversed).
    tls: None (1.2 or 1.3), '1.2' or '1.3'. client_ca_pem None: no client certificate requested.
    """

    def __init__(self, server, client_ca_pem=None, mode="www", tls=None, num_tickets=None):
        self.host = "127.0.0.1"
        self.port = None
        self._dir = tempfile.mkdtemp(prefix="peer-")
        cert, key = pki.write_files(self._dir, server)
        self.args = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key,
                     "-" + mode]
        if client_ca_pem is not None:
            ca = pki.write_pem(self._dir, "client-ca.pem", client_ca_pem)
            # -Verify: a client certificate is required; depth 5 admits intermediates.
            self.args += ["-CAfile", ca, "-Verify", "5", "-verify_return_error"]
        if tls is not None:
            self.args.append({"1.2": "-tls1_2", "1.3": "-tls1_3"}[tls])
        if num_tickets is not None:
            self.args += ["-num_tickets", str(num_tickets)]
        self.log_path = os.path.join(self._dir, "s_server.log")
        self._proc = None

    def __enter__(self):
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.port is None:  # s_server prints "ACCEPT 127.0.0.1:PORT" once it listens
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"openssl s_server did not start: {self.log()}")
            for line in self.log().splitlines():
                if line.startswith("ACCEPT "):
                    self.port = int(line.rsplit(":", 1)[1])
            time.sleep(0.02)
        socket.create_connection((self.host, self.port), timeout=5).close()  # really accepting
        return self

    def __exit__(self, *exc):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log(self):
        """What s_server printed so far."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def refused_port():
    """A loopback port with nothing listening (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
