"""Key lifecycle (API.md v1.1): CSR and pending key, stage a next identity, promote, rollback, history.

Each change is one transaction on one Address entity with its history Event.
"""

import datetime

from google.cloud import ndb

import kmskeys
import sealing
from dyncert import csr
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from dyncert.signers import SignerIdentity
from models.binding import (
    KMS_PREFIX, check_kms_payload, new_slot, opened_keys, pending_context, reseal_legacy, unseal_pending)
from models.body import Upload, check_upload, completes_pending, field, parse_upload
from models.entities import (
    UTC, Address, Conflict, Event, NotFound, Pending, address_key, copy_slot, ensure_employee, has_current,
    new_event, owned_kms_names, save_with_event)
from models.kmsrefs import release
from models.store import get_record
from models.views import event_view, identity_view, pending_summary, public_view

KEY_LOCATIONS = ("datastore", "cloud_kms")


def create_csr(employee, address, body, settings, actor="app"):
    """Generate a key and CSR, seal the key at once, keep it pending; returns (csr PEM, pending summary).

    With "key_location": "cloud_kms" the key is created in Cloud KMS and signs the CSR there; the
    pending key holds only its name (sealed like a key, so an edited record does not open).
    """
    key = address_key(employee, address)
    location = field(body, "key_location", str, "datastore")
    if location not in KEY_LOCATIONS:
        raise InputError("invalid_request", f"'key_location' must be one of {', '.join(KEY_LOCATIONS)}.")
    kek = sealing.kek_from_settings(settings)
    now = datetime.datetime.now(UTC)
    if location == "cloud_kms":
        pending = _kms_pending(key, body, settings, kek, now)
    else:
        made = csr.new_key_and_csr(body.get("key_type"), body.get("subject"), body.get("san"))
        wrapped_dek, sealed_key = sealing.seal(kek, made.key_pem, pending_context(key, made.public_key_sha256))
        pending = Pending(sealed_key=sealed_key, wrapped_dek=wrapped_dek, kek_id=kek.kek_id,
                          key_type=made.key_type, public_key_sha256=made.public_key_sha256, subject=made.subject,
                          san=made.san, csr_pem=made.csr_pem, created=now)

    @ndb.transactional()
    def write():
        entity = key.get()
        if entity is None:
            ensure_employee(key)
            entity = Address(key=key)
        owned = owned_kms_names(entity)
        entity.pending, entity.pending_created = pending, now
        reseal_legacy(entity, kek)
        save_with_event(entity, new_event(key, "csr_created", actor, public_key=pending.public_key_sha256))
        return owned

    try:
        owned = write()
    except BaseException:
        if pending.kms_key:  # never stored: nothing will ever refer to the key just created
            kmskeys.destroy(pending.kms_key, settings)
        raise
    release(owned, settings)  # a replaced pending key the app created in KMS
    return pending.csr_pem, pending_summary(pending)


def _kms_pending(key, body, settings, kek, now):
    """A key created in KMS_KEY_RING and its CSR signed there, as a Pending holding only the key's name."""
    key_type = body.get("key_type") or csr.DEFAULT_KEY_TYPE
    csr.csr_request(body.get("subject"), body.get("san"))  # a bad request creates no key
    if key_type not in kmskeys.ALGORITHMS:
        raise InputError("invalid_request", f"'key_type' for a key in Cloud KMS must be one of "
                                            f"{', '.join(kmskeys.ALGORITHMS)}; found {str(key_type)[:40]!r}.")
    kmskeys.require_binding()  # a key this interpreter could never use is not created
    name = kmskeys.create_key(settings, key_type, hint=f"{key.parent().id()}-{key.id()}")
    try:
        signer = kmskeys.signer(name, settings)
        made = csr.signer_csr(signer, body.get("subject"), body.get("san"))
        wrapped_dek, sealed_name = sealing.seal(kek, KMS_PREFIX + name.encode(),
                                                pending_context(key, made.public_key_sha256))
    except BaseException:
        kmskeys.destroy(name, settings)
        raise
    return Pending(sealed_key=sealed_name, wrapped_dek=wrapped_dek, kek_id=kek.kek_id,
                   key_type=kmskeys.label(signer.public_key(), kmskeys.protection_of(signer)),
                   public_key_sha256=made.public_key_sha256, subject=made.subject, san=made.san,
                   csr_pem=made.csr_pem, created=now, kms_key=name, kms_owned=True,
                   kms_protection=kmskeys.protection_of(signer))


def get_csr(employee, address):
    """The pending key's CSR and summary, or NotFound."""
    entity = get_record(employee, address)
    if entity.pending is None:
        raise NotFound(f"No key is pending for {employee}/{address}.")
    return entity.pending.csr_pem, pending_summary(entity.pending)


def current_of(entity):
    """The current identity of an Address (the Slot a next identity's target defaults to), or None."""
    return entity if has_current(entity) else None


def check_next(employee, address, body, settings, now=None):
    """check_upload for a full next upload (the admin form): target fields default to the current identity's."""
    try:
        entity = address_key(employee, address).get()
    except InputError:
        entity = None  # check_upload reports the bad id
    return check_upload(employee, address, body, settings, now, current=current_of(entity))


def stage_next(employee, address, upload, settings, now=None, actor="app"):
    """Stage a next identity: the certificate for the pending key, or a full upload; returns (view, created?).

    A body (dict) is validated here once; an Upload (from check_next) is not validated again.
    """
    key = address_key(employee, address)
    entity = key.get()
    kek = sealing.kek_from_settings(settings)
    completing = upload.identity is None if isinstance(upload, Upload) else completes_pending(upload)
    if completing and (entity is None or entity.pending is None):
        raise Conflict("no_pending", f"No key is pending for {employee}/{address}: POST .../csr first, "
                                     "or give 'key' (or 'pkcs12') with the certificate.")
    if not isinstance(upload, Upload):
        upload = parse_upload(employee, address, upload, settings, now, current_of(entity), completing)
    if upload.key != key:
        raise ValueError("The upload was validated for another address.")
    identity = upload.identity
    if completing:
        pending = entity.pending
        key_pem = unseal_pending(kek, entity)
        if pending.kms_key:
            check_kms_payload(key_pem, pending.kms_key)
            kmskeys.require_binding()
            try:
                identity = SignerIdentity(upload.cert_pem, kmskeys.signer(pending.kms_key, settings),
                                          now=now)  # key_mismatch if foreign
            except InputError as e:
                e.field = e.field or "cert"
                raise
        else:
            identity = ClientIdentity.from_pem(upload.cert_pem, key_pem, now=now)  # key_mismatch if foreign
    slot = new_slot(identity, upload.ca_pem, upload.target, upload.tls_version, kek, key,
                    kms_owned=completing and bool(entity.pending.kms_owned))

    @ndb.transactional()
    def write():
        record = key.get()
        if completing and (record is None or record.pending is None
                           or record.pending.public_key_sha256 != pending.public_key_sha256):
            raise Conflict("no_pending", "The pending key changed while the certificate was checked; retry.")
        if record is None:
            ensure_employee(key)
            record = Address(key=key)
        owned = owned_kms_names(record)
        before = record.next.fingerprint_sha256 if record.next is not None else None
        record.next = slot
        if completing:
            record.pending, record.pending_created = None, None
        reseal_legacy(record, kek)
        save_with_event(record, new_event(key, "next_staged", actor, slot.fingerprint_sha256, before))
        return before is None, owned

    created, owned = write()
    release(owned, settings)  # a replaced next whose KMS key the app created
    return identity_view(key, slot), created


def get_next(employee, address):
    """The public view of the staged next identity, or NotFound."""
    entity = get_record(employee, address)
    if entity.next is None:
        raise NotFound(f"No next identity is staged for {employee}/{address}.")
    return identity_view(entity.key, entity.next)


def _switch(employee, address, settings, actor, change):
    """Apply change(entity) -> (action, fingerprint after, before) to one Address in one transaction,
    re-sealing a legacy record and recording the event; `change` raises when the switch cannot be."""
    key = address_key(employee, address)
    kek = sealing.kek_from_settings(settings)

    @ndb.transactional()
    def write():
        entity = key.get()
        opened = opened_keys(entity, kek)  # each key where it is, before the change moves it
        owned = owned_kms_names(entity)
        action, after, before = change(entity)
        reseal_legacy(entity, kek, opened)  # ... and sealed again under its new role
        save_with_event(entity, new_event(key, action, actor, after, before))
        return entity, owned

    entity, owned = write()
    release(owned, settings)  # a dropped next or previous whose KMS key the app created and nothing refers to
    return entity


def remove_next(employee, address, settings, actor="app"):
    """Drop the staged next identity; NotFound if none."""
    def change(entity):
        if entity is None or entity.next is None:
            raise NotFound(f"No next identity is staged for {employee}/{address}.")
        before, entity.next = entity.next.fingerprint_sha256, None
        return "next_removed", None, before

    _switch(employee, address, settings, actor, change)


def promote(employee, address, settings, actor="app"):
    """next becomes current, current becomes previous, in one transaction; 409 no_next."""
    def change(entity):
        if entity is None or entity.next is None:
            raise Conflict("no_next", f"No next identity is staged for {employee}/{address}: PUT .../next first.")
        before = entity.fingerprint_sha256 if has_current(entity) else None
        entity.previous = copy_slot(entity) if has_current(entity) else entity.previous
        copy_slot(entity.next, entity)
        entity.next = None
        return "promoted", entity.fingerprint_sha256, before

    entity = _switch(employee, address, settings, actor, change)
    previous = identity_view(entity.key, entity.previous) if entity.previous is not None else None
    return {"current": public_view(entity), "previous": previous}


def rollback(employee, address, settings, actor="app"):
    """current and previous swap, in one transaction; 409 no_previous."""
    def change(entity):
        if entity is None or entity.previous is None or not has_current(entity):
            raise Conflict("no_previous", f"No previous identity is kept for {employee}/{address}.")
        before = entity.fingerprint_sha256
        old_current = copy_slot(entity)
        copy_slot(entity.previous, entity)
        entity.previous = old_current
        return "rolled_back", entity.fingerprint_sha256, before

    entity = _switch(employee, address, settings, actor, change)
    return {"current": public_view(entity), "previous": identity_view(entity.key, entity.previous)}


MAX_HISTORY = 1000  # events shown per address (newest first)


def history(employee, address):
    """The address's change events, newest first (also after it was deleted)."""
    key = address_key(employee, address)
    # Ancestor only (no sort) needs no composite index; ids are scattered, so read all, then sort by time.
    events = Event.query(ancestor=key).fetch()
    events.sort(key=lambda e: e.at or datetime.datetime.min.replace(tzinfo=UTC), reverse=True)
    return [event_view(e) for e in events[:MAX_HISTORY]]
