"""Load across three instances while identities rotate through random instances: never a wrong or stale certificate.

Each call's presented certificate is checked without any timing assumption: it must be one that was
current at some moment between the call's start and its end (a linearizability check). An identity's
certificate F_k became current at the commit of operation k, inside [start_k, end_k], and stopped at the
commit of operation k+1, so a call [s, e] may present F_k only when [start_k, end_{k+1}] meets [s, e].
The duration is bounded by counts: CALLS calls and OPERATIONS rotations, whatever the machine's speed.
"""

import random
import threading
import time

import pytest
import requests

from tests.harness import nginx
from tests.harness import pki
from tests.harness import redisserver
from tests.harness.instances import Instances, identity_body, leaf_sha1, roomy_nginx

CLIENTS, IDENTITIES, CALLS, OPERATIONS = 16, 20, 5000, 100
# Each rotation is a new context with its own keep-alive pool (up to POOL_SIZE idle connections to the
# peer): what bounds the file descriptors is the context cache's size. Smaller than the 120 certificates
# the run uses, so evictions happen, and the bound below is that of the LRU, not of a short run.
CONTEXT_CACHE = 24
OUTAGE_START, OUTAGE_END = OPERATIONS // 3, 2 * OPERATIONS // 3  # changes made while Redis is stopped
FD_SLACK = CONTEXT_CACHE * 4 + 32   # dyncert.calls.POOL_SIZE idle connections per context, the emulator's channels
RSS_SLACK_KIB = 64 * 1024

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not nginx.available(), reason="nginx is not installed")]


def url(n):
    return f"/api/v1/employees/load{n}/addresses/1"


class History:
    """Per identity: [(fingerprint, start of the operation that made it current, end of the next one)]."""

    def __init__(self):
        self.windows = {}

    def begin(self, n, fingerprint, at):
        self.windows[n] = [[fingerprint, at, float("inf")]]

    def changed(self, n, fingerprint, started, ended):
        self.windows[n][-1][2] = ended  # the previous one was current until at most the end of this change
        self.windows[n].append([fingerprint, started, float("inf")])

    def could_be_current(self, n, fingerprint, started, ended):
        return any(f == fingerprint and a <= ended and b >= started for f, a, b in self.windows[n])


class Load:
    """CLIENTS threads calling random identities through the instances in turn until CALLS are done."""

    def __init__(self, apps, creds):
        self.apps, self.creds = apps, creds
        self.lock = threading.Condition()
        self.done = 0
        self.calls, self.errors = [], []
        self.sha1_of = {c.fingerprint_sha256: leaf_sha1(c) for c in creds}
        self.samples = {}
        self.rotated = False  # the clients go on until the rotations are done too

    def client(self, seed):
        rng = random.Random(seed)
        sessions = [requests.Session() for _ in self.apps]
        headers = {"Authorization": f"Bearer {self.apps.token}"}
        turn = seed
        while True:
            with self.lock:
                if self.done >= CALLS and self.rotated:
                    break
            n, turn = rng.randrange(IDENTITIES), (turn + 1) % len(self.apps)
            started = time.monotonic()
            try:
                answer = sessions[turn].post(self.apps[turn].base + url(n) + "/request", json={"path": "/"},
                                             headers=headers, timeout=60)
                ended = time.monotonic()
                reply = answer.json()
                if answer.status_code != 200 or not reply.get("ok") or reply.get("status") != 200:
                    self.errors.append((n, turn, answer.status_code, answer.text[:300]))
                else:
                    import json
                    seen = json.loads(reply["body"])["fingerprint_sha1"]
                    self.calls.append((n, started, ended, reply["tls"]["client_fingerprint_sha256"], seen))
            except (requests.RequestException, ValueError) as e:
                self.errors.append((n, turn, None, repr(e)))
            with self.lock:
                self.done += 1
                if self.done == CALLS // 5:
                    self.samples["early"] = [(a.fds(), a.rss_kib()) for a in self.apps]
                self.lock.notify_all()
        for s in sessions:
            s.close()

    def wait_for(self, count):
        with self.lock:
            self.lock.wait_for(lambda: self.done >= count)


class CacheAway(Exception):
    """A change refused with 503 cache_unavailable (Redis stopped): nothing was changed."""


def rotate(apps, history, current, spare, peer, ca, rng, load, refused, redis=None):
    """OPERATIONS changes (replace, stage + promote, rollback), each through random instances, paced by calls.

    With `redis`, it is stopped before the second third of the changes and started again (empty) before
    the last third, each time once CALLS // 10 more calls went through: counts, not seconds."""
    admin = requests.Session()
    # A connection per change: the rotator idles between changes (paced by calls), and gunicorn closes a
    # kept-alive connection idle for 2 s, which a request sent at that moment meets as a reset.
    admin.headers.update({"Authorization": f"Bearer {apps.token}", "Connection": "close"})

    def call(method, path, body=None, expect=(200,)):
        answer = admin.request(method, apps[rng.randrange(len(apps))].base + path, json=body, timeout=60)
        if answer.status_code == 503 and answer.json()["error"]["code"] == "cache_unavailable":
            raise CacheAway()
        assert answer.status_code in expect, answer.text
        return answer.json()

    has_previous = set()
    for op in range(OPERATIONS):
        load.wait_for(op * CALLS // (OPERATIONS + 1))
        if redis is not None and op in (OUTAGE_START, OUTAGE_END):
            redis.stop() if op == OUTAGE_START else redis.start()
            load.wait_for(load.done + CALLS // 10)
        n = rng.randrange(IDENTITIES)
        kind = rng.choice(["replace", "promote", "rollback"] if n in has_previous else ["replace", "promote"])
        started = time.monotonic()
        try:
            if kind == "replace":
                view = call("PUT", url(n), identity_body(spare.pop(), peer, ca))
                now = view["fingerprint_sha256"]
            elif kind == "promote":
                call("PUT", url(n) + "/next", identity_body(spare.pop(), peer, ca), expect=(200, 201))
                now = call("POST", url(n) + "/promote")["current"]["fingerprint_sha256"]
                has_previous.add(n)
            else:
                now = call("POST", url(n) + "/rollback")["current"]["fingerprint_sha256"]
        except CacheAway:
            refused.append((op, kind, n))  # checked: the calls go on presenting what was current
            continue
        history.changed(n, now, started, time.monotonic())
        current[n] = now
    admin.close()


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("load")
    creds = [pki.client_cert(p.clients_ca, f"load{i}") for i in range(IDENTITIES + OPERATIONS)]
    with roomy_nginx(pki.server_cert(p.root), p.ca_pem) as peer:
        yield dict(pki=p, peer=peer, creds=creds)


@pytest.mark.parametrize("cache", ["datastore", "redis", "redis_stopped_midway"])
def test_rotation_under_load_across_instances_never_presents_a_wrong_or_stale_certificate(
        cache, emulator, world, tmp_path):
    """`redis_stopped_midway`: Redis stops for the middle third of the changes, calls going on throughout."""
    if cache != "datastore" and not redisserver.available():
        pytest.skip("redis-server is not installed")
    emulator.reset()
    redis = redisserver.RedisServer().start() if cache != "datastore" else None
    try:
        with Instances(emulator, str(tmp_path), redis_url=redis.url if redis else None,
                       extra_env={"DYNCERT_CACHE_SIZE": str(CONTEXT_CACHE)}) as apps:
            run_load(apps, world, redis, outage=cache == "redis_stopped_midway")
    finally:
        if redis:
            redis.stop()


def run_load(apps, world, redis, outage=False):
    peer, ca, creds = world["peer"], world["pki"].ca_pem, world["creds"]
    spare = list(reversed(creds[IDENTITIES:]))
    history, current = History(), {}
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {apps.token}"
    for n in range(IDENTITIES):
        started = time.monotonic()
        assert admin.put(apps[n % 3].base + url(n), json=identity_body(creds[n], peer, ca)).status_code == 201
        history.begin(n, creds[n].fingerprint_sha256, started)
        current[n] = creds[n].fingerprint_sha256
        for app in apps:  # every instance reads every identity once: contexts, pools and cache warm
            assert admin.post(app.base + url(n) + "/request", json={"path": "/"}).status_code == 200
    admin.close()
    load = Load(apps, creds)
    rng = random.Random(22)
    clients = [threading.Thread(target=load.client, args=(i,)) for i in range(CLIENTS)]
    for t in clients:
        t.start()
    refused = []
    try:
        rotate(apps, history, current, spare, peer, ca, rng, load, refused, redis if outage else None)
    finally:
        with load.lock:
            load.rotated = True
        load.wait_for(CALLS)
        for t in clients:
            t.join()
    late = [(a.fds(), a.rss_kib()) for a in apps]

    assert load.errors == [], load.errors[:5]
    assert len(load.calls) >= CALLS
    wrong = [c for c in load.calls if load.sha1_of.get(c[3]) != c[4]]
    assert wrong == [], f"the peer saw another certificate than the app says it presented: {wrong[:3]}"
    stale = [c for c in load.calls if not history.could_be_current(c[0], c[3], c[1], c[2])]
    assert stale == [], f"{len(stale)} calls presented a certificate not current during the call: {stale[:3]}"
    changes = sum(len(w) - 1 for w in history.windows.values())
    assert changes + len(refused) == OPERATIONS
    if outage:  # every change while Redis was away was refused (nothing changed), every other went through
        assert [op for op, _, _ in refused] == list(range(OUTAGE_START, OUTAGE_END)), refused
        assert "Error connecting to global cache" in apps.logs()
    else:
        assert refused == []
    for (fds0, rss0), (fds1, rss1) in zip(load.samples["early"], late):
        assert fds1 <= fds0 + FD_SLACK, (fds0, fds1)
        assert rss1 <= rss0 + RSS_SLACK_KIB, (rss0, rss1)
    if redis:  # (after an outage: the hits since Redis came back)
        assert int(redis.info("keyspace_hits")) > 0
    print(f"\n{len(load.calls)} calls, {changes} changes, {len(refused)} refused; (fds, rss KiB) {load.samples['early']} -> {late}")


def test_the_checker_finds_a_stale_certificate():
    """The checker's own twin: a call that began after a change ended and presented the old one is caught."""
    history = History()
    history.begin(0, "old", 0.0)
    history.changed(0, "new", 10.0, 11.0)
    assert history.could_be_current(0, "old", 10.5, 12.0)      # overlapped the change: either is right
    assert history.could_be_current(0, "new", 10.5, 12.0)
    assert not history.could_be_current(0, "old", 11.5, 12.0)  # stale
    assert not history.could_be_current(0, "new", 5.0, 9.0)    # from the future
    assert not history.could_be_current(0, "other", 0.0, 20.0)  # wrong identity
    history.changed(0, "old", 20.0, 21.0)  # a rollback: "old" is current again
    assert history.could_be_current(0, "old", 22.0, 23.0)
