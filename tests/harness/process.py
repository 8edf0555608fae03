"""The base of every real TLS server a test starts: a process in a private directory with its files and log.

Each server presents `server` (a tests.harness.pki.Credentials) and, when `client_ca_pem` is given,
requires a client certificate under it. Subclasses write their config and return the command.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from . import pki

START_TIMEOUT = 60  # the Java source launcher compiles first: seconds, on a busy 2-core machine


class ServerProcess:
    """A server on 127.0.0.1: `start()` launches, `ready()` waits for the port, `stop()` ends it; a context manager."""

    name = "server"
    binary = None
    stop_signal = signal.SIGTERM

    def __init__(self, server, client_ca_pem=None):
        self.host = "127.0.0.1"
        self.dir = tempfile.mkdtemp(prefix=f"{self.name}-")
        self.cert, self.key = pki.write_files(self.dir, server)
        self.client_ca = pki.write_pem(self.dir, "client-ca.pem", client_ca_pem) if client_ca_pem else None
        self.log_path = os.path.join(self.dir, "server.log")
        self.port = None
        self.process = None

    @classmethod
    def available(cls):
        """None when the binary is there, else the reason to skip."""
        if cls.binary and os.path.exists(cls.binary):
            return None
        return f"{cls.name}: not installed"

    def command(self):
        """The argv to run (sets `self.port` unless the server prints it)."""
        raise NotImplementedError

    def start(self):
        """Launch without waiting (servers start side by side); `ready()` waits."""
        self.started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        return self

    def ready(self):
        """Wait until the port accepts; RuntimeError with the log if the server died or never listened."""
        deadline = self.started + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start: {self.log()[-1500:]}")
            if self.port is None:
                self.port = self.printed_port()
            if self.port is not None:
                with socket.socket() as s:
                    if s.connect_ex((self.host, self.port)) == 0:
                        return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen within {START_TIMEOUT} s: {self.log()[-1500:]}")

    def printed_port(self):
        """Servers that pick their own port print 'LISTEN <port>'."""
        for line in self.log().splitlines():
            if line.startswith("LISTEN "):
                return int(line.split()[1])
        return None

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        self.start()
        try:
            return self.ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        """What the server wrote to its log so far."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for_log(self, text, seconds=5):
        """True once `text` is in the log (a server may write it just after answering)."""
        deadline = time.monotonic() + seconds
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def write(self, name, text, mode=0o600):
        """Write a config file into the server's directory; return its path."""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path
