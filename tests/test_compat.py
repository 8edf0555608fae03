"""dyncert.compat: the App Engine Python 2.7 seed snippet on Python 3, against `openssl s_server -Verify`."""

import io
import socket
import ssl
import warnings

import pytest

from dyncert import compat
from dyncert.errors import CertificateError, InputError
from tests.harness import peers, pki

pytestmark = pytest.mark.interp


@pytest.fixture(scope="module")
def world(tmp_path_factory, run_pki):
    """Our PKI with CA files on disk (public), clients from our CA and from a stranger's."""
    directory = tmp_path_factory.mktemp("compat-pki")

    class World:
        pass
    w = World()
    w.ours, w.stranger = run_pki.ours, run_pki.stranger
    w.CA_FILE = pki.write_pem(directory, "ca.pem", w.ours.ca_pem)
    w.STRANGER_CA_FILE = pki.write_pem(directory, "stranger-ca.pem", w.stranger.ca_pem)
    w.server = run_pki.server
    w.client = pki.client_cert(w.ours.clients_ca, "asalieri")
    w.foreign = pki.client_cert(w.stranger.clients_ca, "foreigner")
    return w


@pytest.fixture(params=["1.2", "1.3"])
def s_server(world, request):
    """openssl s_server requiring a client certificate under our CA; answers each line reversed."""
    with peers.OpenSSLServer(world.server, world.ours.ca_pem, mode="rev", tls=request.param) as server:
        yield server


class Record:
    """Stands in for the Datastore record of the seed: key and cert as text."""

    def __init__(self, creds):
        self.key_str = creds.key_pem.decode()
        self.cert = creds.cert_pem.decode()


def seed(server, record, ca_file, hostname="localhost"):
    """The seed snippet, verbatim but for the module name."""
    from io import StringIO
    sock = socket.create_connection((server.host, server.port))
    sock = compat.wrap_socket(sock, keyfile=StringIO(record.key_str), certfile=StringIO(record.cert),
                              cert_reqs=ssl.CERT_REQUIRED, ca_certs=ca_file)
    compat.match_hostname(sock.getpeercert(), hostname)
    return sock


def talk(sock, line=b"hello\n"):
    """Send a line, read the answer (TLS 1.3: the peer's verdict on our certificate surfaces here)."""
    with sock:
        sock.sendall(line)
        return sock.recv(1024)


def test_seed_snippet(world, s_server):
    assert talk(seed(s_server, Record(world.client), world.CA_FILE)) == b"olleh\n"


def test_seed_snippet_wrong_ca(world, s_server):
    with pytest.raises(ssl.SSLCertVerificationError):
        seed(s_server, Record(world.client), world.STRANGER_CA_FILE)


def test_seed_snippet_wrong_hostname(world, s_server):
    with pytest.raises(CertificateError, match="doesn't match") as e:
        seed(s_server, Record(world.client), world.CA_FILE, hostname="a.hostname.com")
    assert isinstance(e.value, ValueError) and e.value.code == "hostname_mismatch"


def test_seed_snippet_client_from_another_ca(world, s_server):
    # TLS 1.2: the handshake fails; TLS 1.3: the alert arrives on the first read.
    with pytest.raises(ssl.SSLError) as e:
        talk(seed(s_server, Record(world.foreign), world.CA_FILE))
    assert e.value.reason == "TLSV1_ALERT_UNKNOWN_CA"


@pytest.mark.parametrize("form", ["pem_str", "pem_bytes", "path", "bytesio", "combined"])
def test_sources(world, s_server, tmp_path, form):
    cert, key = world.client.cert_pem, world.client.key_pem
    kwargs = {"pem_str": dict(certfile=cert.decode(), keyfile=key.decode()),
              "pem_bytes": dict(certfile=cert, keyfile=key),
              "path": dict(zip(("certfile", "keyfile"), pki.write_files(tmp_path, world.client, "client"))),
              "bytesio": dict(certfile=io.BytesIO(cert), keyfile=io.BytesIO(key)),
              "combined": dict(certfile=io.StringIO(world.client.combined_pem.decode()))}[form]
    ca = {"path": world.CA_FILE, "pem_str": world.ours.ca_pem.decode()}.get(form, io.BytesIO(world.ours.ca_pem))
    sock = compat.wrap_socket(socket.create_connection((s_server.host, s_server.port)), ca_certs=ca, **kwargs)
    assert talk(sock) == b"olleh\n"


@pytest.mark.parametrize("hostname, error", [("localhost", None), ("wrong.example", ssl.SSLCertVerificationError)])
def test_wrap_before_connect_checks_server_hostname(world, s_server, hostname, error):
    sock = compat.wrap_socket(socket.socket(), certfile=io.StringIO(world.client.combined_pem.decode()),
                              ca_certs=world.CA_FILE, server_hostname=hostname)
    if error is None:
        sock.connect((s_server.host, s_server.port))
        assert talk(sock) == b"olleh\n"
    else:
        with sock, pytest.raises(error, match="Hostname mismatch"):
            sock.connect((s_server.host, s_server.port))


@pytest.mark.parametrize("cert_reqs, ca", [(ssl.CERT_REQUIRED, "ours"), (ssl.CERT_NONE, "stranger")])
def test_cert_none_is_explicit(world, s_server, cert_reqs, ca):
    # Verification off only when asked: then a stranger's CA "works", and there is no certificate to match.
    sock = compat.wrap_socket(socket.create_connection((s_server.host, s_server.port)),
                              certfile=world.client.combined_pem, cert_reqs=cert_reqs,
                              ca_certs=world.CA_FILE if ca == "ours" else world.STRANGER_CA_FILE)
    with sock:
        if cert_reqs == ssl.CERT_NONE:
            with pytest.raises(ValueError, match="empty or no certificate"):
                compat.match_hostname(sock.getpeercert(), "localhost")
        else:
            compat.match_hostname(sock.getpeercert(), "localhost")
        assert talk(sock) == b"olleh\n"


def test_ca_certs_required(world):
    with socket.socket() as raw, pytest.raises(InputError) as e:
        compat.wrap_socket(raw, certfile=world.client.combined_pem)
    assert e.value.code == "invalid_ca_certs" and isinstance(e.value, ValueError)


@pytest.mark.parametrize("name", ["PROTOCOL_TLSv1", "PROTOCOL_TLSv1_1"])
def test_old_protocols_refused(world, name):
    with socket.socket() as raw, pytest.raises(InputError) as e:
        compat.wrap_socket(raw, certfile=world.client.combined_pem, ca_certs=world.CA_FILE,
                           ssl_version=getattr(ssl, name))
    assert e.value.code == "unsupported_tls_version"


@pytest.mark.parametrize("ssl_version, expected", [
    (None, None), (ssl.PROTOCOL_SSLv23, None), (ssl.PROTOCOL_TLS, None),
    (ssl.PROTOCOL_TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
], ids=str)
def test_ssl_version(world, ssl_version, expected):
    # Twin: a pinned version is really pinned against a peer offering both.
    with peers.OpenSSLServer(world.server, world.ours.ca_pem, mode="rev") as server:
        sock = compat.wrap_socket(socket.create_connection((server.host, server.port)),
                                  certfile=world.client.combined_pem, ca_certs=world.CA_FILE,
                                  ssl_version=ssl_version)
        with sock:
            assert sock.version() == (expected or "TLSv1.3")


@pytest.mark.parametrize("pinned, error", [(ssl.PROTOCOL_TLSv1_2, None), (ssl.TLSVersion.TLSv1_3, ssl.SSLError)],
                         ids=str)
def test_pinned_version_against_tls12_peer(world, pinned, error):
    with peers.OpenSSLServer(world.server, world.ours.ca_pem, mode="rev", tls="1.2") as server:
        raw = socket.create_connection((server.host, server.port))
        if error is None:
            assert talk(compat.wrap_socket(raw, certfile=world.client.combined_pem, ca_certs=world.CA_FILE,
                                           ssl_version=pinned)) == b"olleh\n"
        else:
            with raw, pytest.raises(error):
                compat.wrap_socket(raw, certfile=world.client.combined_pem, ca_certs=world.CA_FILE,
                                   ssl_version=pinned)


def test_server_side_is_not_supported(world):
    with socket.socket() as raw, pytest.raises(NotImplementedError):
        compat.wrap_socket(raw, certfile=world.client.combined_pem, ca_certs=world.CA_FILE, server_side=True)


def test_bad_key_is_an_input_error(world):
    with socket.socket() as raw, pytest.raises(InputError) as e:
        compat.wrap_socket(raw, certfile=world.client.cert_pem, keyfile=world.foreign.key_pem, ca_certs=world.CA_FILE)
    assert e.value.code == "key_mismatch" and "PRIVATE KEY" not in e.value.message


# --- match_hostname, cross-checked against Python 3.11's own --------------------------------

def san(*entries, cn=None):
    """A getpeercert()-style dict."""
    cert = {"subject": (((("commonName", cn),),) if cn else ((("organizationName", "x"),),))}
    if entries:
        cert["subjectAltName"] = tuple(entries)
    return cert


OK, NO, BAD = "match", "mismatch", "unsupported"
# (cert, hostname, outcome, same as Python 3.11's ssl.match_hostname)
MATCH_TABLE = [
    (san(("DNS", "example.com")), "example.com", OK, True),
    (san(("DNS", "example.com")), "EXAMPLE.Com", OK, True),
    (san(("DNS", "example.com")), "www.example.com", NO, True),
    (san(("DNS", "a.example.com"), ("DNS", "b.example.com")), "b.example.com", OK, True),
    (san(("DNS", "a.example.com"), ("DNS", "b.example.com")), "c.example.com", NO, True),
    (san(("DNS", "*.example.com")), "a.example.com", OK, True),
    (san(("DNS", "*.example.com")), "A.EXAMPLE.COM", OK, True),
    (san(("DNS", "*.example.com")), "a.b.example.com", NO, True),
    (san(("DNS", "*.example.com")), "example.com", NO, True),
    (san(("DNS", "*.example.com")), ".example.com", NO, True),
    (san(("DNS", "f*.example.com")), "foo.example.com", BAD, True),
    (san(("DNS", "*oo.example.com")), "foo.example.com", BAD, True),
    (san(("DNS", "*.*.example.com")), "a.b.example.com", BAD, True),
    (san(("DNS", "a.*.example.com")), "a.b.example.com", BAD, True),
    (san(("DNS", "*")), "example", BAD, True),
    (san(("DNS", "xn--caf-dma.example")), "xn--caf-dma.example", OK, True),
    (san(("DNS", "xn--*.example")), "xn--caf-dma.example", BAD, True),
    (san(("DNS", "*.example")), "xn--caf-dma.example", NO, False),   # 3.11 matches; RFC 6125 6.4.3 says no
    (san(("DNS", "*.xn--caf-dma.example")), "a.xn--caf-dma.example", OK, True),
    (san(("DNS", "example.com")), "example.com.", OK, False),        # 3.11 ignores absolute names
    (san(("DNS", "example.com.")), "example.com", OK, False),
    (san(("DNS", "*.example.com.")), "a.example.com", OK, False),
    (san(("IP Address", "127.0.0.1")), "127.0.0.1", OK, True),
    (san(("IP Address", "127.0.0.1")), "127.0.0.2", NO, True),
    (san(("IP Address", "127.0.0.1")), "127.1", NO, True),             # not quad-dotted: a (bad) DNS name
    (san(("DNS", "127.0.0.1")), "127.0.0.1", NO, True),               # an IP matches only iPAddress
    (san(("IP Address", "2001:DB8:0:0:0:0:0:1")), "2001:db8::1", OK, True),
    (san(("IP Address", "2001:DB8:0:0:0:0:0:1\n")), "2001:0db8::0001", OK, True),
    (san(("IP Address", "2001:DB8:0:0:0:0:0:1")), "2001:db8::2", NO, True),
    (san(("IP Address", "::1"), ("DNS", "localhost")), "::1", OK, True),
    (san(cn="example.com"), "example.com", OK, True),
    (san(cn="*.example.com"), "a.example.com", OK, True),
    (san(cn="example.com"), "other.com", NO, True),
    (san(("DNS", "other.com"), cn="example.com"), "example.com", NO, True),   # CN ignored when SAN has DNS
    (san(("IP Address", "10.0.0.1"), cn="example.com"), "example.com", NO, True),  # ... or IP entries
    (san(("email", "a@example.com"), cn="example.com"), "example.com", OK, True),  # other SAN types don't count
    (san(), "example.com", NO, True),                                 # no name at all
]


def outcome(fn, cert, hostname):
    """(OK|NO|BAD, message) of one match_hostname call."""
    try:
        fn(cert, hostname)
        return OK, None
    except (ssl.CertificateError, CertificateError) as e:  # the stdlib's, then ours
        message = e.args[0]
        return (NO if "doesn't match" in message or "no appropriate" in message else BAD), message


@pytest.mark.parametrize("cert, hostname, expected, same", MATCH_TABLE, ids=[f"{r[1]}-{r[2]}" for r in MATCH_TABLE])
def test_match_hostname(cert, hostname, expected, same):
    ours = outcome(compat.match_hostname, cert, hostname)
    assert ours[0] == expected
    stdlib = getattr(ssl, "match_hostname", None)
    if stdlib is None:
        pytest.skip("ssl.match_hostname is gone (Python 3.12+): nothing to cross-check")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = outcome(stdlib, cert, hostname)
    if same:
        assert ours == theirs  # same outcome and same message
    else:
        assert ours[0] != theirs[0]  # a deliberate, documented difference


@pytest.mark.parametrize("cert", [None, {}])
def test_match_hostname_empty_certificate(cert):
    with pytest.raises(ValueError, match="empty or no certificate"):
        compat.match_hostname(cert, "example.com")


def test_match_hostname_error_is_a_certificate_error():
    with pytest.raises(CertificateError) as e:
        compat.match_hostname(san(("DNS", "example.com")), "other.com")
    assert isinstance(e.value, ValueError) and e.value.code == "hostname_mismatch"
