"""Real loopback TLS peers for tests: a threaded Python ssl server and `openssl s_server`.

Both are context managers listening on a free 127.0.0.1 port (`.host`, `.port`).
"""

import hashlib
import json
import signal
import socket
import struct
import urllib.parse
from http.server import BaseHTTPRequestHandler

from cryptography import x509
from dyncert.identity import display_name

from .loopback import LoopbackTLSServer
from .process import ServerProcess

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


class PythonTLSPeer(LoopbackTLSServer):
    """Threaded loopback ssl server.

    server: tests.harness.pki.Credentials presented by the peer (not needed for reset/silent/garbage).
    client_ca_pem: when given, a client certificate under it is required (CERT_REQUIRED).
    mode: 'https' (JSON who-am-i), 'echo' (line echo), 'reset' (RST after the ClientHello),
          'silent' (accepts TCP, never answers), 'garbage' (answers with non-TLS bytes).
    num_tickets: TLS 1.3 session tickets sent after the handshake (OpenSSL default 2).
    """

    def __init__(self, server=None, client_ca_pem=None, mode="https", min_version=None, max_version=None,
                 num_tickets=None, host="127.0.0.1"):
        assert mode in MODES, mode
        self.mode = mode
        tls = mode in ("https", "echo")
        super().__init__(server if tls else None, [client_ca_pem] if tls and client_ca_pem is not None else (),
                         threaded=True, host=host, min_version=min_version, max_version=max_version,
                         num_tickets=num_tickets)
        self.client_cert_seen = None   # the last client certificate presented: {'subject', 'fingerprint_sha256'}
        self.errors = []               # handshake/server errors, as strings

    @property
    def accepted(self):
        """TCP connections accepted so far."""
        return self.connections

    # -- per connection --

    def serve(self, conn):
        try:
            getattr(self, "_serve_" + self.mode)(conn)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            self.errors.append(f"{type(e).__name__}: {e}")

    def _handshake(self, conn):
        tls = self.track(self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False))
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
        self.stop.wait()

    def _serve_garbage(self, conn):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\nthis is not TLS\n")
        conn.close()


class OpenSSLServer(ServerProcess):
    """`openssl s_server` on 127.0.0.1 (port picked by the OS) requiring a client certificate.

    mode: 'www' (answers GET with a status page) or 'rev' (sends each line back reversed).
    tls: None (1.2 or 1.3), '1.2' or '1.3'. client_ca_pem None: no client certificate requested.
    """

    name = "s_server"
    stop_signal = signal.SIGKILL

    def __init__(self, server, client_ca_pem=None, mode="www", tls=None, num_tickets=None):
        super().__init__(server, client_ca_pem)
        self.args = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", self.cert, "-key", self.key,
                     "-" + mode]
        if self.client_ca is not None:
            # -Verify: a client certificate is required; depth 5 admits intermediates.
            self.args += ["-CAfile", self.client_ca, "-Verify", "5", "-verify_return_error"]
        if tls is not None:
            self.args.append({"1.2": "-tls1_2", "1.3": "-tls1_3"}[tls])
        if num_tickets is not None:
            self.args += ["-num_tickets", str(num_tickets)]

    def command(self):
        return self.args

    def printed_port(self):
        """s_server prints "ACCEPT 127.0.0.1:PORT" once it listens."""
        for line in self.log().splitlines():
            if line.startswith("ACCEPT "):
                return int(line.rsplit(":", 1)[1])
        return None
