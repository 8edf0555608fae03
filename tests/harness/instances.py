"""Several app instances (gunicorn processes on their own ports) on one Datastore, as App Engine runs them.

`Instances` starts them with one environment (emulator, admin token, session secret, KEK file and,
when given, REDIS_CACHE_URL); `RoundRobin` is a browser behind a load balancer: one cookie jar, each
request sent to the next instance in turn (or to the one a test names).
"""

import os
import re
import secrets
import signal
import subprocess
import sys
import time

import requests

from .ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class AppInstance:
    """One `gunicorn main:app` process (1 worker, `threads` threads) on a free loopback port."""

    def __init__(self, env, log_path, threads=8):
        self.port = free_port()
        self.log_path = log_path
        args = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{self.port}", "--threads", str(threads),
                "--log-level", "warning", "--graceful-timeout", "5", "--no-control-socket", "main:app"]  # not in $HOME
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=log)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start: {self.log()}")
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer /healthz: {self.log()}")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def fds(self):
        """Open file descriptors of the worker processes (gunicorn's arbiter and its worker)."""
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in self.pids())

    def rss_kib(self):
        """Resident memory of the arbiter and its worker, in KiB."""
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/status") as f:
                total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        return total

    def pids(self):
        children = []
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            pass
        return [self.process.pid] + children


class Instances:
    """`count` app instances sharing one environment; a context manager that stops them all."""

    def __init__(self, emulator, workdir, count=3, token=None, redis_url=None, threads=8, extra_env=None,
                 kek_file=None):
        self.token = token or secrets.token_urlsafe(24)
        kek_file = kek_file or os.path.join(workdir, "kek", "kek.bin")
        self.env = dict(os.environ, **emulator.environ(), ADMIN_TOKEN=self.token,
                        # One secret and one KEK for all: App Engine gives every instance the same env.
                        SESSION_SECRET=secrets.token_urlsafe(32), LOCAL_KEK_FILE=kek_file,
                        PYTHONPATH=ROOT, **(extra_env or {}))
        self.env.pop("REDIS_CACHE_URL", None)
        if redis_url:
            self.env["REDIS_CACHE_URL"] = redis_url
        self.workdir, self.count, self.threads = workdir, count, threads
        self.apps = []

    def __enter__(self):
        try:
            self.apps = [AppInstance(self.env, os.path.join(self.workdir, f"instance-{i}.log"), self.threads)
                         for i in range(self.count)]
            for app in self.apps:
                app.wait_ready()
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for app in self.apps:
            app.stop()

    def __len__(self):
        return len(self.apps)

    def __getitem__(self, i):
        return self.apps[i]

    def browser(self):
        return RoundRobin(self)

    def logs(self):
        """Everything the instances logged (gunicorn's and the app's lines, Python warnings)."""
        text = []
        for app in self.apps:
            with open(app.log_path, errors="replace") as f:
                text.append(f.read())
        return "\n".join(text)


class RoundRobin:
    """One client (one cookie jar: every instance is 127.0.0.1) whose requests go to the instances in turn."""

    def __init__(self, instances, bearer=None):
        self.instances = instances
        self.session = requests.Session()
        self.turn = 0
        self.last = None  # the index of the instance that answered the last request
        if bearer:
            self.session.headers["Authorization"] = f"Bearer {bearer}"

    def request(self, method, path, on=None, **kwargs):
        """Send to instance `on`, or to the next one in turn; redirects are not followed."""
        if on is None:
            on, self.turn = self.turn, (self.turn + 1) % len(self.instances)
        self.last = on
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.instances[on].base + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def close(self):
        self.session.close()


def identity_body(creds, peer, ca_pem):
    """A PUT body for `creds` (tests.pki.Credentials) calling `peer` (host, port; certificate for localhost)."""
    return dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=ca_pem.decode(),
                host=peer.host, port=peer.port, server_hostname="localhost")


def leaf_sha1(creds):
    """nginx's $ssl_client_fingerprint (SHA-1 of the leaf DER) for `creds`."""
    import hashlib
    import ssl
    return hashlib.sha1(ssl.PEM_cert_to_DER_cert(creds.leaf_pem.decode())).hexdigest()


def peer_saw(browser, path, on=None):
    """One `.../request` call: (what the app says it presented (SHA-256), what nginx saw (SHA-1))."""
    import json
    answer = browser.post(path + "/request", json={"path": "/"}, on=on)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["ok"] and reply["status"] == 200, reply
    return reply["tls"]["client_fingerprint_sha256"], json.loads(reply["body"])["fingerprint_sha1"]


def roomy_nginx(server, client_ca_pem):
    """The harness's nginx sized for three instances' pools (4 idle connections per identity each):
    with too few worker_connections nginx closes idle kept-alive connections to make room, and a call
    that picked one up at that moment fails with connection_reset."""
    from tests.harness import nginx
    return nginx.NginxPeer(server, client_ca_pem, connections=4096, rewrite=lambda text: text.replace(
        "access_log off;", "access_log off;\n  keepalive_timeout 600s;", 1))


URL = "/api/v1/employees/asalieri/addresses/1"


def form_token(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(browser, token):
    """Sign-in page from one instance, the form posted to the next: the session cookie is set."""
    page = browser.get("/signin")
    assert page.status_code == 200
    answer = browser.post("/signin", data={"token": token, "csrf_token": form_token(page), "next": "/admin"})
    assert answer.status_code == 302, answer.text
    return answer


def session_csrf(browser, on=None):
    """The session's CSRF token, as a same-origin script reads it from any authenticated answer."""
    answer = browser.get("/api/v1/identities", on=on)
    assert answer.status_code == 200, answer.text
    return answer.headers["X-CSRF-Token"]


def every_instance_presents(admin, apps, creds):
    """The next call through each instance presents `creds`, as the peer itself reports."""
    for i in range(len(apps)):
        presented, seen = peer_saw(admin, URL, on=i)
        assert (presented, seen) == (creds.fingerprint_sha256, leaf_sha1(creds)), f"instance {i}"
