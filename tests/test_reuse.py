"""Session resumption and keep-alive pools: faster, and never across identities."""

import json
import ssl

import pytest

from tests.harness import pki
from dyncert import calls, reuse
from dyncert.context import client_context
from dyncert.identity import ClientIdentity
from dyncert.targets import Target
from tests.harness.peers import PythonTLSPeer

FAST = calls.Timeouts(connect=5, handshake=5, read=5)


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server,
                alice=pki.client_cert(p.clients_ca, "alice"), bob=pki.client_cert(p.clients_ca, "bob"))


def context_for(creds, ca_pem):
    return client_context(ClientIdentity.from_pem(creds.cert_pem, creds.key_pem), ca_pem)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_per_identity_only(world, version):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem, max_version=version) as peer:
        target = Target("127.0.0.1", peer.port, "localhost")
        alice = context_for(world["alice"], world["pki"].ca_pem)
        bob = context_for(world["bob"], world["pki"].ca_pem)
        first = calls.handshake(alice, target, world["alice"].fingerprint_sha256, timeouts=FAST)
        second = calls.handshake(alice, target, world["alice"].fingerprint_sha256, timeouts=FAST)
        assert first["session_reused"] is False and second["session_reused"] is True
        other = calls.handshake(bob, target, world["bob"].fingerprint_sha256, timeouts=FAST)
        assert other["session_reused"] is False  # alice's session is never offered for bob
        again = calls.https_request(bob, target, world["bob"].fingerprint_sha256, timeouts=FAST)
        assert again["tls"]["session_reused"] is True
        assert json.loads(again["body"])["fingerprint_sha256"] == world["bob"].fingerprint_sha256


def test_a_session_cannot_be_offered_under_another_context(world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        target = Target("127.0.0.1", peer.port, "localhost")
        alice = context_for(world["alice"], world["pki"].ca_pem)
        calls.handshake(alice, target, world["alice"].fingerprint_sha256, timeouts=FAST)
        stolen = reuse.session(alice, target)
        assert stolen is not None
        bob = context_for(world["bob"], world["pki"].ca_pem)
        raw = calls.connect(target, FAST)
        with pytest.raises(ValueError, match="different SSLContext"):
            bob.wrap_socket(raw, server_hostname="localhost", session=stolen)
        raw.close()


def test_pooled_requests_keep_one_connection_per_identity(world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        target = Target("127.0.0.1", peer.port, "localhost")
        alice = context_for(world["alice"], world["pki"].ca_pem)
        bob = context_for(world["bob"], world["pki"].ca_pem)
        seen = []
        for ctx, who in ((alice, "alice"), (alice, "alice"), (bob, "bob"), (alice, "alice"), (bob, "bob")):
            reply = calls.https_request(ctx, target, world[who].fingerprint_sha256, timeouts=FAST)
            seen.append(json.loads(reply["body"])["fingerprint_sha256"])
            assert seen[-1] == world[who].fingerprint_sha256, who  # never another identity's connection
        assert peer.accepted == 2  # one kept-alive connection per identity


def test_reuse_off_opens_a_connection_per_request(world, monkeypatch):
    monkeypatch.setattr(reuse, "ENABLED", False)
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        target = Target("127.0.0.1", peer.port, "localhost")
        alice = context_for(world["alice"], world["pki"].ca_pem)
        for _ in range(3):
            reply = calls.https_request(alice, target, world["alice"].fingerprint_sha256, timeouts=FAST)
            assert reply["tls"]["session_reused"] is False
        assert peer.accepted == 3
