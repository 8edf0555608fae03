"""More identities than an adapter keeps: an evicted transport or pool is never closed under a request using it.

One client, one identity per customer, more customers than the adapters' per-identity caches hold
(dyncert._adapt.CACHE_SIZE): every request succeeds, and every file descriptor is back after close.
"""

import asyncio
import gc
import json
import os
import random
import threading
import warnings

import httpx
import pytest
import requests

from tests.harness import nginx
from dyncert import calls, reuse, targets
from dyncert._adapt import CACHE_SIZE
from dyncert.context import ContextCache, client_context
from dyncert.httpx import AsyncClientCertTransport, ClientCertTransport
from dyncert.requests import ClientCertAdapter
from tests.harness import pki
from tests.harness.adapterworld import Identity, World, url

pytestmark = [pytest.mark.interp, pytest.mark.skipif(not nginx.available(), reason="nginx is not installed")]

CUSTOMERS = 100   # identities, well past CACHE_SIZE
THREADS = 24
REQUESTS = 600


@pytest.fixture(scope="module")
def world(run_pki):
    world = World(run_pki)
    world.customers = [Identity(pki.client_cert(world.ours.clients_ca, f"customer-{i}")) for i in range(CUSTOMERS)]
    return world


@pytest.fixture(scope="module")
def server(world):
    """nginx requiring a client certificate under our CA, serving every kept-alive connection of every identity."""
    with nginx.NginxPeer(world.server, world.ours.ca_pem, connections=1024) as peer:
        yield peer


def open_fds():
    """This process's open file descriptors (after collecting what earlier tests left to the collector)."""
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


def picker(world, seed):
    """A provider returning a random customer's identity, and the customer it chose per thread."""
    chosen = threading.local()
    rng = random.Random(seed)
    lock = threading.Lock()

    def provider():
        with lock:
            chosen.who = rng.choice(world.customers)
        return chosen.who.identity
    return provider, chosen


def run_threads(send):
    """REQUESTS calls of send() over THREADS threads; the exceptions raised, by type name."""
    errors, count = [], iter(range(REQUESTS))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if next(count, None) is None:
                    return
            try:
                send()
            except Exception as e:  # the test reports every failure, whatever its type
                errors.append(f"{type(e).__name__}: {e}")
    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_cache_is_smaller_than_the_customers():
    assert CACHE_SIZE < CUSTOMERS


def test_httpx_threads_many_identities_no_request_fails(world, server):
    provider, chosen = picker(world, 1)
    before = open_fds()
    seen = []
    transport = ClientCertTransport(provider, ca_certs=world.ca_pem)
    with httpx.Client(transport=transport, timeout=30) as client:
        def send():
            answer = client.get(url(server)).json()["fingerprint_sha1"]
            seen.append(answer == chosen.who.sha1)
        errors = run_threads(send)
        assert len(transport._per_identity._transports) == CACHE_SIZE  # once idle, the bound holds
    assert errors == []
    assert len(seen) == REQUESTS and all(seen)
    assert open_fds() - before == set()


def test_httpx_async_many_identities_no_request_fails(world, server):
    rng = random.Random(2)
    before = open_fds()

    async def main():
        who = {}
        lock = asyncio.Lock()

        def provider():
            return who[asyncio.current_task()].identity
        gate = asyncio.Semaphore(40)  # requests in flight at once
        transport = AsyncClientCertTransport(provider, ca_certs=world.ca_pem)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            async def task():
                async with gate:
                    async with lock:
                        who[asyncio.current_task()] = person = rng.choice(world.customers)
                    try:
                        response = await client.get(url(server))
                    except Exception as e:  # every failure is reported, whatever its type
                        return f"{type(e).__name__}: {e}"
                    return response.json()["fingerprint_sha1"] == person.sha1
            results = await asyncio.gather(*(task() for _ in range(REQUESTS)))
            assert len(transport._per_identity._transports) == CACHE_SIZE  # once idle, the bound holds
            return results

    results = asyncio.run(main())
    assert [r for r in results if r is not True] == []
    assert open_fds() - before == set()


def test_requests_threads_many_identities_no_request_fails(world, server):
    provider, chosen = picker(world, 3)
    before = open_fds()
    seen = []
    with requests.Session() as session:
        session.mount("https://", ClientCertAdapter(provider, ca_certs=world.ca_pem, pool_maxsize=THREADS))

        def send():
            answer = session.get(url(server), timeout=30).json()["fingerprint_sha1"]
            seen.append(answer == chosen.who.sha1)
        errors = run_threads(send)
    assert errors == []
    assert len(seen) == REQUESTS and all(seen)
    assert open_fds() - before == set()


def test_app_pools_more_peers_than_kept_no_call_fails(world, server):
    """The app's keep-alive pools (dyncert.reuse, per identity): more peers at once than it keeps, no call fails.

    Pools are kept per (target, timeouts): distinct read timeouts make distinct peers on one nginx.
    """
    context = client_context(world.customers[0].identity, world.ours.ca_pem)
    peer_keys = [calls.Timeouts(connect=5, handshake=10, read=10 + i / 100) for i in range(reuse.MAX_PEERS * 3)]
    rng, lock = random.Random(4), threading.Lock()
    target = targets.validate_target("127.0.0.1", server.port, "localhost")
    seen = []

    def send():
        with lock:
            timeouts = rng.choice(peer_keys)
        result = calls.https_request(context, target, world.customers[0].creds.fingerprint_sha256,
                                     timeouts=timeouts)
        seen.append(json.loads(result["body"])["fingerprint_sha1"] == world.customers[0].sha1)
    errors = run_threads(send)
    assert errors == []
    assert len(seen) == REQUESTS and all(seen)


def test_app_pool_evicted_while_a_call_holds_it_still_serves_that_call(world, server):
    """The interleaving a busy instance meets: a call has taken its pool, other peers push it out, the call goes on."""
    context = client_context(world.customers[1].identity, world.ours.ca_pem)
    target = targets.validate_target("127.0.0.1", server.port, "localhost")
    before = open_fds()

    def peer_pool(i):
        timeouts = calls.Timeouts(read=10 + i / 100)
        return reuse.pool(context, (target, timeouts), lambda: calls._make_pool(context, target, timeouts))

    held = peer_pool(0)
    for i in range(1, reuse.MAX_PEERS + 1):
        peer_pool(i)  # pushes the held pool out of the LRU
    response = held.urlopen("GET", "/", headers={"Host": f"localhost:{server.port}"}, retries=False)
    assert json.loads(response.data)["fingerprint_sha1"] == world.customers[1].sha1
    again = peer_pool(0)
    assert again is not held  # a new pool for the next call; the held one is let go
    del held, response
    assert open_fds() - before == set()  # the evicted pool's connection closed once its call let go of it


@pytest.mark.parametrize("cache_size", [0, 1])
def test_app_pools_of_contexts_the_cache_drops_are_closed(world, server, cache_size):
    """More identities than the context cache holds: each dropped context's kept-alive connection is closed.

    A context and its pools hold each other, and a pooled socket's reference to its context is hidden
    from the cycle collector: before, every dropped context kept its socket open for good.
    """
    target = targets.validate_target("127.0.0.1", server.port, "localhost")
    cache, customers = ContextCache(maxsize=cache_size), world.customers[2:4]
    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for i in range(20):
            customer = customers[i % 2]
            result = calls.https_request(cache.client_context(customer.identity, world.ours.ca_pem), target,
                                         customer.creds.fingerprint_sha256)
            assert json.loads(result["body"])["fingerprint_sha1"] == customer.sha1
        assert len(open_fds() - before) == cache_size  # the cached context's one kept-alive connection, no more
        cache.clear()
        assert open_fds() - before == set()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
