"""The app with keys held in Cloud KMS (API.md v1.2), against the local KMS STAND-IN (not Cloud KMS).

The app reaches the stand-in through its KMS_ENDPOINT override; TLS peers are `openssl s_server
-Verify -verify_return_error`; Datastore is the emulator.
"""

import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.cloud import datastore as raw_datastore

import settings as settings_module
from tests.harness.app import ADMIN_TOKEN
from dyncert import runtime
from tests.harness.kms_standin import Algorithm, KmsStandIn, State
from tests.harness import interop_pki, peers, pki

RING = "projects/p/locations/global/keyRings/standin"
URL = "/api/v1/employees/asalieri/addresses/1"
BINDING = runtime.signer_binding()
needs_binding = pytest.mark.skipif(not BINDING["available"], reason=f"signer_unsupported here: {BINDING['detail']}")


@pytest.fixture(scope="module")
def standin():
    with KmsStandIn() as server:
        yield server


@pytest.fixture
def kms(standin):
    """The stand-in, behaving, its records cleared after the test."""
    yield standin
    standin.sign_error = None
    standin.forbidden.clear()
    standin.destroyed.clear()
    standin.corrupt.clear()


@pytest.fixture
def settings(tmp_path, standin):
    """The app's settings, with its KMS client pointed at the stand-in."""
    return settings_module.from_environ({}, admin_token=ADMIN_TOKEN, local_kek_file=str(tmp_path / "kek.bin"),
                                        kms_endpoint=f"127.0.0.1:{standin.port}", kms_key_ring=RING)


@pytest.fixture(scope="module")
def world():
    w = type("World", (), {})()
    w.servers = pki.make_pki("kms app servers")
    w.server = pki.server_cert(w.servers.root)
    w.clients = interop_pki.make_ca("kms app clients root")
    w.stranger = interop_pki.make_ca("kms app stranger root")
    return w


def public_key_of(standin, name):
    return standin.versions[name].private_key.public_key()


def cert_for(world, public_key, cn="kms-client", issuer=None):
    leaf = interop_pki.issue(issuer or world.clients, public_key, cn)
    return interop_pki.chain_pem(leaf, issuer or world.clients).decode()


def sealed_identity(world, cn="first"):
    """cert and key of an ordinary identity (its key sealed in Datastore), from the servers' trusted client CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    return dict(cert=cert_for(world, key.public_key(), cn), key=key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


def target(world, server):
    return dict(host="127.0.0.1", port=server.port if server else 443, server_hostname="localhost",
                ca_certs=world.servers.ca_pem.decode())


def put(admin, url, body, status):
    return admin.put(url, json.dumps(body), content_type="application/json", status=status)


def post(admin, url, body=None, status=200):
    return admin.post(url, json.dumps(body or {}), content_type="application/json", status=status)


def raw_entity(address=1):
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    return db.get(db.key("Employee", "asalieri", "Address", address))


def sign_csr(world, csr_pem):
    """A partner's CA issuing the certificate a CSR asks for (the signature checked first)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    return cert_for(world, csr.public_key(), cn)


# --- PUT with kms_key --------------------------------------------------------------------------

@needs_binding
def test_a_kms_identity_handshakes_and_the_server_sees_its_certificate(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    stranger = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    with peers.OpenSSLServer(world.server, world.clients.cert_pem) as server:
        before = kms.public_key_requests
        view = put(admin, URL, dict(target(world, server), cert=cert_for(world, public_key_of(kms, name)),
                                    kms_key=name), 201).json
        assert view["key_location"] == "cloud_kms" and view["kms_key"] == name
        assert view["key_type"] == "EC P-256 (Cloud KMS, HSM)"
        signatures = kms.signatures
        shake = post(admin, URL + "/handshake").json
        assert shake["ok"] and shake["client_fingerprint_sha256"] == view["fingerprint_sha256"]
        assert kms.signatures - signatures == 1  # the handshake's one signature, made in KMS
        page = post(admin, URL + "/request", {"path": "/"}).json
        assert page["status"] == 200 and "CN=kms-client" in page["body"].replace(" = ", "=")  # s_server -www shows it
        assert server.log().count("verify return:1") >= 2  # s_server verified the chain
        assert kms.public_key_requests - before == 1  # one GetPublicKey: the PUT's check warmed the calls' signer
        # The negative twin on the same server: the KMS key certified by a CA the server does not trust.
        put(admin, URL, dict(target(world, server), kms_key=stranger,
                             cert=cert_for(world, public_key_of(kms, stranger), issuer=world.stranger)), 200)
        refused = post(admin, URL + "/handshake", status=502).json
        assert refused["error"]["code"] == "peer_rejected_certificate"


@needs_binding
def test_a_certificate_for_another_key_is_key_mismatch_and_nothing_is_stored(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    error = put(admin, URL, dict(target(world, None), cert=cert_for(world, other), kms_key=name), 400).json
    assert error["error"]["code"] == "key_mismatch"
    admin.get(URL, status=404)
    # The twin: the same key version with its own certificate is stored.
    put(admin, URL, dict(target(world, None), cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)


def _bad_name(kms, how):
    if how == "malformed":
        return "projects/p/keyRings/r/cryptoKeys/k"
    if how == "not_found":
        return f"{RING}/cryptoKeys/nobody/cryptoKeyVersions/1"
    if how == "symmetric":
        return kms.add_symmetric_key(crypto_key=f"symmetric-{len(kms.versions)}")
    if how == "secp256k1":
        return kms.add_key(Algorithm.EC_SIGN_SECP256K1_SHA256)
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    if how == "disabled":
        kms.versions[name].state = State.DISABLED
    elif how == "destroyed":
        kms.versions[name].state = State.DESTROY_SCHEDULED
    elif how == "forbidden":
        kms.forbidden.add(name)
    return name


@needs_binding
@pytest.mark.parametrize("how", ["malformed", "not_found", "symmetric", "secp256k1", "disabled", "destroyed",
                                 "forbidden"])
def test_an_unusable_kms_key_is_invalid_kms_key_and_nothing_is_stored(admin, kms, world, how):
    name = _bad_name(kms, how)
    cert = cert_for(world, ec.generate_private_key(ec.SECP256R1()).public_key())
    error = put(admin, URL, dict(target(world, None), cert=cert, kms_key=name), 400).json["error"]
    assert error["code"] == "invalid_kms_key", error
    assert "Traceback" not in error["message"]
    if how == "forbidden":
        assert "roles/cloudkms.signerVerifier" in error["message"]
    admin.get(URL, status=404)
    assert raw_entity() is None


@pytest.mark.parametrize("extra", [{"key": "x"}, {"pkcs12": "AAAA"}, {"key_password": "p"}])
def test_kms_key_with_key_material_is_refused(admin, kms, world, extra):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    body = dict(target(world, None), cert=cert_for(world, public_key_of(kms, name)), kms_key=name, **extra)
    assert put(admin, URL, body, 400).json["error"]["code"] == "invalid_request"
    assert raw_entity() is None


@needs_binding
def test_a_failing_kms_during_a_call_is_signer_failed(admin, kms, world):
    import grpc
    name = kms.add_key(Algorithm.EC_SIGN_P384_SHA384)
    with peers.OpenSSLServer(world.server, world.clients.cert_pem, tls="1.3") as server:
        put(admin, URL, dict(target(world, server), cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)
        kms.sign_error = grpc.StatusCode.INTERNAL
        failed = post(admin, URL + "/handshake", status=502).json
        assert failed["ok"] is False and failed["error"]["code"] == "signer_failed"
        assert name in failed["error"]["message"] and "Traceback" not in failed["error"]["message"]
        kms.sign_error = None  # the twin: KMS answering again, the same identity works
        assert post(admin, URL + "/handshake").json["tls_version"] == "TLSv1.3"


@needs_binding
def test_a_kms_record_edited_outside_the_app_is_refused(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    other = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    with peers.OpenSSLServer(world.server, world.clients.cert_pem) as server:
        put(admin, URL, dict(target(world, server), cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)
        assert post(admin, URL + "/handshake").json["ok"]  # the twin: as stored, it works
        db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
        entity = raw_entity()
        entity["kms_key"] = other  # someone with Datastore access points the identity at another key
        db.put(entity)
        assert post(admin, URL + "/handshake", status=409).json["error"]["code"] == "record_tampered"


def test_the_stored_record_holds_only_the_key_name(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    if not BINDING["available"]:
        pytest.skip("storing needs the binding: see test_signer_unsupported_where_the_binding_is_missing")
    put(admin, URL, dict(target(world, None), cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)
    entity = raw_entity()
    private = kms.versions[name].private_key
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    stored = repr(dict(entity)).encode() + b"".join(v for v in entity.values() if isinstance(v, bytes))
    assert scalar not in stored and der not in stored and b"PRIVATE KEY" not in stored
    assert entity["kms_key"] == name and entity["kms_keys"] == [name]
    assert "PRIVATE" not in admin.get(URL).text


# --- keys born in KMS: CSR, next, promote ------------------------------------------------------

@needs_binding
@pytest.mark.parametrize("key_type, label", [("EC-P256", "EC P-256"), ("EC-P384", "EC P-384"),
                                             ("RSA-2048", "RSA 2048")])
def test_a_csr_in_kms_becomes_the_identity_calls_present(admin, kms, world, key_type, label):
    with peers.OpenSSLServer(world.server, world.clients.cert_pem) as server:
        put(admin, URL, dict(target(world, server), **sealed_identity(world)), 201)
        made = post(admin, URL + "/csr", {"key_location": "cloud_kms", "key_type": key_type,
                                          "subject": {"CN": "born-in-kms"}, "san": {"dns": ["kms.example.com"]}},
                    status=201).json
        pending = made["pending"]
        assert pending["key_location"] == "cloud_kms" and pending["kms_key"].startswith(RING + "/cryptoKeys/dyncert-")
        assert pending["key_type"] == f"{label} (Cloud KMS, HSM)"
        csr = x509.load_pem_x509_csr(made["csr"].encode())
        assert csr.is_signature_valid  # signed through KMS
        assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == ["kms.example.com"]
        assert kms.versions[pending["kms_key"]].protection_level == 2  # HSM, as KMS_PROTECTION defaults
        staged = put(admin, URL + "/next", {"cert": sign_csr(world, made["csr"])}, 201).json["next"]
        assert staged["key_location"] == "cloud_kms" and staged["kms_key"] == pending["kms_key"]
        assert post(admin, URL + "/next/handshake").json["client_fingerprint_sha256"] == staged["fingerprint_sha256"]
        post(admin, URL + "/promote")
        shake = post(admin, URL + "/handshake").json
        assert shake["client_fingerprint_sha256"] == staged["fingerprint_sha256"]
        assert "born-in-kms" in post(admin, URL + "/request", {"path": "/"}).json["body"]
        view = admin.get(URL).json
        assert view["key_location"] == "cloud_kms" and view["previous"]["key_location"] == "datastore"
        # rollback: the datastore identity again, and the KMS one kept as previous (not destroyed)
        post(admin, URL + "/rollback")
        assert post(admin, URL + "/handshake").json["client_fingerprint_sha256"] == view["previous"]["fingerprint_sha256"]
        assert kms.destroyed == []


def test_a_certificate_for_another_key_does_not_complete_a_kms_pending_key(admin, kms, world):
    if not BINDING["available"]:
        pytest.skip("see test_signer_unsupported_where_the_binding_is_missing")
    post(admin, URL + "/csr", {"key_location": "cloud_kms", "subject": {"CN": "x"}}, status=201)
    foreign = cert_for(world, ec.generate_private_key(ec.SECP256R1()).public_key())
    body = dict(target(world, None), cert=foreign)
    assert put(admin, URL + "/next", body, 400).json["error"]["code"] == "key_mismatch"
    assert raw_entity()["next"] is None


@pytest.mark.parametrize("body, code", [
    ({"key_location": "cloud_kms", "key_type": "Ed25519", "subject": {"CN": "x"}}, "invalid_request"),
    ({"key_location": "cloud_kms", "subject": {"O": "no common name"}}, "invalid_request"),
    ({"key_location": "vault", "subject": {"CN": "x"}}, "invalid_request"),
])
def test_a_bad_kms_csr_request_creates_no_key(admin, kms, body, code):
    keys = len(kms.crypto_keys)
    assert post(admin, URL + "/csr", body, status=400).json["error"]["code"] == code
    assert len(kms.crypto_keys) == keys and raw_entity() is None


def test_a_kms_csr_needs_the_key_ring_setting(kms, datastore, tmp_path):
    import main
    import webtest
    bare = settings_module.from_environ({}, admin_token=ADMIN_TOKEN, local_kek_file=str(tmp_path / "k.bin"),
                                        kms_endpoint=f"127.0.0.1:{kms.port}")
    admin = webtest.TestApp(main.create_app(bare), extra_environ={"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}"})
    keys = len(kms.crypto_keys)
    error = post(admin, URL + "/csr", {"key_location": "cloud_kms", "subject": {"CN": "x"}}, status=400).json
    if BINDING["available"]:
        assert error["error"]["code"] == "invalid_request" and "KMS_KEY_RING" in error["error"]["message"]
    assert len(kms.crypto_keys) == keys


@needs_binding
def test_kms_protection_software_is_asked_of_kms(kms, datastore, tmp_path):
    import main
    import webtest
    soft = settings_module.from_environ({"KMS_PROTECTION": "software"}, admin_token=ADMIN_TOKEN,
                                        local_kek_file=str(tmp_path / "k.bin"),
                                        kms_endpoint=f"127.0.0.1:{kms.port}", kms_key_ring=RING)
    admin = webtest.TestApp(main.create_app(soft), extra_environ={"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}"})
    pending = post(admin, URL + "/csr", {"key_location": "cloud_kms", "subject": {"CN": "x"}}, status=201).json
    assert pending["pending"]["key_type"] == "EC P-256 (Cloud KMS, SOFTWARE)"
    assert kms.versions[pending["pending"]["kms_key"]].protection_level == 1  # SOFTWARE


# --- destruction: only when the key leaves the last slot ---------------------------------------

def _csr_to_next(admin, world, cn, url=URL):
    made = post(admin, url + "/csr", {"key_location": "cloud_kms", "subject": {"CN": cn}}, status=201).json
    put(admin, url + "/next", {"cert": sign_csr(world, made["csr"])}, 201)
    return made["pending"]["kms_key"]


@needs_binding
def test_a_key_the_app_created_is_destroyed_only_when_no_slot_refers_to_it(admin, kms, world):
    t = target(world, None)
    put(admin, URL, dict(t, **sealed_identity(world)), 201)
    # A pending key replaced by a new CSR leaves every slot: destroyed.
    discarded = post(admin, URL + "/csr", {"key_location": "cloud_kms", "subject": {"CN": "a"}}, status=201)
    b = _csr_to_next(admin, world, "b")
    assert kms.destroyed == [discarded.json["pending"]["kms_key"]]
    post(admin, URL + "/promote")                      # current b, previous first
    c = _csr_to_next(admin, world, "c")
    post(admin, URL + "/promote")                      # current c, previous b
    assert kms.destroyed == [discarded.json["pending"]["kms_key"]]
    # b is also given, by name, to another address: dropping it here must not destroy it.
    other = "/api/v1/employees/asalieri/addresses/2"
    put(admin, other, dict(t, cert=cert_for(world, public_key_of(kms, b)), kms_key=b), 201)
    d = _csr_to_next(admin, world, "d")
    post(admin, URL + "/promote")                      # current d, previous c; b dropped here, used at /2
    assert b not in kms.destroyed
    post(admin, URL + "/rollback")                     # current c, previous d: nothing leaves
    e = _csr_to_next(admin, world, "e")
    admin.delete(URL + "/next", status=204)            # a discarded next
    assert kms.destroyed[-1] == e
    admin.delete(URL, status=204)                      # the address goes: c and d leave their last slot
    assert sorted(kms.destroyed[-2:]) == sorted([c, d])
    admin.delete(other, status=204)                    # b was given by name there: never destroyed by the app
    assert b not in kms.destroyed
    assert kms.versions[b].state == State.ENABLED
    assert all(kms.versions[n].state == State.DESTROY_SCHEDULED for n in kms.destroyed)


@needs_binding
def test_a_user_supplied_kms_key_is_never_destroyed(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    t = target(world, None)
    put(admin, URL, dict(t, cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)
    put(admin, URL, dict(t, **sealed_identity(world)), 200)  # replaced
    put(admin, URL + "/next", dict(t, cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)
    admin.delete(URL + "/next", status=204)
    admin.delete(URL, status=204)
    assert kms.destroyed == [] and kms.versions[name].state == State.ENABLED


# --- an interpreter that cannot bind a signer --------------------------------------------------

@pytest.mark.skipif(BINDING["available"], reason="this interpreter binds signers (the Cloud CLI's 3.12 does not)")
def test_signer_unsupported_where_the_binding_is_missing(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    body = dict(target(world, None), cert=cert_for(world, public_key_of(kms, name)), kms_key=name)
    error = put(admin, URL, body, 400).json["error"]
    assert error["code"] == "signer_unsupported" and "Traceback" not in error["message"]
    assert raw_entity() is None
    keys = len(kms.crypto_keys)
    error = post(admin, URL + "/csr", {"key_location": "cloud_kms", "subject": {"CN": "x"}}, status=400).json
    assert error["error"]["code"] == "signer_unsupported" and len(kms.crypto_keys) == keys
    # The twin: a key sealed in Datastore is stored on the same interpreter.
    put(admin, URL, dict(target(world, None), **sealed_identity(world)), 201)


def test_settings_refuse_a_remote_plain_kms_endpoint_and_unknown_protection():
    with pytest.raises(settings_module.SettingsError):
        settings_module.check(settings_module.from_environ({"KMS_ENDPOINT": "kms.example.com:443"}))
    with pytest.raises(settings_module.SettingsError):
        settings_module.check(settings_module.from_environ({"KMS_PROTECTION": "EXTERNAL"}))
    ok = settings_module.check(settings_module.from_environ({"KMS_ENDPOINT": "127.0.0.1:9", "KMS_PROTECTION": "software"}))
    assert ok.kms_protection == "SOFTWARE"


# --- where the key is, on the page ------------------------------------------------------------

@needs_binding
def test_the_detail_page_says_the_key_never_leaves_kms(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    put(admin, URL, dict(target(world, None), cert=cert_for(world, public_key_of(kms, name)), kms_key=name), 201)
    post(admin, URL + "/csr", {"key_location": "cloud_kms", "subject": {"CN": "next-in-kms"}}, status=201)
    page = admin.get("/admin/employees/asalieri/addresses/1").text
    assert "Cloud KMS, HSM: never leaves it" in page and name in page
    assert page.count("never leaves it") == 3  # the certificate card, the current slot, the pending key
    assert f"the local stand-in at 127.0.0.1:{kms.port}" in page  # KMS_ENDPOINT set: labelled as a stand-in
    assert "PRIVATE KEY" not in page
    # The twin: a key sealed in Datastore says so, and nothing about KMS.
    put(admin, URL, dict(target(world, None), **sealed_identity(world)), 200)
    admin.delete(URL + "/next", status=404)
    page = admin.get("/admin/employees/asalieri/addresses/1").text
    assert "sealed at rest, never shown" in page and name not in page


def test_a_misspelt_kms_field_is_named_and_nothing_is_created(admin, kms, world):
    name = kms.add_key(Algorithm.EC_SIGN_P256_SHA256)
    body = dict(target(world, None), cert=cert_for(world, public_key_of(kms, name)), kms_keys=name)
    error = put(admin, URL, body, 400).json["error"]
    assert error["code"] == "invalid_request" and '"kms_keys"' in error["message"] and '"kms_key"' in error["message"]
    keys = len(kms.crypto_keys)
    error = post(admin, URL + "/csr", {"key_locaton": "cloud_kms", "subject": {"CN": "x"}}, status=400).json["error"]
    assert error["code"] == "invalid_request" and '"key_location"' in error["message"]
    assert raw_entity() is None and len(kms.crypto_keys) == keys
