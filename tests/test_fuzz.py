"""Bad input, generated: Hypothesis against the identity PUT, the call endpoints and the upload form.

Every answer must be a documented code (never a 5xx, never a stack trace), and a failed write
must leave the stored identity byte-for-byte as it was (compared on the raw Datastore entity).
The fixtures are function-scoped, so each test builds its app once and resets state itself.
"""

import base64
import dataclasses
import datetime
import ipaddress
import json
import os
import re
import urllib.parse
import warnings

import pytest
import webtest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from google.cloud import datastore as raw_datastore
from hypothesis import given, strategies as st

import main
from handlers import auth, routes
from tests.harness.profiles import fuzz_settings

pytestmark = pytest.mark.fuzz

BASE = "/api/v1/employees/asalieri/addresses/1"
PASSWORD = "fuzz-right-password-7"
UTC = datetime.timezone.utc

# API.md's codes: the 400 list, 413, 404, the auth answers, and the remote (502/504) ones.
INPUT_CODES = {"invalid_json", "invalid_request", "invalid_certificate", "invalid_key", "key_mismatch",
               "wrong_password", "certificate_expired", "certificate_not_yet_valid", "invalid_ca_certs",
               "invalid_pkcs12", "unsupported_tls_version", "invalid_target", "target_not_allowed"}
REMOTE_CODES = {"unknown_ca", "hostname_mismatch", "peer_rejected_certificate", "protocol_version",
                "handshake_failed", "connection_refused", "dns_failure", "connection_reset", "timeout",
                "peer_certificate_expired", "peer_certificate_not_yet_valid", "invalid_response"}  # v1.1
DOCUMENTED = INPUT_CODES | REMOTE_CODES | {"too_large", "not_found", "unauthenticated", "forbidden",
                                           "method_not_allowed", "csrf_failed", "unsupported_media_type",
                                           "rate_limited"}

CASES = {}  # test name -> examples run (printed at the end of the module)


def count(name):
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_cases(request):
    yield
    total = sum(CASES.values())
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"fuzz: {total} generated cases ({', '.join(f'{k}={v}' for k, v in sorted(CASES.items()))})"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    os.makedirs("artifacts", exist_ok=True)
    with open(os.path.join("artifacts", "fuzz-cases.txt"), "w") as f:
        f.write(line + "\n")


# --- raw Datastore reads: what is really stored ---------------------------------------------

def raw_client():
    return raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])  # anonymous: the emulator


def snapshot(db, employee="asalieri", address=1):
    """The raw Employee and Address entities (None when absent), as plain dicts."""
    key = db.key("Employee", employee, "Address", address)
    parent, entity = db.get(key.parent), db.get(key)
    return (dict(parent) if parent is not None else None, dict(entity) if entity is not None else None)


# --- material: valid, odd and wrong PEMs, made once -------------------------------------------

def _read(directory, name):
    with open(os.path.join(directory, name)) as f:
        return f.read()


def _now():
    return datetime.datetime.now(UTC)


# RFC 3526 group 14 (2048-bit MODP): DH parameters without the seconds of generating them.
MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)


def dh_params_pem():
    """PEM DH PARAMETERS (cryptography deprecates FFDH; we only need the PEM block)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dh.DHParameterNumbers(MODP_2048, 2).parameters().parameter_bytes(
            serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3).decode()


@pytest.fixture(scope="module")
def material(demo_pki):
    """Valid demo upload pieces plus wrong-type PEMs, an encrypted key and a PKCS#12."""
    cert, key, ca = (_read(demo_pki, n) for n in ("client-chain.pem", "client-key.pem", "ca.pem"))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fuzz CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(1)
               .not_valid_before(_now() - datetime.timedelta(days=1))
               .not_valid_after(_now() + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    demo_key = serialization.load_pem_private_key(key.encode(), None)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr")])).sign(leaf_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    wrong = {
        "csr": csr.public_bytes(pem).decode(),
        "public_key": leaf_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "dh_params": dh_params_pem(),
        "ec_params": "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n",
        "pkcs1_public": demo_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "other_key": leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode(),
        "ca_cert": ca_cert.public_bytes(pem).decode(),
    }
    encrypted = demo_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(PASSWORD.encode())).decode()
    sec1 = demo_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.BestAvailableEncryption(PASSWORD.encode())).decode()
    chain = [x509.load_pem_x509_certificate(b) for b in re.findall(
        rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", cert.encode(), re.S)]
    p12 = pkcs12.serialize_key_and_certificates(b"fuzz", demo_key, chain[0], chain[1:],
                                                serialization.BestAvailableEncryption(PASSWORD.encode()))
    return dict(cert=cert, key=key, ca=ca, ca_cert=ca_cert, ca_key=ca_key, leaf_key=leaf_key, wrong=wrong,
                encrypted=encrypted, sec1_encrypted=sec1, pkcs12=base64.b64encode(p12).decode(),
                upload={"cert": cert, "key": key, "ca_certs": ca, "host": "peer.example.com", "port": 8443})


# --- strategies ---------------------------------------------------------------------------------

ODD = ["\x00", "\u202e", "\u200f", "\ufeff", "\ud800", "\udfff", "\U0001f512", "e\u0301", "\u0000BEGIN",
       "\r\n", "\t", "\\", '"', "'", "<script>", "%00", "..", "/", "\u2028", "\uffff", "\x7f", "ａ"]


def odd_text(max_size=80):
    """Text with the odd characters mixed in: NUL, RTL marks, BOM, lone surrogates, emoji, controls."""
    return st.lists(st.one_of(st.text(max_size=8), st.sampled_from(ODD)), max_size=max_size // 4).map("".join)


def json_values(text=None):
    """Any JSON value, shallow."""
    text = text if text is not None else odd_text()
    scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                        st.floats(allow_nan=False, allow_infinity=False), text)
    return st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=3))


@st.composite
def pem_variants(draw, material):
    """PEM text that is truncated, overlong, of the wrong type, garbled, or made of odd certificates."""
    cert, key = material["cert"], material["key"]
    kind = draw(st.sampled_from(["truncated", "overlong", "wrong_type", "garbled_body", "armor_only",
                                 "swapped", "duplicated", "odd_cert", "long_chain", "crlf", "bytes_in_text"]))
    if kind == "truncated":
        source = draw(st.sampled_from([cert, key, material["encrypted"]]))
        return source[:draw(st.integers(0, len(source) - 1))]
    if kind == "overlong":
        return cert + draw(st.sampled_from(["A" * 70 + "\n", "\n", "-----END CERTIFICATE-----\n", cert])) * \
            draw(st.integers(1, 300))
    if kind == "wrong_type":
        return draw(st.sampled_from(sorted(material["wrong"].values())))
    if kind == "garbled_body":
        label = draw(st.sampled_from(["CERTIFICATE", "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY",
                                      "ENCRYPTED PRIVATE KEY", "PKCS7", "X509 CRL", "NOT A LABEL"]))
        body = base64.encodebytes(draw(st.binary(max_size=600))).decode()
        return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"
    if kind == "armor_only":
        return "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n" * draw(st.integers(1, 3))
    if kind == "swapped":
        return key
    if kind == "duplicated":
        return key + key
    if kind == "odd_cert":
        return draw(odd_certificates(material)) + cert
    if kind == "long_chain":
        return cert + material["wrong"]["ca_cert"] * draw(st.integers(1, 40))
    if kind == "crlf":
        return cert.replace("\n", "\r\n")
    return cert.replace("A", draw(st.sampled_from(ODD)), 1)


@st.composite
def odd_certificates(draw, material, key=None):
    """A certificate with odd extensions and names: unknown critical extensions, huge SANs, weird DNs."""
    key = key or material["leaf_key"]
    cn = draw(st.one_of(st.text(min_size=1, max_size=64),
                        st.sampled_from(["\u202eevil", "a\x00b", "\ufeff", "x" * 64, "CN=a,O=b"])))
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if draw(st.booleans()):
        attributes.append(x509.NameAttribute(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"),
                                             draw(st.text(min_size=1, max_size=30))))
    try:
        name = x509.Name(attributes)
    except ValueError:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fallback")])
    start = _now() + datetime.timedelta(days=draw(st.sampled_from([-400, -1, 0, 1])))
    end = start + datetime.timedelta(days=draw(st.sampled_from([1, 30, 36500])), seconds=1)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(material["ca_cert"].subject)
               .public_key(key.public_key()).serial_number(draw(st.integers(1, 2 ** 159 - 1)))
               .not_valid_before(start).not_valid_after(end))
    if draw(st.booleans()):
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), draw(st.binary(max_size=40))),
            critical=draw(st.booleans()))
    sans = draw(st.integers(0, 3))
    if sans:
        names = [x509.DNSName(f"h{i}.example.com") for i in range(draw(st.sampled_from([1, 50, 1500])))]
        names += [x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                  x509.UniformResourceIdentifier("spiffe://example.com/%E2%80%AEodd"),
                  x509.RFC822Name("who@example.com")]
        if draw(st.booleans()):
            names.append(x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.55555.9"), b"\x04\x00"))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=draw(st.booleans()))
    if draw(st.booleans()):
        builder = builder.add_extension(x509.BasicConstraints(ca=draw(st.booleans()), path_length=None),
                                        critical=True)
    return builder.sign(material["ca_key"], hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


FIELDS = ["cert", "key", "key_password", "pkcs12", "pkcs12_password", "ca_certs", "host", "port",
          "server_hostname", "tls_version"]


@st.composite
def bad_bodies(draw, material):
    """A valid upload with one to three fields replaced by something odd."""
    body = dict(material["upload"])
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS + ["extra"]))
        choice = draw(st.sampled_from(["json", "pem", "password", "special", "delete"]))
        if choice == "delete":
            body.pop(field, None)
            continue
        if choice == "pem":
            value = draw(pem_variants(material))
        elif choice == "password":
            # An encrypted key with right or wrong passwords (odd types included).
            body["key"] = draw(st.sampled_from([material["encrypted"], material["sec1_encrypted"]]))
            field, value = "key_password", draw(st.one_of(st.just(PASSWORD), st.just(PASSWORD + " "),
                                                          st.just(""), st.none(), odd_text(), json_values()))
        elif choice == "special":
            value = draw(st.sampled_from([
                0, -1, 65536, 2 ** 64, "443", True, 1.5, "", " ", "169.254.169.254", "metadata.google.internal",
                "[::1]", "fd20:ce::254", "localhost", "a" * 300, "TLSv1", "TLSv1_1", "SSLv3", "tlsv1_3",
                material["pkcs12"], base64.b64encode(b"junk").decode(), "not base64 !", PASSWORD]))
            if field == "pkcs12" and draw(st.booleans()):
                body["pkcs12_password"] = draw(st.sampled_from([PASSWORD, "wrong", None, ""]))
        else:
            value = draw(json_values())
        body[field] = value
    return body


def assert_documented(response, allowed=(400, 404, 413)):
    """Zero 5xx, no stack trace, and an API.md error shape and code."""
    text = response.text if isinstance(response.text, str) else ""
    assert response.status_int < 500 or response.status_int in allowed, (response.status, text[:500])
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    if response.status_int >= 400:
        error = response.json["error"]
        assert error["code"] in DOCUMENTED, error
        assert error["message"] and "-----BEGIN" not in error["message"]  # labels may be named, never blocks
        if response.status_int >= 500:
            assert error["code"] in REMOTE_CODES, error


def put_raw(admin, url, raw):
    return admin.put(url, raw, content_type="application/json", expect_errors=True)


def checked_put(admin, db, url, raw, before, key=("asalieri", 1)):
    """PUT `raw`; a failure must change nothing. Returns the snapshot after."""
    response = put_raw(admin, url, raw)
    assert_documented(response)
    after = snapshot(db, *key)
    if response.status_int >= 400:
        assert after == before, response.json
    else:
        assert response.status_int in (200, 201)
        assert after[1] is not None and after[1]["fingerprint_sha256"] == response.json["fingerprint_sha256"]
    return after


def seeded(admin, material):
    db = raw_client()
    admin.put(BASE, json.dumps(material["upload"]), content_type="application/json")
    return db, snapshot(db)


# --- the identity PUT ---------------------------------------------------------------------------

def test_put_with_odd_fields_answers_a_code_and_changes_nothing(admin, material):
    db, state = seeded(admin, material)
    box = {"state": state}

    @fuzz_settings(400)
    @given(body=bad_bodies(material))
    def run(body):
        count("put_fields")
        box["state"] = checked_put(admin, db, BASE, json.dumps(body), box["state"])

    run()


def test_put_with_random_bytes_and_malformed_json(admin, material):
    db, state = seeded(admin, material)
    valid = json.dumps(material["upload"])
    raw = st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(lambda s: s.encode("utf-8")),
        st.integers(1, len(valid) - 1).map(lambda n: valid[:n].encode()),           # truncated JSON
        st.sampled_from([b"[]", b"null", b"1", b'"s"', b"{", b"{}", b'{"cert": }', b"\xff\xfe{}",
                         b'{"cert": "\\ud800"}', b'{"a":1,"a":2}', b"\x00" * 10, b"NaN", b"[" * 5000]),
        json_values().map(lambda v: json.dumps(v).encode()),
        st.integers(256 * 1024 - 64, 256 * 1024 + 4096).map(                          # around the limit
            lambda n: json.dumps(dict(material["upload"], ca_certs="x" * n)).encode()),
        st.integers(256 * 1024 + 1, 300 * 1024).map(lambda n: b" " * n + b"{}"),
    )

    box = {"state": state}

    @fuzz_settings(250)
    @given(body=raw)
    def run(body):
        count("put_raw")
        response = put_raw(admin, BASE, body)
        assert_documented(response)
        if len(body) > 256 * 1024:
            assert response.status_int == 413 and response.json["error"]["code"] == "too_large"
        if response.status_int >= 400:
            assert snapshot(db) == box["state"]
        else:  # only the valid upload itself (or a prefix of it that is still whole) can succeed
            box["state"] = snapshot(db)

    run()


def test_bad_employee_and_address_ids(admin, material):
    db, state = seeded(admin, material)
    # Bearer alone (no cookie jar): webtest's cookie handling cannot decode a path holding %FF.
    admin = webtest.TestApp(admin.app, extra_environ={"HTTP_AUTHORIZATION": admin.extra_environ["HTTP_AUTHORIZATION"]})
    segment = st.one_of(odd_text(40).filter(lambda s: "\ud800" not in s and "\udfff" not in s),
                        st.text(alphabet="abc.@_-", min_size=60, max_size=70),
                        st.sampled_from(["0", "-1", "9007199254740993", "1e3", "0x10", "1.0", " 1", "%FF",
                                         "%C0%AF", "%00", "..", "%2e%2e", "+1", "\u0661"]))
    ids = st.tuples(st.one_of(segment, st.just("asalieri")), st.one_of(segment, st.just("1")))
    box = {"state": state}

    @fuzz_settings(150)
    @given(ids=ids, verb=st.sampled_from(["PUT", "GET", "DELETE", "POST-handshake", "POST-request", "POST-echo"]))
    def run(ids, verb):
        count("ids")
        employee, address = ids
        quote = lambda s: urllib.parse.quote(s, safe="%" if re.fullmatch(r"(%[0-9A-F]{2})+", s) else "")  # noqa
        url = f"/api/v1/employees/{quote(employee)}/addresses/{quote(address)}"
        if not quote(employee) or not quote(address):
            return
        method, _, call = verb.partition("-")
        if method == "PUT":
            response = put_raw(admin, url, json.dumps(material["upload"]))
        elif method == "POST":
            response = admin.post(url + "/" + call, "{}", content_type="application/json", expect_errors=True)
        else:
            response = admin.request(url, method=method, expect_errors=True)
        assert_documented(response, allowed=(502, 504))
        if (employee, address) != ("asalieri", "1"):
            assert snapshot(db) == box["state"]
        else:  # the one valid id: its own verb may change it
            box["state"] = snapshot(db)

    run()


# --- the call endpoints ---------------------------------------------------------------------------

@pytest.fixture
def call_targets(admin, material, demo_peer):
    """Identity 1 talks to the demo peer's HTTPS port, identity 2 to its echo port."""
    https_port, echo_port = demo_peer
    for address, port in ((1, https_port), (2, echo_port)):
        body = dict(material["upload"], host="127.0.0.1", server_hostname="localhost", port=port)
        admin.put(f"/api/v1/employees/asalieri/addresses/{address}", json.dumps(body),
                  content_type="application/json")
    return admin


HEADER_NAMES = st.one_of(st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"), odd_text(20),
                         st.sampled_from(["", " X", "X:Y", "Bad\nName", "X\x00", "Ｘ"]))


def request_bodies():
    return st.fixed_dictionaries({}, optional={
        "method": st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
                            st.sampled_from(["get", "TRACE", "CONNECT", "", "GET "]), json_values()),
        "path": st.one_of(st.just("/"), st.text(max_size=40).map(lambda s: "/" + s), odd_text(),
                          json_values(), st.sampled_from(["/a b", "/\r\nX: y", "//", "/%00", "/" + "a" * 9000])),
        "headers": st.one_of(st.dictionaries(HEADER_NAMES, st.one_of(odd_text(30), json_values()), max_size=4),
                             json_values()),
        "body": st.one_of(odd_text(), json_values(), st.integers(64 * 1024 - 4, 64 * 1024 + 4).map(lambda n: "b" * n)),
        "extra": json_values(),
    })


def echo_bodies():
    return st.fixed_dictionaries({}, optional={
        # Strings end with a newline: without one the peer waits for the rest of the line (504 timeout,
        # documented, and proven once in test_faults.py rather than at io_timeout per example here).
        "send": st.one_of(odd_text().map(lambda s: s.replace("\n", "") + "\n"),
                          json_values().map(lambda v: v + "\n" if isinstance(v, str) else v),
                          st.just(""), st.integers(64 * 1024 - 4, 64 * 1024 + 4).map(lambda n: "e" * (n - 1) + "\n")),
    })


def test_call_endpoints_with_odd_bodies(call_targets, material, settings):
    # The same store and KEK with short timeouts: a hang would show up as a quick 504, and fail.
    admin = webtest.TestApp(main.create_app(dataclasses.replace(settings, connect_timeout=2, io_timeout=2)),
                            extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    db = raw_client()
    states = [snapshot(db, "asalieri", a) for a in (1, 2)]
    raw = st.one_of(st.binary(max_size=300), st.sampled_from([b"{", b"[]", b"null", b"\xff", b" " * 300000]))
    bodies = st.one_of(
        st.tuples(st.just("handshake"), st.just(1), st.one_of(raw, st.just(b""), json_values().map(
            lambda v: json.dumps(v).encode()))),
        st.tuples(st.just("request"), st.just(1), st.one_of(raw, request_bodies().map(
            lambda v: json.dumps(v).encode()))),
        st.tuples(st.just("echo"), st.just(2), st.one_of(raw, echo_bodies().map(lambda v: json.dumps(v).encode()))),
    )

    @fuzz_settings(250)
    @given(case=bodies)
    def run(case):
        count("calls")
        kind, address, body = case
        response = admin.post(f"/api/v1/employees/asalieri/addresses/{address}/{kind}", body,
                              content_type="application/json", expect_errors=True)
        # The demo peer answers every well-formed call: no 502/504 is expected either.
        assert_documented(response)
        if response.status_int == 200:
            assert response.json["ok"] is True
        if kind == "echo" and response.status_int == 200:
            sent = json.loads(body.strip() or b"{}").get("send", "hello\n")
            assert response.json["received"] == sent.split("\n")[0] + "\n"

    run()
    assert [snapshot(db, "asalieri", a) for a in (1, 2)] == states  # calls never write


# --- the upload form -----------------------------------------------------------------------------

def form_values(material):
    text = st.one_of(odd_text().filter(lambda s: "\ud800" not in s and "\udfff" not in s),
                     pem_variants(material).filter(lambda s: "\ud800" not in s and "\udfff" not in s))
    return st.fixed_dictionaries({
        "employee": st.one_of(st.just("asalieri"), text), "address": st.one_of(st.just("1"), text),
        "cert": st.one_of(st.just(material["cert"]), text), "key": st.one_of(st.just(material["key"]), text),
        "key_password": st.one_of(st.just(""), text), "ca_certs": st.one_of(st.just(""), text),
        "host": st.one_of(st.just("peer.example.com"), text), "port": st.one_of(st.just("8443"), text),
        "server_hostname": st.one_of(st.just(""), text),
        "tls_version": st.one_of(st.just("TLS"), st.sampled_from(["TLSv1_2", "TLSv1", "x"]), text),
    }), st.lists(st.tuples(st.sampled_from(["certfile", "keyfile", "cafile", "pkcs12file"]),
                           st.one_of(st.binary(max_size=400), st.sampled_from([
                               material["cert"].encode(), material["key"].encode(),
                               base64.b64decode(material["pkcs12"]), b"\xff\xfe", b"\x00" * 600000]))),
                 max_size=2, unique_by=lambda t: t[0])


def test_upload_form_with_odd_fields(admin, material):
    db, state = seeded(admin, material)
    token = re.search(r'name="csrf_token" value="([^"]+)"', admin.get("/admin/new").text).group(1)
    box = {"state": state}
    fields, files = form_values(material)

    @fuzz_settings(200)
    @given(values=fields, uploads=files)
    def run(values, uploads):
        count("form")
        upload_files = [(name, "f.pem", data) for name, data in uploads]
        response = admin.post("/admin/new", dict(values, csrf_token=token), upload_files=upload_files,
                              content_type="multipart/form-data", expect_errors=True)
        assert response.status_int in (303, 400, 413), response.status
        assert "Traceback" not in response.text
        key = ("asalieri", 1)
        if response.status_int == 303:
            if (values["employee"], values["address"]) == ("asalieri", "1"):
                box["state"] = snapshot(db, *key)
        else:
            assert snapshot(db, *key) == box["state"]
        public = material["wrong"]["pkcs1_public"]  # an EC key's last line may be its public point
        for line in material["key"].splitlines()[1:-1]:
            assert line in public or line not in response.text  # a form never echoes a private key back

    run()


# --- every route of handlers/routes.ROUTES ------------------------------------------------------------
# Enumerated, not listed: a route added to ROUTES is fuzzed with no change here. Path parameters, query
# strings, cookies and headers carry non-ASCII text, Unicode digits, huge numbers and control characters.

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
PARAM = re.compile(r"<(\w+)(?::[^>]*)?>")
ODD_SEGMENTS = ["\u00b2", "\u0661", "\uff11", "\u0967", "1\u00b2", "9" * 30, "99999999999", "9007199254740993",
                "0", "-1", "1e3", "0x10", " 1", "%FF", "%00", "%0a", "%0d%0a", "%09", "%C0%AF", "..", "%2e%2e",
                "\u202e", "\x7f", "a\x00b", "\U0001f512", "x" * 300, "%E2%80%AE"]
ODD_VALUES = ODD_SEGMENTS + ["", "\r\nX-Injected: 1", "//evil.example/", "/%09/evil.example/", "\\\\evil",
                             "javascript:alert(1)", "<script>", "\u00e9t\u00e9", "null"]
ALLOWED_STATUS = {200, 201, 204, 302, 303, 400, 401, 403, 404, 405, 409, 413, 415, 429}


def documented_codes():
    """API.md's codes (above) plus every `snake_case` code the README documents (other routes' codes)."""
    with open(README, encoding="utf-8") as f:
        return DOCUMENTED | set(re.findall(r"`([a-z]+(?:_[a-z]+)*)`", f.read()))


def segment(name):
    """A path parameter: the seeded value, or an odd one."""
    valid = {"employee": "asalieri", "address": "1", "name": "style.css"}.get(name, "x")
    return st.one_of(st.just(valid), st.sampled_from(ODD_SEGMENTS),
                     odd_text(24).filter(lambda s: "\ud800" not in s and "\udfff" not in s))


def quote_segment(value):
    """URL-encode a segment, keeping an already percent-encoded one as it is."""
    return value if re.fullmatch(r"(%[0-9A-Fa-f]{2})+", value) else urllib.parse.quote(value, safe="")


def latin1(text):
    """Header text as a WSGI server passes it: the UTF-8 bytes read as latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


# Raw bytes (issue 20 item 6): not only valid Unicode. A query string or form value as the client's bytes,
# percent-encoded or not (a WSGI server hands undecoded bytes over as latin-1), and the form's charset.
RAW_BYTES = st.one_of(st.binary(max_size=24), st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe9t\xe9",
                                                              b"+\x00", b"%", b"%G1", b"\xf0\x9f\x94", b"\x80"]))
CHARSETS = ["", "; charset=utf-8", "; charset=UTF-8", '; charset="utf-8"', "; charset=latin-1", "; charset=utf-7",
            "; charset=utf-16", "; charset=cp1252", "; charset=nope", "; charset="]


@st.composite
def raw_pairs(draw, names):
    """key=value pairs of raw bytes: percent-encoded, or left as they are."""
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        name, value = draw(st.sampled_from(names)).encode(), draw(RAW_BYTES)
        if draw(st.booleans()):
            value = urllib.parse.quote_from_bytes(value).encode()
        pairs.append(name + b"=" + value)
    return b"&".join(pairs)


def csr_bodies():
    """POST .../csr bodies: key types (never RSA: seconds per example), subjects and SANs, odd and valid."""
    names = st.one_of(odd_text(20), st.sampled_from(["ok", "a" * 65, "", "CN=x,O=y", "\u202e", "xx"]))
    return st.fixed_dictionaries({}, optional={
        "key_type": st.one_of(st.sampled_from(["EC-P256", "Ed25519", "rsa-2048", "DSA", "", "EC-P999"]),
                              json_values()),
        "subject": st.one_of(st.dictionaries(st.sampled_from(["CN", "O", "OU", "C", "ST", "L", "X", ""]), names,
                                             max_size=4), json_values()),
        "san": st.one_of(st.fixed_dictionaries({}, optional={
            "dns": st.lists(st.one_of(names, st.sampled_from(["a.example.com", "*.example.com", "-x.", "a..b"])),
                            max_size=3),
            "email": st.lists(st.one_of(names, st.just("who@example.com")), max_size=2),
            "uri": st.lists(st.one_of(names, st.sampled_from(["http://[::1", "spiffe://e/x", "https://a/%zz",
                                                              "http://[v1.x]/", "//x"])), max_size=2)}),
            json_values()),
        "extra": json_values(),
    })


def lifecycle_bodies(template, material):
    """A JSON body shaped for the lifecycle route of `template` (odd fields included), or None for other routes."""
    if template.endswith("/csr"):
        return csr_bodies().map(lambda v: json.dumps(v).encode())
    if template.endswith("/next"):
        fields = st.fixed_dictionaries({}, optional={
            "cert": st.one_of(st.just(material["cert"]), pem_variants(material), json_values()),
            "key": st.one_of(st.just(material["key"]), pem_variants(material), json_values()),
            "pkcs12": st.one_of(st.just(material["pkcs12"]), json_values()),
            "pkcs12_password": st.one_of(st.just(PASSWORD), json_values()),
            "host": st.one_of(st.sampled_from(["peer.example.com", "127.0.0.1", "169.254.169.254", "[::1]"]),
                              json_values()),
            "port": st.one_of(st.sampled_from([443, 0, 65536, "443"]), json_values()),
            "tls_version": st.one_of(st.sampled_from(["TLS", "TLSv1_3", "SSLv3"]), json_values()),
            "ca_certs": st.one_of(st.just(material["ca"]), pem_variants(material), json_values()),
        })
        return fields.map(lambda v: json.dumps(v).encode())
    if template.endswith(("/promote", "/rollback", "/next/handshake", "/next/request", "/next/echo")):
        return st.one_of(st.just(b"{}"), st.just(b""), json_values().map(lambda v: json.dumps(v).encode()),
                         st.fixed_dictionaries({}, optional={"send": odd_text(), "path": odd_text(),
                                                             "method": json_values()}).map(
                             lambda v: json.dumps(v).encode()))
    return None


@st.composite
def route_requests(draw, template, handler, session_token, material=None):
    """One request to `template`: method, path, query, headers, cookies, body."""
    values = {name: draw(segment(name)) for name in PARAM.findall(template)}
    path = PARAM.sub(lambda m: quote_segment(values[m.group(1)]) or "x", template)
    own = [m.upper() for m in ("get", "post", "put", "delete") if hasattr(handler, m)]
    method = draw(st.one_of(st.sampled_from(own or ["GET"]),
                            st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])))
    query = draw(st.lists(st.tuples(st.sampled_from(["days", "next", "deleted", "saved", "employee", "address",
                                                     "port", "host", "x"]),
                                    st.one_of(st.sampled_from(ODD_VALUES), odd_text(20))), max_size=3))
    query = [(k, v) for k, v in query if "\ud800" not in v and "\udfff" not in v]
    if query:
        path += "?" + urllib.parse.urlencode(query)
    who = draw(st.sampled_from(["anonymous", "bearer", "session", "wrong-bearer", "forged-session"]))
    headers = {}
    for name, choices in (("Origin", ["http://localhost:80", "http://localhost:8081", "null", "https://evil.example",
                                      "\u00e9vil"]),
                          ("Sec-Fetch-Site", ["same-origin", "same-site", "cross-site", "none", "\u00b2"]),
                          ("X-CSRF-Token", [session_token, "forged", "\u0661" * 8, ""]),
                          ("Content-Type", ["application/json", "text/plain", "application/x-www-form-urlencoded",
                                            "multipart/form-data; boundary=zz", "\u00e9/\u00e9", ""]),
                          ("X-Appengine-User-Email", ["a@example.com"]), ("X-Appengine-User-Is-Admin", ["1", "0"]),
                          ("X-Appengine-Cron", ["true"])):
        if draw(st.booleans()):
            headers[name] = latin1(draw(st.one_of(st.sampled_from(choices), st.sampled_from(ODD_VALUES))))
    if draw(st.booleans()):
        names = draw(st.sets(st.sampled_from([auth.SESSION_COOKIE, auth.CSRF_COOKIE, "__Host-dyncert_session", "x"]),
                             min_size=1, max_size=2))
        headers["Cookie"] = latin1("; ".join(f"{n}={draw(st.sampled_from(ODD_VALUES)).replace(';', '')}"
                                             for n in sorted(names)))
    form = {"csrf_token": draw(st.sampled_from([session_token, "forged", "\u00e9t\u00e9", "\u0661"])),
            "token": draw(st.sampled_from(["wrong", "\u00b2" * 20, ""])), "next": draw(st.sampled_from(ODD_VALUES)),
            "employee": values.get("employee", "asalieri"), "address": draw(st.sampled_from(["1", "\u00b2", "\u0661"])),
            "port": draw(st.sampled_from(["443", "\u00b2", "9" * 30])), "send": "x", "method": "GET", "path": "/"}
    shaped = lifecycle_bodies(template, material) if material is not None else None
    body = draw(st.one_of(st.just(b""), st.just(urllib.parse.urlencode(form).encode()),
                          json_values().map(lambda v: json.dumps(v).encode()), st.binary(max_size=200),
                          raw_pairs(sorted(form)), *([shaped, shaped] if shaped is not None else [])))
    if draw(st.integers(0, 3)) == 0:  # a form in any charset (WebOb would answer 500 to most)
        headers["Content-Type"] = "application/x-www-form-urlencoded" + draw(st.sampled_from(CHARSETS))
    raw_query = None
    if draw(st.integers(0, 3)) == 0:  # the query string as raw bytes, as a WSGI server passes them (latin-1)
        raw_query = draw(raw_pairs(["days", "next", "deleted", "saved", "q", "employee", "stage", "x"])).decode(
            "latin-1")
    if draw(st.integers(0, 4)) == 0:  # a multipart form, where any field may come as a file
        parts = []
        for name, value in form.items():
            disposition = f'form-data; name="{name}"' + ('; filename="f.txt"' if draw(st.booleans()) else "")
            parts.append(f"--zz\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n")
        body = ("".join(parts) + "--zz--\r\n").encode()
        headers["Content-Type"] = "multipart/form-data; boundary=zz" + draw(st.sampled_from(CHARSETS))
    gae = draw(st.integers(0, 3)) == 0  # one case in four on the App Engine app (login headers, HSTS)
    return method, path, headers, body, who, gae, raw_query


def stored_state(db):
    """Every entity the app stores, but sessions, sign-in counters and last-call records (a refused
    remote call is still a call: the list page shows its outcome)."""
    entities = [e for e in db.query().fetch() if not e.key.kind.startswith("__")
                and e.key.kind not in ("Session", "SignInAttempts", "LastCall")]
    return sorted((repr(e.key.flat_path), repr(sorted(dict(e).items()))) for e in entities)


def answer_code(response):
    """The error code of an answer: the JSON error shape, or the code an error page shows."""
    if response.content_type == "application/json" and response.body:
        data = response.json
        return (data.get("error") or {}).get("code") if isinstance(data, dict) else None
    match = re.search(r'role="alert"><code>([a-z_]+)</code>', response.text)
    return match.group(1) if match else None


@pytest.mark.parametrize("template,handler", [(r.template, r.handler) for r in routes.ROUTES],
                         ids=[r.template for r in routes.ROUTES])
def test_every_route_answers_a_documented_code(app, settings, material, template, handler):
    from tests.harness.browser import signed_in
    from tests.harness.ports import refused_port
    codes = documented_codes()
    bearer = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    bearer.put(BASE, json.dumps(dict(material["upload"], host="127.0.0.1", server_hostname="localhost",
                                     port=refused_port())), content_type="application/json", status=201)
    db = raw_client()
    box = {"state": stored_state(db)}
    browser, token = signed_in(app, settings.admin_token)
    box["session"] = browser.cookies[auth.SESSION_COOKIE]
    on_gae = main.create_app(dataclasses.replace(settings, on_app_engine=True, allow_local_kek_on_app_engine=True))

    @fuzz_settings(40)
    @given(case=route_requests(template, handler, token, material))
    def run(case):
        count("routes")
        method, path, headers, body, who, gae, raw_query = case
        environ = {"REMOTE_ADDR": "192.0.2.200"}
        if who == "bearer":
            environ["HTTP_AUTHORIZATION"] = f"Bearer {settings.admin_token}"
        elif who == "wrong-bearer":
            environ["HTTP_AUTHORIZATION"] = "Bearer \u00b2\u0661" .encode().decode("latin-1")
        cookie = headers.pop("Cookie", "")
        if who == "session":
            cookie = f"{auth.SESSION_COOKIE}={box['session']}" + ("; " + cookie if cookie else "")
        elif who == "forged-session":
            cookie = f"{auth.SESSION_COOKIE}={box['session'][:-2]}zz"
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        content_type = headers.pop("Content-Type", None)
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        request = webtest.TestRequest.blank(path, method=method, body=body)
        request.environ.update(environ)
        if raw_query is not None:
            request.environ["QUERY_STRING"] = raw_query
        response = webtest.TestApp(on_gae if gae else app, lint=False).do_request(request, status=None,
                                                                                  expect_errors=True)
        text = response.text if response.charset or (response.content_type or "").startswith("text/") else ""
        assert "Traceback" not in text and 'File "' not in text, (method, path, text[:300])
        code = answer_code(response) if response.status_int >= 400 else None
        remote = response.status_int in (502, 504) and code in REMOTE_CODES
        assert response.status_int in ALLOWED_STATUS or remote, (method, path, who, response.status, text[:300])
        assert response.headers["Cache-Control"] in ("no-store", "public, max-age=600"), (method, path)
        assert ("Strict-Transport-Security" in response.headers) is gae, (method, path)
        if code is not None:
            assert code in codes, (method, path, code)
        if response.status_int >= 400 or (response.status_int in (302, 303) and method != "GET"
                                          and "/signin" in response.headers.get("Location", "")):
            assert stored_state(db) == box["state"], (method, path, who, response.status)
        else:
            box["state"] = stored_state(db)
        if path.startswith("/signout") and response.status_int == 302:  # the fuzz ended our session
            box["session"] = signed_in(app, settings.admin_token)[0].cookies[auth.SESSION_COOKIE]

    run()
