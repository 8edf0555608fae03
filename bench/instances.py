"""Calls per second through 1 and 3 app instances, with and without the Redis global cache; Datastore
reads per call for a hot identity; the app/library ratio with 4 clients.

Both clusters (three gunicorn processes each, one on Datastore alone, one with REDIS_CACHE_URL) run
side by side on one emulator, and every path is measured in each round, so ratios compare like with like.
"""

import contextlib
import os
import secrets
import sys

from . import app as app_bench
from . import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = app_bench.PATH
CLIENTS_PER_INSTANCE = 4
# Cold: more identities than each instance keeps contexts for, called in turn, so (almost) every call
# builds a context and runs a full handshake, as with 100,000 identities spread over many instances.
COLD_IDENTITIES, CONTEXTS_KEPT = 48, 8


def _harness():
    """tests/instances.py and tests/redisserver.py: the same harness the tests use."""
    for path in (ROOT, os.path.join(ROOT, "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)
    from tests.harness import instances
    from tests.harness import redisserver
    return instances, redisserver


class _Server:
    """One instance seen through bench.app's HTTP client (keep-alive connections, JSON)."""

    def __init__(self, port, token):
        self.port, self.token = port, token

    connection = app_bench.AppServer.connection
    call = app_bench.AppServer.call


def _store(server, chain_pem, key_pem, ca_pem, peer_port, path=PATH):
    status, view = server.call("PUT", path, {
        "cert": chain_pem.decode(), "key": key_pem.decode(), "ca_certs": ca_pem.decode(),
        "host": "127.0.0.1", "port": peer_port, "server_hostname": "localhost"})
    if status not in (200, 201):
        raise RuntimeError(f"PUT identity: {status} {view}")


def _cold_path(n):
    return f"/api/v1/employees/cold{n}/addresses/1"


def _rate(servers, clients, paths=(PATH,)):
    """A path: `clients` keep-alive clients spread over `servers`, each calling .../handshake on `paths` in turn."""
    def factory():
        server = servers[factory.turn % len(servers)]
        mine = iter(paths[factory.turn % len(paths):] + paths[:factory.turn % len(paths)])
        factory.turn += 1
        conn = server.connection()

        def call():
            nonlocal mine
            path = next(mine, None)
            if path is None:
                mine = iter(paths)
                path = next(mine)
            app_bench._ok(server.call("POST", path + "/handshake", conn=conn))
        return call
    factory.turn = 0
    return lambda duration: app_bench._concurrent(factory, clients, duration)


def lookups_per_call(env, calls=200):
    """Datastore Lookup RPCs per handshake call for a hot identity, counted in-process (ndb's own RPC
    function wrapped), through main.create_app with `env`'s settings: (lookups, calls, commits)."""
    import logging

    import webob
    from google.cloud.ndb import _datastore_api

    import main
    import settings as settings_module
    logging.getLogger("dyncert").setLevel(logging.WARNING)  # the in-process app's per-call lines
    counts = {"lookup": 0, "commit": 0}
    real = _datastore_api.make_call

    def counting(rpc_name, request, retries=None, timeout=None, metadata=()):
        if rpc_name in counts:
            counts[rpc_name] += 1
        return real(rpc_name, request, retries=retries, timeout=timeout, metadata=metadata)

    wsgi = main.create_app(settings_module.from_environ(env))
    token = env["ADMIN_TOKEN"]

    def call():
        request = webob.Request.blank(PATH + "/handshake", method="POST", headers={"Authorization": f"Bearer {token}"})
        response = request.get_response(wsgi)
        if response.status_int != 200:
            raise RuntimeError(f"in-process handshake: {response.status} {response.text[:300]}")

    call()  # the first read fills the cache (when there is one)
    _datastore_api.make_call = counting
    try:
        for _ in range(calls):
            call()
    finally:
        _datastore_api.make_call = real
    return counts["lookup"], calls, counts["commit"]


@contextlib.contextmanager
def _clusters(workdir, log):
    """(emulator, {"datastore": Instances, "redis": Instances or None}), stopped on exit."""
    instances, redisserver = _harness()
    from devserver.emulator import Emulator
    log("instances: the Datastore emulator, redis-server and two clusters of three gunicorn processes")
    emulator = Emulator(log_path=os.path.join(workdir, "instances-emulator.log")).start()
    redis = redisserver.RedisServer().start() if redisserver.available() else None
    token, kek = secrets.token_urlsafe(24), os.path.join(workdir, "kek", "kek.bin")  # one identity, sealed once
    stack = contextlib.ExitStack()
    try:
        small = {"DYNCERT_CACHE_SIZE": str(CONTEXTS_KEPT)}
        clusters = {"datastore": stack.enter_context(instances.Instances(
            emulator, _dir(workdir, "plain"), token=token, kek_file=kek, extra_env=small))}
        clusters["redis"] = stack.enter_context(instances.Instances(
            emulator, _dir(workdir, "cached"), token=token, redis_url=redis.url, kek_file=kek,
            extra_env=small)) if redis else None
        yield emulator, clusters, redis
    finally:
        stack.close()
        if redis:
            redis.stop()
        emulator.stop()


def _dir(workdir, name):
    path = os.path.join(workdir, name)
    os.makedirs(path, exist_ok=True)
    return path


def run(pki, peer_port, rounds, duration, workdir, log):
    """The group's figures (see the module docstring)."""
    from dyncert import calls, context
    from dyncert.targets import Target
    with _clusters(workdir, log) as (emulator, clusters, redis):
        servers = {name: [_Server(a.port, cluster.token) for a in cluster]
                   for name, cluster in clusters.items() if cluster is not None}
        _store(servers["datastore"][0], pki.client_chain_pem, pki.client_key_pem, pki.ca_pem, peer_port)
        from . import pki as bench_pki
        cold = [_cold_path(n) for n in range(COLD_IDENTITIES)]
        for path, made in zip(cold, bench_pki.extra_identities(pki.ca, COLD_IDENTITIES)):
            _store(servers["datastore"][0], made.chain_pem, made.key_pem, pki.ca_pem, peer_port, path)
        identity = pki.identity()
        target = Target("127.0.0.1", peer_port, "localhost")

        def library(duration):
            def factory():
                return lambda: calls.handshake(context.cached_client_context(identity, pki.ca_pem), target,
                                               identity.fingerprint_sha256)
            return app_bench._concurrent(factory, CLIENTS_PER_INSTANCE, duration)

        paths = {"library_4_threads": library}
        for name, group in servers.items():
            paths[f"{name}_1_instance"] = _rate(group[:1], CLIENTS_PER_INSTANCE)
            paths[f"{name}_3_instances"] = _rate(group, CLIENTS_PER_INSTANCE * len(group))
            paths[f"{name}_1_instance_cold"] = _rate(group[:1], CLIENTS_PER_INSTANCE, tuple(cold))
        log(f"instances: {', '.join(paths)}")
        samples = timing.alternate(paths, rounds, duration, progress=log)
        result = {"samples": samples, "summary": {k: timing.summarize(v) for k, v in samples.items()},
                  "clients_per_instance": CLIENTS_PER_INSTANCE, "redis": redis is not None,
                  "cold_identities": COLD_IDENTITIES, "contexts_kept": CONTEXTS_KEPT}
        if redis:  # what a cached identity costs Redis (ndb stores the entity's protobuf)
            import redis as redis_client
            client = redis_client.Redis.from_url(redis.url)
            sizes = [client.memory_usage(k) for k in client.scan_iter(count=100)]
            result["redis_bytes_per_identity"] = sum(sizes) / len(sizes)
            result["redis_keys"] = len(sizes)
            client.close()
        os.environ.update(emulator.environ())
        for name, cluster in clusters.items():
            if cluster is not None:
                lookups, count, commits = lookups_per_call(cluster.env)
                result[f"{name}_datastore_reads_per_call"] = lookups / count
                result[f"{name}_datastore_commits_per_call"] = commits / count
        return result


def ratios(result):
    """Paired (same round) ratios: app through 1 instance vs the library, cache vs none, 3 vs 1 instance."""
    from .report import paired_ratio
    s = result["samples"]
    out = {"app_vs_library_4_clients_no_cache": paired_ratio(s, "datastore_1_instance", "library_4_threads"),
           "three_vs_one_instance_no_cache": paired_ratio(s, "datastore_3_instances", "datastore_1_instance")}
    if result.get("redis"):
        out.update({
            "app_vs_library_4_clients_cache": paired_ratio(s, "redis_1_instance", "library_4_threads"),
            "cache_vs_no_cache_1_instance": paired_ratio(s, "redis_1_instance", "datastore_1_instance"),
            "cache_vs_no_cache_3_instances": paired_ratio(s, "redis_3_instances", "datastore_3_instances"),
            "three_vs_one_instance_cache": paired_ratio(s, "redis_3_instances", "redis_1_instance"),
            "cold_vs_hot_cache": paired_ratio(s, "redis_1_instance_cold", "redis_1_instance"),
        })
    out["cold_vs_hot_no_cache"] = paired_ratio(s, "datastore_1_instance_cold", "datastore_1_instance")
    return out
