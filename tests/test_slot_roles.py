"""Issue 20 item 7: each sealed slot (and the pending key) is bound to its role and to the record's version.

A Datastore writer (the raw google-cloud-datastore client here, on the emulator) who copies the
`previous` or `next` slot into `current`, or puts back an older `current` or pending key after a
change, gets record_tampered: the key is not used. Twins: promote, rollback and replace still work
(each re-seals the moved slots under their new role in its transaction), and records written before
this version (v1 and v2 associated data) still open and are re-sealed on their next write.
"""

import datetime
import json

import pytest
from google.cloud import datastore as raw_datastore
from google.cloud import ndb

import models
from tests.harness import pki
import sealing
from tests.harness.peers import PythonTLSPeer
from tests.harness.pki import sign_csr
from tests.harness.sealed import call, db, raw_key, store, who, write_legacy

URL = "/api/v1/employees/asalieri/addresses/1"
SLOT_FIELDS = tuple(models.SLOT_FIELDS)
CSR = json.dumps({"subject": {"CN": "slot roles"}})


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("slot roles")
    return dict(pki=p, server=pki.server_cert(p.root), first=pki.client_cert(p.clients_ca, "first"),
                second=pki.client_cert(p.clients_ca, "second"), third=pki.client_cert(p.clients_ca, "third"))


def put_json(admin, path, body, status=None):
    return admin.put(URL + path, json.dumps(body), content_type="application/json", status=status)


def creds_body(creds):
    return dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode())


def refused(admin, path="/handshake"):
    response = admin.post(URL + path, "{}", content_type="application/json", status=409)
    assert response.json["error"]["code"] == "record_tampered", response.json
    assert "PRIVATE KEY" not in response.text


def raw():
    client = db()
    return client, client.get(raw_key(client))


def slot_fields(entity):
    """The Slot fields of the entity's current identity (its own top-level properties)."""
    return {name: entity.get(name) for name in SLOT_FIELDS}


def promoted(admin, world, peer):
    """current = second, previous = first (after a promote)."""
    store(admin, world["first"], peer.port, world["pki"].ca_pem)
    put_json(admin, "/next", creds_body(world["second"]), status=201)
    call(admin, "/promote")
    assert who(call(admin)) == world["second"].fingerprint_sha256


def test_previous_copied_into_current_is_refused(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        promoted(admin, world, peer)
        client, entity = raw()
        entity.update(dict(entity["previous"]))  # the old identity, as current, with its own sealed key
        client.put(entity)
        refused(admin)
        refused(admin, "/request")


def test_next_copied_into_current_is_refused(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(admin, world["first"], peer.port, world["pki"].ca_pem)
        put_json(admin, "/next", creds_body(world["second"]), status=201)
        client, entity = raw()
        entity.update(dict(entity["next"]))  # staged, never tested or promoted: not current
        client.put(entity)
        refused(admin)


def test_current_copied_into_previous_is_refused_on_rollback(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        promoted(admin, world, peer)
        client, entity = raw()
        previous = entity["previous"]
        previous.update(slot_fields(entity))
        entity["previous"] = previous
        client.put(entity)
        call(admin, "/rollback")  # the move is not refused, the copied key stays refused where it lands
        refused(admin)


def test_an_older_current_put_back_after_a_replace_is_refused(admin, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(admin, world["first"], peer.port, world["pki"].ca_pem)
        client, entity = raw()
        old = slot_fields(entity)
        store(admin, world["second"], peer.port, world["pki"].ca_pem, status=200)  # a replace
        assert who(call(admin)) == world["second"].fingerprint_sha256
        client, entity = raw()
        entity.update(old)
        client.put(entity)
        refused(admin)
        refused(admin, "/echo")


def test_an_older_pending_key_put_back_is_refused(admin, world):
    p = world["pki"]
    store(admin, world["first"], 443, p.ca_pem)
    first_csr = admin.post(URL + "/csr", CSR, content_type="application/json", status=201).json["csr"]
    client, entity = raw()
    old_pending = entity["pending"]
    admin.post(URL + "/csr", CSR, content_type="application/json", status=201)  # a new key replaces it
    client, entity = raw()
    entity["pending"] = old_pending
    client.put(entity)
    cert = sign_csr(p.clients_ca, first_csr)
    response = put_json(admin, "/next", {"cert": cert}, status=409)
    assert response.json["error"]["code"] == "record_tampered"


def test_the_version_field_put_back_is_refused_too(admin, world):
    """A writer who also lowers the record's version makes every slot sealed since refuse."""
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(admin, world["first"], peer.port, world["pki"].ca_pem)
        client, entity = raw()
        old_version = entity["record_version"]
        put_json(admin, "/next", creds_body(world["second"]), status=201)
        client, entity = raw()
        entity["record_version"] = old_version
        client.put(entity)
        refused(admin)
        refused(admin, "/next/handshake")


def test_the_twins_promote_rollback_replace_and_csr_still_work(admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        store(admin, world["first"], peer.port, p.ca_pem)
        versions = [raw()[1]["record_version"]]
        put_json(admin, "/next", creds_body(world["second"]), status=201)
        call(admin, "/next/handshake")
        call(admin, "/promote")
        assert who(call(admin)) == world["second"].fingerprint_sha256
        call(admin, "/rollback")
        assert who(call(admin)) == world["first"].fingerprint_sha256
        call(admin, "/rollback")
        assert who(call(admin)) == world["second"].fingerprint_sha256
        store(admin, world["third"], peer.port, p.ca_pem, status=200)
        assert who(call(admin)) == world["third"].fingerprint_sha256
        csr_pem = admin.post(URL + "/csr", CSR, content_type="application/json", status=201).json["csr"]
        put_json(admin, "/next", {"cert": sign_csr(p.clients_ca, csr_pem)}, status=201)
        call(admin, "/next/handshake")
        call(admin, "/promote")
        call(admin, "/rollback")
        assert who(call(admin)) == world["third"].fingerprint_sha256
        versions.append(raw()[1]["record_version"])
        assert versions[1] > versions[0]  # every write moved the version on
        admin.delete(URL + "/next", status=404)  # nothing staged: refused, nothing written
        assert raw()[1]["record_version"] == versions[1]


def test_moves_reuse_the_wrapped_data_key(ndb_context, settings, world):
    """A promote re-seals the moved slots under their new role with the same data key: no new KEK call."""
    body = dict(creds_body(world["first"]), host="peer.example.com")
    models.put_identity("asalieri", 1, body, settings)
    first = models.get_entity("asalieri", 1)
    models.stage_next("asalieri", 1, dict(body, **creds_body(world["second"])), settings)
    models.promote("asalieri", 1, settings)
    entity = models.get_entity("asalieri", 1)
    assert entity.previous.wrapped_dek == first.wrapped_dek
    assert entity.previous.sealed_key != first.sealed_key  # sealed again, as `previous`
    assert entity.previous.seal_version == models.SEAL_VERSION == 3
    assert models.load_identity("asalieri", 1, settings).identity.fingerprint_sha256 == \
        world["second"].fingerprint_sha256


def write_v2(settings, creds, port, ca_pem):
    """An Address as stored by the previous version: v2 associated data, no role, no record version."""
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        from dyncert.identity import ClientIdentity
        from dyncert.targets import Target
        identity = ClientIdentity.from_pem(creds.cert_pem, creds.key_pem)
        key = models.address_key("asalieri", 1)
        models.entities.ensure_employee(key)
        slot = models.Slot(chain_pem=identity.chain_pem.decode(), ca_certs=ca_pem.decode(), host="127.0.0.1",
                           port=port, server_hostname="localhost", tls_version="TLS", subject=identity.subject,
                           issuer=identity.issuer, serial=identity.serial, not_before=identity.not_before,
                           not_after=identity.not_after, fingerprint_sha256=identity.fingerprint_sha256,
                           san=list(identity.san), key_type=identity.key_type, chain_length=identity.chain_length,
                           staged=datetime.datetime.now(datetime.timezone.utc))
        kek = sealing.kek_from_settings(settings)
        slot.wrapped_dek, slot.sealed_key = sealing.seal(kek, identity.key_pem, models.seal_context(key, slot))
        slot.seal_version, slot.kek_id = 2, kek.kek_id
        entity = models.Address(key=key)
        models.copy_slot(slot, entity)
        entity.put()
        assert Target  # imported for the reader: the slot's target is that of the peer
    return identity.fingerprint_sha256


@pytest.mark.parametrize("writer", [write_legacy, write_v2], ids=["v1", "v2"])
def test_the_twin_legacy_records_open_and_are_resealed_on_their_next_write(admin, settings, world, writer):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        legacy_fp = writer(settings, world["first"], peer.port, p.ca_pem)
        assert "record_version" not in raw()[1] or raw()[1]["record_version"] is None
        legacy = slot_fields(raw()[1])
        assert who(call(admin)) == legacy_fp
        put_json(admin, "/next", creds_body(world["second"]), status=201)
        entity = raw()[1]
        assert entity["seal_version"] == 3 and entity["next"]["seal_version"] == 3 and entity["record_version"]
        assert who(call(admin)) == legacy_fp
        call(admin, "/promote")
        call(admin, "/rollback")
        assert who(call(admin)) == legacy_fp
        # Once re-sealed, the legacy form of the same key is not accepted back (no downgrade).
        client, entity = raw()
        entity.update(legacy)
        client.put(entity)
        refused(admin)


def test_the_readme_says_what_a_datastore_writer_can_and_cannot_do():
    import os
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        text = f.read()
    section = text[text.index("### What a Datastore writer can and cannot do"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    for words in ("record_tampered", "role", "version", "history", "no integrity"):
        assert words in section, words
    assert raw_datastore  # the tests above use the raw client: the writer's own tool
