"""nginx (Debian's package) on a free loopback port with `ssl_verify_client on`, for tests.

It answers every request with the client certificate's subject DN and SHA-1 fingerprint
(nginx's `$ssl_client_fingerprint` is SHA-1), so a test proves which certificate was presented.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pki

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {dir}/server.pem;
    ssl_certificate_key {dir}/server-key.pem;
    ssl_client_certificate {dir}/client-ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 5;
    ssl_protocols {protocols};
    location / {{
      default_type application/json;
      return 200 '{{"subject": "$ssl_client_s_dn", "fingerprint_sha1": "$ssl_client_fingerprint", "protocol": "$ssl_protocol"}}\\n';
    }}
  }}
}}
"""


def available():
    """True when an nginx binary is installed."""
    return os.path.exists(NGINX)


class NginxPeer:
    """nginx requiring a client certificate under `client_ca_pem`, presenting `server`."""

    def __init__(self, server, client_ca_pem, protocols="TLSv1.2 TLSv1.3", connections=64):
        self.host = "127.0.0.1"
        self.dir = tempfile.mkdtemp(prefix="nginx-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        pki.write_files(self.dir, server)
        pki.write_pem(self.dir, "client-ca.pem", client_ca_pem)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(CONFIG.format(dir=self.dir, port=self.port, protocols=protocols, connections=connections))
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen([NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("nginx exited at start: " + self.error_log())
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("nginx did not listen: " + self.error_log())

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""
