"""hosts=: the adapters present the client certificate only to the partner's hosts (issue #20, item 3).

The partner is a loopback peer at 127.0.0.1; the other host is a peer at 127.0.0.10 (also loopback)
with a certificate valid for that address under the trusted CA, as a public host has a public one.
"""

import asyncio
import urllib.parse

import httpx
import pytest
import requests

from dyncert.errors import InputError
from dyncert.httpx import AsyncClientCertTransport, ClientCertTransport
from dyncert.requests import ClientCertAdapter
from tests.harness import peers, pki
from tests.harness.adapterworld import World, url

pytestmark = [pytest.mark.interp]  # differs by interpreter: the signer binding / loading tiers

OTHER_HOST = "127.0.0.10"


@pytest.fixture(scope="module")
def world(run_pki):
    world = World(run_pki)
    world.other_server = pki.server_cert(world.ours.root, OTHER_HOST)
    return world


@pytest.fixture
def partner(world):
    with world.whoami_peer() as peer:
        yield peer


@pytest.fixture
def other(world):
    """A host the partner sends us to: it records any client certificate presented and every TCP connect."""
    with peers.PythonTLSPeer(world.other_server, client_ca_pem=world.ours.ca_pem, host=OTHER_HOST) as peer:
        yield peer


def redirect(partner, to):
    return url(partner, path="/redirect?to=" + urllib.parse.quote(to, safe=""))


def httpx_client(world, **kwargs):
    transport = ClientCertTransport(world.alice.identity, ca_certs=world.ca_pem, **kwargs)
    return httpx.Client(transport=transport, timeout=10, follow_redirects=True)


def test_without_hosts_a_redirect_takes_the_certificate_elsewhere(world, partner, other):
    """The attack, as the reviewer saw it: what hosts= is for."""
    with httpx_client(world) as client:
        client.get(redirect(partner, url(other, OTHER_HOST)))
    assert other.client_cert_seen["fingerprint_sha256"] == world.alice.sha256


def test_httpx_refuses_a_redirect_to_another_host_before_connecting(world, partner, other):
    with httpx_client(world, hosts=["127.0.0.1"]) as client, pytest.raises(InputError) as e:
        client.get(redirect(partner, url(other, OTHER_HOST)))
    assert e.value.code == "target_not_allowed" and OTHER_HOST in e.value.message
    assert other.accepted == 0 and other.client_cert_seen is None  # no TCP connect, no handshake
    assert partner.accepted == 1


def test_httpx_follows_a_same_host_redirect(world, partner):
    with httpx_client(world, hosts=[f"127.0.0.1:{partner.port}"]) as client:
        seen = client.get(redirect(partner, url(partner, path="/landed"))).json()
    assert seen["path"] == "/landed" and seen["fingerprint_sha256"] == world.alice.sha256


def test_httpx_async_refuses_a_redirect_to_another_host(world, partner, other):
    async def main(target):
        transport = AsyncClientCertTransport(world.alice.identity, ca_certs=world.ca_pem, hosts="127.0.0.1")
        async with httpx.AsyncClient(transport=transport, timeout=10, follow_redirects=True) as client:
            return (await client.get(redirect(partner, target))).json()

    assert asyncio.run(main(url(partner, path="/landed")))["path"] == "/landed"  # the twin: same host
    with pytest.raises(InputError) as e:
        asyncio.run(main(url(other, OTHER_HOST)))
    assert e.value.code == "target_not_allowed"
    assert other.accepted == 0 and other.client_cert_seen is None


def test_requests_refuses_a_redirect_to_another_host_and_follows_one_on_the_same(world, partner, other):
    with requests.Session() as session:
        session.mount("https://", ClientCertAdapter(world.alice.identity, ca_certs=world.ca_pem,
                                                    hosts=["127.0.0.1"]))
        assert session.get(redirect(partner, url(partner, path="/landed")), timeout=10).json()["path"] == "/landed"
        with pytest.raises(InputError) as e:
            session.get(redirect(partner, url(other, OTHER_HOST)), timeout=10)
    assert e.value.code == "target_not_allowed"
    assert other.accepted == 0 and other.client_cert_seen is None


def test_a_mount_prefix_without_its_slash_matches_another_host(world, other):
    """requests matches mount prefixes as text: "https://127.0.0.1" also serves https://127.0.0.10:port/."""
    with requests.Session() as session:
        adapter = ClientCertAdapter(world.alice.identity, ca_certs=world.ca_pem)
        session.mount("https://127.0.0.1", adapter)
        assert session.get_adapter(url(other, OTHER_HOST)) is adapter
        session.get(url(other, OTHER_HOST), timeout=10)
    assert other.client_cert_seen["fingerprint_sha256"] == world.alice.sha256  # the certificate went there


def test_hosts_refuses_what_a_mount_prefix_matches_by_accident(world, partner, other):
    with requests.Session() as session:
        session.mount("https://127.0.0.1", ClientCertAdapter(world.alice.identity, ca_certs=world.ca_pem,
                                                             hosts=["127.0.0.1"]))
        with pytest.raises(InputError) as e:
            session.get(url(other, OTHER_HOST), timeout=10)
        assert e.value.code == "target_not_allowed"
        assert session.get(url(partner), timeout=10).json()["fingerprint_sha256"] == world.alice.sha256  # twin
    assert other.accepted == 0 and other.client_cert_seen is None


@pytest.mark.parametrize("make", [ClientCertAdapter, ClientCertTransport, AsyncClientCertTransport])
@pytest.mark.parametrize("hosts", [[], "", ["partner.example:99999"], ["bad host"], [b"partner.example"]])
def test_bad_hosts_fail_at_construction(world, make, hosts):
    with pytest.raises(InputError) as e:
        make(world.alice.identity, ca_certs=world.ca_pem, hosts=hosts)
    assert e.value.code == "invalid_target"
    assert make(world.alice.identity, ca_certs=world.ca_pem, hosts=["*.partner.example", "[::1]:443"]) is not None


@pytest.mark.parametrize("hosts, host", [(["[::1]"], "[::1]"), (["LOCALHOST"], "localhost"),
                                         (["localhost."], "localhost")])
def test_hosts_compare_names_and_addresses_as_the_connection_would(world, hosts, host):
    """Case, a trailing dot and IPv6 brackets do not matter; the twin: the listed host's own address does."""
    family_host = "::1" if ":" in host else "127.0.0.1"
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.ours.ca_pem, host=family_host) as peer:
        with httpx_client(world, hosts=hosts) as client:
            assert client.get(url(peer, host)).json()["fingerprint_sha256"] == world.alice.sha256
            with pytest.raises(InputError) as e:
                client.get(url(peer, "127.0.0.1" if family_host == "::1" else "[::1]"))
        with requests.Session() as session:
            session.mount("https://", ClientCertAdapter(world.alice.identity, ca_certs=world.ca_pem, hosts=hosts))
            assert session.get(url(peer, host), timeout=10).json()["fingerprint_sha256"] == world.alice.sha256
    assert e.value.code == "target_not_allowed"
