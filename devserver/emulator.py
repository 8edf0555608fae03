"""Start, reset and stop the Cloud Datastore emulator of the Google Cloud CLI."""

import functools
import os
import shutil
import socket
import subprocess
import time
import urllib.request

INSTALL_HINT = """The Cloud Datastore emulator of the Google Cloud CLI was not found.
Install it, then run this again:
  1. Google Cloud CLI: https://cloud.google.com/sdk/docs/install
     (Debian/Ubuntu: apt-get install google-cloud-cli)
  2. The emulator and Java 17+:
     gcloud components install cloud-datastore-emulator
     (Debian/Ubuntu: apt-get install google-cloud-cli-datastore-emulator openjdk-17-jre-headless)
Or point DATASTORE_EMULATOR_HOST at an emulator you already run."""


class EmulatorMissing(RuntimeError):
    """The Google Cloud CLI or its Datastore emulator component is not installed."""


@functools.lru_cache(maxsize=1)
def sdk_root():
    """The Google Cloud CLI's installation root (CLOUDSDK_ROOT overrides)."""
    if os.environ.get("CLOUDSDK_ROOT"):
        return os.environ["CLOUDSDK_ROOT"]
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise EmulatorMissing(INSTALL_HINT)
    out = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"],
                         capture_output=True, text=True, timeout=60)
    root = out.stdout.strip()
    if out.returncode or not root:
        raise EmulatorMissing(INSTALL_HINT)
    return root


def emulator_command():
    """Path of cloud_datastore_emulator, or EmulatorMissing with install steps."""
    path = os.path.join(sdk_root(), "platform", "cloud-datastore-emulator", "cloud_datastore_emulator")
    if not os.path.exists(path) or not shutil.which("java"):
        raise EmulatorMissing(INSTALL_HINT)
    return path


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, method="GET", timeout=2):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


class Emulator:
    """One emulator process on loopback: in memory (`data_dir=None`) or kept on disk."""

    def __init__(self, port=None, data_dir=None, log_path=os.devnull):
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = log_path
        self.process = None

    @property
    def url(self):
        return f"http://{self.host}"

    def start(self, timeout=60):
        """Start the emulator and wait until its health check answers."""
        command = [emulator_command(), "start", "--host=127.0.0.1", f"--port={self.port}"]
        if self.data_dir:
            if not os.path.exists(os.path.join(self.data_dir, "WEB-INF")):
                subprocess.run([emulator_command(), "create", self.data_dir], check=True,
                               capture_output=True)
            command += ["--consistency=1.0", "--store_on_disk=true", self.data_dir]
        else:
            command.append("--testing")  # in memory, strongly consistent
        log = open(self.log_path, "ab")
        # Its own process group, so stopping it also stops the JVM the shell script starts.
        self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The Datastore emulator exited at start (see {self.log_path}).")
            try:
                if _get(self.url + "/", timeout=1).strip() == b"Ok":
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"The Datastore emulator did not answer within {timeout} s.")

    def reset(self):
        """Delete every entity (the emulator's own POST /reset)."""
        _get(self.url + "/reset", method="POST", timeout=10)

    def stop(self):
        """Shut the emulator down (POST /shutdown), then make sure its process group is gone."""
        if self.process is None:
            return
        try:
            _get(self.url + "/shutdown", method="POST", timeout=5)
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, 9)
        self.process = None

    def environ(self, project="dyncert-local"):
        """Environment variables that point google-cloud-ndb at this emulator."""
        return {"DATASTORE_EMULATOR_HOST": self.host, "DATASTORE_PROJECT_ID": project,
                "GOOGLE_CLOUD_PROJECT": project}
