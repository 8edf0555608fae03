"""Load with rotation: 16 clients, 20 identities, 2,000 calls through a real threaded server while
certificates rotate. No wrong identity is ever presented, no 5xx, and fds and memory stay flat.
"""

import hashlib
import http.client
import json
import os
import random
import socketserver
import ssl
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

import main
from tests.harness import pki

CLIENTS = 16
IDENTITIES = 20
CALLS = 2000
ROUNDS = 6          # certificates per identity: the first plus up to 5 rotations
# Bounds, measured after a warm-up (imports, the first contexts, gRPC channels are one-time costs):
FD_SLACK = 20        # idle keep-alive/gRPC sockets may come and go; a leak of one per call would be ~2,000
RSS_SLACK_MB = 100   # the context cache is LRU-bounded; a leak of a context or key per call would be far more


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class WhoAmI(BaseHTTPRequestHandler):
    """Answers with the fingerprint of the client certificate of *this* connection."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        der = self.connection.getpeercert(binary_form=True)
        body = json.dumps({"fingerprint_sha256": hashlib.sha256(der).hexdigest() if der else None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


class TLSWhoAmI(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, server, ca_pem):
        super().__init__(("127.0.0.1", 0), WhoAmI)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.leaf.configure_cert(ctx)
        ctx.load_verify_locations(cadata=ca_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx = ctx

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            request.do_handshake()
        except (OSError, ValueError):
            return
        super().finish_request(request, client_address)


def process_figures():
    with open("/proc/self/status") as f:
        rss_kb = int(next(line for line in f if line.startswith("VmRSS")).split()[1])
    return len(os.listdir("/proc/self/fd")), rss_kb / 1024


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@pytest.mark.slow
def test_load_with_rotation(datastore, settings):
    world = pki.make_pki("load")
    server_creds = pki.server_cert(world.root)
    certs = [[pki.client_cert(world.clients_ca, f"user{i}-r{r}") for r in range(ROUNDS)] for i in range(IDENTITIES)]
    fingerprints = [[c.fingerprint_sha256 for c in row] for row in certs]
    owner = {fp: i for i, row in enumerate(fingerprints) for fp in row}

    peer = TLSWhoAmI(server_creds, world.ca_pem)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    app = main.create_app(settings)
    httpd = make_server("127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    auth = {"Authorization": f"Bearer {settings.admin_token}", "Content-Type": "application/json"}

    def send(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, auth)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def store(i, r):
        creds = certs[i][r]
        status, body = send("PUT", f"/api/v1/employees/user{i}/addresses/1", {
            "cert": creds.cert_pem.decode(), "key": creds.key_pem.decode(), "ca_certs": world.ca_pem.decode(),
            "host": "127.0.0.1", "port": peer.server_address[1], "server_hostname": "localhost"})
        assert status in (200, 201), body[:300]

    def call(i):
        started = time.monotonic()
        status, body = send("POST", f"/api/v1/employees/user{i}/addresses/1/request",
                            {"method": "POST", "path": "/whoami", "body": "x"})
        ended = time.monotonic()
        presented = None
        if status == 200:
            reply = json.loads(body)
            presented = json.loads(reply["body"])["fingerprint_sha256"]
            assert reply["tls"]["client_fingerprint_sha256"] == presented
        return dict(identity=i, start=started, end=ended, status=status, presented=presented, body=body[:300])

    try:
        for i in range(IDENTITIES):
            store(i, 0)
        for i in list(range(IDENTITIES)) * 3:  # warm-up: contexts built, connections and caches settled
            assert call(i)["status"] == 200
        fds_before, rss_before = process_figures()

        # rotations[i] = [(started, committed), ...] for rounds 1..; round 0 was committed before any call.
        rotations = [[(0.0, 0.0)] for _ in range(IDENTITIES)]
        done = threading.Event()

        def rotator():
            for r in range(1, ROUNDS):
                for i in random.sample(range(IDENTITIES), IDENTITIES):
                    if done.is_set():
                        return
                    started = time.monotonic()
                    store(i, r)
                    rotations[i].append((started, time.monotonic()))
                    time.sleep(0.01)

        results, lock = [], threading.Lock()
        remaining = iter(range(CALLS))

        def client():
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                result = call(random.randrange(IDENTITIES))
                with lock:
                    results.append(result)

        rotating = threading.Thread(target=rotator)
        workers = [threading.Thread(target=client) for _ in range(CLIENTS)]
        began = time.monotonic()
        rotating.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - began
        done.set()
        rotating.join()
        fds_after, rss_after = process_figures()
    finally:
        httpd.shutdown()
        httpd.server_close()
        peer.shutdown()
        peer.server_close()

    assert len(results) == CALLS
    failures = [r for r in results if r["status"] != 200]
    assert not failures, failures[:3]  # zero 5xx (and zero 4xx)
    wrong, stale = [], []
    for r in results:
        i, fp = r["identity"], r["presented"]
        if owner.get(fp) != i:
            wrong.append(r)
            continue
        presented_round = fingerprints[i].index(fp)
        # Every rotation committed before this call started must be visible...
        at_least = max(n for n, (_, committed) in enumerate(rotations[i]) if committed <= r["start"])
        # ...and no certificate can be presented before its upload began.
        at_most = max(n for n, (started, _) in enumerate(rotations[i]) if started <= r["end"])
        if not at_least <= presented_round <= at_most:
            stale.append((r, presented_round, at_least, at_most))
    rotated = sum(len(x) - 1 for x in rotations)
    latencies = [(r["end"] - r["start"]) * 1000 for r in results]
    print(f"\nload: {CALLS} calls, {CLIENTS} clients, {IDENTITIES} identities, {rotated} rotations in "
          f"{elapsed:.1f} s = {CALLS / elapsed:.0f} calls/s; latency p50 {statistics.median(latencies):.1f} ms, "
          f"p95 {percentile(latencies, 95):.1f} ms, max {max(latencies):.1f} ms; "
          f"fds {fds_before} -> {fds_after}; RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    os.makedirs("artifacts", exist_ok=True)
    with open(os.path.join("artifacts", "load-figures.json"), "w") as f:
        json.dump({"calls": CALLS, "clients": CLIENTS, "identities": IDENTITIES, "rotations": rotated,
                   "seconds": round(elapsed, 2), "calls_per_s": round(CALLS / elapsed, 1),
                   "p50_ms": round(statistics.median(latencies), 1), "p95_ms": round(percentile(latencies, 95), 1),
                   "fds_before": fds_before, "fds_after": fds_after,
                   "rss_mb_before": round(rss_before), "rss_mb_after": round(rss_after),
                   "wrong_identity": len(wrong), "stale": len(stale)}, f, indent=1)
    assert not wrong, wrong[:3]
    assert not stale, stale[:3]
    assert rotated >= IDENTITIES  # rotation really overlapped the calls
    assert fds_after <= fds_before + FD_SLACK, (fds_before, fds_after)
    assert rss_after - rss_before <= RSS_SLACK_MB, (rss_before, rss_after)
