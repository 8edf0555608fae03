"""dyncert.calls against real loopback peers (Python ssl and openssl s_server); every code from a real scenario."""

import datetime
import json
import socket
import ssl

import pytest
from cryptography import x509

from dyncert import calls, targets
from dyncert.context import client_context
from dyncert.errors import InputError, RemoteError
from dyncert.identity import ClientIdentity
from tests.harness import peers, pki, ports

FAST = calls.Timeouts(connect=5, handshake=5, read=5)
TLS_FIELDS = {"tls_version", "cipher", "peer", "server_hostname", "hostname_verified",
              "client_fingerprint_sha256", "session_reused", "elapsed_ms"}  # API.md + session_reused


@pytest.fixture(scope="module")
def world(run_pki):
    """Our PKI (server + client chain with intermediate), a stranger PKI, identities made from both."""
    ours, stranger = run_pki.ours, run_pki.stranger
    client = pki.client_cert(ours.clients_ca)
    rsa_client = pki.client_cert(ours.clients_ca, "rsa-client", key_type=pki.RSA)
    foreign = pki.client_cert(stranger.clients_ca, "foreigner")
    expired = pki.expired(ours.clients_ca, pki.client_cert, "old-client")

    class World:
        pass
    w = World()
    w.ours, w.stranger = ours, stranger
    w.server = run_pki.server
    w.localhost_only = pki.server_cert(ours.root, "localhost")
    w.expired_server = pki.expired(ours.root, pki.server_cert)
    now = datetime.datetime.now(datetime.timezone.utc)
    w.future_server = pki.server_cert(ours.root, not_before=now + datetime.timedelta(days=1),
                                      not_after=now + datetime.timedelta(days=30))
    w.client = ClientIdentity.from_pem(client.cert_pem, client.key_pem)
    w.rsa_client = ClientIdentity.from_pem(rsa_client.cert_pem, rsa_client.key_pem)
    w.foreign = ClientIdentity.from_pem(foreign.cert_pem, foreign.key_pem)
    w.expired_client = ClientIdentity.from_pem(expired.cert_pem, expired.key_pem, check_validity=False)
    return w


def ctx(identity, ca_pem, tls_version=None):
    return client_context(identity, ca_pem, tls_version)


def target(peer, sni="localhost"):
    return targets.validate_target(peer.host, peer.port, sni)


def call_error(fn, *args, **kwargs):
    """The RemoteError code `fn` raises."""
    with pytest.raises(RemoteError) as e:
        fn(*args, **kwargs)
    assert "PRIVATE KEY" not in e.value.message
    return e.value.code


def python_peer(w, **kw):
    kw.setdefault("client_ca_pem", w.ours.ca_pem)
    return peers.PythonTLSPeer(kw.pop("server", w.server), **kw)


def openssl_peer(w, mode="www", tls=None, **kw):
    kw.setdefault("client_ca_pem", w.ours.ca_pem)
    return peers.OpenSSLServer(kw.pop("server", w.server), mode=mode, tls=tls, **kw)


# --- handshake: both peers, both TLS versions, accepted and rejected -------------------------

PEERS = {"python": lambda w, tls: python_peer(w, min_version=tls, max_version=tls),
         "openssl": lambda w, tls: openssl_peer(w, tls={ssl.TLSVersion.TLSv1_2: "1.2", ssl.TLSVersion.TLSv1_3: "1.3"}[tls])}
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("kind", PEERS)
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_handshake_accepted(world, kind, version):
    with PEERS[kind](world, version) as peer:
        result = calls.handshake(ctx(world.client, world.ours.ca_pem), target(peer), world.client.fingerprint_sha256,
                                 timeouts=FAST)
    assert result["ok"] is True and set(result) == TLS_FIELDS | {"ok", "note"}
    assert result["tls_version"] == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    assert result["server_hostname"] == "localhost" and result["hostname_verified"] is True
    assert result["peer"]["san"] == ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    issuer = x509.load_pem_x509_certificate(world.ours.ca_pem).subject
    assert result["peer"]["issuer"] == ", ".join(a.rfc4514_string() for a in issuer)  # openssl order
    assert result["client_fingerprint_sha256"] == world.client.fingerprint_sha256
    assert isinstance(result["elapsed_ms"], float) and result["elapsed_ms"] > 0
    if kind == "python":
        assert peer.client_cert_seen["fingerprint_sha256"] == world.client.fingerprint_sha256


@pytest.mark.parametrize("kind", PEERS)
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_handshake_rejected_client_certificate(world, kind, version):
    # TLS 1.3: the verdict arrives after our handshake completed; handshake() must still see it.
    with PEERS[kind](world, version) as peer:
        code = call_error(calls.handshake, ctx(world.foreign, world.ours.ca_pem), target(peer),
                          world.foreign.fingerprint_sha256, timeouts=FAST)
    assert code == "peer_rejected_certificate"


@pytest.mark.parametrize("identity, accepted", [("client", True), ("foreign", False)])
def test_tls13_peer_without_session_tickets(world, identity, accepted):
    # No ticket means no positive sign: the rejection alert must still be caught, acceptance still reported.
    ident = getattr(world, identity)
    with python_peer(world, min_version=ssl.TLSVersion.TLSv1_3, num_tickets=0) as peer:
        args = (ctx(ident, world.ours.ca_pem), target(peer), ident.fingerprint_sha256)
        if accepted:
            assert calls.handshake(*args, timeouts=FAST)["tls_version"] == "TLSv1.3"
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == "peer_rejected_certificate"


@pytest.mark.parametrize("identity, accepted", [("client", True), ("expired_client", False)])
def test_expired_client_certificate_is_rejected_by_the_peer(world, identity, accepted):
    ident = getattr(world, identity)
    with python_peer(world) as peer:
        args = (ctx(ident, world.ours.ca_pem), target(peer), ident.fingerprint_sha256)
        if accepted:
            assert calls.handshake(*args, timeouts=FAST)["ok"]
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == "peer_rejected_certificate"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize("with_cert", [True, False])
def test_missing_client_certificate(world, version, with_cert):
    # A plain context with no certificate: certificate_required (1.3) / handshake_failure (1.2).
    context = ctx(world.client, world.ours.ca_pem)
    if not with_cert:
        context = ssl.create_default_context(cadata=world.ours.ca_pem.decode())
    with python_peer(world, min_version=version, max_version=version) as peer:
        if with_cert:
            assert calls.handshake(context, target(peer), "fp", timeouts=FAST)["ok"]
        else:
            assert call_error(calls.handshake, context, target(peer), "fp", timeouts=FAST) == "peer_rejected_certificate"


# --- the peer's certificate ---------------------------------------------------------------

@pytest.mark.parametrize("trusted, code", [("ours", None), ("stranger", "unknown_ca")])
def test_peer_verified_against_given_ca(world, trusted, code):
    with python_peer(world) as peer:
        args = (ctx(world.client, getattr(world, trusted).ca_pem), target(peer), world.client.fingerprint_sha256)
        if code is None:
            assert calls.handshake(*args, timeouts=FAST)["ok"]
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == code


@pytest.mark.parametrize("server, code", [("server", None), ("expired_server", "peer_certificate_expired"),
                                          ("future_server", "peer_certificate_not_yet_valid")])
def test_expired_peer_certificate(world, server, code):
    with python_peer(world, server=getattr(world, server)) as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer), world.client.fingerprint_sha256)
        if code is None:
            assert calls.handshake(*args, timeouts=FAST)["ok"]
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == code


@pytest.mark.parametrize("server, sni, code", [
    ("server", "localhost", None),
    ("server", "other.example.com", "hostname_mismatch"),
    ("server", None, None),                        # SAN IP 127.0.0.1
    ("localhost_only", None, "hostname_mismatch"),  # IP address mismatch
])
def test_hostname_checked(world, server, sni, code):
    with python_peer(world, server=getattr(world, server)) as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer, sni), world.client.fingerprint_sha256)
        if code is None:
            assert calls.handshake(*args, timeouts=FAST)["server_hostname"] == (sni or "127.0.0.1")
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == code


# --- versions, network failures ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["python", "openssl"])
@pytest.mark.parametrize("pinned, code", [("TLSv1_2", None), ("TLSv1_3", "protocol_version")])
def test_protocol_version(world, kind, pinned, code):
    with PEERS[kind](world, ssl.TLSVersion.TLSv1_2) as peer:  # a 1.2-only peer
        args = (ctx(world.client, world.ours.ca_pem, pinned), target(peer), world.client.fingerprint_sha256)
        if code is None:
            assert calls.handshake(*args, timeouts=FAST)["tls_version"] == "TLSv1.2"
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == code


def test_connection_refused(world):
    t = targets.validate_target("127.0.0.1", ports.refused_port(), "localhost")
    assert call_error(calls.handshake, ctx(world.client, world.ours.ca_pem), t, "fp", timeouts=FAST) \
        == "connection_refused"


def test_dns_failure(world):
    t = targets.validate_target("nonexistent.invalid", 443)
    assert call_error(calls.handshake, ctx(world.client, world.ours.ca_pem), t, "fp", timeouts=FAST) == "dns_failure"


@pytest.mark.parametrize("mode, code", [("https", None), ("reset", "connection_reset"),
                                        ("silent", "timeout"), ("garbage", "handshake_failed")])
def test_misbehaving_peers(world, mode, code):
    small = calls.Timeouts(connect=5, handshake=0.3, read=0.3)
    with python_peer(world, mode=mode) as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer), world.client.fingerprint_sha256)
        if code is None:
            assert calls.handshake(*args, timeouts=small)["ok"]
        else:
            assert call_error(calls.handshake, *args, timeouts=small) == code


@pytest.mark.parametrize("allowed, ok", [(["localhost", "127.0.0.1"], True), (["peer.example.com"], False)])
def test_allowed_targets_checked_before_connecting(world, allowed, ok):
    with python_peer(world) as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer), world.client.fingerprint_sha256)
        if ok:
            assert calls.handshake(*args, timeouts=FAST, allowed=allowed)["ok"]
        else:
            with pytest.raises(InputError) as e:
                calls.handshake(*args, timeouts=FAST, allowed=allowed)
            assert e.value.code == "target_not_allowed" and peer.accepted == 0


# --- https_request -----------------------------------------------------------------------

@pytest.mark.parametrize("identity", ["client", "rsa_client"])
def test_https_request_names_the_client_certificate(world, identity):
    ident = getattr(world, identity)
    with python_peer(world) as peer:
        result = calls.https_request(ctx(ident, world.ours.ca_pem), target(peer), ident.fingerprint_sha256,
                                     method="POST", path="/submit?x=1", headers={"X-Test": "1"}, body="héllo",
                                     timeouts=FAST)
    assert result["ok"] and result["status"] == 200 and result["truncated"] is False
    seen = json.loads(result["body"])
    assert seen["fingerprint_sha256"] == ident.fingerprint_sha256 == result["tls"]["client_fingerprint_sha256"]
    assert seen["subject"] == ident.subject
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/submit?x=1", "héllo")
    assert seen["host"] == f"localhost:{peer.port}"
    assert set(result["tls"]) == TLS_FIELDS and result["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_https_request_rejected_client_certificate(world, version):
    with python_peer(world, min_version=version, max_version=version) as peer:
        code = call_error(calls.https_request, ctx(world.foreign, world.ours.ca_pem), target(peer),
                          world.foreign.fingerprint_sha256, method="GET", path="/", timeouts=FAST)
    assert code == "peer_rejected_certificate"


@pytest.mark.parametrize("trusted, code", [("ours", None), ("stranger", "unknown_ca")])
def test_https_request_openssl_peer(world, trusted, code):
    with openssl_peer(world) as peer:
        args = (ctx(world.client, getattr(world, trusted).ca_pem), target(peer), world.client.fingerprint_sha256)
        if code is None:
            result = calls.https_request(*args, method="GET", path="/", timeouts=FAST)
            assert result["status"] == 200 and "Ciphers" in result["body"]
        else:
            assert call_error(calls.https_request, *args, method="GET", path="/", timeouts=FAST) == code


@pytest.mark.parametrize("size, truncated", [(calls.MAX_BODY, False), (calls.MAX_BODY + 1, True),
                                             (3 * calls.MAX_BODY, True)])
def test_https_request_body_cap(world, size, truncated):
    with python_peer(world) as peer:
        result = calls.https_request(ctx(world.client, world.ours.ca_pem), target(peer),
                                     world.client.fingerprint_sha256, method="GET", path=f"/bytes/{size}",
                                     timeouts=FAST)
    assert result["truncated"] is truncated and len(result["body"]) == min(size, calls.MAX_BODY)


def test_https_request_head(world):
    with python_peer(world) as peer:
        result = calls.https_request(ctx(world.client, world.ours.ca_pem), target(peer),
                                     world.client.fingerprint_sha256, method="HEAD", path="/", timeouts=FAST)
    assert result["status"] == 200 and result["body"] == "" and int(result["headers"]["Content-Length"]) > 0


@pytest.mark.parametrize("method, path", [("TRACE", "/"), ("get", "/"), ("GET", "relative"), ("GET", "")])
def test_https_request_refuses_bad_method_or_path(world, method, path):
    t = targets.validate_target("127.0.0.1", ports.refused_port())
    with pytest.raises(InputError) as e:
        calls.https_request(ctx(world.client, world.ours.ca_pem), t, "fp", method=method, path=path)
    assert e.value.code == "invalid_request"


@pytest.mark.parametrize("mode, code", [("https", None), ("silent", "timeout"), ("reset", "connection_reset")])
def test_https_request_network_failures(world, mode, code):
    small = calls.Timeouts(connect=5, handshake=0.3, read=0.3)
    with python_peer(world, mode=mode) as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer), world.client.fingerprint_sha256)
        if code is None:
            assert calls.https_request(*args, method="GET", path="/", timeouts=small)["status"] == 200
        else:
            assert call_error(calls.https_request, *args, method="GET", path="/", timeouts=small) == code


# --- echo --------------------------------------------------------------------------------

@pytest.mark.parametrize("identity, code", [("client", None), ("foreign", "peer_rejected_certificate")])
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_echo_python_peer(world, version, identity, code):
    ident = getattr(world, identity)
    with python_peer(world, mode="echo", min_version=version, max_version=version) as peer:
        args = (ctx(ident, world.ours.ca_pem), target(peer), ident.fingerprint_sha256)
        if code is None:
            result = calls.echo(*args, send="hello\n", timeouts=FAST)
            assert result["received"] == "hello\n" and set(result["tls"]) == TLS_FIELDS
            assert peer.client_cert_seen["fingerprint_sha256"] == ident.fingerprint_sha256
        else:
            assert call_error(calls.echo, *args, send="hello\n", timeouts=FAST) == code


@pytest.mark.parametrize("identity, code", [("client", None), ("foreign", "peer_rejected_certificate")])
@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_echo_openssl_peer(world, tls, identity, code):
    ident = getattr(world, identity)
    with openssl_peer(world, mode="rev", tls=tls) as peer:  # s_server -rev answers each line reversed
        args = (ctx(ident, world.ours.ca_pem), target(peer), ident.fingerprint_sha256)
        if code is None:
            assert calls.echo(*args, send=b"hello\n", timeouts=FAST)["received"] == "olleh\n"
        else:
            assert call_error(calls.echo, *args, send=b"hello\n", timeouts=FAST) == code


@pytest.mark.parametrize("send, code", [("two\nlines\n", None), ("no newline", "timeout")])
def test_echo_reads_until_newline(world, send, code):
    # The echo peer answers only complete lines: without one, the read timeout ends the call.
    small = calls.Timeouts(connect=5, handshake=5, read=0.3)
    with python_peer(world, mode="echo") as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer), "fp")
        if code is None:
            assert calls.echo(*args, send=send, timeouts=small)["received"].startswith("two\n")
        else:
            assert call_error(calls.echo, *args, send=send, timeouts=small) == code


def test_tls_info_to_dict_fields():
    info = calls.TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", {"subject": "CN=x", "issuer": "CN=y", "san": [],
                         "not_after": "2030-01-01T00:00:00Z"}, "x", True, "ab", 1.5)
    assert set(info.to_dict()) == TLS_FIELDS


@pytest.mark.parametrize("mode, code", [("https", None), ("echo", "invalid_response")])
def test_https_request_to_a_non_http_peer(world, mode, code):
    # The echo peer sends the request line back: a TLS peer that does not speak HTTP.
    with python_peer(world, mode=mode) as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer), world.client.fingerprint_sha256)
        if code is None:
            assert calls.https_request(*args, method="GET", path="/", timeouts=FAST)["status"] == 200
        else:
            assert call_error(calls.https_request, *args, method="GET", path="/", timeouts=FAST) == code


@pytest.mark.parametrize("server, code", [("server", None), ("localhost_only", "hostname_mismatch")])
def test_ipv6_peer(world, server, code):
    # The IPv6 literal is the name checked: it must be an iPAddress SAN of the peer's certificate.
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with python_peer(world, server=getattr(world, server), host="::1") as peer:
        args = (ctx(world.client, world.ours.ca_pem), target(peer, None), world.client.fingerprint_sha256)
        if code is None:
            result = calls.https_request(*args, method="GET", path="/", timeouts=FAST)
            assert json.loads(result["body"])["host"] == f"[::1]:{peer.port}"
        else:
            assert call_error(calls.handshake, *args, timeouts=FAST) == code
