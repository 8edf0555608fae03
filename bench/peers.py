"""The loopback peers: `openssl s_server -Verify 1 -verify_return_error` (handshakes) and nginx with ssl_verify_client (HTTP keep-alive).

Ports and the nginx config come from the test harness (tests/harness/), so both run the same server.
"""

import os
import re
import resource
import signal
import subprocess
import time

from tests.harness import nginx
from tests.harness.ports import free_port, wait_listening

TLS_FLAGS = {None: [], "1.2": ["-tls1_2"], "1.3": ["-tls1_3"]}


class _Process:
    """A peer subprocess, stopped on exit."""

    process = None
    host = "127.0.0.1"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""


class SServer(_Process):
    """`openssl s_server -www -Verify 1 -verify_return_error` on a free loopback port: a client certificate is required."""

    def __init__(self, pki, tls=None):
        self.port = free_port()
        self.log_path = pki.path("s_server.log")
        self.args = ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-www",
                     "-cert", pki.path("peer.pem"), "-key", pki.path("peer-key.pem"),
                     "-CAfile", pki.path("ca.pem"), "-Verify", "1", "-verify_return_error"] + TLS_FLAGS[tls]

    def start(self):
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.process, "openssl s_server", self.log)
        return self


class Nginx(_Process):
    """nginx with `ssl_verify_client on` answering every request with a small JSON body (keep-alive)."""

    def __init__(self, pki, tls=None):
        self.port = free_port()
        self.dir = pki.path("nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "error.log")
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(nginx.config(self.dir, self.port, pki.path("peer.pem"), pki.path("peer-key.pem"),
                                 pki.path("ca.pem"), tls, log_level="warn"))

    @staticmethod
    def available():
        return nginx.available()

    def start(self):
        self.process = subprocess.Popen([nginx.NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf")],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.process, "nginx", self.log)
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: nginx's own way
        super().stop()


def s_time(pki, port, seconds):
    """`openssl s_time -new` for `seconds`: (handshakes, wall seconds, client CPU seconds)."""
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(int(seconds)),
            "-cert", pki.path("client.pem"), "-key", pki.path("client-key.pem"), "-CAfile", pki.path("ca.pem")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^(\d+) connections in [\d.]+s", out.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"openssl s_time printed no count: {out.stdout[-500:]} {out.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(match.group(1)), wall, cpu
