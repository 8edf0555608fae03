"""A real PKCS#11 token for the tests: SoftHSM2 (Debian softhsm2) in a temporary directory.

One token per test process: SoftHSM2 reads SOFTHSM2_CONF when the module is first initialised, and
python-pkcs11 keeps one initialised module per path, so every test of the process shares the token
(each test makes its own keys, under labels of its own). Keys are generated ON the token, private
halves sensitive and non-extractable: the tests never hold them.
"""

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "dyncert-tests"
PIN = "246810"
SO_PIN = "13579111"

_token = None
_labels = itertools.count(1)


def available():
    """None if SoftHSM2 and python-pkcs11 are here, else why not (for a skip reason)."""
    if not os.path.exists(MODULE) or not shutil.which("softhsm2-util"):
        return f"SoftHSM2 missing ({MODULE}, softhsm2-util): apt-get install softhsm2"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 missing: pip install -r requirements-dev.txt"
    return None


def token():
    """The process's token, made on first use: (module path, token label, user PIN)."""
    global _token
    if _token is None:
        reason = available()
        if reason:
            pytest.skip(reason)
        directory = tempfile.mkdtemp(prefix="dyncert-softhsm-")
        atexit.register(shutil.rmtree, directory, True)
        os.makedirs(os.path.join(directory, "tokens"))
        conf = os.path.join(directory, "softhsm2.conf")
        with open(conf, "w") as f:
            f.write(f"directories.tokendir = {directory}/tokens\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
        os.environ["SOFTHSM2_CONF"] = conf  # before the module is initialised in this process
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
                        "--pin", PIN, "--so-pin", SO_PIN], check=True, capture_output=True, timeout=60)
        _token = (MODULE, TOKEN_LABEL, PIN)
    return _token


def generate(kind):
    """A key pair generated on the token: kind 'p256', 'p384', 'p521', 'rsa2048', 'rsa3072', 'ed25519'.

    Returns the label both halves carry; the private half is sensitive and non-extractable.
    """
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    from dyncert.signers.pkcs11 import open_session

    module, token_label, pin = token()
    label = f"{kind}-{next(_labels)}-{os.getpid()}"
    key_id = label.encode()
    private = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
               Attribute.TOKEN: True, Attribute.PRIVATE: True}
    public = {Attribute.VERIFY: True, Attribute.TOKEN: True}
    # Through dyncert's session opener: closing a session that logged in would log the whole process
    # out of the token, signers included.
    with open_session(module, token_label, pin, rw=True) as session:
        if kind.startswith("rsa"):
            session.generate_keypair(KeyType.RSA, int(kind[3:]), store=True, label=label, id=key_id,
                                     public_template=public, private_template=private)
        elif kind == "ed25519":
            params = session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
                local=True)
            params.generate_keypair(store=True, label=label, id=key_id, public_template=public,
                                    private_template=private)
        else:
            curve = {"p256": "secp256r1", "p384": "secp384r1", "p521": "secp521r1"}[kind]
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True)
            params.generate_keypair(store=True, label=label, id=key_id, public_template=public,
                                    private_template=private)
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]
        assert key[Attribute.NEVER_EXTRACTABLE] and key[Attribute.LOCAL]  # born on the token, never out
    return label
