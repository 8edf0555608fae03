"""The README's recipes for clients that take an SSLContext (or PEM bytes): urllib3, aiohttp, asyncio, gRPC.

Each presents the identity to nginx (which names the certificate it saw) or a gRPC server requiring
client auth; each has twins that fail with the client's usual exception.
"""

import asyncio
import hashlib
import json
import ssl
from concurrent import futures

import aiohttp
import grpc
import pytest
import urllib3

from tests.harness import nginx
from dyncert import cached_client_context, client_context
from tests.harness.adapterworld import World, url

pytestmark = [pytest.mark.skipif(not nginx.available(), reason="nginx is not installed"), pytest.mark.interop,
              pytest.mark.interp]


@pytest.fixture(scope="module")
def world(run_pki):
    return World(run_pki)


@pytest.fixture(scope="module")
def server(world):
    with world.nginx() as peer:
        yield peer


@pytest.fixture(scope="module")
def stranger(world):
    """nginx presenting a certificate from another CA."""
    with world.nginx(world.stranger_server) as peer:
        yield peer


# --- urllib3: a PoolManager per identity, on a context of its own --------------------------------

def test_urllib3_pool_manager(world, server):
    # client_context, not the cached one: urllib3 sets verify_mode and ALPN on the context it is given.
    with urllib3.PoolManager(ssl_context=client_context(world.alice.identity, world.ca_pem)) as http:
        seen = json.loads(http.request("GET", url(server)).data)
    assert seen["fingerprint_sha1"] == world.alice.sha1


def test_urllib3_refuses_a_server_from_another_ca(world, stranger):
    with urllib3.PoolManager(ssl_context=client_context(world.alice.identity, world.ca_pem)) as http:
        with pytest.raises(urllib3.exceptions.SSLError) as e:
            http.request("GET", url(stranger), retries=False)
    assert isinstance(e.value.__context__ or e.value.args[0], ssl.SSLCertVerificationError)


# --- aiohttp: ssl= per request, so the provider's current identity is used -----------------------

async def aiohttp_get(target, contexts):
    async with aiohttp.ClientSession() as session:
        seen = []
        for ctx in contexts:
            async with session.get(target, ssl=ctx) as response:
                seen.append((await response.json())["fingerprint_sha1"])
        return seen


def test_aiohttp_ssl_per_request_follows_rotation(world, server):
    current = iter([world.alice, world.bob])

    def provider():
        return next(current).identity
    contexts = [cached_client_context(provider(), world.ca_pem) for _ in range(2)]
    assert asyncio.run(aiohttp_get(url(server), contexts)) == [world.alice.sha1, world.bob.sha1]


def test_aiohttp_refuses_a_server_from_another_ca(world, stranger):
    ctx = cached_client_context(world.alice.identity, world.ca_pem)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        asyncio.run(aiohttp_get(url(stranger), [ctx]))


def test_aiohttp_certificate_rejected_by_the_server(world):
    ctx = cached_client_context(world.alice.identity, world.ca_pem)
    with world.rejecting_peer() as peer, pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(aiohttp_get(url(peer), [ctx]))


# --- asyncio streams ---------------------------------------------------------------------------

async def raw_get(peer, ctx):
    reader, writer = await asyncio.open_connection(peer.host, peer.port, ssl=ctx, server_hostname="localhost")
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
    finally:
        writer.close()
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def test_asyncio_open_connection(world, server):
    seen = asyncio.run(raw_get(server, cached_client_context(world.bob.identity, world.ca_pem)))
    assert seen["fingerprint_sha1"] == world.bob.sha1


def test_asyncio_refuses_a_server_from_another_ca(world, stranger):
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(raw_get(stranger, cached_client_context(world.bob.identity, world.ca_pem)))


# --- gRPC: channel credentials straight from the identity's PEM bytes ----------------------------

def _whoami(request, context):
    """Answer with the SHA-256 of the client certificate gRPC verified."""
    (pem,) = context.auth_context()["x509_pem_cert"]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest().encode()


class GrpcServer:
    """A gRPC server requiring a client certificate under `client_ca_pem` (one generic unary method)."""

    def __init__(self, server_creds, client_ca_pem):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler("test.WhoAmI", {"Get": grpc.unary_unary_rpc_method_handler(
            _whoami, request_deserializer=None, response_serializer=None)})
        self.server.add_generic_rpc_handlers((handler,))
        credentials = grpc.ssl_server_credentials([(server_creds.key_pem, server_creds.cert_pem)],
                                                  root_certificates=client_ca_pem, require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(None).wait()


def grpc_call(port, identity, ca_pem):
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=identity.key_pem,
                                               certificate_chain=identity.chain_pem)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return channel.unary_unary("/test.WhoAmI/Get")(b"", timeout=10).decode()


def test_grpc_channel_credentials(world):
    with GrpcServer(world.server, world.ours.ca_pem) as server:
        assert grpc_call(server.port, world.alice.identity, world.ours.ca_pem) == world.alice.sha256
        assert grpc_call(server.port, world.bob.identity, world.ours.ca_pem) == world.bob.sha256


def test_grpc_certificate_rejected_by_the_server(world):
    with GrpcServer(world.server, world.ours.ca_pem) as server, pytest.raises(grpc.RpcError) as e:
        grpc_call(server.port, world.mallory.identity, world.ours.ca_pem)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_refuses_a_server_from_another_ca(world):
    with GrpcServer(world.stranger_server, world.ours.ca_pem) as server, pytest.raises(grpc.RpcError) as e:
        grpc_call(server.port, world.alice.identity, world.ours.ca_pem)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
