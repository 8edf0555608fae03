"""The app end to end: POST .../handshake through gunicorn (Datastore emulator, stored identity), and its breakdown."""

import contextlib
import http.client
import json
import os
import secrets
import sys
import threading
import time

from tests.harness.appserver import Gunicorn

from . import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMPLOYEE, ADDRESS = "asalieri", 1
PATH = f"/api/v1/employees/{EMPLOYEE}/addresses/{ADDRESS}"


class AppServer(Gunicorn):
    """gunicorn (1 worker, 8 threads) serving main:app against the given environment (the test harness's)."""

    def __init__(self, env, log_path):
        super().__init__(env, log_path, threads=8, extra_args=["--log-level", "warning"])
        self.token = env["ADMIN_TOKEN"]

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def call(self, method, path, body=None, conn=None):
        """(status, parsed JSON or text) of one request, on `conn` (keep-alive) or a new connection."""
        own = conn is None
        conn = conn or self.connection()
        try:
            data = json.dumps(body).encode() if body is not None else b""
            conn.request(method, path, body=data, headers={"Authorization": f"Bearer {self.token}",
                                                           "Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, raw.decode("utf-8", "replace")
        finally:
            if own:
                conn.close()


def _concurrent(op_factory, clients, duration):
    """`clients` threads each running their op until the deadline: (count, wall, cpu)."""
    ops = [op_factory() for _ in range(clients)]
    for op in ops:
        op()  # warm-up: connections open, contexts cached
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i):
        barrier.wait()
        while time.perf_counter() < deadline:
            ops[i]()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    deadline = time.perf_counter() + duration
    started = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - started, time.process_time() - cpu0


@contextlib.contextmanager
def running_app(pki, peer_port, workdir, log):
    """Emulator + gunicorn + the stored identity pointing at the peer; yields (server, settings, env)."""
    from devserver.emulator import Emulator
    log("starting the Datastore emulator")
    emulator = Emulator(log_path=os.path.join(workdir, "emulator.log")).start()
    try:
        env = dict(os.environ, **emulator.environ(), ADMIN_TOKEN=secrets.token_urlsafe(16),
                   LOCAL_KEK_FILE=os.path.join(workdir, "kek", "kek.bin"), PYTHONPATH=ROOT)
        os.environ.update({k: env[k] for k in ("DATASTORE_EMULATOR_HOST", "DATASTORE_PROJECT_ID",
                                               "GOOGLE_CLOUD_PROJECT", "LOCAL_KEK_FILE", "ADMIN_TOKEN")})
        log("starting gunicorn")
        with AppServer(env, os.path.join(workdir, "gunicorn.log")) as server:
            status, view = server.call("PUT", PATH, {
                "cert": pki.client_chain_pem.decode(), "key": pki.client_key_pem.decode(),
                "ca_certs": pki.ca_pem.decode(), "host": "127.0.0.1", "port": peer_port,
                "server_hostname": "localhost"})
            if status not in (200, 201):
                raise RuntimeError(f"PUT identity: {status} {view}")
            status, result = server.call("POST", PATH + "/handshake")
            if status != 200 or not result.get("ok"):
                raise RuntimeError(f"POST handshake: {status} {result}")
            if ROOT not in sys.path:
                sys.path.insert(0, ROOT)
            import settings as settings_module
            yield server, settings_module.from_environ(env), result
    finally:
        emulator.stop()


def _in_process_app(workdir, token):
    """main.app imported here (its log lines to a file): a WSGI call without gunicorn or HTTP."""
    import logging

    import webob

    import main
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.FileHandler(os.path.join(workdir, "app-in-process.log")))

    def call():
        request = webob.Request.blank(PATH + "/handshake", method="POST",
                                      headers={"Authorization": f"Bearer {token}"})
        response = request.get_response(main.app)
        if response.status_int != 200:
            raise RuntimeError(f"in-process handshake call: {response.status} {response.text[:300]}")
    return call


class Breakdown:
    """One call's pieces, timed in-process with the app's own functions inside an ndb context."""

    def __init__(self, settings):
        import models
        import sealing
        from google.cloud import ndb

        from dyncert import calls, context, identity, targets
        self.m, self.sealing, self.calls, self.context = models, sealing, calls, context
        self.identity_cls, self.targets = identity.ClientIdentity, targets
        self.settings = settings
        self.client = ndb.Client()
        self.times = {k: [] for k in ("datastore_read", "unseal", "identity", "context_lookup", "handshake")}

    def once(self):
        """One call, piece by piece (as models.load_identity then outbound.handshake do it)."""
        t = time.perf_counter
        with self.client.context(cache_policy=False, global_cache_policy=False):
            t0 = t()
            entity = self.m.get_entity(EMPLOYEE, ADDRESS)
            t1 = t()
        key_pem = self.m.unseal_slot(self.sealing.kek_from_settings(self.settings), entity, entity)
        t2 = t()
        ident = self.identity_cls.from_trusted_pem(entity.chain_pem.encode(), key_pem)
        target = self.targets.Target(entity.host, entity.port, entity.server_hostname)
        ca = entity.ca_certs.encode()
        t3 = t()
        ctx = self.context.cached_client_context(ident, ca, entity.tls_version or "TLS")
        t4 = t()
        self.calls.handshake(ctx, target, ident.fingerprint_sha256)
        t5 = t()
        for name, value in zip(self.times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            self.times[name].append(value)


def run(pki, peer_port, workdir, rounds, duration, log):
    """App rate (4 clients) vs the bare library (4 threads), and the single-client latency breakdown."""
    from dyncert import calls, context
    from dyncert.targets import Target
    with running_app(pki, peer_port, workdir, log) as (server, settings, first):
        identity = pki.identity()
        target = Target("127.0.0.1", peer_port, "localhost")

        def app_client():
            conn = server.connection()  # one keep-alive connection per client and round
            return lambda: _ok(server.call("POST", PATH + "/handshake", conn=conn))

        def library_client():
            return lambda: calls.handshake(context.cached_client_context(identity, pki.ca_pem), target,
                                           identity.fingerprint_sha256)

        breakdown = Breakdown(settings)
        wsgi_call = _in_process_app(workdir, server.token)
        e2e, wsgi, floor = [], [], []

        def sequential(duration):
            conn = server.connection()  # per round: gunicorn drops keep-alive connections idle for 2 s
            _ok(server.call("POST", PATH + "/handshake", conn=conn))
            deadline = time.perf_counter() + duration
            count = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                _ok(server.call("POST", PATH + "/handshake", conn=conn))
                t1 = time.perf_counter()
                wsgi_call()
                t2 = time.perf_counter()
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                t3 = time.perf_counter()
                e2e.append(t1 - t0)
                wsgi.append(t2 - t1)
                floor.append(t3 - t2)
                breakdown.once()
                count += 1
            conn.close()
            return count, duration, 0.0

        log("app: 4 clients vs library: 4 threads, then single-client breakdown")
        samples = timing.alternate({
            "app_4_clients": lambda d: _concurrent(app_client, 4, d),
            "library_4_threads": lambda d: _concurrent(library_client, 4, d),
            "app_sequential": sequential,
        }, rounds, duration)
        pieces = {name: timing.median_ms(values) for name, values in breakdown.times.items()}
        e2e_ms = timing.median_ms(e2e)
        wsgi_ms = timing.median_ms(wsgi)
        overhead = e2e_ms - pieces["datastore_read"] - pieces["handshake"]
        return {
            "wsgi_in_process_ms": wsgi_ms, "gunicorn_http_floor_ms": timing.median_ms(floor),
            "app_overhead_in_process_ms": wsgi_ms - pieces["datastore_read"] - pieces["handshake"],
            "app_4_clients": timing.summarize(samples["app_4_clients"]),
            "library_4_threads": timing.summarize(samples["library_4_threads"]),
            "e2e_ms": e2e_ms, "pieces_ms": pieces,
            "everything_else_ms": e2e_ms - sum(pieces.values()),
            "overhead_ms": overhead, "calls": len(e2e),
            "tls_version": first.get("tls_version"),
        }


def _ok(answer):
    status, body = answer
    if status != 200 or not isinstance(body, dict) or not body.get("ok"):
        raise RuntimeError(f"handshake call failed: {status} {str(body)[:300]}")
    return body
