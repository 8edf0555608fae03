"""Signer-backed identities from a real PKCS#11 token (SoftHSM2) and the Cloud KMS STAND-IN against the
interop servers (issue 18.7), TLS 1.2 and 1.3. Same servers and checks as tests/test_interop.py (whose
LocalSigner rows these mirror): each positive cell checks the certificate the server saw; a
PKCS#1-only signer against TLS 1.3 is a named handshake_failed; a stranger CA's certificate is refused.
"""

import pytest

from dyncert import calls, runtime
from dyncert.errors import RemoteError
from dyncert.signers import SignerIdentity
from tests.harness import interop_pki
from tests.test_interop import (  # noqa: F401 - world and servers are the interop module's fixtures
    REFUSAL, SERVERS, TIMEOUTS, _saw_with_context, expected, handshake_error, running, servers, target, world)

pytestmark = [pytest.mark.interp, pytest.mark.interop]  # differs by interpreter: the signer binding / loading tiers

PKCS1 = ("rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512")
PSS = ("rsa_pss_sha256", "rsa_pss_sha384", "rsa_pss_sha512")
# name: (token key kind, schemes offered on the token, Cloud KMS algorithm of the same shape)
ROWS = {
    "p256": ("p256", None, "EC_SIGN_P256_SHA256"),
    "p384": ("p384", None, "EC_SIGN_P384_SHA384"),
    "rsa2048-pkcs1-only": ("rsa2048", PKCS1, "RSA_SIGN_PKCS1_2048_SHA256"),
    "rsa2048-pss-only": ("rsa2048", PSS, "RSA_SIGN_PSS_2048_SHA256"),
}
BACKENDS = ("softhsm2", "kms-standin")


@pytest.fixture(scope="module")
def backends():
    """Makes signers on demand: SoftHSM2 token keys and stand-in KMS key versions, one per row."""
    binding = runtime.signer_binding()
    if not binding["available"]:
        print(f"interop: HSM/KMS signer rows skipped: {binding['detail']}")
        pytest.skip(binding["detail"])
    from tests.harness.kms_standin import Algorithm, KmsStandIn
    with KmsStandIn() as standin:
        made = {}

        def signer(backend, row):
            if (backend, row) not in made:
                kind, schemes, algorithm = ROWS[row]
                if backend == "softhsm2":
                    from tests.harness import softhsm
                    from dyncert.signers.pkcs11 import Pkcs11Signer
                    if softhsm.available():
                        pytest.skip(softhsm.available())
                    module, token_label, pin = softhsm.token()
                    made[backend, row] = Pkcs11Signer(module, token_label=token_label, key_label=softhsm.generate(kind),
                                                      pin=pin, schemes=schemes)
                else:
                    from dyncert.signers.cloudkms import CloudKmsSigner
                    made[backend, row] = CloudKmsSigner(standin.add_key(Algorithm[algorithm]), client=standin.client())
            return made[backend, row]

        signer.standin = standin
        yield signer


def identity(issuer, signer, name):
    """The SignerIdentity and the interop upload record (for `expected`) of a certificate for `signer`'s key."""
    leaf = interop_pki.issue(issuer, signer.public_key(), name)
    chain = interop_pki.chain_pem(leaf, issuer)
    return SignerIdentity(chain, signer), interop_pki.Identity(name, leaf, chain)


@pytest.mark.parametrize("tls_version", ["TLSv1_2", "TLSv1_3"])
@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SERVERS)
def test_server_saw_the_hsm_identity(backends, world, servers, name, backend, row, tls_version):
    server = running(servers, name)
    signer = backends(backend, row)
    cn = f"{backend}-{row}"
    ident, upload = identity(world.client_root, signer, cn)
    ctx = world.cache.client_context(ident, world.server_pki.ca_pem, tls_version)
    if row.endswith("pkcs1-only") and tls_version == "TLSv1_3":
        # TLS 1.3 signs handshakes with PSS only: a clear, named refusal, not an empty certificate or a hang.
        with pytest.raises(RemoteError) as caught:
            calls.handshake(ctx, target(server), ident.fingerprint_sha256, timeouts=TIMEOUTS)
        assert caught.value.code == "handshake_failed" and "rsa_pss_sha256" in caught.value.message
        return
    signed = backends.standin.signatures
    assert _saw_with_context(name, server, ident, ctx) == expected(name, upload)
    if backend == "kms-standin":
        assert backends.standin.signatures > signed  # the stand-in signed: the key is nowhere else
    if name == "stunnel4":
        assert server.wait_for_log(f"Certificate accepted at depth=0: CN={cn}, O=dyncert interop")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SERVERS)
def test_hsm_identity_from_a_ca_the_server_does_not_trust(backends, world, servers, name, backend):
    """The negative twin of the rows above: the same signers, a certificate from a stranger CA."""
    server = running(servers, name)
    ident, _ = identity(interop_pki.make_ca("stranger hsm root"), backends(backend, "p256"), f"{backend}-foreigner")
    if name == "nginx":
        ctx = world.cache.client_context(ident, world.server_pki.ca_pem)
        with pytest.raises(RemoteError) as refused:  # nginx refuses at the HTTP layer: a refusal all the same
            calls.https_request(ctx, target(server), ident.fingerprint_sha256, timeouts=TIMEOUTS)
        assert refused.value.code == "peer_rejected_certificate" and "400" in refused.value.message
        return
    assert handshake_error(server, ident, world) == REFUSAL.get(name, "peer_rejected_certificate")
