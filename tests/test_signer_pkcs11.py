"""Pkcs11Signer against a real PKCS#11 token: SoftHSM2 (Debian softhsm2) in a temporary directory.

Keys are generated ON the token (sensitive, non-extractable); signatures are verified with
cryptography, then used in real handshakes with `openssl s_server -Verify -verify_return_error`.
"""

import hashlib
import os
import subprocess
import sys
import threading

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from tests.harness import softhsm
from dyncert import calls, context, runtime, targets
from dyncert.errors import DyncertError, InputError, RemoteError, SignerError
from dyncert.signers import SignerIdentity
from dyncert.signers import pkcs11 as dyncert_pkcs11
from dyncert.signers.pkcs11 import Pkcs11Signer, open_session
from tests.harness import interop_pki, peers, pki

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.interp, pytest.mark.skipif(softhsm.available() is not None, reason=str(softhsm.available()))]

_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
FAST = calls.Timeouts(connect=5, handshake=5, read=5, total=10)
BINDING = runtime.signer_binding()
needs_binding = pytest.mark.skipif(not BINDING["available"], reason=f"signer_unsupported here: {BINDING['detail']}")
PSS = ("rsa_pss_sha256", "rsa_pss_sha384", "rsa_pss_sha512")
PKCS1 = ("rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512")


def signer(label, **kwargs):
    module, token_label, pin = softhsm.token()
    return Pkcs11Signer(module, token_label=token_label, key_label=label, pin=kwargs.pop("pin", pin), **kwargs)


_KEYS = {}


def key_label(kind):
    """One key of each kind per test process, generated on the token on first use."""
    if kind not in _KEYS:
        _KEYS[kind] = softhsm.generate(kind)
    return _KEYS[kind]


def tbs(scheme, message):
    return message if scheme == "ed25519" else hashlib.new(scheme.rsplit("_", 1)[1], message).digest()


def verify(public_key, signature, data, scheme):
    """Verify as a TLS peer would (raises InvalidSignature)."""
    if scheme == "ed25519":
        return public_key.verify(signature, data)
    hash_ = _HASHES[scheme.rsplit("_", 1)[1]]
    if scheme.startswith("ecdsa_"):
        return public_key.verify(signature, data, ec.ECDSA(utils.Prehashed(hash_)))
    if scheme.startswith("rsa_pss_"):
        return public_key.verify(signature, data, padding.PSS(padding.MGF1(hash_), hash_.digest_size),
                                 utils.Prehashed(hash_))
    return public_key.verify(signature, data, padding.PKCS1v15(), utils.Prehashed(hash_))


KINDS = {
    "p256": (ec.EllipticCurvePublicKey, ("ecdsa_sha256", "ecdsa_sha384", "ecdsa_sha512")),
    "p384": (ec.EllipticCurvePublicKey, ("ecdsa_sha256", "ecdsa_sha384", "ecdsa_sha512")),
    "rsa2048": (rsa.RSAPublicKey, PSS + PKCS1),
    "ed25519": (ed25519.Ed25519PublicKey, ("ed25519",)),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_offered_scheme_signs_on_the_token_and_verifies(kind):
    key_type, schemes = KINDS[kind]
    s = signer(key_label(kind))
    assert isinstance(s.public_key(), key_type) and sorted(s.schemes) == sorted(schemes)
    for scheme in s.schemes:
        data = tbs(scheme, b"CertificateVerify content " + os.urandom(16))
        signature = s.sign(data, scheme)
        verify(s.public_key(), signature, data, scheme)
        with pytest.raises(InvalidSignature):  # twin: the check can fail
            verify(s.public_key(), signature, tbs(scheme, b"other content"), scheme)


@pytest.mark.parametrize("kind", ["p256", "rsa2048"])
def test_the_private_key_cannot_be_read_off_the_token(kind):
    import pkcs11
    from pkcs11 import Attribute, ObjectClass
    module, token_label, pin = softhsm.token()
    with open_session(module, token_label, pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label(kind))
        secret = Attribute.VALUE if kind == "p256" else Attribute.PRIVATE_EXPONENT
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[secret]
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
        assert key[Attribute.LOCAL]  # generated on the token
        assert key[Attribute.KEY_TYPE] is not None  # twin: what is not secret can be read


def test_schemes_can_be_narrowed():
    s = signer(key_label("rsa2048"), schemes=("rsa_pss_sha256",))
    assert s.schemes == ("rsa_pss_sha256",)
    with pytest.raises(SignerError) as caught:
        s.sign(tbs("rsa_pkcs1_sha256", b"m"), "rsa_pkcs1_sha256")
    assert caught.value.code == "signer_failed" and "does not offer rsa_pkcs1_sha256" in caught.value.message
    with pytest.raises(InputError) as caught:
        signer(key_label("p256"), schemes=("rsa_pss_sha256",))
    assert caught.value.code == "signer_unsupported"


def test_a_digest_of_the_wrong_length_is_signer_failed():
    with pytest.raises(SignerError) as caught:
        signer(key_label("p256")).sign(b"short", "ecdsa_sha256")
    assert caught.value.code == "signer_failed" and "32-byte digest" in caught.value.message


WRONG_PIN_CHECK = """
import sys
from dyncert.errors import InputError
from dyncert.signers.pkcs11 import Pkcs11Signer
module, token, label, pin = sys.argv[1:]
try:
    s = Pkcs11Signer(module, token_label=token, key_label=label, pin=pin)
    print("signs", len(s.sign(bytes(32), "ecdsa_sha256")) > 0, pin in repr(s) or pin in str(s.cache_key()))
except InputError as e:
    print(e.code, pin in e.message)
"""


@pytest.mark.parametrize("pin, expected", [("000000", "wrong_password False"), (softhsm.PIN, "signs True False")])
def test_wrong_pin_is_wrong_password_and_never_shown(pin, expected):
    # In a process of its own: PKCS#11 checks the PIN when the process logs in to the token, and
    # this test process is logged in already (one login per process and token).
    module, token_label, _ = softhsm.token()
    out = subprocess.run([sys.executable, "-c", WRONG_PIN_CHECK, module, token_label, key_label("p256"), pin],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_what_is_not_on_the_token_is_typed():
    module, token_label, pin = softhsm.token()
    with pytest.raises(InputError) as caught:
        signer("no-such-key")
    assert caught.value.code == "invalid_key" and "no-such-key" in caught.value.message
    with pytest.raises(InputError) as caught:
        Pkcs11Signer(module, token_label="no-such-token", key_label=key_label("p256"), pin=pin)
    assert caught.value.code == "signer_unsupported" and "no-such-token" in caught.value.message
    with pytest.raises(InputError) as caught:
        Pkcs11Signer("/nonexistent/libpkcs11.so", token_label=token_label, key_label="k", pin=pin)
    assert caught.value.code == "signer_unsupported" and "/nonexistent/libpkcs11.so" in caught.value.message
    with pytest.raises(InputError) as caught:
        Pkcs11Signer(module, token_label=token_label, pin=pin)
    assert caught.value.code == "invalid_request"


def test_a_key_the_token_will_not_sign_with():
    import pkcs11
    from pkcs11 import Attribute, ObjectClass
    module, token_label, pin = softhsm.token()
    label = softhsm.generate("p256")
    s = signer(label)
    with open_session(module, token_label, pin, rw=True) as session:
        session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)[Attribute.SIGN] = False
    # A signer made before the change: the token's refusal is signer_failed, its error the cause.
    with pytest.raises(SignerError) as caught:
        s.sign(tbs("ecdsa_sha256", b"m"), "ecdsa_sha256")
    assert caught.value.code == "signer_failed" and isinstance(caught.value.__cause__, pkcs11.exceptions.PKCS11Error)
    # One made after: refused at construction.
    with pytest.raises(InputError) as caught:
        signer(label)
    assert caught.value.code == "invalid_key" and "cannot sign" in caught.value.message


def test_a_dropped_session_is_reopened():
    s = signer(key_label("p256"))
    s._session.close()  # as a restarted HSM or a lost link would
    data = tbs("ecdsa_sha256", b"m")
    verify(s.public_key(), s.sign(data, "ecdsa_sha256"), data, "ecdsa_sha256")
    s.close()  # and after close(), signing opens a new session
    verify(s.public_key(), s.sign(data, "ecdsa_sha256"), data, "ecdsa_sha256")


def test_a_process_logged_out_of_the_token_logs_in_again():
    # Found here: PKCS#11 logs in the application, and python-pkcs11 logs the whole process out when
    # any logged-in session closes; a second signer on the same token could not even log in
    # (UserAlreadyLoggedIn). Signers share one login per token and sign through sessions of their own.
    first, second = signer(key_label("p256")), signer(key_label("p384"))
    data = tbs("ecdsa_sha256", b"m")
    (login,) = [v for k, v in dyncert_pkcs11._logins.items() if k[0] == softhsm.MODULE]
    login.close()  # C_Logout: every session of the process loses the login (as other code might do)
    for s in (first, second):
        verify(s.public_key(), s.sign(data, "ecdsa_sha256"), data, "ecdsa_sha256")


def test_sixteen_threads_signing_at_once():
    s = signer(key_label("p256"))
    results, errors = [], []

    def work(n):
        try:
            data = tbs("ecdsa_sha256", bytes([n]))
            results.append((data, s.sign(data, "ecdsa_sha256")))
        except Exception as error:  # collected: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 16
    for data, signature in results:
        verify(s.public_key(), signature, data, "ecdsa_sha256")


def test_dyncert_does_not_import_python_pkcs11():
    code = ("import sys, dyncert, dyncert.signers.pkcs11; "
            "print(sorted(n for n in sys.modules if n == 'pkcs11' or n.startswith('pkcs11.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- real handshakes: openssl s_server -Verify -verify_return_error -------------------------

@pytest.fixture(scope="module")
def world():
    w = type("World", (), {})()
    w.servers = pki.make_pki("pkcs11 servers")
    w.server = pki.server_cert(w.servers.root)
    w.clients = interop_pki.make_ca("pkcs11 clients root")
    w.stranger = interop_pki.make_ca("stranger clients root")
    return w


def hsm_identity(issuer, kind, schemes=None, label=None):
    """A SignerIdentity whose certificate (issued by `issuer`) is for a key on the token."""
    s = signer(label or key_label(kind), schemes=schemes)
    leaf = interop_pki.issue(issuer, s.public_key(), f"hsm-{kind}")
    return SignerIdentity(interop_pki.chain_pem(leaf, issuer), s)


def handshake(ident, server, world, tls_version=None):
    ctx = context.ContextCache(0).client_context(ident, world.servers.ca_pem, tls_version)
    return calls.handshake(ctx, targets.Target("127.0.0.1", server.port), ident.fingerprint_sha256, timeouts=FAST)


@needs_binding
@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("kind,schemes", [("p256", None), ("p384", None), ("rsa2048", PSS), ("rsa2048", PKCS1)])
def test_openssl_server_verifies_the_token_signature(world, tls, kind, schemes):
    if tls == "1.3" and schemes == PKCS1:
        pytest.skip("TLS 1.3 has no PKCS#1 v1.5 handshake signatures: see the interop rows' named refusal")
    ident = hsm_identity(world.clients, kind, schemes)
    stranger = hsm_identity(world.stranger, kind, schemes)
    with peers.OpenSSLServer(world.server, world.clients.cert_pem, tls=tls) as server:
        info = handshake(ident, server, world)
        assert info["tls_version"] == f"TLSv{tls}"
        assert server.log().count("verify return:1") >= 2  # s_server verified our chain
        assert f"CN=hsm-{kind}" in server.log() or f"CN = hsm-{kind}" in server.log()
        # The negative twin on the same server: a token key whose certificate comes from a CA it does not trust.
        with pytest.raises(RemoteError) as caught:
            handshake(stranger, server, world)
        assert caught.value.code == "peer_rejected_certificate"


@needs_binding
def test_a_certificate_for_another_key_is_refused(world):
    """A certificate whose public key is not the token key's: refused at identity build, before any peer."""
    s = signer(key_label("p256"))
    other = interop_pki.issue(world.clients, ec.generate_private_key(ec.SECP256R1()).public_key(), "hsm-other")
    with pytest.raises(DyncertError) as caught:
        SignerIdentity(interop_pki.chain_pem(other, world.clients), s)
    assert caught.value.code == "key_mismatch"
