"""The demo mTLS peer: HTTPS that names the client certificate, a line-echo port, and an open port.

Run: python -m devserver.demo_peer --pki DIR --https-port N --echo-port M [--open-port K]
"""

import argparse
import hashlib
import json
import re
import socket
import socketserver
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from dyncert.identity import display_name

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
    subject = display_name(x509.load_der_x509_certificate(der).subject)
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


# The open port: a DEMO CONVENIENCE so that a newcomer's own certificate can succeed end to end.
# Python's ssl verifies every client certificate it requests (no verify callback), so this port
# uses pyOpenSSL, whose callback accepts any chain. OpenSSL still checks the handshake's
# CertificateVerify, so a client gets in only if it holds the key of the certificate it shows.
OPEN_NOTE = ("demo convenience: this port accepts ANY client certificate; it checked only that the "
             "client holds the certificate's private key (TLS CertificateVerify), not who issued it")
OPEN_IO_SECONDS = 10  # a silent client is dropped after this


def open_context(pki_dir):
    """A pyOpenSSL server context that requests a client certificate and accepts any."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(f"{pki_dir}/peer.pem")
    ctx.use_privatekey_file(f"{pki_dir}/peer.pem")
    # A certificate is required; its chain is not checked (the callback says yes to every one).
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda conn, cert, errno, depth, ok: True)
    # With client certificates OpenSSL refuses to resume a session unless this is set ("session id
    # context uninitialized"), and dyncert's clients do resume.
    ctx.set_session_id(b"dyncert-demo-open")
    return ctx


def _read_request(conn):
    """The request head (and body, up to MAX_LINE) from a pyOpenSSL connection."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_LINE:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.rpartition(" ")[0] or "/"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = min(int(value.strip()), MAX_LINE)
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    return method, path, body[:length]


def describe_open_client(conn):
    """What the open port saw: the client certificate's subject, issuer and SHA-256 fingerprint."""
    cert = conn.get_peer_certificate(as_cryptography=True)
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"demo": OPEN_NOTE, "subject": display_name(cert.subject), "issuer": display_name(cert.issuer),
            "fingerprint_sha256": hashlib.sha256(der).hexdigest(), "tls_version": conn.get_protocol_version_name()}


class OpenPeer:
    """HTTPS that accepts any client certificate and answers with what it saw, as JSON."""

    def __init__(self, address, context):
        self.context = context
        self.socket = socket.create_server(address)
        self.server_address = self.socket.getsockname()
        self._stopped = threading.Event()

    def serve_forever(self):
        while not self._stopped.is_set():
            try:
                client, peer = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client, peer), daemon=True).start()

    def _handle(self, client, peer):
        # SO_RCVTIMEO/SO_SNDTIMEO keep the socket blocking for pyOpenSSL and still bound every wait.
        timeout = struct.pack("ll", OPEN_IO_SECONDS, 0)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        conn = SSL.Connection(self.context, client)
        conn.set_accept_state()
        try:
            conn.do_handshake()
            method, path, body = _read_request(conn)
            data = dict(describe_open_client(conn), method=method, path=path,
                        body=body.decode("utf-8", "replace"))
            payload = (json.dumps(data, indent=1) + "\n").encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
                         + (b"" if method == "HEAD" else payload))
            conn.shutdown()
        except (SSL.Error, OSError, ValueError) as e:
            print(f"demo-peer open: connection from {peer[0]} failed: {e!r}", flush=True)
        finally:
            client.close()

    def shutdown(self):
        self._stopped.set()
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def server_close(self):
        self.socket.close()


def serve(pki_dir, https_port, echo_port, host="127.0.0.1", open_port=None):
    """Serve the ports until interrupted; returns the servers, started in threads."""
    ctx = server_context(pki_dir)
    servers = [TLSHTTPServer((host, https_port), ctx), TLSEchoServer((host, echo_port), ctx)]
    if open_port is not None:
        servers.append(OpenPeer((host, open_port), open_context(pki_dir)))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pki", required=True)
    parser.add_argument("--https-port", type=int, required=True)
    parser.add_argument("--echo-port", type=int, required=True)
    parser.add_argument("--open-port", type=int, help="HTTPS that accepts any client certificate (demo only)")
    args = parser.parse_args()
    serve(args.pki, args.https_port, args.echo_port, open_port=args.open_port)
    print(f"demo-peer: https on 127.0.0.1:{args.https_port}, echo on 127.0.0.1:{args.echo_port}"
          + (f", open (any client certificate) on 127.0.0.1:{args.open_port}" if args.open_port else ""), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
