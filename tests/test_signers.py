"""Signer-backed identities (issue 18): the ctypes binding against real loopback servers, its failures and limits.

Servers: `openssl s_server -Verify 5 -verify_return_error` (pinned to TLS 1.2 or 1.3) and the in-process
Python peer that reports which client certificate it saw. Signers: LocalSigner and small duck-typed
signers that fail in each way the contract names. On the Cloud CLI's 3.12 (_ssl built in, OpenSSL
symbols hidden) every signer is `signer_unsupported` at context build: the first test says so there,
the others skip with that reason.
"""

import gc
import json
import ssl
import threading

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

import dyncert
from dyncert import calls, context, runtime, targets
from dyncert.errors import InputError, RemoteError
from dyncert.identity import ClientIdentity
from dyncert.requests import ClientCertAdapter, dyncert_error
from dyncert.signers import LocalSigner, SignerIdentity, _binding
from tests.harness import peers, pki

pytestmark = [pytest.mark.interp]  # differs by interpreter: the signer binding / loading tiers

FAST = calls.Timeouts(connect=5, handshake=5, read=5, total=10)
BINDING = runtime.signer_binding()
needs_binding = pytest.mark.skipif(not BINDING["available"], reason=f"signer_unsupported here: {BINDING['detail']}")
PSS = ("rsa_pss_sha256", "rsa_pss_sha384", "rsa_pss_sha512")
PKCS1 = ("rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512")


class Counting(LocalSigner):
    """LocalSigner that counts its signatures and the schemes asked."""

    def __init__(self, key, schemes=None):
        super().__init__(key, schemes)
        self.asked = []

    def sign(self, data, scheme):
        self.asked.append(scheme)
        return super().sign(data, scheme)


def private_key(creds):
    return serialization.load_pem_private_key(creds.key_pem, None)


@pytest.fixture(scope="module")
def world():
    w = type("World", (), {})()
    w.ours, w.stranger = pki.make_pki("signers"), pki.make_pki("stranger")
    w.server = pki.server_cert(w.ours.root)
    w.ec = pki.client_cert(w.ours.clients_ca, "signer-ec")
    w.rsa = pki.client_cert(w.ours.clients_ca, "signer-rsa", key_type=pki.RSA)
    w.ca_pem = w.ours.ca_pem
    return w


def signer_identity(creds, schemes=None, signer_class=Counting, **kwargs):
    return SignerIdentity(creds.cert_pem, signer_class(private_key(creds), schemes), **kwargs)


def target(peer):
    return targets.Target("127.0.0.1", peer.port)


def handshake(ident, peer, ca_pem, tls_version=None, timeouts=FAST, cache=None):
    ctx = (cache if cache is not None else context.ContextCache(0)).client_context(ident, ca_pem, tls_version)
    return calls.handshake(ctx, target(peer), ident.fingerprint_sha256, timeouts=timeouts)


def remote_code(ident, peer, ca_pem, **kwargs):
    try:
        handshake(ident, peer, ca_pem, **kwargs)
    except RemoteError as e:
        return e
    return None


def test_this_interpreter_binds_or_says_signer_unsupported(world):
    """3.11/3.13: the binding loads. The Cloud CLI's 3.12: a typed 400 at context build, never a crash."""
    import _ssl
    ident = signer_identity(world.ec)
    if getattr(_ssl, "__file__", None):
        assert BINDING["available"], BINDING["detail"]
        assert context.client_context(ident, world.ca_pem).signer_identity is ident
        return
    with pytest.raises(InputError) as caught:
        context.client_context(ident, world.ca_pem)
    assert caught.value.code == "signer_unsupported" and "static OpenSSL" in caught.value.message
    assert not BINDING["available"]


# --- handshakes: every key type, TLS 1.2 and 1.3, one signature each ------------------------

@needs_binding
@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("kind,schemes", [
    (pki.EC, None), ("p384", None), ("p521", None), (pki.RSA, PSS), (pki.RSA, PKCS1), ("rsa4096", None)])
def test_openssl_server_verifies_the_signature(world, tls, kind, schemes):
    creds = _creds(world, kind)
    ident = signer_identity(creds, schemes)
    if tls == "1.3" and schemes == PKCS1:
        pytest.skip("PKCS#1-only in TLS 1.3: test_pkcs1_only_signer_against_a_tls13_only_server")
    with peers.OpenSSLServer(world.server, world.ca_pem, tls=tls) as server:
        info = handshake(ident, server, world.ca_pem)
        assert info["tls_version"] == f"TLSv{tls}"
        assert len(ident.signer.asked) == 1  # one signature per full handshake
        assert server.log().count("verify return:1") >= 2  # s_server verified our chain
        stranger = signer_identity(pki.client_cert(world.stranger.clients_ca, "stranger"), schemes) \
            if kind == pki.EC else None
        if stranger is not None:  # the twin on the same server: a signer-backed certificate it does not trust
            assert remote_code(stranger, server, world.ca_pem).code == "peer_rejected_certificate"


_EXTRA = {}


def _creds(world, kind):
    """Client credentials of `kind` (trustme for EC/RSA-2048; cryptography for the others), made once."""
    if kind == pki.EC:
        return world.ec
    if kind == pki.RSA:
        return world.rsa
    if kind not in _EXTRA:
        key = {"p384": lambda: ec.generate_private_key(ec.SECP384R1()),
               "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
               "rsa4096": lambda: rsa.generate_private_key(65537, 4096)}[kind]()
        _EXTRA[kind] = _issue(world.ours.clients_ca, key, f"signer-{kind}")
    return _EXTRA[kind]


def _issue(ca, key, name):
    """Credentials for `key` issued by the trustme CA `ca` (its chain included)."""
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    issuer_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    issuer_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem.bytes()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return type("Creds", (), {"cert_pem": chain, "key_pem": key_pem})()


@needs_binding
def test_the_server_saw_the_signer_certificate(world):
    ident = signer_identity(world.ec)
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.ca_pem) as peer:
        ctx = context.client_context(ident, world.ca_pem)
        result = calls.https_request(ctx, target(peer), ident.fingerprint_sha256, timeouts=FAST)
    assert json.loads(result["body"])["fingerprint_sha256"] == ident.fingerprint_sha256  # what the peer saw


@needs_binding
def test_pkcs1_only_signer_against_a_tls13_only_server(world):
    ident = signer_identity(world.rsa, PKCS1)
    with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.3") as server:
        error = remote_code(ident, server, world.ca_pem)
    assert error.code == "handshake_failed"
    assert "rsa_pss_sha256" in error.message and "rsa_pkcs1_sha256" in error.message
    assert ident.signer.asked == []
    with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.2") as server:  # the twin: 1.2 takes PKCS#1
        assert handshake(ident, server, world.ca_pem)["tls_version"] == "TLSv1.2"


@needs_binding
def test_the_signer_only_gets_the_schemes_it_offers(world):
    """A PSS-only signer on a server that would take PKCS#1 (TLS 1.2) is asked for PSS only."""
    ident = signer_identity(world.rsa, ("rsa_pss_sha384",))
    with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.2") as server:
        handshake(ident, server, world.ca_pem)
    assert ident.signer.asked == ["rsa_pss_sha384"]


@needs_binding
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_resumed_session_needs_no_signature(world, version):
    ident = signer_identity(world.ec)
    cache = context.ContextCache()
    with peers.PythonTLSPeer(world.server, world.ca_pem, max_version=version) as peer:
        first = handshake(ident, peer, world.ca_pem, cache=cache)
        second = handshake(ident, peer, world.ca_pem, cache=cache)
    assert not first["session_reused"] and second["session_reused"]
    assert len(ident.signer.asked) == 1  # the full handshake signed; the resumed one did not


@needs_binding
def test_ordinary_keys_still_sign_after_a_signer_was_bound(world):
    """The RSA EVP_PKEY_METHOD is process-wide: keys that are not ours must go to OpenSSL's own sign."""
    signer_ctx = context.client_context(signer_identity(world.rsa, PKCS1), world.ca_pem)
    ordinary = ClientIdentity.from_pem(world.rsa.cert_pem, world.rsa.key_pem)
    with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.2") as server:
        for version in ("TLSv1_2",):
            info = calls.handshake(context.client_context(ordinary, world.ca_pem, version), target(server),
                                   ordinary.fingerprint_sha256, timeouts=FAST)
            assert info["tls_version"] == "TLSv1.2"
    assert signer_ctx is not None


# --- the identity: validation, repr, cache key ------------------------------------------

def test_signer_for_another_key_is_key_mismatch(world):
    with pytest.raises(InputError) as caught:
        SignerIdentity(world.ec.cert_pem, LocalSigner(ec.generate_private_key(ec.SECP256R1())))
    assert caught.value.code == "key_mismatch"
    assert SignerIdentity(world.ec.cert_pem, LocalSigner(private_key(world.ec))).key_type == "EC P-256"  # twin


@pytest.mark.parametrize("signer,word", [
    (object(), "public_key()"),
    (type("Broken", (), {"public_key": lambda s: 1 / 0, "sign": lambda s, d, x: b""})(), "ZeroDivisionError"),
])
def test_not_a_signer_is_signer_unsupported(world, signer, word):
    with pytest.raises(InputError) as caught:
        SignerIdentity(world.ec.cert_pem, signer)
    assert caught.value.code == "signer_unsupported" and word in caught.value.message


@pytest.mark.parametrize("schemes,word", [(("ecdsa_sha1",), "ecdsa_sha1"), (PSS, "ec key"), ("ecdsa_sha256", "str")])
def test_schemes_the_contract_does_not_know(world, schemes, word):
    class Offering(LocalSigner):
        pass
    signer = Offering(private_key(world.ec))
    signer.schemes = schemes
    with pytest.raises(InputError) as caught:
        SignerIdentity(world.ec.cert_pem, signer)
    assert caught.value.code == "signer_unsupported" and word in caught.value.message


def test_ed25519_is_signer_unsupported_by_name(world):
    key = ed25519.Ed25519PrivateKey.generate()
    ident = SignerIdentity(_issue(world.ours.clients_ca, key, "ed").cert_pem, LocalSigner(key))
    assert ident.key_type == "Ed25519"
    with pytest.raises(InputError) as caught:
        context.client_context(ident, world.ca_pem)
    assert caught.value.code == "signer_unsupported" and "Ed25519" in caught.value.message or \
        not BINDING["available"]


def test_repr_names_the_signer_never_the_key(world):
    ident = signer_identity(world.ec)
    key_der = private_key(world.ec).private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption())
    scalar = private_key(world.ec).private_numbers().private_value
    for text in (repr(ident), str(ident), repr(ident.signer), str(ident.metadata())):
        assert "PRIVATE" not in text and key_der.hex() not in text and str(scalar) not in text
        assert format(scalar, "x") not in text
    assert "signer=Counting" in repr(ident) and ident.fingerprint_sha256 in repr(ident)


@needs_binding
def test_cache_key_is_chain_public_key_and_cache_key(world):
    cache = context.ContextCache()
    a = signer_identity(world.rsa, PSS, signer_class=LocalSigner)
    b = signer_identity(world.rsa, PSS, signer_class=LocalSigner)  # another object, same key and schemes
    c = signer_identity(world.rsa, PKCS1, signer_class=LocalSigner)  # another cache_key()
    assert cache.client_context(a, world.ca_pem) is cache.client_context(b, world.ca_pem)
    assert cache.client_context(c, world.ca_pem) is not cache.client_context(a, world.ca_pem)
    ordinary = ClientIdentity.from_pem(world.rsa.cert_pem, world.rsa.key_pem)
    assert cache.client_context(ordinary, world.ca_pem) is not cache.client_context(a, world.ca_pem)


@needs_binding
def test_the_ssl_ctx_is_checked_before_use(world):
    """A context whose answers do not match the SSL_CTX found (the layout guard) is refused, typed."""
    class Lying(ssl.SSLContext):
        @property
        def options(self):
            return 0

        @options.setter
        def options(self, value):
            pass

    with pytest.raises(InputError) as caught:
        _binding.ssl_ctx_pointer(Lying(ssl.PROTOCOL_TLS_CLIENT))
    assert caught.value.code == "signer_unsupported"
    with pytest.raises(InputError):
        _binding.ssl_ctx_pointer(object())
    assert _binding.ssl_ctx_pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # twin


# --- failures: raises, garbage, hangs; many threads; many contexts ------------------------

class Raising(LocalSigner):
    def sign(self, data, scheme):
        raise RuntimeError("KMS said PERMISSION_DENIED for this key version")


class NotBytes(LocalSigner):
    def sign(self, data, scheme):
        return "a signature"


class Junk(LocalSigner):
    def sign(self, data, scheme):
        return b"\x30\x06\x02\x01\x01\x02\x01\x01"  # well-formed DER, wrong signature


class OtherKey(LocalSigner):
    other = ec.generate_private_key(ec.SECP256R1())

    def sign(self, data, scheme):
        return self.other.sign(data, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


class Hanging(LocalSigner):
    release = threading.Event()

    def sign(self, data, scheme):
        self.release.wait(60)
        return super().sign(data, scheme)


@needs_binding
@pytest.mark.parametrize("signer_class,words", [
    (Raising, "PERMISSION_DENIED"), (NotBytes, "str"), (Junk, "does not verify"), (OtherKey, "does not verify")])
def test_a_failing_signer_is_signer_failed(world, signer_class, words):
    ident = signer_identity(world.ec, signer_class=signer_class)
    with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.3") as server:
        error = remote_code(ident, server, world.ca_pem)
        assert error is not None and error.code == "signer_failed" and words in error.message
        if signer_class is Raising:
            assert isinstance(error.__cause__, RuntimeError)  # the signer's own exception, chained
        good = signer_identity(world.ec)  # the twin: the same server, a signer that signs
        assert handshake(good, server, world.ca_pem)["tls_version"] == "TLSv1.3"


@needs_binding
def test_a_hanging_signer_ends_with_the_call_deadline(world):
    ident = signer_identity(world.ec, signer_class=Hanging)
    try:
        with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.2") as server:
            error = remote_code(ident, server, world.ca_pem, timeouts=calls.Timeouts(5, 5, 5, total=1))
    finally:
        Hanging.release.set()
    assert error.code == "timeout"
    assert any(getattr(e, "code", None) == "signer_failed" for e in (error.__cause__, error.__context__))


@needs_binding
def test_a_hanging_signer_ends_with_its_sign_timeout(world):
    Hanging.release.clear()
    ident = signer_identity(world.ec, signer_class=Hanging, sign_timeout=0.5)
    try:
        with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.3") as server:
            error = remote_code(ident, server, world.ca_pem)
    finally:
        Hanging.release.set()
    assert error.code == "signer_failed" and "sign_timeout" in error.message


@needs_binding
def test_a_hanging_signer_through_requests_ends_with_the_request_timeout(world):
    Hanging.release.clear()
    ident = signer_identity(world.ec, signer_class=Hanging)
    session = requests.Session()
    session.mount("https://", ClientCertAdapter(ident, ca_certs=world.ca_pem))
    try:
        with peers.OpenSSLServer(world.server, world.ca_pem, mode="www", tls="1.3") as server:
            with pytest.raises(requests.exceptions.RequestException) as caught:
                session.get(f"https://localhost:{server.port}/", timeout=1)
    finally:
        Hanging.release.set()
    error = dyncert_error(caught.value)
    assert error is not None and error.code == "signer_failed" and "timeout" in error.message


@needs_binding
def test_sixteen_threads_sign_at_once(world):
    """16 handshakes at once on one shared context (16 signatures in flight), then 16 with a failing signer."""
    good, bad = signer_identity(world.ec), signer_identity(world.rsa, PSS, signer_class=Raising)
    cache = context.ContextCache()
    with peers.OpenSSLServer(world.server, world.ca_pem, tls="1.3") as server:
        barrier, results = threading.Barrier(16), []

        def run(ident):
            barrier.wait()
            try:
                results.append(handshake(ident, server, world.ca_pem, cache=cache)["tls_version"])
            except RemoteError as e:
                results.append(e.code)

        for ident, expected in ((good, "TLSv1.3"), (bad, "signer_failed")):
            results.clear()
            threads = [threading.Thread(target=run, args=(ident,)) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)
            assert results == [expected] * 16
    assert 1 <= len(good.signer.asked) <= 16  # full handshakes signed (some may resume)


def _rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@needs_binding
def test_a_thousand_contexts_built_and_dropped_stay_bounded(world):
    """Each context's key objects are freed with it: the binding's table returns to its size, memory levels off."""
    ident = signer_identity(world.rsa, PSS)
    gc.collect()
    table = len(_binding._lib.bound)
    for _ in range(200):  # warm-up: allocator pools, caches
        context.client_context(ident, world.ca_pem)
    gc.collect()
    before = _rss_kib()
    for _ in range(1000):
        context.client_context(ident, world.ca_pem)
    gc.collect()
    grown = _rss_kib() - before
    assert len(_binding._lib.bound) == table
    # Measured: ~40 KiB when all is freed; leaking only the RSA key object (no EVP_PKEY_free) grew ~1.5 MiB,
    # a whole SSL_CTX far more.
    assert grown < 1024, f"RSS grew {grown} KiB over 1,000 contexts"


# --- HTTP clients: the requests adapter, the httpx transports ------------------------------

@needs_binding
def test_requests_adapter_signs_once_per_connection(world):
    ident = signer_identity(world.ec)
    session = requests.Session()
    session.mount("https://", ClientCertAdapter(ident, ca_certs=world.ca_pem))
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.ca_pem) as peer:
        seen = [session.get(f"https://localhost:{peer.port}/", timeout=10).json() for _ in range(20)]
    assert {s["fingerprint_sha256"] for s in seen} == {ident.fingerprint_sha256}
    assert len(ident.signer.asked) == 1  # 20 requests, one pooled connection, one signature


@needs_binding
def test_requests_adapter_failing_signer_has_the_code(world):
    ident = signer_identity(world.ec, signer_class=Raising)
    session = requests.Session()
    session.mount("https://", ClientCertAdapter(ident, ca_certs=world.ca_pem))
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.ca_pem) as peer:
        with pytest.raises(requests.exceptions.RequestException) as caught:
            session.get(f"https://localhost:{peer.port}/", timeout=10)
    error = dyncert_error(caught.value)
    assert error.code == "signer_failed" and "PERMISSION_DENIED" in error.message


@needs_binding
def test_httpx_transports_present_the_signer_identity(world):
    import asyncio

    import httpx

    from dyncert.httpx import AsyncClientCertTransport, ClientCertTransport
    ident = signer_identity(world.rsa, PSS)
    with peers.PythonTLSPeer(world.server, client_ca_pem=world.ca_pem) as peer:
        url = f"https://localhost:{peer.port}/"
        with httpx.Client(transport=ClientCertTransport(ident, ca_certs=world.ca_pem), timeout=10) as client:
            assert client.get(url).json()["fingerprint_sha256"] == ident.fingerprint_sha256

        async def fetch():
            transport = AsyncClientCertTransport(ident, ca_certs=world.ca_pem)
            async with httpx.AsyncClient(transport=transport, timeout=10) as client:
                return (await client.get(url)).json()

        assert asyncio.run(fetch())["fingerprint_sha256"] == ident.fingerprint_sha256
        bad = signer_identity(world.ec, signer_class=Raising)
        with httpx.Client(transport=ClientCertTransport(bad, ca_certs=world.ca_pem), timeout=10) as client:
            with pytest.raises(httpx.HTTPError) as caught:
                client.get(url)
        assert dyncert_error(caught.value).code == "signer_failed"
