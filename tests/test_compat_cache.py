"""dyncert.compat's cache keeps contexts, never key bytes (issue 11, "Also")."""

import datetime
import gc
import io
import socket
import ssl
import types

import pytest

from dyncert import compat
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import peers, pki

pytestmark = pytest.mark.interp


@pytest.fixture(scope="module")
def world(run_pki):
    ours = run_pki.ours
    return types.SimpleNamespace(ours=ours, server=run_pki.server,
                                 client=pki.client_cert(ours.clients_ca, "asalieri"),
                                 rsa_client=pki.client_cert(ours.clients_ca, "rsa", key_type=pki.RSA))


def key_lines(creds):
    """The base64 lines of the private key (any of them found in memory is key material)."""
    return [line for line in creds.key_pem.decode().splitlines() if line and not line.startswith("-----")]


def reachable(root):
    """Every Python object reachable from `root` (SSLContext internals are OpenSSL's, not Python objects)."""
    seen, stack, out = set(), [root], []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type, types.FunctionType)):
            continue
        seen.add(id(obj))
        out.append(obj)
        stack.extend(gc.get_referents(obj))
    return out


def held_key_material(creds):
    """Objects in compat's caches that hold the key: a ClientIdentity, or text/bytes with a key line."""
    lines = key_lines(creds)
    found = []
    for name, value in vars(compat).items():
        if name.startswith("__") or isinstance(value, (types.ModuleType, type, types.FunctionType)):
            continue
        for obj in reachable(value):
            if isinstance(obj, ClientIdentity):
                found.append((name, "ClientIdentity"))
            elif isinstance(obj, (str, bytes)):
                text = obj.decode("latin-1") if isinstance(obj, bytes) else obj
                if any(line in text for line in lines):
                    found.append((name, type(obj).__name__))
    return found


@pytest.mark.parametrize("which", ["client", "rsa_client"])
def test_no_key_bytes_are_kept_after_wrap_socket(world, which):
    creds = getattr(world, which)
    with socket.socket() as raw:  # not connected: the context is built, no handshake happens
        tls = compat.wrap_socket(raw, keyfile=io.StringIO(creds.key_pem.decode()),
                                 certfile=io.StringIO(creds.cert_pem.decode()), cert_reqs=ssl.CERT_REQUIRED,
                                 ca_certs=world.ours.ca_pem, do_handshake_on_connect=False)
        tls.close()
    assert key_lines(creds)  # the probe looks for something real
    assert held_key_material(creds) == []


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_the_cached_context_still_presents_the_certificate(world, tls):
    # The twin: the second call is served from the cache (no key kept) and still shakes hands with it.
    record = (io.StringIO(world.client.key_pem.decode()), io.StringIO(world.client.cert_pem.decode()))
    version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[tls]
    with peers.PythonTLSPeer(world.server, world.ours.ca_pem, mode="echo", min_version=version,
                             max_version=version) as peer:
        for attempt in range(2):
            keyfile, certfile = (io.StringIO(f.getvalue()) for f in record)
            sock = socket.create_connection((peer.host, peer.port), timeout=5)
            with compat.wrap_socket(sock, keyfile=keyfile, certfile=certfile, cert_reqs=ssl.CERT_REQUIRED,
                                    ca_certs=world.ours.ca_pem, server_hostname="localhost") as tls_sock:
                tls_sock.sendall(b"hi\n")
                assert tls_sock.recv(10) == b"hi\n"
            assert peer.client_cert_seen["fingerprint_sha256"] == world.client.fingerprint_sha256
    assert held_key_material(world.client) == []


@pytest.mark.parametrize("days_left, error", [(30, None), (-1, "certificate_expired")])
def test_a_cached_entry_rechecks_validity(world, days_left, error, monkeypatch):
    # Cached by content, yet an identity that has expired since is refused with the precise code.
    creds = pki.client_cert(world.ours.clients_ca, f"short-{days_left}")
    args = dict(keyfile=io.StringIO(creds.key_pem.decode()), certfile=io.StringIO(creds.cert_pem.decode()),
                cert_reqs=ssl.CERT_REQUIRED, ca_certs=world.ours.ca_pem, do_handshake_on_connect=False)
    with socket.socket() as raw:
        compat.wrap_socket(raw, **args).close()  # cached now
    not_after = ClientIdentity.from_pem(creds.cert_pem, creds.key_pem).not_after
    later = not_after - datetime.timedelta(days=days_left)

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return later

    monkeypatch.setattr(compat.datetime, "datetime", Clock)
    args.update(keyfile=io.StringIO(creds.key_pem.decode()), certfile=io.StringIO(creds.cert_pem.decode()))
    with socket.socket() as raw:
        if error is None:
            compat.wrap_socket(raw, **args).close()
        else:
            with pytest.raises(InputError) as e:
                compat.wrap_socket(raw, **args)
            assert e.value.code == error
