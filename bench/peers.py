"""The loopback peers: `openssl s_server -Verify 1 -verify_return_error` (handshakes) and nginx with ssl_verify_client (HTTP keep-alive)."""

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TLS_FLAGS = {None: [], "1.2": ["-tls1_2"], "1.3": ["-tls1_3"]}
NGINX_PROTOCOLS = {None: "TLSv1.2 TLSv1.3", "1.2": "TLSv1.2", "1.3": "TLSv1.3"}

NGINX_CONFIG = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/peer.pem;
    ssl_certificate_key {pki}/peer-key.pem;
    ssl_client_certificate {pki}/ca.pem;
    ssl_verify_client on;
    ssl_protocols {protocols};
    location / {{
      default_type application/json;
      return 200 '{{"subject": "$ssl_client_s_dn", "protocol": "$ssl_protocol"}}\\n';
    }}
  }}
}}
"""


def free_port():
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port, process, what, log, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start: {log()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen: {log()}")


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
        _wait_listening(self.port, self.process, "openssl s_server", self.log)
        return self


class Nginx(_Process):
    """nginx with `ssl_verify_client on` answering every request with a small JSON body (keep-alive)."""

    def __init__(self, pki, tls=None):
        self.port = free_port()
        self.dir = pki.path("nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "error.log")
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(NGINX_CONFIG.format(dir=self.dir, pki=pki.directory, port=self.port,
                                        protocols=NGINX_PROTOCOLS[tls]))

    @staticmethod
    def available():
        return os.path.exists(NGINX)

    def start(self):
        self.process = subprocess.Popen([NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf")],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        _wait_listening(self.port, self.process, "nginx", self.log)
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
