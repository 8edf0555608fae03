"""dyncert.wrap_socket raises what the package docstring and the README say, case by case, on real peers.

The handshake's own failures stay plain `ssl` errors (seed compatibility); what dyncert checks before the
handshake is a DyncertError. Each documented row is exercised here against `openssl s_server` or a raw
loopback peer, and the row must name the class that was raised.
"""

import io
import os
import socket
import ssl

import pytest

import dyncert
from dyncert import compat
from tests.harness import peers, pki
from tests.test_compat import Record, seed, talk, world  # noqa: F401 - fixture

pytestmark = pytest.mark.interp  # seed compatibility, on every interpreter (3.12 without memfd_create)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def raised(action):
    """The exception `action()` raises (the test fails when it raises none)."""
    try:
        action()
    except BaseException as e:  # noqa: BLE001 - the class is what is checked
        return e
    pytest.fail("no exception raised")


def documented_row(label):
    """The docstring's row for one case: its label, then the classes it names."""
    rows = [line.strip() for line in dyncert.__doc__.splitlines() if line.strip().startswith(label + ":")]
    assert len(rows) == 1, f"the package docstring has no single row for {label!r}"
    return rows[0]


@pytest.fixture
def s_server(world):  # noqa: F811
    """openssl s_server requiring a client certificate under our CA, over TLS 1.3 (one per test: it serves
    one connection at a time, and a failed seed() leaves its socket open)."""
    with peers.OpenSSLServer(world.server, world.ours.ca_pem, mode="rev", tls="1.3") as server:
        yield server


def connect(server):
    return socket.create_connection((server.host, server.port))


def test_the_seed_snippet_itself_raises_nothing(world, s_server):  # noqa: F811
    """The twin of every row below: the right CA, hostname, key and client certificate."""
    assert talk(seed(s_server, Record(world.client), world.CA_FILE)) == b"olleh\n"


def test_wrong_ca_is_a_plain_ssl_error(world, s_server):  # noqa: F811
    e = raised(lambda: seed(s_server, Record(world.client), world.STRANGER_CA_FILE))
    assert type(e) is ssl.SSLCertVerificationError and not isinstance(e, dyncert.DyncertError)
    assert "ssl.SSLCertVerificationError" in documented_row("wrong CA (the server's chain is not under ca_certs)")


def test_wrong_hostname_in_the_handshake_is_a_plain_ssl_error(world, s_server):  # noqa: F811
    e = raised(lambda: compat.wrap_socket(connect(s_server), certfile=world.client.combined_pem,
                                          ca_certs=world.CA_FILE, server_hostname="wrong.example"))
    assert type(e) is ssl.SSLCertVerificationError and e.verify_code == 62
    assert not isinstance(e, dyncert.DyncertError)
    assert "ssl.SSLCertVerificationError (verify_code 62)" in documented_row("wrong hostname, server_hostname= given")


def test_wrong_hostname_from_match_hostname_is_both(world, s_server):  # noqa: F811
    e = raised(lambda: seed(s_server, Record(world.client), world.CA_FILE, hostname="a.hostname.com"))
    assert type(e) is dyncert.CertificateError and e.code == "hostname_mismatch"
    assert isinstance(e, ssl.CertificateError) and isinstance(e, dyncert.DyncertError)
    row = documented_row("wrong hostname, found by match_hostname()")
    assert "dyncert.CertificateError" in row and "ssl.CertificateError" in row and "DyncertError" in row


def test_a_refused_client_certificate_is_a_plain_ssl_error_on_the_first_read(world, s_server):  # noqa: F811
    sock = seed(s_server, Record(world.foreign), world.CA_FILE)  # TLS 1.3: wrap_socket itself succeeds
    e = raised(lambda: talk(sock))
    assert isinstance(e, ssl.SSLError) and not isinstance(e, dyncert.DyncertError)
    assert e.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert "ssl.SSLError (over TLS 1.3 on the first read" in documented_row("the peer refuses our certificate")


def test_a_reset_is_an_os_error(world):  # noqa: F811
    with peers.PythonTLSPeer(mode="reset") as peer:
        e = raised(lambda: compat.wrap_socket(socket.create_connection((peer.host, peer.port)),
                                              certfile=world.client.combined_pem, ca_certs=world.CA_FILE))
    assert isinstance(e, OSError) and not isinstance(e, dyncert.DyncertError)
    row = documented_row("the connection reset, closed or timed out")
    assert ": OSError (" in row and type(e).__name__ in row


@pytest.mark.parametrize("case, code", [("another client's key", "key_mismatch"), ("not a key", "invalid_key"),
                                        ("an encrypted key", "wrong_password")])
def test_a_bad_key_is_an_input_error(world, case, code):  # noqa: F811
    key = {"another client's key": world.foreign.key_pem,
           "not a key": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
           "an encrypted key": encrypted(world.client.key_pem)}[case]
    with socket.socket() as raw:
        e = raised(lambda: compat.wrap_socket(raw, certfile=io.BytesIO(world.client.cert_pem),
                                              keyfile=io.BytesIO(key), ca_certs=world.CA_FILE))
    assert type(e) is dyncert.InputError and e.code == code
    assert isinstance(e, dyncert.DyncertError) and isinstance(e, ValueError) and not isinstance(e, ssl.SSLError)
    row = documented_row("bad key, certificate, ca_certs or ssl_version")
    assert "dyncert.InputError (DyncertError" in row


def test_server_side_is_not_implemented(world):  # noqa: F811
    with socket.socket() as raw:
        e = raised(lambda: compat.wrap_socket(raw, certfile=world.client.combined_pem, ca_certs=world.CA_FILE,
                                              server_side=True))
    assert type(e) is NotImplementedError and "NotImplementedError" in documented_row("server_side=True")


def test_readme_gives_the_same_rows():
    """The README's list is the docstring's, row for row."""
    with open(README) as f:
        readme = f.read()
    start = dyncert.__doc__.index("What `wrap_socket` raises")
    rows = [line.strip() for line in dyncert.__doc__[start:].split("\n\n")[1].splitlines()]
    assert len(rows) == 7
    missing = [row for row in rows if row not in readme]
    assert missing == [], missing


def encrypted(key_pem):
    """The same key, PKCS#8-encrypted under a password wrap_socket is not given (it has no password argument)."""
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"not given"))
