"""CloudKmsSigner with the real google-cloud-kms client, against a local STAND-IN for Cloud KMS.

The stand-in (tests/harness/kms_standin.py) is not Cloud KMS: software keys behind the KeyManagementService
gRPC methods. The live test at the bottom runs against Cloud KMS itself when KMS_TEST_KEY_VERSION
and credentials are set.
"""

import hashlib
import os
import subprocess
import sys
import threading

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils

from dyncert.errors import DyncertError
from dyncert.signers.cloudkms import CloudKmsSigner, crc32c
from tests.harness.kms_standin import CORRUPTIONS, Algorithm, KmsStandIn

_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


@pytest.fixture(scope="module")
def standin():
    with KmsStandIn() as server:
        yield server


@pytest.fixture
def fresh(standin):
    """The stand-in, behaving, with its records cleared after the test."""
    yield standin
    standin.corrupt.clear()
    standin.delay = 0.0
    standin.sign_requests.clear()


def signer_for(standin, algorithm, **kwargs):
    return CloudKmsSigner(standin.add_key(algorithm), client=standin.client(), **kwargs)


def verify(public_key, signature, data, scheme):
    """Verify as a TLS peer would (raises InvalidSignature)."""
    if scheme == "ed25519":
        return public_key.verify(signature, data)
    hash_ = _HASHES[scheme.rsplit("_", 1)[1]]
    if scheme.startswith("ecdsa_"):
        return public_key.verify(signature, data, ec.ECDSA(utils.Prehashed(hash_)))
    if scheme.startswith("rsa_pss_"):
        # What TLS 1.3 peers require: MGF1 of the same hash, salt = digest length.
        return public_key.verify(signature, data, padding.PSS(padding.MGF1(hash_), hash_.digest_size),
                                 utils.Prehashed(hash_))
    return public_key.verify(signature, data, padding.PKCS1v15(), utils.Prehashed(hash_))


def tbs(scheme, message):
    """What sign() receives: the digest of the handshake's signed content, or the content for Ed25519."""
    return message if scheme == "ed25519" else hashlib.new(scheme.rsplit("_", 1)[1], message).digest()


ALGORITHMS = [
    ("EC_SIGN_P256_SHA256", "ecdsa_sha256"),
    ("EC_SIGN_P384_SHA384", "ecdsa_sha384"),
    ("RSA_SIGN_PKCS1_2048_SHA256", "rsa_pkcs1_sha256"),
    ("RSA_SIGN_PKCS1_4096_SHA512", "rsa_pkcs1_sha512"),
    ("RSA_SIGN_PSS_2048_SHA256", "rsa_pss_sha256"),
    ("RSA_SIGN_PSS_4096_SHA512", "rsa_pss_sha512"),
    ("EC_SIGN_ED25519", "ed25519"),
]


@pytest.mark.parametrize("algorithm, scheme", ALGORITHMS)
def test_signature_verifies_for_each_algorithm(fresh, algorithm, scheme):
    signer = signer_for(fresh, Algorithm[algorithm])
    assert list(signer.schemes) == [scheme]
    data = tbs(scheme, b"TLS 1.3, client CertificateVerify" + os.urandom(32))
    signature = signer.sign(data, scheme)
    verify(signer.public_key(), signature, data, scheme)
    # Twin: the same signature does not verify for other content (the check above can fail).
    with pytest.raises(InvalidSignature):
        verify(signer.public_key(), signature, tbs(scheme, b"other content"), scheme)


def test_public_key_is_fetched_once(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256)
    before = fresh.public_key_requests
    for _ in range(3):
        signer.public_key()
        signer.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
    assert list(signer.schemes) == ["ecdsa_sha256"] and signer.protection_level == "HSM"
    assert fresh.public_key_requests - before == 1
    # A second signer for the same key version asks again (the cache is the signer's own) ...
    other = CloudKmsSigner(signer.key_version_name, client=fresh.client())
    other.public_key()
    assert fresh.public_key_requests - before == 2
    # ... and is interchangeable with the first in a context cache.
    assert other.cache_key() == signer.cache_key() == f"cloudkms:{signer.key_version_name}"


def test_each_signature_is_one_asymmetric_sign_carrying_the_digest_crc32c(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_P384_SHA384)
    digests = [tbs("ecdsa_sha384", bytes([n])) for n in range(3)]
    for digest in digests:
        signer.sign(digest, "ecdsa_sha384")
    assert [r.digest.sha384 for r in fresh.sign_requests] == digests
    assert [r.digest_crc32c for r in fresh.sign_requests] == [crc32c(d) for d in digests]
    assert all(r.name == signer.key_version_name for r in fresh.sign_requests)


def test_ed25519_sends_the_message_and_its_crc32c(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_ED25519)
    signer.sign(b"whole message", "ed25519")
    (request,) = fresh.sign_requests
    assert request.data == b"whole message" and request.data_crc32c == crc32c(b"whole message")
    assert not request.digest


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS - {"pem"}))
def test_integrity_failure_is_signer_failed(fresh, corruption):
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256)
    digest = tbs("ecdsa_sha256", b"m")
    verify(signer.public_key(), signer.sign(digest, "ecdsa_sha256"), digest, "ecdsa_sha256")  # twin first
    fresh.corrupt.add(corruption)
    with pytest.raises(DyncertError) as caught:
        signer.sign(digest, "ecdsa_sha256")
    assert caught.value.code == "signer_failed"
    assert signer.key_version_name in caught.value.message
    if corruption == "digest_in_transit":  # KMS's own refusal, chained
        assert "InvalidArgument" in caught.value.message and caught.value.__cause__ is not None
    elif corruption in ("signature", "signature_crc32c"):
        assert "CRC32C" in caught.value.message
    elif corruption == "unverified_digest":
        assert "did not confirm" in caught.value.message
    fresh.corrupt.clear()
    verify(signer.public_key(), signer.sign(digest, "ecdsa_sha256"), digest, "ecdsa_sha256")


def test_public_key_failing_its_crc32c_is_signer_failed(fresh):
    name = fresh.add_key(Algorithm.EC_SIGN_P256_SHA256)
    fresh.corrupt.add("pem")
    with pytest.raises(DyncertError) as caught:
        CloudKmsSigner(name, client=fresh.client()).public_key()
    assert caught.value.code == "signer_failed" and "CRC32C" in caught.value.message
    fresh.corrupt.clear()
    assert isinstance(CloudKmsSigner(name, client=fresh.client()).public_key(), ec.EllipticCurvePublicKey)


def test_a_scheme_the_key_does_not_sign_with_is_refused(fresh):
    signer = signer_for(fresh, Algorithm.RSA_SIGN_PSS_2048_SHA256)
    for scheme in ("rsa_pkcs1_sha256", "rsa_pss_sha384", "ecdsa_sha256"):
        with pytest.raises(DyncertError) as caught:
            signer.sign(tbs(scheme, b"m"), scheme)
        assert caught.value.code == "signer_failed" and "rsa_pss_sha256 only" in caught.value.message
    assert fresh.sign_requests == []  # refused before any RPC


def test_a_digest_of_the_wrong_length_is_refused(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256)
    with pytest.raises(DyncertError) as caught:
        signer.sign(b"not a digest", "ecdsa_sha256")
    assert caught.value.code == "signer_failed" and "32-byte digest" in caught.value.message
    assert fresh.sign_requests == []


@pytest.mark.parametrize("name", [
    "", "projects/p/locations/global/keyRings/r/cryptoKeys/k",  # a key, not a version
    "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1/extra",
    "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/x",
    "https://cloudkms.googleapis.com/v1/projects/p",
])
def test_a_malformed_key_version_name_is_invalid_kms_key(name):
    with pytest.raises(DyncertError) as caught:
        CloudKmsSigner(name)
    assert caught.value.code == "invalid_kms_key"


def test_unknown_and_destroyed_key_versions(fresh):
    missing = "projects/p/locations/global/keyRings/standin/cryptoKeys/none/cryptoKeyVersions/7"
    with pytest.raises(DyncertError) as caught:
        CloudKmsSigner(missing, client=fresh.client()).public_key()
    assert caught.value.code == "invalid_kms_key" and "NotFound" in caught.value.message
    # A version destroyed after its signer read the public key: the next signature fails.
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256)
    signer.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
    signer._client.destroy_crypto_key_version(request={"name": signer.key_version_name})
    with pytest.raises(DyncertError) as caught:
        signer.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
    assert caught.value.code == "signer_failed" and "FailedPrecondition" in caught.value.message
    with pytest.raises(DyncertError) as caught:
        CloudKmsSigner(signer.key_version_name, client=fresh.client()).public_key()
    assert caught.value.code == "invalid_kms_key"


def test_an_algorithm_tls_cannot_use_is_signer_unsupported(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_SECP256K1_SHA256)
    with pytest.raises(DyncertError) as caught:
        signer.public_key()
    assert caught.value.code == "signer_unsupported" and "EC_SIGN_SECP256K1_SHA256" in caught.value.message


def test_kms_unreachable_is_signer_failed():
    server = KmsStandIn().start()
    name = server.add_key(Algorithm.EC_SIGN_P256_SHA256)
    signer = CloudKmsSigner(name, client=server.client(), timeout=2.0)
    signer.public_key()
    server._server.stop(grace=None).wait()
    try:
        with pytest.raises(DyncertError) as caught:
            signer.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
        assert caught.value.code == "signer_failed"
        assert caught.value.__cause__ is not None and "AsymmetricSign" in caught.value.message
    finally:
        server.stop()


def test_a_hanging_kms_is_bounded_by_the_signer_timeout(fresh):
    # Found here: google-cloud-kms's default retry re-sends a timed-out AsymmetricSign for 60 s
    # whatever `timeout` says (a 2 s signer took 50 s). The stand-in hangs until released; the
    # signer must give up on its own, long before it is.
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256, timeout=0.5)
    signer.public_key()
    fresh.hang = threading.Event()
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_sign_outcome(signer)))
    worker.start()
    worker.join(30)  # liveness bound, 60x the signer's timeout: fails only if retries are unbounded
    still_hanging = worker.is_alive()
    fresh.hang.set()
    worker.join()
    fresh.hang = None
    assert not still_hanging, "the signer outlived its timeout"
    (error,) = outcome
    assert isinstance(error, DyncertError) and error.code == "signer_failed"
    assert "DeadlineExceeded" in error.message or "RetryError" in error.message


def _sign_outcome(signer):
    try:
        signer.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
    except Exception as error:
        return error
    return None


def test_sixteen_threads_signing_at_once(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256)
    results, errors = [], []

    def work(n):
        try:
            digest = tbs("ecdsa_sha256", bytes([n]))
            results.append((digest, signer.sign(digest, "ecdsa_sha256")))
        except Exception as error:  # collected: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 16
    for digest, signature in results:
        verify(signer.public_key(), signature, digest, "ecdsa_sha256")


def test_repr_names_the_key_version_only(fresh):
    signer = signer_for(fresh, Algorithm.EC_SIGN_P256_SHA256)
    signer.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
    assert repr(signer) == f"CloudKmsSigner({signer.key_version_name!r})"


def test_create_get_and_destroy_through_the_real_client(fresh):
    # The calls the app makes for keys born in KMS (`key_location: cloud_kms`).
    from google.cloud import kms
    client = fresh.client()
    parent = "projects/p/locations/global/keyRings/app"
    created = client.create_crypto_key(request={
        "parent": parent, "crypto_key_id": "addr-1",
        "crypto_key": {"purpose": kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
                       "version_template": {"algorithm": Algorithm.EC_SIGN_P256_SHA256,
                                            "protection_level": kms.ProtectionLevel.HSM}}})
    assert created.name == f"{parent}/cryptoKeys/addr-1"
    version_name = f"{created.name}/cryptoKeyVersions/1"
    version = client.get_crypto_key_version(request={"name": version_name})
    assert version.state == kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED
    signer = CloudKmsSigner(version_name, client=client)
    assert signer.protection_level == "HSM"
    digest = tbs("ecdsa_sha256", b"csr")
    verify(signer.public_key(), signer.sign(digest, "ecdsa_sha256"), digest, "ecdsa_sha256")
    destroyed = client.destroy_crypto_key_version(request={"name": version_name})
    assert destroyed.state == kms.CryptoKeyVersion.CryptoKeyVersionState.DESTROY_SCHEDULED


def test_dyncert_does_not_import_google_cloud_kms():
    # The wheel does not depend on google-cloud-kms (extra `kms`): importing the signer module is free.
    code = ("import sys, dyncert, dyncert.signers.cloudkms as m; "
            "print(sorted(n for n in sys.modules if n.startswith(('google', 'grpc'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _live_skip_reason():
    if not os.environ.get("KMS_TEST_KEY_VERSION"):
        return ("LIVE Cloud KMS test SKIPPED: set KMS_TEST_KEY_VERSION=projects/.../cryptoKeyVersions/N "
                "(an asymmetric-sign key) and credentials (GOOGLE_APPLICATION_CREDENTIALS or "
                "`gcloud auth application-default login`, role roles/cloudkms.signerVerifier)")
    try:
        import google.auth
        google.auth.default()
    except Exception as error:
        return (f"LIVE Cloud KMS test SKIPPED: KMS_TEST_KEY_VERSION is set but no credentials were found "
                f"({type(error).__name__}); set GOOGLE_APPLICATION_CREDENTIALS or run "
                "`gcloud auth application-default login`")
    return None


@pytest.mark.skipif(_live_skip_reason() is not None, reason=str(_live_skip_reason()))
def test_live_cloud_kms_signature_verifies():
    signer = CloudKmsSigner(os.environ["KMS_TEST_KEY_VERSION"])
    (scheme,) = signer.schemes
    data = tbs(scheme, b"dyncert live test" + os.urandom(16))
    verify(signer.public_key(), signer.sign(data, scheme), data, scheme)


# --- real handshakes through the stand-in: openssl s_server -Verify -verify_return_error ----------

from dyncert import calls, context, runtime, targets  # noqa: E402
from dyncert.errors import InputError, RemoteError  # noqa: E402
from dyncert.signers import SignerIdentity  # noqa: E402
from tests.harness import interop_pki, peers, pki  # noqa: E402

pytestmark = [pytest.mark.interp]  # differs by interpreter: the signer binding / loading tiers

FAST = calls.Timeouts(connect=5, handshake=5, read=5, total=10)
BINDING = runtime.signer_binding()
needs_binding = pytest.mark.skipif(not BINDING["available"], reason=f"signer_unsupported here: {BINDING['detail']}")


@pytest.fixture(scope="module")
def world():
    w = type("World", (), {})()
    w.servers = pki.make_pki("kms servers")
    w.server = pki.server_cert(w.servers.root)
    w.clients = interop_pki.make_ca("kms clients root")
    w.stranger = interop_pki.make_ca("stranger clients root")
    return w


def kms_identity(standin, issuer, algorithm, name=None):
    """A SignerIdentity whose certificate (issued by `issuer`) is for a key version in the stand-in."""
    signer = CloudKmsSigner(name or standin.add_key(algorithm), client=standin.client())
    leaf = interop_pki.issue(issuer, signer.public_key(), f"kms-{Algorithm(algorithm).name.lower()}")
    return SignerIdentity(interop_pki.chain_pem(leaf, issuer), signer)


def kms_handshake(ident, server, world):
    ctx = context.ContextCache(0).client_context(ident, world.servers.ca_pem)
    return calls.handshake(ctx, targets.Target("127.0.0.1", server.port), ident.fingerprint_sha256, timeouts=FAST)


@needs_binding
@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("algorithm", ["EC_SIGN_P256_SHA256", "EC_SIGN_P384_SHA384", "RSA_SIGN_PSS_2048_SHA256",
                                       "RSA_SIGN_PKCS1_2048_SHA256"])
def test_openssl_server_verifies_a_kms_signature(fresh, world, tls, algorithm):
    if tls == "1.3" and algorithm.startswith("RSA_SIGN_PKCS1"):
        pytest.skip("TLS 1.3 has no PKCS#1 v1.5: test_a_pkcs1_kms_key_against_a_tls13_only_server")
    ident = kms_identity(fresh, world.clients, Algorithm[algorithm])
    stranger = kms_identity(fresh, world.stranger, Algorithm[algorithm])
    with peers.OpenSSLServer(world.server, world.clients.cert_pem, tls=tls) as server:
        before = fresh.signatures
        assert kms_handshake(ident, server, world)["tls_version"] == f"TLSv{tls}"
        assert fresh.signatures - before == 1  # one AsymmetricSign per full handshake
        assert server.log().count("verify return:1") >= 2  # s_server verified the chain
        # The negative twin on the same server: a KMS key whose certificate comes from a CA it does not trust.
        with pytest.raises(RemoteError) as caught:
            kms_handshake(stranger, server, world)
        assert caught.value.code == "peer_rejected_certificate"


@needs_binding
def test_a_pkcs1_kms_key_against_a_tls13_only_server(fresh, world):
    ident = kms_identity(fresh, world.clients, Algorithm.RSA_SIGN_PKCS1_2048_SHA256)
    with peers.OpenSSLServer(world.server, world.clients.cert_pem, tls="1.3") as server:
        with pytest.raises(RemoteError) as caught:
            kms_handshake(ident, server, world)
    assert caught.value.code == "handshake_failed" and "rsa_pss_sha256" in caught.value.message
    assert fresh.sign_requests == []  # never asked to sign what the peer could not take


@needs_binding
@pytest.mark.parametrize("corruption", ["signature", "unverified_digest", "digest_in_transit"])
def test_a_corrupted_kms_answer_fails_the_handshake_as_signer_failed(fresh, world, corruption):
    ident = kms_identity(fresh, world.clients, Algorithm.EC_SIGN_P256_SHA256)
    with peers.OpenSSLServer(world.server, world.clients.cert_pem, tls="1.3") as server:
        fresh.corrupt.add(corruption)
        with pytest.raises(RemoteError) as caught:
            kms_handshake(ident, server, world)
        assert caught.value.code == "signer_failed" and ident.signer.key_version_name in caught.value.message
        cause = caught.value.__cause__
        assert getattr(cause, "code", None) == "signer_failed"  # CloudKmsSigner's own error, chained
        fresh.corrupt.clear()  # the twin: the same identity, KMS behaving
        assert kms_handshake(ident, server, world)["tls_version"] == "TLSv1.3"


def test_a_certificate_for_another_key_is_key_mismatch(fresh, world):
    signer = CloudKmsSigner(fresh.add_key(Algorithm.EC_SIGN_P256_SHA256), client=fresh.client())
    other = interop_pki.issue(world.clients, ec.generate_private_key(ec.SECP256R1()).public_key(), "kms-other")
    with pytest.raises(InputError) as caught:
        SignerIdentity(interop_pki.chain_pem(other, world.clients), signer)
    assert caught.value.code == "key_mismatch"


def test_kms_errors_at_identity_build_keep_their_code(fresh, world):
    # Found here: SignerIdentity turned any failure of public_key() into signer_unsupported (400),
    # so KMS being unreachable read as "this interpreter cannot bind a signer".
    server = KmsStandIn().start()
    name = server.add_key(Algorithm.EC_SIGN_P256_SHA256)
    leaf = interop_pki.issue(world.clients, CloudKmsSigner(name, client=server.client()).public_key(), "kms-x")
    server._server.stop(grace=None).wait()
    try:
        with pytest.raises(RemoteError) as caught:
            SignerIdentity(interop_pki.chain_pem(leaf, world.clients),
                           CloudKmsSigner(name, client=server.client(), timeout=1.0))
        assert caught.value.code == "signer_failed" and "GetPublicKey" in caught.value.message
    finally:
        server.stop()
    missing = "projects/p/locations/global/keyRings/standin/cryptoKeys/never-made/cryptoKeyVersions/1"
    with pytest.raises(InputError) as caught:  # the input twin: a key version that does not exist
        SignerIdentity(interop_pki.chain_pem(leaf, world.clients), CloudKmsSigner(missing, client=fresh.client()))
    assert caught.value.code == "invalid_kms_key"
