"""dyncert.context: real loopback mTLS handshakes, every loading tier, no key on disk, the cache."""

import base64
import datetime
import os
import ssl
import stat
import tempfile
import threading

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dyncert import context
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness.tiers import Server, force_tier, identity_from, talk

pytestmark = pytest.mark.interp

UTC = datetime.timezone.utc


# --- PKI: a server CA, a client CA with an intermediate, and strangers (all made at run time) ---

@pytest.fixture(scope="module")
def server_ca():
    """The CA that issued the loopback server's certificate."""
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca():
    """The root the server trusts for client certificates."""
    return trustme.CA()


@pytest.fixture(scope="module")
def alice(client_ca):
    """A client identity issued through an intermediate of the client CA (EC P-256)."""
    return identity_from(client_ca.create_child_ca().issue_cert("alice@example.com", common_name="alice"))


@pytest.fixture(scope="module")
def bob_rsa(client_ca):
    """An RSA client identity from the client CA."""
    return identity_from(client_ca.issue_cert("bob@example.com", common_name="bob", key_type=trustme.KeyType.RSA))


@pytest.fixture(scope="module")
def carol_ed25519(client_ca):
    """An Ed25519 client identity (sealed as PKCS#8 in tier 2), signed by the client CA."""
    ca_key = serialization.load_pem_private_key(client_ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(client_ca.cert_pem.bytes())
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "carol")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    return ClientIdentity.from_pem(cert.public_bytes(serialization.Encoding.PEM),
                                   key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))


@pytest.fixture(scope="module")
def mallory():
    """A client identity from a CA the server does not trust."""
    return identity_from(trustme.CA().issue_cert("mallory@example.com"))


# --- a tiny loopback server that requires a client certificate ----------------------------


@pytest.fixture
def make_server(server_ca, client_ca):
    """Factory of servers, all closed at the end of the test."""
    servers = []

    def make(**kw):
        server = Server(server_ca, client_ca, **kw)
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server):
    """A server that negotiates TLS 1.2 or 1.3."""
    return make_server()


@pytest.fixture
def ca_pem(server_ca):
    """PEM of the CA that issued the server certificate."""
    return server_ca.cert_pem.bytes()


@pytest.fixture(params=["memfd", "pipe", "tempfile"])
def tier(request, monkeypatch):
    """Run the test with each loading tier."""
    if request.param == "memfd" and not hasattr(os, "memfd_create"):
        pytest.skip("no os.memfd_create on this interpreter")
    if request.param == "pipe" and not context._pipe_works():
        pytest.skip("pipes do not read back through /proc/self/fd here")
    force_tier(monkeypatch, request.param)
    return request.param


# --- handshakes and their negative twins -------------------------------------------------

def test_handshake_presents_the_identity(server, alice, ca_pem, tier):
    ctx = context.client_context(alice, ca_certs=ca_pem)
    assert talk(ctx, server.port)[0] == b"hello\n"
    assert server.result() == alice.fingerprint_sha256


@pytest.mark.parametrize("who", ["bob_rsa", "carol_ed25519"])
def test_handshake_other_key_types(request, server, ca_pem, tier, who):
    identity = request.getfixturevalue(who)
    assert talk(context.client_context(identity, ca_certs=ca_pem), server.port)[0] == b"hello\n"
    assert server.result() == identity.fingerprint_sha256


def test_load_identity_reports_the_tier(alice, tier):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert context.load_identity(ctx, alice) == tier


def test_pipe_tier_when_interpreter_lacks_memfd(server, alice, ca_pem, monkeypatch):
    # Like the Cloud SDK's bundled Python 3.12, built without os.memfd_create; tier 2 when pipes are off too.
    monkeypatch.delattr(os, "memfd_create", raising=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert context.load_identity(ctx, alice) == ("pipe" if context._pipe_works() else "tempfile")
    monkeypatch.setattr(context, "PIPE_ENABLED", False)
    assert context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), alice) == "tempfile"
    assert talk(context.client_context(alice, ca_certs=ca_pem), server.port)[0] == b"hello\n"
    assert server.result() == alice.fingerprint_sha256


def test_wrong_ca_is_refused(server, alice, tier):
    ctx = context.client_context(alice, ca_certs=trustme.CA().cert_pem.bytes())
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(ctx, server.port)
    assert isinstance(server.result(), Exception)


def test_hostname_mismatch_is_refused(server, alice, ca_pem):
    ctx = context.client_context(alice, ca_certs=ca_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        talk(ctx, server.port, hostname="other.example.com")
    server.result()


def test_server_rejects_client_from_another_ca(server, mallory, ca_pem, tier):
    ctx = context.client_context(mallory, ca_certs=ca_pem)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        talk(ctx, server.port)
    assert isinstance(server.result(), ssl.SSLError)


def test_context_defaults_are_secure(alice, ca_pem):
    ctx = context.client_context(alice, ca_certs=ca_pem)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


# --- TLS version pins --------------------------------------------------------------------

@pytest.mark.parametrize("pin,server_version,ok", [
    ("TLSv1_3", ssl.TLSVersion.TLSv1_3, True),
    ("TLSv1_2", ssl.TLSVersion.TLSv1_3, False),
    ("TLSv1_2", ssl.TLSVersion.TLSv1_2, True),
    ("TLSv1_3", ssl.TLSVersion.TLSv1_2, False),
    (None, ssl.TLSVersion.TLSv1_2, True),
    (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3, True),
])
def test_tls_version_pin(make_server, alice, ca_pem, pin, server_version, ok):
    server = make_server(minimum=server_version, maximum=server_version)
    ctx = context.client_context(alice, ca_certs=ca_pem, tls_version=pin)
    if ok:
        assert talk(ctx, server.port) == (b"hello\n", server_version.name.replace("_", "."))
    else:
        with pytest.raises(ssl.SSLError):
            talk(ctx, server.port)
    server.result()


@pytest.mark.parametrize("value,expected", [
    (None, None), ("TLS", None), ("", None), ("TLSv1_2", ssl.TLSVersion.TLSv1_2),
    ("TLSv1_3", ssl.TLSVersion.TLSv1_3), (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
])
def test_parse_tls_version(value, expected):
    assert context.parse_tls_version(value) == expected


@pytest.mark.parametrize("value", ["TLSv1", "TLSv1_1", "SSLv3", "tlsv1_2", "TLSv1.3", 12,
                                   ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.MINIMUM_SUPPORTED])
def test_unsupported_tls_versions(value, alice):
    with pytest.raises(InputError) as info:
        context.parse_tls_version(value)
    assert info.value.code == "unsupported_tls_version"
    assert "TLSv1_2" in info.value.message and "TLSv1_3" in info.value.message
    with pytest.raises(InputError):
        context.client_context(alice, tls_version=value)


# --- CA trust ----------------------------------------------------------------------------

def test_ca_as_file_path(server, alice, server_ca, tmp_path):
    good, bad = tmp_path / "good.pem", tmp_path / "bad.pem"
    server_ca.cert_pem.write_to_path(str(good))
    trustme.CA().cert_pem.write_to_path(str(bad))
    assert talk(context.client_context(alice, ca_certs=str(good)), server.port)[0] == b"hello\n"
    server.result()
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(context.client_context(alice, ca_certs=bad), server.port)
    server.result()


def test_configured_default_trust(server, alice, server_ca, tmp_path, monkeypatch):
    monkeypatch.setattr(context, "_configured_trust", None)
    ca_file = tmp_path / "ca.pem"
    server_ca.cert_pem.write_to_path(str(ca_file))
    context.configure_default_trust(cafile=str(ca_file))
    assert context.default_trust() == {"cafile": str(ca_file), "capath": None, "source": "configured"}
    assert talk(context.client_context(alice), server.port)[0] == b"hello\n"
    server.result()
    # Twin: the unconfigured default (the system's CAs) does not know the test CA.
    context.configure_default_trust()
    assert context.default_trust()["source"] != "configured"
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(context.client_context(alice), server.port)
    server.result()


def test_auto_default_trust_prefers_the_hashed_directory():
    paths = ssl.get_default_verify_paths()
    trust = context._resolve_auto_trust()
    if paths.capath and context._has_hashed_certs(paths.capath):
        assert trust == (None, paths.capath, "openssl")
    else:
        assert trust[2] in ("openssl", "certifi", "none")


@pytest.mark.parametrize("bad", [
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "/no/such/ca.pem", 42,
])
def test_bad_ca_certs(alice, bad):
    with pytest.raises(InputError) as info:
        context.client_context(alice, ca_certs=bad)
    assert info.value.code == "invalid_ca_certs"


def test_configure_default_trust_refuses_missing_paths():
    with pytest.raises(InputError) as info:
        context.configure_default_trust(cafile="/no/such/file.pem")
    assert info.value.code == "invalid_ca_certs"


def test_unvalidated_mismatch_maps_to_key_mismatch(alice, bob_rsa, tier):
    # Bypass validation to check the mapping of OpenSSL's error at load time.
    forged = ClientIdentity(alice.chain_pem, bob_rsa.key_pem)
    with pytest.raises(InputError) as info:
        context.client_context(forged)
    assert info.value.code == "key_mismatch"


# --- no plaintext key on disk ------------------------------------------------------------

def secrets_of(identity):
    """Byte strings that would betray the key: base64 body lines and the DER (PKCS#8 and raw)."""
    key = serialization.load_pem_private_key(identity.key_pem, None)
    ders = [key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())]
    try:
        ders.append(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    except ValueError:
        pass
    lines = [line for line in identity.key_pem.splitlines() if line and not line.startswith(b"-----")]
    pems = [key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
            for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL)
            if not isinstance(key, ed25519.Ed25519PrivateKey) or fmt is serialization.PrivateFormat.PKCS8]
    for p in pems:
        lines += [line for line in p.splitlines() if line and not line.startswith(b"-----")]
    return ders + lines + [base64.b64encode(d) for d in ders]


def scan(roots, needles, found):
    """Add to `found` every file under `roots` holding any needle."""
    for root in roots:
        for directory, _, files in os.walk(root):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read(1 << 20)
                except OSError:
                    continue  # gone already (unlinked by the code under test) or unreadable
                if any(n in data for n in needles):
                    found.add(path)


@pytest.mark.parametrize("who", ["alice", "bob_rsa", "carol_ed25519"])
def test_no_plaintext_key_on_disk(request, who, tmp_path, monkeypatch):
    identity = request.getfixturevalue(who)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    needles = secrets_of(identity)
    roots = [str(private_tmp), tempfile.gettempdir()] + (["/dev/shm"] if os.path.isdir("/dev/shm") else [])
    found, stop = set(), threading.Event()

    def scanner():
        while not stop.is_set():
            scan(roots, needles, found)
    thread = threading.Thread(target=scanner, daemon=True)
    thread.start()
    try:
        for name in ("memfd", "pipe", "tempfile") * 17:
            force_tier(monkeypatch, name)
            context.client_context(identity)
    finally:
        stop.set()
        thread.join(timeout=30)
    scan(roots, needles, found)
    assert not found
    assert [n for _, _, names in os.walk(private_tmp) for n in names] == []  # no file left (the 0700 dir stays)


@pytest.mark.parametrize("who", ["alice", "bob_rsa", "carol_ed25519"])
def test_tier2_file_is_sealed_and_private(request, who, monkeypatch):
    # Look at the file at the very moment OpenSSL reads it.
    identity = request.getfixturevalue(who)
    needles = secrets_of(identity)
    seen = {}
    real = context._load_chain

    def spy(ctx, path, password=None):
        with open(path, "rb") as f:
            seen["data"] = f.read()
        seen["file_mode"] = stat.S_IMODE(os.stat(path).st_mode)
        seen["dir_mode"] = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        seen["path"], seen["password"] = path, password
        return real(ctx, path, password)
    monkeypatch.setattr(context, "_load_chain", spy)
    force_tier(monkeypatch, "tempfile")
    context.client_context(identity)
    assert seen["file_mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert b"ENCRYPTED" in seen["data"] and len(seen["password"]) >= 32
    assert not any(n in seen["data"] for n in needles)
    assert not os.path.exists(seen["path"]) and os.listdir(os.path.dirname(seen["path"])) == []


def test_tier2_cleans_up_after_a_failure(alice, bob_rsa, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    force_tier(monkeypatch, "tempfile")
    with pytest.raises(InputError):
        context.client_context(ClientIdentity(alice.chain_pem, bob_rsa.key_pem))
    assert [n for _, _, names in os.walk(tmp_path) for n in names] == []  # no file left (the 0700 dir stays)


def test_memfd_path_leaves_no_descriptor(alice, tier):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        context.client_context(alice)
    assert len(os.listdir("/proc/self/fd")) <= before


# --- cache -------------------------------------------------------------------------------

def test_cache_hits_and_misses(alice, ca_pem, server):
    cache = context.ContextCache(maxsize=8)
    first = cache.client_context(alice, ca_pem)
    assert cache.client_context(alice, ca_pem) is first
    assert cache.client_context(alice, ca_pem.decode()) is first  # same PEM as str: same content
    assert cache.client_context(alice, ca_pem, "TLSv1_3") is not first
    assert cache.client_context(alice, ca_pem, "TLS") is first  # 'TLS' means the default
    assert cache.stats() == {"size": 2, "maxsize": 8, "hits": 3, "misses": 2, "evictions": 0}
    assert talk(first, server.port)[0] == b"hello\n"  # a cached context still shakes hands
    assert server.result() == alice.fingerprint_sha256
    cache.clear()
    assert cache.stats() == {"size": 0, "maxsize": 8, "hits": 0, "misses": 0, "evictions": 0}


def test_cache_lru_eviction(alice, bob_rsa, carol_ed25519, ca_pem):
    cache = context.ContextCache(maxsize=2)
    a = cache.client_context(alice, ca_pem)
    cache.client_context(bob_rsa, ca_pem)
    assert cache.client_context(alice, ca_pem) is a  # alice is now the most recent
    cache.client_context(carol_ed25519, ca_pem)      # evicts bob, the least recent
    assert cache.evictions == 1 and len(cache) == 2
    assert cache.client_context(alice, ca_pem) is a
    cache.client_context(bob_rsa, ca_pem)
    assert cache.stats()["misses"] == 4 and cache.evictions == 2


def test_cache_rotation_is_a_new_entry(client_ca, alice, ca_pem, server):
    cache = context.ContextCache()
    old = cache.client_context(alice, ca_pem)
    rotated = identity_from(client_ca.issue_cert("alice@example.com", common_name="alice"))
    new = cache.client_context(rotated, ca_pem)
    assert new is not old and cache.misses == 2
    talk(new, server.port)
    assert server.result() == rotated.fingerprint_sha256 != alice.fingerprint_sha256


def test_cache_threads_share_one_context(alice, ca_pem):
    cache = context.ContextCache()
    results, barrier = [], threading.Barrier(16)

    def worker():
        barrier.wait()
        for _ in range(20):
            results.append(cache.client_context(alice, ca_pem))
    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 320 and len({id(c) for c in results}) == 1
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 320 and stats["size"] == 1


def test_cache_size_from_environment(monkeypatch):
    monkeypatch.setenv("DYNCERT_CACHE_SIZE", "3")
    assert context.ContextCache().maxsize == 3
    monkeypatch.setenv("DYNCERT_CACHE_SIZE", "lots")
    with pytest.raises(ValueError):
        context.ContextCache()
    monkeypatch.delenv("DYNCERT_CACHE_SIZE")
    assert context.ContextCache().maxsize == 256


def test_cache_size_zero_disables_caching(alice, ca_pem):
    cache = context.ContextCache(maxsize=0)
    assert cache.client_context(alice, ca_pem) is not cache.client_context(alice, ca_pem)
    assert len(cache) == 0


def test_cached_client_context_uses_default_or_given_cache(alice, ca_pem):
    mine = context.ContextCache()
    assert context.cached_client_context(alice, ca_pem, cache=mine) is context.cached_client_context(
        alice, ca_pem, cache=mine)
    assert mine.stats()["hits"] == 1
    shared = context.default_cache()
    before = shared.stats()["hits"]
    assert context.cached_client_context(alice, ca_pem) is context.cached_client_context(alice, ca_pem)
    assert shared.stats()["hits"] == before + 1
