"""Start `make run` on free ports for a test, wait for its ready line, stop it with SIGTERM."""

import contextlib
import os
import signal
import subprocess
import threading
import time

from .ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY = "Ctrl-C stops"


class MakeRun:
    """`make -s run` with its own ports, token and state folder; `output()` is what it printed."""

    def __init__(self, local_dir, token, **environ):
        self.port, self.peer, self.echo, self.token = free_port(), free_port(), free_port(), token
        self.open = free_port()
        env = dict(os.environ, PORT=str(self.port), DEMO_PEER_PORT=str(self.peer), DEMO_ECHO_PORT=str(self.echo),
                   DEMO_OPEN_PORT=str(self.open), ADMIN_TOKEN=token, LOCAL_DIR=str(local_dir))
        for name in ("DATASTORE_EMULATOR_HOST", "DATASTORE_PROJECT_ID", "GOOGLE_CLOUD_PROJECT"):
            env.pop(name, None)  # make run starts its own emulator
        env.update(environ)
        self.process = subprocess.Popen(["make", "-s", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.process.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        return "".join(self.lines)

    def wait_ready(self, timeout=240):  # the first run may install the requirements
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None and READY not in self.output():
            time.sleep(0.2)
        assert READY in self.output(), "make run did not report ready:\n" + self.output()

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.reader.join(timeout=10)


@contextlib.contextmanager
def make_run(local_dir, token, **environ):
    """A ready `make run` (with `environ` added to its environment), stopped on exit."""
    run = MakeRun(local_dir, token, **environ)
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop()
