"""The demo mTLS peer: HTTPS that names the client certificate, and a line-echo port.

Run: python -m devserver.demo_peer --pki DIR --https-port N --echo-port M
"""

import argparse
import hashlib
import json
import re
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509

MAX_LINE = 64 * 1024
HTTP_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/1\.[01]\r?\n$")


def server_context(pki_dir):
    """A server context that requires a client certificate issued under the demo CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(f"{pki_dir}/peer.pem")
    ctx.load_verify_locations(f"{pki_dir}/ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def describe_client(tls_socket):
    """Subject and SHA-256 fingerprint of the certificate the client presented."""
    der = tls_socket.getpeercert(binary_form=True)
    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {"subject": subject, "fingerprint_sha256": hashlib.sha256(der).hexdigest()}


class WhoAmI(BaseHTTPRequestHandler):
    """Answer every request with the client certificate it came with, as JSON."""

    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_LINE)).decode("utf-8", "replace") if length else ""
        data = dict(describe_client(self.connection), method=self.command, path=self.path,
                    body=body, tls_version=self.connection.version())
        payload = (json.dumps(data, indent=1) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def parse_request(self):
        # A line that is not an HTTP request line is echoed back, so one port serves both demos.
        if not HTTP_REQUEST_LINE.match(self.raw_requestline):
            self.wfile.write(self.raw_requestline)
            self.close_connection = True
            return False
        return super().parse_request()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, fmt, *args):
        print("demo-peer https:", fmt % args, flush=True)


class HandshakeInThread:
    """A threading server mixin: the TLS handshake runs in the request thread, not the accept loop."""

    daemon_threads = True
    allow_reuse_address = True

    def finish_request(self, request, client_address):
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(f"demo-peer: handshake from {client_address[0]} failed: {e}", flush=True)
            return
        super().finish_request(request, client_address)


class TLSHTTPServer(HandshakeInThread, ThreadingHTTPServer):
    """HTTPS that names the client certificate."""

    def __init__(self, address, context):
        super().__init__(address, WhoAmI)
        self.context = context


class LineEcho(socketserver.StreamRequestHandler):
    """Read one line and write it back (the old App Engine sample's echo server)."""

    def handle(self):
        line = self.rfile.readline(MAX_LINE)
        self.wfile.write(line)


class TLSEchoServer(HandshakeInThread, socketserver.ThreadingTCPServer):
    """A line-echo server that requires a client certificate."""

    def __init__(self, address, context):
        super().__init__(address, LineEcho)
        self.context = context


def serve(pki_dir, https_port, echo_port, host="127.0.0.1"):
    """Serve both ports until interrupted; returns the two servers when started in threads."""
    ctx = server_context(pki_dir)
    servers = [TLSHTTPServer((host, https_port), ctx), TLSEchoServer((host, echo_port), ctx)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pki", required=True)
    parser.add_argument("--https-port", type=int, required=True)
    parser.add_argument("--echo-port", type=int, required=True)
    args = parser.parse_args()
    serve(args.pki, args.https_port, args.echo_port)
    print(f"demo-peer: https on 127.0.0.1:{args.https_port}, echo on 127.0.0.1:{args.echo_port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
