"""dyncert.requests and dyncert.httpx against real loopback servers (nginx naming the certificate it saw)."""

import asyncio
import contextvars
import threading

import httpx
import pytest
import requests

from tests.harness import nginx
from dyncert.errors import InputError
from dyncert.httpx import AsyncClientCertTransport, ClientCertTransport
from dyncert.requests import ClientCertAdapter, dyncert_error
from tests.harness import peers
from tests.harness.adapterworld import World, url

pytestmark = [pytest.mark.skipif(not nginx.available(), reason="nginx is not installed"), pytest.mark.interop,
              pytest.mark.interp]


@pytest.fixture(scope="module")
def world(run_pki):
    return World(run_pki)


@pytest.fixture(scope="module")
def server(world):
    """nginx requiring a client certificate under our CA."""
    with world.nginx() as peer:
        yield peer


def session_for(identity, world, **kwargs):
    session = requests.Session()
    session.mount("https://", ClientCertAdapter(identity, ca_certs=world.ca_pem, **kwargs))
    return session


def code_of(excinfo):
    error = dyncert_error(excinfo.value)
    assert error is not None, repr(excinfo.value)
    assert "PRIVATE KEY" not in str(excinfo.value) and "PRIVATE KEY" not in error.message
    return error.code


# --- requests -----------------------------------------------------------------------------

def test_requests_presents_the_identity(world, server):
    with session_for(world.alice.identity, world) as session:
        seen = session.get(url(server), timeout=10).json()
    assert seen["fingerprint_sha1"] == world.alice.sha1 and "CN=alice" in seen["subject"]


def test_requests_refuses_a_server_from_another_ca(world):
    with world.nginx(world.stranger_server) as peer, session_for(world.alice.identity, world) as session:
        with pytest.raises(requests.exceptions.SSLError) as e:
            session.get(url(peer), timeout=10)
    assert code_of(e) == "unknown_ca"


def test_requests_checks_the_host_name(world):
    with world.nginx(world.localhost_only) as peer, session_for(world.alice.identity, world) as session:
        assert session.get(url(peer, "localhost"), timeout=10).json()["fingerprint_sha1"] == world.alice.sha1
        with pytest.raises(requests.exceptions.SSLError) as e:
            session.get(url(peer, "127.0.0.1"), timeout=10)
    assert code_of(e) == "hostname_mismatch"


def test_requests_certificate_rejected_by_the_server(world):
    with world.rejecting_peer() as peer, session_for(world.alice.identity, world) as session:
        with pytest.raises(requests.exceptions.ConnectionError) as e:
            session.get(url(peer), timeout=10)
    assert code_of(e) == "peer_rejected_certificate"


def test_requests_provider_switches_identity_between_two_requests(world):
    order = iter([world.alice, world.alice, world.bob, world.alice])
    with world.whoami_peer() as peer, session_for(lambda: next(order).identity, world) as session:
        seen = [session.get(url(peer), timeout=10).json()["fingerprint_sha256"] for _ in range(4)]
        accepted = peer.accepted
    assert seen == [world.alice.sha256, world.alice.sha256, world.bob.sha256, world.alice.sha256]
    assert accepted == 2  # alice's connection kept alive and reused; bob never got it


def test_requests_sixteen_threads_two_identities_never_cross(world, server):
    mine = threading.local()
    crossed, done = [], []
    with session_for(lambda: mine.who.identity, world, pool_maxsize=16) as session:
        def work(who):
            mine.who = who
            for _ in range(10):
                seen = session.get(url(server), timeout=20).json()["fingerprint_sha1"]
                (done if seen == who.sha1 else crossed).append(seen)
        threads = [threading.Thread(target=work, args=((world.alice, world.bob)[i % 2],)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert crossed == [] and len(done) == 160


@pytest.mark.parametrize("kwargs", [{"verify": False}, {"verify": "/etc/ssl/certs"}, {"cert": ("c.pem", "k.pem")}])
def test_requests_refuses_request_level_overrides(world, server, kwargs):
    with session_for(world.alice.identity, world) as session:
        with pytest.raises(InputError) as e:
            session.get(url(server), timeout=10, **kwargs)
        assert e.value.code == "invalid_request"
        assert session.get(url(server), timeout=10, verify=True).json()["fingerprint_sha1"] == world.alice.sha1


def test_requests_refuses_plain_http(world, server):
    session = requests.Session()
    session.mount("http://", ClientCertAdapter(world.alice.identity, ca_certs=world.ca_pem))
    with session, pytest.raises(InputError) as e:
        session.get(f"http://127.0.0.1:{server.port}/", timeout=10)
    assert e.value.code == "invalid_request"


@pytest.mark.parametrize("make", [ClientCertAdapter, ClientCertTransport, AsyncClientCertTransport])
@pytest.mark.parametrize("args, kwargs, code", [
    (("not an identity",), {}, "invalid_certificate"),
    ((None,), {}, "invalid_certificate"),
    ((), {"ca_certs": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "invalid_ca_certs"),
    ((), {"ca_certs": "/nonexistent/ca.pem"}, "invalid_ca_certs"),
    ((), {"tls_version": "SSLv3"}, "unsupported_tls_version"),
])
def test_bad_settings_fail_at_construction(world, make, args, kwargs, code):
    with pytest.raises(InputError) as e:
        make(*(args or (world.alice.identity,)), **kwargs)
    assert e.value.code == code
    assert make(world.alice.identity, ca_certs=world.ca_pem) is not None  # the good twin builds


@pytest.mark.parametrize("make", [ClientCertAdapter, ClientCertTransport, AsyncClientCertTransport])
def test_bad_ca_certs_fail_at_construction_with_a_provider_too(make):
    with pytest.raises(InputError) as e:
        make(lambda: None, ca_certs="/nonexistent/ca.pem")
    assert e.value.code == "invalid_ca_certs"


def test_provider_returning_something_else_fails_at_the_request(world, server):
    answers = iter(["a PEM string is not an identity", world.alice.identity])
    with session_for(lambda: next(answers), world) as session:
        with pytest.raises(InputError) as e:
            session.get(url(server), timeout=10)
        assert e.value.code == "invalid_certificate"
        assert session.get(url(server), timeout=10).json()["fingerprint_sha1"] == world.alice.sha1


# --- httpx ---------------------------------------------------------------------------------

def client_for(identity, world, **kwargs):
    return httpx.Client(transport=ClientCertTransport(identity, ca_certs=world.ca_pem, **kwargs), timeout=10)


def test_httpx_presents_the_identity(world, server):
    with client_for(world.alice.identity, world) as client:
        seen = client.get(url(server)).json()
    assert seen["fingerprint_sha1"] == world.alice.sha1 and "CN=alice" in seen["subject"]


def test_httpx_refuses_a_server_from_another_ca(world):
    with world.nginx(world.stranger_server) as peer, client_for(world.alice.identity, world) as client:
        with pytest.raises(httpx.ConnectError) as e:
            client.get(url(peer))
    assert code_of(e) == "unknown_ca"


def test_httpx_checks_the_host_name(world):
    with world.nginx(world.localhost_only) as peer, client_for(world.alice.identity, world) as client:
        assert client.get(url(peer, "localhost")).json()["fingerprint_sha1"] == world.alice.sha1
        with pytest.raises(httpx.ConnectError) as e:
            client.get(url(peer, "127.0.0.1"))
    assert code_of(e) == "hostname_mismatch"


def test_httpx_certificate_rejected_by_the_server(world):
    with world.rejecting_peer() as peer, client_for(world.alice.identity, world) as client:
        with pytest.raises(httpx.TransportError) as e:
            client.get(url(peer))
    assert code_of(e) == "peer_rejected_certificate"


def test_httpx_provider_switches_identity_between_two_requests(world):
    order = iter([world.alice, world.alice, world.bob, world.alice])
    with world.whoami_peer() as peer, client_for(lambda: next(order).identity, world) as client:
        seen = [client.get(url(peer)).json()["fingerprint_sha256"] for _ in range(4)]
        accepted = peer.accepted
    assert seen == [world.alice.sha256, world.alice.sha256, world.bob.sha256, world.alice.sha256]
    assert accepted == 2


@pytest.mark.parametrize("make", [ClientCertTransport, AsyncClientCertTransport])
@pytest.mark.parametrize("kwargs", [{"verify": False}, {"cert": ("c.pem", "k.pem")}])
def test_httpx_refuses_verify_and_cert(world, make, kwargs):
    with pytest.raises(InputError) as e:
        make(world.alice.identity, **kwargs)
    assert e.value.code == "invalid_request"
    assert make(world.alice.identity, retries=1) is not None  # other HTTPTransport arguments pass through


def test_httpx_async_hundred_tasks_two_identities_never_cross(world, server):
    who = contextvars.ContextVar("who")

    async def main():
        # 20 connections per identity: nginx here serves 64 at once.
        transport = AsyncClientCertTransport(lambda: who.get().identity, ca_certs=world.ca_pem,
                                             limits=httpx.Limits(max_connections=20))
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            async def task(person):
                who.set(person)
                response = await client.get(url(server))
                return person.sha1, response.json()["fingerprint_sha1"]
            return await asyncio.gather(*(task((world.alice, world.bob)[i % 2]) for i in range(100)))

    results = asyncio.run(main())
    assert len(results) == 100 and all(expected == seen for expected, seen in results)
    assert {seen for _, seen in results} == {world.alice.sha1, world.bob.sha1}


def test_httpx_async_refuses_a_server_from_another_ca(world):
    async def main(peer):
        transport = AsyncClientCertTransport(world.alice.identity, ca_certs=world.ca_pem)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            await client.get(url(peer))

    with world.nginx(world.stranger_server) as peer, pytest.raises(httpx.ConnectError) as e:
        asyncio.run(main(peer))
    assert code_of(e) == "unknown_ca"


def test_httpx_async_certificate_rejected_by_the_server(world):
    async def main(peer):
        transport = AsyncClientCertTransport(world.alice.identity, ca_certs=world.ca_pem)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            await client.get(url(peer))

    with world.rejecting_peer() as peer, pytest.raises(httpx.TransportError) as e:
        asyncio.run(main(peer))
    assert code_of(e) == "peer_rejected_certificate"


# --- shared contexts: no per-connection writes from the HTTP clients -------------------------

class _WatchedContexts:
    """Count set_alpn_protocols calls on real SSLContexts (what races SSL_new, which runs without the GIL)."""

    def __init__(self, monkeypatch):
        import ssl
        self.calls = 0
        original = ssl.SSLContext.set_alpn_protocols

        def counting(context, protocols):
            self.calls += 1
            return original(context, protocols)
        monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols", counting)


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_threaded_clients_do_not_rewrite_the_shared_context(world, server, monkeypatch, client):
    watched = _WatchedContexts(monkeypatch)
    if client == "requests":
        session = session_for(world.alice.identity, world)
        drop_connections = session.close  # closes the adapters' pools; the session stays usable
    else:
        transport = ClientCertTransport(world.alice.identity, ca_certs=world.ca_pem)
        session, drop_connections = httpx.Client(transport=transport, timeout=10), transport.close
    with session:
        for _ in range(3):
            drop_connections()  # a new connection each time, from the same cached context
            assert session.get(url(server)).json()["fingerprint_sha1"] == world.alice.sha1
    assert watched.calls <= 1  # set once, before the context is shared; never per connection


@pytest.mark.parametrize("make", [ClientCertAdapter, ClientCertTransport])
def test_a_weakening_write_to_the_shared_context_is_refused(world, make):
    import ssl
    from dyncert._adapt import SharedContext
    adapter = make(world.alice.identity, ca_certs=world.ca_pem)
    context = adapter._identities.context()[1] if make is ClientCertAdapter else \
        adapter._per_identity.identities.context()[1]
    assert isinstance(context, SharedContext)
    context.verify_mode = ssl.CERT_REQUIRED  # what urllib3 writes on each connection: accepted, a no-op
    for name, value in (("verify_mode", ssl.CERT_NONE), ("check_hostname", False)):
        with pytest.raises(InputError):
            setattr(context, name, value)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True


def test_a_silent_server_times_out_with_the_clients_own_exceptions(world):
    with peers.PythonTLSPeer(mode="silent") as peer:
        with session_for(world.alice.identity, world) as session, pytest.raises(requests.exceptions.Timeout) as e:
            session.get(url(peer), timeout=0.5)
        assert code_of(e) == "timeout"
        with client_for(world.alice.identity, world) as client, pytest.raises(httpx.TimeoutException) as e:
            client.get(url(peer), timeout=0.5)
        assert code_of(e) == "timeout"


def test_provider_reading_datastore_follows_a_rotation(ndb_context, settings, world, server):
    import models

    def store(who):
        models.put_identity("asalieri", 1, {"cert": who.creds.cert_pem.decode(), "key": who.creds.key_pem.decode(),
                                            "ca_certs": world.ca_pem, "host": "127.0.0.1", "port": server.port},
                            settings)

    store(world.alice)
    with session_for(lambda: models.load_identity("asalieri", 1, settings).identity, world) as session:
        first = session.get(url(server), timeout=10).json()["fingerprint_sha1"]
        store(world.bob)  # rotated in Datastore: the very next request presents it
        second = session.get(url(server), timeout=10).json()["fingerprint_sha1"]
    assert (first, second) == (world.alice.sha1, world.bob.sha1)
