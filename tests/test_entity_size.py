"""Records at Datastore's size limit (#24.2): every slot filled to the edge either stores, or the write is refused
before it is attempted with 413 too_large naming the limit, nothing changed; never a 500.

The emulator stores entities far over 1 MiB (it does not enforce the limit), so the test checks what production
would refuse: every entity stored stays within the limit, and every refusal left the record as it was.
"""

import datetime
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.cloud import datastore as raw_datastore
from google.cloud import ndb

import models
from models import entities

API = "/api/v1/employees/asalieri/addresses/1"
LIMIT = 1_048_572
MAX_BODY = 256 * 1024


def pem(obj):
    return obj.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def big_body(label, target=MAX_BODY - 2048):
    """A PUT body just under the API's 256 KiB: a client certificate carrying as many DNS names as fit."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "size test CA")])

    def body_for(count):
        names = [x509.DNSName(f"{label}{i:05d}.size-test.example") for i in range(count)]
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return {"cert": pem(leaf), "key": key_pem(key), "host": "peer.example.com", "port": 443}

    count = 4000
    while len(json.dumps(body_for(count + 500))) < target:
        count += 500
    while len(json.dumps(body_for(count + 50))) < target:
        count += 50
    body = body_for(count)
    assert MAX_BODY - 8192 < len(json.dumps(body)) < MAX_BODY
    return body


def big_csr():
    """A CSR body at its own edge: 100 URIs of 2,000 characters (the pending key stores them twice)."""
    uris = [f"https://size-test.example/{i:03d}/" + "a" * 1960 for i in range(100)]
    return {"key_type": "EC-P256", "subject": {"CN": "size test"}, "san": {"uri": uris}}


def raw_entity():
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    return db.get(db.key("Employee", "asalieri", "Address", 1))


def record():
    """What the API shows of the address, and the raw stored entity."""
    entity = raw_entity()
    return dict(entity) if entity is not None else None


def stored_size():
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        return entities.entity_size(models.address_key("asalieri", 1).get())


def test_every_slot_filled_to_the_edge_stores_or_is_refused_before_the_write(admin):
    steps = [("put", API, big_body("current")), ("put", API + "/next", big_body("next")),
             ("post", API + "/promote", None), ("put", API + "/next", big_body("again")),
             ("post", API + "/csr", big_csr()), ("post", API + "/rollback", None), ("post", API + "/promote", None)]
    refusals = 0
    for method, path, body in steps:
        before = record()
        call = admin.put_json if method == "put" else admin.post_json
        response = call(path, body or {}, expect_errors=True)
        assert response.status_int in (200, 201, 409, 413), (path, response.status_int, response.text[:300])
        if response.status_int == 413:
            refusals += 1
            error = response.json["error"]
            assert error["code"] == "too_large" and "1,048,572 bytes" in error["message"], error
            assert record() == before, f"{path}: a refused write changed the record"
        elif response.status_int < 300:
            assert stored_size() <= LIMIT, f"{path}: stored {stored_size()} bytes, over Datastore's limit"
    assert refusals >= 1  # the bodies are big enough that not everything fits


def test_one_byte_over_the_budget_is_refused_and_nothing_changes(ndb_context, settings, upload):
    models.put_identity("asalieri", 1, upload, settings)
    key = models.address_key("asalieri", 1)
    before = key.get()
    before_raw = dict(raw_entity())

    def padded(extra):
        entity = key.get()
        entity.previous = models.copy_slot(entity)
        entity.previous.ca_certs = "x" * extra
        return entity

    extra = entities.ENTITY_BUDGET - entities.entity_size(padded(0))
    while entities.entity_size(padded(extra)) < entities.ENTITY_BUDGET:
        extra += 1
    while entities.entity_size(padded(extra)) > entities.ENTITY_BUDGET:
        extra -= 1
    assert entities.entity_size(padded(extra)) == entities.ENTITY_BUDGET <= LIMIT

    over = padded(extra + 1)
    with pytest.raises(entities.TooLarge) as refused:
        ndb.transaction(lambda: entities.save_with_event(over, entities.new_event(key, "replaced", "test")))
    assert refused.value.code == "too_large" and "1,048,572 bytes" in refused.value.message
    assert dict(raw_entity()) == before_raw and key.get() == before
    assert models.history("asalieri", 1)[0]["action"] == "created"  # no event either

    ndb.transaction(lambda: entities.save_with_event(padded(extra), entities.new_event(key, "replaced", "test")))
    assert key.get().previous.ca_certs == "x" * extra  # at the budget: stored
