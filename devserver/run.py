"""`make run`: emulator, demo PKI, demo peer, KMS stand-in, the app under gunicorn, demo data; Ctrl-C stops all.

Honours PORT (default 8080), ADMIN_TOKEN (else the one kept in local/admin-token, made on the
first run), DATASTORE_EMULATOR_HOST (use that emulator instead of starting one), DEMO_PEER_PORT,
DEMO_ECHO_PORT, DEMO_OPEN_PORT and LOCAL_DIR (where state, demo keys and logs go; default ./local).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import settings
from devserver import demo_pki
from devserver.emulator import Emulator, EmulatorMissing, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.environ.get("LOCAL_DIR") or os.path.join(ROOT, "local")
RUN_ID_HEADER = "X-Dyncert-Run"  # /healthz echoes DYNCERT_RUN_ID here: proof the listener is our app


# Ports a suggestion must avoid though free now: the README's emulator (8081) and the demo peers' defaults.
RESERVED_PORTS = frozenset({8081, 8443, 8444, 8445, 8446})


class PortTaken(RuntimeError):
    """Another program listens on the app's port."""

    def __init__(self, port):
        super().__init__(
            f"Port {port} is already in use by another program, so the app cannot listen there.\n"
            f"Stop that program, or choose another port: PORT={suggest_port(port)} make run")


def port_free(port):
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def can_bind(port):
    """True when the app could listen on 127.0.0.1:port now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def suggest_port(taken):
    """A free port to offer instead of `taken`: the next free multiple of ten above it (8090 for 8080), else any."""
    for port in range(taken - taken % 10 + 10, min(taken + 200, 65536), 10):
        if port not in RESERVED_PORTS and can_bind(port):
            return port
    return free_port()


def pick_port(env_name, preferred):
    """The port named in the environment, else `preferred` when free, else any free port."""
    if os.environ.get(env_name):
        return int(os.environ[env_name])
    return preferred if port_free(preferred) else free_port()


def wait_until_listening(port, process, what, timeout=60):
    """Wait for a TCP listener on loopback, failing early if its process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start (see {LOCAL}/*.log).")
        if not port_free(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s.")


def admin_token(local_dir, environ=None):
    """ADMIN_TOKEN when set, else the token kept in local_dir/admin-token (0600), made on first use."""
    environ = os.environ if environ is None else environ
    if environ.get("ADMIN_TOKEN"):
        return environ["ADMIN_TOKEN"], "ADMIN_TOKEN"
    path = os.path.join(local_dir, "admin-token")
    try:
        with open(path) as f:
            token = f.read().strip()
        if settings.token_bits(token) >= settings.MIN_TOKEN_BITS:
            return token, path
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)  # 256 random bits: twice the minimum
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # an older file may have looser bits
    return token, path


def is_own_app(base, run_id, timeout=5):
    """True when GET /healthz at `base` answers with this run's id (another server never does)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=timeout) as response:
            return response.headers.get(RUN_ID_HEADER) == run_id and response.read() == b"ok"
    except (OSError, ValueError):
        return False


def api(base, token, method, path, body=None):
    """Call the app's JSON API with the admin token; returns (status, parsed body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def seed(base, token, pki_dir, https_port, echo_port):
    """Store asalieri/1 (HTTPS + echo on the demo peer) and asalieri/2 (its echo-only port)."""
    read = lambda name: open(os.path.join(pki_dir, name)).read()  # noqa: E731
    common = {"cert": read("client-chain.pem"), "key": read("client-key.pem"),
              "ca_certs": read("ca.pem"), "host": "127.0.0.1", "server_hostname": "localhost"}
    for address, port in ((1, https_port), (2, echo_port)):
        status, body = api(base, token, "PUT", f"/api/v1/employees/asalieri/addresses/{address}",
                           dict(common, port=port))
        if status not in (200, 201):
            raise RuntimeError(f"Storing the demo identity failed: {status} {body}")


KMS_DEMO = "/api/v1/employees/asalieri/addresses/3"
KMS_DEMO_RING = "projects/dyncert-local/locations/global/keyRings/make-run-standin"


def sign_demo_csr(csr_pem, cn="make run demo CA (KMS identity)"):
    """A throwaway CA of this run issues the CSR's certificate; returns (chain PEM, CA PEM). Its key is dropped."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    if not csr.is_signature_valid:
        raise RuntimeError("The KMS demo CSR's signature does not verify.")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=90))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(name).public_key(csr.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem).decode(), ca.public_bytes(pem).decode()


def seed_kms(base, token, pki_dir, open_port):
    """asalieri/3: a key born in the KMS stand-in (CSR signed there), certified by a throwaway CA, talking
    to the open demo peer (which accepts any client certificate). Returns a line for the banner."""
    api(base, token, "DELETE", KMS_DEMO)  # the stand-in forgot last run's keys: start afresh
    status, body = api(base, token, "POST", KMS_DEMO + "/csr", {
        "key_location": "cloud_kms", "subject": {"CN": "kms-demo", "O": "make run (KMS stand-in)"}})
    if status == 400 and body["error"]["code"] == "signer_unsupported":
        return "not shown: this Python cannot bind a remote signer (signer_unsupported)"
    if status != 201:
        raise RuntimeError(f"Creating the KMS demo key failed: {status} {body}")
    chain, _ = sign_demo_csr(body["csr"])
    with open(os.path.join(pki_dir, "ca.pem")) as f:
        peer_ca = f.read()
    status, body = api(base, token, "PUT", KMS_DEMO + "/next", {
        "cert": chain, "host": "127.0.0.1", "port": open_port, "server_hostname": "localhost", "ca_certs": peer_ca})
    if status not in (200, 201):
        raise RuntimeError(f"Staging the KMS demo identity failed: {status} {body}")
    status, body = api(base, token, "POST", KMS_DEMO + "/promote", {})
    if status != 200:
        raise RuntimeError(f"Promoting the KMS demo identity failed: {status} {body}")
    return "asalieri/3 (key in the KMS stand-in, software keys: not Cloud KMS)"


class Stack:
    """The processes `make run` starts, stopped in reverse order."""

    def __init__(self):
        self.processes = []
        self.emulator = None

    def spawn(self, name, command, env):
        log = open(os.path.join(LOCAL, f"{name}.log"), "ab")
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes.append((name, process))
        return process

    def stop(self):
        for name, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes = []
        if self.emulator:
            self.emulator.stop()
            self.emulator = None


def main():
    os.makedirs(LOCAL, mode=0o700, exist_ok=True)
    port = int(os.environ.get("PORT", "8080"))
    if not port_free(port):  # checked first: the demo key and token must never reach another server
        print(f"make run: {PortTaken(port)}", file=sys.stderr)
        return 1
    token, token_source = admin_token(LOCAL)
    try:  # the app refuses a weak token at start: say so before starting anything
        settings.check(settings.from_environ({}, admin_token=token))
    except settings.SettingsError as e:
        print(f"make run: {e}", file=sys.stderr)
        return 1
    run_id = secrets.token_hex(16)
    stack = Stack()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        env = dict(os.environ, ADMIN_TOKEN=token, DYNCERT_RUN_ID=run_id, PYTHONUNBUFFERED="1")
        env.setdefault("LOCAL_KEK_FILE", os.path.join(LOCAL, "kek.bin"))
        if not os.environ.get("DATASTORE_EMULATOR_HOST"):
            print("Starting the Cloud Datastore emulator ...", flush=True)
            stack.emulator = Emulator(data_dir=os.path.join(LOCAL, "datastore"),
                                      log_path=os.path.join(LOCAL, "emulator.log")).start()
            env.update(stack.emulator.environ())
        env.setdefault("GOOGLE_CLOUD_PROJECT", env.get("DATASTORE_PROJECT_ID", "dyncert-local"))
        env.setdefault("DATASTORE_PROJECT_ID", env["GOOGLE_CLOUD_PROJECT"])
        pki_dir = demo_pki.ensure(os.path.join(LOCAL, "demo-pki"))
        https_port = pick_port("DEMO_PEER_PORT", 8443)
        echo_port = pick_port("DEMO_ECHO_PORT", 8444 if https_port != 8444 else 8445)
        open_port = pick_port("DEMO_OPEN_PORT", 8445 if 8445 not in (https_port, echo_port) else 8446)
        kms_port = free_port()
        stack.spawn("kms-standin", [sys.executable, "-m", "devserver.kms_standin", "--port", str(kms_port)], env)
        env.setdefault("KMS_ENDPOINT", f"127.0.0.1:{kms_port}")  # the app's KMS client talks to the stand-in
        env.setdefault("KMS_KEY_RING", KMS_DEMO_RING)
        env.setdefault("KMS_PROTECTION", "SOFTWARE")  # what the stand-in really is
        standin = stack.processes[-1][1]
        peer = stack.spawn("demo-peer", [sys.executable, "-m", "devserver.demo_peer", "--pki", pki_dir,
                                         "--https-port", str(https_port), "--echo-port", str(echo_port),
                                         "--open-port", str(open_port)], env)
        # No control socket: gunicorn 27 would put one in ~/.gunicorn/, shared by every run of this user.
        app = stack.spawn("app", [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}",
                                  "--threads", "8", "--access-logfile", "-", "--no-control-socket",
                                  "main:app"], env)
        wait_until_listening(https_port, peer, "The demo peer")
        wait_until_listening(kms_port, standin, "The KMS stand-in")
        wait_until_listening(port, app, "The app")
        base = f"http://127.0.0.1:{port}"
        if not is_own_app(base, run_id):  # another program took the port meanwhile
            raise PortTaken(port)
        seed(base, token, pki_dir, https_port, echo_port)
        kms_demo = seed_kms(base, token, pki_dir, open_port)
        print(f"""
  dyncert is running: {base}/
  Admin token:        {token}
                      ({"from ADMIN_TOKEN" if token_source == "ADMIN_TOKEN" else "kept in " + token_source + "; delete it for a new one"})
  Demo mTLS peer:     https://localhost:{https_port}/ (echo on port {echo_port}; trusts only the demo CA)
  Demo open peer:     https://localhost:{open_port}/ (demo convenience: accepts ANY client certificate,
                      checks only that you hold its key, and answers with what it saw)
  KMS demo identity:  {kms_demo}
                      (KMS stand-in on {env['KMS_ENDPOINT']})
  Datastore emulator: {env['DATASTORE_EMULATOR_HOST']} (loopback, but WITHOUT authentication: every user
                      of this machine can read and write it - sessions, sign-in counters, history.
                      Run `make run` on a machine only you use; see README's security model.)
  Logs:               {os.path.join(LOCAL, "*.log")}

  Sign in at {base}/signin with the token, or:
    curl -H 'Authorization: Bearer {token}' {base}/api/v1/identities
  Ctrl-C stops everything.
""", flush=True)
        while all(p.poll() is None for _, p in stack.processes):
            time.sleep(0.5)
        print(f"A process exited; stopping (see {LOCAL}/*.log).", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except (EmulatorMissing, RuntimeError) as e:
        print(f"make run: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
