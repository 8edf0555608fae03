"""An upload is validated once, into a typed value: one key derivation, one CA-bundle parse, errors with their field."""

import pytest

import dyncert.identity
import models
from tests.harness.app import ADMIN_TOKEN
from dyncert.errors import InputError
from handlers.admin import forms
from models import body as body_module
from tests.harness.forms import KEY_PASSWORD, encrypted, fingerprint, form_fields, pkcs12_blob, post_upload, stored

API = "/api/v1/employees/asalieri/addresses/1"


@pytest.fixture
def derivations(monkeypatch):
    """Counts the password-based key derivations (encrypted PEM keys and PKCS#12 files opened)."""
    count = {"kdf": 0, "ca": 0}
    load_key, open_pkcs12, parse_ca = (dyncert.identity._load_key, dyncert.identity._open_pkcs12,
                                       dyncert.identity.parse_ca_bundle)

    def counted_key(block, password):
        if block.startswith(b"-----BEGIN ENCRYPTED "):
            count["kdf"] += 1
        return load_key(block, password)

    def counted_pkcs12(data, secret):
        count["kdf"] += 1
        return open_pkcs12(data, secret)

    def counted_ca(pem):
        count["ca"] += 1
        return parse_ca(pem)

    monkeypatch.setattr(dyncert.identity, "_load_key", counted_key)
    monkeypatch.setattr(dyncert.identity, "_open_pkcs12", counted_pkcs12)
    for module in (body_module, dyncert.identity):
        if hasattr(module, "parse_ca_bundle"):
            monkeypatch.setattr(module, "parse_ca_bundle", counted_ca)
    import models.lifecycle
    import models.store
    for module in (models.store, models.lifecycle):
        if hasattr(module, "parse_ca_bundle"):
            monkeypatch.setattr(module, "parse_ca_bundle", counted_ca)
    return count


def test_the_upload_form_derives_an_encrypted_key_once(admin, upload, derivations):
    fields = form_fields(upload, key=encrypted(upload["key"], KEY_PASSWORD), key_password=KEY_PASSWORD)
    post_upload(admin, fields)
    assert stored(admin)[0]["fingerprint_sha256"] == fingerprint(upload["cert"])
    assert derivations == {"kdf": 1, "ca": 1}


def test_the_upload_form_opens_a_pkcs12_file_once(admin, upload, derivations):
    blob, fp = pkcs12_blob()
    fields = form_fields(upload, cert="", key="", pkcs12_password="p12-secret-pass")
    post_upload(admin, fields, [("pkcs12file", "dave.p12", blob)])
    assert stored(admin)[0]["fingerprint_sha256"] == fp
    assert derivations == {"kdf": 1, "ca": 1}


def test_the_stage_as_next_form_derives_once(admin, upload, derivations):
    fields = form_fields(upload, key=encrypted(upload["key"], KEY_PASSWORD), key_password=KEY_PASSWORD,
                         stage="next")
    post_upload(admin, fields)
    assert admin.get(API + "/next").json["next"]["fingerprint_sha256"] == fingerprint(upload["cert"])
    assert derivations == {"kdf": 1, "ca": 1}


def test_api_put_and_put_next_derive_once(admin, upload, derivations):
    """The twins: the API paths already parsed once, and still do."""
    body = dict(upload, key=encrypted(upload["key"], KEY_PASSWORD), key_password=KEY_PASSWORD)
    admin.put_json(API, body, status=201)
    assert derivations == {"kdf": 1, "ca": 1}
    admin.put_json(API + "/next", body, status=201)
    assert derivations == {"kdf": 2, "ca": 2}


def test_a_refused_form_derives_once_and_stores_nothing(admin, upload, derivations):
    fields = form_fields(upload, key=encrypted(upload["key"], KEY_PASSWORD), key_password=KEY_PASSWORD,
                         host="bad host!")
    post_upload(admin, fields, status=400)
    assert stored(admin) == [] and derivations["kdf"] == 1


def test_every_upload_error_carries_its_field(ndb_context, settings, upload):
    p12, _ = pkcs12_blob()
    cases = {
        "employee": ("bad name!", "1", {}),
        "address": ("asalieri", "0", {}),
        "cert": ("asalieri", "1", {"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
        "key": ("asalieri", "1", {"key": "not a key"}),
        "key_password": ("asalieri", "1", {"key": encrypted(upload["key"], KEY_PASSWORD), "key_password": "no"}),
        "ca_certs": ("asalieri", "1", {"ca_certs": "junk"}),
        "host": ("asalieri", "1", {"host": "bad host!"}),
        "port": ("asalieri", "1", {"port": 70000}),
        "server_hostname": ("asalieri", "1", {"server_hostname": "bad name!"}),
        "tls_version": ("asalieri", "1", {"tls_version": "SSLv3"}),
        "pkcs12": ("asalieri", "1", {"cert": None, "key": None, "pkcs12": "!!"}),
        "pkcs12_password": ("asalieri", "1", {"cert": None, "key": None, "pkcs12": __import__("base64")
                                              .b64encode(p12).decode(), "pkcs12_password": "wrong"}),
    }
    for field, (employee, address, changes) in cases.items():
        value, errors = body_module.check_upload(employee, address, dict(upload, **changes), settings)
        assert value is None and [e.field for e in errors] == [field], (field, errors)
    value, errors = body_module.check_upload("asalieri", "1", upload, settings)
    assert errors == [] and value.identity.fingerprint_sha256 == fingerprint(upload["cert"])
    assert value.target.host == "peer.example.com" and value.target.port == 8443 and value.ca_pem


def test_the_form_places_an_error_by_its_field_not_its_words():
    """A message that names another field does not move the error there."""
    error = InputError("invalid_request", "The field 'host' is required.", field="port")
    assert forms.field_for(error) == "port"
    assert forms.field_for(InputError("wrong_password", "The password ...", field="pkcs12_password")) == "pkcs12"
    assert forms.field_for(InputError("invalid_request", "Something 'cert' said.")) == "general"


def test_the_store_takes_the_validated_value_without_validating_again(ndb_context, settings, upload,
                                                                       derivations):
    body = dict(upload, key=encrypted(upload["key"], KEY_PASSWORD), key_password=KEY_PASSWORD)
    value = body_module.parse_upload("asalieri", 1, body, settings)
    assert derivations == {"kdf": 1, "ca": 1}
    view, created = models.put_identity("asalieri", 1, value, settings)
    assert created and view["fingerprint_sha256"] == fingerprint(upload["cert"])
    assert derivations == {"kdf": 1, "ca": 1}
