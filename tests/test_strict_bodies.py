"""Strict JSON bodies (API.md v1.2, #19.3): an unknown field anywhere is 400 invalid_request naming it and the
nearest known one; nothing is stored. Twins: every known field is still accepted."""

import base64

import pytest

from models import schema
from tests.harness.forms import pkcs12_blob

API = "/api/v1/employees/asalieri/addresses/1"


def refused(response, field, nearest=None):
    """The 400 names the unknown field (and the nearest known one)."""
    error = response.json["error"]
    assert response.status_int == 400 and error["code"] == "invalid_request", error
    assert f'unknown field "{field}"' in error["message"], error["message"]
    if nearest:
        assert f'(did you mean "{nearest}"?)' in error["message"], error["message"]
    return error["message"]


def test_a_misspelt_ca_bundle_is_refused_and_nothing_stored(admin, upload):
    body = dict(upload)
    body["ca"] = body.pop("ca_certs")
    message = refused(admin.put_json(API, body, status=400), "ca", "ca_certs")
    assert message.startswith('unknown field "ca" (did you mean "ca_certs"?)')
    admin.get(API, status=404)
    assert admin.get(API + "/history").json["events"] == []


@pytest.mark.parametrize("wrong, right", [
    ("hots", "host"), ("prot", "port"), ("sni", None), ("server_name", "server_hostname"),
    ("tls", "tls_version"), ("keypassword", "key_password"), ("pkcs12password", "pkcs12_password"),
    ("certificate", "cert"), ("Host", "host"), ("password", "key_password"),
])
def test_misspelt_upload_fields_name_the_nearest_known_one(admin, upload, wrong, right):
    refused(admin.put_json(API, dict(upload, **{wrong: "x"}), status=400), wrong, right)
    refused(admin.put_json(API + "/next", dict(upload, **{wrong: "x"}), status=400), wrong, right)
    admin.get(API, status=404)
    admin.get(API + "/next", status=404)


def test_put_next_with_an_unknown_field_keeps_the_current_and_stages_nothing(admin, upload):
    admin.put_json(API, upload, status=201)
    before = admin.get(API).json
    refused(admin.put_json(API + "/next", {"cert": upload["cert"], "hots": "a.example"}, status=400),
            "hots", "host")
    assert admin.get(API).json == before
    admin.get(API + "/next", status=404)


def test_csr_bodies_are_strict_at_every_level(admin):
    refused(admin.post_json(API + "/csr", {"keytype": "EC-P256", "subject": {"CN": "a"}}, status=400),
            "keytype", "key_type")
    refused(admin.post_json(API + "/csr", {"subject": {"cn": "a"}}, status=400), "subject.cn", "subject.CN")
    refused(admin.post_json(API + "/csr", {"subject": {"CN": "a"}, "san": {"DNS": ["a.example"]}}, status=400),
            "san.DNS", "san.dns")
    refused(admin.post_json(API + "/csr", {"subject": {"CN": "a"}, "sans": {}}, status=400), "sans", "san")
    admin.get(API + "/csr", status=404)  # no pending key was made


def test_call_bodies_are_strict(admin, upload):
    admin.put_json(API, upload, status=201)
    refused(admin.post_json(API + "/request", {"methd": "GET"}, status=400), "methd", "method")
    refused(admin.post_json(API + "/request", {"path": "/", "header": {}}, status=400), "header", "headers")
    refused(admin.post_json(API + "/echo", {"sned": "hi\n"}, status=400), "sned", "send")
    refused(admin.post_json("/api/v1/fetch", {"uri": "https://example.com/"}, status=400), "uri", "url")
    for path in ("/handshake", "/next/handshake", "/promote", "/rollback"):
        refused(admin.post_json(API + path, {"force": True}, status=400), "force")


def test_every_known_upload_field_is_accepted(admin, upload):
    """The twin: a body with every PEM field, then every PKCS#12 field, stores."""
    body = dict(upload, key_password=None, server_hostname="peer.example.com", tls_version="TLSv1_2", port=8443)
    assert set(body) | {"pkcs12", "pkcs12_password", "kms_key"} == set(schema.UPLOAD)
    admin.put_json(API, body, status=201)
    admin.put_json(API + "/next", body, status=201)
    blob, fp = pkcs12_blob()
    p12 = {"pkcs12": base64.b64encode(blob).decode(), "pkcs12_password": "p12-secret-pass",
           "host": "peer.example.com", "port": 443, "server_hostname": None, "tls_version": "TLS",
           "ca_certs": upload["ca_certs"]}
    assert admin.put_json(API, p12).json["fingerprint_sha256"] == fp


def test_fields_another_part_wires_are_known(admin, upload):
    """kms_key (PUT) and key_location (csr) are known names: never "unknown field"."""
    response = admin.put_json(API, dict(upload, kms_key="projects/p/locations/l/keyRings/r/cryptoKeys/k/"
                                                        "cryptoKeyVersions/1"), expect_errors=True)
    assert "unknown field" not in response.text
    response = admin.post_json(API + "/csr", {"subject": {"CN": "a"}, "key_location": "datastore"},
                               expect_errors=True)
    assert "unknown field" not in response.text


def test_every_known_csr_and_call_field_is_accepted(admin, upload):
    subject = {name: "x" for name in ("CN", "O", "OU", "ST", "L")}
    body = {"key_type": "EC-P256", "subject": dict(subject, C="DE"),
            "san": {"dns": ["a.example"], "email": ["a@a.example"], "uri": ["https://a.example/"]}}
    assert admin.post_json(API + "/csr", body, status=201).json["csr"]
    assert set(schema.CSR) == {"key_type", "subject", "san", "key_location"}


def test_free_maps_take_any_key_and_nested_objects_are_checked():
    schema.check_fields({"method": "GET", "headers": {"X-Anything": "1", "hots": "2"}}, schema.REQUEST)
    schema.check_fields({"subject": "not an object"}, schema.CSR)  # its type is checked where it is used
    with pytest.raises(Exception) as refused_:
        schema.check_fields({"subject": {"CN": "a", "OU": "b", "Ou": "c"}}, schema.CSR)
    assert refused_.value.code == "invalid_request" and refused_.value.field == "subject.Ou"
