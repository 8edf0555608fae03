"""The sealed key is bound to its entity, target and trust; records in the pre-v1.1 format keep working."""

import datetime
import json
import os

import pytest
from google.cloud import datastore as raw_datastore
from google.cloud import ndb

import models
from tests.harness import pki
import sealing
from tests.harness.peers import PythonTLSPeer

from tests.harness.sealed import URL, call, db, raw_key, store, who, write_legacy  # noqa: F401


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, first=pki.client_cert(p.clients_ca, "first"),
                second=pki.client_cert(p.clients_ca, "second"), stranger=run_pki.stranger)


def test_legacy_record_is_read_called_and_rotated(admin, settings, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        legacy_fp = write_legacy(settings, world["first"], peer.port, p.ca_pem)
        view = admin.get(URL).json
        assert view["fingerprint_sha256"] == legacy_fp
        assert view["next"] is None and view["previous"] is None and view["pending"] is None
        assert [i["address"] for i in admin.get("/api/v1/identities").json["identities"]] == [1]
        assert who(call(admin)) == legacy_fp

        body = dict(cert=world["second"].cert_pem.decode(), key=world["second"].key_pem.decode())
        admin.put(URL + "/next", json.dumps(body), content_type="application/json", status=201)
        # That write re-sealed the legacy key with the bound (v3) associated data.
        assert db().get(raw_key(db()))["seal_version"] == models.SEAL_VERSION
        assert who(call(admin)) == legacy_fp
        call(admin, "/promote")
        assert who(call(admin)) == world["second"].fingerprint_sha256
        rolled = call(admin, "/rollback").json
        assert rolled["current"]["fingerprint_sha256"] == legacy_fp
        assert who(call(admin)) == legacy_fp


def test_legacy_record_moved_to_another_entity_still_does_not_open(admin, settings, world):
    write_legacy(settings, world["first"], 443, world["pki"].ca_pem)
    client = db()
    moved = client.get(raw_key(client))
    copy = raw_datastore.Entity(raw_key(client, 2), exclude_from_indexes=tuple(moved.exclude_from_indexes))
    copy.update(moved)
    client.put(copy)
    error = admin.post("/api/v1/employees/asalieri/addresses/2/handshake", status=409).json["error"]
    assert error["code"] == "record_tampered"


@pytest.mark.parametrize("field", ["host", "port", "server_hostname", "tls_version", "ca_certs", "chain_pem",
                                   "seal_version"])
def test_a_record_altered_outside_the_app_is_refused(admin, world, field):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as honest, \
            PythonTLSPeer(world["server"], p.ca_pem) as attacker:
        store(admin, world["first"], honest.port, p.ca_pem)
        assert who(call(admin)) == world["first"].fingerprint_sha256  # twin: the untouched record works
        client = db()
        entity = client.get(raw_key(client))
        before_calls = attacker.accepted
        entity[field] = {
            "host": "localhost", "port": attacker.port, "server_hostname": "127.0.0.1", "tls_version": "TLSv1_2",
            "ca_certs": world["stranger"].ca_pem.decode(), "seal_version": None,
            "chain_pem": world["second"].cert_pem.decode(),
        }[field]
        client.put(entity)
        for path in ("/request", "/handshake", "/echo"):
            response = call(admin, path, status=409)
            assert response.json["error"]["code"] == "record_tampered"
            assert "PRIVATE KEY" not in response.text
        assert attacker.accepted == before_calls  # the key was never shown to anyone
        # The record is reported, not hidden: GET still shows it; a fresh PUT repairs it.
        admin.get(URL, status=200)
        store(admin, world["first"], honest.port, p.ca_pem, status=200)
        assert who(call(admin)) == world["first"].fingerprint_sha256


def test_an_altered_next_slot_is_refused_and_the_current_keeps_working(admin, world):
    p = world["pki"]
    with PythonTLSPeer(world["server"], p.ca_pem) as peer:
        store(admin, world["first"], peer.port, p.ca_pem)
        body = dict(cert=world["second"].cert_pem.decode(), key=world["second"].key_pem.decode())
        admin.put(URL + "/next", json.dumps(body), content_type="application/json", status=201)
        call(admin, "/next/handshake")  # twin: the untouched next slot works
        with ndb.Client().context(cache_policy=False, global_cache_policy=False):
            entity = models.get_entity("asalieri", 1)
            entity.next.port = 1  # written with ndb directly, bypassing the store functions
            entity.put()
        assert call(admin, "/next/handshake", status=409).json["error"]["code"] == "record_tampered"
        assert who(call(admin)) == world["first"].fingerprint_sha256


def test_promote_and_rollback_reseal_moved_slots_with_their_data_key(ndb_context, settings, world):
    body = dict(cert=world["first"].cert_pem.decode(), key=world["first"].key_pem.decode(), host="peer.example.com")
    models.put_identity("asalieri", 1, body, settings)
    sealed, wrapped = models.get_entity("asalieri", 1).sealed_key, models.get_entity("asalieri", 1).wrapped_dek
    models.stage_next("asalieri", 1, dict(body, cert=world["second"].cert_pem.decode(),
                                          key=world["second"].key_pem.decode()), settings)
    models.promote("asalieri", 1, settings)
    entity = models.get_entity("asalieri", 1)
    # Sealed again as `previous` (issue 20 item 7: the role is bound), with the same data key.
    assert entity.previous.sealed_key != sealed and entity.previous.wrapped_dek == wrapped
    assert models.load_identity("asalieri", 1, settings).identity.fingerprint_sha256 == \
        world["second"].fingerprint_sha256
    models.rollback("asalieri", 1, settings)
    assert models.load_identity("asalieri", 1, settings).identity.fingerprint_sha256 == \
        world["first"].fingerprint_sha256
    assert isinstance(ndb.Key("Employee", "asalieri").get(), models.Employee)
