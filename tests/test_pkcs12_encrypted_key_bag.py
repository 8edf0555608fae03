"""Issue 20 item 10: a key bag inside an *encrypted* SafeContents is costed before OpenSSL derives anything.

The file is built here by hand (openssl and cryptography always put the key bag in plain
`data`): version 3, one EncryptedData (PBES2, cheap) holding the shrouded key bag and the
certificate. The costly one has only its inner iteration count rewritten. No clock: OpenSSL's
load_pkcs12 is counted, and in the attack it is never called.
"""

import os

import pytest
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

import dyncert.identity
from dyncert import der, pbe, safecontents
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki
from tests.test_kdf_limits import dump, parse, set_kdf_cost

PASSWORD = b"p12-password"
OID = {name: bytes.fromhex(h) for name, h in {
    "data": "2a864886f70d010701", "encrypted_data": "2a864886f70d010706",
    "shrouded_key_bag": "2a864886f70d010c0a0102", "cert_bag": "2a864886f70d010c0a0103",
    "x509": "2a864886f70d01091601", "pbes2": "2a864886f70d01050d", "pbkdf2": "2a864886f70d01050c",
    "hmac_sha256": "2a864886f70d0209", "aes256_cbc": "60864801650304012a", "rc2_cbc": "2a864886f70d0302",
}.items()}


def seq(*items):
    return der.tlv(0x30, b"".join(items))


def oid(name):
    return der.tlv(0x06, OID[name])


def integer(value):
    return der.tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def explicit(content):
    return der.tlv(0xA0, content)


def pbes2_encrypt(plain, iterations=2048, cipher="aes256_cbc"):
    """(AlgorithmIdentifier, ciphertext): PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(PASSWORD)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    kdf = seq(oid("pbkdf2"), seq(der.tlv(0x04, salt), integer(iterations), seq(oid("hmac_sha256"), b"\x05\x00")))
    return seq(oid("pbes2"), seq(kdf, seq(oid(cipher), der.tlv(0x04, iv)))), body


def pfx_with_key_in_encrypted_safe(key_iterations, outer_cipher="aes256_cbc"):
    """A PKCS#12 whose only SafeContents is encrypted and holds the shrouded key bag and the certificate."""
    ca = interop_pki.make_ca("bag root")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = interop_pki.issue(ca, key.public_key(), "bag")
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    shrouded = der.unpem(pbe.encrypt_pkcs8(pkcs8, PASSWORD, iterations=2048))
    if key_iterations != 2048:  # only the count changes: deriving it is the work we must never start
        tree = parse(shrouded)
        set_kdf_cost(tree, key_iterations)
        shrouded = dump(tree)
    key_id = der.tlv(0x31, seq(der.tlv(0x06, bytes.fromhex("2a864886f70d010915")), der.tlv(0x31, der.tlv(0x04, b"1"))))
    cert_der = leaf.public_bytes(serialization.Encoding.DER)
    bags = seq(seq(oid("shrouded_key_bag"), explicit(shrouded), key_id),
               seq(oid("cert_bag"), explicit(seq(oid("x509"), explicit(der.tlv(0x04, cert_der)))), key_id))
    algorithm, body = pbes2_encrypt(bags, cipher=outer_cipher)
    encrypted = seq(integer(0), seq(oid("data"), algorithm, der.tlv(0x80, body)))
    auth_safe = seq(seq(oid("encrypted_data"), explicit(encrypted)))
    return seq(integer(3), seq(oid("data"), explicit(der.tlv(0x04, auth_safe))))


@pytest.fixture
def openssl_calls(monkeypatch):
    """Every load_pkcs12 call (OpenSSL's parse, where the derivations happen) is counted."""
    calls = []
    real = dyncert.identity.pkcs12.load_pkcs12

    def counted(data, password, *args, **kwargs):
        calls.append(len(data))
        return real(data, password, *args, **kwargs)

    monkeypatch.setattr(dyncert.identity.pkcs12, "load_pkcs12", counted)
    return calls


def test_the_twin_a_cheap_key_inside_an_encrypted_safe_loads(openssl_calls):
    identity = ClientIdentity.from_pkcs12(pfx_with_key_in_encrypted_safe(2048), PASSWORD, check_purpose=False)
    assert identity.key_type == "EC P-256" and openssl_calls  # opened by OpenSSL after our check


def test_a_costly_key_inside_an_encrypted_safe_is_refused_before_openssl(openssl_calls, monkeypatch):
    refuse = lambda *a, **k: pytest.fail("OpenSSL was asked to derive")  # noqa: E731
    monkeypatch.setattr(dyncert.identity.pkcs12, "load_pkcs12", refuse)
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pkcs12(pfx_with_key_in_encrypted_safe(2 ** 31 - 1), PASSWORD)
    assert e.value.code == "invalid_pkcs12"
    assert "private key" in e.value.message and str(pbe.MAX_ITERATIONS) in e.value.message


def test_our_own_derivations_are_only_the_checked_outer_one(monkeypatch):
    """Counted: opening the safe derives once per password tried, each with the outer (checked) count."""
    counts = []

    def counted(algorithm, length, salt, iterations, *args, **kwargs):
        counts.append(iterations)
        return PBKDF2HMAC(algorithm, length, salt, iterations, *args, **kwargs)

    monkeypatch.setattr(safecontents, "PBKDF2HMAC", counted)
    data = pfx_with_key_in_encrypted_safe(2 ** 31 - 1)
    with pytest.raises(pbe.CostError):
        pbe.check_pkcs12(data, [PASSWORD, None, b""])
    assert counts and set(counts) == {2048}


def test_a_safe_we_cannot_open_is_refused_naming_the_layout(openssl_calls):
    data = pfx_with_key_in_encrypted_safe(2048, outer_cipher="rc2_cbc")  # PBES2 with RC2: not opened here
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pkcs12(data, PASSWORD)
    assert e.value.code == "invalid_pkcs12" and "encrypted SafeContents" in e.value.message
    assert openssl_calls == []


def test_a_wrong_password_is_still_told_apart():
    with pytest.raises(InputError) as e:
        ClientIdentity.from_pkcs12(pfx_with_key_in_encrypted_safe(2 ** 31 - 1), b"not-the-password")
    assert e.value.code == "wrong_password"


@pytest.mark.parametrize("kind", ["aes", "3des", "rc2-40"])
def test_real_files_still_load_and_are_opened_by_our_check(kind, tmp_path):
    """Real files: AES (OpenSSL 3's default), 3DES (cryptography's legacy), RC2-40 (`openssl pkcs12 -legacy`)."""
    ca = interop_pki.make_ca("real root")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = interop_pki.issue(ca, key.public_key(), "real")
    if kind == "rc2-40":
        (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        (tmp_path / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        data = interop_pki.openssl("pkcs12", "-export", "-legacy", "-inkey", str(tmp_path / "key.pem"),
                                   "-in", str(tmp_path / "cert.pem"), "-passout", f"pass:{interop_pki.PASSWORD}")
        assert bytes.fromhex("2a864886f70d010c0106") in data  # pbeWithSHAAnd40BitRC2-CBC
    else:
        data = interop_pki.p12(key, leaf, ca, legacy=kind == "3des")
    identity = ClientIdentity.from_pkcs12(data, interop_pki.PASSWORD, check_purpose=False)
    assert identity.key_type == "EC P-256"
    opened = []
    real = safecontents.decrypt
    safecontents.decrypt = lambda *a: opened.append(1) or real(*a)
    try:
        pbe.check_pkcs12(data, [interop_pki.PASSWORD.encode(), None, b""])
    finally:
        safecontents.decrypt = real
    assert opened
