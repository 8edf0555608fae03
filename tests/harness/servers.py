"""Real Debian servers for the outbound-call tests: stunnel4 in front of a plain HTTP backend, and Apache httpd.

Both require a client certificate under `client_ca_pem`, listen on a free 127.0.0.1 port and
are context managers; a plain HTTP backend answers 200 with the path (stunnel).
"""

import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from . import pki

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
APACHE = shutil.which("apache2") or ("/usr/sbin/apache2" if os.path.exists("/usr/sbin/apache2") else None)
APACHE_MODULES = "/usr/lib/apache2/modules"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, process, what, log, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start: {log()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen: {log()}")


class _Plain(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"plain backend saw {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


class _Server:
    """Common lifecycle: a temp dir with the server's files, a process, its log."""

    name = "server"

    def __init__(self, server, client_ca_pem):
        self.host, self.port = "127.0.0.1", free_port()
        self.dir = tempfile.mkdtemp(prefix=f"{self.name}-")
        self.cert, self.key = pki.write_files(self.dir, server)
        self.ca = pki.write_pem(self.dir, "client-ca.pem", client_ca_pem)
        self.log_path = os.path.join(self.dir, "server.log")
        self.process = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def start(self, args):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.process, self.name, self.log)

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Stunnel(_Server):
    """stunnel4 (verifyChain, requireCert) forwarding to a plain HTTP backend in this process."""

    name = "stunnel"

    def __init__(self, server, client_ca_pem, tls="1.3"):
        super().__init__(server, client_ca_pem)
        self.tls = tls
        self.backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)

    def __enter__(self):
        threading.Thread(target=self.backend.serve_forever, daemon=True).start()
        config = os.path.join(self.dir, "stunnel.conf")
        with open(config, "w") as f:
            f.write(f"foreground = yes\npid =\noutput = {self.log_path}\ndebug = 4\n[mtls]\n"
                    f"accept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{self.backend.server_address[1]}\n"
                    f"cert = {self.cert}\nkey = {self.key}\nCAfile = {self.ca}\n"
                    f"verifyChain = yes\nrequireCert = yes\n"
                    f"sslVersionMin = TLSv{self.tls}\nsslVersionMax = TLSv{self.tls}\n")
        self.start([STUNNEL, config])
        return self

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.backend.shutdown()
        self.backend.server_close()


class Apache(_Server):
    """Apache httpd with mod_ssl, `SSLVerifyClient require` and the given SSLVerifyDepth (Apache's default: 1)."""

    name = "apache"

    def __init__(self, server, client_ca_pem, verify_depth=1, tls="1.3"):
        super().__init__(server, client_ca_pem)
        self.verify_depth, self.tls = verify_depth, tls

    def __enter__(self):
        config = os.path.join(self.dir, "httpd.conf")
        with open(config, "w") as f:
            f.write(f"""
LoadModule mpm_event_module {APACHE_MODULES}/mod_mpm_event.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
LoadModule ssl_module {APACHE_MODULES}/mod_ssl.so
Listen 127.0.0.1:{self.port}
PidFile {self.dir}/httpd.pid
ErrorLog {self.log_path}
LogLevel info
ServerName localhost
DocumentRoot {self.dir}
Mutex file:{self.dir} default
DefaultRuntimeDir {self.dir}
<VirtualHost 127.0.0.1:{self.port}>
  SSLEngine on
  SSLProtocol -all +TLSv{self.tls}
  SSLCertificateFile {self.cert}
  SSLCertificateKeyFile {self.key}
  SSLCACertificateFile {self.ca}
  SSLVerifyClient require
  SSLVerifyDepth {self.verify_depth}
</VirtualHost>
""")
        self.start([APACHE, "-f", config, "-X"])  # -X: one foreground process, no detaching
        return self
