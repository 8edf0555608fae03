"""The store: transactions, sealing at rest, and what a failed write leaves behind."""

import pytest
from google.cloud import datastore

import models
import sealing
from dyncert.errors import InputError


def test_raw_entity_holds_no_plaintext_key(ndb_context, settings, upload, emulator):
    models.put_identity("asalieri", 1, upload, settings)
    key_lines = [line for line in upload["key"].splitlines() if "-----" not in line]
    raw = datastore.Client(project=emulator.environ()["DATASTORE_PROJECT_ID"]).get(
        datastore.Key("Employee", "asalieri", "Address", 1,
                      project=emulator.environ()["DATASTORE_PROJECT_ID"]))
    dump = repr(dict(raw)).encode() + b"".join(v for v in raw.values() if isinstance(v, bytes))
    assert b"PRIVATE KEY" not in dump
    for line in key_lines:
        assert line.encode() not in dump
    assert raw["sealed_key"] and raw["wrapped_dek"]


def test_load_identity_unseals_the_same_key(ndb_context, settings, upload):
    view, created = models.put_identity("asalieri", 1, upload, settings)
    stored = models.load_identity("asalieri", 1, settings)
    assert created and stored.identity.fingerprint_sha256 == view["fingerprint_sha256"]
    assert stored.target.host == "peer.example.com" and stored.target.port == 8443


def test_sealed_key_moved_to_another_entity_does_not_open(ndb_context, settings, upload):
    models.put_identity("asalieri", 1, upload, settings)
    models.put_identity("asalieri", 2, upload, settings)
    one, two = models.get_entity("asalieri", 1), models.get_entity("asalieri", 2)
    two.sealed_key, two.wrapped_dek = one.sealed_key, one.wrapped_dek
    two.put()
    with pytest.raises(sealing.UnsealError):
        models.load_identity("asalieri", 2, settings)


def test_failed_put_leaves_the_record_as_it_was(ndb_context, settings, upload):
    models.put_identity("asalieri", 1, upload, settings)
    before = models.get_entity("asalieri", 1).to_dict()
    with pytest.raises(InputError):
        models.put_identity("asalieri", 1, dict(upload, key_password=None, key="garbage"), settings)
    assert models.get_entity("asalieri", 1).to_dict() == before


def test_app_engine_without_kms_refuses_to_store_keys(ndb_context, settings, upload):
    import dataclasses
    on_gae = dataclasses.replace(settings, on_app_engine=True, local_kek_file=settings.local_kek_file + ".gae")
    with pytest.raises(sealing.SealingUnavailable):
        models.put_identity("asalieri", 1, upload, on_gae)
    with pytest.raises(models.NotFound):
        models.get_entity("asalieri", 1)


def test_local_kek_file_is_private(settings, tmp_path):
    kek = sealing.LocalKek(str(tmp_path / "sub" / "kek.bin"))
    wrapped, blob = sealing.seal(kek, b"secret", b"ctx")
    assert sealing.unseal(kek, wrapped, blob, b"ctx") == b"secret"
    assert (tmp_path / "sub" / "kek.bin").stat().st_mode & 0o777 == 0o600
    with pytest.raises(sealing.UnsealError):
        sealing.unseal(kek, wrapped, blob, b"other")
