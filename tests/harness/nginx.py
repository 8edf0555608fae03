"""nginx (Debian's package) on a free loopback port with `ssl_verify_client on`, for tests and the benchmark.

It answers every request with the client certificate's subject DN and SHA-1 fingerprint
(nginx's `$ssl_client_fingerprint` is SHA-1), so a test proves which certificate was presented.
"""

import os
import shutil
import signal

from .ports import free_port
from .process import ServerProcess

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROTOCOLS = {None: "TLSv1.2 TLSv1.3", "1.2": "TLSv1.2", "1.3": "TLSv1.3"}

CONFIG = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log {log_level};
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {client_ca};
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


def config(directory, port, cert, key, client_ca, tls=None, log_level="info", connections=256):
    """The nginx.conf text: files by path, `tls` None (1.2 and 1.3), '1.2' or '1.3'; logs in `directory`."""
    return CONFIG.format(dir=directory, port=port, cert=cert, key=key, client_ca=client_ca,
                         protocols=PROTOCOLS[tls], log_level=log_level, connections=connections)


def available():
    """True when an nginx binary is installed."""
    return os.path.exists(NGINX)


class NginxPeer(ServerProcess):
    """nginx requiring a client certificate under `client_ca_pem`, presenting `server`."""

    name = "nginx"
    binary = NGINX
    stop_signal = signal.SIGQUIT  # graceful: nginx's own way

    def __init__(self, server, client_ca_pem, tls=None, connections=256, rewrite=None):
        super().__init__(server, client_ca_pem)
        self.tls = tls
        self.connections = connections  # a load of many identities needs more than the default
        self.rewrite = rewrite  # text -> text: a test's own directives (refusals at the HTTP layer, keep-alive)
        self.log_path = os.path.join(self.dir, "error.log")

    def command(self):
        self.port = free_port()
        text = config(self.dir, self.port, self.cert, self.key, self.client_ca, self.tls, connections=self.connections)
        conf = self.write("nginx.conf", self.rewrite(text) if self.rewrite else text, 0o644)
        return [NGINX, "-p", self.dir, "-c", conf]

    def error_log(self):
        """The end of nginx's error log."""
        return self.log()[-2000:]
