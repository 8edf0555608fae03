"""The app under gunicorn on a free loopback port, as App Engine runs it: for the browser tests and the benchmark."""

import http.client
import os
import subprocess
import sys
import time

from .app import ROOT
from .ports import free_port


class Gunicorn:
    """`gunicorn main:app` (1 worker, `threads` threads) with `env`; ready once /healthz answers; a context manager."""

    def __init__(self, env, log_path, threads=4, extra_args=(), start_timeout=60):
        self.env, self.log_path, self.threads = env, log_path, threads
        self.extra_args, self.start_timeout = list(extra_args), start_timeout
        self.port = free_port()
        self.process = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        args = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{self.port}", "--workers", "1",
                "--threads", str(self.threads), "--no-control-socket", *self.extra_args, "main:app"]  # not in $HOME
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start (see {self.log_path})")
            if self.healthy():
                return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"gunicorn did not answer /healthz (see {self.log_path})")

    def healthy(self):
        """True once GET /healthz answers 200 'ok'."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            return response.status == 200 and response.read() == b"ok"
        except OSError:
            return False
        finally:
            conn.close()

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def app_environ(emulator_environ, admin_token, kek_file):
    """The environment of an app against the test emulator with a local KEK."""
    return dict(os.environ, **emulator_environ, ADMIN_TOKEN=admin_token, PYTHONUNBUFFERED="1",
                LOCAL_KEK_FILE=str(kek_file))
